/**
 * The read-decide-write loop every source shares: a lost conditional write is read and decided
 * again, a bounded number of times.
 */
import { ItemError } from '@rekey/core';
import type { ItemOutcome } from '@rekey/core';
import { ConflictError } from './errors.js';

/** The outcome recorded for an item-terminal error. */
export function outcomeOfItemError(err: ItemError, fromKey?: string): ItemOutcome {
  return { outcome: err.outcome, code: err.code, reason: err.message, ...(fromKey !== undefined && { fromKey }) };
}

/**
 * Runs `attempt` (read, decide, conditional write) until it does not lose a race, at most
 * `1 + maxRetries` times; a last lost race is the `conflict` outcome. Item-terminal errors become
 * their outcome; retryable and fatal errors go up to the batch processor.
 */
export async function withConflictRetries(
  attempt: () => Promise<ItemOutcome>,
  maxRetries: number,
  what: string,
): Promise<ItemOutcome> {
  let last: ConflictError | undefined;
  for (let i = 0; i <= maxRetries; i++) {
    try {
      return await attempt();
    } catch (err) {
      if (err instanceof ConflictError) {
        last = err;
        continue;
      }
      if (err instanceof ItemError) return outcomeOfItemError(err);
      throw err;
    }
  }
  return { outcome: 'conflict', reason: `${what} changed during each of ${maxRetries + 1} attempts (${last?.message ?? 'conflict'})` };
}
