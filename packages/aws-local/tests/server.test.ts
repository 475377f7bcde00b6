import { spawn } from 'node:child_process';
import { connect } from 'node:net';
import { fileURLToPath } from 'node:url';
import { CreateBucketCommand, PutObjectCommand, S3Client } from '@aws-sdk/client-s3';
import { CreateKeyCommand, DescribeKeyCommand, KMSClient, ListKeysCommand } from '@aws-sdk/client-kms';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startAwsLocal } from '../src/index.js';
import { failure } from './s3-support.js';
import { clientConfig, CREDENTIALS, OTHER_CALLER, startEndpoint, uniqueName, type Endpoint } from './helpers.js';

/** Tests of aws-local's own server (context parsing, robustness, the bin) skip against another endpoint. */
const external = Boolean(process.env['AWS_ENDPOINT_URL']);

const PACKAGE_DIR = fileURLToPath(new URL('..', import.meta.url));
const BIN = fileURLToPath(new URL('../src/bin.ts', import.meta.url));

/** A SigV4 Authorization header with a valid credential scope; aws-local does not verify signatures. */
function authorization(service: string, accessKeyId = CREDENTIALS.accessKeyId, region = 'us-east-1'): string {
  return `AWS4-HMAC-SHA256 Credential=${accessKeyId}/20250101/${region}/${service}/aws4_request, SignedHeaders=host;x-amz-date, Signature=${'0'.repeat(64)}`;
}

const KMS_JSON = 'application/x-amz-json-1.1';

let ep: Endpoint;
let kms: KMSClient;

beforeAll(async () => {
  ep = await startEndpoint();
  kms = new KMSClient(clientConfig(ep));
});

afterAll(async () => {
  kms.destroy();
  await ep.close();
});

interface Answer {
  status: number;
  headers: Headers;
  text: string;
}

async function send(path: string, init: RequestInit): Promise<Answer> {
  const res = await fetch(`${ep.url}${path}`, init);
  return { status: res.status, headers: res.headers, text: await res.text() };
}

/** A raw KMS call; `auth` null sends it unsigned. */
function kmsCall(operation: string, body: string, auth: string | null = authorization('kms')): Promise<Answer> {
  return send('/', {
    method: 'POST',
    headers: { 'x-amz-target': `TrentService.${operation}`, 'content-type': KMS_JSON, ...(auth && { authorization: auth }) },
    body,
  });
}

/** The server still answers both the admin API and a real SDK call. */
async function expectAlive(): Promise<void> {
  const health = await fetch(`${ep.url}/_aws-local/health`);
  expect(health.status).toBe(200);
  await health.text();
  const keys = await kms.send(new ListKeysCommand({}));
  expect(Array.isArray(keys.Keys)).toBe(true);
}

