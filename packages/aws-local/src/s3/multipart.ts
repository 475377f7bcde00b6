import { createHash, randomBytes } from 'node:crypto';
import {
  baseHeaders,
  canonicalId,
  checkWriteConditions,
  quoted,
  requireBucket,
  requireKey,
  xmlResponse,
  type Handler,
  type S3Core,
} from './core.js';
import { copySourceVersionHeader, resolveCopySource } from './copy.js';
import { invalidArgument, noSuchUpload, s3Error } from './errors.js';
import { storeVersion, type Bucket, type Part, type Upload } from './model.js';
import { makeVersion, stillThere, writeHeaders } from './objects.js';
import {
  cannedAclOf,
  isoDate,
  storageClassOf,
  storedMetadata,
  taggingHeader,
  verifyDigests,
  type S3Request,
} from './request.js';
import { openWith, requestedSse, sealWith, sseHeaders } from './sse.js';
import { childObjects, childText, parseXmlBody, type XmlChild } from './xml.js';

const MAX_PART_NUMBER = 10_000;

function requireUpload(bucket: Bucket, key: string, req: S3Request): Upload {
  const id = req.query.get('uploadId') ?? '';
  const upload = bucket.uploads.get(id);
  if (!upload || upload.key !== key) throw noSuchUpload(id);
  return upload;
}

function partNumberOf(req: S3Request): number {
  const text = req.query.get('partNumber') ?? '';
  const n = Number(text);
  if (!/^\d+$/.test(text) || n < 1 || n > MAX_PART_NUMBER) {
    throw invalidArgument('Part number must be an integer between 1 and 10000, inclusive', 'partNumber', text);
  }
  return n;
}

/** The upload's data key (one KMS Decrypt, or the bucket-key cache), or undefined for SSE-S3. */
async function uploadDataKey(core: S3Core, bucket: Bucket, upload: Upload, req: S3Request): Promise<Buffer | undefined> {
  const sse = upload.sse;
  if (!sse || sse.alg !== 'aws:kms') return undefined;
  return core.sse.dataKeyOf(sse, bucket.name, req.ctx);
}

/** CreateMultipartUpload: fixes the object's metadata, tags, storage class, ACL and encryption. */
export const createMultipartUpload: Handler = async (core, req) => {
  const bucket = requireBucket(core, req);
  const key = requireKey(req);
  const storageClass = storageClassOf(req.headers);
  const tags = taggingHeader(req.headers);
  const acl = cannedAclOf(req.headers);
  const meta = storedMetadata(req.headers, false);
  const sseReq = requestedSse(req.headers, bucket);
  const { sse } = await core.sse.newDataKey(sseReq, bucket, key, req.ctx);
  stillThere(core, bucket);
  const upload: Upload = {
    uploadId: randomBytes(36).toString('base64url'),
    key,
    initiated: Date.now(),
    initiator: req.ctx.accessKeyId,
    parts: new Map(),
    ...(storageClass !== undefined && { storageClass }),
    ...(tags !== undefined && { tags }),
    ...(acl !== undefined && { acl }),
    ...(meta !== undefined && { meta }),
    sse,
  };
  bucket.uploads.set(upload.uploadId, upload);
  return xmlResponse(
    req,
    'InitiateMultipartUploadResult',
    [['Bucket', bucket.name], ['Key', key], ['UploadId', upload.uploadId]],
    sseHeaders(sse),
  );
};

async function storePart(core: S3Core, req: S3Request, bucket: Bucket, upload: Upload, n: number, plain: Buffer): Promise<Part> {
  const dataKey = await uploadDataKey(core, bucket, upload, req);
  const part: Part = {
    etag: createHash('md5').update(plain).digest('hex'),
    size: plain.length,
    lastModified: Date.now(),
    body: dataKey ? sealWith(dataKey, plain) : plain,
  };
  if (bucket.uploads.get(upload.uploadId) !== upload) throw noSuchUpload(upload.uploadId);
  upload.parts.set(n, part);
  return part;
}

/** UploadPart: stores one part, encrypted like the object will be. */
export const uploadPart: Handler = async (core, req) => {
  const bucket = requireBucket(core, req);
  const key = requireKey(req);
  const n = partNumberOf(req);
  const upload = requireUpload(bucket, key, req);
  verifyDigests(req.headers, req.body);
  const part = await storePart(core, req, bucket, upload, n, req.body);
  return { status: 200, headers: { ...baseHeaders(req), etag: quoted(part.etag), ...sseHeaders(upload.sse) } };
};

