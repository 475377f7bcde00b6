import type { Job } from 'bullmq';
import type { Redis } from 'ioredis';
import type { BatchJob } from '@rekey/core';
import type { RedisKeys } from './keys.js';
import type { FleetQueue } from './queues.js';
import { fleetCommands } from './scripts.js';

/**
 * Lets a batch give the unstarted part of its items to a new batch job at the tail of a pass
 * (enumeration done, no batch waiting), so a worker that ran out of work takes them instead of
 * idling while another works through the end of a 1,000-item batch. See docs/decisions.md #28.
 *
 * Crash safety: the split point and the new batch's `batchesEnqueued` are written first, in
 * one script; the job is enqueued after, under a deterministic id. A batch reads its split
 * points before it starts, so a retried or re-delivered batch stops at the same point and
 * enqueues any child a crash left out (a child that already exists is not added twice).
 */
export interface BatchSplitter {
  /** The split points a batch job recorded, in the order taken (each below the one before). */
  points(job: Job<BatchJob>): Promise<number[]>;
  /**
   * True at the tail of the batch's pass: its source is fully enumerated for this pass and no
   * batch is waiting, so a worker somewhere may be out of work. (While the enumerator still runs,
   * an empty queue means it is the bottleneck, and splitting would only add batches.)
   */
  atTail(job: Job<BatchJob>): Promise<boolean>;
  /**
   * Records that the items from `at` to the batch's current end go to a new job, and enqueues
   * it. Returns the job's split points after the call.
   */
  split(job: Job<BatchJob>, at: number): Promise<number[]>;
  /** Enqueues (again) the child jobs of a batch's recorded split points (all of them); existing ones are left alone. */
  enqueueChildren(job: Job<BatchJob>, points: readonly number[]): Promise<void>;
}

const jobKey = (job: Job<BatchJob>) => `${job.data.mode}|${String(job.id)}`;
const parse = (raw: string | null): number[] => (raw ? raw.split(',').map(Number) : []);

/** The id of the batch that takes a job's items from `at` on: `<job id>.s<at>`. */
export function childJobId(parentId: string, at: number): string {
  return `${parentId}.s${at}`;
}

/** The items each split point gives away: from the point to the one before it (or the end). */
export function childRanges(length: number, points: readonly number[]): { at: number; end: number }[] {
  return points.map((at, i) => ({ at, end: i === 0 ? length : points[i - 1]! }));
}

export function createBatchSplitter(redis: Redis, keys: RedisKeys, queue: FleetQueue): BatchSplitter {
  const cmd = fleetCommands(redis);

  async function enqueue(job: Job<BatchJob>, ranges: readonly { at: number; end: number }[]): Promise<void> {
    for (const r of ranges) {
      await queue.add(
        job.data.mode === 'verify' ? 'verify' : 'batch',
        { ...job.data, items: job.data.items.slice(r.at, r.end) },
        { jobId: childJobId(String(job.id), r.at), ...(job.opts.priority !== undefined ? { priority: job.opts.priority } : {}) },
      );
    }
  }

  return {
    async points(job) {
      return parse(await redis.hget(keys.splits(job.data.migrationId), jobKey(job)));
    },
    async atTail(job) {
      const d = job.data;
      if ((await redis.hget(keys.cursor(d.migrationId, d.source, d.mode), 'done')) !== '1') return false;
      const c = await queue.queue.getJobCounts('waiting', 'prioritized');
      return (c['waiting'] ?? 0) + (c['prioritized'] ?? 0) === 0;
    },
    async split(job, at) {
      const d = job.data;
      const counter = d.mode === 'verify' ? 'verifyBatchesEnqueued' : 'batchesEnqueued';
      const points = parse(await cmd.splitBatch([keys.splits(d.migrationId), keys.counters(d.migrationId, d.source)], jobKey(job), at, counter));
      await enqueue(job, childRanges(d.items.length, points).filter((r) => r.at === at));
      return points;
    },
    enqueueChildren: (job, points) => enqueue(job, childRanges(job.data.items.length, points)),
  };
}

/** Where one running batch stops, and the splits it makes at the tail of its pass. */
export interface BatchTail {
  /** The index the batch stops before: its length, or its lowest split point. */
  end(): number;
  /** Called as the batch starts item `index` (in order); now and then asks whether to split. */
  started(index: number): void;
  /** Waits for a split under way; returns its error if it failed. */
  settled(): Promise<unknown>;
}

/**
 * Reads a batch's split points (stopping at the lowest and enqueuing their children again),
 * then follows the batch as it runs: every `checkMs`, while at least `minSplit` items have not
 * started and the pass is at its tail, it gives the later half of them to a new batch.
 */
export async function followSplits(
  splitter: BatchSplitter,
  job: Job<BatchJob>,
  o: { readonly minSplit: number; readonly checkMs: number; readonly stopped: () => boolean; readonly onSplit: (at: number) => void },
): Promise<BatchTail> {
  let end = job.data.items.length;
  const recorded = await splitter.points(job);
  if (recorded.length > 0) {
    end = Math.min(...recorded);
    await splitter.enqueueChildren(job, recorded);
  }
  let next = 0;
  let nextCheck = performance.now() + o.checkMs;
  let busy = false;
  let pending: Promise<void> = Promise.resolve();
  let failure: unknown;

  async function trySplit(): Promise<void> {
    if (!(await splitter.atTail(job))) return;
    const unstarted = end - next;
    if (unstarted < o.minSplit || o.stopped()) return;
    const at = end - Math.floor(unstarted / 2);
    end = at; // nothing at or past `at` starts from here on
    end = Math.min(end, ...(await splitter.split(job, at)));
    o.onSplit(at);
  }

  return {
    end: () => end,
    started(index) {
      next = index + 1;
      if (busy || o.stopped() || end - next < o.minSplit || performance.now() < nextCheck) return;
      busy = true;
      nextCheck = performance.now() + o.checkMs;
      pending = trySplit()
        .catch((err: unknown) => {
          failure = err;
        })
        .finally(() => {
          busy = false;
        });
    },
    async settled() {
      await pending;
      return failure;
    },
  };
}