describe.skipIf(external)('request context', () => {
  it('an unsigned request gets a 403 naming the missing SigV4 credential, on every protocol', async () => {
    const requests: [string, RequestInit][] = [
      ['/', { method: 'POST', headers: { 'x-amz-target': 'TrentService.ListKeys', 'content-type': KMS_JSON }, body: '{}' }],
      [
        '/',
        {
          method: 'POST',
          headers: { 'x-amz-target': 'CloudTrail_20131101.LookupEvents', 'content-type': KMS_JSON },
          body: '{}',
        },
      ],
      ['/', { method: 'POST', headers: { 'x-amz-target': 'AmazonSQS.ListQueues', 'content-type': 'application/x-amz-json-1.0' }, body: '{}' }],
      [
        '/',
        {
          method: 'POST',
          headers: { 'content-type': 'application/x-www-form-urlencoded' },
          body: 'Action=ListQueues&Version=2012-11-05',
        },
      ],
      ['/', { method: 'GET' }],
      ['/some-bucket/some-key', { method: 'PUT', body: 'x' }],
    ];

    const answers = await Promise.all(requests.map(([path, init]) => send(path, init)));

    for (const a of answers) {
      expect(a.status).toBe(403);
      expect(a.text).toContain('MissingAuthenticationToken');
      expect(a.text).toContain('missing a SigV4 Authorization header');
    }
  });

  it('an unsigned KMS request gets MissingAuthenticationToken in the JSON protocol', async () => {
    const a = await kmsCall('ListKeys', '{}', null);

    expect(a.status).toBe(403);
    expect(a.headers.get('x-amzn-errortype')).toBe('MissingAuthenticationToken');
    expect(JSON.parse(a.text)).toMatchObject({ __type: 'MissingAuthenticationToken' });
  });

  it('an Authorization header without a credential scope counts as unsigned', async () => {
    const a = await kmsCall('ListKeys', '{}', 'AWS4-HMAC-SHA256 SignedHeaders=host, Signature=00');

    expect(a.status).toBe(403);
    expect(JSON.parse(a.text)).toMatchObject({ __type: 'MissingAuthenticationToken' });
  });

  it('a twelve-digit access key id names the account; any other id is a caller of the default account', async () => {
    const accountKms = new KMSClient(clientConfig(ep, { accessKeyId: '111122223333', secretAccessKey: 'x' }));
    try {
      const inAccount = await accountKms.send(new CreateKeyCommand({}));
      const inDefault = await kms.send(new CreateKeyCommand({}));

      expect(inAccount.KeyMetadata?.Arn).toMatch(/^arn:aws:kms:us-east-1:111122223333:key\//);
      expect(inAccount.KeyMetadata?.AWSAccountId).toBe('111122223333');
      expect(inDefault.KeyMetadata?.Arn).toMatch(/^arn:aws:kms:us-east-1:000000000000:key\//);
    } finally {
      accountKms.destroy();
    }
  });

  it('the signing region is the region of the call', async () => {
    const euKms = new KMSClient({ ...clientConfig(ep), region: 'eu-west-1' });
    try {
      const key = await euKms.send(new CreateKeyCommand({}));

      const elsewhere = await failure(kms.send(new DescribeKeyCommand({ KeyId: key.KeyMetadata?.KeyId })));

      expect(key.KeyMetadata?.Arn).toMatch(/^arn:aws:kms:eu-west-1:000000000000:key\//);
      expect(elsewhere.name).toBe('NotFoundException');
    } finally {
      euKms.destroy();
    }
  });

  it('the access key id names the caller in the KMS usage log', async () => {
    const otherKms = new KMSClient(clientConfig(ep, OTHER_CALLER));
    try {
      const key = await otherKms.send(new CreateKeyCommand({}));

      const entries = ep.local!.usage.all().filter((e) => e.keyArns.includes(key.KeyMetadata!.Arn!));

      expect(entries.map((e) => [e.eventName, e.accessKeyId])).toEqual([['CreateKey', OTHER_CALLER.accessKeyId]]);
    } finally {
      otherKms.destroy();
    }
  });

  it('a presigned S3 URL names the caller through X-Amz-Credential', async () => {
    const s3 = new S3Client(clientConfig(ep));
    try {
      const Bucket = uniqueName('presigned');
      await s3.send(new CreateBucketCommand({ Bucket }));
      await s3.send(new PutObjectCommand({ Bucket, Key: 'k', Body: 'presigned body' }));
      const credential = encodeURIComponent(`${CREDENTIALS.accessKeyId}/20250101/us-east-1/s3/aws4_request`);

      const a = await send(`/${Bucket}/k?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=${credential}&X-Amz-Signature=00`, {});

      expect({ status: a.status, text: a.text }).toEqual({ status: 200, text: 'presigned body' });
    } finally {
      s3.destroy();
    }
  });
});

describe.skipIf(external)('malformed requests never crash the server', () => {
  const KMS_OPERATIONS = [
    'CreateKey', 'DescribeKey', 'ListKeys', 'CreateAlias', 'UpdateAlias', 'DeleteAlias', 'ListAliases', 'Encrypt',
    'Decrypt', 'ReEncrypt', 'GenerateDataKey', 'GenerateDataKeyWithoutPlaintext', 'GenerateRandom', 'GetPublicKey',
    'EnableKey', 'DisableKey', 'ScheduleKeyDeletion', 'CancelKeyDeletion', 'EnableKeyRotation', 'DisableKeyRotation',
    'GetKeyRotationStatus', 'RotateKeyOnDemand', 'ListKeyRotations', 'GetKeyLastUsage', 'GetKeyPolicy', 'PutKeyPolicy',
    'ListKeyPolicies', 'UpdateKeyDescription', 'TagResource', 'UntagResource', 'ListResourceTags',
    'GetParametersForImport', 'ImportKeyMaterial',
  ];
  const SQS_OPERATIONS = [
    'CreateQueue', 'DeleteQueue', 'ListQueues', 'GetQueueUrl', 'GetQueueAttributes', 'SetQueueAttributes', 'SendMessage',
    'SendMessageBatch', 'ReceiveMessage', 'DeleteMessage', 'DeleteMessageBatch', 'ChangeMessageVisibility',
    'ChangeMessageVisibilityBatch', 'PurgeQueue', 'ListDeadLetterSourceQueues', 'TagQueue', 'UntagQueue', 'ListQueueTags',
  ];
  // Bodies of the wrong shape: wrong JSON types for every common field, odd bytes, odd nesting.
  const GARBAGE_JSON = [
    '{"KeyId":5}',
    '{"KeyId":{"a":1},"TargetKeyId":[],"AliasName":7}',
    '{"KeyId":null,"Plaintext":7,"CiphertextBlob":true}',
    '{"KeyId":"alias/x","Plaintext":"!!not base64","EncryptionContext":"x"}',
    '{"CiphertextBlob":[1,2],"GrantTokens":"x","DestinationKeyId":{}}',
    '{"Tags":"x","Limit":"a","Marker":5,"TagKeys":{}}',
    '{"Tags":[null,5,{"TagKey":1}]}',
    '{"EncryptionContext":{"a":5},"KeyId":"x","Plaintext":"AA=="}',
    '{"NumberOfBytes":"5","KeySpec":5,"PendingWindowInDays":"x","RotationPeriodInDays":-1}',
    '{"Policy":5,"PolicyName":[],"Description":{}}',
    '{"QueueUrl":5,"QueueName":{},"Attributes":"x","Entries":"x","MessageBody":5,"MessageAttributes":{"a":5}}',
    '{"QueueUrl":"x","Entries":[null,5,{"Id":{}}],"ReceiptHandle":[],"AttributeNames":"All","MaxNumberOfMessages":"x"}',
    '{"a":'.repeat(200) + '1' + '}'.repeat(200),
  ];

  it('a KMS body that is not JSON gets SerializationException', async () => {
    const a = await kmsCall('ListKeys', '{"Limit": 5');

    expect(a.status).toBe(400);
    expect(a.headers.get('x-amzn-errortype')).toBe('SerializationException');
    expect(JSON.parse(a.text)).toEqual({ __type: 'SerializationException', message: 'Request body is not valid JSON' });
    await expectAlive();
  });

  it.each(['[]', 'null', '"text"', '5'])('a KMS body of %s gets SerializationException', async (body) => {
    const a = await kmsCall('ListKeys', body);

    expect({ status: a.status, body: JSON.parse(a.text) }).toEqual({
      status: 400,
      body: { __type: 'SerializationException', message: 'Request body must be a JSON object' },
    });
  });

  it('CloudTrail and SQS JSON bodies that are not JSON get SerializationException', async () => {
    const cloudtrail = await send('/', {
      method: 'POST',
      headers: { 'x-amz-target': 'CloudTrail_20131101.LookupEvents', 'content-type': KMS_JSON, authorization: authorization('cloudtrail') },
      body: '{',
    });
    const sqs = await send('/', {
      method: 'POST',
      headers: { 'x-amz-target': 'AmazonSQS.ListQueues', 'content-type': 'application/x-amz-json-1.0', authorization: authorization('sqs') },
      body: '{',
    });

    expect(cloudtrail.status).toBe(400);
    expect(JSON.parse(cloudtrail.text)).toMatchObject({ __type: 'SerializationException' });
    expect(sqs.status).toBe(400);
    expect(JSON.parse(sqs.text).__type).toMatch(/SerializationException$/);
  });

  it('an unknown KMS operation gets UnknownOperationException', async () => {
    const a = await kmsCall('MakeCoffee', '{}');

    expect(a.status).toBe(400);
    expect(JSON.parse(a.text)).toMatchObject({ __type: 'UnknownOperationException' });
  });

  it('wrongly typed bodies to every KMS and CloudTrail operation get an AWS error, never a 5xx', async () => {
    const answers: [string, string, Answer][] = [];
    for (const op of KMS_OPERATIONS) {
      for (const body of GARBAGE_JSON) answers.push([op, body, await kmsCall(op, body)]);
    }
    for (const body of GARBAGE_JSON) {
      const a = await send('/', {
        method: 'POST',
        headers: { 'x-amz-target': 'CloudTrail_20131101.LookupEvents', 'content-type': KMS_JSON, authorization: authorization('cloudtrail') },
        body,
      });
      answers.push(['LookupEvents', body, a]);
    }

    // Unknown fields are ignored, as by AWS, so some of these succeed; none may fail as a server error.
    const wrong = answers.filter(([, , a]) => a.status >= 500 || (a.status >= 400 && typeof JSON.parse(a.text).__type !== 'string'));
    expect(wrong.map(([op, body, a]) => `${op} ${body.slice(0, 60)} -> ${a.status} ${a.text.slice(0, 200)}`)).toEqual([]);
    await expectAlive();
  });

  it('wrongly typed bodies to every SQS operation get an SQS error, never a 5xx, in both protocols', async () => {
    const answers: [string, string, Answer][] = [];
    for (const op of SQS_OPERATIONS) {
      for (const body of GARBAGE_JSON) {
        const a = await send('/', {
          method: 'POST',
          headers: { 'x-amz-target': `AmazonSQS.${op}`, 'content-type': 'application/x-amz-json-1.0', authorization: authorization('sqs') },
          body,
        });
        answers.push([op, body, a]);
      }
      for (const form of [
        '',
        'QueueUrl=%',
        'QueueName=a&Attribute.1.Name=VisibilityTimeout',
        'Attribute.x.Name=1&QueueUrl=x',
        'SendMessageBatchRequestEntry.1.Id=a&QueueUrl=x',
        'MessageAttribute.1.Name=a&MessageAttribute.1.Value.DataType=Number&MessageAttribute.1.Value.StringValue=x&MessageBody=a&QueueUrl=x',
      ]) {
        const a = await send('/', {
          method: 'POST',
          headers: { 'content-type': 'application/x-www-form-urlencoded', authorization: authorization('sqs') },
          body: `Action=${op}&Version=2012-11-05&${form}`,
        });
        answers.push([op, form, a]);
      }
    }

    const wrong = answers.filter(([, , a]) => a.status >= 500 || (a.status >= 400 && !/__type|<Code>/.test(a.text)));
    expect(wrong.map(([op, body, a]) => `${op} ${body.slice(0, 60)} -> ${a.status} ${a.text.slice(0, 200)}`)).toEqual([]);
    await expectAlive();
  });

  it('garbage headers and bodies to S3 get XML 4xx errors', async () => {
    const Bucket = uniqueName('garbage');
    const auth = authorization('s3');
    expect((await send(`/${Bucket}`, { method: 'PUT', headers: { authorization: auth } })).status).toBe(200);
    expect((await send(`/${Bucket}/k`, { method: 'PUT', headers: { authorization: auth }, body: 'hello' })).status).toBe(200);
    const requests: [string, string, Record<string, string>, string?][] = [
      ['PUT', `/${uniqueName('garbage')}`, {}, '<garbage'],
      ['PUT', `/${uniqueName('garbage')}`, {}, '\u0000\u00ff'],
      ['POST', `/${Bucket}?delete`, { 'content-md5': 'xx' }, '<Delete><Object></Object></Delete>'],
      ['POST', `/${Bucket}?delete`, {}, '<<<'],
      ['GET', `/${Bucket}/k`, { range: 'bytes=9-' }],
      ['PUT', `/${Bucket}/k2`, { 'x-amz-copy-source': '%%%' }],
      ['PUT', `/${Bucket}/k2`, { 'x-amz-copy-source': `/${Bucket}/k?versionId=%zz` }],
      ['PUT', `/${Bucket}/k2`, { 'content-md5': '!!!' }, 'x'],
      ['PUT', `/${Bucket}/k2`, { 'x-amz-checksum-sha256': '!!!' }, 'x'],
      ['PUT', `/${Bucket}/k2`, { 'x-amz-server-side-encryption': 'aws:kms', 'x-amz-server-side-encryption-context': '!!!' }, 'x'],
      ['PUT', `/${Bucket}/k2`, { 'x-amz-server-side-encryption': 'aws:kms', 'x-amz-server-side-encryption-aws-kms-key-id': 'nope' }, 'x'],
      [
        'PUT',
        `/${Bucket}/k2`,
        { 'x-amz-content-sha256': 'STREAMING-UNSIGNED-PAYLOAD-TRAILER', 'content-encoding': 'aws-chunked', 'x-amz-decoded-content-length': 'abc' },
        'zz\r\nhello\r\n',
      ],
      ['PUT', `/${Bucket}/k?tagging`, {}, '<<'],
      ['PUT', `/${Bucket}?versioning`, {}, '<VersioningConfiguration><Status>x</Status></VersioningConfiguration>'],
      ['PUT', `/${Bucket}?encryption`, {}, '<'],
      ['PUT', `/${Bucket}/k?encryption`, {}, '<'],
      ['POST', `/${Bucket}/m?uploadId=zzz`, {}, '<'],
      ['PUT', `/${Bucket}/m?uploadId=zzz&partNumber=abc`, {}, 'x'],
      ['GET', `/${Bucket}?list-type=2&continuation-token=zzzz`, {}],
      ['GET', `/${Bucket}?versions&version-id-marker=x`, {}],
      ['PUT', `/${Bucket}/k?acl`, { 'x-amz-acl': 'nope' }],
    ];

    const answers: [string, Answer][] = [];
    for (const [method, path, headers, body] of requests) {
      answers.push([`${method} ${path} ${JSON.stringify(headers)}`, await send(path, { method, headers: { authorization: auth, ...headers }, body })]);
    }

    const wrong = answers.filter(([, a]) => a.status < 400 || a.status >= 500 || !a.text.includes('<Error><Code>'));
    expect(wrong.map(([req, a]) => `${req} -> ${a.status} ${a.text.slice(0, 200)}`)).toEqual([]);
    await expectAlive();
  });

  it('an S3 response header override HTTP cannot carry gets an error, not a crash', async () => {
    const Bucket = uniqueName('header');
    const auth = authorization('s3');
    await send(`/${Bucket}`, { method: 'PUT', headers: { authorization: auth } });
    await send(`/${Bucket}/k`, { method: 'PUT', headers: { authorization: auth }, body: 'hello' });

    const a = await send(`/${Bucket}/k?response-content-disposition=%E2%9C%93`, { headers: { authorization: auth } });

    expect(a.status).toBeGreaterThanOrEqual(400);
    await expectAlive();
  });

  it('a request Node cannot parse as HTTP gets 400 and the server keeps answering', async () => {
    const { port } = new URL(ep.url);
    const reply = await new Promise<string>((resolve, reject) => {
      const socket = connect(Number(port), '127.0.0.1', () => socket.write('NOT HTTP AT ALL\r\n\r\n'));
      let data = '';
      socket.on('data', (c: Buffer) => (data += c.toString('latin1')));
      socket.on('end', () => resolve(data));
      socket.on('error', reject);
    });

    expect(reply).toMatch(/^HTTP\/1\.1 400 /);
    await expectAlive();
  });
});

/** Runs the aws-local command from its TypeScript source. */
function runBin(args: string[]) {
  const child = spawn(process.execPath, ['--import', 'tsx', BIN, ...args], {
    cwd: PACKAGE_DIR,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (c: Buffer) => (stdout += c.toString()));
  child.stderr.on('data', (c: Buffer) => (stderr += c.toString()));
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  return {
    child,
    exited,
    output: () => ({ stdout, stderr }),
    /** Resolves with the URL the command prints once it listens. */
    url: () =>
      new Promise<string>((resolve, reject) => {
        const check = () => {
          const m = /aws-local listening on (http:\/\/\S+)/.exec(stdout);
          if (m?.[1]) resolve(m[1]);
        };
        child.stdout.on('data', check);
        void exited.then((code) => reject(new Error(`aws-local exited with ${String(code)} before listening: ${stderr}`)));
        check();
      }),
  };
}

describe('the aws-local command', () => {
  it('with --port 0 prints its URL, answers /_aws-local/health and exits 0 on SIGTERM', async () => {
    const bin = runBin(['--port', '0']);
    try {
      const url = await bin.url();

      const health = await fetch(`${url}/_aws-local/health`);
      const body = (await health.json()) as { ok: boolean };
      bin.child.kill('SIGTERM');

      expect({ status: health.status, ok: body.ok }).toEqual({ status: 200, ok: true });
      expect(await bin.exited).toBe(0);
    } finally {
      if (bin.child.exitCode === null) bin.child.kill('SIGKILL');
    }
  });

  it('rejects --port abc with exit code 2 and a one-line reason', async () => {
    const bin = runBin(['--port', 'abc']);

    const code = await bin.exited;

    expect(code).toBe(2);
    expect(bin.output().stderr.trim()).toBe('aws-local: --port must be an integer from 0 to 65535, got "abc"');
  });

  it('rejects an unknown option with exit code 2 and the usage', async () => {
    const bin = runBin(['--prot', '4566']);

    const code = await bin.exited;

    expect(code).toBe(2);
    expect(bin.output().stderr).toContain("Unknown option '--prot'");
    expect(bin.output().stderr).toContain('usage: aws-local [--port 4566] [--host 127.0.0.1] [--data-dir DIR]');
  });

  it('exits 1 with a one-line reason when the port is taken', async () => {
    const taken = await startAwsLocal({ port: 0 });
    try {
      const bin = runBin(['--port', String(taken.port)]);

      const code = await bin.exited;

      expect(code).toBe(1);
      expect(bin.output().stderr.trim()).toMatch(/^aws-local: cannot start: listen EADDRINUSE/);
    } finally {
      await taken.close();
    }
  });
});
