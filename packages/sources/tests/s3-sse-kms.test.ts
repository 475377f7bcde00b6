import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import {
  GetObjectCommand,
  GetObjectTaggingCommand,
  HeadObjectCommand,
  ListMultipartUploadsCommand,
  PutBucketVersioningCommand,
  PutObjectCommand,
  type S3Client,
} from '@aws-sdk/client-s3';
import { MigrationFatalError } from '@rekey/core';
import type { S3SseKmsSourceSpec } from '@rekey/core';
import { createS3SseKmsSource } from '../src/s3-sse-kms.js';
import { SourceError } from '../src/errors.js';
import { itemCtx, randomContent, startAwsWorld, type AwsWorld } from './helpers/aws.js';
import { tempBucket } from './helpers/s3-harness.js';

let world: AwsWorld;
const drops: (() => Promise<void>)[] = [];
const clients: S3Client[] = [];

beforeAll(async () => {
  world = await startAwsWorld();
  if (world.ep.local !== undefined) world.ep.local.s3.minPartSize = 1024;
});

afterEach(async () => {
  world.ep.local?.controls.clearDenyRules();
  for (const c of clients.splice(0)) c.destroy();
  for (const d of drops.splice(0)) await d();
});

afterAll(async () => {
  await world.close();
});

async function setup(strategy: S3SseKmsSourceSpec['strategy'], extra: Partial<S3SseKmsSourceSpec> = {}, partSizeBytes?: number) {
  const b = await tempBucket(world, `f-${strategy}`);
  drops.push(b.drop);
  const fleet = world.fleetS3();
  clients.push(fleet);
  const spec: S3SseKmsSourceSpec = {
    name: 'f',
    kind: 's3-sse-kms',
    bucket: b.bucket,
    includeVersions: false,
    strategy,
    multipartThresholdBytes: 5 * 1024 ** 3,
    ...extra,
  };
  const source = createS3SseKmsSource(spec, { s3: fleet, kms: world.gateway }, { pageSize: 100, ...(partSizeBytes !== undefined && { partSizeBytes }) });
  return { bucket: b.bucket, source, fleet, plan: { from: [world.keys.old], to: world.keys.target } };
}

const richHeaders = {
  ContentType: 'text/csv; charset=utf-8',
  ContentEncoding: 'identity',
  ContentDisposition: 'attachment; filename="report.csv"',
  ContentLanguage: 'de-CH',
  CacheControl: 'max-age=60',
  StorageClass: 'STANDARD_IA',
  WebsiteRedirectLocation: '/moved.html',
  Metadata: { owner: 'team-a', 'case-id': '1234' },
  Tagging: 'classification=secret&team=a',
  BucketKeyEnabled: true,
} as const;

async function expectRichObjectKept(bucket: string, key: string, body: Buffer) {
  const head = await world.s3.send(new HeadObjectCommand({ Bucket: bucket, Key: key }));
  const tags = await world.s3.send(new GetObjectTaggingCommand({ Bucket: bucket, Key: key }));
  const got = await world.s3.send(new GetObjectCommand({ Bucket: bucket, Key: key }));
  expect(head.SSEKMSKeyId).toBe(world.keys.target);
  expect(head.ContentType).toBe(richHeaders.ContentType);
  expect(head.ContentEncoding).toBe(richHeaders.ContentEncoding);
  expect(head.ContentDisposition).toBe(richHeaders.ContentDisposition);
  expect(head.ContentLanguage).toBe(richHeaders.ContentLanguage);
  expect(head.CacheControl).toBe(richHeaders.CacheControl);
  expect(head.StorageClass).toBe('STANDARD_IA');
  expect(head.WebsiteRedirectLocation).toBe(richHeaders.WebsiteRedirectLocation);
  expect(head.Metadata).toEqual(richHeaders.Metadata);
  expect(head.BucketKeyEnabled).toBe(true);
  expect(tags.TagSet?.map((t) => `${t.Key}=${t.Value}`).sort()).toEqual(['classification=secret', 'team=a']);
  expect(Buffer.from((await got.Body?.transformToByteArray()) ?? []).equals(body)).toBe(true);
}

