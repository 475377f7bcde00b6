import { afterAll, afterEach, beforeEach, describe, expect, it } from 'vitest';
import { ChangeMessageVisibilityCommand, DeleteMessageBatchCommand, ReceiveMessageCommand, type Message } from '@aws-sdk/client-sqs';
import pino from 'pino';
import { Writable } from 'node:stream';
import { ItemError, RetryableError, ValidationError, type ItemOutcome, type ItemRef, type KeyInfo, type KeyPlan, type Migration, type MigrationSpecInput, type Source, type SourceSpec } from '@rekey/core';
import { cleanupRedisPrefix, createTestRedis, uniquePrefix } from '@rekey/testing';
import { createAuditLog } from '../src/audit.js';
import { INTAKE_AUDIT_ID, createIntake, itemJobId, parseIntakeMessage, readIntakeStats, type IntakeDeps, type IntakeSettings } from '../src/intake.js';
import { FleetError } from '../src/errors.js';
import { createItemProcessor } from '../src/item-processor.js';
import { redisKeys } from '../src/keys.js';

const ACCOUNT = '111122223333';
const arn = (id: string) => `arn:aws:kms:us-east-1:${ACCOUNT}:key/${id}`;
const KEY_A = arn('1234abcd-12ab-34cd-56ef-1234567890aa');
const KEY_B = arn('1234abcd-12ab-34cd-56ef-1234567890bb');

/** The "KMS CMK Rotation" event as documented by AWS KMS (EventBridge to SQS delivers the event as the body). */
function rotationEvent(keyArn: string, id = 'ev-rot-1') {
  return {
    version: '0',
    id,
    'detail-type': 'KMS CMK Rotation',
    source: 'aws.kms',
    account: ACCOUNT,
    time: '2025-05-23T03:11:54Z',
    region: 'us-east-1',
    resources: [keyArn],
    detail: { 'key-id': keyArn.split('/')[1] },
  };
}

/** An "AWS API Call via CloudTrail" event wrapping the documented UpdateAlias CloudTrail record. */
function aliasEvent(aliasName: string, targetArn: string, opts: { id?: string; eventName?: string; errorCode?: string } = {}) {
  return {
    version: '0',
    id: opts.id ?? 'ev-alias-1',
    'detail-type': 'AWS API Call via CloudTrail',
    source: 'aws.kms',
    account: ACCOUNT,
    time: '2020-11-13T23:18:15Z',
    region: 'us-east-1',
    resources: [],
    detail: {
      eventVersion: '1.08',
      userIdentity: { type: 'IAMUser', accountId: ACCOUNT },
      eventTime: '2020-11-13T23:18:15Z',
      eventSource: 'kms.amazonaws.com',
      eventName: opts.eventName ?? 'UpdateAlias',
      awsRegion: 'us-east-1',
      requestParameters: { aliasName, targetKeyId: targetArn.split('/')[1] },
      responseElements: { keyId: targetArn },
      ...(opts.errorCode !== undefined && { errorCode: opts.errorCode }),
      eventType: 'AwsApiCall',
    },
  };
}

