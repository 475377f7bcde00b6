import { createHash } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  ChangeMessageVisibilityBatchCommand,
  ChangeMessageVisibilityCommand,
  CreateQueueCommand,
  DeleteMessageBatchCommand,
  DeleteMessageCommand,
  DeleteQueueCommand,
  GetQueueAttributesCommand,
  GetQueueUrlCommand,
  ListDeadLetterSourceQueuesCommand,
  ListQueuesCommand,
  ListQueueTagsCommand,
  PurgeQueueCommand,
  ReceiveMessageCommand,
  SendMessageBatchCommand,
  SendMessageCommand,
  SetQueueAttributesCommand,
  SQSClient,
  TagQueueCommand,
  UntagQueueCommand,
  type Message,
} from '@aws-sdk/client-sqs';
import { XMLParser } from 'fast-xml-parser';
import { SqsService } from '../src/sqs/service.js';
import { clientConfig, startEndpoint, uniqueName, type Endpoint } from './helpers.js';

let ep: Endpoint;
let sqs: SQSClient;

beforeAll(async () => {
  ep = await startEndpoint();
  sqs = new SQSClient(clientConfig(ep));
});

afterAll(async () => {
  sqs.destroy();
  await ep.close();
});

/** The error a promise rejects with (fails the test when it resolves). */
async function failure(p: Promise<unknown>): Promise<Error & { $metadata?: { httpStatusCode?: number }; Code?: string }> {
  try {
    await p;
  } catch (err) {
    return err as Error & { $metadata?: { httpStatusCode?: number }; Code?: string };
  }
  throw new Error('expected the call to fail, but it succeeded');
}

async function newQueue(attributes?: Record<string, string>, base = 'sqs'): Promise<string> {
  const out = await sqs.send(new CreateQueueCommand({ QueueName: uniqueName(base), Attributes: attributes }));
  if (!out.QueueUrl) throw new Error('CreateQueue returned no QueueUrl');
  return out.QueueUrl;
}

async function attrs(QueueUrl: string, names: string[]): Promise<Record<string, string>> {
  const out = await sqs.send(new GetQueueAttributesCommand({ QueueUrl, AttributeNames: names as never }));
  return out.Attributes ?? {};
}

