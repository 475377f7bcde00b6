import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { setTimeout as sleep } from 'node:timers/promises';
import { CreateKeyCommand, DecryptCommand, EncryptCommand, GenerateDataKeyCommand, KMSClient, ReEncryptCommand } from '@aws-sdk/client-kms';
import { CloudTrailClient, type Event as TrailEvent } from '@aws-sdk/client-cloudtrail';
import pino from 'pino';
import { parseMigrationSpec, type Migration } from '@rekey/core';
import { CreateBucketCommand, PutObjectCommand } from '@aws-sdk/client-s3';
import { awsClientConfig, TEST_CREDENTIALS, uniqueName, useAwsLocal, type AwsTestEndpoint } from '@rekey/testing';
import { startEngineFixture } from './engine-fixture.js';
import { classifyEvent, coverStretch, createRateGate, createUsageMonitor, mergeRows, principalMatcher } from '../src/usage-monitor.js';
import { createFleetMetrics } from '../src/metrics.js';
import { computeGate, type OldKeyUsage } from '../src/gate.js';

const OLD = 'arn:aws:kms:us-east-1:000000000000:key/11111111-1111-4111-8111-111111111111';
const NEW = 'arn:aws:kms:us-east-1:000000000000:key/22222222-2222-4222-8222-222222222222';
const FLEET = new Set(['AKIAFLEET00000000001']);

function trailEvent(name: string, accessKeyId: string, extra: { invokedBy?: string; params?: Record<string, unknown>; resources?: string[]; errorCode?: string } = {}): TrailEvent {
  const resources = extra.resources ?? [OLD];
  return {
    EventId: `ev-${name}-${accessKeyId}`,
    EventName: name,
    AccessKeyId: accessKeyId,
    EventTime: new Date('2026-01-01T10:00:05Z'),
    Username: accessKeyId,
    Resources: resources.map((r) => ({ ResourceType: 'AWS::KMS::Key', ResourceName: r })),
    CloudTrailEvent: JSON.stringify({
      userIdentity: { type: 'IAMUser', arn: `arn:aws:iam::000000000000:user/${accessKeyId}`, accessKeyId, ...(extra.invokedBy ? { invokedBy: extra.invokedBy } : {}) },
      eventName: name,
      requestParameters: extra.params ?? {},
      ...(extra.errorCode ? { errorCode: extra.errorCode, errorMessage: 'denied' } : {}),
    }),
  };
}

describe('classifyEvent', () => {
  it('treats the fleet access key as the fleet, also when S3 calls KMS on its behalf', () => {
    expect(classifyEvent(trailEvent('ReEncrypt', 'AKIAFLEET00000000001', { params: { destinationKeyId: NEW }, resources: [OLD, NEW] }), OLD, FLEET).kind).toBe('fleet');
    expect(classifyEvent(trailEvent('Decrypt', 'AKIAFLEET00000000001', { invokedBy: 's3.amazonaws.com' }), OLD, FLEET).kind).toBe('fleet');
  });

  it('makes Encrypt and GenerateDataKey* by another caller blockers, naming the caller', () => {
    for (const op of ['Encrypt', 'GenerateDataKey', 'GenerateDataKeyWithoutPlaintext', 'GenerateDataKeyPair']) {
      const use = classifyEvent(trailEvent(op, 'AKIAOTHERAPP000000001'), OLD, FLEET);
      expect(use.kind).toBe('blocker');
      expect(use.caller).toBe('arn:aws:iam::000000000000:user/AKIAOTHERAPP000000001 (access key AKIAOTHERAPP000000001)');
    }
  });

  it('makes Decrypt by another caller a reader and names the service that called on its behalf', () => {
    const use = classifyEvent(trailEvent('Decrypt', 'AKIAOTHERAPP000000001', { invokedBy: 's3.amazonaws.com' }), OLD, FLEET);

    expect(use.kind).toBe('reader');
    expect(use.caller).toContain('via s3.amazonaws.com');
  });

  it('tells ReEncrypt to the old key (blocker) from ReEncrypt away from it (reader)', () => {
    const toOld = classifyEvent(trailEvent('ReEncrypt', 'AKIAOTHERAPP000000001', { params: { destinationKeyId: 'alias/legacy' }, resources: [NEW, OLD] }), OLD, FLEET);
    const fromOld = classifyEvent(trailEvent('ReEncrypt', 'AKIAOTHERAPP000000001', { params: { destinationKeyId: NEW }, resources: [OLD, NEW] }), OLD, FLEET);

    expect([toOld.kind, toOld.operation]).toEqual(['blocker', 'ReEncrypt (to old key)']);
    expect([fromOld.kind, fromOld.operation]).toEqual(['reader', 'ReEncrypt (from old key)']);
  });

  it('ignores failed calls and calls that are not cryptographic', () => {
    expect(classifyEvent(trailEvent('Encrypt', 'AKIAOTHERAPP000000001', { errorCode: 'DisabledException' }), OLD, FLEET).kind).toBe('ignore');
    expect(classifyEvent(trailEvent('DescribeKey', 'AKIAOTHERAPP000000001'), OLD, FLEET).kind).toBe('ignore');
  });
});

