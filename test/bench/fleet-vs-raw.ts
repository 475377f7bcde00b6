/**
 * fleet-vs-raw: N envelope items (default 20,000), aws-local latency fixed at 5 ms on every call,
 * no quota. (a) a raw loop of ReEncrypt calls at concurrency C, no queue and no writes back (the
 * ceiling); (b) the fleet: a coordinator and 2 worker processes at the same total KMS concurrency
 * C, doing the full job through BullMQ, Redis and S3 (HEAD, ReEncrypt, CopyObject). Reports b/a.
 *
 * The target line is the run at C and `--latency`. The same comparison is then repeated at the
 * `--also` points (concurrency@latency, on `--also-items` items each, no verify pass): on 2 shared
 * cores the raw loop at C = 32 is bound by CPU, not by its concurrency, and the fleet needs three
 * requests per item to its one, so the extra points show the fleet where the machine is not the
 * limit. Every row prints the mean KMS calls in flight and the time per KMS call of both variants:
 * a fleet that keeps its slots busy and only misses by its calls taking longer is short of CPU,
 * not of design.
 *
 * Last, an informational point: the same fleet at C and `--latency` on `--pg-items` Postgres rows
 * holding the raw loop's blobs, where each item is one ReEncrypt as in the raw loop, to show what
 * the fleet's own machinery costs apart from S3's two extra requests per object (`--pg=none` skips it).
 *
 *   npx tsx test/bench/fleet-vs-raw.ts [--items=20000] [--concurrency=32] [--latency=5] [--items-per-kms=4]
 *     [--batches-per-worker=2] [--also=4@5,8@20] [--also-items=10000] [--pg-items=10000] [--pg=none]
 */
import { GenerateDataKeyWithoutPlaintextCommand, ReEncryptCommand, type KMSClient } from '@aws-sdk/client-kms';
import pg from 'pg';
import { cpuMeter, cpuPerItem, createKey, fleetShape, flag, isMain, listFlag, machine, redisPid, seedBlobTable, startAwsChild, startFleet, table, times, timeFleetMigration, seedEnvelope, type AwsChild, type BenchResult } from './lib/fleet.js';

const TARGET = 0.85;

/** One side-by-side comparison at one concurrency and latency. */
interface Point {
  readonly c: number;
  readonly latencyMs: number;
  readonly n: number;
  readonly seedS: number;
  readonly raw: { readonly s: number; readonly rate: number; readonly requestsPerS: number; readonly errors: number; readonly cpuMs: Record<string, number> };
  readonly fleet: { readonly s: number; readonly rate: number; readonly requestsPerS: number; readonly requestsPerItem: number; readonly kmsInFlight: number; readonly slots: number; readonly note: string; readonly reencrypted: number; readonly cpuMs: Record<string, number> };
  readonly ratio: number;
}

interface Setup {
  readonly aws: AwsChild;
  readonly kms: KMSClient;
  readonly oldKey: string;
  readonly newKey: string;
  readonly blobs: readonly Uint8Array[];
  readonly context: Record<string, string>;
  readonly redisUrl: string;
  /** The Redis server's pid, when it runs here: its CPU is counted in the fleet's. */
  readonly redisPid: number | undefined;
}

/** Every request aws-local answered, from its own counters: the machine's work in each variant. */
async function requests(aws: AwsChild): Promise<number> {
  return Object.values((await aws.admin('GET', 'counters')) as Record<string, { calls: number }>).reduce((n, x) => n + x.calls, 0);
}

