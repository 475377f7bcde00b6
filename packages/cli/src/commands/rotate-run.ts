/** What `rekey rotate <alias>` runs, loaded only when it runs; `rotate.ts` adds the command, its flags and what it does. */
import { KMSClient } from '@aws-sdk/client-kms';
import { loadConfig, type Config, type SourceSpec } from '@rekey/core';
import {
  awsClientConfig,
  connectAuditLog,
  createEngine,
  engineOptionsFromConfig,
  engineMigrations,
  planRotation,
  rotationReportLines,
  runRotation,
  settledForRotation,
  type AuditLog,
  type RotationMigrations,
  type RotationOptions,
  type RotationStep,
} from '@rekey/fleet';
import { engineClient, httpClient, type RekeyClient } from '../client.js';
import { CliError, EXIT } from '../errors.js';
import { watchStatus } from '../render.js';
import { readUserFile } from '../spec-input.js';

export interface RotateFlags {
  file: string;
  dryRun?: boolean;
  finalize: boolean;
  workers: string;
  batchSize?: string;
}

const ALIAS = /^alias\/[a-zA-Z0-9/_-]{1,250}$/;

/** Loads `rekey.yaml` (bindings and sources) merged with the environment, as every process does. */
export async function loadConfigFile(path: string): Promise<Config> {
  return loadConfig({ yamlText: await readUserFile(path), env: process.env, role: 'cli' });
}

/** The sources `rekey.yaml` binds to an alias, as specs. */
export function boundSources(config: Config, alias: string): SourceSpec[] {
  const names = config.bindings?.[alias] ?? [];
  return names.map((n) => {
    const s = config.sources?.find((x) => x.name === n);
    // loadConfig already refuses a binding to an unknown source; this guards a hand-built config.
    if (!s) throw new CliError(`bindings.${alias}: no source named "${n}" in sources`, EXIT.usage);
    return s;
  });
}

const STEP_TEXT: Record<RotationStep, string> = {
  resolved: 'resolved the alias',
  'key-created': 'new key ready',
  'awaiting-import': 'new key waits for its key material',
  'alias-updated': 'alias points to the new key',
  'migrations-started': 'migrations running',
  'migrations-ready': 'every gate is ready',
  finalized: 'old key disabled',
  completed: 'rotation complete',
};

function printStep(step: RotationStep, detail: Readonly<Record<string, unknown>>): void {
  if (step === 'awaiting-import') {
    for (const l of (detail['instructions'] as string[] | undefined) ?? []) console.log(l);
    return;
  }
  const what = detail['key'] ?? detail['oldKey'] ?? (Array.isArray(detail['migrations']) ? (detail['migrations'] as string[]).join(', ') : detail['id']);
  console.log(`[${step}] ${STEP_TEXT[step]}${what ? `: ${String(what)}` : ''}`);
}

function apiMigrations(c: RekeyClient): RotationMigrations {
  return {
    create: (spec) => c.create(spec),
    // The API answers an unknown id with an error; listing tells "none" from "unreachable".
    find: async (id) => (await c.list()).find((m) => m.id === id),
    list: () => c.list(),
    gate: (id) => c.gate(id),
    finalize: (id) => c.finalize(id, { force: false }),
  };
}

function watcher(c: RekeyClient): NonNullable<RotationOptions['waitFor']> {
  return async (id, signal) => {
    await watchStatus(c, id, {
      tty: Boolean(process.stdout.isTTY),
      signal,
      until: (st) => settledForRotation(st.migration.state, st.gate.conditions.filter((x) => !x.ok)),
    });
  };
}

/** Runs `rekey rotate <alias>` with its parsed flags; `local` tells whether `--local` was given. */
export async function runRotate(alias: string, f: RotateFlags, local: boolean): Promise<void> {
  if (!ALIAS.test(alias)) throw new CliError(`alias must look like alias/name, got "${alias}"`, EXIT.usage);
  const workers = Number(f.workers);
  if (!Number.isInteger(workers) || workers < 1 || workers > 64) throw new CliError(`--workers must be a whole number from 1 to 64, got "${f.workers}"`, EXIT.usage);
  const batchSize = f.batchSize === undefined ? undefined : Number(f.batchSize);
  if (batchSize !== undefined && !(Number.isInteger(batchSize) && batchSize >= 1 && batchSize <= 1000)) {
    throw new CliError(`--batch-size must be a whole number from 1 to 1000, got "${f.batchSize}"`, EXIT.usage);
  }
  const config = await loadConfigFile(f.file);
  const sources = boundSources(config, alias);
  const actor = `cli:${process.env['USER'] ?? 'local'}`;
  const kms = new KMSClient(awsClientConfig(config));
  const closers: (() => Promise<void>)[] = [async () => kms.destroy()];
  try {
    let migrations: RotationMigrations;
    let audit: AuditLog;
    let waitFor: RotationOptions['waitFor'];
    if (local) {
      // The same options a coordinator and worker take from this config: budget, AIMD, KMS
      // concurrency and the gate (quiet window, usage monitoring), so the rotation's gate is
      // the one the fleet would apply.
      const engine = await createEngine(engineOptionsFromConfig(config, undefined, actor));
      closers.unshift(() => engine.close());
      migrations = engineMigrations(engine, actor);
      audit = engine.audit;
      if (!f.dryRun) {
        const coordinator = engine.startCoordinator({ tickMs: 250 });
        const worker = engine.startWorker({ concurrency: workers });
        closers.unshift(async () => {
          await worker.close();
          await coordinator.close();
        });
        waitFor = watcher(engineClient(engine, actor, async () => undefined));
      }
    } else {
      const token = process.env['REKEY_API_TOKEN'];
      if (!token) throw new CliError('REKEY_API_TOKEN is not set (the coordinator API needs it), or use --local to work on Redis directly', EXIT.usage);
      const client = httpClient(process.env['REKEY_API_URL'] ?? 'http://127.0.0.1:8080', token);
      const log = await connectAuditLog(config.redis.url, config.redis.prefix);
      closers.unshift(() => log.close());
      migrations = apiMigrations(client);
      audit = log.audit;
      waitFor = watcher(client);
    }
    const opts: RotationOptions = {
      alias,
      kms,
      migrations,
      audit,
      sources,
      actor,
      noFinalize: !f.finalize,
      ...(batchSize !== undefined ? { migrationOptions: { batchSize } } : {}),
      ...(waitFor ? { waitFor } : {}),
      onStep: printStep,
    };
    if (f.dryRun) {
      const plan = await planRotation(opts);
      console.log('dry run: nothing was changed');
      for (const l of plan.lines) console.log(l);
      return;
    }
    const report = await runRotation(opts);
    for (const l of rotationReportLines(report)) console.log(l);
  } finally {
    for (const c of closers) await c();
  }
}
