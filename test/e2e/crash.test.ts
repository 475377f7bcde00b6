import { afterEach, describe, expect, it } from 'vitest';
import { setTimeout as sleep } from 'node:timers/promises';
import { UpdateAliasCommand, CreateAliasCommand } from '@aws-sdk/client-kms';
import { PutObjectCommand } from '@aws-sdk/client-s3';
import { redisKeys } from '@rekey/fleet';
import { createTestRedis, createTestSchema, type TestSchema } from '@rekey/testing';
import { startStack, type Stack } from './harness.js';
import { createKey, readRow, readSse, seedRows, seedSseObjects, sha } from './seed.js';
import { EncryptCommand } from '@aws-sdk/client-kms';
import { randomBytes } from 'node:crypto';

/** Creates the old key behind an alias that apps write through. */
async function aliasedKey(stack: Stack, alias: string): Promise<{ oldKey: string }> {
  const oldKey = await createKey(stack.kms, 'old');
  await stack.kms.send(new CreateAliasCommand({ AliasName: alias, TargetKeyId: oldKey }));
  return { oldKey };
}

async function moveAlias(stack: Stack, alias: string): Promise<string> {
  const newKey = await createKey(stack.kms, 'new');
  await stack.kms.send(new UpdateAliasCommand({ AliasName: alias, TargetKeyId: newKey }));
  return newKey;
}