async function comparePoint(s: Setup, bucket: string, c: number, latencyMs: number, n: number, settle: boolean): Promise<Point> {
  const { aws, kms, oldKey, newKey, blobs, context } = s;
  await aws.admin('POST', 'latency', { op: '*' }); // no latency while seeding
  const t0 = performance.now();
  await seedEnvelope(aws, bucket, oldKey, n);
  const seedS = (performance.now() - t0) / 1000;
  await aws.admin('POST', 'latency', { op: '*', fixedMs: latencyMs });

  // (a) raw ReEncrypt loop at concurrency c.
  let errors = 0;
  const ra = await requests(aws);
  const rawCpu = cpuMeter({ 'raw loop': [process.pid], 'aws-local': [aws.pid] });
  const ta = performance.now();
  await times(n, c, async (i) => {
    try {
      await kms.send(new ReEncryptCommand({ CiphertextBlob: blobs[i % blobs.length], SourceKeyId: oldKey, DestinationKeyId: newKey, SourceEncryptionContext: context, DestinationEncryptionContext: context }));
    } catch {
      errors++;
    }
  });
  const rawS = (performance.now() - ta) / 1000;
  const rawCpuMs = rawCpu.read();
  const rawRequests = (await requests(aws)) - ra;

  // (b) the fleet at the same KMS concurrency c.
  const shape = fleetShape(c, flag('items-per-kms', 4), flag('batches-per-worker', 2));
  const fleet = await startFleet({ awsUrl: aws.url, redisUrl: s.redisUrl, ...shape, budget: '1000000' });
  const run = await timeFleetMigration(
    fleet,
    { sources: [{ name: 'env', kind: 's3-envelope', bucket }], from: [oldKey], to: newKey, options: { concurrency: shape.itemsPerBatch } },
    n,
    () => requests(aws),
    settle,
    { 'aws-local': [aws.pid], ...(s.redisPid ? { redis: [s.redisPid] } : {}) },
  );
  const reencrypted = run.outcomes['reencrypted'] ?? 0;
  const note = settle
    ? `all re-encrypted at ${run.seconds.toFixed(1)} s, ${run.state} (verify pass done) at ${run.settledSeconds.toFixed(1)} s; reencrypted ${reencrypted}, failed ${run.outcomes['failed'] ?? 0}`
    : `reencrypted ${reencrypted}, failed ${run.outcomes['failed'] ?? 0}`;
  return {
    c,
    latencyMs,
    n,
    seedS,
    raw: { s: rawS, rate: n / rawS, requestsPerS: rawRequests / rawS, errors, cpuMs: rawCpuMs },
    fleet: { s: run.seconds, rate: n / run.seconds, requestsPerS: run.counted / run.seconds, requestsPerItem: run.counted / n, kmsInFlight: run.kmsInFlight, slots: shape.kmsConcurrency * shape.workers, note, reencrypted, cpuMs: run.cpuMs },
    ratio: n / run.seconds / (n / rawS),
  };
}

/** The fleet at the headline point on Postgres rows: one AWS request per item, like the raw loop. */
interface PgPoint {
  readonly n: number;
  readonly s: number;
  readonly rate: number;
  readonly requestsPerItem: number;
  readonly kmsInFlight: number;
  readonly reencrypted: number;
  readonly cpuMs: Record<string, number>;
}

/**
 * The same fleet and point (C, latency) on a Postgres table of the raw loop's blobs instead of
 * S3 objects: each item is one ReEncrypt, its row read and written in grouped SQL, so the fleet
 * makes the raw loop's one AWS request per item and what is left between them is the fleet's own
 * machinery (BullMQ, Redis, the limiter, the source). Compared with the headline point's raw loop.
 */
async function pgPoint(s: Setup, c: number, latencyMs: number, n: number): Promise<PgPoint> {
  const dbUrl = process.env['DATABASE_URL'] ?? 'postgres://postgres@127.0.0.1:5432/test';
  const schema = `bench_raw_${process.pid}`;
  const pool = new pg.Pool({ connectionString: dbUrl, max: 2 });
  try {
    await seedBlobTable(pool, schema, s.blobs, n);
    await s.aws.admin('POST', 'latency', { op: '*', fixedMs: latencyMs });
    const shape = fleetShape(c, flag('items-per-kms', 4), flag('batches-per-worker', 2));
    const fleet = await startFleet({ awsUrl: s.aws.url, redisUrl: s.redisUrl, ...shape, budget: '1000000', databaseUrl: dbUrl });
    const run = await timeFleetMigration(
      fleet,
      {
        sources: [{ name: 'rows', kind: 'postgres', schema, table: 'secrets', primaryKey: ['id'], column: 'secret', context: s.context }],
        from: [s.oldKey],
        to: s.newKey,
        options: { concurrency: shape.itemsPerBatch },
      },
      n,
      () => requests(s.aws),
      false,
      { 'aws-local': [s.aws.pid], ...(s.redisPid ? { redis: [s.redisPid] } : {}) },
    );
    return { n, s: run.seconds, rate: n / run.seconds, requestsPerItem: run.counted / n, kmsInFlight: run.kmsInFlight, reencrypted: run.outcomes['reencrypted'] ?? 0, cpuMs: run.cpuMs };
  } finally {
    await pool.query(`DROP SCHEMA IF EXISTS ${schema} CASCADE`).catch(() => undefined);
    await pool.end();
  }
}

