import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createHash } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { CreateKeyCommand, KMSClient } from '@aws-sdk/client-kms';
import { CreateBucketCommand, GetObjectCommand, PutObjectCommand, S3Client } from '@aws-sdk/client-s3';
import pino from 'pino';
import { ValidationError, type Migration } from '@rekey/core';
import { awsClientConfig, cleanupRedisPrefix, createTestRedis, redisUrl, uniqueName, uniquePrefix, useAwsLocal, type AwsTestEndpoint } from '@rekey/testing';
import { auditExportKey, createEngine, parseAuditJsonl, verifyAuditChain, type Engine } from '../src/index.js';

describe('audit export: a finished migration writes its audit log as JSONL to auditBucket', () => {
  let ep: AwsTestEndpoint;
  let engine: Engine;
  let kms: KMSClient;
  let s3: S3Client;
  let coordinator: ReturnType<Engine['startCoordinator']>;
  let worker: ReturnType<Engine['startWorker']>;
  const prefix = uniquePrefix('auditexp');

  const newKey = async (d: string) => (await kms.send(new CreateKeyCommand({ Description: d }))).KeyMetadata!.Arn!;
  const waitUntil = async (id: string, pred: (m: Migration) => boolean, what: string) => {
    for (let i = 0; i < 600; i++) {
      const m = await engine.get(id);
      if (pred(m)) return m;
      await sleep(100);
    }
    throw new Error(`migration ${id}: ${what} did not happen`);
  };
  const bodyOf = async (Bucket: string, Key: string) => (await (await s3.send(new GetObjectCommand({ Bucket, Key }))).Body!.transformToString());

  async function migration(auditBucket: string): Promise<{ id: string; oldKey: string }> {
    const oldKey = await newKey('old');
    const to = await newKey('new');
    const bucket = uniqueName('auditsrc');
    await s3.send(new CreateBucketCommand({ Bucket: bucket }));
    for (let i = 0; i < 3; i++) await s3.send(new PutObjectCommand({ Bucket: bucket, Key: `o/${i}`, Body: `body ${i}`, ServerSideEncryption: 'aws:kms', SSEKMSKeyId: oldKey }));
    const m = await engine.createMigration({ sources: [{ name: 'objs', kind: 's3-sse-kms', bucket }], from: [oldKey], to, auditBucket }, 'test');
    await waitUntil(m.id, (x) => x.state === 'ready', 'ready');
    return { id: m.id, oldKey };
  }

  beforeAll(async () => {
    ep = await useAwsLocal();
    kms = new KMSClient(awsClientConfig(ep));
    s3 = new S3Client({ ...awsClientConfig(ep), forcePathStyle: true });
    engine = await createEngine({ redisUrl: redisUrl(), prefix, aws: { region: ep.region, endpoint: ep.url, credentials: awsClientConfig(ep).credentials }, logger: pino({ level: 'silent' }) });
    coordinator = engine.startCoordinator({ tickMs: 100 });
    worker = engine.startWorker({ concurrency: 2 });
  });

  afterAll(async () => {
    await worker?.close();
    await coordinator?.close();
    await engine?.close();
    const r = createTestRedis();
    await cleanupRedisPrefix(r, prefix);
    await r.quit();
    kms?.destroy();
    s3?.destroy();
    await ep?.close();
  });

  it('refuses a migration whose auditBucket does not exist, naming the bucket', async () => {
    const from = await newKey('old');
    const to = await newKey('new');
    const src = uniqueName('auditsrc');
    await s3.send(new CreateBucketCommand({ Bucket: src }));
    const missing = uniqueName('nobucket');

    const err = await engine.createMigration({ sources: [{ name: 'objs', kind: 's3-sse-kms', bucket: src }], from: [from], to, auditBucket: missing }, 'test').catch((e: unknown) => e);

    expect(err).toBeInstanceOf(ValidationError);
    expect((err as ValidationError).problems).toEqual([`auditBucket ${missing}: the bucket does not exist`]);
  });

  it('after finalize, writes every entry with its hash to rekey/audit/<id>.jsonl, a chain that checks and ends at the recorded head', async () => {
    const auditBucket = uniqueName('audit');
    await s3.send(new CreateBucketCommand({ Bucket: auditBucket }));
    const { id, oldKey } = await migration(auditBucket);

    await engine.finalize(id, { actor: 'test' });
    const m = await waitUntil(id, (x) => x.auditExport !== undefined, 'the audit export');
    const text = await bodyOf(auditBucket, auditExportKey(id));
    const entries = parseAuditJsonl(text);

    expect(m.auditExport).toMatchObject({ bucket: auditBucket, key: `rekey/audit/${id}.jsonl`, entries: entries.length, head: entries.at(-1)!.hash });
    expect(m.auditExport!.sha256).toBe(createHash('sha256').update(text).digest('hex'));
    expect(verifyAuditChain(entries)).toEqual({ ok: true, entries: entries.length });
    expect(entries.map((e) => e.type)).toEqual(expect.arrayContaining(['migration.created', 'state.changed', 'key.disabled']));
    expect(entries.find((e) => e.type === 'key.disabled')!.data).toMatchObject({ key: oldKey, forced: false });
    // The export itself is recorded in the live log, after the exported head.
    const live = await engine.audit.read(id);
    expect(live.at(-1)).toMatchObject({ type: 'audit.exported', prev: m.auditExport!.head, data: { bucket: auditBucket, entries: entries.length } });
    expect((await engine.audit.verify(id)).ok).toBe(true);
  });

  it('a changed line in the exported file no longer checks', async () => {
    const auditBucket = uniqueName('audit');
    await s3.send(new CreateBucketCommand({ Bucket: auditBucket }));
    const { id } = await migration(auditBucket);
    await engine.cancel(id, 'test', 'exporting a cancelled migration too');
    await waitUntil(id, (x) => x.auditExport !== undefined, 'the audit export');
    const entries = parseAuditJsonl(await bodyOf(auditBucket, auditExportKey(id)));

    const tampered = entries.map((e, i) => (i === 1 ? { ...e, actor: 'someone-else' } : e));
    const dropped = entries.filter((_, i) => i !== 1);

    expect(verifyAuditChain(tampered)).toMatchObject({ ok: false, brokenAt: entries[1]!.id, reason: expect.stringContaining('changed') });
    expect(verifyAuditChain(dropped)).toMatchObject({ ok: false, brokenAt: entries[2]!.id, reason: expect.stringContaining('removed') });
    expect(() => parseAuditJsonl('{"id":"1-0"}\n')).toThrow('line 1: lacks id or hash');
  });

  it('does not export a broken chain: the migration records why and nothing is written', async () => {
    const auditBucket = uniqueName('audit');
    await s3.send(new CreateBucketCommand({ Bucket: auditBucket }));
    const { id } = await migration(auditBucket);
    const r = createTestRedis();
    const [first] = await r.xrange(engine.keys.audit(id), '-', '+', 'COUNT', 1);
    const fields = first![1];
    const entry = JSON.parse(fields[fields.indexOf('entry') + 1]!) as Record<string, unknown>;
    await r.xdel(engine.keys.audit(id), first![0]);
    await r.xadd(engine.keys.audit(id), '*', 'entry', JSON.stringify({ ...entry, actor: 'forged' }), 'hash', fields[fields.indexOf('hash') + 1]!);
    await r.quit();

    await engine.cancel(id, 'test', 'tampered');
    const m = await waitUntil(id, (x) => x.auditExportError !== undefined, 'the failed export');

    expect(m.auditExportError).toMatch(new RegExp(`^audit chain of ${id} is broken at .*; not exported$`));
    expect(m.auditExport).toBeUndefined();
    await expect(bodyOf(auditBucket, auditExportKey(id))).rejects.toMatchObject({ name: 'NoSuchKey' });
  });
});
