import { setMaxListeners } from 'node:events';
import { DelayedError, type Job } from 'bullmq';
import {
  ItemError,
  MigrationFatalError,
  RetryableError,
  failureRate,
  type BatchJob,
  type ItemRef,
  type KeyPlan,
  type Migration,
  type Outcome,
  type Source,
} from '@rekey/core';
import type { Logger } from 'pino';
import { mapBounded } from './pool.js';
import type { CounterField } from '@rekey/core';
import { outcomeIncrements, type CarriedOutcome, type ProgressStore } from './store.js';
import type { FleetMetrics } from './metrics.js';
import { followSplits, type BatchSplitter } from './split.js';
import { readAheadWindow, windowedReadAhead } from './read-ahead.js';

/** Gives the source object of a migration (built once per migration and source, then cached). */
export interface SourceRegistry {
  get(m: Migration, sourceName: string): Promise<Source>;
  close(): Promise<void>;
}

export interface BatchProcessorDeps {
  readonly store: ProgressStore;
  readonly sources: SourceRegistry;
  readonly logger: Logger;
  readonly metrics?: FleetMetrics;
  /** Aborted on SIGTERM: items in flight are aborted and the whole batch goes back to the queue, counting nothing yet (finished items are carried). */
  readonly shutdown: AbortSignal;
  /** Who writes audit entries (e.g. `worker:<host>:<pid>`). */
  readonly actor: string;
  /** How long a batch of a paused migration (or one the KMS budget could not serve) waits before it is looked at again. @defaultValue 5000 */
  readonly pausedRecheckMs?: number;
  /** Keeps the job's lock extended while its items wait long for KMS tokens (the fleet budget's `holdJob`). */
  readonly holdJob?: (migrationId: string, job: Job<BatchJob>, token: string | undefined) => () => void;
  /** Lets a batch give its unstarted items to a new batch at the tail of its pass (no splitting without it). */
  readonly splitter?: BatchSplitter;
  /** How often a running batch asks whether its pass is at its tail. @defaultValue 250 */
  readonly splitCheckMs?: number;
  /**
   * How often a running batch writes what its finished items did to the carried hash, so that a
   * worker that dies mid-batch loses at most this much of the count. @defaultValue 5000
   */
  readonly checkpointMs?: number;
}

/** A batch gives items away only when at least this many (and twice its concurrency) have not started. */
export const MIN_SPLIT_ITEMS = 20;

/** Returns the key plan of a migration. */
export function keyPlan(m: Migration): KeyPlan {
  return { from: m.keys.from, to: m.keys.to, ...(m.spec.refresh ? { refresh: true } : {}) };
}

function itemLabel(item: ItemRef): string {
  return JSON.stringify(item);
}

function oneLine(s: string): string {
  return s.replace(/\s+/g, ' ').slice(0, 500);
}

type ItemResult =
  | { kind: 'outcome'; outcome: Outcome; code?: string; reason?: string; verify?: 'old-key' | 'current' | 'other' | 'gone' }
  | { kind: 'fatal'; error: MigrationFatalError }
  | { kind: 'retry'; error: RetryableError };

const VERIFY_FIELD: Record<'old-key' | 'current' | 'other' | 'gone', CounterField> = {
  'old-key': 'verifyOldKey',
  current: 'verifyCurrent',
  other: 'verifyOther',
  gone: 'verifyGone',
};

/**
 * Builds the worker's batch processor: runs the items of one batch with bounded concurrency,
 * classifies every error once, writes all counters and failures in one Redis round trip, and
 * pauses the migration on a fatal error or a failure rate over the threshold.
 */
