import { createServer, connect, type Server, type Socket } from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import { RetryableError } from '@rekey/core';
import { cleanupRedisPrefix, createTestRedis, redisUrl, uniquePrefix } from '@rekey/testing';
import { Redis } from 'ioredis';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { KmsGatewayError } from '../src/errors.js';
import { createRedisLimiter, type RateLimiter, type RedisLimiter } from '../src/limiter.js';
import { capacity } from '../src/limiter-math.js';

let admin: Redis;
let prefix: string;
const opened: Redis[] = [];
const limiters: RedisLimiter[] = [];

function connection(): Redis {
  const r = createTestRedis();
  opened.push(r);
  return r;
}

function limiter(opts: Omit<Parameters<typeof createRedisLimiter>[0], 'redis' | 'key'> & { redis?: Redis; key?: string }): RedisLimiter {
  const l = createRedisLimiter({ redis: opts.redis ?? connection(), key: opts.key ?? `${prefix}limiter`, ...opts });
  limiters.push(l);
  return l;
}

/** Runs `workers` loops of acquire() against each limiter until `ms` pass; returns tokens per limiter and the span. */
async function saturate(ls: RateLimiter[], ms: number, workers = 8): Promise<{ counts: number[]; seconds: number }> {
  const ac = new AbortController();
  const counts = ls.map(() => 0);
  const t0 = performance.now();
  const loops = ls.flatMap((l, i) =>
    Array.from({ length: workers }, async () => {
      for (;;) {
        try {
          await l.acquire(ac.signal);
        } catch (err) {
          if (ac.signal.aborted) return;
          throw err;
        }
        if (ac.signal.aborted) return;
        counts[i] = (counts[i] ?? 0) + 1;
      }
    }),
  );
  await sleep(ms);
  ac.abort();
  const seconds = (performance.now() - t0) / 1000;
  await Promise.all(loops);
  return { counts, seconds };
}

beforeEach(() => {
  admin = createTestRedis();
  prefix = uniquePrefix('kms-limiter');
});

afterEach(async () => {
  for (const l of limiters.splice(0)) l.close();
  await cleanupRedisPrefix(admin, prefix);
  for (const r of opened.splice(0)) r.disconnect();
  admin.disconnect();
});

describe('fleet-wide budget', () => {
  it('a burst never gets more than budget * t + burst tokens', async () => {
    const budget = 200;
    const l = limiter({ budget, burstMs: 100 });
    const { counts, seconds } = await saturate([l], 1500, 32);
    const got = counts[0] ?? 0;
    // Bucket capacity plus one grant held locally.
    const bound = budget * seconds + capacity(budget, 100) + 10;
    expect(got).toBeLessThanOrEqual(bound);
    expect(got).toBeGreaterThan(budget * seconds * 0.5);
  });

  it('three processes sharing one key stay within the budget summed', async () => {
    const budget = 300;
    const ls = [limiter({ budget }), limiter({ budget }), limiter({ budget })];
    const { counts, seconds } = await saturate(ls, 2000);
    const total = counts.reduce((a, b) => a + b, 0);
    expect(total).toBeLessThanOrEqual(budget * seconds + capacity(budget, 100) + 3 * 15);
    expect(total).toBeGreaterThan(budget * seconds * 0.5);
    for (const c of counts) expect(c).toBeGreaterThan(0);
  });

  it('keeps well under one Redis command per token when busy', async () => {
    const redis = connection();
    let commands = 0;
    // Counted on this connection only: the server-wide stats include other tests' scripts.
    for (const name of ['evalsha', 'eval', 'hmget'] as const) {
      const original = redis[name].bind(redis) as (...args: unknown[]) => unknown;
      (redis as unknown as Record<string, unknown>)[name] = (...args: unknown[]) => {
        commands++;
        return original(...args);
      };
    }
    // A budget far above what one process can take keeps tokens plentiful, so the count does not
    // depend on how fast this (shared, noisy) machine runs: every grant is a full batch.
    const l = limiter({ redis, budget: 20_000 });
    const { counts } = await saturate([l], 1000, 32);
    expect(counts[0]).toBeGreaterThan(200);
    expect(commands).toBeGreaterThan(0);
    expect(commands / (counts[0] ?? 1)).toBeLessThan(0.3);
  });
});

describe('grant batching while the budget binds', () => {
  it('two processes wanting more than the budget still ask Redis once per many tokens, not once per token', async () => {
    // Each "process" (its own connection and limiter) has far more callers than the budget serves.
    const key = `${prefix}batching`;
    const ls = [limiter({ redis: connection(), key, budget: 400 }), limiter({ redis: connection(), key, budget: 400 })];
    const { counts, seconds } = await saturate(ls, 1500, 64);
    const served = counts.reduce((a, b) => a + b, 0);
    const calls = ls.reduce((n, l) => n + l.stats().grantCalls, 0);
    const granted = ls.reduce((n, l) => n + l.stats().tokensGranted, 0);

    // The budget binds: at most budget * t plus the bucket and one grant per process.
    expect(served).toBeLessThanOrEqual(400 * seconds + capacity(400, 100) + 2 * 20);
    expect(served).toBeGreaterThan(400 * seconds * 0.5);
    expect(granted).toBeGreaterThanOrEqual(served);
    // Before batching waits, this was about one round trip per token.
    expect(calls / served).toBeLessThan(0.25);
  });
});

