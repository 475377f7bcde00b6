import pg from 'pg';
import { uniqueName } from './names.js';

/** The PostgreSQL URL tests use: `DATABASE_URL` or the local default. */
export function databaseUrl(): string {
  return process.env['DATABASE_URL'] ?? 'postgres://postgres@127.0.0.1:5432/test';
}

/** A schema created for one test, with a pool whose search_path points at it. */
export interface TestSchema {
  readonly schema: string;
  readonly pool: pg.Pool;
  /** Drops the schema and ends the pool. */
  drop(): Promise<void>;
}

/** Creates a unique schema and a pool bound to it. */
export async function createTestSchema(base = 'rekey_test'): Promise<TestSchema> {
  const schema = uniqueName(base).replace(/-/g, '_');
  const admin = new pg.Client({ connectionString: databaseUrl() });
  await admin.connect();
  try {
    await admin.query(`CREATE SCHEMA "${schema}"`);
  } finally {
    await admin.end();
  }
  const pool = new pg.Pool({ connectionString: databaseUrl(), max: 8, options: `-c search_path="${schema}"` });
  return {
    schema,
    pool,
    async drop() {
      await pool.query(`DROP SCHEMA "${schema}" CASCADE`);
      await pool.end();
    },
  };
}
