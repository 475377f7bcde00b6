import type { EnvelopeFormatError } from '@rekey/core';

/** Every reason an envelope operation can fail; `code` of {@link EnvelopeError}. */
export const ENVELOPE_ERROR_CODES = [
  /** The encryption context does not match (KMS InvalidCiphertextException), or GCM authentication failed. */
  'wrong-context',
  /** The envelope ends before a field it declares. */
  'truncated',
  /** The envelope or S3EC metadata is not well formed, or names a key that did not wrap its data key. */
  'malformed',
  /** The envelope or object is in a format version this library does not read. */
  'unknown-version',
  /** The object uses an S3EC wrapping or content algorithm this library refuses (e.g. legacy AES/CBC). */
  'unsupported-algorithm',
  /** The KMS key is disabled, pending deletion or pending import (DisabledException, KMSInvalidStateException). */
  'key-disabled',
  /** The KMS key or alias does not exist (NotFoundException). */
  'key-not-found',
  /** The caller may not use the KMS key (AccessDeniedException). */
  'access-denied',
  /** KMS is throttling, failing or unreachable; retrying later may succeed. */
  'kms-unavailable',
  /** Any other KMS error (for example ValidationException, InvalidKeyUsageException). */
  'kms-error',
  /** The caller passed a bad argument or option. */
  'invalid-argument',
  /** SQS refused intake messages or could not be reached (only ever given to `intake.onError`). */
  'intake-failed',
] as const;

/** Why an envelope operation failed. */
export type EnvelopeErrorCode = (typeof ENVELOPE_ERROR_CODES)[number];

/**
 * The one error class of `@rekey/envelope`. Its message is one line naming the thing and the
 * reason, and never contains plaintext, ciphertext or key material.
 */
export class EnvelopeError extends Error {
  override readonly name = 'EnvelopeError';
  readonly code: EnvelopeErrorCode;

  constructor(code: EnvelopeErrorCode, message: string, options: { cause?: unknown } = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.code = code;
  }

  /** True for `kms-unavailable`: the same call may succeed later. */
  get retryable(): boolean {
    return this.code === 'kms-unavailable';
  }
}

/** Maps an error of the binary codec in `@rekey/core` to an {@link EnvelopeError}. */
export function fromFormatError(err: EnvelopeFormatError): EnvelopeError {
  const code: EnvelopeErrorCode = err.code === 'bad-magic' ? 'malformed' : err.code;
  return new EnvelopeError(code, err.message, { cause: err });
}

const UNAVAILABLE = new Set([
  'ThrottlingException',
  'LimitExceededException',
  'KMSInternalException',
  'DependencyTimeoutException',
  'KeyUnavailableException',
  'CustomKeyStoreHasNoHsmsException',
  'TimeoutError',
  'RequestTimeout',
  'AbortError',
]);
const NETWORK_CODES = new Set(['ECONNREFUSED', 'ECONNRESET', 'ETIMEDOUT', 'EPIPE', 'ENOTFOUND', 'EAI_AGAIN', 'EHOSTUNREACH']);

/**
 * Classifies one KMS failure (the only place this package reads AWS error names).
 * `operation` and `keyId` only go into the message.
 */
export function classifyKmsError(err: unknown, operation: string, keyId: string | undefined): EnvelopeError {
  if (err instanceof EnvelopeError) return err;
  const e = (typeof err === 'object' && err !== null ? err : {}) as {
    name?: unknown;
    code?: unknown;
    $metadata?: { httpStatusCode?: number };
    $fault?: unknown;
  };
  const name = typeof e.name === 'string' ? e.name : 'Error';
  const on = keyId ? ` on ${keyId}` : '';
  const status = e.$metadata?.httpStatusCode;
  switch (name) {
    case 'InvalidCiphertextException':
      return new EnvelopeError('wrong-context', `KMS ${operation}${on}: the encryption context does not match or the wrapped key is corrupt`, { cause: err });
    case 'IncorrectKeyException':
      return new EnvelopeError('malformed', `KMS ${operation}${on}: the wrapped key was not made by the key the envelope names`, { cause: err });
    case 'DisabledException':
    case 'KMSInvalidStateException':
      return new EnvelopeError('key-disabled', `KMS ${operation}${on}: the key is disabled or not usable (${name})`, { cause: err });
    case 'NotFoundException':
      return new EnvelopeError('key-not-found', `KMS ${operation}${on}: the key or alias does not exist`, { cause: err });
    case 'AccessDeniedException':
      return new EnvelopeError('access-denied', `KMS ${operation}${on}: access denied`, { cause: err });
  }
  const networkCode = typeof e.code === 'string' && NETWORK_CODES.has(e.code);
  if (UNAVAILABLE.has(name) || networkCode || (status !== undefined && status >= 500) || e.$fault === 'server') {
    return new EnvelopeError('kms-unavailable', `KMS ${operation}${on}: unavailable (${name})`, { cause: err });
  }
  return new EnvelopeError('kms-error', `KMS ${operation}${on}: ${name}`, { cause: err });
}
