import { setTimeout as sleep } from 'node:timers/promises';
import type { Redis } from 'ioredis';
import type { Logger } from 'pino';
import { batchJobId, type Migration } from '@rekey/core';
import type { RedisKeys } from './keys.js';
import type { FleetQueue } from './queues.js';
import type { SourceRegistry } from './processor.js';
import { fleetCommands } from './scripts.js';

/** re-encrypt pass or read-only verify pass */
export type PassMode = 'reencrypt' | 'verify';

export interface EnumeratorDeps {
  readonly redis: Redis;
  readonly keys: RedisKeys;
  readonly queue: FleetQueue;
  readonly sources: SourceRegistry;
  readonly logger: Logger;
  /** Unique id of this coordinator (lease owner). */
  readonly owner: string;
  /** Lease time to live. @defaultValue 15000 */
  readonly leaseTtlMs?: number;
  /** How often backpressure re-checks the queue. @defaultValue 250 */
  readonly backpressurePollMs?: number;
}

/** Why an enumeration pass stopped. */
export type EnumerationResult = 'done' | 'lost-lease' | 'stopped';

/** The first page of a pass; each next page doubles until it reaches the migration's `batchSize`. */
export const FIRST_PAGE = 100;

/**
 * How many items page `page` (0-based) of a pass holds at most: 100, 200, 400, … up to
 * `batchSize`. Small first pages let every worker start within a second; big later pages keep
 * the queue's and the store's Redis work per item low (each batch costs a fixed ~60 Redis
 * commands, BullMQ's scripts included). It depends only on the page number, so a resumed pass
 * continues with the same sizes.
 */
export function pageLimit(page: number, batchSize: number): number {
  return Math.min(batchSize, FIRST_PAGE * 2 ** Math.min(page, 16));
}

/**
 * Enumerates the sources of one migration into batches under a leader lease: one batch per
 * page with a deterministic job id, the cursor checkpointed after each enqueue, and pauses
 * while the waiting batches are above the migration's high-water mark.
 */
export function createEnumerator(deps: EnumeratorDeps) {
  const { redis, keys, queue, sources, logger, owner } = deps;
  const cmd = fleetCommands(redis);
  const ttl = deps.leaseTtlMs ?? 15_000;

  async function holdLease(id: string): Promise<boolean> {
    return (await cmd.lease(keys.lease(id), owner, ttl)) === 1;
  }

  async function stillRunning(id: string, mode: PassMode): Promise<boolean> {
    const raw = await redis.hget(keys.migration(id), 'record');
    if (!raw) return false;
    const state = (JSON.parse(raw) as Migration).state;
    return mode === 'reencrypt' ? state === 'enumerating' : state === 'verifying';
  }

  return {
    holdLease,
    async releaseLease(id: string): Promise<void> {
      await cmd.leaseRelease(keys.lease(id), owner);
    },

    /** Runs (or resumes) one pass over every source of a migration. */
    async run(m: Migration, mode: PassMode, round: number, signal: AbortSignal): Promise<EnumerationResult> {
      for (const spec of m.spec.sources) {
        const source = await sources.get(m, spec.name);
        const cursorKey = keys.cursor(m.id, spec.name, mode);
        const countersKey = keys.counters(m.id, spec.name);
        const ck = await redis.hgetall(cursorKey);
        if (ck['done'] === '1') continue;
        let page = Number(ck['page'] ?? -1) + 1;
        let cursor: string | null = ck['cursor'] ? ck['cursor'] : null;
        for (;;) {
          if (signal.aborted) return 'stopped';
          if (!(await holdLease(m.id))) return 'lost-lease';
          if (!(await stillRunning(m.id, mode))) return 'stopped';
          while ((await queue.waitingCount()) >= m.spec.options.highWaterMark) {
            if (signal.aborted) return 'stopped';
            await sleep(deps.backpressurePollMs ?? 250);
            if (!(await holdLease(m.id))) return 'lost-lease';
          }
          const p = await source.list(cursor, signal, pageLimit(page, m.spec.options.batchSize));
          const last = p.next === null;
          if (p.items.length > 0) {
            await queue.add(
              mode === 'verify' ? 'verify' : 'batch',
              { migrationId: m.id, source: spec.name, page, items: [...p.items], mode },
              { jobId: batchJobId(m.id, spec.name, page, mode, round), priority: mode === 'verify' ? 2 : 3 },
            );
          }
          await cmd.checkpoint(
            [cursorKey, countersKey],
            page,
            p.next ?? '',
            p.items.length,
            mode === 'verify' ? 'verifyDiscovered' : 'discovered',
            mode === 'verify' ? 'verifyBatchesEnqueued' : 'batchesEnqueued',
            last ? '1' : '0',
          );
          logger.debug({ migration: m.id, source: spec.name, mode, page, items: p.items.length }, 'page enqueued');
          if (last) break;
          cursor = p.next;
          page++;
        }
      }
      return 'done';
    },
  };
}

export type Enumerator = ReturnType<typeof createEnumerator>;
