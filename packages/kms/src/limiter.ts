/**
 * The fleet-wide KMS rate limiter: one token bucket per (account, Region) in a Redis hash,
 * shared by every worker process and every migration, with AIMD and a weighted fair share per
 * migration. All the shared math runs in one Lua script (`lua/acquire-1.lua`) on the server's
 * clock; each process asks for small batches of tokens and serves them locally.
 */
import { RetryableError } from '@rekey/core';
import { Redis } from 'ioredis';
import { KmsGatewayError } from './errors.js';
import { maxGrant } from './limiter-math.js';
import { loadScript, runScript } from './scripts.js';

/** What the gateway needs from a limiter. */
export interface RateLimiter {
  /** Waits for one token (timers only; never blocks the event loop). Rejects with the signal's reason on abort. */
  acquire(signal?: AbortSignal): Promise<void>;
  /** Reports a throttled KMS call; the shared rate is cut at most once per AIMD window. */
  onThrottle(): void;
  /** Reports a successful KMS call; the shared rate climbs back toward the budget. */
  onSuccess(): void;
  /** The current fleet-wide rate in requests/s (for `rekey_kms_rate_limit_rps`). */
  currentRate(): Promise<number>;
  /** Sets the operator's budget override for the whole fleet (`null` clears it). */
  setBudget(rps: number | null): Promise<void>;
  /** Rejects every waiting `acquire` and stops timers; the Redis connection is the caller's. */
  close(): void;
}

/** A limiter that can hand out per-migration views sharing the same bucket. */
export interface RedisLimiter extends RateLimiter {
  /** The Redis hash holding the shared state. */
  readonly key: string;
  /**
   * A view of this limiter for one migration: while several migrations ask for tokens, each
   * gets `rate * weight / sum(active weights)`, and may use slack the others leave unused.
   * Calling it again with the same id returns the same view (with the weight updated).
   */
  forMigration(migrationId: string, weight?: number): RateLimiter;
  /** What this process's views have asked of Redis so far: grant round trips and tokens granted. */
  stats(): LimiterStats;
}

/** Counters of one process's use of a limiter (`rekey_kms_limiter_*` metrics). */
export interface LimiterStats {
  /** Round trips of the acquire script (each grants up to `grantSize` tokens). */
  readonly grantCalls: number;
  /** Tokens handed out by those round trips. */
  readonly tokensGranted: number;
}

/** A budget in requests/s, or a function read at every grant (e.g. a % of the quota from config). */
export type BudgetOption = number | { rps: number } | (() => number | { rps: number });

/** Told when an `acquire` has waited long, e.g. to extend a job lock or log. */
export interface LongWaitInfo {
  waitedMs: number;
  migrationId: string | undefined;
}

/** Options of {@link createRedisLimiter}. */
export interface RedisLimiterOptions {
  /** An ioredis connection; shared with other users, never closed by the limiter. */
  redis: Redis;
  /** The limiter hash, from the fleet's key module, e.g. `rekey:limiter:<account>:<region>`. */
  key: string;
  /** The configured budget; an override set with `setBudget` wins over it. */
  budget: BudgetOption;
  /** AIMD never goes below this rate (unless the budget is lower). @defaultValue 1 */
  minRps?: number;
  aimd?: {
    /** Multiplicative decrease on a throttle. @defaultValue 0.7 */
    decrease?: number;
    /** Additive increase, rps per second of successes (at least; see increasePercent). @defaultValue 5 */
    increaseRps?: number;
    /** Additive increase as a percentage of the budget per second, when more than increaseRps. @defaultValue 1 */
    increasePercent?: number;
    /** At most one decrease per window. @defaultValue 1000 */
    windowMs?: number;
  };
  /** Upper limit of tokens per Redis call; the grant is about 50 ms of the rate below it. @defaultValue 50 */
  grantSize?: number;
  /** Bucket capacity in ms of the rate (the largest fleet-wide burst). @defaultValue 100 */
  burstMs?: number;
  /** Local tokens not used within this time are dropped, so no process hoards. @defaultValue 1000 */
  tokenTtlMs?: number;
  /** Migration of the limiter's own (default) view; absent means it takes no fair share. */
  migrationId?: string;
  /** Weight of `migrationId`. @defaultValue 1 */
  migrationWeight?: number;
  /** A migration that asked for nothing this long loses its share. @defaultValue 3000 */
  activeMs?: number;
  /** A Redis call slower than this fails `acquire` with `redis-unavailable`. @defaultValue 2000 */
  redisTimeoutMs?: number;
  /** Called every `longWaitMs` while an `acquire` waits. */
  onLongWait?: (info: LongWaitInfo) => void;
  /** @defaultValue 10000 */
  longWaitMs?: number;
}