export function createBatchProcessor(deps: BatchProcessorDeps) {
  const { store, sources, logger, metrics, shutdown } = deps;

  return async function processBatch(job: Job<BatchJob>, token: string | undefined): Promise<void> {
    const data = job.data;
    const m = await store.get(data.migrationId);
    if (!m) {
      logger.warn({ job: job.id, migration: data.migrationId }, 'batch of an unknown migration dropped');
      return;
    }
    if (m.state === 'cancelled' || m.state === 'failed' || m.state === 'finalized') {
      logger.info({ job: job.id, migration: m.id, state: m.state }, 'batch of a finished migration dropped');
      return;
    }
    if (m.state === 'paused') {
      await job.moveToDelayed(Date.now() + (deps.pausedRecheckMs ?? 5000), token);
      throw new DelayedError();
    }
    const source = await sources.get(m, data.source);
    const plan = keyPlan(m);
    const options = m.spec.options;
    const lastAttempt = job.attemptsMade + 1 >= (job.opts.attempts ?? 1);
    let stop = false;
    // A batch that gave items away before (an earlier attempt, or a re-delivery after a crash)
    // stops where it did; at the tail of its pass it may give more away (see split.ts).
    const tail = deps.splitter
      ? await followSplits(deps.splitter, job, {
          minSplit: Math.max(MIN_SPLIT_ITEMS, 2 * options.concurrency),
          checkMs: deps.splitCheckMs ?? 250,
          stopped: () => stop,
          onSplit: (at) => {
            metrics?.batchesSplit.inc({ mode: data.mode });
            logger.debug({ job: job.id, migration: m.id, at, items: data.items.length }, 'batch split: unstarted items given to a new batch');
          },
        })
      : undefined;
    const end = () => tail?.end() ?? data.items.length;
    const abort = new AbortController();
    // Every in-flight item (and each SDK call in it) listens on this signal: up to `concurrency` x a few.
    setMaxListeners(options.concurrency * 8 + 16, abort.signal);
    const onShutdown = () => abort.abort();
    shutdown.addEventListener('abort', onShutdown, { once: true });
    const ctx = { signal: abort.signal, migrationId: m.id, dryRun: options.dryRun };
    const started = performance.now();
    // Items an earlier attempt finished keep the outcome they had (a moved item read again would
    // look already-current). Verify reads again: its inspections change nothing.
    const ref = { migrationId: m.id, mode: data.mode, jobId: String(job.id) };
    const carried =
      data.mode === 'reencrypt' && (job.attemptsStarted > 1 || job.attemptsMade > 0) ? await store.carried(ref) : new Map<number, CarriedOutcome>();
    const releaseJob = deps.holdJob?.(m.id, job, token);
    const readAhead = windowedReadAhead(source, data.items, {
      window: readAheadWindow(options.concurrency),
      signal: abort.signal,
      skip: (i) => carried.has(i),
      onError: (err) => logger.warn({ job: job.id, migration: m.id, err: (err as Error)?.message }, 'read-ahead failed: reading these items one by one'),
    });

    /** Runs one item and classifies what happened, once: an outcome, a fatal error, a retry, or nothing (shutting down). */
    async function runItem(item: ItemRef, index: number): Promise<ItemResult | undefined> {
      tail?.started(index);
      const before = carried.get(index);
      if (before) return { kind: 'outcome', ...before };
      const ahead = await readAhead?.(index);
      const itemCtx = ahead === undefined ? ctx : { ...ctx, readAhead: ahead };
      try {
        if (data.mode === 'verify') {
          const ins = await source.inspect(item, plan, itemCtx);
          return { kind: 'outcome', outcome: 'already-current', verify: ins.state, ...(ins.reason ? { reason: ins.reason } : {}) };
        }
        const r = await source.reencrypt(item, plan, itemCtx);
        return { kind: 'outcome', outcome: r.outcome, ...(r.code ? { code: r.code } : {}), ...(r.reason ? { reason: oneLine(r.reason) } : {}) };
      } catch (err) {
        // Cut short by SIGTERM (in its KMS call or waiting for a slot): not an outcome. The
        // batch goes back to the queue as if the item had not started.
        if (shutdown.aborted) return undefined;
        if (err instanceof MigrationFatalError) {
          stop = true;
          return { kind: 'fatal', error: err };
        }
        // The budget's Redis not answering is no fault of the item's: it never becomes a failure.
        if (err instanceof RetryableError && (!lastAttempt || err.code === 'redis-unavailable')) {
          stop = true;
          return { kind: 'retry', error: err };
        }
        if (err instanceof ItemError) {
          return { kind: 'outcome', outcome: err.outcome, code: err.code, reason: oneLine(err.message) };
        }
        const e = err as Error;
        const code = err instanceof RetryableError ? err.code : (e?.name ?? 'Error');
        return { kind: 'outcome', outcome: 'failed', code, reason: oneLine(e?.message ?? String(err)) };
      }
    }

    // What the items of this attempt (and earlier ones) finished as; written to the carried hash
    // now and then while the batch runs, so a worker that dies mid-batch loses at most that much.
    const finished = new Map<number, CarriedOutcome>(carried);
    let kept = carried.size;
    let keeping: Promise<void> | undefined;
    const keep = () => {
      if (keeping || finished.size <= kept) return;
      const size = finished.size;
      keeping = store
        .carry(ref, new Map(finished))
        .then(
          () => void (kept = Math.max(kept, size)),
          (err: unknown) => logger.debug({ job: job.id, migration: m.id, err: (err as Error).message }, 'could not checkpoint finished items'),
        )
        .finally(() => (keeping = undefined));
    };
    const checkpoint = data.mode === 'reencrypt' ? setInterval(keep, deps.checkpointMs ?? 5000) : undefined;
    checkpoint?.unref();

    const all = await mapBounded(
      data.items,
      options.concurrency,
      async (item, index): Promise<ItemResult | undefined> => {
        const r = await runItem(item, index);
        if (r?.kind === 'outcome' && data.mode === 'reencrypt') {
          finished.set(index, { outcome: r.outcome, ...(r.code ? { code: r.code } : {}), ...(r.reason ? { reason: r.reason } : {}) });
        }
        return r;
      },
      () => stop || shutdown.aborted,
      end,
    );
    clearInterval(checkpoint);
    await keeping;
    const splitFailure = await tail?.settled();
    shutdown.removeEventListener('abort', onShutdown);
    releaseJob?.();
    // The batch goes back to the queue uncounted: keep what its finished items did.
    const carry = async (reason: 'retry' | 'budget' | 'paused' | 'shutdown' | 'split-failed') => {
      metrics?.batchesRequeued.inc({ mode: data.mode, reason });
      if (data.mode !== 'reencrypt' || finished.size <= kept) return;
      try {
        await store.carry(ref, finished);
      } catch (err) {
        // The batch still goes back to the queue; its finished items will then count as already-current.
        logger.warn({ job: job.id, migration: m.id, err: (err as Error).message }, 'could not keep the outcomes of finished items');
      }
    };

    // A split whose script or enqueue failed may or may not have been recorded: run the batch
    // again, and the next attempt reads what was.
    if (splitFailure) {
      await carry('split-failed');
      throw splitFailure;
    }
    const results = all.slice(0, end());

    const fatal = results.find((r): r is Extract<ItemResult, { kind: 'fatal' }> => r?.kind === 'fatal');
    if (fatal) {
      logger.error({ migration: m.id, code: fatal.error.code, reason: fatal.error.message }, 'migration-fatal error: pausing');
      await store.transition(m.id, 'paused', {
        actor: deps.actor,
        reason: `${fatal.error.code}: ${oneLine(fatal.error.message)}`,
        from: ['enumerating', 'running', 'verifying'],
      });
      await carry('paused');
      await job.moveToDelayed(Date.now() + (deps.pausedRecheckMs ?? 5000), token);
      throw new DelayedError();
    }
    const retries = results.filter((r): r is Extract<ItemResult, { kind: 'retry' }> => r?.kind === 'retry');
    if (retries.length > 0) {
      const budgetDown = retries.some((r) => r.error.code === 'redis-unavailable');
      await carry(budgetDown ? 'budget' : 'retry');
      if (budgetDown) {
        // The limiter could not reach the shared budget: the batch waits for it without using one
        // of its attempts, however long Redis stays slow or away (workers stop; they never run unlimited).
        logger.warn({ job: job.id, migration: m.id }, 'KMS budget unavailable: batch back to the queue');
        await job.moveToDelayed(Date.now() + (deps.pausedRecheckMs ?? 5000), token);
        throw new DelayedError();
      }
      // The whole batch runs again later with BullMQ's backoff; its finished items keep their outcomes.
      throw retries[0]!.error;
    }
    if (results.some((r) => r === undefined)) {
      // Shutting down: items not started or cut short go back to the queue with the batch; nothing is counted now.
      await carry('shutdown');
      await job.moveToDelayed(Date.now(), token);
      throw new DelayedError();
    }

    const done = results as ItemResult[];
    const outcomes = done.map((r) => (r.kind === 'outcome' ? r.outcome : 'failed'));
    let increments: Partial<Record<CounterField, number>>;
    const failures: { item: string; code: string; reason: string }[] = [];
    if (data.mode === 'verify') {
      increments = { verifyBatchesDone: 1, verifyChecked: done.length };
      done.forEach((r, i) => {
        if (r.kind !== 'outcome' || !r.verify) return;
        const f = VERIFY_FIELD[r.verify];
        increments[f] = (increments[f] ?? 0) + 1;
        if (r.verify === 'old-key') {
          failures.push({ item: itemLabel(data.items[i]!), code: 'verify:old-key', reason: r.reason ?? 'still under an old key after the migration' });
        }
      });
    } else {
      increments = { ...outcomeIncrements(outcomes), batchesDone: 1 };
      done.forEach((r, i) => {
        if (r.kind === 'outcome' && r.outcome === 'failed') {
          failures.push({ item: itemLabel(data.items[i]!), code: r.code ?? 'failed', reason: r.reason ?? '' });
        }
      });
    }
    const recorded = await store.recordBatch({
      migrationId: m.id,
      source: data.source,
      jobId: String(job.id),
      mode: data.mode,
      increments,
      failures,
      processed: done.length,
    });
    metrics?.batchDone((performance.now() - started) / 1000, data.mode === 'reencrypt' && recorded ? outcomes : [], m.id, data.source);

    // Only a batch with failures can push the failure rate over the threshold: others skip the read.
    if (data.mode === 'reencrypt' && recorded && failures.length > 0) {
      const totals = await store.counters(m.id, m.spec.sources.map((s) => s.name));
      const rate = failureRate(Object.values(totals));
      const processed = Object.values(totals).reduce((n, c) => n + c.reencrypted + c['already-current'] + c['not-in-scope'] + c.gone + c.conflict + c.failed, 0);
      if (processed >= options.failureRateMinItems && rate > options.failureRateThreshold) {
        await store.transition(m.id, 'paused', {
          actor: deps.actor,
          reason: `failure rate ${(rate * 100).toFixed(1)}% is over the threshold of ${(options.failureRateThreshold * 100).toFixed(1)}%`,
          from: ['enumerating', 'running'],
        });
      }
    }
  };
}
