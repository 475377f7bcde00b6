import { describe, expect, it } from 'vitest';
import { emptyCounters, parseMigrationSpec, type Migration } from '@rekey/core';
import { computeGate, type GateInput, type OldKeyUsage } from '../src/gate.js';
import type { SourceCounters } from '../src/store.js';

const OLD = 'arn:aws:kms:us-east-1:000000000000:key/11111111-1111-4111-8111-111111111111';
const NEW = 'arn:aws:kms:us-east-1:000000000000:key/22222222-2222-4222-8222-222222222222';
const T0 = Date.parse('2026-01-01T10:00:00.000Z');
const at = (s: number) => new Date(T0 + s * 1000).toISOString();

function migration(over: Partial<Migration> = {}): Migration {
  const spec = parseMigrationSpec({ id: 'g', sources: [{ name: 'docs', kind: 's3-sse-kms', bucket: 'docs' }], from: [OLD], to: NEW });
  return {
    id: 'g',
    spec,
    state: 'verifying',
    keys: { from: [OLD], to: NEW, aliases: {} },
    createdAt: at(-100),
    updatedAt: at(0),
    enumeratedAt: at(-50),
    verifyStartedAt: at(0),
    verifyEnumeratedAt: at(1),
    verifiedAt: at(2),
    ...over,
  };
}

function counters(over: Partial<SourceCounters> = {}): Record<string, SourceCounters> {
  return {
    docs: {
      ...emptyCounters(),
      discovered: 10,
      reencrypted: 10,
      batchesEnqueued: 1,
      batchesDone: 1,
      verifyDiscovered: 10,
      verifyBatchesEnqueued: 1,
      verifyBatchesDone: 1,
      verifyChecked: 10,
      verifyCurrent: 10,
      ...over,
    } as SourceCounters,
  };
}

const quiet: OldKeyUsage = { blockers: [], readers: [], checkedAt: at(3), since: at(0) };

/** Every condition green; each test breaks exactly one thing. */
function input(over: Partial<GateInput> = {}): GateInput {
  return { migration: migration(), counters: counters(), acks: new Map(), failureIds: [], usage: quiet, usageMonitored: true, ...over };
}

const red = (i: GateInput) => computeGate(i).conditions.filter((c) => !c.ok).map((c) => c.name);

