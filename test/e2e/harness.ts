import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { createRequire } from 'node:module';
import { setTimeout as sleep } from 'node:timers/promises';
import { KMSClient } from '@aws-sdk/client-kms';
import { S3Client } from '@aws-sdk/client-s3';
import { startAwsLocal, type AwsLocal } from '@rekey/aws-local';
import { httpClient, type RekeyClient } from '@rekey/cli/client';
import { createTestRedis, cleanupRedisPrefix, databaseUrl, freePort, redisUrl, uniquePrefix, TEST_CREDENTIALS } from '@rekey/testing';

const require = createRequire(import.meta.url);

export { freePort };

/** A coordinator and workers as separate processes, over aws-local in this process and real Redis/Postgres. */
export interface Stack {
  readonly aws: AwsLocal;
  readonly kms: KMSClient;
  readonly s3: S3Client;
  readonly api: RekeyClient;
  readonly apiUrl: string;
  readonly token: string;
  readonly prefix: string;
  readonly workers: ChildProcess[];
  coordinator: ChildProcess | undefined;
  startWorker(): ChildProcess;
  startCoordinator(): Promise<ChildProcess>;
  /** Waits until a migration reaches one of the states, or throws after `timeoutMs`. */
  waitForState(id: string, states: readonly string[], timeoutMs?: number): Promise<void>;
  stop(): Promise<void>;
}

function childEnv(s: { aws: AwsLocal; prefix: string; token: string; port: number }): NodeJS.ProcessEnv {
  return {
    // aws-local delivers CloudTrail events at once: no quiet window, and the usage monitor looks every second (a test's env may override).
    REKEY_GATE_QUIET_WINDOW_SECONDS: '0',
    REKEY_GATE_MONITOR_INTERVAL_SECONDS: '1',
    // aws-local has no quota unless a test sets one: the fleet's default budget (100 rps without a
    // quota) would only make every test wait. budget.test.ts sets its own.
    REKEY_KMS_BUDGET: '2000',
    // A SIGKILLed worker's batches move on after at most 15 s instead of 45 s.
    REKEY_WORKER_LOCK_SECONDS: '10',
    ...process.env,
    REDIS_URL: redisUrl(),
    DATABASE_URL: databaseUrl(),
    REKEY_REDIS_PREFIX: s.prefix,
    REKEY_API_TOKEN: s.token,
    REKEY_API_HOST: '127.0.0.1',
    REKEY_API_PORT: String(s.port),
    AWS_ENDPOINT_URL: s.aws.url,
    AWS_REGION: 'us-east-1',
    AWS_ACCESS_KEY_ID: TEST_CREDENTIALS.accessKeyId,
    AWS_SECRET_ACCESS_KEY: TEST_CREDENTIALS.secretAccessKey,
    LOG_LEVEL: process.env['E2E_LOG_LEVEL'] ?? 'warn',
  };
}

async function waitExit(c: ChildProcess, ms: number): Promise<void> {
  if (c.exitCode !== null || c.signalCode !== null) return;
  await Promise.race([new Promise((r) => c.once('exit', r)), sleep(ms)]);
  if (c.exitCode === null && c.signalCode === null) {
    c.kill('SIGKILL');
    await new Promise((r) => c.once('exit', r));
  }
}

export async function startStack(opts: { workers?: number; coordinator?: boolean } = {}): Promise<Stack> {
  const aws = await startAwsLocal({ port: 0 });
  const cfg = { endpoint: aws.url, region: 'us-east-1', credentials: TEST_CREDENTIALS, forcePathStyle: true };
  const prefix = uniquePrefix('e2e');
  const token = randomBytes(24).toString('hex');
  const port = await freePort();
  const env = childEnv({ aws, prefix, token, port });
  const apiUrl = `http://127.0.0.1:${port}`;
  const workerMain = require.resolve('@rekey/worker');
  const coordinatorMain = require.resolve('@rekey/coordinator');
  const stack: Stack = {
    aws,
    kms: new KMSClient(cfg),
    s3: new S3Client(cfg),
    api: httpClient(apiUrl, token),
    apiUrl,
    token,
    prefix,
    workers: [],
    coordinator: undefined,
    startWorker() {
      const c = spawn(process.execPath, [workerMain], { env, stdio: ['ignore', 'inherit', 'inherit'] });
      stack.workers.push(c);
      return c;
    },
    async startCoordinator() {
      const c = spawn(process.execPath, [coordinatorMain], { env, stdio: ['ignore', 'inherit', 'inherit'] });
      stack.coordinator = c;
      for (let i = 0; i < 200; i++) {
        try {
          const r = await fetch(`${apiUrl}/healthz`);
          if (r.ok) return c;
        } catch {
          // not listening yet
        }
        if (c.exitCode !== null) throw new Error(`coordinator exited with ${c.exitCode}`);
        await sleep(100);
      }
      throw new Error('coordinator did not become healthy within 20 s');
    },
    async waitForState(id, states, timeoutMs = 120_000) {
      const until = Date.now() + timeoutMs;
      let last = '';
      while (Date.now() < until) {
        const m = await stack.api.get(id);
        last = `${m.state}${m.reason ? ` (${m.reason})` : ''}`;
        if (states.includes(m.state)) return;
        await sleep(200);
      }
      throw new Error(`migration ${id} did not reach ${states.join('|')} in ${timeoutMs} ms; last state ${last}`);
    },
    async stop() {
      const all = [...stack.workers, ...(stack.coordinator ? [stack.coordinator] : [])];
      for (const c of all) if (c.exitCode === null && c.signalCode === null) c.kill('SIGTERM');
      await Promise.all(all.map((c) => waitExit(c, 15_000)));
      stack.kms.destroy();
      stack.s3.destroy();
      await aws.close();
      const redis = createTestRedis();
      await cleanupRedisPrefix(redis, prefix);
      await redis.quit();
    },
  };
  if (opts.coordinator !== false) await stack.startCoordinator();
  for (let i = 0; i < (opts.workers ?? 2); i++) stack.startWorker();
  return stack;
}
