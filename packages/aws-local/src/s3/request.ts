import { createHash } from 'node:crypto';
import { crc32 } from 'node:zlib';
import type { RequestContext } from '../context.js';
import type { RawRequest } from '../http.js';
import { invalidArgument, notImplemented, s3Error } from './errors.js';

/** A request after S3's own parsing: bucket, key (percent-decoded), operation and decoded body. */
export interface S3Request {
  readonly op: string;
  readonly method: string;
  readonly bucket: string | undefined;
  readonly key: string | undefined;
  readonly query: URLSearchParams;
  /** Request headers, lower-case, with any aws-chunked trailers merged in. */
  readonly headers: Readonly<Record<string, string>>;
  readonly body: Buffer;
  readonly ctx: RequestContext;
  /** `/bucket/key` for the `<Resource>` of errors. */
  readonly resource: string;
}

/** Subresources S3 has but aws-local does not implement; answering them as a list would mislead. */
const UNSUPPORTED_SUBRESOURCES = [
  'accelerate', 'analytics', 'attributes', 'cors', 'intelligent-tiering', 'inventory', 'legal-hold',
  'lifecycle', 'logging', 'metadataTable', 'metrics', 'notification', 'object-lock', 'ownershipControls',
  'policy', 'policyStatus', 'publicAccessBlock', 'renameObject', 'replication', 'requestPayment', 'restore',
  'retention', 'select', 'session', 'torrent', 'website',
];

/** Splits `/bucket/key` into its percent-decoded parts. */
export function splitPath(path: string): { bucket?: string; key?: string } {
  const p = path.startsWith('/') ? path.slice(1) : path;
  if (p === '') return {};
  const slash = p.indexOf('/');
  try {
    if (slash < 0) return { bucket: decodeURIComponent(p) };
    const bucket = decodeURIComponent(p.slice(0, slash));
    const key = decodeURIComponent(p.slice(slash + 1));
    return key === '' ? { bucket } : { bucket, key };
  } catch {
    throw s3Error('InvalidURI', "Couldn't parse the specified URI.", 400);
  }
}

/** The S3 API operation a request is, from its method, path shape and subresource. */
export function operationOf(method: string, bucket: string | undefined, key: string | undefined, q: URLSearchParams, headers: Readonly<Record<string, string>>): string {
  const unsupported = UNSUPPORTED_SUBRESOURCES.find((s) => q.has(s));
  if (unsupported) throw notImplemented(`?${unsupported}`);
  if (bucket === undefined) {
    if (method === 'GET') return 'ListBuckets';
    throw methodNotAllowed();
  }
  if (key === undefined) {
    if ((q.has('acl') || q.has('tagging')) && method !== 'POST') throw notImplemented(q.has('acl') ? '?acl' : '?tagging');
    switch (method) {
      case 'PUT':
        if (q.has('versioning')) return 'PutBucketVersioning';
        if (q.has('encryption')) return 'PutBucketEncryption';
        return 'CreateBucket';
      case 'GET':
        if (q.has('versioning')) return 'GetBucketVersioning';
        if (q.has('versions')) return 'ListObjectVersions';
        if (q.has('encryption')) return 'GetBucketEncryption';
        if (q.has('location')) return 'GetBucketLocation';
        if (q.has('uploads')) return 'ListMultipartUploads';
        return q.get('list-type') === '2' ? 'ListObjectsV2' : 'ListObjects';
      case 'HEAD':
        return 'HeadBucket';
      case 'DELETE':
        if (q.has('encryption')) return 'DeleteBucketEncryption';
        return 'DeleteBucket';
      case 'POST':
        if (q.has('delete')) return 'DeleteObjects';
        throw methodNotAllowed();
      default:
        throw methodNotAllowed();
    }
  }
  switch (method) {
    case 'PUT':
      if (q.has('tagging')) return 'PutObjectTagging';
      if (q.has('acl')) return 'PutObjectAcl';
      if (q.has('encryption')) return 'UpdateObjectEncryption';
      if (q.has('uploadId') || q.has('partNumber')) {
        return headers['x-amz-copy-source'] !== undefined ? 'UploadPartCopy' : 'UploadPart';
      }
      return headers['x-amz-copy-source'] !== undefined ? 'CopyObject' : 'PutObject';
    case 'GET':
      if (q.has('tagging')) return 'GetObjectTagging';
      if (q.has('acl')) return 'GetObjectAcl';
      if (q.has('uploadId')) return 'ListParts';
      return 'GetObject';
    case 'HEAD':
      return 'HeadObject';
    case 'DELETE':
      if (q.has('tagging')) return 'DeleteObjectTagging';
      if (q.has('uploadId')) return 'AbortMultipartUpload';
      return 'DeleteObject';
    case 'POST':
      if (q.has('uploads')) return 'CreateMultipartUpload';
      if (q.has('uploadId')) return 'CompleteMultipartUpload';
      throw methodNotAllowed();
    default:
      throw methodNotAllowed();
  }
}

