import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  CreateAliasCommand,
  CreateKeyCommand,
  DescribeKeyCommand,
  DisableKeyCommand,
  EnableKeyCommand,
  KMSClient,
  ScheduleKeyDeletionCommand,
} from '@aws-sdk/client-kms';
import {
  CompleteMultipartUploadCommand,
  CopyObjectCommand,
  CreateBucketCommand,
  CreateMultipartUploadCommand,
  GetBucketEncryptionCommand,
  GetObjectCommand,
  GetObjectTaggingCommand,
  HeadObjectCommand,
  PutBucketEncryptionCommand,
  PutBucketVersioningCommand,
  PutObjectCommand,
  S3Client,
  UpdateObjectEncryptionCommand,
  UploadPartCommand,
  UploadPartCopyCommand,
} from '@aws-sdk/client-s3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startAwsLocal } from '../src/index.js';
import { clientConfig, CREDENTIALS, startEndpoint, uniqueName, type Endpoint } from './helpers.js';
import { BucketTracker, expectS3Error } from './s3-support.js';

/** Tests that read aws-local's usage log or drive its admin controls skip against other endpoints. */
const external = !!process.env['AWS_ENDPOINT_URL'];

let ep: Endpoint;
let s3: S3Client;
let kms: KMSClient;
let buckets: BucketTracker;

beforeAll(async () => {
  ep = await startEndpoint();
  s3 = new S3Client(clientConfig(ep));
  kms = new KMSClient(clientConfig(ep));
  buckets = new BucketTracker(s3);
});

afterAll(async () => {
  await buckets.cleanup();
  s3.destroy();
  kms.destroy();
  await ep.close();
});

async function newKey(): Promise<string> {
  const out = await kms.send(new CreateKeyCommand({ Description: 'aws-local s3 test' }));
  return out.KeyMetadata?.Arn ?? '';
}

async function newBucket(): Promise<string> {
  const Bucket = buckets.name('s3sse');
  await s3.send(new CreateBucketCommand({ Bucket }));
  return Bucket;
}

async function read(Bucket: string, Key: string, VersionId?: string): Promise<string> {
  const out = await s3.send(new GetObjectCommand({ Bucket, Key, VersionId }));
  return (await out.Body?.transformToString()) ?? '';
}

/** S3's KMS calls since `since`, from aws-local's usage log. */
/** A position in the usage log: calls after it are the ones the test's next steps made (times can share a millisecond). */
function mark(): number {
  return ep.local?.usage.all().length ?? 0;
}

/** KMS calls S3 made on the caller's behalf since `from` (a {@link mark}). */
function s3KmsCalls(from: number, eventName?: string) {
  return (ep.local?.usage.all() ?? []).slice(from).filter((e) => e.invokedBy === 's3.amazonaws.com' && (!eventName || e.eventName === eventName));
}

