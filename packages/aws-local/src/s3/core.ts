import { createHash } from 'node:crypto';
import type { Controls } from '../controls.js';
import type { RawResponse } from '../http.js';
import { noSuchBucket, noSuchKey, noSuchVersion, notImplemented, preconditionFailed, s3Error } from './errors.js';
import { currentObject, findVersion, latestVersion, type Bucket, type ObjectVersion } from './model.js';
import { CHECKSUM_HEADERS, httpDate, type S3Request } from './request.js';
import { sseHeaders, type SseEngine } from './sse.js';
import { xmlDocument, type XmlChild } from './xml.js';

/** AWS's minimum size of every part but the last. */
export const AWS_MIN_PART_SIZE = 5 * 1024 * 1024;

/** State and dependencies shared by the S3 operation handlers. */
export interface S3Core {
  readonly buckets: Map<string, Bucket>;
  readonly sse: SseEngine;
  readonly controls: Controls;
  /** Smallest size of a part that is not the last. @defaultValue 5 MiB */
  minPartSize: number;
}

/** A handler for one S3 operation. */
export type Handler = (core: S3Core, req: S3Request) => Promise<RawResponse> | RawResponse;

/** The bucket a request names, owned by the caller's account and not denied by an admin rule. */
export function requireBucket(core: S3Core, req: S3Request, name: string | undefined = req.bucket): Bucket {
  if (name === undefined) throw s3Error('InvalidRequest', 'A bucket name is required', 400);
  const bucket = core.buckets.get(name);
  if (!bucket) throw noSuchBucket(name);
  const expectedOwner = req.headers['x-amz-expected-bucket-owner'];
  if (bucket.accountId !== req.ctx.accountId || (expectedOwner !== undefined && expectedOwner !== bucket.accountId)) {
    throw s3Error('AccessDenied', 'Access Denied', 403);
  }
  core.controls.checkDeny('s3', req.op, req.ctx, name);
  return bucket;
}

/** The request's object key; keys over 1024 bytes are KeyTooLongError. */
export function requireKey(req: S3Request): string {
  if (req.key === undefined) throw s3Error('InvalidRequest', 'An object key is required', 400);
  if (Buffer.byteLength(req.key) > 1024) throw s3Error('KeyTooLongError', 'Your key is too long', 400);
  return req.key;
}

const VERSION_ID_RE = /^[A-Za-z0-9_-]{32}$/;

/**
 * The version a read names: `versionId` from the query, else the current object. A delete marker
 * is NoSuchKey (current) or MethodNotAllowed (by id), with `x-amz-delete-marker` as on AWS.
 */
export function readableVersion(bucket: Bucket, key: string, versionId: string | null): ObjectVersion {
  if (versionId === null) {
    const latest = latestVersion(bucket, key);
    if (!latest) throw noSuchKey(key);
    if (latest.deleteMarker) {
      const e = noSuchKey(key);
      e.extra['header:x-amz-delete-marker'] = 'true';
      if (bucket.versioning) e.extra['header:x-amz-version-id'] = latest.versionId ?? 'null';
      throw e;
    }
    return latest;
  }
  const v = lookupVersion(bucket, key, versionId);
  if (v.deleteMarker) {
    throw s3Error('MethodNotAllowed', 'The specified method is not allowed against this resource.', 405, {
      Method: 'GET',
      ResourceType: 'DeleteMarker',
      'header:x-amz-delete-marker': 'true',
      'header:x-amz-version-id': versionId,
      'header:last-modified': httpDate(v.lastModified),
    });
  }
  return v;
}

/** Fails with InvalidArgument for a version id S3 could not have issued (`null` is valid). */
export function checkVersionIdFormat(versionId: string): void {
  if (versionId !== 'null' && !VERSION_ID_RE.test(versionId)) {
    throw s3Error('InvalidArgument', 'Invalid version id specified', 400, { ArgumentName: 'versionId', ArgumentValue: versionId });
  }
}

/** A version by id: a malformed id is InvalidArgument, an unknown one NoSuchVersion. */
export function lookupVersion(bucket: Bucket, key: string, versionId: string): ObjectVersion {
  checkVersionIdFormat(versionId);
  const v = findVersion(bucket, key, versionId);
  if (!v) throw noSuchVersion(key, versionId);
  return v;
}

/** `"etag"` as S3 writes it. */
export function quoted(etag: string): string {
  return `"${etag}"`;
}

