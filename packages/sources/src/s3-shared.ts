/**
 * Pieces both S3 sources share: client checks, listing, HeadObject, the conflict loop.
 */
import {
  HeadObjectCommand,
  ListObjectsV2Command,
  ListObjectVersionsCommand,
  S3Client,
  type HeadObjectCommandOutput,
} from '@aws-sdk/client-s3';
import { ItemError, type Cursor, type ItemRef, type Page } from '@rekey/core';
import { abortable, retry } from '@rekey/kms';
import { KMS_THROTTLE_CODES, SourceError, classifyS3Error, type S3ErrorContext } from './errors.js';
import type { SourceKms, SourceOptions } from './types.js';

/** A reference to one S3 object (or one version of it). */
export type S3ItemRef = Extract<ItemRef, { kind: 's3' }>;

/** S3 caps a listing page at 1000 keys. */
const MAX_PAGE = 1000;

/** Throws when an injected S3 client or KMS gateway is of the wrong kind. */
export function checkS3Deps(deps: { s3: unknown; kms: unknown }, kind: string): void {
  if (!(deps.s3 instanceof S3Client)) throw new SourceError('wrong-client', `${kind}: deps.s3 must be an S3Client from @aws-sdk/client-s3`);
  const kms = deps.kms as Partial<SourceKms> | null | undefined;
  if (typeof kms?.reEncrypt !== 'function' || typeof kms.acquire !== 'function' || typeof kms.reportS3Call !== 'function') {
    throw new SourceError('wrong-client', `${kind}: deps.kms must be a KmsGateway from @rekey/kms (reEncrypt, acquire and reportS3Call)`);
  }
}

/** The page size from options, checked. */
export function pageSizeOf(options: SourceOptions | undefined, max = MAX_PAGE): number {
  const n = options?.pageSize ?? max;
  if (!Number.isInteger(n) || n < 1 || n > max) throw new SourceError('invalid-item', `pageSize must be an integer in 1..${max}, got ${String(n)}`);
  return n;
}

/**
 * What one S3 request costs in the KMS requests S3 makes on our behalf (SSE-KMS copies, uploads,
 * UpdateObjectEncryption): that many limiter tokens are taken before each attempt, and its
 * outcome is reported to the limiter, so S3-side KMS throttling cuts the fleet's rate too.
 */
export interface S3KmsCost {
  readonly kms: SourceKms;
  readonly requests: number;
}

/**
 * Attempts of one S3 request. The fleet's S3 client makes one attempt per send (`maxAttempts: 1`,
 * docs/decisions.md #30): retries happen here, where each one takes its limiter tokens; the SDK's
 * own would re-send a KMS-spending request without them.
 */
const S3_RETRY = { maxAttempts: 3, baseMs: 100, capMs: 2000 } as const;

/**
 * Answers to a KMS-spending S3 request that cut the fleet's KMS rate. AWS does not document what
 * S3 returns when KMS throttles it (aws-local answers 503 SlowDown, see its README); a SlowDown
 * from S3 itself also asks for fewer of these requests, and the limiter is the only control over
 * their rate.
 */
const S3_THROTTLE_CODES: ReadonlySet<string> = new Set([...KMS_THROTTLE_CODES, 'SlowDown']);

/**
 * Sends an S3 command, retrying a retryable failure (5xx, SlowDown, KMS throttling, a dropped
 * connection) up to 3 times with jittered backoff; any other failure, or the last one, is thrown
 * as the classified error. With `kmsCost`, tokens are taken before every attempt. `fn` sends with
 * no per-call options and `signal` ends the wait ({@link abortable}), so the fleet's S3 client
 * keeps its middleware cache (docs/decisions.md #42).
 */
export async function sendS3<T>(fn: () => Promise<T>, ctx: S3ErrorContext, signal: AbortSignal, kmsCost?: S3KmsCost): Promise<T> {
  return retry(
    async () => {
      signal.throwIfAborted();
      if (kmsCost) for (let i = 0; i < kmsCost.requests; i++) await kmsCost.kms.acquire(signal);
      try {
        const out = await abortable(fn, signal);
        kmsCost?.kms.reportS3Call('ok');
        return out;
      } catch (err) {
        if (signal.aborted) throw signal.reason;
        const classified = classifyS3Error(err, ctx);
        if (kmsCost && S3_THROTTLE_CODES.has(classified.code)) kmsCost.kms.reportS3Call('throttled');
        throw classified;
      }
    },
    { ...S3_RETRY, signal },
  );
}

/** Checks that an item reference is an S3 one. */
export function asS3Item(item: ItemRef, kind: string): S3ItemRef {
  if (item.kind !== 's3' || typeof item.key !== 'string' || item.key === '') {
    throw new SourceError('invalid-item', `${kind}: expected an S3 item reference with a key, got kind ${String(item.kind)}`);
  }
  return item;
}

interface VersionCursor {
  keyMarker: string;
  versionIdMarker: string;
}

