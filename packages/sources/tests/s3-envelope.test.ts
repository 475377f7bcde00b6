import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { GetObjectTaggingCommand, HeadObjectCommand, PutObjectCommand, S3Client } from '@aws-sdk/client-s3';
import { awsClientConfig } from '@rekey/testing';
import { MigrationFatalError } from '@rekey/core';
import { createS3EnvelopeSource, parseS3EnvelopeMetadata } from '../src/s3-envelope.js';
import { FLEET_CREDENTIALS, itemCtx, randomContent, startAwsWorld, type AwsWorld } from './helpers/aws.js';
import { putS3ecObject, readS3ecObject, tempBucket } from './helpers/s3-harness.js';

let world: AwsWorld;
const drops: (() => Promise<void>)[] = [];
const clients: S3Client[] = [];

beforeAll(async () => {
  world = await startAwsWorld();
});

afterEach(async () => {
  world.ep.local?.controls.clearDenyRules();
  for (const c of clients.splice(0)) c.destroy();
  for (const d of drops.splice(0)) await d();
});

afterAll(async () => {
  await world.close();
});

async function setup() {
  const b = await tempBucket(world, 'envf');
  drops.push(b.drop);
  const fleet = world.fleetS3();
  clients.push(fleet);
  const source = createS3EnvelopeSource({ name: 'e', kind: 's3-envelope', bucket: b.bucket }, { s3: fleet, kms: world.gateway });
  return { bucket: b.bucket, source, plan: { from: [world.keys.old], to: world.keys.target } };
}

