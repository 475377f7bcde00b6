import type { Redis } from 'ioredis';
import {
  assertTransition,
  parseCounters,
  type CounterField,
  type Counters,
  type Migration,
  type MigrationState,
  type Outcome,
} from '@rekey/core';
import type { AuditLog } from './audit.js';
import type { RedisKeys } from './keys.js';
import { fleetCommands } from './scripts.js';

/** The counters of one source, as kept in a Redis hash (see core's `COUNTER_FIELDS`). */
export type SourceCounters = Counters;

/** One failed item as stored in the failures stream. */
export interface FailureRecord {
  readonly id: string;
  readonly source: string;
  /** The item reference as JSON. */
  readonly item: string;
  readonly code: string;
  readonly reason: string;
  readonly acked?: string;
}

/** The outcomes of one batch, written in one round trip. */
export interface BatchRecord {
  readonly migrationId: string;
  readonly source: string;
  readonly jobId: string;
  readonly mode: 'reencrypt' | 'verify';
  readonly increments: Partial<Record<CounterField, number>>;
  readonly failures: readonly { item: string; code: string; reason: string }[];
  readonly processed: number;
}

/** The outcome of one item a batch finished in an attempt that went back to the queue. */
export interface CarriedOutcome {
  readonly outcome: Outcome;
  readonly code?: string;
  readonly reason?: string;
}

/** Which batch job (and mode) carried outcomes belong to. */
export interface BatchRef {
  readonly migrationId: string;
  readonly mode: 'reencrypt' | 'verify';
  readonly jobId: string;
}

/** Maximum failures kept per migration (the counters stay exact beyond it). */
export const MAX_FAILURES = 100_000;

/**
 * Progress and migration records in Redis. Redis holds progress, not truth: the data stores
 * are the truth, and a lost Redis is recovered by enumerating again (`rekey resume`).
 */
export interface ProgressStore {
  /** Saves a new migration and publishes its id on the change channel. */
  create(m: Migration, actor: string): Promise<void>;
  get(id: string): Promise<Migration | null>;
  list(): Promise<Migration[]>;
  /**
   * Checks the transition in core, saves it with WATCH/MULTI (which also publishes the id on the
   * change channel) and appends `state.changed` to the audit log.
   */
  transition(
    id: string,
    to: MigrationState,
    opts: {
      actor: string;
      reason?: string;
      force?: boolean;
      /** Change nothing (and return the record) unless the state is one of these. */
      from?: readonly MigrationState[];
      /** Change nothing (and return the record) unless the migration is still in this verify round. */
      ifVerifyRound?: number | undefined;
      patch?: Partial<Migration>;
    },
  ): Promise<Migration>;
  /** Saves fields that are not the state (timestamps, reason); publishes nothing, so a coordinator may patch on every tick. */
  patch(id: string, patch: Partial<Migration>): Promise<void>;
  counters(id: string, sources: readonly string[]): Promise<Record<string, SourceCounters>>;
  /** Records a batch at most once (publishing on the change channel when it was the last outstanding one); returns false when it was already recorded. */
  recordBatch(r: BatchRecord): Promise<boolean>;
  /**
   * Keeps the outcomes of the items a batch finished (by item index) when the attempt goes back to
   * the queue uncounted, so the next attempt counts them as they were; `recordBatch` clears them.
   */
  carry(b: BatchRef, outcomes: ReadonlyMap<number, CarriedOutcome>): Promise<void>;
  /** The outcomes earlier attempts of a batch carried (empty when none, or when unreadable). */
  carried(b: BatchRef): Promise<Map<number, CarriedOutcome>>;
  failures(id: string, opts?: { limit?: number }): Promise<FailureRecord[]>;
  /** Acknowledges failures (by stream id, or all); returns how many were acknowledged. */
  ack(id: string, which: { all: true } | { ids: readonly string[] }, reason: string, actor: string): Promise<number>;
  acks(id: string): Promise<Map<string, string>>;
  /** Throughput samples since `sinceMs`: [time ms, items] pairs. */
  samples(id: string, sinceMs: number): Promise<[number, number][]>;
  readonly audit: AuditLog;
  /** Closes the store's own transaction connection (not the one passed in). */
  close(): Promise<void>;
}

