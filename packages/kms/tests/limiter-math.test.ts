import { describe, expect, it } from 'vitest';
import { aimdUpdate, capacity, fairShare, grantStep, increaseStep, initialState, maxGrant, refill, type LimiterParams, type LimiterState } from '../src/limiter-math.js';

const P: LimiterParams = { budgetRps: 100, minRps: 5, decrease: 0.5, increaseRps: 10, increasePercent: 1, windowMs: 1000, burstMs: 100, activeMs: 3000 };
const T0 = 1_700_000_000_000;

describe('aimdUpdate', () => {
  const s = { rate: 100, lastDecreaseMs: 0, lastIncreaseMs: T0 };

  it('cuts the rate by the decrease factor on a throttle', () => {
    const out = aimdUpdate(s, { nowMs: T0, throttled: true, succeeded: false }, P);
    expect(out.rate).toBe(50);
    expect(out.lastDecreaseMs).toBe(T0);
  });

  it('cuts at most once per window however many throttles arrive', () => {
    let st = aimdUpdate(s, { nowMs: T0, throttled: true, succeeded: false }, P);
    for (let t = 1; t < 1000; t += 50) st = aimdUpdate(st, { nowMs: T0 + t, throttled: true, succeeded: false }, P);
    expect(st.rate).toBe(50);
    st = aimdUpdate(st, { nowMs: T0 + 1000, throttled: true, succeeded: false }, P);
    expect(st.rate).toBe(25);
  });

  it('never goes below minRps', () => {
    let st = { ...s, rate: 6 };
    st = aimdUpdate(st, { nowMs: T0, throttled: true, succeeded: false }, P);
    expect(st.rate).toBe(5);
  });

  it('raises the rate by increaseRps per second of successes, capped at the budget', () => {
    const low = { rate: 40, lastDecreaseMs: T0 - 5000, lastIncreaseMs: T0 };
    const out = aimdUpdate(low, { nowMs: T0 + 500, throttled: false, succeeded: true }, P);
    expect(out.rate).toBeCloseTo(45, 9);
    const high = aimdUpdate({ ...low, rate: 99 }, { nowMs: T0 + 1000, throttled: false, succeeded: true }, P);
    expect(high.rate).toBe(100);
  });

  it('raises the rate by increasePercent of the budget per second where that is more than increaseRps', () => {
    const big = { ...P, budgetRps: 10_000, increasePercent: 1 };
    const cut = { rate: 7000, lastDecreaseMs: T0 - 5000, lastIncreaseMs: T0 };
    // 1% of 10,000 = 100 rps per second, not increaseRps' 10.
    expect(aimdUpdate(cut, { nowMs: T0 + 500, throttled: false, succeeded: true }, big).rate).toBeCloseTo(7050, 9);
    expect(increaseStep(big)).toBe(100);
    expect(increaseStep({ ...big, budgetRps: 500 })).toBe(10);
    expect(increaseStep({ ...big, increasePercent: 0 })).toBe(10);
    // Thirty one-second steps make good a 0.7 cut.
    let st = cut;
    for (let i = 1; i <= 30; i++) st = aimdUpdate(st, { nowMs: T0 + i * 1000, throttled: false, succeeded: true }, big);
    expect(st.rate).toBe(10_000);
  });

  it('credits at most one second of increase after an idle spell', () => {
    const low = { rate: 40, lastDecreaseMs: 0, lastIncreaseMs: T0 };
    expect(aimdUpdate(low, { nowMs: T0 + 60_000, throttled: false, succeeded: true }, P).rate).toBeCloseTo(50, 9);
  });

  it('does not raise the rate within the window after a decrease', () => {
    const st = { rate: 40, lastDecreaseMs: T0, lastIncreaseMs: T0 };
    expect(aimdUpdate(st, { nowMs: T0 + 500, throttled: false, succeeded: true }, P).rate).toBe(40);
  });

  it('does not raise the rate without successes', () => {
    const st = { rate: 40, lastDecreaseMs: 0, lastIncreaseMs: T0 };
    expect(aimdUpdate(st, { nowMs: T0 + 500, throttled: false, succeeded: false }, P).rate).toBe(40);
  });

  it('brings a rate above a lowered budget down to it', () => {
    expect(aimdUpdate(s, { nowMs: T0, throttled: false, succeeded: false }, { ...P, budgetRps: 30 }).rate).toBe(30);
  });

  it('lets a budget below minRps win (never above the budget)', () => {
    expect(aimdUpdate(s, { nowMs: T0, throttled: true, succeeded: false }, { ...P, budgetRps: 3 }).rate).toBe(3);
  });
});

