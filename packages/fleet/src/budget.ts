/**
 * The fleet's KMS budget: one Redis limiter per (account, Region), a KMS gateway per migration
 * bound to that migration's fair share, the `rekey_kms_rate_limit_rps` gauge, job-lock
 * extension while an item waits long for a token, and the audited `rekey budget` change.
 */
import type { FastifyInstance, FastifyRequest } from 'fastify';
import type { Redis } from 'ioredis';
import type { Logger } from 'pino';
import type { KMSClient } from '@aws-sdk/client-kms';
import type { Migration } from '@rekey/core';
import { createKmsGateway, createRedisLimiter, type InFlightLimit, type KmsGateway, type LongWaitInfo, type RedisLimiter } from '@rekey/kms';
import type { AuditLog } from './audit.js';
import { FleetError } from './errors.js';
import type { RedisKeys } from './keys.js';
import type { FleetMetrics } from './metrics.js';

/** Audit log id of fleet-wide events such as budget changes. */
export const FLEET_AUDIT_ID = 'fleet';

const PERCENT = /^(\d+(?:\.\d+)?)%$/;
const KEY_ARN = /^arn:aws[a-z-]*:kms:([a-z0-9-]+):(\d{12}):key\//;

/** The part of a BullMQ job the budget needs to keep a job's lock while its items wait for tokens. */
export interface LockableJob {
  readonly id?: string | undefined;
  extendLock(token: string, duration: number): Promise<unknown>;
}

/** Options of {@link createFleetBudget}. */
export interface FleetBudgetOptions {
  /** The engine's Redis connection (not closed by the budget). */
  readonly redis: Redis;
  readonly keys: RedisKeys;
  /** Region of the fleet; used when a migration's key ARN can't tell. */
  readonly region: string;
  /** Account of the fleet; used when a migration's key ARN can't tell. @defaultValue 'default' */
  readonly accountId?: string;
  /** The configured budget in rps (from `kms.budget`, already resolved against `kms.quotaRps`). */
  readonly budgetRps: number;
  /** The account's quota in rps, so `rekey budget 40%` can be resolved. */
  readonly quotaRps?: number;
  /** @defaultValue 1 */
  readonly minRps?: number;
  readonly aimd?: { decrease?: number; increaseRps?: number; increasePercent?: number; windowMs?: number };
  /** The KMS client every gateway shares. */
  readonly kmsClient: KMSClient;
  /** The process's cap on KMS calls in flight, shared by every gateway. */
  readonly inFlight?: InFlightLimit;
  readonly metrics?: FleetMetrics;
  readonly audit: AuditLog;
  readonly logger: Logger;
  /** The BullMQ lock duration of batch jobs; long token waits extend the lock by this much. @defaultValue 30000 */
  readonly lockDurationMs?: number;
  /** How often an `acquire` that still waits extends its job's lock. @defaultValue lockDurationMs / 3 */
  readonly longWaitMs?: number;
  /** How often `rekey_kms_rate_limit_rps` is refreshed; 0 disables the poll. @defaultValue 1000 */
  readonly ratePollMs?: number;
}

/** The budget in force, as `GET /budget` and `rekey budget` show it. */
export interface BudgetState {
  /** Configured budget in rps. */
  readonly configuredRps: number;
  readonly quotaRps: number | null;
  /** One entry per limiter this process knows. */
  readonly limiters: readonly {
    readonly account: string;
    readonly region: string;
    /** Operator override (`rekey budget`), or null when the configured budget applies. */
    readonly overrideRps: number | null;
    /** The AIMD rate now (never above the budget in force). */
    readonly rateRps: number;
  }[];
}