describe('SSE-KMS writes and reads', () => {
  it('PutObject with aws:kms returns the key as a full ARN and GetObject decrypts the body', async () => {
    const Bucket = await newBucket();
    const keyArn = await newKey();

    const put = await s3.send(new PutObjectCommand({ Bucket, Key: 'k', Body: 'secret body', ServerSideEncryption: 'aws:kms', SSEKMSKeyId: keyArn }));
    const got = await s3.send(new GetObjectCommand({ Bucket, Key: 'k' }));

    expect(put).toMatchObject({ ServerSideEncryption: 'aws:kms', SSEKMSKeyId: keyArn });
    expect(got).toMatchObject({ ServerSideEncryption: 'aws:kms', SSEKMSKeyId: keyArn });
    expect(await got.Body?.transformToString()).toBe('secret body');
  });

  it.skipIf(external)('the body of an SSE-KMS object is not stored in plaintext', async () => {
    const Bucket = await newBucket();
    const marker = `plaintext-marker-${uniqueName('x')}`;
    await s3.send(new PutObjectCommand({ Bucket, Key: 'k', Body: marker, ServerSideEncryption: 'aws:kms', SSEKMSKeyId: await newKey() }));

    const snapshot = ep.local?.s3.snapshot() as { buckets: Array<{ name: string; objects: Map<string, { body: Buffer }> }> };
    const stored = snapshot.buckets.find((b) => b.name === Bucket)?.objects.get('k');

    expect(stored?.body.length).toBeGreaterThan(0);
    expect(stored?.body.includes(Buffer.from(marker))).toBe(false);
  });

  it('SSEKMSKeyId is the full key ARN even when the request named an alias', async () => {
    const Bucket = await newBucket();
    const keyArn = await newKey();
    const alias = `alias/${uniqueName('s3sse')}`;
    await kms.send(new CreateAliasCommand({ AliasName: alias, TargetKeyId: keyArn }));

    const put = await s3.send(new PutObjectCommand({ Bucket, Key: 'k', Body: 'x', ServerSideEncryption: 'aws:kms', SSEKMSKeyId: alias }));
    const head = await s3.send(new HeadObjectCommand({ Bucket, Key: 'k' }));

    expect(put.SSEKMSKeyId).toBe(keyArn);
    expect(head.SSEKMSKeyId).toBe(keyArn);
  });

  it('aws:kms without a key id uses the aws/s3 AWS managed key', async () => {
    const Bucket = await newBucket();

    const put = await s3.send(new PutObjectCommand({ Bucket, Key: 'k', Body: 'x', ServerSideEncryption: 'aws:kms' }));
    const managed = await kms.send(new DescribeKeyCommand({ KeyId: 'alias/aws/s3' }));

    expect(managed.KeyMetadata?.KeyManager).toBe('AWS');
    expect(put.SSEKMSKeyId).toBe(managed.KeyMetadata?.Arn);
    expect(await read(Bucket, 'k')).toBe('x');
  });

  it('an encryption context is echoed back and the object reads with it', async () => {
    const Bucket = await newBucket();
    const context = Buffer.from(JSON.stringify({ app: 'rekey' })).toString('base64');

    const put = await s3.send(
      new PutObjectCommand({ Bucket, Key: 'k', Body: 'x', ServerSideEncryption: 'aws:kms', SSEKMSKeyId: await newKey(), SSEKMSEncryptionContext: context }),
    );

    const echoed = JSON.parse(Buffer.from(put.SSEKMSEncryptionContext ?? '', 'base64').toString('utf8')) as Record<string, string>;
    expect(echoed).toMatchObject({ app: 'rekey', 'aws:s3:arn': `arn:aws:s3:::${Bucket}/k` });
    expect(await read(Bucket, 'k')).toBe('x');
  });

  it('a KMS key id without aws:kms is InvalidArgument', async () => {
    const Bucket = await newBucket();

    await expectS3Error(s3.send(new PutObjectCommand({ Bucket, Key: 'k', Body: 'x', SSEKMSKeyId: await newKey() })), 'InvalidArgument', 400);
  });

  it('a key that does not exist is KMS.NotFoundException', async () => {
    const Bucket = await newBucket();
    const missing = `arn:aws:kms:${ep.region}:000000000000:key/00000000-0000-0000-0000-000000000000`;

    await expectS3Error(
      s3.send(new PutObjectCommand({ Bucket, Key: 'k', Body: 'x', ServerSideEncryption: 'aws:kms', SSEKMSKeyId: missing })),
      'KMS.NotFoundException',
      400,
    );
  });
});

