import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { constants, createPublicKey, publicEncrypt, randomBytes } from 'node:crypto';
import {
  KMSClient,
  CreateAliasCommand,
  CreateKeyCommand,
  DescribeKeyCommand,
  EnableKeyRotationCommand,
  EncryptCommand,
  GetKeyPolicyCommand,
  GetKeyRotationStatusCommand,
  GetParametersForImportCommand,
  ImportKeyMaterialCommand,
  ListKeysCommand,
  ListResourceTagsCommand,
} from '@aws-sdk/client-kms';
import type { S3Client } from '@aws-sdk/client-s3';
import { CreateBucketCommand, HeadObjectCommand, PutObjectCommand } from '@aws-sdk/client-s3';
import type { SourceSpec } from '@rekey/core';
import { awsClientConfig, uniqueName, type TestSchema } from '@rekey/testing';
import { startEngineFixture, type EngineFixture } from './engine-fixture.js';
import {
  engineMigrations,
  FleetError,
  planRotation,
  runRotation,
  REPLACES_TAG,
  ROTATION_TAG,
  type Engine,
  type RotationOptions,
  type RotationStep,
} from '../src/index.js';

const POLICY = JSON.stringify({
  Version: '2012-10-17',
  Id: 'rotation-test-policy',
  Statement: [{ Sid: 'Root', Effect: 'Allow', Principal: { AWS: 'arn:aws:iam::000000000000:root' }, Action: 'kms:*', Resource: '*' }],
});

