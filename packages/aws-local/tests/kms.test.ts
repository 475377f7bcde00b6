import { constants, createCipheriv, publicEncrypt, randomBytes, createPublicKey } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  CancelKeyDeletionCommand,
  CreateAliasCommand,
  CreateKeyCommand,
  DecryptCommand,
  DeleteAliasCommand,
  DescribeKeyCommand,
  DisableKeyCommand,
  DisableKeyRotationCommand,
  EnableKeyCommand,
  EnableKeyRotationCommand,
  EncryptCommand,
  GenerateDataKeyCommand,
  GenerateDataKeyWithoutPlaintextCommand,
  GenerateRandomCommand,
  GetKeyLastUsageCommand,
  GetKeyPolicyCommand,
  GetKeyRotationStatusCommand,
  GetParametersForImportCommand,
  GetPublicKeyCommand,
  ImportKeyMaterialCommand,
  KMSClient,
  ListAliasesCommand,
  ListKeyRotationsCommand,
  ListKeysCommand,
  ListResourceTagsCommand,
  PutKeyPolicyCommand,
  ReEncryptCommand,
  RotateKeyOnDemandCommand,
  ScheduleKeyDeletionCommand,
  TagResourceCommand,
  UntagResourceCommand,
  UpdateAliasCommand,
  type CreateKeyCommandInput,
  type KeyMetadata,
} from '@aws-sdk/client-kms';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startAwsLocal } from '../src/index.js';
import type { RequestContext } from '../src/context.js';
import { clientConfig, CREDENTIALS, OTHER_CALLER, startEndpoint, uniqueName, type Endpoint } from './helpers.js';

/** Admin-control and in-process tests need aws-local itself; they skip against another endpoint. */
const external = Boolean(process.env['AWS_ENDPOINT_URL']);

let ep: Endpoint;
let kms: KMSClient;

beforeAll(async () => {
  ep = await startEndpoint();
  kms = new KMSClient(clientConfig(ep));
});

afterAll(async () => {
  kms.destroy();
  await ep.close();
});

const text = (s: string) => Buffer.from(s, 'utf8');

async function createKey(input: CreateKeyCommandInput = {}): Promise<KeyMetadata> {
  const out = await kms.send(new CreateKeyCommand({ Description: 'kms conformance test', ...input }));
  if (!out.KeyMetadata) throw new Error('CreateKey returned no KeyMetadata');
  return out.KeyMetadata;
}

async function encrypt(keyId: string, plaintext = text('secret'), ctx?: Record<string, string>) {
  const out = await kms.send(new EncryptCommand({ KeyId: keyId, Plaintext: plaintext, EncryptionContext: ctx }));
  if (!out.CiphertextBlob) throw new Error('Encrypt returned no CiphertextBlob');
  return out.CiphertextBlob;
}

/** Asserts the promise fails with the given AWS error code and returns the error. */
async function expectAwsError(p: Promise<unknown>, code: string, status = 400): Promise<Error> {
  const err = await p.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err, `expected ${code}`).toBeInstanceOf(Error);
  expect((err as Error).name).toBe(code);
  expect((err as { $metadata?: { httpStatusCode?: number } }).$metadata?.httpStatusCode).toBe(status);
  return err as Error;
}

function aliasName(): string {
  return `alias/${uniqueName('kms-test')}`;
}

describe('CreateKey and DescribeKey', () => {
  it('creates a symmetric key with every KeyMetadata field AWS returns', async () => {
    const md = await createKey({ Description: 'orders key' });
    expect(md.KeyId).toMatch(/^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/);
    expect(md.Arn).toMatch(new RegExp(`^arn:aws:kms:${ep.region}:\\d{12}:key/${md.KeyId}$`));
    expect(md.AWSAccountId).toMatch(/^\d{12}$/);
    expect(md.CreationDate).toBeInstanceOf(Date);
    expect(md).toMatchObject({
      Enabled: true,
      Description: 'orders key',
      KeyUsage: 'ENCRYPT_DECRYPT',
      KeyState: 'Enabled',
      Origin: 'AWS_KMS',
      KeyManager: 'CUSTOMER',
      CustomerMasterKeySpec: 'SYMMETRIC_DEFAULT',
      KeySpec: 'SYMMETRIC_DEFAULT',
      EncryptionAlgorithms: ['SYMMETRIC_DEFAULT'],
      MultiRegion: false,
    });
    expect(md.CurrentKeyMaterialId).toMatch(/^[0-9a-f]{64}$/);
    expect(md.DeletionDate).toBeUndefined();
  });

  it('describes a key by key id, key ARN, alias name and alias ARN', async () => {
    const md = await createKey();
    const alias = aliasName();
    await kms.send(new CreateAliasCommand({ AliasName: alias, TargetKeyId: md.KeyId }));
    const aliasArn = md.Arn!.replace(/key\/.*$/, alias);
    for (const id of [md.KeyId!, md.Arn!, alias, aliasArn]) {
      const out = await kms.send(new DescribeKeyCommand({ KeyId: id }));
      expect(out.KeyMetadata?.Arn).toBe(md.Arn);
    }
  });

  it('answers NotFoundException for an unknown key id and an unknown alias', async () => {
    await expectAwsError(kms.send(new DescribeKeyCommand({ KeyId: '11111111-2222-3333-4444-555555555555' })), 'NotFoundException');
    await expectAwsError(kms.send(new DescribeKeyCommand({ KeyId: aliasName() })), 'NotFoundException');
  });

  it('accepts and reports MultiRegion keys with an mrk- key id', async () => {
    const md = await createKey({ MultiRegion: true });
    expect(md.MultiRegion).toBe(true);
    expect(md.KeyId).toMatch(/^mrk-[0-9a-f]{32}$/);
    const ct = await encrypt(md.KeyId!);
    const out = await kms.send(new DecryptCommand({ CiphertextBlob: ct }));
    expect(out.KeyId).toBe(md.Arn);
  });

  it.skipIf(external)('scopes keys by account and Region', async () => {
    const md = await createKey();
    const ct = await encrypt(md.KeyId!);
    const otherRegion = new KMSClient({ ...clientConfig(ep), region: ep.region === 'eu-west-1' ? 'us-west-2' : 'eu-west-1' });
    // aws-local takes a 12-digit access key id as the account id.
    const otherAccount = new KMSClient(clientConfig(ep, { accessKeyId: '123456789012', secretAccessKey: 'x' }));
    try {
      await expectAwsError(otherRegion.send(new DescribeKeyCommand({ KeyId: md.KeyId })), 'NotFoundException');
      await expectAwsError(otherRegion.send(new DecryptCommand({ CiphertextBlob: ct })), 'InvalidCiphertextException');
      await expectAwsError(otherAccount.send(new DescribeKeyCommand({ KeyId: md.KeyId })), 'NotFoundException');
      expect((await otherAccount.send(new ListKeysCommand({ Limit: 1000 }))).Keys?.map((k) => k.KeyId)).not.toContain(md.KeyId);
    } finally {
      otherRegion.destroy();
      otherAccount.destroy();
    }
  });

  it('rejects KeySpec together with CustomerMasterKeySpec with ValidationException', async () => {
    await expectAwsError(
      kms.send(new CreateKeyCommand({ KeySpec: 'SYMMETRIC_DEFAULT', CustomerMasterKeySpec: 'SYMMETRIC_DEFAULT' })),
      'ValidationException',
    );
  });

  it('pages ListKeys with Limit and Marker', async () => {
    for (let i = 0; i < 3; i++) await createKey();
    const seen = new Set<string>();
    let marker: string | undefined;
    let pages = 0;
    do {
      const out = await kms.send(new ListKeysCommand({ Limit: 2, Marker: marker }));
      expect(out.Keys!.length).toBeLessThanOrEqual(2);
      for (const k of out.Keys ?? []) {
        expect(k.KeyArn).toMatch(new RegExp(`key/${k.KeyId}$`));
        seen.add(k.KeyId!);
      }
      marker = out.Truncated ? out.NextMarker : undefined;
      pages++;
    } while (marker);
    expect(pages).toBeGreaterThanOrEqual(2);
    expect(seen.size).toBeGreaterThanOrEqual(3);
  });
});

