import { createHash } from 'node:crypto';
import {
  CopyObjectCommand,
  CreateBucketCommand,
  DeleteBucketCommand,
  DeleteObjectCommand,
  DeleteObjectsCommand,
  DeleteObjectTaggingCommand,
  GetBucketLocationCommand,
  GetObjectAclCommand,
  GetObjectCommand,
  GetObjectTaggingCommand,
  HeadBucketCommand,
  HeadObjectCommand,
  ListBucketsCommand,
  ListObjectsCommand,
  ListObjectsV2Command,
  PutObjectAclCommand,
  PutObjectCommand,
  PutObjectTaggingCommand,
  S3Client,
} from '@aws-sdk/client-s3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { clientConfig, startEndpoint, type Endpoint } from './helpers.js';
import { BucketTracker, expectS3Error, failure } from './s3-support.js';

let ep: Endpoint;
let s3: S3Client;
let buckets: BucketTracker;

beforeAll(async () => {
  ep = await startEndpoint();
  s3 = new S3Client(clientConfig(ep));
  buckets = new BucketTracker(s3);
});

afterAll(async () => {
  await buckets.cleanup();
  s3.destroy();
  await ep.close();
});

async function newBucket(): Promise<string> {
  const Bucket = buckets.name();
  await s3.send(new CreateBucketCommand({ Bucket }));
  return Bucket;
}

async function text(out: { Body?: { transformToString(): Promise<string> } | undefined }): Promise<string> {
  return (await out.Body?.transformToString()) ?? '';
}

const md5 = (s: string | Buffer) => createHash('md5').update(s).digest('hex');

describe('buckets', () => {
  it('CreateBucket makes a bucket that HeadBucket and ListBuckets see', async () => {
    const Bucket = await newBucket();

    const head = await s3.send(new HeadBucketCommand({ Bucket }));
    const list = await s3.send(new ListBucketsCommand({}));

    expect(head.BucketRegion).toBe(ep.region);
    expect(list.Buckets?.map((b) => b.Name)).toContain(Bucket);
  });

  it('CreateBucket of your own bucket again is a no-op in us-east-1', async () => {
    const Bucket = await newBucket();

    const again = await s3.send(new CreateBucketCommand({ Bucket }));

    expect(again.$metadata.httpStatusCode).toBe(200);
  });

  it('CreateBucket of your own bucket again outside us-east-1 is BucketAlreadyOwnedByYou', async () => {
    const eu = new S3Client({ ...clientConfig(ep), region: 'eu-west-1' });
    const Bucket = buckets.name();
    await eu.send(new CreateBucketCommand({ Bucket, CreateBucketConfiguration: { LocationConstraint: 'eu-west-1' } }));

    await expectS3Error(
      eu.send(new CreateBucketCommand({ Bucket, CreateBucketConfiguration: { LocationConstraint: 'eu-west-1' } })),
      'BucketAlreadyOwnedByYou',
      409,
    );
    const loc = await eu.send(new GetBucketLocationCommand({ Bucket }));
    expect(loc.LocationConstraint).toBe('eu-west-1');
    await eu.send(new DeleteBucketCommand({ Bucket }));
    eu.destroy();
  });

  it('CreateBucket with a LocationConstraint other than the request Region is IllegalLocationConstraintException', async () => {
    const eu = new S3Client({ ...clientConfig(ep), region: 'eu-west-1' });

    await expectS3Error(
      eu.send(new CreateBucketCommand({ Bucket: buckets.name(), CreateBucketConfiguration: { LocationConstraint: 'ap-south-1' } })),
      'IllegalLocationConstraintException',
      400,
    );
    eu.destroy();
  });

  it.skipIf(!!process.env['AWS_ENDPOINT_URL'])('CreateBucket of a name another account owns is BucketAlreadyExists', async () => {
    const Bucket = await newBucket();
    const other = new S3Client(clientConfig(ep, { accessKeyId: '111122223333', secretAccessKey: 'x' }));

    await expectS3Error(other.send(new CreateBucketCommand({ Bucket })), 'BucketAlreadyExists', 409);
    await expectS3Error(other.send(new ListObjectsV2Command({ Bucket })), 'AccessDenied', 403);
    other.destroy();
  });

  it('CreateBucket with an invalid name is InvalidBucketName', async () => {
    await expectS3Error(s3.send(new CreateBucketCommand({ Bucket: 'Not_Valid' })), 'InvalidBucketName', 400);
  });

  it('a missing bucket is NoSuchBucket (and a bodiless 404 for HeadBucket)', async () => {
    const Bucket = buckets.name('missing');

    const err = await expectS3Error(s3.send(new GetObjectCommand({ Bucket, Key: 'k' })), 'NoSuchBucket', 404);
    await expectS3Error(s3.send(new HeadBucketCommand({ Bucket })), 'NotFound', 404);

    expect(err['BucketName']).toBe(Bucket);
  });

  it('DeleteBucket refuses a bucket with objects (BucketNotEmpty) and deletes an empty one', async () => {
    const Bucket = await newBucket();
    await s3.send(new PutObjectCommand({ Bucket, Key: 'k', Body: 'x' }));

    await expectS3Error(s3.send(new DeleteBucketCommand({ Bucket })), 'BucketNotEmpty', 409);
    await s3.send(new DeleteObjectCommand({ Bucket, Key: 'k' }));
    await s3.send(new DeleteBucketCommand({ Bucket }));

    await expectS3Error(s3.send(new HeadBucketCommand({ Bucket })), 'NotFound', 404);
  });
});