describe('s3-envelope', () => {
  it('makes only ReEncrypt calls, and the new metadata still decrypts with a hand-written S3EC v2 reader', async () => {
    if (world.ep.local === undefined) return;
    const { bucket, source, plan } = await setup();
    const plaintexts = [randomContent(), randomContent(), randomContent()];
    for (const [i, p] of plaintexts.entries()) await putS3ecObject(world, bucket, `o${i}`, world.keys.old, p, { appContext: { tenant: 't1' } });
    const callsBefore = world.fleetKmsCalls().length;

    const outcomes = await Promise.all(plaintexts.map((_, i) => source.reencrypt({ kind: 's3', key: `o${i}` }, plan, itemCtx())));
    await source.reencrypt({ kind: 's3', key: 'o0' }, plan, itemCtx());
    await source.inspect({ kind: 's3', key: 'o1' }, plan, itemCtx());

    expect(outcomes.map((o) => o.outcome)).toEqual(['reencrypted', 'reencrypted', 'reencrypted']);
    const calls = world.fleetKmsCalls().slice(callsBefore);
    expect(calls.length).toBeGreaterThanOrEqual(3);
    expect(new Set(calls)).toEqual(new Set(['ReEncrypt']));
    for (const [i, p] of plaintexts.entries()) {
      const back = await readS3ecObject(world, bucket, `o${i}`);
      expect(back.keyId).toBe(world.keys.target);
      expect(back.plaintext.equals(p)).toBe(true);
    }
  });

  it('keeps every user metadata entry, the system headers and the tags', async () => {
    const { bucket, source, plan } = await setup();
    const plaintext = randomContent();
    await putS3ecObject(world, bucket, 'rich', world.keys.old, plaintext, {
      metadata: { owner: 'team-a', 'case-id': '77' },
      headers: {
        ContentType: 'application/pdf',
        ContentDisposition: 'inline',
        ContentLanguage: 'fr',
        CacheControl: 'no-store',
        StorageClass: 'STANDARD_IA',
        Tagging: 'k=v',
        ServerSideEncryption: 'aws:kms',
        SSEKMSKeyId: world.keys.other,
      },
    });
    const before = await world.s3.send(new HeadObjectCommand({ Bucket: bucket, Key: 'rich' }));

    const out = await source.reencrypt({ kind: 's3', key: 'rich' }, plan, itemCtx());
    const after = await world.s3.send(new HeadObjectCommand({ Bucket: bucket, Key: 'rich' }));
    const tags = await world.s3.send(new GetObjectTaggingCommand({ Bucket: bucket, Key: 'rich' }));

    expect(out.outcome).toBe('reencrypted');
    const { ['x-amz-key-v2']: oldKey, ...restBefore } = before.Metadata ?? {};
    const { ['x-amz-key-v2']: newKey, ...restAfter } = after.Metadata ?? {};
    expect(newKey).not.toBe(oldKey);
    expect(restAfter).toEqual(restBefore);
    expect(after.ContentType).toBe('application/pdf');
    expect(after.ContentDisposition).toBe('inline');
    expect(after.ContentLanguage).toBe('fr');
    expect(after.CacheControl).toBe('no-store');
    expect(after.StorageClass).toBe('STANDARD_IA');
    // The at-rest SSE-KMS layer is the bucket owner's and stays on its own key.
    expect(after.SSEKMSKeyId).toBe(world.keys.other);
    expect(tags.TagSet).toEqual([{ Key: 'k', Value: 'v' }]);
    expect((await readS3ecObject(world, bucket, 'rich')).plaintext.equals(plaintext)).toBe(true);
  });

  it('a DSSE-KMS object stays DSSE-KMS under its key, and its copy takes 2 limiter tokens', async () => {
    // aws-local answers 501 to DSSE-KMS, so the HEAD is made to report it and the copy is caught
    // before it is sent: what is checked is the request the source makes.
    const b = await tempBucket(world, 'envd');
    drops.push(b.drop);
    await putS3ecObject(world, b.bucket, 'd', world.keys.old, randomContent());
    const dsseKey = world.keys.old;
    const s3 = world.fleetS3();
    clients.push(s3);
    let copy: Record<string, unknown> | undefined;
    s3.middlewareStack.add(
      (next, context) => async (args) => {
        if (context.commandName === 'CopyObjectCommand') {
          copy = args.input as Record<string, unknown>;
          return { output: { $metadata: {}, CopyObjectResult: {} }, response: {} } as never;
        }
        const out = await next(args);
        if (context.commandName === 'HeadObjectCommand') Object.assign(out.output as object, { ServerSideEncryption: 'aws:kms:dsse', SSEKMSKeyId: dsseKey });
        return out;
      },
      { step: 'initialize', name: 'dsseObject' },
    );
    let tokens = 0;
    const kms = { ...world.gateway, acquire: async (signal?: AbortSignal) => { tokens++; await world.gateway.acquire(signal); } };
    const source = createS3EnvelopeSource({ name: 'e', kind: 's3-envelope', bucket: b.bucket }, { s3, kms });

    const out = await source.reencrypt({ kind: 's3', key: 'd' }, { from: [world.keys.old], to: world.keys.target }, itemCtx());

    expect(out.outcome).toBe('reencrypted');
    expect(copy).toMatchObject({ ServerSideEncryption: 'aws:kms:dsse', SSEKMSKeyId: dsseKey });
    expect(copy).not.toHaveProperty('BucketKeyEnabled');
    expect(tokens).toBe(2);
  });

  it('an object with no encryption at rest takes 1 token for its copy (the bucket default may be SSE-KMS); SSE-S3 none', async () => {
    const b = await tempBucket(world, 'envn');
    drops.push(b.drop);
    await putS3ecObject(world, b.bucket, 'n', world.keys.old, randomContent());
    await putS3ecObject(world, b.bucket, 's', world.keys.old, randomContent());
    const s3 = world.fleetS3();
    clients.push(s3);
    // aws-local encrypts every object at rest (SSE-S3), as S3 has since 2023: the HEAD of 'n' is
    // made to report an object written before that.
    s3.middlewareStack.add(
      (next, context) => async (args) => {
        const out = await next(args);
        if (context.commandName === 'HeadObjectCommand' && (args.input as { Key?: string }).Key === 'n') delete (out.output as { ServerSideEncryption?: string }).ServerSideEncryption;
        return out;
      },
      { step: 'initialize', name: 'unencryptedObject' },
    );
    let tokens = 0;
    const kms = { ...world.gateway, acquire: async (signal?: AbortSignal) => { tokens++; await world.gateway.acquire(signal); } };
    const source = createS3EnvelopeSource({ name: 'e', kind: 's3-envelope', bucket: b.bucket }, { s3, kms });
    const plan = { from: [world.keys.old], to: world.keys.target };

    expect((await source.reencrypt({ kind: 's3', key: 'n' }, plan, itemCtx())).outcome).toBe('reencrypted');
    expect(tokens).toBe(1);
    tokens = 0;
    expect((await source.reencrypt({ kind: 's3', key: 's' }, plan, itemCtx())).outcome).toBe('reencrypted');
    expect(tokens).toBe(0);
  });

  it('a wrapped key that is not a KMS ciphertext fails the item with the reason', async () => {
    const { bucket, source, plan } = await setup();
    await world.s3.send(
      new PutObjectCommand({
        Bucket: bucket,
        Key: 'bad',
        Body: randomContent(),
        Metadata: {
          'x-amz-key-v2': Buffer.from('this is not a KMS ciphertext blob').toString('base64'),
          'x-amz-wrap-alg': 'kms+context',
          'x-amz-matdesc': JSON.stringify({ 'aws:x-amz-cek-alg': 'AES/GCM/NoPadding' }),
          'x-amz-cek-alg': 'AES/GCM/NoPadding',
          'x-amz-iv': Buffer.alloc(12).toString('base64'),
          'x-amz-tag-len': '128',
        },
      }),
    );

    const out = await source.reencrypt({ kind: 's3', key: 'bad' }, plan, itemCtx());

    expect(out.outcome).toBe('failed');
    expect(out.code).toBe('InvalidCiphertextException');
    expect(out.reason).toMatch(/ciphertext/i);
  });

  it('legacy kms-wrapped and plain objects are not-in-scope with the reason', async () => {
    const { bucket, source, plan } = await setup();
    await world.s3.send(
      new PutObjectCommand({
        Bucket: bucket,
        Key: 'v1',
        Body: randomContent(),
        Metadata: { 'x-amz-key-v2': 'AAAA', 'x-amz-wrap-alg': 'kms', 'x-amz-matdesc': '{"kms_cmk_id":"alias/x"}', 'x-amz-cek-alg': 'AES/CBC/PKCS5Padding' },
      }),
    );
    await world.s3.send(new PutObjectCommand({ Bucket: bucket, Key: 'plain', Body: randomContent() }));

    const legacy = await source.reencrypt({ kind: 's3', key: 'v1' }, plan, itemCtx());
    const plain = await source.reencrypt({ kind: 's3', key: 'plain' }, plan, itemCtx());

    expect(legacy.outcome).toBe('not-in-scope');
    expect(legacy.reason).toMatch(/legacy .*x-amz-wrap-alg: kms/);
    expect(plain).toEqual({ outcome: 'not-in-scope', reason: 'not client-side encrypted (no x-amz-key-v2 metadata)' });
  });

  it('AccessDenied on the target key throws MigrationFatalError', async () => {
    if (world.ep.local === undefined) return;
    const { bucket, source, plan } = await setup();
    await putS3ecObject(world, bucket, 'd', world.keys.old, randomContent());
    world.ep.local.controls.addDenyRule({ service: 'kms', resource: world.keys.target });

    await expect(source.reencrypt({ kind: 's3', key: 'd' }, plan, itemCtx())).rejects.toThrow(MigrationFatalError);
  });
});