describe('aliases', () => {
  it('lists aliases filtered by KeyId with AliasArn, TargetKeyId and dates', async () => {
    const md = await createKey();
    const alias = aliasName();
    await kms.send(new CreateAliasCommand({ AliasName: alias, TargetKeyId: md.Arn }));
    const out = await kms.send(new ListAliasesCommand({ KeyId: md.KeyId }));
    expect(out.Aliases).toHaveLength(1);
    const a = out.Aliases![0]!;
    expect(a).toMatchObject({ AliasName: alias, AliasArn: md.Arn!.replace(/key\/.*$/, alias), TargetKeyId: md.KeyId });
    expect(a.CreationDate).toBeInstanceOf(Date);
    expect(a.LastUpdatedDate).toBeInstanceOf(Date);
  });

  it('refuses a duplicate alias with AlreadyExistsException', async () => {
    const md = await createKey();
    const alias = aliasName();
    await kms.send(new CreateAliasCommand({ AliasName: alias, TargetKeyId: md.KeyId }));
    await expectAwsError(kms.send(new CreateAliasCommand({ AliasName: alias, TargetKeyId: md.KeyId })), 'AlreadyExistsException');
  });

  it('reserves the alias/aws/ prefix with NotAuthorizedException', async () => {
    const md = await createKey();
    await expectAwsError(
      kms.send(new CreateAliasCommand({ AliasName: `alias/aws/${uniqueName('x')}`, TargetKeyId: md.KeyId })),
      'NotAuthorizedException',
    );
  });

  it('UpdateAlias moves the alias, so Encrypt by alias uses the new key', async () => {
    const oldKey = await createKey();
    const newKey = await createKey();
    const alias = aliasName();
    await kms.send(new CreateAliasCommand({ AliasName: alias, TargetKeyId: oldKey.KeyId }));
    await kms.send(new UpdateAliasCommand({ AliasName: alias, TargetKeyId: newKey.KeyId }));
    const out = await kms.send(new EncryptCommand({ KeyId: alias, Plaintext: text('x') }));
    expect(out.KeyId).toBe(newKey.Arn);
  });

  it('DeleteAlias removes the alias and later lookups answer NotFoundException', async () => {
    const md = await createKey();
    const alias = aliasName();
    await kms.send(new CreateAliasCommand({ AliasName: alias, TargetKeyId: md.KeyId }));
    await kms.send(new DeleteAliasCommand({ AliasName: alias }));
    await expectAwsError(kms.send(new DescribeKeyCommand({ KeyId: alias })), 'NotFoundException');
    await expectAwsError(kms.send(new DeleteAliasCommand({ AliasName: alias })), 'NotFoundException');
  });
});

