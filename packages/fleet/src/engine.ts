import { hostname } from 'node:os';
import { randomBytes } from 'node:crypto';
import { Redis } from 'ioredis';
import pino, { type Logger } from 'pino';
import { Agent as HttpAgent } from 'node:http';
import { Agent as HttpsAgent } from 'node:https';
import { S3Client } from '@aws-sdk/client-s3';
import { KMSClient, DisableKeyCommand, ScheduleKeyDeletionCommand, TagResourceCommand } from '@aws-sdk/client-kms';
import { SQSClient } from '@aws-sdk/client-sqs';
import { CloudTrailClient } from '@aws-sdk/client-cloudtrail';
import pg from 'pg';
import {
  COUNTER_FIELDS,
  MigrationFatalError,
  RetryableError,
  ValidationError,
  checkKeyForMigration,
  isTerminal,
  canTransition,
  parseMigrationSpec,
  resumeTarget,
  type Migration,
  type MigrationSpec,
  type KeyInfo,
  type Source,
  type SourceSpec,
} from '@rekey/core';
import { createInFlightLimit, createKmsGateway, isCredentialError, type KmsGateway } from '@rekey/kms';
import { createSource } from '@rekey/sources';
import { canonicalJson, createAuditLog, type AuditLog } from './audit.js';
import { checkAuditBucket, checkpointAudit, exportAudit } from './audit-export.js';
import { DISABLED_BY_TAG } from './keys-audit.js';
import { createFleetBudget, type FleetBudget } from './budget.js';
import { createCoordinator } from './coordinator.js';
import { createEnumerator } from './enumerator.js';
import { computeGate, type GateResult, type OldKeyUsage } from './gate.js';
import { createSettler } from './settle.js';
import { redisKeys, type RedisKeys } from './keys.js';
import { createFleetMetrics, type FleetMetrics } from './metrics.js';
import { createBatchProcessor, type SourceRegistry } from './processor.js';
import { createBatchSplitter } from './split.js';
import { createIntake, type IntakeSettings } from './intake.js';
import { createUsageMonitor, type UsageMonitor } from './usage-monitor.js';
import { createItemProcessor } from './item-processor.js';
import { createFleetQueue, createFleetWorker, type FleetQueue } from './queues.js';
import { createProgressStore, type ProgressStore, type SourceCounters, type FailureRecord } from './store.js';
import { buildStatus, type MigrationStatus } from './status.js';
import { FleetError } from './errors.js';

/** Connection and idle timeouts of the engine's AWS clients, in milliseconds (docs/decisions.md #35). */
export interface AwsTimeouts {
  /** To open a TCP (and TLS) connection. */
  readonly connectMs: number;
  /** A response of the fleet's KMS client may go this long without a byte: KMS answers in milliseconds. */
  readonly kmsIdleMs: number;
  /**
   * A response of the fleet's S3 client may go this long without a byte. Generous: a CopyObject
   * of a large object answers 200 at once and then stays connected until the copy is done, and
   * AWS documents only for CompleteMultipartUpload that S3 sends white space meanwhile.
   */
  readonly s3IdleMs: number;
  /** The control-plane clients (DisableKey, GetKeyLastUsage, CloudTrail, the audit export, SQS long polls of up to 20 s). */
  readonly controlIdleMs: number;
}

/** The timeouts the engine's AWS clients use unless `aws.timeouts` says otherwise. */
export const AWS_TIMEOUTS: AwsTimeouts = { connectMs: 5_000, kmsIdleMs: 30_000, s3IdleMs: 300_000, controlIdleMs: 60_000 };

