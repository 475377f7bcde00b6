import { afterEach, describe, expect, it } from 'vitest';
import { ItemError } from '@rekey/core';
import { createTestSchema, type TestSchema } from '@rekey/testing';
import { classifyPgError } from '../src/errors.js';
import { createRowWriter, quoteIdent, type RowWriterOptions } from '../src/postgres-writes.js';

const schemas: TestSchema[] = [];
afterEach(async () => {
  for (const s of schemas.splice(0)) await s.drop();
});

/**
 * A fresh schema with `ddl` run in it, and a writer whose statements are recorded. `failLookups`
 * makes that many looks at the column types fail, as a dropped connection would.
 */
async function setup(ddl: string, opts: Partial<RowWriterOptions> & Pick<RowWriterOptions, 'primaryKey' | 'column'> & { failLookups?: number }) {
  const db = await createTestSchema('rekey_pgw');
  schemas.push(db);
  await db.pool.query(ddl);
  const statements: string[] = [];
  let failLookups = opts.failLookups ?? 0;
  const pool = {
    query: (text: string, values?: unknown[]) => {
      statements.push(text);
      if (text.includes('pg_attribute') && failLookups-- > 0) return Promise.reject(new Error('Connection terminated unexpectedly'));
      return db.pool.query(text, values);
    },
  };
  const { failLookups: _, ...writerOpts } = opts;
  const writer = createRowWriter({
    table: `${quoteIdent(db.schema)}.${quoteIdent('t')}`,
    query: async (op, text, values) => {
      try {
        return await pool.query(text, values);
      } catch (err) {
        throw classifyPgError(err, { op, table: 't' });
      }
    },
    ...writerOpts,
  });
  const updates = () => statements.filter((s) => s.startsWith('UPDATE'));
  const lookups = () => statements.filter((s) => s.includes('pg_attribute'));
  return { db, writer, statements, updates, lookups };
}

const live = () => AbortSignal.timeout(10_000);