describe('symmetric encryption', () => {
  it('Decrypt needs no KeyId and returns the key ARN, algorithm and key material id', async () => {
    const md = await createKey();
    const ct = await encrypt(md.KeyId!, text('hello'));
    const out = await kms.send(new DecryptCommand({ CiphertextBlob: ct }));
    expect(Buffer.from(out.Plaintext!).toString()).toBe('hello');
    expect(out.KeyId).toBe(md.Arn);
    expect(out.EncryptionAlgorithm).toBe('SYMMETRIC_DEFAULT');
    expect(out.KeyMaterialId).toBe(md.CurrentKeyMaterialId);
  });

  it('binds the encryption context regardless of key order', async () => {
    const md = await createKey();
    const ct = await encrypt(md.KeyId!, text('ctx'), { a: '1', b: '2' });
    const out = await kms.send(new DecryptCommand({ CiphertextBlob: ct, EncryptionContext: { b: '2', a: '1' } }));
    expect(Buffer.from(out.Plaintext!).toString()).toBe('ctx');
  });

  it('answers InvalidCiphertextException for a wrong or missing encryption context', async () => {
    const md = await createKey();
    const ct = await encrypt(md.KeyId!, text('ctx'), { tenant: 'a' });
    await expectAwsError(kms.send(new DecryptCommand({ CiphertextBlob: ct, EncryptionContext: { tenant: 'b' } })), 'InvalidCiphertextException');
    await expectAwsError(kms.send(new DecryptCommand({ CiphertextBlob: ct })), 'InvalidCiphertextException');
  });

  it('answers InvalidCiphertextException for a tampered blob', async () => {
    const md = await createKey();
    const ct = Buffer.from(await encrypt(md.KeyId!));
    ct[ct.length - 1]! ^= 0x01;
    await expectAwsError(kms.send(new DecryptCommand({ CiphertextBlob: ct })), 'InvalidCiphertextException');
  });

  it('answers IncorrectKeyException when Decrypt names a different key than the blob', async () => {
    const a = await createKey();
    const b = await createKey();
    const ct = await encrypt(a.KeyId!);
    await expectAwsError(kms.send(new DecryptCommand({ CiphertextBlob: ct, KeyId: b.KeyId })), 'IncorrectKeyException');
  });

  it('rejects plaintext over 4096 bytes with ValidationException', async () => {
    const md = await createKey();
    const err = await expectAwsError(kms.send(new EncryptCommand({ KeyId: md.KeyId, Plaintext: randomBytes(4097) })), 'ValidationException');
    expect(err.message).toContain('plaintext');
  });

  it('ReEncrypt moves a ciphertext to another key and context and reports both keys and materials', async () => {
    const src = await createKey();
    const dest = await createKey();
    const ct = await encrypt(src.KeyId!, text('move me'), { v: '1' });
    const out = await kms.send(
      new ReEncryptCommand({
        CiphertextBlob: ct,
        SourceKeyId: src.Arn,
        SourceEncryptionContext: { v: '1' },
        DestinationKeyId: dest.KeyId,
        DestinationEncryptionContext: { v: '2' },
      }),
    );
    expect(out).toMatchObject({
      SourceKeyId: src.Arn,
      KeyId: dest.Arn,
      SourceKeyMaterialId: src.CurrentKeyMaterialId,
      DestinationKeyMaterialId: dest.CurrentKeyMaterialId,
      SourceEncryptionAlgorithm: 'SYMMETRIC_DEFAULT',
      DestinationEncryptionAlgorithm: 'SYMMETRIC_DEFAULT',
    });
    const dec = await kms.send(new DecryptCommand({ CiphertextBlob: out.CiphertextBlob, EncryptionContext: { v: '2' } }));
    expect(Buffer.from(dec.Plaintext!).toString()).toBe('move me');
    expect(dec.KeyId).toBe(dest.Arn);
  });

  it('ReEncrypt with a SourceKeyId that did not encrypt the blob answers IncorrectKeyException', async () => {
    const src = await createKey();
    const other = await createKey();
    const ct = await encrypt(src.KeyId!);
    await expectAwsError(
      kms.send(new ReEncryptCommand({ CiphertextBlob: ct, SourceKeyId: other.KeyId, DestinationKeyId: other.KeyId })),
      'IncorrectKeyException',
    );
  });

  it('GenerateDataKey returns a data key whose CiphertextBlob decrypts to its Plaintext', async () => {
    const md = await createKey();
    const k256 = await kms.send(new GenerateDataKeyCommand({ KeyId: md.KeyId, KeySpec: 'AES_256', EncryptionContext: { f: 'x' } }));
    expect(k256.Plaintext).toHaveLength(32);
    expect(k256.KeyId).toBe(md.Arn);
    expect(k256.KeyMaterialId).toBe(md.CurrentKeyMaterialId);
    const dec = await kms.send(new DecryptCommand({ CiphertextBlob: k256.CiphertextBlob, EncryptionContext: { f: 'x' } }));
    expect(Buffer.from(dec.Plaintext!).equals(Buffer.from(k256.Plaintext!))).toBe(true);
    const k128 = await kms.send(new GenerateDataKeyCommand({ KeyId: md.KeyId, KeySpec: 'AES_128' }));
    expect(k128.Plaintext).toHaveLength(16);
    const k7 = await kms.send(new GenerateDataKeyCommand({ KeyId: md.KeyId, NumberOfBytes: 7 }));
    expect(k7.Plaintext).toHaveLength(7);
  });

  it('GenerateDataKey needs exactly one of KeySpec and NumberOfBytes', async () => {
    const md = await createKey();
    await expectAwsError(kms.send(new GenerateDataKeyCommand({ KeyId: md.KeyId })), 'ValidationException');
    await expectAwsError(kms.send(new GenerateDataKeyCommand({ KeyId: md.KeyId, KeySpec: 'AES_256', NumberOfBytes: 32 })), 'ValidationException');
  });

  it('GenerateDataKeyWithoutPlaintext returns only the encrypted data key', async () => {
    const md = await createKey();
    const out = await kms.send(new GenerateDataKeyWithoutPlaintextCommand({ KeyId: md.KeyId, KeySpec: 'AES_256' }));
    expect(out).not.toHaveProperty('Plaintext');
    expect(out.KeyId).toBe(md.Arn);
    const dec = await kms.send(new DecryptCommand({ CiphertextBlob: out.CiphertextBlob }));
    expect(dec.Plaintext).toHaveLength(32);
  });

  it('GenerateRandom returns the requested number of bytes', async () => {
    const out = await kms.send(new GenerateRandomCommand({ NumberOfBytes: 48 }));
    expect(out.Plaintext).toHaveLength(48);
    await expectAwsError(kms.send(new GenerateRandomCommand({ NumberOfBytes: 1025 })), 'ValidationException');
  });
});