describe('PutObject, GetObject, HeadObject', () => {
  it('stores the body, metadata, content headers, storage class and tags, with an MD5 ETag', async () => {
    const Bucket = await newBucket();
    const expires = new Date('2031-01-02T03:04:05Z');

    const put = await s3.send(
      new PutObjectCommand({
        Bucket,
        Key: 'dir/a file ü.txt',
        Body: 'hello world',
        ContentType: 'text/plain',
        ContentEncoding: 'identity',
        ContentDisposition: 'attachment; filename="a.txt"',
        ContentLanguage: 'en',
        CacheControl: 'max-age=60',
        Expires: expires,
        Metadata: { owner: 'team-a', purpose: 'test' },
        StorageClass: 'STANDARD_IA',
        Tagging: 'env=dev&tier=gold',
      }),
    );
    const got = await s3.send(new GetObjectCommand({ Bucket, Key: 'dir/a file ü.txt' }));

    expect(put.ETag).toBe(`"${md5('hello world')}"`);
    expect(await text(got)).toBe('hello world');
    expect(got).toMatchObject({
      ETag: put.ETag,
      ContentLength: 11,
      ContentType: 'text/plain',
      ContentEncoding: 'identity',
      ContentDisposition: 'attachment; filename="a.txt"',
      ContentLanguage: 'en',
      CacheControl: 'max-age=60',
      Metadata: { owner: 'team-a', purpose: 'test' },
      StorageClass: 'STANDARD_IA',
      TagCount: 2,
      ServerSideEncryption: 'AES256',
    });
    expect(got.ExpiresString ?? got.Expires?.toUTCString()).toBe(expires.toUTCString());
  });

  it('HeadObject returns the object headers without a body', async () => {
    const Bucket = await newBucket();
    const put = await s3.send(new PutObjectCommand({ Bucket, Key: 'k', Body: 'abc', Metadata: { a: '1' } }));

    const head = await s3.send(new HeadObjectCommand({ Bucket, Key: 'k' }));

    expect(head).toMatchObject({ ETag: put.ETag, ContentLength: 3, Metadata: { a: '1' } });
    expect(head.LastModified).toBeInstanceOf(Date);
  });

  it('a missing key is NoSuchKey on GetObject and a bodiless 404 on HeadObject', async () => {
    const Bucket = await newBucket();

    const err = await expectS3Error(s3.send(new GetObjectCommand({ Bucket, Key: 'nope' })), 'NoSuchKey', 404);
    await expectS3Error(s3.send(new HeadObjectCommand({ Bucket, Key: 'nope' })), 'NotFound', 404);

    expect(err['Key']).toBe('nope');
  });

  it('a Content-MD5 that does not match the body is BadDigest and stores nothing', async () => {
    const Bucket = await newBucket();
    const wrong = createHash('md5').update('other').digest('base64');

    await expectS3Error(s3.send(new PutObjectCommand({ Bucket, Key: 'k', Body: 'body', ContentMD5: wrong })), 'BadDigest', 400);

    await expectS3Error(s3.send(new HeadObjectCommand({ Bucket, Key: 'k' })), 'NotFound', 404);
  });

  it('an invalid storage class is InvalidStorageClass', async () => {
    const Bucket = await newBucket();

    await expectS3Error(
      s3.send(new PutObjectCommand({ Bucket, Key: 'k', Body: 'x', StorageClass: 'NOPE' as 'STANDARD' })),
      'InvalidStorageClass',
      400,
    );
  });

  it('duplicate tag keys in x-amz-tagging are InvalidTag', async () => {
    const Bucket = await newBucket();

    await expectS3Error(s3.send(new PutObjectCommand({ Bucket, Key: 'k', Body: 'x', Tagging: 'a=1&a=2' })), 'InvalidTag', 400);
  });
});

