import { randomInt } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CloudTrailClient, LookupEventsCommand, type Event, type LookupEventsCommandInput } from '@aws-sdk/client-cloudtrail';
import { CreateKeyCommand, DecryptCommand, DisableKeyCommand, EncryptCommand, KMSClient, ReEncryptCommand } from '@aws-sdk/client-kms';
import { clientConfig, startEndpoint, type Endpoint } from './helpers.js';

let ep: Endpoint;
const clients: Array<{ destroy(): void }> = [];

beforeAll(async () => {
  ep = await startEndpoint();
});

afterAll(async () => {
  for (const c of clients) c.destroy();
  await ep.close();
});

/**
 * A caller of its own: an access key id of twelve digits names the account in aws-local (as in
 * LocalStack), so every test sees only its own events.
 */
function newCaller(region = ep.region) {
  const accessKeyId = String(randomInt(100_000_000_000, 999_999_999_999));
  const cfg = { ...clientConfig(ep, { accessKeyId, secretAccessKey: 'test-secret-not-a-real-key' }), region };
  const kms = new KMSClient(cfg);
  const ct = new CloudTrailClient(cfg);
  clients.push(kms, ct);
  return { accessKeyId, accountId: accessKeyId, kms, ct };
}

async function newKey(kms: KMSClient): Promise<string> {
  const out = await kms.send(new CreateKeyCommand({ Description: 'cloudtrail test' }));
  const arn = out.KeyMetadata?.Arn;
  if (!arn) throw new Error('CreateKey returned no ARN');
  return arn;
}

async function lookup(ct: CloudTrailClient, input: LookupEventsCommandInput = {}): Promise<Event[]> {
  return (await ct.send(new LookupEventsCommand(input))).Events ?? [];
}

// eslint-disable-next-line @typescript-eslint/no-explicit-any -- the CloudTrailEvent document is walked by field name; the assertions check its shape.
type Doc = Record<string, any>;

function parsed(e: Event | undefined): Doc {
  return JSON.parse(e?.CloudTrailEvent ?? '{}') as Doc;
}

