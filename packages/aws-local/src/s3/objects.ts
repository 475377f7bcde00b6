import { createHash } from 'node:crypto';
import { AwsError } from '../errors.js';
import type { RawResponse } from '../http.js';
import {
  baseHeaders,
  canonicalId,
  checkReadConditions,
  checkVersionIdFormat,
  checkWriteConditions,
  lookupVersion,
  objectHeaders,
  quoted,
  readableVersion,
  requireBucket,
  requireKey,
  xmlResponse,
  type Handler,
  type S3Core,
} from './core.js';
import { noSuchBucket, notImplemented, s3Error } from './errors.js';
import {
  latestVersion,
  removeVersion,
  storeVersion,
  type Bucket,
  type ObjectVersion,
  type SseState,
} from './model.js';
import {
  cannedAclOf,
  CHECKSUM_HEADERS,
  parseRange,
  storageClassOf,
  storedMetadata,
  taggingHeader,
  validateTags,
  verifyDigests,
  type S3Request,
} from './request.js';
import { requestedSse, sseHeaders } from './sse.js';
import { childObject, childObjects, childText, parseXmlBody, type XmlChild } from './xml.js';

/** Builds a stored version, leaving empty optional fields out. */
export function makeVersion(fields: {
  etag: string;
  size: number;
  body: Buffer;
  lastModified?: number;
  storageClass?: string | undefined;
  meta?: Record<string, string> | undefined;
  tags?: Record<string, string> | undefined;
  acl?: string | undefined;
  sse?: SseState | undefined;
  partCount?: number | undefined;
}): ObjectVersion {
  const v: ObjectVersion = {
    versionId: null,
    etag: fields.etag,
    size: fields.size,
    lastModified: fields.lastModified ?? Date.now(),
    body: fields.body,
  };
  if (fields.storageClass !== undefined) v.storageClass = fields.storageClass;
  if (fields.meta !== undefined) v.meta = fields.meta;
  if (fields.tags !== undefined) v.tags = fields.tags;
  if (fields.acl !== undefined) v.acl = fields.acl;
  if (fields.sse !== undefined) v.sse = fields.sse;
  if (fields.partCount !== undefined) v.partCount = fields.partCount;
  return v;
}

/** Fails when the bucket was deleted while an asynchronous step (a KMS call) ran. */
export function stillThere(core: S3Core, bucket: Bucket): void {
  if (core.buckets.get(bucket.name) !== bucket) throw noSuchBucket(bucket.name);
}

/** Response headers after a write: version id, encryption, echoed checksums. */
export function writeHeaders(req: S3Request, bucket: Bucket, v: ObjectVersion): Record<string, string> {
  const h: Record<string, string> = { ...baseHeaders(req), ...sseHeaders(v.sse) };
  if (bucket.versioning) h['x-amz-version-id'] = v.versionId ?? 'null';
  return h;
}

/** PutObject, with Content-MD5/checksum checks, SSE at rest and conditional writes. */
export const putObject: Handler = async (core, req) => {
  const bucket = requireBucket(core, req);
  const key = requireKey(req);
  verifyDigests(req.headers, req.body);
  const storageClass = storageClassOf(req.headers);
  const tags = taggingHeader(req.headers);
  const acl = cannedAclOf(req.headers);
  const meta = storedMetadata(req.headers, true);
  const sseReq = requestedSse(req.headers, bucket);
  checkWriteConditions(req.headers, bucket, key);
  const { sse, body } = await core.sse.seal(sseReq, bucket, key, req.body, req.ctx);
  // KMS was awaited: the condition must hold at the moment of the write, not only before it.
  stillThere(core, bucket);
  checkWriteConditions(req.headers, bucket, key);
  const v = storeVersion(
    bucket,
    key,
    makeVersion({
      etag: createHash('md5').update(req.body).digest('hex'),
      size: req.body.length,
      body,
      storageClass,
      meta,
      tags,
      acl,
      sse,
    }),
  );
  const h = writeHeaders(req, bucket, v);
  h['etag'] = quoted(v.etag);
  for (const c of CHECKSUM_HEADERS) {
    const value = v.meta?.[c];
    if (value !== undefined) h[c] = value;
  }
  return { status: 200, headers: h };
};

const RESPONSE_OVERRIDES: Array<[string, string]> = [
  ['response-content-type', 'content-type'],
  ['response-content-language', 'content-language'],
  ['response-expires', 'expires'],
  ['response-cache-control', 'cache-control'],
  ['response-content-disposition', 'content-disposition'],
  ['response-content-encoding', 'content-encoding'],
];