describe('fleet principals (workers under an IAM role, whose access keys change every session)', () => {
  /** A KMS event of an assumed-role session, as CloudTrail writes it. */
  function roleEvent(name: string, role: string, session: string): TrailEvent {
    const accessKeyId = `ASIA${session.toUpperCase().padEnd(16, '0').slice(0, 16)}`;
    return {
      EventId: `ev-${name}-${role}-${session}`,
      EventName: name,
      AccessKeyId: accessKeyId,
      EventTime: new Date('2026-01-01T10:00:05Z'),
      Resources: [{ ResourceType: 'AWS::KMS::Key', ResourceName: OLD }],
      CloudTrailEvent: JSON.stringify({
        userIdentity: {
          type: 'AssumedRole',
          arn: `arn:aws:sts::000000000000:assumed-role/${role}/${session}`,
          accessKeyId,
          sessionContext: { sessionIssuer: { type: 'Role', arn: `arn:aws:iam::000000000000:role/${role}` } },
        },
        eventName: name,
        requestParameters: {},
      }),
    };
  }

  it('counts any session of a configured role as the fleet, and other roles as callers', () => {
    const fleet = principalMatcher(['arn:aws:iam::000000000000:role/rekey-worker']);

    expect(classifyEvent(roleEvent('Encrypt', 'rekey-worker', 'i-0abc'), OLD, FLEET, fleet).kind).toBe('fleet');
    expect(classifyEvent(roleEvent('Decrypt', 'rekey-worker', 'i-0def'), OLD, FLEET, fleet).kind).toBe('fleet');
    const other = classifyEvent(roleEvent('Encrypt', 'billing-app', 'i-0abc'), OLD, FLEET, fleet);
    expect(other.kind).toBe('blocker');
    expect(other.caller).toContain('arn:aws:sts::000000000000:assumed-role/billing-app/i-0abc');
    // Without the setting, the role's calls are someone else's: a session's access key is not the coordinator's.
    expect(classifyEvent(roleEvent('Encrypt', 'rekey-worker', 'i-0abc'), OLD, FLEET).kind).toBe('blocker');
  });

  it('matches patterns with * and nothing else: no regex injection, no prefix match', () => {
    const m = principalMatcher(['arn:aws:iam::000000000000:role/rekey-*', 'arn:aws:sts::000000000000:assumed-role/ops/rekey.cli']);

    expect(m('arn:aws:iam::000000000000:role/rekey-worker')).toBe(true);
    expect(m('arn:aws:sts::000000000000:assumed-role/ops/rekey.cli')).toBe(true);
    expect(m('arn:aws:sts::000000000000:assumed-role/ops/rekeyXcli')).toBe(false);
    expect(m('arn:aws:iam::000000000000:role/rekey-worker-extra/../x')).toBe(true);
    expect(m('arn:aws:iam::000000000000:role/other')).toBe(false);
    expect(m('xarn:aws:iam::000000000000:role/rekey-worker')).toBe(false);
    expect(m(undefined)).toBe(false);
    expect(principalMatcher([])('arn:aws:iam::000000000000:role/rekey-worker')).toBe(false);
  });
});

