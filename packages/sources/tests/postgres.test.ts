import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { RotateKeyOnDemandCommand } from '@aws-sdk/client-kms';
import { MigrationFatalError } from '@rekey/core';
import type { PostgresSourceSpec } from '@rekey/core';
import { createTestSchema, type TestSchema } from '@rekey/testing';
import { createPostgresSource } from '../src/postgres.js';
import { SourceError } from '../src/errors.js';
import { itemCtx, kmsDecrypt, kmsEncrypt, startAwsWorld, type AwsWorld } from './helpers/aws.js';

let world: AwsWorld;
let db: TestSchema;
const closers: (() => Promise<void>)[] = [];

beforeAll(async () => {
  world = await startAwsWorld();
});

afterEach(async () => {
  for (const c of closers.splice(0)) await c();
});

afterAll(async () => {
  await world.close();
});

/** A `secrets(id, blob, key_id)` table in a fresh schema and a source over it. */
async function setup(extra: Partial<PostgresSourceSpec> = {}) {
  db = await createTestSchema('rekey_srcf');
  closers.push(() => db.drop());
  await db.pool.query('CREATE TABLE secrets (id int PRIMARY KEY, blob bytea, key_id text)');
  const spec: PostgresSourceSpec = {
    name: 's',
    kind: 'postgres',
    schema: db.schema,
    table: 'secrets',
    primaryKey: ['id'],
    column: 'blob',
    format: 'kms-blob',
    context: { purpose: 'test' },
    ...extra,
  };
  const source = createPostgresSource(spec, { pool: db.pool, kms: world.gateway });
  const insert = async (id: number, keyArn: string, keyIdColumn = keyArn) => {
    const blob = await kmsEncrypt(world.kms, keyArn, Buffer.from(`secret ${id}`), { purpose: 'test' });
    await db.pool.query('INSERT INTO secrets (id, blob, key_id) VALUES ($1, $2, $3)', [id, blob, keyIdColumn]);
  };
  const row = async (id: number) => (await db.pool.query('SELECT blob, key_id FROM secrets WHERE id = $1', [id])).rows[0] as { blob: Buffer; key_id: string };
  return { source, insert, row, plan: { from: [world.keys.old], to: world.keys.target } };
}

describe('postgres', () => {
  it('a value that is not a KMS ciphertext fails the item with the reason', async () => {
    const { source, plan } = await setup();
    await db.pool.query('INSERT INTO secrets (id, blob) VALUES (1, $1)', [Buffer.from('definitely not a ciphertext')]);

    const out = await source.reencrypt({ kind: 'row', pk: ['1'] }, plan, itemCtx());

    expect(out.outcome).toBe('failed');
    expect(out.code).toBe('InvalidCiphertextException');
    expect(out.reason).toMatch(/ciphertext/i);
  });

  it('with a key id column, the column is updated and rows on the target skip KMS', async () => {
    const { source, insert, row, plan } = await setup({ keyIdColumn: 'key_id' });
    await insert(1, world.keys.old);
    await insert(2, world.keys.target);

    const moved = await source.reencrypt({ kind: 'row', pk: ['1'] }, plan, itemCtx());
    const callsBefore = world.fleetKmsCalls().length;
    const current = await source.reencrypt({ kind: 'row', pk: ['2'] }, plan, itemCtx());

    expect(moved).toEqual({ outcome: 'reencrypted', fromKey: world.keys.old });
    expect((await row(1)).key_id).toBe(world.keys.target);
    expect((await kmsDecrypt(world.kms, (await row(1)).blob, { purpose: 'test' })).plaintext.toString()).toBe('secret 1');
    expect(current.outcome).toBe('already-current');
    expect(world.fleetKmsCalls().length).toBe(callsBefore);
  });

  it('a key id column that lies is caught by KMS and the real key decides', async () => {
    const { source, insert, plan } = await setup({ keyIdColumn: 'key_id' });
    await insert(1, world.keys.other, world.keys.old);

    const out = await source.reencrypt({ kind: 'row', pk: ['1'] }, plan, itemCtx());

    expect(out.outcome).toBe('not-in-scope');
  });

  it('dry run with a key id column names the key it would move from', async () => {
    const { source, insert, row, plan } = await setup({ keyIdColumn: 'key_id' });
    await insert(1, world.keys.old);
    const before = await row(1);

    const out = await source.reencrypt({ kind: 'row', pk: ['1'] }, plan, itemCtx(true));

    expect(out).toEqual({ outcome: 'reencrypted', fromKey: world.keys.old, reason: `dry run: would move from ${world.keys.old}` });
    expect((await row(1)).blob.equals(before.blob)).toBe(true);
  });

  it('a refresh writes only blobs whose key material is not current', async () => {
    const { source, insert, row } = await setup();
    await insert(1, world.keys.target);
    const plan = { from: [world.keys.target], to: world.keys.target, refresh: true };

    const before = await source.reencrypt({ kind: 'row', pk: ['1'] }, plan, itemCtx());
    const unchanged = (await row(1)).blob;
    await world.kms.send(new RotateKeyOnDemandCommand({ KeyId: world.keys.target }));
    const after = await source.reencrypt({ kind: 'row', pk: ['1'] }, plan, itemCtx());
    const again = await source.reencrypt({ kind: 'row', pk: ['1'] }, plan, itemCtx());

    expect(before.outcome).toBe('already-current');
    expect(unchanged).toBeDefined();
    expect(after.outcome).toBe('reencrypted');
    expect((await row(1)).blob.equals(unchanged)).toBe(false);
    expect(again.outcome).toBe('already-current');
  });

  it('a malformed rekey envelope fails the item with the reason', async () => {
    const { source, plan } = await setup({ format: 'rekey-envelope' });
    await db.pool.query('INSERT INTO secrets (id, blob) VALUES (1, $1)', [Buffer.from('RKE\u0001 truncated')]);

    const out = await source.reencrypt({ kind: 'row', pk: ['1'] }, plan, itemCtx());

    expect(out.outcome).toBe('failed');
    expect(out.code).toBe('InvalidEnvelope');
    expect(out.reason).toMatch(/not a Rekey envelope/);
  });

  it('a table that does not exist is fatal', async () => {
    const { source } = await setup({ table: 'nope' });

    await expect(source.list(null, new AbortController().signal)).rejects.toThrow(MigrationFatalError);
  });

  it('a malformed cursor and a wrong item reference are refused', async () => {
    const { source, plan } = await setup();

    await expect(source.list('not json', new AbortController().signal)).rejects.toThrow(SourceError);
    await expect(source.reencrypt({ kind: 's3', key: 'x' }, plan, itemCtx())).rejects.toThrow(SourceError);
  });

  it('an injected pool of the wrong kind throws', () => {
    const spec: PostgresSourceSpec = { name: 's', kind: 'postgres', table: 't', primaryKey: ['id'], column: 'c', format: 'kms-blob' };
    expect(() => createPostgresSource(spec, { pool: {} as never, kms: world.gateway })).toThrow(SourceError);
  });
});
