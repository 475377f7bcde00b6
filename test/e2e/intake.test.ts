import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { randomBytes } from 'node:crypto';
import { rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { CreateAliasCommand, DescribeKeyCommand, RotateKeyOnDemandCommand, UpdateAliasCommand } from '@aws-sdk/client-kms';
import { CreateBucketCommand } from '@aws-sdk/client-s3';
import {
  CreateQueueCommand,
  GetQueueAttributesCommand,
  ReceiveMessageCommand,
  SendMessageBatchCommand,
  SendMessageCommand,
  SQSClient,
} from '@aws-sdk/client-sqs';
import { createEnvelopeClient, type EnvelopeClient } from '@rekey/envelope';
import { INTAKE_AUDIT_ID, createAuditLog, readIntakeStats, redisKeys } from '@rekey/fleet';
import { createTestRedis, TEST_CREDENTIALS } from '@rekey/testing';
import { startStack, type Stack } from './harness.js';
import { createKey, sha, times } from './seed.js';

const N = 12;
const CONTEXT = { app: 'e2e-intake' };

/** An EventBridge "AWS API Call via CloudTrail" event for a KMS alias call, shaped as AWS documents it. */
function aliasEvent(eventName: 'UpdateAlias' | 'CreateAlias', aliasName: string, targetArn: string) {
  const [, , , region, account] = targetArn.split(':');
  return {
    version: '0',
    id: `e2e-${randomBytes(8).toString('hex')}`,
    'detail-type': 'AWS API Call via CloudTrail',
    source: 'aws.kms',
    account,
    time: new Date().toISOString(),
    region,
    resources: [],
    detail: {
      eventVersion: '1.08',
      eventTime: new Date().toISOString(),
      eventSource: 'kms.amazonaws.com',
      eventName,
      awsRegion: region,
      requestParameters: { aliasName, targetKeyId: targetArn.split('/')[1] },
      responseElements: { keyId: targetArn },
      eventType: 'AwsApiCall',
    },
  };
}

/** An EventBridge "KMS CMK Rotation" event, shaped as AWS KMS documents it. */
function rotationEvent(keyArn: string) {
  const [, , , region, account] = keyArn.split(':');
  return {
    version: '0',
    id: `e2e-${randomBytes(8).toString('hex')}`,
    'detail-type': 'KMS CMK Rotation',
    source: 'aws.kms',
    account,
    time: new Date().toISOString(),
    region,
    resources: [keyArn],
    detail: { 'key-id': keyArn.split('/')[1] },
  };
}

async function waitUntil<T>(what: string, probe: () => Promise<T | undefined>, timeoutMs = 90_000): Promise<T> {
  const until = Date.now() + timeoutMs;
  while (Date.now() < until) {
    const v = await probe();
    if (v !== undefined) return v;
    await sleep(250);
  }
  throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
}

describe('SQS event intake across processes (coordinator with intake + worker, aws-local SQS/KMS/S3, Redis)', () => {
  let stack: Stack;
  let sqs: SQSClient;
  let redis: ReturnType<typeof createTestRedis>;
  let envelope: EnvelopeClient;
  let queueUrl: string;
  let dlqUrl: string;
  let configPath: string;
  const run = randomBytes(3).toString('hex');
  const alias = { dedupe: `alias/e2e-intake-dedupe-${run}`, move: `alias/e2e-intake-move-${run}`, rot: `alias/e2e-intake-rot-${run}` };
  const bucket = { dedupe: `e2e-intake-dedupe-${run}`, move: `e2e-intake-move-${run}`, rot: `e2e-intake-rot-${run}` };
  const key: Record<'dedupe' | 'move' | 'rot', string> = { dedupe: '', move: '', rot: '' };
  const hashes = new Map<string, string>();

  const keyOf = async (b: string, k: string) => (await envelope.getObject(stack.s3, { Bucket: b, Key: k, context: CONTEXT })).keyArn;
  const reEncryptCalls = (since: number) => stack.aws.usage.all().slice(since).filter((e) => e.eventName === 'ReEncrypt').length;

  beforeAll(async () => {
    configPath = join(tmpdir(), `rekey-e2e-intake-${run}.yaml`);
    // The child processes read REKEY_CONFIG from the environment the stack captures at start.
    process.env['REKEY_CONFIG'] = configPath;
    stack = await startStack({ coordinator: false, workers: 0 });
    delete process.env['REKEY_CONFIG'];
    sqs = new SQSClient({ endpoint: stack.aws.url, region: 'us-east-1', credentials: TEST_CREDENTIALS });
    redis = createTestRedis();
    envelope = createEnvelopeClient({ kms: { client: stack.kms } });

    dlqUrl = (await sqs.send(new CreateQueueCommand({ QueueName: `intake-dlq-${run}` }))).QueueUrl!;
    const dlqArn = (await sqs.send(new GetQueueAttributesCommand({ QueueUrl: dlqUrl, AttributeNames: ['QueueArn'] }))).Attributes!['QueueArn']!;
    queueUrl = (await sqs.send(new CreateQueueCommand({
      QueueName: `intake-${run}`,
      Attributes: { VisibilityTimeout: '2', RedrivePolicy: JSON.stringify({ deadLetterTargetArn: dlqArn, maxReceiveCount: 2 }) },
    }))).QueueUrl!;

    for (const k of ['dedupe', 'move', 'rot'] as const) {
      key[k] = await createKey(stack.kms, `intake ${k}`);
      await stack.kms.send(new CreateAliasCommand({ AliasName: alias[k], TargetKeyId: key[k] }));
      await stack.s3.send(new CreateBucketCommand({ Bucket: bucket[k] }));
      await times(N, 6, async (i) => {
        const body = Buffer.from(`${k} object ${i} ${randomBytes(16).toString('hex')}`);
        hashes.set(`${bucket[k]}/doc/${i}`, sha(body));
        await envelope.putObject(stack.s3, { Bucket: bucket[k], Key: `doc/${i}`, Body: body, keyId: alias[k], context: CONTEXT });
      });
    }
    await writeFile(configPath, [
      'sources:',
      `  - { name: dedupe, kind: s3-envelope, bucket: ${bucket.dedupe} }`,
      `  - { name: moved, kind: s3-envelope, bucket: ${bucket.move} }`,
      `  - { name: rot, kind: s3-envelope, bucket: ${bucket.rot} }`,
      'bindings:',
      `  ${alias.dedupe}: [dedupe]`,
      `  ${alias.move}: [moved]`,
      `  ${alias.rot}: [rot]`,
      'intake:',
      `  queueUrl: ${queueUrl}`,
      '  waitSeconds: 1',
      '  onRotation: refresh',
      '  autoMigrate: true',
      '  dedupeWindowSeconds: 300',
      '',
    ].join('\n'));
    await stack.startCoordinator();
    stack.startWorker();
    // The intake records each bound alias's key when it starts; alias moves are judged against that.
    const keys = redisKeys(stack.prefix);
    await waitUntil('the intake to record the bound aliases', async () =>
      (await redis.hlen(keys.intakeAliases())) === 3 ? true : undefined,
    );
  });

  afterAll(async () => {
    await envelope?.close();
    sqs?.destroy();
    await stack?.stop();
    await redis?.quit();
    if (configPath) await rm(configPath, { force: true });
  });

  it('re-encrypts an app-requested item once although the request came three times', async () => {
    const next = await createKey(stack.kms, 'dedupe next');
    await stack.kms.send(new UpdateAliasCommand({ AliasName: alias.dedupe, TargetKeyId: next }));
    const mark = stack.aws.usage.all().length;
    const body = JSON.stringify({ type: 'rekey.item', source: 'dedupe', item: { kind: 's3', key: 'doc/3' } });
    await sqs.send(new SendMessageBatchCommand({ QueueUrl: queueUrl, Entries: [0, 1, 2].map((i) => ({ Id: String(i), MessageBody: body })) }));

    await waitUntil('doc/3 to move to the new key', async () => ((await keyOf(bucket.dedupe, 'doc/3')) === next ? true : undefined));
    await waitUntil('all three requests to be handled', async () => {
      const s = await readIntakeStats(redis, redisKeys(stack.prefix));
      return (s['items.enqueued'] ?? 0) + (s['items.deduplicated'] ?? 0) >= 3 ? s : undefined;
    });
    await sleep(1500);

    const stats = await readIntakeStats(redis, redisKeys(stack.prefix));
    expect(stats['items.enqueued']).toBe(1);
    expect(stats['items.deduplicated']).toBe(2);
    expect(stats['item.reencrypted']).toBe(1);
    expect(reEncryptCalls(mark)).toBe(1);
    const got = await envelope.getObject(stack.s3, { Bucket: bucket.dedupe, Key: 'doc/3', context: CONTEXT });
    expect(sha(got.plaintext)).toBe(hashes.get(`${bucket.dedupe}/doc/3`));
    expect(await keyOf(bucket.dedupe, 'doc/4')).toBe(key.dedupe);
  });

  it('starts the bound migration from the previous key when an UpdateAlias event arrives, and audits it', async () => {
    const next = await createKey(stack.kms, 'move next');
    await stack.kms.send(new UpdateAliasCommand({ AliasName: alias.move, TargetKeyId: next }));
    const event = aliasEvent('UpdateAlias', alias.move, next);
    await sqs.send(new SendMessageCommand({ QueueUrl: queueUrl, MessageBody: JSON.stringify(event) }));

    const m = await waitUntil('a migration to the new key', async () => (await stack.api.list()).find((x) => x.keys.to === next));
    expect(m.keys.from).toEqual([key.move]);
    expect(m.spec.sources.map((s) => s.name)).toEqual(['moved']);
    await stack.waitForState(m.id, ['ready', 'blocked', 'paused']);
    expect((await stack.api.get(m.id)).state).toBe('ready');
    for (let i = 0; i < N; i++) {
      const got = await envelope.getObject(stack.s3, { Bucket: bucket.move, Key: `doc/${i}`, context: CONTEXT });
      expect(got.keyArn).toBe(next);
      expect(sha(got.plaintext)).toBe(hashes.get(`${bucket.move}/doc/${i}`));
    }
    const entries = await createAuditLog(redis, redisKeys(stack.prefix)).read(INTAKE_AUDIT_ID);
    const entry = entries.find((e) => e.data['eventId'] === event.id);
    expect(entry).toMatchObject({ type: 'intake.alias-moved', data: { alias: alias.move, from: key.move, to: next, bound: true, outcome: '1 migration(s) started' } });
  });

  it('starts a refresh migration when a KMS CMK Rotation event arrives for a bound key', async () => {
    await stack.kms.send(new RotateKeyOnDemandCommand({ KeyId: key.rot }));
    const event = rotationEvent(key.rot);
    await sqs.send(new SendMessageCommand({ QueueUrl: queueUrl, MessageBody: JSON.stringify(event) }));

    const m = await waitUntil('a refresh migration', async () => (await stack.api.list()).find((x) => x.spec.refresh === true && x.keys.to === key.rot));
    expect(m.keys.from).toEqual([key.rot]);
    await stack.waitForState(m.id, ['ready', 'blocked', 'paused']);
    const st = await stack.api.status(m.id);
    expect(st.migration.state).toBe('ready');
    expect(st.totals.outcomes['reencrypted']).toBe(N);
    for (let i = 0; i < N; i++) {
      const got = await envelope.getObject(stack.s3, { Bucket: bucket.rot, Key: `doc/${i}`, context: CONTEXT });
      expect(sha(got.plaintext)).toBe(hashes.get(`${bucket.rot}/doc/${i}`));
    }
    const entries = await createAuditLog(redis, redisKeys(stack.prefix)).read(INTAKE_AUDIT_ID);
    expect(entries.find((e) => e.data['eventId'] === event.id)).toMatchObject({ type: 'intake.key-rotated', data: { key: key.rot, outcome: '1 refresh migration(s) started' } });
  });

  it('moves poison messages to the DLQ after maxReceiveCount and keeps handling good ones', async () => {
    const poison = ['this is not json', JSON.stringify({ type: 'rekey.item', source: 'no-such-source', item: { kind: 's3', key: 'x' } })];
    for (const body of poison) await sqs.send(new SendMessageCommand({ QueueUrl: queueUrl, MessageBody: body }));
    const target = (await stack.kms.send(new DescribeKeyCommand({ KeyId: alias.dedupe }))).KeyMetadata!.Arn!;
    await sqs.send(new SendMessageCommand({ QueueUrl: queueUrl, MessageBody: JSON.stringify({ type: 'rekey.item', source: 'dedupe', item: { kind: 's3', key: 'doc/7' } }) }));

    const dead = new Map<string, string>();
    await waitUntil('both poison messages in the DLQ', async () => {
      const r = await sqs.send(new ReceiveMessageCommand({ QueueUrl: dlqUrl, MaxNumberOfMessages: 10, WaitTimeSeconds: 1, VisibilityTimeout: 60 }));
      for (const msg of r.Messages ?? []) dead.set(msg.MessageId!, msg.Body!);
      return dead.size >= 2 ? true : undefined;
    });
    expect([...dead.values()].sort()).toEqual([...poison].sort());
    await waitUntil('doc/7 to move while poison was on the queue', async () => ((await keyOf(bucket.dedupe, 'doc/7')) === target ? true : undefined));
    const stats = await readIntakeStats(redis, redisKeys(stack.prefix));
    expect(stats['messages.rejected.unique']).toBe(2);
    expect(stats['messages.rejected']).toBeGreaterThanOrEqual(4);

    // Intake is still polling after the poison: a later request is handled too.
    await sqs.send(new SendMessageCommand({ QueueUrl: queueUrl, MessageBody: JSON.stringify({ type: 'rekey.item', source: 'dedupe', item: { kind: 's3', key: 'doc/8' } }) }));
    await waitUntil('doc/8 to move after the poison went to the DLQ', async () => ((await keyOf(bucket.dedupe, 'doc/8')) === target ? true : undefined));
  });
});