describe('ranged GetObject', () => {
  const body = '0123456789';
  let Bucket: string;
  beforeAll(async () => {
    Bucket = await newBucket();
    await s3.send(new PutObjectCommand({ Bucket, Key: 'digits', Body: body }));
  });

  it('bytes=a-b answers 206 with that slice and a Content-Range', async () => {
    const got = await s3.send(new GetObjectCommand({ Bucket, Key: 'digits', Range: 'bytes=2-5' }));

    expect(got.$metadata.httpStatusCode).toBe(206);
    expect(await text(got)).toBe('2345');
    expect(got.ContentRange).toBe('bytes 2-5/10');
    expect(got.ContentLength).toBe(4);
  });

  it('bytes=a- reads to the end and bytes=-n reads the last n bytes', async () => {
    const from = await s3.send(new GetObjectCommand({ Bucket, Key: 'digits', Range: 'bytes=7-' }));
    const suffix = await s3.send(new GetObjectCommand({ Bucket, Key: 'digits', Range: 'bytes=-3' }));

    expect(await text(from)).toBe('789');
    expect(await text(suffix)).toBe('789');
    expect(suffix.ContentRange).toBe('bytes 7-9/10');
  });

  it('an end past the object is clamped to the last byte', async () => {
    const got = await s3.send(new GetObjectCommand({ Bucket, Key: 'digits', Range: 'bytes=8-100' }));

    expect(await text(got)).toBe('89');
    expect(got.ContentRange).toBe('bytes 8-9/10');
  });

  it('a range that starts past the end is 416 InvalidRange', async () => {
    await expectS3Error(s3.send(new GetObjectCommand({ Bucket, Key: 'digits', Range: 'bytes=10-12' })), 'InvalidRange', 416);
  });
});

describe('conditional reads', () => {
  let Bucket: string;
  let etag: string;
  beforeAll(async () => {
    Bucket = await newBucket();
    etag = (await s3.send(new PutObjectCommand({ Bucket, Key: 'k', Body: 'v1' }))).ETag ?? '';
  });

  it('If-Match with a stale ETag is 412 PreconditionFailed naming If-Match', async () => {
    const err = await expectS3Error(s3.send(new GetObjectCommand({ Bucket, Key: 'k', IfMatch: '"0000"' })), 'PreconditionFailed', 412);

    expect(err['Condition']).toBe('If-Match');
  });

  it('If-None-Match with the current ETag is 304 Not Modified', async () => {
    const err = await failure(s3.send(new GetObjectCommand({ Bucket, Key: 'k', IfNoneMatch: etag })));

    expect(err.$metadata.httpStatusCode).toBe(304);
  });

  it('If-Modified-Since after the last write is 304 and If-Unmodified-Since before it is 412', async () => {
    const now = new Date();
    const past = new Date(Date.now() - 3_600_000);

    const notModified = await failure(s3.send(new HeadObjectCommand({ Bucket, Key: 'k', IfModifiedSince: now })));
    await expectS3Error(s3.send(new GetObjectCommand({ Bucket, Key: 'k', IfUnmodifiedSince: past })), 'PreconditionFailed', 412);

    expect(notModified.$metadata.httpStatusCode).toBe(304);
  });

  it('If-Match with the current ETag wins over a failing If-Unmodified-Since', async () => {
    const got = await s3.send(
      new GetObjectCommand({ Bucket, Key: 'k', IfMatch: etag, IfUnmodifiedSince: new Date(Date.now() - 3_600_000) }),
    );

    expect(await text(got)).toBe('v1');
  });
});

