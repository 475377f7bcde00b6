import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import pino from 'pino';
import { Job } from 'bullmq';
import type { BatchJob, ItemOutcome, Source } from '@rekey/core';
import { cleanupRedisPrefix, createTestRedis, redisUrl, uniquePrefix } from '@rekey/testing';
import { redisKeys } from '../src/keys.js';
import { createBatchProcessor } from '../src/processor.js';
import { createFleetQueue, type FleetQueue } from '../src/queues.js';
import { fleetCommands } from '../src/scripts.js';
import { childJobId, createBatchSplitter } from '../src/split.js';
import type { BatchRecord, ProgressStore } from '../src/store.js';
import { startEngineFixture, type EngineFixture } from './engine-fixture.js';

describe('splitting batches at the tail of a pass (real Redis, BullMQ, Postgres, aws-local)', () => {
  let f: EngineFixture;

  beforeAll(async () => {
    f = await startEngineFixture('split', { db: true });
  });

  afterAll(async () => {
    f.ep.local?.controls.setLatency('kms:ReEncrypt', null);
    await f?.close();
  });

  it('a worker slot left without a batch takes half of a running batch: every row is re-encrypted once and counted once', async () => {
    const oldKey = await f.newKey('split old');
    const newKey = await f.newKey('split new');
    const rows = await f.seedSecrets(oldKey, 700);
    // Pages of 100, 200 and 400 rows at 4 items in flight and 10 ms a ReEncrypt: the 400-row page
    // is the last batch, and the worker's second slot has nothing to take while it runs.
    f.ep.local!.controls.setLatency('kms:ReEncrypt', { fixedMs: 10 });
    const m = await f.engine.createMigration(
      { sources: [rows], from: [oldKey], to: newKey, options: { concurrency: 4 } },
      'test',
    );
    const settled = await f.waitUntil(m.id, (x) => ['ready', 'blocked', 'paused'].includes(x.state), 'settling');
    f.ep.local!.controls.setLatency('kms:ReEncrypt', null);

    const st = await f.engine.status(m.id);
    const c = st.sources[0]!.counters;
    const jobs = (await f.engine.queue.queue.getJobs(['completed'])).filter((j) => j.data.migrationId === m.id);
    const children = jobs.filter((j) => /\.s\d+$/.test(String(j.id)));
    expect(children.filter((j) => j.data.mode === 'reencrypt').length).toBeGreaterThan(0);
    expect((await f.engine.metrics.batchesSplit.get()).values.reduce((n, v) => n + v.value, 0)).toBeGreaterThan(0);
    // Each row once: nothing was re-encrypted twice (a second time would be already-current).
    expect(st.totals.outcomes).toMatchObject({ reencrypted: 700, 'already-current': 0, failed: 0 });
    expect(c.batchesDone).toBe(c.batchesEnqueued);
    expect(c.batchesEnqueued).toBe(3 + children.filter((j) => j.data.mode === 'reencrypt').length);
    expect(c).toMatchObject({ verifyChecked: 700, verifyOldKey: 0, verifyCurrent: 700 });
    expect(settled.state).not.toBe('paused');
  });
});

