/**
 * Conformance harnesses for the postgres source over a fresh schema: `kms-blob` with a
 * composite primary key and a jsonb context column, and `rekey-envelope` with a fixed context.
 */
import { randomBytes } from 'node:crypto';
import type { ItemRef, PostgresSourceSpec } from '@rekey/core';
import { decodeEnvelope, encodeEnvelope, envelopeAad } from '@rekey/core';
import { createTestSchema } from '@rekey/testing';
import type { SourceHarness } from '../../src/conformance.js';
import { createPostgresSource } from '../../src/postgres.js';
import type { PgQueryable } from '../../src/types.js';
import { aesGcmDecrypt, aesGcmEncrypt, dataKey, kmsDecrypt, kmsEncrypt, randomContent, type AwsWorld } from './aws.js';

type RowRef = Extract<ItemRef, { kind: 'row' }>;

function asRow(item: ItemRef): RowRef {
  if (item.kind !== 'row') throw new Error('expected a row item');
  return item;
}

/** Wraps a pool so a hook runs once right after the next single-row SELECT of a given primary key. */
export function racingPool(pool: PgQueryable): { pool: PgQueryable; arm(pk: readonly unknown[], fn: () => Promise<void>): void } {
  let pending: { pk: string; fn: () => Promise<void> } | undefined;
  return {
    pool: {
      async query(text, values) {
        const res = await pool.query(text, values);
        if (pending !== undefined && text.startsWith('SELECT') && !text.includes('ORDER BY') && JSON.stringify((values ?? []).map(String)) === pending.pk) {
          const p = pending;
          pending = undefined;
          await p.fn();
        }
        return res;
      },
    },
    arm(pk, fn) {
      pending = { pk: JSON.stringify(pk.map(String)), fn };
    },
  };
}

/** The fixed context of the rekey-envelope table. */
const ENVELOPE_CONTEXT = { app: 'conformance', table: 'secrets' };

/** Builds one rekey envelope by hand from the documented layout (test side holds the data key). */
export async function makeEnvelope(world: AwsWorld, keyArn: string, plaintext: Buffer, context: Record<string, string>): Promise<Buffer> {
  const dk = await dataKey(world.kms, keyArn, context);
  const iv = randomBytes(12);
  const { ciphertext, tag } = aesGcmEncrypt(dk.plaintext, iv, plaintext, envelopeAad(1, iv, context));
  dk.plaintext.fill(0);
  return encodeEnvelope({ keyArn, wrappedKey: dk.wrapped, iv, ciphertext, tag });
}

/** Opens a rekey envelope: KMS Decrypt of the wrapped key, then AES-GCM; checks the header names the real key. */
export async function openEnvelope(world: AwsWorld, envelope: Buffer, context: Record<string, string>) {
  const parts = decodeEnvelope(envelope);
  const { plaintext: key, keyId } = await kmsDecrypt(world.kms, parts.wrappedKey, context);
  if (keyId !== parts.keyArn) throw new Error(`envelope header names ${parts.keyArn} but its data key is under ${keyId}`);
  const plaintext = aesGcmDecrypt(key, parts.iv, parts.ciphertext, parts.tag, envelopeAad(parts.version, parts.iv, context));
  key.fill(0);
  return { plaintext, keyId };
}

