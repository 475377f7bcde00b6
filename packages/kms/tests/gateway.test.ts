import { ItemError, MigrationFatalError, RetryableError } from '@rekey/core';
import { describe, expect, it } from 'vitest';
import { KmsGatewayError } from '../src/errors.js';
import { createKmsGateway } from '../src/gateway.js';
import { createInFlightLimit } from '../src/in-flight.js';
import { CountingLimiter, fakeKmsClient, RecordingMetrics } from './fakes.js';
import { awsError } from './helpers.js';

const ACCOUNT = '111122223333';
const arn = (id: string) => `arn:aws:kms:us-east-1:${ACCOUNT}:key/${id}`;
const OLD = arn('11111111-1111-1111-1111-111111111111');
const NEW = arn('22222222-2222-2222-2222-222222222222');
const BLOB = new Uint8Array([1, 2, 3, 4]);
const FAST = { maxAttempts: 5, baseMs: 1, capMs: 2 };

function metadata(keyArn: string, state = 'Enabled') {
  return {
    KeyMetadata: {
      Arn: keyArn,
      KeyId: keyArn.split('/')[1],
      KeyState: state,
      KeyUsage: 'ENCRYPT_DECRYPT',
      KeySpec: 'SYMMETRIC_DEFAULT',
      Origin: 'AWS_KMS',
      KeyManager: 'CUSTOMER',
      MultiRegion: false,
      CurrentKeyMaterialId: 'a'.repeat(64),
    },
  };
}

const reEncrypted = { CiphertextBlob: new Uint8Array([9, 9]), SourceKeyId: OLD, KeyId: NEW, SourceKeyMaterialId: 'm1', DestinationKeyMaterialId: 'm2' };

describe('createKmsGateway', () => {
  it('throws when the injected client is not a KMSClient', () => {
    expect(() => createKmsGateway({ client: { send: async () => ({}) } as never })).toThrow(KmsGatewayError);
    expect(() => createKmsGateway({ client: { send: async () => ({}) } as never })).toThrow(/KMSClient/);
  });

  it('builds its own client from a client config and destroys only that one', () => {
    const gw = createKmsGateway({ clientConfig: { region: 'eu-west-1' } });
    expect(gw.client.config.region).toBeDefined();
    gw.destroy();
  });
});