describe('key states', () => {
  it('a disabled key refuses Encrypt, Decrypt, ReEncrypt and GenerateDataKey with DisabledException', async () => {
    const md = await createKey();
    const other = await createKey();
    const ct = await encrypt(md.KeyId!);
    const otherCt = await encrypt(other.KeyId!);
    await kms.send(new DisableKeyCommand({ KeyId: md.KeyId }));
    expect((await kms.send(new DescribeKeyCommand({ KeyId: md.KeyId }))).KeyMetadata).toMatchObject({ KeyState: 'Disabled', Enabled: false });
    await expectAwsError(kms.send(new EncryptCommand({ KeyId: md.KeyId, Plaintext: text('x') })), 'DisabledException');
    await expectAwsError(kms.send(new DecryptCommand({ CiphertextBlob: ct })), 'DisabledException');
    await expectAwsError(kms.send(new ReEncryptCommand({ CiphertextBlob: ct, DestinationKeyId: other.KeyId })), 'DisabledException');
    await expectAwsError(kms.send(new ReEncryptCommand({ CiphertextBlob: otherCt, DestinationKeyId: md.KeyId })), 'DisabledException');
    await expectAwsError(kms.send(new GenerateDataKeyCommand({ KeyId: md.KeyId, KeySpec: 'AES_256' })), 'DisabledException');
    await expectAwsError(kms.send(new GenerateDataKeyWithoutPlaintextCommand({ KeyId: md.KeyId, KeySpec: 'AES_256' })), 'DisabledException');
  });

  it('EnableKey makes a disabled key usable again', async () => {
    const md = await createKey();
    const ct = await encrypt(md.KeyId!, text('back'));
    await kms.send(new DisableKeyCommand({ KeyId: md.KeyId }));
    await kms.send(new EnableKeyCommand({ KeyId: md.KeyId }));
    const out = await kms.send(new DecryptCommand({ CiphertextBlob: ct }));
    expect(Buffer.from(out.Plaintext!).toString()).toBe('back');
  });

  it('a key pending deletion answers KMSInvalidStateException and CancelKeyDeletion leaves it Disabled', async () => {
    const md = await createKey();
    const ct = await encrypt(md.KeyId!);
    const sched = await kms.send(new ScheduleKeyDeletionCommand({ KeyId: md.KeyId, PendingWindowInDays: 7 }));
    expect(sched).toMatchObject({ KeyId: md.Arn, KeyState: 'PendingDeletion', PendingWindowInDays: 7 });
    expect(sched.DeletionDate!.getTime()).toBeGreaterThan(Date.now() + 6 * 86_400_000);
    const described = (await kms.send(new DescribeKeyCommand({ KeyId: md.KeyId }))).KeyMetadata!;
    expect(described).toMatchObject({ KeyState: 'PendingDeletion', Enabled: false, PendingDeletionWindowInDays: 7 });
    expect(described.DeletionDate).toBeInstanceOf(Date);
    await expectAwsError(kms.send(new EncryptCommand({ KeyId: md.KeyId, Plaintext: text('x') })), 'KMSInvalidStateException');
    await expectAwsError(kms.send(new DecryptCommand({ CiphertextBlob: ct })), 'KMSInvalidStateException');
    await expectAwsError(kms.send(new GenerateDataKeyCommand({ KeyId: md.KeyId, KeySpec: 'AES_256' })), 'KMSInvalidStateException');
    await expectAwsError(kms.send(new DisableKeyCommand({ KeyId: md.KeyId })), 'KMSInvalidStateException');
    await expectAwsError(kms.send(new ScheduleKeyDeletionCommand({ KeyId: md.KeyId })), 'KMSInvalidStateException');
    const cancel = await kms.send(new CancelKeyDeletionCommand({ KeyId: md.KeyId }));
    expect(cancel.KeyId).toBe(md.Arn);
    expect((await kms.send(new DescribeKeyCommand({ KeyId: md.KeyId }))).KeyMetadata?.KeyState).toBe('Disabled');
    await expectAwsError(kms.send(new CancelKeyDeletionCommand({ KeyId: md.KeyId })), 'KMSInvalidStateException');
  });

  it('ScheduleKeyDeletion accepts a PendingWindowInDays of 7 to 30 only', async () => {
    const md = await createKey();
    const err = await expectAwsError(kms.send(new ScheduleKeyDeletionCommand({ KeyId: md.KeyId, PendingWindowInDays: 6 })), 'ValidationException');
    expect(err.message).toContain('pendingWindowInDays');
    await expectAwsError(kms.send(new ScheduleKeyDeletionCommand({ KeyId: md.KeyId, PendingWindowInDays: 31 })), 'ValidationException');
  });
});

describe('rotation', () => {
  it('EnableKeyRotation sets the period that GetKeyRotationStatus reports', async () => {
    const md = await createKey();
    expect((await kms.send(new GetKeyRotationStatusCommand({ KeyId: md.KeyId }))).KeyRotationEnabled).toBe(false);
    await kms.send(new EnableKeyRotationCommand({ KeyId: md.KeyId, RotationPeriodInDays: 90 }));
    const on = await kms.send(new GetKeyRotationStatusCommand({ KeyId: md.KeyId }));
    expect(on).toMatchObject({ KeyRotationEnabled: true, RotationPeriodInDays: 90, KeyId: md.Arn });
    const days = (on.NextRotationDate!.getTime() - Date.now()) / 86_400_000;
    expect(days).toBeGreaterThan(89);
    expect(days).toBeLessThanOrEqual(90);
    await kms.send(new DisableKeyRotationCommand({ KeyId: md.KeyId }));
    const off = await kms.send(new GetKeyRotationStatusCommand({ KeyId: md.KeyId }));
    expect(off.KeyRotationEnabled).toBe(false);
    expect(off.NextRotationDate).toBeUndefined();
  });

  it('EnableKeyRotation defaults to 365 days and rejects periods outside 90..2560', async () => {
    const md = await createKey();
    await kms.send(new EnableKeyRotationCommand({ KeyId: md.KeyId }));
    expect((await kms.send(new GetKeyRotationStatusCommand({ KeyId: md.KeyId }))).RotationPeriodInDays).toBe(365);
    await expectAwsError(kms.send(new EnableKeyRotationCommand({ KeyId: md.KeyId, RotationPeriodInDays: 89 })), 'ValidationException');
    await expectAwsError(kms.send(new EnableKeyRotationCommand({ KeyId: md.KeyId, RotationPeriodInDays: 2561 })), 'ValidationException');
  });

  it('after RotateKeyOnDemand old ciphertexts decrypt and ReEncrypt to the same key moves them to the new material', async () => {
    const md = await createKey();
    const oldMaterial = md.CurrentKeyMaterialId!;
    const ct = await encrypt(md.KeyId!, text('before rotation'), { k: 'v' });
    const rot = await kms.send(new RotateKeyOnDemandCommand({ KeyId: md.KeyId }));
    expect(rot.KeyId).toBe(md.KeyId);
    const newMaterial = (await kms.send(new DescribeKeyCommand({ KeyId: md.KeyId }))).KeyMetadata!.CurrentKeyMaterialId!;
    expect(newMaterial).toMatch(/^[0-9a-f]{64}$/);
    expect(newMaterial).not.toBe(oldMaterial);

    const dec = await kms.send(new DecryptCommand({ CiphertextBlob: ct, EncryptionContext: { k: 'v' } }));
    expect(Buffer.from(dec.Plaintext!).toString()).toBe('before rotation');
    expect(dec.KeyMaterialId).toBe(oldMaterial);

    const re = await kms.send(
      new ReEncryptCommand({ CiphertextBlob: ct, SourceEncryptionContext: { k: 'v' }, DestinationKeyId: md.KeyId, DestinationEncryptionContext: { k: 'v' } }),
    );
    expect(re.SourceKeyMaterialId).toBe(oldMaterial);
    expect(re.DestinationKeyMaterialId).toBe(newMaterial);
    const dec2 = await kms.send(new DecryptCommand({ CiphertextBlob: re.CiphertextBlob, EncryptionContext: { k: 'v' } }));
    expect(dec2.KeyMaterialId).toBe(newMaterial);
  });

  it('ListKeyRotations lists each on-demand rotation with its key material id and date', async () => {
    const md = await createKey();
    await kms.send(new RotateKeyOnDemandCommand({ KeyId: md.KeyId }));
    const current = (await kms.send(new DescribeKeyCommand({ KeyId: md.KeyId }))).KeyMetadata!.CurrentKeyMaterialId;
    const out = await kms.send(new ListKeyRotationsCommand({ KeyId: md.KeyId }));
    expect(out.Rotations).toHaveLength(1);
    expect(out.Rotations![0]).toMatchObject({ KeyMaterialId: current, RotationType: 'ON_DEMAND', KeyMaterialState: 'CURRENT' });
    expect(out.Rotations![0]!.RotationDate).toBeInstanceOf(Date);
    const all = await kms.send(new ListKeyRotationsCommand({ KeyId: md.KeyId, IncludeKeyMaterial: 'ALL_KEY_MATERIAL' }));
    expect(all.Rotations!.map((r) => r.KeyMaterialId)).toEqual([md.CurrentKeyMaterialId, current]);
  });

  it('allows at most 25 on-demand rotations per key, then LimitExceededException', async () => {
    const md = await createKey();
    for (let i = 0; i < 25; i++) await kms.send(new RotateKeyOnDemandCommand({ KeyId: md.KeyId }));
    await expectAwsError(kms.send(new RotateKeyOnDemandCommand({ KeyId: md.KeyId })), 'LimitExceededException');
    const rotations = await kms.send(new ListKeyRotationsCommand({ KeyId: md.KeyId, Limit: 10 }));
    expect(rotations.Truncated).toBe(true);
  });

  it('rotating a disabled key answers DisabledException', async () => {
    const md = await createKey();
    await kms.send(new DisableKeyCommand({ KeyId: md.KeyId }));
    await expectAwsError(kms.send(new RotateKeyOnDemandCommand({ KeyId: md.KeyId })), 'DisabledException');
  });
});

