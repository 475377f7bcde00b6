import { describe, expect, it } from 'vitest';
import { z } from 'zod';
import { configJsonSchema, loadConfig, type LoadConfigInput } from '../src/config.js';
import { ValidationError } from '../src/errors.js';

function problemsOf(input: LoadConfigInput): readonly string[] {
  try {
    loadConfig(input);
  } catch (err) {
    expect(err).toBeInstanceOf(ValidationError);
    return (err as ValidationError).problems;
  }
  throw new Error('expected a ValidationError');
}

describe('loadConfig', () => {
  it('fills every default from an empty file and environment', () => {
    const config = loadConfig({ env: {} });

    expect(config).toEqual({
      redis: { url: 'redis://127.0.0.1:6379', prefix: 'rekey:' },
      aws: { region: 'us-east-1' },
      kms: { minRps: 1, aimd: { decrease: 0.7, increaseRps: 5, increasePercent: 1, windowMs: 1000 }, budget: 100, budgetRps: 100 },
      api: { host: '127.0.0.1', port: 8080 },
      worker: { concurrency: 2, kmsConcurrency: 16, lockSeconds: 30, metricsHost: '127.0.0.1' },
      gate: { monitorUsage: true, monitorIntervalSeconds: 60 },
    });
  });

  it('reads the worker metrics endpoint from REKEY_METRICS_PORT and REKEY_METRICS_HOST', () => {
    const config = loadConfig({ env: { REKEY_METRICS_PORT: '9464', REKEY_METRICS_HOST: '0.0.0.0' } });

    expect(config.worker).toMatchObject({ metricsPort: 9464, metricsHost: '0.0.0.0' });
  });

  it('reads the gate settings from REKEY_MONITOR_USAGE and REKEY_GATE_* variables', () => {
    const env = { REKEY_MONITOR_USAGE: 'false', REKEY_GATE_QUIET_WINDOW_SECONDS: '0', REKEY_GATE_MONITOR_INTERVAL_SECONDS: '0.5' };

    const config = loadConfig({ yamlText: 'gate: { quietWindowSeconds: 900 }\n', env });

    expect(config.gate).toEqual({ monitorUsage: false, quietWindowSeconds: 0, monitorIntervalSeconds: 0.5 });
  });

  it('reads the fleet principals from REKEY_GATE_FLEET_PRINCIPALS (comma-separated) and refuses one that is not a principal ARN', () => {
    const env = { REKEY_GATE_FLEET_PRINCIPALS: 'arn:aws:iam::111122223333:role/rekey-worker, arn:aws:iam::111122223333:role/rekey-*' };

    expect(loadConfig({ env }).gate.fleetPrincipals).toEqual(['arn:aws:iam::111122223333:role/rekey-worker', 'arn:aws:iam::111122223333:role/rekey-*']);
    expect(problemsOf({ env: { REKEY_GATE_FLEET_PRINCIPALS: 'rekey-worker' } })).toEqual([
      'gate.fleetPrincipals[0]: must be an IAM or STS principal ARN (arn:aws:iam::123456789012:role/name)',
    ]);
  });

  it('takes the fleet clients\' timeouts from aws.timeouts and refuses one that is not a whole number of ms', () => {
    const config = loadConfig({ yamlText: 'aws:\n  timeouts: { connectMs: 2000, kmsIdleMs: 10000 }\n', env: {} });
    expect(config.aws.timeouts).toEqual({ connectMs: 2000, kmsIdleMs: 10000 });
    expect(loadConfig({ env: {} }).aws).not.toHaveProperty('timeouts');
    const problems = problemsOf({ yamlText: 'aws:\n  timeouts: { s3IdleMs: 1.5, socketMs: 3 }\n', env: {} });
    expect(problems.join('\n')).toMatch(/aws\.timeouts/);
    expect(problems.join('\n')).toMatch(/socketMs/);
  });

  it('rejects a REKEY_MONITOR_USAGE that is not a boolean and a negative quiet window', () => {
    const problems = problemsOf({ env: { REKEY_MONITOR_USAGE: 'maybe', REKEY_GATE_QUIET_WINDOW_SECONDS: '-1' } });

    expect(problems).toHaveLength(2);
    expect(problems[0]).toBe('REKEY_MONITOR_USAGE: must be true or false');
    expect(problems[1]).toMatch(/^gate\.quietWindowSeconds: /);
  });

  it('reads rekey.yaml with sources, bindings, migrations and intake', () => {
    const yamlText = `
redis: { url: "redis://cache:6379/2", prefix: "prod:" }
aws: { region: eu-west-1 }
kms: { quotaRps: 10000, budget: "40%" }
sources:
  - { name: docs, kind: s3-sse-kms, bucket: docs-bucket, strategy: copy }
  - { name: users, kind: postgres, table: users, primaryKey: id, column: secret }
bindings:
  alias/app: [docs, users]
migrations:
  - id: first
    sources: [{ name: docs, kind: s3-envelope, bucket: docs-bucket }]
    from: [alias/old]
    to: alias/app
intake: { queueUrl: "https://sqs.eu-west-1.amazonaws.com/111122223333/rekey", autoMigrate: true }
`;

    const config = loadConfig({ yamlText, env: {} });

    expect(config.kms).toMatchObject({ quotaRps: 10000, budget: '40%', budgetRps: 4000 });
    expect(config.aws).toEqual({ region: 'eu-west-1' });
    expect(config.sources?.[1]).toMatchObject({ primaryKey: ['id'], format: 'kms-blob' });
    expect(config.bindings).toEqual({ 'alias/app': ['docs', 'users'] });
    expect(config.migrations?.[0]?.options.batchSize).toBe(1000);
    expect(config.intake).toEqual({
      queueUrl: 'https://sqs.eu-west-1.amazonaws.com/111122223333/rekey',
      waitSeconds: 20,
      onRotation: 'ignore',
      autoMigrate: true,
      dedupeWindowSeconds: 300,
    });
  });

  it('lets REKEY_* variables override the file, and AWS_* fill only what the file leaves unset', () => {
    const config = loadConfig({
      yamlText: 'api: { port: 9000 }\naws: { region: eu-central-1 }\n',
      env: {
        REDIS_URL: 'redis://10.0.0.1:6380',
        REKEY_REDIS_PREFIX: 't1:',
        REKEY_API_PORT: '9100',
        REKEY_API_TOKEN: 'secret-token',
        AWS_REGION: 'us-west-2',
        AWS_ENDPOINT_URL: 'http://127.0.0.1:4566',
        REKEY_KMS_BUDGET: '250',
        REKEY_WORKER_CONCURRENCY: '4',
        REKEY_WORKER_KMS_CONCURRENCY: '48',
        REKEY_WORKER_LOCK_SECONDS: '8',
      },
    });

    expect(config.redis).toEqual({ url: 'redis://10.0.0.1:6380', prefix: 't1:' });
    expect(config.api).toEqual({ host: '127.0.0.1', port: 9100, token: 'secret-token' });
    expect(config.aws).toEqual({ region: 'eu-central-1', endpoint: 'http://127.0.0.1:4566' });
    expect(config.kms).toMatchObject({ budget: 250, budgetRps: 250 });
    expect(config.worker.concurrency).toBe(4);
    expect(config.worker.kmsConcurrency).toBe(48);
    expect(config.worker.lockSeconds).toBe(8);
  });

  it('refuses a batch lock shorter than 2 s or longer than 10 min, naming the setting', () => {
    expect(problemsOf({ env: { REKEY_WORKER_LOCK_SECONDS: '1' } })).toEqual([expect.stringMatching(/^worker\.lockSeconds: Too small/)]);
    expect(problemsOf({ yamlText: 'worker: { lockSeconds: 900 }\n', env: {} })).toEqual([expect.stringMatching(/^worker\.lockSeconds: Too big/)]);
    expect(problemsOf({ env: { REKEY_WORKER_LOCK_SECONDS: 'soon' } })).toEqual([expect.stringMatching(/REKEY_WORKER_LOCK_SECONDS/)]);
  });

  it('refuses a KMS concurrency that is not a positive integer, naming the variable', () => {
    expect(problemsOf({ env: { REKEY_WORKER_KMS_CONCURRENCY: '0' } })).toEqual([expect.stringMatching(/^worker\.kmsConcurrency: Too small/)]);
    expect(problemsOf({ env: { REKEY_WORKER_KMS_CONCURRENCY: 'many' } })).toEqual([expect.stringMatching(/REKEY_WORKER_KMS_CONCURRENCY/)]);
  });

  it('defaults the budget to half the quota when a quota is set', () => {
    expect(loadConfig({ env: { REKEY_KMS_QUOTA_RPS: '2000' } }).kms).toMatchObject({ budget: '50%', budgetRps: 1000 });
  });

  it('reports every structural problem of the file and the environment at once', () => {
    const problems = problemsOf({
      yamlText: `
redis: { url: "http://nope" }
api: { port: 70000 }
worker: { concurrency: 0 }
kms: { budget: "lots", aimd: { decrease: 1.5 } }
intake: { queueUrl: "not a url", onRotation: rotate }
unknownSection: true
`,
      env: { REKEY_METRICS_PORT: 'ninety' },
    });

    expect(problems).toEqual([
      'REKEY_METRICS_PORT: must be a number',
      'redis.url: must be a redis:// or rediss:// URL',
      expect.stringMatching(/^kms\.budget: /),
      expect.stringMatching(/^kms\.aimd\.decrease: /),
      expect.stringMatching(/^api\.port: Too big/),
      expect.stringMatching(/^worker\.concurrency: Too small/),
      'intake.queueUrl: must be an SQS queue URL',
      expect.stringMatching(/^intake\.onRotation: /),
      '(root): Unrecognized key: "unknownSection"',
    ]);
  });

  it('reports every cross-field problem at once', () => {
    const problems = problemsOf({
      yamlText: `
kms: { budget: "40%", minRps: 500 }
sources:
  - { name: a, kind: s3-envelope, bucket: bucket-a }
  - { name: a, kind: s3-envelope, bucket: bucket-b }
bindings: { alias/app: [a, missing] }
migrations:
  - { id: m, sources: [{ name: a, kind: s3-envelope, bucket: bucket-a }], from: [alias/old], to: alias/app }
  - { id: m, sources: [{ name: a, kind: s3-envelope, bucket: bucket-a }], from: [alias/old], to: alias/app }
`,
      env: {},
      role: 'coordinator',
    });

    expect(problems).toEqual([
      'kms.budget: a percentage budget needs kms.quotaRps (or REKEY_KMS_QUOTA_RPS)',
      'sources[1].name: duplicate source name "a"',
      'bindings.alias/app[1]: no source named "missing" in sources',
      'migrations[1].id: duplicate migration id "m"',
      'api.token: set REKEY_API_TOKEN (the coordinator API always requires a token)',
    ]);
  });

  it('refuses a budget above the quota and a minimum above the budget', () => {
    expect(problemsOf({ env: { REKEY_KMS_QUOTA_RPS: '100', REKEY_KMS_BUDGET: '150' } })).toEqual(['kms.budget: 150 rps is above kms.quotaRps (100)']);
    expect(problemsOf({ yamlText: 'kms: { budget: 5, minRps: 10 }', env: {} })).toEqual(['kms.minRps: 10 is above the budget of 5 rps']);
    expect(problemsOf({ yamlText: 'kms: { quotaRps: 100, budget: "150%" }', env: {} })).toEqual([
      'kms.budget: a percentage must be more than 0% and at most 100%',
      'kms.budget: 150 rps is above kms.quotaRps (100)',
    ]);
  });

  it('refuses intake automation without bindings', () => {
    expect(problemsOf({ yamlText: 'intake: { queueUrl: "http://127.0.0.1:4566/000000000000/q", onRotation: refresh }', env: {} })).toEqual([
      'intake: autoMigrate and onRotation: refresh need bindings (alias -> sources) to know what to migrate',
    ]);
  });

  it('reports YAML syntax errors with their line', () => {
    const problems = problemsOf({ yamlText: 'redis:\n  url: a\n  url: b\n', env: {} });

    expect(problems).toEqual(['rekey.yaml line 3: Map keys must be unique']);
  });

  it('refuses a file that is not a mapping', () => {
    expect(problemsOf({ yamlText: '- redis\n', env: {} })).toEqual(['rekey.yaml: must be a mapping of settings']);
  });

  it('treats an empty file as no settings', () => {
    expect(loadConfig({ yamlText: '# nothing yet\n', env: {} }).api.port).toBe(8080);
  });

  it('does not echo a token or URL credentials in its problems', () => {
    const problems = problemsOf({ yamlText: 'redis: { url: "http://user:hunter2@host" }\napi: { token: "has space" }\n', env: {} });

    expect(problems).toEqual(['redis.url: must be a redis:// or rediss:// URL', 'api.token: must not contain whitespace']);
    expect(problems.join()).not.toContain('hunter2');
  });
});

describe('configJsonSchema', () => {
  it('matches the committed schema of rekey.yaml', async () => {
    await expect(JSON.stringify(configJsonSchema(), null, 2) + '\n').toMatchFileSnapshot('./__snapshots__/rekey.schema.json');
  });

  it('accepts a file that loadConfig accepts and rejects an unknown key', () => {
    const schema = z.fromJSONSchema(configJsonSchema());

    expect(schema.safeParse({ redis: { prefix: 'x:' }, kms: { budget: '40%', quotaRps: 10 } }).success).toBe(true);
    expect(schema.safeParse({ redis: { typo: 1 } }).success).toBe(false);
  });
});