describe('AIMD', () => {
  it('onThrottle cuts the shared rate once per window however many throttles arrive', async () => {
    const a = limiter({ budget: 100, aimd: { decrease: 0.5, windowMs: 60_000 } });
    const b = limiter({ budget: 100, aimd: { decrease: 0.5, windowMs: 60_000 } });
    await a.acquire();
    for (let i = 0; i < 30; i++) {
      const l = i % 2 === 0 ? a : b;
      l.onThrottle();
      await l.acquire();
    }
    expect(await a.currentRate()).toBe(50);
    expect(await b.currentRate()).toBe(50);
  });

  it('cuts again in the next window', async () => {
    const l = limiter({ budget: 100, aimd: { decrease: 0.5, windowMs: 200 } });
    l.onThrottle();
    await l.acquire();
    expect(await l.currentRate()).toBe(50);
    await sleep(400);
    l.onThrottle();
    await l.acquire();
    expect(await l.currentRate()).toBe(25);
  });

  it('never cuts below minRps', async () => {
    const l = limiter({ budget: 100, minRps: 30, aimd: { decrease: 0.1, windowMs: 0 } });
    for (let i = 0; i < 5; i++) {
      l.onThrottle();
      await l.acquire();
    }
    expect(await l.currentRate()).toBe(30);
  });

  it('onSuccess raises the rate back to the budget and no further', async () => {
    const l = limiter({ budget: 100, aimd: { decrease: 0.5, increaseRps: 400, windowMs: 50 } });
    l.onThrottle();
    await l.acquire();
    const low = await l.currentRate();
    expect(low).toBe(50);
    const seen: number[] = [];
    for (let i = 0; i < 2000 && (seen.at(-1) ?? 0) < 100; i++) {
      l.onSuccess();
      await l.acquire();
      seen.push(await l.currentRate());
    }
    expect(seen.at(-1)).toBe(100);
    expect(Math.max(...seen)).toBeLessThanOrEqual(100);
    expect(seen.some((r) => r > 50 && r < 100)).toBe(true);
  });

  it('setBudget changes the rate for every process on the key', async () => {
    const a = limiter({ budget: 100 });
    const b = limiter({ budget: 100 });
    await a.setBudget(20);
    expect(await b.currentRate()).toBe(20);
    const { counts, seconds } = await saturate([b], 1000);
    expect(counts[0]).toBeLessThanOrEqual(20 * seconds + capacity(20, 100) + 1);
    await b.setBudget(null);
    expect(await a.currentRate()).toBe(100);
  });

  it('rejects a budget that is not a positive number', async () => {
    const l = limiter({ budget: 100 });
    await expect(l.setBudget(0)).rejects.toThrow(KmsGatewayError);
    expect(() => limiter({ budget: () => -1 })).toThrow(/positive rps/);
  });

  it('rejects AIMD settings under which the rate could never recover', () => {
    expect(() => limiter({ budget: 100, aimd: { increaseRps: 0, increasePercent: 0 } })).toThrow(/never recover/);
    expect(() => limiter({ budget: 100, aimd: { increasePercent: 101 } })).toThrow(/percentage from 0 to 100/);
    expect(() => limiter({ budget: 100, aimd: { increaseRps: 0, increasePercent: 2 } })).not.toThrow();
  });
});

describe('fairness between migrations', () => {
  it('two busy migrations share the rate by weight', async () => {
    const budget = 300;
    const base1 = limiter({ budget });
    const base2 = limiter({ budget });
    const m1 = base1.forMigration('m-one', 1);
    const m2 = base2.forMigration('m-three', 3);
    const { counts, seconds } = await saturate([m1, m2], 2500);
    const [one = 0, three = 0] = counts;
    expect(one + three).toBeLessThanOrEqual(budget * seconds + capacity(budget, 100) * 2 + 30);
    expect(three / Math.max(1, one)).toBeGreaterThan(1.5);
    expect(three / Math.max(1, one)).toBeLessThan(6);
  });

  it('a migration alone gets most of the budget (work-conserving)', async () => {
    const budget = 300;
    const l = limiter({ budget });
    const quiet = l.forMigration('quiet', 1);
    await quiet.acquire();
    const busy = l.forMigration('busy', 1);
    const { counts, seconds } = await saturate([busy], 2000);
    expect(counts[0]).toBeGreaterThan(budget * seconds * 0.6);
  });

  it('forMigration returns the same view for the same id', () => {
    const l = limiter({ budget: 10 });
    expect(l.forMigration('x', 1)).toBe(l.forMigration('x', 2));
  });
});

