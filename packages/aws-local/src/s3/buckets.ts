import type { RawResponse } from '../http.js';
import { baseHeaders, ownerXml, requireBucket, xmlResponse, type Handler } from './core.js';
import { invalidArgument, s3Error } from './errors.js';
import { newBucket, type EncryptionRule } from './model.js';
import { isoDate } from './request.js';
import { childObject, childObjects, childText, parseXmlBody, type XmlChild } from './xml.js';

const BUCKET_NAME_RE = /^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$/;

function validateBucketName(name: string): void {
  if (!BUCKET_NAME_RE.test(name) || name.includes('..') || /^\d+\.\d+\.\d+\.\d+$/.test(name) || name.startsWith('xn--')) {
    throw s3Error('InvalidBucketName', 'The specified bucket is not valid.', 400, { BucketName: name });
  }
}

/**
 * CreateBucket. As on AWS: bucket names are global; re-creating your own bucket is a no-op 200
 * in us-east-1 and BucketAlreadyOwnedByYou (409) elsewhere; the LocationConstraint must match
 * the Region the request was signed for.
 */
export const createBucket: Handler = (core, req) => {
  const name = req.bucket as string;
  validateBucketName(name);
  let location: string | undefined;
  if (req.body.length > 0) {
    const cfg = parseXmlBody(req.body, 'CreateBucketConfiguration');
    location = childText(cfg, 'LocationConstraint');
  }
  const region = req.ctx.region;
  if (location !== undefined && location !== '' && location !== region) {
    throw s3Error(
      'IllegalLocationConstraintException',
      `The ${location} location constraint is incompatible for the region specific endpoint this request was sent to.`,
    );
  }
  if ((location === undefined || location === '') && region !== 'us-east-1') {
    throw s3Error(
      'IllegalLocationConstraintException',
      'The unspecified location constraint is incompatible for the region specific endpoint this request was sent to.',
    );
  }
  if (location === 'us-east-1') {
    throw s3Error('InvalidLocationConstraint', 'The specified location-constraint is not valid', 400, { LocationConstraint: location });
  }
  core.controls.checkDeny('s3', req.op, req.ctx, name);
  const existing = core.buckets.get(name);
  if (existing) {
    if (existing.accountId !== req.ctx.accountId) {
      throw s3Error(
        'BucketAlreadyExists',
        'The requested bucket name is not available. The bucket namespace is shared by all users of the system. Please select a different name and try again.',
        409,
        { BucketName: name },
      );
    }
    if (existing.region !== 'us-east-1' || region !== 'us-east-1') {
      throw s3Error(
        'BucketAlreadyOwnedByYou',
        'Your previous request to create the named bucket succeeded and you already own it.',
        409,
        { BucketName: name },
      );
    }
  } else {
    core.buckets.set(name, newBucket(name, req.ctx.accountId, region));
  }
  return { status: 200, headers: { ...baseHeaders(req), location: `/${name}` } };
};

/** HeadBucket: 200 with the bucket's Region, or a bodiless 404/403. */
export const headBucket: Handler = (core, req) => {
  const bucket = requireBucket(core, req);
  return {
    status: 200,
    headers: { ...baseHeaders(req), 'x-amz-bucket-region': bucket.region, 'x-amz-access-point-alias': 'false' },
  };
};

/** GetBucketLocation: the Region, empty for us-east-1 as on AWS. */
export const getBucketLocation: Handler = (core, req) => {
  const bucket = requireBucket(core, req);
  return {
    status: 200,
    headers: { 'content-type': 'application/xml', ...baseHeaders(req) },
    body:
      '<?xml version="1.0" encoding="UTF-8"?>\n' +
      `<LocationConstraint xmlns="http://s3.amazonaws.com/doc/2006-03-01/">${bucket.region === 'us-east-1' ? '' : bucket.region}</LocationConstraint>`,
  };
};

/** ListBuckets: the caller's account's buckets by name, with prefix and max-buckets paging. */
export const listBuckets: Handler = (core, req) => {
  core.controls.checkDeny('s3', req.op, req.ctx);
  const prefix = req.query.get('prefix') ?? '';
  const region = req.query.get('bucket-region');
  const maxText = req.query.get('max-buckets');
  const max = maxText === null ? 10_000 : Number(maxText);
  if (!Number.isInteger(max) || max < 1 || max > 10_000) {
    throw invalidArgument('Argument max-buckets must be an integer between 1 and 10000', 'max-buckets', maxText ?? '');
  }
  const token = req.query.get('continuation-token');
  const after = token ? Buffer.from(token, 'base64url').toString('utf8') : '';
  const mine = [...core.buckets.values()]
    .filter((b) => b.accountId === req.ctx.accountId && b.name.startsWith(prefix) && (!region || b.region === region))
    .filter((b) => b.name > after)
    .sort((a, b) => (a.name < b.name ? -1 : 1));
  const page = mine.slice(0, max);
  const truncated = mine.length > max;
  const last = page[page.length - 1];
  const children: XmlChild[] = [
    ownerXml(req.ctx.accountId),
    [
      'Buckets',
      page.map((b): XmlChild => ['Bucket', [['Name', b.name], ['CreationDate', isoDate(b.created)], ['BucketRegion', b.region]]]),
    ],
    truncated && last && ['ContinuationToken', Buffer.from(last.name).toString('base64url')],
    prefix !== '' && ['Prefix', prefix],
  ];
  return xmlResponse(req, 'ListAllMyBucketsResult', children);
};

