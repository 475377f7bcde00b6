/**
 * `@rekey/core`: Rekey's domain types, zod schemas, migration state machine, progress math,
 * job map, config schema and errors. No I/O.
 */
export {
  REKEY_ERROR_CODES,
  RekeyError,
  RetryableError,
  ItemError,
  MigrationFatalError,
  ValidationError,
  InvalidTransitionError,
  errorKind,
} from './errors.js';
export type { RekeyErrorCode, ErrorKind, ItemErrorOutcome } from './errors.js';

export { OUTCOMES } from './source.js';
export type { Cursor, ItemRef, Page, KeyPlan, Outcome, ItemOutcome, Inspection, ItemContext, Source } from './source.js';

export {
  NameSchema,
  BucketNameSchema,
  SqlIdentifierSchema,
  KeyRefSchema,
  S3SseKmsSourceSchema,
  S3EnvelopeSourceSchema,
  PostgresSourceSchema,
  SourceSpecSchema,
  MigrationOptionsSchema,
  MigrationSpecSchema,
  bucketNameProblem,
  parseMigrationSpec,
  checkKeyForMigration,
  checkKeyPlan,
} from './spec.js';
export type {
  SourceSpec,
  SourceSpecInput,
  SourceKind,
  S3SseKmsSourceSpec,
  S3EnvelopeSourceSpec,
  PostgresSourceSpec,
  MigrationOptions,
  MigrationSpec,
  MigrationSpecInput,
  KeyInfo,
} from './spec.js';

export {
  MIGRATION_STATES,
  isTerminal,
  canTransition,
  assertTransition,
  nextStates,
  isPausable,
  resumeTarget,
} from './state.js';
export type { MigrationState, PausableState, TransitionOptions } from './state.js';

export { COUNTER_FIELDS, OUTCOME_COUNTER_FIELDS, emptyCounters, parseCounters } from './migration.js';
export type { Migration, MigrationKeys, AuditExport, Counters, CounterField } from './migration.js';

export { summarize, processed, remaining, progressRatio, ratePerSecond, etaSeconds, failureRate } from './progress.js';
export type { ProgressSample } from './progress.js';

export {
  S3ItemRefSchema,
  RowItemRefSchema,
  ItemRefSchema,
  BATCH_MODES,
  BatchJobSchema,
  ItemJobSchema,
  JOB_SCHEMAS,
  isJobName,
  parseJob,
  batchJobId,
} from './jobs.js';
export type { BatchJob, ItemJob, JobPayloads, JobName } from './jobs.js';

export { ConfigFileSchema, loadConfig, configJsonSchema, configReadReason, locateConfigProblems } from './config.js';
export type { Config, ConfigFile, ConfigRole, LoadConfigInput } from './config.js';

export { formatIssues, parseOrThrow } from './validation.js';

export {
  ENVELOPE_FORMAT_ERROR_CODES,
  EnvelopeFormatError,
  ENVELOPE_MAGIC,
  ENVELOPE_VERSION,
  ENVELOPE_IV_BYTES,
  ENVELOPE_TAG_BYTES,
  ENVELOPE_MAX_ARN_BYTES,
  ENVELOPE_MAX_WRAPPED_KEY_BYTES,
  looksLikeEnvelope,
  isKmsKeyArn,
  decodeEnvelope,
  encodeEnvelope,
  envelopeAad,
} from './envelope-format.js';
export type { EnvelopeFormatErrorCode, EnvelopeParts, EnvelopeInput } from './envelope-format.js';
