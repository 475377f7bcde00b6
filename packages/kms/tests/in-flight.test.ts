import { describe, expect, it } from 'vitest';
import { createKmsGateway } from '../src/gateway.js';
import { createInFlightLimit } from '../src/in-flight.js';
import { CountingLimiter, fakeKmsClient } from './fakes.js';

const OLD = 'arn:aws:kms:us-east-1:111122223333:key/11111111-1111-1111-1111-111111111111';
const NEW = 'arn:aws:kms:us-east-1:111122223333:key/22222222-2222-2222-2222-222222222222';
const tick = () => new Promise((r) => setImmediate(r));

describe('createInFlightLimit', () => {
  it('refuses a limit that is not a positive integer', () => {
    expect(() => createInFlightLimit(0)).toThrow(/positive integer, got 0/);
    expect(() => createInFlightLimit(1.5)).toThrow(RangeError);
  });

  it('grants up to the limit, then serves waiters first come, first served', async () => {
    const slots = createInFlightLimit(2);
    const a = await slots.acquire();
    const b = await slots.acquire();
    const order: string[] = [];
    const c = slots.acquire().then((r) => (order.push('c'), r));
    const d = slots.acquire().then((r) => (order.push('d'), r));
    await tick();
    expect(slots.inFlight()).toBe(2);
    expect(slots.waiting()).toBe(2);
    expect(order).toEqual([]);
    a();
    a(); // a second call frees nothing more
    const rc = await c;
    expect(order).toEqual(['c']);
    expect(slots.inFlight()).toBe(2);
    b();
    const rd = await d;
    expect(order).toEqual(['c', 'd']);
    rc();
    rd();
    expect(slots.inFlight()).toBe(0);
    expect(slots.waiting()).toBe(0);
  });

  it('sums the time calls spend in flight', async () => {
    const slots = createInFlightLimit(4);
    const releases = await Promise.all([slots.acquire(), slots.acquire()]);
    await new Promise((r) => setTimeout(r, 50));
    releases.forEach((r) => r());
    const s = slots.busySeconds();
    // Two calls for ~50 ms each: ~0.1 s (timers are at least, never less than, their delay).
    expect(s).toBeGreaterThanOrEqual(0.098);
    expect(s).toBeLessThan(1);
    await new Promise((r) => setTimeout(r, 20));
    expect(slots.busySeconds()).toBe(s);
  });

  it('an aborted waiter leaves the queue with the signal reason and never takes a slot', async () => {
    const slots = createInFlightLimit(1);
    const held = await slots.acquire();
    const abort = new AbortController();
    const waiting = slots.acquire(abort.signal);
    const next = slots.acquire();
    abort.abort(new Error('shutting down'));
    await expect(waiting).rejects.toThrow('shutting down');
    expect(slots.waiting()).toBe(1);
    held();
    (await next)();
    expect(slots.inFlight()).toBe(0);
    await expect(slots.acquire(abort.signal)).rejects.toThrow('shutting down');
  });
});

describe('gateway with an in-flight limit', () => {
  it('never has more cryptographic calls in flight than the limit, across gateways sharing it', async () => {
    let now = 0;
    let peak = 0;
    const answer = async () => {
      now++;
      peak = Math.max(peak, now);
      await new Promise((r) => setTimeout(r, 2));
      now--;
      return { CiphertextBlob: new Uint8Array([9]), SourceKeyId: OLD, KeyId: NEW };
    };
    const inFlight = createInFlightLimit(3);
    const gateways = [0, 1].map(() => createKmsGateway({ client: fakeKmsClient(answer).client }, { inFlight, limiter: new CountingLimiter() }));
    await Promise.all(Array.from({ length: 40 }, (_, i) => gateways[i % 2]!.reEncrypt({ ciphertextBlob: new Uint8Array([1, 2]), sourceKeyId: OLD, destinationKeyId: NEW })));
    expect(peak).toBe(3);
    expect(inFlight.inFlight()).toBe(0);
  });

  it('frees the slot when KMS fails, and does not take one for DescribeKey', async () => {
    const inFlight = createInFlightLimit(1);
    const { client } = fakeKmsClient((command) => {
      if (command === 'DescribeKey') {
        expect(inFlight.inFlight()).toBe(0);
        return { KeyMetadata: { Arn: NEW, KeyId: 'k', KeyState: 'Enabled', KeyUsage: 'ENCRYPT_DECRYPT', KeySpec: 'SYMMETRIC_DEFAULT' } };
      }
      return Object.assign(new Error('bad blob'), { name: 'InvalidCiphertextException', $metadata: { httpStatusCode: 400 } });
    });
    const gw = createKmsGateway({ client }, { inFlight, retry: { maxAttempts: 1, baseMs: 1, capMs: 1 } });
    await expect(gw.reEncrypt({ ciphertextBlob: new Uint8Array([1]), sourceKeyId: OLD, destinationKeyId: NEW })).rejects.toThrow();
    expect(inFlight.inFlight()).toBe(0);
    await gw.describeKey(NEW);
  });
});
