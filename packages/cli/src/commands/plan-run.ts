/** What `rekey plan` runs, loaded only when it runs; `plan.ts` adds the command, its flags and what it does. */
import { KMSClient } from '@aws-sdk/client-kms';
import { S3Client } from '@aws-sdk/client-s3';
import { loadConfig, parseMigrationSpec, type Config, type SourceSpec } from '@rekey/core';
import { awsClientConfig, createAuditLog, createFleetBudget, planLines, planMigration, redisKeys, type PlanTarget } from '@rekey/fleet';
import { createKmsGateway, type KmsGateway } from '@rekey/kms';
import { Redis } from 'ioredis';
import pino from 'pino';
import { createSource } from '@rekey/sources';
import pg from 'pg';
import { stringify } from 'yaml';
import { CliError, EXIT } from '../errors.js';
import { readYamlFile, specFromFlags, type MigrateFlags } from '../spec-input.js';

export interface PlanFlags extends MigrateFlags {
  sample: string;
  all?: boolean;
  budget?: string;
  kmsPrice: string;
  s3WritePrice: string;
  s3ReadPrice: string;
  json?: boolean;
}

function positive(v: string, flag: string, allowZero = false): number {
  const n = Number(v);
  if (v.trim() === '' || !Number.isFinite(n) || n < 0 || (!allowZero && n === 0)) throw new CliError(`${flag} must be a ${allowZero ? 'non-negative' : 'positive'} number, got "${v}"`, EXIT.usage);
  return n;
}

/** What to plan: one spec from flags or a spec file, or the migrations and bindings of a config file. */
interface Planned {
  readonly sources: readonly SourceSpec[];
  readonly from: readonly string[];
  readonly to: string;
  readonly batchSize: number;
}

async function inputs(f: PlanFlags): Promise<{ config: Config; plans: Planned[] }> {
  const data = f.file ? await readYamlFile(f.file) : undefined;
  const isSpec = !f.file || f.from?.length || f.source?.length || f.to || (data && typeof data === 'object' && 'from' in data);
  if (isSpec) {
    const spec = parseMigrationSpec(await specFromFlags(f));
    return { config: loadConfig({ env: process.env, role: 'cli' }), plans: [{ ...spec, batchSize: spec.options.batchSize }] };
  }
  // A config file: YAML text again so loadConfig reports problems with line numbers.
  const config = loadConfig({ yamlText: stringify(data), env: process.env, role: 'cli' });
  const plans: Planned[] = (config.migrations ?? []).map((m) => {
    const spec = parseMigrationSpec(m);
    return { ...spec, batchSize: spec.options.batchSize };
  });
  // A binding has no target yet (rotate creates it): count what sits under the key behind the alias.
  for (const [alias, names] of Object.entries(config.bindings ?? {})) {
    plans.push({ sources: (config.sources ?? []).filter((s) => names.includes(s.name)), from: [alias], to: alias, batchSize: 100 });
  }
  if (plans.length === 0) throw new CliError(`${f.file}: no migrations and no bindings to plan`, EXIT.usage);
  return { config, plans };
}

/**
 * The fleet's KMS limiters, for plan's KMS requests: one per (account, Region) of the target keys,
 * in the Redis of the config, as the fleet's processes use them. Redis must be reachable: a plan
 * run beside a live migration would otherwise spend the apps' quota unchecked.
 */
async function planBudget(config: Config) {
  const redis = new Redis(config.redis.url, { lazyConnect: true, maxRetriesPerRequest: 1, connectTimeout: 3000, retryStrategy: () => null });
  redis.on('error', () => undefined); // the failed connect below says it once
  try {
    await redis.connect();
    await redis.ping();
  } catch (err) {
    redis.disconnect();
    throw new CliError(`plan takes its KMS requests from the fleet's budget in Redis, and Redis is not reachable at ${config.redis.url}: ${(err as Error).message}`);
  }
  const keys = redisKeys(config.redis.prefix);
  const client = new KMSClient({ ...awsClientConfig(config), maxAttempts: 1 });
  // The fleet's own budget: the same limiters, AIMD settings and `rekey budget` override as workers.
  const budget = createFleetBudget({
    redis,
    keys,
    region: config.aws.region,
    budgetRps: config.kms.budgetRps!,
    ...(config.kms.quotaRps ? { quotaRps: config.kms.quotaRps } : {}),
    minRps: config.kms.minRps,
    aimd: config.kms.aimd,
    kmsClient: client,
    audit: createAuditLog(redis, keys),
    logger: pino({ level: 'silent' }),
    ratePollMs: 0,
  });
  return {
    gatewayFor: (keyArn: string): KmsGateway => budget.gatewayForKey(keyArn, 'plan'),
    async close() {
      budget.close();
      client.destroy();
      await redis.quit().catch(() => redis.disconnect());
    },
  };
}

/** Runs `rekey plan` with its parsed flags. */
export async function runPlan(f: PlanFlags): Promise<void> {
  const sample = Number(f.sample);
  if (!Number.isInteger(sample) || sample < 1) throw new CliError(`--sample must be a whole number of at least 1, got "${f.sample}"`, EXIT.usage);
  const prices = { kmsPer10k: positive(f.kmsPrice, '--kms-price', true), s3WritePer1k: positive(f.s3WritePrice, '--s3-write-price', true), s3ReadPer1k: positive(f.s3ReadPrice, '--s3-read-price', true) };
  const { config, plans } = await inputs(f);
  const budgetRps = f.budget !== undefined ? positive(f.budget, '--budget') : config.kms.budgetRps;
  const clientConfig = awsClientConfig(config);
  const s3 = new S3Client({ ...clientConfig, forcePathStyle: Boolean(config.aws.endpoint) });
  const kms = createKmsGateway({ clientConfig });
  const pool = new pg.Pool({ connectionString: process.env['DATABASE_URL'] ?? 'postgres://postgres@127.0.0.1:5432/test', max: 4 });
  const budget = config.kms.budgetRps !== undefined ? await planBudget(config) : undefined;
  try {
    const arn = async (ref: string) => {
      try {
        return (await kms.describeKey(ref)).arn;
      } catch (err) {
        throw new CliError(`key ${ref}: ${(err as Error).message}`);
      }
    };
    const targets: PlanTarget[] = [];
    for (const p of plans) {
      const keys = { from: await Promise.all(p.from.map(arn)), to: await arn(p.to) };
      for (const src of p.sources) targets.push({ spec: src, keys, pageSize: p.batchSize });
    }
    // Inspecting a blob without a key-id costs ReEncrypt probes: they take tokens from the
    // fleet's limiter of the target's account, as the participant 'plan', like any migration.
    const gatewayOf = new Map(targets.map((t) => [t.spec, budget ? budget.gatewayFor(t.keys.to) : kms]));
    const plan = await planMigration({
      targets,
      buildSource: (spec) => createSource(spec, { s3, kms: gatewayOf.get(spec) ?? kms, pool }, { pageSize: 1000 }),
      s3,
      sampleSize: sample,
      all: Boolean(f.all),
      budgetRps,
      prices,
    });
    if (f.json) console.log(JSON.stringify(plan, null, 2));
    else for (const l of planLines(plan)) console.log(l);
  } finally {
    s3.destroy();
    kms.destroy();
    await budget?.close();
    await pool.end();
  }
}