async function readObject(core: S3Core, req: S3Request, withBody: boolean): Promise<RawResponse> {
  const bucket = requireBucket(core, req);
  const key = requireKey(req);
  if (req.query.has('partNumber')) throw notImplemented('partNumber');
  if (req.headers['x-amz-server-side-encryption-customer-algorithm'] !== undefined) {
    throw notImplemented('x-amz-server-side-encryption-customer-algorithm');
  }
  const v = readableVersion(bucket, key, req.query.get('versionId'));
  const cond = checkReadConditions(req.headers, v, false);
  if (cond !== 'ok') return { ...cond, headers: { ...baseHeaders(req), ...cond.headers } };
  const range = parseRange(req.headers['range'], v.size);
  const checksums = req.headers['x-amz-checksum-mode'] === 'ENABLED' && !range;
  const headers = objectHeaders(bucket, v, checksums, baseHeaders(req));
  if (req.query.size > 0) {
    for (const [param, header] of RESPONSE_OVERRIDES) {
      const value = req.query.get(param);
      if (value !== null) headers[header] = value;
    }
  }
  if (withBody && v.tags) headers['x-amz-tagging-count'] = String(Object.keys(v.tags).length);
  // HEAD never decrypts: S3 answers it from metadata without calling KMS.
  const plain = withBody ? await core.sse.open(v.sse, bucket.name, v.body, req.ctx) : undefined;
  if (range) {
    headers['content-range'] = `bytes ${range.start}-${range.end}/${v.size}`;
    headers['content-length'] = String(range.end - range.start + 1);
    return { status: 206, headers, ...(plain && { body: plain.subarray(range.start, range.end + 1) }) };
  }
  headers['content-length'] = String(v.size);
  return { status: 200, headers, ...(plain && { body: plain }) };
}

/** GetObject: the body (decrypted through KMS for SSE-KMS), ranges and preconditions. */
export const getObject: Handler = (core, req) => readObject(core, req, true);
/** HeadObject: GetObject's headers without a body and without calling KMS. */
export const headObject: Handler = (core, req) => readObject(core, req, false);

/**
 * Deletes one key or version as the bucket's versioning says: removes it (unversioned), adds a
 * delete marker (Enabled), or replaces the null version with a null delete marker (Suspended).
 */
function deleteOne(bucket: Bucket, key: string, versionId: string | null): { versionId?: string; deleteMarker: boolean } {
  if (versionId !== null) {
    const removed = removeVersion(bucket, key, versionId === 'null' ? null : versionId);
    return { versionId, deleteMarker: removed?.deleteMarker === true };
  }
  if (bucket.versioning === undefined) {
    removeVersion(bucket, key, null);
    return { deleteMarker: false };
  }
  const marker = storeVersion(bucket, key, { versionId: null, deleteMarker: true, etag: '', size: 0, lastModified: Date.now(), body: EMPTY });
  return { versionId: marker.versionId ?? 'null', deleteMarker: true };
}

const EMPTY = Buffer.alloc(0);

/** DeleteObject, with optional `versionId` and `If-Match`. */
export const deleteObject: Handler = (core, req) => {
  const bucket = requireBucket(core, req);
  const key = requireKey(req);
  const versionId = req.query.get('versionId');
  if (versionId !== null) checkVersionIdFormat(versionId);
  const ifMatch = req.headers['if-match'];
  if (ifMatch !== undefined) checkWriteConditions({ 'if-match': ifMatch }, bucket, key);
  const r = deleteOne(bucket, key, versionId);
  const h = baseHeaders(req);
  if (r.deleteMarker) h['x-amz-delete-marker'] = 'true';
  if (r.versionId !== undefined && (bucket.versioning || versionId !== null)) h['x-amz-version-id'] = r.versionId;
  return { status: 204, headers: h };
};

/** DeleteObjects: up to 1000 keys/versions; `Quiet` leaves out the successes. */
export const deleteObjects: Handler = (core, req) => {
  const bucket = requireBucket(core, req);
  if (req.headers['content-md5'] === undefined && !CHECKSUM_HEADERS.some((c) => req.headers[c] !== undefined)) {
    throw s3Error('InvalidRequest', 'Missing required header for this request: Content-MD5 OR x-amz-checksum-*', 400);
  }
  verifyDigests(req.headers, req.body);
  const doc = parseXmlBody(req.body, 'Delete', ['Object']);
  const objects = childObjects(doc, 'Object');
  const quiet = childText(doc, 'Quiet') === 'true';
  if (objects.length === 0 || objects.length > 1000) {
    throw s3Error('MalformedXML', 'The XML you provided was not well-formed or did not validate against our published schema', 400);
  }
  const results: XmlChild[] = [];
  for (const o of objects) {
    const key = childText(o, 'Key');
    const versionId = childText(o, 'VersionId') ?? null;
    if (key === undefined) {
      throw s3Error('MalformedXML', 'The XML you provided was not well-formed or did not validate against our published schema', 400);
    }
    try {
      if (versionId !== null) checkVersionIdFormat(versionId);
      const r = deleteOne(bucket, key, versionId);
      if (quiet) continue;
      results.push([
        'Deleted',
        [
          ['Key', key],
          versionId !== null && ['VersionId', versionId],
          r.deleteMarker && ['DeleteMarker', true],
          r.deleteMarker && r.versionId !== undefined && ['DeleteMarkerVersionId', r.versionId],
        ],
      ]);
    } catch (err) {
      if (!(err instanceof AwsError)) throw err;
      results.push([
        'Error',
        [['Key', key], versionId !== null && ['VersionId', versionId], ['Code', String(err.code)], ['Message', err.message]],
      ]);
    }
  }
  return xmlResponse(req, 'DeleteResult', results);
};

