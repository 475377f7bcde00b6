/**
 * Conformance harnesses for the two S3 sources over a fresh bucket in aws-local.
 */
import { randomBytes } from 'node:crypto';
import {
  CreateBucketCommand,
  DeleteBucketCommand,
  DeleteObjectCommand,
  GetObjectCommand,
  HeadObjectCommand,
  ListObjectVersionsCommand,
  PutObjectCommand,
  type S3Client,
} from '@aws-sdk/client-s3';
import type { ItemRef, S3EnvelopeSourceSpec, S3SseKmsSourceSpec, Source } from '@rekey/core';
import { uniqueName } from '@rekey/testing';
import type { SourceHarness } from '../../src/conformance.js';
import { createS3EnvelopeSource } from '../../src/s3-envelope.js';
import { createS3SseKmsSource, type S3SseKmsOptions } from '../../src/s3-sse-kms.js';
import { aesGcmDecrypt, aesGcmEncrypt, dataKey, kmsDecrypt, randomContent, type AwsWorld } from './aws.js';

type S3Ref = Extract<ItemRef, { kind: 's3' }>;

function asS3(item: ItemRef): S3Ref {
  if (item.kind !== 's3') throw new Error('expected an S3 item');
  return item;
}

/** Installs a middleware that runs a hook once after the next HeadObject of a given key. */
export function raceHook(s3: S3Client): (key: string, fn: () => Promise<void>) => void {
  let pending: { key: string; fn: () => Promise<void> } | undefined;
  s3.middlewareStack.add(
    (next, context) => async (args) => {
      const result = await next(args);
      const key = (args.input as { Key?: string }).Key;
      if (context.commandName === 'HeadObjectCommand' && pending !== undefined && key === pending.key) {
        const p = pending;
        pending = undefined;
        await p.fn();
      }
      return result;
    },
    { step: 'initialize', name: 'rekeyTestRaceAfterRead' },
  );
  return (key, fn) => {
    pending = { key, fn };
  };
}

/** Creates a bucket and returns a function that empties and deletes it. */
export async function tempBucket(world: AwsWorld, base: string): Promise<{ bucket: string; drop(): Promise<void> }> {
  const bucket = uniqueName(base);
  await world.s3.send(new CreateBucketCommand({ Bucket: bucket }));
  return {
    bucket,
    async drop() {
      let keyMarker: string | undefined;
      let versionMarker: string | undefined;
      for (;;) {
        const out = await world.s3.send(
          new ListObjectVersionsCommand({ Bucket: bucket, ...(keyMarker !== undefined && { KeyMarker: keyMarker, VersionIdMarker: versionMarker }) }),
        );
        for (const v of [...(out.Versions ?? []), ...(out.DeleteMarkers ?? [])]) {
          await world.s3.send(new DeleteObjectCommand({ Bucket: bucket, Key: v.Key, ...(v.VersionId !== undefined && { VersionId: v.VersionId }) }));
        }
        if (out.IsTruncated !== true) break;
        keyMarker = out.NextKeyMarker;
        versionMarker = out.NextVersionIdMarker;
      }
      await world.s3.send(new DeleteBucketCommand({ Bucket: bucket }));
    },
  };
}

async function bodyOf(s3: S3Client, bucket: string, key: string) {
  const out = await s3.send(new GetObjectCommand({ Bucket: bucket, Key: key }));
  const bytes = await out.Body?.transformToByteArray();
  if (bytes === undefined) throw new Error(`no body for ${key}`);
  return { body: Buffer.from(bytes), metadata: out.Metadata ?? {} };
}

/** An `s3-sse-kms` harness for one strategy. */
export async function sseKmsHarness(
  world: AwsWorld,
  pageSize: number,
  strategy: S3SseKmsSourceSpec['strategy'],
  opts: { contentBytes?: [number, number]; sourceOptions?: S3SseKmsOptions } = {},
): Promise<SourceHarness & { bucket: string }> {
  const { bucket, drop } = await tempBucket(world, `sse-${strategy}`);
  const fleet = world.fleetS3();
  const arm = raceHook(fleet);
  const spec: S3SseKmsSourceSpec = {
    name: 'sse',
    kind: 's3-sse-kms',
    bucket,
    includeVersions: false,
    strategy,
    multipartThresholdBytes: 5 * 1024 * 1024 * 1024,
  };
  const source: Source = createS3SseKmsSource(spec, { s3: fleet, kms: world.gateway }, { pageSize, ...opts.sourceOptions });
  const [min, max] = opts.contentBytes ?? [16, 600];
  const put = async (key: string, keyArn: string) => {
    const body = randomContent(min, max);
    const out = await world.s3.send(
      new PutObjectCommand({ Bucket: bucket, Key: key, Body: body, ServerSideEncryption: 'aws:kms', SSEKMSKeyId: keyArn, ContentType: 'application/octet-stream' }),
    );
    return { body, etag: out.ETag };
  };
  const seedUnderKey = async (keyArn: string, n: number): Promise<ItemRef[]> => {
    const refs: ItemRef[] = [];
    for (let i = 0; i < n; i++) {
      const key = `data/${i.toString().padStart(3, '0')}-${randomBytes(3).toString('hex')}.bin`;
      const { body, etag } = await put(key, keyArn);
      refs.push({ kind: 's3', key, size: body.length, ...(etag !== undefined && { etag }) });
    }
    return refs;
  };
  return {
    bucket,
    source,
    plan: { from: [world.keys.old], to: world.keys.target },
    unrelatedKey: world.keys.other,
    seed: (n) => seedUnderKey(world.keys.old, n),
    seedUnderKey,
    readPlain: async (item) => (await bodyOf(world.s3, bucket, asS3(item).key)).body,
    currentKeyOf: async (item) => {
      const head = await world.s3.send(new HeadObjectCommand({ Bucket: bucket, Key: asS3(item).key }));
      return head.SSEKMSKeyId ?? `none:${head.ServerSideEncryption ?? ''}`;
    },
    mutate: async (item) => (await put(asS3(item).key, world.keys.old)).body,
    remove: async (item) => {
      await world.s3.send(new DeleteObjectCommand({ Bucket: bucket, Key: asS3(item).key }));
    },
    afterNextRead: (item, fn) => arm(asS3(item).key, fn),
    sourceKmsCalls: () => world.fleetKmsCalls(),
    async cleanup() {
      fleet.destroy();
      await drop();
    },
  };
}