describe('RSA keys', () => {
  let rsa: KeyMetadata;
  beforeAll(async () => {
    rsa = await createKey({ KeySpec: 'RSA_2048', KeyUsage: 'ENCRYPT_DECRYPT' });
  });

  it('reports the RSA key spec and its OAEP algorithms', () => {
    expect(rsa).toMatchObject({
      KeySpec: 'RSA_2048',
      KeyUsage: 'ENCRYPT_DECRYPT',
      EncryptionAlgorithms: ['RSAES_OAEP_SHA_1', 'RSAES_OAEP_SHA_256'],
    });
    expect(rsa.CurrentKeyMaterialId).toBeUndefined();
  });

  it('decrypts what a caller encrypted locally with the key from GetPublicKey', async () => {
    const pub = await kms.send(new GetPublicKeyCommand({ KeyId: rsa.KeyId }));
    expect(pub).toMatchObject({ KeySpec: 'RSA_2048', KeyUsage: 'ENCRYPT_DECRYPT', KeyId: rsa.Arn });
    const key = createPublicKey({ key: Buffer.from(pub.PublicKey!), format: 'der', type: 'spki' });
    const ct = publicEncrypt({ key, padding: constants.RSA_PKCS1_OAEP_PADDING, oaepHash: 'sha256' }, text('offline'));
    const out = await kms.send(new DecryptCommand({ CiphertextBlob: ct, KeyId: rsa.KeyId, EncryptionAlgorithm: 'RSAES_OAEP_SHA_256' }));
    expect(Buffer.from(out.Plaintext!).toString()).toBe('offline');
    expect(out.EncryptionAlgorithm).toBe('RSAES_OAEP_SHA_256');
  });

  it('round-trips Encrypt and Decrypt with RSAES_OAEP_SHA_1', async () => {
    const enc = await kms.send(new EncryptCommand({ KeyId: rsa.KeyId, Plaintext: text('sha1'), EncryptionAlgorithm: 'RSAES_OAEP_SHA_1' }));
    expect(enc.EncryptionAlgorithm).toBe('RSAES_OAEP_SHA_1');
    const dec = await kms.send(new DecryptCommand({ CiphertextBlob: enc.CiphertextBlob, KeyId: rsa.Arn, EncryptionAlgorithm: 'RSAES_OAEP_SHA_1' }));
    expect(Buffer.from(dec.Plaintext!).toString()).toBe('sha1');
  });

  it('Decrypt of an RSA ciphertext needs the KeyId and the matching algorithm', async () => {
    const enc = await kms.send(new EncryptCommand({ KeyId: rsa.KeyId, Plaintext: text('x'), EncryptionAlgorithm: 'RSAES_OAEP_SHA_256' }));
    await expectAwsError(kms.send(new DecryptCommand({ CiphertextBlob: enc.CiphertextBlob })), 'InvalidCiphertextException');
    await expectAwsError(kms.send(new DecryptCommand({ CiphertextBlob: enc.CiphertextBlob, KeyId: rsa.KeyId })), 'InvalidKeyUsageException');
    await expectAwsError(
      kms.send(new DecryptCommand({ CiphertextBlob: enc.CiphertextBlob, KeyId: rsa.KeyId, EncryptionAlgorithm: 'RSAES_OAEP_SHA_1' })),
      'InvalidCiphertextException',
    );
  });

  it('refuses symmetric-only operations with InvalidKeyUsageException or UnsupportedOperationException', async () => {
    await expectAwsError(kms.send(new EncryptCommand({ KeyId: rsa.KeyId, Plaintext: text('x') })), 'InvalidKeyUsageException');
    await expectAwsError(kms.send(new GenerateDataKeyCommand({ KeyId: rsa.KeyId, KeySpec: 'AES_256' })), 'InvalidKeyUsageException');
    await expectAwsError(kms.send(new EnableKeyRotationCommand({ KeyId: rsa.KeyId })), 'UnsupportedOperationException');
    await expectAwsError(kms.send(new RotateKeyOnDemandCommand({ KeyId: rsa.KeyId })), 'UnsupportedOperationException');
  });

  it.each(['RSA_3072', 'RSA_4096'] as const)('creates %s keys that encrypt the largest OAEP SHA-256 plaintext', async (spec) => {
    const md = await createKey({ KeySpec: spec, KeyUsage: 'ENCRYPT_DECRYPT' });
    const max = (spec === 'RSA_3072' ? 384 : 512) - 66;
    const pt = randomBytes(max);
    const enc = await kms.send(new EncryptCommand({ KeyId: md.KeyId, Plaintext: pt, EncryptionAlgorithm: 'RSAES_OAEP_SHA_256' }));
    const dec = await kms.send(new DecryptCommand({ CiphertextBlob: enc.CiphertextBlob, KeyId: md.KeyId, EncryptionAlgorithm: 'RSAES_OAEP_SHA_256' }));
    expect(Buffer.from(dec.Plaintext!).equals(pt)).toBe(true);
  });
});

