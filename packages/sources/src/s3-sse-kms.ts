/**
 * The `s3-sse-kms` source: S3 objects encrypted at rest with SSE-KMS, moved to the target key by
 * UpdateObjectEncryption (no data movement), an in-place CopyObject, or a multipart copy.
 *
 * @example
 * const source = createS3SseKmsSource(
 *   { name: 'docs', kind: 's3-sse-kms', bucket: 'docs', includeVersions: false, strategy: 'copy', multipartThresholdBytes: 5 * 1024 ** 3 },
 *   { s3: new S3Client({}), kms: gateway },
 * );
 */
import {
  AbortMultipartUploadCommand,
  CompleteMultipartUploadCommand,
  CopyObjectCommand,
  CreateMultipartUploadCommand,
  GetObjectTaggingCommand,
  HeadObjectCommand,
  UpdateObjectEncryptionCommand,
  UploadPartCopyCommand,
  type CompletedPart,
  type HeadObjectCommandOutput,
  type S3Client,
} from '@aws-sdk/client-s3';
import { ItemError } from '@rekey/core';
import type { Inspection, ItemContext, ItemOutcome, ItemRef, KeyPlan, S3SseKmsSourceSpec, Source } from '@rekey/core';
import { SourceError, errorCodeOf } from './errors.js';
import {
  asS3Item,
  checkS3Deps,
  copySourceOf,
  factsOf,
  headObject,
  inspectHead,
  listCurrent,
  listVersions,
  pageSizeOf,
  sendS3,
  type S3ItemRef,
} from './s3-shared.js';
import { limitOf } from './paging.js';
import { withConflictRetries } from './outcomes.js';
import type { SourceKms, SourceOptions } from './types.js';

/** What the `s3-sse-kms` source needs injected. */
export interface S3SseKmsDeps {
  readonly s3: S3Client;
  readonly kms: SourceKms;
}

/** Options of the `s3-sse-kms` source besides its spec. */
export interface S3SseKmsOptions extends SourceOptions {
  /**
   * Size of each UploadPartCopy range of a multipart copy (S3: 5 MiB..5 GiB, at most 10,000 parts).
   * Grown automatically when an object would need more than 10,000 parts.
   * @defaultValue 512 MiB
   */
  readonly partSizeBytes?: number;
  /**
   * How many UploadPartCopy requests of one object run at once.
   * @defaultValue 4
   */
  readonly partConcurrency?: number;
}

const MiB = 1024 * 1024;
const MAX_PARTS = 10_000;

/** Notes every copy reports: S3 gives the new object a private ACL and a new LastModified. */
const COPY_NOTES = ['acl-reset', 'last-modified-changed'] as const;

type Decision =
  | { readonly act: true; readonly keyArn: string }
  | { readonly act: false; readonly outcome: ItemOutcome };

/** Decides from HeadObject alone whether the object is to be moved. */
function decide(head: HeadObjectCommandOutput, plan: KeyPlan): Decision {
  const sse = head.ServerSideEncryption;
  if (sse !== 'aws:kms') {
    return { act: false, outcome: { outcome: 'not-in-scope', reason: `encrypted with ${sse ?? 'no server-side encryption'}, not SSE-KMS` } };
  }
  const keyArn = head.SSEKMSKeyId;
  if (keyArn === undefined || keyArn === '') {
    return { act: false, outcome: { outcome: 'not-in-scope', reason: 'SSE-KMS object without a key id in HeadObject' } };
  }
  if (plan.from.includes(keyArn)) return { act: true, keyArn };
  if (keyArn === plan.to) return { act: false, outcome: { outcome: 'already-current', fromKey: keyArn } };
  return { act: false, outcome: { outcome: 'not-in-scope', fromKey: keyArn, reason: `under ${keyArn}, which is not a from key` } };
}

function encodeTagging(tags: readonly { Key?: string | undefined; Value?: string | undefined }[]): string | undefined {
  const pairs = tags.filter((t) => t.Key !== undefined).map((t) => `${encodeURIComponent(t.Key ?? '')}=${encodeURIComponent(t.Value ?? '')}`);
  return pairs.length > 0 ? pairs.join('&') : undefined;
}

/** The object-lock settings of the version read, which a copy would otherwise take from the bucket default. */
function objectLockOf(head: HeadObjectCommandOutput) {
  return {
    ...(head.ObjectLockMode !== undefined && { ObjectLockMode: head.ObjectLockMode }),
    ...(head.ObjectLockRetainUntilDate !== undefined && { ObjectLockRetainUntilDate: head.ObjectLockRetainUntilDate }),
    ...(head.ObjectLockLegalHoldStatus !== undefined && { ObjectLockLegalHoldStatus: head.ObjectLockLegalHoldStatus }),
  };
}

