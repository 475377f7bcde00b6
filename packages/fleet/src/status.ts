import { etaSeconds, type Migration } from '@rekey/core';
import type { GateResult, OldKeyUsage } from './gate.js';
import type { FailureRecord, ProgressStore, SourceCounters } from './store.js';

/** Per-source progress as the API, the status page and `rekey status` show it. */
export interface SourceStatus {
  readonly name: string;
  readonly kind: string;
  readonly counters: SourceCounters;
  readonly processed: number;
  readonly ratio: number;
}

/** Everything an operator needs at a glance; derived from counters, never stored. */
export interface MigrationStatus {
  readonly migration: Migration;
  readonly sources: readonly SourceStatus[];
  readonly totals: { discovered: number; processed: number; ratio: number; outcomes: Record<string, number> };
  /** Items per second over the last minute. */
  readonly ratePerSecond: number;
  readonly etaSeconds: number | null;
  /** Items processed per 5-second bucket over the last 10 minutes: [bucket start ms, items]. */
  readonly throughput: readonly [number, number][];
  readonly gate: GateResult;
  readonly latestFailures: readonly FailureRecord[];
  readonly usage: OldKeyUsage | null;
}

const OUTCOME_FIELDS = ['reencrypted', 'already-current', 'not-in-scope', 'gone', 'conflict', 'failed'] as const;

export function processedOf(c: SourceCounters): number {
  return OUTCOME_FIELDS.reduce((n, f) => n + c[f], 0);
}

export async function buildStatus(args: {
  migration: Migration;
  store: ProgressStore;
  gate: GateResult;
  usage: OldKeyUsage | null;
}): Promise<MigrationStatus> {
  const { migration: m, store } = args;
  const names = m.spec.sources.map((s) => s.name);
  const now = Date.now();
  const [counters, samples, failures] = await Promise.all([
    store.counters(m.id, names),
    store.samples(m.id, now - 10 * 60_000),
    store.failures(m.id, { limit: 20 }),
  ]);
  const sources = m.spec.sources.map((s) => {
    const c = counters[s.name]!;
    const processed = processedOf(c);
    return { name: s.name, kind: s.kind, counters: c, processed, ratio: c.discovered ? Math.min(1, processed / c.discovered) : 0 };
  });
  const discovered = sources.reduce((n, s) => n + s.counters.discovered, 0);
  const processed = sources.reduce((n, s) => n + s.processed, 0);
  const outcomes = Object.fromEntries(OUTCOME_FIELDS.map((f) => [f, sources.reduce((n, s) => n + s.counters[f], 0)]));
  const lastMinute = samples.filter(([t]) => t >= now - 60_000).reduce((n, [, k]) => n + k, 0);
  const firstSample = samples.find(([t]) => t >= now - 60_000)?.[0];
  const window = firstSample ? Math.max(5, (now - firstSample) / 1000) : 60;
  const rate = lastMinute / window;
  const buckets = new Map<number, number>();
  for (const [t, k] of samples) {
    const b = Math.floor(t / 5000) * 5000;
    buckets.set(b, (buckets.get(b) ?? 0) + k);
  }
  const throughput = [...buckets.entries()].sort((a, b) => a[0] - b[0]);
  const remaining = Math.max(0, discovered - processed);
  return {
    migration: m,
    sources,
    totals: { discovered, processed, ratio: discovered ? Math.min(1, processed / discovered) : 0, outcomes },
    ratePerSecond: rate,
    etaSeconds: remaining === 0 ? 0 : etaSeconds(remaining, rate),
    throughput,
    gate: args.gate,
    latestFailures: failures,
    usage: args.usage,
  };
}
