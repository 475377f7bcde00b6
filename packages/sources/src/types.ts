/**
 * Public types of `@rekey/sources`: what each source needs injected.
 */
import type { KmsGateway } from '@rekey/kms';

/**
 * The part of the KMS gateway a source uses: `reEncrypt` for wrapped keys and blobs, and
 * `acquire` for a limiter token before an S3 request that makes S3 call KMS for us.
 */
export type SourceKms = Pick<KmsGateway, 'reEncrypt' | 'acquire' | 'reportS3Call'>;

/** Options every source accepts besides its spec. */
export interface SourceOptions {
  /**
   * How many item references one `list` call returns (S3 caps a listing page at 1000).
   * @defaultValue 1000
   */
  readonly pageSize?: number;
  /**
   * How often a lost conditional write is read and decided again before the item is counted as `conflict`.
   * @defaultValue 3
   */
  readonly maxConflictRetries?: number;
}

/** The minimal query surface the postgres source needs (a `pg.Pool` has it). */
export interface PgQueryable {
  query(text: string, values?: unknown[]): Promise<{ rows: Record<string, unknown>[]; rowCount: number | null }>;
}