/** DeleteBucket: only an empty bucket (no versions, no delete markers), else BucketNotEmpty. */
export const deleteBucket: Handler = (core, req) => {
  const bucket = requireBucket(core, req);
  if (bucket.objects.size > 0) {
    throw s3Error(
      'BucketNotEmpty',
      bucket.versioning
        ? 'The bucket you tried to delete is not empty. You must delete all versions in the bucket.'
        : 'The bucket you tried to delete is not empty',
      409,
      { BucketName: bucket.name },
    );
  }
  core.buckets.delete(bucket.name);
  return { status: 204, headers: baseHeaders(req) };
};

/** PutBucketVersioning: `Enabled` or `Suspended`; anything else is MalformedXML. */
export const putBucketVersioning: Handler = (core, req) => {
  const bucket = requireBucket(core, req);
  const cfg = parseXmlBody(req.body, 'VersioningConfiguration');
  const status = childText(cfg, 'Status');
  if (status !== undefined && status !== 'Enabled' && status !== 'Suspended') {
    throw s3Error('MalformedXML', 'The XML you provided was not well-formed or did not validate against our published schema', 400);
  }
  const mfa = childText(cfg, 'MfaDelete');
  if (mfa === 'Enabled') throw s3Error('InvalidRequest', 'DevPay and Mfa are mutually exclusive authorization methods.', 400);
  if (status !== undefined) bucket.versioning = status;
  return { status: 200, headers: baseHeaders(req) };
};

/** GetBucketVersioning: no `Status` until versioning was first set. */
export const getBucketVersioning: Handler = (core, req) => {
  const bucket = requireBucket(core, req);
  return xmlResponse(req, 'VersioningConfiguration', [bucket.versioning !== undefined && ['Status', bucket.versioning]]);
};

/** PutBucketEncryption: the default SSE for writes that give none (one rule). */
export const putBucketEncryption: Handler = (core, req) => {
  const bucket = requireBucket(core, req);
  const cfg = parseXmlBody(req.body, 'ServerSideEncryptionConfiguration', ['Rule']);
  const rules = childObjects(cfg, 'Rule');
  const malformed = () =>
    s3Error('MalformedXML', 'The XML you provided was not well-formed or did not validate against our published schema', 400);
  if (rules.length !== 1) throw malformed();
  const rule = rules[0] as (typeof rules)[number];
  const def = childObject(rule, 'ApplyServerSideEncryptionByDefault');
  if (!def) throw malformed();
  const alg = childText(def, 'SSEAlgorithm');
  const keyId = childText(def, 'KMSMasterKeyID');
  const bk = childText(rule, 'BucketKeyEnabled');
  if (alg === 'aws:kms:dsse') throw s3Error('NotImplemented', 'DSSE-KMS is not supported by aws-local', 501);
  if (alg !== 'AES256' && alg !== 'aws:kms') throw malformed();
  if (keyId !== undefined && alg !== 'aws:kms') {
    throw invalidArgument(
      'a KMSMasterKeyID is not applicable if the default sse algorithm is not aws:kms or aws:kms:dsse',
      'ApplyServerSideEncryptionByDefault',
    );
  }
  if (bk !== undefined && bk !== 'true' && bk !== 'false') throw malformed();
  const next: EncryptionRule = {
    alg,
    ...(keyId !== undefined && keyId !== '' && { kmsKeyId: keyId }),
    bucketKeyEnabled: bk === 'true',
  };
  bucket.encryption = next;
  return { status: 200, headers: baseHeaders(req) };
};

/** GetBucketEncryption: the configured rule, or S3's default SSE-S3 rule. */
export const getBucketEncryption: Handler = (core, req) => {
  const bucket = requireBucket(core, req);
  const rule: EncryptionRule = bucket.encryption ?? { alg: 'AES256', bucketKeyEnabled: false };
  return xmlResponse(req, 'ServerSideEncryptionConfiguration', [
    [
      'Rule',
      [
        [
          'ApplyServerSideEncryptionByDefault',
          [['SSEAlgorithm', rule.alg], rule.kmsKeyId !== undefined && ['KMSMasterKeyID', rule.kmsKeyId]],
        ],
        ['BucketKeyEnabled', rule.bucketKeyEnabled],
      ],
    ],
  ]);
};

/** DeleteBucketEncryption: back to the default SSE-S3. */
export const deleteBucketEncryption: Handler = (core, req): RawResponse => {
  const bucket = requireBucket(core, req);
  delete bucket.encryption;
  return { status: 204, headers: baseHeaders(req) };
};
