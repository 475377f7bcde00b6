/**
 * Process config for the coordinator, workers and CLI: `rekey.yaml` plus environment
 * variables. Built in stages (parse, merge env, validate, cross-field checks, normalise) and
 * every problem is reported at once, one line each.
 */
import { z } from 'zod';
import { parseDocument } from 'yaml';
import { ValidationError } from './errors.js';
import { MigrationSpecSchema, NameSchema, SourceSpecSchema } from './spec.js';
import { formatIssues } from './validation.js';

const PERCENT = /^(\d+(\.\d+)?)%$/;
const ALIAS_NAME = /^alias\/[a-zA-Z0-9/_-]{1,250}$/;

const PortSchema = z.int().min(0).max(65535);

/** The schema of `rekey.yaml` (everything optional; environment variables and defaults fill in). */
export const ConfigFileSchema = z.strictObject({
  redis: z
    .strictObject({
      /** Redis URL. Env: `REKEY_REDIS_URL` or `REDIS_URL`. @defaultValue 'redis://127.0.0.1:6379' */
      url: z
        .string()
        .refine((u) => /^rediss?:\/\//.test(u), { message: 'must be a redis:// or rediss:// URL' })
        .default('redis://127.0.0.1:6379')
        .describe('Redis URL (env REKEY_REDIS_URL or REDIS_URL).'),
      /** Prefix of every Redis key. Env: `REKEY_REDIS_PREFIX`. @defaultValue 'rekey:' */
      prefix: z.string().min(1).max(64).regex(/^[A-Za-z0-9:_.-]+$/, 'may hold only letters, digits, ":", "_", "." and "-"').default('rekey:')
        .describe('Prefix of every Redis key (env REKEY_REDIS_PREFIX).'),
    })
    .prefault({}),
  aws: z
    .strictObject({
      /** AWS Region. Env (used when this is not set): `AWS_REGION`, `AWS_DEFAULT_REGION`. @defaultValue 'us-east-1' */
      region: z.string().regex(/^[a-z]{2}(-[a-z]+)+-\d+$/, 'must be an AWS Region such as us-east-1')
        .optional()
        .describe('AWS Region; when unset, env AWS_REGION or AWS_DEFAULT_REGION, else us-east-1.'),
      /** Endpoint override (aws-local, LocalStack). Env (used when this is not set): `AWS_ENDPOINT_URL`. */
      endpoint: z
        .url({ protocol: /^https?$/, error: 'must be an http:// or https:// URL' })
        .optional()
        .describe('Endpoint override for aws-local or LocalStack; when unset, env AWS_ENDPOINT_URL.'),
      /** Timeouts of the fleet's AWS clients, in milliseconds (docs/decisions.md #35). */
      timeouts: z
        .strictObject({
          connectMs: z.int().min(100).max(600_000).optional().describe('To open a connection (default 5000).'),
          kmsIdleMs: z.int().min(100).max(3_600_000).optional().describe('A KMS response silent this long is cut and retried (default 30000).'),
          s3IdleMs: z.int().min(100).max(3_600_000).optional().describe('An S3 response silent this long is cut and retried (default 300000).'),
          controlIdleMs: z.int().min(25_000).max(3_600_000).optional().describe('The same for control-plane calls: DisableKey, CloudTrail, the audit export, SQS long polls of up to 20 s (default 60000).'),
        })
        .optional()
        .describe("Timeouts of the fleet's AWS clients in milliseconds."),
    })
    .prefault({}),
  kms: z
    .strictObject({
      /** The account's KMS cryptographic-operations quota in requests per second. Env: `REKEY_KMS_QUOTA_RPS`. */
      quotaRps: z.number().positive().optional().describe("The account's KMS request quota per second (env REKEY_KMS_QUOTA_RPS)."),
      /**
       * The fleet's share: requests per second, or a percentage of `quotaRps` such as `"40%"`.
       * Env: `REKEY_KMS_BUDGET`. @defaultValue '50%' when quotaRps is set, else 100
       */
      budget: z
        .union([z.number().positive(), z.string().regex(PERCENT, 'must be a number of requests per second or a percentage such as "40%"')])
        .optional()
        .describe('The fleet budget: requests per second, or a percentage of quotaRps such as "40%" (env REKEY_KMS_BUDGET). Default: 50% with quotaRps, else 100.'),
      /** The adaptive rate never goes below this. @defaultValue 1 */
      minRps: z.number().positive().default(1).describe('The adaptive rate never goes below this.'),
      aimd: z
        .strictObject({
          /** Factor the rate is multiplied by on throttling. @defaultValue 0.7 */
          decrease: z.number().gt(0).lt(1).default(0.7).describe('Factor the rate is multiplied by on throttling.'),
          /** Requests per second added per second while calls succeed (at least; see increasePercent). @defaultValue 5 */
          increaseRps: z.number().positive().default(5).describe('Requests per second added per second while calls succeed (at least; see increasePercent).'),
          /** The same as a percentage of the budget per second; the larger of the two applies. @defaultValue 1 */
          increasePercent: z
            .number()
            .min(0)
            .max(100)
            .default(1)
            .describe('Percent of the budget added per second while calls succeed, where that is more than increaseRps.'),
          /** At most one decrease per window, in milliseconds. @defaultValue 1000 */
          windowMs: z.int().min(10).max(600_000).default(1000).describe('At most one decrease per window (milliseconds).'),
        })
        .prefault({}),
    })
    .prefault({}),
  api: z
    .strictObject({
      /** Env: `REKEY_API_HOST`. @defaultValue '127.0.0.1' */
      host: z.string().min(1).default('127.0.0.1').describe('Address the coordinator API binds (env REKEY_API_HOST).'),
      /** Env: `REKEY_API_PORT`. @defaultValue 8080 */
      port: PortSchema.default(8080).describe('Port of the coordinator API (env REKEY_API_PORT).'),
      /** Bearer token of the API; required by the coordinator. Prefer the env var `REKEY_API_TOKEN` to writing it here. */
      token: z
        .string()
        .min(1)
        .regex(/^\S+$/, 'must not contain whitespace')
        .optional()
        .describe('Bearer token of the API, required by the coordinator; prefer env REKEY_API_TOKEN.'),
    })
    .prefault({}),
  worker: z
    .strictObject({
      /** Batch jobs a worker process runs in parallel. Env: `REKEY_WORKER_CONCURRENCY`. @defaultValue 2 */
      concurrency: z.int().min(1).max(64).default(2).describe('Batch jobs a worker runs in parallel (env REKEY_WORKER_CONCURRENCY).'),
      /**
       * KMS calls in flight in one process, shared by all its batches, migrations and item jobs;
       * items may be more (their S3 or SQL work overlaps). Env: `REKEY_WORKER_KMS_CONCURRENCY`. @defaultValue 16
       */
      kmsConcurrency: z
        .int()
        .min(1)
        .max(1024)
        .default(16)
        .describe('KMS calls in flight per process, shared by all batches and migrations (env REKEY_WORKER_KMS_CONCURRENCY).'),
      /**
       * Seconds a batch's BullMQ lock lasts. A live worker renews it at half this; a worker that
       * dies without a word (SIGKILL, a lost node) holds its batches until the lock lapses and the
       * next stalled check (every half lock) hands them on: at most 1.5x this. Lower it for faster
       * recovery, at the risk of a busy worker whose event loop stalls past it losing its batches
       * (they are then run again, which is safe but wasted). Env: `REKEY_WORKER_LOCK_SECONDS`. @defaultValue 30
       */
      lockSeconds: z
        .int()
        .min(2)
        .max(600)
        .default(30)
        .describe("Seconds a batch's lock lasts; a dead worker's batches move on after at most 1.5x this (env REKEY_WORKER_LOCK_SECONDS)."),
      /** Port of the worker's /metrics endpoint (none when absent). Env: `REKEY_METRICS_PORT`. */
      metricsPort: PortSchema.optional().describe('Port of the worker /metrics endpoint (env REKEY_METRICS_PORT).'),
      /** Address the worker's /metrics endpoint binds (`0.0.0.0` for a scraper in another pod). Env: `REKEY_METRICS_HOST`. @defaultValue '127.0.0.1' */
      metricsHost: z.string().min(1).default('127.0.0.1').describe('Address the worker /metrics endpoint binds (env REKEY_METRICS_HOST).'),
    })
    .prefault({}),
  gate: z
    .strictObject({
      /**
       * Watch the old keys with KMS GetKeyLastUsage and CloudTrail LookupEvents; when off, the
       * gate's old-key condition is green with a note. Env: `REKEY_MONITOR_USAGE`. @defaultValue true
       */
      monitorUsage: z.boolean().default(true).describe('Watch old-key use with GetKeyLastUsage and CloudTrail for the gate (env REKEY_MONITOR_USAGE).'),
      /**
       * Overrides every migration's `options.quietWindowSeconds`: the seconds after verification
       * started that the old keys must be seen free of encrypt-type use before the gate passes.
       * Unset, each migration's own option applies. Set 0 only where CloudTrail has no delivery lag
       * (aws-local). Env: `REKEY_GATE_QUIET_WINDOW_SECONDS`.
       */
      quietWindowSeconds: z.int().min(0).max(7 * 86_400).optional()
        .describe("Overrides every migration's options.quietWindowSeconds (env REKEY_GATE_QUIET_WINDOW_SECONDS); unset, each migration's own option applies."),
      /** Seconds between two looks of the usage monitor. Env: `REKEY_GATE_MONITOR_INTERVAL_SECONDS`. @defaultValue 60 */
      monitorIntervalSeconds: z.number().min(0.1).max(3600).default(60)
        .describe('Seconds between two looks of the old-key usage monitor (env REKEY_GATE_MONITOR_INTERVAL_SECONDS).'),
      /**
       * IAM principals whose KMS calls are the fleet's own, besides the coordinator's access key:
       * role, user or assumed-role ARNs, `*` matching any run of characters. A role ARN also
       * matches its sessions (CloudTrail's `sessionContext.sessionIssuer`). Set it when workers
       * run under an IAM role, whose access keys change with every session. Env:
       * `REKEY_GATE_FLEET_PRINCIPALS` (comma-separated).
       */
      fleetPrincipals: z.array(z.string().regex(/^arn:aws[a-z-]*:(iam|sts)::(\d{12}|\*):\S+$/, 'must be an IAM or STS principal ARN (arn:aws:iam::123456789012:role/name)')).optional()
        .describe("IAM principals whose KMS calls are the fleet's own (role ARNs match their sessions; env REKEY_GATE_FLEET_PRINCIPALS, comma-separated)."),
    })
    .prefault({}),
  /** Migrations to start from this file (`rekey migrate -f`). */
  migrations: z.array(MigrationSpecSchema).optional().describe('Migrations to start from this file (rekey migrate -f).'),
  /** Named sources that `bindings` refer to. */
  sources: z.array(SourceSpecSchema).optional().describe('Named sources that bindings refer to.'),
  /** Which sources hold data under each alias: `rekey rotate` and intake migrate these. */
  bindings: z
    .record(z.string().regex(ALIAS_NAME, 'must be an alias name such as alias/app'), z.array(NameSchema).min(1, 'must list at least one source'))
    .optional()
    .describe('Which sources hold data under each alias; rekey rotate and intake migrate these.'),
  /** SQS event intake of the coordinator. */
  intake: z
    .strictObject({
      queueUrl: z.url({ protocol: /^https?$/, error: 'must be an SQS queue URL' }).describe('SQS queue the coordinator long-polls.'),
      /** Long-poll wait. @defaultValue 20 */
      waitSeconds: z.int().min(0).max(20).default(20).describe('Long-poll wait in seconds.'),
      /** What a KMS rotation event does: nothing, or a refresh migration. @defaultValue 'ignore' */
      onRotation: z.enum(['ignore', 'refresh']).default('ignore').describe('What a KMS rotation event does: nothing, or start a refresh migration.'),
      /** Start the bound migrations when an alias moves. @defaultValue false */
      autoMigrate: z.boolean().default(false).describe('Start the bound migrations when an alias moves.'),
      /** Repeats of the same item within this window become one job. @defaultValue 300 */
      dedupeWindowSeconds: z.int().min(0).max(86_400).default(300).describe('Repeats of the same item within this window become one job.'),
    })
    .optional()
    .describe('SQS event intake of the coordinator.'),
});

/** What `rekey.yaml` may hold (before defaults). */
export type ConfigFile = z.input<typeof ConfigFileSchema>;

type ParsedFile = z.output<typeof ConfigFileSchema>;

/** The validated, normalised process config. */
export type Config = Omit<ParsedFile, 'aws' | 'kms'> & {
  readonly aws: { readonly region: string; readonly endpoint?: string; readonly timeouts?: NonNullable<ParsedFile['aws']['timeouts']> };
  readonly kms: ParsedFile['kms'] & {
    /** The budget as given (rps or percentage), after the default. */
    readonly budget: number | string;
    /** The budget in requests per second. */
    readonly budgetRps: number;
  };
};

/** Which process loads the config: the coordinator requires an API token. */
export type ConfigRole = 'coordinator' | 'worker' | 'cli';

/** Input of {@link loadConfig}. */
export interface LoadConfigInput {
  /** The text of `rekey.yaml`, when there is one. */
  readonly yamlText?: string;
  /** The environment (usually `process.env`). */
  readonly env: Readonly<Record<string, string | undefined>>;
  /** Enables role-specific checks. */
  readonly role?: ConfigRole;
}

type Json = Record<string, unknown>;

/** Stage 1: YAML text to a plain object. */
function parseYaml(text: string, problems: string[]): Json {
  const doc = parseDocument(text, { prettyErrors: true, uniqueKeys: true });
  for (const e of doc.errors) {
    const line = e.linePos?.[0]?.line;
    // prettyErrors appends "at line L, column C:" and a source excerpt; keep the one-line reason.
    const reason = (e.message.split('\n')[0] ?? '').replace(/ at line \d+, column \d+:?$/, '');
    problems.push(`rekey.yaml${line ? ` line ${line}` : ''}: ${reason}`);
  }
  if (doc.errors.length > 0) return {};
  const value: unknown = doc.toJS();
  if (value === null || value === undefined) return {};
  if (typeof value !== 'object' || Array.isArray(value)) {
    problems.push('rekey.yaml: must be a mapping of settings');
    return {};
  }
  return value as Json;
}

function section(obj: Json, key: string): Json {
  const v = obj[key];
  if (v === undefined || v === null) {
    const fresh: Json = {};
    obj[key] = fresh;
    return fresh;
  }
  // A non-object is left for the schema to report; env values then have nowhere to go.
  return typeof v === 'object' && !Array.isArray(v) ? (v as Json) : {};
}

/** Stage 2: environment variables over the file (REKEY_* win over the file; AWS_* only fill gaps, as in the AWS SDK). */
function mergeEnv(file: Json, env: LoadConfigInput['env'], problems: string[]): Json {
  const out: Json = structuredClone(file);
  const get = (name: string): string | undefined => {
    const v = env[name];
    return v === undefined || v.trim() === '' ? undefined : v.trim();
  };
  const num = (name: string): number | undefined => {
    const v = get(name);
    if (v === undefined) return undefined;
    const n = Number(v);
    if (!Number.isFinite(n)) {
      problems.push(`${name}: must be a number`);
      return undefined;
    }
    return n;
  };
  const set = (sect: string, key: string, value: unknown) => {
    if (value !== undefined) section(out, sect)[key] = value;
  };

  set('redis', 'url', get('REKEY_REDIS_URL') ?? get('REDIS_URL'));
  set('redis', 'prefix', get('REKEY_REDIS_PREFIX'));
  const aws = section(out, 'aws');
  if (aws['region'] === undefined) set('aws', 'region', get('AWS_REGION') ?? get('AWS_DEFAULT_REGION'));
  if (aws['endpoint'] === undefined) set('aws', 'endpoint', get('AWS_ENDPOINT_URL'));
  set('kms', 'quotaRps', num('REKEY_KMS_QUOTA_RPS'));
  const budget = get('REKEY_KMS_BUDGET');
  if (budget !== undefined) set('kms', 'budget', PERCENT.test(budget) ? budget : num('REKEY_KMS_BUDGET'));
  set('api', 'host', get('REKEY_API_HOST'));
  set('api', 'port', num('REKEY_API_PORT'));
  set('api', 'token', get('REKEY_API_TOKEN'));
  set('worker', 'concurrency', num('REKEY_WORKER_CONCURRENCY'));
  set('worker', 'kmsConcurrency', num('REKEY_WORKER_KMS_CONCURRENCY'));
  set('worker', 'lockSeconds', num('REKEY_WORKER_LOCK_SECONDS'));
  set('worker', 'metricsPort', num('REKEY_METRICS_PORT'));
  set('worker', 'metricsHost', get('REKEY_METRICS_HOST'));
  const monitor = get('REKEY_MONITOR_USAGE');
  if (monitor !== undefined) {
    if (/^(true|1|yes|on)$/i.test(monitor)) set('gate', 'monitorUsage', true);
    else if (/^(false|0|no|off)$/i.test(monitor)) set('gate', 'monitorUsage', false);
    else problems.push('REKEY_MONITOR_USAGE: must be true or false');
  }
  set('gate', 'quietWindowSeconds', num('REKEY_GATE_QUIET_WINDOW_SECONDS'));
  set('gate', 'monitorIntervalSeconds', num('REKEY_GATE_MONITOR_INTERVAL_SECONDS'));
  const principals = get('REKEY_GATE_FLEET_PRINCIPALS');
  if (principals !== undefined) set('gate', 'fleetPrincipals', principals.split(',').map((p) => p.trim()).filter(Boolean));
  return out;
}

/** Stage 4: rules across fields. */
function crossCheck(c: ParsedFile, role: ConfigRole | undefined, problems: string[]): void {
  const k = c.kms;
  if (typeof k.budget === 'string' && k.quotaRps === undefined) {
    problems.push('kms.budget: a percentage budget needs kms.quotaRps (or REKEY_KMS_QUOTA_RPS)');
  }
  if (typeof k.budget === 'string') {
    const pct = Number(PERCENT.exec(k.budget)?.[1]);
    if (!(pct > 0 && pct <= 100)) problems.push('kms.budget: a percentage must be more than 0% and at most 100%');
  }
  const rps = budgetRps(k);
  if (k.quotaRps !== undefined && rps !== undefined && rps > k.quotaRps) {
    problems.push(`kms.budget: ${rps} rps is above kms.quotaRps (${k.quotaRps})`);
  }
  if (rps !== undefined && k.minRps > rps) problems.push(`kms.minRps: ${k.minRps} is above the budget of ${rps} rps`);

  const names = new Set<string>();
  (c.sources ?? []).forEach((s, i) => {
    if (names.has(s.name)) problems.push(`sources[${i}].name: duplicate source name "${s.name}"`);
    names.add(s.name);
  });
  for (const [alias, list] of Object.entries(c.bindings ?? {})) {
    list.forEach((name, i) => {
      if (!names.has(name)) problems.push(`bindings.${alias}[${i}]: no source named "${name}" in sources`);
    });
  }
  const ids = new Set<string>();
  (c.migrations ?? []).forEach((m, i) => {
    if (m.id === undefined) return;
    if (ids.has(m.id)) problems.push(`migrations[${i}].id: duplicate migration id "${m.id}"`);
    ids.add(m.id);
  });
  if (c.intake && (c.intake.autoMigrate || c.intake.onRotation === 'refresh') && Object.keys(c.bindings ?? {}).length === 0) {
    problems.push('intake: autoMigrate and onRotation: refresh need bindings (alias -> sources) to know what to migrate');
  }
  if (role === 'coordinator' && c.api.token === undefined) {
    problems.push('api.token: set REKEY_API_TOKEN (the coordinator API always requires a token)');
  }
}

function budgetRps(k: ParsedFile['kms']): number | undefined {
  if (k.budget === undefined) return k.quotaRps === undefined ? 100 : k.quotaRps * 0.5;
  if (typeof k.budget === 'number') return k.budget;
  if (k.quotaRps === undefined) return undefined;
  return (k.quotaRps * Number(PERCENT.exec(k.budget)?.[1])) / 100;
}

/**
 * Builds the process config from `rekey.yaml` text (optional) and the environment.
 *
 * @throws ValidationError listing every problem, one line each, e.g. `api.port: Too big: expected number to be <=65535`.
 * @example
 * const config = loadConfig({ yamlText: await readFile('rekey.yaml', 'utf8'), env: process.env, role: 'worker' });
 */
export function loadConfig(input: LoadConfigInput): Config {
  const problems: string[] = [];
  const file = input.yamlText === undefined ? {} : parseYaml(input.yamlText, problems);
  if (problems.length > 0) throw new ValidationError(problems);
  const merged = mergeEnv(file, input.env, problems);
  const r = ConfigFileSchema.safeParse(merged);
  if (!r.success) problems.push(...formatIssues(r.error.issues));
  if (!r.success || problems.length > 0) throw new ValidationError(problems);
  const c = r.data;
  crossCheck(c, input.role, problems);
  if (problems.length > 0) throw new ValidationError(problems);
  const rps = budgetRps(c.kms);
  if (rps === undefined) throw new ValidationError(['kms.budget: could not be computed']);
  const { endpoint, timeouts } = c.aws;
  return {
    ...c,
    aws: { region: c.aws.region ?? 'us-east-1', ...(endpoint !== undefined ? { endpoint } : {}), ...(timeouts !== undefined ? { timeouts } : {}) },
    kms: { ...c.kms, budget: c.kms.budget ?? (c.kms.quotaRps === undefined ? 100 : '50%'), budgetRps: rps },
  };
}

const READ_REASONS: Record<string, string> = { ENOENT: 'no such file', EISDIR: 'is a directory, not a file', EACCES: 'permission denied', EPERM: 'permission denied' };

/** Why a config file could not be read, in a few words (`no such file`, `permission denied`, …). */
export function configReadReason(err: unknown): string {
  const code = (err as NodeJS.ErrnoException | undefined)?.code;
  return (code !== undefined ? READ_REASONS[code] : undefined) ?? (err instanceof Error ? err.message : String(err));
}

/**
 * The problems of {@link loadConfig} as the user's file names them: core calls the YAML text
 * `rekey.yaml`; here it becomes `path` (or `config` without a file). Problems of an environment
 * variable (`REKEY_KMS_QUOTA_RPS: …`) keep the variable's name.
 */
export function locateConfigProblems(problems: readonly string[], path: string | undefined): string[] {
  const where = path ?? 'config';
  const located = problems.map((p) => {
    const yaml = /^rekey\.yaml( line \d+)?: ([^]*)$/.exec(p);
    if (yaml) return `${where}${yaml[1] ?? ''}: ${yaml[2]}`;
    if (/^[A-Z][A-Z0-9_]*:/.test(p)) return p;
    return `${where}: ${p}`;
  });
  return located.length ? located : [`${where}: invalid`];
}

/** The JSON Schema of `rekey.yaml`, for editors and docs (generated from the zod schema). */
export function configJsonSchema(): Record<string, unknown> {
  return {
    ...z.toJSONSchema(ConfigFileSchema, { io: 'input', target: 'draft-2020-12' }),
    title: 'rekey.yaml',
    description: 'Configuration of Rekey: Redis, AWS, the KMS budget, the API, workers, migrations, source bindings and event intake.',
  };
}
