import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import { OUTCOMES, type Outcome } from '@rekey/core';
import type { InFlightLimit } from '@rekey/kms';

/**
 * The fleet's one metrics registry module. Labels are bounded: migration ids, source names,
 * outcomes, operations and states — never item ids.
 */
export interface FleetMetrics {
  readonly registry: Registry;
  readonly itemsTotal: Counter<'migration' | 'source' | 'outcome'>;
  readonly itemsDiscovered: Gauge<'migration' | 'source'>;
  readonly progressRatio: Gauge<'migration'>;
  readonly etaSeconds: Gauge<'migration'>;
  readonly migrationState: Gauge<'migration' | 'state'>;
  readonly kmsRequests: Counter<'operation' | 'outcome'>;
  readonly kmsDuration: Histogram<'operation'>;
  readonly kmsThrottled: Counter;
  readonly kmsRateLimit: Gauge<'account' | 'region'>;
  readonly batches: Gauge<'state'>;
  readonly batchDuration: Histogram;
  /** Batches that gave the unstarted part of their items to a new batch because no batch was waiting. */
  readonly batchesSplit: Counter<'mode'>;
  /** Batches that went back to the queue without being counted, by why (their finished items' outcomes are carried). */
  readonly batchesRequeued: Counter<'mode' | 'reason'>;
  readonly oldKeyLastUse: Gauge<'key' | 'operation'>;
  readonly gateReady: Gauge<'migration'>;
  /** Called by the batch processor when a batch ends. */
  batchDone(seconds: number, outcomes: readonly Outcome[], migration: string, source: string): void;
  /** The hook the KMS gateway reports to. */
  readonly kmsHook: { observe(op: string, outcome: string, seconds: number): void; throttled(): void };
  /** Where `rekey_kms_limiter_grant_calls_total` and `rekey_kms_limiter_tokens_granted_total` are read at scrape time (the fleet budget sets it). */
  setLimiterStats(read: () => { grantCalls: number; tokensGranted: number }): void;
  /** The engine's in-flight limit, read by the `rekey_kms_calls_in_flight*` metrics at scrape time. */
  setInFlight(limit: InFlightLimit): void;
}

