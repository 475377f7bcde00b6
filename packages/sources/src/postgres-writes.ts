/**
 * The `postgres` source's compare-and-swap writes, coalesced: the writes that items ask for while
 * another is on its way to Postgres go together in one statement,
 *
 *   UPDATE t SET col = v.nv FROM unnest($1::pk[], $2::col[], $3::col[]) WITH ORDINALITY AS v(k0, ov, nv, i)
 *   WHERE (t.pk) = (v.k0) AND t.col = v.ov RETURNING v.i
 *
 * so a busy worker sends one UPDATE (and one commit) per group of rows instead of one per row, and
 * each row is still written only if it holds the value the item read. A lone write goes at once:
 * nothing waits for company. The arrays need the columns' types, read once from `pg_attribute`;
 * without them (no such columns, array-typed keys, a failed lookup) every write is the one-row
 * UPDATE. A group that fails as a whole is written again row by row, so one bad value fails one
 * item, as it would alone.
 */

/** Quotes an SQL identifier (the spec already restricts it to `[A-Za-z_][A-Za-z0-9_]*`). */
export function quoteIdent(name: string): string {
  return `"${name.replace(/"/g, '""')}"`;
}

/** One row's compare-and-swap: the key (as text), the value read, the value to write. */
export interface RowWrite {
  readonly pk: readonly (string | number)[];
  readonly old: Buffer | string;
  readonly next: Buffer | string;
  /** The new value of the key id column, when the source has one. */
  readonly keyId?: string;
}

export interface RowWriter {
  /** Resolves true when the row was written, false when it no longer held `old` (or is gone). */
  write(w: RowWrite, signal: AbortSignal): Promise<boolean>;
}

export interface RowWriterOptions {
  /** The quoted, possibly schema-qualified table (`"s"."t"`). */
  readonly table: string;
  readonly primaryKey: readonly string[];
  readonly column: string;
  readonly keyIdColumn?: string;
  /** Runs a statement, classifying its errors (the source's `query`). */
  readonly query: (op: string, text: string, values: unknown[], signal: AbortSignal) => Promise<{ rows: Record<string, unknown>[]; rowCount: number | null }>;
  /** Rows per statement. @defaultValue 500 */
  readonly maxRows?: number;
  /** Statements in flight at once; writes queue behind them. @defaultValue 2 */
  readonly maxInFlight?: number;
  /** How long after a failed look at the column types writes go row by row before it is tried again. @defaultValue 10000 */
  readonly lookupRetryMs?: number;
}

interface Pending extends RowWrite {
  readonly key: string;
  readonly signal: AbortSignal;
  readonly resolve: (written: boolean) => void;
  readonly reject: (err: unknown) => void;
  readonly onAbort: () => void;
}

const NEVER = new AbortController().signal;

