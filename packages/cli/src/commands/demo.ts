import { spawn, type ChildProcess } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { createRequire } from 'node:module';
import { connect } from 'node:net';
import { CreateAliasCommand, CreateKeyCommand, DecryptCommand, DescribeKeyCommand, EncryptCommand, KMSClient, UpdateAliasCommand } from '@aws-sdk/client-kms';
import { CreateBucketCommand, GetObjectCommand, PutObjectCommand, S3Client } from '@aws-sdk/client-s3';
import { Redis } from 'ioredis';
import pg from 'pg';
import pino from 'pino';
import { startAwsLocal } from '@rekey/aws-local';
import { createEnvelopeClient } from '@rekey/envelope';
import { createEngine } from '@rekey/fleet';
import { engineClient } from '../client.js';
import { EXIT } from '../errors.js';
import { statusLines, watchStatus } from '../render.js';

const CREDENTIALS = { accessKeyId: 'AKIAREKEYDEMO0000001', secretAccessKey: 'demo-secret-not-a-real-key' };
const REGION = 'us-east-1';

function reachable(host: string, port: number, ms = 1500): Promise<boolean> {
  return new Promise((resolve) => {
    const s = connect(port, host);
    const t = setTimeout(() => {
      s.destroy();
      resolve(false);
    }, ms);
    s.once('connect', () => {
      clearTimeout(t);
      s.end();
      resolve(true);
    });
    s.once('error', () => {
      clearTimeout(t);
      resolve(false);
    });
  });
}

async function pool<T>(items: readonly T[], n: number, fn: (x: T, i: number) => Promise<void>): Promise<void> {
  let next = 0;
  await Promise.all(Array.from({ length: n }, async () => {
    while (next < items.length) {
      const i = next++;
      await fn(items[i]!, i);
    }
  }));
}

const sha = (b: Uint8Array) => createHash('sha256').update(b).digest('hex');
const step = (n: number, text: string) => console.log(`\n[${n}/9] ${text}`);

/**
 * `rekey demo`: the whole job on this machine. Starts aws-local, writes SSE-KMS objects,
 * S3 Encryption Client v2 objects and Postgres rows under an old key, rotates by hand, migrates
 * with a coordinator and two worker processes, verifies, disables the old key, reads everything
 * back, and prints a summary.
 */
