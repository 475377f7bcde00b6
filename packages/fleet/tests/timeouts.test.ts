import { setTimeout as sleep } from 'node:timers/promises';
import { CreateBucketCommand, PutObjectCommand } from '@aws-sdk/client-s3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { uniqueName } from '@rekey/testing';
import { startEngineFixture, type EngineFixture } from './engine-fixture.js';

describe('an AWS endpoint that stops answering (real Redis, Postgres, aws-local)', () => {
  let f: EngineFixture;

  beforeAll(async () => {
    // The SDK has no timeout by default: a stalled response would hold its item and batch forever.
    f = await startEngineFixture('timeouts', { db: true, timeouts: { kmsIdleMs: 300, s3IdleMs: 300 } });
  });

  afterAll(async () => {
    f.ep.local?.controls.setLatency('kms:ReEncrypt', null);
    f.ep.local?.controls.setLatency('s3:UpdateObjectEncryption', null);
    await f?.close();
  });

  it('times out the stalled ReEncrypt calls, retries them, and finishes once KMS answers again', async () => {
    const oldKey = await f.newKey('timeouts old');
    const newKey = await f.newKey('timeouts new');
    const rows = await f.seedSecrets(oldKey, 20);
    // Each ReEncrypt now waits 20 s before aws-local answers: without a timeout, every item would too.
    f.ep.local!.controls.setLatency('kms:ReEncrypt', { fixedMs: 20_000 });
    const m = await f.engine.createMigration(
      { sources: [rows], from: [oldKey], to: newKey, options: { concurrency: 4 } },
      'test',
    );
    const timedOut = async () =>
      (await f.engine.metrics.kmsRequests.get()).values.filter((v) => v.labels.operation === 'ReEncrypt' && v.labels.outcome === 'retryable').reduce((n, v) => n + v.value, 0);
    for (let i = 0; i < 100 && (await timedOut()) < 4; i++) await sleep(100);
    expect(await timedOut()).toBeGreaterThanOrEqual(4);
    f.ep.local!.controls.setLatency('kms:ReEncrypt', null);

    const settled = await f.waitUntil(m.id, (x) => ['ready', 'blocked', 'paused'].includes(x.state), 'settling');
    expect(settled.state).toBe('ready');
    const st = await f.engine.status(m.id);
    expect(st.totals.outcomes).toMatchObject({ reencrypted: 20, 'already-current': 0, failed: 0 });
  });

  it('times out the stalled S3 writes, retries them, and finishes once S3 answers again', async () => {
    const oldKey = await f.newKey('timeouts s3 old');
    const newKey = await f.newKey('timeouts s3 new');
    const Bucket = uniqueName('timeouts');
    await f.s3.send(new CreateBucketCommand({ Bucket }));
    for (let i = 0; i < 12; i++) {
      await f.s3.send(new PutObjectCommand({ Bucket, Key: `o/${i}`, Body: `body ${i}`, ServerSideEncryption: 'aws:kms', SSEKMSKeyId: oldKey }));
    }
    const writes = () => f.ep.local!.controls.getCounters()['s3:UpdateObjectEncryption']?.calls ?? 0;
    const before = writes();
    // Each UpdateObjectEncryption now waits 20 s before aws-local answers.
    f.ep.local!.controls.setLatency('s3:UpdateObjectEncryption', { fixedMs: 20_000 });
    const m = await f.engine.createMigration({ sources: [{ name: 'objs', kind: 's3-sse-kms', bucket: Bucket }], from: [oldKey], to: newKey, options: { concurrency: 4 } }, 'test');
    // 4 stalled writes in flight; only a timeout lets more be sent while the stall lasts.
    for (let i = 0; i < 100 && writes() - before < 8; i++) await sleep(100);
    expect(writes() - before).toBeGreaterThanOrEqual(8);
    f.ep.local!.controls.setLatency('s3:UpdateObjectEncryption', null);

    const settled = await f.waitUntil(m.id, (x) => ['ready', 'blocked', 'paused'].includes(x.state), 'settling');
    expect(settled.state).toBe('ready');
    expect((await f.engine.status(m.id)).totals.outcomes).toMatchObject({ reencrypted: 12, 'already-current': 0, failed: 0 });
  });
});
