/**
 * The limiter's math as pure functions. `lua/acquire-1.lua` runs the same steps inside Redis;
 * this TypeScript model is what the unit tests pin down, and an integration test checks that
 * the script and the model agree step by step.
 */

/** Settings of one grant step, as the script receives them in ARGV. */
export interface LimiterParams {
  /** The budget in force (the stored override, else the configured budget), in requests/s. */
  budgetRps: number;
  /** The rate AIMD never goes below (unless the budget itself is lower). */
  minRps: number;
  /** Multiplicative decrease factor on a throttle, in (0, 1). */
  decrease: number;
  /** Additive increase, in requests/s per second of successful calls (the floor of the step). */
  increaseRps: number;
  /** Additive increase as a percentage of the budget per second; the larger of the two applies. */
  increasePercent: number;
  /** At most one decrease per window; no increase within a window after a decrease. */
  windowMs: number;
  /** Bucket capacity, in milliseconds of the current rate. */
  burstMs: number;
  /** A migration that asked for no token for this long no longer holds a share. */
  activeMs: number;
}

/** One migration's fairness slot. */
export interface MigrationSlot {
  weight: number;
  /** Server time of its last request. */
  seenMs: number;
  /** Its own bucket, refilled at its share of the rate. */
  tokens: number;
  ts: number;
}

/** The shared state kept in the limiter's Redis hash. */
export interface LimiterState {
  /** Current AIMD rate, requests/s. */
  rate: number;
  /** Tokens in the fleet-wide bucket. */
  tokens: number;
  /** Server time the bucket was last refilled. */
  ts: number;
  lastDecreaseMs: number;
  lastIncreaseMs: number;
  migrations: Record<string, MigrationSlot>;
}

/** One request of a process to the shared limiter. */
export interface GrantRequest {
  /** Server time (the script reads `TIME`). */
  nowMs: number;
  /** Tokens wanted (0 only reports throttles/successes). */
  requested: number;
  /** The process saw a throttle since its last request. */
  throttled: boolean;
  /** The process saw a successful call since its last request. */
  succeeded: boolean;
  /** The migration asking, for the fair share; absent means the request is not shared out. */
  migration?: { id: string; weight: number };
}

/** What a grant step returns. */
export interface GrantResult {
  state: LimiterState;
  granted: number;
  /** How long until at least one more token can be granted to this requester (0: now). */
  waitMs: number;
}

/** The largest step of additive increase credited at once, so an idle spell is not a jump. */
export const MAX_INCREASE_STEP_MS = 1000;

/** Bucket capacity at `rate`: `burstMs` worth of tokens, never less than one. */
export function capacity(rate: number, burstMs: number): number {
  return Math.max(1, (rate * burstMs) / 1000);
}

/**
 * The largest grant a process asks for at `rate`: about 50 ms of the rate, between 1 and 50, so a
 * busy process makes one Redis call per ~50 KMS calls and no process hoards much of a second.
 */
export function maxGrant(rate: number, limit = 50): number {
  return Math.max(1, Math.min(limit, Math.floor(rate / 20)));
}

/** Adds the tokens earned over `elapsedMs` at `rate`, up to `cap`. */
export function refill(tokens: number, elapsedMs: number, rate: number, cap: number): number {
  return Math.min(cap, tokens + (Math.max(0, elapsedMs) * rate) / 1000);
}

/**
 * One AIMD update. A throttle cuts the rate by `decrease` at most once per window; a success
 * outside that window raises it, per second since the last update (at most
 * {@link MAX_INCREASE_STEP_MS} of credit), by {@link increaseStep}. The rate stays within
 * [min(minRps, budget), budget].
 */