/** S3EC v2 constants, written out from the published format rather than imported from the source. */
const CEK_ALG = 'AES/GCM/NoPadding';

/** Writes one S3 Encryption Client v2 object by hand (kms+context, AES-GCM, tag appended). */
export async function putS3ecObject(
  world: AwsWorld,
  bucket: string,
  key: string,
  keyArn: string,
  plaintext: Buffer,
  extra: { metadata?: Record<string, string>; appContext?: Record<string, string>; headers?: Record<string, unknown> } = {},
) {
  const matdesc = { ...extra.appContext, 'aws:x-amz-cek-alg': CEK_ALG };
  const dk = await dataKey(world.kms, keyArn, matdesc);
  const iv = randomBytes(12);
  const { ciphertext, tag } = aesGcmEncrypt(dk.plaintext, iv, plaintext);
  dk.plaintext.fill(0);
  return world.s3.send(
    new PutObjectCommand({
      Bucket: bucket,
      Key: key,
      Body: Buffer.concat([ciphertext, tag]),
      Metadata: {
        ...extra.metadata,
        'x-amz-key-v2': dk.wrapped.toString('base64'),
        'x-amz-wrap-alg': 'kms+context',
        'x-amz-matdesc': JSON.stringify(matdesc),
        'x-amz-cek-alg': CEK_ALG,
        'x-amz-iv': iv.toString('base64'),
        'x-amz-tag-len': '128',
        'x-amz-unencrypted-content-length': String(plaintext.length),
      },
      ...extra.headers,
    }),
  );
}

/** Reads one S3EC v2 object by hand: KMS Decrypt of the data key with the matdesc, then AES-GCM. */
export async function readS3ecObject(world: AwsWorld, bucket: string, key: string): Promise<{ plaintext: Buffer; keyId: string }> {
  const { body, metadata } = await bodyOf(world.s3, bucket, key);
  const wrapped = Buffer.from(metadata['x-amz-key-v2'] ?? '', 'base64');
  const matdesc = JSON.parse(metadata['x-amz-matdesc'] ?? '{}') as Record<string, string>;
  const iv = Buffer.from(metadata['x-amz-iv'] ?? '', 'base64');
  const tagLen = Number(metadata['x-amz-tag-len'] ?? '128') / 8;
  const { plaintext: key256, keyId } = await kmsDecrypt(world.kms, wrapped, matdesc);
  const plaintext = aesGcmDecrypt(key256, iv, body.subarray(0, body.length - tagLen), body.subarray(body.length - tagLen));
  key256.fill(0);
  return { plaintext, keyId };
}

/** An `s3-envelope` harness over a fresh bucket. */
export async function envelopeHarness(world: AwsWorld, pageSize: number): Promise<SourceHarness & { bucket: string }> {
  const { bucket, drop } = await tempBucket(world, 'env');
  const fleet = world.fleetS3();
  const arm = raceHook(fleet);
  const spec: S3EnvelopeSourceSpec = { name: 'env', kind: 's3-envelope', bucket };
  const source = createS3EnvelopeSource(spec, { s3: fleet, kms: world.gateway }, { pageSize });
  const seedUnderKey = async (keyArn: string, n: number): Promise<ItemRef[]> => {
    const refs: ItemRef[] = [];
    for (let i = 0; i < n; i++) {
      const key = `env/${i.toString().padStart(3, '0')}-${randomBytes(3).toString('hex')}`;
      const out = await putS3ecObject(world, bucket, key, keyArn, randomContent(), { appContext: { tenant: 'acme' } });
      refs.push({ kind: 's3', key, ...(out.ETag !== undefined && { etag: out.ETag }) });
    }
    return refs;
  };
  return {
    bucket,
    source,
    plan: { from: [world.keys.old], to: world.keys.target },
    unrelatedKey: world.keys.other,
    seed: (n) => seedUnderKey(world.keys.old, n),
    seedUnderKey,
    readPlain: async (item) => (await readS3ecObject(world, bucket, asS3(item).key)).plaintext,
    currentKeyOf: async (item) => (await readS3ecObject(world, bucket, asS3(item).key)).keyId,
    mutate: async (item) => {
      const plaintext = randomContent();
      await putS3ecObject(world, bucket, asS3(item).key, world.keys.old, plaintext, { appContext: { tenant: 'acme' } });
      return plaintext;
    },
    remove: async (item) => {
      await world.s3.send(new DeleteObjectCommand({ Bucket: bucket, Key: asS3(item).key }));
    },
    afterNextRead: (item, fn) => arm(asS3(item).key, fn),
    sourceKmsCalls: () => world.fleetKmsCalls(),
    async cleanup() {
      fleet.destroy();
      await drop();
    },
  };
}