describe('waiting', () => {
  it('an abort rejects a waiting acquire with the signal reason', async () => {
    const l = limiter({ budget: 1, minRps: 1 });
    await l.acquire();
    const ac = new AbortController();
    const waiting = l.acquire(ac.signal);
    const reason = new Error('job cancelled');
    ac.abort(reason);
    await expect(waiting).rejects.toBe(reason);
  });

  it('onLongWait is told while an acquire waits', async () => {
    const waits: number[] = [];
    const l = limiter({ budget: 1, minRps: 1, longWaitMs: 50, onLongWait: (i) => waits.push(i.waitedMs) });
    await l.acquire();
    await l.acquire();
    expect(waits.length).toBeGreaterThan(0);
  });

  it('close rejects waiting acquires and refuses new ones', async () => {
    const l = limiter({ budget: 1, minRps: 1 });
    await l.acquire();
    const waiting = l.acquire();
    l.close();
    await expect(waiting).rejects.toMatchObject({ code: 'limiter-closed' });
    await expect(l.acquire()).rejects.toBeInstanceOf(KmsGatewayError);
  });

  it('a wrong kind of Redis client throws', () => {
    expect(() => createRedisLimiter({ redis: {} as Redis, key: 'k', budget: 1 })).toThrow(/ioredis Redis client/);
  });
});

describe('Redis outage', () => {
  it('acquire rejects with RetryableError when Redis is unreachable (not unlimited)', async () => {
    const dead = new Redis({ host: '127.0.0.1', port: 1, maxRetriesPerRequest: 1, retryStrategy: () => 100 });
    dead.on('error', () => undefined);
    opened.push(dead);
    const l = limiter({ redis: dead, budget: 1000, redisTimeoutMs: 500 });
    const err = await l.acquire().catch((e: unknown) => e);
    expect(err).toBeInstanceOf(RetryableError);
    expect(err).toMatchObject({ code: 'redis-unavailable' });
  });

  it("a limiter key Redis refuses (wrong type) is limiter-failed, not an outage to wait out", async () => {
    const r = connection();
    const key = `${prefix}wrongtype`;
    await r.set(key, 'not a hash');
    const l = limiter({ redis: r, key, budget: 1000 });
    const err = await l.acquire().catch((e: unknown) => e);
    expect(err).toBeInstanceOf(RetryableError);
    expect(err).toMatchObject({ code: 'limiter-failed', message: expect.stringMatching(/WRONGTYPE/) });
  });

  it('acquire stops while Redis is away and works again when it is back', async () => {
    const proxy = await startProxy();
    try {
      const r = new Redis({ host: '127.0.0.1', port: proxy.port, maxRetriesPerRequest: 1, retryStrategy: () => 50 });
      r.on('error', () => undefined);
      opened.push(r);
      const l = limiter({ redis: r, budget: 1000, grantSize: 1, redisTimeoutMs: 500 });
      await l.acquire();
      await proxy.stop();
      const err = await l.acquire().catch((e: unknown) => e);
      expect(err).toMatchObject({ code: 'redis-unavailable' });
      await proxy.start();
      let ok = false;
      for (let i = 0; i < 100 && !ok; i++) {
        ok = await l.acquire().then(
          () => true,
          () => false,
        );
        if (!ok) await sleep(50);
      }
      expect(ok).toBe(true);
    } finally {
      await proxy.stop();
    }
  });
});

/** A TCP proxy to the test Redis that can be stopped and started on the same port. */
async function startProxy(): Promise<{ port: number; stop(): Promise<void>; start(): Promise<void> }> {
  const target = new URL(redisUrl());
  const sockets = new Set<Socket>();
  let server: Server | undefined;
  let port = 0;
  const start = () =>
    new Promise<void>((resolve, reject) => {
      const s = createServer((client) => {
        const upstream = connect(Number(target.port || 6379), target.hostname);
        sockets.add(client).add(upstream);
        client.pipe(upstream).pipe(client);
        const drop = () => {
          client.destroy();
          upstream.destroy();
        };
        client.on('error', drop).on('close', drop);
        upstream.on('error', drop).on('close', drop);
      });
      s.once('error', reject);
      s.listen(port, '127.0.0.1', () => {
        const addr = s.address();
        if (addr && typeof addr === 'object') port = addr.port;
        server = s;
        resolve();
      });
    });
  const stop = () =>
    new Promise<void>((resolve) => {
      for (const s of sockets) s.destroy();
      sockets.clear();
      if (!server) return resolve();
      const s = server;
      server = undefined;
      s.close(() => resolve());
    });
  await start();
  return { get port() { return port; }, stop, start };
}