export function aimdUpdate(
  s: Pick<LimiterState, 'rate' | 'lastDecreaseMs' | 'lastIncreaseMs'>,
  ev: { nowMs: number; throttled: boolean; succeeded: boolean },
  p: Pick<LimiterParams, 'budgetRps' | 'minRps' | 'decrease' | 'increaseRps' | 'increasePercent' | 'windowMs'>,
): Pick<LimiterState, 'rate' | 'lastDecreaseMs' | 'lastIncreaseMs'> {
  const floor = Math.min(p.minRps, p.budgetRps);
  let rate = Math.max(floor, Math.min(s.rate, p.budgetRps));
  let lastDecreaseMs = s.lastDecreaseMs;
  const settled = ev.nowMs - s.lastDecreaseMs >= p.windowMs;
  if (ev.throttled) {
    if (settled) {
      rate = Math.max(floor, rate * p.decrease);
      lastDecreaseMs = ev.nowMs;
    }
  } else if (ev.succeeded && settled) {
    const creditMs = Math.min(MAX_INCREASE_STEP_MS, Math.max(0, ev.nowMs - s.lastIncreaseMs));
    rate = Math.min(p.budgetRps, rate + (increaseStep(p) * creditMs) / 1000);
  }
  return { rate, lastDecreaseMs, lastIncreaseMs: ev.nowMs };
}

/**
 * The additive increase in requests/s per second: `increaseRps`, or `increasePercent` of the
 * budget when that is more, so that a cut is made good in about the same time at any budget
 * (with the defaults 5 rps and 1%: a 0.7 cut at 10,000 rps comes back in 30 s, not 10 minutes).
 */
export function increaseStep(p: Pick<LimiterParams, 'budgetRps' | 'increaseRps' | 'increasePercent'>): number {
  return Math.max(p.increaseRps, (p.budgetRps * p.increasePercent) / 100);
}

/** A fresh state: the full budget and a full bucket. */
export function initialState(p: LimiterParams, nowMs: number): LimiterState {
  return { rate: p.budgetRps, tokens: capacity(p.budgetRps, p.burstMs), ts: nowMs, lastDecreaseMs: 0, lastIncreaseMs: nowMs, migrations: {} };
}

/** A migration's share of `rate`: `rate * weight / sum(weights of active migrations)`. */
export function fairShare(rate: number, weight: number, totalWeight: number): number {
  return totalWeight > 0 ? (rate * weight) / totalWeight : rate;
}

/**
 * One grant step: refill, AIMD, fair share, grant. A migration may take beyond its own bucket
 * only the slack of the shared bucket above half its capacity, i.e. tokens that no other
 * migration is using (work-conserving without letting one migration starve the others).
 */
export function grantStep(prev: LimiterState | undefined, req: GrantRequest, p: LimiterParams): GrantResult {
  const now = req.nowMs;
  const s: LimiterState = prev
    ? { ...prev, migrations: Object.fromEntries(Object.entries(prev.migrations).map(([k, v]) => [k, { ...v }])) }
    : initialState(p, now);

  s.tokens = refill(s.tokens, now - s.ts, s.rate, capacity(s.rate, p.burstMs));
  s.ts = now;
  Object.assign(s, aimdUpdate(s, req, p));
  const cap = capacity(s.rate, p.burstMs);
  s.tokens = Math.min(s.tokens, cap);

  let allowed = s.tokens;
  let slot: MigrationSlot | undefined;
  let share = s.rate;
  if (req.migration) {
    const { id, weight } = req.migration;
    for (const [other, m] of Object.entries(s.migrations)) {
      if (other !== id && now - m.seenMs > p.activeMs) delete s.migrations[other];
    }
    const existing = s.migrations[id];
    let total = weight;
    for (const [other, m] of Object.entries(s.migrations)) if (other !== id) total += m.weight;
    share = fairShare(s.rate, weight, total);
    const mcap = capacity(share, p.burstMs);
    slot = existing
      ? { weight, seenMs: now, tokens: refill(existing.tokens, now - existing.ts, share, mcap), ts: now }
      : { weight, seenMs: now, tokens: mcap, ts: now };
    s.migrations[id] = slot;
    const slack = Math.max(0, s.tokens - cap / 2);
    allowed = Math.min(s.tokens, slot.tokens + slack);
  }

  const granted = Math.max(0, Math.min(req.requested, Math.floor(allowed)));
  s.tokens -= granted;
  if (slot) slot.tokens = Math.max(0, slot.tokens - granted);

  let waitMs = s.tokens >= 1 ? 0 : ((1 - s.tokens) * 1000) / s.rate;
  if (slot) {
    const slack = Math.max(0, s.tokens - cap / 2);
    if (slot.tokens + slack < 1) waitMs = Math.max(waitMs, ((1 - slot.tokens) * 1000) / share);
  }
  return { state: s, granted, waitMs };
}
