import { decodeEnvelope } from '@rekey/core';
import { createTestSchema, type TestSchema } from '@rekey/testing';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createEnvelopeClient, type EnvelopeClient, type EnvelopeError, type Queryable } from '../src/index.js';
import { kmsFixture, type KmsFixture } from './helpers/aws.js';

describe('rewrapColumn against Postgres and aws-local KMS', () => {
  let f: KmsFixture;
  let db: TestSchema;
  let envelope: EnvelopeClient;
  const ctx = (id: number) => ({ table: 'secrets', id: String(id) });

  beforeAll(async () => {
    f = await kmsFixture();
    db = await createTestSchema('envelope_pg');
    await db.pool.query('CREATE TABLE secrets (tenant text, id int, blob bytea, PRIMARY KEY (tenant, id))');
    envelope = createEnvelopeClient({ kms: { client: f.kms }, alias: f.alias, staleTtlMs: 0 });
  });
  afterAll(async () => {
    await envelope?.close();
    await db?.drop();
    await f?.close();
  });

  async function insert(id: number, text: string): Promise<Buffer> {
    const blob = await envelope.encrypt(text, { keyId: f.keyA, context: ctx(id) });
    await db.pool.query('INSERT INTO secrets (tenant, id, blob) VALUES ($1, $2, $3)', ['acme', id, blob]);
    return blob;
  }
  async function read(id: number): Promise<Buffer> {
    const r = await db.pool.query<{ blob: Buffer }>('SELECT blob FROM secrets WHERE tenant = $1 AND id = $2', ['acme', id]);
    return r.rows[0]!.blob;
  }

  it('updates a row under the old key, then reports already-current', async () => {
    const before = await insert(1, 'row one');
    const opts = { table: 'secrets', pk: { tenant: 'acme', id: 1 }, column: 'blob', to: f.keyB, context: ctx(1) };

    expect(await envelope.rewrapColumn(db.pool, opts)).toBe('updated');
    const after = await read(1);
    expect(decodeEnvelope(after).keyArn).toBe(f.keyB);
    expect(decodeEnvelope(after).ciphertext.equals(decodeEnvelope(before).ciphertext)).toBe(true);
    expect((await envelope.decrypt(after, { context: ctx(1) })).plaintext.toString()).toBe('row one');
    expect(await envelope.rewrapColumn(db.pool, opts)).toBe('already-current');
  });

  it('reports gone for a missing row', async () => {
    expect(await envelope.rewrapColumn(db.pool, { table: 'secrets', pk: { tenant: 'acme', id: 404 }, column: 'blob', to: f.keyB, context: ctx(404) })).toBe('gone');
  });

  it('reports conflict and keeps the concurrent write when the row changes between read and write', async () => {
    await insert(2, 'original');
    const concurrent = await envelope.encrypt('written meanwhile', { keyId: f.keyA, context: ctx(2) });
    let selects = 0;
    // Runs the app's concurrent UPDATE right after the helper's first SELECT.
    const racing: Queryable = {
      async query(text, values) {
        const out = await db.pool.query(text, values);
        if (text.startsWith('SELECT') && selects++ === 0) {
          await db.pool.query('UPDATE secrets SET blob = $1 WHERE tenant = $2 AND id = $3', [concurrent, 'acme', 2]);
        }
        return out;
      },
    };

    const outcome = await envelope.rewrapColumn(racing, { table: 'secrets', pk: { tenant: 'acme', id: 2 }, column: 'blob', to: f.keyB, context: ctx(2) });

    expect(outcome).toBe('conflict');
    expect((await read(2)).equals(concurrent)).toBe(true);
  });

  it('refuses identifiers that are not plain SQL names', async () => {
    const err = await envelope
      .rewrapColumn(db.pool, { table: 'secrets; DROP TABLE secrets', pk: { id: 1 }, column: 'blob', to: f.keyB })
      .catch((e: unknown) => e);
    expect((err as EnvelopeError).code).toBe('invalid-argument');
  });
});