describe('s3-envelope on a client with cacheMiddleware (as the fleet builds it)', () => {
  it('objects of the same names in two buckets, moved at once, each land in their own bucket; no send has per-call options', async () => {
    const buckets = [await tempBucket(world, 'enva'), await tempBucket(world, 'envb')];
    for (const b of buckets) drops.push(b.drop);
    const s3 = new S3Client({ ...awsClientConfig(world.ep, FLEET_CREDENTIALS), cacheMiddleware: true });
    clients.push(s3);
    // The SDK shares one handler context between concurrent sends of a command on such a client;
    // a send with options would drop the cache (docs/decisions.md #42).
    const argCounts: number[] = [];
    const send = s3.send.bind(s3) as (...args: unknown[]) => Promise<unknown>;
    (s3 as unknown as { send: (...args: unknown[]) => Promise<unknown> }).send = (...args) => {
      argCounts.push(args.length);
      return send(...args);
    };
    const plan = { from: [world.keys.old], to: world.keys.target };
    const sources = buckets.map((b) => createS3EnvelopeSource({ name: b.bucket, kind: 's3-envelope', bucket: b.bucket }, { s3, kms: world.gateway }));
    const keys = Array.from({ length: 12 }, (_, i) => `same/name-${i}`);
    const content = buckets.map(() => keys.map(() => randomContent()));
    for (const [bi, b] of buckets.entries()) {
      for (const [ki, key] of keys.entries()) await putS3ecObject(world, b.bucket, key, world.keys.old, content[bi]![ki]!, { appContext: { bucket: b.bucket } });
    }
    // Uneven answers, so the two buckets' requests interleave in every middleware step.
    world.ep.local?.controls.setLatency('*', { minMs: 0, maxMs: 4 });
    try {
      const outcomes = await Promise.all(buckets.flatMap((_, bi) => keys.map((key) => sources[bi]!.reencrypt({ kind: 's3', key }, plan, itemCtx()))));
      expect(outcomes.map((o) => o.outcome)).toEqual(outcomes.map(() => 'reencrypted'));
    } finally {
      world.ep.local?.controls.setLatency('*', null);
    }
    for (const [bi, b] of buckets.entries()) {
      for (const [ki, key] of keys.entries()) {
        const back = await readS3ecObject(world, b.bucket, key);
        expect(back.keyId).toBe(world.keys.target);
        expect(back.plaintext.equals(content[bi]![ki]!)).toBe(true);
      }
    }
    expect(argCounts.length).toBeGreaterThanOrEqual(2 * keys.length * 2);
    expect(new Set(argCounts)).toEqual(new Set([1]));
  });
});

