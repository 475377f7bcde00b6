/**
 * Errors of `@rekey/core`, and the three behaviour-steering error types every package throws:
 * `RetryableError` (retry with jitter), `ItemError` (record for one item), `MigrationFatalError`
 * (pause the migration).
 */

/** Codes of errors raised by core itself. */
export const REKEY_ERROR_CODES = ['validation-failed', 'invalid-transition', 'retryable', 'item', 'migration-fatal'] as const;

/** A code of {@link REKEY_ERROR_CODES}. */
export type RekeyErrorCode = (typeof REKEY_ERROR_CODES)[number];

/** How the fleet reacts to an error: retry it, record it for one item, or pause the migration. */
export type ErrorKind = 'retryable' | 'item' | 'fatal';

/** The outcomes an {@link ItemError} can record. */
export type ItemErrorOutcome = 'failed' | 'not-in-scope' | 'gone';

/**
 * Base class of Rekey's errors. `C` is the type of `code`: core's own errors use
 * {@link RekeyErrorCode}; the behaviour-steering subclasses carry the AWS or SQL error code.
 */
export class RekeyError<C extends string = RekeyErrorCode> extends Error {
  /** A stable machine-readable code. */
  readonly code: C;

  constructor(code: C, message: string, options?: { cause?: unknown }) {
    super(message, options?.cause === undefined ? undefined : { cause: options.cause });
    this.name = new.target.name;
    this.code = code;
  }
}

/**
 * A transient failure (throttling, 5xx, timeouts, KeyUnavailable, DependencyTimeout): the
 * caller retries it with jittered backoff.
 *
 * @example
 * throw new RetryableError('ThrottlingException', 'KMS ReEncrypt throttled', { cause: err });
 */
export class RetryableError extends RekeyError<string> {
  readonly kind = 'retryable' as const;

  constructor(code: string, message: string, options?: { cause?: unknown }) {
    super(code, message, options);
  }
}

/** A failure that concerns one item only; it is recorded with its outcome and the batch goes on. */
export class ItemError extends RekeyError<string> {
  readonly kind = 'item' as const;
  /** The outcome recorded for the item. */
  readonly outcome: ItemErrorOutcome;

  constructor(code: string, message: string, options: { outcome: ItemErrorOutcome; cause?: unknown }) {
    super(code, message, options);
    this.outcome = options.outcome;
  }
}

/**
 * A failure that would fail every item (target key disabled, AccessDenied on the target, a
 * missing bucket): the migration pauses with this error's message as its reason.
 */
export class MigrationFatalError extends RekeyError<string> {
  readonly kind = 'fatal' as const;

  constructor(code: string, message: string, options?: { cause?: unknown }) {
    super(code, message, options);
  }
}

/** Invalid input (a spec, config, API body or queue message), with one line per problem. */
export class ValidationError extends RekeyError {
  /** Every problem found, each one line `path: reason`. */
  readonly problems: readonly string[];

  constructor(problems: readonly string[], options?: { cause?: unknown }) {
    const list = problems.length > 0 ? [...problems] : ['invalid input'];
    super('validation-failed', list.join('\n'), options);
    this.problems = list;
  }
}

/** A migration state change that the state machine does not allow. */
export class InvalidTransitionError extends RekeyError {
  readonly from: string;
  readonly to: string;

  constructor(from: string, to: string, why?: string) {
    super('invalid-transition', `cannot move a migration from ${from} to ${to}${why ? `: ${why}` : ''}`);
    this.from = from;
    this.to = to;
  }
}

/** The kind of a behaviour-steering error, or undefined for any other value. */
export function errorKind(err: unknown): ErrorKind | undefined {
  if (err instanceof RetryableError || err instanceof ItemError || err instanceof MigrationFatalError) return err.kind;
  return undefined;
}