describe('conditional writes', () => {
  it('If-None-Match: * creates a new key and fails with 412 on an existing one', async () => {
    const Bucket = await newBucket();

    await s3.send(new PutObjectCommand({ Bucket, Key: 'k', Body: 'first', IfNoneMatch: '*' }));
    const err = await expectS3Error(
      s3.send(new PutObjectCommand({ Bucket, Key: 'k', Body: 'second', IfNoneMatch: '*' })),
      'PreconditionFailed',
      412,
    );

    expect(err['Condition']).toBe('If-None-Match');
    expect(await text(await s3.send(new GetObjectCommand({ Bucket, Key: 'k' })))).toBe('first');
  });

  it('If-Match with the current ETag overwrites and with a stale one is 412', async () => {
    const Bucket = await newBucket();
    const v1 = await s3.send(new PutObjectCommand({ Bucket, Key: 'k', Body: 'v1' }));

    await s3.send(new PutObjectCommand({ Bucket, Key: 'k', Body: 'v2', IfMatch: v1.ETag }));
    await expectS3Error(s3.send(new PutObjectCommand({ Bucket, Key: 'k', Body: 'v3', IfMatch: v1.ETag })), 'PreconditionFailed', 412);

    expect(await text(await s3.send(new GetObjectCommand({ Bucket, Key: 'k' })))).toBe('v2');
  });

  it('If-Match on a key that does not exist is 404 NoSuchKey', async () => {
    const Bucket = await newBucket();

    await expectS3Error(s3.send(new PutObjectCommand({ Bucket, Key: 'k', Body: 'x', IfMatch: '"abc"' })), 'NoSuchKey', 404);
  });

  it('CopyObject with destination If-None-Match: * onto an existing key is 412', async () => {
    const Bucket = await newBucket();
    await s3.send(new PutObjectCommand({ Bucket, Key: 'src', Body: 'a' }));
    await s3.send(new PutObjectCommand({ Bucket, Key: 'dst', Body: 'b' }));

    await expectS3Error(
      s3.send(new CopyObjectCommand({ Bucket, Key: 'dst', CopySource: `${Bucket}/src`, IfNoneMatch: '*' })),
      'PreconditionFailed',
      412,
    );
  });

  it('CopyObject with destination If-Match of the current ETag overwrites it', async () => {
    const Bucket = await newBucket();
    await s3.send(new PutObjectCommand({ Bucket, Key: 'src', Body: 'new' }));
    const dst = await s3.send(new PutObjectCommand({ Bucket, Key: 'dst', Body: 'old' }));

    await s3.send(new CopyObjectCommand({ Bucket, Key: 'dst', CopySource: `${Bucket}/src`, IfMatch: dst.ETag }));

    expect(await text(await s3.send(new GetObjectCommand({ Bucket, Key: 'dst' })))).toBe('new');
  });
});