function etagMatches(header: string, etag: string): boolean {
  return header.split(',').some((raw) => {
    const t = raw.trim().replace(/^W\//, '');
    return t === '*' || t.replace(/^"|"$/g, '') === etag;
  });
}

function parseDate(v: string | undefined): number | undefined {
  if (v === undefined) return undefined;
  const t = Date.parse(v);
  return Number.isNaN(t) ? undefined : t;
}

/**
 * Evaluates read preconditions (`If-*`, or `x-amz-copy-source-if-*` with `copy`) in the order
 * RFC 7232 and S3 use: If-Match, else If-Unmodified-Since; If-None-Match, else If-Modified-Since.
 * A failed read condition is 304 on GET/HEAD, and every failure is 412 on a copy source.
 */
export function checkReadConditions(headers: Readonly<Record<string, string>>, v: ObjectVersion, copy: boolean): 'ok' | RawResponse {
  const p = copy ? 'x-amz-copy-source-' : '';
  const name = (n: string) => (copy ? `x-amz-copy-source-${n}` : n);
  const ifMatch = headers[`${p}if-match`];
  const ifNoneMatch = headers[`${p}if-none-match`];
  const ifModifiedSince = parseDate(headers[`${p}if-modified-since`]);
  const ifUnmodifiedSince = parseDate(headers[`${p}if-unmodified-since`]);
  // HTTP dates have whole seconds, so compare at that precision.
  const lastModified = Math.floor(v.lastModified / 1000) * 1000;
  if (ifMatch !== undefined) {
    if (!etagMatches(ifMatch, v.etag)) throw preconditionFailed(name('If-Match'));
  } else if (ifUnmodifiedSince !== undefined && lastModified > ifUnmodifiedSince) {
    throw preconditionFailed(name('If-Unmodified-Since'));
  }
  const notModified = (cond: string): RawResponse => {
    if (copy) throw preconditionFailed(name(cond));
    return { status: 304, headers: { etag: quoted(v.etag), 'last-modified': httpDate(v.lastModified) } };
  };
  if (ifNoneMatch !== undefined) {
    if (etagMatches(ifNoneMatch, v.etag)) return notModified('If-None-Match');
  } else if (ifModifiedSince !== undefined && ifModifiedSince <= Date.now() && lastModified <= ifModifiedSince) {
    return notModified('If-Modified-Since');
  }
  return 'ok';
}

/**
 * Destination preconditions of a write (S3 conditional writes): `If-None-Match: *` fails with 412
 * when the key has a current object; `If-Match` fails with 404 NoSuchKey when it has none and 412
 * when its ETag differs. Called before the work and again just before the write commits.
 */
export function checkWriteConditions(headers: Readonly<Record<string, string>>, bucket: Bucket, key: string): void {
  const ifNoneMatch = headers['if-none-match'];
  const ifMatch = headers['if-match'];
  if (ifNoneMatch !== undefined && ifNoneMatch.trim() !== '*') throw notImplemented('If-None-Match');
  if (ifNoneMatch === undefined && ifMatch === undefined) return;
  const current = currentObject(bucket, key);
  if (ifNoneMatch !== undefined && current) throw preconditionFailed('If-None-Match');
  if (ifMatch !== undefined) {
    if (!current) throw noSuchKey(key);
    if (!etagMatches(ifMatch, current.etag)) throw preconditionFailed('If-Match');
  }
}

/** The headers GET and HEAD return for an object version, added to `h` (and returned). */
export function objectHeaders(bucket: Bucket, v: ObjectVersion, checksums: boolean, h: Record<string, string> = {}): Record<string, string> {
  h['etag'] = quoted(v.etag);
  h['last-modified'] = httpDate(v.lastModified);
  h['accept-ranges'] = 'bytes';
  h['content-type'] = 'binary/octet-stream';
  if (v.meta) {
    for (const k in v.meta) {
      if (!k.startsWith('x-amz-checksum-') || checksums) h[k] = v.meta[k] as string;
    }
  }
  if (checksums && v.meta && CHECKSUM_HEADERS.some((c) => v.meta?.[c] !== undefined)) {
    h['x-amz-checksum-type'] = 'FULL_OBJECT';
  }
  if (bucket.versioning) h['x-amz-version-id'] = v.versionId ?? 'null';
  if (v.storageClass) h['x-amz-storage-class'] = v.storageClass;
  return Object.assign(h, sseHeaders(v.sse, false));
}

/** An XML response. */
export function xmlResponse(req: S3Request, root: string, children: readonly XmlChild[], extraHeaders: Record<string, string> = {}): RawResponse {
  return {
    status: 200,
    headers: { 'content-type': 'application/xml', ...baseHeaders(req), ...extraHeaders },
    body: xmlDocument(root, children),
  };
}

/** Headers every S3 response carries. */
export function baseHeaders(req: S3Request): Record<string, string> {
  return { 'x-amz-request-id': req.ctx.requestId, 'x-amz-id-2': req.ctx.requestId };
}

/** Canonical ids by account: listings with `fetch-owner` need one per object, and accounts are few. */
const canonicalIds = new Map<string, string>();

/** The canonical user id S3 shows as the owner of an account's buckets and objects. */
export function canonicalId(accountId: string): string {
  let id = canonicalIds.get(accountId);
  if (id === undefined) {
    id = createHash('sha256').update(`aws-local:${accountId}`).digest('hex');
    if (canonicalIds.size >= 1024) canonicalIds.clear();
    canonicalIds.set(accountId, id);
  }
  return id;
}

/** The `<Owner>` element of lists. */
export function ownerXml(accountId: string): XmlChild {
  return ['Owner', [['ID', canonicalId(accountId)]]];
}