/** A postgres harness in a fresh schema. */
export async function postgresHarness(
  world: AwsWorld,
  pageSize: number,
  format: PostgresSourceSpec['format'],
  opts: { keyIdColumn?: boolean } = {},
): Promise<SourceHarness & { schema: string; query: PgQueryable['query'] }> {
  const db = await createTestSchema('rekey_src');
  const racing = racingPool(db.pool);
  const kmsBlob = format === 'kms-blob';
  if (kmsBlob) {
    await db.pool.query(`CREATE TABLE items (tenant text NOT NULL, id int NOT NULL, secret bytea, ctx jsonb NOT NULL, key_id text, PRIMARY KEY (tenant, id))`);
  } else {
    await db.pool.query(`CREATE TABLE secrets (id bigint PRIMARY KEY, payload bytea)`);
  }
  const spec: PostgresSourceSpec = kmsBlob
    ? {
        name: 'items',
        kind: 'postgres',
        schema: db.schema,
        table: 'items',
        primaryKey: ['tenant', 'id'],
        column: 'secret',
        format,
        contextColumn: 'ctx',
        ...(opts.keyIdColumn === true && { keyIdColumn: 'key_id' }),
      }
    : { name: 'secrets', kind: 'postgres', schema: db.schema, table: 'secrets', primaryKey: ['id'], column: 'payload', format, context: ENVELOPE_CONTEXT };
  const source = createPostgresSource(spec, { pool: racing.pool, kms: world.gateway }, { pageSize });
  let nextId = 1;

  const contextOf = (pk: readonly (string | number)[]) => ({ tenant: String(pk[0]), row: String(pk[1]) });
  const encryptFor = async (keyArn: string, pk: readonly (string | number)[], plaintext: Buffer) =>
    kmsBlob ? kmsEncrypt(world.kms, keyArn, plaintext, contextOf(pk)) : makeEnvelope(world, keyArn, plaintext, ENVELOPE_CONTEXT);
  const readRaw = async (item: ItemRef): Promise<Buffer> => {
    const pk = asRow(item).pk;
    const res = kmsBlob
      ? await db.pool.query('SELECT secret AS v FROM items WHERE tenant = $1 AND id = $2', [pk[0], pk[1]])
      : await db.pool.query('SELECT payload AS v FROM secrets WHERE id = $1', [pk[0]]);
    const v = (res.rows[0] as { v?: unknown } | undefined)?.v;
    if (!Buffer.isBuffer(v)) throw new Error('row has no value');
    return v;
  };
  const open = async (item: ItemRef) => {
    const raw = await readRaw(item);
    return kmsBlob ? kmsDecrypt(world.kms, raw, contextOf(asRow(item).pk)) : openEnvelope(world, raw, ENVELOPE_CONTEXT);
  };
  const write = async (pk: readonly (string | number)[], blob: Buffer, keyArn: string, insert: boolean) => {
    if (kmsBlob) {
      if (insert) {
        await db.pool.query('INSERT INTO items (tenant, id, secret, ctx, key_id) VALUES ($1, $2, $3, $4, $5)', [pk[0], pk[1], blob, JSON.stringify(contextOf(pk)), keyArn]);
      } else {
        await db.pool.query('UPDATE items SET secret = $3, key_id = $4 WHERE tenant = $1 AND id = $2', [pk[0], pk[1], blob, keyArn]);
      }
    } else if (insert) {
      await db.pool.query('INSERT INTO secrets (id, payload) VALUES ($1, $2)', [pk[0], blob]);
    } else {
      await db.pool.query('UPDATE secrets SET payload = $2 WHERE id = $1', [pk[0], blob]);
    }
  };
  const seedUnderKey = async (keyArn: string, n: number): Promise<ItemRef[]> => {
    const refs: ItemRef[] = [];
    for (let i = 0; i < n; i++) {
      const id = nextId++;
      const pk = kmsBlob ? [id % 2 === 0 ? 'acme' : 'globex', String(id)] : [String(id)];
      await write(pk, await encryptFor(keyArn, pk, randomContent(8, 200)), keyArn, true);
      refs.push({ kind: 'row', pk });
    }
    return refs;
  };

  return {
    schema: db.schema,
    query: (text, values) => db.pool.query(text, values),
    source,
    plan: { from: [world.keys.old], to: world.keys.target },
    unrelatedKey: world.keys.other,
    seed: (n) => seedUnderKey(world.keys.old, n),
    seedUnderKey,
    readPlain: async (item) => (await open(item)).plaintext,
    currentKeyOf: async (item) => (await open(item)).keyId,
    mutate: async (item) => {
      const plaintext = randomContent(8, 200);
      await write(asRow(item).pk, await encryptFor(world.keys.old, asRow(item).pk, plaintext), world.keys.old, false);
      return plaintext;
    },
    remove: async (item) => {
      const pk = asRow(item).pk;
      if (kmsBlob) await db.pool.query('DELETE FROM items WHERE tenant = $1 AND id = $2', [pk[0], pk[1]]);
      else await db.pool.query('DELETE FROM secrets WHERE id = $1', [pk[0]]);
    },
    afterNextRead: (item, fn) => racing.arm(asRow(item).pk, fn),
    sourceKmsCalls: () => world.fleetKmsCalls(),
    async cleanup() {
      await source.close?.();
      await db.drop();
    },
  };
}