describe('DeleteObject and DeleteObjects', () => {
  it('DeleteObject removes the key and is 204 even for a missing key', async () => {
    const Bucket = await newBucket();
    await s3.send(new PutObjectCommand({ Bucket, Key: 'k', Body: 'x' }));

    const first = await s3.send(new DeleteObjectCommand({ Bucket, Key: 'k' }));
    const again = await s3.send(new DeleteObjectCommand({ Bucket, Key: 'k' }));

    expect([first.$metadata.httpStatusCode, again.$metadata.httpStatusCode]).toEqual([204, 204]);
    await expectS3Error(s3.send(new HeadObjectCommand({ Bucket, Key: 'k' })), 'NotFound', 404);
  });

  it('DeleteObjects deletes many keys and reports each; Quiet reports none', async () => {
    const Bucket = await newBucket();
    for (const Key of ['a', 'b', 'c']) await s3.send(new PutObjectCommand({ Bucket, Key, Body: Key }));

    const verbose = await s3.send(new DeleteObjectsCommand({ Bucket, Delete: { Objects: [{ Key: 'a' }, { Key: 'b' }] } }));
    const quiet = await s3.send(new DeleteObjectsCommand({ Bucket, Delete: { Objects: [{ Key: 'c' }], Quiet: true } }));
    const left = await s3.send(new ListObjectsV2Command({ Bucket }));

    expect(verbose.Deleted?.map((d) => d.Key).sort()).toEqual(['a', 'b']);
    expect(quiet.Deleted ?? []).toEqual([]);
    expect(left.KeyCount).toBe(0);
  });
});

