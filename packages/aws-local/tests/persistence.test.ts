import { spawn } from 'node:child_process';
import { cp, mkdtemp, readdir, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { setTimeout as sleep } from 'node:timers/promises';
import { LookupEventsCommand, CloudTrailClient } from '@aws-sdk/client-cloudtrail';
import {
  CreateAliasCommand,
  CreateKeyCommand,
  DecryptCommand,
  DescribeKeyCommand,
  EncryptCommand,
  KMSClient,
} from '@aws-sdk/client-kms';
import { CreateBucketCommand, GetObjectCommand, PutObjectCommand, S3Client } from '@aws-sdk/client-s3';
import {
  CreateQueueCommand,
  GetQueueAttributesCommand,
  GetQueueUrlCommand,
  ReceiveMessageCommand,
  SendMessageCommand,
  SQSClient,
} from '@aws-sdk/client-sqs';
import { afterEach, describe, expect, it } from 'vitest';
import { startAwsLocal, type AwsLocal } from '../src/index.js';
import { CREDENTIALS } from './helpers.js';

/** `--data-dir` is aws-local's own; against another endpoint there is nothing to test. */
const external = Boolean(process.env['AWS_ENDPOINT_URL']);

const REGION = 'us-east-1';
const PACKAGE_DIR = fileURLToPath(new URL('..', import.meta.url));
const BIN = fileURLToPath(new URL('../src/bin.ts', import.meta.url));

/** Clients for one running aws-local; `destroy()` closes their sockets. */
function clientsFor(url: string) {
  const config = { endpoint: url, region: REGION, credentials: CREDENTIALS, forcePathStyle: true, maxAttempts: 1 };
  const clients = {
    kms: new KMSClient(config),
    s3: new S3Client(config),
    sqs: new SQSClient(config),
    cloudtrail: new CloudTrailClient(config),
  };
  return {
    ...clients,
    destroy: () => Object.values(clients).forEach((c) => c.destroy()),
  };
}

// Everything a test starts is stopped and removed afterwards, also when it fails.
const running: AwsLocal[] = [];
const dirs: string[] = [];

afterEach(async () => {
  for (const aws of running.splice(0)) await aws.close();
  for (const dir of dirs.splice(0)) await rm(dir, { recursive: true, force: true });
});

async function tempDir(): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'aws-local-persist-'));
  dirs.push(dir);
  return dir;
}

async function start(dataDir: string, saveIntervalMs?: number): Promise<AwsLocal> {
  const aws = await startAwsLocal({ port: 0, dataDir, ...(saveIntervalMs !== undefined && { saveIntervalMs }) });
  running.push(aws);
  return aws;
}

/** Stops one aws-local of this test now (for restarts). */
async function stop(aws: AwsLocal): Promise<void> {
  running.splice(running.indexOf(aws), 1);
  await aws.close();
}

/** Newest modification time of any file in `dir`, or 0 when it is empty. */
async function newestWrite(dir: string): Promise<number> {
  let newest = 0;
  for (const name of await readdir(dir)) newest = Math.max(newest, (await stat(join(dir, name))).mtimeMs);
  return newest;
}