describe('SSE-KMS and key state', () => {
  it('GetObject fails with KMS.DisabledException while the key is disabled and works again after EnableKey', async () => {
    const Bucket = await newBucket();
    const keyArn = await newKey();
    await s3.send(new PutObjectCommand({ Bucket, Key: 'k', Body: 'x', ServerSideEncryption: 'aws:kms', SSEKMSKeyId: keyArn }));

    await kms.send(new DisableKeyCommand({ KeyId: keyArn }));
    await expectS3Error(s3.send(new GetObjectCommand({ Bucket, Key: 'k' })), 'KMS.DisabledException', 400);
    const head = await s3.send(new HeadObjectCommand({ Bucket, Key: 'k' }));
    await expectS3Error(
      s3.send(new PutObjectCommand({ Bucket, Key: 'k2', Body: 'x', ServerSideEncryption: 'aws:kms', SSEKMSKeyId: keyArn })),
      'KMS.DisabledException',
      400,
    );
    await kms.send(new EnableKeyCommand({ KeyId: keyArn }));

    expect(head.SSEKMSKeyId).toBe(keyArn);
    expect(await read(Bucket, 'k')).toBe('x');
  });

  it('GetObject of an object whose key is pending deletion is KMS.KMSInvalidStateException', async () => {
    const Bucket = await newBucket();
    const keyArn = await newKey();
    await s3.send(new PutObjectCommand({ Bucket, Key: 'k', Body: 'x', ServerSideEncryption: 'aws:kms', SSEKMSKeyId: keyArn }));

    await kms.send(new ScheduleKeyDeletionCommand({ KeyId: keyArn, PendingWindowInDays: 7 }));

    await expectS3Error(s3.send(new GetObjectCommand({ Bucket, Key: 'k' })), 'KMS.KMSInvalidStateException', 400);
  });

  it('CopyObject from a source whose key is disabled fails with KMS.DisabledException', async () => {
    const Bucket = await newBucket();
    const keyArn = await newKey();
    await s3.send(new PutObjectCommand({ Bucket, Key: 'src', Body: 'x', ServerSideEncryption: 'aws:kms', SSEKMSKeyId: keyArn }));
    await kms.send(new DisableKeyCommand({ KeyId: keyArn }));

    await expectS3Error(
      s3.send(new CopyObjectCommand({ Bucket, Key: 'dst', CopySource: `${Bucket}/src`, ServerSideEncryption: 'aws:kms', SSEKMSKeyId: await newKey() })),
      'KMS.DisabledException',
      400,
    );
  });
});

