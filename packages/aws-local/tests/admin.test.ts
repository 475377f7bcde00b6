import { CreateBucketCommand, ListBucketsCommand, PutObjectCommand, S3Client } from '@aws-sdk/client-s3';
import { ListQueuesCommand, SQSClient } from '@aws-sdk/client-sqs';
import {
  CreateKeyCommand,
  DecryptCommand,
  DescribeKeyCommand,
  EncryptCommand,
  KMSClient,
  ListKeysCommand,
  ReEncryptCommand,
} from '@aws-sdk/client-kms';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { failure } from './s3-support.js';
import { clientConfig, CREDENTIALS, OTHER_CALLER, startEndpoint, uniqueName, type Endpoint } from './helpers.js';

/** The admin API is aws-local's own; against another endpoint there is nothing to test. */
const external = Boolean(process.env['AWS_ENDPOINT_URL']);

const ACCOUNT_CALLER = { accessKeyId: '111122223333', secretAccessKey: 'test-secret-not-a-real-key' } as const;

interface AdminAnswer {
  status: number;
  body: Record<string, unknown>;
}

describe.skipIf(external)('the /_aws-local admin API', () => {
  let ep: Endpoint;
  let kms: KMSClient;
  let otherKms: KMSClient;

  beforeAll(async () => {
    ep = await startEndpoint();
    kms = new KMSClient(clientConfig(ep));
    otherKms = new KMSClient(clientConfig(ep, OTHER_CALLER));
  });

  afterAll(async () => {
    kms.destroy();
    otherKms.destroy();
    await ep.close();
  });

  // Every test starts from an empty aws-local without rules, so rules cannot leak between tests.
  beforeEach(async () => {
    expect((await admin('POST', 'reset')).status).toBe(200);
  });

  /** Calls the admin API; a string body is sent as is, anything else as JSON. */
  async function admin(method: string, name: string, body?: unknown): Promise<AdminAnswer> {
    const res = await fetch(`${ep.url}/_aws-local/${name}`, {
      method,
      ...(body !== undefined && {
        headers: { 'content-type': 'application/json' },
        body: typeof body === 'string' ? body : JSON.stringify(body),
      }),
    });
    return { status: res.status, body: (await res.json()) as Record<string, unknown> };
  }

  async function newKey(client: KMSClient = kms): Promise<string> {
    const out = await client.send(new CreateKeyCommand({}));
    const arn = out.KeyMetadata?.Arn;
    if (!arn) throw new Error('CreateKey answered no Arn');
    return arn;
  }

  async function encrypt(keyArn: string, client: KMSClient = kms) {
    return client.send(new EncryptCommand({ KeyId: keyArn, Plaintext: Buffer.from('admin-test') }));
  }

  /** Milliseconds a call takes. */
  async function timed(fn: () => Promise<unknown>): Promise<number> {
    const started = performance.now();
    await fn();
    return performance.now() - started;
  }

  it('GET health answers ok and names the services', async () => {
    const res = await admin('GET', 'health');

    expect(res).toEqual({ status: 200, body: { ok: true, services: ['kms', 's3', 'sqs', 'cloudtrail'] } });
  });

  it('an unknown admin route answers 404 naming the route', async () => {
    const res = await admin('GET', 'quota');

    expect(res.status).toBe(404);
    expect(res.body['message']).toBe('aws-local admin: no route GET /_aws-local/quota');
  });

  describe('quota', () => {
    it('throttles KMS cryptographic operations above the burst with ThrottlingException', async () => {
      const key = await newKey();
      await admin('POST', 'quota', { rps: 1, burst: 3 });

      const results = await Promise.allSettled([1, 2, 3, 4].map(() => encrypt(key)));

      expect(results.filter((r) => r.status === 'fulfilled')).toHaveLength(3);
      const rejected = results.find((r) => r.status === 'rejected');
      const err = (rejected as PromiseRejectedResult).reason as Error & { $metadata: { httpStatusCode?: number } };
      expect({ name: err.name, status: err.$metadata.httpStatusCode }).toEqual({ name: 'ThrottlingException', status: 400 });
      expect(err.message).toMatch(/exceeded the rate at which you may call KMS/);
      expect((await admin('GET', 'counters')).body['kms:Encrypt']).toMatchObject({ calls: 4, throttled: 1 });
    });

    it('does not count management operations against the quota', async () => {
      const key = await newKey();
      await admin('POST', 'quota', { rps: 1, burst: 1 });

      for (let i = 0; i < 5; i++) await kms.send(new DescribeKeyCommand({ KeyId: key }));

      expect((await admin('GET', 'counters')).body['kms:DescribeKey']).toMatchObject({ calls: 5, throttled: 0 });
    });

    it('a quota scoped to one account leaves other accounts alone', async () => {
      const accountKms = new KMSClient(clientConfig(ep, ACCOUNT_CALLER));
      try {
        const accountKey = await newKey(accountKms);
        const defaultKey = await newKey();
        await admin('POST', 'quota', { rps: 1, burst: 1, accountId: '111122223333', region: ep.region });

        await encrypt(accountKey, accountKms);
        const err = await failure(encrypt(accountKey, accountKms));
        for (let i = 0; i < 3; i++) await encrypt(defaultKey);

        expect(err.name).toBe('ThrottlingException');
      } finally {
        accountKms.destroy();
      }
    });

    it('a quota without rps removes the quota', async () => {
      const key = await newKey();
      await admin('POST', 'quota', { rps: 1, burst: 1 });
      await encrypt(key);
      expect((await failure(encrypt(key))).name).toBe('ThrottlingException');

      expect((await admin('POST', 'quota', {})).status).toBe(200);

      for (let i = 0; i < 3; i++) await encrypt(key);
    });
  });

  describe('latency', () => {
    it('delays only the named operation', async () => {
      const key = await newKey();
      await admin('POST', 'latency', { op: 'kms:DescribeKey', fixedMs: 400 });

      const slow = await timed(() => kms.send(new DescribeKeyCommand({ KeyId: key })));
      const fast = await timed(() => kms.send(new ListKeysCommand({})));

      expect(slow).toBeGreaterThanOrEqual(395);
      expect(fast).toBeLessThan(395);
    });

    it('random latency stays between minMs and maxMs', async () => {
      await admin('POST', 'latency', { op: 'kms:ListKeys', minMs: 100, maxMs: 250 });

      const times: number[] = [];
      for (let i = 0; i < 4; i++) times.push(await timed(() => kms.send(new ListKeysCommand({}))));

      for (const t of times) expect(t).toBeGreaterThanOrEqual(95);
    });

    it('an operation rule wins over service and global wildcards', async () => {
      const key = await newKey();
      await admin('POST', 'latency', { op: '*', fixedMs: 400 });
      await admin('POST', 'latency', { op: 'kms:ListKeys', fixedMs: 0 });

      const listKeys = await timed(() => kms.send(new ListKeysCommand({})));
      const describeKey = await timed(() => kms.send(new DescribeKeyCommand({ KeyId: key })));

      expect(listKeys).toBeLessThan(395);
      expect(describeKey).toBeGreaterThanOrEqual(395);
    });

    it('a latency rule with only op removes the latency', async () => {
      await admin('POST', 'latency', { op: 'kms:ListKeys', fixedMs: 400 });

      await admin('POST', 'latency', { op: 'kms:ListKeys' });

      expect(await timed(() => kms.send(new ListKeysCommand({})))).toBeLessThan(395);
    });
  });

  describe('faults', () => {
    it('kind error answers KMSInternalException 500 from KMS', async () => {
      const key = await newKey();
      await admin('POST', 'faults', { op: 'kms:Encrypt', probability: 1, kind: 'error' });

      const err = await failure(encrypt(key));

      expect({ name: err.name, status: err.$metadata.httpStatusCode }).toEqual({ name: 'KMSInternalException', status: 500 });
      expect((await admin('GET', 'counters')).body['kms:Encrypt']).toMatchObject({ calls: 1, faults: 1 });
    });

    it('kind error answers InternalError 500 from S3 and InternalFailure 500 from SQS', async () => {
      const s3 = new S3Client(clientConfig(ep));
      const sqs = new SQSClient(clientConfig(ep));
      try {
        await admin('POST', 'faults', { op: 's3:*', probability: 1 });
        await admin('POST', 'faults', { op: 'sqs:ListQueues', probability: 1 });

        const s3Err = await failure(s3.send(new ListBucketsCommand({})));
        const sqsErr = await failure(sqs.send(new ListQueuesCommand({})));

        expect({ name: s3Err.name, status: s3Err.$metadata.httpStatusCode }).toEqual({ name: 'InternalError', status: 500 });
        expect({ name: sqsErr.name, status: sqsErr.$metadata.httpStatusCode }).toEqual({ name: 'InternalFailure', status: 500 });
      } finally {
        s3.destroy();
        sqs.destroy();
      }
    });

    it('kind reset drops the connection and the SDK sees a network error, not an AWS error', async () => {
      await admin('POST', 'faults', { op: 'kms:ListKeys', probability: 1, kind: 'reset' });

      const err = await failure(kms.send(new ListKeysCommand({})));

      expect(err.$metadata?.httpStatusCode).toBeUndefined();
      expect(`${String(err['code'])} ${err.message}`).toMatch(/ECONNRESET|socket hang up/);
      expect((await admin('GET', 'counters')).body['kms:ListKeys']).toMatchObject({ faults: 1 });
    });

    it('probability 0 removes the fault and the next call succeeds', async () => {
      await admin('POST', 'faults', { op: 'kms:ListKeys', probability: 1, kind: 'reset' });
      await failure(kms.send(new ListKeysCommand({})));

      await admin('POST', 'faults', { op: 'kms:ListKeys', probability: 0 });

      expect((await kms.send(new ListKeysCommand({}))).Keys).toEqual([]);
    });

    it('a probability between 0 and 1 fails about that share of calls', async () => {
      await admin('POST', 'faults', { op: 'kms:ListKeys', probability: 0.5 });

      const results = await Promise.allSettled(Array.from({ length: 200 }, () => kms.send(new ListKeysCommand({}))));

      const failed = results.filter((r) => r.status === 'rejected').length;
      // Binomial(200, 0.5): 60..140 is more than five standard deviations either side.
      expect(failed).toBeGreaterThanOrEqual(60);
      expect(failed).toBeLessThanOrEqual(140);
      expect((await admin('GET', 'counters')).body['kms:ListKeys']).toMatchObject({ calls: 200, faults: failed });
    });
  });

  describe('deny', () => {
    it('denies the matching operation, key and caller only, with AccessDeniedException', async () => {
      const denied = await newKey();
      const other = await newKey();
      await admin('POST', 'deny', { service: 'kms', operation: 'Encrypt', resource: denied, caller: OTHER_CALLER.accessKeyId });

      const err = await failure(encrypt(denied, otherKms));
      await encrypt(other, otherKms);
      const mine = await encrypt(denied);
      await otherKms.send(new DecryptCommand({ CiphertextBlob: mine.CiphertextBlob }));

      expect({ name: err.name, status: err.$metadata.httpStatusCode }).toEqual({ name: 'AccessDeniedException', status: 400 });
      expect(err.message).toContain(`kms:Encrypt on resource: ${denied}`);
      expect((await admin('GET', 'counters')).body['kms:Encrypt']).toMatchObject({ denied: 1 });
    });

    it('a rule without a resource denies every matching call of that caller', async () => {
      await admin('POST', 'deny', { service: 'kms', caller: OTHER_CALLER.accessKeyId });

      const err = await failure(otherKms.send(new ListKeysCommand({})));
      await kms.send(new ListKeysCommand({}));

      expect(err.name).toBe('AccessDeniedException');
    });

    it('a rule on a bucket answers S3 AccessDenied 403', async () => {
      const s3 = new S3Client(clientConfig(ep));
      try {
        const Bucket = uniqueName('admin-deny');
        await s3.send(new CreateBucketCommand({ Bucket }));
        await admin('POST', 'deny', { service: 's3', operation: 'PutObject', resource: Bucket });

        const err = await failure(s3.send(new PutObjectCommand({ Bucket, Key: 'k', Body: 'x' })));

        expect({ name: err.name, status: err.$metadata.httpStatusCode }).toEqual({ name: 'AccessDenied', status: 403 });
      } finally {
        s3.destroy();
      }
    });

    it('DELETE deny removes every rule', async () => {
      const key = await newKey();
      await admin('POST', 'deny', { service: 'kms', operation: 'Encrypt' });
      expect((await failure(encrypt(key))).name).toBe('AccessDeniedException');

      expect((await admin('DELETE', 'deny')).status).toBe(200);

      await encrypt(key);
    });
  });

  describe('counters', () => {
    it('GET counts calls per service and operation; DELETE clears them', async () => {
      const key = await newKey();
      await encrypt(key);
      await encrypt(key);

      const before = await admin('GET', 'counters');
      await admin('DELETE', 'counters');
      const after = await admin('GET', 'counters');

      expect(before.body).toEqual({
        'kms:CreateKey': { calls: 1, throttled: 0, faults: 0, denied: 0 },
        'kms:Encrypt': { calls: 2, throttled: 0, faults: 0, denied: 0 },
      });
      expect(after.body).toEqual({});
    });
  });

  describe('kms-usage', () => {
    it('lists KMS calls with caller, key ARNs and error code, filtered by key', async () => {
      const source = await newKey();
      const destination = await newKey();
      const { CiphertextBlob } = await encrypt(source, otherKms);
      await kms.send(new ReEncryptCommand({ CiphertextBlob, DestinationKeyId: destination }));
      await failure(kms.send(new DecryptCommand({ CiphertextBlob, EncryptionContext: { wrong: 'context' } })));

      const res = await admin('GET', `kms-usage?keyArn=${encodeURIComponent(source)}`);

      const entries = res.body['entries'] as Record<string, unknown>[];
      expect(entries.map((e) => [e['eventName'], e['accessKeyId'], e['keyArns'], e['errorCode']])).toEqual([
        ['CreateKey', CREDENTIALS.accessKeyId, [source], null],
        ['Encrypt', OTHER_CALLER.accessKeyId, [source], null],
        ['ReEncrypt', CREDENTIALS.accessKeyId, [source, destination], null],
        ['Decrypt', CREDENTIALS.accessKeyId, [source], 'InvalidCiphertextException'],
      ]);
      for (const e of entries) {
        expect(Object.keys(e).sort()).toEqual(['accessKeyId', 'errorCode', 'eventName', 'eventTime', 'invokedBy', 'keyArns']);
      }
    });

    it('since leaves out earlier calls', async () => {
      const key = await newKey();
      await encrypt(key);
      const since = new Date(Date.now() + 1000).toISOString();

      const res = await admin('GET', `kms-usage?since=${encodeURIComponent(since)}`);

      expect(res.body['entries']).toEqual([]);
    });
  });

  it('POST reset clears state and every rule', async () => {
    const key = await newKey();
    await admin('POST', 'quota', { rps: 1, burst: 1 });
    await admin('POST', 'deny', { service: 'kms', operation: 'CreateKey' });

    await admin('POST', 'reset');

    expect((await failure(kms.send(new DescribeKeyCommand({ KeyId: key })))).name).toBe('NotFoundException');
    const fresh = await newKey();
    for (let i = 0; i < 3; i++) await encrypt(fresh);
    const entries = (await admin('GET', 'kms-usage')).body['entries'] as { eventName: string }[];
    expect(entries.map((e) => e.eventName)).toEqual(['DescribeKey', 'CreateKey', 'Encrypt', 'Encrypt', 'Encrypt']);
  });

  it('POST save without a data dir answers ok', async () => {
    expect(await admin('POST', 'save')).toEqual({ status: 200, body: { ok: true } });
  });

  describe('bad input gets a 400 that names the problem', () => {
    const cases: [string, string, unknown, string][] = [
      ['POST', 'latency', 'not json', 'aws-local admin: body must be a JSON object'],
      ['POST', 'latency', '[1]', 'aws-local admin: body must be a JSON object'],
      ['POST', 'latency', {}, 'aws-local admin: op is required, e.g. "kms:ReEncrypt", "kms:*" or "*"'],
      ['POST', 'latency', { op: 'kms:Encrypt', fixedMs: -1 }, 'aws-local admin: fixedMs must be a non-negative number'],
      ['POST', 'latency', { op: 'kms:Encrypt', fixedMs: '5' }, 'aws-local admin: fixedMs must be a non-negative number'],
      ['POST', 'latency', { op: 'kms:Encrypt', minMs: 10, maxMs: 5 }, 'aws-local admin: maxMs must be >= minMs'],
      ['POST', 'faults', { probability: 1 }, 'aws-local admin: op is required'],
      ['POST', 'faults', { op: 'kms:Encrypt', probability: 2 }, 'fault probability must be between 0 and 1'],
      ['POST', 'faults', { op: 'kms:Encrypt', probability: 1, kind: 'explode' }, 'aws-local admin: kind must be "error" or "reset"'],
      ['POST', 'quota', { rps: 0 }, 'quota rps must be > 0'],
      ['POST', 'quota', { rps: 'fast' }, 'aws-local admin: rps must be a non-negative number'],
      ['POST', 'quota', { rps: 5, accountId: '' }, 'aws-local admin: accountId must be a non-empty string'],
      ['POST', 'deny', { service: 'ec2' }, 'aws-local admin: unknown service ec2'],
      ['POST', 'deny', { service: 'kms', caller: 5 }, 'aws-local admin: caller must be a non-empty string'],
      ['GET', 'kms-usage?since=yesterday', undefined, 'aws-local admin: since must be an ISO date'],
      ['POST', 'latency', { op: 'kms:Encrypt', minMs: 10 }, 'aws-local admin: minMs and maxMs go together'],
      ['POST', 'quota', { burst: 10 }, 'aws-local admin: burst needs rps (send {"rps": null} to remove the quota)'],
      ['POST', 'faults', { op: 'kms:Encrypt' }, 'aws-local admin: probability is required (0 removes the fault)'],
    ];

    it.each(cases)('%s %s %j', async (method, name, body, message) => {
      const res = await admin(method, name, body);

      expect(res).toEqual({ status: 400, body: { __type: 'ValidationException', message } });
    });

    it('a rejected rule changes nothing', async () => {
      const key = await newKey();

      await admin('POST', 'faults', { op: 'kms:Encrypt', probability: 1, kind: 'explode' });

      await encrypt(key);
    });
  });
});