/** UploadPartCopy: a part from (a byte range of) an existing object, with copy-source preconditions. */
export const uploadPartCopy: Handler = async (core, req) => {
  const bucket = requireBucket(core, req);
  const key = requireKey(req);
  const n = partNumberOf(req);
  const upload = requireUpload(bucket, key, req);
  const src = resolveCopySource(core, req);
  const rangeHeader = req.headers['x-amz-copy-source-range'];
  let start = 0;
  let end = src.version.size - 1;
  if (rangeHeader !== undefined) {
    const m = /^bytes=(\d+)-(\d+)$/.exec(rangeHeader.trim());
    if (!m) {
      throw invalidArgument(
        'The x-amz-copy-source-range value must be of the form bytes=first-last where first and last are the zero-based offsets of the first and last bytes to copy',
        'x-amz-copy-source-range',
        rangeHeader,
      );
    }
    start = Number(m[1]);
    end = Number(m[2]);
    if (end < start || end >= src.version.size) {
      throw invalidArgument(
        `Range specified is not valid for source object of size: ${src.version.size}`,
        'x-amz-copy-source-range',
        rangeHeader,
      );
    }
  }
  const plain = await core.sse.open(src.version.sse, src.bucket.name, src.version.body, req.ctx);
  const part = await storePart(core, req, bucket, upload, n, plain.subarray(start, end + 1));
  return xmlResponse(req, 'CopyPartResult', [['ETag', quoted(part.etag)], ['LastModified', isoDate(part.lastModified)]], {
    ...sseHeaders(upload.sse),
    ...copySourceVersionHeader(src),
  });
};

/**
 * CompleteMultipartUpload: parts must be listed in ascending order with their ETags, and every
 * part but the last must be at least the minimum part size. The ETag is the MD5 of the parts'
 * binary MD5s, then `-N`.
 */
export const completeMultipartUpload: Handler = async (core, req) => {
  const bucket = requireBucket(core, req);
  const key = requireKey(req);
  const upload = requireUpload(bucket, key, req);
  const doc = parseXmlBody(req.body, 'CompleteMultipartUpload', ['Part']);
  const listed = childObjects(doc, 'Part').map((p) => ({
    n: Number(childText(p, 'PartNumber')),
    etag: (childText(p, 'ETag') ?? '').replace(/^"|"$/g, ''),
  }));
  if (listed.length === 0) {
    throw s3Error('MalformedXML', 'The XML you provided was not well-formed or did not validate against our published schema', 400);
  }
  let prev = 0;
  for (const p of listed) {
    if (!Number.isInteger(p.n) || p.n <= prev) {
      throw s3Error('InvalidPartOrder', 'The list of parts was not in ascending order. Parts list must be specified in order by part number.', 400, {
        UploadId: upload.uploadId,
      });
    }
    prev = p.n;
  }
  const parts = listed.map((p) => {
    const part = upload.parts.get(p.n);
    if (!part || part.etag !== p.etag) {
      throw s3Error(
        'InvalidPart',
        "One or more of the specified parts could not be found.  The part may not have been uploaded, or the specified entity tag may not have matched the part's entity tag.",
        400,
        { UploadId: upload.uploadId, PartNumber: String(p.n), ETag: p.etag },
      );
    }
    return part;
  });
  for (const [i, part] of parts.entries()) {
    if (i < parts.length - 1 && part.size < core.minPartSize) {
      throw s3Error('EntityTooSmall', 'Your proposed upload is smaller than the minimum allowed size', 400, {
        ProposedSize: String(part.size),
        MinSizeAllowed: String(core.minPartSize),
        PartNumber: String(listed[i]?.n),
        ETag: part.etag,
      });
    }
  }
  checkWriteConditions(req.headers, bucket, key);
  const dataKey = await uploadDataKey(core, bucket, upload, req);
  const plain = Buffer.concat(parts.map((p) => (dataKey ? openWith(dataKey, p.body) : p.body)));
  const md5s = Buffer.concat(parts.map((p) => Buffer.from(p.etag, 'hex')));
  const etag = `${createHash('md5').update(md5s).digest('hex')}-${parts.length}`;
  stillThere(core, bucket);
  if (bucket.uploads.get(upload.uploadId) !== upload) throw noSuchUpload(upload.uploadId);
  checkWriteConditions(req.headers, bucket, key);
  bucket.uploads.delete(upload.uploadId);
  const v = storeVersion(
    bucket,
    key,
    makeVersion({
      etag,
      size: plain.length,
      body: dataKey ? sealWith(dataKey, plain) : plain,
      storageClass: upload.storageClass,
      meta: upload.meta,
      tags: upload.tags,
      acl: upload.acl,
      sse: upload.sse,
      partCount: parts.length,
    }),
  );
  const location = `/${encodeURIComponent(bucket.name)}/${key.split('/').map(encodeURIComponent).join('/')}`;
  return xmlResponse(
    req,
    'CompleteMultipartUploadResult',
    [['Location', location], ['Bucket', bucket.name], ['Key', key], ['ETag', quoted(etag)]],
    writeHeaders(req, bucket, v),
  );
};

