import { describe, expect, it } from 'vitest';
import pino from 'pino';
import { DelayedError, type Job } from 'bullmq';
import { MigrationSpecSchema, RetryableError, type BatchJob, type ItemOutcome, type Migration, type Source } from '@rekey/core';
import { cleanupRedisPrefix, createTestRedis, uniquePrefix } from '@rekey/testing';
import { createAuditLog } from '../src/audit.js';
import type { Redis } from 'ioredis';
import { redisKeys, type RedisKeys } from '../src/keys.js';
import { createFleetMetrics } from '../src/metrics.js';
import { createBatchProcessor, type BatchProcessorDeps } from '../src/processor.js';
import type { BatchSplitter } from '../src/split.js';
import { createProgressStore, type BatchRecord, type ProgressStore } from '../src/store.js';

const OLD = 'arn:aws:kms:us-east-1:111122223333:key/11111111-1111-1111-1111-111111111111';
const NEW = 'arn:aws:kms:us-east-1:111122223333:key/22222222-2222-2222-2222-222222222222';

const migration: Migration = {
  id: 'm-proc',
  spec: MigrationSpecSchema.parse({ id: 'm-proc', sources: [{ name: 'rows', kind: 'postgres', table: 't', primaryKey: ['id'], column: 'c' }], from: [OLD], to: NEW, options: { concurrency: 4 } }),
  state: 'running',
  keys: { from: [OLD], to: NEW, aliases: {} },
  createdAt: '2026-11-29T00:00:00.000Z',
  updatedAt: '2026-11-29T00:00:00.000Z',
};

/** A batch processor over one source, silent, with no shutdown unless `o` gives one. */
function processorFor(store: ProgressStore, source: Source, o: Partial<BatchProcessorDeps> = {}) {
  return createBatchProcessor({
    store,
    sources: { get: async () => source, close: async () => undefined },
    logger: pino({ level: 'silent' }),
    shutdown: new AbortController().signal,
    actor: 'test',
    ...o,
  });
}

/** Runs `fn` with a progress store on real Redis (own prefix) that holds `migration`, then removes the prefix. */
async function withRedisStore(name: string, fn: (r: { redis: Redis; keys: RedisKeys; store: ProgressStore }) => Promise<void>): Promise<void> {
  const redis = createTestRedis();
  const keys = redisKeys(uniquePrefix(name));
  const store = createProgressStore(redis, keys, createAuditLog(redis, keys));
  try {
    await store.create(migration, 'test');
    await fn({ redis, keys, store });
  } finally {
    await store.close();
    await cleanupRedisPrefix(redis, keys.prefix);
    await redis.quit();
  }
}

/** The first attempt of batch `m-proc.rows.r1.0` of rows 0..n-1 (re-encrypt); tests raise its attempt counts. */
function firstAttempt(n: number) {
  const items = Array.from({ length: n }, (_, i) => ({ kind: 'row' as const, pk: [i] }));
  return {
    id: 'm-proc.rows.r1.0',
    data: { migrationId: 'm-proc', source: 'rows', page: 0, items, mode: 'reencrypt' } satisfies BatchJob,
    attemptsMade: 0,
    attemptsStarted: 1,
    opts: { attempts: 5 },
    moveToDelayed: async () => undefined,
  } as unknown as Job<BatchJob> & { attemptsMade: number; attemptsStarted: number };
}

/** A source whose items wait until their signal aborts (as a KMS call or a slot wait would). */
function hangingSource(started: { n: number }): Source {
  return {
    kind: 'postgres',
    name: 'rows',
    list: async () => ({ items: [], next: null }),
    reencrypt: (_item, _plan, ctx) =>
      new Promise<ItemOutcome>((_resolve, reject) => {
        started.n++;
        ctx.signal.addEventListener('abort', () => reject(ctx.signal.reason), { once: true });
      }),
    inspect: async () => ({ state: 'current' }),
  };
}

describe('batch processor on SIGTERM', () => {
  it('counts nothing for a batch whose items were all in flight when the worker shut down, and sends it back to the queue', async () => {
    const recorded: BatchRecord[] = [];
    const store = { get: async () => migration, recordBatch: async (r: BatchRecord) => (recorded.push(r), true) } as unknown as ProgressStore;
    const started = { n: 0 };
    const source = hangingSource(started);
    const shutdown = new AbortController();
    const processBatch = processorFor(store, source, { shutdown: shutdown.signal });
    const delayed: number[] = [];
    const job = {
      id: 'm-proc.rows.r1.0',
      data: { migrationId: 'm-proc', source: 'rows', page: 0, items: [1, 2, 3].map((id) => ({ kind: 'row' as const, pk: [id] })), mode: 'reencrypt' } satisfies BatchJob,
      attemptsMade: 0,
      opts: { attempts: 5 },
      moveToDelayed: async (at: number) => void delayed.push(at),
    } as unknown as Job<BatchJob>;

    const run = processBatch(job, 'token');
    while (started.n < 3) await new Promise((r) => setImmediate(r));
    shutdown.abort();

    await expect(run).rejects.toBeInstanceOf(DelayedError);
    expect(delayed).toHaveLength(1);
    // Before the fix, the three aborted items were recorded as `failed` (AbortError).
    expect(recorded).toEqual([]);
  });
});

