/**
 * The `s3-envelope` source: S3 objects encrypted on the client side in the S3 Encryption Client v2
 * format, whose data key is wrapped by KMS and kept in the object's metadata. Moving an object is
 * one ReEncrypt of the wrapped key and an in-place CopyObject that rewrites the metadata; the body
 * is never read, and no plaintext data key ever leaves KMS.
 *
 * @example
 * const source = createS3EnvelopeSource({ name: 'uploads', kind: 's3-envelope', bucket: 'uploads' }, { s3, kms: gateway });
 */
import { CopyObjectCommand, type HeadObjectCommandOutput, type S3Client } from '@aws-sdk/client-s3';
import { ItemError } from '@rekey/core';
import type { Inspection, ItemContext, ItemOutcome, ItemRef, KeyPlan, S3EnvelopeSourceSpec, Source } from '@rekey/core';
import { probeBlobKey, rewrapBlob } from './rewrap.js';
import { asS3Item, checkS3Deps, copySourceOf, factsOf, headObject, inspectHead, listCurrent, pageSizeOf, sendS3, type S3ItemRef } from './s3-shared.js';
import { withConflictRetries } from './outcomes.js';
import { limitOf } from './paging.js';
import type { SourceKms, SourceOptions } from './types.js';

/** What the `s3-envelope` source needs injected. */
export interface S3EnvelopeDeps {
  readonly s3: S3Client;
  readonly kms: SourceKms;
}

/** S3EC v2 metadata names (user metadata, `x-amz-meta-` stripped by the SDK). */
export const S3EC_META = {
  keyV2: 'x-amz-key-v2',
  keyV1: 'x-amz-key',
  wrapAlg: 'x-amz-wrap-alg',
  matdesc: 'x-amz-matdesc',
  cekAlg: 'x-amz-cek-alg',
  iv: 'x-amz-iv',
  tagLen: 'x-amz-tag-len',
} as const;

/** The content encryption algorithm S3EC v2 writes, also bound into the KMS context. */
const CEK_ALG = 'AES/GCM/NoPadding';
const CEK_CONTEXT_KEY = 'aws:x-amz-cek-alg';
const BASE64 = /^[A-Za-z0-9+/]+={0,2}$/;

/** What the metadata of one object says. */
export type S3EnvelopeMetadata =
  | { readonly kind: 'v2'; readonly wrappedKey: Buffer; readonly context: Readonly<Record<string, string>> }
  | { readonly kind: 'not-in-scope'; readonly reason: string }
  | { readonly kind: 'invalid'; readonly reason: string };

/**
 * Reads the S3EC v2 envelope from an object's user metadata without touching KMS: the wrapped
 * key and the KMS encryption context (the matdesc), or why the object is out of scope or broken.
 */
export function parseS3EnvelopeMetadata(meta: Readonly<Record<string, string>> | undefined): S3EnvelopeMetadata {
  const md = meta ?? {};
  const keyV2 = md[S3EC_META.keyV2];
  if (keyV2 === undefined) {
    if (md[S3EC_META.keyV1] !== undefined) {
      return { kind: 'not-in-scope', reason: 'S3 Encryption Client v1 envelope (x-amz-key, a client-side master key), not wrapped by KMS' };
    }
    return { kind: 'not-in-scope', reason: 'not client-side encrypted (no x-amz-key-v2 metadata)' };
  }
  const wrapAlg = md[S3EC_META.wrapAlg];
  if (wrapAlg === 'kms') {
    return {
      kind: 'not-in-scope',
      reason: 'legacy S3EC wrap x-amz-wrap-alg: kms (no encryption context binding); re-encrypt it with an S3 Encryption Client v2 to kms+context',
    };
  }
  if (wrapAlg !== 'kms+context') return { kind: 'not-in-scope', reason: `data key wrapped with ${wrapAlg ?? 'no x-amz-wrap-alg'}, not kms+context` };

  const rawMatdesc = md[S3EC_META.matdesc];
  if (rawMatdesc === undefined) return { kind: 'invalid', reason: 'kms+context envelope without x-amz-matdesc' };
  let parsed: unknown;
  try {
    parsed = JSON.parse(rawMatdesc);
  } catch {
    return { kind: 'invalid', reason: 'x-amz-matdesc is not JSON' };
  }
  if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) return { kind: 'invalid', reason: 'x-amz-matdesc is not a JSON object' };
  const context: Record<string, string> = {};
  for (const [k, v] of Object.entries(parsed)) {
    if (typeof v !== 'string') return { kind: 'invalid', reason: `x-amz-matdesc entry ${JSON.stringify(k)} is not a string` };
    context[k] = v;
  }
  const cekAlg = md[S3EC_META.cekAlg];
  if (cekAlg !== CEK_ALG) return { kind: 'not-in-scope', reason: `content encrypted with ${cekAlg ?? 'no x-amz-cek-alg'}, not ${CEK_ALG}` };
  if (context[CEK_CONTEXT_KEY] !== cekAlg) {
    return { kind: 'invalid', reason: `x-amz-matdesc ${CEK_CONTEXT_KEY} does not match x-amz-cek-alg` };
  }
  if (!BASE64.test(keyV2) || keyV2.length % 4 !== 0) return { kind: 'invalid', reason: 'x-amz-key-v2 is not base64' };
  return { kind: 'v2', wrappedKey: Buffer.from(keyV2, 'base64'), context };
}