describe('parseS3EnvelopeMetadata', () => {
  const v2 = {
    'x-amz-key-v2': 'AQID',
    'x-amz-wrap-alg': 'kms+context',
    'x-amz-matdesc': '{"aws:x-amz-cek-alg":"AES/GCM/NoPadding","tenant":"t"}',
    'x-amz-cek-alg': 'AES/GCM/NoPadding',
  };

  it('reads the wrapped key and the matdesc as the KMS context', () => {
    expect(parseS3EnvelopeMetadata(v2)).toEqual({
      kind: 'v2',
      wrappedKey: Buffer.from([1, 2, 3]),
      context: { 'aws:x-amz-cek-alg': 'AES/GCM/NoPadding', tenant: 't' },
    });
  });

  it.each([
    [{ ...v2, 'x-amz-matdesc': 'nope' }, 'x-amz-matdesc is not JSON'],
    [{ ...v2, 'x-amz-matdesc': '[1]' }, 'x-amz-matdesc is not a JSON object'],
    [{ ...v2, 'x-amz-matdesc': '{"a":1}' }, 'x-amz-matdesc entry "a" is not a string'],
    [{ ...v2, 'x-amz-matdesc': '{}' }, 'x-amz-matdesc aws:x-amz-cek-alg does not match x-amz-cek-alg'],
    [{ ...v2, 'x-amz-key-v2': '***' }, 'x-amz-key-v2 is not base64'],
  ])('flags broken metadata: %j', (meta, reason) => {
    expect(parseS3EnvelopeMetadata(meta)).toEqual({ kind: 'invalid', reason });
  });

  it.each([
    [{ 'x-amz-key': 'x' }, /S3 Encryption Client v1/],
    [{ ...v2, 'x-amz-wrap-alg': 'AESWrap' }, /wrapped with AESWrap/],
    [{ ...v2, 'x-amz-cek-alg': 'AES/CBC/PKCS5Padding' }, /AES\/CBC/],
    [{}, /not client-side encrypted/],
  ])('puts other objects out of scope: %j', (meta, reason) => {
    const r = parseS3EnvelopeMetadata(meta);
    expect(r.kind).toBe('not-in-scope');
    expect(r.kind === 'not-in-scope' ? r.reason : '').toMatch(reason);
  });
});
