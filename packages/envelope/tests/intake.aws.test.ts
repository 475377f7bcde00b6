import { CreateQueueCommand, ReceiveMessageCommand, SQSClient } from '@aws-sdk/client-sqs';
import { awsClientConfig, uniqueName } from '@rekey/testing';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createEnvelopeClient } from '../src/index.js';
import { kmsFixture, type KmsFixture } from './helpers/aws.js';

describe("onStale 'enqueue' against aws-local SQS", () => {
  let f: KmsFixture;
  let sqs: SQSClient;

  beforeAll(async () => {
    f = await kmsFixture();
    sqs = new SQSClient(awsClientConfig(f.ep));
  });
  afterAll(async () => {
    sqs?.destroy();
    await f?.close();
  });

  it('sends one well-formed rekey.item per stale item, and nothing for a current one', async () => {
    const queue = await sqs.send(new CreateQueueCommand({ QueueName: uniqueName('rekey-intake') }));
    const queueUrl = queue.QueueUrl!;
    const envelope = createEnvelopeClient({
      kms: { client: f.kms },
      alias: f.alias,
      staleTtlMs: 0,
      intake: { sqs: { client: sqs }, queueUrl, source: 'users-ssn', flushMs: 60_000 },
    });
    const ctx = (id: number) => ({ table: 'users', id: String(id) });
    const old1 = await envelope.encrypt('one', { keyId: f.alias, context: ctx(1) });
    const old2 = await envelope.encrypt('two', { keyId: f.alias, context: ctx(2) });
    await f.moveAlias(f.keyB);
    try {
      const current = await envelope.encrypt('three', { keyId: f.alias, context: ctx(3) });

      const reads = [
        await envelope.decrypt(old1, { context: ctx(1), onStale: 'enqueue', item: { kind: 'row', pk: [1] } }),
        await envelope.decrypt(old1, { context: ctx(1), onStale: 'enqueue', item: { kind: 'row', pk: [1] } }),
        await envelope.decrypt(old2, { context: ctx(2), onStale: 'enqueue', item: { kind: 'row', pk: [2] } }),
        await envelope.decrypt(current, { context: ctx(3), onStale: 'enqueue', item: { kind: 'row', pk: [3] } }),
      ];
      await envelope.flush();
      const got = await sqs.send(new ReceiveMessageCommand({ QueueUrl: queueUrl, MaxNumberOfMessages: 10, WaitTimeSeconds: 1 }));

      expect(reads.map((r) => r.plaintext.toString())).toEqual(['one', 'one', 'two', 'three']);
      expect(reads.map((r) => r.enqueued)).toEqual([true, false, true, undefined]);
      const bodies = (got.Messages ?? []).map((m) => JSON.parse(m.Body!) as unknown);
      expect(bodies).toHaveLength(2);
      expect(bodies).toEqual(
        expect.arrayContaining([
          { type: 'rekey.item', source: 'users-ssn', item: { kind: 'row', pk: [1] } },
          { type: 'rekey.item', source: 'users-ssn', item: { kind: 'row', pk: [2] } },
        ]),
      );
      expect(envelope.stats().intake).toMatchObject({ sent: 2, deduplicated: 1, dropped: 0, failed: 0 });
    } finally {
      await f.moveAlias(f.keyA);
      await envelope.close();
    }
  });
});
