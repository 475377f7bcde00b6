import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { setTimeout as sleep } from 'node:timers/promises';
import { CreateKeyCommand, KMSClient } from '@aws-sdk/client-kms';
import pino from 'pino';
import type { Redis } from 'ioredis';
import type { Migration } from '@rekey/core';
import { awsClientConfig, cleanupRedisPrefix, createTestRedis, redisUrl, uniquePrefix, useAwsLocal, type AwsTestEndpoint } from '@rekey/testing';
import {
  accountOf,
  buildApi,
  createAuditLog,
  createEngine,
  createFleetBudget,
  createFleetMetrics,
  FLEET_AUDIT_ID,
  parseBudgetInput,
  redisKeys,
  type Engine,
  type FleetBudget,
} from '../src/index.js';

const logger = pino({ level: 'silent' });
const ARN = 'arn:aws:kms:eu-west-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab';

function migration(id: string, to: string, weight?: number): Migration {
  return {
    id,
    spec: { id, sources: [], from: [], to, options: { weight: weight ?? 1 } },
    state: 'running',
    keys: { from: [], to, aliases: {} },
    createdAt: new Date().toISOString(),
    updatedAt: new Date().toISOString(),
    round: 1,
  } as unknown as Migration; // only the fields the budget reads
}

describe('parseBudgetInput', () => {
  it('accepts an rps, a numeric string, a percentage of the quota and "default"', () => {
    expect(parseBudgetInput(600, undefined)).toBe(600);
    expect(parseBudgetInput('250.5', undefined)).toBe(250.5);
    expect(parseBudgetInput('40%', 2000)).toBe(800);
    expect(parseBudgetInput('default', 2000)).toBeNull();
    expect(parseBudgetInput(null, undefined)).toBeNull();
  });

  it('refuses zero, negatives, percentages without a quota or over 100%, and words', () => {
    expect(() => parseBudgetInput(0, undefined)).toThrow(/positive/);
    expect(() => parseBudgetInput(-5, undefined)).toThrow(/positive/);
    expect(() => parseBudgetInput('40%', undefined)).toThrow(/quotaRps/);
    expect(() => parseBudgetInput('150%', 1000)).toThrow(/at most 100%/);
    expect(() => parseBudgetInput('fast', 1000)).toThrow(/percentage/);
    expect(() => parseBudgetInput({ rps: 5 }, 1000)).toThrow(/percentage/);
  });
});

describe('accountOf', () => {
  it('bills a migration to the account and Region of its target key', () => {
    expect(accountOf(migration('m', ARN), { account: 'x', region: 'us-east-1' })).toEqual({ account: '111122223333', region: 'eu-west-1' });
  });
  it('falls back when the target is not a key ARN', () => {
    expect(accountOf(migration('m', 'alias/x'), { account: 'x', region: 'us-east-1' })).toEqual({ account: 'x', region: 'us-east-1' });
  });
});