describe('bucket default encryption and bucket keys', () => {
  it('a bucket without configuration reports SSE-S3 and encrypts new objects with AES256', async () => {
    const Bucket = await newBucket();

    const cfg = await s3.send(new GetBucketEncryptionCommand({ Bucket }));
    const put = await s3.send(new PutObjectCommand({ Bucket, Key: 'k', Body: 'x' }));

    expect(cfg.ServerSideEncryptionConfiguration?.Rules?.[0]?.ApplyServerSideEncryptionByDefault?.SSEAlgorithm).toBe('AES256');
    expect(put.ServerSideEncryption).toBe('AES256');
  });

  it('default SSE-KMS with a bucket key applies to writes that give no SSE headers', async () => {
    const Bucket = await newBucket();
    const keyArn = await newKey();

    await s3.send(
      new PutBucketEncryptionCommand({
        Bucket,
        ServerSideEncryptionConfiguration: {
          Rules: [{ ApplyServerSideEncryptionByDefault: { SSEAlgorithm: 'aws:kms', KMSMasterKeyID: keyArn }, BucketKeyEnabled: true }],
        },
      }),
    );
    const cfg = await s3.send(new GetBucketEncryptionCommand({ Bucket }));
    const put = await s3.send(new PutObjectCommand({ Bucket, Key: 'k', Body: 'x' }));

    expect(cfg.ServerSideEncryptionConfiguration?.Rules?.[0]).toEqual({
      ApplyServerSideEncryptionByDefault: { SSEAlgorithm: 'aws:kms', KMSMasterKeyID: keyArn },
      BucketKeyEnabled: true,
    });
    expect(put).toMatchObject({ ServerSideEncryption: 'aws:kms', SSEKMSKeyId: keyArn, BucketKeyEnabled: true });
    expect(await read(Bucket, 'k')).toBe('x');
  });

  it.skipIf(external)('a bucket key cuts the data-key calls S3 makes to KMS', async () => {
    const keyArn = await newKey();
    const withKey = await newBucket();
    const without = await newBucket();
    const since = mark();

    for (let i = 0; i < 5; i++) {
      await s3.send(new PutObjectCommand({ Bucket: withKey, Key: `k${i}`, Body: 'x', ServerSideEncryption: 'aws:kms', SSEKMSKeyId: keyArn, BucketKeyEnabled: true }));
    }
    const bucketKeyCalls = s3KmsCalls(since, 'GenerateDataKey').length;
    for (let i = 0; i < 5; i++) {
      await s3.send(new PutObjectCommand({ Bucket: without, Key: `k${i}`, Body: 'x', ServerSideEncryption: 'aws:kms', SSEKMSKeyId: keyArn }));
    }
    const perObjectCalls = s3KmsCalls(since, 'GenerateDataKey').length - bucketKeyCalls;

    expect(bucketKeyCalls).toBe(1);
    expect(perObjectCalls).toBe(5);
    for (let i = 0; i < 5; i++) expect(await read(withKey, `k${i}`)).toBe('x');
  });

  it.skipIf(external)("S3's KMS calls are in the usage log as invoked by s3.amazonaws.com for the caller", async () => {
    const Bucket = await newBucket();
    const keyArn = await newKey();
    const since = mark();

    await s3.send(new PutObjectCommand({ Bucket, Key: 'k', Body: 'x', ServerSideEncryption: 'aws:kms', SSEKMSKeyId: keyArn }));
    await read(Bucket, 'k');
    const calls = s3KmsCalls(since);

    expect(calls.map((c) => c.eventName)).toEqual(['GenerateDataKey', 'Decrypt']);
    for (const c of calls) {
      expect(c.accessKeyId).toBe(CREDENTIALS.accessKeyId);
      expect(c.keyArns).toContain(keyArn);
    }
  });
});

describe('in-place copy to a new key', () => {
  it('CopyObject onto itself with a new SSE-KMS key re-encrypts it and keeps metadata, tags and ETag', async () => {
    const Bucket = await newBucket();
    const oldKey = await newKey();
    const newKeyArn = await newKey();
    const put = await s3.send(
      new PutObjectCommand({
        Bucket,
        Key: 'k',
        Body: 'payload',
        ServerSideEncryption: 'aws:kms',
        SSEKMSKeyId: oldKey,
        Metadata: { m: '1' },
        ContentType: 'text/plain',
        Tagging: 't=1',
        StorageClass: 'STANDARD_IA',
      }),
    );

    const copy = await s3.send(
      new CopyObjectCommand({
        Bucket,
        Key: 'k',
        CopySource: `${Bucket}/k`,
        CopySourceIfMatch: put.ETag,
        MetadataDirective: 'COPY',
        TaggingDirective: 'COPY',
        StorageClass: 'STANDARD_IA',
        ServerSideEncryption: 'aws:kms',
        SSEKMSKeyId: newKeyArn,
      }),
    );
    await kms.send(new DisableKeyCommand({ KeyId: oldKey }));
    const got = await s3.send(new GetObjectCommand({ Bucket, Key: 'k' }));
    const tags = await s3.send(new GetObjectTaggingCommand({ Bucket, Key: 'k' }));

    expect(copy.SSEKMSKeyId).toBe(newKeyArn);
    expect(copy.CopyObjectResult?.ETag).toBe(put.ETag);
    expect(got).toMatchObject({ SSEKMSKeyId: newKeyArn, Metadata: { m: '1' }, ContentType: 'text/plain', StorageClass: 'STANDARD_IA' });
    expect(await got.Body?.transformToString()).toBe('payload');
    expect(tags.TagSet).toEqual([{ Key: 't', Value: '1' }]);
  });

  it('an in-place copy with a stale CopySourceIfMatch is 412 and leaves the object under its old key', async () => {
    const Bucket = await newBucket();
    const oldKey = await newKey();
    const stale = await s3.send(new PutObjectCommand({ Bucket, Key: 'k', Body: 'v1', ServerSideEncryption: 'aws:kms', SSEKMSKeyId: oldKey }));
    await s3.send(new PutObjectCommand({ Bucket, Key: 'k', Body: 'v2', ServerSideEncryption: 'aws:kms', SSEKMSKeyId: oldKey }));

    await expectS3Error(
      s3.send(
        new CopyObjectCommand({ Bucket, Key: 'k', CopySource: `${Bucket}/k`, CopySourceIfMatch: stale.ETag, ServerSideEncryption: 'aws:kms', SSEKMSKeyId: await newKey() }),
      ),
      'PreconditionFailed',
      412,
    );

    expect((await s3.send(new HeadObjectCommand({ Bucket, Key: 'k' }))).SSEKMSKeyId).toBe(oldKey);
  });
});