describe('postgres grouped writes', () => {
  it('writes asked for in one turn go in one UPDATE, and each row is written only if it holds the value read', async () => {
    const { db, writer, updates } = await setup('CREATE TABLE t (id int PRIMARY KEY, blob bytea, key_id text)', { primaryKey: ['id'], column: 'blob', keyIdColumn: 'key_id' });
    await db.pool.query("INSERT INTO t SELECT g, decode(lpad(to_hex(g), 8, '0'), 'hex'), 'old' FROM generate_series(1, 100) g");
    // The app rewrote row 7 after it was read: its compare-and-swap must lose.
    await db.pool.query("UPDATE t SET blob = '\\xff'::bytea WHERE id = 7");
    const old = (id: number) => Buffer.from(id.toString(16).padStart(8, '0'), 'hex');

    const written = await Promise.all(
      Array.from({ length: 100 }, (_, i) => i + 1).map((id) => writer.write({ pk: [String(id)], old: old(id), next: Buffer.from(`new ${id}`), keyId: 'new' }, live())),
    );

    expect(written.filter((w) => !w)).toHaveLength(1);
    expect(written[6]).toBe(false);
    expect(updates()).toHaveLength(1);
    const rows = (await db.pool.query('SELECT id, blob, key_id FROM t ORDER BY id')).rows as { id: number; blob: Buffer; key_id: string }[];
    expect(rows[6]).toEqual({ id: 7, blob: Buffer.from([0xff]), key_id: 'old' });
    expect(rows.filter((r) => r.id !== 7).every((r) => r.blob.toString() === `new ${r.id}` && r.key_id === 'new')).toBe(true);
  });

  it('a composite key, a text column and a key spelled differently from Postgres (007) are matched by value', async () => {
    const { db, writer, updates } = await setup('CREATE TABLE t (tenant text, id bigint, v varchar(200), PRIMARY KEY (tenant, id))', { primaryKey: ['tenant', 'id'], column: 'v' });
    await db.pool.query("INSERT INTO t VALUES ('a', 7, 'b2xk'), ('b', 7, 'b2xk'), ('a, \"b\"', 1, 'b2xk')");

    const written = await Promise.all([
      writer.write({ pk: ['a', '007'], old: 'b2xk', next: 'bmV3' }, live()),
      writer.write({ pk: ['a, "b"', 1], old: 'b2xk', next: 'bmV3' }, live()),
      writer.write({ pk: ['c', '7'], old: 'b2xk', next: 'bmV3' }, live()),
    ]);

    expect(written).toEqual([true, true, false]);
    expect(updates()).toHaveLength(1);
    expect((await db.pool.query('SELECT tenant, id::text, v FROM t ORDER BY tenant, id')).rows).toEqual([
      { tenant: 'a', id: '7', v: 'bmV3' },
      { tenant: 'a, "b"', id: '1', v: 'bmV3' },
      { tenant: 'b', id: '7', v: 'b2xk' },
    ]);
  });

  it('a value Postgres refuses fails its own write only: the group is written again row by row', async () => {
    const { db, writer, updates } = await setup('CREATE TABLE t (id int PRIMARY KEY, v varchar(8))', { primaryKey: ['id'], column: 'v' });
    await db.pool.query("INSERT INTO t VALUES (1, 'AAAA'), (2, 'AAAA'), (3, 'AAAA')");

    const results = await Promise.allSettled([
      writer.write({ pk: ['1'], old: 'AAAA', next: 'BBBB' }, live()),
      writer.write({ pk: ['2'], old: 'AAAA', next: 'far too long for varchar(8)' }, live()),
      writer.write({ pk: ['3'], old: 'AAAA', next: 'CCCC' }, live()),
    ]);

    expect(results.map((r) => r.status)).toEqual(['fulfilled', 'rejected', 'fulfilled']);
    const refused = (results[1] as PromiseRejectedResult).reason as ItemError;
    expect(refused).toBeInstanceOf(ItemError);
    expect(refused.message).toMatch(/^UPDATE t: 22001 /);
    expect(updates()).toHaveLength(4); // the group, then each row alone
    expect((await db.pool.query('SELECT v FROM t ORDER BY id')).rows.map((r) => r.v)).toEqual(['BBBB', 'AAAA', 'CCCC']);
  });

  it('the same row asked for twice in one turn is written by two statements, and the second compare-and-swap loses', async () => {
    const { db, writer, updates } = await setup('CREATE TABLE t (id int PRIMARY KEY, v text)', { primaryKey: ['id'], column: 'v' });
    await db.pool.query("INSERT INTO t VALUES (1, 'AAAA'), (2, 'AAAA')");

    const written = await Promise.all([
      writer.write({ pk: ['1'], old: 'AAAA', next: 'BBBB' }, live()),
      writer.write({ pk: [1], old: 'AAAA', next: 'CCCC' }, live()),
      writer.write({ pk: ['2'], old: 'AAAA', next: 'DDDD' }, live()),
    ]);

    expect(written).toEqual([true, false, true]);
    expect(updates()).toHaveLength(2);
    expect((await db.pool.query('SELECT v FROM t ORDER BY id')).rows.map((r) => r.v)).toEqual(['BBBB', 'DDDD']);
  });

  it('a write aborted while it waits for a statement is not sent, and rejects with the reason', async () => {
    const { db, writer } = await setup('CREATE TABLE t (id int PRIMARY KEY, v text)', { primaryKey: ['id'], column: 'v', maxInFlight: 1 });
    await db.pool.query("INSERT INTO t VALUES (1, 'AAAA'), (2, 'AAAA')");
    const stop = new AbortController();

    const first = writer.write({ pk: ['1'], old: 'AAAA', next: 'BBBB' }, live());
    await new Promise((r) => setImmediate(r)); // the first is on its way; the second must wait for it
    const second = writer.write({ pk: ['2'], old: 'AAAA', next: 'CCCC' }, stop.signal).catch((err: unknown) => err);
    stop.abort(new Error('worker stopping'));

    await expect(first).resolves.toBe(true);
    expect(await second).toEqual(new Error('worker stopping'));
    expect((await db.pool.query('SELECT v FROM t ORDER BY id')).rows.map((r) => r.v)).toEqual(['BBBB', 'AAAA']);
  });

  it('a column of a domain or a char(n) type keeps its own rules: a value too long is refused, not cut', async () => {
    const { db, writer, updates } = await setup('CREATE DOMAIN short AS varchar(4); CREATE TABLE t (id char(3) PRIMARY KEY, v short)', { primaryKey: ['id'], column: 'v' });
    await db.pool.query("INSERT INTO t VALUES ('ab', 'AAAA'), ('abc', 'AAAA')");

    const results = await Promise.allSettled([
      writer.write({ pk: ['ab'], old: 'AAAA', next: 'BBBB' }, live()),
      writer.write({ pk: ['abc'], old: 'AAAA', next: 'CCCCCCCC' }, live()),
    ]);

    expect(results.map((r) => r.status)).toEqual(['fulfilled', 'rejected']);
    expect(updates()[0]).toContain('unnest');
    expect((await db.pool.query('SELECT id, v FROM t ORDER BY id')).rows).toEqual([
      { id: 'ab ', v: 'BBBB' },
      { id: 'abc', v: 'AAAA' },
    ]);
  });

  it('a failed look at the column types sends one group row by row, and is tried again later', async () => {
    const { db, writer, updates, lookups } = await setup('CREATE TABLE t (id int PRIMARY KEY, v text)', { primaryKey: ['id'], column: 'v', lookupRetryMs: 0, failLookups: 1 });
    await db.pool.query("INSERT INTO t SELECT g, 'AAAA' FROM generate_series(1, 6) g");
    const group = (ids: number[]) => Promise.all(ids.map((id) => writer.write({ pk: [String(id)], old: 'AAAA', next: 'BBBB' }, live())));

    expect(await group([1, 2, 3])).toEqual([true, true, true]);
    expect(updates()).toHaveLength(3);
    expect(await group([4, 5, 6])).toEqual([true, true, true]);

    expect(lookups()).toHaveLength(2);
    expect(updates()).toHaveLength(4);
    expect(updates()[3]).toContain('unnest');
  });

  it('without usable column types (an array-typed key) every write is the one-row UPDATE', async () => {
    const { db, writer, updates } = await setup('CREATE TABLE t (id int[] PRIMARY KEY, v text)', { primaryKey: ['id'], column: 'v' });
    await db.pool.query("INSERT INTO t VALUES ('{1,2}', 'AAAA'), ('{3}', 'AAAA')");

    const written = await Promise.all([writer.write({ pk: ['{1,2}'], old: 'AAAA', next: 'BBBB' }, live()), writer.write({ pk: ['{3}'], old: 'AAAA', next: 'CCCC' }, live())]);

    expect(written).toEqual([true, true]);
    expect(updates()).toHaveLength(2);
    expect(updates().every((s) => !s.includes('unnest'))).toBe(true);
  });
});