/**
 * Runs `fn` over `items` with at most `limit` in flight; the first failure stops new work and is
 * thrown once the calls in flight have settled, so that an AbortMultipartUpload sent after it
 * does not race part copies of this process still running (AWS: parts uploaded while an abort
 * runs may survive it).
 */
async function mapLimited<T, R>(items: readonly T[], limit: number, fn: (item: T) => Promise<R>): Promise<R[]> {
  const out: R[] = new Array<R>(items.length);
  let next = 0;
  let failure: { err: unknown } | undefined;
  const worker = async () => {
    while (failure === undefined && next < items.length) {
      const i = next++;
      try {
        out[i] = await fn(items[i] as T);
      } catch (err) {
        failure ??= { err };
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
  if (failure !== undefined) throw failure.err;
  return out;
}

/**
 * Creates the `s3-sse-kms` source.
 * @throws SourceError `wrong-client` when `deps.s3` is not an S3Client or `deps.kms` not a gateway.
 */
export function createS3SseKmsSource(spec: S3SseKmsSourceSpec, deps: S3SseKmsDeps, options: S3SseKmsOptions = {}): Source {
  checkS3Deps(deps, 's3-sse-kms');
  const { s3, kms } = deps;
  const bucket = spec.bucket;
  const pageSize = pageSizeOf(options);
  const maxRetries = options.maxConflictRetries ?? 3;
  const partSize = options.partSizeBytes ?? 512 * MiB;
  const partConcurrency = options.partConcurrency ?? 4;
  if (!Number.isInteger(partSize) || partSize < 1) throw new SourceError('invalid-item', `partSizeBytes must be a positive integer, got ${String(partSize)}`);
  if (!Number.isInteger(partConcurrency) || partConcurrency < 1) {
    throw new SourceError('invalid-item', `partConcurrency must be a positive integer, got ${String(partConcurrency)}`);
  }

  const errCtx = (op: string, item: S3ItemRef, plan: KeyPlan, sourceKey?: string) => ({
    op,
    bucket,
    key: item.key,
    targetKey: plan.to,
    ...(sourceKey !== undefined && { sourceKey }),
  });

  async function updateEncryption(item: S3ItemRef, head: HeadObjectCommandOutput, plan: KeyPlan, keyArn: string, signal: AbortSignal) {
    // S3 makes one KMS ReEncrypt for us; it counts against the shared KMS quota.
    await sendS3(
      () =>
        s3.send(
          new UpdateObjectEncryptionCommand({
            Bucket: bucket,
            Key: item.key,
            // Pin the version that was read: a write that lands meanwhile creates another
            // version, which stays under its key for verify to find, instead of being changed blind.
            ...(head.VersionId !== undefined && { VersionId: head.VersionId }),
            ObjectEncryption: { SSEKMS: { KMSKeyArn: plan.to, BucketKeyEnabled: head.BucketKeyEnabled === true } },
          }),
        ),
      errCtx('UpdateObjectEncryption', item, plan, keyArn),
      signal,
      { kms, requests: 1 },
    );
    return { outcome: 'reencrypted', fromKey: keyArn } satisfies ItemOutcome;
  }

  /** A copy rewrites the current version only; refuses a noncurrent one instead of resurrecting it. */
  async function assertCurrentVersion(item: S3ItemRef, signal: AbortSignal): Promise<void> {
    if (item.versionId === undefined) return;
    const current = await sendS3(
      () => s3.send(new HeadObjectCommand({ Bucket: bucket, Key: item.key })),
      { op: 'HeadObject', bucket, key: item.key },
      signal,
    ).catch((err: unknown) => {
      // The version read exists but the key has no current object (a delete marker on top).
      if (err instanceof ItemError && err.outcome === 'gone') return undefined;
      throw err;
    });
    if (current?.VersionId !== item.versionId) {
      throw new ItemError(
        'NoncurrentVersion',
        `s3://${bucket}/${item.key} version ${item.versionId} is not the current version; a copy can only re-encrypt the current one (use strategy update-encryption)`,
        { outcome: 'failed' },
      );
    }
  }

  async function copyInPlace(item: S3ItemRef, head: HeadObjectCommandOutput, plan: KeyPlan, keyArn: string, signal: AbortSignal) {
    // S3 decrypts the source and generates a data key for the copy: two KMS requests.
    await sendS3(
      () =>
        s3.send(
          new CopyObjectCommand({
            Bucket: bucket,
            Key: item.key,
            CopySource: copySourceOf(bucket, item.key, head.VersionId),
            CopySourceIfMatch: head.ETag,
            // The destination condition closes the window between S3 reading the source and
            // writing the copy, and stops a versioned copy from burying a newer current version.
            IfMatch: head.ETag,
            MetadataDirective: 'COPY',
            TaggingDirective: 'COPY',
            ServerSideEncryption: 'aws:kms',
            SSEKMSKeyId: plan.to,
            BucketKeyEnabled: head.BucketKeyEnabled === true,
            ...(head.StorageClass !== undefined && { StorageClass: head.StorageClass }),
            ...(head.WebsiteRedirectLocation !== undefined && { WebsiteRedirectLocation: head.WebsiteRedirectLocation }),
            ...objectLockOf(head),
          }),
        ),
      errCtx('CopyObject', item, plan, keyArn),
      signal,
      { kms, requests: 2 },
    );
    return { outcome: 'reencrypted', fromKey: keyArn, notes: [...COPY_NOTES] } satisfies ItemOutcome;
  }

  async function multipartCopy(item: S3ItemRef, head: HeadObjectCommandOutput, plan: KeyPlan, keyArn: string, signal: AbortSignal) {
    const size = head.ContentLength ?? 0;
    const tagging = await sendS3(
      () =>
        s3.send(
          new GetObjectTaggingCommand({ Bucket: bucket, Key: item.key, ...(head.VersionId !== undefined && { VersionId: head.VersionId }) }),
        ),
      errCtx('GetObjectTagging', item, plan, keyArn),
      signal,
    );
    const tags = encodeTagging(tagging.TagSet ?? []);
    // S3 generates the upload's data key: one KMS request.
    const created = await sendS3(
      () =>
        s3.send(
          new CreateMultipartUploadCommand({
            Bucket: bucket,
            Key: item.key,
            ...(head.ContentType !== undefined && { ContentType: head.ContentType }),
            ...(head.ContentEncoding !== undefined && { ContentEncoding: head.ContentEncoding }),
            ...(head.ContentDisposition !== undefined && { ContentDisposition: head.ContentDisposition }),
            ...(head.ContentLanguage !== undefined && { ContentLanguage: head.ContentLanguage }),
            ...(head.CacheControl !== undefined && { CacheControl: head.CacheControl }),
            ...(head.Expires !== undefined && { Expires: head.Expires }),
            ...(head.Metadata !== undefined && { Metadata: head.Metadata }),
            ...(head.StorageClass !== undefined && { StorageClass: head.StorageClass }),
            ...(head.WebsiteRedirectLocation !== undefined && { WebsiteRedirectLocation: head.WebsiteRedirectLocation }),
            ...(tags !== undefined && { Tagging: tags }),
            ...objectLockOf(head),
            ServerSideEncryption: 'aws:kms',
            SSEKMSKeyId: plan.to,
            BucketKeyEnabled: head.BucketKeyEnabled === true,
          }),
        ),
      errCtx('CreateMultipartUpload', item, plan, keyArn),
      signal,
      { kms, requests: 1 },
    );
    const uploadId = created.UploadId;
    if (uploadId === undefined) throw new ItemError('NoUploadId', `CreateMultipartUpload s3://${bucket}/${item.key} returned no UploadId`, { outcome: 'failed' });
    try {
      const effectivePart = Math.max(partSize, Math.ceil(size / MAX_PARTS));
      const ranges: { partNumber: number; first: number; last: number }[] = [];
      for (let first = 0, n = 1; first < size; first += effectivePart, n++) {
        ranges.push({ partNumber: n, first, last: Math.min(size, first + effectivePart) - 1 });
      }
      const parts = await mapLimited(ranges, partConcurrency, async (r): Promise<CompletedPart> => {
        // Each part: S3 decrypts the source range and encrypts the part with the upload's data key.
        const out = await sendS3(
          () =>
            s3.send(
              new UploadPartCopyCommand({
                Bucket: bucket,
                Key: item.key,
                UploadId: uploadId,
                PartNumber: r.partNumber,
                CopySource: copySourceOf(bucket, item.key, head.VersionId),
                CopySourceIfMatch: head.ETag,
                CopySourceRange: `bytes=${r.first}-${r.last}`,
              }),
            ),
          errCtx('UploadPartCopy', item, plan, keyArn),
          signal,
          { kms, requests: 2 },
        );
        return { PartNumber: r.partNumber, ETag: out.CopyPartResult?.ETag };
      });
      await sendS3(
        () =>
          s3.send(
            new CompleteMultipartUploadCommand({
              Bucket: bucket,
              Key: item.key,
              UploadId: uploadId,
              MultipartUpload: { Parts: parts },
              // The object must still be the one read, or the upload would overwrite a newer write.
              IfMatch: head.ETag,
            }),
          ),
        errCtx('CompleteMultipartUpload', item, plan, keyArn),
        signal,
        { kms, requests: 1 },
      );
    } catch (err) {
      // Without the abort, the copied parts stay billed until a lifecycle rule removes them.
      // Retried like any S3 request, and not cut short by the item's signal (it may be why we are here).
      const abortErr = await sendS3(
        () => s3.send(new AbortMultipartUploadCommand({ Bucket: bucket, Key: item.key, UploadId: uploadId })),
        errCtx('AbortMultipartUpload', item, plan, keyArn),
        new AbortController().signal,
      ).then(
        () => undefined,
        (e: unknown) => e,
      );
      // The copy's own error steers the retry; the failed abort is told in its message, not dropped.
      if (abortErr !== undefined && err instanceof Error) {
        err.message += `; upload ${uploadId} could not be aborted (${errorCodeOf(abortErr)})`;
      }
      throw err;
    }
    return { outcome: 'reencrypted', fromKey: keyArn, notes: [...COPY_NOTES, 'etag-changed'] } satisfies ItemOutcome;
  }

  async function attempt(item: S3ItemRef, plan: KeyPlan, ctx: ItemContext): Promise<ItemOutcome> {
    const head = await headObject(s3, bucket, item, ctx.signal);
    if (head.DeleteMarker === true) return { outcome: 'gone', reason: 'a delete marker' };
    const d = decide(head, plan);
    if (!d.act) return d.outcome;
    const size = head.ContentLength ?? 0;
    const multipart = spec.strategy === 'multipart-copy' ? size > 0 : spec.strategy === 'copy' && size > spec.multipartThresholdBytes;
    if (spec.strategy !== 'update-encryption') await assertCurrentVersion(item, ctx.signal);
    if (ctx.dryRun) {
      const how = spec.strategy === 'update-encryption' ? 'UpdateObjectEncryption' : multipart ? 'multipart copy' : 'CopyObject';
      return { outcome: 'reencrypted', fromKey: d.keyArn, reason: `dry run: would move from ${d.keyArn} by ${how}` };
    }
    if (spec.strategy === 'update-encryption') return updateEncryption(item, head, plan, d.keyArn, ctx.signal);
    if (multipart) return multipartCopy(item, head, plan, d.keyArn, ctx.signal);
    return copyInPlace(item, head, plan, d.keyArn, ctx.signal);
  }

  return {
    kind: 's3-sse-kms',
    name: spec.name,
    list(cursor, signal, limit) {
      const n = limitOf(limit, pageSize);
      return spec.includeVersions
        ? listVersions(s3, bucket, spec.prefix, n, cursor, signal)
        : listCurrent(s3, bucket, spec.prefix, n, cursor, signal);
    },
    async reencrypt(item: ItemRef, plan: KeyPlan, ctx: ItemContext): Promise<ItemOutcome> {
      const ref = asS3Item(item, 's3-sse-kms');
      return withConflictRetries(() => attempt(ref, plan, ctx), maxRetries, `s3://${bucket}/${ref.key}`);
    },
    async inspect(item: ItemRef, plan: KeyPlan, ctx: ItemContext): Promise<Inspection> {
      const found = await inspectHead(s3, bucket, asS3Item(item, 's3-sse-kms'), ctx.signal);
      if ('gone' in found) return { state: 'gone', reason: found.gone };
      const head = found.head;
      const facts = factsOf(head);
      const keyArn = head.SSEKMSKeyId;
      if (head.ServerSideEncryption !== 'aws:kms' || keyArn === undefined) {
        return { state: 'other', reason: `encrypted with ${head.ServerSideEncryption ?? 'no server-side encryption'}, not SSE-KMS`, facts };
      }
      if (plan.refresh === true && keyArn === plan.to) {
        // S3 does not expose the key material of an object, so a refresh cannot be verified per object.
        return { state: 'current', keyArn, reason: 'key material of an SSE-KMS object is not visible through S3', facts };
      }
      if (plan.from.includes(keyArn)) return { state: 'old-key', keyArn, facts };
      if (keyArn === plan.to) return { state: 'current', keyArn, facts };
      return { state: 'other', keyArn, facts };
    },
  };
}