describe('UpdateObjectEncryption', () => {
  it('changes the SSE-KMS key and keeps ETag, LastModified, storage class, checksum and body', async () => {
    const Bucket = await newBucket();
    const oldKey = await newKey();
    const newKeyArn = await newKey();
    await s3.send(
      new PutObjectCommand({
        Bucket,
        Key: 'k',
        Body: 'payload',
        ServerSideEncryption: 'aws:kms',
        SSEKMSKeyId: oldKey,
        StorageClass: 'STANDARD_IA',
        ChecksumAlgorithm: 'SHA256',
      }),
    );
    const before = await s3.send(new HeadObjectCommand({ Bucket, Key: 'k', ChecksumMode: 'ENABLED' }));

    await s3.send(new UpdateObjectEncryptionCommand({ Bucket, Key: 'k', ObjectEncryption: { SSEKMS: { KMSKeyArn: newKeyArn } } }));
    await kms.send(new DisableKeyCommand({ KeyId: oldKey }));
    const after = await s3.send(new HeadObjectCommand({ Bucket, Key: 'k', ChecksumMode: 'ENABLED' }));

    expect(after.SSEKMSKeyId).toBe(newKeyArn);
    expect(after.ETag).toBe(before.ETag);
    expect(after.LastModified).toEqual(before.LastModified);
    expect(after.StorageClass).toBe('STANDARD_IA');
    expect(after.ChecksumSHA256).toBe(before.ChecksumSHA256);
    expect(after.ChecksumSHA256).toBeDefined();
    expect(await read(Bucket, 'k')).toBe('payload');
  });

  it('works on a noncurrent version and leaves the current one alone', async () => {
    const Bucket = await newBucket();
    await s3.send(new PutBucketVersioningCommand({ Bucket, VersioningConfiguration: { Status: 'Enabled' } }));
    const oldKey = await newKey();
    const newKeyArn = await newKey();
    const v1 = await s3.send(new PutObjectCommand({ Bucket, Key: 'k', Body: 'one', ServerSideEncryption: 'aws:kms', SSEKMSKeyId: oldKey }));
    await s3.send(new PutObjectCommand({ Bucket, Key: 'k', Body: 'two', ServerSideEncryption: 'aws:kms', SSEKMSKeyId: oldKey }));

    await s3.send(
      new UpdateObjectEncryptionCommand({ Bucket, Key: 'k', VersionId: v1.VersionId, ObjectEncryption: { SSEKMS: { KMSKeyArn: newKeyArn, BucketKeyEnabled: true } } }),
    );
    const old = await s3.send(new HeadObjectCommand({ Bucket, Key: 'k', VersionId: v1.VersionId }));
    const current = await s3.send(new HeadObjectCommand({ Bucket, Key: 'k' }));

    expect(old).toMatchObject({ SSEKMSKeyId: newKeyArn, BucketKeyEnabled: true, ETag: v1.ETag });
    expect(current.SSEKMSKeyId).toBe(oldKey);
    expect(await read(Bucket, 'k', v1.VersionId)).toBe('one');
  });

  it('moves an SSE-S3 object to SSE-KMS without changing its ETag', async () => {
    const Bucket = await newBucket();
    const keyArn = await newKey();
    const put = await s3.send(new PutObjectCommand({ Bucket, Key: 'k', Body: 'plain' }));

    await s3.send(new UpdateObjectEncryptionCommand({ Bucket, Key: 'k', ObjectEncryption: { SSEKMS: { KMSKeyArn: keyArn } } }));
    const got = await s3.send(new GetObjectCommand({ Bucket, Key: 'k' }));

    expect(got).toMatchObject({ ServerSideEncryption: 'aws:kms', SSEKMSKeyId: keyArn, ETag: put.ETag });
    expect(await got.Body?.transformToString()).toBe('plain');
  });

  it.skipIf(external)('re-wraps the data key with one ReEncrypt by S3 and no new data key', async () => {
    const Bucket = await newBucket();
    const oldKey = await newKey();
    const newKeyArn = await newKey();
    await s3.send(new PutObjectCommand({ Bucket, Key: 'k', Body: 'x', ServerSideEncryption: 'aws:kms', SSEKMSKeyId: oldKey }));
    const since = mark();

    await s3.send(new UpdateObjectEncryptionCommand({ Bucket, Key: 'k', ObjectEncryption: { SSEKMS: { KMSKeyArn: newKeyArn } } }));
    const calls = s3KmsCalls(since);

    expect(calls.map((c) => c.eventName)).toEqual(['ReEncrypt']);
    expect(calls[0]?.keyArns).toEqual(expect.arrayContaining([oldKey, newKeyArn]));
  });

  it('a key alias instead of a key ARN is InvalidRequest', async () => {
    const Bucket = await newBucket();
    await s3.send(new PutObjectCommand({ Bucket, Key: 'k', Body: 'x', ServerSideEncryption: 'aws:kms', SSEKMSKeyId: await newKey() }));

    await expectS3Error(
      s3.send(new UpdateObjectEncryptionCommand({ Bucket, Key: 'k', ObjectEncryption: { SSEKMS: { KMSKeyArn: 'alias/aws/s3' } } })),
      'InvalidRequest',
      400,
    );
  });

  it('a key ARN that does not exist is KMS.NotFoundException and a missing object NoSuchKey', async () => {
    const Bucket = await newBucket();
    await s3.send(new PutObjectCommand({ Bucket, Key: 'k', Body: 'x', ServerSideEncryption: 'aws:kms', SSEKMSKeyId: await newKey() }));
    const missing = `arn:aws:kms:${ep.region}:000000000000:key/00000000-0000-0000-0000-000000000000`;

    await expectS3Error(
      s3.send(new UpdateObjectEncryptionCommand({ Bucket, Key: 'k', ObjectEncryption: { SSEKMS: { KMSKeyArn: missing } } })),
      'KMS.NotFoundException',
      400,
    );
    await expectS3Error(
      s3.send(new UpdateObjectEncryptionCommand({ Bucket, Key: 'nope', ObjectEncryption: { SSEKMS: { KMSKeyArn: await newKey() } } })),
      'NoSuchKey',
      404,
    );
  });

  it('fails with KMS.DisabledException when the object key is disabled', async () => {
    const Bucket = await newBucket();
    const oldKey = await newKey();
    await s3.send(new PutObjectCommand({ Bucket, Key: 'k', Body: 'x', ServerSideEncryption: 'aws:kms', SSEKMSKeyId: oldKey }));
    await kms.send(new DisableKeyCommand({ KeyId: oldKey }));

    await expectS3Error(
      s3.send(new UpdateObjectEncryptionCommand({ Bucket, Key: 'k', ObjectEncryption: { SSEKMS: { KMSKeyArn: await newKey() } } })),
      'KMS.DisabledException',
      400,
    );
  });
});