/** Everything the engine needs; services read it from config, tests pass it directly. */
export interface EngineOptions {
  readonly redisUrl: string;
  /** Redis key prefix. @defaultValue 'rekey:' */
  readonly prefix?: string;
  readonly aws: {
    readonly region: string;
    readonly endpoint?: string;
    readonly credentials?: { accessKeyId: string; secretAccessKey: string; sessionToken?: string };
    /**
     * Timeouts of the AWS clients (the SDK has none by default, so one stalled connection would
     * hold an item, its KMS slot and its batch, or the coordinator's gate check, forever). A
     * timed-out request is retried like a dropped connection. See {@link AWS_TIMEOUTS} for the defaults.
     */
    readonly timeouts?: Partial<AwsTimeouts>;
  };
  /** Fleet-wide KMS budget in requests per second; no limiter when unset. */
  readonly kmsBudgetRps?: number;
  readonly kmsMinRps?: number;
  /** The account's KMS quota in rps, so a budget can be changed to a percentage (`rekey budget 40%`). */
  readonly kmsQuotaRps?: number;
  readonly kmsAimd?: { decrease?: number; increaseRps?: number; increasePercent?: number; windowMs?: number };
  /** KMS cryptographic calls in flight in this process, across all its gateways (`worker.kmsConcurrency`). @defaultValue 16 */
  readonly kmsConcurrency?: number;
  /**
   * How long a worker's lock on a batch lasts (`worker.lockSeconds`), in milliseconds. Live workers
   * renew it at half this and a budget wait extends it; a dead worker's batches are handed on at
   * the first stalled check (every half lock) after it lapses. @defaultValue 30000
   */
  readonly jobLockMs?: number;
  readonly logger?: Logger;
  /** Who this process is in audit entries. @defaultValue `<role>:<host>:<pid>` */
  readonly actor?: string;
  /** Whether old-key usage is monitored for the gate (CloudTrail / GetKeyLastUsage). @defaultValue true */
  readonly monitorUsage?: boolean;
  /**
   * The old-key quiet window (seconds after verification started that the old keys must be seen
   * free of encrypt-type use, see docs/runbook.md) for every migration, or `'per-migration'` for
   * each migration's `options.quietWindowSeconds` (what the coordinator process uses unless
   * `REKEY_GATE_QUIET_WINDOW_SECONDS` is set). @defaultValue 0, for tests and aws-local, whose CloudTrail has no delivery lag
   */
  readonly quietWindowSeconds?: number | 'per-migration';
  /** The old-key usage monitor `startCoordinator` runs when `monitorUsage` is on. */
  readonly usageMonitor?: {
    readonly intervalMs?: number;
    readonly requestsPerSecond?: number;
    /** IAM principal ARN patterns whose calls are the fleet's own (see `gate.fleetPrincipals`). */
    readonly fleetPrincipals?: readonly string[];
  };
  /** Account id of the fleet, for the limiter key; resolved from the key ARNs when unset. */
  readonly accountId?: string;
  /** SQS event intake, run by `startCoordinator` when set (see docs/intake.md). */
  readonly intake?: IntakeSettings;
}

/** Options for finalize. */
export interface FinalizeOptions {
  readonly actor: string;
  readonly force?: boolean;
  /** Also schedule deletion of the old keys after this many days (7..30). Never the default. */
  readonly scheduleDeletionDays?: number;
}

export interface FinalizeResult {
  readonly disabled: readonly string[];
  /** Keys left enabled because another unfinished migration still lists them as a `from` key. */
  readonly skipped: readonly { key: string; reason: string }[];
  readonly scheduledDeletion: readonly string[];
  readonly forced: boolean;
}

export interface Engine {
  readonly keys: RedisKeys;
  readonly redis: Redis;
  readonly store: ProgressStore;
  readonly audit: AuditLog;
  readonly queue: FleetQueue;
  /**
   * Describes keys. Without a budget it is also the sources' gateway; with one it has no limiter,
   * and cryptographic calls go through `budget.gatewayFor(m)` / `gatewayForKey`.
   */
  readonly kms: KmsGateway;
  /** The fleet's KMS budget (limiters per account and Region); undefined when no budget is configured. */
  readonly budget: FleetBudget | undefined;
  readonly metrics: FleetMetrics;
  readonly logger: Logger;
  /** Validates, resolves keys (aliases pinned as ARNs), checks each key and source, and stores the migration. */
  createMigration(input: unknown, actor: string): Promise<Migration>;
  get(id: string): Promise<Migration>;
  list(): Promise<Migration[]>;
  status(id: string): Promise<MigrationStatus>;
  gate(id: string): Promise<GateResult>;
  pause(id: string, actor: string, reason?: string): Promise<Migration>;
  /** Resumes a paused migration; `reason` goes into the audit entry of the state change. */
  resume(id: string, actor: string, reason?: string): Promise<Migration>;
  cancel(id: string, actor: string, reason?: string): Promise<Migration>;
  /** Runs the read-only verify pass again; `reason` goes into the audit log. */
  verify(id: string, actor: string, reason?: string): Promise<Migration>;
  finalize(id: string, opts: FinalizeOptions): Promise<FinalizeResult>;
  failures(id: string, limit?: number): Promise<FailureRecord[]>;
  ack(id: string, which: { all: true } | { ids: readonly string[] }, reason: string, actor: string): Promise<number>;
  /** Starts a BullMQ worker in this process. */
  startWorker(opts?: { concurrency?: number; shutdown?: AbortSignal }): { close(): Promise<void> };
  /**
   * Starts the coordinator loop in this process. `auditCheckpointMs` is the time between two
   * checkpoints of a running migration's audit log to its auditBucket (default 60 s).
   */
  startCoordinator(opts?: { tickMs?: number; auditCheckpointMs?: number }): {
    tick(): Promise<void>;
    /** Runs one pass of the old-key usage monitor now (a no-op when `monitorUsage` is off). */
    checkUsage(): Promise<void>;
    close(): Promise<void>;
  };
  /** Sets the old-key usage the gate sees (the usage monitor calls this). */
  setUsage(id: string, usage: OldKeyUsage): Promise<void>;
  close(): Promise<void>;
}