describe('batch processor: giving unstarted items to a new batch', () => {
  const rows = (n: number) => Array.from({ length: n }, (_, i) => ({ kind: 'row' as const, pk: [i] }));
  const jobOf = (items: BatchJob['items']) =>
    ({
      id: 'm-proc.rows.r1.3',
      name: 'batch',
      data: { migrationId: 'm-proc', source: 'rows', page: 3, items, mode: 'reencrypt' } satisfies BatchJob,
      attemptsMade: 0,
      opts: { attempts: 5 },
    }) as unknown as Job<BatchJob>;

  /** A source whose items take `ms` each and which notes every row it saw. */
  function slowSource(seen: number[], ms: number): Source {
    return {
      kind: 'postgres',
      name: 'rows',
      list: async () => ({ items: [], next: null }),
      reencrypt: async (item) => {
        if (item.kind === 'row') seen.push(Number(item.pk[0]));
        await new Promise((r) => setTimeout(r, ms));
        return { outcome: 'reencrypted' };
      },
      inspect: async () => ({ state: 'current' }),
    };
  }

  function processorWith(source: Source, splitter: BatchSplitter, recorded: BatchRecord[]) {
    const store = { get: async () => migration, recordBatch: async (r: BatchRecord) => (recorded.push(r), true) } as unknown as ProgressStore;
    return processorFor(store, source, { splitter, splitCheckMs: 5 });
  }

  it('while nothing waits, halves its unstarted items again and again, and processes and counts only what it kept', async () => {
    const seen: number[] = [];
    const recorded: BatchRecord[] = [];
    const points: number[] = [];
    const splitter: BatchSplitter = {
      points: async () => [],
      atTail: async () => true,
      split: async (_job, at) => (points.push(at), [...points]),
      enqueueChildren: async () => undefined,
    };
    // concurrency 4 (the migration's): a batch gives items away while at least 20 have not started.
    await processorWith(slowSource(seen, 2), splitter, recorded)(jobOf(rows(200)), 'token');

    expect(points.length).toBeGreaterThanOrEqual(2);
    points.forEach((p, i) => expect(p).toBeLessThan(i === 0 ? 200 : points[i - 1]!));
    const end = points.at(-1)!;
    // Every item before the last split point ran once; none after it.
    expect([...seen].sort((a, b) => a - b)).toEqual(Array.from({ length: end }, (_, i) => i));
    expect(recorded).toHaveLength(1);
    expect(recorded[0]).toMatchObject({ processed: end, increments: { reencrypted: end, batchesDone: 1 } });
  });

  it('gives nothing away before the tail of its pass (while a batch waits, or enumeration goes on)', async () => {
    const seen: number[] = [];
    const recorded: BatchRecord[] = [];
    let asked = 0;
    const splitter: BatchSplitter = {
      points: async () => [],
      atTail: async () => (asked++, false),
      split: async () => {
        throw new Error('must not split');
      },
      enqueueChildren: async () => undefined,
    };
    await processorWith(slowSource(seen, 2), splitter, recorded)(jobOf(rows(100)), 'token');
    expect(asked).toBeGreaterThan(0);
    expect(seen).toHaveLength(100);
    expect(recorded[0]).toMatchObject({ processed: 100 });
  });

  it('a batch run again after it split stops at its recorded point and re-enqueues its children', async () => {
    const seen: number[] = [];
    const recorded: BatchRecord[] = [];
    const enqueued: number[][] = [];
    const splitter: BatchSplitter = {
      points: async () => [70, 40],
      atTail: async () => false,
      split: async () => {
        throw new Error('must not split');
      },
      enqueueChildren: async (_job, p) => void enqueued.push([...p]),
    };
    await processorWith(slowSource(seen, 0), splitter, recorded)(jobOf(rows(100)), 'token');
    expect(enqueued).toEqual([[70, 40]]);
    expect(seen).toHaveLength(40);
    expect(recorded[0]).toMatchObject({ processed: 40 });
  });

  it('when recording a split fails, the batch throws (BullMQ runs it again) and counts nothing', async () => {
    const recorded: BatchRecord[] = [];
    const splitter: BatchSplitter = {
      points: async () => [],
      atTail: async () => true,
      split: async () => {
        throw new Error('Connection is closed.');
      },
      enqueueChildren: async () => undefined,
    };
    await expect(processorWith(slowSource([], 2), splitter, recorded)(jobOf(rows(100)), 'token')).rejects.toThrow(/Connection is closed/);
    expect(recorded).toEqual([]);
  });
});

