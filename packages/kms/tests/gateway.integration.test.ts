import { CreateAliasCommand, CreateKeyCommand, DisableKeyCommand, EnableKeyCommand, EncryptCommand, KMSClient } from '@aws-sdk/client-kms';
import { ItemError, MigrationFatalError } from '@rekey/core';
import { awsClientConfig, cleanupRedisPrefix, createTestRedis, uniqueName, uniquePrefix, useAwsLocal, type AwsTestEndpoint } from '@rekey/testing';
import type { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createKmsGateway } from '../src/gateway.js';
import { createRedisLimiter } from '../src/limiter.js';
import { RecordingMetrics } from './fakes.js';

let ep: AwsTestEndpoint;
let kms: KMSClient;
let oldKey: string;
let newKey: string;
let otherKey: string;
let alias: string;

async function createKey(): Promise<string> {
  const out = await kms.send(new CreateKeyCommand({ Description: 'rekey kms gateway test' }));
  const keyArn = out.KeyMetadata?.Arn;
  if (!keyArn) throw new Error('CreateKey returned no Arn');
  return keyArn;
}

async function encryptUnder(keyId: string, context?: Record<string, string>): Promise<Uint8Array> {
  const out = await kms.send(new EncryptCommand({ KeyId: keyId, Plaintext: Buffer.from('secret-data-key-material-32-byte'), ...(context && { EncryptionContext: context }) }));
  if (!out.CiphertextBlob) throw new Error('Encrypt returned no blob');
  return out.CiphertextBlob;
}

beforeAll(async () => {
  ep = await useAwsLocal();
  kms = new KMSClient(awsClientConfig(ep));
  oldKey = await createKey();
  newKey = await createKey();
  otherKey = await createKey();
  alias = `alias/${uniqueName('rekey-kms-target')}`;
  await kms.send(new CreateAliasCommand({ AliasName: alias, TargetKeyId: newKey }));
});

afterAll(async () => {
  kms?.destroy();
  await ep?.close();
});

describe('gateway against aws-local', () => {
  const fast = { retry: { maxAttempts: 3, baseMs: 5, capMs: 20 } };

  it('re-encrypts a blob from the old key to the target, keeping its plaintext', async () => {
    const gw = createKmsGateway({ client: kms }, fast);
    const ctx = { tenant: 't1' };
    const blob = await encryptUnder(oldKey, ctx);
    const out = await gw.reEncrypt({ ciphertextBlob: blob, sourceKeyId: oldKey, destinationKeyId: alias, sourceEncryptionContext: ctx, destinationEncryptionContext: ctx });
    expect(out.sourceKeyId).toBe(oldKey);
    expect(out.keyId).toBe(newKey);
    const back = await gw.decrypt({ ciphertextBlob: out.ciphertextBlob, encryptionContext: ctx });
    expect(back.keyId).toBe(newKey);
    expect(Buffer.from(back.plaintext).toString()).toBe('secret-data-key-material-32-byte');
  });

  it('describeKey resolves an alias to the key ARN', async () => {
    const info = await createKmsGateway({ client: kms }).describeKey(alias);
    expect(info.arn).toBe(newKey);
    expect(info.state).toBe('Enabled');
    expect(info.usage).toBe('ENCRYPT_DECRYPT');
  });

  it('a blob under a key other than SourceKeyId is not-in-scope', async () => {
    const gw = createKmsGateway({ client: kms }, fast);
    const blob = await encryptUnder(otherKey);
    const err = await gw.reEncrypt({ ciphertextBlob: blob, sourceKeyId: oldKey, destinationKeyId: newKey }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ItemError);
    expect((err as ItemError).outcome).toBe('not-in-scope');
  });

  it('a value that is not a ciphertext fails the item', async () => {
    const gw = createKmsGateway({ client: kms }, fast);
    const err = await gw.reEncrypt({ ciphertextBlob: Buffer.from('definitely not a kms ciphertext blob'), destinationKeyId: newKey }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ItemError);
    expect((err as ItemError).outcome).toBe('failed');
  });

  it('a disabled source key fails the item; a disabled target pauses the migration', async () => {
    const gw = createKmsGateway({ client: kms }, fast);
    const src = await createKey();
    const tgt = await createKey();
    const blob = await encryptUnder(src);
    await kms.send(new DisableKeyCommand({ KeyId: src }));
    const itemErr = await gw.reEncrypt({ ciphertextBlob: blob, destinationKeyId: tgt }).catch((e: unknown) => e);
    expect(itemErr).toBeInstanceOf(ItemError);
    await kms.send(new EnableKeyCommand({ KeyId: src }));
    await kms.send(new DisableKeyCommand({ KeyId: tgt }));
    const fatal = await gw.reEncrypt({ ciphertextBlob: blob, sourceKeyId: src, destinationKeyId: tgt }).catch((e: unknown) => e);
    expect(fatal).toBeInstanceOf(MigrationFatalError);
    expect((fatal as Error).message).toContain(tgt);
  });

  it('AccessDenied on the target pauses the migration with that reason', async () => {
    const local = ep.local;
    if (!local) return;
    const undo = local.controls.addDenyRule({ service: 'kms', operation: 'ReEncrypt', resource: newKey });
    try {
      const gw = createKmsGateway({ client: kms }, fast);
      const blob = await encryptUnder(oldKey);
      const err = await gw.reEncrypt({ ciphertextBlob: blob, sourceKeyId: oldKey, destinationKeyId: newKey }).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(MigrationFatalError);
      expect((err as Error).message).toMatch(/access denied/i);
    } finally {
      undo();
    }
  });
});

describe('throttles feed AIMD', () => {
  let redis: Redis;
  let prefix: string;

  beforeAll(() => {
    redis = createTestRedis();
    prefix = uniquePrefix('kms-gw-aimd');
  });

  afterAll(async () => {
    await cleanupRedisPrefix(redis, prefix);
    redis.disconnect();
    ep.local?.controls.setQuota(null);
  });

  it('KMS ThrottlingException lowers the fleet-wide rate and the calls still complete', async () => {
    const local = ep.local;
    if (!local) return;
    const blobs = await Promise.all(Array.from({ length: 60 }, () => encryptUnder(oldKey)));
    local.controls.setQuota({ rps: 20, burst: 5 });
    const limiter = createRedisLimiter({ redis, key: `${prefix}limiter`, budget: 200, minRps: 10, aimd: { decrease: 0.5, increaseRps: 1, windowMs: 200 } });
    const metrics = new RecordingMetrics();
    const gw = createKmsGateway({ client: kms }, { limiter, metrics, retry: { maxAttempts: 20, baseMs: 20, capMs: 200 } });
    const before = local.controls.getCounters()['kms:ReEncrypt']?.throttled ?? 0;
    try {
      const outs = await Promise.all(blobs.map((b) => gw.reEncrypt({ ciphertextBlob: b, sourceKeyId: oldKey, destinationKeyId: newKey })));
      expect(outs.every((o) => o.keyId === newKey)).toBe(true);
      const throttledByKms = (local.controls.getCounters()['kms:ReEncrypt']?.throttled ?? 0) - before;
      expect(throttledByKms).toBeGreaterThan(0);
      expect(metrics.throttledCount).toBe(throttledByKms);
      expect(await limiter.currentRate()).toBeLessThan(200);
    } finally {
      limiter.close();
      local.controls.setQuota(null);
    }
  });
});