describe('a batch that crashed between recording a split and enqueuing its child', () => {
  const redis = createTestRedis();
  const prefix = uniquePrefix('split-crash');
  const keys = redisKeys(prefix);
  let queue: FleetQueue;

  beforeAll(() => {
    queue = createFleetQueue({ url: redisUrl(), maxRetriesPerRequest: null }, keys.bullPrefix());
  });

  afterAll(async () => {
    await queue.close();
    await cleanupRedisPrefix(redis, prefix);
    await redis.quit();
  });

  it('a pass is at its tail only once its source is enumerated and no batch waits', async () => {
    const data: BatchJob = { migrationId: 'm-tail', source: 'rows', page: 0, items: [{ kind: 'row', pk: [1] }], mode: 'verify' };
    const job = { id: 'm-tail.rows.v1.0', name: 'verify', data, opts: {} } as unknown as Job<BatchJob>;
    const splitter = createBatchSplitter(redis, keys, queue);
    expect(await splitter.atTail(job)).toBe(false); // still enumerating
    await redis.hset(keys.cursor('m-tail', 'rows', 'verify'), 'done', '1');
    expect(await splitter.atTail(job)).toBe(true);
    await queue.add('verify', { ...data, page: 1 }, { jobId: 'm-tail.rows.v1.1', priority: 2 });
    expect(await splitter.atTail(job)).toBe(false); // a batch waits
    await queue.queue.remove('m-tail.rows.v1.1');
    expect(await splitter.atTail(job)).toBe(true);
  });

  it('runs again to its split point and enqueues the child the crash left out, counted once', async () => {
    const items = Array.from({ length: 100 }, (_, i) => ({ kind: 'row' as const, pk: [i] }));
    const data: BatchJob = { migrationId: 'm-crash', source: 'rows', page: 4, items, mode: 'reencrypt' };
    await queue.add('batch', data, { jobId: 'm-crash.rows.r1.4', priority: 3 });
    const job = (await Job.fromId<BatchJob>(queue.queue, 'm-crash.rows.r1.4'))!;
    // The first attempt recorded a split at 60, then died before the child was enqueued.
    const points = await fleetCommands(redis).splitBatch([keys.splits('m-crash'), keys.counters('m-crash', 'rows')], 'reencrypt|m-crash.rows.r1.4', 60, 'batchesEnqueued');
    expect(points).toBe('60');
    // A repeat of the same split changes nothing.
    expect(await fleetCommands(redis).splitBatch([keys.splits('m-crash'), keys.counters('m-crash', 'rows')], 'reencrypt|m-crash.rows.r1.4', 60, 'batchesEnqueued')).toBe('60');
    expect(await redis.hget(keys.counters('m-crash', 'rows'), 'batchesEnqueued')).toBe('1');

    const seen: number[] = [];
    const source: Source = {
      kind: 'postgres',
      name: 'rows',
      list: async () => ({ items: [], next: null }),
      reencrypt: async (item): Promise<ItemOutcome> => {
        if (item.kind === 'row') seen.push(Number(item.pk[0]));
        return { outcome: 'reencrypted' };
      },
      inspect: async () => ({ state: 'current' }),
    };
    const recorded: BatchRecord[] = [];
    const migration = {
      id: 'm-crash',
      state: 'running',
      spec: { sources: [{ name: 'rows' }], options: { concurrency: 4, dryRun: false, failureRateMinItems: 100, failureRateThreshold: 0.5 } },
      keys: { from: ['old'], to: 'new', aliases: {} },
    };
    const store = { get: async () => migration, recordBatch: async (r: BatchRecord) => (recorded.push(r), true) } as unknown as ProgressStore;
    const processBatch = createBatchProcessor({
      store,
      sources: { get: async () => source, close: async () => undefined },
      logger: pino({ level: 'silent' }),
      shutdown: new AbortController().signal,
      actor: 'test',
      splitter: createBatchSplitter(redis, keys, queue),
    });
    await processBatch(job, undefined);

    expect(seen.sort((a, b) => a - b)).toEqual(Array.from({ length: 60 }, (_, i) => i));
    expect(recorded[0]).toMatchObject({ processed: 60 });
    const child = await Job.fromId<BatchJob>(queue.queue, childJobId('m-crash.rows.r1.4', 60));
    expect(child?.data.items.map((i) => (i.kind === 'row' ? i.pk[0] : -1))).toEqual(Array.from({ length: 40 }, (_, i) => 60 + i));
    expect(child?.opts.priority).toBe(3);
    // Running the parent once more (another re-delivery) adds no second child.
    await processBatch(job, undefined);
    expect((await queue.queue.getJobs(['prioritized', 'waiting'])).filter((j) => String(j.id).startsWith('m-crash.rows.r1.4.s'))).toHaveLength(1);
  });
});
