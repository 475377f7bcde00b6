import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { spawn } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { CreateAliasCommand, CreateKeyCommand, DescribeKeyCommand, GetKeyPolicyCommand, ListKeysCommand, ListResourceTagsCommand } from '@aws-sdk/client-kms';
import { createAuditLog, redisKeys } from '@rekey/fleet';
import { createTestRedis, createTestSchema, databaseUrl, redisUrl, TEST_CREDENTIALS, type TestSchema } from '@rekey/testing';
import { startStack, type Stack } from './harness.js';
import { readRow, readSse, seedRows, seedSseObjects } from './seed.js';

const cliBin = fileURLToPath(new URL('../../packages/cli/dist/bin.js', import.meta.url));

const POLICY = JSON.stringify({
  Version: '2012-10-17',
  Statement: [{ Sid: 'KeyAdmins', Effect: 'Allow', Principal: { AWS: 'arn:aws:iam::000000000000:role/key-admins' }, Action: 'kms:*', Resource: '*' }],
});

interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
}

describe('rekey rotate, keys audit and plan as a CLI over the coordinator API (coordinator + 2 workers)', () => {
  let stack: Stack;
  let db: TestSchema;
  let dir: string;
  let config: string;
  let oldKey: string;
  const alias = 'alias/e2e-rotate';
  const bucket = 'e2e-rotate-docs';
  let objects: Map<string, string>;
  let rows: Map<number, string>;

  function cli(args: string[], onStdout?: (chunk: string) => void, env: NodeJS.ProcessEnv = {}): { done: Promise<Run>; kill(): void } {
    const child = spawn(process.execPath, [cliBin, ...args], {
      env: {
        ...process.env,
        REKEY_API_URL: stack.apiUrl,
        REKEY_API_TOKEN: stack.token,
        REKEY_REDIS_URL: redisUrl(),
        REKEY_REDIS_PREFIX: stack.prefix,
        DATABASE_URL: databaseUrl(),
        AWS_ENDPOINT_URL: stack.aws.url,
        AWS_REGION: 'us-east-1',
        AWS_ACCESS_KEY_ID: TEST_CREDENTIALS.accessKeyId,
        AWS_SECRET_ACCESS_KEY: TEST_CREDENTIALS.secretAccessKey,
        ...env,
      },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => {
      stdout += d.toString();
      onStdout?.(d.toString());
    });
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const done = new Promise<Run>((resolve) => child.once('exit', (code) => resolve({ code, stdout, stderr })));
    return { done, kill: () => child.kill('SIGKILL') };
  }

  const aliasTarget = async () => (await stack.kms.send(new DescribeKeyCommand({ KeyId: alias }))).KeyMetadata!.Arn!;
  const keyCount = async () => (await stack.kms.send(new ListKeysCommand({ Limit: 1000 }))).Keys!.length;

  beforeAll(async () => {
    stack = await startStack({ workers: 2 });
    db = await createTestSchema('e2e_rotate');
    oldKey = (await stack.kms.send(new CreateKeyCommand({ Description: 'documents', Policy: POLICY, Tags: [{ TagKey: 'team', TagValue: 'docs' }] }))).KeyMetadata!.Arn!;
    await stack.kms.send(new CreateAliasCommand({ AliasName: alias, TargetKeyId: oldKey }));
    objects = await seedSseObjects(stack.s3, bucket, alias, 120);
    rows = await seedRows(db.pool, stack.kms, `"${db.schema}".secrets`, alias, 80);
    dir = await mkdtemp(join(tmpdir(), 'rekey-rotate-'));
    config = join(dir, 'rekey.yaml');
    await writeFile(
      config,
      [
        'sources:',
        '  - name: docs',
        '    kind: s3-sse-kms',
        `    bucket: ${bucket}`,
        '  - name: secrets',
        '    kind: postgres',
        `    schema: ${db.schema}`,
        '    table: secrets',
        '    primaryKey: id',
        '    column: secret',
        '    contextColumn: ctx',
        'bindings:',
        `  ${alias}: [docs, secrets]`,
        '',
      ].join('\n'),
    );
  });

  afterAll(async () => {
    await stack?.stop();
    await db?.drop();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it('plan counts the items under the key behind the alias, as seeded, taking its KMS probes from the fleet limiter', async () => {
    const redis = createTestRedis();
    const keys = redisKeys(stack.prefix);
    const limiter = keys.limiter(oldKey.split(':')[4]!, 'us-east-1');
    // An operator's `rekey budget` override holds for plan's probes too.
    await redis.hset(keys.budgetOverride(), 'rps', '500');
    const r = await cli(['plan', '-f', config, '--all', '--json']).done;

    expect(r.code, r.stderr).toBe(0);
    const plan = JSON.parse(r.stdout) as { sources: { name: string; items: number; underOldKeys: number; byKey: Record<string, number> }[] };
    expect(plan.sources.map((s) => [s.name, s.items, s.underOldKeys, s.byKey])).toEqual([
      ['docs', 120, 120, { [oldKey]: 120 }],
      ['secrets', 80, 80, { [oldKey]: 80 }],
    ]);
    // The rows carry no key id: plan probed them with ReEncrypt, as participant 'plan' of the account's limiter.
    try {
      expect(await redis.hexists(limiter, 'w:plan')).toBe(1);
      expect(await redis.hget(limiter, 'budget')).toBe('500');
    } finally {
      await redis.del(keys.budgetOverride());
      await redis.hdel(limiter, 'budget');
      await redis.quit();
    }
  });

  it('plan refuses in one line when the Redis of the fleet budget is unreachable', async () => {
    const r = await cli(['plan', '-f', config, '--json'], undefined, { REKEY_REDIS_URL: 'redis://127.0.0.1:1' }).done;

    expect(r.code).toBe(1);
    expect(r.stdout).toBe('');
    expect(r.stderr.trim().split('\n')).toEqual([expect.stringMatching(/^rekey: plan takes its KMS requests from the fleet's budget in Redis, and Redis is not reachable at redis:\/\/127\.0\.0\.1:1: /)]);
  });

  it('rotate --dry-run prints the plan and writes nothing', async () => {
    const before = await keyCount();

    const r = await cli(['rotate', alias, '-f', config, '--dry-run']).done;

    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toContain('dry run: nothing was changed');
    expect(r.stdout).toMatch(/would create a key cloning/);
    expect(await keyCount()).toBe(before);
    expect(await aliasTarget()).toBe(oldKey);
  });

  it('rotate killed after the alias moved resumes on the next run: one new key, cloned, data migrated, old key disabled, audit complete', async () => {
    const first = cli(['rotate', alias, '-f', config, '--batch-size', '20']);
    for (let i = 0; i < 600 && (await aliasTarget()) === oldKey; i++) await sleep(25);
    first.kill();
    const killed = await first.done;
    expect(killed.code).toBeNull();
    const newKey = await aliasTarget();
    expect(newKey).not.toBe(oldKey);

    const r = await cli(['rotate', alias, '-f', config, '--batch-size', '20']).done;

    expect(r.code, `${r.stdout}\n${r.stderr}`).toBe(0);
    expect(r.stdout).toMatch(/rotation rot-e2e-rotate-\d{14} \(resumed\)/);
    expect(r.stdout).toContain('finalized: the old key is disabled');
    const rotation = /rotation (rot-e2e-rotate-\d{14})/.exec(r.stdout)![1]!;
    // One clone, with the old key's policy, description and tags.
    const clones = [];
    for (const k of (await stack.kms.send(new ListKeysCommand({ Limit: 1000 }))).Keys!) {
      const tags = (await stack.kms.send(new ListResourceTagsCommand({ KeyId: k.KeyArn! }))).Tags ?? [];
      if (tags.some((t) => t.TagKey === 'rekey:replaces' && t.TagValue === oldKey)) clones.push({ arn: k.KeyArn!, tags });
    }
    expect(clones.map((c) => c.arn)).toEqual([newKey]);
    expect(Object.fromEntries(clones[0]!.tags.map((t) => [t.TagKey, t.TagValue]))).toEqual({ team: 'docs', 'rekey:replaces': oldKey, 'rekey:rotation': rotation });
    expect((await stack.kms.send(new GetKeyPolicyCommand({ KeyId: newKey, PolicyName: 'default' }))).Policy).toBe(POLICY);
    expect((await stack.kms.send(new DescribeKeyCommand({ KeyId: newKey }))).KeyMetadata!.Description).toBe('documents');
    // Data moved, contents unchanged.
    for (const [key, hash] of [...objects].slice(0, 30)) {
      const o = await readSse(stack.s3, bucket, key);
      expect(o.keyArn).toBe(newKey);
      expect(o.hash).toBe(hash);
    }
    for (const [id, hash] of [...rows].slice(0, 30)) {
      const row = await readRow(db.pool, stack.kms, `"${db.schema}".secrets`, id);
      expect(row.keyArn).toBe(newKey);
      expect(row.hash).toBe(hash);
    }
    // Exactly one migration per source, and what they re-encrypted is what plan counted.
    const mine = (await stack.api.list()).filter((m) => m.id.startsWith(rotation)).map((m) => m.id).sort();
    expect(mine).toEqual([`${rotation}-docs`, `${rotation}-secrets`]);
    const done = await Promise.all(mine.map((id) => stack.api.status(id)));
    expect(done.map((s) => s.migration.state)).toEqual(['finalized', 'finalized']);
    expect(done.map((s) => s.totals.outcomes['reencrypted'])).toEqual([120, 80]);
    expect((await stack.kms.send(new DescribeKeyCommand({ KeyId: oldKey }))).KeyMetadata!.KeyState).toBe('Disabled');
    // The rotation's own audit log has every step once, and its chain is intact.
    const redis = createTestRedis();
    try {
      const log = createAuditLog(redis, redisKeys(stack.prefix));
      const types = (await log.read(rotation)).map((e) => e.type);
      for (const t of ['rotation.started', 'key.created', 'alias.updated', 'rotation.resumed', 'migrations.ready', 'key.disabled', 'rotation.completed']) {
        expect(types.filter((x) => x === t), t).toHaveLength(1);
      }
      expect(types.filter((x) => x === 'migration.started')).toHaveLength(2);
      expect(types.at(-1)).toBe('rotation.completed');
      expect((await log.verify(rotation)).ok).toBe(true);
    } finally {
      await redis.quit();
    }
    const audit = await cli(['audit', rotation, '--verify']).done;
    expect(audit.stdout).toContain(`audit chain of ${rotation} is intact`);
  });

  it('keys audit exits 1 when a key is flagged and prints machine-readable findings; 2 on bad usage', async () => {
    const r = await cli(['keys', 'audit', '--format', 'json']).done;

    expect(r.code, r.stderr).toBe(1);
    const audit = JSON.parse(r.stdout) as { rows: { arn: string; state: string; disabledBy: string | null; flags: { code: string }[] }[] };
    // The rotated key was disabled by the rotation's migration after its gate: its recent use was
    // the migration's own, so it is not flagged; the clone (rotation off, as on the old key) is.
    const old = audit.rows.find((x) => x.arn === oldKey)!;
    expect(old.state).toBe('Disabled');
    expect(old.disabledBy).toMatch(/^rot-e2e-rotate-\d{14}-(docs|secrets)$/);
    expect(old.flags).toEqual([]);
    expect(audit.rows.some((x) => x.flags.length > 0)).toBe(true);
    expect((await cli(['keys', 'audit', '--max-age-days', 'soon']).done).code).toBe(2);
  });
});
