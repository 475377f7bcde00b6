import { createCipheriv, createDecipheriv, randomBytes } from 'node:crypto';
import { DecryptCommand, GenerateDataKeyCommand } from '@aws-sdk/client-kms';
import { CreateBucketCommand, GetObjectCommand, PutObjectCommand, S3Client } from '@aws-sdk/client-s3';
import { awsClientConfig, uniqueName } from '@rekey/testing';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createEnvelopeClient, EnvelopeError, type EnvelopeClient } from '../src/index.js';
import { kmsFixture, type KmsFixture } from './helpers/aws.js';

async function codeOf(p: Promise<unknown>): Promise<string> {
  try {
    await p;
    return 'no-error';
  } catch (e) {
    return e instanceof EnvelopeError ? e.code : `foreign: ${String(e)}`;
  }
}

describe('S3 Encryption Client v2 objects against aws-local', () => {
  let f: KmsFixture;
  let s3: S3Client;
  let bucket: string;
  let envelope: EnvelopeClient;
  const context = { tenant: 'acme', purpose: 'invoice' };

  beforeAll(async () => {
    f = await kmsFixture();
    s3 = new S3Client(awsClientConfig(f.ep));
    bucket = uniqueName('envelope-s3ec');
    await s3.send(new CreateBucketCommand({ Bucket: bucket }));
    envelope = createEnvelopeClient({ kms: { client: f.kms }, alias: f.alias, staleTtlMs: 0 });
  });
  afterAll(async () => {
    await envelope?.close();
    s3?.destroy();
    await f?.close();
  });

  it('getObject reads what putObject wrote, with the caller metadata and content type kept', async () => {
    const body = randomBytes(70_000);
    const put = await envelope.putObject(s3, { Bucket: bucket, Key: 'roundtrip', Body: body, keyId: f.alias, context, ContentType: 'application/pdf', Metadata: { owner: 'billing' } });

    const got = await envelope.getObject(s3, { Bucket: bucket, Key: 'roundtrip', context });

    expect(put.keyArn).toBe(f.keyA);
    expect(got.plaintext.equals(body)).toBe(true);
    expect(got.keyArn).toBe(f.keyA);
    expect(got.stale).toBe(false);
    expect(got.metadata).toEqual({ owner: 'billing' });
    expect(got.response.ContentType).toBe('application/pdf');
  });

  it('stores the published V2 metadata, and a hand-written reader decrypts the object', async () => {
    const body = Buffer.from('hello from rekey, read by hand');
    await envelope.putObject(s3, { Bucket: bucket, Key: 'by-hand-read', Body: body, keyId: f.alias, context: { 'é': 'ü' } });

    const raw = await s3.send(new GetObjectCommand({ Bucket: bucket, Key: 'by-hand-read' }));
    const m = raw.Metadata!;
    const stored = Buffer.from(await raw.Body!.transformToByteArray());
    expect(m['x-amz-wrap-alg']).toBe('kms+context');
    expect(m['x-amz-cek-alg']).toBe('AES/GCM/NoPadding');
    expect(m['x-amz-tag-len']).toBe('128');
    expect(m['x-amz-unencrypted-content-length']).toBe(String(body.length));
    const matDesc = JSON.parse(m['x-amz-matdesc']!) as Record<string, string>;
    expect(matDesc).toEqual({ 'é': 'ü', 'aws:x-amz-cek-alg': 'AES/GCM/NoPadding' });
    expect(stored.length).toBe(body.length + 16);

    // The reader of the spec: KMS Decrypt with the matdesc as context, then AES-GCM, no AAD, tag appended.
    const key = await f.kms.send(new DecryptCommand({ CiphertextBlob: Buffer.from(m['x-amz-key-v2']!, 'base64'), EncryptionContext: matDesc }));
    const d = createDecipheriv('aes-256-gcm', key.Plaintext!, Buffer.from(m['x-amz-iv']!, 'base64'));
    d.setAuthTag(stored.subarray(stored.length - 16));
    expect(Buffer.concat([d.update(stored.subarray(0, stored.length - 16)), d.final()]).equals(body)).toBe(true);
  });

  it('getObject reads an object built by hand from the published V2 format', async () => {
    const body = Buffer.from('written by another S3EC v2 implementation');
    const matDesc = { ...context, 'aws:x-amz-cek-alg': 'AES/GCM/NoPadding' };
    const dk = await f.kms.send(new GenerateDataKeyCommand({ KeyId: f.keyA, KeySpec: 'AES_256', EncryptionContext: matDesc }));
    const iv = randomBytes(12);
    const c = createCipheriv('aes-256-gcm', dk.Plaintext!, iv);
    const stored = Buffer.concat([c.update(body), c.final(), c.getAuthTag()]);
    await s3.send(
      new PutObjectCommand({
        Bucket: bucket,
        Key: 'by-hand-write',
        Body: stored,
        Metadata: {
          'x-amz-key-v2': Buffer.from(dk.CiphertextBlob!).toString('base64'),
          'x-amz-wrap-alg': 'kms+context',
          'x-amz-matdesc': JSON.stringify(matDesc),
          'x-amz-cek-alg': 'AES/GCM/NoPadding',
          'x-amz-iv': iv.toString('base64'),
          'x-amz-tag-len': '128',
        },
      }),
    );

    const got = await envelope.getObject(s3, { Bucket: bucket, Key: 'by-hand-write', context });

    expect(got.plaintext.equals(body)).toBe(true);
    expect(got.keyArn).toBe(f.keyA);
  });

  it('refuses a context that differs from the stored matdesc before calling KMS', async () => {
    await envelope.putObject(s3, { Bucket: bucket, Key: 'ctx', Body: 'x', keyId: f.alias, context });
    f.ep.local?.controls.resetCounters();

    expect(await codeOf(envelope.getObject(s3, { Bucket: bucket, Key: 'ctx', context: { tenant: 'acme' } }))).toBe('wrong-context');
    expect(await codeOf(envelope.getObject(s3, { Bucket: bucket, Key: 'ctx' }))).toBe('wrong-context');
    if (f.ep.local) expect(f.ep.local.controls.getCounters()['kms:Decrypt']).toBeUndefined();
  });

  it('refuses the reserved context key and S3EC metadata from the caller', async () => {
    expect(await codeOf(envelope.putObject(s3, { Bucket: bucket, Key: 'r', Body: 'x', keyId: f.alias, context: { 'aws:x-amz-cek-alg': 'AES/GCM/NoPadding' } }))).toBe('invalid-argument');
    expect(await codeOf(envelope.putObject(s3, { Bucket: bucket, Key: 'r', Body: 'x', keyId: f.alias, Metadata: { 'x-amz-iv': 'AAAA' } }))).toBe('invalid-argument');
  });

  it('reports a body changed in S3 as failing GCM authentication', async () => {
    await envelope.putObject(s3, { Bucket: bucket, Key: 'tamper', Body: 'do not touch', keyId: f.alias, context });
    const raw = await s3.send(new GetObjectCommand({ Bucket: bucket, Key: 'tamper' }));
    const stored = Buffer.from(await raw.Body!.transformToByteArray());
    stored[0] = stored[0]! ^ 1;
    await s3.send(new PutObjectCommand({ Bucket: bucket, Key: 'tamper', Body: stored, Metadata: raw.Metadata }));

    expect(await codeOf(envelope.getObject(s3, { Bucket: bucket, Key: 'tamper', context }))).toBe('wrong-context');
  });

  it('reports a plain object as malformed and a stale object after the alias moves', async () => {
    await s3.send(new PutObjectCommand({ Bucket: bucket, Key: 'plain', Body: 'not encrypted' }));
    expect(await codeOf(envelope.getObject(s3, { Bucket: bucket, Key: 'plain' }))).toBe('malformed');

    await envelope.putObject(s3, { Bucket: bucket, Key: 'stale', Body: 'old key', keyId: f.alias, context });
    await f.moveAlias(f.keyB);
    try {
      expect((await envelope.getObject(s3, { Bucket: bucket, Key: 'stale', context })).stale).toBe(true);
    } finally {
      await f.moveAlias(f.keyA);
    }
  });
});