function methodNotAllowed() {
  return s3Error('MethodNotAllowed', 'The specified method is not allowed against this resource.', 405);
}

/**
 * Decodes an `aws-chunked` body (what SDKs send with streaming signatures or trailing
 * checksums) into the payload and its trailing headers.
 */
export function decodeBody(raw: RawRequest): { body: Buffer; trailers: Record<string, string> } {
  const sha = raw.headers['x-amz-content-sha256'] ?? '';
  const enc = raw.headers['content-encoding'] ?? '';
  if (!sha.startsWith('STREAMING-') && !enc.split(',').some((e) => e.trim() === 'aws-chunked')) {
    return { body: raw.body, trailers: {} };
  }
  const src = raw.body;
  const chunks: Buffer[] = [];
  const trailers: Record<string, string> = {};
  const bad = () => s3Error('IncompleteBody', 'The request body terminated unexpectedly', 400);
  let pos = 0;
  for (;;) {
    const eol = src.indexOf('\r\n', pos);
    if (eol < 0) throw bad();
    const sizeText = src.toString('latin1', pos, eol).split(';', 1)[0] as string;
    const size = Number.parseInt(sizeText, 16);
    if (!Number.isFinite(size) || size < 0 || !/^[0-9a-fA-F]+$/.test(sizeText.trim())) throw bad();
    pos = eol + 2;
    if (size === 0) break;
    if (pos + size > src.length) throw bad();
    chunks.push(src.subarray(pos, pos + size));
    pos += size;
    if (src.toString('latin1', pos, pos + 2) === '\r\n') pos += 2;
  }
  while (pos < src.length) {
    const eol = src.indexOf('\r\n', pos);
    const line = src.toString('latin1', pos, eol < 0 ? src.length : eol);
    pos = eol < 0 ? src.length : eol + 2;
    if (line === '') continue;
    const colon = line.indexOf(':');
    if (colon > 0) trailers[line.slice(0, colon).trim().toLowerCase()] = line.slice(colon + 1).trim();
  }
  const body = Buffer.concat(chunks);
  const declared = raw.headers['x-amz-decoded-content-length'];
  if (declared !== undefined && Number(declared) !== body.length) throw bad();
  return { body, trailers };
}