/**
 * The system headers of the object read, resent by a metadata-replacing copy so none is lost.
 * Its server-side encryption is kept as it was: a copy without the header would take the
 * bucket's default, silently dropping DSSE-KMS (which has no bucket keys) or SSE-KMS.
 */
function systemHeadersOf(head: HeadObjectCommandOutput) {
  const sse =
    head.ServerSideEncryption === 'aws:kms'
      ? {
          ServerSideEncryption: 'aws:kms' as const,
          ...(head.SSEKMSKeyId !== undefined && { SSEKMSKeyId: head.SSEKMSKeyId }),
          BucketKeyEnabled: head.BucketKeyEnabled === true,
        }
      : head.ServerSideEncryption === 'aws:kms:dsse'
        ? { ServerSideEncryption: 'aws:kms:dsse' as const, ...(head.SSEKMSKeyId !== undefined && { SSEKMSKeyId: head.SSEKMSKeyId }) }
        : head.ServerSideEncryption === 'AES256'
          ? { ServerSideEncryption: 'AES256' as const }
          : {};
  return {
    ...(head.ContentType !== undefined && { ContentType: head.ContentType }),
    ...(head.ContentEncoding !== undefined && { ContentEncoding: head.ContentEncoding }),
    ...(head.ContentDisposition !== undefined && { ContentDisposition: head.ContentDisposition }),
    ...(head.ContentLanguage !== undefined && { ContentLanguage: head.ContentLanguage }),
    ...(head.CacheControl !== undefined && { CacheControl: head.CacheControl }),
    ...(head.Expires !== undefined && { Expires: head.Expires }),
    ...(head.StorageClass !== undefined && { StorageClass: head.StorageClass }),
    ...(head.WebsiteRedirectLocation !== undefined && { WebsiteRedirectLocation: head.WebsiteRedirectLocation }),
    ...(head.ObjectLockMode !== undefined && { ObjectLockMode: head.ObjectLockMode }),
    ...(head.ObjectLockRetainUntilDate !== undefined && { ObjectLockRetainUntilDate: head.ObjectLockRetainUntilDate }),
    ...(head.ObjectLockLegalHoldStatus !== undefined && { ObjectLockLegalHoldStatus: head.ObjectLockLegalHoldStatus }),
    ...sse,
  };
}

/**
 * The KMS requests S3 makes on our behalf for an in-place copy of this object, taken from the
 * budget before the copy: an object SSE-KMS or DSSE-KMS at rest is decrypted and encrypted
 * again (2; fewer with a bucket key, but we can't know it is cached). An object with no
 * encryption at rest (written before S3 encrypted every new object, January 2023) takes the
 * bucket's default encryption on the copy, which may be SSE-KMS: 1, without a
 * GetBucketEncryption call (and permission) to find out. SSE-S3 costs none.
 */
export function copyKmsRequests(head: Pick<HeadObjectCommandOutput, 'ServerSideEncryption'>): number {
  switch (head.ServerSideEncryption) {
    case 'aws:kms':
    case 'aws:kms:dsse':
      return 2;
    case undefined:
      return 1;
    case 'AES256':
    case 'aws:fsx':
    case 'aws:backup':
      return 0;
  }
}

