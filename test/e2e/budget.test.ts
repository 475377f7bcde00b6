import { spawn, type ChildProcess } from 'node:child_process';
import { createRequire } from 'node:module';
import { createConnection, createServer, type Server, type Socket } from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { CreateBucketCommand } from '@aws-sdk/client-s3';
import { createEnvelopeClient } from '@rekey/envelope';
import type { KmsUsageEntry } from '@rekey/aws-local';
import { createTestRedis, redisUrl, TEST_CREDENTIALS } from '@rekey/testing';
import { freePort, startStack, type Stack } from './harness.js';
import { createKey, times } from './seed.js';

const require = createRequire(import.meta.url);

/** The harness passes this process's environment to its children: the budget goes in there. */
function withBudget(rps: number): () => void {
  const before = process.env['REKEY_KMS_BUDGET'];
  process.env['REKEY_KMS_BUDGET'] = String(rps);
  return () => {
    if (before === undefined) delete process.env['REKEY_KMS_BUDGET'];
    else process.env['REKEY_KMS_BUDGET'] = before;
  };
}

/** Seeds `n` envelope objects under a fresh key, moves nothing, and returns the old and new key. */
async function seedEnvelope(stack: Stack, bucket: string, n: number): Promise<{ oldKey: string; newKey: string }> {
  const oldKey = await createKey(stack.kms, 'budget old');
  const newKey = await createKey(stack.kms, 'budget new');
  await stack.s3.send(new CreateBucketCommand({ Bucket: bucket }));
  const envelope = createEnvelopeClient({ kms: { client: stack.kms } });
  await times(n, 16, async (i) => {
    await envelope.putObject(stack.s3, { Bucket: bucket, Key: `e/${String(i).padStart(5, '0')}`, Body: Buffer.from(`item ${i}`), keyId: oldKey, context: { app: 'budget' } });
  });
  return { oldKey, newKey };
}

function reEncrypts(stack: Stack, since: number): KmsUsageEntry[] {
  return stack.aws.usage.all().filter((e) => e.eventName === 'ReEncrypt' && e.eventTime.getTime() >= since);
}

/** The most calls in any window of `windowMs` (a sliding window over the call times). */
function maxInWindow(times: number[], windowMs: number): number {
  const t = [...times].sort((a, b) => a - b);
  let best = 0;
  let lo = 0;
  for (let hi = 0; hi < t.length; hi++) {
    while (t[hi]! - t[lo]! >= windowMs) lo++;
    best = Math.max(best, hi - lo + 1);
  }
  return best;
}

