import type { Logger } from 'pino';
import { isTerminal, type Migration } from '@rekey/core';
import type { Enumerator, PassMode } from './enumerator.js';
import type { ProgressStore, SourceCounters } from './store.js';

export interface CoordinatorDeps {
  readonly store: ProgressStore;
  readonly enumerator: Enumerator;
  readonly logger: Logger;
  readonly actor: string;
  /** Computes the gate and moves a verified migration to ready or blocked (and finalizes when asked). */
  readonly settle: (m: Migration) => Promise<void>;
  /**
   * Writes a finished migration's audit log to its `auditBucket` (only called when it has one and
   * no export yet); false when it is too early (tried again on the next tick).
   */
  readonly exportAudit?: (m: Migration) => Promise<boolean>;
  /** How long a failed audit export waits before it is tried again. @defaultValue 30000 */
  readonly exportRetryMs?: number;
  /**
   * Writes a running migration's audit log so far to its `auditBucket` (only called when it has
   * one), so the bucket anchors the log while the migration runs; resolves whether the log held
   * the entry of the migration's current state (else it is called again a second later).
   * Throws when it can't write.
   */
  readonly checkpointAudit?: (m: Migration) => Promise<boolean>;
  /** Time between two checkpoints of a migration's audit log (and after a failed one); a state change checkpoints at once. @defaultValue 60000 */
  readonly auditCheckpointMs?: number;
  /**
   * How often the loop looks at every migration when nothing wakes it. Changes wake it at once
   * (`wake`, called for every message on the store's change channel), so the tick is a fallback.
   * @defaultValue 500
   */
  readonly tickMs?: number;
}

const total = (cs: Record<string, SourceCounters>, f: keyof SourceCounters) => Object.values(cs).reduce((n, c) => n + c[f], 0);

/**
 * The coordinator loop: moves each migration through its states. It enumerates under a lease
 * (so several coordinators can run), notices when all batches are done, starts the verify pass,
 * and settles the gate. Everything it decides comes from Redis, so a restarted coordinator
 * carries on where the last one stopped.
 */