describe('coverStretch (what the looks of a verify round have read)', () => {
  const T = Date.parse('2026-01-01T00:00:00.000Z');
  const s = (sec: number) => new Date(T + sec * 1000).toISOString();
  const st = (key: string, from: number, to: number) => ({ key, from: s(from), to: s(to) });

  it('a look that read the whole window leaves nothing unread', () => {
    expect(coverStretch([], 'k', T, T + 60_000, T)).toEqual({ read: [st('k', 0, 60)], unread: [] });
  });

  it('a look that read only the newest events leaves the start unread', () => {
    expect(coverStretch([], 'k', T + 40_000, T + 60_000, T)).toEqual({ read: [st('k', 40, 60)], unread: [st('k', 0, 40)] });
  });

  it('a look whose newest events reach back into what an earlier look read closes the window', () => {
    expect(coverStretch([st('k', 0, 60)], 'k', T + 50_000, T + 120_000, T)).toEqual({ read: [st('k', 0, 120)], unread: [] });
  });

  it('a look that does not reach back to the last one leaves the stretch between unread', () => {
    expect(coverStretch([st('k', 0, 60)], 'k', T + 70_000, T + 120_000, T)).toEqual({ read: [st('k', 0, 60), st('k', 70, 120)], unread: [st('k', 60, 70)] });
  });

  it('asks for nothing while the whole window is younger than the quiet window', () => {
    expect(coverStretch([st('k', 10, 20)], 'k', T, T - 5000, T)).toEqual({ read: [st('k', 10, 20)], unread: [] });
  });

  it('keeps the stretches of other keys, and reads nothing from a look whose pages are all newer than its start', () => {
    const out = coverStretch([st('other', 0, 60), st('k', 0, 30)], 'k', T + 90_000, T + 60_000, T);
    expect(out.read).toEqual([st('other', 0, 60), st('k', 0, 30)]);
    expect(out.unread).toEqual([st('k', 30, 60)]);
  });
});

describe('createRateGate', () => {
  it('merges a look with earlier looks of the round: larger count, later use, rows only earlier looks saw, pending rows until delivered', () => {
    const row = (operation: string, caller: string, count: number, lastSeen: string) => ({ key: 'k', operation, caller, count, lastSeen });
    const pending = row('Encrypt', 'unknown caller (CloudTrail event ev-9 not delivered yet)', 1, '2026-01-01T00:00:09.000Z');
    const earlier = [row('Encrypt', 'app', 3, '2026-01-01T00:00:05.000Z'), row('GenerateDataKey', 'batch', 1, '2026-01-01T00:00:01.000Z'), pending];
    const now = new Map([['k\u0000Encrypt\u0000app', row('Encrypt', 'app', 2, '2026-01-01T00:00:07.000Z')]]);

    expect(mergeRows(earlier, now, new Set())).toEqual([row('Encrypt', 'app', 3, '2026-01-01T00:00:07.000Z'), earlier[1], pending]);
    // Once CloudTrail delivered ev-9, the look counted it under its real caller: the pending row goes.
    expect(mergeRows(earlier, now, new Set(['ev-9']))).toEqual([row('Encrypt', 'app', 3, '2026-01-01T00:00:07.000Z'), earlier[1]]);
  });

  it('spaces requests at the given rate', async () => {
    const gate = createRateGate(10);
    const t0 = Date.now();

    for (let i = 0; i < 4; i++) await gate.take();

    expect(Date.now() - t0).toBeGreaterThanOrEqual(290);
  });

  it('refuses a rate of zero', () => {
    expect(() => createRateGate(0)).toThrow(/above 0/);
  });
});