describe('CopyObject', () => {
  it('MetadataDirective COPY keeps metadata and tags; storage class and ACL come from the request', async () => {
    const Bucket = await newBucket();
    await s3.send(
      new PutObjectCommand({
        Bucket,
        Key: 'src',
        Body: 'data',
        ContentType: 'text/csv',
        Metadata: { m: '1' },
        Tagging: 't=1',
        StorageClass: 'STANDARD_IA',
        ACL: 'public-read',
      }),
    );

    const copy = await s3.send(new CopyObjectCommand({ Bucket, Key: 'dst', CopySource: `${Bucket}/src` }));
    const head = await s3.send(new HeadObjectCommand({ Bucket, Key: 'dst' }));
    const tags = await s3.send(new GetObjectTaggingCommand({ Bucket, Key: 'dst' }));
    const acl = await s3.send(new GetObjectAclCommand({ Bucket, Key: 'dst' }));

    expect(copy.CopyObjectResult?.ETag).toBe(`"${md5('data')}"`);
    expect(copy.CopyObjectResult?.LastModified).toBeInstanceOf(Date);
    expect(head).toMatchObject({ ContentType: 'text/csv', Metadata: { m: '1' } });
    expect(head.StorageClass).toBeUndefined();
    expect(tags.TagSet).toEqual([{ Key: 't', Value: '1' }]);
    expect(acl.Grants?.map((g) => g.Permission)).toEqual(['FULL_CONTROL']);
  });

  it('MetadataDirective REPLACE and TaggingDirective REPLACE take metadata and tags from the request', async () => {
    const Bucket = await newBucket();
    await s3.send(new PutObjectCommand({ Bucket, Key: 'src', Body: 'data', Metadata: { old: '1' }, Tagging: 'old=1' }));

    await s3.send(
      new CopyObjectCommand({
        Bucket,
        Key: 'dst',
        CopySource: `${Bucket}/src`,
        MetadataDirective: 'REPLACE',
        Metadata: { new: '2' },
        ContentType: 'application/json',
        TaggingDirective: 'REPLACE',
        Tagging: 'new=2',
        StorageClass: 'GLACIER_IR',
      }),
    );
    const head = await s3.send(new HeadObjectCommand({ Bucket, Key: 'dst' }));
    const tags = await s3.send(new GetObjectTaggingCommand({ Bucket, Key: 'dst' }));

    expect(head.Metadata).toEqual({ new: '2' });
    expect(head.ContentType).toBe('application/json');
    expect(head.StorageClass).toBe('GLACIER_IR');
    expect(tags.TagSet).toEqual([{ Key: 'new', Value: '2' }]);
  });

  it('CopySourceIfMatch with a stale ETag is 412 and copies nothing', async () => {
    const Bucket = await newBucket();
    const v1 = await s3.send(new PutObjectCommand({ Bucket, Key: 'src', Body: 'v1' }));
    await s3.send(new PutObjectCommand({ Bucket, Key: 'src', Body: 'v2' }));

    const err = await expectS3Error(
      s3.send(new CopyObjectCommand({ Bucket, Key: 'dst', CopySource: `${Bucket}/src`, CopySourceIfMatch: v1.ETag })),
      'PreconditionFailed',
      412,
    );

    expect(err['Condition']).toBe('x-amz-copy-source-If-Match');
    await expectS3Error(s3.send(new HeadObjectCommand({ Bucket, Key: 'dst' })), 'NotFound', 404);
  });

  it('CopySourceIfNoneMatch with the current ETag and CopySourceIfModifiedSince after the write are 412', async () => {
    const Bucket = await newBucket();
    const put = await s3.send(new PutObjectCommand({ Bucket, Key: 'src', Body: 'v1' }));
    const CopySource = `${Bucket}/src`;

    await expectS3Error(
      s3.send(new CopyObjectCommand({ Bucket, Key: 'dst', CopySource, CopySourceIfNoneMatch: put.ETag })),
      'PreconditionFailed',
      412,
    );
    await expectS3Error(
      s3.send(new CopyObjectCommand({ Bucket, Key: 'dst', CopySource, CopySourceIfModifiedSince: new Date() })),
      'PreconditionFailed',
      412,
    );
  });

  it('CopySourceIfUnmodifiedSince before the write is 412; after it the copy succeeds', async () => {
    const Bucket = await newBucket();
    await s3.send(new PutObjectCommand({ Bucket, Key: 'src', Body: 'v1' }));
    const CopySource = `${Bucket}/src`;

    await expectS3Error(
      s3.send(new CopyObjectCommand({ Bucket, Key: 'dst', CopySource, CopySourceIfUnmodifiedSince: new Date(Date.now() - 3_600_000) })),
      'PreconditionFailed',
      412,
    );
    const ok = await s3.send(
      new CopyObjectCommand({ Bucket, Key: 'dst', CopySource, CopySourceIfUnmodifiedSince: new Date(Date.now() + 60_000) }),
    );

    expect(ok.CopyObjectResult?.ETag).toBe(`"${md5('v1')}"`);
  });

  it('copying an object onto itself without changing anything is InvalidRequest', async () => {
    const Bucket = await newBucket();
    await s3.send(new PutObjectCommand({ Bucket, Key: 'k', Body: 'x' }));

    const err = await expectS3Error(
      s3.send(new CopyObjectCommand({ Bucket, Key: 'k', CopySource: `${Bucket}/k` })),
      'InvalidRequest',
      400,
    );

    expect(String(err['message'])).toContain('trying to copy an object to itself without changing');
  });

  it('copying an object onto itself with MetadataDirective REPLACE updates its metadata', async () => {
    const Bucket = await newBucket();
    await s3.send(new PutObjectCommand({ Bucket, Key: 'k', Body: 'x', Metadata: { v: '1' } }));

    await s3.send(new CopyObjectCommand({ Bucket, Key: 'k', CopySource: `${Bucket}/k`, MetadataDirective: 'REPLACE', Metadata: { v: '2' } }));
    const head = await s3.send(new HeadObjectCommand({ Bucket, Key: 'k' }));

    expect(head.Metadata).toEqual({ v: '2' });
  });

  it('copying from a missing source is NoSuchKey and an invalid directive is InvalidArgument', async () => {
    const Bucket = await newBucket();
    await s3.send(new PutObjectCommand({ Bucket, Key: 'src', Body: 'x' }));

    await expectS3Error(s3.send(new CopyObjectCommand({ Bucket, Key: 'dst', CopySource: `${Bucket}/missing` })), 'NoSuchKey', 404);
    await expectS3Error(
      s3.send(new CopyObjectCommand({ Bucket, Key: 'dst', CopySource: `${Bucket}/src`, MetadataDirective: 'MOVE' as 'COPY' })),
      'InvalidArgument',
      400,
    );
  });

  it('copies keys that need URL encoding', async () => {
    const Bucket = await newBucket();
    await s3.send(new PutObjectCommand({ Bucket, Key: 'a b/c+d?e=ü', Body: 'enc' }));

    await s3.send(new CopyObjectCommand({ Bucket, Key: 'copy', CopySource: `${Bucket}/${encodeURIComponent('a b/c+d?e=ü')}` }));

    expect(await text(await s3.send(new GetObjectCommand({ Bucket, Key: 'copy' })))).toBe('enc');
  });
});

