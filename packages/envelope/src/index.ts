export { createEnvelopeClient } from './client.js';
export type { EnvelopeClient, GetObjectParams, GetObjectResult, PutObjectParams } from './client.js';
export { EnvelopeError, ENVELOPE_ERROR_CODES } from './errors.js';
export type { EnvelopeErrorCode } from './errors.js';
export type { Queryable, RewrapColumnOptions, RewrapColumnOutcome } from './postgres.js';
export {
  S3EC_METADATA,
  S3EC_WRAP_ALG,
  S3EC_CEK_ALG,
  S3EC_TAG_LEN,
  S3EC_CEK_ALG_CONTEXT_KEY,
  S3EC_RESERVED_CONTEXT_KEYS,
} from './s3ec.js';
export type {
  CacheStats,
  ClientOrConfig,
  DataKeyCacheOptions,
  DecryptOptions,
  DecryptResult,
  EncryptionContext,
  EncryptOptions,
  EnvelopeClientOptions,
  EnvelopeStats,
  IntakeDropPolicy,
  IntakeOptions,
  IntakeStats,
  OnStale,
  RewrapOptions,
} from './types.js';