describe('batch processor: a batch that goes back to the queue (real Redis store)', () => {
  it('keeps the outcomes its finished items had, so the next attempt counts them once, as they were', async () => {
    await withRedisStore('carry', async ({ redis, keys, store }) => {
      const calls = new Map<number, number>();
      let throttled = false;
      // Items 0-5 finish (item 3 is not in scope); item 6 is throttled past the SDK's retries once.
      const source: Source = {
        kind: 'postgres',
        name: 'rows',
        list: async () => ({ items: [], next: null }),
        reencrypt: async (item) => {
          const id = Number(item.kind === 'row' ? item.pk[0] : -1);
          calls.set(id, (calls.get(id) ?? 0) + 1);
          if (id === 6 && !throttled) {
            throttled = true;
            throw new RetryableError('ThrottlingException', 'Rate exceeded');
          }
          await new Promise((r) => setTimeout(r, 1));
          return id === 3 ? { outcome: 'not-in-scope', reason: 'under another key' } : { outcome: 'reencrypted' };
        },
        inspect: async () => ({ state: 'current' }),
      };
      const metrics = createFleetMetrics();
      const processBatch = processorFor(store, source, { metrics });
      const job = firstAttempt(10);

      await expect(processBatch(job, 'token')).rejects.toBeInstanceOf(RetryableError);
      expect(await store.counters('m-proc', ['rows'])).toMatchObject({ rows: { reencrypted: 0, batchesDone: 0 } });
      const firstRun = new Map(calls);

      job.attemptsMade = 1;
      job.attemptsStarted = 2;
      await processBatch(job, 'token');

      // What the first attempt finished was not looked at again, and counts as it was.
      for (const [id, n] of firstRun) if (id !== 6) expect(calls.get(id)).toBe(n);
      expect(calls.get(6)).toBe(2);
      const c = (await store.counters('m-proc', ['rows']))['rows']!;
      expect(c).toMatchObject({ reencrypted: 9, 'not-in-scope': 1, 'already-current': 0, batchesDone: 1 });
      expect(await redis.hlen(keys.carried('m-proc'))).toBe(0);
      expect((await metrics.batchesRequeued.get()).values).toEqual([{ labels: { mode: 'reencrypt', reason: 'retry' }, value: 1 }]);
    });
  });
});

describe('batch processor: the KMS budget unreachable', () => {
  it('on the last attempt too, sends the batch back to the queue without failing an item or using an attempt', async () => {
    const recorded: BatchRecord[] = [];
    const store = { get: async () => migration, recordBatch: async (r: BatchRecord) => (recorded.push(r), true), carry: async () => undefined, carried: async () => new Map() } as unknown as ProgressStore;
    const source: Source = {
      kind: 'postgres',
      name: 'rows',
      list: async () => ({ items: [], next: null }),
      reencrypt: async () => {
        throw new RetryableError('redis-unavailable', 'KMS limiter: Redis did not answer; not taking work without the shared budget');
      },
      inspect: async () => ({ state: 'current' }),
    };
    const processBatch = processorFor(store, source, { pausedRecheckMs: 1000 });
    const delayed: number[] = [];
    const job = {
      id: 'm-proc.rows.r1.9',
      data: { migrationId: 'm-proc', source: 'rows', page: 9, items: [{ kind: 'row' as const, pk: [1] }], mode: 'reencrypt' } satisfies BatchJob,
      attemptsMade: 4,
      attemptsStarted: 5,
      opts: { attempts: 5 },
      moveToDelayed: async (at: number) => void delayed.push(at),
    } as unknown as Job<BatchJob>;

    const before = Date.now();
    await expect(processBatch(job, 'token')).rejects.toBeInstanceOf(DelayedError);
    expect(recorded).toEqual([]);
    expect(delayed).toHaveLength(1);
    expect(delayed[0]).toBeGreaterThanOrEqual(before + 1000);
  });
});

