import { createHash, randomBytes } from 'node:crypto';
import {
  AbortMultipartUploadCommand,
  CompleteMultipartUploadCommand,
  CreateBucketCommand,
  CreateMultipartUploadCommand,
  GetObjectCommand,
  GetObjectTaggingCommand,
  HeadObjectCommand,
  ListPartsCommand,
  PutObjectCommand,
  S3Client,
  UploadPartCommand,
  UploadPartCopyCommand,
} from '@aws-sdk/client-s3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { clientConfig, startEndpoint, type Endpoint } from './helpers.js';
import { BucketTracker, expectS3Error } from './s3-support.js';

const MiB = 1024 * 1024;

let ep: Endpoint;
let s3: S3Client;
let buckets: BucketTracker;
let Bucket: string;

beforeAll(async () => {
  ep = await startEndpoint();
  s3 = new S3Client(clientConfig(ep));
  buckets = new BucketTracker(s3);
  Bucket = buckets.name('s3mpu');
  await s3.send(new CreateBucketCommand({ Bucket }));
});

afterAll(async () => {
  await buckets.cleanup();
  s3.destroy();
  await ep.close();
});

const md5 = (b: Buffer) => createHash('md5').update(b).digest();

/** S3's multipart ETag: MD5 of the concatenated binary part MD5s, then `-N`. */
function multipartEtag(parts: Buffer[]): string {
  return `"${createHash('md5').update(Buffer.concat(parts.map(md5))).digest('hex')}-${parts.length}"`;
}

async function start(Key: string, extra: Partial<ConstructorParameters<typeof CreateMultipartUploadCommand>[0]> = {}) {
  const out = await s3.send(new CreateMultipartUploadCommand({ Bucket, Key, ...extra }));
  return out.UploadId ?? '';
}

async function part(Key: string, UploadId: string, PartNumber: number, Body: Buffer) {
  const out = await s3.send(new UploadPartCommand({ Bucket, Key, UploadId, PartNumber, Body }));
  return { PartNumber, ETag: out.ETag ?? '' };
}

describe('multipart upload', () => {
  it('Create, UploadPart, Complete makes one object with an md5-of-md5s-N ETag and the upload settings', async () => {
    const p1 = randomBytes(5 * MiB);
    const p2 = randomBytes(1000);
    const UploadId = await start('big', { Metadata: { m: '1' }, ContentType: 'application/x-test', Tagging: 't=1', StorageClass: 'STANDARD_IA' });

    const parts = [await part('big', UploadId, 1, p1), await part('big', UploadId, 2, p2)];
    const done = await s3.send(new CompleteMultipartUploadCommand({ Bucket, Key: 'big', UploadId, MultipartUpload: { Parts: parts } }));
    const got = await s3.send(new GetObjectCommand({ Bucket, Key: 'big' }));
    const data = Buffer.from((await got.Body?.transformToByteArray()) ?? []);
    const tags = await s3.send(new GetObjectTaggingCommand({ Bucket, Key: 'big' }));

    expect(done.ETag).toBe(multipartEtag([p1, p2]));
    expect(got.ETag).toBe(done.ETag);
    expect(data.equals(Buffer.concat([p1, p2]))).toBe(true);
    expect(got).toMatchObject({ ContentLength: p1.length + p2.length, Metadata: { m: '1' }, ContentType: 'application/x-test', StorageClass: 'STANDARD_IA' });
    expect(tags.TagSet).toEqual([{ Key: 't', Value: '1' }]);
  });

  it('ListParts lists uploaded parts in order with sizes and ETags, paging by part number', async () => {
    const UploadId = await start('listed');
    const bodies = [Buffer.from('a'), Buffer.from('bb'), Buffer.from('ccc')];
    for (const [i, b] of bodies.entries()) await part('listed', UploadId, i + 1, b);

    const first = await s3.send(new ListPartsCommand({ Bucket, Key: 'listed', UploadId, MaxParts: 2 }));
    const rest = await s3.send(new ListPartsCommand({ Bucket, Key: 'listed', UploadId, PartNumberMarker: first.NextPartNumberMarker }));

    expect(first.Parts?.map((p) => [p.PartNumber, p.Size, p.ETag])).toEqual([
      [1, 1, `"${md5(bodies[0] as Buffer).toString('hex')}"`],
      [2, 2, `"${md5(bodies[1] as Buffer).toString('hex')}"`],
    ]);
    expect(first.IsTruncated).toBe(true);
    expect(rest.Parts?.map((p) => p.PartNumber)).toEqual([3]);
    await s3.send(new AbortMultipartUploadCommand({ Bucket, Key: 'listed', UploadId }));
  });

  it('AbortMultipartUpload discards the upload; using it afterwards is NoSuchUpload', async () => {
    const UploadId = await start('aborted');
    await part('aborted', UploadId, 1, Buffer.from('x'));

    await s3.send(new AbortMultipartUploadCommand({ Bucket, Key: 'aborted', UploadId }));

    await expectS3Error(s3.send(new ListPartsCommand({ Bucket, Key: 'aborted', UploadId })), 'NoSuchUpload', 404);
    await expectS3Error(
      s3.send(new UploadPartCommand({ Bucket, Key: 'aborted', UploadId, PartNumber: 2, Body: 'y' })),
      'NoSuchUpload',
      404,
    );
    await expectS3Error(s3.send(new HeadObjectCommand({ Bucket, Key: 'aborted' })), 'NotFound', 404);
  });

  it('a part other than the last below 5 MiB is EntityTooSmall', async () => {
    const UploadId = await start('small');
    const parts = [await part('small', UploadId, 1, Buffer.from('tiny')), await part('small', UploadId, 2, Buffer.from('last'))];

    await expectS3Error(
      s3.send(new CompleteMultipartUploadCommand({ Bucket, Key: 'small', UploadId, MultipartUpload: { Parts: parts } })),
      'EntityTooSmall',
      400,
    );
  });

  it('a single small part is a valid upload (the last part may be small)', async () => {
    const UploadId = await start('single');
    const parts = [await part('single', UploadId, 1, Buffer.from('only'))];

    const done = await s3.send(new CompleteMultipartUploadCommand({ Bucket, Key: 'single', UploadId, MultipartUpload: { Parts: parts } }));

    expect(done.ETag).toBe(multipartEtag([Buffer.from('only')]));
  });

  it('parts listed out of order are InvalidPartOrder and a wrong part ETag is InvalidPart', async () => {
    const UploadId = await start('order');
    const a = await part('order', UploadId, 1, Buffer.from('a'));
    const b = await part('order', UploadId, 2, Buffer.from('b'));

    await expectS3Error(
      s3.send(new CompleteMultipartUploadCommand({ Bucket, Key: 'order', UploadId, MultipartUpload: { Parts: [b, a] } })),
      'InvalidPartOrder',
      400,
    );
    await expectS3Error(
      s3.send(
        new CompleteMultipartUploadCommand({
          Bucket,
          Key: 'order',
          UploadId,
          MultipartUpload: { Parts: [{ PartNumber: 1, ETag: '"00000000000000000000000000000000"' }] },
        }),
      ),
      'InvalidPart',
      400,
    );
  });

  it('a part number outside 1..10000 is InvalidArgument', async () => {
    const UploadId = await start('badnum');

    await expectS3Error(
      s3.send(new UploadPartCommand({ Bucket, Key: 'badnum', UploadId, PartNumber: 10001, Body: 'x' })),
      'InvalidArgument',
      400,
    );
  });

  it('CompleteMultipartUpload with If-None-Match: * over an existing key is 412', async () => {
    await s3.send(new PutObjectCommand({ Bucket, Key: 'exists', Body: 'x' }));
    const UploadId = await start('exists');
    const parts = [await part('exists', UploadId, 1, Buffer.from('y'))];

    await expectS3Error(
      s3.send(new CompleteMultipartUploadCommand({ Bucket, Key: 'exists', UploadId, IfNoneMatch: '*', MultipartUpload: { Parts: parts } })),
      'PreconditionFailed',
      412,
    );
  });
});

