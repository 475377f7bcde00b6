/**
 * The `postgres` source: one column of a table holding a raw KMS ciphertext blob (`kms-blob`) or
 * a Rekey binary envelope (`rekey-envelope`). Enumeration is keyset pagination on the primary key;
 * the write is a compare-and-swap `UPDATE … WHERE pk = $pk AND col = $old`. A batch reads its rows
 * ahead with one `SELECT … WHERE pk IN (…)` per window (`readAhead`) instead of one SELECT per row,
 * and the writes items ask for while another is on its way go together in one UPDATE
 * (`postgres-writes.ts`), each row still compared with the value its item read.
 *
 * @example
 * const source = createPostgresSource(
 *   { name: 'users', kind: 'postgres', table: 'users', primaryKey: ['id'], column: 'secret', format: 'kms-blob' },
 *   { pool, kms: gateway },
 * );
 */
import pg from 'pg';
import { EnvelopeFormatError, ItemError, decodeEnvelope, encodeEnvelope } from '@rekey/core';
import type { Cursor, Inspection, ItemContext, ItemOutcome, ItemRef, KeyPlan, Page, PostgresSourceSpec, Source } from '@rekey/core';
import { ConflictError, SourceError, classifyPgError } from './errors.js';
import { probeBlobKey, rewrapBlob, type RewrapResult } from './rewrap.js';
import { withConflictRetries } from './outcomes.js';
import { limitOf } from './paging.js';
import { createRowWriter, quoteIdent } from './postgres-writes.js';
import type { PgQueryable, SourceKms, SourceOptions } from './types.js';

/** What the `postgres` source needs injected: a pool (or a connection string) and the KMS gateway. */
export type PostgresDeps =
  | { readonly pool: PgQueryable; readonly kms: SourceKms }
  | { readonly connectionString: string; readonly kms: SourceKms };

type RowRef = Extract<ItemRef, { kind: 'row' }>;

/** A stored value: bytea arrives as a Buffer; a text column is taken to hold base64. */
interface StoredValue {
  readonly bytes: Buffer;
  /** The value as stored, for the compare-and-swap. */
  readonly raw: Buffer | string;
  readonly encode: (bytes: Uint8Array) => Buffer | string;
}

function storedValue(raw: unknown): StoredValue | undefined {
  if (Buffer.isBuffer(raw)) return { bytes: raw, raw, encode: (b) => Buffer.from(b) };
  if (typeof raw === 'string' && /^[A-Za-z0-9+/]*={0,2}$/.test(raw) && raw.length % 4 === 0) {
    return { bytes: Buffer.from(raw, 'base64'), raw, encode: (b) => Buffer.from(b).toString('base64') };
  }
  return undefined;
}

function parseContext(raw: unknown, column: string): Record<string, string> {
  let value = raw;
  if (typeof raw === 'string') {
    try {
      value = JSON.parse(raw);
    } catch {
      throw new ItemError('InvalidContext', `context column ${column} is not JSON`, { outcome: 'failed' });
    }
  }
  if (value === null || value === undefined) return {};
  if (typeof value !== 'object' || Array.isArray(value)) {
    throw new ItemError('InvalidContext', `context column ${column} is not a JSON object`, { outcome: 'failed' });
  }
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(value)) {
    if (typeof v !== 'string') throw new ItemError('InvalidContext', `context column ${column} entry ${JSON.stringify(k)} is not a string`, { outcome: 'failed' });
    out[k] = v;
  }
  return out;
}

function parseCursor(cursor: Cursor, width: number): (string | number)[] {
  let parsed: unknown;
  try {
    parsed = JSON.parse(cursor);
  } catch {
    throw new SourceError('invalid-cursor', 'postgres cursor is not JSON');
  }
  if (!Array.isArray(parsed) || parsed.length !== width || !parsed.every((v) => typeof v === 'string' || typeof v === 'number')) {
    throw new SourceError('invalid-cursor', `postgres cursor must be a JSON array of ${width} primary key values`);
  }
  return parsed as (string | number)[];
}

/** Rows per read-ahead query (Postgres takes at most 65,535 parameters). */
const READ_AHEAD_MAX = 500;

const pkKey = (values: readonly (string | number)[]) => JSON.stringify(values.map(String));