describe('conditional writes with SSE-KMS', () => {
  it.skipIf(external)('of concurrent If-None-Match: * writes of one key, exactly one wins even while S3 waits on KMS', async () => {
    const Bucket = await newBucket();
    const keyArn = await newKey();
    const kmsService = ep.local?.kms;
    if (!kmsService) throw new Error('needs in-process aws-local');
    // Slow KMS down so that the writers' KMS calls overlap, as they do against a remote KMS.
    const original = kmsService.serviceGenerateDataKey;
    kmsService.serviceGenerateDataKey = async (args) => {
      await new Promise((r) => setTimeout(r, 20));
      return original.call(kmsService, args);
    };
    try {
      const results = await Promise.allSettled(
        Array.from({ length: 5 }, (_, i) =>
          s3.send(new PutObjectCommand({ Bucket, Key: 'k', Body: `writer-${i}`, IfNoneMatch: '*', ServerSideEncryption: 'aws:kms', SSEKMSKeyId: keyArn })),
        ),
      );
      const winners = results.filter((r) => r.status === 'fulfilled');
      const losers = results.flatMap((r) => (r.status === 'rejected' ? [(r.reason as { name: string }).name] : []));

      expect(winners).toHaveLength(1);
      expect(losers).toEqual(['PreconditionFailed', 'PreconditionFailed', 'PreconditionFailed', 'PreconditionFailed']);
      expect(await read(Bucket, 'k')).toMatch(/^writer-\d$/);
    } finally {
      kmsService.serviceGenerateDataKey = original;
    }
  });
});

