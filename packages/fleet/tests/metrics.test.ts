import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { setTimeout as sleep } from 'node:timers/promises';
import { CreateKeyCommand, DecryptCommand, EncryptCommand, KMSClient } from '@aws-sdk/client-kms';
import type { FastifyInstance } from 'fastify';
import pino from 'pino';
import { MIGRATION_STATES } from '@rekey/core';
import { createKmsGateway } from '@rekey/kms';
import { awsClientConfig, cleanupRedisPrefix, createTestRedis, createTestSchema, redisUrl, uniquePrefix, useAwsLocal, type AwsTestEndpoint, type TestSchema } from '@rekey/testing';
import { buildApi, createEngine, createFleetMetrics, registerMetricsRoute, startMetricsServer, type Engine } from '../src/index.js';
import { startEngineFixture } from './engine-fixture.js';

const TOKEN = 'metrics-test-token-0123456789';

/** Parses Prometheus text into `name{labels}` -> value, labels sorted. */
function parseMetrics(text: string): Map<string, number> {
  const out = new Map<string, number>();
  for (const line of text.split('\n')) {
    if (!line || line.startsWith('#')) continue;
    const m = /^([a-zA-Z_:][\w:]*)(\{(.*)\})? (\S+)$/.exec(line);
    if (!m) continue;
    const labels = m[3] ? [...m[3].matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)].map((l) => `${l[1]}="${l[2]}"`).sort().join(',') : '';
    out.set(labels ? `${m[1]}{${labels}}` : m[1]!, Number(m[4]));
  }
  return out;
}

const series = (name: string, labels: Record<string, string> = {}) => {
  const l = Object.entries(labels).map(([k, v]) => `${k}="${v}"`).sort().join(',');
  return l ? `${name}{${l}}` : name;
};

