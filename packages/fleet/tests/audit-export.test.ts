import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createHash } from 'node:crypto';
import { CreateBucketCommand, GetObjectCommand, PutObjectCommand, type S3Client } from '@aws-sdk/client-s3';
import { ValidationError } from '@rekey/core';
import { createTestRedis, uniqueName } from '@rekey/testing';
import { auditExportKey, auditHash, auditJsonl, canonicalJson, exportAudit, parseAuditJsonl, verifyAuditChain, type StoredAuditEntry } from '../src/index.js';
import { startEngineFixture, type EngineFixture } from './engine-fixture.js';

/** A migration of three SSE-KMS objects with an audit bucket, created (not waited for). */
async function createAudited(f: EngineFixture, auditBucket: string): Promise<{ id: string; oldKey: string }> {
  const oldKey = await f.newKey('old');
  const to = await f.newKey('new');
  const bucket = uniqueName('auditsrc');
  await f.s3.send(new CreateBucketCommand({ Bucket: bucket }));
  for (let i = 0; i < 3; i++) await f.s3.send(new PutObjectCommand({ Bucket: bucket, Key: `o/${i}`, Body: `body ${i}`, ServerSideEncryption: 'aws:kms', SSEKMSKeyId: oldKey }));
  const m = await f.engine.createMigration({ sources: [{ name: 'objs', kind: 's3-sse-kms', bucket }], from: [oldKey], to, auditBucket }, 'test');
  return { id: m.id, oldKey };
}

/** The text of an object. */
const bodyOf = async (s3: S3Client, Bucket: string, Key: string) => (await (await s3.send(new GetObjectCommand({ Bucket, Key }))).Body!.transformToString());

describe('audit export: a finished migration writes its audit log as JSONL to auditBucket', () => {
  let f: EngineFixture;


  async function migration(auditBucket: string): Promise<{ id: string; oldKey: string }> {
    const created = await createAudited(f, auditBucket);
    await f.waitUntil(created.id, (x) => x.state === 'ready', 'ready');
    return created;
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
    const text = await bodyOf(f.s3, auditBucket, auditExportKey(id));
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
    const entries = parseAuditJsonl(await bodyOf(f.s3, auditBucket, auditExportKey(id)));

    const tampered = entries.map((e, i) => (i === 1 ? { ...e, actor: 'someone-else' } : e));
    const dropped = entries.filter((_, i) => i !== 1);

    expect(verifyAuditChain(tampered)).toMatchObject({ ok: false, brokenAt: entries[1]!.id, reason: expect.stringContaining('changed') });
    expect(verifyAuditChain(dropped)).toMatchObject({ ok: false, brokenAt: entries[2]!.id, reason: expect.stringContaining('removed') });
    expect(() => parseAuditJsonl('{"id":"1-0"}\n')).toThrow('line 1: lacks id or hash');
  });

  it('does not export a broken chain: the migration records why, and the bucket keeps the last checkpoint', async () => {
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

    expect(m.auditExportError).toMatch(new RegExp(`^audit chain of ${id} is broken at .*; not (exported|written)$`));
    expect(m.auditExport).toBeUndefined();
    // The bucket holds the last checkpoint taken while the migration ran: the log before the edit.
    const copy = parseAuditJsonl(await bodyOf(f.s3, auditBucket, auditExportKey(id)));
    expect(verifyAuditChain(copy).ok).toBe(true);
    expect(copy.map((e) => e.actor)).not.toContain('forged');
  });
});