/** Checks `Content-MD5` and any `x-amz-checksum-*` value S3 can verify; mismatches are BadDigest. */
export function verifyDigests(headers: Readonly<Record<string, string>>, body: Buffer): void {
  const md5 = headers['content-md5'];
  if (md5 !== undefined) {
    const given = Buffer.from(md5, 'base64');
    if (given.length !== 16) throw s3Error('InvalidDigest', 'The Content-MD5 you specified was invalid.', 400, { 'Content-MD5': md5 });
    if (!given.equals(createHash('md5').update(body).digest())) {
      throw s3Error('BadDigest', 'The Content-MD5 you specified did not match what we received.', 400, {
        ExpectedDigest: md5,
        CalculatedDigest: createHash('md5').update(body).digest('base64'),
      });
    }
  }
  const checks: Array<[string, string, () => string]> = [
    ['x-amz-checksum-crc32', 'CRC32', () => crc32Base64(body)],
    ['x-amz-checksum-sha1', 'SHA1', () => createHash('sha1').update(body).digest('base64')],
    ['x-amz-checksum-sha256', 'SHA256', () => createHash('sha256').update(body).digest('base64')],
  ];
  for (const [h, name, compute] of checks) {
    const v = headers[h];
    if (v !== undefined && v !== compute()) {
      throw s3Error('BadDigest', `The ${name} you specified did not match the calculated checksum.`, 400);
    }
  }
}

function crc32Base64(body: Buffer): string {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(crc32(body) >>> 0);
  return b.toString('base64');
}

/** The full-object checksum headers S3 stores and returns with `x-amz-checksum-mode: ENABLED`. */
export const CHECKSUM_HEADERS = [
  'x-amz-checksum-crc32',
  'x-amz-checksum-crc32c',
  'x-amz-checksum-crc64nvme',
  'x-amz-checksum-sha1',
  'x-amz-checksum-sha256',
] as const;

/** System metadata S3 stores from a write and returns on reads. */
const STORED_HEADERS = [
  'content-type',
  'content-disposition',
  'content-language',
  'cache-control',
  'expires',
  'x-amz-website-redirect-location',
] as const;

/**
 * The headers a write stores with the object: system metadata, `x-amz-meta-*` and checksums.
 * Returns undefined when there are none, to keep small objects small.
 */
export function storedMetadata(headers: Readonly<Record<string, string>>, withChecksums: boolean): Record<string, string> | undefined {
  let out: Record<string, string> | undefined;
  const set = (k: string, v: string) => ((out ??= {})[k] = v);
  for (const h of STORED_HEADERS) {
    const v = headers[h];
    if (v !== undefined) set(h, v);
  }
  const enc = headers['content-encoding'];
  if (enc !== undefined) {
    const kept = enc.split(',').map((e) => e.trim()).filter((e) => e !== '' && e !== 'aws-chunked');
    if (kept.length > 0) set('content-encoding', kept.join(', '));
  }
  for (const k in headers) {
    if (k.startsWith('x-amz-meta-')) set(k, headers[k] as string);
  }
  if (withChecksums) {
    for (const h of CHECKSUM_HEADERS) {
      const v = headers[h];
      if (v !== undefined) set(h, v);
    }
  }
  return out;
}

const STORAGE_CLASSES = new Set([
  'STANDARD', 'REDUCED_REDUNDANCY', 'STANDARD_IA', 'ONEZONE_IA', 'INTELLIGENT_TIERING', 'GLACIER',
  'DEEP_ARCHIVE', 'GLACIER_IR', 'OUTPOSTS', 'SNOW', 'EXPRESS_ONEZONE',
]);

/** The `x-amz-storage-class` of a write; undefined means STANDARD. */
export function storageClassOf(headers: Readonly<Record<string, string>>): string | undefined {
  const v = headers['x-amz-storage-class'];
  if (v === undefined || v === 'STANDARD') return undefined;
  if (!STORAGE_CLASSES.has(v)) throw s3Error('InvalidStorageClass', 'The storage class you specified is not valid', 400, { StorageClassRequested: v });
  return v;
}

/** The canned ACLs S3 accepts in `x-amz-acl`. */
const CANNED_ACLS = new Set([
  'private', 'public-read', 'public-read-write', 'authenticated-read', 'aws-exec-read', 'bucket-owner-read',
  'bucket-owner-full-control',
]);

/** The canned `x-amz-acl` of a write; undefined means private. */
export function cannedAclOf(headers: Readonly<Record<string, string>>): string | undefined {
  const v = headers['x-amz-acl'];
  if (v === undefined || v === 'private') return undefined;
  if (!CANNED_ACLS.has(v)) throw invalidArgument('The canned ACL you specified is not valid', 'x-amz-acl', v);
  return v;
}

