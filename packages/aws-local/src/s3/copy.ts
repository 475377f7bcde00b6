import { createHash } from 'node:crypto';
import {
  checkReadConditions,
  checkWriteConditions,
  lookupVersion,
  quoted,
  requireBucket,
  requireKey,
  xmlResponse,
  type Handler,
  type S3Core,
} from './core.js';
import { invalidArgument, invalidRequest, noSuchKey, notImplemented } from './errors.js';
import { currentObject, storeVersion, type Bucket, type ObjectVersion } from './model.js';
import { makeVersion, stillThere, writeHeaders } from './objects.js';
import {
  cannedAclOf,
  CHECKSUM_HEADERS,
  isoDate,
  parseCopySource,
  storageClassOf,
  storedMetadata,
  taggingHeader,
  type S3Request,
} from './request.js';
import { hasSseHeaders, requestedSse } from './sse.js';

/** The object a copy reads, after its `x-amz-copy-source-if-*` preconditions held. */
export interface CopySource {
  bucket: Bucket;
  key: string;
  version: ObjectVersion;
  /** True when the copy source named a version id. */
  versionIdGiven: boolean;
}

/** Resolves `x-amz-copy-source` (NoSuchBucket/NoSuchKey/NoSuchVersion) and checks its preconditions (412). */
export function resolveCopySource(core: S3Core, req: S3Request): CopySource {
  if (req.headers['x-amz-copy-source-server-side-encryption-customer-algorithm'] !== undefined) {
    throw notImplemented('x-amz-copy-source-server-side-encryption-customer-algorithm');
  }
  const src = parseCopySource(req.headers['x-amz-copy-source'] ?? '');
  const bucket = requireBucket(core, req, src.bucket);
  let version: ObjectVersion;
  if (src.versionId !== undefined) {
    version = lookupVersion(bucket, src.key, src.versionId);
    if (version.deleteMarker) {
      throw invalidRequest('The source of a copy request may not specifically refer to a delete marker by version id.');
    }
  } else {
    const current = currentObject(bucket, src.key);
    if (!current) throw noSuchKey(src.key);
    version = current;
  }
  checkReadConditions(req.headers, version, true);
  return { bucket, key: src.key, version, versionIdGiven: src.versionId !== undefined };
}

/** `x-amz-copy-source-version-id` when the source bucket has versioning. */
export function copySourceVersionHeader(src: CopySource): Record<string, string> {
  return src.bucket.versioning ? { 'x-amz-copy-source-version-id': src.version.versionId ?? 'null' } : {};
}

function directive(req: S3Request, header: string, what: string): 'COPY' | 'REPLACE' {
  const v = req.headers[header] ?? 'COPY';
  if (v !== 'COPY' && v !== 'REPLACE') throw invalidArgument(`Unknown ${what} directive.`, header, v);
  return v;
}

function sourceChecksums(v: ObjectVersion): Record<string, string> | undefined {
  let out: Record<string, string> | undefined;
  for (const c of CHECKSUM_HEADERS) {
    const value = v.meta?.[c];
    if (value !== undefined) (out ??= {})[c] = value;
  }
  return out;
}

/**
 * CopyObject. Metadata and tags follow their directives; storage class, ACL and encryption come
 * from the request (else STANDARD, private and the bucket default), as on AWS. Copying an object
 * onto itself must change something (REPLACE metadata, storage class, redirect, SSE headers, or a
 * configured bucket encryption), else InvalidRequest.
 */
export const copyObject: Handler = async (core, req) => {
  const bucket = requireBucket(core, req);
  const key = requireKey(req);
  const src = resolveCopySource(core, req);
  const metaDirective = directive(req, 'x-amz-metadata-directive', 'metadata');
  const tagDirective = directive(req, 'x-amz-tagging-directive', 'tagging');
  const storageClass = storageClassOf(req.headers);
  const inPlace = src.bucket === bucket && src.key === key && !src.versionIdGiven;
  const changes =
    metaDirective === 'REPLACE' ||
    req.headers['x-amz-storage-class'] !== undefined ||
    req.headers['x-amz-website-redirect-location'] !== undefined ||
    hasSseHeaders(req.headers) ||
    bucket.encryption !== undefined;
  if (inPlace && !changes) {
    throw invalidRequest(
      "This copy request is illegal because it is trying to copy an object to itself without changing the object's metadata, storage class, website redirect location or encryption attributes.",
    );
  }
  const checksums = sourceChecksums(src.version);
  const meta = metaDirective === 'REPLACE' ? mergeMeta(storedMetadata(req.headers, false), checksums) : src.version.meta;
  const tags = tagDirective === 'REPLACE' ? taggingHeader(req.headers) : src.version.tags && { ...src.version.tags };
  const acl = cannedAclOf(req.headers);
  const sseReq = requestedSse(req.headers, bucket);
  checkWriteConditions(req.headers, bucket, key);
  const plain = await core.sse.open(src.version.sse, src.bucket.name, src.version.body, req.ctx);
  const { sse, body } = await core.sse.seal(sseReq, bucket, key, plain, req.ctx);
  stillThere(core, bucket);
  checkWriteConditions(req.headers, bucket, key);
  const v = storeVersion(
    bucket,
    key,
    makeVersion({
      etag: createHash('md5').update(plain).digest('hex'),
      size: plain.length,
      body,
      storageClass,
      meta: meta && { ...meta },
      tags,
      acl,
      sse,
    }),
  );
  return xmlResponse(req, 'CopyObjectResult', [['ETag', quoted(v.etag)], ['LastModified', isoDate(v.lastModified)]], {
    ...writeHeaders(req, bucket, v),
    ...copySourceVersionHeader(src),
  });
};

function mergeMeta(
  a: Record<string, string> | undefined,
  b: Record<string, string> | undefined,
): Record<string, string> | undefined {
  if (!a) return b;
  if (!b) return a;
  return { ...a, ...b };
}
