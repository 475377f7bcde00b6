/**
 * Errors of `@rekey/kms`, and {@link classifyKmsError}: the one place where a KMS SDK error (or
 * a network failure on the way to KMS) becomes a retryable, item or migration-fatal error.
 */
import { ItemError, MigrationFatalError, RetryableError } from '@rekey/core';

/** Codes of errors raised by `@rekey/kms` itself (not by KMS). */
export const KMS_GATEWAY_ERROR_CODES = [
  'invalid-client',
  'invalid-option',
  'invalid-input',
  'limiter-closed',
  'script-missing',
] as const;

/** A code of {@link KMS_GATEWAY_ERROR_CODES}. */
export type KmsGatewayErrorCode = (typeof KMS_GATEWAY_ERROR_CODES)[number];

/** A misuse of the gateway or limiter: a wrong client, a bad option, a closed limiter. */
export class KmsGatewayError extends Error {
  /** A stable machine-readable code. */
  readonly code: KmsGatewayErrorCode;

  constructor(code: KmsGatewayErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options?.cause === undefined ? undefined : { cause: options.cause });
    this.name = new.target.name;
    this.code = code;
  }
}

/** Which key a failing call was about: the item's current key, or the migration's target. */
export type KeyRole = 'source' | 'target';

/** What the classifier knows about the failing call. */
export interface KmsCallRole {
  /** The KMS operation, e.g. `ReEncrypt`; used in the message. */
  op: string;
  /** The key the error concerns, when the caller knows it. */
  keyRole?: KeyRole;
}

/** The three behaviour-steering errors {@link classifyKmsError} returns. */
export type ClassifiedKmsError = RetryableError | ItemError | MigrationFatalError;

/** Transient conditions KMS reports; the request may succeed when sent again. */
const RETRYABLE_NAMES: ReadonlySet<string> = new Set([
  'ThrottlingException',
  'LimitExceededException',
  'KMSInternalException',
  'DependencyTimeoutException',
  'KeyUnavailableException',
  'InternalFailure',
  'ServiceUnavailable',
  'ServiceUnavailableException',
  'RequestTimeout',
  'RequestTimeoutException',
  'TimeoutError',
  'RequestAbortedError',
]);

/** Errors that mean KMS refused our request rate (they feed the limiter's AIMD). */
const THROTTLE_NAMES: ReadonlySet<string> = new Set(['ThrottlingException', 'LimitExceededException', 'TooManyRequestsException']);

/** States of a key that make every call with it fail until an operator acts. */
const KEY_STATE_NAMES: ReadonlySet<string> = new Set([
  'DisabledException',
  'KMSInvalidStateException',
  'NotFoundException',
  'InvalidKeyUsageException',
]);

/** The fleet's credentials are broken: every call will fail the same way. */
const CREDENTIAL_NAMES: ReadonlySet<string> = new Set([
  'UnrecognizedClientException',
  'InvalidSignatureException',
  'IncompleteSignature',
  'MissingAuthenticationToken',
  'InvalidClientTokenId',
  'ExpiredTokenException',
  'CredentialsProviderError',
]);

/** True for an error code that means the fleet's AWS credentials are missing, expired or refused. */
export function isCredentialError(code: string): boolean {
  return CREDENTIAL_NAMES.has(code);
}

/** Node/undici socket error codes that mean the request never got a KMS answer. */
const NETWORK_CODES: ReadonlySet<string> = new Set([
  'ECONNRESET',
  'ETIMEDOUT',
  'ECONNREFUSED',
  'ECONNABORTED',
  'EPIPE',
  'ENOTFOUND',
  'EAI_AGAIN',
  'EHOSTUNREACH',
  'ENETUNREACH',
  'ENETDOWN',
  'ESOCKETTIMEDOUT',
  'UND_ERR_SOCKET',
  'UND_ERR_CONNECT_TIMEOUT',
  'UND_ERR_HEADERS_TIMEOUT',
  'UND_ERR_BODY_TIMEOUT',
]);

interface ErrorFields {
  name: string;
  message: string;
  status: number | undefined;
  code: string | undefined;
}

function fieldsOf(err: unknown): ErrorFields {
  if (typeof err !== 'object' || err === null) {
    return { name: typeof err, message: String(err), status: undefined, code: undefined };
  }
  const e = err as { name?: unknown; message?: unknown; code?: unknown; $metadata?: { httpStatusCode?: unknown } };
  const status = e.$metadata?.httpStatusCode;
  return {
    name: typeof e.name === 'string' ? e.name : 'Error',
    message: typeof e.message === 'string' ? e.message : '',
    status: typeof status === 'number' ? status : undefined,
    code: typeof e.code === 'string' ? e.code : undefined,
  };
}

/** The socket error code of `err` or of one of its causes, when it is a network failure. */
function networkCode(err: unknown, depth = 0): string | undefined {
  if (typeof err !== 'object' || err === null || depth > 4) return undefined;
  const f = fieldsOf(err);
  if (f.code && NETWORK_CODES.has(f.code)) return f.code;
  if (/socket hang up|other side closed|network socket disconnected/i.test(f.message)) return 'ECONNRESET';
  return networkCode((err as { cause?: unknown }).cause, depth + 1);
}