describe('UploadPartCopy', () => {
  it('copies byte ranges of an object into parts; the result has an md5-of-md5s-N ETag', async () => {
    const source = randomBytes(5 * MiB + 300);
    await s3.send(new PutObjectCommand({ Bucket, Key: 'copy-src', Body: source }));
    const UploadId = await start('copy-dst');
    const ranges: Array<[number, number]> = [
      [0, 5 * MiB - 1],
      [5 * MiB, source.length - 1],
    ];

    const parts = [];
    for (const [i, [a, b]] of ranges.entries()) {
      const out = await s3.send(
        new UploadPartCopyCommand({ Bucket, Key: 'copy-dst', UploadId, PartNumber: i + 1, CopySource: `${Bucket}/copy-src`, CopySourceRange: `bytes=${a}-${b}` }),
      );
      parts.push({ PartNumber: i + 1, ETag: out.CopyPartResult?.ETag ?? '' });
    }
    const done = await s3.send(new CompleteMultipartUploadCommand({ Bucket, Key: 'copy-dst', UploadId, MultipartUpload: { Parts: parts } }));
    const got = await s3.send(new GetObjectCommand({ Bucket, Key: 'copy-dst' }));
    const data = Buffer.from((await got.Body?.transformToByteArray()) ?? []);

    expect(done.ETag).toBe(multipartEtag(ranges.map(([a, b]) => source.subarray(a, b + 1))));
    expect(data.equals(source)).toBe(true);
  });

  it('a stale CopySourceIfMatch is 412 and a range past the source is InvalidArgument', async () => {
    const old = await s3.send(new PutObjectCommand({ Bucket, Key: 'copy-src2', Body: 'v1' }));
    await s3.send(new PutObjectCommand({ Bucket, Key: 'copy-src2', Body: 'v2' }));
    const UploadId = await start('copy-dst2');
    const CopySource = `${Bucket}/copy-src2`;

    await expectS3Error(
      s3.send(new UploadPartCopyCommand({ Bucket, Key: 'copy-dst2', UploadId, PartNumber: 1, CopySource, CopySourceIfMatch: old.ETag })),
      'PreconditionFailed',
      412,
    );
    await expectS3Error(
      s3.send(new UploadPartCopyCommand({ Bucket, Key: 'copy-dst2', UploadId, PartNumber: 1, CopySource, CopySourceRange: 'bytes=0-99' })),
      'InvalidArgument',
      400,
    );
  });
});
