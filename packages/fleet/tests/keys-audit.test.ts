import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { constants, createPublicKey, publicEncrypt, randomBytes } from 'node:crypto';
import {
  CreateAliasCommand,
  CreateKeyCommand,
  DisableKeyCommand,
  EnableKeyRotationCommand,
  EncryptCommand,
  GetKeyRotationStatusCommand,
  GetParametersForImportCommand,
  ImportKeyMaterialCommand,
  KMSClient,
  RotateKeyOnDemandCommand,
  ScheduleKeyDeletionCommand,
  TagResourceCommand,
  type CreateKeyCommandInput,
} from '@aws-sdk/client-kms';
import type { Redis } from 'ioredis';
import { awsClientConfig, cleanupRedisPrefix, createTestRedis, uniquePrefix, useAwsLocal, type AwsTestEndpoint } from '@rekey/testing';
import { auditKeys, createAuditLog, keyAuditCsv, keyAuditTable, redisKeys, DISABLED_BY_TAG, KEYS_AUDIT_ID, type KeyAuditResult } from '../src/index.js';

const DAY = 86_400_000;

describe('keys audit on purpose-built keys (aws-local)', () => {
  let ep: AwsTestEndpoint;
  let kms: KMSClient;
  let redis: Redis;
  const prefix = uniquePrefix('keys-audit');
  const k: Record<string, string> = {};

  const create = async (input: CreateKeyCommandInput = {}) => (await kms.send(new CreateKeyCommand(input))).KeyMetadata!.Arn!;
  const flags = (r: KeyAuditResult, arn: string) => r.rows.find((x) => x.arn === arn)!.flags.map((f) => f.code).sort();

  beforeAll(async () => {
    ep = await useAwsLocal();
    kms = new KMSClient(awsClientConfig(ep));
    redis = createTestRedis();
    k['good'] = await create({ Description: 'good' });
    await kms.send(new EnableKeyRotationCommand({ KeyId: k['good'], RotationPeriodInDays: 365 }));
    await kms.send(new CreateAliasCommand({ AliasName: 'alias/audit-good', TargetKeyId: k['good'] }));
    k['rotated'] = await create({ Description: 'rotated on demand' });
    await kms.send(new EnableKeyRotationCommand({ KeyId: k['rotated'], RotationPeriodInDays: 90 }));
    await kms.send(new RotateKeyOnDemandCommand({ KeyId: k['rotated'] }));
    k['off'] = await create({ Description: 'rotation off' });
    k['long'] = await create({ Description: 'period too long' });
    await kms.send(new EnableKeyRotationCommand({ KeyId: k['long'], RotationPeriodInDays: 730 }));
    k['rsa'] = await create({ KeySpec: 'RSA_2048', KeyUsage: 'ENCRYPT_DECRYPT' });
    k['external'] = await create({ Origin: 'EXTERNAL' });
    const p = await kms.send(new GetParametersForImportCommand({ KeyId: k['external'], WrappingAlgorithm: 'RSAES_OAEP_SHA_256', WrappingKeySpec: 'RSA_2048' }));
    const wrapped = publicEncrypt({ key: createPublicKey({ key: Buffer.from(p.PublicKey!), format: 'der', type: 'spki' }), padding: constants.RSA_PKCS1_OAEP_PADDING, oaepHash: 'sha256' }, randomBytes(32));
    await kms.send(new ImportKeyMaterialCommand({ KeyId: k['external'], ImportToken: p.ImportToken, EncryptedKeyMaterial: wrapped, ExpirationModel: 'KEY_MATERIAL_DOES_NOT_EXPIRE' }));
    k['disabled'] = await create({ Description: 'disabled but used' });
    await kms.send(new EnableKeyRotationCommand({ KeyId: k['disabled'] }));
    await kms.send(new EncryptCommand({ KeyId: k['disabled'], Plaintext: Buffer.from('x') }));
    await kms.send(new DisableKeyCommand({ KeyId: k['disabled'] }));
    k['retired'] = await create({ Description: 'disabled by a Rekey migration after its last use' });
    await kms.send(new EnableKeyRotationCommand({ KeyId: k['retired'] }));
    await kms.send(new EncryptCommand({ KeyId: k['retired'], Plaintext: Buffer.from('x') }));
    await kms.send(new DisableKeyCommand({ KeyId: k['retired'] }));
    await kms.send(new TagResourceCommand({ KeyId: k['retired'], Tags: [{ TagKey: DISABLED_BY_TAG, TagValue: 'm-retired' }] }));
    k['doomed'] = await create({ Description: 'pending deletion but used' });
    await kms.send(new EncryptCommand({ KeyId: k['doomed'], Plaintext: Buffer.from('x') }));
    await kms.send(new ScheduleKeyDeletionCommand({ KeyId: k['doomed'], PendingWindowInDays: 7 }));
  });

  afterAll(async () => {
    await cleanupRedisPrefix(redis, prefix);
    await redis?.quit();
    kms?.destroy();
    await ep?.close();
  });

  it('reports aliases, spec, origin, state, rotation, last rotation and last use of every customer-managed key', async () => {
    const r = await auditKeys({ kms });

    expect(r.rows).toHaveLength(Object.keys(k).length);
    const good = r.rows.find((x) => x.arn === k['good'])!;
    expect(good).toMatchObject({ aliases: ['alias/audit-good'], keySpec: 'SYMMETRIC_DEFAULT', origin: 'AWS_KMS', state: 'Enabled', rotation: { enabled: true, periodDays: 365 } });
    expect(Date.parse(good.rotation.nextRotation!)).toBeGreaterThan(Date.now() + 364 * DAY);
    const rotated = r.rows.find((x) => x.arn === k['rotated'])!;
    expect(rotated.lastRotation.type).toBe('ON_DEMAND');
    expect(Date.parse(rotated.lastRotation.date!)).toBeGreaterThan(Date.now() - 60_000);
    expect(r.rows.find((x) => x.arn === k['disabled'])!.lastUse.operation).toBe('Encrypt');
  });

  it('flags nothing on a key that rotates within the policy', async () => {
    const r = await auditKeys({ kms, maxAgeDays: 365 });

    expect(flags(r, k['good']!)).toEqual([]);
    expect(flags(r, k['rotated']!)).toEqual([]);
  });

  it('flags automatic rotation that is off where it could be on', async () => {
    const r = await auditKeys({ kms });

    expect(flags(r, k['off']!)).toEqual(['rotation-off']);
  });

  it('flags a rotation period longer than the policy allows', async () => {
    const r = await auditKeys({ kms, maxAgeDays: 365 });

    expect(flags(r, k['long']!)).toEqual(['period-too-long']);
    expect(flags(r, k['good']!)).toEqual([]);
    expect(flags((await auditKeys({ kms, maxAgeDays: 180 })), k['good']!)).toEqual(['period-too-long']);
  });

  it('flags keys with no rotation within the policy period, judged at a later date', async () => {
    const later = new Date(Date.now() + 400 * DAY);

    const r = await auditKeys({ kms, maxAgeDays: 365, now: later });

    expect(flags(r, k['good']!)).toEqual(['not-rotated-within-policy']);
    expect(r.rows.find((x) => x.arn === k['good'])!.flags[0]!.detail).toMatch(/created and never rotated 400 days ago/);
    expect(r.rows.find((x) => x.arn === k['rotated'])!.flags.find((f) => f.code === 'not-rotated-within-policy')!.detail).toMatch(/last rotated 400 days ago/);
    expect(flags(await auditKeys({ kms, maxAgeDays: 365, now: new Date(Date.now() + 300 * DAY) }), k['good']!)).toEqual([]);
  });

  it('flags key types that need manual rotation: asymmetric and imported material', async () => {
    const r = await auditKeys({ kms });

    expect(flags(r, k['rsa']!)).toEqual(['manual-rotation-required']);
    expect(r.rows.find((x) => x.arn === k['rsa'])!.flags[0]!.detail).toMatch(/RSA_2048 is an asymmetric key/);
    expect(flags(r, k['external']!)).toEqual(['manual-rotation-required']);
    expect(r.rows.find((x) => x.arn === k['external'])!.flags[0]!.detail).toMatch(/imported/);
    expect(r.rows.find((x) => x.arn === k['rsa'])!.rotation.enabled).toBeNull();
  });

  it('flags a disabled key and a key pending deletion that were used recently, and not once that use is old', async () => {
    const r = await auditKeys({ kms, recentDays: 30 });

    expect(flags(r, k['disabled']!)).toEqual(['disabled-but-used']);
    expect(flags(r, k['doomed']!)).toEqual(['pending-deletion-but-used']);
    // A key Rekey disabled: its last use was the migration's own, and the row says which migration.
    expect(flags(r, k['retired']!)).toEqual([]);
    expect(r.rows.find((x) => x.arn === k['retired'])!.disabledBy).toBe('m-retired');
    expect(r.rows.find((x) => x.arn === k['disabled'])!.disabledBy).toBeNull();
    const later = await auditKeys({ kms, recentDays: 30, now: new Date(Date.now() + 31 * DAY) });
    expect(flags(later, k['disabled']!)).toEqual([]);
    expect(flags(later, k['doomed']!)).toEqual([]);
  });

  it('counts every flag, and prints them as a table and as CSV', async () => {
    const r = await auditKeys({ kms });

    expect(r.flagged).toBe(r.rows.reduce((n, x) => n + x.flags.length, 0));
    expect(r.flagged).toBeGreaterThanOrEqual(6);
    const table = keyAuditTable(r).join('\n');
    expect(table).toContain('alias/audit-good');
    expect(table).toMatch(/! \S+ rotation-off: automatic rotation is off/);
    const csv = keyAuditCsv(r).trim().split('\n');
    expect(csv[0]).toMatch(/^arn,aliases,keySpec/);
    expect(csv).toHaveLength(r.rows.length + 1);
    expect(csv.find((l) => l.startsWith(k['off']!))).toMatch(/,rotation-off$/);
  });

  it('refuses a max age that is not a positive whole number', async () => {
    await expect(auditKeys({ kms, maxAgeDays: 0 })).rejects.toThrow(/max age must be a whole number of days/);
  });

  it('fix: a policy under 90 days can not be met by automatic rotation and changes nothing', async () => {
    const audit = createAuditLog(redis, redisKeys(prefix));

    const r = await auditKeys({ kms, maxAgeDays: 60, fix: { audit, actor: 'test' } });

    expect(r.fixed).toEqual([]);
    expect(r.unfixable.map((u) => u.key).sort()).toEqual([k['good'], k['long'], k['off'], k['rotated']].sort());
    expect(r.unfixable[0]!.reason).toMatch(/90 to 2560 days/);
    expect((await kms.send(new GetKeyRotationStatusCommand({ KeyId: k['off'] }))).KeyRotationEnabled).toBe(false);
  });

  it('fix: turns rotation on with the policy period where it is off or too long, audited', async () => {
    const audit = createAuditLog(redis, redisKeys(prefix));

    const r = await auditKeys({ kms, maxAgeDays: 365, fix: { audit, actor: 'test' } });

    expect(r.fixed.map((f) => f.key).sort()).toEqual([k['off'], k['long']].sort());
    expect(flags(r, k['off']!)).toEqual([]);
    expect(flags(r, k['long']!)).toEqual([]);
    expect(await kms.send(new GetKeyRotationStatusCommand({ KeyId: k['long'] }))).toMatchObject({ KeyRotationEnabled: true, RotationPeriodInDays: 365 });
    const entries = await audit.read(KEYS_AUDIT_ID);
    expect(entries.map((e) => [e.type, e.data['key'], e.data['periodDays']])).toEqual(
      expect.arrayContaining([['key.rotation-enabled', k['off'], 365], ['key.rotation-enabled', k['long'], 365]]),
    );
    expect(entries.find((e) => e.data['key'] === k['long'])!.data['before']).toEqual({ enabled: true, periodDays: 730 });
    expect((await audit.verify(KEYS_AUDIT_ID)).ok).toBe(true);
    expect(flags(r, k['rsa']!)).toEqual(['manual-rotation-required']);
  });
});