describe('usage monitor against aws-local (KMS GetKeyLastUsage + CloudTrail LookupEvents)', () => {
  let ep: AwsTestEndpoint;
  let fleetKms: KMSClient;
  let otherKms: KMSClient;
  let trail: CloudTrailClient;
  const other = { accessKeyId: 'AKIAOTHERAPP000000001', secretAccessKey: 'other-secret-not-a-real-key' };

  beforeAll(async () => {
    ep = await useAwsLocal();
    fleetKms = new KMSClient(awsClientConfig(ep));
    otherKms = new KMSClient(awsClientConfig(ep, other));
    trail = new CloudTrailClient(awsClientConfig(ep));
  });

  afterAll(async () => {
    fleetKms?.destroy();
    otherKms?.destroy();
    trail?.destroy();
    await ep?.close();
  });

  const newKey = async () => (await fleetKms.send(new CreateKeyCommand({ Description: 'usage monitor test' }))).KeyMetadata!.Arn!;

  function migrationOf(from: string, to: string, verifyStartedAt: string): Migration {
    const spec = parseMigrationSpec({ id: 'mon', sources: [{ name: 'docs', kind: 's3-sse-kms', bucket: 'docs' }], from: [from], to });
    return { id: 'mon', spec, state: 'ready', keys: { from: [from], to, aliases: {} }, createdAt: verifyStartedAt, updatedAt: verifyStartedAt, verifyStartedAt, verifiedAt: verifyStartedAt };
  }

  function monitorWith(stored: Map<string, OldKeyUsage>, overrides: { cloudtrail?: CloudTrailClient; maxPagesPerKey?: number; quietWindowSeconds?: number } = {}) {
    const metrics = createFleetMetrics({ defaultMetrics: false });
    const monitor = createUsageMonitor({
      kms: fleetKms,
      cloudtrail: overrides.cloudtrail ?? trail,
      migrations: async () => [],
      getUsage: async (id) => stored.get(id) ?? null,
      setUsage: async (id, u) => {
        stored.set(id, u);
      },
      metrics,
      logger: pino({ level: 'silent' }),
      requestsPerSecond: 50,
      ...(overrides.maxPagesPerKey !== undefined && { maxPagesPerKey: overrides.maxPagesPerKey }),
      ...(overrides.quietWindowSeconds !== undefined && { quietWindowSeconds: () => overrides.quietWindowSeconds! }),
    });
    return { monitor, metrics };
  }

  it('resolves the fleet identity from the client credentials', async () => {
    const { monitor } = monitorWith(new Map());

    expect([...(await monitor.fleetIdentity())]).toEqual([TEST_CREDENTIALS.accessKeyId]);
  });

  it('finds encrypt-type use and readers by another caller after verification started, not the fleet and not earlier use', async () => {
    const oldKey = await newKey();
    const toKey = await newKey();
    const before = await otherKms.send(new EncryptCommand({ KeyId: oldKey, Plaintext: Buffer.from('before verify') }));
    await sleep(1100);
    const m = migrationOf(oldKey, toKey, new Date().toISOString());
    await fleetKms.send(new ReEncryptCommand({ CiphertextBlob: before.CiphertextBlob!, DestinationKeyId: toKey }));
    await otherKms.send(new EncryptCommand({ KeyId: oldKey, Plaintext: Buffer.from('after verify') }));
    await otherKms.send(new GenerateDataKeyCommand({ KeyId: oldKey, KeySpec: 'AES_256' }));
    // 60 reads take LookupEvents past its 50-event page.
    for (let i = 0; i < 60; i++) await otherKms.send(new DecryptCommand({ CiphertextBlob: before.CiphertextBlob! }));
    const stored = new Map<string, OldKeyUsage>();
    const { monitor, metrics } = monitorWith(stored);

    const usage = await monitor.check(m);

    expect(usage.blockers.map((b) => [b.operation, b.count]).sort()).toEqual([['Encrypt', 1], ['GenerateDataKey', 1]]);
    expect(usage.blockers.every((b) => b.caller.includes('AKIAOTHERAPP000000001') && b.key === oldKey)).toBe(true);
    expect(usage.readers.map((r) => [r.operation, r.count])).toEqual([['Decrypt', 60]]);
    expect(usage.since).toBe(m.verifyStartedAt);
    expect(stored.get('mon')).toEqual(usage);
    const gauge = (await metrics.oldKeyLastUse.get()).values;
    expect(gauge.map((v) => v.labels['operation']).sort()).toEqual(['Decrypt', 'Encrypt', 'GenerateDataKey']);
    expect(gauge.every((v) => v.labels['key'] === oldKey && v.value * 1000 >= Date.parse(m.verifyStartedAt!) - 1000)).toBe(true);
  });

  it('sees no blockers when only the fleet used the old key', async () => {
    const oldKey = await newKey();
    const toKey = await newKey();
    const blob = (await fleetKms.send(new EncryptCommand({ KeyId: oldKey, Plaintext: Buffer.from('x') }))).CiphertextBlob!;
    await sleep(1100);
    const m = migrationOf(oldKey, toKey, new Date().toISOString());
    await fleetKms.send(new ReEncryptCommand({ CiphertextBlob: blob, DestinationKeyId: toKey }));

    const usage = await monitorWith(new Map()).monitor.check(m);

    expect(usage).toMatchObject({ blockers: [], readers: [] });
    expect(usage.checkedAt).not.toBeNull();
  });

  it('reports an encrypt that GetKeyLastUsage knows but CloudTrail has not delivered yet', async () => {
    const oldKey = await newKey();
    const toKey = await newKey();
    const m = migrationOf(oldKey, toKey, new Date(Date.now() - 1000).toISOString());
    await otherKms.send(new EncryptCommand({ KeyId: oldKey, Plaintext: Buffer.from('late') }));
    const laggingTrail = { send: async () => ({ Events: [] }) } as unknown as CloudTrailClient;

    const usage = await monitorWith(new Map(), { cloudtrail: laggingTrail }).monitor.check(m);

    expect(usage.blockers).toHaveLength(1);
    expect(usage.blockers[0]).toMatchObject({ key: oldKey, operation: 'Encrypt' });
    expect(usage.blockers[0]!.caller).toMatch(/^unknown caller \(CloudTrail event .+ not delivered yet\)$/);
  });

  it('keeps a blocker an earlier look found when a later look can read only the newest events, and says what it skipped', async () => {
    const oldKey = await newKey();
    const m = migrationOf(oldKey, await newKey(), new Date(Date.now() - 1000).toISOString());
    const blob = (await otherKms.send(new EncryptCommand({ KeyId: oldKey, Plaintext: Buffer.from('stale writer') }))).CiphertextBlob!;
    const stored = new Map<string, OldKeyUsage>();
    // One page (50 events) per look.
    const { monitor } = monitorWith(stored, { maxPagesPerKey: 1 });

    const first = await monitor.check(m);
    expect(first.blockers.map((b) => [b.operation, b.count])).toEqual([['Encrypt', 1]]);
    expect(first.skipped).toBeUndefined();

    // 60 reads push the Encrypt out of the newest 50 events.
    for (let i = 0; i < 60; i++) await otherKms.send(new DecryptCommand({ CiphertextBlob: blob }));
    const second = await monitor.check(m);

    expect(second.blockers.map((b) => [b.operation, b.count, b.lastSeen])).toEqual([['Encrypt', 1, first.blockers[0]!.lastSeen]]);
    // The page holds the newest reads (and the monitor's own first GetKeyLastUsage, which is not a use).
    expect(second.readers.map((r) => r.operation)).toEqual(['Decrypt']);
    expect(second.readers[0]!.count).toBeGreaterThan(40);
    expect(second.skipped).toEqual([expect.stringMatching(new RegExp(`^${oldKey}: more CloudTrail events since verification started than one look reads \\(50\\)`))]);
    const gate = computeGate({ migration: m, counters: {}, acks: new Map(), failureIds: [], usage: second, usageMonitored: true });
    expect(gate.conditions.find((c) => c.name === 'old-key-quiet')).toMatchObject({ ok: false, detail: expect.stringContaining('Encrypt by') });
    expect(gate.warnings).toContainEqual(expect.stringMatching(/^old-key usage monitor: .*skipped those before/));

    // A new verify round starts from nothing: what the earlier round saw is not carried.
    const later = migrationOf(oldKey, m.keys.to, new Date(Date.now() + 1000).toISOString());
    await sleep(1100);
    expect((await monitor.check(later)).blockers).toEqual([]);
  });

  it('keeps the gate red while a stretch of the window is unread, until a look reads it all', async () => {
    const oldKey = await newKey();
    const m = migrationOf(oldKey, await newKey(), new Date(Date.now() - 1000).toISOString());
    const blob = (await fleetKms.send(new EncryptCommand({ KeyId: oldKey, Plaintext: Buffer.from('read by an app') }))).CiphertextBlob!;
    // 60 reads by an app: more than one page (50 events) of CloudTrail.
    for (let i = 0; i < 60; i++) await otherKms.send(new DecryptCommand({ CiphertextBlob: blob }));
    const stored = new Map<string, OldKeyUsage>();
    const gateOf = (usage: OldKeyUsage) => computeGate({ migration: m, counters: {}, acks: new Map(), failureIds: [], usage, usageMonitored: true });

    const narrow = await monitorWith(stored, { maxPagesPerKey: 1 }).monitor.check(m);
    expect(narrow.blockers).toEqual([]);
    expect(narrow.unread).toEqual([{ key: oldKey, from: new Date(Math.floor(Date.parse(m.verifyStartedAt!) / 1000) * 1000).toISOString(), to: expect.any(String) }]);
    expect(gateOf(narrow).conditions.find((c) => c.name === 'old-key-quiet')).toMatchObject({ ok: false, detail: expect.stringContaining('could not read every CloudTrail event') });

    // A look that reads every event of the window (here: more pages) closes it.
    const wide = await monitorWith(stored, { maxPagesPerKey: 5 }).monitor.check(m);
    expect(wide.unread).toBeUndefined();
    expect(wide.read).toEqual([{ key: oldKey, from: expect.any(String), to: wide.checkedAt }]);
    expect(gateOf(wide).conditions.find((c) => c.name === 'old-key-quiet')).toMatchObject({ ok: true });
  });

  it('counts a look as having read the window only up to the quiet window before it began (CloudTrail delivers late)', async () => {
    const oldKey = await newKey();
    const m = migrationOf(oldKey, await newKey(), new Date(Date.now() - 10_000).toISOString());

    const usage = await monitorWith(new Map(), { quietWindowSeconds: 4 }).monitor.check(m);

    const since = new Date(Math.floor(Date.parse(m.verifyStartedAt!) / 1000) * 1000).toISOString();
    expect(usage.read).toEqual([{ key: oldKey, from: since, to: new Date(Date.parse(usage.checkedAt!) - 4000).toISOString() }]);
    expect(usage.unread).toBeUndefined();
  });

  it('stores why a look failed, keeping the last result', async () => {
    const oldKey = await newKey();
    const m = migrationOf(oldKey, await newKey(), new Date().toISOString());
    const stored = new Map<string, OldKeyUsage>([['mon', { blockers: [], readers: [], checkedAt: '2026-01-01T00:00:00.000Z', since: m.verifyStartedAt! }]]);
    const deniedTrail = { send: async () => Promise.reject(Object.assign(new Error('not authorized to perform cloudtrail:LookupEvents'), { name: 'AccessDeniedException' })) } as unknown as CloudTrailClient;
    const { monitor } = createMonitorForAll(stored, deniedTrail, [m]);

    await monitor.checkAll();

    expect(stored.get('mon')).toMatchObject({ checkedAt: '2026-01-01T00:00:00.000Z', error: 'AccessDeniedException: not authorized to perform cloudtrail:LookupEvents' });
  });

  function createMonitorForAll(stored: Map<string, OldKeyUsage>, cloudtrail: CloudTrailClient, all: Migration[]) {
    const monitor = createUsageMonitor({
      kms: fleetKms,
      cloudtrail,
      migrations: async () => all,
      getUsage: async (id) => stored.get(id) ?? null,
      setUsage: async (id, u) => {
        stored.set(id, u);
      },
      logger: pino({ level: 'silent' }),
      requestsPerSecond: 50,
    });
    return { monitor };
  }
});