describe('fleet budget over Redis and aws-local', () => {
  let ep: AwsTestEndpoint;
  let kms: KMSClient;
  let redis: Redis;
  const prefix = uniquePrefix('budget');
  const keys = redisKeys(prefix);
  const budgets: FleetBudget[] = [];
  let keyArn: string;

  const make = (o: Partial<Parameters<typeof createFleetBudget>[0]> = {}) => {
    const b = createFleetBudget({ redis, keys, region: ep.region, budgetRps: 10, kmsClient: kms, audit: createAuditLog(redis, keys), logger, ratePollMs: 0, ...o });
    budgets.push(b);
    return b;
  };

  beforeAll(async () => {
    ep = await useAwsLocal();
    kms = new KMSClient(awsClientConfig(ep));
    redis = createTestRedis();
    keyArn = (await kms.send(new CreateKeyCommand({ Description: 'budget test' }))).KeyMetadata!.Arn!;
  });

  afterAll(async () => {
    for (const b of budgets) b.close();
    await cleanupRedisPrefix(redis, prefix);
    await redis.quit();
    kms.destroy();
    await ep?.close();
  });

  it('gives two migrations of one account gateways over one shared limiter', () => {
    const b = make();
    const m1 = migration('share-1', keyArn);
    const m2 = migration('share-2', keyArn);
    b.gatewayFor(m1);
    b.gatewayFor(m2);
    const a = accountOf(m1, b.home);
    expect(b.limiterFor(a.account, a.region).key).toBe(keys.limiter(a.account, a.region));
    expect(b.gatewayFor(m1)).toBe(b.gatewayFor(m1));
    expect(b.gatewayFor(m1)).not.toBe(b.gatewayFor(m2));
  });

  it('a migration gateway spends tokens of the budget: calls in the first second stay near it', async () => {
    const b = make({ budgetRps: 10, accountId: '000000000001' });
    const g = b.gatewayFor(migration('rate-1', 'alias/not-an-arn'));
    const started = performance.now();
    const doneAt: number[] = [];
    const calls = Array.from({ length: 30 }, async () => {
      await g.generateDataKeyWithoutPlaintext({ keyId: keyArn });
      doneAt.push(performance.now() - started);
    });
    await sleep(1000);
    const inFirstSecond = doneAt.length;
    await Promise.all(calls);
    // 10 rps: 1 s of budget + the bucket capacity (1) + one local grant; far below 30.
    expect(inFirstSecond).toBeLessThanOrEqual(14);
    expect(doneAt).toHaveLength(30);
  });

  it('app-requested items (intake) and a migration of the same account share one budget: together they stay near it', async () => {
    const b = make({ budgetRps: 10 });
    const migrationGw = b.gatewayFor(migration('shared-with-intake', keyArn));
    const intakeGw = b.gatewayForKey(keyArn, 'intake');
    const started = performance.now();
    const doneAt: number[] = [];
    const call = async (g: typeof intakeGw) => {
      await g.generateDataKeyWithoutPlaintext({ keyId: keyArn });
      doneAt.push(performance.now() - started);
    };
    const calls = [...Array.from({ length: 15 }, () => call(migrationGw)), ...Array.from({ length: 15 }, () => call(intakeGw))];
    await sleep(1000);
    const inFirstSecond = doneAt.length;
    await Promise.all(calls);

    expect(b.gatewayForKey(keyArn, 'intake')).toBe(intakeGw);
    expect(intakeGw).not.toBe(migrationGw);
    // One limiter of 10 rps for both: 1 s of budget + capacity + one local grant each; far below 30.
    expect(inFirstSecond).toBeLessThanOrEqual(15);
    expect(doneAt).toHaveLength(30);
  });

  it('extends the lock of a held job while its items wait long for a token, and stops after release', async () => {
    const b = make({ budgetRps: 0.2, lockDurationMs: 3000, longWaitMs: 300, accountId: '000000000002' });
    const m = migration('lock-1', 'alias/none');
    const extended: [string, number][] = [];
    const release = b.holdJob(m.id, { id: 'job-1', extendLock: async (token, ms) => void extended.push([token, ms]) }, 'tok-1');
    const g = b.gatewayFor(m);
    await g.acquire(); // the bucket's one token
    const abort = new AbortController();
    const waiting = g.acquire(abort.signal).catch((e: unknown) => e);
    await sleep(1000);
    abort.abort(new Error('test over'));
    await waiting;
    release();
    expect(extended.length).toBeGreaterThanOrEqual(2);
    expect(extended[0]).toEqual(['tok-1', 3000]);
  });

  it('publishes the current rate of each limiter it draws tokens from in rekey_kms_rate_limit_rps, and not of one it only looked at', async () => {
    const metrics = createFleetMetrics({ defaultMetrics: false });
    const b = make({ budgetRps: 42, metrics, ratePollMs: 50, accountId: '000000000003' });
    await b.limiterFor('000000000003', ep.region).forMigration('m1').acquire();
    b.limiterFor('000000000009', ep.region); // e.g. shown by `rekey budget`, never used
    await sleep(300);
    const values = (await metrics.kmsRateLimit.get()).values;
    expect(values).toEqual([{ labels: { account: '000000000003', region: ep.region }, value: 42 }]);
  });

  it('set() stores an override on the limiter, moves the rate, and audits the change in the fleet log', async () => {
    const b = make({ budgetRps: 100, quotaRps: 1000, accountId: '000000000004' });
    const acct = [{ account: '000000000004', region: ep.region }];
    const st = await b.set('25%', 'test:operator', acct);
    expect(st.limiters).toEqual([{ account: '000000000004', region: ep.region, overrideRps: 250, rateRps: 250 }]);
    const cleared = await b.set('default', 'test:operator', acct);
    expect(cleared.limiters[0]).toMatchObject({ overrideRps: null, rateRps: 100 });
    const audit = createAuditLog(redis, keys);
    const entries = await audit.read(FLEET_AUDIT_ID);
    expect(entries.map((e) => e.type).slice(-2)).toEqual(['budget.set', 'budget.cleared']);
    expect(entries.at(-2)?.data).toMatchObject({ input: '25%', rps: 250, configuredRps: 100 });
    expect((await audit.verify(FLEET_AUDIT_ID)).ok).toBe(true);
  });

  it('a limiter first used after set() (a new account) takes the fleet-wide override', async () => {
    const b = make({ budgetRps: 100, accountId: '000000000006' });
    await b.set(70, 'test:operator', [{ account: '000000000006', region: ep.region }]);
    const other = make({ budgetRps: 100, accountId: '000000000007' });
    other.limiterFor('000000000008', ep.region);
    await sleep(200);
    expect((await other.state([{ account: '000000000008', region: ep.region }])).limiters[0]).toMatchObject({ overrideRps: 70, rateRps: 70 });
    await b.set('default', 'test:operator', [{ account: '000000000006', region: ep.region }]);
    const third = make({ budgetRps: 100, accountId: '000000000010' });
    third.limiterFor('000000000011', ep.region);
    await sleep(200);
    expect((await third.state([{ account: '000000000011', region: ep.region }])).limiters[0]).toMatchObject({ overrideRps: null, rateRps: 100 });
  });

  it('set() refuses bad input without touching the limiter or the audit log', async () => {
    const b = make({ budgetRps: 100, accountId: '000000000005' });
    const acct = [{ account: '000000000005', region: ep.region }];
    await expect(b.set('40%', 'test', acct)).rejects.toThrow(/quotaRps/);
    expect((await b.state(acct)).limiters[0]?.overrideRps).toBeNull();
  });
});

