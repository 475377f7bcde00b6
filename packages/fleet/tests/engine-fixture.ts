import { setTimeout as sleep } from 'node:timers/promises';
import { CreateKeyCommand, EncryptCommand, KMSClient } from '@aws-sdk/client-kms';
import { S3Client } from '@aws-sdk/client-s3';
import pino from 'pino';
import type { Migration } from '@rekey/core';
import { awsClientConfig, cleanupRedisPrefix, createTestRedis, createTestSchema, redisUrl, uniquePrefix, useAwsLocal, type AwsTestEndpoint, type TestSchema } from '@rekey/testing';
import { createEngine, type AwsTimeouts, type Engine, type EngineOptions } from '../src/index.js';

/** An in-process fleet on aws-local, Redis (own prefix) and optionally a Postgres schema of its own. */
export interface EngineFixture {
  readonly ep: AwsTestEndpoint;
  readonly engine: Engine;
  readonly kms: KMSClient;
  /** Path-style S3 client on aws-local. */
  readonly s3: S3Client;
  /** Present when the fixture was asked for a database. */
  readonly db: TestSchema | undefined;
  readonly prefix: string;
  /** Creates a symmetric key and returns its ARN. */
  newKey(description: string): Promise<string>;
  /** Creates the table `secrets` (id, secret bytea) in the fixture's schema with rows 1..n encrypted under `keyArn`; returns its source spec. */
  seedSecrets(keyArn: string, n: number): Promise<{ name: 'rows'; kind: 'postgres'; schema: string; table: 'secrets'; primaryKey: ['id']; column: 'secret' }>;
  /** Polls the migration until `pred` holds (60 s at most). */
  waitUntil(id: string, pred: (m: Migration) => boolean, what: string): Promise<Migration>;
  /** Stops the coordinator and worker, closes the engine, removes the prefix and schema. */
  close(): Promise<void>;
}

/**
 * Starts an engine with a coordinator (100 ms ticks) and a worker (2 batches) for a test file.
 * Call it in `beforeAll` and `close()` in `afterAll`.
 */
export async function startEngineFixture(
  name: string,
  o: { db?: boolean; engine?: Partial<EngineOptions>; timeouts?: Partial<AwsTimeouts>; coordinator?: { auditCheckpointMs?: number } } = {},
): Promise<EngineFixture> {
  const ep = await useAwsLocal();
  const kms = new KMSClient(awsClientConfig(ep));
  const s3 = new S3Client({ ...awsClientConfig(ep), forcePathStyle: true });
  const db = o.db ? await createTestSchema(name) : undefined;
  const prefix = uniquePrefix(name);
  const engine = await createEngine({
    redisUrl: redisUrl(),
    prefix,
    aws: { region: ep.region, endpoint: ep.url, credentials: awsClientConfig(ep).credentials, ...(o.timeouts && { timeouts: o.timeouts }) },
    logger: pino({ level: 'silent' }),
    ...o.engine,
  });
  const coordinator = engine.startCoordinator({ tickMs: 100, ...o.coordinator });
  const worker = engine.startWorker({ concurrency: 2 });
  return {
    ep,
    engine,
    kms,
    s3,
    db,
    prefix,
    newKey: async (description) => (await kms.send(new CreateKeyCommand({ Description: description }))).KeyMetadata!.Arn!,
    async seedSecrets(keyArn, n) {
      if (!db) throw new Error('seedSecrets needs a fixture started with { db: true }');
      await db.pool.query('CREATE TABLE secrets (id int PRIMARY KEY, secret bytea NOT NULL)');
      for (let id = 1; id <= n; id++) {
        const ct = (await kms.send(new EncryptCommand({ KeyId: keyArn, Plaintext: Buffer.from(`s${id}`) }))).CiphertextBlob!;
        await db.pool.query('INSERT INTO secrets VALUES ($1, $2)', [id, Buffer.from(ct)]);
      }
      return { name: 'rows', kind: 'postgres', schema: db.schema, table: 'secrets', primaryKey: ['id'], column: 'secret' };
    },
    async waitUntil(id, pred, what) {
      for (let i = 0; i < 600; i++) {
        const m = await engine.get(id);
        if (pred(m)) return m;
        await sleep(100);
      }
      throw new Error(`migration ${id}: ${what} did not happen in 60 s`);
    },
    async close() {
      await worker.close();
      await coordinator.close();
      await engine.close();
      const r = createTestRedis();
      await cleanupRedisPrefix(r, prefix);
      await r.quit();
      await db?.drop();
      kms.destroy();
      s3.destroy();
      await ep.close();
    },
  };
}