describe.skipIf(external)('persistence with a data dir', () => {
  it('KMS keys, SQS queues and messages, S3 objects and the KMS usage log survive a restart', async () => {
    const dataDir = await tempDir();
    const first = await start(dataDir);
    const c1 = clientsFor(first.url);
    const key = (await c1.kms.send(new CreateKeyCommand({ Description: 'persisted' }))).KeyMetadata!;
    await c1.kms.send(new CreateAliasCommand({ AliasName: 'alias/persisted', TargetKeyId: key.KeyId }));
    const ciphertext = (await c1.kms.send(new EncryptCommand({ KeyId: 'alias/persisted', Plaintext: Buffer.from('kept') })))
      .CiphertextBlob;
    const QueueUrl = (await c1.sqs.send(new CreateQueueCommand({ QueueName: 'persisted', Attributes: { VisibilityTimeout: '600' } })))
      .QueueUrl!;
    await c1.sqs.send(new SendMessageCommand({ QueueUrl, MessageBody: 'first' }));
    await c1.sqs.send(new SendMessageCommand({ QueueUrl, MessageBody: 'second' }));
    const inFlight = await c1.sqs.send(new ReceiveMessageCommand({ QueueUrl, MaxNumberOfMessages: 1 }));
    await c1.s3.send(new CreateBucketCommand({ Bucket: 'persisted' }));
    await c1.s3.send(new PutObjectCommand({ Bucket: 'persisted', Key: 'plain.txt', Body: 'plain body' }));
    await c1.s3.send(
      new PutObjectCommand({ Bucket: 'persisted', Key: 'sealed.txt', Body: 'sealed body', ServerSideEncryption: 'aws:kms', SSEKMSKeyId: key.Arn }),
    );
    c1.destroy();
    await stop(first);

    const second = await start(dataDir);
    const c2 = clientsFor(second.url);
    try {
      const described = await c2.kms.send(new DescribeKeyCommand({ KeyId: 'alias/persisted' }));
      const decrypted = await c2.kms.send(new DecryptCommand({ CiphertextBlob: ciphertext }));
      // The port, and with it the queue URL's origin, changes across the restart.
      const url = (await c2.sqs.send(new GetQueueUrlCommand({ QueueName: 'persisted' }))).QueueUrl!;
      const attributes = await c2.sqs.send(new GetQueueAttributesCommand({ QueueUrl: url, AttributeNames: ['All'] }));
      const visible = await c2.sqs.send(new ReceiveMessageCommand({ QueueUrl: url, MaxNumberOfMessages: 10 }));
      const plain = await c2.s3.send(new GetObjectCommand({ Bucket: 'persisted', Key: 'plain.txt' }));
      const sealed = await c2.s3.send(new GetObjectCommand({ Bucket: 'persisted', Key: 'sealed.txt' }));
      const events = await c2.cloudtrail.send(
        new LookupEventsCommand({ LookupAttributes: [{ AttributeKey: 'EventName', AttributeValue: 'Encrypt' }] }),
      );

      expect(described.KeyMetadata).toMatchObject({ KeyId: key.KeyId, Description: 'persisted', KeyState: 'Enabled' });
      expect(Buffer.from(decrypted.Plaintext!).toString()).toBe('kept');
      expect(url).toBe(`${second.url}${new URL(QueueUrl).pathname}`);
      expect(attributes.Attributes).toMatchObject({
        VisibilityTimeout: '600',
        ApproximateNumberOfMessages: '1',
        ApproximateNumberOfMessagesNotVisible: '1',
      });
      // The message received before the restart stays in flight; only the other one is delivered.
      expect(visible.Messages?.map((m) => m.Body)).toEqual([inFlight.Messages?.[0]?.Body === 'first' ? 'second' : 'first']);
      expect(await plain.Body?.transformToString()).toBe('plain body');
      expect(await sealed.Body?.transformToString()).toBe('sealed body');
      expect(sealed.SSEKMSKeyId).toBe(key.Arn);
      expect(events.Events?.map((e) => e.Resources?.[0]?.ResourceName)).toContain(key.Arn);
    } finally {
      c2.destroy();
    }
  });

  it('saves periodically, so state written before a crash is kept', async () => {
    const dataDir = await tempDir();
    const running1 = await start(dataDir, 50);
    const c1 = clientsFor(running1.url);
    const key = (await c1.kms.send(new CreateKeyCommand({}))).KeyMetadata!;
    const created = Date.now();
    c1.destroy();

    // Wait for a save after the change, then take the directory as a crash would leave it.
    for (let i = 0; i < 100 && (await newestWrite(dataDir)) < created; i++) await sleep(20);
    const crashed = await tempDir();
    await cp(dataDir, crashed, { recursive: true });
    const second = await start(crashed);
    const c2 = clientsFor(second.url);
    try {
      const described = await c2.kms.send(new DescribeKeyCommand({ KeyId: key.KeyId }));

      expect(described.KeyMetadata?.Arn).toBe(key.Arn);
    } finally {
      c2.destroy();
    }
  });

  it('POST /_aws-local/save writes the state at once', async () => {
    const dataDir = await tempDir();
    const first = await start(dataDir, 3_600_000);
    const c1 = clientsFor(first.url);
    const key = (await c1.kms.send(new CreateKeyCommand({}))).KeyMetadata!;
    c1.destroy();

    const saved = await fetch(`${first.url}/_aws-local/save`, { method: 'POST' });
    const copy = await tempDir();
    await cp(dataDir, copy, { recursive: true });
    const second = await start(copy);
    const c2 = clientsFor(second.url);
    try {
      expect(saved.status).toBe(200);
      expect((await c2.kms.send(new DescribeKeyCommand({ KeyId: key.KeyId }))).KeyMetadata?.Arn).toBe(key.Arn);
    } finally {
      c2.destroy();
    }
  });

  it('creates a data dir that does not exist yet', async () => {
    const parent = await tempDir();
    const dataDir = join(parent, 'nested', 'state');
    const first = await start(dataDir);
    const c1 = clientsFor(first.url);
    const key = (await c1.kms.send(new CreateKeyCommand({}))).KeyMetadata!;
    c1.destroy();
    await stop(first);

    const second = await start(dataDir);
    const c2 = clientsFor(second.url);
    try {
      expect((await c2.kms.send(new DescribeKeyCommand({ KeyId: key.KeyId }))).KeyMetadata?.Arn).toBe(key.Arn);
    } finally {
      c2.destroy();
    }
  });

  it('refuses to start from a corrupt state file instead of starting empty', async () => {
    const dataDir = await tempDir();
    const first = await start(dataDir);
    await stop(first);
    const [stateFile] = await readdir(dataDir);
    await writeFile(join(dataDir, stateFile!), 'not a v8 snapshot');

    await expect(startAwsLocal({ port: 0, dataDir })).rejects.toThrow();
  });

  it('the aws-local command saves its state on SIGTERM', async () => {
    const dataDir = await tempDir();
    const child = spawn(process.execPath, ['--import', 'tsx', BIN, '--port', '0', '--data-dir', dataDir], {
      cwd: PACKAGE_DIR,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
    try {
      const url = await new Promise<string>((resolve, reject) => {
        let out = '';
        child.stdout.on('data', (c: Buffer) => {
          out += c.toString();
          const m = /aws-local listening on (http:\/\/\S+) \(state in /.exec(out);
          if (m?.[1]) resolve(m[1]);
        });
        void exited.then((code) => reject(new Error(`aws-local exited with ${String(code)} before listening`)));
      });
      const c1 = clientsFor(url);
      const key = (await c1.kms.send(new CreateKeyCommand({}))).KeyMetadata!;
      c1.destroy();

      child.kill('SIGTERM');
      const code = await exited;
      const second = await start(dataDir);
      const c2 = clientsFor(second.url);
      try {
        expect(code).toBe(0);
        expect((await c2.kms.send(new DescribeKeyCommand({ KeyId: key.KeyId }))).KeyMetadata?.Arn).toBe(key.Arn);
      } finally {
        c2.destroy();
      }
    } finally {
      if (child.exitCode === null) child.kill('SIGKILL');
    }
  });
});
