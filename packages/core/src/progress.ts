/** Progress math: ratio, rate, ETA and failure rate are derived from counters, never stored. */
import { COUNTER_FIELDS, OUTCOME_COUNTER_FIELDS, emptyCounters, type Counters } from './migration.js';

/** Sums the counters of every source into one set of totals. */
export function summarize(countersBySource: Readonly<Record<string, Readonly<Counters>>> | readonly Readonly<Counters>[]): Counters {
  const total = emptyCounters();
  for (const c of Object.values(countersBySource)) {
    for (const f of COUNTER_FIELDS) total[f] += c[f];
  }
  return total;
}

/** Items with an outcome: the sum of every outcome counter. */
export function processed(c: Readonly<Counters>): number {
  return OUTCOME_COUNTER_FIELDS.reduce((n, f) => n + c[f], 0);
}

/** Items discovered but without an outcome yet (never negative). */
export function remaining(c: Readonly<Counters>): number {
  return Math.max(0, c.discovered - processed(c));
}

/** processed / discovered in [0, 1]; 0 before anything is discovered. */
export function progressRatio(c: Readonly<Counters>): number {
  if (c.discovered <= 0) return 0;
  return Math.min(1, processed(c) / c.discovered);
}

/** A point of the processed count over time (`t` in milliseconds). */
export interface ProgressSample {
  readonly t: number;
  readonly processed: number;
}

/**
 * Items per second between two samples, in either order; 0 when they are at the same time or
 * the count went down (counters reset after a lost Redis).
 */
export function ratePerSecond(a: ProgressSample, b: ProgressSample): number {
  const [first, last] = a.t <= b.t ? [a, b] : [b, a];
  const seconds = (last.t - first.t) / 1000;
  const items = last.processed - first.processed;
  if (seconds <= 0 || items <= 0) return 0;
  return items / seconds;
}

/** Seconds to process `remainingItems` at `ratePerSec`; 0 when nothing remains, null when the rate is 0 (unknown). */
export function etaSeconds(remainingItems: number, ratePerSec: number): number | null {
  if (remainingItems <= 0) return 0;
  if (!(ratePerSec > 0) || !Number.isFinite(ratePerSec)) return null;
  return Math.ceil(remainingItems / ratePerSec);
}

/** failed / processed in [0, 1]; 0 before anything is processed. Accepts one source's counters or several. */
export function failureRate(c: Readonly<Counters> | readonly Readonly<Counters>[]): number {
  const total = isList(c) ? summarize(c) : c;
  const p = processed(total);
  return p === 0 ? 0 : total.failed / p;
}

function isList(c: Readonly<Counters> | readonly Readonly<Counters>[]): c is readonly Readonly<Counters>[] {
  return Array.isArray(c);
}