export function createCoordinator(deps: CoordinatorDeps) {
  const { store, enumerator, logger, actor } = deps;
  const passes = new Map<string, { mode: PassMode; abort: AbortController; done: Promise<void> }>();
  let timer: NodeJS.Timeout | undefined;
  let ticking: Promise<void> | undefined;
  let busy = false;
  let wakeAgain = false;
  let stopped = false;
  const exportRetryAt = new Map<string, number>();
  const checkpointAt = new Map<string, { at: number; state: string }>();
  const checkpointMs = deps.auditCheckpointMs ?? 60_000;

  async function maybeExport(m: Migration): Promise<void> {
    if (!deps.exportAudit || !m.spec.auditBucket || m.auditExport) return;
    if ((exportRetryAt.get(m.id) ?? 0) > Date.now()) return;
    if (!(await enumerator.holdLease(m.id))) return;
    try {
      if (await deps.exportAudit(m)) exportRetryAt.delete(m.id);
    } catch (err) {
      exportRetryAt.set(m.id, Date.now() + (deps.exportRetryMs ?? 30_000));
      logger.error({ migration: m.id, bucket: m.spec.auditBucket, err: (err as Error).message }, 'audit export failed; retrying later');
    }
  }

  async function maybeCheckpoint(m: Migration): Promise<void> {
    if (!deps.checkpointAudit || !m.spec.auditBucket) return;
    // Every auditCheckpointMs, and at once after a state change: those are the entries that matter most.
    const last = checkpointAt.get(m.id);
    if (last && last.at > Date.now() && last.state === m.state) return;
    if (!(await enumerator.holdLease(m.id))) return;
    checkpointAt.set(m.id, { at: Date.now() + checkpointMs, state: m.state });
    try {
      // The state is saved before its entry is appended: until the log holds it, look again each second.
      if (!(await deps.checkpointAudit(m))) checkpointAt.set(m.id, { at: Date.now() + Math.min(1000, checkpointMs), state: m.state });
    } catch (err) {
      logger.error({ migration: m.id, bucket: m.spec.auditBucket, err: (err as Error).message }, 'audit checkpoint failed; retrying later');
    }
  }

  function startPass(m: Migration, mode: PassMode): void {
    const running = passes.get(m.id);
    if (running) return;
    const abort = new AbortController();
    const round = mode === 'verify' ? (m.verifyRound ?? 1) : (m.round ?? 1);
    const done = (async () => {
      try {
        const res = await enumerator.run(m, mode, round, abort.signal);
        if (res !== 'done') return;
        if (mode === 'reencrypt') {
          await store.transition(m.id, 'running', { actor, from: ['enumerating'], patch: { enumeratedAt: new Date().toISOString() } });
        } else {
          await store.patch(m.id, { verifyEnumeratedAt: new Date().toISOString() });
        }
      } catch (err) {
        // Aborted on purpose (the coordinator stopping, the migration paused or ended): not a failure.
        if (abort.signal.aborted) logger.debug({ migration: m.id, mode }, 'enumeration pass stopped');
        else logger.error({ migration: m.id, mode, err: (err as Error).message }, 'enumeration failed; it is retried on the next tick');
      } finally {
        passes.delete(m.id);
        wake();
      }
    })();
    passes.set(m.id, { mode, abort, done });
  }

  async function advance(m: Migration): Promise<void> {
    const names = m.spec.sources.map((s) => s.name);
    switch (m.state) {
      case 'created':
        await store.transition(m.id, 'enumerating', { actor, from: ['created'], patch: { startedAt: new Date().toISOString() } });
        return;
      case 'enumerating':
        if (await enumerator.holdLease(m.id)) startPass(m, 'reencrypt');
        return;
      case 'running': {
        const c = await store.counters(m.id, names);
        if (total(c, 'batchesDone') >= total(c, 'batchesEnqueued')) {
          await store.transition(m.id, 'verifying', {
            actor,
            from: ['running'],
            patch: { verifyStartedAt: new Date().toISOString(), verifyRound: (m.verifyRound ?? 0) + 1 },
          });
        }
        return;
      }
      case 'verifying': {
        if (!m.verifyEnumeratedAt) {
          if (await enumerator.holdLease(m.id)) startPass(m, 'verify');
          return;
        }
        const c = await store.counters(m.id, names);
        if (total(c, 'verifyBatchesDone') >= total(c, 'verifyBatchesEnqueued')) {
          if (!m.verifiedAt) await store.patch(m.id, { verifiedAt: new Date().toISOString() });
          const fresh = await store.get(m.id);
          if (fresh) await deps.settle(fresh);
        }
        return;
      }
      case 'ready':
      case 'blocked':
        // Usage and acknowledgements change over time: the gate is re-read on every tick.
        if (await enumerator.holdLease(m.id)) await deps.settle(m);
        return;
      case 'paused':
      case 'finalized':
      case 'cancelled':
      case 'failed':
        return;
    }
  }

  async function tick(): Promise<void> {
    const all = await store.list();
    for (const m of all) {
      if (stopped) return;
      if (isTerminal(m.state) || m.state === 'paused') {
        const p = passes.get(m.id);
        p?.abort.abort();
        if (isTerminal(m.state)) {
          checkpointAt.delete(m.id);
          await maybeExport(m);
        } else await maybeCheckpoint(m);
        continue;
      }
      try {
        await maybeCheckpoint(m);
        await advance(m);
      } catch (err) {
        logger.error({ migration: m.id, state: m.state, err: (err as Error).message }, 'coordinator step failed; retrying on the next tick');
      }
    }
  }

  function loop(): void {
    busy = true;
    wakeAgain = false;
    ticking = tick()
      .catch((err: unknown) => logger.error({ err: (err as Error).message }, 'coordinator tick failed'))
      .finally(() => {
        busy = false;
        // A change seen during the tick may have been read before it happened: look again now.
        if (!stopped) timer = setTimeout(loop, wakeAgain ? 0 : (deps.tickMs ?? 500));
      });
  }

  /** Runs a tick now (or right after the one running) instead of waiting for the timer. */
  function wake(): void {
    if (stopped || (!timer && !busy)) return; // not started, or stopped
    if (busy) {
      wakeAgain = true;
      return;
    }
    clearTimeout(timer);
    timer = setTimeout(loop, 0);
  }

  return {
    /** Runs one pass over all migrations (tests call this directly). */
    tick,
    wake,
    start(): void {
      stopped = false;
      loop();
    },
    async stop(): Promise<void> {
      stopped = true;
      if (timer) clearTimeout(timer);
      for (const p of passes.values()) p.abort.abort();
      await ticking;
      await Promise.all([...passes.values()].map((p) => p.done));
      for (const id of passes.keys()) await enumerator.releaseLease(id);
    },
  };
}

export type Coordinator = ReturnType<typeof createCoordinator>;