interface Params {
  minRps: number;
  decrease: number;
  increaseRps: number;
  increasePercent: number;
  windowMs: number;
  grantLimit: number;
  burstMs: number;
  tokenTtlMs: number;
  activeMs: number;
  redisTimeoutMs: number;
  longWaitMs: number;
}

interface Grant {
  granted: number;
  waitMs: number;
  rate: number;
}

interface Waiter {
  resolve: () => void;
  reject: (err: unknown) => void;
  signal?: AbortSignal;
  onAbort?: () => void;
  longTimer?: NodeJS.Timeout;
}

/** How far ahead a process sizes its grant from its recent demand. */
const DEMAND_HORIZON_MS = 100;
/** Longest pause between grant attempts, so budget changes are seen promptly. */
const MAX_POLL_MS = 1000;

function positive(name: string, v: number | undefined, fallback: number, opts: { allowZero?: boolean } = {}): number {
  const x = v ?? fallback;
  if (!Number.isFinite(x) || x < 0 || (!opts.allowZero && x === 0)) {
    throw new KmsGatewayError('invalid-option', `limiter option ${name} must be a ${opts.allowZero ? 'non-negative' : 'positive'} number, got ${String(v)}`);
  }
  return x;
}

function percentOption(name: string, v: number | undefined, fallback: number): number {
  const x = positive(name, v, fallback, { allowZero: true });
  if (x > 100) throw new KmsGatewayError('invalid-option', `limiter option ${name} must be a percentage from 0 to 100, got ${String(v)}`);
  return x;
}

function abortReason(signal: AbortSignal): unknown {
  return signal.reason ?? new DOMException('The operation was aborted', 'AbortError');
}

function redisUnavailable(message: string, cause?: unknown): RetryableError {
  return new RetryableError('redis-unavailable', `KMS limiter: ${message}; not taking work without the shared budget`, { cause });
}

/**
 * Error replies of a Redis that is there but can't serve for now (loading its data, a script
 * running long, out of memory, a replica or a cluster failing over): the budget is unavailable,
 * as with a lost connection.
 */
const TRANSIENT_REPLY = /^(LOADING|BUSY|OOM|READONLY|MASTERDOWN|CLUSTERDOWN|TRYAGAIN|MOVED|ASK)\b/;

/**
 * Why a limiter's Redis call failed: the budget unavailable (`redis-unavailable`: no connection,
 * no answer in time, a transient error reply), or any other error reply (a key of the wrong
 * type, a script error): `limiter-failed`, retried like other errors and then failing items,
 * where waiting would never end.
 */
function limiterCallError(err: unknown): RetryableError {
  const message = err instanceof Error ? err.message : String(err);
  if (err instanceof Error && err.name === 'ReplyError' && !TRANSIENT_REPLY.test(message)) {
    return new RetryableError('limiter-failed', `KMS limiter: Redis refused the limiter's call: ${message}`, { cause: err });
  }
  return redisUnavailable(`Redis call failed: ${message}`, err);
}

/** State and Redis access shared by every view of one limiter. */
class Shared {
  readonly scopes = new Map<string, Scope>();
  throttled = false;
  succeeded = false;
  closed = false;
  lastRate: number;
  grantCalls = 0;
  tokensGranted = 0;
  private readonly acquireScript = loadScript('acquire-1.lua');
  private readonly budgetScript = loadScript('set-budget-1.lua');

  constructor(
    readonly redis: Redis,
    readonly key: string,
    private readonly budget: BudgetOption,
    readonly p: Params,
    readonly onLongWait: ((info: LongWaitInfo) => void) | undefined,
  ) {
    this.lastRate = this.budgetRps();
  }

  budgetRps(): number {
    const raw = typeof this.budget === 'function' ? this.budget() : this.budget;
    const rps = typeof raw === 'number' ? raw : raw.rps;
    if (!Number.isFinite(rps) || rps <= 0) throw new KmsGatewayError('invalid-option', `limiter budget must be a positive rps, got ${String(rps)}`);
    return rps;
  }

  /** Reports a throttle: the shared rate falls, and no view spends tokens granted at the old rate. */
  throttle(): void {
    this.throttled = true;
    for (const s of this.scopes.values()) s.dropTokens();
  }