describe('tagging and ACLs', () => {
  it('PutObjectTagging replaces the tag set, GetObjectTagging reads it, DeleteObjectTagging clears it', async () => {
    const Bucket = await newBucket();
    await s3.send(new PutObjectCommand({ Bucket, Key: 'k', Body: 'x', Tagging: 'a=1' }));

    await s3.send(new PutObjectTaggingCommand({ Bucket, Key: 'k', Tagging: { TagSet: [{ Key: 'b', Value: '2' }, { Key: 'c', Value: '3' }] } }));
    const after = await s3.send(new GetObjectTaggingCommand({ Bucket, Key: 'k' }));
    await s3.send(new DeleteObjectTaggingCommand({ Bucket, Key: 'k' }));
    const cleared = await s3.send(new GetObjectTaggingCommand({ Bucket, Key: 'k' }));

    expect(after.TagSet).toEqual([{ Key: 'b', Value: '2' }, { Key: 'c', Value: '3' }]);
    expect(cleared.TagSet ?? []).toEqual([]);
  });

  it('more than 10 tags is InvalidTag', async () => {
    const Bucket = await newBucket();
    await s3.send(new PutObjectCommand({ Bucket, Key: 'k', Body: 'x' }));
    const TagSet = Array.from({ length: 11 }, (_, i) => ({ Key: `k${i}`, Value: 'v' }));

    await expectS3Error(s3.send(new PutObjectTaggingCommand({ Bucket, Key: 'k', Tagging: { TagSet } })), 'InvalidTag', 400);
  });

  it('tagging a missing key is NoSuchKey', async () => {
    const Bucket = await newBucket();

    await expectS3Error(s3.send(new GetObjectTaggingCommand({ Bucket, Key: 'nope' })), 'NoSuchKey', 404);
  });

  it('canned ACLs are stored and shown as grants', async () => {
    const Bucket = await newBucket();
    await s3.send(new PutObjectCommand({ Bucket, Key: 'k', Body: 'x' }));

    const before = await s3.send(new GetObjectAclCommand({ Bucket, Key: 'k' }));
    await s3.send(new PutObjectAclCommand({ Bucket, Key: 'k', ACL: 'public-read' }));
    const after = await s3.send(new GetObjectAclCommand({ Bucket, Key: 'k' }));

    expect(before.Grants).toHaveLength(1);
    expect(after.Grants?.map((g) => [g.Grantee?.Type, g.Grantee?.URI ?? g.Grantee?.ID === after.Owner?.ID, g.Permission])).toEqual([
      ['CanonicalUser', true, 'FULL_CONTROL'],
      ['Group', 'http://acs.amazonaws.com/groups/global/AllUsers', 'READ'],
    ]);
  });
});

