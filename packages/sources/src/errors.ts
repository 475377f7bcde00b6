/**
 * Errors of `@rekey/sources`, and the two classifiers that turn S3 and Postgres failures into the
 * behaviour-steering errors of `@rekey/core` (retry, record for one item, pause the migration).
 */
import { ItemError, MigrationFatalError, RekeyError, RetryableError } from '@rekey/core';

/** Codes of errors raised by the sources themselves. */
export const SOURCE_ERROR_CODES = [
  'conflict',
  'wrong-client',
  'invalid-cursor',
  'invalid-item',
  'unknown-source-kind',
  'unsupported-column',
] as const;

/** A code of {@link SOURCE_ERROR_CODES}. */
export type SourceErrorCode = (typeof SOURCE_ERROR_CODES)[number];

/** Base class of the errors `@rekey/sources` raises itself (classified AWS/SQL errors use core's types). */
export class SourceError extends RekeyError<SourceErrorCode> {}

/**
 * A conditional write lost a race (S3 412 `PreconditionFailed` / 409 `ConditionalRequestConflict`,
 * or a compare-and-swap UPDATE that matched no row). The source reads the item again and decides
 * again; it never overwrites.
 */
export class ConflictError extends SourceError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('conflict', message, options);
  }
}

/** Which keys an S3 request involved, so a KMS failure S3 reports can be blamed on the right one. */
export interface S3ErrorContext {
  /** The S3 operation, for the message, e.g. `CopyObject`. */
  readonly op: string;
  /** Bucket and key, for the message. */
  readonly bucket?: string;
  readonly key?: string;
  /** The migration's target key ARN. */
  readonly targetKey?: string;
  /** The key the item was under. */
  readonly sourceKey?: string;
}

/** Classified S3 failure: exactly one of the behaviour-steering error types. */
export type ClassifiedS3Error = RetryableError | ItemError | MigrationFatalError | ConflictError;

const NETWORK_CODES = new Set([
  'ECONNRESET',
  'ECONNREFUSED',
  'ECONNABORTED',
  'ETIMEDOUT',
  'EPIPE',
  'ENOTFOUND',
  'EAI_AGAIN',
  'EHOSTUNREACH',
  'ENETUNREACH',
  'UND_ERR_SOCKET',
  'UND_ERR_CONNECT_TIMEOUT',
]);

const NETWORK_NAMES = new Set(['TimeoutError', 'RequestTimeout', 'RequestTimeoutException', 'NetworkingError']);

/** S3 codes that mean "try again later" even below HTTP 500. */
/** KMS throttling as S3 passes it on (`KMS.<KMS error code>`). */
export const KMS_THROTTLE_CODES: ReadonlySet<string> = new Set(['KMS.ThrottlingException', 'KMS.LimitExceededException']);

const S3_RETRYABLE_CODES = new Set(['SlowDown', 'RequestTimeout', 'OperationAborted', 'InternalError', 'ServiceUnavailable', 'NoSuchUpload']);

interface AwsLikeError {
  name?: unknown;
  code?: unknown;
  message?: unknown;
  $metadata?: { httpStatusCode?: number };
  $retryable?: unknown;
}

function asAwsLike(err: unknown): AwsLikeError {
  return typeof err === 'object' && err !== null ? (err as AwsLikeError) : {};
}

/** The error's AWS code (`name` for SDK v3 errors), or a Node network code. */
export function errorCodeOf(err: unknown): string {
  const e = asAwsLike(err);
  if (typeof e.code === 'string' && NETWORK_CODES.has(e.code)) return e.code;
  if (typeof e.name === 'string' && e.name !== 'Error') return e.name;
  if (typeof e.code === 'string') return e.code;
  return 'UnknownError';
}

function firstLine(text: unknown): string {
  const s = typeof text === 'string' ? text : String(text);
  const line = s.split('\n', 1)[0] ?? '';
  return line.length > 300 ? `${line.slice(0, 300)}…` : line;
}

function isNetworkError(err: unknown): boolean {
  const e = asAwsLike(err);
  if (typeof e.code === 'string' && NETWORK_CODES.has(e.code)) return true;
  if (typeof e.name === 'string' && NETWORK_NAMES.has(e.name)) return true;
  const msg = typeof e.message === 'string' ? e.message : '';
  if (e.$metadata?.httpStatusCode === undefined && /socket hang up|ECONNRESET|ECONNREFUSED|ETIMEDOUT|network|other side closed/i.test(msg)) {
    return true;
  }
  const cause = (err as { cause?: unknown } | null)?.cause;
  return cause !== undefined && cause !== err && isNetworkError(cause);
}

/** The key id part of an ARN (`…:key/<id>`), so messages that name a bare key id still match. */
function keyIdOf(arn: string): string {
  const i = arn.indexOf(':key/');
  return i >= 0 ? arn.slice(i + 5) : arn;
}

function mentions(message: string, keyArn: string | undefined): boolean {
  return keyArn !== undefined && keyArn !== '' && (message.includes(keyArn) || message.includes(keyIdOf(keyArn)));
}