  private ensureConnected(): void {
    const status = this.redis.status;
    if (status === 'end' || status === 'close' || status === 'reconnecting') {
      throw redisUnavailable(`Redis is unreachable (connection ${status})`);
    }
  }

  private async withTimeout<T>(work: Promise<T>): Promise<T> {
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(redisUnavailable(`Redis did not answer within ${this.p.redisTimeoutMs} ms`)), this.p.redisTimeoutMs);
    });
    // The losing racer's rejection is already reported through the timeout error.
    work.catch(() => undefined);
    try {
      return await Promise.race([work, timeout]);
    } catch (err) {
      if (err instanceof RetryableError) throw err;
      throw limiterCallError(err);
    } finally {
      clearTimeout(timer);
    }
  }

  async grant(requested: number, migration: { id: string; weight: number } | undefined): Promise<Grant> {
    this.ensureConnected();
    const throttled = this.throttled;
    const succeeded = this.succeeded;
    this.throttled = false;
    this.succeeded = false;
    try {
      const out = await this.withTimeout(
        runScript(this.redis, this.acquireScript, [this.key], [
          requested,
          this.budgetRps(),
          this.p.minRps,
          this.p.decrease,
          this.p.increaseRps,
          this.p.windowMs,
          this.p.burstMs,
          throttled ? 1 : 0,
          succeeded ? 1 : 0,
          migration?.id ?? '',
          migration?.weight ?? 1,
          this.p.activeMs,
          '',
          this.p.increasePercent,
        ]),
      );
      if (!Array.isArray(out) || out.length < 3) throw new RetryableError('limiter-failed', `KMS limiter: the acquire script returned ${JSON.stringify(out)}`);
      const grant = { granted: Number(out[0]), waitMs: Number(out[1]), rate: Number(out[2]) };
      this.lastRate = grant.rate;
      this.grantCalls++;
      this.tokensGranted += grant.granted;
      return grant;
    } catch (err) {
      // Not reported: keep the flags for the next call so no throttle is lost.
      this.throttled ||= throttled;
      this.succeeded ||= succeeded;
      throw err;
    }
  }

  async currentRate(): Promise<number> {
    this.ensureConnected();
    const [rate, override] = await this.withTimeout(this.redis.hmget(this.key, 'rate', 'budget'));
    const budget = override !== null && override !== undefined ? Number(override) : this.budgetRps();
    return rate === null || rate === undefined ? budget : Math.min(Number(rate), budget);
  }

  async setBudget(rps: number | null): Promise<void> {
    if (rps !== null && (!Number.isFinite(rps) || rps <= 0)) {
      throw new KmsGatewayError('invalid-option', `budget must be a positive rps, got ${String(rps)}`);
    }
    this.ensureConnected();
    await this.withTimeout(runScript(this.redis, this.budgetScript, [this.key], [rps === null ? '' : rps, this.p.burstMs, this.budgetRps()]));
  }
}

/** One view of the limiter: its local tokens and its queue of waiting `acquire` calls. */
class Scope implements RateLimiter {
  private tokens = 0;
  private expiresAt = 0;
  private readonly waiters: Waiter[] = [];
  private inflight = false;
  private timer: NodeJS.Timeout | undefined;
  private served = 0;
  private lastFetchAt = performance.now();
  private closed = false;

  constructor(
    private readonly shared: Shared,
    private migration: { id: string; weight: number } | undefined,
    private readonly scopeKey: string,
  ) {}

  setWeight(weight: number): void {
    if (this.migration) this.migration = { ...this.migration, weight };
  }

  acquire(signal?: AbortSignal): Promise<void> {
    if (this.closed || this.shared.closed) return Promise.reject(new KmsGatewayError('limiter-closed', 'KMS limiter is closed'));
    if (signal?.aborted) return Promise.reject(abortReason(signal));
    if (this.waiters.length === 0 && this.takeLocal()) return Promise.resolve();
    return new Promise<void>((resolve, reject) => {
      const w: Waiter = { resolve, reject };
      if (signal) {
        w.signal = signal;
        w.onAbort = () => {
          const i = this.waiters.indexOf(w);
          if (i >= 0) this.waiters.splice(i, 1);
          this.release(w);
          reject(abortReason(signal));
        };
        signal.addEventListener('abort', w.onAbort, { once: true });
      }
      const hook = this.shared.onLongWait;
      if (hook) {
        const since = performance.now();
        w.longTimer = setInterval(() => hook({ waitedMs: performance.now() - since, migrationId: this.migration?.id }), this.shared.p.longWaitMs);
      }
      this.waiters.push(w);
      this.pump();
    });
  }