describe('rotation workflow on aws-local, Redis and Postgres (engine in-process)', () => {
  let f: EngineFixture;
  let engine: Engine;
  let kms: KMSClient;
  let s3: S3Client;
  let db: TestSchema;

  beforeAll(async () => {
    f = await startEngineFixture('rotation', { db: true });
    ({ engine, kms, s3 } = f);
    db = f.db!;
  });

  afterAll(async () => {
    await f?.close();
  });

  /** An old key with a policy, tags and description behind a new alias, and a bucket of objects under it. */
  async function arrange(name: string, objects: number, extra: { origin?: 'EXTERNAL'; multiRegion?: boolean } = {}) {
    const alias = `alias/${name}`;
    const out = await kms.send(
      new CreateKeyCommand({
        Description: `${name} data key`,
        Policy: POLICY,
        Tags: [{ TagKey: 'team', TagValue: 'payments' }, { TagKey: 'env', TagValue: 'test' }],
        ...(extra.multiRegion ? { MultiRegion: true } : {}),
      }),
    );
    const oldKey = out.KeyMetadata!.Arn!;
    await kms.send(new CreateAliasCommand({ AliasName: alias, TargetKeyId: oldKey }));
    const bucket = uniqueName(name);
    await s3.send(new CreateBucketCommand({ Bucket: bucket }));
    for (let i = 0; i < objects; i++) {
      await s3.send(new PutObjectCommand({ Bucket: bucket, Key: `o/${i}`, Body: `object ${i}`, ServerSideEncryption: 'aws:kms', SSEKMSKeyId: alias }));
    }
    const sources: SourceSpec[] = [{ name: 'objects', kind: 's3-sse-kms', bucket, includeVersions: false, strategy: 'update-encryption', multipartThresholdBytes: 5 * 1024 ** 3 }];
    return { alias, oldKey, bucket, sources };
  }

  function options(alias: string, sources: readonly SourceSpec[], more: Partial<RotationOptions> = {}): RotationOptions {
    return { alias, kms, migrations: engineMigrations(engine, 'test'), audit: engine.audit, sources, actor: 'test', pollMs: 100, migrationOptions: { batchSize: 10 }, ...more };
  }

  async function keysReplacing(oldKey: string): Promise<string[]> {
    const found: string[] = [];
    const page = await kms.send(new ListKeysCommand({ Limit: 1000 }));
    for (const k of page.Keys ?? []) {
      const tags = await kms.send(new ListResourceTagsCommand({ KeyId: k.KeyArn! }));
      if (tags.Tags?.some((t) => t.TagKey === REPLACES_TAG && t.TagValue === oldKey)) found.push(k.KeyArn!);
    }
    return found;
  }

  const state = async (key: string) => (await kms.send(new DescribeKeyCommand({ KeyId: key }))).KeyMetadata!;

  it('clones the key with policy and tags, moves the alias, migrates the data, disables the old key and audits every step', async () => {
    const { alias, oldKey, bucket, sources } = await arrange('rot-full', 25);
    await kms.send(new EnableKeyRotationCommand({ KeyId: oldKey, RotationPeriodInDays: 180 }));
    const table = 'rot_rows';
    await db.pool.query(`CREATE TABLE ${table} (id int PRIMARY KEY, secret bytea NOT NULL)`);
    for (let i = 1; i <= 15; i++) {
      const ct = (await kms.send(new EncryptCommand({ KeyId: alias, Plaintext: randomBytes(32) }))).CiphertextBlob!;
      await db.pool.query(`INSERT INTO ${table} (id, secret) VALUES ($1, $2)`, [i, Buffer.from(ct)]);
    }
    const all: SourceSpec[] = [...sources, { name: 'rows', kind: 'postgres', schema: db.schema, table, primaryKey: ['id'], column: 'secret', format: 'kms-blob' }];

    const report = await runRotation(options(alias, all));

    const fresh = await state(alias);
    expect(report.newKey).toBe(fresh.Arn);
    expect(report.newKey).not.toBe(oldKey);
    expect(fresh.Description).toBe('rot-full data key');
    expect(fresh.KeySpec).toBe('SYMMETRIC_DEFAULT');
    expect((await kms.send(new GetKeyPolicyCommand({ KeyId: report.newKey, PolicyName: 'default' }))).Policy).toBe(POLICY);
    const tags = Object.fromEntries(((await kms.send(new ListResourceTagsCommand({ KeyId: report.newKey }))).Tags ?? []).map((t) => [t.TagKey, t.TagValue]));
    expect(tags).toEqual({ team: 'payments', env: 'test', [REPLACES_TAG]: oldKey, [ROTATION_TAG]: report.id });
    const rot = await kms.send(new GetKeyRotationStatusCommand({ KeyId: report.newKey }));
    expect(rot).toMatchObject({ KeyRotationEnabled: true, RotationPeriodInDays: 180 });
    for (let i = 0; i < 25; i += 6) {
      expect((await s3.send(new HeadObjectCommand({ Bucket: bucket, Key: `o/${i}` }))).SSEKMSKeyId).toBe(report.newKey);
    }
    const counts = await engine.store.counters(report.migrations.find((m) => m.source === 'rows')!.id, ['rows']);
    expect(counts['rows']?.verifyChecked).toBe(15);
    expect(counts['rows']?.verifyOldKey).toBe(0);
    expect((await state(oldKey)).KeyState).toBe('Disabled');
    expect(report.finalized).toBe(true);
    expect(report.migrations.map((m) => m.state)).toEqual(['finalized', 'finalized']);
    const audit = await engine.audit.read(report.id);
    expect(audit.map((e) => e.type)).toEqual([
      'rotation.started',
      'key.created',
      'key.rotation-enabled',
      'alias.updated',
      'migration.started',
      'migration.started',
      'migrations.ready',
      'key.disabled',
      'rotation.completed',
    ]);
    expect(await engine.audit.verify(report.id)).toEqual({ ok: true, entries: 9 });
  }, 60_000);

  it('resumes after a crash once the alias moved, without a second key or second migrations', async () => {
    const { alias, oldKey, sources } = await arrange('rot-crash', 12);
    const crash = (at: RotationStep) => (s: RotationStep) => {
      if (s === at) throw new Error(`simulated crash after ${s}`);
    };

    await expect(runRotation(options(alias, sources, { onStep: crash('alias-updated') }))).rejects.toThrow(/simulated crash after alias-updated/);
    await expect(runRotation(options(alias, sources, { onStep: crash('migrations-started') }))).rejects.toThrow(/simulated crash/);
    const report = await runRotation(options(alias, sources));

    expect(await keysReplacing(oldKey)).toEqual([report.newKey]);
    const mine = (await engine.list()).filter((m) => m.id.startsWith(report.id));
    expect(mine.map((m) => m.id)).toEqual([`${report.id}-objects`]);
    expect(report.resumed).toBe(true);
    expect((await state(oldKey)).KeyState).toBe('Disabled');
    const types = (await engine.audit.read(report.id)).map((e) => e.type);
    expect(types.filter((t) => t === 'key.created')).toHaveLength(1);
    expect(types.filter((t) => t === 'migration.started')).toHaveLength(1);
    expect(types.filter((t) => t === 'rotation.resumed')).toHaveLength(2);
    expect(types.at(-1)).toBe('rotation.completed');
    expect((await engine.audit.verify(report.id)).ok).toBe(true);
  }, 60_000);

  it('logs alias.updated on resume when a run died between moving the alias and logging it', async () => {
    const { alias, oldKey, sources } = await arrange('rot-alias-gap', 4);
    const dying = new KMSClient(awsClientConfig(f.ep));
    dying.middlewareStack.add(
      (next, context) => async (args) => {
        const out = await next(args);
        if (context.commandName === 'UpdateAliasCommand') throw new Error('killed right after UpdateAlias');
        return out;
      },
      { step: 'initialize', name: 'dieAfterUpdateAlias' },
    );

    await expect(runRotation(options(alias, sources, { kms: dying }))).rejects.toThrow(/killed right after UpdateAlias/);
    const report = await runRotation(options(alias, sources));

    const moved = (await engine.audit.read(report.id)).filter((e) => e.type === 'alias.updated');
    expect(moved.map((e) => e.data)).toEqual([{ alias, from: oldKey, to: report.newKey, recovered: true }]);
    expect(report.finalized).toBe(true);
    expect((await engine.audit.verify(report.id)).ok).toBe(true);
    dying.destroy();
  }, 60_000);

  it('logs migration.started on resume when a run died between creating the migration and logging it', async () => {
    const { alias, sources } = await arrange('rot-gap', 4);
    const real = engineMigrations(engine, 'test');
    const dying = { ...real, create: async (spec: unknown) => { await real.create(spec); throw new Error('killed right after creating the migration'); } };

    await expect(runRotation(options(alias, sources, { migrations: dying }))).rejects.toThrow(/killed right after/);
    const report = await runRotation(options(alias, sources));

    const started = (await engine.audit.read(report.id)).filter((e) => e.type === 'migration.started');
    expect(started.map((e) => e.data)).toEqual([expect.objectContaining({ migration: `${report.id}-objects`, source: 'objects', recovered: true })]);
    expect(report.finalized).toBe(true);
  }, 60_000);

  it('adopts a migration the SQS intake started for the same move when it saw the alias first, and still disables the old key', async () => {
    const { alias, oldKey, bucket, sources } = await arrange('rot-race', 8);
    let intakeMigration = '';
    // What intake autoMigrate does when the UpdateAlias event wins the race against step 4.
    const intakeFirst = async (s: RotationStep, data: Readonly<Record<string, unknown>>) => {
      if (s !== 'alias-updated') return;
      const m = await engine.createMigration({ id: 'ev-race0001', sources: [sources[0]!], from: [oldKey], to: String(data['key']) }, 'intake');
      intakeMigration = m.id;
    };

    const report = await runRotation(options(alias, sources, { onStep: intakeFirst }));

    expect(intakeMigration).toBe('ev-race0001');
    expect(report.migrations.map((m) => [m.id, m.state])).toEqual([['ev-race0001', 'finalized']]);
    expect((await engine.list()).filter((m) => m.id.startsWith(report.id))).toEqual([]);
    expect(report.finalized).toBe(true);
    expect((await state(oldKey)).KeyState).toBe('Disabled');
    expect((await s3.send(new HeadObjectCommand({ Bucket: bucket, Key: 'o/7' }))).SSEKMSKeyId).toBe(report.newKey);
    const audit = await engine.audit.read(report.id);
    expect(audit.find((e) => e.type === 'migration.adopted')?.data).toMatchObject({ migration: 'ev-race0001', source: 'objects', from: oldKey, to: report.newKey });
    expect(audit.map((e) => e.type)).not.toContain('migration.started');
  }, 60_000);

  it('finds a key created before a crash by its tag (alias not yet moved) and reuses it', async () => {
    const { alias, oldKey, sources } = await arrange('rot-early', 3);
    await expect(runRotation(options(alias, sources, { onStep: (s) => { if (s === 'key-created') throw new Error('crash'); } }))).rejects.toThrow('crash');
    const [created] = await keysReplacing(oldKey);
    expect((await state(alias)).Arn).toBe(oldKey);

    const report = await runRotation(options(alias, sources));

    expect(report.newKey).toBe(created);
    expect(await keysReplacing(oldKey)).toEqual([created]);
  }, 60_000);

  it('starts a new rotation of the new key once the previous one completed', async () => {
    const { alias, oldKey, sources } = await arrange('rot-twice', 2);
    const first = await runRotation(options(alias, sources, { now: () => new Date('2026-01-01T00:00:00Z') }));

    const second = await runRotation(options(alias, sources, { now: () => new Date('2026-02-01T00:00:00Z') }));

    expect(second.id).not.toBe(first.id);
    expect(second.oldKey).toBe(first.newKey);
    expect((await state(oldKey)).KeyState).toBe('Disabled');
    expect((await state(first.newKey)).KeyState).toBe('Disabled');
    expect((await state(alias)).Arn).toBe(second.newKey);
  }, 60_000);

  it('--no-finalize stops with every gate ready and the old key enabled', async () => {
    const { alias, oldKey, sources } = await arrange('rot-nofin', 4);

    const report = await runRotation(options(alias, sources, { noFinalize: true }));

    expect(report.finalized).toBe(false);
    expect(report.migrations[0]).toMatchObject({ state: 'ready', gateReady: true });
    expect((await state(oldKey)).KeyState).toBe('Enabled');
    expect((await engine.audit.read(report.id)).map((e) => e.type).at(-1)).toBe('rotation.finalize-skipped');
  }, 60_000);

  it('a dry run plans the clone, the alias move and the migrations and writes nothing', async () => {
    const { alias, oldKey, sources } = await arrange('rot-dry', 1);
    const keysBefore = (await kms.send(new ListKeysCommand({ Limit: 1000 }))).Keys?.length;

    const plan = await planRotation(options(alias, sources));

    expect(plan.lines.join('\n')).toMatch(/would create a key cloning .*KeySpec SYMMETRIC_DEFAULT/);
    expect(plan.lines.join('\n')).toContain(`would move ${alias}`);
    expect(plan.lines.join('\n')).toContain(`would start migration ${plan.id}-objects`);
    expect((await kms.send(new ListKeysCommand({ Limit: 1000 }))).Keys?.length).toBe(keysBefore);
    expect((await state(alias)).Arn).toBe(oldKey);
    expect(await engine.audit.read(plan.id)).toEqual([]);
    expect(await engine.store.get(`${plan.id}-objects`)).toBeNull();
  });

  it('refuses a multi-Region key with the reason, before writing anything', async () => {
    const { alias, sources } = await arrange('rot-mrk', 0, { multiRegion: true });

    const err = await runRotation(options(alias, sources)).catch((e: unknown) => e);

    expect(err).toBeInstanceOf(FleetError);
    expect((err as FleetError).code).toBe('not-supported');
    expect((err as Error).message).toMatch(/multi-Region key; rotate clones single-Region keys only/);
  });

  it('refuses an alias with no bound sources (bad usage)', async () => {
    const { alias } = await arrange('rot-unbound', 0);

    const err = await runRotation(options(alias, [])).catch((e: unknown) => e);

    expect((err as FleetError).code).toBe('bad-input');
    expect((err as Error).message).toMatch(/has no bindings in rekey.yaml/);
  });

  it('an EXTERNAL key: creates an EXTERNAL clone, stops until its material is imported, then continues', async () => {
    const alias = 'alias/rot-external';
    const oldKey = (await kms.send(new CreateKeyCommand({ Origin: 'EXTERNAL', Description: 'byok' }))).KeyMetadata!.Arn!;
    const material = randomBytes(32);
    await importMaterial(oldKey, material);
    await kms.send(new CreateAliasCommand({ AliasName: alias, TargetKeyId: oldKey }));
    const bucket = uniqueName('rot-ext');
    await s3.send(new CreateBucketCommand({ Bucket: bucket }));
    await s3.send(new PutObjectCommand({ Bucket: bucket, Key: 'a', Body: 'a', ServerSideEncryption: 'aws:kms', SSEKMSKeyId: oldKey }));
    const sources: SourceSpec[] = [{ name: 'objects', kind: 's3-sse-kms', bucket, includeVersions: false, strategy: 'update-encryption', multipartThresholdBytes: 5 * 1024 ** 3 }];
    const seen: string[] = [];

    const err = await runRotation(options(alias, sources, { onStep: (s, d) => { if (s === 'awaiting-import') seen.push(...(d['instructions'] as string[])); } })).catch((e: unknown) => e);

    expect((err as FleetError).code).toBe('awaiting-import');
    const [created] = await keysReplacing(oldKey);
    const meta = await state(created!);
    expect(meta).toMatchObject({ Origin: 'EXTERNAL', KeyState: 'PendingImport' });
    expect(seen.join('\n')).toContain(`aws kms get-parameters-for-import --key-id ${created}`);
    expect((await state(alias)).Arn).toBe(oldKey);

    await importMaterial(created!, randomBytes(32));
    const report = await runRotation(options(alias, sources));

    expect(report.newKey).toBe(created);
    expect((await state(oldKey)).KeyState).toBe('Disabled');
    expect((await s3.send(new HeadObjectCommand({ Bucket: bucket, Key: 'a' }))).SSEKMSKeyId).toBe(created);
  }, 60_000);

  async function importMaterial(keyId: string, material: Buffer): Promise<void> {
    const p = await kms.send(new GetParametersForImportCommand({ KeyId: keyId, WrappingAlgorithm: 'RSAES_OAEP_SHA_256', WrappingKeySpec: 'RSA_2048' }));
    const pub = createPublicKey({ key: Buffer.from(p.PublicKey!), format: 'der', type: 'spki' });
    const wrapped = publicEncrypt({ key: pub, padding: constants.RSA_PKCS1_OAEP_PADDING, oaepHash: 'sha256' }, material);
    await kms.send(new ImportKeyMaterialCommand({ KeyId: keyId, ImportToken: p.ImportToken, EncryptedKeyMaterial: wrapped, ExpirationModel: 'KEY_MATERIAL_DOES_NOT_EXPIRE' }));
  }
});