describe('POST /budget and GET /budget on the API', () => {
  let ep: AwsTestEndpoint;
  let engine: Engine;
  const prefix = uniquePrefix('budgetapi');
  const token = 'budget-test-token-0123456789';

  beforeAll(async () => {
    ep = await useAwsLocal();
    engine = await createEngine({
      redisUrl: redisUrl(),
      prefix,
      aws: { region: ep.region, endpoint: ep.url, credentials: awsClientConfig(ep).credentials },
      kmsBudgetRps: 300,
      kmsQuotaRps: 1000,
      accountId: '000000000009',
      logger,
    });
  });

  afterAll(async () => {
    await engine?.close();
    const r = createTestRedis();
    await cleanupRedisPrefix(r, prefix);
    await r.quit();
    await ep?.close();
  });

  it('changes the budget, shows it, and records who changed it', async () => {
    const app = await buildApi(engine, { token });
    try {
      const auth = { authorization: `Bearer ${token}` };
      const set = await app.inject({ method: 'POST', url: '/budget', headers: auth, payload: { budget: '60%' } });
      expect(set.statusCode).toBe(200);
      expect(set.json().limiters[0]).toMatchObject({ account: '000000000009', overrideRps: 600, rateRps: 600 });
      const got = await app.inject({ method: 'GET', url: '/budget', headers: auth });
      expect(got.json()).toMatchObject({ configuredRps: 300, quotaRps: 1000 });
      const bad = await app.inject({ method: 'POST', url: '/budget', headers: auth, payload: { budget: -1 } });
      expect(bad.statusCode).toBe(400);
      expect(bad.json().message).toMatch(/positive/);
      const noAuth = await app.inject({ method: 'POST', url: '/budget', payload: { budget: 5 } });
      expect(noAuth.statusCode).toBe(401);
      const entries = await engine.audit.read(FLEET_AUDIT_ID);
      expect(entries).toHaveLength(1);
      expect(entries[0]?.actor).toMatch(/^api:/);
    } finally {
      await app.close();
    }
  });
});
