/**
 * Shared pieces of the fleet benchmarks: aws-local in a child process (controlled through its
 * `/_aws-local/*` admin API), a coordinator and workers as child processes (the built `dist/`),
 * envelope seeding, argument flags, and the table/last-line output.
 */
import { execFileSync, fork, spawn, type ChildProcess } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { Agent } from 'node:http';
import { createRequire } from 'node:module';
import { loadavg, cpus, totalmem } from 'node:os';
import { fileURLToPath } from 'node:url';
import { setTimeout as sleep } from 'node:timers/promises';
import { CreateKeyCommand, KMSClient } from '@aws-sdk/client-kms';
import { CreateBucketCommand, GetObjectCommand, PutObjectCommand, S3Client } from '@aws-sdk/client-s3';
import { createEnvelopeClient } from '@rekey/envelope';
import { httpClient, type RekeyClient } from '@rekey/cli/client';
import { Redis } from 'ioredis';
import { cleanupRedisPrefix, freePort } from '@rekey/testing';

const require = createRequire(import.meta.url);

/** The Node flags a worker is deployed with (`infra/k8s/rekey.yaml`, `npm start -w @rekey/worker`). */
const WORKER_NODE_ARGS = ['--max-semi-space-size=32'];

// The SDK's once-per-process notice that its 2027 releases need Node 22 (docs/decisions.md) would
// be printed by every process of every benchmark; the fleet's children inherit this through `env`.
process.env['AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED'] ??= 'true';

/** Credentials of the fleet's processes; the app-traffic generator uses others so its calls can be told apart. */
export const FLEET_CREDENTIALS = { accessKeyId: 'AKIAFLEETBENCH000001', secretAccessKey: 'fleet-bench-secret' };
export const APP_CREDENTIALS = { accessKeyId: 'AKIAAPPTRAFFIC000001', secretAccessKey: 'app-bench-secret' };
export const REGION = 'us-east-1';

/** `--name=value` flags and `BENCH_NAME` env vars, e.g. `--items=2000`. */
export function flag(name: string, fallback: number): number {
  const arg = process.argv.find((a) => a.startsWith(`--${name}=`));
  const raw = arg?.slice(name.length + 3) ?? process.env[`BENCH_${name.toUpperCase().replace(/-/g, '_')}`];
  if (raw === undefined) return fallback;
  const n = Number(raw);
  if (!Number.isFinite(n) || n <= 0) throw new Error(`--${name} must be a positive number, got ${raw}`);
  return n;
}

/**
 * A list flag such as `--also=4@5,8@20`: each comma-separated part through `parse` (which throws
 * on a bad part); `fallback` when absent, [] for `--also=none`.
 */
export function listFlag<T>(name: string, fallback: readonly T[], parse: (part: string) => T): T[] {
  const arg = process.argv.find((a) => a.startsWith(`--${name}=`));
  const raw = arg?.slice(name.length + 3) ?? process.env[`BENCH_${name.toUpperCase().replace(/-/g, '_')}`];
  if (raw === undefined) return [...fallback];
  if (raw === 'none' || raw === '') return [];
  return raw.split(',').map((part) => parse(part.trim()));
}

export function machine(): string {
  const cpu = cpus()[0]?.model.trim() ?? 'unknown CPU';
  return `node ${process.version}, ${cpus().length} CPUs (${cpu}), ${Math.round(totalmem() / 2 ** 30)} GB RAM, load average ${loadavg().map((l) => l.toFixed(2)).join(' ')}`;
}

export function table(head: string[], rows: (string | number)[][]): string {
  const line = (cells: (string | number)[]) => `| ${cells.map(String).join(' | ')} |`;
  return [line(head), line(head.map((_, i) => (i === 0 ? '---' : '---:'))), ...rows.map(line)].join('\n');
}

export { freePort };

