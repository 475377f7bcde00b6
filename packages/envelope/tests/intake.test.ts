import { setTimeout as sleep } from 'node:timers/promises';
import { describe, expect, it } from 'vitest';
import { EnvelopeError } from '../src/errors.js';
import { IntakeBuffer } from '../src/intake.js';
import { awsError, fakeSqs } from './helpers/fake-aws.js';

const QUEUE = 'http://127.0.0.1:1/000000000000/intake';

interface Entry {
  Id: string;
  MessageBody: string;
  MessageGroupId?: string;
  MessageDeduplicationId?: string;
}

function recordingSqs(behaviour: (entries: Entry[]) => unknown = (entries) => ({ Successful: entries.map((e) => ({ Id: e.Id })), Failed: [] })) {
  const batches: Entry[][] = [];
  const client = fakeSqs(async (op, input) => {
    if (op !== 'SendMessageBatch') throw awsError('UnsupportedOperation');
    const entries = input['Entries'] as Entry[];
    batches.push(entries);
    return behaviour(entries);
  });
  return { client, batches };
}

const row = (n: number) => ({ kind: 'row' as const, pk: [n] });

describe('IntakeBuffer', () => {
  it('sends rekey.item messages in batches of at most 10', async () => {
    const { client, batches } = recordingSqs();
    const intake = new IntakeBuffer({ sqs: { client }, queueUrl: QUEUE, source: 'users-ssn', flushMs: 60_000 });

    for (let i = 0; i < 25; i++) intake.enqueue(row(i));
    await intake.flush();

    expect(batches.map((b) => b.length)).toEqual([10, 10, 5]);
    const bodies = batches.flat().map((e) => JSON.parse(e.MessageBody) as unknown);
    expect(bodies[0]).toEqual({ type: 'rekey.item', source: 'users-ssn', item: { kind: 'row', pk: [0] } });
    expect(new Set(batches[0]!.map((e) => e.Id)).size).toBe(10);
    expect(intake.stats()).toMatchObject({ sent: 25, failed: 0, dropped: 0, buffered: 0, inFlight: 0 });
    await intake.close();
  });

  it('does not send the same item twice while it is buffered or in flight', async () => {
    const { client, batches } = recordingSqs();
    const intake = new IntakeBuffer({ sqs: { client }, queueUrl: QUEUE, source: 's', flushMs: 60_000 });

    expect(intake.enqueue({ kind: 's3', key: 'a/b', versionId: 'v1' })).toBe(true);
    expect(intake.enqueue({ versionId: 'v1', key: 'a/b', kind: 's3' })).toBe(false);
    await intake.flush();

    expect(batches.flat()).toHaveLength(1);
    expect(intake.stats().deduplicated).toBe(1);
    await intake.close();
  });

  it('drop-new keeps the oldest messages when the buffer is full', async () => {
    const { client, batches } = recordingSqs();
    const intake = new IntakeBuffer({ sqs: { client }, queueUrl: QUEUE, source: 's', flushMs: 60_000, maxBuffer: 3, dropPolicy: 'drop-new' });

    const accepted = [1, 2, 3, 4, 5].map((n) => intake.enqueue(row(n)));
    await intake.flush();

    expect(accepted).toEqual([true, true, true, false, false]);
    expect(batches.flat().map((e) => (JSON.parse(e.MessageBody) as { item: { pk: number[] } }).item.pk[0])).toEqual([1, 2, 3]);
    expect(intake.stats().dropped).toBe(2);
    await intake.close();
  });

  it('drop-oldest keeps the newest messages when the buffer is full', async () => {
    const { client, batches } = recordingSqs();
    const intake = new IntakeBuffer({ sqs: { client }, queueUrl: QUEUE, source: 's', flushMs: 60_000, maxBuffer: 3, dropPolicy: 'drop-oldest' });

    for (const n of [1, 2, 3, 4, 5]) intake.enqueue(row(n));
    await intake.flush();

    expect(batches.flat().map((e) => (JSON.parse(e.MessageBody) as { item: { pk: number[] } }).item.pk[0])).toEqual([3, 4, 5]);
    expect(intake.stats().dropped).toBe(2);
    await intake.close();
  });

  it('counts failed sends, reports them to onError and never throws to the caller', async () => {
    const { client } = recordingSqs(() => {
      throw awsError('InternalFailure', 500);
    });
    const errors: unknown[] = [];
    const intake = new IntakeBuffer({ sqs: { client }, queueUrl: QUEUE, source: 's', flushMs: 60_000, onError: (e) => errors.push(e) });

    for (let i = 0; i < 12; i++) intake.enqueue(row(i));
    await intake.flush();

    expect(intake.stats()).toMatchObject({ sent: 0, failed: 12 });
    expect(errors).toHaveLength(2);
    expect((errors[0] as EnvelopeError).code).toBe('intake-failed');
    await intake.close();
  });

  it('counts entries SQS refused inside a successful batch', async () => {
    const { client } = recordingSqs((entries) => ({
      Successful: entries.slice(1).map((e) => ({ Id: e.Id })),
      Failed: [{ Id: entries[0]!.Id, Code: 'InvalidMessageContents', SenderFault: true }],
    }));
    const intake = new IntakeBuffer({ sqs: { client }, queueUrl: QUEUE, source: 's', flushMs: 60_000 });

    for (let i = 0; i < 4; i++) intake.enqueue(row(i));
    await intake.flush();

    expect(intake.stats()).toMatchObject({ sent: 3, failed: 1 });
    await intake.close();
  });

  it('buffers without waiting for a slow SQS and sends a partial batch after flushMs', async () => {
    const { client, batches } = recordingSqs();
    const intake = new IntakeBuffer({ sqs: { client }, queueUrl: QUEUE, source: 's', flushMs: 20 });

    intake.enqueue(row(1));
    expect(batches).toHaveLength(0);
    await sleep(150);

    expect(batches.flat()).toHaveLength(1);
    expect(intake.stats().sent).toBe(1);
    await intake.close();
  });

  it('adds a group id and a content dedupe id for FIFO queues', async () => {
    const { client, batches } = recordingSqs();
    const intake = new IntakeBuffer({ sqs: { client }, queueUrl: `${QUEUE}.fifo`, source: 'src', flushMs: 60_000 });

    intake.enqueue(row(1));
    await intake.flush();

    expect(batches[0]?.[0]?.MessageGroupId).toBe('src');
    expect(batches[0]?.[0]?.MessageDeduplicationId).toMatch(/^[0-9a-f]{64}$/);
    await intake.close();
  });

  it('refuses an item that is not an item reference', () => {
    const { client } = recordingSqs();
    const intake = new IntakeBuffer({ sqs: { client }, queueUrl: QUEUE, source: 's' });
    expect(() => intake.enqueue({ kind: 'row', pk: [] })).toThrow(EnvelopeError);
    expect(() => intake.enqueue('users/1')).toThrow(EnvelopeError);
  });

  it('refuses a client of another service', () => {
    expect(() => new IntakeBuffer({ sqs: { client: {} as never }, queueUrl: QUEUE, source: 's' })).toThrow(/SQS client/);
  });
});