describe('computeGate', () => {
  it('is green when every condition holds', () => {
    const gate = computeGate(input());

    expect(gate.ready).toBe(true);
    expect(gate.conditions.map((c) => [c.name, c.ok])).toEqual([
      ['enumeration-complete', true],
      ['no-batches-pending', true],
      ['no-unacknowledged-failures', true],
      ['verify-clean', true],
      ['old-key-quiet', true],
    ]);
    expect(gate.warnings).toEqual([]);
  });

  it('is red while enumeration runs', () => {
    const i = input({ migration: migration({ state: 'enumerating', enumeratedAt: undefined, verifyStartedAt: undefined, verifiedAt: undefined }) });

    expect(computeGate(i).ready).toBe(false);
    expect(red(i)).toContain('enumeration-complete');
  });

  it('is red while a re-encrypt or verify batch is waiting or active', () => {
    const i = input({ counters: counters({ batchesEnqueued: 3, batchesDone: 1 }) });

    expect(red(i)).toEqual(['no-batches-pending']);
    expect(computeGate(i).conditions.find((c) => c.name === 'no-batches-pending')?.detail).toBe('2 re-encrypt and 0 verify batches are waiting or active');
  });

  it('is red with an unacknowledged failure and green once it is acknowledged', () => {
    const failing = input({ counters: counters({ reencrypted: 9, failed: 1 }), failureIds: ['1-0'] });

    expect(red(failing)).toEqual(['no-unacknowledged-failures']);
    expect(computeGate({ ...failing, acks: new Map([['1-0', 'known bad object']]) }).ready).toBe(true);
    expect(computeGate({ ...failing, acks: new Map([['*', 'all of them']]) }).ready).toBe(true);
  });

  it('counts failures beyond the capped failures stream as unacknowledged', () => {
    const i = input({ counters: counters({ reencrypted: 5, failed: 5 }), failureIds: ['1-0', '2-0'], acks: new Map([['1-0', 'x'], ['2-0', 'y']]) });

    expect(red(i)).toEqual(['no-unacknowledged-failures']);
  });

  it('is red when verify found items under the old key, or has not finished', () => {
    expect(red(input({ counters: counters({ verifyOldKey: 2, verifyCurrent: 8 }) }))).toEqual(['verify-clean']);
    expect(red(input({ migration: migration({ verifiedAt: undefined }) }))).toContain('verify-clean');
  });

  it('is red for encrypt-type use by another caller after verification started, naming the caller', () => {
    const usage: OldKeyUsage = {
      ...quiet,
      blockers: [{ key: OLD, operation: 'GenerateDataKey', caller: 'arn:aws:iam::000000000000:user/app (access key AKIAOTHERAPP000000001)', lastSeen: at(1), count: 3 }],
    };

    const gate = computeGate(input({ usage }));

    expect(gate.ready).toBe(false);
    expect(red(input({ usage }))).toEqual(['old-key-quiet']);
    expect(gate.conditions.find((c) => c.name === 'old-key-quiet')?.detail).toContain('GenerateDataKey by arn:aws:iam::000000000000:user/app (access key AKIAOTHERAPP000000001) (3x');
  });

  it('is red while a stretch of the window is unread by every look, naming it', () => {
    const usage: OldKeyUsage = { ...quiet, unread: [{ key: OLD, from: at(0), to: at(40) }] };

    const gate = computeGate(input({ usage }));

    expect(red(input({ usage }))).toEqual(['old-key-quiet']);
    expect(gate.conditions.find((c) => c.name === 'old-key-quiet')?.detail).toBe(
      `the usage monitor could not read every CloudTrail event of the old keys since verification started (more per look than it reads): ${OLD} from ${at(0)} to ${at(40)} unread`,
    );
  });

  it('shows Decrypt by another caller as a warning, not a blocker', () => {
    const usage: OldKeyUsage = { ...quiet, readers: [{ key: OLD, operation: 'Decrypt', caller: 'reporting-job', lastSeen: at(1), count: 7 }] };

    const gate = computeGate(input({ usage }));

    expect(gate.ready).toBe(true);
    expect(gate.warnings).toHaveLength(1);
    expect(gate.warnings[0]).toContain(`Decrypt of ${OLD} by reporting-job (7x`);
  });

  it('is red until the monitor has looked, and after a look that began before verify ended', () => {
    expect(red(input({ usage: null }))).toEqual(['old-key-quiet']);
    expect(red(input({ usage: { ...quiet, checkedAt: null } }))).toEqual(['old-key-quiet']);
    expect(red(input({ usage: { ...quiet, checkedAt: at(1) } }))).toEqual(['old-key-quiet']);
  });

  it('is red while the quiet window since verification started has not passed', () => {
    const i = input({ quietWindowSeconds: 300, usage: { ...quiet, checkedAt: at(120) } });

    expect(red(i)).toEqual(['old-key-quiet']);
    expect(computeGate(i).conditions.find((c) => c.name === 'old-key-quiet')?.detail).toMatch(/quiet window is 300 s .* watched for 120 s/);
    expect(computeGate({ ...i, usage: { ...quiet, checkedAt: at(301) } }).ready).toBe(true);
  });

  it('ignores usage checked for an earlier verify round', () => {
    const i = input({ usage: { ...quiet, since: at(-500), checkedAt: at(3) } });

    expect(computeGate(i).conditions.find((c) => c.name === 'old-key-quiet')?.detail).toBe('old-key usage has not been checked since verification restarted');
  });

  it('is red with the reason when the monitor could not look', () => {
    const i = input({ usage: { ...quiet, error: 'AccessDeniedException: not authorized to perform cloudtrail:LookupEvents' } });

    expect(computeGate(i).conditions.find((c) => c.name === 'old-key-quiet')?.detail).toContain('cloudtrail:LookupEvents');
    expect(computeGate(i).ready).toBe(false);
  });

  it('is green with a note when monitoring is off', () => {
    const gate = computeGate(input({ usage: null, usageMonitored: false }));

    expect(gate.ready).toBe(true);
    expect(gate.conditions.find((c) => c.name === 'old-key-quiet')?.detail).toBe('old-key usage monitoring is off');
  });
});