/** The fleet's budget: limiters, per-migration gateways, the rate gauge and budget changes. */
export interface FleetBudget {
  /** The (account, Region) used when a migration's key ARN names none. */
  readonly home: { readonly account: string; readonly region: string };
  /** The limiter of one (account, Region), created on first use. */
  limiterFor(account: string, region: string): RedisLimiter;
  /** A KMS gateway whose calls take tokens from the migration's fair share of its account's limiter. */
  gatewayFor(m: Migration): KmsGateway;
  /**
   * A gateway for work that belongs to no migration (app-requested item jobs): its calls take
   * tokens from a fair share, named `participant`, of the limiter of the key's (account, Region).
   */
  gatewayForKey(keyArn: string, participant: string): KmsGateway;
  /** Keeps `job`'s lock extended while items of `migrationId` wait long for tokens; call the result when the batch ends. */
  holdJob(migrationId: string, job: LockableJob, token: string | undefined): () => void;
  /** Sets the operator's budget override (`null` clears it) on every limiter of `accounts`, and audits it. */
  set(input: unknown, actor: string, accounts: readonly { account: string; region: string }[]): Promise<BudgetState>;
  /** The budget and current rate of every limiter of `accounts`. */
  state(accounts: readonly { account: string; region: string }[]): Promise<BudgetState>;
  /** Stops the rate poll and closes every limiter and gateway (the Redis connection is the caller's). */
  close(): void;
}

/** The (account, Region) a migration's KMS calls are billed to, from its target key ARN. */
export function accountOf(m: Migration, fallback: { account: string; region: string }): { account: string; region: string } {
  const match = KEY_ARN.exec(m.keys.to);
  return match ? { region: match[1]!, account: match[2]! } : fallback;
}

/**
 * Parses a budget as given to `rekey budget` or `POST /budget`: a positive rps (number or numeric
 * string), a percentage of the quota (`"40%"`), or `null`/`"default"` to go back to the configured budget.
 */
export function parseBudgetInput(input: unknown, quotaRps: number | undefined): number | null {
  if (input === null || input === 'default') return null;
  if (typeof input === 'number') {
    if (Number.isFinite(input) && input > 0) return input;
    throw new FleetError('bad-input', `budget must be a positive number of requests per second, got ${input}`);
  }
  if (typeof input !== 'string') throw new FleetError('bad-input', 'budget must be a number of requests per second, a percentage such as "40%", or "default"');
  const s = input.trim();
  const pct = PERCENT.exec(s);
  if (pct) {
    const p = Number(pct[1]);
    if (!(p > 0 && p <= 100)) throw new FleetError('bad-input', `budget percentage must be above 0% and at most 100%, got ${s}`);
    if (quotaRps === undefined) throw new FleetError('bad-input', `budget ${s} is a percentage, but kms.quotaRps (REKEY_KMS_QUOTA_RPS) is not configured`);
    return (quotaRps * p) / 100;
  }
  if (/^\d+(\.\d+)?$/.test(s)) return parseBudgetInput(Number(s), quotaRps);
  throw new FleetError('bad-input', `budget must be a number of requests per second, a percentage such as "40%", or "default", got ${JSON.stringify(s.slice(0, 40))}`);
}