describe('ListObjectsV2 and ListObjects', () => {
  const keys = ['a/1', 'a/2', 'a/b/3', 'b/1', 'c', 'd/x/y', 'e'];
  let Bucket: string;
  beforeAll(async () => {
    Bucket = await newBucket();
    for (const Key of keys) await s3.send(new PutObjectCommand({ Bucket, Key, Body: Key }));
  });

  it('lists every key in order with size and ETag', async () => {
    const out = await s3.send(new ListObjectsV2Command({ Bucket }));

    expect(out.Contents?.map((c) => c.Key)).toEqual(keys);
    expect(out.KeyCount).toBe(keys.length);
    expect(out.IsTruncated).toBe(false);
    expect(out.Contents?.[0]).toMatchObject({ Size: 3, ETag: `"${md5('a/1')}"`, StorageClass: 'STANDARD' });
  });

  it('pages with MaxKeys and ContinuationToken without gaps or repeats', async () => {
    const seen: string[] = [];
    let ContinuationToken: string | undefined;
    let pages = 0;
    do {
      const out = await s3.send(new ListObjectsV2Command({ Bucket, MaxKeys: 3, ContinuationToken }));
      seen.push(...(out.Contents ?? []).map((c) => c.Key ?? ''));
      expect(out.KeyCount).toBeLessThanOrEqual(3);
      ContinuationToken = out.IsTruncated ? out.NextContinuationToken : undefined;
      pages++;
    } while (ContinuationToken);

    expect(seen).toEqual(keys);
    expect(pages).toBe(3);
  });

  it('StartAfter starts after the given key', async () => {
    const out = await s3.send(new ListObjectsV2Command({ Bucket, StartAfter: 'b/1' }));

    expect(out.Contents?.map((c) => c.Key)).toEqual(['c', 'd/x/y', 'e']);
    expect(out.StartAfter).toBe('b/1');
  });

  it('Delimiter rolls keys up into CommonPrefixes, within a Prefix too', async () => {
    const top = await s3.send(new ListObjectsV2Command({ Bucket, Delimiter: '/' }));
    const inA = await s3.send(new ListObjectsV2Command({ Bucket, Delimiter: '/', Prefix: 'a/' }));

    expect(top.Contents?.map((c) => c.Key)).toEqual(['c', 'e']);
    expect(top.CommonPrefixes?.map((p) => p.Prefix)).toEqual(['a/', 'b/', 'd/']);
    expect(top.KeyCount).toBe(5);
    expect(inA.Contents?.map((c) => c.Key)).toEqual(['a/1', 'a/2']);
    expect(inA.CommonPrefixes?.map((p) => p.Prefix)).toEqual(['a/b/']);
  });

  it('pages through CommonPrefixes with a continuation token', async () => {
    const first = await s3.send(new ListObjectsV2Command({ Bucket, Delimiter: '/', MaxKeys: 2 }));
    const second = await s3.send(
      new ListObjectsV2Command({ Bucket, Delimiter: '/', MaxKeys: 2, ContinuationToken: first.NextContinuationToken }),
    );

    expect(first.CommonPrefixes?.map((p) => p.Prefix)).toEqual(['a/', 'b/']);
    expect(first.IsTruncated).toBe(true);
    expect([...(second.CommonPrefixes ?? []).map((p) => p.Prefix), ...(second.Contents ?? []).map((c) => c.Key)]).toEqual(['d/', 'c']);
  });

  it('MaxKeys above 1000 is capped at 1000', async () => {
    const out = await s3.send(new ListObjectsV2Command({ Bucket, MaxKeys: 5000 }));

    expect(out.MaxKeys).toBe(1000);
  });

  it('EncodingType url encodes keys in the response', async () => {
    const B = await newBucket();
    await s3.send(new PutObjectCommand({ Bucket: B, Key: 'sp ace/ü', Body: 'x' }));

    const out = await s3.send(new ListObjectsV2Command({ Bucket: B, EncodingType: 'url' }));

    expect(out.EncodingType).toBe('url');
    expect(decodeURIComponent(out.Contents?.[0]?.Key ?? '')).toBe('sp ace/ü');
    expect(out.Contents?.[0]?.Key).not.toBe('sp ace/ü');
  });

  it('an invalid continuation token is InvalidArgument', async () => {
    await expectS3Error(s3.send(new ListObjectsV2Command({ Bucket, ContinuationToken: '%%%' })), 'InvalidArgument', 400);
  });

  it('ListObjects (v1) pages with Marker and NextMarker', async () => {
    const first = await s3.send(new ListObjectsCommand({ Bucket, MaxKeys: 4, Delimiter: '/' }));
    const second = await s3.send(new ListObjectsCommand({ Bucket, MaxKeys: 4, Delimiter: '/', Marker: first.NextMarker }));

    expect(first.IsTruncated).toBe(true);
    expect(first.NextMarker).toBe('d/');
    expect(second.Contents?.map((c) => c.Key)).toEqual(['e']);
  });
});
