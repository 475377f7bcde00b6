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
  return { spec, source, insert, row, plan: { from: [world.keys.old], to: world.keys.target } };
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

describe('postgres read-ahead', () => {
  /** The source of `setup`, again over a pool that records each statement's first word (but the writer's look at the column types). */
  async function counted(extra: Partial<PostgresSourceSpec> = {}) {
    const s = await setup(extra);
    const statements: string[] = [];
    const pool = {
      query: (text: string, values?: unknown[]) => {
        if (!text.includes('pg_attribute')) statements.push(text.split(' ')[0]!);
        return db.pool.query(text, values);
      },
    };
    const another = () => createPostgresSource(s.spec, { pool, kms: world.gateway });
    return { ...s, source: another(), another, statements };
  }
  const refs = (...ids: number[]) => ids.map((id) => ({ kind: 'row' as const, pk: [String(id)] }));

  it('a batch read ahead in one SELECT is moved with no other read (its writes may share UPDATEs)', async () => {
    const { source, insert, row, plan, statements } = await counted({ keyIdColumn: 'key_id' });
    for (const id of [1, 2, 3]) await insert(id, world.keys.old);
    await insert(4, world.keys.target);

    const ahead = await source.readAhead!(refs(1, 2, 3, 4), AbortSignal.timeout(5000));
    const outcomes = await Promise.all(refs(1, 2, 3, 4).map((r, i) => source.reencrypt(r, plan, { ...itemCtx(), readAhead: ahead[i] })));

    expect(outcomes.map((o) => o.outcome)).toEqual(['reencrypted', 'reencrypted', 'reencrypted', 'already-current']);
    expect(statements[0]).toBe('SELECT');
    expect(statements.slice(1).every((s) => s === 'UPDATE')).toBe(true);
    expect(statements.length).toBeGreaterThanOrEqual(2);
    expect(statements.length).toBeLessThanOrEqual(4);
    for (const id of [1, 2, 3]) {
      expect((await row(id)).key_id).toBe(world.keys.target);
      expect((await kmsDecrypt(world.kms, (await row(id)).blob, { purpose: 'test' })).plaintext.toString()).toBe(`secret ${id}`);
    }
  });

  it('a row written after the read-ahead is read again, and the write that raced is kept', async () => {
    const { source, insert, row, plan } = await counted();
    await insert(1, world.keys.old);
    await insert(2, world.keys.old);
    const ahead = await source.readAhead!(refs(1, 2), AbortSignal.timeout(5000));
    // The app rewrites row 1 under the new key, and row 2 with a new secret under the old one.
    await db.pool.query('UPDATE secrets SET blob = $1 WHERE id = 1', [await kmsEncrypt(world.kms, world.keys.target, Buffer.from('app 1'), { purpose: 'test' })]);
    await db.pool.query('UPDATE secrets SET blob = $1 WHERE id = 2', [await kmsEncrypt(world.kms, world.keys.old, Buffer.from('app 2'), { purpose: 'test' })]);

    const [one, two] = await Promise.all(refs(1, 2).map((r, i) => source.reencrypt(r, plan, { ...itemCtx(), readAhead: ahead[i] })));

    expect(one?.outcome).toBe('already-current');
    expect(two?.outcome).toBe('reencrypted');
    const decrypted = await kmsDecrypt(world.kms, (await row(2)).blob, { purpose: 'test' });
    expect([decrypted.plaintext.toString(), decrypted.keyId]).toEqual(['app 2', world.keys.target]);
    expect((await kmsDecrypt(world.kms, (await row(1)).blob, { purpose: 'test' })).plaintext.toString()).toBe('app 1');
  });

  it('a row the read-ahead did not find is read on its own: gone, or there under another spelling of its key', async () => {
    const { source, insert, plan, statements } = await counted({ keyIdColumn: 'key_id' });
    await insert(7, world.keys.old);
    const items = [{ kind: 'row' as const, pk: ['007'] }, ...refs(8)];

    const ahead = await source.readAhead!(items, AbortSignal.timeout(5000));
    const outcomes = await Promise.all(items.map((r, i) => source.reencrypt(r, plan, { ...itemCtx(), readAhead: ahead[i] })));

    expect(ahead).toEqual([undefined, undefined]);
    expect(outcomes.map((o) => o.outcome)).toEqual(['reencrypted', 'gone']);
    expect(statements.filter((s) => s === 'SELECT')).toHaveLength(3);
  });

  it('verify takes the read-ahead, and a composite key reads ahead too', async () => {
    const { source, plan, statements } = await counted({ primaryKey: ['tenant', 'id'], keyIdColumn: 'key_id' });
    await db.pool.query('ALTER TABLE secrets ADD COLUMN tenant text');
    await db.pool.query('ALTER TABLE secrets DROP CONSTRAINT secrets_pkey');
    await db.pool.query("UPDATE secrets SET tenant = 't'");
    await db.pool.query('ALTER TABLE secrets ADD PRIMARY KEY (tenant, id)');
    for (const [tenant, id, key] of [['a', 1, world.keys.old], ['b', 1, world.keys.target]] as const) {
      await db.pool.query('INSERT INTO secrets (tenant, id, blob, key_id) VALUES ($1, $2, $3, $4)', [tenant, id, Buffer.from('x'), key]);
    }
    const items = [{ kind: 'row' as const, pk: ['a', '1'] }, { kind: 'row' as const, pk: ['b', '1'] }];

    const ahead = await source.readAhead!(items, AbortSignal.timeout(5000));
    const states = await Promise.all(items.map((r, i) => source.inspect(r, plan, { ...itemCtx(), readAhead: ahead[i] })));

    expect(states.map((s) => s.state)).toEqual(['old-key', 'current']);
    expect(statements.filter((s) => s === 'SELECT')).toHaveLength(1);
  });

  it("another source's read-ahead, or a forged one, is never taken for a row", async () => {
    const { source, another, insert, plan } = await counted({ keyIdColumn: 'key_id' });
    const other = another();
    await insert(1, world.keys.old);
    const theirs = await source.readAhead!(refs(1), AbortSignal.timeout(5000));
    await db.pool.query('UPDATE secrets SET key_id = $1 WHERE id = 1', [world.keys.target]);

    const forged = await other.inspect(refs(1)[0]!, plan, { ...itemCtx(), readAhead: { pk: '["1"]', row: { v: Buffer.from('x'), kid: world.keys.old } } });
    const foreign = await other.inspect(refs(1)[0]!, plan, { ...itemCtx(), readAhead: theirs[0] });

    expect([forged.state, foreign.state]).toEqual(['current', 'current']);
  });
});