describe('imported key material (Origin EXTERNAL)', () => {
  async function importParams(keyId: string, alg: 'RSAES_OAEP_SHA_256' | 'RSA_AES_KEY_WRAP_SHA_256') {
    const p = await kms.send(new GetParametersForImportCommand({ KeyId: keyId, WrappingAlgorithm: alg, WrappingKeySpec: 'RSA_2048' }));
    expect(p.KeyId).toMatch(/^arn:/);
    expect(p.ParametersValidTo!.getTime()).toBeGreaterThan(Date.now());
    return { token: p.ImportToken!, key: createPublicKey({ key: Buffer.from(p.PublicKey!), format: 'der', type: 'spki' }) };
  }

  it('goes from PendingImport to Enabled after ImportKeyMaterial with RSAES_OAEP_SHA_256', async () => {
    const md = await createKey({ Origin: 'EXTERNAL' });
    expect(md).toMatchObject({ Origin: 'EXTERNAL', KeyState: 'PendingImport', Enabled: false });
    await expectAwsError(kms.send(new EncryptCommand({ KeyId: md.KeyId, Plaintext: text('x') })), 'KMSInvalidStateException');
    const { token, key } = await importParams(md.KeyId!, 'RSAES_OAEP_SHA_256');
    const material = randomBytes(32);
    const wrapped = publicEncrypt({ key, padding: constants.RSA_PKCS1_OAEP_PADDING, oaepHash: 'sha256' }, material);
    const imp = await kms.send(
      new ImportKeyMaterialCommand({ KeyId: md.KeyId, ImportToken: token, EncryptedKeyMaterial: wrapped, ExpirationModel: 'KEY_MATERIAL_DOES_NOT_EXPIRE' }),
    );
    expect(imp.KeyMaterialId).toMatch(/^[0-9a-f]{64}$/);
    const after = (await kms.send(new DescribeKeyCommand({ KeyId: md.KeyId }))).KeyMetadata!;
    expect(after).toMatchObject({ KeyState: 'Enabled', Enabled: true, ExpirationModel: 'KEY_MATERIAL_DOES_NOT_EXPIRE', CurrentKeyMaterialId: imp.KeyMaterialId });
    const ct = await encrypt(md.KeyId!, text('imported'));
    const dec = await kms.send(new DecryptCommand({ CiphertextBlob: ct }));
    expect(Buffer.from(dec.Plaintext!).toString()).toBe('imported');
    await expectAwsError(kms.send(new EnableKeyRotationCommand({ KeyId: md.KeyId })), 'UnsupportedOperationException');
    await expectAwsError(kms.send(new RotateKeyOnDemandCommand({ KeyId: md.KeyId })), 'UnsupportedOperationException');
  });

  it('imports material wrapped with RSA_AES_KEY_WRAP_SHA_256 and refuses different material later', async () => {
    const md = await createKey({ Origin: 'EXTERNAL' });
    const { token, key } = await importParams(md.KeyId!, 'RSA_AES_KEY_WRAP_SHA_256');
    const wrap = (material: Buffer) => {
      const aesKey = randomBytes(32);
      const c = createCipheriv('id-aes256-wrap-pad', aesKey, Buffer.from('A65959A6', 'hex'));
      const wrappedMaterial = Buffer.concat([c.update(material), c.final()]);
      const wrappedKey = publicEncrypt({ key, padding: constants.RSA_PKCS1_OAEP_PADDING, oaepHash: 'sha256' }, aesKey);
      return Buffer.concat([wrappedKey, wrappedMaterial]);
    };
    await kms.send(new ImportKeyMaterialCommand({ KeyId: md.KeyId, ImportToken: token, EncryptedKeyMaterial: wrap(randomBytes(32)) }));
    expect((await kms.send(new DescribeKeyCommand({ KeyId: md.KeyId }))).KeyMetadata?.KeyState).toBe('Enabled');
    await expectAwsError(
      kms.send(new ImportKeyMaterialCommand({ KeyId: md.KeyId, ImportToken: token, EncryptedKeyMaterial: wrap(randomBytes(32)) })),
      'IncorrectKeyMaterialException',
    );
  });

  it('refuses an import token of another request with InvalidImportTokenException', async () => {
    const md = await createKey({ Origin: 'EXTERNAL' });
    const { key } = await importParams(md.KeyId!, 'RSAES_OAEP_SHA_256');
    const wrapped = publicEncrypt({ key, padding: constants.RSA_PKCS1_OAEP_PADDING, oaepHash: 'sha256' }, randomBytes(32));
    await expectAwsError(
      kms.send(new ImportKeyMaterialCommand({ KeyId: md.KeyId, ImportToken: randomBytes(48), EncryptedKeyMaterial: wrapped })),
      'InvalidImportTokenException',
    );
  });

  it('GetParametersForImport on a key with KMS-made material answers UnsupportedOperationException', async () => {
    const md = await createKey();
    await expectAwsError(
      kms.send(new GetParametersForImportCommand({ KeyId: md.KeyId, WrappingAlgorithm: 'RSAES_OAEP_SHA_256', WrappingKeySpec: 'RSA_2048' })),
      'UnsupportedOperationException',
    );
  });
});

describe('key policies and tags', () => {
  it('returns the default key policy when CreateKey had none', async () => {
    const md = await createKey();
    const out = await kms.send(new GetKeyPolicyCommand({ KeyId: md.KeyId }));
    expect(out.PolicyName).toBe('default');
    const policy = JSON.parse(out.Policy!) as { Statement: Array<{ Principal: { AWS: string }; Action: string }> };
    expect(policy.Statement[0]).toMatchObject({ Principal: { AWS: `arn:aws:iam::${md.AWSAccountId}:root` }, Action: 'kms:*' });
  });

  it('stores policies verbatim from CreateKey and PutKeyPolicy', async () => {
    const p1 = `{"Version":"2012-10-17",  "Statement":[{"Effect":"Allow","Principal":{"AWS":"*"},"Action":"kms:*","Resource":"*"}]}`;
    const md = await createKey({ Policy: p1 });
    expect((await kms.send(new GetKeyPolicyCommand({ KeyId: md.KeyId, PolicyName: 'default' }))).Policy).toBe(p1);
    const p2 = `{\n  "Version": "2012-10-17",\n  "Statement": []\n}`;
    await kms.send(new PutKeyPolicyCommand({ KeyId: md.KeyId, PolicyName: 'default', Policy: p2 }));
    expect((await kms.send(new GetKeyPolicyCommand({ KeyId: md.KeyId }))).Policy).toBe(p2);
    await expectAwsError(kms.send(new PutKeyPolicyCommand({ KeyId: md.KeyId, Policy: 'not json' })), 'MalformedPolicyDocumentException');
  });

  it('tags keys at creation and with TagResource and UntagResource', async () => {
    const md = await createKey({ Tags: [{ TagKey: 'team', TagValue: 'payments' }] });
    await kms.send(new TagResourceCommand({ KeyId: md.KeyId, Tags: [{ TagKey: 'env', TagValue: 'test' }, { TagKey: 'team', TagValue: 'risk' }] }));
    const tags = await kms.send(new ListResourceTagsCommand({ KeyId: md.KeyId }));
    expect(tags.Tags).toEqual(expect.arrayContaining([{ TagKey: 'team', TagValue: 'risk' }, { TagKey: 'env', TagValue: 'test' }]));
    expect(tags.Tags).toHaveLength(2);
    await kms.send(new UntagResourceCommand({ KeyId: md.KeyId, TagKeys: ['team'] }));
    expect((await kms.send(new ListResourceTagsCommand({ KeyId: md.KeyId }))).Tags).toEqual([{ TagKey: 'env', TagValue: 'test' }]);
  });
});

