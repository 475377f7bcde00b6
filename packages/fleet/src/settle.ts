/**
 * Settles a verified migration: computes its gate and moves it to `ready` or `blocked`. The
 * coordinator decides to settle on a record it read a moment ago; by the time the gate is read,
 * `rekey verify` (or another coordinator) may have started a new verify round. Settling then
 * would judge the new round by a pass that has not run, move `verifying` to `blocked`, and, since
 * only a `verifying` migration runs its verify pass, leave it there for good. So the record is read
 * again, settled only if it is still in the state and verify round the decision was made on, and
 * the state change itself is conditional on both (WATCH/MULTI in the store).
 *
 * @example
 * const settle = createSettler({ store, gateOf, actor, onGate: (m, g) => metrics.gateReady.set(...) });
 * await settle(migration);
 */
import type { Migration } from '@rekey/core';
import type { GateResult } from './gate.js';
import type { ProgressStore } from './store.js';

export interface SettlerDeps {
  readonly store: Pick<ProgressStore, 'get' | 'transition' | 'patch'>;
  readonly gateOf: (m: Migration) => Promise<GateResult>;
  /** Who writes the state change. */
  readonly actor: string;
  /** Sees every gate computed (the `rekey_gate_ready` metric). */
  readonly onGate?: (m: Migration, gate: GateResult) => void;
  /** Runs when the gate is ready and the migration asked to finalize itself. */
  readonly autoFinalize?: (m: Migration) => Promise<void>;
}

/** Returns `settle(m)`; a no-op when the migration has moved on from `m` (another state or verify round). */
export function createSettler(deps: SettlerDeps): (m: Migration) => Promise<void> {
  const { store, gateOf, actor } = deps;
  return async function settle(seen: Migration): Promise<void> {
    const m = await store.get(seen.id);
    if (!m || m.state !== seen.state || m.verifyRound !== seen.verifyRound) return;
    // A verifying migration settles only once its verify pass has finished.
    if (m.state === 'verifying' && !m.verifiedAt) return;
    if (m.state !== 'verifying' && m.state !== 'ready' && m.state !== 'blocked') return;
    const gate = await gateOf(m);
    deps.onGate?.(m, gate);
    const reason = gate.conditions.filter((c) => !c.ok).map((c) => c.detail).join('; ');
    const same = { actor, from: [m.state], ifVerifyRound: m.verifyRound } as const;
    if (gate.ready && m.state !== 'ready') {
      await store.transition(m.id, 'ready', same);
    } else if (!gate.ready && m.state !== 'blocked') {
      await store.transition(m.id, 'blocked', { ...same, reason });
    } else if (!gate.ready && m.reason !== reason) {
      await store.patch(m.id, { reason });
    }
    if (gate.ready && m.spec.options.autoFinalize) await deps.autoFinalize?.(m);
  };
}