describe('metrics after a known migration (engine in-process, aws-local, Redis, Postgres)', () => {
  let ep: AwsTestEndpoint;
  let engine: Engine;
  let api: FastifyInstance;
  let kms: KMSClient;
  let otherKms: KMSClient;
  let db: TestSchema;
  let coordinator: ReturnType<Engine['startCoordinator']>;
  let worker: ReturnType<Engine['startWorker']>;
  const prefix = uniquePrefix('metrics');
  let oldKey: string;
  let newKey: string;
  let id: string;
  let scraped: Map<string, number>;
  let decryptedAt: number;

  beforeAll(async () => {
    ep = await useAwsLocal();
    kms = new KMSClient(awsClientConfig(ep));
    otherKms = new KMSClient(awsClientConfig(ep, { accessKeyId: 'AKIAOTHERAPP000000001', secretAccessKey: 'other-secret-not-a-real-key' }));
    db = await createTestSchema('metrics');
    engine = await createEngine({
      redisUrl: redisUrl(),
      prefix,
      aws: { region: ep.region, endpoint: ep.url, credentials: awsClientConfig(ep).credentials },
      logger: pino({ level: 'silent' }),
      kmsBudgetRps: 200,
      kmsConcurrency: 3,
    });
    api = await buildApi(engine, { token: TOKEN, extend: (a) => registerMetricsRoute(a, engine) });
    oldKey = (await kms.send(new CreateKeyCommand({ Description: 'old' }))).KeyMetadata!.Arn!;
    newKey = (await kms.send(new CreateKeyCommand({ Description: 'new' }))).KeyMetadata!.Arn!;
    // 12 rows under the old key and 1 already under the new one: 3 batches of 5.
    await db.pool.query('CREATE TABLE secrets (id int PRIMARY KEY, secret bytea NOT NULL)');
    for (let i = 1; i <= 13; i++) {
      const ct = (await kms.send(new EncryptCommand({ KeyId: i === 13 ? newKey : oldKey, Plaintext: Buffer.from(`secret ${i}`) }))).CiphertextBlob!;
      await db.pool.query('INSERT INTO secrets VALUES ($1, $2)', [i, Buffer.from(ct)]);
    }
    coordinator = engine.startCoordinator({ tickMs: 100 });
    worker = engine.startWorker({ concurrency: 2 });
    const m = await engine.createMigration(
      { sources: [{ name: 'rows', kind: 'postgres', schema: db.schema, table: 'secrets', primaryKey: ['id'], column: 'secret' }], from: [oldKey], to: newKey, options: { batchSize: 5 } },
      'test',
    );
    id = m.id;
    for (let i = 0; i < 600 && !['ready', 'blocked', 'paused'].includes((await engine.get(id)).state); i++) await sleep(100);
    // Someone else reads old data after verification started: a warning and a last-use timestamp.
    const blob = (await kms.send(new EncryptCommand({ KeyId: oldKey, Plaintext: Buffer.from('legacy') }))).CiphertextBlob!;
    decryptedAt = Date.now();
    await otherKms.send(new DecryptCommand({ CiphertextBlob: blob }));
    await coordinator.checkUsage();
    // The limiter's rate gauge is polled once a second.
    await sleep(1200);
    const res = await api.inject({ method: 'GET', url: '/metrics', headers: { authorization: `Bearer ${TOKEN}` } });
    expect(res.statusCode).toBe(200);
    expect(res.headers['content-type']).toMatch(/^text\/plain; version=0\.0\.4/);
    scraped = parseMetrics(res.body);
  });

  afterAll(async () => {
    await worker?.close();
    await coordinator?.close();
    await api?.close();
    await engine?.close();
    const r = createTestRedis();
    await cleanupRedisPrefix(r, prefix);
    await r.quit();
    await db?.drop();
    kms?.destroy();
    otherKms?.destroy();
    await ep?.close();
  });

  it('reaches ready with the known outcomes', async () => {
    const st = await engine.status(id);

    expect(st.migration.state).toBe('ready');
    expect(st.totals.outcomes).toMatchObject({ reencrypted: 12, 'already-current': 1, failed: 0 });
  });

  it('needs the API token', async () => {
    const res = await api.inject({ method: 'GET', url: '/metrics' });

    expect(res.statusCode).toBe(401);
  });

  it('counts items by outcome and discovered items per source', () => {
    expect(scraped.get(series('rekey_items_total', { migration: id, source: 'rows', outcome: 'reencrypted' }))).toBe(12);
    expect(scraped.get(series('rekey_items_total', { migration: id, source: 'rows', outcome: 'already-current' }))).toBe(1);
    expect(scraped.has(series('rekey_items_total', { migration: id, source: 'rows', outcome: 'failed' }))).toBe(false);
    expect(scraped.get(series('rekey_items_discovered_total', { migration: id, source: 'rows' }))).toBe(13);
  });

  it('exports progress 1, ETA 0, the state one-hot and the gate', () => {
    expect(scraped.get(series('rekey_migration_progress_ratio', { migration: id }))).toBe(1);
    expect(scraped.get(series('rekey_migration_eta_seconds', { migration: id }))).toBe(0);
    for (const state of MIGRATION_STATES) {
      expect(scraped.get(series('rekey_migration_state', { migration: id, state }))).toBe(state === 'ready' ? 1 : 0);
    }
    expect(scraped.get(series('rekey_gate_ready', { migration: id }))).toBe(1);
  });

  it('exports batches by queue state and batch durations (3 re-encrypt + 3 verify batches)', () => {
    expect(scraped.get(series('rekey_batches', { state: 'completed' }))).toBe(6);
    expect(scraped.get(series('rekey_batches', { state: 'waiting' }))).toBe(0);
    expect(scraped.get(series('rekey_batches', { state: 'active' }))).toBe(0);
    expect(scraped.get(series('rekey_batches', { state: 'failed' }))).toBe(0);
    expect(scraped.get('rekey_batch_duration_seconds_count')).toBe(6);
    expect(scraped.get(series('rekey_batch_duration_seconds_bucket', { le: '+Inf' }))).toBe(6);
  });

  it('counts KMS requests as aws-local saw them, with durations and no throttling', () => {
    const reEncrypts = ep.local!.controls.getCounters()['kms:ReEncrypt']?.calls ?? 0;
    const byOutcome = [...scraped].filter(([k]) => k.startsWith('rekey_kms_requests_total{operation="ReEncrypt"'));

    expect(reEncrypts).toBeGreaterThanOrEqual(12);
    // Every call the fleet made is counted once, whatever its outcome (an item-level refusal is `item`).
    expect(byOutcome.reduce((n, [, v]) => n + v, 0)).toBe(reEncrypts);
    expect(scraped.get(series('rekey_kms_requests_total', { operation: 'ReEncrypt', outcome: 'ok' }))).toBeGreaterThanOrEqual(12);
    expect(scraped.get(series('rekey_kms_request_duration_seconds_count', { operation: 'ReEncrypt' }))).toBe(reEncrypts);
    expect(scraped.get('rekey_kms_throttled_total')).toBe(0);
  });

  it('exports the limiter Redis round trips and granted tokens: every cryptographic KMS call had a token, in fewer round trips than calls', () => {
    const calls = scraped.get('rekey_kms_limiter_grant_calls_total') ?? 0;
    const tokens = scraped.get('rekey_kms_limiter_tokens_granted_total') ?? 0;
    // Cryptographic operations take tokens (they share the quota); DescribeKey does not.
    const kmsCalls = [...scraped].filter(([k]) => /^rekey_kms_requests_total\{operation="(ReEncrypt|Decrypt|Encrypt|GenerateDataKey\w*)"/.test(k)).reduce((n, [, v]) => n + v, 0);

    expect(calls).toBeGreaterThan(0);
    expect(tokens).toBeGreaterThanOrEqual(kmsCalls);
    expect(calls).toBeLessThan(kmsCalls);
  });

  it('exports the KMS in-flight limit, idle now, and the time the migration\'s calls spent in flight through it', () => {
    const kmsCalls = scraped.get(series('rekey_kms_request_duration_seconds_count', { operation: 'ReEncrypt' })) ?? 0;
    const kmsSeconds = scraped.get(series('rekey_kms_request_duration_seconds_sum', { operation: 'ReEncrypt' })) ?? 0;

    expect(scraped.get('rekey_kms_calls_in_flight_limit')).toBe(3);
    expect(scraped.get('rekey_kms_calls_in_flight')).toBe(0);
    expect(scraped.get('rekey_kms_calls_waiting_for_slot')).toBe(0);
    // The migration's gateways share the engine's slots: their calls' time in flight is counted there.
    expect(kmsCalls).toBeGreaterThanOrEqual(12);
    expect(scraped.get('rekey_kms_calls_in_flight_seconds_total')).toBeGreaterThanOrEqual(kmsSeconds * 0.9);
  });

  it('exports the rate of the one limiter the migration drew from, within the budget, and no other', async () => {
    const account = oldKey.split(':')[4]!;
    const state = await engine.budget!.state([{ account, region: ep.region }]);
    const rate = state.limiters.find((l) => l.account === account)!.rateRps;

    expect(rate).toBeGreaterThan(0);
    expect(rate).toBeLessThanOrEqual(200);
    expect(scraped.get(series('rekey_kms_rate_limit_rps', { account, region: ep.region }))).toBe(rate);
    expect([...scraped.keys()].filter((k) => k.startsWith('rekey_kms_rate_limit_rps'))).toHaveLength(1);
  });

  it('exports the last Decrypt of the old key by another caller, and keeps the gate green with a warning', async () => {
    const t = scraped.get(series('rekey_old_key_last_use_timestamp_seconds', { key: oldKey, operation: 'Decrypt' }));

    expect(t).toBeGreaterThanOrEqual(Math.floor(decryptedAt / 1000) - 1);
    expect(t).toBeLessThanOrEqual(Date.now() / 1000);
    const gate = await engine.gate(id);
    expect(gate.ready).toBe(true);
    expect(gate.warnings.join('\n')).toContain('AKIAOTHERAPP000000001');
  });

  it("exports Node's default process metrics", () => {
    expect(scraped.get('process_cpu_seconds_total')).toBeGreaterThan(0);
    expect(scraped.get('nodejs_heap_size_used_bytes')).toBeGreaterThan(0);
  });

  it('serves a worker registry on its own port, bound to 127.0.0.1, with only GET /metrics', async () => {
    const server = await startMetricsServer({ metrics: engine.metrics, port: 0 });
    try {
      const ok = await fetch(`http://127.0.0.1:${server.port}/metrics`);
      const body = parseMetrics(await ok.text());
      const missing = await fetch(`http://127.0.0.1:${server.port}/other`);

      expect(ok.status).toBe(200);
      expect(body.get(series('rekey_items_total', { migration: id, source: 'rows', outcome: 'reencrypted' }))).toBe(12);
      expect(missing.status).toBe(404);
    } finally {
      await server.close();
    }
  });
});

describe('KMS throttling metrics', () => {
  it('counts each ThrottlingException the gateway sees, and the calls by outcome', async () => {
    const ep = await useAwsLocal();
    const client = new KMSClient({ ...awsClientConfig(ep), maxAttempts: 1 });
    try {
      const metrics = createFleetMetrics({ defaultMetrics: false });
      const key = (await client.send(new CreateKeyCommand({}))).KeyMetadata!.Arn!;
      const blob = (await client.send(new EncryptCommand({ KeyId: key, Plaintext: Buffer.from('x') }))).CiphertextBlob!;
      const gateway = createKmsGateway({ client }, { metrics: metrics.kmsHook });
      ep.local!.controls.setQuota({ rps: 0.5, burst: 1 });
      ep.local!.controls.resetCounters();

      const results = await Promise.allSettled([1, 2, 3].map(() => gateway.reEncrypt({ ciphertextBlob: blob, destinationKeyId: key })));

      const seen = ep.local!.controls.getCounters()['kms:ReEncrypt']!;
      const text = parseMetrics(await metrics.registry.metrics());
      expect(seen.throttled).toBeGreaterThan(0);
      expect(text.get('rekey_kms_throttled_total')).toBe(seen.throttled);
      expect(text.get(series('rekey_kms_requests_total', { operation: 'ReEncrypt', outcome: 'ok' }))).toBe(results.filter((r) => r.status === 'fulfilled').length);
      expect(text.get(series('rekey_kms_requests_total', { operation: 'ReEncrypt', outcome: 'retryable' }))).toBe(seen.throttled);
    } finally {
      client.destroy();
      await ep.close();
    }
  });

  it("the engine's KMS client does not retry on its own: every request KMS throttled reached the gateway, its limiter and AIMD", async () => {
    // The SDK retries a ThrottlingException twice by default, without a limiter token and before
    // AIMD hears of it; the gateway's retry is the only one.
    const f = await startEngineFixture('kms-sdk-retries', { db: true, engine: { kmsBudgetRps: 20 } });
    try {
      const [oldKey, newKey] = [await f.newKey('old'), await f.newKey('new')];
      await f.db!.pool.query('CREATE TABLE blobs (id int PRIMARY KEY, secret bytea NOT NULL)');
      for (let id = 1; id <= 8; id++) {
        const ct = (await f.kms.send(new EncryptCommand({ KeyId: oldKey, Plaintext: Buffer.from(`s${id}`) }))).CiphertextBlob!;
        await f.db!.pool.query('INSERT INTO blobs VALUES ($1, $2)', [id, Buffer.from(ct)]);
      }
      f.ep.local!.controls.setQuota({ rps: 5, burst: 1 });
      f.ep.local!.controls.resetCounters();

      const m = await f.engine.createMigration({ sources: [{ name: 'rows', kind: 'postgres', schema: f.db!.schema, table: 'blobs', primaryKey: ['id'], column: 'secret' }], from: [oldKey], to: newKey }, 'test');
      await f.waitUntil(m.id, (x) => ['ready', 'blocked'].includes(x.state), 'settling');

      const seen = f.ep.local!.controls.getCounters()['kms:ReEncrypt']!;
      const text = parseMetrics(await f.engine.metrics.registry.metrics());
      const viaGateway = ['ok', 'retryable', 'item', 'fatal'].reduce((n, outcome) => n + (text.get(series('rekey_kms_requests_total', { operation: 'ReEncrypt', outcome })) ?? 0), 0);
      expect(seen.throttled).toBeGreaterThan(0);
      expect(text.get('rekey_kms_throttled_total')).toBe(seen.throttled);
      expect(viaGateway).toBe(seen.calls);
      // A batch retried after its items ran out of attempts records the rows its first run moved as already-current.
      const { outcomes } = (await f.engine.status(m.id)).totals;
      expect((outcomes['reencrypted'] ?? 0) + (outcomes['already-current'] ?? 0)).toBe(8);
      expect(outcomes['failed']).toBe(0);
    } finally {
      await f.close();
    }
  });
});