describe('the KMS budget across worker processes', () => {
  let stack: Stack | undefined;
  let restoreEnv: (() => void) | undefined;
  const extra: ChildProcess[] = [];

  afterEach(async () => {
    for (const c of extra.splice(0)) {
      if (c.exitCode === null && c.signalCode === null) {
        c.kill('SIGKILL');
        await new Promise((r) => c.once('exit', r));
      }
    }
    await stack?.stop();
    stack = undefined;
    restoreEnv?.();
  });

  afterAll(() => restoreEnv?.());

  it('three workers sharing one limiter keep their summed ReEncrypt rate within the budget', async () => {
    const budget = 40;
    restoreEnv = withBudget(budget);
    stack = await startStack({ workers: 3 });
    const { oldKey, newKey } = await seedEnvelope(stack, 'budget-three', 400);
    const since = Date.now();
    const m = await stack.api.create({ sources: [{ name: 'env', kind: 's3-envelope', bucket: 'budget-three' }], from: [oldKey], to: newKey, options: { batchSize: 10, concurrency: 16 } });
    await stack.waitForState(m.id, ['ready', 'blocked', 'paused'], 180_000);

    const st = await stack.api.status(m.id);
    expect(st.migration.state).toBe('ready');
    expect(st.totals.outcomes).toMatchObject({ reencrypted: 400, 'already-current': 0, failed: 0 });
    const calls = reEncrypts(stack, since).map((e) => e.eventTime.getTime());
    expect(calls.length).toBeGreaterThanOrEqual(400);
    // The limiter allows budget * t plus the bucket (100 ms of rate) plus one local grant per
    // process (at most rate / 20): about 40 + 4 + 3 * 2 in one second. Generous bounds:
    expect(maxInWindow(calls, 1000)).toBeLessThanOrEqual(budget * 1.5);
    expect(maxInWindow(calls, 5000)).toBeLessThanOrEqual(budget * 5 * 1.2);
  }, 240_000);

  it('AIMD lowers the fleet rate when KMS throttles it, and the throttled fraction settles', async () => {
    const budget = 60;
    const quota = 20;
    restoreEnv = withBudget(budget);
    stack = await startStack({ workers: 2 });
    const { oldKey, newKey } = await seedEnvelope(stack, 'budget-aimd', 300);
    stack.aws.controls.setQuota({ rps: quota, burst: quota });
    const since = Date.now();
    const m = await stack.api.create({ sources: [{ name: 'env', kind: 's3-envelope', bucket: 'budget-aimd' }], from: [oldKey], to: newKey, options: { batchSize: 10, concurrency: 8 } });
    const redis = createTestRedis();
    const rates: number[] = [];
    try {
      const until = Date.now() + 240_000;
      while (Date.now() < until) {
        const keys = await redis.keys(`${stack.prefix}limiter:*`);
        for (const k of keys) {
          const r = await redis.hget(k, 'rate');
          if (r !== null) rates.push(Number(r));
        }
        const cur = await stack.api.get(m.id);
        if (['ready', 'blocked', 'paused'].includes(cur.state)) break;
        await sleep(250);
      }
    } finally {
      await redis.quit();
      stack.aws.controls.setQuota(null);
    }
    const st = await stack.api.status(m.id);
    expect(st.migration.state).toBe('ready');
    // A batch retried after a throttle keeps its finished items' outcomes: none reads as already-current.
    expect(st.totals.outcomes).toMatchObject({ reencrypted: 300, 'already-current': 0, failed: 0 });
    // The shared rate was cut well below the budget by the throttles...
    expect(Math.min(...rates)).toBeLessThan(budget * 0.7);
    const all = reEncrypts(stack, since);
    const throttled = (xs: KmsUsageEntry[]) => xs.filter((e) => e.errorCode === 'ThrottlingException').length;
    // ...and settled: throttles are a minority of calls, and fewer in the second half than in the first.
    expect(throttled(all) / all.length).toBeLessThan(0.5);
    const mid = (all[0]!.eventTime.getTime() + all.at(-1)!.eventTime.getTime()) / 2;
    const first = all.filter((e) => e.eventTime.getTime() < mid);
    const second = all.filter((e) => e.eventTime.getTime() >= mid);
    expect(throttled(second) / second.length).toBeLessThanOrEqual(throttled(first) / first.length + 0.05);
  }, 300_000);

  it('workers stop taking work while Redis is unreachable, and finish the migration once it is back', async () => {
    const budget = 50;
    restoreEnv = withBudget(budget);
    stack = await startStack({ workers: 0 });
    const { oldKey, newKey } = await seedEnvelope(stack, 'budget-outage', 400);

    const proxy = await redisProxy();
    try {
      const env = { ...workerEnv(stack), REKEY_REDIS_URL: proxy.url };
      for (let i = 0; i < 2; i++) {
        extra.push(spawn(process.execPath, [require.resolve('@rekey/worker')], { env, stdio: ['ignore', 'inherit', 'inherit'] }));
      }
      const m = await stack.api.create({ sources: [{ name: 'env', kind: 's3-envelope', bucket: 'budget-outage' }], from: [oldKey], to: newKey, options: { batchSize: 10, concurrency: 8 } });
      for (let i = 0; i < 600 && (await stack.api.status(m.id)).totals.processed < 60; i++) await sleep(100);

      proxy.cut();
      const cutAt = Date.now();
      // Local tokens live at most 1 s, and items in flight finish: allow 2 s to drain.
      await sleep(2000);
      const drainedAt = Date.now();
      await sleep(4000);
      const whileCut = reEncrypts(stack, drainedAt).length;
      const beforeCut = reEncrypts(stack, 0).filter((e) => e.eventTime.getTime() < cutAt).length;
      await proxy.restore();

      await stack.waitForState(m.id, ['ready', 'blocked', 'paused'], 180_000);
      const st = await stack.api.status(m.id);
      expect(whileCut).toBe(0);
      expect(beforeCut).toBeLessThan(400);
      expect(st.migration.state).toBe('ready');
      // A batch cut mid-way runs again. Its finished items' outcomes could not be kept while Redis
      // was unreachable, so the next attempt finds them done and counts them already-current.
      expect((st.totals.outcomes['reencrypted'] ?? 0) + (st.totals.outcomes['already-current'] ?? 0)).toBe(400);
      expect(st.totals.outcomes['failed'] ?? 0).toBe(0);
      expect(extra.every((c) => c.exitCode === null)).toBe(true);
    } finally {
      await proxy.close();
    }
  }, 300_000);
});

function workerEnv(stack: Stack): NodeJS.ProcessEnv {
  return {
    ...process.env,
    REDIS_URL: redisUrl(),
    REKEY_REDIS_PREFIX: stack.prefix,
    AWS_ENDPOINT_URL: stack.aws.url,
    AWS_REGION: 'us-east-1',
    AWS_ACCESS_KEY_ID: TEST_CREDENTIALS.accessKeyId,
    AWS_SECRET_ACCESS_KEY: TEST_CREDENTIALS.secretAccessKey,
    LOG_LEVEL: process.env['E2E_LOG_LEVEL'] ?? 'error',
  };
}

/** A TCP proxy to the test Redis that the test can cut (refuse and drop every connection) and restore. */
async function redisProxy(): Promise<{ url: string; cut(): void; restore(): Promise<void>; close(): Promise<void> }> {
  const target = new URL(redisUrl());
  const port = await freePort();
  const sockets = new Set<Socket>();
  let server: Server | undefined;
  const listen = () =>
    new Promise<void>((resolve, reject) => {
      const s = createServer((client) => {
        const upstream = createConnection({ host: target.hostname, port: Number(target.port || 6379) });
        for (const x of [client, upstream]) {
          sockets.add(x);
          x.on('close', () => sockets.delete(x));
          x.on('error', () => x.destroy());
        }
        client.pipe(upstream).pipe(client);
        client.on('close', () => upstream.destroy());
        upstream.on('close', () => client.destroy());
      });
      s.once('error', reject);
      s.listen(port, '127.0.0.1', () => resolve());
      server = s;
    });
  const cut = () => {
    server?.close();
    server = undefined;
    for (const s of sockets) s.destroy();
  };
  await listen();
  return {
    url: `redis://127.0.0.1:${port}`,
    cut,
    restore: listen,
    async close() {
      cut();
    },
  };
}