describe('bucket helpers', () => {
  it('capacity is burstMs of the rate, at least one token', () => {
    expect(capacity(1000, 100)).toBe(100);
    expect(capacity(2, 100)).toBe(1);
  });

  it('maxGrant is about 50 ms of the rate, between 1 and the limit', () => {
    expect(maxGrant(10)).toBe(1);
    expect(maxGrant(200)).toBe(10);
    expect(maxGrant(2000)).toBe(50);
    expect(maxGrant(2000, 20)).toBe(20);
  });

  it('refill adds rate * elapsed and stops at the capacity', () => {
    expect(refill(0, 100, 100, 50)).toBe(10);
    expect(refill(45, 1000, 100, 50)).toBe(50);
    expect(refill(3, -5, 100, 50)).toBe(3);
  });

  it('fairShare splits by weight', () => {
    expect(fairShare(100, 1, 4)).toBe(25);
    expect(fairShare(100, 3, 4)).toBe(75);
  });
});

describe('grantStep', () => {
  it('starts with a full bucket at the budget and grants from it', () => {
    const r = grantStep(undefined, { nowMs: T0, requested: 4, throttled: false, succeeded: false }, P);
    expect(r.granted).toBe(4);
    expect(r.state.rate).toBe(100);
    expect(r.state.tokens).toBe(capacity(100, P.burstMs) - 4);
  });

  it('grants no more than the bucket holds and says how long to wait', () => {
    let st: LimiterState = initialState(P, T0);
    const first = grantStep(st, { nowMs: T0, requested: 50, throttled: false, succeeded: false }, P);
    expect(first.granted).toBe(10);
    st = first.state;
    const second = grantStep(st, { nowMs: T0, requested: 1, throttled: false, succeeded: false }, P);
    expect(second.granted).toBe(0);
    expect(second.waitMs).toBeCloseTo(10, 6);
  });

  it('over any span grants at most rate * t + capacity', () => {
    let st: LimiterState | undefined;
    let granted = 0;
    for (let t = 0; t <= 2000; t += 7) {
      const r = grantStep(st, { nowMs: T0 + t, requested: 5, throttled: false, succeeded: false }, P);
      granted += r.granted;
      st = r.state;
    }
    expect(granted).toBeLessThanOrEqual(100 * 2.0 + capacity(100, P.burstMs));
    expect(granted).toBeGreaterThanOrEqual(100 * 2.0 - 5);
  });

  it('shares the rate by weight between two busy migrations', () => {
    let st: LimiterState | undefined;
    const got = { a: 0, b: 0 };
    for (let t = 0; t <= 5000; t += 5) {
      for (const [id, weight] of [['a', 1], ['b', 3]] as const) {
        const r = grantStep(st, { nowMs: T0 + t, requested: 5, throttled: false, succeeded: false, migration: { id, weight } }, P);
        got[id] += r.granted;
        st = r.state;
      }
    }
    const ratio = got.b / got.a;
    expect(ratio).toBeGreaterThan(2.2);
    expect(ratio).toBeLessThan(4);
    expect(got.a + got.b).toBeLessThanOrEqual(100 * 5 + capacity(100, P.burstMs) * 3);
  });

  it('lets a lone migration use the whole rate (work-conserving)', () => {
    let st: LimiterState | undefined;
    let got = 0;
    // A second migration registered once, then went quiet.
    st = grantStep(st, { nowMs: T0, requested: 1, throttled: false, succeeded: false, migration: { id: 'idle', weight: 1 } }, P).state;
    for (let t = 0; t <= 5000; t += 5) {
      const r = grantStep(st, { nowMs: T0 + t, requested: 5, throttled: false, succeeded: false, migration: { id: 'busy', weight: 1 } }, P);
      got += r.granted;
      st = r.state;
    }
    expect(got).toBeGreaterThan(100 * 5 * 0.85);
    expect(st?.migrations['idle']).toBeUndefined();
  });

  it('a throttle lowers the rate the bucket refills at', () => {
    let st = grantStep(undefined, { nowMs: T0, requested: 100, throttled: false, succeeded: false }, P).state;
    st = grantStep(st, { nowMs: T0 + 1, requested: 0, throttled: true, succeeded: false }, P).state;
    expect(st.rate).toBe(50);
    let granted = 0;
    for (let t = 2; t <= 1001; t++) {
      const r = grantStep(st, { nowMs: T0 + t, requested: 10, throttled: false, succeeded: false }, P);
      granted += r.granted;
      st = r.state;
    }
    expect(granted).toBeLessThanOrEqual(50 + capacity(50, P.burstMs));
  });
});