describe('reEncrypt', () => {
  it('takes one limiter token, reports success and maps the response', async () => {
    const { client, calls } = fakeKmsClient(() => reEncrypted);
    const limiter = new CountingLimiter();
    const metrics = new RecordingMetrics();
    const gw = createKmsGateway({ client }, { limiter, metrics });
    const out = await gw.reEncrypt({ ciphertextBlob: BLOB, sourceKeyId: OLD, destinationKeyId: NEW, sourceEncryptionContext: { a: 'b' } });
    expect(out).toEqual({ ciphertextBlob: new Uint8Array([9, 9]), sourceKeyId: OLD, keyId: NEW, sourceKeyMaterialId: 'm1', destinationKeyMaterialId: 'm2' });
    expect(calls[0]?.input).toMatchObject({ SourceKeyId: OLD, DestinationKeyId: NEW, SourceEncryptionContext: { a: 'b' } });
    expect(limiter.acquired).toBe(1);
    expect(limiter.successes).toBe(1);
    expect(metrics.observed).toEqual([{ op: 'ReEncrypt', outcome: 'ok' }]);
  });

  it('retries a throttle, tells the limiter and metrics, then succeeds', async () => {
    let n = 0;
    const { client } = fakeKmsClient(() => (++n === 1 ? awsError('ThrottlingException', 'Rate exceeded') : reEncrypted));
    const limiter = new CountingLimiter();
    const metrics = new RecordingMetrics();
    const gw = createKmsGateway({ client }, { limiter, metrics, retry: FAST });
    await gw.reEncrypt({ ciphertextBlob: BLOB, destinationKeyId: NEW });
    expect(limiter.acquired).toBe(2);
    expect(limiter.throttles).toBe(1);
    expect(limiter.successes).toBe(1);
    expect(metrics.throttledCount).toBe(1);
    expect(metrics.observed.map((o) => o.outcome)).toEqual(['retryable', 'ok']);
  });

  it('gives up after maxAttempts with the RetryableError', async () => {
    const { client, calls } = fakeKmsClient(() => awsError('KMSInternalException', 'internal', 500));
    const gw = createKmsGateway({ client }, { retry: { ...FAST, maxAttempts: 3 } });
    await expect(gw.reEncrypt({ ciphertextBlob: BLOB, destinationKeyId: NEW })).rejects.toBeInstanceOf(RetryableError);
    expect(calls).toHaveLength(3);
  });

  it('does not retry an item error', async () => {
    const { client, calls } = fakeKmsClient(() => awsError('InvalidCiphertextException', ''));
    const gw = createKmsGateway({ client }, { retry: FAST });
    const err = await gw.reEncrypt({ ciphertextBlob: BLOB, destinationKeyId: NEW }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ItemError);
    expect(calls).toHaveLength(1);
  });

  it('a disabled target named in the message is fatal', async () => {
    const { client } = fakeKmsClient(() => awsError('DisabledException', `${NEW} is disabled.`));
    const gw = createKmsGateway({ client }, { retry: FAST });
    const err = await gw.reEncrypt({ ciphertextBlob: BLOB, destinationKeyId: NEW }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(MigrationFatalError);
    expect((err as Error).message).toContain('target key');
  });

  it('a disabled source key fails only the item (the target is described and is fine)', async () => {
    const { client, calls } = fakeKmsClient((cmd) =>
      cmd === 'DescribeKey' ? metadata(NEW) : awsError('DisabledException', `${OLD} is disabled.`),
    );
    const gw = createKmsGateway({ client }, { retry: FAST });
    const err = await gw.reEncrypt({ ciphertextBlob: BLOB, destinationKeyId: 'alias/new' }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ItemError);
    expect((err as ItemError).outcome).toBe('failed');
    expect(calls.map((c) => c.command)).toEqual(['ReEncrypt', 'DescribeKey']);
  });

  it('a key-state error that names no key is fatal when the target turns out disabled', async () => {
    const { client } = fakeKmsClient((cmd) => (cmd === 'DescribeKey' ? metadata(NEW, 'Disabled') : awsError('KMSInvalidStateException', 'key state')));
    const gw = createKmsGateway({ client }, { retry: FAST });
    await expect(gw.reEncrypt({ ciphertextBlob: BLOB, destinationKeyId: 'alias/new' })).rejects.toBeInstanceOf(MigrationFatalError);
  });

  it('a missing target alias is fatal', async () => {
    const { client } = fakeKmsClient((cmd) =>
      cmd === 'DescribeKey' ? awsError('NotFoundException', 'Alias arn:aws:kms:us-east-1:111122223333:alias/gone is not found.') : awsError('NotFoundException', 'not found'),
    );
    const gw = createKmsGateway({ client }, { retry: FAST });
    await expect(gw.reEncrypt({ ciphertextBlob: BLOB, destinationKeyId: 'alias/gone' })).rejects.toBeInstanceOf(MigrationFatalError);
  });

  it('AccessDenied is fatal', async () => {
    const { client } = fakeKmsClient(() => awsError('AccessDeniedException', 'not authorized to perform: kms:ReEncryptTo'));
    const gw = createKmsGateway({ client }, { retry: FAST });
    await expect(gw.reEncrypt({ ciphertextBlob: BLOB, destinationKeyId: NEW })).rejects.toBeInstanceOf(MigrationFatalError);
  });

  it('an empty ciphertext fails the item without spending a token or a call', async () => {
    const { client, calls } = fakeKmsClient(() => reEncrypted);
    const limiter = new CountingLimiter();
    const gw = createKmsGateway({ client }, { limiter });
    await expect(gw.reEncrypt({ ciphertextBlob: new Uint8Array(0), destinationKeyId: NEW })).rejects.toBeInstanceOf(ItemError);
    expect(limiter.acquired).toBe(0);
    expect(calls).toHaveLength(0);
  });

  it('an abort during a retry wait rejects with the abort reason', async () => {
    const ac = new AbortController();
    const reason = new Error('shutdown');
    const { client, calls } = fakeKmsClient(() => {
      setImmediate(() => ac.abort(reason));
      return awsError('ThrottlingException');
    });
    const gw = createKmsGateway({ client }, { retry: { maxAttempts: 5, baseMs: 60_000, capMs: 60_000 } });
    await expect(gw.reEncrypt({ ciphertextBlob: BLOB, destinationKeyId: NEW }, ac.signal)).rejects.toBe(reason);
    expect(calls).toHaveLength(1);
  });

  it('an abort while a call is in flight rejects at once with the abort reason, and frees its slot', async () => {
    const ac = new AbortController();
    const reason = new Error('shutdown');
    const { client } = fakeKmsClient(() => {
      setImmediate(() => ac.abort(reason));
      return new Promise((resolve) => setTimeout(() => resolve(reEncrypted), 60_000).unref());
    });
    const inFlight = createInFlightLimit(1);
    const metrics = new RecordingMetrics();
    const gw = createKmsGateway({ client }, { inFlight, metrics });
    await expect(gw.reEncrypt({ ciphertextBlob: BLOB, destinationKeyId: NEW }, ac.signal)).rejects.toBe(reason);
    expect(inFlight.inFlight()).toBe(0);
    expect(metrics.observed).toEqual([{ op: 'ReEncrypt', outcome: 'aborted' }]);
  });

  it('sends every command with no per-call options, so a client with cacheMiddleware keeps its handler cache', async () => {
    const { client } = fakeKmsClient((cmd) => {
      if (cmd === 'DescribeKey') return metadata(NEW);
      if (cmd === 'Decrypt') return { Plaintext: new Uint8Array([7]), KeyId: OLD };
      if (cmd === 'Encrypt') return { CiphertextBlob: new Uint8Array([8]), KeyId: NEW };
      if (cmd.startsWith('GenerateDataKey')) return { Plaintext: new Uint8Array(32), CiphertextBlob: new Uint8Array([5]), KeyId: NEW };
      return reEncrypted;
    });
    // A send with options (the SDK's `abortSignal` among them) makes the client drop its cache.
    const argCounts: number[] = [];
    const send = client.send.bind(client) as (...args: unknown[]) => Promise<unknown>;
    (client as unknown as { send: (...args: unknown[]) => Promise<unknown> }).send = (...args) => {
      argCounts.push(args.length);
      return send(...args);
    };
    const gw = createKmsGateway({ client });
    const signal = new AbortController().signal;
    await gw.reEncrypt({ ciphertextBlob: BLOB, destinationKeyId: NEW }, signal);
    await gw.decrypt({ ciphertextBlob: BLOB }, signal);
    await gw.encrypt({ keyId: NEW, plaintext: new Uint8Array([1]) }, signal);
    await gw.generateDataKey({ keyId: NEW }, signal);
    await gw.generateDataKeyWithoutPlaintext({ keyId: NEW }, signal);
    await gw.describeKey(NEW, signal);
    expect(argCounts).toEqual([1, 1, 1, 1, 1, 1]);
  });
});

describe('other operations', () => {
  it('decrypt, encrypt and generateDataKey each take one token; describeKey takes none', async () => {
    const { client } = fakeKmsClient((cmd) => {
      switch (cmd) {
        case 'Decrypt':
          return { Plaintext: new Uint8Array([7]), KeyId: OLD, KeyMaterialId: 'm' };
        case 'Encrypt':
          return { CiphertextBlob: new Uint8Array([8]), KeyId: NEW };
        case 'GenerateDataKey':
          return { Plaintext: new Uint8Array(32), CiphertextBlob: new Uint8Array([5]), KeyId: NEW };
        case 'GenerateDataKeyWithoutPlaintext':
          return { CiphertextBlob: new Uint8Array([5]), KeyId: NEW };
        default:
          return metadata(NEW);
      }
    });
    const limiter = new CountingLimiter();
    const gw = createKmsGateway({ client }, { limiter });
    expect((await gw.decrypt({ ciphertextBlob: BLOB })).keyId).toBe(OLD);
    expect((await gw.encrypt({ keyId: NEW, plaintext: new Uint8Array([1]) })).keyId).toBe(NEW);
    expect((await gw.generateDataKey({ keyId: NEW })).plaintext).toHaveLength(32);
    expect((await gw.generateDataKeyWithoutPlaintext({ keyId: NEW })).keyId).toBe(NEW);
    expect(limiter.acquired).toBe(4);
    await gw.describeKey('alias/new');
    expect(limiter.acquired).toBe(4);
    await gw.acquire();
    expect(limiter.acquired).toBe(5);
  });

  it('describeKey maps KeyMetadata to KeyInfo', async () => {
    const { client } = fakeKmsClient(() => metadata(NEW));
    const info = await createKmsGateway({ client }).describeKey('alias/new');
    expect(info).toEqual({
      arn: NEW,
      keyId: '22222222-2222-2222-2222-222222222222',
      state: 'Enabled',
      usage: 'ENCRYPT_DECRYPT',
      spec: 'SYMMETRIC_DEFAULT',
      origin: 'AWS_KMS',
      manager: 'CUSTOMER',
      multiRegion: false,
      customKeyStore: false,
      currentKeyMaterialId: 'a'.repeat(64),
    });
  });

  it('resolveKeys keeps the order given and describes each reference once', async () => {
    const { client, calls } = fakeKmsClient((_cmd, input) => metadata(input['KeyId'] === 'alias/old' ? OLD : NEW));
    const infos = await createKmsGateway({ client }).resolveKeys(['alias/new', 'alias/old', 'alias/new']);
    expect(infos.map((k) => k.arn)).toEqual([NEW, OLD, NEW]);
    expect(calls).toHaveLength(2);
  });

  it('reportS3Call feeds S3-side throttles to the limiter and metrics', () => {
    const { client } = fakeKmsClient(() => ({}));
    const limiter = new CountingLimiter();
    const metrics = new RecordingMetrics();
    const gw = createKmsGateway({ client }, { limiter, metrics });
    gw.reportS3Call('throttled');
    gw.reportS3Call('ok');
    expect(limiter.throttles).toBe(1);
    expect(limiter.successes).toBe(1);
    expect(metrics.throttledCount).toBe(1);
  });
});
