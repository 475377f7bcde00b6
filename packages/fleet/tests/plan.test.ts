import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { randomBytes } from 'node:crypto';
import { CreateKeyCommand, EncryptCommand, KMSClient } from '@aws-sdk/client-kms';
import { CreateBucketCommand, HeadObjectCommand, PutBucketVersioningCommand, PutObjectCommand, S3Client } from '@aws-sdk/client-s3';
import { parseMigrationSpec, type SourceSpec } from '@rekey/core';
import { createKmsGateway } from '@rekey/kms';
import { createSource } from '@rekey/sources';
import { awsClientConfig, createTestSchema, uniqueName, useAwsLocal, type AwsTestEndpoint, type TestSchema } from '@rekey/testing';
import { planLines, planMigration, type PlanTarget } from '../src/index.js';

describe('plan: counts per key, estimates and warnings, read-only (aws-local, Postgres)', () => {
  let ep: AwsTestEndpoint;
  let kms: KMSClient;
  let s3: S3Client;
  let db: TestSchema;
  let a: string;
  let b: string;
  let other: string;
  let target: string;
  let bucket: string;
  const table = 'plan_rows';

  const key = async () => (await kms.send(new CreateKeyCommand({}))).KeyMetadata!.Arn!;
  const put = (Bucket: string, Key: string, keyId: string, extra: Record<string, unknown> = {}) =>
    s3.send(new PutObjectCommand({ Bucket, Key, Body: `body of ${Key}`, ServerSideEncryption: 'aws:kms', SSEKMSKeyId: keyId, ...extra }));
  const spec = (s: Record<string, unknown>): SourceSpec => parseMigrationSpec({ sources: [s], from: [a], to: target }).sources[0]!;
  const buildSource = (s: SourceSpec) => createSource(s, { s3, kms: createKmsGateway({ client: kms }), pool: db.pool });
  const targetOf = (s: Record<string, unknown>): PlanTarget => ({ spec: spec(s), keys: { from: [a, b], to: target } });

  beforeAll(async () => {
    ep = await useAwsLocal();
    kms = new KMSClient(awsClientConfig(ep));
    s3 = new S3Client(awsClientConfig(ep));
    db = await createTestSchema('plan');
    [a, b, other, target] = [await key(), await key(), await key(), await key()];
    bucket = uniqueName('plan');
    await s3.send(new CreateBucketCommand({ Bucket: bucket }));
    for (let i = 0; i < 30; i++) await put(bucket, `a/${i}`, a);
    for (let i = 0; i < 20; i++) await put(bucket, `b/${i}`, b);
    for (let i = 0; i < 5; i++) await put(bucket, `x/${i}`, other);
    await db.pool.query(`CREATE TABLE ${table} (id int PRIMARY KEY, secret bytea NOT NULL)`);
    for (let i = 1; i <= 20; i++) {
      const ct = (await kms.send(new EncryptCommand({ KeyId: i <= 12 ? a : b, Plaintext: randomBytes(32) }))).CiphertextBlob!;
      await db.pool.query(`INSERT INTO ${table} (id, secret) VALUES ($1, $2)`, [i, Buffer.from(ct)]);
    }
  });

  afterAll(async () => {
    await db?.drop();
    kms?.destroy();
    s3?.destroy();
    await ep?.close();
  });

  it('with --all, counts items per current key exactly as seeded, for S3 objects and Postgres rows (rows read a window per SELECT)', async () => {
    const statements: string[] = [];
    const pool = { query: (text: string, values?: unknown[]) => (statements.push(text), db.pool.query(text, values)) };
    const plan = await planMigration({
      targets: [targetOf({ name: 'objects', kind: 's3-sse-kms', bucket }), targetOf({ name: 'rows', kind: 'postgres', schema: db.schema, table, primaryKey: 'id', column: 'secret' })],
      buildSource: (s) => createSource(s, { s3, kms: createKmsGateway({ client: kms }), pool }),
      s3,
      all: true,
      budgetRps: 10,
    });

    const [objects, rows] = plan.sources;
    expect(objects).toMatchObject({ items: 55, sampled: 55, exact: true, underOldKeys: 50, byKey: { [a]: 30, [b]: 20, [other]: 5 } });
    expect(rows).toMatchObject({ items: 20, sampled: 20, exact: true, underOldKeys: 20, byKey: { [a]: 12, [b]: 8 } });
    // One page listed, then the 20 rows read in one window: no SELECT per row.
    expect(statements.filter((q) => q.startsWith('SELECT'))).toHaveLength(2);
  });

  it('estimates KMS requests, the duration at the budget and the request cost', async () => {
    const plan = await planMigration({
      targets: [targetOf({ name: 'objects', kind: 's3-sse-kms', bucket }), targetOf({ name: 'rows', kind: 'postgres', schema: db.schema, table, primaryKey: 'id', column: 'secret' })],
      buildSource,
      s3,
      all: true,
      budgetRps: 10,
      prices: { kmsPer10k: 3 },
    });

    // update-encryption: 1 per object under a from key, none for the rest or for verify.
    expect(plan.sources[0]!.requests.kms).toBe(50);
    // one ReEncrypt per row, and one more per row for verify.
    expect(plan.sources[1]!.requests.kms).toBe(40);
    expect(plan.requests.kms).toBe(90);
    expect(plan.durationSeconds).toBe(9);
    expect(plan.cost.kms).toBeCloseTo(0.027, 6);
    // 50 UpdateObjectEncryption + 2 x 1 LIST page of 100; 2 HEAD per object.
    expect(plan.sources[0]!.requests).toMatchObject({ s3Write: 52, s3Read: 110 });
    expect(plan.cost.s3).toBeCloseTo((52 / 1000) * 0.005 + (110 / 1000) * 0.0004, 8);
    expect(planLines(plan).join('\n')).toMatch(/total: 90 KMS requests -> at least 9.0 s at 10 rps/);
  });

  it('a copy strategy costs two KMS requests per object', async () => {
    const plan = await planMigration({ targets: [targetOf({ name: 'objects', kind: 's3-sse-kms', bucket, strategy: 'copy' })], buildSource, s3, all: true, budgetRps: 100 });

    expect(plan.sources[0]!.requests.kms).toBe(100);
  });

  it('inspects a sample by default and scales the counts to every listed item', async () => {
    const plan = await planMigration({ targets: [targetOf({ name: 'objects', kind: 's3-sse-kms', bucket })], buildSource, s3, sampleSize: 30, budgetRps: 10 });

    const s = plan.sources[0]!;
    expect(s).toMatchObject({ items: 55, sampled: 30, exact: false, byKey: { [a]: 30 } });
    // Listing order is by key: the first 30 are all under a, so the sample says every item is.
    expect(s.underOldKeys).toBe(55);
  });

  it('writes nothing: objects stay under their keys', async () => {
    await planMigration({ targets: [targetOf({ name: 'objects', kind: 's3-sse-kms', bucket, strategy: 'copy' })], buildSource, s3, all: true, budgetRps: 10 });

    expect((await s3.send(new HeadObjectCommand({ Bucket: bucket, Key: 'a/0' }))).SSEKMSKeyId).toBe(a);
    expect((await s3.send(new HeadObjectCommand({ Bucket: bucket, Key: 'b/0' }))).SSEKMSKeyId).toBe(b);
  });

  it('warns about noncurrent versions, ACLs a copy would reset and legacy kms wraps', async () => {
    const versioned = uniqueName('plan-ver');
    await s3.send(new CreateBucketCommand({ Bucket: versioned }));
    await s3.send(new PutBucketVersioningCommand({ Bucket: versioned, VersioningConfiguration: { Status: 'Enabled' } }));
    await put(versioned, 'doc', a);
    await put(versioned, 'doc', a);
    await put(versioned, 'shared', a, { ACL: 'public-read' });
    const env = uniqueName('plan-env');
    await s3.send(new CreateBucketCommand({ Bucket: env }));
    await s3.send(new PutObjectCommand({ Bucket: env, Key: 'legacy', Body: 'x', Metadata: { 'x-amz-key-v2': randomBytes(32).toString('base64'), 'x-amz-wrap-alg': 'kms', 'x-amz-matdesc': '{}' } }));

    const plan = await planMigration({
      targets: [targetOf({ name: 'versioned', kind: 's3-sse-kms', bucket: versioned, strategy: 'copy' }), targetOf({ name: 'envelopes', kind: 's3-envelope', bucket: env })],
      buildSource,
      s3,
      all: true,
      budgetRps: 10,
    });

    const w = plan.warnings.join('\n');
    expect(w).toMatch(/versioned: bucket \S+ is versioned with 1 noncurrent versions; they stay under their old keys/);
    expect(w).toMatch(/versioned: 1 objects have ACL grants beyond the owner; a copy resets the ACL/);
    expect(w).toMatch(/envelopes: 1 objects use the legacy S3EC "kms" wrap/);
    expect(plan.sources[1]!.byKey).toEqual({ '(no KMS key)': 1 });
  });

  it('refuses a budget that is not positive', async () => {
    await expect(planMigration({ targets: [], buildSource, budgetRps: 0 })).rejects.toThrow(/KMS budget must be a positive number/);
  });
});
