/**
 * Retry with decorrelated jitter ("Exponential Backoff And Jitter", AWS Architecture Blog):
 * `sleep = min(cap, random_between(base, previous_sleep * 3))`. Only {@link RetryableError}s
 * are retried; anything else is thrown at once.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { RetryableError } from '@rekey/core';
import { KmsGatewayError } from './errors.js';

/** What {@link RetryOptions.onRetry} is told before each wait. */
export interface RetryAttempt {
  /** The attempt that just failed, from 1. */
  attempt: number;
  /** How long the retry waits before the next attempt. */
  delayMs: number;
  error: RetryableError;
}

/** The tunable part of the retry policy (what a gateway accepts as `retry`). */
export interface RetryPolicy {
  /** Attempts in all, the first included. @defaultValue 5 */
  maxAttempts?: number;
  /** The smallest wait. @defaultValue 50 */
  baseMs?: number;
  /** The largest wait. @defaultValue 5000 */
  capMs?: number;
}

/** Options of {@link retry}. */
export interface RetryOptions extends RetryPolicy {
  /** Aborts the waits and stops retrying; the signal's reason is thrown. */
  signal?: AbortSignal;
  /** Called before each wait, e.g. to log or count retries. */
  onRetry?: (info: RetryAttempt) => void;
  /** Source of randomness in [0, 1); tests pass a fixed one. @defaultValue Math.random */
  random?: () => number;
}

/** The retry policy's defaults. */
export const DEFAULT_RETRY_POLICY = { maxAttempts: 5, baseMs: 50, capMs: 5000 } as const satisfies Required<RetryPolicy>;

/**
 * The next decorrelated-jitter delay after a wait of `previousMs` (pass `baseMs` before the first
 * retry): uniform in `[base, previous * 3]`, capped at `cap`.
 */
export function nextDelay(previousMs: number, baseMs: number, capMs: number, random: () => number = Math.random): number {
  const upper = Math.max(baseMs, previousMs * 3);
  return Math.min(capMs, baseMs + random() * (upper - baseMs));
}

/** Checks a retry policy and fills in its defaults. */
export function resolveRetryPolicy(policy: RetryPolicy = {}): Required<RetryPolicy> {
  const p = { ...DEFAULT_RETRY_POLICY, ...stripUndefined(policy) };
  if (!Number.isInteger(p.maxAttempts) || p.maxAttempts < 1) {
    throw new KmsGatewayError('invalid-option', `retry maxAttempts must be an integer >= 1, got ${p.maxAttempts}`);
  }
  if (!(p.baseMs >= 0) || !(p.capMs >= p.baseMs)) {
    throw new KmsGatewayError('invalid-option', `retry needs 0 <= baseMs <= capMs, got baseMs ${p.baseMs} and capMs ${p.capMs}`);
  }
  return p;
}

function stripUndefined<T extends object>(o: T): Partial<T> {
  return Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)) as Partial<T>;
}

function abortReason(signal: AbortSignal): unknown {
  return signal.reason ?? new DOMException('The operation was aborted', 'AbortError');
}

/**
 * Runs `fn` until it succeeds, throws something other than a {@link RetryableError}, or has
 * failed `maxAttempts` times (then the last RetryableError is thrown). Waits use timers, so the
 * event loop is never blocked; an abort during a wait throws the signal's reason.
 *
 * @example
 * const out = await retry(() => callKms(), { maxAttempts: 5, baseMs: 50, capMs: 5000, signal });
 */
export async function retry<T>(fn: (attempt: number) => Promise<T>, options: RetryOptions = {}): Promise<T> {
  const { maxAttempts, baseMs, capMs } = resolveRetryPolicy(options);
  const random = options.random ?? Math.random;
  const signal = options.signal;
  let previous = baseMs;
  for (let attempt = 1; ; attempt++) {
    if (signal?.aborted) throw abortReason(signal);
    try {
      return await fn(attempt);
    } catch (err) {
      if (!(err instanceof RetryableError) || attempt >= maxAttempts) throw err;
      if (signal?.aborted) throw abortReason(signal);
      const delayMs = nextDelay(previous, baseMs, capMs, random);
      previous = delayMs;
      options.onRetry?.({ attempt, delayMs, error: err });
      try {
        await sleep(delayMs, undefined, signal ? { signal } : undefined);
      } catch (sleepErr) {
        if (signal?.aborted) throw abortReason(signal);
        throw sleepErr;
      }
    }
  }
}