describe('SSE-KMS multipart', () => {
  it('parts and the completed object are encrypted under the upload key; UploadPartCopy reads an SSE-KMS source', async () => {
    const Bucket = await newBucket();
    const keyArn = await newKey();
    await s3.send(new PutObjectCommand({ Bucket, Key: 'src', Body: 'copied-part', ServerSideEncryption: 'aws:kms', SSEKMSKeyId: await newKey() }));
    const create = await s3.send(new CreateMultipartUploadCommand({ Bucket, Key: 'mpu', ServerSideEncryption: 'aws:kms', SSEKMSKeyId: keyArn }));
    const UploadId = create.UploadId ?? '';

    const p1 = await s3.send(new UploadPartCommand({ Bucket, Key: 'mpu', UploadId, PartNumber: 1, Body: Buffer.alloc(5 * 1024 * 1024, 1) }));
    const p2 = await s3.send(new UploadPartCopyCommand({ Bucket, Key: 'mpu', UploadId, PartNumber: 2, CopySource: `${Bucket}/src` }));
    const done = await s3.send(
      new CompleteMultipartUploadCommand({
        Bucket,
        Key: 'mpu',
        UploadId,
        MultipartUpload: { Parts: [{ PartNumber: 1, ETag: p1.ETag }, { PartNumber: 2, ETag: p2.CopyPartResult?.ETag }] },
      }),
    );
    const got = await s3.send(new GetObjectCommand({ Bucket, Key: 'mpu', Range: 'bytes=5242880-' }));

    expect(create).toMatchObject({ ServerSideEncryption: 'aws:kms', SSEKMSKeyId: keyArn });
    expect(p1.SSEKMSKeyId).toBe(keyArn);
    expect(done).toMatchObject({ ServerSideEncryption: 'aws:kms', SSEKMSKeyId: keyArn });
    expect(await got.Body?.transformToString()).toBe('copied-part');
  });
});