/**
 * Makes an AWS or socket message safe for one log line: one line, bounded, and with any long
 * base64 run (which could only be key material or ciphertext) removed.
 */
export function safeMessage(message: string): string {
  const oneLine = message.replace(/\s+/g, ' ').trim();
  // Random base64 mixes cases and digits; ARNs and words of that length do not.
  const redacted = oneLine.replace(/[A-Za-z0-9+/]{40,}={0,2}/g, (run) =>
    /[A-Z]/.test(run) && /[a-z]/.test(run) && /[0-9+]/.test(run) ? '[redacted]' : run,
  );
  return redacted.length > 300 ? `${redacted.slice(0, 297)}...` : redacted;
}

/** True when `err` is KMS telling us to slow down (ThrottlingException, HTTP 429, …). */
export function isThrottleError(err: unknown): boolean {
  if (err instanceof RetryableError) return THROTTLE_NAMES.has(err.code);
  const f = fieldsOf(err);
  return THROTTLE_NAMES.has(f.name) || f.status === 429;
}

/**
 * Classifies a KMS SDK error as retryable, item-terminal or migration-fatal. This is the one
 * function that does so; every package that calls KMS goes through it (via the gateway).
 *
 * - Throttling, 429, 5xx, KMSInternal, DependencyTimeout, KeyUnavailable, timeouts and socket
 *   errors are retryable.
 * - IncorrectKeyException is `not-in-scope` (the blob is under a key other than the one named);
 *   InvalidCiphertextException and ValidationException fail the item.
 * - A disabled, pending, missing or wrong-usage key is fatal when it is the target (every item
 *   would fail) and fails the item when it is the item's own source key. When the caller does
 *   not know which key the error is about, it is fatal: pausing with a reason is the safe side.
 * - AccessDeniedException is fatal on any ReEncrypt and on any target-key call: it means the
 *   fleet's own identity lacks `kms:ReEncryptFrom`/`kms:ReEncryptTo`, which an operator must fix
 *   in a policy, and every further item would fail the same way. On a Decrypt of the item's own
 *   key (an app-side call) it fails only that item.
 * - Broken or expired credentials are fatal. Anything else fails the item with its AWS name.
 *
 * The message is one line and never contains ciphertext.
 */
export function classifyKmsError(err: unknown, role: KmsCallRole = { op: 'KMS call' }): ClassifiedKmsError {
  if (err instanceof RetryableError || err instanceof ItemError || err instanceof MigrationFatalError) return err;
  const f = fieldsOf(err);
  const what = `KMS ${role.op}`;
  const detail = safeMessage(f.message) || 'no message';
  const opts = { cause: err };

  const net = networkCode(err);
  if (net !== undefined && f.status === undefined) {
    return new RetryableError(net, `${what}: network error ${net}: ${detail}`, opts);
  }
  if (RETRYABLE_NAMES.has(f.name) || THROTTLE_NAMES.has(f.name) || f.status === 429 || (f.status !== undefined && f.status >= 500)) {
    return new RetryableError(f.name, `${what}: ${f.name}: ${detail}`, opts);
  }
  if (f.name === 'AbortError') {
    // Our own signal is checked by the caller before classifying; an abort we did not ask for
    // (a request timeout inside the HTTP handler) is transient.
    return new RetryableError('AbortError', `${what}: request aborted: ${detail}`, opts);
  }
  if (f.name === 'IncorrectKeyException') {
    return new ItemError(f.name, `${what}: the ciphertext is under a key other than the one named (${detail})`, {
      outcome: 'not-in-scope',
      cause: err,
    });
  }
  if (f.name === 'InvalidCiphertextException') {
    return new ItemError(f.name, `${what}: the ciphertext is invalid or its encryption context does not match`, {
      outcome: 'failed',
      cause: err,
    });
  }
  if (f.name === 'AccessDeniedException') {
    if (role.keyRole === 'source' && role.op !== 'ReEncrypt') {
      return new ItemError(f.name, `${what}: access denied on the item's key: ${detail}`, { outcome: 'failed', cause: err });
    }
    return new MigrationFatalError(f.name, `${what}: access denied: ${detail}`, opts);
  }
  if (KEY_STATE_NAMES.has(f.name)) {
    if (role.keyRole === 'source') {
      return new ItemError(f.name, `${what}: the item's key cannot be used: ${detail}`, { outcome: 'failed', cause: err });
    }
    const which = role.keyRole === 'target' ? 'the target key' : 'a key';
    return new MigrationFatalError(f.name, `${what}: ${which} cannot be used: ${detail}`, opts);
  }
  if (f.name === 'CredentialsProviderError') {
    return new MigrationFatalError(f.name, `${what}: this process has no AWS credentials (environment, profile or role): ${detail}`, opts);
  }
  if (CREDENTIAL_NAMES.has(f.name)) {
    return new MigrationFatalError(f.name, `${what}: the fleet's AWS credentials were refused: ${detail}`, opts);
  }
  if (f.name === 'ValidationException') {
    return new ItemError(f.name, `${what}: request rejected: ${detail}`, { outcome: 'failed', cause: err });
  }
  const code = f.status !== undefined ? f.name : f.code ?? f.name;
  return new ItemError(code, `${what}: ${code}: ${detail}`, { outcome: 'failed', cause: err });
}
