import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DescribeKeyCommand, UpdateAliasCommand, CreateAliasCommand } from '@aws-sdk/client-kms';
import { GetObjectTaggingCommand, CreateBucketCommand } from '@aws-sdk/client-s3';
import { KMS_CRYPTO_OPERATIONS } from '@rekey/aws-local';
import { createEnvelopeClient } from '@rekey/envelope';
import { createTestSchema, type TestSchema } from '@rekey/testing';
import { startStack, type Stack } from './harness.js';
import { createKey, readRow, readSse, seedRows, seedSseObjects, sha, times } from './seed.js';

describe('a migration across processes (coordinator + 2 workers, Redis, Postgres, aws-local)', () => {
  let stack: Stack;
  let db: TestSchema;
  let oldKey: string;
  let newKey: string;
  const sse = new Map<string, Map<string, string>>();
  let envHashes: Map<string, string>;
  let rowHashes: Map<number, string>;
  let migrationId: string;

  beforeAll(async () => {
    stack = await startStack({ workers: 2 });
    db = await createTestSchema('e2e_migrate');
    oldKey = await createKey(stack.kms, 'old');
    await stack.kms.send(new CreateAliasCommand({ AliasName: 'alias/e2e-app', TargetKeyId: oldKey }));
    for (const strategy of ['update-encryption', 'copy', 'multipart-copy']) {
      sse.set(strategy, await seedSseObjects(stack.s3, `e2e-${strategy}`, 'alias/e2e-app', 120));
    }
    await stack.s3.send(new CreateBucketCommand({ Bucket: 'e2e-envelope' }));
    const envelope = createEnvelopeClient({ kms: { client: stack.kms } });
    envHashes = new Map();
    await times(80, 16, async (i) => {
      const body = Buffer.from(`envelope object ${i} ${'x'.repeat(i)}`);
      envHashes.set(`env/${i}`, sha(body));
      await envelope.putObject(stack.s3, { Bucket: 'e2e-envelope', Key: `env/${i}`, Body: body, keyId: 'alias/e2e-app', context: { app: 'e2e' } });
    });
    rowHashes = await seedRows(db.pool, stack.kms, `"${db.schema}".secrets`, 'alias/e2e-app', 150);
    newKey = await createKey(stack.kms, 'new');
    await stack.kms.send(new UpdateAliasCommand({ AliasName: 'alias/e2e-app', TargetKeyId: newKey }));
  });

  afterAll(async () => {
    await stack?.stop();
    await db?.drop();
  });

  it('migrates every source and strategy to 100% and the gate turns ready', async () => {
    const m = await stack.api.create({
      sources: [
        { name: 'sse-update', kind: 's3-sse-kms', bucket: 'e2e-update-encryption', strategy: 'update-encryption' },
        { name: 'sse-copy', kind: 's3-sse-kms', bucket: 'e2e-copy', strategy: 'copy' },
        { name: 'sse-multipart', kind: 's3-sse-kms', bucket: 'e2e-multipart-copy', strategy: 'multipart-copy' },
        { name: 'envelope', kind: 's3-envelope', bucket: 'e2e-envelope' },
        { name: 'rows', kind: 'postgres', schema: db.schema, table: 'secrets', primaryKey: ['id'], column: 'secret', contextColumn: 'ctx' },
      ],
      from: [oldKey],
      to: 'alias/e2e-app',
      options: { batchSize: 25, concurrency: 8 },
    });
    migrationId = m.id;
    expect(m.keys.to).toBe(newKey);
    await stack.waitForState(m.id, ['ready', 'blocked', 'paused']);
    const st = await stack.api.status(m.id);
    expect(st.migration.state).toBe('ready');
    for (const s of st.sources) {
      expect(s.processed, s.name).toBe(s.counters.discovered);
      expect(s.counters.failed, s.name).toBe(0);
      expect(s.counters.verifyOldKey, s.name).toBe(0);
    }
    expect(st.totals.outcomes['reencrypted']).toBe(3 * 120 + 80 + 150);
  });

  it('keeps contents byte-identical and metadata, tags and storage class', async () => {
    for (const [strategy, hashes] of sse) {
      for (const [key, hash] of [...hashes].slice(0, 40)) {
        const o = await readSse(stack.s3, `e2e-${strategy}`, key);
        expect(o.hash).toBe(hash);
        expect(o.keyArn).toBe(newKey);
        expect(o.metadata).toMatchObject({ owner: 'e2e' });
        expect(o.contentType).toBe('application/x-test');
        expect(o.cacheControl).toBe('max-age=60');
        const i = Number(key.split('/')[1]);
        expect(o.storageClass).toBe(i % 2 === 0 ? 'STANDARD_IA' : 'STANDARD');
        const tags = await stack.s3.send(new GetObjectTaggingCommand({ Bucket: `e2e-${strategy}`, Key: key }));
        expect(tags.TagSet).toContainEqual({ Key: 'team', Value: 'e2e' });
      }
    }
  });

  it('the fleet made only ReEncrypt calls itself (no Decrypt, no GenerateDataKey)', async () => {
    const m = await stack.api.get(migrationId);
    const since = Date.parse(m.createdAt);
    // Cryptographic uses only: DescribeKey (creation resolves the keys, and can land in the same
    // millisecond as createdAt) and GetKeyLastUsage (the usage monitor) read metadata, not the key.
    const fleet = stack.aws.usage.all().filter((e) => e.eventTime.getTime() >= since && !e.invokedBy && e.keyArns.includes(oldKey) && KMS_CRYPTO_OPERATIONS.has(e.eventName));
    expect(fleet.length).toBeGreaterThanOrEqual(80 + 150);
    expect(new Set(fleet.map((e) => e.eventName))).toEqual(new Set(['ReEncrypt']));
  });

  it('finalize disables the old key and everything stays readable', async () => {
    const r = await stack.api.finalize(migrationId, { force: false });
    expect(r.disabled).toEqual([oldKey]);
    const d = await stack.kms.send(new DescribeKeyCommand({ KeyId: oldKey }));
    expect(d.KeyMetadata?.KeyState).toBe('Disabled');
    for (const [strategy, hashes] of sse) {
      for (const [key, hash] of [...hashes].slice(0, 20)) expect((await readSse(stack.s3, `e2e-${strategy}`, key)).hash).toBe(hash);
    }
    const envelope = createEnvelopeClient({ kms: { client: stack.kms } });
    for (const [key, hash] of envHashes) {
      const o = await envelope.getObject(stack.s3, { Bucket: 'e2e-envelope', Key: key, context: { app: 'e2e' } });
      expect(sha(o.plaintext)).toBe(hash);
    }
    for (const [id, hash] of rowHashes) {
      const row = await readRow(db.pool, stack.kms, `"${db.schema}".secrets`, id);
      expect(row.hash).toBe(hash);
      expect(row.keyArn).toBe(newKey);
    }
    const audit = await stack.api.audit(migrationId);
    expect(audit.verification.ok).toBe(true);
    expect(audit.entries.map((e) => e.type)).toEqual(expect.arrayContaining(['migration.created', 'state.changed', 'key.disabled']));
  });
});
