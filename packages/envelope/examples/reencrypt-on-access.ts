/**
 * Re-encrypt on access, end to end: an app writes rows under `alias/app-data` (key A), the alias
 * moves to key B, and every later read rewraps its row in the same transaction it reads in.
 *
 * Runs against an in-process aws-local and the Postgres at DATABASE_URL
 * (default postgres://postgres@127.0.0.1:5432/test):
 *
 *   npx tsx --conditions source examples/reencrypt-on-access.ts
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { CreateAliasCommand, CreateKeyCommand, KMSClient, UpdateAliasCommand } from '@aws-sdk/client-kms';
import { startAwsLocal } from '@rekey/aws-local';
import { createEnvelopeClient } from '@rekey/envelope';
import pg from 'pg';

const aws = await startAwsLocal({ port: 0 });
const kms = new KMSClient({
  endpoint: aws.url,
  region: 'us-east-1',
  credentials: { accessKeyId: 'AKIAEXAMPLE', secretAccessKey: 'example' },
});
const schema = `rekey_example_${randomBytes(4).toString('hex')}`;
const pool = new pg.Pool({
  connectionString: process.env['DATABASE_URL'] ?? 'postgres://postgres@127.0.0.1:5432/test',
  options: `-c search_path=${schema}`,
});
const envelope = createEnvelopeClient({ kms: { client: kms }, alias: 'alias/app-data', staleTtlMs: 1000 });

try {
  const keyA = (await kms.send(new CreateKeyCommand({}))).KeyMetadata!.Arn!;
  const keyB = (await kms.send(new CreateKeyCommand({}))).KeyMetadata!.Arn!;
  await kms.send(new CreateAliasCommand({ AliasName: 'alias/app-data', TargetKeyId: keyA }));
  await pool.query(`CREATE SCHEMA ${schema}`);
  await pool.query('CREATE TABLE customers (id int PRIMARY KEY, ssn bytea NOT NULL)');

  // The context binds each value to its row: a value copied to another row does not decrypt.
  const context = (id: number) => ({ table: 'customers', column: 'ssn', id: String(id) });
  const secrets = new Map([[1, '078-05-1120'], [2, '219-09-9999'], [3, '457-55-5462']]);
  for (const [id, ssn] of secrets) {
    const blob = await envelope.encrypt(ssn, { keyId: 'alias/app-data', context: context(id) });
    await pool.query('INSERT INTO customers (id, ssn) VALUES ($1, $2)', [id, blob]);
  }
  console.log(`wrote ${secrets.size} rows under key A`);

  await kms.send(new UpdateAliasCommand({ AliasName: 'alias/app-data', TargetKeyId: keyB }));
  await new Promise((resolve) => setTimeout(resolve, 1100)); // let the stale-check TTL pass
  console.log('moved alias/app-data to key B');

  /** The app's read path: read, decrypt, and persist a rewrapped envelope in the same transaction. */
  async function readCustomer(id: number): Promise<string> {
    const tx = await pool.connect();
    try {
      await tx.query('BEGIN');
      const { rows } = await tx.query<{ ssn: Buffer }>('SELECT ssn FROM customers WHERE id = $1 FOR UPDATE', [id]);
      const out = await envelope.decrypt(rows[0]!.ssn, { context: context(id), onStale: 'rewrap' });
      if (out.rewrapped) await tx.query('UPDATE customers SET ssn = $1 WHERE id = $2', [out.rewrapped, id]);
      await tx.query('COMMIT');
      console.log(`read row ${id}: ${out.stale ? 'stale, rewrapped to key B' : 'current'}`);
      return out.plaintext.toString();
    } catch (err) {
      await tx.query('ROLLBACK');
      throw err;
    } finally {
      tx.release();
    }
  }

  for (const [id, ssn] of secrets) assert.equal(await readCustomer(id), ssn);
  for (const [id, ssn] of secrets) assert.equal(await readCustomer(id), ssn);
  const { rows } = await pool.query<{ id: number; ssn: Buffer }>('SELECT id, ssn FROM customers');
  for (const row of rows) assert.equal((await envelope.decrypt(row.ssn, { context: context(row.id) })).keyArn, keyB);
  console.log('every row is now under key B; stats:', JSON.stringify(envelope.stats()));
} finally {
  await pool.query(`DROP SCHEMA IF EXISTS ${schema} CASCADE`);
  await pool.end();
  await envelope.close();
  kms.destroy();
  await aws.close();
}