/** The version a subresource request (tagging, ACL, encryption) targets; delete markers are 405. */
function targetVersion(bucket: Bucket, key: string, req: S3Request): ObjectVersion {
  const versionId = req.query.get('versionId');
  if (versionId === null) {
    const latest = latestVersion(bucket, key);
    if (!latest || latest.deleteMarker) {
      if (latest?.deleteMarker && req.op.endsWith('Tagging')) throw methodNotAllowedOnMarker(req.method);
      throw s3Error('NoSuchKey', 'The specified key does not exist.', 404, { Key: key });
    }
    return latest;
  }
  const v = lookupVersion(bucket, key, versionId);
  if (v.deleteMarker) throw methodNotAllowedOnMarker(req.method);
  return v;
}

function methodNotAllowedOnMarker(method: string) {
  return s3Error('MethodNotAllowed', 'The specified method is not allowed against this resource.', 405, {
    Method: method,
    ResourceType: 'DeleteMarker',
  });
}

function versionHeader(req: S3Request, bucket: Bucket, v: ObjectVersion): Record<string, string> {
  return bucket.versioning ? { ...baseHeaders(req), 'x-amz-version-id': v.versionId ?? 'null' } : baseHeaders(req);
}

/** PutObjectTagging: replaces a version's tag set. */
export const putObjectTagging: Handler = (core, req) => {
  const bucket = requireBucket(core, req);
  const key = requireKey(req);
  const doc = parseXmlBody(req.body, 'Tagging', ['Tag']);
  const set = childObject(doc, 'TagSet');
  if (!set) throw s3Error('MalformedXML', 'The XML you provided was not well-formed or did not validate against our published schema', 400);
  const pairs = childObjects(set, 'Tag').map((t): [string, string] => [childText(t, 'Key') ?? '', childText(t, 'Value') ?? '']);
  const tags = validateTags(pairs);
  const v = targetVersion(bucket, key, req);
  if (tags) v.tags = tags;
  else delete v.tags;
  return { status: 200, headers: versionHeader(req, bucket, v) };
};

/** GetObjectTagging: a version's tag set. */
export const getObjectTagging: Handler = (core, req) => {
  const bucket = requireBucket(core, req);
  const key = requireKey(req);
  const v = targetVersion(bucket, key, req);
  const tags = Object.entries(v.tags ?? {}).map(([k, val]): XmlChild => ['Tag', [['Key', k], ['Value', val]]]);
  return xmlResponse(req, 'Tagging', [['TagSet', tags]], bucket.versioning ? { 'x-amz-version-id': v.versionId ?? 'null' } : {});
};

/** DeleteObjectTagging: clears a version's tag set. */
export const deleteObjectTagging: Handler = (core, req) => {
  const bucket = requireBucket(core, req);
  const key = requireKey(req);
  const v = targetVersion(bucket, key, req);
  delete v.tags;
  return { status: 204, headers: versionHeader(req, bucket, v) };
};

const ALL_USERS = 'http://acs.amazonaws.com/groups/global/AllUsers';
const AUTH_USERS = 'http://acs.amazonaws.com/groups/global/AuthenticatedUsers';
const XSI = 'xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"';

function grantsFor(acl: string, ownerId: string): XmlChild[] {
  const owner: XmlChild = ['Grant', [[`Grantee ${XSI} xsi:type="CanonicalUser"`, [['ID', ownerId]]], ['Permission', 'FULL_CONTROL']]];
  const group = (uri: string, perm: string): XmlChild => ['Grant', [[`Grantee ${XSI} xsi:type="Group"`, [['URI', uri]]], ['Permission', perm]]];
  switch (acl) {
    case 'public-read':
      return [owner, group(ALL_USERS, 'READ')];
    case 'public-read-write':
      return [owner, group(ALL_USERS, 'READ'), group(ALL_USERS, 'WRITE')];
    case 'authenticated-read':
      return [owner, group(AUTH_USERS, 'READ')];
    default:
      return [owner];
  }
}