describe('GetKeyLastUsage', () => {
  it('is empty for a new key and then reports the last successful cryptographic operation', async () => {
    const md = await createKey();
    const fresh = await kms.send(new GetKeyLastUsageCommand({ KeyId: md.KeyId }));
    expect(fresh.KeyLastUsage?.Operation).toBeUndefined();
    expect(fresh.KeyCreationDate?.getTime()).toBe(md.CreationDate?.getTime());
    expect(fresh.TrackingStartDate).toBeInstanceOf(Date);

    const ct = await encrypt(md.KeyId!, text('x'), { a: 'b' });
    await expectAwsError(kms.send(new DecryptCommand({ CiphertextBlob: ct })), 'InvalidCiphertextException');
    const used = await kms.send(new GetKeyLastUsageCommand({ KeyId: md.Arn }));
    expect(used.KeyLastUsage).toMatchObject({ Operation: 'Encrypt' });
    expect(used.KeyLastUsage?.Timestamp).toBeInstanceOf(Date);
    expect(used.KeyLastUsage?.CloudTrailEventId).toBeTruthy();
    expect(used.KeyLastUsage?.KmsRequestId).toBeTruthy();
  });

  it('ReEncrypt counts as use of both the source and the destination key', async () => {
    const src = await createKey();
    const dest = await createKey();
    const ct = await encrypt(src.KeyId!);
    await kms.send(new ReEncryptCommand({ CiphertextBlob: ct, DestinationKeyId: dest.KeyId }));
    for (const k of [src, dest]) {
      expect((await kms.send(new GetKeyLastUsageCommand({ KeyId: k.KeyId }))).KeyLastUsage?.Operation).toBe('ReEncrypt');
    }
  });
});

describe('AWS managed keys', () => {
  it('creates the aws/s3 key on first use with KeyManager AWS and lists its alias', async () => {
    const out = await kms.send(new DescribeKeyCommand({ KeyId: 'alias/aws/s3' }));
    expect(out.KeyMetadata).toMatchObject({ KeyManager: 'AWS', KeyState: 'Enabled', KeySpec: 'SYMMETRIC_DEFAULT' });
    const aliases = await kms.send(new ListAliasesCommand({ KeyId: out.KeyMetadata!.KeyId }));
    expect(aliases.Aliases?.map((a) => a.AliasName)).toEqual(['alias/aws/s3']);
    const again = await kms.send(new DescribeKeyCommand({ KeyId: 'alias/aws/s3' }));
    expect(again.KeyMetadata?.Arn).toBe(out.KeyMetadata?.Arn);
  });
});

describe('admin controls and the usage log', () => {
  it.skipIf(external)('throttles cryptographic operations above the configured quota', async () => {
    const local = ep.local!;
    const md = await createKey();
    local.controls.setQuota({ rps: 5 });
    try {
      const results = await Promise.allSettled(
        Array.from({ length: 20 }, () => kms.send(new EncryptCommand({ KeyId: md.KeyId, Plaintext: text('x') }))),
      );
      const throttled = results.filter((r) => r.status === 'rejected' && (r.reason as Error).name === 'ThrottlingException');
      expect(throttled.length).toBeGreaterThanOrEqual(10);
      expect(results.some((r) => r.status === 'fulfilled')).toBe(true);
      // Management operations are not cryptographic operations and do not count.
      await kms.send(new DescribeKeyCommand({ KeyId: md.KeyId }));
    } finally {
      local.controls.setQuota(null);
    }
  });

  it.skipIf(external)('answers AccessDeniedException for a deny rule on operation, key and caller', async () => {
    const local = ep.local!;
    const md = await createKey();
    const other = await createKey();
    const ct = await encrypt(md.KeyId!);
    const otherKms = new KMSClient(clientConfig(ep, OTHER_CALLER));
    const remove = local.controls.addDenyRule({ service: 'kms', operation: 'Decrypt', resource: md.Arn, caller: OTHER_CALLER.accessKeyId });
    try {
      await expectAwsError(otherKms.send(new DecryptCommand({ CiphertextBlob: ct })), 'AccessDeniedException');
      await otherKms.send(new DecryptCommand({ CiphertextBlob: await encrypt(other.KeyId!) }));
      await kms.send(new DecryptCommand({ CiphertextBlob: ct }));
      await otherKms.send(new EncryptCommand({ KeyId: md.KeyId, Plaintext: text('x') }));
    } finally {
      remove();
      otherKms.destroy();
    }
  });

  it.skipIf(external)('logs every call with key ARNs, error code and CloudTrail-style parameters but no data', async () => {
    const local = ep.local!;
    const src = await createKey();
    const dest = await createKey();
    const since = local.usage.all().length;
    const ct = await encrypt(src.KeyId!, text('never logged'), { purpose: 'log-test' });
    await kms.send(new ReEncryptCommand({ CiphertextBlob: ct, SourceEncryptionContext: { purpose: 'log-test' }, DestinationKeyId: dest.Arn }));
    await expectAwsError(kms.send(new DecryptCommand({ CiphertextBlob: ct, EncryptionContext: { purpose: 'wrong' } })), 'InvalidCiphertextException');
    const entries = local.usage.all().slice(since);
    expect(entries.map((e) => e.eventName)).toEqual(['Encrypt', 'ReEncrypt', 'Decrypt']);
    const [enc, re, dec] = entries;
    expect(enc).toMatchObject({
      accessKeyId: CREDENTIALS.accessKeyId,
      keyArns: [src.Arn],
      requestParameters: { keyId: src.KeyId, encryptionContext: { purpose: 'log-test' }, encryptionAlgorithm: 'SYMMETRIC_DEFAULT' },
    });
    expect(enc?.errorCode).toBeUndefined();
    expect(re?.keyArns).toEqual([src.Arn, dest.Arn]);
    expect(re?.requestParameters).toMatchObject({ destinationKeyId: dest.Arn, sourceEncryptionContext: { purpose: 'log-test' } });
    expect(dec).toMatchObject({ errorCode: 'InvalidCiphertextException', keyArns: [src.Arn] });
    const serialized = JSON.stringify(entries);
    expect(serialized).not.toContain(Buffer.from('never logged').toString('base64'));
    expect(serialized).not.toContain(Buffer.from(ct).toString('base64'));
  });
});