describe('admin controls', () => {
  it.skipIf(external)('a KMS throttle while S3 calls KMS is 503 SlowDown', async () => {
    const Bucket = await newBucket();
    const keyArn = await newKey();
    const controls = ep.local?.controls;
    controls?.setQuota({ rps: 0.001, burst: 1 });
    try {
      await s3.send(new PutObjectCommand({ Bucket, Key: 'a', Body: 'x', ServerSideEncryption: 'aws:kms', SSEKMSKeyId: keyArn }));
      await expectS3Error(
        s3.send(new PutObjectCommand({ Bucket, Key: 'b', Body: 'x', ServerSideEncryption: 'aws:kms', SSEKMSKeyId: keyArn })),
        'SlowDown',
        503,
      );
    } finally {
      controls?.setQuota(null);
    }
  });

  it.skipIf(external)('a deny rule on kms:Decrypt for the caller makes GetObject of an SSE-KMS object AccessDenied', async () => {
    const Bucket = await newBucket();
    const keyArn = await newKey();
    await s3.send(new PutObjectCommand({ Bucket, Key: 'k', Body: 'x', ServerSideEncryption: 'aws:kms', SSEKMSKeyId: keyArn }));
    const remove = ep.local?.controls.addDenyRule({ service: 'kms', operation: 'Decrypt', caller: CREDENTIALS.accessKeyId });
    try {
      await expectS3Error(s3.send(new GetObjectCommand({ Bucket, Key: 'k' })), 'AccessDenied', 403);
    } finally {
      remove?.();
    }
  });

  it.skipIf(external)('a deny rule on an S3 operation and bucket is AccessDenied', async () => {
    const Bucket = await newBucket();
    const remove = ep.local?.controls.addDenyRule({ service: 's3', operation: 'PutObject', resource: Bucket });
    try {
      await expectS3Error(s3.send(new PutObjectCommand({ Bucket, Key: 'k', Body: 'x' })), 'AccessDenied', 403);
    } finally {
      remove?.();
    }
  });

  it.skipIf(external)('an injected fault on an S3 operation is 500 InternalError', async () => {
    const Bucket = await newBucket();
    ep.local?.controls.setFault('s3:PutObject', { probability: 1, kind: 'error' });
    try {
      await expectS3Error(s3.send(new PutObjectCommand({ Bucket, Key: 'k', Body: 'x' })), 'InternalError', 500);
    } finally {
      ep.local?.controls.setFault('s3:PutObject', null);
    }
  });
});

describe('persistence', () => {
  it.skipIf(external)('objects, versions and SSE-KMS keys survive a restart with a data dir', async () => {
    const dataDir = await mkdtemp(join(tmpdir(), 'aws-local-s3-'));
    try {
      const first = await startAwsLocal({ port: 0, dataDir });
      const c1 = new S3Client({ ...clientConfig(ep), endpoint: first.url });
      const k1 = new KMSClient({ ...clientConfig(ep), endpoint: first.url });
      const keyArn = (await k1.send(new CreateKeyCommand({}))).KeyMetadata?.Arn;
      await c1.send(new CreateBucketCommand({ Bucket: 'persisted' }));
      await c1.send(new PutBucketVersioningCommand({ Bucket: 'persisted', VersioningConfiguration: { Status: 'Enabled' } }));
      const v1 = await c1.send(new PutObjectCommand({ Bucket: 'persisted', Key: 'k', Body: 'one', ServerSideEncryption: 'aws:kms', SSEKMSKeyId: keyArn, BucketKeyEnabled: true }));
      await c1.send(new PutObjectCommand({ Bucket: 'persisted', Key: 'k', Body: 'two' }));
      c1.destroy();
      k1.destroy();
      await first.close();

      const second = await startAwsLocal({ port: 0, dataDir });
      const c2 = new S3Client({ ...clientConfig(ep), endpoint: second.url });
      const old = await c2.send(new GetObjectCommand({ Bucket: 'persisted', Key: 'k', VersionId: v1.VersionId }));
      const current = await c2.send(new GetObjectCommand({ Bucket: 'persisted', Key: 'k' }));

      expect(await old.Body?.transformToString()).toBe('one');
      expect(old.SSEKMSKeyId).toBe(keyArn);
      expect(await current.Body?.transformToString()).toBe('two');
      c2.destroy();
      await second.close();
    } finally {
      await rm(dataDir, { recursive: true, force: true });
    }
  });
});