describe('batch processor: reading a batch ahead', () => {
  const jobOf = (n: number, mode: BatchJob['mode']) =>
    ({
      id: `m-proc.rows.r1.${mode}`,
      data: { migrationId: 'm-proc', source: 'rows', page: 0, items: Array.from({ length: n }, (_, i) => ({ kind: 'row' as const, pk: [String(i)] })), mode },
      attemptsMade: 0,
      opts: { attempts: 5 },
    }) as unknown as Job<BatchJob>;

  /** A source that reads ahead (or fails to) and notes what each item was handed. */
  function readingSource(reads: number[], handed: unknown[], fail: boolean): Source {
    const note = (item: BatchJob['items'][number], ahead: unknown) => void (handed[Number(item.kind === 'row' ? item.pk[0] : -1)] = ahead ?? 'none');
    return {
      kind: 'postgres',
      name: 'rows',
      list: async () => ({ items: [], next: null }),
      reencrypt: async (item, _plan, ctx) => (note(item, ctx.readAhead), { outcome: 'reencrypted' }),
      inspect: async (item, _plan, ctx) => (note(item, ctx.readAhead), { state: 'current' }),
      readAhead: async (items) => {
        reads.push(items.length);
        if (fail) throw new Error('Connection terminated unexpectedly');
        return items.map((i) => `row ${i.kind === 'row' ? String(i.pk[0]) : ''}`);
      },
    };
  }

  it.each(['reencrypt', 'verify'] as const)('%s: every item gets its row, read a window (64 rows at concurrency 4) at a time', async (mode) => {
    const reads: number[] = [];
    const handed: unknown[] = [];
    const recorded: BatchRecord[] = [];
    const store = { get: async () => migration, recordBatch: async (r: BatchRecord) => (recorded.push(r), true) } as unknown as ProgressStore;

    await processorFor(store, readingSource(reads, handed, false))(jobOf(150, mode), 'token');

    expect(handed).toEqual(Array.from({ length: 150 }, (_, i) => `row ${i}`));
    expect(reads).toEqual([64, 64, 22]);
    expect(recorded[0]?.processed).toBe(150);
  });

  it('when the read-ahead fails, the items are read one by one and all counted', async () => {
    const handed: unknown[] = [];
    const recorded: BatchRecord[] = [];
    const store = { get: async () => migration, recordBatch: async (r: BatchRecord) => (recorded.push(r), true) } as unknown as ProgressStore;

    await processorFor(store, readingSource([], handed, true))(jobOf(10, 'reencrypt'), 'token');

    expect(handed).toEqual(Array.from({ length: 10 }, () => 'none'));
    expect(recorded[0]).toMatchObject({ processed: 10, increments: { reencrypted: 10 } });
  });
});

describe('batch processor: a worker that dies mid-batch (real Redis store)', () => {
  it('checkpoints what its finished items did, so the batch run again after the crash counts them as they were', async () => {
    await withRedisStore('crash', async ({ redis, keys, store }) => {
      const job = firstAttempt(10);
      // The first worker moves items 0-5, then hangs on 6 until it "dies": from then on it writes
      // nothing more to Redis, as a killed process wouldn't.
      let dead = false;
      const dying: ProgressStore = { ...store, carry: (b, o) => (dead ? new Promise<void>(() => undefined) : store.carry(b, o)) };
      const started = { n: 0 };
      const first: Source = {
        ...hangingSource(started),
        reencrypt: async (item, plan, ctx) => (Number(item.kind === 'row' ? item.pk[0] : 0) < 6 ? { outcome: 'reencrypted' } : hangingSource(started).reencrypt(item, plan, ctx)),
      };
      const shutdown = new AbortController();
      void processorFor(dying, first, { checkpointMs: 10, shutdown: shutdown.signal })(job, 'token').catch(() => undefined);
      while ((await store.carried({ migrationId: 'm-proc', mode: 'reencrypt', jobId: job.id! })).size < 6) await new Promise((r) => setTimeout(r, 5));
      dead = true;
      shutdown.abort();

      // BullMQ hands the stalled batch to another worker; its items now all read as current.
      job.attemptsStarted = 2;
      const seen: number[] = [];
      const second: Source = { ...first, reencrypt: async (item) => (seen.push(Number(item.kind === 'row' ? item.pk[0] : -1)), { outcome: 'already-current' }) };
      await processorFor(store, second)(job, 'token');

      expect(seen.sort((a, b) => a - b)).toEqual([6, 7, 8, 9]);
      expect((await store.counters('m-proc', ['rows']))['rows']).toMatchObject({ reencrypted: 6, 'already-current': 4, batchesDone: 1 });
      expect(await redis.hlen(keys.carried('m-proc'))).toBe(0);
    });
  });
});