describe('parseIntakeMessage', () => {
  it('accepts a KMS CMK Rotation event and takes the key ARN from resources', () => {
    expect(parseIntakeMessage(JSON.stringify(rotationEvent(KEY_A)))).toMatchObject({ kind: 'rotation', eventId: 'ev-rot-1', keyArn: KEY_A });
  });

  it('accepts a CloudTrail UpdateAlias event with the alias, target and target ARN', () => {
    expect(parseIntakeMessage(JSON.stringify(aliasEvent('alias/app', KEY_B)))).toMatchObject({
      kind: 'alias',
      eventName: 'UpdateAlias',
      aliasName: 'alias/app',
      targetKeyId: KEY_B.split('/')[1],
      keyArn: KEY_B,
    });
  });

  it('accepts the rekey.item body that @rekey/envelope sends', () => {
    const body = '{"type":"rekey.item","source":"docs","item":{"key":"a/b.txt","kind":"s3"}}';
    expect(parseIntakeMessage(body)).toEqual({ kind: 'item', source: 'docs', item: { kind: 's3', key: 'a/b.txt' } });
    expect(parseIntakeMessage('{"type":"rekey.item","source":"rows","item":{"kind":"row","pk":[42,"x"]}}')).toMatchObject({ item: { kind: 'row', pk: [42, 'x'] } });
  });

  it('ignores well-formed aws.kms events it does not act on, and failed alias calls', () => {
    expect(parseIntakeMessage(JSON.stringify(aliasEvent('alias/app', KEY_B, { eventName: 'Decrypt' })))).toMatchObject({ kind: 'ignored' });
    expect(parseIntakeMessage(JSON.stringify(aliasEvent('alias/app', KEY_B, { errorCode: 'NotFoundException' })))).toMatchObject({ kind: 'ignored' });
    expect(parseIntakeMessage(JSON.stringify({ ...rotationEvent(KEY_A), 'detail-type': 'KMS CMK Deletion' }))).toMatchObject({ kind: 'ignored' });
  });

  it.each([
    ['', 'message body is empty'],
    ['not json {', 'message body is not JSON'],
    ['[1,2]', 'not a JSON object'],
    ['{"hello":1}', 'neither a rekey.item request'],
    ['{"type":"rekey.item","source":"docs","item":{"kind":"s3","key":""}}', 'rekey.item message: item.key: must not be empty'],
    ['{"type":"rekey.item","source":"Docs!","item":{"kind":"s3","key":"k"}}', 'rekey.item message: source:'],
    ['{"type":"rekey.other","source":"docs","item":{"kind":"s3","key":"k"}}', 'rekey.item message: type:'],
    ['{"type":"rekey.item","source":"docs","item":{"kind":"s3","key":"k"},"extra":1}', 'rekey.item message'],
    [JSON.stringify({ ...rotationEvent(KEY_A), source: 'aws.s3' }), 'source: must be aws.kms'],
    [JSON.stringify({ ...rotationEvent(KEY_A), detail: {} }), 'KMS CMK Rotation event detail: key-id'],
    [JSON.stringify({ ...rotationEvent(KEY_A), account: '12' }), 'EventBridge event: account'],
    [JSON.stringify(aliasEvent('not-an-alias', KEY_B)), 'UpdateAlias event requestParameters: aliasName'],
  ])('rejects %j with one clear line', (body, reason) => {
    let err: unknown;
    try {
      parseIntakeMessage(body);
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(FleetError);
    expect((err as FleetError).code).toBe('bad-message');
    expect((err as FleetError).message).toContain(reason);
    expect((err as FleetError).message).not.toContain('\n');
  });
});

const docs: SourceSpec = { name: 'docs', kind: 's3-envelope', bucket: 'docs-bucket' };
const rows: SourceSpec = { name: 'rows', kind: 'postgres', table: 'secrets', primaryKey: ['id'], column: 'secret', format: 'kms-blob' };
const loose: SourceSpec = { name: 'loose', kind: 's3-envelope', bucket: 'loose-bucket' };

describe('intake dispatch (real Redis, fake SQS, KMS, queue and migrations)', () => {
  const prefix = uniquePrefix('intake');
  const keys = redisKeys(prefix);
  const redis = createTestRedis();
  const audit = createAuditLog(redis, keys);
  let added: { name: string; data: unknown; opts: { jobId: string; lifo?: boolean } }[];
  let created: MigrationSpecInput[];
  let existing: Migration[];
  let aliasTargets: Record<string, string>;
  let clock: number;
  let logLines: string[];

  const settings = (over: Partial<IntakeSettings> = {}): IntakeSettings => ({
    queueUrl: 'http://127.0.0.1:1/000000000000/intake',
    waitSeconds: 0,
    onRotation: 'refresh',
    autoMigrate: true,
    dedupeWindowSeconds: 300,
    sources: [docs, rows, loose],
    bindings: { 'alias/app': ['docs', 'rows'] },
    ...over,
  });

  function migration(id: string, spec: MigrationSpecInput): Migration {
    const now = new Date(clock).toISOString();
    const resolve = (k: string) => aliasTargets[k] ?? k;
    return {
      id,
      spec: { ...spec, id, options: {} } as Migration['spec'],
      state: 'created',
      keys: { from: spec.from.map(resolve), to: resolve(spec.to), aliases: {} },
      createdAt: now,
      updatedAt: now,
      round: 1,
    };
  }

  function deps(over: Partial<IntakeDeps> = {}, s: Partial<IntakeSettings> = {}): IntakeDeps {
    const sink = new Writable({
      write(chunk: Buffer, _enc, cb) {
        logLines.push(chunk.toString());
        cb();
      },
    });
    return {
      settings: settings(s),
      sqs: { send: () => Promise.reject(new Error('no SQS in this test')) } as unknown as IntakeDeps['sqs'],
      redis,
      keys,
      queue: {
        add: async (name, data, opts) => {
          if (!added.some((a) => a.opts.jobId === opts.jobId)) added.push({ name, data, opts });
        },
      },
      audit,
      kms: {
        describeKey: async (id: string) => {
          const a = aliasTargets[id] ?? (id.startsWith('arn:') ? id : arn(id));
          return { arn: a, keyId: a.split('/')[1]!, state: 'Enabled', usage: 'ENCRYPT_DECRYPT', spec: 'SYMMETRIC_DEFAULT', origin: 'AWS_KMS', manager: 'CUSTOMER', multiRegion: false } satisfies KeyInfo;
        },
      },
      migrations: {
        create: async (spec) => {
          created.push(spec);
          const m = migration(spec.id!, spec);
          existing.push(m);
          return m;
        },
        list: async () => existing,
      },
      logger: pino({ level: 'info' }, sink),
      actor: 'test:intake',
      now: () => clock,
      ...over,
    };
  }

  beforeEach(async () => {
    added = [];
    created = [];
    existing = [];
    logLines = [];
    aliasTargets = { 'alias/app': KEY_A };
    clock = Date.parse('2026-01-01T00:00:00Z');
    await cleanupRedisPrefix(redis, prefix);
  });

  afterEach(async () => {
    await cleanupRedisPrefix(redis, prefix);
  });

  afterAll(async () => {
    await redis.quit();
  });

  it('turns an app request into one LIFO item job, and a repeat within the window into the same job', async () => {
    const intake = createIntake(deps());
    const body = '{"type":"rekey.item","source":"docs","item":{"kind":"s3","key":"k1"}}';
    expect(await intake.handle(body, { messageId: 'm1' })).toMatchObject({ done: true });
    clock += 10_000;
    expect(await intake.handle(body, { messageId: 'm2' })).toMatchObject({ done: true, summary: expect.stringContaining('deduplicated') });
    expect(added).toHaveLength(1);
    expect(added[0]).toMatchObject({ name: 'item', data: { source: 'docs', item: { kind: 's3', key: 'k1' } }, opts: { lifo: true } });
    expect(added[0]!.data).not.toHaveProperty('migrationId');
    expect(await readIntakeStats(redis, keys)).toMatchObject({ 'items.enqueued': 1, 'items.deduplicated': 1 });
  });

  it('makes a new job for the same item in the next window', async () => {
    const intake = createIntake(deps());
    const body = '{"type":"rekey.item","source":"docs","item":{"kind":"s3","key":"k1"}}';
    await intake.handle(body);
    clock += 301_000;
    await intake.handle(body);
    expect(added.map((a) => a.opts.jobId)).toEqual([
      itemJobId('docs', { kind: 's3', key: 'k1' }, Math.floor((clock - 301_000) / 300_000)),
      itemJobId('docs', { kind: 's3', key: 'k1' }, Math.floor(clock / 300_000)),
    ]);
  });

  it('names the running migration of the source in the item job', async () => {
    existing.push(migration('m-running', { sources: [docs], from: [KEY_A], to: KEY_B }));
    const intake = createIntake(deps());
    await intake.handle('{"type":"rekey.item","source":"docs","item":{"kind":"s3","key":"k"}}');
    expect(added[0]!.data).toMatchObject({ migrationId: 'm-running' });
  });

  it.each([
    ['{"type":"rekey.item","source":"nope","item":{"kind":"s3","key":"k"}}', 'no source named nope'],
    ['{"type":"rekey.item","source":"docs","item":{"kind":"row","pk":[1]}}', 'holds S3 objects'],
    ['{"type":"rekey.item","source":"rows","item":{"kind":"row","pk":[1,2]}}', '1-column primary key'],
    ['{"type":"rekey.item","source":"loose","item":{"kind":"s3","key":"k"}}', 'no running migration and no alias binding'],
  ])('rejects an app request it cannot route: %s', async (body, reason) => {
    const r = await createIntake(deps()).handle(body);
    expect(r).toMatchObject({ done: false, rejected: true, reason: expect.stringContaining(reason) });
    expect(added).toHaveLength(0);
  });

  it('starts one migration per bound source from the previous to the new target when an alias moves', async () => {
    const intake = createIntake(deps());
    await intake.prime();
    aliasTargets['alias/app'] = KEY_B;
    const r = await intake.handle(JSON.stringify(aliasEvent('alias/app', KEY_B)));
    expect(r).toMatchObject({ done: true, summary: 'UpdateAlias alias/app: 2 migration(s) started' });
    expect(created.map((c) => ({ sources: c.sources.map((s) => s.name), from: c.from, to: c.to }))).toEqual([
      { sources: ['docs'], from: [KEY_A], to: KEY_B },
      { sources: ['rows'], from: [KEY_A], to: KEY_B },
    ]);
    const entries = await audit.read(INTAKE_AUDIT_ID);
    expect(entries.at(-1)).toMatchObject({ type: 'intake.alias-moved', data: { alias: 'alias/app', from: KEY_A, to: KEY_B, bound: true } });
    expect(await redis.smembers(keys.intakeAliasKeys('alias/app'))).toEqual(expect.arrayContaining([KEY_A, KEY_B]));
  });

  it('repeats the same decision when an alias event is delivered again, without a second migration', async () => {
    const intake = createIntake(deps());
    await intake.prime();
    const body = JSON.stringify(aliasEvent('alias/app', KEY_B));
    await intake.handle(body);
    const again = await intake.handle(body);
    expect(again).toMatchObject({ done: true, summary: 'UpdateAlias alias/app: 0 migration(s) started' });
    expect(created).toHaveLength(2);
    const last = (await audit.read(INTAKE_AUDIT_ID)).at(-1)!;
    expect(last.data['actions']).toEqual([
      expect.objectContaining({ source: 'docs', result: 'already started' }),
      expect.objectContaining({ source: 'rows', result: 'already started' }),
    ]);
  });

  it('only audits an alias move when autoMigrate is off, the alias is unbound, or the old key is unknown', async () => {
    const off = createIntake(deps({}, { autoMigrate: false }));
    await off.prime();
    expect(await off.handle(JSON.stringify(aliasEvent('alias/app', KEY_B, { id: 'e1' })))).toMatchObject({ summary: expect.stringContaining('autoMigrate is off') });
    const on = createIntake(deps());
    expect(await on.handle(JSON.stringify(aliasEvent('alias/other', KEY_B, { id: 'e2' })))).toMatchObject({ summary: expect.stringContaining('not bound') });
    await cleanupRedisPrefix(redis, prefix);
    expect(await on.handle(JSON.stringify(aliasEvent('alias/app', KEY_B, { id: 'e3', eventName: 'CreateAlias' })))).toMatchObject({ summary: expect.stringContaining('no earlier key') });
    expect(created).toHaveLength(0);
    expect((await audit.read(INTAKE_AUDIT_ID)).map((e) => e.type)).toEqual(['intake.alias-moved']);
  });

  it('records a refused migration in the audit log and still deletes the event', async () => {
    const intake = createIntake(deps({
      migrations: {
        create: () => Promise.reject(new ValidationError(['from key: the key is Disabled, not Enabled'])),
        list: async () => [],
      },
    }));
    await intake.prime();
    const r = await intake.handle(JSON.stringify(aliasEvent('alias/app', KEY_B)));
    expect(r.done).toBe(true);
    const last = (await audit.read(INTAKE_AUDIT_ID)).at(-1)!;
    expect(last.data['actions']).toEqual([
      expect.objectContaining({ result: 'refused', reason: 'from key: the key is Disabled, not Enabled' }),
      expect.objectContaining({ result: 'refused' }),
    ]);
  });

  it('starts a refresh migration of the sources behind a rotated key, or only audits with onRotation ignore', async () => {
    const refresh = createIntake(deps());
    await refresh.handle(JSON.stringify(rotationEvent(KEY_A)));
    expect(created.map((c) => ({ src: c.sources[0]!.name, from: c.from, to: c.to, refresh: c.refresh }))).toEqual([
      { src: 'docs', from: [KEY_A], to: KEY_A, refresh: true },
      { src: 'rows', from: [KEY_A], to: KEY_A, refresh: true },
    ]);
    const ignore = createIntake(deps({}, { onRotation: 'ignore' }));
    expect(await ignore.handle(JSON.stringify(rotationEvent(KEY_A, 'ev-rot-2')))).toMatchObject({ summary: expect.stringContaining('onRotation is ignore') });
    const other = await refresh.handle(JSON.stringify(rotationEvent(KEY_B, 'ev-rot-3')));
    expect(other).toMatchObject({ summary: expect.stringContaining('no bound alias points to the key') });
    expect(created).toHaveLength(2);
    expect((await audit.read(INTAKE_AUDIT_ID)).map((e) => e.type)).toEqual(['intake.key-rotated', 'intake.key-rotated', 'intake.key-rotated']);
  });

  it('deletes handled messages, leaves a poison message for the DLQ, and logs it once per MessageId', async () => {
    const poison: Message = { MessageId: 'poison-1', ReceiptHandle: 'rh-p', Body: 'not json' };
    const good: Message = { MessageId: 'good-1', ReceiptHandle: 'rh-g', Body: '{"type":"rekey.item","source":"docs","item":{"kind":"s3","key":"k"}}' };
    const deleted: string[] = [];
    const sqs = {
      send: async (cmd: unknown) => {
        if (cmd instanceof ReceiveMessageCommand) return { Messages: [poison, good] };
        if (cmd instanceof DeleteMessageBatchCommand) {
          deleted.push(...(cmd.input.Entries ?? []).map((e) => e.ReceiptHandle!));
          return { Successful: [], Failed: [] };
        }
        if (cmd instanceof ChangeMessageVisibilityCommand) return {};
        throw new Error('unexpected command');
      },
    } as unknown as IntakeDeps['sqs'];
    const intake = createIntake(deps({ sqs }));
    expect(await intake.pollOnce()).toBe(2);
    expect(await intake.pollOnce()).toBe(2);
    expect(deleted).toEqual(['rh-g', 'rh-g']);
    const rejectedLogs = logLines.filter((l) => l.includes('intake message rejected'));
    expect(rejectedLogs).toHaveLength(1);
    expect(rejectedLogs[0]).toContain('poison-1');
    expect(rejectedLogs[0]).toContain('message body is not JSON');
    expect(await readIntakeStats(redis, keys)).toMatchObject({ 'messages.rejected': 2, 'messages.rejected.unique': 1, 'messages.handled': 2 });
  });
});

describe('item processor (real Redis, fake sources and KMS)', () => {
  const prefix = uniquePrefix('item-proc');
  const keys = redisKeys(prefix);
  const redis = createTestRedis();
  const docsSpec: SourceSpec = { name: 'docs', kind: 's3-envelope', bucket: 'docs-bucket' };
  let calls: { item: ItemRef; plan: KeyPlan; migrationId: string }[];
  let next: () => Promise<ItemOutcome>;

  const fakeSource: Source = {
    kind: 's3-envelope',
    name: 'docs',
    list: () => Promise.reject(new Error('not used')),
    inspect: () => Promise.reject(new Error('not used')),
    reencrypt: async (item, plan, ctx) => {
      calls.push({ item, plan, migrationId: ctx.migrationId });
      return next();
    },
  };

  function processor(migrations: Migration[] = []) {
    return createItemProcessor({
      store: { get: async (id: string) => migrations.find((m) => m.id === id) ?? null },
      sources: { get: async () => fakeSource, close: async () => undefined },
      sourceFor: async () => fakeSource,
      redis,
      keys,
      kms: { describeKey: async (id: string) => ({ arn: id === 'alias/app' ? KEY_B : id, keyId: 'k', state: 'Enabled', usage: 'ENCRYPT_DECRYPT', spec: 'SYMMETRIC_DEFAULT', origin: 'AWS_KMS', manager: 'CUSTOMER', multiRegion: false }) },
      logger: pino({ level: 'silent' }),
      shutdown: new AbortController().signal,
    });
  }
  const job = (data: Record<string, unknown>) =>
    ({ id: 'item.x', data: { source: 'docs', item: { kind: 's3', key: 'k' }, requestedAt: '2026-01-01T00:00:00.000Z', ...data } }) as unknown as Parameters<ReturnType<typeof processor>>[0];

  beforeEach(async () => {
    calls = [];
    next = async () => ({ outcome: 'reencrypted' });
    await cleanupRedisPrefix(redis, prefix);
    await redis.set(keys.intakeConfig(), JSON.stringify({ sources: [docsSpec], bindings: { 'alias/app': ['docs'] } }));
  });

  afterAll(async () => {
    await cleanupRedisPrefix(redis, prefix);
    await redis.quit();
  });

  it('moves an item with no migration from the earlier keys of its alias to the current target', async () => {
    await redis.sadd(keys.intakeAliasKeys('alias/app'), KEY_A);
    await processor()(job({}), 'token');
    expect(calls).toEqual([{ item: { kind: 's3', key: 'k' }, plan: { from: [KEY_A], to: KEY_B }, migrationId: 'intake.alias/app' }]);
    expect(await readIntakeStats(redis, keys)).toEqual({ 'item.reencrypted': 1 });
  });

  it('reports not-in-scope without touching the item when no earlier key of the alias is known', async () => {
    await processor()(job({}), 'token');
    expect(calls).toHaveLength(0);
    expect(await readIntakeStats(redis, keys)).toEqual({ 'item.not-in-scope': 1 });
  });

  it("uses the running migration's key plan when the job names one", async () => {
    const m = {
      id: 'm1',
      spec: { id: 'm1', sources: [docsSpec], from: [KEY_A], to: KEY_B, options: { dryRun: false } },
      state: 'running',
      keys: { from: [KEY_A], to: KEY_B, aliases: {} },
      createdAt: '2026-01-01T00:00:00Z',
      updatedAt: '2026-01-01T00:00:00Z',
      round: 1,
    } as unknown as Migration;
    await processor([m])(job({ migrationId: 'm1' }), 'token');
    expect(calls[0]).toMatchObject({ plan: { from: [KEY_A], to: KEY_B }, migrationId: 'm1' });
  });

  it('rethrows retryable errors for BullMQ to retry and counts item errors as their outcome', async () => {
    await redis.sadd(keys.intakeAliasKeys('alias/app'), KEY_A);
    next = () => Promise.reject(new RetryableError('ThrottlingException', 'slow down'));
    await expect(processor()(job({}), 'token')).rejects.toBeInstanceOf(RetryableError);
    next = () => Promise.reject(new ItemError('NoSuchKey', 'the object is gone', { outcome: 'gone' }));
    await processor()(job({}), 'token');
    expect(await readIntakeStats(redis, keys)).toEqual({ 'item.gone': 1 });
  });

  it('refuses a job whose payload does not match the item job schema', async () => {
    await expect(processor()(job({ item: { kind: 's3', key: '' } }), 'token')).rejects.toBeInstanceOf(ValidationError);
  });
});