async function failure(p: Promise<unknown>): Promise<Error> {
  try {
    await p;
  } catch (err) {
    return err as Error;
  }
  throw new Error('expected the call to fail, but it succeeded');
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe('LookupEvents over KMS calls (SDK)', () => {
  it('finds a key\'s events by ResourceName, newest first; ReEncrypt lists source and destination keys', async () => {
    const { kms, ct, accessKeyId, accountId } = newCaller();
    const source = await newKey(kms);
    const dest = await newKey(kms);
    const enc = await kms.send(new EncryptCommand({ KeyId: source, Plaintext: Buffer.from('data key') }));
    await kms.send(new ReEncryptCommand({ CiphertextBlob: enc.CiphertextBlob, DestinationKeyId: dest }));

    const events = await lookup(ct, { LookupAttributes: [{ AttributeKey: 'ResourceName', AttributeValue: source }] });
    expect(events.map((e) => e.EventName)).toEqual(['ReEncrypt', 'Encrypt', 'CreateKey']);
    const re = events[0];
    expect(re?.Resources).toEqual([
      { ResourceType: 'AWS::KMS::Key', ResourceName: source },
      { ResourceType: 'AWS::KMS::Key', ResourceName: dest },
    ]);
    expect(re).toMatchObject({ EventSource: 'kms.amazonaws.com', AccessKeyId: accessKeyId, ReadOnly: 'true', Username: accessKeyId });
    expect(re?.EventTime).toBeInstanceOf(Date);
    expect(Math.abs((re?.EventTime?.getTime() ?? 0) - Date.now())).toBeLessThan(60_000);

    const doc = parsed(re);
    expect(doc).toMatchObject({
      eventVersion: expect.stringMatching(/^1\.\d+$/),
      userIdentity: { type: 'IAMUser', accountId, accessKeyId, arn: `arn:aws:iam::${accountId}:user/${accessKeyId}` },
      eventSource: 'kms.amazonaws.com',
      eventName: 'ReEncrypt',
      awsRegion: ep.region,
      requestParameters: { destinationKeyId: dest, sourceEncryptionAlgorithm: 'SYMMETRIC_DEFAULT', destinationEncryptionAlgorithm: 'SYMMETRIC_DEFAULT' },
      responseElements: null,
      eventID: re?.EventId,
      readOnly: true,
      resources: [
        { accountId, type: 'AWS::KMS::Key', ARN: source },
        { accountId, type: 'AWS::KMS::Key', ARN: dest },
      ],
      eventType: 'AwsApiCall',
      managementEvent: true,
      recipientAccountId: accountId,
      eventCategory: 'Management',
    });
    expect(doc['eventTime']).toMatch(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$/);
    expect(doc['requestID']).toBeTruthy();
    expect(doc['userIdentity']['invokedBy']).toBeUndefined();
    expect(doc['errorCode']).toBeUndefined();
    // Neither plaintext nor ciphertext is ever logged.
    expect(re?.CloudTrailEvent).not.toContain(Buffer.from('data key').toString('base64'));

    const byDest = await lookup(ct, { LookupAttributes: [{ AttributeKey: 'ResourceName', AttributeValue: dest }] });
    expect(byDest.map((e) => e.EventName)).toEqual(['ReEncrypt', 'CreateKey']);
  });

  it('records failed calls with errorCode and errorMessage, found by EventName', async () => {
    const { kms, ct } = newCaller();
    const key = await newKey(kms);
    await kms.send(new DisableKeyCommand({ KeyId: key }));
    const err = await failure(kms.send(new EncryptCommand({ KeyId: key, Plaintext: Buffer.from('x') })));
    expect(err.name).toBe('DisabledException');

    const encrypts = await lookup(ct, { LookupAttributes: [{ AttributeKey: 'EventName', AttributeValue: 'Encrypt' }] });
    expect(encrypts).toHaveLength(1);
    const doc = parsed(encrypts[0]);
    expect(doc['errorCode']).toBe('DisabledException');
    expect(doc['errorMessage']).toEqual(expect.any(String));
    expect(doc['resources']).toEqual([expect.objectContaining({ ARN: key })]);

    const disables = await lookup(ct, { LookupAttributes: [{ AttributeKey: 'EventName', AttributeValue: 'DisableKey' }] });
    expect(disables.map((e) => [e.EventName, e.ReadOnly])).toEqual([['DisableKey', 'false']]);
  });

  it('finds events by AccessKeyId, Username, ReadOnly, EventSource, ResourceType and EventId', async () => {
    const { kms, ct, accessKeyId } = newCaller();
    const key = await newKey(kms);
    const enc = await kms.send(new EncryptCommand({ KeyId: key, Plaintext: Buffer.from('x') }));
    await kms.send(new DecryptCommand({ CiphertextBlob: enc.CiphertextBlob }));

    const byKey = await lookup(ct, { LookupAttributes: [{ AttributeKey: 'AccessKeyId', AttributeValue: accessKeyId }] });
    expect(byKey.map((e) => e.EventName)).toEqual(['Decrypt', 'Encrypt', 'CreateKey']);
    const byUser = await lookup(ct, { LookupAttributes: [{ AttributeKey: 'Username', AttributeValue: accessKeyId }] });
    expect(byUser.map((e) => e.EventId)).toEqual(byKey.map((e) => e.EventId));
    const readOnly = await lookup(ct, { LookupAttributes: [{ AttributeKey: 'ReadOnly', AttributeValue: 'true' }] });
    expect(readOnly.map((e) => e.EventName)).toEqual(['Decrypt', 'Encrypt']);
    const writes = await lookup(ct, { LookupAttributes: [{ AttributeKey: 'ReadOnly', AttributeValue: 'false' }] });
    expect(writes.map((e) => e.EventName)).toEqual(['CreateKey']);
    const bySource = await lookup(ct, { LookupAttributes: [{ AttributeKey: 'EventSource', AttributeValue: 'kms.amazonaws.com' }] });
    expect(bySource).toHaveLength(3);
    expect(await lookup(ct, { LookupAttributes: [{ AttributeKey: 'EventSource', AttributeValue: 's3.amazonaws.com' }] })).toEqual([]);
    const byType = await lookup(ct, { LookupAttributes: [{ AttributeKey: 'ResourceType', AttributeValue: 'AWS::KMS::Key' }] });
    expect(byType).toHaveLength(3);
    const one = await lookup(ct, { LookupAttributes: [{ AttributeKey: 'EventId', AttributeValue: byKey[1]?.EventId ?? '' }] });
    expect(one.map((e) => e.EventName)).toEqual(['Encrypt']);
  });

  it('StartTime and EndTime select a time window', async () => {
    const { kms, ct } = newCaller();
    const early = await newKey(kms);
    await sleep(30);
    const mark = new Date();
    await sleep(30);
    const late = await newKey(kms);

    const after = await lookup(ct, { StartTime: mark });
    expect(after.flatMap((e) => e.Resources?.map((r) => r.ResourceName))).toEqual([late]);
    const before = await lookup(ct, { EndTime: mark });
    expect(before.flatMap((e) => e.Resources?.map((r) => r.ResourceName))).toEqual([early]);
    const both = await lookup(ct, { StartTime: new Date(mark.getTime() - 60_000), EndTime: new Date() });
    expect(both).toHaveLength(2);
  });

  it('pages with MaxResults and NextToken, newest first, without gaps or repeats', async () => {
    const { kms, ct } = newCaller();
    const key = await newKey(kms);
    for (let i = 0; i < 4; i++) await kms.send(new EncryptCommand({ KeyId: key, Plaintext: Buffer.from(`p${i}`) }));
    const all = await lookup(ct);
    expect(all).toHaveLength(5);

    const seen: string[] = [];
    let NextToken: string | undefined;
    const sizes: number[] = [];
    do {
      const page = await ct.send(new LookupEventsCommand({ MaxResults: 2, NextToken }));
      sizes.push(page.Events?.length ?? 0);
      seen.push(...(page.Events ?? []).map((e) => e.EventId ?? ''));
      NextToken = page.NextToken;
      // An event made while paging is newer than every page and must not show up in later ones.
      if (sizes.length === 1) await kms.send(new EncryptCommand({ KeyId: key, Plaintext: Buffer.from('late') }));
    } while (NextToken);
    expect(sizes).toEqual([2, 2, 1]);
    expect(seen).toEqual(all.map((e) => e.EventId));
    const times = all.map((e) => e.EventTime?.getTime() ?? 0);
    expect([...times].sort((a, b) => b - a)).toEqual(times);
  });

  it('shows only events of the caller\'s account and region', async () => {
    const a = newCaller();
    const b = newCaller();
    const key = await newKey(a.kms);
    expect(await lookup(b.ct, { LookupAttributes: [{ AttributeKey: 'ResourceName', AttributeValue: key }] })).toEqual([]);
    const otherRegion = new CloudTrailClient({
      ...clientConfig(ep, { accessKeyId: a.accessKeyId, secretAccessKey: 'test-secret-not-a-real-key' }),
      region: ep.region === 'eu-west-1' ? 'us-east-1' : 'eu-west-1',
    });
    clients.push(otherRegion);
    expect(await lookup(otherRegion, { LookupAttributes: [{ AttributeKey: 'ResourceName', AttributeValue: key }] })).toEqual([]);
    expect(await lookup(a.ct, { LookupAttributes: [{ AttributeKey: 'ResourceName', AttributeValue: key }] })).toHaveLength(1);
  });

  it('refuses invalid lookup attributes, time ranges, MaxResults and tokens', async () => {
    const { ct } = newCaller();
    const two = await failure(
      lookup(ct, {
        LookupAttributes: [
          { AttributeKey: 'EventName', AttributeValue: 'Encrypt' },
          { AttributeKey: 'EventSource', AttributeValue: 'kms.amazonaws.com' },
        ],
      }),
    );
    expect(two.name).toBe('InvalidLookupAttributesException');
    const badKey = await failure(lookup(ct, { LookupAttributes: [{ AttributeKey: 'Color' as never, AttributeValue: 'blue' }] }));
    expect(badKey.name).toBe('InvalidLookupAttributesException');
    const range = await failure(lookup(ct, { StartTime: new Date(), EndTime: new Date(Date.now() - 60_000) }));
    expect(range.name).toBe('InvalidTimeRangeException');
    for (const MaxResults of [0, 51]) {
      const max = await failure(lookup(ct, { MaxResults }));
      expect(max.name).toBe('InvalidMaxResultsException');
    }
    const token = await failure(lookup(ct, { NextToken: 'not-a-token' }));
    expect(token.name).toBe('InvalidNextTokenException');
  });

  it('a NextToken is valid only with the parameters it was issued for', async () => {
    const { kms, ct } = newCaller();
    await newKey(kms);
    await newKey(kms);
    const page = await ct.send(new LookupEventsCommand({ MaxResults: 1 }));
    expect(page.NextToken).toBeTruthy();
    const err = await failure(
      ct.send(
        new LookupEventsCommand({
          MaxResults: 1,
          NextToken: page.NextToken,
          LookupAttributes: [{ AttributeKey: 'EventName', AttributeValue: 'CreateKey' }],
        }),
      ),
    );
    expect(err.name).toBe('InvalidNextTokenException');
  });
});

describe('LookupEvents over the usage log (aws-local in-process)', () => {
  it('S3-made calls carry invokedBy, and the service as source IP and user agent', async ({ skip }) => {
    if (!ep.local) skip();
    const { ct, accessKeyId, accountId } = newCaller();
    const keyArn = `arn:aws:kms:${ep.region}:${accountId}:key/11111111-2222-3333-4444-555555555555`;
    ep.local!.usage.append({
      eventTime: new Date(),
      eventName: 'GenerateDataKey',
      accountId,
      region: ep.region,
      accessKeyId,
      invokedBy: 's3.amazonaws.com',
      sourceIp: 's3.amazonaws.com',
      userAgent: 's3.amazonaws.com',
      keyArns: [keyArn],
      requestParameters: { keyId: keyArn, keySpec: 'AES_256', encryptionContext: { 'aws:s3:arn': 'arn:aws:s3:::bucket/key' } },
      responseElements: null,
      requestId: 'req-1',
    });
    const [e] = await lookup(ct, { LookupAttributes: [{ AttributeKey: 'ResourceName', AttributeValue: keyArn }] });
    expect(e?.AccessKeyId).toBe(accessKeyId);
    const doc = parsed(e);
    expect(doc['userIdentity']).toMatchObject({ accessKeyId, invokedBy: 's3.amazonaws.com' });
    expect(doc['sourceIPAddress']).toBe('s3.amazonaws.com');
    expect(doc['userAgent']).toBe('s3.amazonaws.com');
    expect(doc['requestParameters']).toEqual({ keyId: keyArn, keySpec: 'AES_256', encryptionContext: { 'aws:s3:arn': 'arn:aws:s3:::bucket/key' } });
  });

  it('LookupEvents goes through the admin controls', async ({ skip }) => {
    if (!ep.local) skip();
    const { ct } = newCaller();
    ep.local!.controls.setFault('cloudtrail:LookupEvents', { probability: 1, kind: 'error' });
    try {
      const err = await failure(lookup(ct));
      expect((err as Error & { $metadata?: { httpStatusCode?: number } }).$metadata?.httpStatusCode).toBe(500);
    } finally {
      ep.local!.controls.setFault('cloudtrail:LookupEvents', null);
    }
    expect(ep.local!.controls.getCounters()['cloudtrail:LookupEvents']?.faults).toBeGreaterThanOrEqual(1);
  });
});