/** aws-local in its own process, so server and clients each get an event loop. */
export interface AwsChild {
  readonly url: string;
  /** The aws-local process, for {@link cpuMeter}. */
  readonly pid: number;
  admin(method: string, name: string, body?: unknown): Promise<unknown>;
  /**
   * Clients built as the fleet builds its own (`cacheMiddleware: true`, decisions.md #42), so the
   * raw loop's ceiling gets the same per-request savings; `sdkDefaults` leaves it out, as a
   * script written today would.
   */
  kms(credentials?: typeof FLEET_CREDENTIALS, maxSockets?: number, sdkDefaults?: boolean): KMSClient;
  s3(credentials?: typeof FLEET_CREDENTIALS, maxSockets?: number, sdkDefaults?: boolean): S3Client;
  close(): Promise<void>;
}

export async function startAwsChild(): Promise<AwsChild> {
  const child = fork(fileURLToPath(new URL('./aws-local-child.ts', import.meta.url)), [], { execArgv: ['--import', 'tsx'], stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
  const url = await new Promise<string>((resolve, reject) => {
    child.once('message', (m) => resolve((m as { url: string }).url));
    child.once('exit', (code) => reject(new Error(`aws-local child exited with ${code}`)));
  });
  const clients: { destroy(): void }[] = [];
  const cfg = (credentials: typeof FLEET_CREDENTIALS, maxSockets: number, sdkDefaults: boolean) => ({
    endpoint: url,
    region: REGION,
    credentials,
    maxAttempts: 1,
    cacheMiddleware: !sdkDefaults,
    requestHandler: { httpAgent: new Agent({ keepAlive: true, maxSockets }) },
  });
  return {
    url,
    pid: child.pid!,
    async admin(method, name, body) {
      const res = await fetch(`${url}/_aws-local/${name}`, { method, ...(body !== undefined ? { body: JSON.stringify(body), headers: { 'content-type': 'application/json' } } : {}) });
      const text = await res.text();
      if (!res.ok) throw new Error(`aws-local admin ${method} ${name}: ${res.status} ${text.slice(0, 200)}`);
      return text ? JSON.parse(text) : {};
    },
    kms(credentials = FLEET_CREDENTIALS, maxSockets = 64, sdkDefaults = false) {
      const c = new KMSClient(cfg(credentials, maxSockets, sdkDefaults));
      clients.push(c);
      return c;
    },
    s3(credentials = FLEET_CREDENTIALS, maxSockets = 64, sdkDefaults = false) {
      const c = new S3Client({ ...cfg(credentials, maxSockets, sdkDefaults), forcePathStyle: true });
      clients.push(c);
      return c;
    },
    async close() {
      for (const c of clients) c.destroy();
      if (child.exitCode === null) {
        child.send('close');
        await Promise.race([new Promise((r) => child.once('exit', r)), sleep(5000)]);
        if (child.exitCode === null) child.kill('SIGKILL');
      }
    },
  };
}

/**
 * Creates `<schema>.secrets (id bigint, secret bytea)` with `n` rows whose secrets cycle over
 * `blobs` (KMS ciphertexts), then `VACUUM ANALYZE`s it as pgbench does before a run: a freshly
 * loaded table's first pass would also pay for its hint bits and autovacuum's first visit, which
 * a production table paid long ago (measured in budget-adherence: 0.77 of the budget without
 * this, 0.99 with it, on the same VM). The caller drops the schema.
 */
export async function seedBlobTable(pool: { query(text: string, values?: unknown[]): Promise<unknown> }, schema: string, blobs: readonly Uint8Array[], n: number): Promise<void> {
  await pool.query(`CREATE SCHEMA ${schema}`);
  await pool.query(`CREATE TABLE ${schema}.secrets (id bigint PRIMARY KEY, secret bytea NOT NULL)`);
  const values = blobs.map((b) => Buffer.from(b));
  await pool.query(`INSERT INTO ${schema}.secrets SELECT g, ($1::bytea[])[1 + g % $3] FROM generate_series(1, $2) g`, [values, n, values.length]);
  await pool.query(`VACUUM ANALYZE ${schema}.secrets`);
}

/** A coordinator and workers as separate processes over one Redis prefix. */
export interface Fleet {
  readonly api: RekeyClient;
  /** Sends a raw request to the coordinator API (for routes the client has no method for, e.g. `/budget`). */
  request(method: string, path: string, body?: unknown): Promise<unknown>;
  readonly coordinator: ChildProcess;
  readonly workers: ChildProcess[];
  readonly prefix: string;
  waitSettled(id: string, timeoutMs: number): Promise<string>;
  /** Sums one metric (all its series) over every worker's /metrics. */
  workerMetric(name: string): Promise<number>;
  /** Waits until `n` items were processed in the re-encrypt pass (before the verify pass). */
  waitProcessed(id: string, n: number, timeoutMs: number): Promise<void>;
  stop(): Promise<void>;
}

const IN_FLIGHT_SECONDS = 'rekey_kms_calls_in_flight_seconds_total';

/** How one timed fleet migration went. */
export interface FleetRun {
  /** Seconds from creation until every item was processed in the re-encrypt pass. */
  readonly seconds: number;
  /** Seconds from creation until the migration settled (verify pass done). */
  readonly settledSeconds: number;
  /** The settled state, with its reason when it has one. */
  readonly state: string;
  readonly outcomes: Record<string, number>;
  /** What `count` returned at the end of the re-encrypt pass minus at the start (0 without `count`). */
  readonly counted: number;
  /** Mean KMS calls in flight over the re-encrypt pass, summed over the workers (`rekey_kms_calls_in_flight_seconds_total`). */
  readonly kmsInFlight: number;
  /** CPU milliseconds spent during the re-encrypt pass: `workers`, `coordinator`, plus the `others` given. */
  readonly cpuMs: Record<string, number>;
}

/**
 * Creates a migration of one source on the fleet, times its re-encrypt pass over `n` items and
 * (unless `settle` is false) waits for it to settle, then stops the fleet. `count` (e.g.
 * aws-local's request counter) is read at the start and at the end of the re-encrypt pass.
 */
export async function timeFleetMigration(fleet: Fleet, spec: Record<string, unknown>, n: number, count?: () => Promise<number>, settle = true, others: Record<string, readonly number[]> = {}): Promise<FleetRun> {
  try {
    const c0 = count ? await count() : 0;
    const busy0 = await fleet.workerMetric(IN_FLIGHT_SECONDS);
    const cpu = cpuMeter({ workers: fleet.workers.map((w) => w.pid!), coordinator: [fleet.coordinator.pid!], ...others });
    const t0 = performance.now();
    const m = await fleet.api.create(spec);
    await fleet.waitProcessed(m.id, n, 900_000);
    const seconds = (performance.now() - t0) / 1000;
    const cpuMs = cpu.read();
    const counted = count ? (await count()) - c0 : 0;
    const kmsInFlight = ((await fleet.workerMetric(IN_FLIGHT_SECONDS)) - busy0) / seconds;
    let state = settle ? await fleet.waitSettled(m.id, 900_000) : 'not waited for';
    const settledSeconds = (performance.now() - t0) / 1000;
    const st = await fleet.api.status(m.id);
    if (st.migration.reason) state += ` (${st.migration.reason})`;
    return { seconds, settledSeconds, state, outcomes: st.totals.outcomes, counted, kmsInFlight, cpuMs };
  } finally {
    await fleet.stop();
  }
}

export interface FleetOptions {
  awsUrl: string;
  redisUrl: string;
  workers: number;
  /** Batches per worker process (REKEY_WORKER_CONCURRENCY). */
  workerConcurrency: number;
  /** KMS calls in flight per process (REKEY_WORKER_KMS_CONCURRENCY); the config default when unset. */
  kmsConcurrency?: number;
  /** REKEY_KMS_BUDGET (rps or "N%"). */
  budget: string;
  quotaRps?: number;
  databaseUrl?: string;
}

/**
 * The shape of the fleet the speed benchmarks compare at total KMS concurrency `c`: 2 workers x
 * c/2 KMS calls in flight (`worker.kmsConcurrency`) = c, the raw loop's concurrency. A batch
 * keeps `itemsPerKms` times as many items in flight as its worker has KMS slots, so the HEAD and
 * CopyObject of some items overlap the ReEncrypt of others, and one batch alone keeps the slots
 * busy. A worker runs `batches` batches (2, the worker default; their items share its KMS slots):
 * one more than needed, so a batch's tail overlaps the next batch, but no more, because batches a
 * worker holds can't go to a worker that has run out of work (measured: 4 batches per worker left
 * one worker idle for the last seconds of a run, 0.77 of the raw loop against 0.88 with 2).
 */
export function fleetShape(c: number, itemsPerKms: number, batches = 2) {
  const kmsPerWorker = Math.max(1, Math.round(c / 2));
  const itemsPerBatch = kmsPerWorker * itemsPerKms;
  return {
    workers: 2,
    workerConcurrency: batches,
    kmsConcurrency: kmsPerWorker,
    itemsPerBatch,
    text: `2 workers x ${kmsPerWorker} KMS calls in flight = ${kmsPerWorker * 2}; ${itemsPerBatch} items in flight per batch, ${batches} batches per worker`,
  } as const;
}

/** Waits up to 30 s until `url` answers 2xx; throws if `child` exits first. */
async function waitListening(url: string, child: ChildProcess, name: string): Promise<void> {
  for (let i = 0; ; i++) {
    try {
      if ((await fetch(url)).ok) return;
    } catch {
      // not listening yet
    }
    if (child.exitCode !== null) throw new Error(`${name} exited with ${child.exitCode}`);
    if (i > 300) throw new Error(`${name} did not answer ${url} in 30 s`);
    await sleep(100);
  }
}

export async function startFleet(o: FleetOptions): Promise<Fleet> {
  const prefix = `bench-${randomBytes(4).toString('hex')}:`;
  const token = randomBytes(24).toString('hex');
  const port = await freePort();
  const env: NodeJS.ProcessEnv = {
    PATH: process.env['PATH'],
    HOME: process.env['HOME'],
    REKEY_REDIS_URL: o.redisUrl,
    REKEY_REDIS_PREFIX: prefix,
    REKEY_API_TOKEN: token,
    REKEY_API_HOST: '127.0.0.1',
    REKEY_API_PORT: String(port),
    REKEY_KMS_BUDGET: o.budget,
    ...(o.quotaRps ? { REKEY_KMS_QUOTA_RPS: String(o.quotaRps) } : {}),
    REKEY_WORKER_CONCURRENCY: String(o.workerConcurrency),
    ...(o.kmsConcurrency ? { REKEY_WORKER_KMS_CONCURRENCY: String(o.kmsConcurrency) } : {}),
    DATABASE_URL: o.databaseUrl ?? process.env['DATABASE_URL'] ?? 'postgres://postgres@127.0.0.1:5432/test',
    AWS_ENDPOINT_URL: o.awsUrl,
    AWS_REGION: REGION,
    AWS_ACCESS_KEY_ID: FLEET_CREDENTIALS.accessKeyId,
    AWS_SECRET_ACCESS_KEY: FLEET_CREDENTIALS.secretAccessKey,
    AWS_NODEJS_CONNECTION_REUSE_ENABLED: '1',
    AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED: process.env['AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED'],
    LOG_LEVEL: process.env['BENCH_LOG_LEVEL'] ?? 'error',
  };
  // e.g. BENCH_NODE_ARGS="--cpu-prof --cpu-prof-dir=/tmp/prof" profiles the coordinator and workers
  // (and BENCH_NODE_ARGS="--max-semi-space-size=16" overrides the workers' deployed setting).
  const nodeArgs = (process.env['BENCH_NODE_ARGS'] ?? '').split(' ').filter(Boolean);
  const coordinator = spawn(process.execPath, [...nodeArgs, require.resolve('@rekey/coordinator')], { env, stdio: ['ignore', 'inherit', 'inherit'] });
  const api = httpClient(`http://127.0.0.1:${port}`, token);
  await waitListening(`http://127.0.0.1:${port}/healthz`, coordinator, 'coordinator');
  // Every worker serves /metrics on a port of its own, so a benchmark can read what each one did.
  const metricsPorts = await Promise.all(Array.from({ length: o.workers }, () => freePort()));
  const workers = metricsPorts.map((mp) =>
    spawn(process.execPath, [...WORKER_NODE_ARGS, ...nodeArgs, require.resolve('@rekey/worker')], { env: { ...env, REKEY_METRICS_PORT: String(mp) }, stdio: ['ignore', 'inherit', 'inherit'] }),
  );
  // Timing starts with every worker ready to take jobs (it serves /metrics once its engine is up).
  await Promise.all(workers.map((w, i) => waitListening(`http://127.0.0.1:${metricsPorts[i]}/metrics`, w, `worker ${i + 1}`)));
  const all = () => [coordinator, ...workers];
  return {
    api,
    async request(method, path, body) {
      const res = await fetch(`http://127.0.0.1:${port}${path}`, {
        method,
        headers: { authorization: `Bearer ${token}`, ...(body !== undefined ? { 'content-type': 'application/json' } : {}) },
        ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
      });
      const text = await res.text();
      if (!res.ok) throw new Error(`coordinator ${method} ${path}: ${res.status} ${text.slice(0, 200)}`);
      return JSON.parse(text);
    },
    coordinator,
    workers,
    prefix,
    async workerMetric(name) {
      let sum = 0;
      for (const mp of metricsPorts) {
        const text = await (await fetch(`http://127.0.0.1:${mp}/metrics`)).text();
        for (const line of text.split('\n')) {
          const m = new RegExp(`^${name}(?:\\{[^}]*\\})? ([0-9.e+-]+)$`).exec(line);
          if (m) sum += Number(m[1]);
        }
      }
      return sum;
    },
    async waitSettled(id, timeoutMs) {
      const until = Date.now() + timeoutMs;
      while (Date.now() < until) {
        const m = await api.get(id);
        if (['ready', 'blocked', 'paused', 'finalized', 'failed', 'cancelled'].includes(m.state)) return m.state;
        await sleep(100);
      }
      throw new Error(`migration ${id} did not settle in ${timeoutMs} ms`);
    },
    async waitProcessed(id, n, timeoutMs) {
      const until = Date.now() + timeoutMs;
      while (Date.now() < until) {
        const st = await api.status(id);
        if (st.totals.processed >= n) return;
        if (['blocked', 'paused', 'failed', 'cancelled'].includes(st.migration.state)) throw new Error(`migration ${id} is ${st.migration.state}: ${st.migration.reason ?? ''}`);
        await sleep(100);
      }
      throw new Error(`migration ${id} did not process ${n} items in ${timeoutMs} ms`);
    },
    async stop() {
      for (const c of all()) if (c.exitCode === null && c.signalCode === null) c.kill('SIGTERM');
      await Promise.all(all().map(async (c) => {
        if (c.exitCode !== null || c.signalCode !== null) return;
        await Promise.race([new Promise((r) => c.once('exit', r)), sleep(15_000)]);
        if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
      }));
      const redis = new Redis(o.redisUrl);
      await cleanupRedisPrefix(redis, prefix);
      await redis.quit();
    },
  };
}

export async function createKey(kms: KMSClient, description: string): Promise<string> {
  return (await kms.send(new CreateKeyCommand({ Description: description }))).KeyMetadata!.Arn!;
}

/** Runs `fn` over `n` indexes with bounded concurrency. */
export async function times(n: number, concurrency: number, fn: (i: number) => Promise<void>): Promise<void> {
  let next = 0;
  await Promise.all(Array.from({ length: Math.min(n, concurrency) }, async () => {
    while (next < n) await fn(next++);
  }));
}

/**
 * Writes `n` envelope objects (S3 Encryption Client v2 metadata with a KMS-wrapped data key)
 * under `keyId`. Each of 256 templates is written by the envelope client; the other objects
 * copy a template's body and metadata with one PutObject each, so seeding costs one call per item.
 */
export async function seedEnvelope(aws: AwsChild, bucket: string, keyId: string, n: number): Promise<void> {
  const s3 = aws.s3();
  const kms = aws.kms();
  await s3.send(new CreateBucketCommand({ Bucket: bucket }));
  const envelope = createEnvelopeClient({ kms: { client: kms } });
  const key = (i: number) => `e/${String(i).padStart(7, '0')}`;
  const templates = Math.min(n, 256);
  await times(templates, 32, async (i) => {
    await envelope.putObject(s3, { Bucket: bucket, Key: key(i), Body: Buffer.from(`benchmark item ${i}`), keyId, context: { app: 'bench' } });
  });
  const copies = await Promise.all(Array.from({ length: templates }, async (_, i) => {
    const o = await s3.send(new GetObjectCommand({ Bucket: bucket, Key: key(i) }));
    return { body: await o.Body!.transformToByteArray(), metadata: o.Metadata ?? {} };
  }));
  await times(n - templates, 64, async (j) => {
    const i = templates + j;
    const t = copies[i % templates]!;
    await s3.send(new PutObjectCommand({ Bucket: bucket, Key: key(i), Body: t.body, Metadata: t.metadata }));
  });
}

const CLOCK_TICKS_PER_S = Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100;

/** CPU milliseconds (user + system) a live process has used so far, from `/proc/<pid>/stat`. */
export function processCpuMs(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  // Fields after the parenthesized command name; utime and stime are the 14th and 15th of the line.
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return ((Number(fields[11]) + Number(fields[12])) / CLOCK_TICKS_PER_S) * 1000;
}

/**
 * Measures the CPU time that groups of processes use from now until `read()`, e.g.
 * `{ workers: [pid1, pid2], 'aws-local': [pid3] }`; the pid `process.pid` is read with
 * `process.cpuUsage()` (finer than clock ticks). On a machine where every variant saturates the
 * cores, items/s follow CPU milliseconds per item, which these numbers give with far less noise.
 */
export function cpuMeter(groups: Record<string, readonly number[]>): { read(): Record<string, number> } {
  const now = (pid: number) => (pid === process.pid ? (({ user, system }) => (user + system) / 1000)(process.cpuUsage()) : processCpuMs(pid));
  const start = Object.fromEntries(Object.entries(groups).map(([g, pids]) => [g, pids.map(now)]));
  return {
    read: () => Object.fromEntries(Object.entries(groups).map(([g, pids]) => [g, pids.reduce((sum, pid, i) => sum + now(pid) - start[g]![i]!, 0)])),
  };
}

/** The pid of the Redis server at `url` (`INFO server`), when it runs on this machine and /proc shows it. */
export async function redisPid(url: string): Promise<number | undefined> {
  const redis = new Redis(url);
  try {
    const pid = Number(/process_id:(\d+)/.exec(await redis.info('server'))?.[1]);
    return pid && existsSync(`/proc/${pid}/stat`) ? pid : undefined;
  } finally {
    await redis.quit();
  }
}

/** `{ group: ms }` over `items` as "a 0.41 + b 0.12 = 0.53 ms" (CPU ms per item). */
export function cpuPerItem(cpuMs: Record<string, number>, items: number): string {
  const parts = Object.entries(cpuMs).map(([g, ms]) => `${g} ${(ms / items).toFixed(2)}`);
  const total = Object.values(cpuMs).reduce((a, b) => a + b, 0) / items;
  return `${parts.join(' + ')} = ${total.toFixed(2)}`;
}

export function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = Math.floor(s.length / 2);
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}

/** True when this module is the script node was started with (not imported by run.ts). */
export function isMain(metaUrl: string): boolean {
  return process.argv[1] !== undefined && fileURLToPath(metaUrl) === process.argv[1];
}

/** What each benchmark returns to run.ts: its printed report and its final line. */
export interface BenchResult {
  readonly report: string;
  readonly line: string;
  readonly ok: boolean;
}