/**
 * Creates the `s3-envelope` source.
 * @throws SourceError `wrong-client` when `deps.s3` is not an S3Client or `deps.kms` not a gateway.
 */
export function createS3EnvelopeSource(spec: S3EnvelopeSourceSpec, deps: S3EnvelopeDeps, options: SourceOptions = {}): Source {
  checkS3Deps(deps, 's3-envelope');
  const { s3, kms } = deps;
  const bucket = spec.bucket;
  const pageSize = pageSizeOf(options);
  const maxRetries = options.maxConflictRetries ?? 3;

  async function attempt(item: S3ItemRef, plan: KeyPlan, ctx: ItemContext): Promise<ItemOutcome> {
    const head = await headObject(s3, bucket, item, ctx.signal);
    if (head.DeleteMarker === true) return { outcome: 'gone', reason: 'a delete marker' };
    const env = parseS3EnvelopeMetadata(head.Metadata);
    if (env.kind === 'not-in-scope') return { outcome: 'not-in-scope', reason: env.reason };
    if (env.kind === 'invalid') return { outcome: 'failed', code: 'InvalidEnvelopeMetadata', reason: env.reason };
    if (ctx.dryRun) {
      return {
        outcome: 'reencrypted',
        reason: 'dry run: the key of a KMS-wrapped data key is not known without a KMS call; it would be re-encrypted if it is under a from key',
      };
    }
    const r = await rewrapBlob(kms, env.wrappedKey, plan, { encryptionContext: env.context, signal: ctx.signal });
    if (r.kind === 'already-current') return { outcome: 'already-current', fromKey: r.keyArn };
    if (r.kind === 'not-in-scope') return { outcome: 'not-in-scope', reason: r.reason };

    const requests = copyKmsRequests(head);
    const kmsCost = requests > 0 ? { kms, requests } : undefined;
    await sendS3(
      () =>
        s3.send(
          new CopyObjectCommand({
            Bucket: bucket,
            Key: item.key,
            CopySource: copySourceOf(bucket, item.key, head.VersionId),
            CopySourceIfMatch: head.ETag,
            IfMatch: head.ETag,
            MetadataDirective: 'REPLACE',
            TaggingDirective: 'COPY',
            Metadata: { ...head.Metadata, [S3EC_META.keyV2]: Buffer.from(r.ciphertextBlob).toString('base64') },
            ...systemHeadersOf(head),
          }),
        ),
      { op: 'CopyObject', bucket, key: item.key, targetKey: plan.to, ...(head.SSEKMSKeyId !== undefined && { sourceKey: head.SSEKMSKeyId }) },
      ctx.signal,
      kmsCost,
    );
    return { outcome: 'reencrypted', fromKey: r.fromKey, notes: ['acl-reset', 'last-modified-changed'] };
  }

  return {
    kind: 's3-envelope',
    name: spec.name,
    list(cursor, signal, limit) {
      return listCurrent(s3, bucket, spec.prefix, limitOf(limit, pageSize), cursor, signal);
    },
    async reencrypt(item: ItemRef, plan: KeyPlan, ctx: ItemContext): Promise<ItemOutcome> {
      const ref = asS3Item(item, 's3-envelope');
      return withConflictRetries(() => attempt(ref, plan, ctx), maxRetries, `s3://${bucket}/${ref.key}`);
    },
    async inspect(item: ItemRef, plan: KeyPlan, ctx: ItemContext): Promise<Inspection> {
      const found = await inspectHead(s3, bucket, asS3Item(item, 's3-envelope'), ctx.signal);
      if ('gone' in found) return { state: 'gone', reason: found.gone };
      const head = found.head;
      const facts = factsOf(head);
      const env = parseS3EnvelopeMetadata(head.Metadata);
      if (env.kind !== 'v2') {
        return { state: 'other', reason: env.reason, facts: { ...facts, legacyWrap: head.Metadata?.[S3EC_META.wrapAlg] === 'kms' } };
      }
      try {
        const k = await probeBlobKey(kms, env.wrappedKey, plan, { encryptionContext: env.context, signal: ctx.signal });
        if (k.state === 'other') return { state: 'other', reason: k.reason, facts };
        return { state: k.state, keyArn: k.keyArn, facts };
      } catch (err) {
        if (err instanceof ItemError) return { state: 'other', reason: err.message, facts };
        throw err;
      }
    },
  };
}