describe('crashes and concurrent writers', () => {
  let stack: Stack | undefined;
  let db: TestSchema | undefined;
  afterEach(async () => {
    await stack?.stop();
    await db?.drop();
    stack = undefined;
    db = undefined;
  });

  it('a worker killed with SIGKILL mid-batch still ends with 0 items left and no counter counted twice', async () => {
    stack = await startStack({ workers: 2 });
    const { oldKey } = await aliasedKey(stack, 'alias/crash-worker');
    const hashes = await seedSseObjects(stack.s3, 'crash-worker', 'alias/crash-worker', 600);
    const newKey = await moveAlias(stack, 'alias/crash-worker');
    // Slow S3 re-encryption so batches are in flight when the worker dies.
    stack.aws.controls.setLatency('s3:UpdateObjectEncryption', { fixedMs: 15 });
    const m = await stack.api.create({ sources: [{ name: 'objs', kind: 's3-sse-kms', bucket: 'crash-worker' }], from: [oldKey], to: newKey, options: { batchSize: 50, concurrency: 4 } });
    for (let i = 0; i < 100; i++) {
      const st = await stack.api.status(m.id);
      if (st.totals.processed >= 100) break;
      await sleep(100);
    }
    stack.workers[0]!.kill('SIGKILL');
    stack.startWorker();
    stack.aws.controls.setLatency('s3:UpdateObjectEncryption', null);
    await stack.waitForState(m.id, ['ready', 'blocked', 'paused'], 180_000);
    const st = await stack.api.status(m.id);
    expect(st.migration.state).toBe('ready');
    const c = st.sources[0]!.counters;
    expect(c.discovered).toBe(600);
    expect(st.sources[0]!.processed).toBe(600);
    expect(c.reencrypted + c['already-current']).toBe(600);
    expect(c.verifyOldKey).toBe(0);
    for (const [key, hash] of [...hashes].slice(0, 50)) {
      const o = await readSse(stack.s3, 'crash-worker', key);
      expect(o.hash).toBe(hash);
      expect(o.keyArn).toBe(newKey);
    }
  });

  it('SIGTERM makes a worker stop its items in flight, return the batch to the queue uncounted and exit 0', async () => {
    stack = await startStack({ workers: 1 });
    const { oldKey } = await aliasedKey(stack, 'alias/sigterm');
    await seedSseObjects(stack.s3, 'sigterm', 'alias/sigterm', 300);
    const newKey = await moveAlias(stack, 'alias/sigterm');
    stack.aws.controls.setLatency('s3:UpdateObjectEncryption', { fixedMs: 20 });
    const m = await stack.api.create({ sources: [{ name: 'objs', kind: 's3-sse-kms', bucket: 'sigterm' }], from: [oldKey], to: newKey, options: { batchSize: 100, concurrency: 2 } });
    for (let i = 0; i < 300; i++) {
      if ((await stack.api.status(m.id)).totals.discovered > 0 && stack.aws.controls.getCounters()['s3:UpdateObjectEncryption']?.calls) break;
      await sleep(50);
    }
    const worker = stack.workers[0]!;
    const exited = new Promise<number | null>((r) => worker.once('exit', (code) => r(code)));
    worker.kill('SIGTERM');
    expect(await exited).toBe(0);
    // Nothing was counted for the unfinished batch; a new worker does the rest.
    stack.aws.controls.setLatency('s3:UpdateObjectEncryption', null);
    stack.startWorker();
    await stack.waitForState(m.id, ['ready', 'blocked', 'paused']);
    const st = await stack.api.status(m.id);
    expect(st.migration.state).toBe('ready');
    expect(st.sources[0]!.processed).toBe(300);
    expect(st.sources[0]!.counters.discovered).toBe(300);
  });

  it('a coordinator killed mid-enumeration resumes from its checkpoint without losing or double-counting a page', async () => {
    stack = await startStack({ workers: 2 });
    const { oldKey } = await aliasedKey(stack, 'alias/crash-coord');
    await seedSseObjects(stack.s3, 'crash-coord', 'alias/crash-coord', 900);
    const newKey = await moveAlias(stack, 'alias/crash-coord');
    // Slow listing so the coordinator dies between pages.
    stack.aws.controls.setLatency('s3:ListObjectsV2', { fixedMs: 150 });
    const m = await stack.api.create({ sources: [{ name: 'objs', kind: 's3-sse-kms', bucket: 'crash-coord' }], from: [oldKey], to: newKey, options: { batchSize: 30, concurrency: 4 } });
    for (let i = 0; i < 100; i++) {
      const st = await stack.api.status(m.id);
      if (st.totals.discovered >= 150) break;
      await sleep(100);
    }
    stack.coordinator!.kill('SIGKILL');
    await new Promise((r) => stack!.coordinator!.once('exit', r));
    const mid = (await stack.api.status(m.id).catch(() => undefined))?.totals.discovered;
    expect(mid).toBeUndefined(); // the API died with the coordinator
    stack.aws.controls.setLatency('s3:ListObjectsV2', null);
    await stack.startCoordinator();
    await stack.waitForState(m.id, ['ready', 'blocked', 'paused'], 180_000);
    const st = await stack.api.status(m.id);
    expect(st.migration.state).toBe('ready');
    const c = st.sources[0]!.counters;
    expect(c.discovered).toBe(900);
    // 30 pages, plus the batches split off at the tail of the pass (decisions.md #28).
    const redis = createTestRedis();
    const splits = Object.entries(await redis.hgetall(redisKeys(stack.prefix).splits(m.id)))
      .filter(([job]) => job.startsWith('reencrypt|'))
      .reduce((n, [, points]) => n + points.split(',').length, 0);
    await redis.quit();
    expect(c.batchesEnqueued).toBe(30 + splits);
    expect(c.batchesDone).toBe(30 + splits);
    expect(st.sources[0]!.processed).toBe(900);
  });

  it('a writer updating objects and rows during the migration loses no write, and items it writes under the old key are caught by verify', async () => {
    stack = await startStack({ workers: 2 });
    db = await createTestSchema('e2e_writer');
    const { oldKey } = await aliasedKey(stack, 'alias/crash-writer');
    await seedSseObjects(stack.s3, 'crash-writer', 'alias/crash-writer', 300);
    const table = `"${db.schema}".secrets`;
    await seedRows(db.pool, stack.kms, table, 'alias/crash-writer', 300);
    const newKey = await moveAlias(stack, 'alias/crash-writer');
    stack.aws.controls.setLatency('kms:ReEncrypt', { fixedMs: 5 });
    const m = await stack.api.create({
      sources: [
        { name: 'objs', kind: 's3-sse-kms', bucket: 'crash-writer', strategy: 'copy' },
        { name: 'rows', kind: 'postgres', schema: db.schema, table: 'secrets', primaryKey: ['id'], column: 'secret', contextColumn: 'ctx' },
      ],
      from: [oldKey],
      to: newKey,
      options: { batchSize: 20, concurrency: 4 },
    });
    // An app that still writes with the OLD key (a stale writer) while the migration runs.
    const lastWrite = new Map<string, string>();
    const lastRow = new Map<number, string>();
    let writing = true;
    /** One write of the stale app: object and row `n % 300` get a new value under the old key. */
    const write = async (n: number) => {
      const i = n % 300;
      const body = randomBytes(40);
      const key = `obj/${String(i).padStart(6, '0')}`;
      await stack!.s3.send(new PutObjectCommand({ Bucket: 'crash-writer', Key: key, Body: body, ServerSideEncryption: 'aws:kms', SSEKMSKeyId: oldKey, ContentType: 'application/x-test' }));
      lastWrite.set(key, sha(body));
      const id = i + 1;
      const plain = randomBytes(32);
      const ct = (await stack!.kms.send(new EncryptCommand({ KeyId: oldKey, Plaintext: plain, EncryptionContext: { table, id: String(id) } }))).CiphertextBlob!;
      await db!.pool.query(`UPDATE ${table} SET secret = $2, ctx = $3 WHERE id = $1`, [id, Buffer.from(ct), { table, id: String(id) }]);
      lastRow.set(id, sha(plain));
    };
    let n = 0;
    const writer = (async () => {
      while (writing) await write(n++);
    })();
    await stack.waitForState(m.id, ['verifying', 'ready', 'blocked', 'paused'], 180_000);
    await sleep(300);
    writing = false;
    await writer;
    await stack.waitForState(m.id, ['ready', 'blocked', 'paused'], 180_000);
    // Whatever the timing of the loop above (on a loaded machine it may have stayed ahead of the
    // fleet's sweep), the app writes once more now, after the pass: that item must be caught.
    await write(n++);
    // Verify runs after the writer wrote under the old key: if any of its writes landed after an
    // item was migrated, verify must see them; run it again now that the writer stopped.
    await stack.api.action(m.id, 'verify');
    await stack.waitForState(m.id, ['ready', 'blocked'], 120_000);
    const st = await stack.api.status(m.id);
    const found = st.sources.reduce((n, s) => n + s.counters.verifyOldKey, 0);
    // The writer wrote every one of its last values with the old key: those items are caught.
    expect(found).toBeGreaterThan(0);
    expect(st.migration.state).toBe('blocked');
    expect(st.gate.conditions.find((c) => c.name === 'verify-clean')?.ok).toBe(false);
    // No lost write: every object and row holds the writer's last value.
    for (const [key, hash] of lastWrite) expect((await readSse(stack.s3, 'crash-writer', key)).hash).toBe(hash);
    for (const [id, hash] of lastRow) expect((await readRow(db.pool, stack.kms, table, id)).hash).toBe(hash);
    // And finalize is refused while the gate is red.
    await expect(stack.api.finalize(m.id, { force: false })).rejects.toThrow(/gate/);
  });
});
