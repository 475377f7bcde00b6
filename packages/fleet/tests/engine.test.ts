import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { setTimeout as sleep } from 'node:timers/promises';
import { CreateAliasCommand, CreateKeyCommand, DescribeKeyCommand, DisableKeyCommand, KMSClient } from '@aws-sdk/client-kms';
import { CreateBucketCommand, PutObjectCommand, S3Client } from '@aws-sdk/client-s3';
import pino from 'pino';
import { ValidationError } from '@rekey/core';
import { awsClientConfig, cleanupRedisPrefix, createTestRedis, createTestSchema, redisUrl, uniqueName, uniquePrefix, useAwsLocal, type AwsTestEndpoint, type TestSchema } from '@rekey/testing';
import { createEngine, FleetError, type Engine } from '../src/index.js';

describe('engine: creating migrations, bad input, fatal errors', () => {
  let ep: AwsTestEndpoint;
  let engine: Engine;
  let kms: KMSClient;
  let s3: S3Client;
  let db: TestSchema;
  const prefix = uniquePrefix('engine');
  let oldKey: string;
  let newKey: string;

  const key = async (d: string) => (await kms.send(new CreateKeyCommand({ Description: d }))).KeyMetadata!.Arn!;
  const waitFor = async (id: string, states: string[]) => {
    for (let i = 0; i < 600; i++) {
      const m = await engine.get(id);
      if (states.includes(m.state)) return m;
      await sleep(100);
    }
    throw new Error(`migration ${id} did not reach ${states.join('|')}`);
  };

  beforeAll(async () => {
    ep = await useAwsLocal();
    kms = new KMSClient(awsClientConfig(ep));
    s3 = new S3Client(awsClientConfig(ep));
    db = await createTestSchema('engine');
    engine = await createEngine({ redisUrl: redisUrl(), prefix, aws: { region: ep.region, endpoint: ep.url, credentials: awsClientConfig(ep).credentials }, logger: pino({ level: 'silent' }) });
    oldKey = await key('old');
    newKey = await key('new');
    await kms.send(new CreateAliasCommand({ AliasName: 'alias/engine-new', TargetKeyId: newKey }));
  });

  afterAll(async () => {
    await engine?.close();
    const r = createTestRedis();
    await cleanupRedisPrefix(r, prefix);
    await r.quit();
    await db?.drop();
    kms?.destroy();
    s3?.destroy();
    await ep?.close();
  });

  async function bucketWith(n: number, keyId: string): Promise<string> {
    const Bucket = uniqueName('engine');
    await s3.send(new CreateBucketCommand({ Bucket }));
    for (let i = 0; i < n; i++) {
      await s3.send(new PutObjectCommand({ Bucket, Key: `o/${i}`, Body: `body ${i}`, ServerSideEncryption: 'aws:kms', SSEKMSKeyId: keyId }));
    }
    return Bucket;
  }

  /** Runs `fn` with a coordinator (ticking every `tickMs`) and a worker of 2 batches, then stops both. */
  async function withFleet(fn: () => Promise<void>, tickMs = 100): Promise<void> {
    const coordinator = engine.startCoordinator({ tickMs });
    const worker = engine.startWorker({ concurrency: 2 });
    try {
      await fn();
    } finally {
      await worker.close();
      await coordinator.close();
    }
  }

  /** A table of `n` rows with a key-id column naming the old key, and a dry-run migration spec over it. */
  async function dryRunTable(table: string, n: number) {
    await db.pool.query(`CREATE TABLE ${table} (id int PRIMARY KEY, secret bytea NOT NULL, kid text NOT NULL)`);
    await db.pool.query(`INSERT INTO ${table} SELECT g, '\\x01'::bytea, $1 FROM generate_series(1, $2) g`, [oldKey, n]);
    return { sources: [{ name: 'rows', kind: 'postgres', schema: db.schema, table, primaryKey: ['id'], column: 'secret', keyIdColumn: 'kid' }], from: [oldKey], to: newKey, options: { dryRun: true } };
  }

  it('pins an alias target as an ARN and records migration.created in the audit log', async () => {
    const bucket = await bucketWith(1, oldKey);
    const m = await engine.createMigration({ sources: [{ name: 'a', kind: 's3-sse-kms', bucket }], from: [oldKey], to: 'alias/engine-new' }, 'test');
    expect(m.keys.to).toBe(newKey);
    expect(m.keys.aliases).toEqual({ 'alias/engine-new': newKey });
    const audit = await engine.audit.read(m.id);
    expect(audit.map((e) => e.type)).toEqual(['migration.created']);
    await engine.cancel(m.id, 'test');
  });

  it('refuses an unknown key or alias, naming it', async () => {
    const bucket = await bucketWith(0, oldKey);
    const err = await engine.createMigration({ sources: [{ name: 'a', kind: 's3-sse-kms', bucket }], from: ['alias/does-not-exist'], to: newKey }, 'test').catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ValidationError);
    expect((err as ValidationError).problems.join('\n')).toMatch(/from key alias\/does-not-exist/);
  });

  it('KMS failing (not the key) is a 503-class aws-unavailable error, not a problem with the spec', async () => {
    ep.local!.controls.setFault('kms:DescribeKey', { probability: 1, kind: 'error' });
    try {
      const err = await engine.createMigration({ sources: [{ name: 'x', kind: 's3-sse-kms', bucket: 'any' }], from: [oldKey], to: newKey }, 'test').catch((e: unknown) => e);
      expect(err).toBeInstanceOf(FleetError);
      expect(err).toMatchObject({ code: 'aws-unavailable', message: expect.stringMatching(/^to key .*: /) });
    } finally {
      ep.local!.controls.setFault('kms:DescribeKey', null);
    }
  });

  it('refuses a disabled target with the reason', async () => {
    const bucket = await bucketWith(0, oldKey);
    const off = await key('off');
    await kms.send(new DisableKeyCommand({ KeyId: off }));
    const err = (await engine.createMigration({ sources: [{ name: 'a', kind: 's3-sse-kms', bucket }], from: [oldKey], to: off }, 'test').catch((e: unknown) => e)) as ValidationError;
    expect(err).toBeInstanceOf(ValidationError);
    expect(err.problems.join('\n')).toMatch(new RegExp(`to key ${off}.*(Disabled|not Enabled|disabled)`));
  });

  it('refuses a bucket that does not exist', async () => {
    const err = (await engine.createMigration({ sources: [{ name: 'a', kind: 's3-sse-kms', bucket: 'no-such-bucket-here' }], from: [oldKey], to: newKey }, 'test').catch((e: unknown) => e)) as ValidationError;
    expect(err).toBeInstanceOf(ValidationError);
    expect(err.problems.join('\n')).toMatch(/source a: .*(NoSuchBucket|does not exist)/);
  });

  it('refuses a malformed spec, listing every problem', async () => {
    const err = (await engine.createMigration({ sources: [{ name: 'BAD NAME', kind: 's3-sse-kms' }], from: [], to: 7, options: { batchSize: 0 } }, 'test').catch((e: unknown) => e)) as ValidationError;
    expect(err).toBeInstanceOf(ValidationError);
    expect(err.problems.length).toBeGreaterThanOrEqual(4);
  });

  it('a value that is not a ciphertext fails that item with a reason, and the rest migrate', async () => {
    await db.pool.query('CREATE TABLE blobs (id int PRIMARY KEY, secret bytea NOT NULL)');
    const { EncryptCommand } = await import('@aws-sdk/client-kms');
    for (let id = 1; id <= 5; id++) {
      const ct = (await kms.send(new EncryptCommand({ KeyId: oldKey, Plaintext: Buffer.from(`s${id}`) }))).CiphertextBlob!;
      await db.pool.query('INSERT INTO blobs VALUES ($1, $2)', [id, Buffer.from(ct)]);
    }
    await db.pool.query('INSERT INTO blobs VALUES (6, $1)', [Buffer.from('this is not a KMS ciphertext')]);
    await withFleet(async () => {
      const m = await engine.createMigration(
        { sources: [{ name: 'rows', kind: 'postgres', schema: db.schema, table: 'blobs', primaryKey: ['id'], column: 'secret' }], from: [oldKey], to: newKey, options: { failureRateMinItems: 1000 } },
        'test',
      );
      await waitFor(m.id, ['ready', 'blocked']);
      const st = await engine.status(m.id);
      expect(st.totals.outcomes).toMatchObject({ reencrypted: 5, failed: 1 });
      const failures = await engine.failures(m.id);
      expect(failures).toHaveLength(1);
      expect(failures[0]).toMatchObject({ source: 'rows', item: expect.stringContaining('6') });
      expect(failures[0]!.reason.length).toBeGreaterThan(0);
      expect(st.gate.conditions.find((c) => c.name === 'no-unacknowledged-failures')?.ok).toBe(false);
      await expect(engine.finalize(m.id, { actor: 'test' })).rejects.toThrow(/gate/);
      await engine.ack(m.id, { all: true }, 'row 6 holds test garbage', 'test');
      const g = await engine.gate(m.id);
      expect(g.conditions.find((c) => c.name === 'no-unacknowledged-failures')?.ok).toBe(true);
    });
  });

  it('with the default batchSize (1000), each pass starts with pages of 100 and doubles them: 2,500 rows are pages of 100, 200, 400, 800 and 1000', async () => {
    const spec = await dryRunTable('ramp', 2500);
    await withFleet(async () => {
      const m = await engine.createMigration(spec, 'test');
      await waitFor(m.id, ['ready', 'blocked']);
      const st = await engine.status(m.id);
      const completed = (await engine.queue.queue.getJobs(['completed'])).filter((j) => j.data.migrationId === m.id);
      // Batches split off at the tail of a pass (ids `<page id>.s<at>`) are not pages, but count as batches.
      const split = (mode: string) => completed.filter((j) => j.data.mode === mode && /\.s\d+$/.test(String(j.id))).length;
      const pages = completed.filter((j) => j.data.mode === 'reencrypt' && !/\.s\d+$/.test(String(j.id)));
      const sizes = pages.sort((a, b) => a.data.page - b.data.page).map((j) => (j.data.items as unknown[]).length);

      expect(m.spec.options.batchSize).toBe(1000);
      expect(sizes).toEqual([100, 200, 400, 800, 1000]);
      expect(st.sources[0]!.counters).toMatchObject({
        discovered: 2500,
        batchesEnqueued: 5 + split('reencrypt'),
        batchesDone: 5 + split('reencrypt'),
        verifyDiscovered: 2500,
        verifyBatchesEnqueued: 5 + split('verify'),
      });
    });
  });

  it('a coordinator whose timer ticks once an hour still takes a migration from created to settled: every change wakes it', async () => {
    const spec = await dryRunTable('woken', 350);
    // The first tick runs at start; after that only the change channel can move the migration on:
    // create (API), each state change, the end of each enumeration pass, the last batch recorded.
    await withFleet(async () => {
      await sleep(200); // the start tick has run and found nothing
      const m = await engine.createMigration(spec, 'test');
      const settled = await waitFor(m.id, ['ready', 'blocked']);
      expect(settled.verifiedAt).toBeDefined();
      const c = (await engine.status(m.id)).sources[0]!.counters;
      // 3 pages (100, 200, 50), plus any batch split off at the tail of a pass.
      expect(c).toMatchObject({ discovered: 350, batchesDone: c.batchesEnqueued, verifyBatchesDone: c.verifyBatchesEnqueued });
      expect(c.batchesEnqueued).toBeGreaterThanOrEqual(3);
    }, 3_600_000);
  });

  it('finalize of a paused migration is refused before any key is disabled; resume and verify keep their reasons in the audit log; then it finalizes', async () => {
    const from = await key('finalize-paused-old');
    const bucket = await bucketWith(3, from);
    await withFleet(async () => {
      const m = await engine.createMigration({ sources: [{ name: 'objs', kind: 's3-sse-kms', bucket }], from: [from], to: newKey }, 'test');
      expect((await waitFor(m.id, ['ready', 'blocked', 'paused'])).state).toBe('ready');
      await engine.pause(m.id, 'test', 'change freeze');

      for (const force of [false, true]) {
        await expect(engine.finalize(m.id, { actor: 'test', force })).rejects.toThrow(`migration ${m.id} is paused; finalize needs it ready (or blocked, with --force): resume it first`);
      }
      expect((await kms.send(new DescribeKeyCommand({ KeyId: from }))).KeyMetadata!.KeyState).toBe('Enabled');
      expect((await engine.audit.read(m.id)).map((e) => e.type)).not.toContain('key.disabled');

      await engine.resume(m.id, 'test', 'freeze over');
      expect((await waitFor(m.id, ['ready', 'blocked'])).state).toBe('ready');
      await engine.verify(m.id, 'test', 'spot check before disabling');
      expect((await waitFor(m.id, ['ready', 'blocked'])).state).toBe('ready');
      const reasons = (await engine.audit.read(m.id)).filter((e) => e.type === 'state.changed').map((e) => [e.data['to'], e.data['reason']]);
      expect(reasons).toEqual(expect.arrayContaining([['verifying', 'freeze over'], ['verifying', 'spot check before disabling']]));
      expect((await engine.finalize(m.id, { actor: 'test' })).disabled).toEqual([from]);
    });
  });

  it('AccessDenied on the target pauses the migration with that reason, and resume finishes it', async () => {
    const bucket = await bucketWith(20, oldKey);
    const target = await key('denied-target');
    const remove = ep.local!.controls.addDenyRule({ service: 'kms', resource: target, operation: 'ReEncrypt' });
    const remove2 = ep.local!.controls.addDenyRule({ service: 'kms', resource: target, operation: 'GenerateDataKey' });
    const coordinator = engine.startCoordinator({ tickMs: 100 });
    const worker = engine.startWorker({ concurrency: 2 });
    try {
      const m = await engine.createMigration({ sources: [{ name: 'objs', kind: 's3-sse-kms', bucket }], from: [oldKey], to: target, options: { batchSize: 5 } }, 'test');
      const paused = await waitFor(m.id, ['paused', 'ready', 'blocked']);
      expect(paused.state).toBe('paused');
      expect(paused.reason).toMatch(/AccessDenied/);
      const st = await engine.status(m.id);
      expect(st.totals.outcomes['failed']).toBe(0);
      remove();
      remove2();
      await engine.resume(m.id, 'test');
      const done = await waitFor(m.id, ['ready', 'blocked', 'paused']);
      expect(done.state).toBe('ready');
      expect((await engine.status(m.id)).totals.outcomes['reencrypted']).toBe(20);
      const types = (await engine.audit.read(m.id)).map((e) => `${e.type}:${String(e.data['to'] ?? '')}`);
      expect(types).toContain('state.changed:paused');
    } finally {
      remove();
      remove2();
      await worker.close();
      await coordinator.close();
    }
  });
});
