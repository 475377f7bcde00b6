import { describe, expect, it } from 'vitest';
import { InvalidTransitionError } from '../src/errors.js';
import { MIGRATION_STATES, assertTransition, canTransition, isTerminal, nextStates, resumeTarget, type MigrationState } from '../src/state.js';

const ALLOWED: readonly [MigrationState, MigrationState][] = [
  ['created', 'enumerating'],
  ['enumerating', 'running'],
  ['running', 'verifying'],
  ['verifying', 'ready'],
  ['verifying', 'blocked'],
  ['blocked', 'verifying'],
  ['blocked', 'ready'],
  ['ready', 'blocked'],
  ['ready', 'verifying'],
  ['ready', 'finalized'],
  ['enumerating', 'paused'],
  ['running', 'paused'],
  ['verifying', 'paused'],
  ['blocked', 'paused'],
  ['ready', 'paused'],
  ['paused', 'enumerating'],
  ['paused', 'running'],
  ['paused', 'verifying'],
];

const NON_TERMINAL: readonly MigrationState[] = ['created', 'enumerating', 'running', 'verifying', 'ready', 'blocked', 'paused'];

describe('migration state machine', () => {
  it.each(ALLOWED)('allows %s -> %s', (from, to) => {
    expect(canTransition(from, to)).toBe(true);
    expect(() => assertTransition(from, to)).not.toThrow();
  });

  it.each(NON_TERMINAL.flatMap((s) => [[s, 'cancelled'] as const, [s, 'failed'] as const]))('allows %s -> %s', (from, to) => {
    expect(canTransition(from, to)).toBe(true);
  });

  it('allows exactly the listed transitions, and nothing else without force', () => {
    const expected = new Set([...ALLOWED.map(([f, t]) => `${f}>${t}`), ...NON_TERMINAL.flatMap((s) => [`${s}>cancelled`, `${s}>failed`])]);
    const actual = new Set(MIGRATION_STATES.flatMap((f) => nextStates(f).map((t) => `${f}>${t}`)));

    expect(actual).toEqual(expected);
  });

  it.each([
    ['created', 'running'],
    ['created', 'paused'],
    ['enumerating', 'verifying'],
    ['running', 'ready'],
    ['running', 'finalized'],
    ['verifying', 'finalized'],
    ['paused', 'ready'],
    ['paused', 'finalized'],
    ['finalized', 'verifying'],
    ['cancelled', 'running'],
    ['failed', 'cancelled'],
    ['ready', 'ready'],
  ] as const)('refuses %s -> %s with an InvalidTransitionError', (from, to) => {
    expect(canTransition(from, to)).toBe(false);
    expect(() => assertTransition(from, to)).toThrow(InvalidTransitionError);
  });

  it('finalizes a blocked migration only when forced', () => {
    expect(() => assertTransition('blocked', 'finalized')).toThrow('cannot move a migration from blocked to finalized: the gate is not ready (finalize with force to override)');
    expect(() => assertTransition('blocked', 'finalized', { force: true })).not.toThrow();
  });

  it('force does not open any other transition', () => {
    expect(canTransition('running', 'finalized', { force: true })).toBe(false);
    expect(canTransition('finalized', 'running', { force: true })).toBe(false);
  });

  it('resumes a paused migration only to the state it was paused from', () => {
    expect(canTransition('paused', 'running', { pausedFrom: 'running' })).toBe(true);
    expect(() => assertTransition('paused', 'enumerating', { pausedFrom: 'running' })).toThrow(
      'cannot move a migration from paused to enumerating: it was paused from running and resumes to running',
    );
  });

  it('resumes a migration paused while ready or blocked by verifying again', () => {
    expect(resumeTarget('ready')).toBe('verifying');
    expect(resumeTarget('blocked')).toBe('verifying');
    expect(resumeTarget('enumerating')).toBe('enumerating');
    expect(canTransition('paused', 'verifying', { pausedFrom: 'ready' })).toBe(true);
  });

  it('names both states in the error', () => {
    const err = (() => {
      try {
        assertTransition('cancelled', 'running');
      } catch (e) {
        return e as InvalidTransitionError;
      }
      throw new Error('expected a throw');
    })();

    expect(err).toMatchObject({ code: 'invalid-transition', from: 'cancelled', to: 'running', name: 'InvalidTransitionError' });
    expect(err.message).toBe('cannot move a migration from cancelled to running: cancelled is a final state');
  });

  it('knows the terminal states', () => {
    expect(MIGRATION_STATES.filter(isTerminal)).toEqual(['finalized', 'cancelled', 'failed']);
  });
});