const sum = (cpuMs: Record<string, number>) => Object.values(cpuMs).reduce((a, b) => a + b, 0);
const coresBusy = (cpuMs: Record<string, number>, seconds: number) => (sum(cpuMs) / 1000 / seconds).toFixed(2);

/** Milliseconds per KMS call: mean calls in flight / calls per second (Little's law). */
const msPerCall = (inFlight: number, callsPerS: number) => ((inFlight / callsPerS) * 1000).toFixed(1);

export async function fleetVsRaw(): Promise<BenchResult> {
  const n = flag('items', 20_000);
  const c = flag('concurrency', 32);
  const latencyMs = flag('latency', 5);
  const also = listFlag<readonly [number, number]>('also', [[4, 5], [8, 20]], (part) => {
    const m = /^(\d+)@(\d+(?:\.\d+)?)$/.exec(part);
    if (!m) throw new Error(`--also must be a list like 4@5,8@20 (concurrency@latency-ms), got ${JSON.stringify(part)}`);
    return [Number(m[1]), Number(m[2])];
  });
  const alsoN = flag('also-items', 10_000);
  const redisUrl = process.env['REDIS_URL'] ?? 'redis://127.0.0.1:6379';
  const aws = await startAwsChild();
  try {
    const kms = aws.kms(undefined, Math.max(c, ...also.map(([ac]) => ac)));
    const oldKey = await createKey(kms, 'bench old');
    const newKey = await createKey(kms, 'bench new');
    // The raw loop cycles over 512 wrapped keys with the same context as the objects' keys.
    const context = { app: 'bench' };
    const blobs: Uint8Array[] = [];
    await times(512, 32, async () => {
      blobs.push((await kms.send(new GenerateDataKeyWithoutPlaintextCommand({ KeyId: oldKey, KeySpec: 'AES_256', EncryptionContext: context }))).CiphertextBlob!);
    });
    const setup: Setup = { aws, kms, oldKey, newKey, blobs, context, redisUrl, redisPid: await redisPid(redisUrl) };
    const main = await comparePoint(setup, 'bench-raw', c, latencyMs, n, true);
    const extra: Point[] = [];
    for (const [i, [ac, al]] of also.entries()) extra.push(await comparePoint(setup, `bench-raw-${i + 1}`, ac, al, alsoN, false));
    const pgN = flag('pg-items', 10_000);
    const rows = process.argv.includes('--pg=none') ? undefined : await pgPoint(setup, c, latencyMs, pgN);
    const pgRatio = rows ? rows.rate / main.raw.rate : undefined;

    const ok = main.ratio >= TARGET && main.fleet.reencrypted === n;
    const report = [
      `fleet-vs-raw — ${machine()}`,
      `N=${n}, C=${c}, aws-local latency ${latencyMs} ms on every call, no quota; seeding took ${main.seedS.toFixed(1)} s`,
      '',
      table(['variant', 'items', 'seconds', 'items/s', 'aws-local requests/s', 'notes'], [
        ['(a) raw ReEncrypt loop', n, main.raw.s.toFixed(1), main.raw.rate.toFixed(0), main.raw.requestsPerS.toFixed(0), `${main.raw.errors} errors`],
        ['(b) fleet, 2 workers', n, main.fleet.s.toFixed(1), main.fleet.rate.toFixed(0), main.fleet.requestsPerS.toFixed(0), main.fleet.note],
      ]),
      '',
      `aws-local requests/s, fleet / raw: ${(main.fleet.requestsPerS / main.raw.requestsPerS).toFixed(2)} (the fleet makes ${main.fleet.requestsPerItem.toFixed(2)} requests per item: HEAD, ReEncrypt, CopyObject; the raw loop 1)`,
      '',
      'Every point: C = KMS calls in flight allowed (raw loop: callers; fleet: 2 workers x C/2 slots), mean in flight measured, ms per KMS call = in flight / calls per second.',
      '',
      table(['C', 'latency ms', 'items', 'raw items/s', 'fleet items/s', 'ratio', 'fleet KMS in flight / slots', 'ms per KMS call raw / fleet', 'aws-local requests/s raw / fleet'], [main, ...extra].map((p) => [
        p.c,
        p.latencyMs,
        p.n,
        p.raw.rate.toFixed(0),
        p.fleet.rate.toFixed(0),
        p.ratio.toFixed(3),
        `${p.fleet.kmsInFlight.toFixed(1)} / ${p.fleet.slots}`,
        `${msPerCall(p.c, p.raw.rate)} / ${msPerCall(p.fleet.kmsInFlight, p.fleet.rate)}`,
        `${p.raw.requestsPerS.toFixed(0)} / ${p.fleet.requestsPerS.toFixed(0)}`,
      ])),
      '',
      'CPU milliseconds per item, by process, over each timed pass (/proc/<pid>/stat; the raw loop is the benchmark process). Where both variants keep the cores busy, the ratio follows raw CPU per item / fleet CPU per item.',
      '',
      table(['C', 'latency ms', 'raw: CPU ms per item', 'raw: cores busy', 'fleet: CPU ms per item', 'fleet: cores busy', 'raw / fleet CPU per item'], [main, ...extra].map((p) => [
        p.c,
        p.latencyMs,
        cpuPerItem(p.raw.cpuMs, p.n),
        coresBusy(p.raw.cpuMs, p.raw.s),
        cpuPerItem(p.fleet.cpuMs, p.n),
        coresBusy(p.fleet.cpuMs, p.fleet.s),
        (sum(p.raw.cpuMs) / sum(p.fleet.cpuMs)).toFixed(3),
      ])),
      '',
      ...(rows && pgRatio !== undefined
        ? [
            `The same fleet at C = ${c} and ${latencyMs} ms on ${rows.n} Postgres rows holding the raw loop's blobs (one ReEncrypt per item, rows read and written in grouped SQL), against (a) above: the fleet's own machinery without S3's two extra requests per item. Postgres's CPU is not counted.`,
            '',
            table(['source', 'items', 'fleet items/s', 'raw items/s (a)', 'ratio', 'aws-local requests per item', 'fleet KMS in flight / slots', 'fleet: CPU ms per item'], [
              ['postgres', rows.n, rows.rate.toFixed(0), main.raw.rate.toFixed(0), pgRatio.toFixed(3), rows.requestsPerItem.toFixed(2), `${rows.kmsInFlight.toFixed(1)} / ${main.fleet.slots}`, cpuPerItem(rows.cpuMs, rows.n)],
            ]),
            `(reencrypted ${rows.reencrypted} of ${rows.n})`,
            '',
          ]
        : []),
    ].join('\n');
    const extraFields = [
      ...extra.map((p) => `ratio_c${p.c}_${p.latencyMs}ms=${p.ratio.toFixed(3)}`),
      ...(pgRatio !== undefined ? [`ratio_postgres_c${c}_${latencyMs}ms=${pgRatio.toFixed(3)}`] : []),
    ].join(' ');
    const line = `bench: fleet-vs-raw ratio=${main.ratio.toFixed(3)} target=${TARGET} ${ok ? 'ok' : 'miss'}${extraFields ? ` ${extraFields}` : ''}`;
    return { report, line, ok };
  } finally {
    await aws.close();
  }
}

if (isMain(import.meta.url)) {
  const r = await fleetVsRaw();
  console.log(r.report);
  console.log(r.line);
}