describe('audit checkpoints: a running migration keeps its log so far in auditBucket', () => {
  let f: EngineFixture;

  beforeAll(async () => {
    f = await startEngineFixture('auditckpt', { coordinator: { auditCheckpointMs: 200 } });
  });

  afterAll(async () => {
    await f?.close();
  });

  async function running(): Promise<{ id: string; auditBucket: string }> {
    const auditBucket = uniqueName('audit');
    await f.s3.send(new CreateBucketCommand({ Bucket: auditBucket }));
    const { id } = await createAudited(f, auditBucket);
    await f.waitUntil(id, (x) => x.state === 'ready', 'ready');
    return { id, auditBucket };
  }

  it('writes the log so far while the migration runs, and each copy extends the one before', async () => {
    const { id, auditBucket } = await running();
    const live = await f.engine.audit.read(id);
    const first = await f.waitUntil(id, (x) => x.auditCheckpoint?.entries === live.length, 'a checkpoint of the whole log');
    const copy1 = parseAuditJsonl(await bodyOf(f.s3, auditBucket, auditExportKey(id)));
    expect(first.auditCheckpoint).toMatchObject({ bucket: auditBucket, key: auditExportKey(id), entries: copy1.length, head: copy1.at(-1)!.hash });
    expect(first.auditCheckpoint!.sha256).toBe(createHash('sha256').update(auditJsonl(copy1)).digest('hex'));
    expect(verifyAuditChain(copy1)).toEqual({ ok: true, entries: live.length });

    await f.engine.audit.append(id, { actor: 'test', type: 'note', data: { why: 'a later entry' } });
    await f.waitUntil(id, (x) => x.auditCheckpoint?.entries === live.length + 1, 'the next checkpoint');
    const copy2 = parseAuditJsonl(await bodyOf(f.s3, auditBucket, auditExportKey(id)));
    expect(copy2.slice(0, copy1.length)).toEqual(copy1);
    expect(copy2.at(-1)).toMatchObject({ type: 'note', prev: copy1.at(-1)!.hash });
  });

  it('refuses a log rewritten in Redis with its hashes recomputed: the bucket keeps the copy, the migration says where they part', async () => {
    const { id, auditBucket } = await running();
    const before = await f.waitUntil(id, (x) => x.auditCheckpoint !== undefined, 'a checkpoint');
    const copy = await bodyOf(f.s3, auditBucket, auditExportKey(id));
    // Someone with write access to Redis rewrites history: the second entry gets another actor,
    // and every hash from there on is recomputed, so the chain checks on its own.
    const entries = await f.engine.audit.read(id);
    const forged: StoredAuditEntry[] = [];
    for (const [i, e] of entries.entries()) {
      const { id: sid, hash: _hash, ...entry } = e;
      const body = { ...entry, ...(i === 1 && { actor: 'someone-else' }), prev: forged.at(-1)?.hash ?? entry.prev };
      forged.push({ ...body, id: sid, hash: auditHash(body) });
    }
    const r = createTestRedis();
    await r.del(f.engine.keys.audit(id));
    for (const e of forged) {
      const { id: _sid, hash, ...entry } = e;
      await r.xadd(f.engine.keys.audit(id), '*', 'entry', canonicalJson(entry), 'hash', hash);
    }
    await r.set(f.engine.keys.auditHead(id), forged.at(-1)!.hash);
    await r.quit();
    expect((await f.engine.audit.verify(id)).ok).toBe(true);

    const m = await f.waitUntil(id, (x) => x.auditExportError !== undefined, 'the refused checkpoint');
    expect(m.auditExportError).toMatch(new RegExp(`^the audit log of ${id} in Redis no longer extends the copy in s3://${auditBucket}/${auditExportKey(id)}: its entry ${before.auditCheckpoint!.entries} has hash ${forged[before.auditCheckpoint!.entries - 1]!.hash}, the copy ends at ${before.auditCheckpoint!.head}`));
    expect(await bodyOf(f.s3, auditBucket, auditExportKey(id))).toBe(copy);

    // Nor does the final export write it.
    await f.engine.cancel(id, 'test', 'tampered log');
    const end = await f.waitUntil(id, (x) => x.state === 'cancelled', 'cancelled');
    await expect(exportAudit({ s3: f.s3, audit: f.engine.audit }, end)).rejects.toThrow(/no longer extends the copy/);
    expect((await f.engine.get(id)).auditExport).toBeUndefined();
    expect(await bodyOf(f.s3, auditBucket, auditExportKey(id))).toBe(copy);
  });
});

describe('audit checkpoints follow state changes at once', () => {
  let f: EngineFixture;

  beforeAll(async () => {
    // An hour between timed checkpoints: every copy this test sees comes from a state change.
    f = await startEngineFixture('auditstate', { coordinator: { auditCheckpointMs: 3_600_000 } });
  });

  afterAll(async () => {
    await f?.close();
  });

  it('copies the log with the entry of each new state, although the next timed checkpoint is an hour away', async () => {
    const auditBucket = uniqueName('audit');
    await f.s3.send(new CreateBucketCommand({ Bucket: auditBucket }));
    const { id } = await createAudited(f, auditBucket);

    const m = await f.waitUntil(id, (x) => x.state === 'ready' && x.auditCheckpoint?.entries === 5, 'the copy of the ready state');
    const entries = parseAuditJsonl(await bodyOf(f.s3, auditBucket, auditExportKey(id)));

    expect(entries.map((e) => (e.type === 'state.changed' ? `-> ${String(e.data['to'])}` : e.type))).toEqual(['migration.created', '-> enumerating', '-> running', '-> verifying', '-> ready']);
    expect(m.auditCheckpoint!.head).toBe(entries.at(-1)!.hash);
  });
});
