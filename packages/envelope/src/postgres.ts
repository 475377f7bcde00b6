import { EnvelopeError } from './errors.js';

/** The part of `pg.Pool` (or `pg.Client`) the Postgres helper uses. */
export interface Queryable {
  query(text: string, values?: unknown[]): Promise<{ rows: unknown[]; rowCount: number | null }>;
}

/** What `rewrapColumn` did to the row. */
export type RewrapColumnOutcome = 'updated' | 'conflict' | 'gone' | 'already-current';

/** Options of `rewrapColumn`. */
export interface RewrapColumnOptions {
  /** `table` or `schema.table`. */
  readonly table: string;
  /** The primary key columns and values of the row. */
  readonly pk: Readonly<Record<string, unknown>>;
  /** A bytea column holding a Rekey binary envelope. */
  readonly column: string;
  /** Destination key id, ARN or alias. */
  readonly to: string;
  /** The envelope's encryption context; `{}` when absent. */
  readonly context?: Readonly<Record<string, string>>;
  readonly signal?: AbortSignal;
}

const IDENT = /^[A-Za-z_][A-Za-z0-9_]{0,62}$/;

/** Double-quotes a validated SQL identifier. */
export function quoteIdent(name: unknown, what: string): string {
  if (typeof name !== 'string' || !IDENT.test(name)) {
    throw new EnvelopeError('invalid-argument', `${what} must be an SQL identifier (letters, digits, _; at most 63)`);
  }
  return `"${name}"`;
}

/** The SQL statements of one compare-and-swap rewrap, built once per call from validated names. */
export function rewrapStatements(options: Pick<RewrapColumnOptions, 'table' | 'pk' | 'column'>): {
  select: string;
  update: string;
  keyValues: unknown[];
} {
  const parts = typeof options.table === 'string' ? options.table.split('.') : [];
  if (parts.length < 1 || parts.length > 2) throw new EnvelopeError('invalid-argument', 'table must be "table" or "schema.table"');
  const table = parts.map((p) => quoteIdent(p, 'table')).join('.');
  const column = quoteIdent(options.column, 'column');
  if (typeof options.pk !== 'object' || options.pk === null) throw new EnvelopeError('invalid-argument', 'pk must be an object of column values');
  const entries = Object.entries(options.pk);
  if (entries.length === 0) throw new EnvelopeError('invalid-argument', 'pk must name at least one column');
  const where = entries.map(([k], i) => `${quoteIdent(k, 'pk column')} = $${i + 1}`).join(' AND ');
  const n = entries.length;
  return {
    select: `SELECT ${column} AS v FROM ${table} WHERE ${where}`,
    update: `UPDATE ${table} SET ${column} = $${n + 1} WHERE ${where} AND ${column} = $${n + 2}`,
    keyValues: entries.map(([, v]) => v),
  };
}