export function createProgressStore(redis: Redis, keys: RedisKeys, audit: AuditLog): ProgressStore {
  const cmd = fleetCommands(redis);
  // WATCH is per connection: optimistic transactions get their own connection, one at a time.
  let txConn: Redis | undefined;
  let txQueue: Promise<unknown> = Promise.resolve();
  function exclusive<T>(fn: (tx: Redis) => Promise<T>): Promise<T> {
    txConn ??= redis.duplicate();
    const tx = txConn;
    const run = txQueue.then(() => fn(tx));
    txQueue = run.catch(() => undefined);
    return run;
  }

  function decode(raw: string | null): Migration | null {
    if (!raw) return null;
    return JSON.parse(raw) as Migration;
  }

  const store: ProgressStore = {
    audit,
    async create(m, actor) {
      const created = await redis.hsetnx(keys.migration(m.id), 'record', JSON.stringify(m));
      if (created === 0) throw new Error(`migration ${m.id} already exists`);
      await redis.sadd(keys.migrations(), m.id);
      await redis.publish(keys.changes(), m.id);
      await audit.append(m.id, {
        actor,
        type: 'migration.created',
        data: { spec: m.spec, keys: m.keys },
      });
    },

    async get(id) {
      return decode(await redis.hget(keys.migration(id), 'record'));
    },

    async list() {
      const ids = await redis.smembers(keys.migrations());
      if (ids.length === 0) return [];
      const pipe = redis.pipeline();
      for (const id of ids) pipe.hget(keys.migration(id), 'record');
      const rows = (await pipe.exec()) ?? [];
      return rows
        .map(([, v]) => decode((v as string | null) ?? null))
        .filter((m): m is Migration => m !== null)
        .sort((a, b) => a.createdAt.localeCompare(b.createdAt));
    },

    transition: (id, to, opts) => exclusive(async (redis) => {
      const key = keys.migration(id);
      for (let attempt = 0; attempt < 20; attempt++) {
        await redis.watch(key);
        const m = decode(await redis.hget(key, 'record'));
        if (!m) {
          await redis.unwatch();
          throw new Error(`migration ${id} does not exist`);
        }
        if ((opts.from && !opts.from.includes(m.state)) || ('ifVerifyRound' in opts && m.verifyRound !== opts.ifVerifyRound)) {
          await redis.unwatch();
          return m;
        }
        assertTransition(m.state, to, { force: opts.force ?? false });
        const next: Migration = {
          ...m,
          ...opts.patch,
          state: to,
          updatedAt: new Date().toISOString(),
          ...(to === 'paused' ? { pausedFrom: m.state, reason: opts.reason } : {}),
          ...(to !== 'paused' && m.state === 'paused' ? { pausedFrom: undefined, reason: undefined } : {}),
          ...(to === 'blocked' || to === 'failed' ? { reason: opts.reason } : {}),
        };
        const ok = await redis.multi().hset(key, 'record', JSON.stringify(next)).publish(keys.changes(), id).exec();
        if (ok === null) continue; // the record changed under us: read again and decide again
        await audit.append(id, {
          actor: opts.actor,
          type: 'state.changed',
          data: { from: m.state, to, ...(opts.reason ? { reason: opts.reason } : {}), ...(opts.force ? { forced: true } : {}) },
        });
        return next;
      }
      throw new Error(`migration ${id}: state change to ${to} kept racing with other writers`);
    }),

    patch: (id, patch) => exclusive(async (redis) => {
      const key = keys.migration(id);
      for (let attempt = 0; attempt < 20; attempt++) {
        await redis.watch(key);
        const m = decode(await redis.hget(key, 'record'));
        if (!m) {
          await redis.unwatch();
          throw new Error(`migration ${id} does not exist`);
        }
        const ok = await redis
          .multi()
          .hset(key, 'record', JSON.stringify({ ...m, ...patch, state: m.state, updatedAt: new Date().toISOString() }))
          .exec();
        if (ok !== null) return;
      }
      throw new Error(`migration ${id}: update kept racing with other writers`);
    }),

    async close() {
      await txQueue;
      if (txConn) await txConn.quit();
    },

    async counters(id, sources) {
      const pipe = redis.pipeline();
      for (const s of sources) pipe.hgetall(keys.counters(id, s));
      const rows = (await pipe.exec()) ?? [];
      const out: Record<string, SourceCounters> = {};
      sources.forEach((s, i) => {
        out[s] = parseCounters((rows[i]?.[1] ?? {}) as Record<string, string>);
      });
      return out;
    },

    async recordBatch(r) {
      const res = await cmd.recordBatch(
        [
          keys.recorded(r.migrationId),
          keys.counters(r.migrationId, r.source),
          keys.failures(r.migrationId),
          keys.samples(r.migrationId),
          keys.carried(r.migrationId),
        ],
        `${r.mode}|${r.jobId}`,
        JSON.stringify(r.increments),
        JSON.stringify(r.failures.map((f) => ({ source: r.source, item: f.item, code: f.code, reason: f.reason }))),
        MAX_FAILURES,
        Date.now(),
        r.mode === 'reencrypt' ? r.processed : 0,
        keys.changes(),
        r.migrationId,
      );
      return res === 1;
    },

    async carry(b, outcomes) {
      await redis.hset(keys.carried(b.migrationId), `${b.mode}|${b.jobId}`, JSON.stringify(Object.fromEntries(outcomes)));
    },

    async carried(b) {
      const raw = await redis.hget(keys.carried(b.migrationId), `${b.mode}|${b.jobId}`);
      const out = new Map<number, CarriedOutcome>();
      if (!raw) return out;
      try {
        for (const [i, o] of Object.entries(JSON.parse(raw) as Record<string, CarriedOutcome>)) {
          if (Number.isInteger(Number(i)) && typeof o?.outcome === 'string') out.set(Number(i), o);
        }
      } catch {
        // Written by this module; if it is unreadable anyway, the items are simply looked at again.
      }
      return out;
    },

    async failures(id, opts = {}) {
      const rows = await redis.xrevrange(keys.failures(id), '+', '-', 'COUNT', opts.limit ?? 1000);
      const acked = await redis.hgetall(keys.acks(id));
      return rows.map(([sid, fields]) => {
        const f: Record<string, string> = {};
        for (let i = 0; i + 1 < fields.length; i += 2) f[fields[i]!] = fields[i + 1]!;
        return {
          id: sid,
          source: f['source'] ?? '',
          item: f['item'] ?? '',
          code: f['code'] ?? '',
          reason: f['reason'] ?? '',
          ...(acked[sid] !== undefined ? { acked: acked[sid] } : acked['*'] !== undefined ? { acked: acked['*'] } : {}),
        };
      });
    },

    async ack(id, which, reason, actor) {
      let n: number;
      if ('all' in which) {
        await redis.hset(keys.acks(id), '*', reason);
        n = await redis.xlen(keys.failures(id));
      } else {
        if (which.ids.length === 0) return 0;
        const known = await Promise.all(which.ids.map((sid) => redis.xrange(keys.failures(id), sid, sid)));
        const missing = which.ids.filter((_, i) => (known[i] ?? []).length === 0);
        if (missing.length) throw new Error(`migration ${id}: no failure with id ${missing.join(', ')}`);
        await redis.hset(keys.acks(id), Object.fromEntries(which.ids.map((sid) => [sid, reason])));
        n = which.ids.length;
      }
      await audit.append(id, { actor, type: 'failure.acked', data: { ...('all' in which ? { all: true } : { ids: which.ids }), reason, count: n } });
      return n;
    },

    async acks(id) {
      return new Map(Object.entries(await redis.hgetall(keys.acks(id))));
    },

    async samples(id, sinceMs) {
      const rows = await redis.zrangebyscore(keys.samples(id), sinceMs, '+inf', 'WITHSCORES');
      const out: [number, number][] = [];
      for (let i = 0; i + 1 < rows.length; i += 2) {
        const member = rows[i]!;
        const n = Number(member.slice(member.lastIndexOf('|') + 1));
        out.push([Number(rows[i + 1]), n]);
      }
      return out;
    },
  };
  return store;
}

/** Outcome counter increments for a list of outcomes. */
export function outcomeIncrements(outcomes: readonly Outcome[]): Partial<Record<CounterField, number>> {
  const inc: Partial<Record<CounterField, number>> = {};
  for (const o of outcomes) inc[o] = (inc[o] ?? 0) + 1;
  return inc;
}