async function receiveOne(QueueUrl: string, extra: Partial<ConstructorParameters<typeof ReceiveMessageCommand>[0]> = {}) {
  const out = await sqs.send(new ReceiveMessageCommand({ QueueUrl, MaxNumberOfMessages: 1, ...extra }));
  return out.Messages?.[0];
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe('queues (JSON protocol)', () => {
  it('creates a queue, finds its URL by name and lists it by prefix with paging', async () => {
    const prefix = uniqueName('list');
    const urls: string[] = [];
    for (const n of ['a', 'b', 'c']) {
      const out = await sqs.send(new CreateQueueCommand({ QueueName: `${prefix}-${n}` }));
      urls.push(out.QueueUrl ?? '');
    }
    expect(urls[0]).toMatch(new RegExp(`/\\d{12}/${prefix}-a$`));

    const byName = await sqs.send(new GetQueueUrlCommand({ QueueName: `${prefix}-b` }));
    expect(byName.QueueUrl).toBe(urls[1]);

    const page1 = await sqs.send(new ListQueuesCommand({ QueueNamePrefix: prefix, MaxResults: 2 }));
    expect(page1.QueueUrls).toHaveLength(2);
    expect(page1.NextToken).toBeTruthy();
    const page2 = await sqs.send(new ListQueuesCommand({ QueueNamePrefix: prefix, MaxResults: 2, NextToken: page1.NextToken }));
    expect(page2.NextToken).toBeUndefined();
    expect([...(page1.QueueUrls ?? []), ...(page2.QueueUrls ?? [])].sort()).toEqual([...urls].sort());

    const none = await sqs.send(new ListQueuesCommand({ QueueNamePrefix: uniqueName('nothing') }));
    expect(none.QueueUrls ?? []).toEqual([]);
  });

  it('CreateQueue is idempotent with the same attributes and fails with QueueNameExists when one differs', async () => {
    const QueueName = uniqueName('idem');
    const first = await sqs.send(new CreateQueueCommand({ QueueName, Attributes: { VisibilityTimeout: '45' } }));
    const again = await sqs.send(new CreateQueueCommand({ QueueName, Attributes: { VisibilityTimeout: '45' } }));
    expect(again.QueueUrl).toBe(first.QueueUrl);

    const err = await failure(sqs.send(new CreateQueueCommand({ QueueName, Attributes: { VisibilityTimeout: '46' } })));
    expect(err.name).toBe('QueueNameExists');
    expect(err.message).toContain('VisibilityTimeout');
  });

  it('refuses an invalid queue name with InvalidParameterValue', async () => {
    const err = await failure(sqs.send(new CreateQueueCommand({ QueueName: 'bad name!' })));
    expect(err.name).toBe('InvalidParameterValue');
    expect(err.$metadata?.httpStatusCode).toBe(400);
  });

  it('refuses unknown and out-of-range queue attributes', async () => {
    const bad = await failure(sqs.send(new CreateQueueCommand({ QueueName: uniqueName('attr'), Attributes: { VisibilityTimeout: '43201' } })));
    expect(bad.name).toBe('InvalidAttributeValue');
    const unknown = await failure(
      sqs.send(new CreateQueueCommand({ QueueName: uniqueName('attr'), Attributes: { NoSuchThing: '1' } as never })),
    );
    expect(unknown.name).toBe('InvalidAttributeName');
  });

  it('a deleted or unknown queue fails with QueueDoesNotExist and the query-compatible code', async () => {
    const QueueUrl = await newQueue();
    await sqs.send(new DeleteQueueCommand({ QueueUrl }));

    const send = await failure(sqs.send(new SendMessageCommand({ QueueUrl, MessageBody: 'x' })));
    expect(send.name).toBe('QueueDoesNotExist');
    expect(send.Code).toBe('AWS.SimpleQueueService.NonExistentQueue');
    expect(send.$metadata?.httpStatusCode).toBe(400);

    const byName = await failure(sqs.send(new GetQueueUrlCommand({ QueueName: uniqueName('never-created') })));
    expect(byName.name).toBe('QueueDoesNotExist');
  });

  it('GetQueueAttributes returns All attributes, and SetQueueAttributes changes them', async () => {
    const QueueUrl = await newQueue({ DelaySeconds: '2' });
    const all = await attrs(QueueUrl, ['All']);
    expect(all).toMatchObject({
      DelaySeconds: '2',
      VisibilityTimeout: '30',
      MaximumMessageSize: '262144',
      MessageRetentionPeriod: '345600',
      ReceiveMessageWaitTimeSeconds: '0',
      ApproximateNumberOfMessages: '0',
      ApproximateNumberOfMessagesNotVisible: '0',
      ApproximateNumberOfMessagesDelayed: '0',
    });
    expect(all['QueueArn']).toMatch(/^arn:aws:sqs:[a-z0-9-]+:\d{12}:sqs-/);
    expect(Number(all['CreatedTimestamp'])).toBeGreaterThan(1_600_000_000);

    await sqs.send(new SetQueueAttributesCommand({ QueueUrl, Attributes: { VisibilityTimeout: '120', DelaySeconds: '0' } }));
    expect(await attrs(QueueUrl, ['VisibilityTimeout', 'DelaySeconds'])).toEqual({ VisibilityTimeout: '120', DelaySeconds: '0' });

    const badValue = await failure(sqs.send(new SetQueueAttributesCommand({ QueueUrl, Attributes: { DelaySeconds: '901' } })));
    expect(badValue.name).toBe('InvalidAttributeValue');
    const readOnly = await failure(sqs.send(new SetQueueAttributesCommand({ QueueUrl, Attributes: { QueueArn: 'x' } as never })));
    expect(readOnly.name).toBe('InvalidAttributeName');
    const unknownGet = await failure(sqs.send(new GetQueueAttributesCommand({ QueueUrl, AttributeNames: ['Nope' as never] })));
    expect(unknownGet.name).toBe('InvalidAttributeName');
  });

  it('tags a queue, lists and removes tags', async () => {
    const QueueName = uniqueName('tags');
    const { QueueUrl } = await sqs.send(new CreateQueueCommand({ QueueName, tags: { team: 'rekey' } }));
    await sqs.send(new TagQueueCommand({ QueueUrl, Tags: { env: 'test' } }));
    expect((await sqs.send(new ListQueueTagsCommand({ QueueUrl }))).Tags).toEqual({ team: 'rekey', env: 'test' });
    await sqs.send(new UntagQueueCommand({ QueueUrl, TagKeys: ['team'] }));
    expect((await sqs.send(new ListQueueTagsCommand({ QueueUrl }))).Tags).toEqual({ env: 'test' });
  });
});

describe('messages (JSON protocol)', () => {
  it('sends and receives a message with body and attribute MD5s and system attributes', async () => {
    const QueueUrl = await newQueue();
    const before = Date.now();
    const sent = await sqs.send(
      new SendMessageCommand({
        QueueUrl,
        MessageBody: 'hello ✓',
        MessageAttributes: {
          Hello: { DataType: 'String', StringValue: 'There' },
          General: { DataType: 'String', StringValue: 'Kenobi' },
        },
      }),
    );
    // The SDK itself checks MD5OfMessageBody. This attribute digest is the value AWS returns for
    // these two attributes (as recorded in LocalStack's AWS-validated serializer tests).
    expect(sent.MD5OfMessageAttributes).toBe('fca026605781cb4126a1e9044df24232');
    expect(sent.MessageId).toMatch(/^[0-9a-f-]{36}$/);

    const m = await receiveOne(QueueUrl, { MessageSystemAttributeNames: ['All'], MessageAttributeNames: ['All'] });
    expect(m?.Body).toBe('hello ✓');
    expect(m?.MessageId).toBe(sent.MessageId);
    expect(m?.MD5OfMessageAttributes).toBe('fca026605781cb4126a1e9044df24232');
    expect(m?.MessageAttributes).toEqual({
      Hello: { DataType: 'String', StringValue: 'There' },
      General: { DataType: 'String', StringValue: 'Kenobi' },
    });
    expect(m?.Attributes?.ApproximateReceiveCount).toBe('1');
    expect(Number(m?.Attributes?.SentTimestamp)).toBeGreaterThanOrEqual(before - 1000);
    expect(Number(m?.Attributes?.ApproximateFirstReceiveTimestamp)).toBeGreaterThanOrEqual(Number(m?.Attributes?.SentTimestamp));
    expect(m?.Attributes?.SenderId).toBeTruthy();
    expect(m?.ReceiptHandle).toBeTruthy();
  });

  it('returns only the message attributes asked for, by name or prefix, with binary values intact', async () => {
    const QueueUrl = await newQueue();
    const bytes = Uint8Array.from([0, 1, 2, 250, 255]);
    await sqs.send(
      new SendMessageCommand({
        QueueUrl,
        MessageBody: 'attrs',
        MessageAttributes: {
          'rekey.key': { DataType: 'String', StringValue: 'k1' },
          'rekey.count': { DataType: 'Number', StringValue: '3' },
          blob: { DataType: 'Binary', BinaryValue: bytes },
        },
      }),
    );
    const m = await receiveOne(QueueUrl, { MessageAttributeNames: ['rekey.*', 'blob'], VisibilityTimeout: 0 });
    expect(Object.keys(m?.MessageAttributes ?? {}).sort()).toEqual(['blob', 'rekey.count', 'rekey.key']);
    expect(Buffer.from(m?.MessageAttributes?.['blob']?.BinaryValue ?? new Uint8Array())).toEqual(Buffer.from(bytes));

    const only = await receiveOne(QueueUrl, { MessageAttributeNames: ['rekey.key'] });
    expect(Object.keys(only?.MessageAttributes ?? {})).toEqual(['rekey.key']);
    expect(only?.Attributes).toBeUndefined();
  });

  it('refuses invalid bodies, delays and message attributes', async () => {
    const QueueUrl = await newQueue({ MaximumMessageSize: '1024' });
    const empty = await failure(sqs.send(new SendMessageCommand({ QueueUrl, MessageBody: '' })));
    expect(empty.name).toBe('MissingParameter');
    const control = await failure(sqs.send(new SendMessageCommand({ QueueUrl, MessageBody: 'bad\u0001char' })));
    expect(control.name).toBe('InvalidMessageContents');
    const big = await failure(sqs.send(new SendMessageCommand({ QueueUrl, MessageBody: 'x'.repeat(1025) })));
    expect(big.name).toBe('InvalidParameterValue');
    expect(big.message).toContain('1024');
    const delay = await failure(sqs.send(new SendMessageCommand({ QueueUrl, MessageBody: 'x', DelaySeconds: 901 })));
    expect(delay.name).toBe('InvalidParameterValue');
    const noValue = await failure(
      sqs.send(new SendMessageCommand({ QueueUrl, MessageBody: 'x', MessageAttributes: { a: { DataType: 'String' } } })),
    );
    expect(noValue.name).toBe('InvalidParameterValue');
    const badType = await failure(
      sqs.send(new SendMessageCommand({ QueueUrl, MessageBody: 'x', MessageAttributes: { a: { DataType: 'Text', StringValue: 'v' } } })),
    );
    expect(badType.name).toBe('InvalidParameterValue');
    const notNumber = await failure(
      sqs.send(new SendMessageCommand({ QueueUrl, MessageBody: 'x', MessageAttributes: { a: { DataType: 'Number', StringValue: 'ten' } } })),
    );
    expect(notNumber.name).toBe('InvalidParameterValue');
    const eleven = Object.fromEntries(Array.from({ length: 11 }, (_, i) => [`a${i}`, { DataType: 'String', StringValue: 'v' }]));
    const tooMany = await failure(sqs.send(new SendMessageCommand({ QueueUrl, MessageBody: 'x', MessageAttributes: eleven })));
    expect(tooMany.name).toBe('InvalidParameterValue');
    expect((await attrs(QueueUrl, ['ApproximateNumberOfMessages'])).ApproximateNumberOfMessages).toBe('0');
  });

  it('validates ReceiveMessage parameters', async () => {
    const QueueUrl = await newQueue();
    for (const bad of [{ MaxNumberOfMessages: 11 }, { MaxNumberOfMessages: 0 }, { WaitTimeSeconds: 21 }, { VisibilityTimeout: -1 }]) {
      const err = await failure(sqs.send(new ReceiveMessageCommand({ QueueUrl, ...bad })));
      expect(err.name).toBe('InvalidParameterValue');
    }
  });

  it('a delayed message is counted as delayed and is received only after its delay', async () => {
    const QueueUrl = await newQueue();
    await sqs.send(new SendMessageCommand({ QueueUrl, MessageBody: 'later', DelaySeconds: 1 }));
    expect(await attrs(QueueUrl, ['ApproximateNumberOfMessages', 'ApproximateNumberOfMessagesDelayed'])).toEqual({
      ApproximateNumberOfMessages: '0',
      ApproximateNumberOfMessagesDelayed: '1',
    });
    expect(await receiveOne(QueueUrl)).toBeUndefined();
    const m = await receiveOne(QueueUrl, { WaitTimeSeconds: 5 });
    expect(m?.Body).toBe('later');
  });

  it('long polling returns as soon as a message is sent', async () => {
    const QueueUrl = await newQueue();
    const started = Date.now();
    const pending = sqs.send(new ReceiveMessageCommand({ QueueUrl, WaitTimeSeconds: 20 }));
    await sleep(300);
    await sqs.send(new SendMessageCommand({ QueueUrl, MessageBody: 'wake up' }));
    const out = await pending;
    expect(out.Messages?.[0]?.Body).toBe('wake up');
    // Well before the 20 s wait ran out: the send ended the poll.
    expect(Date.now() - started).toBeLessThan(10_000);
  });

  it('long polling on an empty queue waits for WaitTimeSeconds and returns no messages', async () => {
    const QueueUrl = await newQueue();
    const started = Date.now();
    const out = await sqs.send(new ReceiveMessageCommand({ QueueUrl, WaitTimeSeconds: 1 }));
    expect(out.Messages ?? []).toEqual([]);
    expect(Date.now() - started).toBeGreaterThanOrEqual(900);
  });

  it('ReceiveMessageWaitTimeSeconds on the queue makes every receive a long poll', async () => {
    const QueueUrl = await newQueue({ ReceiveMessageWaitTimeSeconds: '20' });
    const pending = sqs.send(new ReceiveMessageCommand({ QueueUrl }));
    await sleep(200);
    await sqs.send(new SendMessageCommand({ QueueUrl, MessageBody: 'queued' }));
    expect((await pending).Messages?.[0]?.Body).toBe('queued');
  });

  it('redelivers a message that was not deleted within its visibility timeout, counting receives', async () => {
    const QueueUrl = await newQueue();
    await sqs.send(new SendMessageCommand({ QueueUrl, MessageBody: 'again' }));
    const first = await receiveOne(QueueUrl, { VisibilityTimeout: 1, MessageSystemAttributeNames: ['ApproximateReceiveCount'] });
    expect(first?.Attributes?.ApproximateReceiveCount).toBe('1');
    expect(await attrs(QueueUrl, ['ApproximateNumberOfMessages', 'ApproximateNumberOfMessagesNotVisible'])).toEqual({
      ApproximateNumberOfMessages: '0',
      ApproximateNumberOfMessagesNotVisible: '1',
    });
    expect(await receiveOne(QueueUrl)).toBeUndefined();

    const second = await receiveOne(QueueUrl, { WaitTimeSeconds: 5, MessageSystemAttributeNames: ['ApproximateReceiveCount'] });
    expect(second?.MessageId).toBe(first?.MessageId);
    expect(second?.Attributes?.ApproximateReceiveCount).toBe('2');
    expect(second?.ReceiptHandle).not.toBe(first?.ReceiptHandle);
  });

  it('DeleteMessage removes the message; a garbage receipt handle fails with ReceiptHandleIsInvalid', async () => {
    const QueueUrl = await newQueue();
    await sqs.send(new SendMessageCommand({ QueueUrl, MessageBody: 'delete me' }));
    const m = await receiveOne(QueueUrl, { VisibilityTimeout: 0 });
    await sqs.send(new DeleteMessageCommand({ QueueUrl, ReceiptHandle: m?.ReceiptHandle }));
    expect(await receiveOne(QueueUrl)).toBeUndefined();
    // Deleting again with the same handle succeeds, as on SQS.
    await sqs.send(new DeleteMessageCommand({ QueueUrl, ReceiptHandle: m?.ReceiptHandle }));

    const err = await failure(sqs.send(new DeleteMessageCommand({ QueueUrl, ReceiptHandle: 'not-a-receipt-handle' })));
    expect(err.name).toBe('ReceiptHandleIsInvalid');
    expect(err.$metadata?.httpStatusCode).toBe(404);
  });

  it('ChangeMessageVisibility hides or reveals an in-flight message; a visible one is not in flight', async () => {
    const QueueUrl = await newQueue();
    await sqs.send(new SendMessageCommand({ QueueUrl, MessageBody: 'vis' }));
    const m = await receiveOne(QueueUrl, { VisibilityTimeout: 300 });
    await sqs.send(new ChangeMessageVisibilityCommand({ QueueUrl, ReceiptHandle: m?.ReceiptHandle, VisibilityTimeout: 0 }));
    const again = await receiveOne(QueueUrl, { VisibilityTimeout: 0 });
    expect(again?.MessageId).toBe(m?.MessageId);

    const err = await failure(
      sqs.send(new ChangeMessageVisibilityCommand({ QueueUrl, ReceiptHandle: again?.ReceiptHandle, VisibilityTimeout: 10 })),
    );
    expect(err.name).toBe('MessageNotInflight');

    const range = await failure(
      sqs.send(new ChangeMessageVisibilityCommand({ QueueUrl, ReceiptHandle: again?.ReceiptHandle, VisibilityTimeout: 43_201 })),
    );
    expect(range.name).toBe('InvalidParameterValue');
  });

  it('ChangeMessageVisibilityBatch reports each entry', async () => {
    const QueueUrl = await newQueue();
    await sqs.send(new SendMessageCommand({ QueueUrl, MessageBody: 'one' }));
    const m = await receiveOne(QueueUrl, { VisibilityTimeout: 300 });
    const out = await sqs.send(
      new ChangeMessageVisibilityBatchCommand({
        QueueUrl,
        Entries: [
          { Id: 'ok', ReceiptHandle: m?.ReceiptHandle, VisibilityTimeout: 0 },
          { Id: 'bad', ReceiptHandle: 'garbage', VisibilityTimeout: 0 },
        ],
      }),
    );
    expect(out.Successful?.map((s) => s.Id)).toEqual(['ok']);
    expect(out.Failed).toEqual([expect.objectContaining({ Id: 'bad', Code: 'ReceiptHandleIsInvalid', SenderFault: true })]);
    expect((await receiveOne(QueueUrl))?.MessageId).toBe(m?.MessageId);
  });

  it('SendMessageBatch sends valid entries and reports the invalid ones in Failed', async () => {
    const QueueUrl = await newQueue();
    const out = await sqs.send(
      new SendMessageBatchCommand({
        QueueUrl,
        Entries: [
          { Id: 'a', MessageBody: 'first' },
          { Id: 'b', MessageBody: 'bad\u0000body' },
          { Id: 'c', MessageBody: 'third', DelaySeconds: 1000 },
          { Id: 'd', MessageBody: 'fourth', MessageAttributes: { k: { DataType: 'String', StringValue: 'v' } } },
        ],
      }),
    );
    expect(out.Successful?.map((s) => s.Id).sort()).toEqual(['a', 'd']);
    expect(out.Successful?.find((s) => s.Id === 'd')?.MD5OfMessageAttributes).toMatch(/^[0-9a-f]{32}$/);
    expect(out.Failed?.map((f) => [f.Id, f.Code, f.SenderFault]).sort()).toEqual([
      ['b', 'InvalidMessageContents', true],
      ['c', 'InvalidParameterValue', true],
    ]);
    expect((await attrs(QueueUrl, ['ApproximateNumberOfMessages'])).ApproximateNumberOfMessages).toBe('2');
  });

  it('batch requests refuse empty, oversized, duplicate-id and bad-id batches', async () => {
    const QueueUrl = await newQueue();
    const empty = await failure(sqs.send(new SendMessageBatchCommand({ QueueUrl, Entries: [] })));
    expect(empty.name).toBe('EmptyBatchRequest');
    const eleven = Array.from({ length: 11 }, (_, i) => ({ Id: `m${i}`, MessageBody: 'x' }));
    const tooMany = await failure(sqs.send(new SendMessageBatchCommand({ QueueUrl, Entries: eleven })));
    expect(tooMany.name).toBe('TooManyEntriesInBatchRequest');
    const dup = await failure(
      sqs.send(new SendMessageBatchCommand({ QueueUrl, Entries: [{ Id: 'x', MessageBody: '1' }, { Id: 'x', MessageBody: '2' }] })),
    );
    expect(dup.name).toBe('BatchEntryIdsNotDistinct');
    const badId = await failure(sqs.send(new SendMessageBatchCommand({ QueueUrl, Entries: [{ Id: 'no spaces', MessageBody: '1' }] })));
    expect(badId.name).toBe('InvalidBatchEntryId');
    const delEmpty = await failure(sqs.send(new DeleteMessageBatchCommand({ QueueUrl, Entries: [] })));
    expect(delEmpty.name).toBe('EmptyBatchRequest');
    expect((await attrs(QueueUrl, ['ApproximateNumberOfMessages'])).ApproximateNumberOfMessages).toBe('0');
  });

  it('DeleteMessageBatch deletes the valid handles and reports the invalid ones', async () => {
    const QueueUrl = await newQueue();
    await sqs.send(new SendMessageBatchCommand({ QueueUrl, Entries: [{ Id: '1', MessageBody: 'a' }, { Id: '2', MessageBody: 'b' }] }));
    const got = await sqs.send(new ReceiveMessageCommand({ QueueUrl, MaxNumberOfMessages: 10, VisibilityTimeout: 0 }));
    expect(got.Messages).toHaveLength(2);
    const out = await sqs.send(
      new DeleteMessageBatchCommand({
        QueueUrl,
        Entries: [
          ...(got.Messages ?? []).map((m: Message, i: number) => ({ Id: `ok${i}`, ReceiptHandle: m.ReceiptHandle })),
          { Id: 'bad', ReceiptHandle: 'garbage' },
        ],
      }),
    );
    expect(out.Successful?.map((s) => s.Id).sort()).toEqual(['ok0', 'ok1']);
    expect(out.Failed).toEqual([expect.objectContaining({ Id: 'bad', Code: 'ReceiptHandleIsInvalid', SenderFault: true })]);
    expect(await receiveOne(QueueUrl)).toBeUndefined();
  });

  it('MaxNumberOfMessages bounds a receive; counts follow sends, receives and deletes', async () => {
    const QueueUrl = await newQueue();
    await sqs.send(
      new SendMessageBatchCommand({ QueueUrl, Entries: Array.from({ length: 5 }, (_, i) => ({ Id: `m${i}`, MessageBody: `body-${i}` })) }),
    );
    await sqs.send(new SendMessageCommand({ QueueUrl, MessageBody: 'delayed', DelaySeconds: 60 }));
    const got = await sqs.send(new ReceiveMessageCommand({ QueueUrl, MaxNumberOfMessages: 3, VisibilityTimeout: 60 }));
    expect(got.Messages).toHaveLength(3);
    expect(
      await attrs(QueueUrl, ['ApproximateNumberOfMessages', 'ApproximateNumberOfMessagesNotVisible', 'ApproximateNumberOfMessagesDelayed']),
    ).toEqual({ ApproximateNumberOfMessages: '2', ApproximateNumberOfMessagesNotVisible: '3', ApproximateNumberOfMessagesDelayed: '1' });
    await sqs.send(new DeleteMessageCommand({ QueueUrl, ReceiptHandle: got.Messages?.[0]?.ReceiptHandle }));
    expect((await attrs(QueueUrl, ['ApproximateNumberOfMessagesNotVisible'])).ApproximateNumberOfMessagesNotVisible).toBe('2');
  });

  it('PurgeQueue deletes every message; a second purge within 60 seconds fails with PurgeQueueInProgress', async () => {
    const QueueUrl = await newQueue();
    await sqs.send(new SendMessageBatchCommand({ QueueUrl, Entries: [{ Id: '1', MessageBody: 'a' }, { Id: '2', MessageBody: 'b' }] }));
    await receiveOne(QueueUrl, { VisibilityTimeout: 60 });
    await sqs.send(new PurgeQueueCommand({ QueueUrl }));
    expect(await attrs(QueueUrl, ['ApproximateNumberOfMessages', 'ApproximateNumberOfMessagesNotVisible'])).toEqual({
      ApproximateNumberOfMessages: '0',
      ApproximateNumberOfMessagesNotVisible: '0',
    });
    const err = await failure(sqs.send(new PurgeQueueCommand({ QueueUrl })));
    expect(err.name).toBe('PurgeQueueInProgress');
    expect(err.$metadata?.httpStatusCode).toBe(403);
  });
});

describe('dead-letter queues', () => {
  it('moves a message to the DLQ on the receive after it was received maxReceiveCount times', async () => {
    const dlqUrl = await newQueue(undefined, 'dlq');
    const dlqArn = (await attrs(dlqUrl, ['QueueArn'])).QueueArn ?? '';
    const QueueUrl = await newQueue({ RedrivePolicy: JSON.stringify({ deadLetterTargetArn: dlqArn, maxReceiveCount: 2 }) });
    const policy = JSON.parse((await attrs(QueueUrl, ['RedrivePolicy'])).RedrivePolicy ?? '{}') as Record<string, unknown>;
    expect(policy).toEqual({ deadLetterTargetArn: dlqArn, maxReceiveCount: 2 });

    const sent = await sqs.send(new SendMessageCommand({ QueueUrl, MessageBody: 'poison' }));
    expect((await receiveOne(QueueUrl, { VisibilityTimeout: 0 }))?.MessageId).toBe(sent.MessageId);
    expect((await receiveOne(QueueUrl, { VisibilityTimeout: 0 }))?.MessageId).toBe(sent.MessageId);
    expect(await receiveOne(QueueUrl, { VisibilityTimeout: 0 })).toBeUndefined();

    const dead = await receiveOne(dlqUrl, { MessageSystemAttributeNames: ['All'] });
    expect(dead?.MessageId).toBe(sent.MessageId);
    expect(dead?.Body).toBe('poison');
    expect(dead?.Attributes?.DeadLetterQueueSourceArn).toBe((await attrs(QueueUrl, ['QueueArn'])).QueueArn);

    const sources = await sqs.send(new ListDeadLetterSourceQueuesCommand({ QueueUrl: dlqUrl }));
    expect(sources.queueUrls).toEqual([QueueUrl]);
  });

  it('refuses a redrive policy whose target does not exist or whose maxReceiveCount is out of range', async () => {
    const QueueUrl = await newQueue();
    const missing = await failure(
      sqs.send(
        new SetQueueAttributesCommand({
          QueueUrl,
          Attributes: { RedrivePolicy: JSON.stringify({ deadLetterTargetArn: 'arn:aws:sqs:us-east-1:000000000000:nope-x', maxReceiveCount: 3 }) },
        }),
      ),
    );
    expect(missing.name).toBe('InvalidParameterValue');
    const dlqArn = (await attrs(await newQueue(undefined, 'dlq'), ['QueueArn'])).QueueArn ?? '';
    const count = await failure(
      sqs.send(
        new SetQueueAttributesCommand({
          QueueUrl,
          Attributes: { RedrivePolicy: JSON.stringify({ deadLetterTargetArn: dlqArn, maxReceiveCount: 0 }) },
        }),
      ),
    );
    expect(count.name).toBe('InvalidParameterValue');
  });
});

describe('JSON protocol wire format', () => {
  it('errors carry __type, message and the x-amzn-query-error header', async () => {
    const res = await fetch(ep.url, {
      method: 'POST',
      headers: {
        'content-type': 'application/x-amz-json-1.0',
        'x-amz-target': 'AmazonSQS.GetQueueUrl',
        authorization: `AWS4-HMAC-SHA256 Credential=AKID/20260101/${ep.region}/sqs/aws4_request, SignedHeaders=host, Signature=00`,
      },
      body: JSON.stringify({ QueueName: uniqueName('missing') }),
    });
    expect(res.status).toBe(400);
    expect(res.headers.get('content-type')).toBe('application/x-amz-json-1.0');
    expect(res.headers.get('x-amzn-query-error')).toBe('AWS.SimpleQueueService.NonExistentQueue;Sender');
    expect(res.headers.get('x-amzn-requestid')).toBeTruthy();
    expect(await res.json()).toEqual({ __type: 'com.amazonaws.sqs#QueueDoesNotExist', message: 'The specified queue does not exist.' });
  });
});

// ---- query protocol ------------------------------------------------------------------------

const xml = new XMLParser({
  ignoreAttributes: true,
  parseTagValue: false,
  isArray: (name, jpath) =>
    !String(jpath).startsWith('ErrorResponse') &&
    ['QueueUrl', 'Message', 'Attribute', 'MessageAttribute', 'SendMessageBatchResultEntry', 'BatchResultErrorEntry'].includes(name),
});

// eslint-disable-next-line @typescript-eslint/no-explicit-any -- parsed XML is walked by element name; the assertions check its shape.
type Xml = Record<string, any>;

/** A form-encoded query-protocol call with a well-formed (unverified) SigV4 header. */
async function query(
  params: Record<string, string>,
  opts: { path?: string; method?: 'POST' | 'GET' } = {},
): Promise<{ status: number; body: Xml; contentType: string | null }> {
  const form = new URLSearchParams({ ...params, Version: '2012-11-05' });
  const authorization = `AWS4-HMAC-SHA256 Credential=AKID/20260101/${ep.region}/sqs/aws4_request, SignedHeaders=host, Signature=00`;
  const path = opts.path ?? '/';
  const res =
    opts.method === 'GET'
      ? await fetch(`${ep.url}${path}?${form.toString()}`, { headers: { authorization } })
      : await fetch(`${ep.url}${path}`, {
          method: 'POST',
          headers: { 'content-type': 'application/x-www-form-urlencoded; charset=utf-8', authorization },
          body: form.toString(),
        });
  return { status: res.status, body: xml.parse(await res.text()) as Xml, contentType: res.headers.get('content-type') };
}

describe('query protocol', () => {
  it('creates a queue, sends with attributes, receives and deletes, all as XML', async () => {
    const QueueName = uniqueName('query');
    const created = await query({ Action: 'CreateQueue', QueueName, 'Attribute.1.Name': 'VisibilityTimeout', 'Attribute.1.Value': '40' });
    expect(created.status).toBe(200);
    expect(created.contentType).toBe('text/xml');
    const QueueUrl: string = created.body['CreateQueueResponse']['CreateQueueResult']['QueueUrl'][0];
    expect(QueueUrl).toMatch(new RegExp(`/\\d{12}/${QueueName}$`));
    expect(created.body['CreateQueueResponse']['ResponseMetadata']['RequestId']).toBeTruthy();

    const sent = await query({
      Action: 'SendMessage',
      QueueUrl,
      MessageBody: 'a & b <c>',
      'MessageAttribute.1.Name': 'Hello',
      'MessageAttribute.1.Value.DataType': 'String',
      'MessageAttribute.1.Value.StringValue': 'There',
      'MessageAttribute.2.Name': 'General',
      'MessageAttribute.2.Value.DataType': 'String',
      'MessageAttribute.2.Value.StringValue': 'Kenobi',
    });
    const sendResult = sent.body['SendMessageResponse']['SendMessageResult'];
    expect(sendResult['MD5OfMessageBody']).toBe(createHash('md5').update('a & b <c>', 'utf8').digest('hex'));
    expect(sendResult['MD5OfMessageAttributes']).toBe('fca026605781cb4126a1e9044df24232');

    const received = await query({
      Action: 'ReceiveMessage',
      QueueUrl,
      'AttributeName.1': 'All',
      'MessageAttributeName.1': 'Hello',
      MaxNumberOfMessages: '5',
    });
    const msg = received.body['ReceiveMessageResponse']['ReceiveMessageResult']['Message'][0];
    expect(msg['Body']).toBe('a & b <c>');
    expect(msg['MessageId']).toBe(sendResult['MessageId']);
    const sys = Object.fromEntries((msg['Attribute'] as Array<{ Name: string; Value: string }>).map((a) => [a.Name, a.Value]));
    expect(sys['ApproximateReceiveCount']).toBe('1');
    expect(msg['MessageAttribute']).toEqual([{ Name: 'Hello', Value: { StringValue: 'There', DataType: 'String' } }]);

    const attrsXml = await query({ Action: 'GetQueueAttributes', QueueUrl, 'AttributeName.1': 'ApproximateNumberOfMessagesNotVisible', 'AttributeName.2': 'VisibilityTimeout' });
    const attrList = attrsXml.body['GetQueueAttributesResponse']['GetQueueAttributesResult']['Attribute'] as Array<{ Name: string; Value: string }>;
    expect(Object.fromEntries(attrList.map((a) => [a.Name, a.Value]))).toEqual({ ApproximateNumberOfMessagesNotVisible: '1', VisibilityTimeout: '40' });

    const deleted = await query({ Action: 'DeleteMessage', QueueUrl, ReceiptHandle: msg['ReceiptHandle'] });
    expect(deleted.status).toBe(200);
    expect(deleted.body['DeleteMessageResponse']['ResponseMetadata']['RequestId']).toBeTruthy();
    const empty = await query({ Action: 'ReceiveMessage', QueueUrl });
    expect(empty.body['ReceiveMessageResponse']['ReceiveMessageResult']).toBe('');
  });

  it('accepts the queue URL as the request path and GET requests', async () => {
    const QueueUrl = await newQueue();
    const path = new URL(QueueUrl).pathname;
    const sent = await query({ Action: 'SendMessage', MessageBody: 'by path' }, { path });
    expect(sent.status).toBe(200);
    const got = await query({ Action: 'ReceiveMessage' }, { path, method: 'GET' });
    expect(got.body['ReceiveMessageResponse']['ReceiveMessageResult']['Message'][0]['Body']).toBe('by path');
    const listed = await query({ Action: 'ListQueues', QueueNamePrefix: path.split('/')[2] ?? '' }, { method: 'GET' });
    expect(listed.body['ListQueuesResponse']['ListQueuesResult']['QueueUrl']).toEqual([QueueUrl]);
  });

  it('SendMessageBatch reports result and error entries in XML', async () => {
    const QueueUrl = await newQueue();
    const out = await query({
      Action: 'SendMessageBatch',
      QueueUrl,
      'SendMessageBatchRequestEntry.1.Id': 'good',
      'SendMessageBatchRequestEntry.1.MessageBody': 'ok',
      'SendMessageBatchRequestEntry.1.MessageAttribute.1.Name': 'k',
      'SendMessageBatchRequestEntry.1.MessageAttribute.1.Value.DataType': 'Number',
      'SendMessageBatchRequestEntry.1.MessageAttribute.1.Value.StringValue': '42',
      'SendMessageBatchRequestEntry.2.Id': 'bad',
      'SendMessageBatchRequestEntry.2.MessageBody': 'x',
      'SendMessageBatchRequestEntry.2.DelaySeconds': '901',
    });
    const result = out.body['SendMessageBatchResponse']['SendMessageBatchResult'];
    expect(result['SendMessageBatchResultEntry']).toEqual([
      expect.objectContaining({ Id: 'good', MD5OfMessageBody: expect.stringMatching(/^[0-9a-f]{32}$/), MD5OfMessageAttributes: expect.stringMatching(/^[0-9a-f]{32}$/) }),
    ]);
    expect(result['BatchResultErrorEntry']).toEqual([expect.objectContaining({ Id: 'bad', SenderFault: 'true', Code: 'InvalidParameterValue' })]);
    const tooMany: Record<string, string> = { Action: 'SendMessageBatch', QueueUrl };
    for (let i = 1; i <= 11; i++) {
      tooMany[`SendMessageBatchRequestEntry.${i}.Id`] = `m${i}`;
      tooMany[`SendMessageBatchRequestEntry.${i}.MessageBody`] = 'x';
    }
    const err = await query(tooMany);
    expect(err.status).toBe(400);
    expect(err.body['ErrorResponse']['Error']['Code']).toBe('AWS.SimpleQueueService.TooManyEntriesInBatchRequest');
  });

  it('errors are ErrorResponse XML with Type, Code and Message', async () => {
    const missing = await query({ Action: 'GetQueueUrl', QueueName: uniqueName('missing') });
    expect(missing.status).toBe(400);
    expect(missing.body['ErrorResponse']['Error']).toEqual({
      Type: 'Sender',
      Code: 'AWS.SimpleQueueService.NonExistentQueue',
      Message: 'The specified queue does not exist for this wsdl version.',
      Detail: '',
    });
    expect(missing.body['ErrorResponse']['RequestId']).toBeTruthy();

    const QueueUrl = await newQueue();
    const badHandle = await query({ Action: 'DeleteMessage', QueueUrl, ReceiptHandle: 'garbage' });
    expect(badHandle.status).toBe(404);
    expect(badHandle.body['ErrorResponse']['Error']['Code']).toBe('ReceiptHandleIsInvalid');

    const exists = await query({ Action: 'CreateQueue', QueueName: new URL(QueueUrl).pathname.split('/')[2] ?? '', 'Attribute.1.Name': 'DelaySeconds', 'Attribute.1.Value': '5' });
    expect(exists.body['ErrorResponse']['Error']['Code']).toBe('QueueAlreadyExists');

    const unknown = await query({ Action: 'FlyToTheMoon' });
    expect(unknown.status).toBe(400);
    expect(unknown.body['ErrorResponse']['Error']['Code']).toBe('InvalidAction');
  });
});

// ---- aws-local controls --------------------------------------------------------------------

describe('admin controls', () => {
  it('a deny rule on a queue ARN answers AccessDenied for that queue only', async ({ skip }) => {
    if (!ep.local) skip();
    const QueueUrl = await newQueue();
    const other = await newQueue();
    const arn = (await attrs(QueueUrl, ['QueueArn'])).QueueArn;
    const remove = ep.local!.controls.addDenyRule({ service: 'sqs', operation: 'SendMessage', resource: arn });
    try {
      const err = await failure(sqs.send(new SendMessageCommand({ QueueUrl, MessageBody: 'x' })));
      expect(err.name).toBe('AccessDenied');
      expect(err.$metadata?.httpStatusCode).toBe(403);
      await sqs.send(new SendMessageCommand({ QueueUrl: other, MessageBody: 'x' }));
    } finally {
      remove();
    }
  });

  it('an injected fault answers a 500 InternalFailure', async ({ skip }) => {
    if (!ep.local) skip();
    const QueueUrl = await newQueue();
    ep.local!.controls.setFault('sqs:SendMessage', { probability: 1, kind: 'error' });
    try {
      const err = await failure(sqs.send(new SendMessageCommand({ QueueUrl, MessageBody: 'x' })));
      expect(err.$metadata?.httpStatusCode).toBe(500);
      expect(err.name).toBe('InternalFailure');
    } finally {
      ep.local!.controls.setFault('sqs:SendMessage', null);
    }
  });

  it('close() ends a pending long poll with no messages', async ({ skip }) => {
    if (!ep.local) skip();
    const QueueUrl = await newQueue();
    const svc = ep.local!.sqs;
    const fresh = new SqsService({ controls: ep.local!.controls, baseUrl: () => ep.url });
    fresh.restore(svc.snapshot());
    const started = Date.now();
    const req = {
      method: 'POST',
      path: '/',
      query: new URLSearchParams(),
      rawQuery: '',
      headers: { 'x-amz-target': 'AmazonSQS.ReceiveMessage', 'content-type': 'application/x-amz-json-1.0' },
      body: Buffer.from(JSON.stringify({ QueueUrl, WaitTimeSeconds: 20 })),
      ctx: { requestId: 'r', accessKeyId: 'AKID', accountId: new URL(QueueUrl).pathname.split('/')[1] ?? '', region: ep.region, sourceIp: '127.0.0.1', userAgent: '', time: new Date() },
    };
    const pending = fresh.handle(req);
    await sleep(100);
    fresh.close();
    const res = await pending;
    expect(res.status).toBe(200);
    expect(JSON.parse(String(res.body))).toEqual({});
    expect(Date.now() - started).toBeLessThan(5_000);
  });

  it('snapshot and restore keep queues, attributes and messages', async ({ skip }) => {
    if (!ep.local) skip();
    const QueueUrl = await newQueue({ VisibilityTimeout: '77' });
    await sqs.send(new SendMessageCommand({ QueueUrl, MessageBody: 'persisted', MessageAttributes: { b: { DataType: 'Binary', BinaryValue: Uint8Array.from([9, 8]) } } }));
    const { serialize, deserialize } = await import('node:v8');
    const data = deserialize(serialize(ep.local!.sqs.snapshot())) as unknown;
    ep.local!.sqs.reset();
    const gone = await failure(sqs.send(new GetQueueAttributesCommand({ QueueUrl, AttributeNames: ['VisibilityTimeout'] })));
    expect(gone.name).toBe('QueueDoesNotExist');
    ep.local!.sqs.restore(data);
    expect((await attrs(QueueUrl, ['VisibilityTimeout'])).VisibilityTimeout).toBe('77');
    const m = await receiveOne(QueueUrl, { MessageAttributeNames: ['All'] });
    expect(m?.Body).toBe('persisted');
    expect(Buffer.from(m?.MessageAttributes?.['b']?.BinaryValue ?? new Uint8Array())).toEqual(Buffer.from([9, 8]));
  });
});
