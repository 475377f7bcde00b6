import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Redis } from 'ioredis';
import { cleanupRedisPrefix, createTestRedis, uniquePrefix } from '@rekey/testing';
import { createAuditLog, auditHash, canonicalJson } from '../src/audit.js';
import { redisKeys } from '../src/keys.js';

describe('audit log', () => {
  let redis: Redis;
  const prefix = uniquePrefix('audit');
  const keys = redisKeys(prefix);

  beforeAll(() => {
    redis = createTestRedis();
  });
  afterAll(async () => {
    await cleanupRedisPrefix(redis, prefix);
    await redis.quit();
  });

  it('canonical JSON does not depend on key order', () => {
    expect(canonicalJson({ b: 1, a: { d: [1, { y: 2, x: 1 }], c: null } })).toBe(canonicalJson({ a: { c: null, d: [1, { x: 1, y: 2 }] }, b: 1 }));
  });

  it('chains every entry to the hash of the one before it', async () => {
    const log = createAuditLog(redis, keys);
    const a = await log.append('m1', { actor: 'test', type: 'migration.created', data: { n: 1 } });
    const b = await log.append('m1', { actor: 'test', type: 'state.changed', data: { from: 'created', to: 'enumerating' } });
    expect(a.prev).toBe('');
    expect(b.prev).toBe(a.hash);
    expect(auditHash({ ts: b.ts, actor: b.actor, type: b.type, data: b.data, prev: b.prev })).toBe(b.hash);
    expect(await log.verify('m1')).toEqual({ ok: true, entries: 2 });
  });

  it('concurrent appends never fork the chain', async () => {
    const log = createAuditLog(redis, keys);
    const other = createTestRedis();
    const log2 = createAuditLog(other, keys);
    await Promise.all(Array.from({ length: 20 }, (_, i) => (i % 2 ? log : log2).append('m2', { actor: `w${i}`, type: 'x', data: { i } })));
    await other.quit();
    const v = await log.verify('m2');
    expect(v).toEqual({ ok: true, entries: 20 });
  });

  it('detects an entry whose content was changed', async () => {
    const log = createAuditLog(redis, keys);
    await log.append('m3', { actor: 'test', type: 'a' });
    const e = await log.append('m3', { actor: 'test', type: 'key.disabled', data: { key: 'k1' } });
    await log.append('m3', { actor: 'test', type: 'c' });
    // An attacker with Redis access rewrites the stream with the middle entry's data changed.
    const rows = await redis.xrange(keys.audit('m3'), '-', '+');
    await redis.del(keys.audit('m3'));
    for (const [id, fields] of rows) {
      const entry = JSON.parse(fields[1]!) as Record<string, unknown>;
      if (id === e.id) entry['data'] = { key: 'k2' };
      await redis.xadd(keys.audit('m3'), '*', 'entry', JSON.stringify(entry), 'hash', fields[3]!);
    }
    const v = await log.verify('m3');
    expect(v.ok).toBe(false);
  });

  it('detects a removed entry', async () => {
    const log = createAuditLog(redis, keys);
    await log.append('m4', { actor: 'test', type: 'a' });
    const b = await log.append('m4', { actor: 'test', type: 'b' });
    await log.append('m4', { actor: 'test', type: 'c' });
    await redis.xdel(keys.audit('m4'), b.id);
    const v = await log.verify('m4');
    expect(v).toMatchObject({ ok: false, reason: expect.stringMatching(/removed or reordered/) });
  });

  it('detects entries cut from the end', async () => {
    const log = createAuditLog(redis, keys);
    await log.append('m5', { actor: 'test', type: 'a' });
    const b = await log.append('m5', { actor: 'test', type: 'b' });
    await redis.xdel(keys.audit('m5'), b.id);
    const v = await log.verify('m5');
    expect(v).toMatchObject({ ok: false, brokenAt: 'head' });
  });
});