describe('internal API for S3', () => {
  const ctxFor = (accessKeyId: string): RequestContext => ({
    requestId: uniqueName('req'),
    accessKeyId,
    accountId: '000000000000',
    region: ep.region,
    sourceIp: '127.0.0.1',
    userAgent: 'test',
    time: new Date(),
  });

  it.skipIf(external)('generates and decrypts data keys under aws/s3 when no key id is given, logged as invoked by S3', async () => {
    const svc = ep.local!.kms;
    const ctx = ctxFor(CREDENTIALS.accessKeyId);
    const ec = { 'aws:s3:arn': 'arn:aws:s3:::bucket/key' };
    const dk = await svc.serviceGenerateDataKey({ encryptionContext: ec, ctx, invokedBy: 's3.amazonaws.com' });
    expect(dk.keyArn).toBe(svc.resolveKeyArn('alias/aws/s3', ctx));
    expect(dk.plaintext).toHaveLength(32);
    expect(dk.keyMaterialId).toMatch(/^[0-9a-f]{64}$/);
    const back = await svc.serviceDecrypt({ ciphertextBlob: dk.ciphertextBlob, encryptionContext: ec, ctx, invokedBy: 's3.amazonaws.com' });
    expect(back.plaintext.equals(dk.plaintext)).toBe(true);
    const last = ep.local!.usage.all().at(-1);
    expect(last).toMatchObject({ eventName: 'Decrypt', invokedBy: 's3.amazonaws.com', accessKeyId: CREDENTIALS.accessKeyId, keyArns: [dk.keyArn] });
  });

  it.skipIf(external)('re-wraps a data key under another key and enforces key state and quota', async () => {
    const svc = ep.local!.kms;
    const ctx = ctxFor(CREDENTIALS.accessKeyId);
    const a = await createKey();
    const b = await createKey();
    const ec = { 'aws:s3:arn': 'arn:aws:s3:::bucket/obj' };
    const dk = await svc.serviceGenerateDataKey({ keyId: a.KeyId!, encryptionContext: ec, ctx, invokedBy: 's3.amazonaws.com' });
    const re = await svc.serviceReEncrypt({ ciphertextBlob: dk.ciphertextBlob, encryptionContext: ec, destinationKeyId: b.Arn!, ctx, invokedBy: 's3.amazonaws.com' });
    expect(re.keyArn).toBe(b.Arn);
    const back = await svc.serviceDecrypt({ ciphertextBlob: re.ciphertextBlob, encryptionContext: ec, ctx, invokedBy: 's3.amazonaws.com' });
    expect(back.plaintext.equals(dk.plaintext)).toBe(true);
    await kms.send(new DisableKeyCommand({ KeyId: b.KeyId }));
    await expect(svc.serviceDecrypt({ ciphertextBlob: re.ciphertextBlob, encryptionContext: ec, ctx, invokedBy: 's3.amazonaws.com' })).rejects.toMatchObject({ code: 'DisabledException' });
    await expect(svc.serviceGenerateDataKey({ keyId: 'alias/nope-nope', encryptionContext: ec, ctx, invokedBy: 's3.amazonaws.com' })).rejects.toMatchObject({ code: 'NotFoundException' });
    ep.local!.controls.setQuota({ rps: 1, burst: 1 });
    try {
      await svc.serviceGenerateDataKey({ keyId: a.KeyId!, encryptionContext: ec, ctx, invokedBy: 's3.amazonaws.com' });
      await expect(svc.serviceGenerateDataKey({ keyId: a.KeyId!, encryptionContext: ec, ctx, invokedBy: 's3.amazonaws.com' })).rejects.toMatchObject({ code: 'ThrottlingException' });
    } finally {
      ep.local!.controls.setQuota(null);
    }
  });
});

describe('persistence', () => {
  it.skipIf(external)('keys, aliases, rotations and RSA keys survive a restart with --data-dir', async () => {
    const dataDir = await mkdtemp(join(tmpdir(), 'aws-local-kms-'));
    try {
      const first = await startAwsLocal({ port: 0, dataDir });
      const c1 = new KMSClient(clientConfig({ url: first.url, region: ep.region, local: first, close: () => first.close() }));
      const sym = (await c1.send(new CreateKeyCommand({}))).KeyMetadata!;
      await c1.send(new CreateAliasCommand({ AliasName: 'alias/persisted', TargetKeyId: sym.KeyId }));
      const ct = (await c1.send(new EncryptCommand({ KeyId: 'alias/persisted', Plaintext: text('durable'), EncryptionContext: { a: 'b' } }))).CiphertextBlob!;
      await c1.send(new RotateKeyOnDemandCommand({ KeyId: sym.KeyId }));
      const rsaKey = (await c1.send(new CreateKeyCommand({ KeySpec: 'RSA_2048', KeyUsage: 'ENCRYPT_DECRYPT' }))).KeyMetadata!;
      const rsaCt = (await c1.send(new EncryptCommand({ KeyId: rsaKey.KeyId, Plaintext: text('rsa'), EncryptionAlgorithm: 'RSAES_OAEP_SHA_256' }))).CiphertextBlob!;
      c1.destroy();
      await first.close();

      const second = await startAwsLocal({ port: 0, dataDir });
      const c2 = new KMSClient(clientConfig({ url: second.url, region: ep.region, local: second, close: () => second.close() }));
      try {
        const dec = await c2.send(new DecryptCommand({ CiphertextBlob: ct, EncryptionContext: { a: 'b' } }));
        expect(Buffer.from(dec.Plaintext!).toString()).toBe('durable');
        expect(dec.KeyMaterialId).toBe(sym.CurrentKeyMaterialId);
        expect((await c2.send(new DescribeKeyCommand({ KeyId: 'alias/persisted' }))).KeyMetadata?.KeyId).toBe(sym.KeyId);
        expect((await c2.send(new ListKeyRotationsCommand({ KeyId: sym.KeyId }))).Rotations).toHaveLength(1);
        const rsaDec = await c2.send(new DecryptCommand({ CiphertextBlob: rsaCt, KeyId: rsaKey.KeyId, EncryptionAlgorithm: 'RSAES_OAEP_SHA_256' }));
        expect(Buffer.from(rsaDec.Plaintext!).toString()).toBe('rsa');
      } finally {
        c2.destroy();
        await second.close();
      }
    } finally {
      await rm(dataDir, { recursive: true, force: true });
    }
  });
});