export async function runDemo(opts: { items: number; keep: boolean }): Promise<number> {
  const started = Date.now();
  const redisUrl = process.env['REDIS_URL'] ?? 'redis://127.0.0.1:6379';
  const dbUrl = process.env['DATABASE_URL'] ?? 'postgres://postgres@127.0.0.1:5432/test';
  const ru = new URL(redisUrl);
  if (!(await reachable(ru.hostname, Number(ru.port || 6379)))) {
    console.error(`rekey demo: Redis is not reachable at ${redisUrl}.`);
    console.error('Start it with:  redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save ""  (or set REDIS_URL)');
    return EXIT.usage;
  }
  const du = new URL(dbUrl);
  const withPg = await reachable(du.hostname, Number(du.port || 5432));
  const runId = randomBytes(3).toString('hex');
  const prefix = `rekey-demo-${runId}:`;

  step(1, 'starting aws-local (KMS, S3, SQS, CloudTrail) in this process');
  const aws = await startAwsLocal({ port: 0 });
  console.log(`    aws-local at ${aws.url}`);
  const cfg = { endpoint: aws.url, region: REGION, credentials: CREDENTIALS, forcePathStyle: true };
  const kms = new KMSClient(cfg);
  const s3 = new S3Client(cfg);
  const children: ChildProcess[] = [];
  let db: pg.Pool | undefined;
  const schema = `rekey_demo_${runId}`;
  const cleanup = async () => {
    for (const c of children) if (c.exitCode === null) c.kill('SIGTERM');
    await Promise.all(children.map((c) => (c.exitCode === null ? new Promise((r) => c.once('exit', r)) : undefined)));
    if (db) {
      await db.query(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`).catch(() => undefined);
      await db.end();
    }
    kms.destroy();
    s3.destroy();
    await aws.close();
    // The run's Redis keys (migration state, queue, audit, limiter) go with its schema and aws-local.
    const redis = new Redis(redisUrl, { maxRetriesPerRequest: 1 });
    redis.on('error', () => undefined);
    try {
      let cursor = '0';
      do {
        const [next, found] = await redis.scan(cursor, 'MATCH', `${prefix}*`, 'COUNT', 1000);
        cursor = next;
        if (found.length) await redis.unlink(...found);
      } while (cursor !== '0');
    } catch {
      // Redis went away during the demo: nothing more to clean.
    } finally {
      redis.disconnect();
    }
  };

  try {
    step(2, 'creating the old key and alias/rekey-demo');
    const oldKey = (await kms.send(new CreateKeyCommand({ Description: 'rekey demo: old key' }))).KeyMetadata!.Arn!;
    await kms.send(new CreateAliasCommand({ AliasName: 'alias/rekey-demo', TargetKeyId: oldKey }));
    console.log(`    old key ${oldKey}`);

    const nSse = opts.items;
    const nEnv = Math.max(1, Math.round(opts.items * 0.4));
    const nRows = withPg ? Math.max(1, Math.round(opts.items * 0.4)) : 0;
    step(3, `writing ${nSse} SSE-KMS objects, ${nEnv} S3 Encryption Client v2 objects${withPg ? ` and ${nRows} Postgres rows` : ''} under the old key`);
    if (!withPg) console.log(`    PostgreSQL is not reachable at ${du.host}: the postgres source is skipped (set DATABASE_URL to include it)`);
    await s3.send(new CreateBucketCommand({ Bucket: 'rekey-demo-sse' }));
    await s3.send(new CreateBucketCommand({ Bucket: 'rekey-demo-envelope' }));
    const sseHashes = new Map<string, string>();
    await pool(Array.from({ length: nSse }, (_, i) => i), 32, async (i) => {
      const key = `objects/${String(i).padStart(7, '0')}.bin`;
      const body = randomBytes(200 + (i % 800));
      sseHashes.set(key, sha(body));
      await s3.send(new PutObjectCommand({
        Bucket: 'rekey-demo-sse', Key: key, Body: body, ServerSideEncryption: 'aws:kms', SSEKMSKeyId: 'alias/rekey-demo',
        ContentType: 'application/octet-stream', Metadata: { owner: 'demo', n: String(i) }, ...(i % 10 === 0 ? { Tagging: 'team=payments' } : {}),
      }));
    });
    const envelope = createEnvelopeClient({ kms: { client: kms }, alias: 'alias/rekey-demo' });
    const envHashes = new Map<string, string>();
    await pool(Array.from({ length: nEnv }, (_, i) => i), 32, async (i) => {
      const key = `docs/${String(i).padStart(7, '0')}.json`;
      const body = Buffer.from(JSON.stringify({ n: i, secret: randomBytes(24).toString('hex') }));
      envHashes.set(key, sha(body));
      await envelope.putObject(s3, { Bucket: 'rekey-demo-envelope', Key: key, Body: body, keyId: 'alias/rekey-demo', context: { app: 'demo' }, ContentType: 'application/json' });
    });
    const rowHashes = new Map<number, string>();
    if (withPg) {
      db = new pg.Pool({ connectionString: dbUrl, max: 8 });
      await db.query(`CREATE SCHEMA "${schema}"`);
      await db.query(`CREATE TABLE "${schema}".secrets (id bigint PRIMARY KEY, secret bytea NOT NULL, ctx jsonb NOT NULL)`);
      await pool(Array.from({ length: nRows }, (_, i) => i + 1), 32, async (id) => {
        const plain = randomBytes(32);
        const ctx = { table: 'secrets', id: String(id) };
        const ct = (await kms.send(new EncryptCommand({ KeyId: 'alias/rekey-demo', Plaintext: plain, EncryptionContext: ctx }))).CiphertextBlob!;
        rowHashes.set(id, sha(plain));
        await db!.query(`INSERT INTO "${schema}".secrets (id, secret, ctx) VALUES ($1, $2, $3)`, [id, Buffer.from(ct), ctx]);
      });
    }

    step(4, 'rotating by hand: a new key, then alias/rekey-demo moved to it');
    const newKey = (await kms.send(new CreateKeyCommand({ Description: 'rekey demo: new key' }))).KeyMetadata!.Arn!;
    await kms.send(new UpdateAliasCommand({ AliasName: 'alias/rekey-demo', TargetKeyId: newKey }));
    console.log(`    new key ${newKey}`);

    step(5, 'migrating with a coordinator (this process) and two worker processes');
    const env = {
      ...process.env,
      REDIS_URL: redisUrl,
      REKEY_REDIS_PREFIX: prefix,
      AWS_ENDPOINT_URL: aws.url,
      AWS_REGION: REGION,
      AWS_ACCESS_KEY_ID: CREDENTIALS.accessKeyId,
      AWS_SECRET_ACCESS_KEY: CREDENTIALS.secretAccessKey,
      DATABASE_URL: dbUrl,
      LOG_LEVEL: 'warn',
      // aws-local has no quota here; the fleet budget only has to stay out of the way.
      REKEY_KMS_BUDGET: '5000',
    };
    const workerMain = createRequire(import.meta.url).resolve('@rekey/worker');
    for (let w = 0; w < 2; w++) {
      const child = spawn(process.execPath, [workerMain], { env, stdio: ['ignore', 'inherit', 'inherit'] });
      children.push(child);
    }
    const engine = await createEngine({
      redisUrl,
      prefix,
      aws: { region: REGION, endpoint: aws.url, credentials: CREDENTIALS },
      logger: pino({ level: 'warn' }),
      actor: 'demo:coordinator',
      kmsBudgetRps: 5000,
    });
    const client = engineClient(engine, 'demo');
    const coordinator = engine.startCoordinator({ tickMs: 250 });
    const sources: Record<string, unknown>[] = [
      { name: 'sse-objects', kind: 's3-sse-kms', bucket: 'rekey-demo-sse', strategy: 'update-encryption' },
      { name: 'envelope-docs', kind: 's3-envelope', bucket: 'rekey-demo-envelope' },
    ];
    if (withPg) sources.push({ name: 'secret-rows', kind: 'postgres', schema, table: 'secrets', primaryKey: ['id'], column: 'secret', contextColumn: 'ctx' });
    const m = await client.create({ id: `demo-${runId}`, sources, from: [oldKey], to: 'alias/rekey-demo', options: { concurrency: 16 } });
    const tty = Boolean(process.stdout.isTTY);
    const st = await watchStatus(client, m.id, { tty, intervalMs: tty ? 250 : 2000 });
    if (tty) for (const l of statusLines(st)) console.log(l);

    step(6, 'verify pass: items still under the old key');
    const left = st.sources.reduce((n, s) => n + s.counters.verifyOldKey, 0);
    console.log(`    ${left} items left under the old key (verify checked ${st.sources.reduce((n, s) => n + s.counters.verifyChecked, 0)})`);
    if (st.migration.state !== 'ready') {
      console.error(`rekey demo: the gate is not ready (${st.migration.state}${st.migration.reason ? `: ${st.migration.reason}` : ''})`);
      await coordinator.close();
      await client.close();
      return EXIT.failure;
    }

    step(7, 'gate ready: disabling the old key');
    const fin = await client.finalize(m.id, { force: false });
    const state = (await kms.send(new DescribeKeyCommand({ KeyId: oldKey }))).KeyMetadata!.KeyState;
    console.log(`    ${fin.disabled.join(', ')} is now ${state}`);

    step(8, 'reading back every object and row and comparing with the originals');
    let bad = 0;
    await pool([...sseHashes.entries()], 32, async ([key, h]) => {
      const o = await s3.send(new GetObjectCommand({ Bucket: 'rekey-demo-sse', Key: key }));
      const b = await o.Body!.transformToByteArray();
      if (sha(b) !== h || o.SSEKMSKeyId !== newKey) bad++;
    });
    await pool([...envHashes.entries()], 32, async ([key, h]) => {
      const r = await envelope.getObject(s3, { Bucket: 'rekey-demo-envelope', Key: key, context: { app: 'demo' } });
      if (sha(r.plaintext) !== h || r.keyArn !== newKey) bad++;
    });
    if (db) {
      const { rows } = await db.query<{ id: string; secret: Buffer; ctx: Record<string, string> }>(`SELECT id, secret, ctx FROM "${schema}".secrets`);
      await pool(rows, 32, async (r) => {
        const d = await kms.send(new DecryptCommand({ CiphertextBlob: r.secret, EncryptionContext: r.ctx }));
        if (sha(d.Plaintext!) !== rowHashes.get(Number(r.id)) || d.KeyId !== newKey) bad++;
      });
    }
    console.log(`    ${sseHashes.size + envHashes.size + rowHashes.size} items read back: ${bad === 0 ? 'all identical, all under the new key' : `${bad} MISMATCHES`}`);

    step(9, 'summary');
    const counters = aws.controls.getCounters();
    const kmsCalls = Object.entries(counters).filter(([k]) => k.startsWith('kms:')).map(([k, v]) => `${k.slice(4)} ${v.calls}`).join(', ');
    console.log(`    migration ${m.id}: ${st.totals.processed} items, ${Object.entries(st.totals.outcomes).filter(([, v]) => v).map(([k, v]) => `${k} ${v}`).join(', ')}`);
    console.log(`    KMS calls seen by aws-local: ${kmsCalls}`);
    console.log(`    audit log: ${(await engine.audit.verify(m.id)).ok ? 'hash chain intact' : 'BROKEN'}; ${(await engine.audit.read(m.id)).length} entries`);
    console.log(`    done in ${((Date.now() - started) / 1000).toFixed(1)} s`);
    if (opts.keep) {
      console.log(`\n--keep: the stack stays up. aws-local: ${aws.url}; Redis prefix: ${prefix}. Try:`);
      console.log(`    REKEY_REDIS_PREFIX=${prefix} AWS_ENDPOINT_URL=${aws.url} node packages/cli/dist/bin.js --local status ${m.id}`);
      console.log('Press Ctrl-C to stop.');
      await new Promise<void>((resolve) => process.once('SIGINT', () => resolve()));
    }
    await coordinator.close();
    await client.close();
    return bad === 0 ? EXIT.ok : EXIT.failure;
  } finally {
    await cleanup();
  }
}
