import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CreateKeyCommand, KMSClient } from '@aws-sdk/client-kms';
import { CreateBucketCommand, PutObjectCommand, S3Client } from '@aws-sdk/client-s3';
import { startAwsLocal, type AwsLocal } from '@rekey/aws-local';
import { buildApi, createEngine, redisKeys } from '@rekey/fleet';
import pino from 'pino';
import { awsClientConfig, cleanupRedisPrefix, createTestRedis, redisUrl, TEST_CREDENTIALS, uniqueName, uniquePrefix } from '@rekey/testing';
import { lines, rekey } from './run-cli.js';

/**
 * `rekey --local` with its settings from a config file only: Redis prefix, AWS endpoint and gate
 * timing come from `--config` (or REKEY_CONFIG); the environment has none of them.
 */
describe('rekey --local with a config file, on Redis and aws-local', { timeout: 180_000 }, () => {
  const prefix = uniquePrefix('cli-local');
  const bucket = uniqueName('cli-local');
  let aws: AwsLocal;
  let dir: string;
  let config: string;
  let redis: ReturnType<typeof createTestRedis>;
  let oldKey: string;
  let newKey: string;
  let env: Record<string, string | undefined>;
  /** The migration the first test creates. */
  let migrated: string | undefined;

  beforeAll(async () => {
    aws = await startAwsLocal({ port: 0 });
    redis = createTestRedis();
    const cfg = awsClientConfig({ url: aws.url, region: 'us-east-1' });
    const kms = new KMSClient(cfg);
    const s3 = new S3Client(cfg);
    try {
      oldKey = (await kms.send(new CreateKeyCommand({ Description: 'cli-local old' }))).KeyMetadata!.Arn!;
      newKey = (await kms.send(new CreateKeyCommand({ Description: 'cli-local new' }))).KeyMetadata!.Arn!;
      await s3.send(new CreateBucketCommand({ Bucket: bucket }));
      for (let i = 0; i < 3; i++) {
        await s3.send(new PutObjectCommand({ Bucket: bucket, Key: `o/${i}`, Body: `body ${i}`, ServerSideEncryption: 'aws:kms', SSEKMSKeyId: oldKey }));
      }
    } finally {
      kms.destroy();
      s3.destroy();
    }
    dir = await mkdtemp(join(tmpdir(), 'rekey-cli-local-'));
    config = join(dir, 'rekey.yaml');
    // aws-local delivers CloudTrail events at once: no quiet window, and the usage monitor looks every second.
    await writeFile(
      config,
      [
        'redis:',
        `  url: ${redisUrl()}`,
        `  prefix: "${prefix}"`,
        'aws:',
        `  endpoint: ${aws.url}`,
        '  region: us-east-1',
        'gate:',
        '  quietWindowSeconds: 0',
        '  monitorIntervalSeconds: 1',
        '',
      ].join('\n'),
    );
    // Nothing in the environment that the file should decide.
    env = {
      REDIS_URL: undefined,
      REKEY_REDIS_URL: undefined,
      REKEY_REDIS_PREFIX: undefined,
      AWS_ENDPOINT_URL: undefined,
      AWS_REGION: undefined,
      AWS_DEFAULT_REGION: undefined,
      REKEY_GATE_QUIET_WINDOW_SECONDS: undefined,
      REKEY_GATE_MONITOR_INTERVAL_SECONDS: undefined,
      AWS_ACCESS_KEY_ID: TEST_CREDENTIALS.accessKeyId,
      AWS_SECRET_ACCESS_KEY: TEST_CREDENTIALS.secretAccessKey,
    };
  });

  afterAll(async () => {
    if (redis) {
      await cleanupRedisPrefix(redis, prefix);
      await redis.quit();
    }
    await aws?.close();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it('`rekey --local --config f migrate` works under the file\'s prefix and prints the final status once off a terminal', async () => {
    const r = await rekey(['--local', '--config', config, 'migrate', '--from', oldKey, '--to', newKey, '--source', `s3-sse-kms:${bucket}`, '--workers', '1'], env);

    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    const id = /^migration (\S+) created: /.exec(r.stdout)?.[1];
    expect(id).toBeDefined();
    migrated = id;
    const out = lines(r.stdout);
    // Each status block starts with `<time> migration <id>: <state>`; the last one is `ready`, printed once.
    const blocks = out.filter((l) => l.includes(`migration ${id}: `));
    expect(blocks.at(-1)).toMatch(new RegExp(`^\\S+ migration ${id}: ready$`));
    expect(blocks.filter((l) => l.endsWith(`migration ${id}: ready`))).toHaveLength(1);
    expect(out.filter((l) => l.startsWith('  gate: '))).toHaveLength(blocks.length);
    expect(out.at(-1)).toMatch(/^ {4}\[x\] /);
    // The migration is under the file's prefix, not the default one.
    expect(await redis.exists(redisKeys(prefix).migration(id!))).toBe(1);
    expect(await redis.exists(redisKeys().migration(id!))).toBe(0);

    const [viaEnv, viaFlag] = await Promise.all([
      rekey(['--local', 'list'], { ...env, REKEY_CONFIG: config }),
      rekey(['--local', '--config', config, 'status', id!], env),
    ]);
    expect(viaEnv.code).toBe(0);
    expect(viaEnv.stdout).toMatch(new RegExp(`^${id}\\tready\\t`, 'm'));
    expect(viaFlag.code).toBe(0);
    expect(viaFlag.stdout).toMatch(new RegExp(`^migration ${id}: ready$`, 'm'));
  });

  it('through the coordinator API on the same prefix, its answers are taken and its errors relayed', async () => {
    expect(migrated).toBeDefined();
    const engine = await createEngine({
      redisUrl: redisUrl(),
      prefix,
      aws: { region: 'us-east-1', endpoint: aws.url, credentials: TEST_CREDENTIALS },
      kmsBudgetRps: 100,
      actor: 'cli-local-test',
      logger: pino({ level: 'silent' }),
    });
    const token = 'cli-local-test-token-0001';
    const app = await buildApi(engine, { token });
    try {
      const url = await app.listen({ port: 0, host: '127.0.0.1' });
      const api = { ...env, REKEY_API_URL: url, REKEY_API_TOKEN: token };
      const [list, status, report, failures, audit, budget, unknown] = await Promise.all([
        rekey(['list'], api),
        rekey(['status', migrated!], api),
        rekey(['report', migrated!, '--format', 'json'], api),
        rekey(['failures', migrated!], api),
        rekey(['audit', migrated!, '--verify'], api),
        rekey(['budget'], api),
        rekey(['status', 'm-unknown'], api),
      ]);
      for (const r of [list, status, report, failures, audit, budget]) expect({ code: r.code, stderr: r.stderr }).toEqual({ code: 0, stderr: '' });
      expect(list.stdout).toMatch(new RegExp(`^${migrated}\\tready\\t`, 'm'));
      expect(status.stdout).toMatch(new RegExp(`^migration ${migrated}: ready$`, 'm'));
      expect(JSON.parse(report.stdout)).toMatchObject({ migration: { id: migrated, state: 'ready' } });
      expect(failures.stdout).toBe('no failures\n');
      expect(audit.stdout).toMatch(new RegExp(`^audit chain of ${migrated} is intact`));
      expect(budget.stdout).toMatch(/^configured budget: /);
      // The coordinator's own error, in its own words.
      expect(unknown.code).toBe(1);
      expect(lines(unknown.stderr)).toHaveLength(1);
      expect(unknown.stderr).toMatch(/^rekey: .*m-unknown/);
      expect(unknown.stderr).not.toContain('did not answer as a Rekey coordinator');
    } finally {
      await app.close();
      await engine.close();
    }
  });
});
