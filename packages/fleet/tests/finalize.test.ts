import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DescribeKeyCommand, EncryptCommand, type KMSClient } from '@aws-sdk/client-kms';
import { CreateBucketCommand, PutObjectCommand, type S3Client } from '@aws-sdk/client-s3';
import type { FastifyInstance } from 'fastify';
import { uniqueName, type TestSchema } from '@rekey/testing';
import { startEngineFixture, type EngineFixture } from './engine-fixture.js';
import { buildApi, type Engine } from '../src/index.js';

const TOKEN = 'finalize-test-token-0123456789';

describe('finalize: refused while the gate is red, --force, disable, shared keys, deletion', () => {
  let f: EngineFixture;
  let engine: Engine;
  let api: FastifyInstance;
  let kms: KMSClient;
  let s3: S3Client;
  let db: TestSchema;

  const newKey = (d: string) => f.newKey(d);
  const keyState = async (k: string) => (await kms.send(new DescribeKeyCommand({ KeyId: k }))).KeyMetadata!.KeyState;
  const waitFor = (id: string, states: string[]) => f.waitUntil(id, (m) => states.includes(m.state), states.join('|'));
  const post = (url: string, body: unknown) => api.inject({ method: 'POST', url, headers: { authorization: `Bearer ${TOKEN}` }, payload: body as object });

  async function bucketUnder(keyArn: string, n: number): Promise<string> {
    const Bucket = uniqueName('fin');
    await s3.send(new CreateBucketCommand({ Bucket }));
    for (let i = 0; i < n; i++) await s3.send(new PutObjectCommand({ Bucket, Key: `o/${i}`, Body: `body ${i}`, ServerSideEncryption: 'aws:kms', SSEKMSKeyId: keyArn }));
    return Bucket;
  }

  async function readyMigration(): Promise<{ id: string; oldKey: string }> {
    const oldKey = await newKey('old');
    const to = await newKey('new');
    const bucket = await bucketUnder(oldKey, 3);
    const m = await engine.createMigration({ sources: [{ name: 'objs', kind: 's3-sse-kms', bucket }], from: [oldKey], to }, 'test');
    const done = await waitFor(m.id, ['ready', 'blocked', 'paused']);
    expect(done.state).toBe('ready');
    return { id: m.id, oldKey };
  }

  beforeAll(async () => {
    f = await startEngineFixture('finalize', { db: true });
    ({ engine, kms, s3 } = f);
    db = f.db!;
    api = await buildApi(engine, { token: TOKEN });
  });

  afterAll(async () => {
    await api?.close();
    await f?.close();
  });

  it('refuses finalize while the gate is red (409 with the red conditions), and --force disables the key and is audited as forced', async () => {
    const oldKey = await newKey('old');
    const to = await newKey('new');
    await db.pool.query('CREATE TABLE secrets (id int PRIMARY KEY, secret bytea NOT NULL)');
    const ct = (await kms.send(new EncryptCommand({ KeyId: oldKey, Plaintext: Buffer.from('s') }))).CiphertextBlob!;
    await db.pool.query('INSERT INTO secrets VALUES (1, $1), (2, $2)', [Buffer.from(ct), Buffer.from('not a ciphertext')]);
    const m = await engine.createMigration(
      { sources: [{ name: 'rows', kind: 'postgres', schema: db.schema, table: 'secrets', primaryKey: ['id'], column: 'secret' }], from: [oldKey], to, options: { failureRateMinItems: 1000 } },
      'test',
    );
    expect((await waitFor(m.id, ['ready', 'blocked'])).state).toBe('blocked');

    const refused = await post(`/migrations/${m.id}/finalize`, {});

    expect(refused.statusCode).toBe(409);
    expect(refused.json()).toMatchObject({ error: 'gate-not-ready' });
    expect(refused.json().message).toContain('no-unacknowledged-failures');
    expect(await keyState(oldKey)).toBe('Enabled');

    const forced = await post(`/migrations/${m.id}/finalize`, { force: true });

    expect(forced.statusCode).toBe(200);
    expect(forced.json()).toMatchObject({ disabled: [oldKey], forced: true, skipped: [], scheduledDeletion: [] });
    expect(await keyState(oldKey)).toBe('Disabled');
    const audit = await engine.audit.read(m.id);
    expect(audit.find((e) => e.type === 'key.disabled')?.data).toMatchObject({ key: oldKey, forced: true });
    expect(audit.find((e) => e.type === 'finalize.forced')?.data['red']).toEqual([expect.objectContaining({ name: 'no-unacknowledged-failures', ok: false })]);
    expect((await engine.get(m.id)).state).toBe('finalized');
    expect((await engine.audit.verify(m.id)).ok).toBe(true);
  });

  it('disables the old key when the gate is ready and records key.disabled', async () => {
    const { id, oldKey } = await readyMigration();

    const res = await post(`/migrations/${id}/finalize`, {});

    expect(res.statusCode).toBe(200);
    expect(res.json()).toMatchObject({ disabled: [oldKey], forced: false });
    expect(await keyState(oldKey)).toBe('Disabled');
    const entries = await engine.audit.read(id);
    const disabled = entries.find((e) => e.type === 'key.disabled');
    expect(disabled).toMatchObject({ actor: expect.stringMatching(/^api:/), data: { key: oldKey, forced: false } });
    expect(entries.some((e) => e.type === 'finalize.forced')).toBe(false);
    expect(entries.at(-1)).toMatchObject({ type: 'state.changed', data: expect.objectContaining({ to: 'finalized' }) });
  });

  it('leaves a key enabled that another unfinished migration still lists, and reports it', async () => {
    const { id, oldKey } = await readyMigration();
    const otherBucket = await bucketUnder(oldKey, 1);
    const other = await engine.createMigration({ sources: [{ name: 'more', kind: 's3-sse-kms', bucket: otherBucket }], from: [oldKey], to: await newKey('other new') }, 'test');
    // Any state short of finalized or cancelled is unfinished; it may even be ready itself.

    const res = await post(`/migrations/${id}/finalize`, {});

    expect(res.statusCode).toBe(200);
    expect(res.json().disabled).toEqual([]);
    expect(res.json().skipped).toEqual([{ key: oldKey, reason: expect.stringContaining(`migration ${other.id}`) }]);
    expect(await keyState(oldKey)).toBe('Enabled');
    expect((await engine.audit.read(id)).find((e) => e.type === 'key.disable-skipped')?.data).toMatchObject({ key: oldKey });
    await engine.cancel(other.id, 'test');
  });

  it('accepts --schedule-deletion-days only from 7 to 30, and then schedules deletion after disabling', async () => {
    const { id, oldKey } = await readyMigration();

    for (const days of [6, 31, 7.5]) {
      const bad = await post(`/migrations/${id}/finalize`, { scheduleDeletionDays: days });
      expect(bad.statusCode).toBe(400);
      expect(bad.json().message).toBe(`--schedule-deletion-days must be a whole number from 7 to 30, got ${days}`);
    }
    expect(await keyState(oldKey)).toBe('Enabled');

    const res = await post(`/migrations/${id}/finalize`, { scheduleDeletionDays: 7 });

    expect(res.statusCode).toBe(200);
    expect(res.json()).toMatchObject({ disabled: [oldKey], scheduledDeletion: [oldKey] });
    expect(await keyState(oldKey)).toBe('PendingDeletion');
    expect((await engine.audit.read(id)).find((e) => e.type === 'key.deletion-scheduled')?.data).toMatchObject({ key: oldKey, days: 7 });
  });
});
