import { describe, expect, it } from 'vitest';
import { emptyCounters, parseCounters, type Counters } from '../src/migration.js';
import { etaSeconds, failureRate, processed, progressRatio, ratePerSecond, remaining, summarize } from '../src/progress.js';

const counters = (over: Partial<Counters>): Counters => ({ ...emptyCounters(), ...over });

describe('progress math', () => {
  it('processed sums every outcome and nothing else', () => {
    const c = counters({ discovered: 100, reencrypted: 10, 'already-current': 2, 'not-in-scope': 3, gone: 4, conflict: 5, failed: 6, batchesDone: 99, verifyChecked: 50 });

    expect(processed(c)).toBe(30);
    expect(remaining(c)).toBe(70);
  });

  it('summarize adds every field across sources', () => {
    const total = summarize({ a: counters({ discovered: 3, failed: 1 }), b: counters({ discovered: 4, reencrypted: 2, verifyOldKey: 1 }) });

    expect(total).toEqual(counters({ discovered: 7, failed: 1, reencrypted: 2, verifyOldKey: 1 }));
    expect(summarize({})).toEqual(emptyCounters());
  });

  it('progress ratio is 0 before discovery and capped at 1', () => {
    expect(progressRatio(counters({}))).toBe(0);
    expect(progressRatio(counters({ discovered: 0, reencrypted: 5 }))).toBe(0);
    expect(progressRatio(counters({ discovered: 4, reencrypted: 1 }))).toBe(0.25);
    // Redelivered batches after a crash can count an item twice before dedupe; the bar never passes 100%.
    expect(progressRatio(counters({ discovered: 4, reencrypted: 6 }))).toBe(1);
    expect(remaining(counters({ discovered: 4, reencrypted: 6 }))).toBe(0);
  });

  it('rate comes from two samples in either order', () => {
    expect(ratePerSecond({ t: 1_000, processed: 100 }, { t: 3_000, processed: 300 })).toBe(100);
    expect(ratePerSecond({ t: 3_000, processed: 300 }, { t: 1_000, processed: 100 })).toBe(100);
  });

  it('rate is 0 for samples at the same time or a count that went down', () => {
    expect(ratePerSecond({ t: 1_000, processed: 1 }, { t: 1_000, processed: 5 })).toBe(0);
    expect(ratePerSecond({ t: 1_000, processed: 50 }, { t: 2_000, processed: 10 })).toBe(0);
  });

  it('eta is null at rate 0, 0 when nothing remains, and rounded up otherwise', () => {
    expect(etaSeconds(100, 0)).toBeNull();
    expect(etaSeconds(100, Number.NaN)).toBeNull();
    expect(etaSeconds(0, 0)).toBe(0);
    expect(etaSeconds(10, 3)).toBe(4);
  });

  it('failure rate is failed / processed, for one source or several', () => {
    expect(failureRate(counters({}))).toBe(0);
    expect(failureRate(counters({ reencrypted: 3, failed: 1 }))).toBe(0.25);
    expect(failureRate([counters({ reencrypted: 9 }), counters({ failed: 1 })])).toBe(0.1);
    expect(failureRate([])).toBe(0);
  });
});

describe('parseCounters', () => {
  it('reads a Redis hash, absent fields as 0', () => {
    expect(parseCounters({ discovered: '12', failed: '1' })).toEqual(counters({ discovered: 12, failed: 1 }));
  });

  it('refuses a value that is not a non-negative integer', () => {
    expect(() => parseCounters({ gone: '-1' })).toThrow('counter gone: "-1" is not a non-negative integer');
    expect(() => parseCounters({ gone: 'x' })).toThrow(RangeError);
  });
});