function parseVersionCursor(cursor: Cursor): VersionCursor {
  let parsed: unknown;
  try {
    parsed = JSON.parse(cursor);
  } catch {
    throw new SourceError('invalid-cursor', 'version listing cursor is not JSON');
  }
  const c = parsed as Partial<VersionCursor> | null;
  if (typeof c?.keyMarker !== 'string' || typeof c.versionIdMarker !== 'string') {
    throw new SourceError('invalid-cursor', 'version listing cursor needs keyMarker and versionIdMarker strings');
  }
  return { keyMarker: c.keyMarker, versionIdMarker: c.versionIdMarker };
}

/** One page of current objects (ListObjectsV2); the cursor is S3's continuation token. */
export async function listCurrent(
  s3: S3Client,
  bucket: string,
  prefix: string | undefined,
  pageSize: number,
  cursor: Cursor | null,
  signal: AbortSignal,
): Promise<Page> {
  const out = await sendS3(
    () =>
      s3.send(
        new ListObjectsV2Command({
          Bucket: bucket,
          ...(prefix !== undefined && { Prefix: prefix }),
          MaxKeys: pageSize,
          ...(cursor !== null && { ContinuationToken: cursor }),
        }),
      ),
    { op: 'ListObjectsV2', bucket },
    signal,
  );
  const items: S3ItemRef[] = [];
  for (const o of out.Contents ?? []) {
    if (o.Key === undefined) continue;
    items.push({ kind: 's3', key: o.Key, ...(o.ETag !== undefined && { etag: o.ETag }), ...(o.Size !== undefined && { size: o.Size }) });
  }
  const next = out.IsTruncated === true && out.NextContinuationToken ? out.NextContinuationToken : null;
  return { items, next };
}

/** One page of every version (ListObjectVersions), delete markers skipped; the cursor holds both markers. */
export async function listVersions(
  s3: S3Client,
  bucket: string,
  prefix: string | undefined,
  pageSize: number,
  cursor: Cursor | null,
  signal: AbortSignal,
): Promise<Page> {
  const markers = cursor === null ? undefined : parseVersionCursor(cursor);
  const out = await sendS3(
    () =>
      s3.send(
        new ListObjectVersionsCommand({
          Bucket: bucket,
          ...(prefix !== undefined && { Prefix: prefix }),
          MaxKeys: pageSize,
          ...(markers !== undefined && { KeyMarker: markers.keyMarker, VersionIdMarker: markers.versionIdMarker }),
        }),
      ),
    { op: 'ListObjectVersions', bucket },
    signal,
  );
  const items: S3ItemRef[] = [];
  for (const v of out.Versions ?? []) {
    if (v.Key === undefined) continue;
    items.push({
      kind: 's3',
      key: v.Key,
      ...(v.VersionId !== undefined && { versionId: v.VersionId }),
      ...(v.ETag !== undefined && { etag: v.ETag }),
      ...(v.Size !== undefined && { size: v.Size }),
    });
  }
  const next =
    out.IsTruncated === true && out.NextKeyMarker !== undefined
      ? JSON.stringify({ keyMarker: out.NextKeyMarker, versionIdMarker: out.NextVersionIdMarker ?? '' } satisfies VersionCursor)
      : null;
  return { items, next };
}

/**
 * HEAD for the verify pass: the object's headers, or why it is gone (no such key or version, or a
 * delete marker). Other errors are thrown as classified by {@link headObject}.
 */
export async function inspectHead(s3: S3Client, bucket: string, item: S3ItemRef, signal: AbortSignal): Promise<{ head: HeadObjectCommandOutput } | { gone: string }> {
  try {
    const head = await headObject(s3, bucket, item, signal);
    return head.DeleteMarker === true ? { gone: 'a delete marker' } : { head };
  } catch (err) {
    if (err instanceof ItemError && err.outcome === 'gone') return { gone: err.message };
    throw err;
  }
}

/** HeadObject of the item (its version when the reference has one); never calls KMS. */
export function headObject(s3: S3Client, bucket: string, item: S3ItemRef, signal: AbortSignal): Promise<HeadObjectCommandOutput> {
  return sendS3(
    () =>
      s3.send(new HeadObjectCommand({ Bucket: bucket, Key: item.key, ...(item.versionId !== undefined && { VersionId: item.versionId }) })),
    { op: 'HeadObject', bucket, key: item.key },
    signal,
  );
}

/** `bucket/key[?versionId=…]`, percent-encoded the way `x-amz-copy-source` wants it. */
export function copySourceOf(bucket: string, key: string, versionId: string | undefined): string {
  const path = `${bucket}/${key.split('/').map(encodeURIComponent).join('/')}`;
  return versionId === undefined ? path : `${path}?versionId=${encodeURIComponent(versionId)}`;
}

/** Facts about an object for `rekey plan` and verify reports. */
export function factsOf(head: HeadObjectCommandOutput): Record<string, string | number | boolean> {
  return {
    ...(head.ContentLength !== undefined && { size: head.ContentLength }),
    storageClass: head.StorageClass ?? 'STANDARD',
    bucketKey: head.BucketKeyEnabled === true,
    objectLock: head.ObjectLockMode !== undefined || head.ObjectLockLegalHoldStatus === 'ON',
    sse: head.ServerSideEncryption ?? 'none',
    ...(head.VersionId !== undefined && { versionId: head.VersionId }),
  };
}