/** Validates a tag set the way S3 does (at most 10, unique keys, key <= 128, value <= 256). */
export function validateTags(tags: Array<[string, string]>): Record<string, string> | undefined {
  const invalidTag = (m: string) => s3Error('InvalidTag', m, 400);
  if (tags.length > 10) throw invalidTag('Object tags cannot be greater than 10');
  const out: Record<string, string> = {};
  for (const [k, v] of tags) {
    if (k.length === 0 || k.length > 128) throw invalidTag('The TagKey you have provided is invalid');
    if (v.length > 256) throw invalidTag('The TagValue you have provided is invalid');
    if (Object.hasOwn(out, k)) throw invalidTag('Cannot provide multiple Tags with the same key');
    out[k] = v;
  }
  return tags.length === 0 ? undefined : out;
}

/** The `x-amz-tagging` header (URL-query encoded) as tags. */
export function taggingHeader(headers: Readonly<Record<string, string>>): Record<string, string> | undefined {
  const v = headers['x-amz-tagging'];
  if (v === undefined || v === '') return undefined;
  return validateTags([...new URLSearchParams(v)]);
}

/** A byte range request resolved against a size; undefined means the whole object. */
export interface ByteRange {
  start: number;
  end: number;
}

/**
 * Parses `Range: bytes=a-b | a- | -n`. Syntax S3 does not understand (or several ranges) is
 * ignored as on AWS; a range that starts past the end is 416 InvalidRange.
 */
export function parseRange(header: string | undefined, size: number): ByteRange | undefined {
  if (header === undefined) return undefined;
  const m = /^bytes=(\d*)-(\d*)$/.exec(header.trim());
  if (!m || (m[1] === '' && m[2] === '')) return undefined;
  const invalid = () =>
    s3Error('InvalidRange', 'The requested range is not satisfiable', 416, {
      RangeRequested: header,
      ActualObjectSize: String(size),
      'header:content-range': `bytes */${size}`,
    });
  if (m[1] === '') {
    const n = Number(m[2]);
    if (n === 0 || size === 0) throw invalid();
    return { start: Math.max(0, size - n), end: size - 1 };
  }
  const start = Number(m[1]);
  const end = m[2] === '' ? size - 1 : Math.min(Number(m[2]), size - 1);
  if (m[2] !== '' && Number(m[2]) < start) return undefined;
  if (start >= size) throw invalid();
  return { start, end };
}

/** Parses `x-amz-copy-source`: `bucket/key` or `/bucket/key`, percent-encoded, optional `?versionId=`. */
export function parseCopySource(value: string): { bucket: string; key: string; versionId?: string } {
  const bad = () => invalidArgument('Copy Source must mention the source bucket and key: sourcebucket/sourcekey', 'x-amz-copy-source', value);
  let v = value.startsWith('/') ? value.slice(1) : value;
  let versionId: string | undefined;
  const q = v.indexOf('?');
  if (q >= 0) {
    const params = new URLSearchParams(v.slice(q + 1));
    versionId = params.get('versionId') ?? undefined;
    v = v.slice(0, q);
  }
  const slash = v.indexOf('/');
  if (slash <= 0 || slash === v.length - 1) throw bad();
  try {
    return {
      bucket: decodeURIComponent(v.slice(0, slash)),
      key: decodeURIComponent(v.slice(slash + 1)),
      ...(versionId !== undefined && { versionId }),
    };
  } catch {
    throw bad();
  }
}

/** The HTTP date S3 uses in Last-Modified. */
export function httpDate(ms: number): string {
  return new Date(ms).toUTCString();
}

/** The ISO date S3 uses in XML, with milliseconds. */
export function isoDate(ms: number): string {
  return new Date(ms).toISOString();
}
