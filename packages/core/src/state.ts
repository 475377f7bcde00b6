/** The migration state machine: every state change in the fleet is checked here. */
import { InvalidTransitionError } from './errors.js';

/** All migration states, in lifecycle order. */
export const MIGRATION_STATES = [
  'created',
  'enumerating',
  'running',
  'verifying',
  'ready',
  'blocked',
  'finalized',
  'paused',
  'cancelled',
  'failed',
] as const;

/** Where a migration is in its lifecycle. */
export type MigrationState = (typeof MIGRATION_STATES)[number];

/** The states a paused migration can return to (it resumes where it was paused). */
export type PausableState = 'enumerating' | 'running' | 'verifying';

const TERMINAL: ReadonlySet<MigrationState> = new Set(['finalized', 'cancelled', 'failed']);

/**
 * The allowed transitions, apart from the ones every non-terminal state has (`cancelled`,
 * `failed`) and the forced `blocked -> finalized`.
 */
const TRANSITIONS: Readonly<Record<MigrationState, readonly MigrationState[]>> = {
  created: ['enumerating'],
  enumerating: ['running', 'paused'],
  running: ['verifying', 'paused'],
  verifying: ['ready', 'blocked', 'paused'],
  // blocked -> verifying re-runs the verify pass after the blockers were dealt with.
  blocked: ['verifying', 'ready', 'paused'],
  // ready -> blocked: a condition of the gate stopped holding (e.g. new old-key use).
  ready: ['blocked', 'verifying', 'finalized', 'paused'],
  paused: ['enumerating', 'running', 'verifying'],
  finalized: [],
  cancelled: [],
  failed: [],
};

/** Options of a transition check. */
export interface TransitionOptions {
  /** The operator forces finalize past a gate that isn't ready (`blocked -> finalized`). Audited as forced. */
  readonly force?: boolean;
  /** For `paused -> x`: the state the migration was paused from; x must be its {@link resumeTarget}. */
  readonly pausedFrom?: MigrationState;
}

/** True for states a migration never leaves. */
export function isTerminal(state: MigrationState): boolean {
  return TERMINAL.has(state);
}

function whyNot(from: MigrationState, to: MigrationState, opts: TransitionOptions): string | null {
  if (isTerminal(from)) return `${from} is a final state`;
  if (to === 'cancelled' || to === 'failed') return null;
  if (from === 'blocked' && to === 'finalized') return opts.force ? null : 'the gate is not ready (finalize with force to override)';
  if (!TRANSITIONS[from].includes(to)) return 'not an allowed transition';
  if (from === 'paused' && opts.pausedFrom !== undefined && resumeTarget(opts.pausedFrom) !== to) {
    return `it was paused from ${opts.pausedFrom} and resumes to ${resumeTarget(opts.pausedFrom)}`;
  }
  return null;
}

/** True when a migration may move from `from` to `to`. */
export function canTransition(from: MigrationState, to: MigrationState, opts: TransitionOptions = {}): boolean {
  return whyNot(from, to, opts) === null;
}

/**
 * Throws unless a migration may move from `from` to `to`.
 *
 * @throws InvalidTransitionError naming both states and the reason.
 */
export function assertTransition(from: MigrationState, to: MigrationState, opts: TransitionOptions = {}): void {
  const why = whyNot(from, to, opts);
  if (why !== null) throw new InvalidTransitionError(from, to, why);
}

/** The states a migration in `from` may move to (with `force`, `blocked` may also go to `finalized`). */
export function nextStates(from: MigrationState, opts: TransitionOptions = {}): MigrationState[] {
  return MIGRATION_STATES.filter((to) => canTransition(from, to, opts));
}

/** True when `s` is a state a migration can be paused from and resumed to. */
export function isPausable(s: MigrationState): s is PausableState {
  return s === 'enumerating' || s === 'running' || s === 'verifying';
}

/**
 * The state a migration paused from `pausedFrom` resumes to. A migration paused while ready or
 * blocked resumes to `verifying`, because data may have changed while it was paused.
 */
export function resumeTarget(pausedFrom: MigrationState): PausableState {
  return isPausable(pausedFrom) ? pausedFrom : 'verifying';
}