/** Builds the fleet's budget over the engine's Redis connection. */
export function createFleetBudget(opts: FleetBudgetOptions): FleetBudget {
  if (!(Number.isFinite(opts.budgetRps) && opts.budgetRps > 0)) {
    throw new FleetError('bad-input', `the KMS budget must be a positive rps, got ${opts.budgetRps}`);
  }
  const lockDurationMs = opts.lockDurationMs ?? 30_000;
  const limiters = new Map<string, { account: string; region: string; limiter: RedisLimiter }>();
  const gateways = new Map<string, KmsGateway>();
  const held = new Map<string, Set<{ job: LockableJob; token: string }>>();
  let closed = false;

  function onLongWait(info: LongWaitInfo): void {
    const jobs = info.migrationId ? held.get(info.migrationId) : undefined;
    if (!jobs) return;
    for (const h of jobs) {
      // BullMQ renews locks on its own timer too; this covers waits that outlast a renewal.
      h.job.extendLock(h.token, lockDurationMs).catch((err: unknown) => {
        opts.logger.warn({ job: h.job.id, migration: info.migrationId, err: (err as Error).message }, 'could not extend the lock of a batch waiting for KMS tokens');
      });
    }
  }

  function limiterFor(account: string, region: string): RedisLimiter {
    if (closed) throw new FleetError('invalid-state', 'the KMS budget is closed');
    const k = `${account}:${region}`;
    let entry = limiters.get(k);
    if (!entry) {
      const limiter = createRedisLimiter({
        redis: opts.redis,
        key: opts.keys.limiter(account, region),
        budget: opts.budgetRps,
        minRps: opts.minRps ?? 1,
        aimd: { decrease: 0.7, increaseRps: 5, increasePercent: 1, windowMs: 1000, ...opts.aimd },
        onLongWait,
        longWaitMs: opts.longWaitMs ?? Math.max(1000, Math.floor(lockDurationMs / 3)),
      });
      entry = { account, region, limiter };
      limiters.set(k, entry);
      void adoptOverride(limiter);
    }
    return entry.limiter;
  }

  /**
   * A limiter first used after `rekey budget` (e.g. the first migration of an account) takes the
   * fleet-wide override, so the operator's budget holds for every account and Region.
   */
  async function adoptOverride(limiter: RedisLimiter): Promise<void> {
    try {
      const [fleetOverride, own] = await Promise.all([opts.redis.hget(opts.keys.budgetOverride(), 'rps'), opts.redis.hget(limiter.key, 'budget')]);
      if (fleetOverride !== null && own === null) await limiter.setBudget(Number(fleetOverride));
    } catch (err) {
      opts.logger.warn({ err: (err as Error).message, limiter: limiter.key }, 'could not apply the fleet budget override to a new limiter; the configured budget applies');
    }
  }

  const fallback = { account: opts.accountId ?? 'default', region: opts.region };

  async function state(accounts: readonly { account: string; region: string }[]): Promise<BudgetState> {
    const all = new Map<string, { account: string; region: string }>();
    for (const e of limiters.values()) all.set(`${e.account}:${e.region}`, e);
    for (const a of accounts) all.set(`${a.account}:${a.region}`, a);
    if (all.size === 0) all.set(`${fallback.account}:${fallback.region}`, fallback);
    const out: BudgetState['limiters'][number][] = [];
    for (const a of all.values()) {
      const limiter = limiterFor(a.account, a.region);
      // The override lives in the limiter's hash (field `budget`, written by set-budget-1.lua).
      const [override, rate] = await Promise.all([opts.redis.hget(limiter.key, 'budget'), limiter.currentRate()]);
      out.push({ account: a.account, region: a.region, overrideRps: override === null ? null : Number(override), rateRps: rate });
    }
    return { configuredRps: opts.budgetRps, quotaRps: opts.quotaRps ?? null, limiters: out };
  }

  opts.metrics?.setLimiterStats(() => {
    let grantCalls = 0;
    let tokensGranted = 0;
    for (const e of limiters.values()) {
      const st = e.limiter.stats();
      grantCalls += st.grantCalls;
      tokensGranted += st.tokensGranted;
    }
    return { grantCalls, tokensGranted };
  });

  const poll = opts.ratePollMs === 0 || !opts.metrics
    ? undefined
    : setInterval(() => {
        // Only limiters this process has drawn tokens from: one looked at by `rekey budget` (or a
        // fallback account nobody uses) would publish its untouched budget as a rate.
        const used = [...limiters.values()].filter((e) => e.limiter.stats().grantCalls > 0);
        if (used.length === 0) return;
        void Promise.all(used.map(async (e) => [e, await e.limiter.currentRate()] as const))
          .then((rates) => {
            for (const [e, rate] of rates) opts.metrics?.kmsRateLimit.set({ account: e.account, region: e.region }, rate);
          })
          .catch(() => undefined); // Redis down: the gauge keeps its last value and the limiter itself refuses work.
      }, opts.ratePollMs ?? 1000);
  poll?.unref();

  /** One gateway per (participant, account, Region), drawing on that participant's fair share. */
  function shareGateway(participant: string, a: { account: string; region: string }, weight: number): KmsGateway {
    const k = `${participant}|${a.account}|${a.region}`;
    let g = gateways.get(k);
    if (!g) {
      g = createKmsGateway(
        { client: opts.kmsClient },
        {
          limiter: limiterFor(a.account, a.region).forMigration(participant, weight),
          ...(opts.inFlight ? { inFlight: opts.inFlight } : {}),
          ...(opts.metrics ? { metrics: opts.metrics.kmsHook } : {}),
        },
      );
      gateways.set(k, g);
    }
    return g;
  }

  return {
    home: fallback,
    limiterFor,

    gatewayFor(m) {
      return shareGateway(m.id, accountOf(m, fallback), m.spec.options.weight);
    },

    gatewayForKey(keyArn, participant) {
      const match = KEY_ARN.exec(keyArn);
      return shareGateway(participant, match ? { region: match[1]!, account: match[2]! } : fallback, 1);
    },

    holdJob(migrationId, job, token) {
      if (token === undefined) return () => undefined;
      const h = { job, token };
      let set = held.get(migrationId);
      if (!set) held.set(migrationId, (set = new Set()));
      set.add(h);
      return () => {
        set.delete(h);
        if (set.size === 0 && held.get(migrationId) === set) held.delete(migrationId);
      };
    },

    async set(input, actor, accounts) {
      const rps = parseBudgetInput(input, opts.quotaRps);
      const before = await state(accounts);
      if (rps === null) await opts.redis.del(opts.keys.budgetOverride());
      else await opts.redis.hset(opts.keys.budgetOverride(), 'rps', String(rps));
      for (const l of before.limiters) await limiterFor(l.account, l.region).setBudget(rps);
      const after = await state(accounts);
      await opts.audit.append(FLEET_AUDIT_ID, {
        actor,
        type: rps === null ? 'budget.cleared' : 'budget.set',
        data: {
          input: typeof input === 'string' || typeof input === 'number' ? input : null,
          rps,
          configuredRps: opts.budgetRps,
          limiters: after.limiters.map((l) => ({ account: l.account, region: l.region, previousOverrideRps: before.limiters.find((b) => b.account === l.account && b.region === l.region)?.overrideRps ?? null })),
        },
      });
      opts.logger.info({ actor, rps }, rps === null ? 'KMS budget override cleared' : 'KMS budget override set');
      return after;
    },

    state,

    close() {
      closed = true;
      if (poll) clearInterval(poll);
      for (const e of limiters.values()) e.limiter.close();
      limiters.clear();
      gateways.clear();
      held.clear();
    },
  };
}