  onThrottle(): void {
    this.shared.throttle();
    for (const s of this.shared.scopes.values()) s.pump();
  }

  onSuccess(): void {
    this.shared.succeeded = true;
  }

  currentRate(): Promise<number> {
    return this.shared.currentRate();
  }

  setBudget(rps: number | null): Promise<void> {
    return this.shared.setBudget(rps);
  }

  close(): void {
    this.closed = true;
    if (this.shared.scopes.get(this.scopeKey) === this) this.shared.scopes.delete(this.scopeKey);
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    this.rejectAll(new KmsGatewayError('limiter-closed', 'KMS limiter is closed'));
  }

  dropTokens(): void {
    this.tokens = 0;
  }

  private takeLocal(): boolean {
    if (this.tokens > 0 && performance.now() < this.expiresAt) {
      this.tokens--;
      this.served++;
      return true;
    }
    this.tokens = 0;
    return false;
  }

  private release(w: Waiter): void {
    if (w.signal && w.onAbort) w.signal.removeEventListener('abort', w.onAbort);
    if (w.longTimer) clearInterval(w.longTimer);
  }

  private serve(): void {
    while (this.waiters.length > 0 && this.takeLocal()) {
      const w = this.waiters.shift();
      if (!w) break;
      this.release(w);
      w.resolve();
    }
  }

  private rejectAll(err: unknown): void {
    for (const w of this.waiters.splice(0)) {
      this.release(w);
      w.reject(err);
    }
  }

  pump(): void {
    this.serve();
    if (this.waiters.length > 0 && !this.inflight && !this.timer && !this.closed) void this.fetch();
  }

  private wanted(): number {
    const now = performance.now();
    const demandPerMs = this.served / Math.max(1, now - this.lastFetchAt);
    this.served = 0;
    this.lastFetchAt = now;
    const limit = maxGrant(this.shared.lastRate, this.shared.p.grantLimit);
    return Math.max(1, Math.min(limit, Math.max(this.waiters.length, Math.ceil(demandPerMs * DEMAND_HORIZON_MS))));
  }

  private async fetch(): Promise<void> {
    this.inflight = true;
    const want = this.wanted();
    let grant: Grant;
    try {
      grant = await this.shared.grant(want, this.migration);
    } catch (err) {
      this.inflight = false;
      this.rejectAll(err);
      return;
    }
    this.inflight = false;
    if (this.closed) return;
    const now = performance.now();
    if (now >= this.expiresAt) this.tokens = 0;
    this.tokens += grant.granted;
    this.expiresAt = now + this.shared.p.tokenTtlMs;
    this.serve();
    if (this.waiters.length === 0) return;
    if (grant.granted >= want) {
      this.pump();
      return;
    }
    // Short of tokens: the budget binds. Come back when a whole grant has accrued (about 50 ms of
    // the rate), not when the next single token has: asking every few ms would cost one Redis
    // round trip per token. The bucket holds 100 ms of the rate, so nothing accrued is lost.
    const batchMs = (maxGrant(grant.rate, this.shared.p.grantLimit) * 1000) / Math.max(grant.rate, 1e-9);
    const delay = Math.min(MAX_POLL_MS, Math.max(1, Math.ceil(grant.waitMs), Math.ceil(Math.min(batchMs, this.shared.p.burstMs / 2))));
    this.timer = setTimeout(() => {
      this.timer = undefined;
      this.pump();
    }, delay);
  }
}

/** The limiter returned by {@link createRedisLimiter}: its default view plus per-migration views. */
class RedisRateLimiter implements RedisLimiter {
  private readonly root: Scope;

  constructor(
    private readonly shared: Shared,
    migration: { id: string; weight: number } | undefined,
  ) {
    const scopeKey = migration ? `m:${migration.id}` : '';
    this.root = new Scope(shared, migration, scopeKey);
    shared.scopes.set(scopeKey, this.root);
  }

  stats(): LimiterStats {
    return { grantCalls: this.shared.grantCalls, tokensGranted: this.shared.tokensGranted };
  }

  get key(): string {
    return this.shared.key;
  }