/** Creates a registry with every Rekey metric and Node's default process metrics. */
export function createFleetMetrics(opts: { defaultMetrics?: boolean } = {}): FleetMetrics {
  const registry = new Registry();
  if (opts.defaultMetrics !== false) collectDefaultMetrics({ register: registry });
  const itemsTotal = new Counter({ name: 'rekey_items_total', help: 'Items processed, by outcome', labelNames: ['migration', 'source', 'outcome'] as const, registers: [registry] });
  const itemsDiscovered = new Gauge({ name: 'rekey_items_discovered_total', help: 'Items discovered by enumeration', labelNames: ['migration', 'source'] as const, registers: [registry] });
  const progressRatio = new Gauge({ name: 'rekey_migration_progress_ratio', help: 'Processed / discovered, 0..1', labelNames: ['migration'] as const, registers: [registry] });
  const etaSeconds = new Gauge({ name: 'rekey_migration_eta_seconds', help: 'Estimated seconds until all discovered items are processed', labelNames: ['migration'] as const, registers: [registry] });
  const migrationState = new Gauge({ name: 'rekey_migration_state', help: '1 for the state the migration is in, 0 otherwise', labelNames: ['migration', 'state'] as const, registers: [registry] });
  const kmsRequests = new Counter({ name: 'rekey_kms_requests_total', help: 'KMS requests made by this process', labelNames: ['operation', 'outcome'] as const, registers: [registry] });
  const kmsDuration = new Histogram({ name: 'rekey_kms_request_duration_seconds', help: 'KMS request latency', labelNames: ['operation'] as const, buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5], registers: [registry] });
  const kmsThrottled = new Counter({ name: 'rekey_kms_throttled_total', help: 'KMS ThrottlingException responses seen by this process', registers: [registry] });
  const kmsRateLimit = new Gauge({
    name: 'rekey_kms_rate_limit_rps',
    help: 'Current fleet-wide KMS rate limit (after AIMD) of each (account, Region) limiter this process draws tokens from',
    labelNames: ['account', 'region'] as const,
    registers: [registry],
  });
  const batches = new Gauge({ name: 'rekey_batches', help: 'Batches in the queue by state', labelNames: ['state'] as const, registers: [registry] });
  const batchDuration = new Histogram({ name: 'rekey_batch_duration_seconds', help: 'Time to process one batch', buckets: [0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120], registers: [registry] });
  const batchesSplit = new Counter({ name: 'rekey_batches_split_total', help: 'Batches that gave their unstarted items to a new batch at the tail of a pass (enumeration done, no batch waiting)', labelNames: ['mode'] as const, registers: [registry] });
  const batchesRequeued = new Counter({
    name: 'rekey_batches_requeued_total',
    help: 'Batches that went back to the queue uncounted: retry (a retryable error past its retries), budget (the KMS budget unavailable), paused (migration-fatal error), shutdown (SIGTERM), split-failed',
    labelNames: ['mode', 'reason'] as const,
    registers: [registry],
  });
  const oldKeyLastUse = new Gauge({ name: 'rekey_old_key_last_use_timestamp_seconds', help: 'Last use of an old key by anyone but the fleet, by operation', labelNames: ['key', 'operation'] as const, registers: [registry] });
  let limiterStats: () => { grantCalls: number; tokensGranted: number } = () => ({ grantCalls: 0, tokensGranted: 0 });
  // Counters read from the limiter at scrape time (it keeps the running totals).
  new Counter({
    name: 'rekey_kms_limiter_grant_calls_total',
    help: 'Redis round trips of the KMS limiter in this process (each grants up to grantSize tokens)',
    registers: [registry],
    collect() {
      this.reset();
      this.inc(limiterStats().grantCalls);
    },
  });
  new Counter({
    name: 'rekey_kms_limiter_tokens_granted_total',
    help: 'KMS request tokens the limiter granted to this process',
    registers: [registry],
    collect() {
      this.reset();
      this.inc(limiterStats().tokensGranted);
    },
  });
  let inFlight: InFlightLimit | undefined;
  const inFlightGauge = (name: string, help: string, read: (l: InFlightLimit) => number) =>
    new Gauge({
      name,
      help,
      registers: [registry],
      collect() {
        this.set(inFlight ? read(inFlight) : 0);
      },
    });
  inFlightGauge('rekey_kms_calls_in_flight', 'KMS cryptographic calls in flight in this process', (l) => l.inFlight());
  inFlightGauge('rekey_kms_calls_in_flight_limit', 'Most KMS cryptographic calls in flight in this process (worker.kmsConcurrency)', (l) => l.limit);
  inFlightGauge('rekey_kms_calls_waiting_for_slot', 'Calls holding a limiter token and waiting for an in-flight slot', (l) => l.waiting());
  new Counter({
    name: 'rekey_kms_calls_in_flight_seconds_total',
    help: 'Time KMS cryptographic calls spent in flight in this process, summed over calls (its rate is the mean number in flight)',
    registers: [registry],
    collect() {
      this.reset();
      this.inc(inFlight?.busySeconds() ?? 0);
    },
  });
  const gateReady = new Gauge({ name: 'rekey_gate_ready', help: '1 when the old keys can be disabled', labelNames: ['migration'] as const, registers: [registry] });
  return {
    registry,
    itemsTotal,
    itemsDiscovered,
    progressRatio,
    etaSeconds,
    migrationState,
    kmsRequests,
    kmsDuration,
    kmsThrottled,
    kmsRateLimit,
    batches,
    batchDuration,
    batchesSplit,
    batchesRequeued,
    oldKeyLastUse,
    gateReady,
    setLimiterStats(read) {
      limiterStats = read;
    },
    setInFlight(limit) {
      inFlight = limit;
    },
    batchDone(seconds, outcomes, migration, source) {
      batchDuration.observe(seconds);
      const counts = new Map<Outcome, number>();
      for (const o of outcomes) counts.set(o, (counts.get(o) ?? 0) + 1);
      for (const o of OUTCOMES) {
        const n = counts.get(o);
        if (n) itemsTotal.inc({ migration, source, outcome: o }, n);
      }
    },
    kmsHook: {
      observe(op, outcome, seconds) {
        kmsRequests.inc({ operation: op, outcome });
        kmsDuration.observe({ operation: op }, seconds);
      },
      throttled() {
        kmsThrottled.inc();
      },
    },
  };
}