describe('s3-sse-kms', () => {
  it('copy strategy keeps metadata, tags, storage class, content headers and the bucket-key setting', async () => {
    const { bucket, source, plan } = await setup('copy');
    const body = randomContent(100, 400);
    await world.s3.send(new PutObjectCommand({ Bucket: bucket, Key: 'r.csv', Body: body, ServerSideEncryption: 'aws:kms', SSEKMSKeyId: world.keys.old, ...richHeaders }));

    const out = await source.reencrypt({ kind: 's3', key: 'r.csv' }, plan, itemCtx());

    expect(out.outcome).toBe('reencrypted');
    expect(out.notes).toEqual(expect.arrayContaining(['acl-reset', 'last-modified-changed']));
    await expectRichObjectKept(bucket, 'r.csv', body);
  });

  it('multipart-copy keeps metadata, tags, storage class, content headers and the bucket-key setting', async () => {
    const { bucket, source, plan } = await setup('multipart-copy', {}, 1024);
    const body = randomContent(3000, 3500);
    await world.s3.send(new PutObjectCommand({ Bucket: bucket, Key: 'big.csv', Body: body, ServerSideEncryption: 'aws:kms', SSEKMSKeyId: world.keys.old, ...richHeaders }));

    const out = await source.reencrypt({ kind: 's3', key: 'big.csv' }, plan, itemCtx());

    expect(out.outcome).toBe('reencrypted');
    expect(out.notes).toContain('etag-changed');
    await expectRichObjectKept(bucket, 'big.csv', body);
  });

  it('multipart-copy aborts the upload only once the other part copies have answered', async () => {
    if (world.ep.local === undefined) return;
    const { bucket, source, fleet, plan } = await setup('multipart-copy', {}, 1024);
    await world.s3.send(new PutObjectCommand({ Bucket: bucket, Key: 'big', Body: randomContent(4500, 4600), ServerSideEncryption: 'aws:kms', SSEKMSKeyId: world.keys.old }));
    // Part 1 fails at once (AccessDenied is not retried); parts 2-4, already sent, answer 50 ms later.
    const events: string[] = [];
    fleet.middlewareStack.add(
      (next, context) => async (args) => {
        const part = (args.input as { PartNumber?: number }).PartNumber;
        const name = `${String(context.commandName).replace(/Command$/, '')}${part === undefined ? '' : `#${part}`}`;
        events.push(`start ${name}`);
        try {
          if (part === 1) throw Object.assign(new Error('Access Denied'), { name: 'AccessDenied', $metadata: { httpStatusCode: 403 } });
          if (part !== undefined) await new Promise((r) => setTimeout(r, 50));
          return await next(args);
        } finally {
          events.push(`end ${name}`);
        }
      },
      { step: 'initialize', name: 'rekeyTestPartOrder' },
    );

    await source.reencrypt({ kind: 's3', key: 'big' }, plan, itemCtx()).catch((err: unknown) => err);

    const abortAt = events.indexOf('start AbortMultipartUpload');
    const partsEnded = events.flatMap((e, i) => (e.startsWith('end UploadPartCopy') ? [i] : []));
    expect(abortAt).toBeGreaterThan(0);
    expect(partsEnded.length).toBeGreaterThanOrEqual(2);
    expect(Math.max(...partsEnded)).toBeLessThan(abortAt);
    const open = await world.s3.send(new ListMultipartUploadsCommand({ Bucket: bucket }));
    expect(open.Uploads ?? []).toEqual([]);
  });

  it('update-encryption keeps the ETag and LastModified', async () => {
    const { bucket, source, plan } = await setup('update-encryption');
    await world.s3.send(new PutObjectCommand({ Bucket: bucket, Key: 'u', Body: randomContent(), ServerSideEncryption: 'aws:kms', SSEKMSKeyId: world.keys.old }));
    const before = await world.s3.send(new HeadObjectCommand({ Bucket: bucket, Key: 'u' }));

    const out = await source.reencrypt({ kind: 's3', key: 'u' }, plan, itemCtx());
    const after = await world.s3.send(new HeadObjectCommand({ Bucket: bucket, Key: 'u' }));

    expect(out).toEqual({ outcome: 'reencrypted', fromKey: world.keys.old });
    expect(after.SSEKMSKeyId).toBe(world.keys.target);
    expect(after.ETag).toBe(before.ETag);
    expect(after.LastModified?.getTime()).toBe(before.LastModified?.getTime());
  });

  it('with includeVersions, update-encryption moves noncurrent versions too', async () => {
    const { bucket, source, plan } = await setup('update-encryption', { includeVersions: true });
    await world.s3.send(new PutBucketVersioningCommand({ Bucket: bucket, VersioningConfiguration: { Status: 'Enabled' } }));
    for (let i = 0; i < 3; i++) {
      await world.s3.send(new PutObjectCommand({ Bucket: bucket, Key: 'v', Body: randomContent(), ServerSideEncryption: 'aws:kms', SSEKMSKeyId: world.keys.old }));
    }

    const page = await source.list(null, new AbortController().signal);
    const outcomes = await Promise.all(page.items.map((i) => source.reencrypt(i, plan, itemCtx())));

    expect(page.items).toHaveLength(3);
    expect(new Set(page.items.map((i) => (i.kind === 's3' ? i.versionId : undefined))).size).toBe(3);
    expect(outcomes.map((o) => o.outcome)).toEqual(['reencrypted', 'reencrypted', 'reencrypted']);
    for (const item of page.items) {
      if (item.kind !== 's3') throw new Error('expected s3');
      const head = await world.s3.send(new HeadObjectCommand({ Bucket: bucket, Key: 'v', VersionId: item.versionId }));
      expect(head.SSEKMSKeyId).toBe(world.keys.target);
    }
  });

  it('copy refuses a noncurrent version instead of making it current again', async () => {
    const { bucket, source, plan } = await setup('copy', { includeVersions: true });
    await world.s3.send(new PutBucketVersioningCommand({ Bucket: bucket, VersioningConfiguration: { Status: 'Enabled' } }));
    const first = await world.s3.send(new PutObjectCommand({ Bucket: bucket, Key: 'v', Body: randomContent(), ServerSideEncryption: 'aws:kms', SSEKMSKeyId: world.keys.old }));
    const latest = randomContent();
    await world.s3.send(new PutObjectCommand({ Bucket: bucket, Key: 'v', Body: latest, ServerSideEncryption: 'aws:kms', SSEKMSKeyId: world.keys.old }));

    const out = await source.reencrypt({ kind: 's3', key: 'v', ...(first.VersionId !== undefined && { versionId: first.VersionId }) }, plan, itemCtx());
    const current = await world.s3.send(new GetObjectCommand({ Bucket: bucket, Key: 'v' }));

    expect(out.outcome).toBe('failed');
    expect(out.code).toBe('NoncurrentVersion');
    expect(Buffer.from((await current.Body?.transformToByteArray()) ?? []).equals(latest)).toBe(true);
  });

  it('an SSE-S3 object is not-in-scope with the reason', async () => {
    const { bucket, source, plan } = await setup('update-encryption');
    await world.s3.send(new PutObjectCommand({ Bucket: bucket, Key: 's3', Body: randomContent(), ServerSideEncryption: 'AES256' }));

    const out = await source.reencrypt({ kind: 's3', key: 's3' }, plan, itemCtx());
    const seen = await source.inspect({ kind: 's3', key: 's3' }, plan, itemCtx());

    expect(out).toEqual({ outcome: 'not-in-scope', reason: 'encrypted with AES256, not SSE-KMS' });
    expect(seen.state).toBe('other');
  });

  it.each(['update-encryption', 'copy'] as const)('AccessDenied on the target key throws MigrationFatalError (%s)', async (strategy) => {
    if (world.ep.local === undefined) return;
    const { bucket, source, plan } = await setup(strategy);
    await world.s3.send(new PutObjectCommand({ Bucket: bucket, Key: 'd', Body: randomContent(), ServerSideEncryption: 'aws:kms', SSEKMSKeyId: world.keys.old }));
    world.ep.local.controls.addDenyRule({ service: 'kms', resource: world.keys.target });

    await expect(source.reencrypt({ kind: 's3', key: 'd' }, plan, itemCtx())).rejects.toThrow(MigrationFatalError);
  });

  it('a bucket that does not exist is fatal when listed', async () => {
    const fleet = world.fleetS3();
    clients.push(fleet);
    const source = createS3SseKmsSource(
      { name: 'x', kind: 's3-sse-kms', bucket: 'no-such-bucket-rekey', includeVersions: false, strategy: 'copy', multipartThresholdBytes: 5 * 1024 ** 3 },
      { s3: fleet, kms: world.gateway },
    );

    await expect(source.list(null, new AbortController().signal)).rejects.toThrow(MigrationFatalError);
  });

  it('an injected client of the wrong kind throws', () => {
    const spec: S3SseKmsSourceSpec = { name: 'x', kind: 's3-sse-kms', bucket: 'b-b-b', includeVersions: false, strategy: 'copy', multipartThresholdBytes: 5 * 1024 ** 3 };
    expect(() => createS3SseKmsSource(spec, { s3: {} as S3Client, kms: world.gateway })).toThrow(SourceError);
  });
});
