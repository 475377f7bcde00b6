import { Queue, Worker, type ConnectionOptions, type Job, type JobsOptions, type WorkerOptions } from 'bullmq';
import type { JobPayloads } from '@rekey/core';

/** The BullMQ queue all batch, verify and item jobs of the fleet share. */
export const QUEUE_NAME = 'batches';

/** A job name of the fleet, typed from core's one map of job name to payload. */
export type JobName = keyof JobPayloads & string;

/** A BullMQ job whose data matches its name. */
export type FleetJob = { [N in JobName]: Job<JobPayloads[N], void, N> }[JobName];

/** The fleet's queue, typed so a payload can't drift from its handler. */
export interface FleetQueue {
  readonly queue: Queue;
  add<N extends JobName>(name: N, data: JobPayloads[N], opts: JobsOptions & { jobId: string }): Promise<void>;
  /** Waiting + delayed + prioritized jobs: what backpressure compares to the high-water mark. */
  waitingCount(): Promise<number>;
  counts(): Promise<{ waiting: number; active: number; delayed: number; failed: number; completed: number; prioritized: number }>;
  close(): Promise<void>;
}

/** Default job options: keep Redis small, retry whole batches with backoff when a batch throws. */
export const DEFAULT_JOB_OPTIONS: JobsOptions = {
  attempts: 8,
  backoff: { type: 'exponential', delay: 1000 },
  // Completed ids are kept for an hour so a replayed enqueue after a crash stays a no-op.
  removeOnComplete: { age: 3600, count: 100_000 },
  removeOnFail: { age: 7 * 24 * 3600 },
};

export function createFleetQueue(connection: ConnectionOptions, prefix: string): FleetQueue {
  const queue = new Queue(QUEUE_NAME, { connection, prefix, defaultJobOptions: DEFAULT_JOB_OPTIONS });
  return {
    queue,
    async add(name, data, opts) {
      await queue.add(name, data, opts);
    },
    async waitingCount() {
      const c = await queue.getJobCounts('waiting', 'delayed', 'prioritized', 'paused');
      return (c['waiting'] ?? 0) + (c['delayed'] ?? 0) + (c['prioritized'] ?? 0) + (c['paused'] ?? 0);
    },
    async counts() {
      const c = await queue.getJobCounts('waiting', 'active', 'delayed', 'failed', 'completed', 'prioritized');
      return {
        waiting: c['waiting'] ?? 0,
        active: c['active'] ?? 0,
        delayed: c['delayed'] ?? 0,
        failed: c['failed'] ?? 0,
        completed: c['completed'] ?? 0,
        prioritized: c['prioritized'] ?? 0,
      };
    },
    close: () => queue.close(),
  };
}

/** Starts a BullMQ worker on the fleet queue with a typed handler. */
export function createFleetWorker(
  connection: ConnectionOptions,
  prefix: string,
  handler: (job: FleetJob, token: string | undefined) => Promise<void>,
  opts: Omit<WorkerOptions, 'connection' | 'prefix'> = {},
): Worker {
  return new Worker(QUEUE_NAME, (job, token) => handler(job as FleetJob, token), {
    connection,
    prefix,
    ...opts,
  });
}