/** AbortMultipartUpload: discards the upload and its parts. */
export const abortMultipartUpload: Handler = (core, req) => {
  const bucket = requireBucket(core, req);
  const key = requireKey(req);
  const upload = requireUpload(bucket, key, req);
  bucket.uploads.delete(upload.uploadId);
  return { status: 204, headers: baseHeaders(req) };
};

/** ListParts with max-parts (<= 1000) and part-number-marker paging. */
export const listParts: Handler = (core, req) => {
  const bucket = requireBucket(core, req);
  const key = requireKey(req);
  const upload = requireUpload(bucket, key, req);
  const maxText = req.query.get('max-parts');
  const max = maxText === null ? 1000 : Number(maxText);
  if (!Number.isInteger(max) || max < 0) throw invalidArgument('Provided max-parts not an integer or within integer range', 'max-parts', maxText ?? '');
  const markerText = req.query.get('part-number-marker');
  const marker = markerText === null ? 0 : Number(markerText);
  if (!Number.isInteger(marker) || marker < 0) {
    throw invalidArgument('Provided part-number-marker not an integer or within integer range', 'part-number-marker', markerText ?? '');
  }
  const all = [...upload.parts.entries()].filter(([n]) => n > marker).sort((a, b) => a[0] - b[0]);
  const page = all.slice(0, Math.min(max, 1000));
  const truncated = all.length > page.length;
  const last = page[page.length - 1];
  const owner: XmlChild[] = [['ID', canonicalId(bucket.accountId)]];
  return xmlResponse(req, 'ListPartsResult', [
    ['Bucket', bucket.name],
    ['Key', key],
    ['UploadId', upload.uploadId],
    ['PartNumberMarker', marker],
    ['NextPartNumberMarker', last ? last[0] : marker],
    ['MaxParts', max],
    ['IsTruncated', truncated],
    ...page.map(([n, p]): XmlChild => [
      'Part',
      [['PartNumber', n], ['LastModified', isoDate(p.lastModified)], ['ETag', quoted(p.etag)], ['Size', p.size]],
    ]),
    ['Initiator', [['ID', canonicalId(bucket.accountId)]]],
    ['Owner', owner],
    ['StorageClass', upload.storageClass ?? 'STANDARD'],
  ]);
};

/** ListMultipartUploads (no paging markers beyond max-uploads; prefix supported). */
export const listMultipartUploads: Handler = (core, req) => {
  const bucket = requireBucket(core, req);
  const prefix = req.query.get('prefix') ?? '';
  const maxText = req.query.get('max-uploads');
  const max = maxText === null ? 1000 : Math.min(1000, Number(maxText));
  if (!Number.isInteger(max) || max < 0) throw invalidArgument('Provided max-uploads not an integer or within integer range', 'max-uploads', maxText ?? '');
  const all = [...bucket.uploads.values()]
    .filter((u) => u.key.startsWith(prefix))
    .sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : a.initiated - b.initiated));
  const page = all.slice(0, max);
  return xmlResponse(req, 'ListMultipartUploadsResult', [
    ['Bucket', bucket.name],
    ['KeyMarker', ''],
    ['UploadIdMarker', ''],
    ['Prefix', prefix],
    ['MaxUploads', max],
    ['IsTruncated', all.length > page.length],
    ...page.map((u): XmlChild => [
      'Upload',
      [
        ['Key', u.key],
        ['UploadId', u.uploadId],
        ['Initiator', [['ID', canonicalId(bucket.accountId)]]],
        ['Owner', [['ID', canonicalId(bucket.accountId)]]],
        ['StorageClass', u.storageClass ?? 'STANDARD'],
        ['Initiated', isoDate(u.initiated)],
      ],
    ]),
  ]);
};