/** One row as a batch's read-ahead found it (`ctx.readAhead`). */
class RowReadAhead {
  constructor(
    readonly source: symbol,
    readonly pk: string,
    readonly row: Record<string, unknown>,
  ) {}
}

/**
 * Creates the `postgres` source. With a connection string it owns its pool and `close()` ends it.
 * @throws SourceError `wrong-client` when `deps.pool` has no `query` or `deps.kms` is not a gateway.
 */
export function createPostgresSource(spec: PostgresSourceSpec, deps: PostgresDeps, options: SourceOptions = {}): Source {
  const kms = deps.kms as Partial<SourceKms> | undefined;
  if (typeof kms?.reEncrypt !== 'function') throw new SourceError('wrong-client', 'postgres: deps.kms must be a KmsGateway from @rekey/kms');
  let pool: PgQueryable;
  let owned: pg.Pool | undefined;
  if ('pool' in deps) {
    if (typeof (deps.pool as Partial<PgQueryable> | undefined)?.query !== 'function') {
      throw new SourceError('wrong-client', 'postgres: deps.pool must be a pg.Pool (or have a query method)');
    }
    pool = deps.pool;
  } else {
    owned = new pg.Pool({ connectionString: deps.connectionString, max: 8 });
    pool = owned as unknown as PgQueryable;
  }
  const gateway = deps.kms;
  const pageSize = options.pageSize ?? 1000;
  if (!Number.isInteger(pageSize) || pageSize < 1 || pageSize > 100_000) throw new SourceError('invalid-item', `pageSize must be an integer in 1..100000, got ${String(pageSize)}`);
  const maxRetries = options.maxConflictRetries ?? 3;

  const table = spec.schema !== undefined ? `${quoteIdent(spec.schema)}.${quoteIdent(spec.table)}` : quoteIdent(spec.table);
  const tableName = spec.schema !== undefined ? `${spec.schema}.${spec.table}` : spec.table;
  const pk = spec.primaryKey;
  const pkList = pk.map(quoteIdent).join(', ');
  const pkEquals = `(${pkList}) = (${pk.map((_, i) => `$${i + 1}`).join(', ')})`;
  const col = quoteIdent(spec.column);
  const selectCols = [
    `${col} AS v`,
    ...(spec.contextColumn !== undefined ? [`${quoteIdent(spec.contextColumn)} AS ctx`] : []),
    ...(spec.keyIdColumn !== undefined ? [`${quoteIdent(spec.keyIdColumn)} AS kid`] : []),
  ].join(', ');
  // The key columns as text (`k0`, `k1`, …): the form item references carry.
  const pkText = pk.map((c, i) => `${quoteIdent(c)}::text AS k${i}`).join(', ');
  const readAheadSelect = `SELECT ${pkText}, ${selectCols} FROM ${table}`;
  // Marks this source's read-aheads, so that another source's (or a forged) value is never taken for a row.
  const readAheadTag = Symbol(spec.name);
  const listSql = (after: boolean, limit: number) =>
    `SELECT ${pkText} FROM ${table}` +
    (after ? ` WHERE (${pkList}) > (${pk.map((_, i) => `$${i + 1}`).join(', ')})` : '') +
    ` ORDER BY ${pkList} LIMIT ${limit}`;

  async function query(op: string, text: string, values: unknown[], signal: AbortSignal) {
    signal.throwIfAborted();
    try {
      return await pool.query(text, values);
    } catch (err) {
      throw classifyPgError(err, { op, table: tableName });
    }
  }
  const writer = createRowWriter({
    table,
    primaryKey: pk,
    column: spec.column,
    ...(spec.keyIdColumn !== undefined && { keyIdColumn: spec.keyIdColumn }),
    query,
  });

  function asRow(item: ItemRef): RowRef {
    if (item.kind !== 'row' || !Array.isArray(item.pk) || item.pk.length !== pk.length) {
      throw new SourceError('invalid-item', `postgres ${spec.name}: expected a row reference with ${pk.length} primary key value(s)`);
    }
    return item;
  }

  const where = (ref: RowRef) => pk.map((c, i) => `${c}=${String(ref.pk[i])}`).join(',');

  interface ReadRow {
    readonly value: StoredValue;
    readonly context: Record<string, string> | undefined;
    readonly keyId: string | undefined;
  }

  /** What a stored row (or its absence) means; `gone`/`not-in-scope`/`failed` come back as an outcome. */
  function rowState(ref: RowRef, row: Record<string, unknown> | undefined): ReadRow | ItemOutcome {
    if (row === undefined) return { outcome: 'gone', reason: `row ${where(ref)} no longer exists` };
    if (row['v'] === null || row['v'] === undefined) return { outcome: 'not-in-scope', reason: `column ${spec.column} is NULL` };
    const value = storedValue(row['v']);
    if (value === undefined) return { outcome: 'failed', code: 'UnsupportedColumnValue', reason: `column ${spec.column} is neither bytea nor base64 text` };
    const context = spec.contextColumn !== undefined ? parseContext(row['ctx'], spec.contextColumn) : spec.context;
    const kid = row['kid'];
    return { value, context, keyId: typeof kid === 'string' && kid !== '' ? kid : undefined };
  }

  /** Reads the row, or takes it from the batch's read-ahead on the item's first try. */
  async function read(ref: RowRef, signal: AbortSignal, ahead?: unknown): Promise<ReadRow | ItemOutcome> {
    if (ahead instanceof RowReadAhead && ahead.source === readAheadTag && ahead.pk === pkKey(ref.pk)) return rowState(ref, ahead.row);
    const res = await query('SELECT', `SELECT ${selectCols} FROM ${table} WHERE ${pkEquals}`, [...ref.pk], signal);
    return rowState(ref, res.rows[0]);
  }

  /** The key a row is under when it can be told without KMS: the envelope header or the key-id column. */
  function knownKey(r: ReadRow): { keyArn?: string; envelope?: ReturnType<typeof decodeEnvelope> } {
    if (spec.format === 'rekey-envelope') {
      try {
        const envelope = decodeEnvelope(r.value.bytes);
        return { keyArn: envelope.keyArn, envelope };
      } catch (err) {
        if (err instanceof EnvelopeFormatError) {
          throw new ItemError('InvalidEnvelope', `column ${spec.column} is not a Rekey envelope: ${err.message}`, { outcome: 'failed', cause: err });
        }
        throw err;
      }
    }
    return r.keyId !== undefined ? { keyArn: r.keyId } : {};
  }

  function decideByKey(keyArn: string, plan: KeyPlan): ItemOutcome | undefined {
    if (plan.from.includes(keyArn)) return undefined;
    if (keyArn === plan.to) return { outcome: 'already-current', fromKey: keyArn };
    return { outcome: 'not-in-scope', fromKey: keyArn, reason: `under ${keyArn}, which is not a from key` };
  }

  async function attempt(ref: RowRef, plan: KeyPlan, ctx: ItemContext, ahead: unknown): Promise<ItemOutcome> {
    const r = await read(ref, ctx.signal, ahead);
    if ('outcome' in r) return r;
    const known = knownKey(r);
    // A refresh must ask KMS about key material, so a known key only short-cuts a normal migration.
    if (known.keyArn !== undefined && plan.refresh !== true) {
      const decided = decideByKey(known.keyArn, plan);
      if (decided !== undefined) return decided;
    }
    if (ctx.dryRun) {
      if (known.keyArn !== undefined) return { outcome: 'reencrypted', fromKey: known.keyArn, reason: `dry run: would move from ${known.keyArn}` };
      return {
        outcome: 'reencrypted',
        reason: 'dry run: the key of a KMS blob is not known without a KMS call (no key id column); it would be re-encrypted if it is under a from key',
      };
    }
    const blob = known.envelope !== undefined ? known.envelope.wrappedKey : r.value.bytes;
    const result: RewrapResult = await rewrapBlob(gateway, blob, plan, {
      ...(r.context !== undefined && { encryptionContext: r.context }),
      ...(known.keyArn !== undefined && { hint: known.keyArn }),
      signal: ctx.signal,
    });
    if (result.kind === 'already-current') return { outcome: 'already-current', fromKey: result.keyArn };
    if (result.kind === 'not-in-scope') return { outcome: 'not-in-scope', reason: result.reason };
    const next =
      known.envelope !== undefined
        ? encodeEnvelope({ ...known.envelope, keyArn: result.toKey, wrappedKey: result.ciphertextBlob })
        : Buffer.from(result.ciphertextBlob);
    const written = await writer.write({ pk: ref.pk, old: r.value.raw, next: r.value.encode(next), ...(spec.keyIdColumn !== undefined && { keyId: result.toKey }) }, ctx.signal);
    if (!written) throw new ConflictError(`row ${where(ref)} changed since it was read`);
    return { outcome: 'reencrypted', fromKey: result.fromKey };
  }

  return {
    kind: 'postgres',
    name: spec.name,
    async list(cursor: Cursor | null, signal: AbortSignal, limit?: number): Promise<Page> {
      const n = limitOf(limit, pageSize);
      const after = cursor === null ? undefined : parseCursor(cursor, pk.length);
      const res = await query('SELECT', listSql(after !== undefined, n), after ?? [], signal);
      const items: RowRef[] = res.rows.map((row) => ({ kind: 'row', pk: pk.map((_, i) => String(row[`k${i}`])) }));
      const last = items[items.length - 1];
      return { items, next: items.length === n && last !== undefined ? JSON.stringify(last.pk) : null };
    },
    async reencrypt(item: ItemRef, plan: KeyPlan, ctx: ItemContext): Promise<ItemOutcome> {
      const ref = asRow(item);
      // The read-ahead serves the first try only: after a conflict the row is read again.
      let ahead = ctx.readAhead;
      return withConflictRetries(
        () => {
          const first = ahead;
          ahead = undefined;
          return attempt(ref, plan, ctx, first);
        },
        maxRetries,
        `row ${where(ref)}`,
      );
    },
    async inspect(item: ItemRef, plan: KeyPlan, ctx: ItemContext): Promise<Inspection> {
      const ref = asRow(item);
      try {
        const r = await read(ref, ctx.signal, ctx.readAhead);
        if ('outcome' in r) return { state: r.outcome === 'gone' ? 'gone' : 'other', ...(r.reason !== undefined && { reason: r.reason }) };
        const known = knownKey(r);
        if (known.keyArn !== undefined && plan.refresh !== true) {
          if (plan.from.includes(known.keyArn)) return { state: 'old-key', keyArn: known.keyArn };
          if (known.keyArn === plan.to) return { state: 'current', keyArn: known.keyArn };
          return { state: 'other', keyArn: known.keyArn };
        }
        const blob = known.envelope !== undefined ? known.envelope.wrappedKey : r.value.bytes;
        const k = await probeBlobKey(gateway, blob, plan, { ...(r.context !== undefined && { encryptionContext: r.context }), signal: ctx.signal });
        return k.state === 'other' ? { state: 'other', reason: k.reason } : { state: k.state, keyArn: k.keyArn };
      } catch (err) {
        if (err instanceof ItemError) return { state: err.outcome === 'gone' ? 'gone' : 'other', reason: err.message };
        throw err;
      }
    },
    async readAhead(items: readonly ItemRef[], signal: AbortSignal): Promise<readonly unknown[]> {
      const refs = items.map(asRow);
      const found = new Map<string, Record<string, unknown>>();
      for (let at = 0; at < refs.length; at += READ_AHEAD_MAX) {
        const chunk = refs.slice(at, at + READ_AHEAD_MAX);
        const tuples = chunk.map((_, r) => `(${pk.map((_, i) => `$${r * pk.length + i + 1}`).join(', ')})`).join(', ');
        const res = await query('SELECT', `${readAheadSelect} WHERE (${pkList}) IN (${tuples})`, chunk.flatMap((ref) => [...ref.pk]), signal);
        for (const row of res.rows) found.set(pkKey(pk.map((_, i) => row[`k${i}`] as string)), row);
      }
      // A row the query did not return is read again on its own: its key may be spelled differently
      // from Postgres's text form (`007` for 7), so its absence here does not prove it gone.
      return refs.map((ref) => {
        const row = found.get(pkKey(ref.pk));
        return row === undefined ? undefined : new RowReadAhead(readAheadTag, pkKey(ref.pk), row);
      });
    },
    async close() {
      await owned?.end();
    },
  };
}
