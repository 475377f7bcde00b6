import { ItemError, MigrationFatalError, RetryableError } from '@rekey/core';
import { describe, expect, it } from 'vitest';
import { KmsGatewayError } from '../src/errors.js';
import { nextDelay, resolveRetryPolicy, retry, type RetryAttempt } from '../src/retry.js';

describe('nextDelay (decorrelated jitter)', () => {
  it('stays within [base, min(cap, previous * 3)] for any random draw', () => {
    const base = 50;
    const cap = 5000;
    let previous = base;
    for (let i = 0; i < 2000; i++) {
      const r = (i * 7919) % 1000 / 1000;
      const d = nextDelay(previous, base, cap, () => r);
      expect(d).toBeGreaterThanOrEqual(base);
      expect(d).toBeLessThanOrEqual(Math.min(cap, previous * 3));
      previous = d;
    }
  });

  it('is base when random draws 0 and previous * 3 when it draws nearly 1', () => {
    expect(nextDelay(100, 50, 5000, () => 0)).toBe(50);
    expect(nextDelay(100, 50, 5000, () => 0.999999)).toBeCloseTo(300, 2);
  });

  it('never exceeds the cap', () => {
    expect(nextDelay(10_000, 50, 2000, () => 0.9)).toBe(2000);
  });
});

describe('retry', () => {
  it('retries RetryableError until success and reports each retry', async () => {
    const seen: RetryAttempt[] = [];
    let calls = 0;
    const out = await retry(
      async () => {
        calls++;
        if (calls < 3) throw new RetryableError('ThrottlingException', 'slow down');
        return 'done';
      },
      { baseMs: 1, capMs: 2, onRetry: (i) => seen.push(i) },
    );
    expect(out).toBe('done');
    expect(calls).toBe(3);
    expect(seen.map((s) => s.attempt)).toEqual([1, 2]);
    for (const s of seen) expect(s.delayMs).toBeGreaterThanOrEqual(1);
  });

  it('throws the last RetryableError after maxAttempts', async () => {
    let calls = 0;
    const err = await retry(
      async () => {
        calls++;
        throw new RetryableError('KMSInternalException', `attempt ${calls}`);
      },
      { maxAttempts: 4, baseMs: 1, capMs: 1 },
    ).catch((e: unknown) => e);
    expect(calls).toBe(4);
    expect(err).toBeInstanceOf(RetryableError);
    expect((err as Error).message).toBe('attempt 4');
  });

  it.each([
    ['an ItemError', new ItemError('InvalidCiphertextException', 'bad', { outcome: 'failed' })],
    ['a MigrationFatalError', new MigrationFatalError('AccessDeniedException', 'denied')],
    ['a plain Error', new Error('bug')],
  ])('does not retry %s', async (_label, thrown) => {
    let calls = 0;
    const err = await retry(
      async () => {
        calls++;
        throw thrown;
      },
      { baseMs: 1, capMs: 1 },
    ).catch((e: unknown) => e);
    expect(calls).toBe(1);
    expect(err).toBe(thrown);
  });

  it('stops waiting and throws the abort reason when the signal aborts', async () => {
    const ac = new AbortController();
    let calls = 0;
    const reason = new Error('shutting down');
    const p = retry(
      async () => {
        calls++;
        throw new RetryableError('ThrottlingException', 'slow down');
      },
      { baseMs: 60_000, capMs: 60_000, signal: ac.signal, onRetry: () => setImmediate(() => ac.abort(reason)) },
    );
    await expect(p).rejects.toBe(reason);
    expect(calls).toBe(1);
  });

  it('does not call fn when the signal is already aborted', async () => {
    const ac = new AbortController();
    ac.abort(new Error('gone'));
    let calls = 0;
    await expect(
      retry(async () => {
        calls++;
      }, { signal: ac.signal }),
    ).rejects.toThrow('gone');
    expect(calls).toBe(0);
  });

  it('rejects a policy with maxAttempts < 1 or cap below base', () => {
    expect(() => resolveRetryPolicy({ maxAttempts: 0 })).toThrow(KmsGatewayError);
    expect(() => resolveRetryPolicy({ baseMs: 100, capMs: 10 })).toThrow(/baseMs <= capMs/);
  });
});