  acquire(signal?: AbortSignal): Promise<void> {
    return this.root.acquire(signal);
  }
  onThrottle(): void {
    this.root.onThrottle();
  }
  onSuccess(): void {
    this.root.onSuccess();
  }
  currentRate(): Promise<number> {
    return this.shared.currentRate();
  }
  setBudget(rps: number | null): Promise<void> {
    return this.shared.setBudget(rps);
  }

  forMigration(migrationId: string, weight = 1): RateLimiter {
    if (this.shared.closed) throw new KmsGatewayError('limiter-closed', 'KMS limiter is closed');
    const m = checkMigration(migrationId, weight);
    const k = `m:${m.id}`;
    const existing = this.shared.scopes.get(k);
    if (existing) {
      existing.setWeight(m.weight);
      return existing;
    }
    const scope = new Scope(this.shared, m, k);
    this.shared.scopes.set(k, scope);
    return scope;
  }

  close(): void {
    this.shared.closed = true;
    for (const s of this.shared.scopes.values()) s.close();
    this.shared.scopes.clear();
  }
}

function checkMigration(id: string, weight: number): { id: string; weight: number } {
  if (typeof id !== 'string' || id.length === 0 || id.length > 200) {
    throw new KmsGatewayError('invalid-option', `limiter migration id must be a non-empty string of at most 200 characters`);
  }
  return { id, weight: positive('migrationWeight', weight, 1) };
}

/**
 * Creates the fleet-wide limiter over one Redis hash. Every process and migration that uses the
 * same `key` shares one budget; AIMD state lives in Redis, so a throttle seen by one process
 * slows them all. If Redis is unreachable, `acquire` rejects with `RetryableError`
 * (`redis-unavailable`): workers stop instead of running unlimited.
 *
 * @example
 * const limiter = createRedisLimiter({ redis, key: keys.limiter(account, region), budget: 600 });
 * const forM = limiter.forMigration(migration.id, migration.spec.options.weight);
 * await forM.acquire(signal);
 */
export function createRedisLimiter(opts: RedisLimiterOptions): RedisLimiter {
  if (!(opts.redis instanceof Redis)) {
    throw new KmsGatewayError('invalid-client', `createRedisLimiter needs an ioredis Redis client, got ${describe(opts.redis)}`);
  }
  if (typeof opts.key !== 'string' || opts.key.length === 0) {
    throw new KmsGatewayError('invalid-option', 'limiter key must be a non-empty string');
  }
  const decrease = opts.aimd?.decrease ?? 0.7;
  if (!(decrease > 0 && decrease < 1)) {
    throw new KmsGatewayError('invalid-option', `limiter aimd.decrease must be between 0 and 1 (exclusive), got ${String(decrease)}`);
  }
  const grantLimit = positive('grantSize', opts.grantSize, 50);
  if (!Number.isInteger(grantLimit)) throw new KmsGatewayError('invalid-option', `limiter grantSize must be an integer, got ${grantLimit}`);
  const p: Params = {
    minRps: positive('minRps', opts.minRps, 1),
    decrease,
    increaseRps: positive('aimd.increaseRps', opts.aimd?.increaseRps, 5, { allowZero: true }),
    increasePercent: percentOption('aimd.increasePercent', opts.aimd?.increasePercent, 1),
    windowMs: positive('aimd.windowMs', opts.aimd?.windowMs, 1000, { allowZero: true }),
    grantLimit,
    burstMs: positive('burstMs', opts.burstMs, 100),
    tokenTtlMs: positive('tokenTtlMs', opts.tokenTtlMs, 1000),
    activeMs: positive('activeMs', opts.activeMs, 3000),
    redisTimeoutMs: positive('redisTimeoutMs', opts.redisTimeoutMs, 2000),
    longWaitMs: positive('longWaitMs', opts.longWaitMs, 10_000),
  };
  if (p.increaseRps === 0 && p.increasePercent === 0) {
    throw new KmsGatewayError('invalid-option', 'limiter aimd.increaseRps and aimd.increasePercent are both 0: the rate would never recover after a throttle');
  }
  const migration = opts.migrationId !== undefined ? checkMigration(opts.migrationId, opts.migrationWeight ?? 1) : undefined;
  const shared = new Shared(opts.redis, opts.key, opts.budget, p, opts.onLongWait);
  return new RedisRateLimiter(shared, migration);
}

function describe(v: unknown): string {
  if (v === null || v === undefined) return String(v);
  if (typeof v === 'object') return (v as object).constructor?.name ?? 'object';
  return typeof v;
}