/** Creates the writer of one source; it lives as long as the source. */
export function createRowWriter(opts: RowWriterOptions): RowWriter {
  const { table, primaryKey: pk, column, keyIdColumn, query } = opts;
  const maxRows = opts.maxRows ?? 500;
  const maxInFlight = opts.maxInFlight ?? 2;
  const lookupRetryMs = opts.lookupRetryMs ?? 10_000;
  const col = quoteIdent(column);
  const kid = keyIdColumn !== undefined ? quoteIdent(keyIdColumn) : undefined;

  const sets = [`${col} = $${pk.length + 2}`, ...(kid !== undefined ? [`${kid} = $${pk.length + 3}`] : [])].join(', ');
  const oneRow = `UPDATE ${table} SET ${sets} WHERE (${pk.map(quoteIdent).join(', ')}) = (${pk.map((_, i) => `$${i + 1}`).join(', ')}) AND ${col} = $${pk.length + 1}`;
  const oneRowValues = (w: RowWrite) => [...w.pk, w.old, w.next, ...(kid !== undefined ? [w.keyId] : [])];

  let grouped: Promise<string | undefined> | undefined;
  let lookupFailedAt = -Infinity;
  /** The grouped statement, or undefined when the column types can't be used for it. */
  function groupedStatement(): Promise<string | undefined> {
    // A lookup that failed (Postgres restarting, say) is tried again, at most every lookupRetryMs.
    if (grouped === undefined && performance.now() - lookupFailedAt < lookupRetryMs) return Promise.resolve(undefined);
    grouped ??= (async () => {
      const names = [...pk, column, ...(keyIdColumn !== undefined ? [keyIdColumn] : [])];
      // Each column's type by name, without its modifier: an explicit cast to `varchar(8)` or
      // `numeric(10,2)` would truncate or round a value, where the column's own assignment refuses
      // it. A domain is taken at its base type, so the column still checks the domain's rules.
      const res = await query(
        'SELECT',
        `SELECT a.attname AS name, quote_ident(n.nspname) || '.' || quote_ident(b.typname) AS type,
                b.typcategory <> 'A' AND b.typtype <> 'd' AS usable
           FROM pg_attribute a
           JOIN pg_type t ON t.oid = a.atttypid
           JOIN pg_type b ON b.oid = CASE WHEN t.typtype = 'd' THEN t.typbasetype ELSE t.oid END
           JOIN pg_namespace n ON n.oid = b.typnamespace
          WHERE a.attrelid = $1::regclass AND a.attnum > 0 AND NOT a.attisdropped AND a.attname = ANY($2::text[])`,
        [table, names],
        NEVER,
      );
      const types = new Map(res.rows.filter((r) => r['usable'] === true).map((r) => [String(r['name']), String(r['type'])]));
      const typeOf = (name: string) => types.get(name);
      // An array-typed column would be flattened by unnest: those rows go one at a time.
      if (names.some((n) => typeOf(n) === undefined)) return undefined;
      const arrays = [
        ...pk.map((c, i) => `$${i + 1}::${typeOf(c)!}[]`),
        `$${pk.length + 1}::${typeOf(column)!}[]`,
        `$${pk.length + 2}::${typeOf(column)!}[]`,
        ...(keyIdColumn !== undefined ? [`$${pk.length + 3}::${typeOf(keyIdColumn)!}[]`] : []),
      ];
      const cols = [...pk.map((_, i) => `k${i}`), 'ov', 'nv', ...(kid !== undefined ? ['kid'] : []), 'i'];
      return (
        `UPDATE ${table} AS t SET ${col} = v.nv${kid !== undefined ? `, ${kid} = v.kid` : ''} ` +
        `FROM unnest(${arrays.join(', ')}) WITH ORDINALITY AS v(${cols.join(', ')}) ` +
        `WHERE (${pk.map((c) => `t.${quoteIdent(c)}`).join(', ')}) = (${pk.map((_, i) => `v.k${i}`).join(', ')}) AND t.${col} = v.ov ` +
        'RETURNING v.i'
      );
    })();
    const statement = grouped.catch(() => {
      grouped = undefined;
      lookupFailedAt = performance.now();
      return undefined;
    });
    return statement;
  }

  const queue: Pending[] = [];
  let inFlight = 0;
  let scheduled = false;

  const settle = (p: Pending, written: boolean | undefined, err?: unknown) => {
    p.signal.removeEventListener('abort', p.onAbort);
    if (written === undefined) p.reject(err);
    else p.resolve(written);
  };

  async function writeOne(p: Pending): Promise<void> {
    try {
      const res = await query('UPDATE', oneRow, oneRowValues(p), NEVER);
      settle(p, (res.rowCount ?? 0) > 0);
    } catch (err) {
      settle(p, undefined, err);
    }
  }

  async function writeGroup(group: Pending[]): Promise<void> {
    const statement = group.length > 1 ? await groupedStatement() : undefined;
    if (statement === undefined) {
      await Promise.all(group.map(writeOne));
      return;
    }
    const values: unknown[] = [
      ...pk.map((_, i) => group.map((p) => p.pk[i])),
      group.map((p) => p.old),
      group.map((p) => p.next),
      ...(kid !== undefined ? [group.map((p) => p.keyId ?? null)] : []),
    ];
    let res;
    try {
      res = await query('UPDATE', statement, values, NEVER);
    } catch {
      // One row's value may be what Postgres refused: each row goes again alone, to fail alone.
      await Promise.all(group.map(writeOne));
      return;
    }
    const written = new Set(res.rows.map((r) => Number(r['i'])));
    group.forEach((p, at) => settle(p, written.has(at + 1)));
  }

  function pump(): void {
    scheduled = false;
    while (inFlight < maxInFlight && queue.length > 0) {
      // A row asked for twice goes in the next statement: one UPDATE … FROM writes a row once.
      const group: Pending[] = [];
      const rest: Pending[] = [];
      const keys = new Set<string>();
      for (const p of queue) {
        if (group.length < maxRows && !keys.has(p.key)) {
          keys.add(p.key);
          group.push(p);
        } else {
          rest.push(p);
        }
      }
      queue.splice(0, queue.length, ...rest);
      inFlight++;
      void writeGroup(group).finally(() => {
        inFlight--;
        schedule();
      });
    }
  }

  function schedule(): void {
    if (scheduled || queue.length === 0 || inFlight >= maxInFlight) return;
    scheduled = true;
    // The writes that items ask for in this turn of the event loop go together.
    setImmediate(pump);
  }

  return {
    write(w, signal) {
      signal.throwIfAborted();
      return new Promise<boolean>((resolve, reject) => {
        const p: Pending = {
          ...w,
          key: JSON.stringify(w.pk.map(String)),
          signal,
          resolve,
          reject,
          onAbort: () => {
            const at = queue.indexOf(p);
            if (at < 0) return; // already sent: its statement decides
            queue.splice(at, 1);
            settle(p, undefined, signal.reason);
          },
        };
        signal.addEventListener('abort', p.onAbort, { once: true });
        queue.push(p);
        schedule();
      });
    },
  };
}
