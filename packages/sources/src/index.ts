/**
 * `@rekey/sources`: the Source contract, the factory that builds a source from its spec, and the
 * errors and classifiers the sources share. Each source lives behind its own subpath
 * (`@rekey/sources/s3-sse-kms`, `/s3-envelope`, `/postgres`) and is loaded only when used.
 */
import type { S3Client } from '@aws-sdk/client-s3';
import type { SourceSpec, Source } from '@rekey/core';
import { SourceError } from './errors.js';
import type { PgQueryable, SourceKms, SourceOptions } from './types.js';
import type { S3SseKmsOptions } from './s3-sse-kms.js';

export { OUTCOMES } from '@rekey/core';
export type { Cursor, ItemRef, Page, KeyPlan, Outcome, ItemOutcome, Inspection, ItemContext, Source } from '@rekey/core';
export { SOURCE_ERROR_CODES, SourceError, ConflictError, classifyS3Error, classifyPgError, errorCodeOf } from './errors.js';
export type { SourceErrorCode, S3ErrorContext, ClassifiedS3Error, ClassifiedPgError } from './errors.js';
export type { SourceKms, SourceOptions, PgQueryable } from './types.js';
export type { S3SseKmsOptions } from './s3-sse-kms.js';

/** Everything any source may need; each source checks that what it needs is there. */
export interface SourceDeps {
  readonly kms: SourceKms;
  /** For the S3 sources. */
  readonly s3?: S3Client;
  /** For `postgres`: the spec's `databaseUrl` wins; else this pool; else `connectionString`. */
  readonly pool?: PgQueryable;
  readonly connectionString?: string;
}

/**
 * Builds the source a spec describes, importing only that source's module.
 * @throws SourceError `wrong-client` when a dependency the source needs is missing.
 * @example
 * const source = await createSource(spec.sources[0], { kms: gateway, s3: new S3Client({}) });
 */
export async function createSource(spec: SourceSpec, deps: SourceDeps, options: SourceOptions & S3SseKmsOptions = {}): Promise<Source> {
  switch (spec.kind) {
    case 's3-sse-kms': {
      if (deps.s3 === undefined) throw new SourceError('wrong-client', `source ${spec.name}: s3-sse-kms needs deps.s3`);
      const { createS3SseKmsSource } = await import('./s3-sse-kms.js');
      return createS3SseKmsSource(spec, { s3: deps.s3, kms: deps.kms }, options);
    }
    case 's3-envelope': {
      if (deps.s3 === undefined) throw new SourceError('wrong-client', `source ${spec.name}: s3-envelope needs deps.s3`);
      const { createS3EnvelopeSource } = await import('./s3-envelope.js');
      return createS3EnvelopeSource(spec, { s3: deps.s3, kms: deps.kms }, options);
    }
    case 'postgres': {
      const { createPostgresSource } = await import('./postgres.js');
      // A source that names its own database must not borrow the process's default pool.
      if (spec.databaseUrl !== undefined) return createPostgresSource(spec, { connectionString: spec.databaseUrl, kms: deps.kms }, options);
      if (deps.pool !== undefined) return createPostgresSource(spec, { pool: deps.pool, kms: deps.kms }, options);
      const connectionString = deps.connectionString;
      if (connectionString === undefined) {
        throw new SourceError('wrong-client', `source ${spec.name}: postgres needs deps.pool, deps.connectionString or the spec's databaseUrl`);
      }
      return createPostgresSource(spec, { connectionString, kms: deps.kms }, options);
    }
    default: {
      const unknown: { kind?: unknown } = spec;
      throw new SourceError('unknown-source-kind', `unknown source kind ${String(unknown.kind)}`);
    }
  }
}