/** GetObjectAcl: the grants of the stored canned ACL (owner FULL_CONTROL plus the canned groups). */
export const getObjectAcl: Handler = (core, req) => {
  const bucket = requireBucket(core, req);
  const key = requireKey(req);
  const v = targetVersion(bucket, key, req);
  const ownerId = canonicalId(bucket.accountId);
  return xmlResponse(
    req,
    'AccessControlPolicy',
    [['Owner', [['ID', ownerId]]], ['AccessControlList', grantsFor(v.acl ?? 'private', ownerId)]],
    bucket.versioning ? { 'x-amz-version-id': v.versionId ?? 'null' } : {},
  );
};

/** PutObjectAcl: canned ACLs (`x-amz-acl`) only. */
export const putObjectAcl: Handler = (core, req) => {
  const bucket = requireBucket(core, req);
  const key = requireKey(req);
  if (req.body.length > 0 || Object.keys(req.headers).some((h) => h.startsWith('x-amz-grant-'))) {
    throw notImplemented('AccessControlPolicy (aws-local stores canned ACLs only)');
  }
  if (req.headers['x-amz-acl'] === undefined) {
    throw s3Error('MissingSecurityHeader', 'Your request was missing a required header', 400, { MissingHeaderName: 'x-amz-acl' });
  }
  const acl = cannedAclOf(req.headers);
  const v = targetVersion(bucket, key, req);
  if (acl) v.acl = acl;
  else delete v.acl;
  return { status: 200, headers: versionHeader(req, bucket, v) };
};

const KMS_ARN_RE = /^arn:aws[-a-z0-9]*:kms:[-a-z0-9]*:([0-9]{12}):key\/.+$/;

/**
 * UpdateObjectEncryption: puts an object (or one version) under another SSE-KMS key without
 * moving its data. An SSE-KMS object's data key is re-wrapped with one KMS ReEncrypt; an SSE-S3
 * object gets a new data key. ETag, LastModified, storage class, checksums, tags stay.
 */
export const updateObjectEncryption: Handler = async (core, req) => {
  const bucket = requireBucket(core, req);
  const key = requireKey(req);
  const doc = parseXmlBody(req.body, 'ObjectEncryption');
  const kms = childObject(doc, 'SSE-KMS');
  if (!kms) {
    throw s3Error(
      'InvalidRequest',
      'Requests that modify an object encryption configuration require a valid new encryption type. Valid values are SSEKMS. Modify the request to specify SSE-KMS for the updated encryption type, and then try again.',
    );
  }
  const arn = childText(kms, 'KMSKeyArn');
  if (arn === undefined || arn === '') {
    throw s3Error(
      'InvalidRequest',
      "Requests that modify an object's encryption type to SSE-KMS require an AWS KMS key Amazon Resource Name (ARN). Modify the request to specify a KMS key ARN, and then try again.",
    );
  }
  const m = KMS_ARN_RE.exec(arn);
  if (!m) {
    throw s3Error(
      'InvalidRequest',
      "Requests that modify an object's encryption type to SSE-KMS require a valid AWS KMS key Amazon Resource Name (ARN). Confirm that you have a correctly formatted KMS key ARN in your request, and then try again.",
    );
  }
  const bk = childText(kms, 'BucketKeyEnabled');
  if (bk !== undefined && bk !== 'true' && bk !== 'false') {
    throw s3Error(
      'InvalidRequest',
      "The BucketKeyEnabled value isn't valid. Valid values are true or false. Modify the request to specify a valid value, and then try again.",
    );
  }
  if (m[1] !== bucket.accountId) {
    throw s3Error(
      'AccessDenied',
      'The AWS KMS key in the request must be owned by the same account as the bucket. Modify the request to specify a KMS key from the same account, and then try again.',
      403,
    );
  }
  const v = targetVersion(bucket, key, req);
  const bucketKey = bk === 'true';
  const keyArn = core.sse.resolve(arn, req.ctx);
  if (!v.sse) {
    throw s3Error(
      'InvalidRequest',
      "The UpdateObjectEncryption operation doesn't supported unencrypted source objects. Only source objects encrypted with SSE-S3 or SSE-KMS are supported.",
    );
  }
  if (v.sse.alg === 'aws:kms') {
    const sse = await core.sse.rewrap(v.sse, keyArn, bucketKey, req.ctx);
    v.sse = sse;
  } else {
    const body = v.body;
    const sealed = await core.sse.seal({ alg: 'aws:kms', keyId: keyArn, bucketKey }, bucket, key, body, req.ctx);
    // Only swap if no other request changed the stored bytes meanwhile.
    if (v.body === body) {
      v.body = sealed.body;
      v.sse = sealed.sse;
    }
  }
  return { status: 200, headers: baseHeaders(req) };
};