/**
 * The ONE classifier for S3 errors.
 *
 * - 5xx, `SlowDown`, timeouts and dropped connections: {@link RetryableError}.
 * - `NoSuchKey` / `NoSuchVersion` / HEAD 404 and a delete marker (405): {@link ItemError} `gone`.
 * - 412 `PreconditionFailed` and 409 `ConditionalRequestConflict`: {@link ConflictError} (re-read, decide again).
 * - `NoSuchBucket` and `AccessDenied` on the bucket: {@link MigrationFatalError}.
 * - KMS failures S3 surfaces (`KMS.DisabledException`, `KMS.NotFoundException`,
 *   `KMS.KMSInvalidStateException`, `AccessDenied` naming a key): fatal when they name the target
 *   key, item `failed` when they name the item's key. When the message names neither, they are
 *   fatal: every item under the same keys would fail the same way, so pausing is cheaper than
 *   failing them one by one.
 * - `InvalidRequest`, `InvalidObjectState` and other 4xx: item `failed`.
 */
export function classifyS3Error(err: unknown, ctx: S3ErrorContext): ClassifiedS3Error {
  if (err instanceof ConflictError || err instanceof RetryableError || err instanceof ItemError || err instanceof MigrationFatalError) {
    return err;
  }
  const e = asAwsLike(err);
  const code = errorCodeOf(err);
  const status = e.$metadata?.httpStatusCode;
  const message = firstLine(e.message ?? code);
  const where = ctx.key !== undefined ? `s3://${ctx.bucket ?? '?'}/${ctx.key}` : ctx.bucket !== undefined ? `s3://${ctx.bucket}` : 'S3';
  const line = `${ctx.op} ${where}: ${code}: ${message}`;
  const opts = { cause: err };

  if (code === 'PreconditionFailed' || status === 412 || code === 'ConditionalRequestConflict') {
    return new ConflictError(`${ctx.op} ${where}: the object changed since it was read (${code})`, opts);
  }
  if (code === 'NoSuchBucket') return new MigrationFatalError(code, `${ctx.op}: bucket ${ctx.bucket ?? '?'} does not exist`, opts);
  if (code === 'NoSuchKey' || code === 'NoSuchVersion' || code === 'NotFound' || (status === 404 && code !== 'NoSuchUpload')) {
    return new ItemError(code, `${where} no longer exists`, { outcome: 'gone', cause: err });
  }
  if (code === 'MethodNotAllowed' || status === 405) {
    return new ItemError(code, `${where} is a delete marker`, { outcome: 'gone', cause: err });
  }
  // KMS throttled S3 while it acted for us: retryable whichever key the message names (a key
  // named in a throttle says nothing about the key being unusable).
  if (KMS_THROTTLE_CODES.has(code)) return new RetryableError(code, line, opts);
  if (code.startsWith('KMS.') || code === 'KMSKeyNotAccessible' || code === 'AccessDenied' || code === 'Forbidden' || status === 403) {
    if (mentions(message, ctx.targetKey)) return new MigrationFatalError(code, `${line} (the target key is unusable)`, opts);
    if (mentions(message, ctx.sourceKey)) return new ItemError(code, line, { outcome: 'failed', cause: err });
    return new MigrationFatalError(code, line, opts);
  }
  if (S3_RETRYABLE_CODES.has(code) || (status !== undefined && status >= 500) || e.$retryable !== undefined) {
    return new RetryableError(code, line, opts);
  }
  if (isNetworkError(err)) return new RetryableError(code, `${ctx.op} ${where}: network error: ${message}`, opts);
  return new ItemError(code, line, { outcome: 'failed', cause: err });
}

/** Classified Postgres failure. */
export type ClassifiedPgError = RetryableError | ItemError | MigrationFatalError;

/** SQLSTATE classes and codes that mean the schema or permissions are wrong for every row. */
const PG_FATAL = new Set(['42P01', '42703', '3F000', '42501', '42883', '28000', '28P01', '3D000']);
/** SQLSTATEs that go away on retry: serialization failures, deadlocks, shutdowns, too many connections. */
const PG_RETRYABLE = new Set(['40001', '40P01', '55P03', '57P01', '57P02', '57P03', '53300', '53400', '57014']);

/**
 * The ONE classifier for Postgres errors: connection problems, shutdowns, serialization failures
 * and deadlocks are retryable; an undefined table, column or schema and missing privileges are
 * fatal; anything else (bad data in one row) fails the item.
 */
export function classifyPgError(err: unknown, ctx: { op: string; table: string }): ClassifiedPgError {
  if (err instanceof RetryableError || err instanceof ItemError || err instanceof MigrationFatalError) return err;
  const e = asAwsLike(err);
  const sqlState = typeof e.code === 'string' && /^[0-9A-Z]{5}$/.test(e.code) ? e.code : undefined;
  const message = firstLine(e.message ?? 'unknown error');
  const line = `${ctx.op} ${ctx.table}: ${sqlState ? `${sqlState} ` : ''}${message}`;
  const opts = { cause: err };
  if (sqlState !== undefined) {
    if (PG_FATAL.has(sqlState)) return new MigrationFatalError(sqlState, line, opts);
    if (PG_RETRYABLE.has(sqlState) || sqlState.startsWith('08')) return new RetryableError(sqlState, line, opts);
    return new ItemError(sqlState, line, { outcome: 'failed', cause: err });
  }
  if (isNetworkError(err) || /Connection terminated|connection timeout|timeout exceeded when trying to connect|Client has encountered a connection error/i.test(message)) {
    return new RetryableError(errorCodeOf(err), line, opts);
  }
  return new ItemError(errorCodeOf(err), line, { outcome: 'failed', cause: err });
}
