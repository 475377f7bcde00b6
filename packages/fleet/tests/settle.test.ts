import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { Redis } from 'ioredis';
import { MigrationSpecSchema, type Migration } from '@rekey/core';
import { cleanupRedisPrefix, createTestRedis, uniquePrefix } from '@rekey/testing';
import { createAuditLog } from '../src/audit.js';
import type { GateResult } from '../src/gate.js';
import { redisKeys, type RedisKeys } from '../src/keys.js';
import { createSettler } from '../src/settle.js';
import { createProgressStore, type ProgressStore } from '../src/store.js';

const OLD = 'arn:aws:kms:us-east-1:111122223333:key/11111111-1111-1111-1111-111111111111';
const NEW = 'arn:aws:kms:us-east-1:111122223333:key/22222222-2222-2222-2222-222222222222';

const verified: Migration = {
  id: 'm-settle',
  spec: MigrationSpecSchema.parse({ id: 'm-settle', sources: [{ name: 'rows', kind: 'postgres', table: 't', primaryKey: ['id'], column: 'c' }], from: [OLD], to: NEW }),
  state: 'verifying',
  keys: { from: [OLD], to: NEW, aliases: {} },
  createdAt: '2026-11-29T00:00:00.000Z',
  updatedAt: '2026-11-29T00:00:00.000Z',
  verifyRound: 1,
  verifiedAt: '2026-11-29T00:01:00.000Z',
};

const green: GateResult = { ready: true, conditions: [{ name: 'verify-clean', ok: true, detail: 'verify checked 3 items: 0 under the old keys' }], warnings: [] };
const red: GateResult = { ready: false, conditions: [{ name: 'verify-clean', ok: false, detail: 'the verify pass has not finished' }], warnings: [] };

describe('settling a verified migration', () => {
  let redis: Redis;
  let keys: RedisKeys;
  let store: ProgressStore;
  beforeEach(async () => {
    redis = createTestRedis();
    keys = redisKeys(uniquePrefix('settle'));
    store = createProgressStore(redis, keys, createAuditLog(redis, keys));
    await store.create(verified, 'test');
  });
  afterEach(async () => {
    await store.close();
    await cleanupRedisPrefix(redis, keys.prefix);
    redis.disconnect();
  });

  /** What `rekey verify` does to a ready migration: a new round, its pass not yet run. */
  const verifyAgain = () => store.transition('m-settle', 'verifying', { actor: 'test', patch: { verifyRound: 2, verifiedAt: undefined } });

  it('moves a verified migration to ready when the gate is green, and to blocked with the reason when it is red', async () => {
    await createSettler({ store, gateOf: async () => green, actor: 'test' })(verified);
    expect((await store.get('m-settle'))?.state).toBe('ready');

    const ready = (await store.get('m-settle'))!;
    await createSettler({ store, gateOf: async () => red, actor: 'test' })(ready);
    expect(await store.get('m-settle')).toMatchObject({ state: 'blocked', reason: 'the verify pass has not finished' });
  });

  it('does nothing for a record read before `rekey verify` started a new round: the new round is left to run', async () => {
    await store.transition('m-settle', 'ready', { actor: 'test' });
    const ready = (await store.get('m-settle'))!;
    await verifyAgain();

    // The coordinator read the migration (ready, round 1) just before the new round began; the
    // new round's counters are reset, so its gate is red.
    await createSettler({ store, gateOf: async () => red, actor: 'test' })(ready);

    expect(await store.get('m-settle')).toMatchObject({ state: 'verifying', verifyRound: 2 });
  });

  it('does nothing when the new round begins while the gate is being read', async () => {
    const settle = createSettler({ store, gateOf: async () => (await verifyAgain(), red), actor: 'test' });
    await store.transition('m-settle', 'ready', { actor: 'test' });

    await settle((await store.get('m-settle'))!);

    expect(await store.get('m-settle')).toMatchObject({ state: 'verifying', verifyRound: 2 });
  });

  it('does not settle a verifying migration whose verify pass has not finished', async () => {
    await store.transition('m-settle', 'ready', { actor: 'test' });
    const fresh = await verifyAgain();
    let gates = 0;

    await createSettler({ store, gateOf: async () => (gates++, red), actor: 'test' })(fresh);

    expect(gates).toBe(0);
    expect((await store.get('m-settle'))?.state).toBe('verifying');
  });
});
