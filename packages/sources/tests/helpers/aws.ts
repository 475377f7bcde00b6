/**
 * Test fixtures shared by the S3 and Postgres tests: aws-local, three KMS keys, the fleet's
 * gateway (its own access key id, so its calls can be told apart in the KMS usage log) and the
 * test side's own clients for seeding and reading back.
 */
import { createCipheriv, createDecipheriv, randomBytes } from 'node:crypto';
import { CreateKeyCommand, DecryptCommand, EncryptCommand, GenerateDataKeyCommand, KMSClient } from '@aws-sdk/client-kms';
import { S3Client } from '@aws-sdk/client-s3';
import type { ItemContext } from '@rekey/core';
import { createKmsGateway, type KmsGateway } from '@rekey/kms';
import { awsClientConfig, useAwsLocal, type AwsTestEndpoint } from '@rekey/testing';

/** The fleet's identity; everything the source does runs under it. */
export const FLEET_CREDENTIALS = { accessKeyId: 'AKIAREKEYFLEET000001', secretAccessKey: 'fleet-test-secret' } as const;

/** One test file's AWS world. */
export interface AwsWorld {
  readonly ep: AwsTestEndpoint;
  /** Test-side clients (the "app"): seed, decrypt, read back. */
  readonly kms: KMSClient;
  readonly s3: S3Client;
  /** The fleet's gateway. */
  readonly gateway: KmsGateway;
  readonly keys: { readonly old: string; readonly target: string; readonly other: string };
  /** A fresh S3 client with the fleet's identity (one per harness, so middleware stays local). */
  fleetS3(): S3Client;
  /** KMS operation names called by the fleet's identity (directly or through S3), oldest first. */
  fleetKmsCalls(): string[];
  close(): Promise<void>;
}

async function createKey(kms: KMSClient, description: string): Promise<string> {
  const out = await kms.send(new CreateKeyCommand({ Description: description }));
  const arn = out.KeyMetadata?.Arn;
  if (arn === undefined) throw new Error('CreateKey returned no ARN');
  return arn;
}

/** Starts aws-local (or uses AWS_ENDPOINT_URL) and creates the keys. */
export async function startAwsWorld(): Promise<AwsWorld> {
  const ep = await useAwsLocal();
  const kms = new KMSClient(awsClientConfig(ep));
  const s3 = new S3Client(awsClientConfig(ep));
  const gateway = createKmsGateway({ clientConfig: awsClientConfig(ep, FLEET_CREDENTIALS) });
  const keys = {
    old: await createKey(kms, 'rekey sources test: old'),
    target: await createKey(kms, 'rekey sources test: target'),
    other: await createKey(kms, 'rekey sources test: unrelated'),
  };
  return {
    ep,
    kms,
    s3,
    gateway,
    keys,
    fleetS3: () => new S3Client(awsClientConfig(ep, FLEET_CREDENTIALS)),
    fleetKmsCalls: () =>
      ep.local === undefined ? [] : ep.local.usage.all().filter((e) => e.accessKeyId === FLEET_CREDENTIALS.accessKeyId).map((e) => e.eventName),
    async close() {
      kms.destroy();
      s3.destroy();
      gateway.client.destroy();
      await ep.close();
    },
  };
}

/** AES-256-GCM with the data key; returns ciphertext and 16-byte tag separately. */
export function aesGcmEncrypt(key: Uint8Array, iv: Uint8Array, plaintext: Uint8Array, aad?: Uint8Array) {
  const c = createCipheriv('aes-256-gcm', key, iv);
  if (aad !== undefined) c.setAAD(aad);
  const ciphertext = Buffer.concat([c.update(plaintext), c.final()]);
  return { ciphertext, tag: c.getAuthTag() };
}

/** AES-256-GCM decrypt; throws when the tag does not verify. */
export function aesGcmDecrypt(key: Uint8Array, iv: Uint8Array, ciphertext: Uint8Array, tag: Uint8Array, aad?: Uint8Array): Buffer {
  const d = createDecipheriv('aes-256-gcm', key, iv);
  if (aad !== undefined) d.setAAD(aad);
  d.setAuthTag(tag);
  return Buffer.concat([d.update(ciphertext), d.final()]);
}

/** A data key from KMS (test side): plaintext and wrapped. */
export async function dataKey(kms: KMSClient, keyId: string, context: Record<string, string>) {
  const out = await kms.send(new GenerateDataKeyCommand({ KeyId: keyId, KeySpec: 'AES_256', EncryptionContext: context }));
  if (out.Plaintext === undefined || out.CiphertextBlob === undefined) throw new Error('GenerateDataKey returned no key');
  return { plaintext: Buffer.from(out.Plaintext), wrapped: Buffer.from(out.CiphertextBlob) };
}

/** KMS Decrypt (test side): plaintext and the key that decrypted it. */
export async function kmsDecrypt(kms: KMSClient, blob: Uint8Array, context?: Record<string, string>) {
  const out = await kms.send(new DecryptCommand({ CiphertextBlob: blob, ...(context !== undefined && { EncryptionContext: context }) }));
  if (out.Plaintext === undefined || out.KeyId === undefined) throw new Error('Decrypt returned no plaintext');
  return { plaintext: Buffer.from(out.Plaintext), keyId: out.KeyId };
}

/** KMS Encrypt (test side). */
export async function kmsEncrypt(kms: KMSClient, keyId: string, plaintext: Uint8Array, context?: Record<string, string>): Promise<Buffer> {
  const out = await kms.send(new EncryptCommand({ KeyId: keyId, Plaintext: plaintext, ...(context !== undefined && { EncryptionContext: context }) }));
  if (out.CiphertextBlob === undefined) throw new Error('Encrypt returned no ciphertext');
  return Buffer.from(out.CiphertextBlob);
}

/** Random plaintext of a random length in [min, max]. */
export function randomContent(min = 16, max = 600): Buffer {
  return randomBytes(min + Math.floor(Math.random() * (max - min + 1)));
}

/** A test ItemContext. */
export function itemCtx(dryRun = false): ItemContext {
  return { signal: new AbortController().signal, migrationId: 'test', dryRun };
}
