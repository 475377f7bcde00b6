/**
 * A process-wide cap on KMS calls in flight.
 *
 * Why a cap on KMS calls and not on items: an item of most sources spends most of its time
 * outside KMS (an `s3-envelope` object is HEAD, ReEncrypt, CopyObject; in AWS the copy alone
 * takes longer than the ReEncrypt). When the only bound is items in flight, the KMS calls in
 * flight are a fraction of it, and a worker with room for C items keeps only about C/3 KMS calls
 * busy. Bounding KMS calls separately lets a worker keep more items in flight (their S3 or SQL
 * work overlaps) while KMS, the resource the account's quota is about, never sees more than
 * `limit` calls from this process (but for a moment after an abort: an aborted call frees its
 * slot at once while its request runs on, see `abortable`). The rate is the limiter's job; this
 * bounds concurrency.
 *
 * Waiters are served first come, first served. A waiter whose signal aborts leaves the queue and
 * rejects with the signal's reason; it never holds a slot.
 *
 * @example
 * const slots = createInFlightLimit(16);
 * const release = await slots.acquire(signal);
 * try { await client.send(cmd); } finally { release(); }
 */

/** A counting semaphore of KMS calls in flight. */
export interface InFlightLimit {
  /** Most calls in flight at once. */
  readonly limit: number;
  /** Waits for a slot; the returned function frees it (calling it twice frees it once). */
  acquire(signal?: AbortSignal): Promise<() => void>;
  /** Calls in flight now. */
  inFlight(): number;
  /** Callers waiting for a slot now. */
  waiting(): number;
  /** Seconds of calls in flight so far, summed over calls; its rate is the mean number in flight. */
  busySeconds(): number;
}

interface Waiter {
  resolve(release: () => void): void;
  reject(reason: unknown): void;
  signal: AbortSignal | undefined;
  onAbort: (() => void) | undefined;
}

/**
 * Creates an in-flight limit of `limit` slots.
 * @throws RangeError when `limit` is not a positive integer.
 */
export function createInFlightLimit(limit: number): InFlightLimit {
  if (!Number.isInteger(limit) || limit < 1) throw new RangeError(`KMS in-flight limit must be a positive integer, got ${limit}`);
  let busy = 0;
  const queue: Waiter[] = [];
  let busyMs = 0;
  let since = performance.now();
  /** Adds the time since the last change at the current `busy`, before `busy` changes. */
  function account(): void {
    const now = performance.now();
    busyMs += busy * (now - since);
    since = now;
  }

  function releaser(): () => void {
    let released = false;
    return () => {
      if (released) return;
      released = true;
      const next = queue.shift();
      if (next) {
        // The slot passes straight to the next waiter: `busy` stays the same.
        if (next.onAbort) next.signal?.removeEventListener('abort', next.onAbort);
        next.resolve(releaser());
      } else {
        account();
        busy--;
      }
    };
  }

  return {
    limit,
    acquire(signal) {
      if (signal?.aborted) return Promise.reject(signal.reason);
      if (busy < limit) {
        account();
        busy++;
        return Promise.resolve(releaser());
      }
      return new Promise((resolve, reject) => {
        const w: Waiter = { resolve, reject, signal, onAbort: undefined };
        if (signal) {
          w.onAbort = () => {
            const i = queue.indexOf(w);
            if (i >= 0) queue.splice(i, 1);
            reject(signal.reason);
          };
          signal.addEventListener('abort', w.onAbort, { once: true });
        }
        queue.push(w);
      });
    },
    inFlight: () => busy,
    waiting: () => queue.length,
    busySeconds() {
      account();
      return busyMs / 1000;
    },
  };
}
