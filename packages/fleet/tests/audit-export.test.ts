import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createHash } from 'node:crypto';
import { CreateBucketCommand, GetObjectCommand, PutObjectCommand } from '@aws-sdk/client-s3';
import { ValidationError } from '@rekey/core';
import { createTestRedis, uniqueName } from '@rekey/testing';
import { auditExportKey, parseAuditJsonl, verifyAuditChain } from '../src/index.js';
import { startEngineFixture, type EngineFixture } from './engine-fixture.js';

describe('audit export: a finished migration writes its audit log as JSONL to auditBucket', () => {
  let f: EngineFixture;

  const bodyOf = async (Bucket: string, Key: string) => (await (await f.s3.send(new GetObjectCommand({ Bucket, Key }))).Body!.transformToString());

  async function migration(auditBucket: string): Promise<{ id: string; oldKey: string }> {
    const oldKey = await f.newKey('old');
    const to = await f.newKey('new');
    const bucket = uniqueName('auditsrc');
    await f.s3.send(new CreateBucketCommand({ Bucket: bucket }));
    for (let i = 0; i < 3; i++) await f.s3.send(new PutObjectCommand({ Bucket: bucket, Key: `o/${i}`, Body: `body ${i}`, ServerSideEncryption: 'aws:kms', SSEKMSKeyId: oldKey }));
    const m = await f.engine.createMigration({ sources: [{ name: 'objs', kind: 's3-sse-kms', bucket }], from: [oldKey], to, auditBucket }, 'test');
    await f.waitUntil(m.id, (x) => x.state === 'ready', 'ready');
    return { id: m.id, oldKey };
  }

  beforeAll(async () => {
    f = await startEngineFixture('auditexp');
  });

  afterAll(async () => {
    await f?.close();
  });

  it('refuses a migration whose auditBucket does not exist, naming the bucket', async () => {
    const from = await f.newKey('old');
    const to = await f.newKey('new');
    const src = uniqueName('auditsrc');
    await f.s3.send(new CreateBucketCommand({ Bucket: src }));
    const missing = uniqueName('nobucket');

    const err = await f.engine.createMigration({ sources: [{ name: 'objs', kind: 's3-sse-kms', bucket: src }], from: [from], to, auditBucket: missing }, 'test').catch((e: unknown) => e);

    expect(err).toBeInstanceOf(ValidationError);
    expect((err as ValidationError).problems).toEqual([`auditBucket ${missing}: the bucket does not exist`]);
  });

  it('after finalize, writes every entry with its hash to rekey/audit/<id>.jsonl, a chain that checks and ends at the recorded head', async () => {
    const auditBucket = uniqueName('audit');
    await f.s3.send(new CreateBucketCommand({ Bucket: auditBucket }));
    const { id, oldKey } = await migration(auditBucket);

    await f.engine.finalize(id, { actor: 'test' });
    const m = await f.waitUntil(id, (x) => x.auditExport !== undefined, 'the audit export');
    const text = await bodyOf(auditBucket, auditExportKey(id));
    const entries = parseAuditJsonl(text);

    expect(m.auditExport).toMatchObject({ bucket: auditBucket, key: `rekey/audit/${id}.jsonl`, entries: entries.length, head: entries.at(-1)!.hash });
    expect(m.auditExport!.sha256).toBe(createHash('sha256').update(text).digest('hex'));
    expect(verifyAuditChain(entries)).toEqual({ ok: true, entries: entries.length });
    expect(entries.map((e) => e.type)).toEqual(expect.arrayContaining(['migration.created', 'state.changed', 'key.disabled']));
    expect(entries.find((e) => e.type === 'key.disabled')!.data).toMatchObject({ key: oldKey, forced: false });
    // The export itself is recorded in the live log, after the exported head.
    const live = await f.engine.audit.read(id);
    expect(live.at(-1)).toMatchObject({ type: 'audit.exported', prev: m.auditExport!.head, data: { bucket: auditBucket, entries: entries.length } });
    expect((await f.engine.audit.verify(id)).ok).toBe(true);
  });

  it('a changed line in the exported file no longer checks', async () => {
    const auditBucket = uniqueName('audit');
    await f.s3.send(new CreateBucketCommand({ Bucket: auditBucket }));
    const { id } = await migration(auditBucket);
    await f.engine.cancel(id, 'test', 'exporting a cancelled migration too');
    await f.waitUntil(id, (x) => x.auditExport !== undefined, 'the audit export');
    const entries = parseAuditJsonl(await bodyOf(auditBucket, auditExportKey(id)));

    const tampered = entries.map((e, i) => (i === 1 ? { ...e, actor: 'someone-else' } : e));
    const dropped = entries.filter((_, i) => i !== 1);

    expect(verifyAuditChain(tampered)).toMatchObject({ ok: false, brokenAt: entries[1]!.id, reason: expect.stringContaining('changed') });
    expect(verifyAuditChain(dropped)).toMatchObject({ ok: false, brokenAt: entries[2]!.id, reason: expect.stringContaining('removed') });
    expect(() => parseAuditJsonl('{"id":"1-0"}\n')).toThrow('line 1: lacks id or hash');
  });

  it('does not export a broken chain: the migration records why and nothing is written', async () => {
    const auditBucket = uniqueName('audit');
    await f.s3.send(new CreateBucketCommand({ Bucket: auditBucket }));
    const { id } = await migration(auditBucket);
    const r = createTestRedis();
    const [first] = await r.xrange(f.engine.keys.audit(id), '-', '+', 'COUNT', 1);
    const fields = first![1];
    const entry = JSON.parse(fields[fields.indexOf('entry') + 1]!) as Record<string, unknown>;
    await r.xdel(f.engine.keys.audit(id), first![0]);
    await r.xadd(f.engine.keys.audit(id), '*', 'entry', JSON.stringify({ ...entry, actor: 'forged' }), 'hash', fields[fields.indexOf('hash') + 1]!);
    await r.quit();

    await f.engine.cancel(id, 'test', 'tampered');
    const m = await f.waitUntil(id, (x) => x.auditExportError !== undefined, 'the failed export');

    expect(m.auditExportError).toMatch(new RegExp(`^audit chain of ${id} is broken at .*; not exported$`));
    expect(m.auditExport).toBeUndefined();
    await expect(bodyOf(auditBucket, auditExportKey(id))).rejects.toMatchObject({ name: 'NoSuchKey' });
  });
});
