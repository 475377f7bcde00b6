import { describe, expect, it } from 'vitest';
import pino from 'pino';
import { DelayedError, type Job } from 'bullmq';
import { MigrationSpecSchema, type BatchJob, type ItemOutcome, type Migration, type Source } from '@rekey/core';
import { createBatchProcessor } from '../src/processor.js';
import type { BatchRecord, ProgressStore } from '../src/store.js';

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
    const processBatch = createBatchProcessor({
      store,
      sources: { get: async () => source, close: async () => undefined },
      logger: pino({ level: 'silent' }),
      shutdown: shutdown.signal,
      actor: 'test',
    });
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