describe('usage monitor in the engine: per-migration quiet window', () => {
  it("keeps old-key-quiet red until the migration's quiet window has passed, then the migration turns ready", async () => {
    const fx = await startEngineFixture('quiet', { engine: { quietWindowSeconds: 'per-migration', usageMonitor: { intervalMs: 200, requestsPerSecond: 20 } } });
    const { engine, kms, s3 } = fx;
    try {
      const oldKey = (await kms.send(new CreateKeyCommand({}))).KeyMetadata!.Arn!;
      const to = (await kms.send(new CreateKeyCommand({}))).KeyMetadata!.Arn!;
      const Bucket = uniqueName('quiet');
      await s3.send(new CreateBucketCommand({ Bucket }));
      await s3.send(new PutObjectCommand({ Bucket, Key: 'a', Body: 'a', ServerSideEncryption: 'aws:kms', SSEKMSKeyId: oldKey }));
      const m = await engine.createMigration({ sources: [{ name: 'objs', kind: 's3-sse-kms', bucket: Bucket }], from: [oldKey], to, options: { quietWindowSeconds: 3 } }, 'test');

      let sawWindow = false;
      let state = '';
      for (let i = 0; i < 200 && state !== 'ready'; i++) {
        const st = await engine.status(m.id);
        state = st.migration.state;
        sawWindow ||= /quiet window is 3 s/.test(st.gate.conditions.find((c) => c.name === 'old-key-quiet')?.detail ?? '');
        await sleep(100);
      }

      expect(sawWindow).toBe(true);
      expect(state).toBe('ready');
      const fresh = await engine.get(m.id);
      const usage = (await engine.status(m.id)).usage!;
      expect(Date.parse(usage.checkedAt!) - Date.parse(fresh.verifyStartedAt!)).toBeGreaterThanOrEqual(3000);
    } finally {
      await fx.close();
    }
  });
});