function newMigrationId(): string {
  const d = new Date().toISOString().slice(0, 10).replace(/-/g, '');
  return `m-${d}-${randomBytes(3).toString('hex')}`;
}

/** Builds the engine: Redis connections, KMS gateway and limiter, store, queue, sources. */
export async function createEngine(opts: EngineOptions): Promise<Engine> {
  const logger = opts.logger ?? pino({ level: process.env['LOG_LEVEL'] ?? 'info' });
  const actor = opts.actor ?? `engine:${hostname()}:${process.pid}`;
  const keys = redisKeys(opts.prefix ?? 'rekey:');
  const redis = new Redis(opts.redisUrl, { maxRetriesPerRequest: 3, enableOfflineQueue: true });
  // ioredis reconnects by itself; without a listener each failed attempt is an unhandled error event.
  redis.on('error', (err: Error) => logger.warn({ err: err.message }, 'Redis connection error'));
  await redis.ping().catch((err: unknown) => {
    redis.disconnect();
    throw new FleetError('redis-unavailable', `Redis is not reachable at ${opts.redisUrl}: ${(err as Error).message}`);
  });
  const bullConnection = { url: opts.redisUrl, maxRetriesPerRequest: null } as const;
  const audit = createAuditLog(redis, keys);
  const store = createProgressStore(redis, keys, audit);
  const queue = createFleetQueue(bullConnection, keys.bullPrefix());
  const metrics = createFleetMetrics();
  const clientConfig = {
    region: opts.aws.region,
    ...(opts.aws.endpoint ? { endpoint: opts.aws.endpoint } : {}),
    ...(opts.aws.credentials ? { credentials: opts.aws.credentials } : {}),
  };
  const inFlight = createInFlightLimit(opts.kmsConcurrency ?? 16);
  const jobLockMs = opts.jobLockMs ?? 30_000;
  if (!Number.isInteger(jobLockMs) || jobLockMs < 1000) throw new RangeError(`jobLockMs must be an integer of at least 1000, got ${String(opts.jobLockMs)}`);
  // The SDK's default agents open at most 50 sockets per origin: more KMS slots would queue for one.
  const kmsSockets = Math.max(50, inFlight.limit);
  // One attempt per send (decisions.md #30): the gateway and sendS3 retry, taking a limiter token
  // before each attempt and telling AIMD of each throttle. The SDK's default (3 attempts) would
  // re-send a throttled request twice more without a token, and AIMD would hear of it late or never.
  const timeouts = { ...AWS_TIMEOUTS, ...opts.aws.timeouts };
  // The hot-path clients resolve their middleware once per command type, not once per request
  // (decisions.md #42): everything on them is sent with no per-call options (the gateway and
  // sendS3 wait on the abort signal with `abortable`), since a send with options drops the cache.
  const kmsClient = new KMSClient({
    ...clientConfig,
    maxAttempts: 1,
    cacheMiddleware: true,
    requestHandler: {
      httpAgent: new HttpAgent({ keepAlive: true, maxSockets: kmsSockets }),
      httpsAgent: new HttpsAgent({ keepAlive: true, maxSockets: kmsSockets }),
      connectionTimeout: timeouts.connectMs,
      socketTimeout: timeouts.kmsIdleMs,
    },
  });
  const s3 = new S3Client({
    ...clientConfig,
    maxAttempts: 1,
    cacheMiddleware: true,
    forcePathStyle: Boolean(opts.aws.endpoint),
    requestHandler: { connectionTimeout: timeouts.connectMs, socketTimeout: timeouts.s3IdleMs },
  });
  // Control-plane calls (DisableKey, ScheduleKeyDeletion, GetKeyLastUsage, the audit export's
  // S3 requests) spend no cryptographic quota and take no token: they keep the SDK's own retries.
  const control = { ...clientConfig, requestHandler: { connectionTimeout: timeouts.connectMs, socketTimeout: timeouts.controlIdleMs } };
  const controlKms = new KMSClient(control);
  const controlS3 = new S3Client({ ...control, forcePathStyle: Boolean(opts.aws.endpoint) });
  metrics.setInFlight(inFlight);
  // One limiter per (account, Region); each migration's sources get a gateway bound to its fair share.
  const budget: FleetBudget | undefined = opts.kmsBudgetRps
    ? createFleetBudget({
        redis,
        keys,
        region: opts.aws.region,
        ...(opts.accountId ? { accountId: opts.accountId } : {}),
        budgetRps: opts.kmsBudgetRps,
        ...(opts.kmsQuotaRps ? { quotaRps: opts.kmsQuotaRps } : {}),
        minRps: opts.kmsMinRps ?? 1,
        ...(opts.kmsAimd ? { aimd: opts.kmsAimd } : {}),
        kmsClient,
        inFlight,
        metrics,
        audit,
        logger,
        lockDurationMs: jobLockMs,
      })
    : undefined;
  // The engine's own gateway describes keys (no token) and, with no budget configured, serves the
  // sources. With a budget every cryptographic call goes through budget.gatewayFor*: a limiter
  // here would only be an idle extra one in `rekey budget` and in rekey_kms_rate_limit_rps.
  const kms = createKmsGateway({ client: kmsClient }, { inFlight, metrics: metrics.kmsHook });
  const pools = new Map<string, pg.Pool>();
  const defaultDbUrl = process.env['DATABASE_URL'] ?? 'postgres://postgres@127.0.0.1:5432/test';

  function poolFor(url: string): pg.Pool {
    let p = pools.get(url);
    if (!p) {
      p = new pg.Pool({ connectionString: url, max: 16 });
      p.on('error', (err) => logger.warn({ err: err.message }, 'idle Postgres connection failed'));
      pools.set(url, p);
    }
    return p;
  }

  const built = new Map<string, Promise<Source>>();
  const sources: SourceRegistry = {
    get(m, name) {
      const k = `${m.id}/${name}`;
      let s = built.get(k);
      if (!s) {
        const spec = m.spec.sources.find((x) => x.name === name);
        if (!spec) return Promise.reject(new FleetError('unknown-source', `migration ${m.id} has no source named ${name}`));
        s = createSource(
          spec,
          { s3, kms: budget ? budget.gatewayFor(m) : kms, pool: poolFor(defaultDbUrl) },
          { pageSize: m.spec.options.batchSize },
        );
        built.set(k, s);
        s.catch(() => built.delete(k));
      }
      return s;
    },
    async close() {
      for (const s of built.values()) await (await s.catch(() => undefined))?.close?.();
      built.clear();
    },
  };

  /**
   * The source of a spec no migration holds (item jobs routed by alias), cached like the others.
   * With a budget, its KMS calls take tokens from the `intake` share of the target key's account
   * limiter, the same limiter the migrations of that account share.
   */
  function sourceFor(spec: SourceSpec, targetKeyArn: string): Promise<Source> {
    const gateway = budget ? budget.gatewayForKey(targetKeyArn, 'intake') : kms;
    const k = `intake/${budget ? `${targetKeyArn}/` : ''}${canonicalJson(spec)}`;
    let s = built.get(k);
    if (!s) {
      s = createSource(spec, { s3, kms: gateway, pool: poolFor(defaultDbUrl) }, { pageSize: 100 });
      built.set(k, s);
      s.catch(() => built.delete(k));
    }
    return s;
  }
  let sqs: SQSClient | undefined;
  let cloudtrail: CloudTrailClient | undefined;

  async function must(id: string): Promise<Migration> {
    const m = await store.get(id);
    if (!m) throw new FleetError('not-found', `no migration with id ${id}`);
    return m;
  }

  async function readUsage(id: string): Promise<OldKeyUsage | null> {
    const raw = await redis.hget(keys.usage(id), 'usage');
    return raw ? (JSON.parse(raw) as OldKeyUsage) : null;
  }

  async function gateOf(m: Migration): Promise<GateResult> {
    const names = m.spec.sources.map((s) => s.name);
    const [counters, acks, failures, usage] = await Promise.all([
      store.counters(m.id, names),
      store.acks(m.id),
      store.failures(m.id, { limit: 100_000 }),
      readUsage(m.id),
    ]);
    return computeGate({
      migration: m,
      counters,
      acks,
      failureIds: failures.filter((f) => f.code !== 'verify:old-key').map((f) => f.id),
      usage,
      usageMonitored: opts.monitorUsage ?? true,
      quietWindowSeconds: quietWindowOf(m),
    });
  }

  /** The quiet window the gate applies to a migration: its own, or the process's override. */
  function quietWindowOf(m: Migration): number {
    return opts.quietWindowSeconds === 'per-migration' ? m.spec.options.quietWindowSeconds : (opts.quietWindowSeconds ?? 0);
  }

  async function finalize(id: string, f: FinalizeOptions): Promise<FinalizeResult> {
    const m = await must(id);
    if (isTerminal(m.state)) throw new FleetError('invalid-state', `migration ${id} is ${m.state}; nothing to finalize`);
    const gate = await gateOf(m);
    if (!gate.ready && !f.force) {
      const red = gate.conditions.filter((c) => !c.ok).map((c) => `${c.name}: ${c.detail}`);
      throw new FleetError('gate-not-ready', `the gate of ${id} is not ready: ${red.join('; ')}`);
    }
    // Before any key is touched: a migration that can't move to finalized (paused, running, …)
    // must not have its old keys disabled and then report that it could not finalize.
    if (!canTransition(m.state, 'finalized', { force: !gate.ready })) {
      throw new FleetError('invalid-state', `migration ${id} is ${m.state}; finalize needs it ready (or blocked, with --force)${m.state === 'paused' ? ': resume it first' : ''}`);
    }
    if (f.scheduleDeletionDays !== undefined && !(Number.isInteger(f.scheduleDeletionDays) && f.scheduleDeletionDays >= 7 && f.scheduleDeletionDays <= 30)) {
      throw new FleetError('bad-input', `--schedule-deletion-days must be a whole number from 7 to 30, got ${f.scheduleDeletionDays}`);
    }
    const others = (await store.list()).filter((o) => o.id !== id && !isTerminal(o.state));
    const disabled: string[] = [];
    const skipped: { key: string; reason: string }[] = [];
    const scheduled: string[] = [];
    if (m.spec.refresh) {
      skipped.push({ key: m.keys.to, reason: 'a refresh migration moves data to the same key; the key stays enabled' });
    } else {
      for (const key of m.keys.from) {
        const user = others.find((o) => o.keys.from.includes(key));
        if (user) {
          skipped.push({ key, reason: `migration ${user.id} (${user.state}) still lists it as a from key` });
          await audit.append(id, { actor: f.actor, type: 'key.disable-skipped', data: { key, reason: skipped.at(-1)!.reason } });
          continue;
        }
        await controlKms.send(new DisableKeyCommand({ KeyId: key }));
        disabled.push(key);
        // The tag tells `rekey keys audit` that the key's last use was this migration's own, checked
        // by the gate, so it does not flag the key as disabled-but-used. Best effort: a role without
        // kms:TagResource still finalizes, and the audit entry says the tag is missing.
        const tagged = await controlKms
          .send(new TagResourceCommand({ KeyId: key, Tags: [{ TagKey: DISABLED_BY_TAG, TagValue: id }] }))
          .then(() => true, (err: unknown) => `${(err as Error).name}: ${(err as Error).message}`);
        await audit.append(id, { actor: f.actor, type: 'key.disabled', data: { key, forced: !gate.ready, gate: gate.conditions, ...(tagged === true ? { tag: DISABLED_BY_TAG } : { tagFailed: tagged }) } });
        if (f.scheduleDeletionDays !== undefined) {
          const r = await controlKms.send(new ScheduleKeyDeletionCommand({ KeyId: key, PendingWindowInDays: f.scheduleDeletionDays }));
          scheduled.push(key);
          await audit.append(id, { actor: f.actor, type: 'key.deletion-scheduled', data: { key, days: f.scheduleDeletionDays, deletionDate: r.DeletionDate?.toISOString() } });
        }
      }
    }
    if (!gate.ready) {
      await audit.append(id, { actor: f.actor, type: 'finalize.forced', data: { red: gate.conditions.filter((c) => !c.ok) } });
    }
    await store.transition(id, 'finalized', { actor: f.actor, force: !gate.ready, patch: { finishedAt: new Date().toISOString() } });
    return { disabled, skipped, scheduledDeletion: scheduled, forced: !gate.ready };
  }

  /** Writes a finished migration's audit log to its auditBucket and records where (or why not). */
  async function exportAuditOf(m: Migration): Promise<boolean> {
    try {
      const rec = await exportAudit({ s3: controlS3, audit }, m);
      if (!rec) return false;
      await store.patch(m.id, { auditExport: rec, auditExportError: undefined });
      await audit.append(m.id, { actor, type: 'audit.exported', data: { ...rec } });
      logger.info({ migration: m.id, bucket: rec.bucket, key: rec.key, entries: rec.entries }, 'audit log exported');
      return true;
    } catch (err) {
      await store.patch(m.id, { auditExportError: (err as Error).message });
      throw err;
    }
  }

  /** Writes a running migration's audit log so far to its auditBucket and records it (or why not). */
  async function checkpointAuditOf(m: Migration): Promise<boolean> {
    try {
      const { copy, recordsState } = await checkpointAudit({ s3: controlS3, audit }, m);
      if (copy) await store.patch(m.id, { auditCheckpoint: copy, auditExportError: undefined });
      else if (m.auditExportError !== undefined) await store.patch(m.id, { auditExportError: undefined });
      return recordsState;
    } catch (err) {
      await store.patch(m.id, { auditExportError: (err as Error).message });
      throw err;
    }
  }

  const settle = createSettler({
    store,
    gateOf,
    actor,
    onGate: (m, gate) => metrics.gateReady.set({ migration: m.id }, gate.ready ? 1 : 0),
    autoFinalize: async (m) => void (await finalize(m.id, { actor: `${actor}:autoFinalize` })),
  });

  async function resetVerify(m: Migration): Promise<void> {
    const pipe = redis.pipeline();
    for (const s of m.spec.sources) {
      pipe.del(keys.cursor(m.id, s.name, 'verify'));
      pipe.hdel(keys.counters(m.id, s.name), ...COUNTER_FIELDS.filter((f) => f.startsWith('verify')));
    }
    await pipe.exec();
  }

  const engine: Engine = {
    keys,
    redis,
    store,
    audit,
    queue,
    kms,
    budget,
    metrics,
    logger,

    async createMigration(input, who) {
      let spec: MigrationSpec;
      try {
        spec = parseMigrationSpec(input);
      } catch (err) {
        if (err instanceof ValidationError) throw err;
        throw new ValidationError([(err as Error).message]);
      }
      const id = spec.id ?? newMigrationId();
      if (await store.get(id)) throw new ValidationError([`id: a migration named ${id} already exists`]);
      const problems: string[] = [];
      const resolve = async (role: 'from' | 'to', keyId: string): Promise<KeyInfo | undefined> => {
        try {
          return await kms.describeKey(keyId);
        } catch (err) {
          // Not a problem with the key named: this process can't reach KMS or has no usable credentials.
          if (err instanceof RetryableError || (err instanceof MigrationFatalError && isCredentialError(err.code))) {
            throw new FleetError('aws-unavailable', `${role} key ${keyId}: ${(err as Error).message}`, { cause: err });
          }
          problems.push(`${role} key ${keyId}: ${(err as Error).message}`);
          return undefined;
        }
      };
      const to = await resolve('to', spec.to);
      const from = await Promise.all(spec.from.map((k) => resolve('from', k)));
      if (to) {
        const why = checkKeyForMigration('to', to);
        if (why) problems.push(`to key ${spec.to} (${to.arn}): ${why}`);
      }
      from.forEach((k, i) => {
        if (!k) return;
        const why = checkKeyForMigration('from', k, to);
        if (why) problems.push(`from key ${spec.from[i]} (${k.arn}): ${why}`);
      });
      if (to && !spec.refresh && from.some((k) => k?.arn === to.arn)) {
        problems.push(`to key ${spec.to} resolves to ${to.arn}, which is also a from key (use refresh: true to move data to the current key material)`);
      }
      if (problems.length) throw new ValidationError(problems);
      const now = new Date().toISOString();
      const aliases: Record<string, string> = {};
      spec.from.forEach((k, i) => {
        if (k.startsWith('alias/')) aliases[k] = from[i]!.arn;
      });
      if (spec.to.startsWith('alias/')) aliases[spec.to] = to!.arn;
      const m: Migration = {
        id,
        spec: { ...spec, id },
        state: 'created',
        keys: { from: [...new Set(from.map((k) => k!.arn))], to: to!.arn, aliases },
        createdAt: now,
        updatedAt: now,
        round: 1,
      };
      // Probe each source once (one cheap list call) so a missing bucket or table is refused now.
      for (const s of spec.sources) {
        try {
          const src = await sources.get(m, s.name);
          await src.list(null, AbortSignal.timeout(30_000));
        } catch (err) {
          problems.push(`source ${s.name}: ${(err as Error).message}`);
        }
      }
      if (spec.auditBucket) {
        const why = await checkAuditBucket(controlS3, spec.auditBucket);
        if (why) problems.push(why);
      }
      if (problems.length) throw new ValidationError(problems);
      await store.create(m, who);
      return m;
    },

    get: must,
    list: () => store.list(),

    async status(id) {
      const m = await must(id);
      return buildStatus({ migration: m, store, gate: await gateOf(m), usage: await readUsage(id) });
    },

    async gate(id) {
      return gateOf(await must(id));
    },

    async pause(id, who, reason) {
      const m = await must(id);
      if (!['enumerating', 'running', 'verifying', 'ready', 'blocked'].includes(m.state)) {
        throw new FleetError('invalid-state', `migration ${id} is ${m.state} and can't be paused`);
      }
      return store.transition(id, 'paused', { actor: who, reason: reason ?? 'paused by operator' });
    },

    async resume(id, who, reason) {
      const m = await must(id);
      if (m.state !== 'paused') throw new FleetError('invalid-state', `migration ${id} is ${m.state}, not paused`);
      return store.transition(id, resumeTarget(m.pausedFrom ?? 'enumerating'), { actor: who, ...(reason ? { reason } : {}) });
    },

    async cancel(id, who, reason) {
      const m = await must(id);
      if (isTerminal(m.state)) throw new FleetError('invalid-state', `migration ${id} is already ${m.state}`);
      return store.transition(id, 'cancelled', { actor: who, reason: reason ?? 'cancelled by operator' });
    },

    async verify(id, who, reason) {
      const m = await must(id);
      if (!['ready', 'blocked', 'verifying'].includes(m.state)) {
        throw new FleetError('invalid-state', `migration ${id} is ${m.state}; verify runs once every batch is done (ready, blocked or verifying)`);
      }
      await resetVerify(m);
      const patch = { verifyRound: (m.verifyRound ?? 1) + 1, verifyStartedAt: new Date().toISOString(), verifyEnumeratedAt: undefined, verifiedAt: undefined };
      if (m.state === 'verifying') {
        // No state change to audit: the restart of the pass is its own entry.
        await store.patch(id, patch);
        await audit.append(id, { actor: who, type: 'verify.restarted', data: { round: patch.verifyRound, ...(reason ? { reason } : {}) } });
        return must(id);
      }
      return store.transition(id, 'verifying', { actor: who, patch, ...(reason ? { reason } : {}) });
    },

    finalize,
    failures: (id, limit) => store.failures(id, { limit: limit ?? 1000 }),
    ack: (id, which, reason, who) => store.ack(id, which, reason, who),

    startWorker(w = {}) {
      const shutdown = new AbortController();
      w.shutdown?.addEventListener('abort', () => shutdown.abort(), { once: true });
      const processor = createBatchProcessor({
        store,
        sources,
        logger,
        metrics,
        shutdown: shutdown.signal,
        actor,
        splitter: createBatchSplitter(redis, keys, queue),
        ...(budget ? { holdJob: budget.holdJob } : {}),
      });
      const itemProcessor = createItemProcessor({ store, sources, sourceFor, redis, keys, kms, logger, shutdown: shutdown.signal });
      const worker = createFleetWorker(bullConnection, keys.bullPrefix(), async (job, token) => {
        switch (job.name) {
          case 'batch':
          case 'verify':
            return processor(job, token);
          case 'item':
            return itemProcessor(job, token);
        }
      }, { concurrency: w.concurrency ?? 2, lockDuration: jobLockMs, stalledInterval: Math.floor(jobLockMs / 2) });
      worker.on('error', (err) => logger.error({ err: err.message }, 'worker error'));
      return {
        async close() {
          shutdown.abort();
          await worker.close();
        },
      };
    },

    startCoordinator(c = {}) {
      const enumerator = createEnumerator({ redis, keys, queue, sources, logger, owner: `${actor}:${randomBytes(4).toString('hex')}` });
      let monitor: UsageMonitor | undefined;
      if (opts.monitorUsage ?? true) {
        cloudtrail ??= new CloudTrailClient(control);
        monitor = createUsageMonitor({
          kms: controlKms,
          cloudtrail,
          migrations: () => store.list(),
          getUsage: readUsage,
          setUsage: (id, usage) => engine.setUsage(id, usage),
          owns: (id) => enumerator.holdLease(id),
          quietWindowSeconds: quietWindowOf,
          metrics,
          logger,
          ...(opts.usageMonitor?.intervalMs !== undefined ? { intervalMs: opts.usageMonitor.intervalMs } : {}),
          ...(opts.usageMonitor?.requestsPerSecond !== undefined ? { requestsPerSecond: opts.usageMonitor.requestsPerSecond } : {}),
          ...(opts.usageMonitor?.fleetPrincipals ? { fleetPrincipals: opts.usageMonitor.fleetPrincipals } : {}),
        });
      }
      // The gate needs a look at the old keys after the verify pass; take it before settling instead of waiting a whole interval.
      const settleFresh = monitor
        ? async (m: Migration) => {
            await monitor.ensureFresh(m);
            await settle(m);
          }
        : settle;
      const coordinator = createCoordinator({ store, enumerator, logger, actor, settle: settleFresh, exportAudit: exportAuditOf, checkpointAudit: checkpointAuditOf, ...(c.auditCheckpointMs !== undefined && { auditCheckpointMs: c.auditCheckpointMs }), tickMs: c.tickMs ?? 500 });
      coordinator.start();
      // Any process that changes a migration (the API, a CLI, a worker recording the last batch of a
      // pass) publishes its id: the coordinator acts on it now rather than on its next tick.
      const changes = redis.duplicate();
      changes.on('message', () => coordinator.wake());
      changes.on('error', (err: Error) => logger.debug({ err: err.message }, 'change subscription error (ioredis reconnects)'));
      changes.subscribe(keys.changes()).catch((err: unknown) => logger.warn({ err: (err as Error).message }, 'could not subscribe to migration changes; the coordinator ticks only'));
      monitor?.start();
      let intake: ReturnType<typeof createIntake> | undefined;
      if (opts.intake) {
        sqs ??= new SQSClient(control);
        intake = createIntake({
          settings: opts.intake,
          sqs,
          redis,
          keys,
          queue,
          audit,
          kms,
          migrations: { create: (spec, who) => engine.createMigration(spec, who), list: () => store.list() },
          logger,
          actor: `${actor}:intake`,
        });
        intake.start();
      }
      return {
        tick: coordinator.tick,
        checkUsage: async () => {
          await monitor?.checkAll();
        },
        async close() {
          await intake?.stop();
          await monitor?.stop();
          await coordinator.stop();
          changes.disconnect();
        },
      };
    },

    async setUsage(id, usage) {
      await redis.hset(keys.usage(id), 'usage', JSON.stringify(usage));
    },

    async close() {
      await queue.close();
      await sources.close();
      for (const p of pools.values()) await p.end();
      budget?.close();
      await store.close();
      kmsClient.destroy();
      s3.destroy();
      controlKms.destroy();
      controlS3.destroy();
      sqs?.destroy();
      cloudtrail?.destroy();
      await redis.quit();
    },
  };
  return engine;
}

export type { SourceCounters };