/** What the budget routes need from the engine. */
export interface BudgetRoutesEngine {
  readonly budget: FleetBudget | undefined;
  list(): Promise<Migration[]>;
}

/** The (account, Region) of every migration that can still spend tokens. */
export async function activeAccounts(engine: Pick<BudgetRoutesEngine, 'list'>, fallback: { account: string; region: string }): Promise<{ account: string; region: string }[]> {
  const live = (await engine.list()).filter((m) => !['cancelled', 'failed', 'finalized'].includes(m.state));
  const seen = new Map<string, { account: string; region: string }>();
  for (const m of live) {
    const a = accountOf(m, fallback);
    seen.set(`${a.account}:${a.region}`, a);
  }
  return [...seen.values()];
}

/**
 * Adds `GET /budget` and `POST /budget` (`{ "budget": 600 | "40%" | "default" }`) to the API;
 * a change is written to the `fleet` audit log.
 */
export function registerBudgetRoutes(app: FastifyInstance, engine: BudgetRoutesEngine): void {
  const must = (): FleetBudget => {
    if (!engine.budget) throw new FleetError('not-supported', 'this coordinator runs without a KMS budget (kms.budget is not configured)');
    return engine.budget;
  };
  app.get('/budget', async () => {
    const b = must();
    return b.state(await activeAccounts(engine, b.home));
  });
  app.post('/budget', async (req: FastifyRequest) => {
    const body = req.body;
    if (!body || typeof body !== 'object' || Array.isArray(body) || !('budget' in body)) {
      throw new FleetError('bad-input', 'body must be a JSON object with "budget": an rps number, a percentage such as "40%", or "default"');
    }
    const b = must();
    return b.set((body as { budget: unknown }).budget, `api:${req.ip}`, await activeAccounts(engine, b.home));
  });
}
