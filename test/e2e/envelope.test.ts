import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { randomBytes } from 'node:crypto';
import { rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { CreateAliasCommand, UpdateAliasCommand } from '@aws-sdk/client-kms';
import { CreateBucketCommand } from '@aws-sdk/client-s3';
import { CreateQueueCommand, SQSClient } from '@aws-sdk/client-sqs';
import { createEnvelopeClient, type EnvelopeClient } from '@rekey/envelope';
import { readIntakeStats, redisKeys } from '@rekey/fleet';
import { createTestRedis, createTestSchema, TEST_CREDENTIALS, type TestSchema } from '@rekey/testing';
import { startStack, type Stack } from './harness.js';
import { createKey, sha, times } from './seed.js';

const ROWS = 20;
const OBJECTS = 15;
const S3_CONTEXT = { app: 'e2e-envelope' };

async function waitUntil<T>(what: string, probe: () => Promise<T | undefined>, timeoutMs = 90_000): Promise<T> {
  const until = Date.now() + timeoutMs;
  while (Date.now() < until) {
    const v = await probe();
    if (v !== undefined) return v;
    await sleep(250);
  }
  throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
}

/**
 * Issue 7 end to end: the app-side library (`@rekey/envelope`) and the fleet agree. A stale read
 * with `'enqueue'` reaches the coordinator's intake and a worker migrates the row; `'rewrap'`
 * persists a rewrapped envelope in the app's own transaction; S3EC v2 objects written by the
 * library are migrated by the fleet's `s3-envelope` source and still decrypt with the library.
 */
describe('@rekey/envelope with the fleet (coordinator with intake + worker, aws-local, Redis, Postgres)', () => {
  let stack: Stack;
  let db: TestSchema;
  let sqs: SQSClient;
  let redis: ReturnType<typeof createTestRedis>;
  let app: EnvelopeClient;
  let configPath: string;
  let queueUrl: string;
  let oldKey: string;
  let newKey: string;
  const run = randomBytes(3).toString('hex');
  const alias = `alias/e2e-envelope-${run}`;
  const bucket = `e2e-envelope-s3ec-${run}`;
  const rowHashes = new Map<number, string>();
  const objectHashes = new Map<string, string>();
  const ctxOf = (id: number) => ({ table: 'cards', id: String(id) });

  async function readRow(id: number): Promise<Buffer> {
    const { rows } = await db.pool.query<{ secret: Buffer }>('SELECT secret FROM cards WHERE id = $1', [id]);
    return rows[0]!.secret;
  }
  const reEncryptCalls = (since: number) => stack.aws.usage.all().slice(since).filter((e) => e.eventName === 'ReEncrypt').length;

  beforeAll(async () => {
    configPath = join(tmpdir(), `rekey-e2e-envelope-${run}.yaml`);
    process.env['REKEY_CONFIG'] = configPath;
    stack = await startStack({ coordinator: false, workers: 0 });
    delete process.env['REKEY_CONFIG'];
    db = await createTestSchema('e2e_envelope');
    sqs = new SQSClient({ endpoint: stack.aws.url, region: 'us-east-1', credentials: TEST_CREDENTIALS });
    redis = createTestRedis();
    queueUrl = (await sqs.send(new CreateQueueCommand({ QueueName: `envelope-intake-${run}` }))).QueueUrl!;

    oldKey = await createKey(stack.kms, 'envelope old');
    await stack.kms.send(new CreateAliasCommand({ AliasName: alias, TargetKeyId: oldKey }));
    app = createEnvelopeClient({
      kms: { client: stack.kms },
      alias,
      staleTtlMs: 0,
      intake: { sqs: { client: sqs }, queueUrl, source: 'cards', flushMs: 50 },
    });

    await db.pool.query('CREATE TABLE cards (id bigint PRIMARY KEY, secret bytea NOT NULL, ctx jsonb NOT NULL)');
    await times(ROWS, 8, async (i) => {
      const id = i + 1;
      const plain = randomBytes(24);
      rowHashes.set(id, sha(plain));
      const env = await app.encrypt(plain, { keyId: alias, context: ctxOf(id) });
      await db.pool.query('INSERT INTO cards (id, secret, ctx) VALUES ($1, $2, $3)', [id, env, ctxOf(id)]);
    });
    await stack.s3.send(new CreateBucketCommand({ Bucket: bucket }));
    await times(OBJECTS, 8, async (i) => {
      const body = Buffer.from(`s3ec object ${i} ${randomBytes(32).toString('hex')}`);
      objectHashes.set(`o/${i}`, sha(body));
      await app.putObject(stack.s3, { Bucket: bucket, Key: `o/${i}`, Body: body, keyId: alias, context: S3_CONTEXT, ContentType: 'text/plain', Metadata: { owner: 'e2e' } });
    });

    await writeFile(configPath, [
      'sources:',
      `  - { name: cards, kind: postgres, schema: ${db.schema}, table: cards, primaryKey: [id], column: secret, format: rekey-envelope, contextColumn: ctx }`,
      'bindings:',
      `  ${alias}: [cards]`,
      'intake:',
      `  queueUrl: ${queueUrl}`,
      '  waitSeconds: 1',
      '  dedupeWindowSeconds: 300',
      '',
    ].join('\n'));
    await stack.startCoordinator();
    stack.startWorker();
    // The intake must have seen the alias's old key before the alias moves (no event is sent here).
    await waitUntil('the intake to record the alias', async () => ((await redis.hget(redisKeys(stack.prefix).intakeAliases(), alias)) === oldKey ? true : undefined));
    newKey = await createKey(stack.kms, 'envelope new');
    await stack.kms.send(new UpdateAliasCommand({ AliasName: alias, TargetKeyId: newKey }));
  });

  afterAll(async () => {
    await app?.close();
    sqs?.destroy();
    await stack?.stop();
    await redis?.quit();
    await db?.drop();
    if (configPath) await rm(configPath, { force: true });
  });

  it("'enqueue': a stale read reaches the intake and a worker rewraps the row once, although it was read twice", async () => {
    const mark = stack.aws.usage.all().length;
    for (let read = 0; read < 2; read++) {
      const r = await app.decrypt(await readRow(1), { context: ctxOf(1), onStale: 'enqueue', item: { kind: 'row', pk: [1] } });
      expect(r.stale).toBe(true);
      expect(r.keyArn).toBe(oldKey);
      expect(r.enqueued).toBe(true);
      // Flushing between reads makes two SQS messages, so the fleet (not the app's buffer) must dedupe them.
      await app.flush();
    }
    expect(app.stats().intake).toMatchObject({ sent: 2, failed: 0 });

    const after = await waitUntil('row 1 to move to the new key', async () => {
      const r = await app.decrypt(await readRow(1), { context: ctxOf(1) });
      return r.keyArn === newKey ? r : undefined;
    });
    expect(after.stale).toBe(false);
    expect(sha(after.plaintext)).toBe(rowHashes.get(1));
    await waitUntil('both requests to be handled', async () => {
      const s = await readIntakeStats(redis, redisKeys(stack.prefix));
      return (s['items.enqueued'] ?? 0) + (s['items.deduplicated'] ?? 0) >= 2 ? s : undefined;
    });
    await sleep(1000);
    expect(await readIntakeStats(redis, redisKeys(stack.prefix))).toMatchObject({ 'items.enqueued': 1, 'items.deduplicated': 1, 'item.reencrypted': 1 });
    expect(reEncryptCalls(mark)).toBe(1);
    expect((await app.decrypt(await readRow(2), { context: ctxOf(2) })).keyArn).toBe(oldKey);
  });

  it("'rewrap': the app persists the rewrapped envelope in its read transaction, and rewrapColumn updates a row", async () => {
    const client = await db.pool.connect();
    try {
      await client.query('BEGIN');
      const { rows } = await client.query<{ secret: Buffer }>('SELECT secret FROM cards WHERE id = 2 FOR UPDATE');
      const old = rows[0]!.secret;
      const r = await app.decrypt(old, { context: ctxOf(2), onStale: 'rewrap' });
      expect(r.stale).toBe(true);
      expect(r.rewrapped).toBeDefined();
      const upd = await client.query('UPDATE cards SET secret = $1 WHERE id = 2 AND secret = $2', [r.rewrapped, old]);
      expect(upd.rowCount).toBe(1);
      await client.query('COMMIT');
    } finally {
      client.release();
    }
    const two = await app.decrypt(await readRow(2), { context: ctxOf(2) });
    expect(two).toMatchObject({ keyArn: newKey, stale: false });
    expect(sha(two.plaintext)).toBe(rowHashes.get(2));

    expect(await app.rewrapColumn(db.pool, { table: 'cards', pk: { id: 3 }, column: 'secret', to: alias, context: ctxOf(3) })).toBe('updated');
    expect(await app.rewrapColumn(db.pool, { table: 'cards', pk: { id: 3 }, column: 'secret', to: alias, context: ctxOf(3) })).toBe('already-current');
    const three = await app.decrypt(await readRow(3), { context: ctxOf(3) });
    expect(three.keyArn).toBe(newKey);
    expect(sha(three.plaintext)).toBe(rowHashes.get(3));
  });

  it('the fleet migrates the rest of the table and counts the rows the app moved as already current', async () => {
    const m = await stack.api.create({
      sources: [{ name: 'cards', kind: 'postgres', schema: db.schema, table: 'cards', primaryKey: ['id'], column: 'secret', format: 'rekey-envelope', contextColumn: 'ctx' }],
      from: [oldKey],
      to: alias,
      options: { batchSize: 7 },
    });
    await stack.waitForState(m.id, ['ready', 'blocked', 'paused']);
    const st = await stack.api.status(m.id);
    expect(st.migration.state).toBe('ready');
    expect(st.totals.outcomes['already-current']).toBe(3);
    expect(st.totals.outcomes['reencrypted']).toBe(ROWS - 3);
    for (let id = 1; id <= ROWS; id++) {
      const r = await app.decrypt(await readRow(id), { context: ctxOf(id) });
      expect(r.keyArn).toBe(newKey);
      expect(sha(r.plaintext)).toBe(rowHashes.get(id));
    }
  });

  it('S3EC v2 objects written by the library are migrated by the s3-envelope source and still decrypt', async () => {
    const before = await app.getObject(stack.s3, { Bucket: bucket, Key: 'o/0', context: S3_CONTEXT });
    expect(before).toMatchObject({ keyArn: oldKey, stale: true });
    const m = await stack.api.create({ sources: [{ name: 's3ec', kind: 's3-envelope', bucket }], from: [oldKey], to: alias, options: { batchSize: 4 } });
    await stack.waitForState(m.id, ['ready', 'blocked', 'paused']);
    const st = await stack.api.status(m.id);
    expect(st.migration.state).toBe('ready');
    expect(st.totals.outcomes['reencrypted']).toBe(OBJECTS);
    for (const [key, hash] of objectHashes) {
      const got = await app.getObject(stack.s3, { Bucket: bucket, Key: key, context: S3_CONTEXT });
      expect(got.keyArn).toBe(newKey);
      expect(got.stale).toBe(false);
      expect(sha(got.plaintext)).toBe(hash);
      expect(got.metadata).toMatchObject({ owner: 'e2e' });
      expect(got.response.ContentType).toBe('text/plain');
    }
  });
});
