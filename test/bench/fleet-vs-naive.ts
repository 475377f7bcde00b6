/**
 * fleet-vs-naive: the same envelope items migrated by a sequential one-item-at-a-time script
 * (HeadObject, ReEncrypt, CopyObject with the new metadata), and by the fleet (coordinator + 2
 * workers, total KMS concurrency C). aws-local latency fixed at 5 ms on every call, no quota.
 * Reports fleet items/s divided by naive items/s.
 *
 * The fleet migrates all N items (default 20,000). The naive script would need about
 * N x 3 calls x (5 ms + overhead) — over 5 minutes at N = 20,000 — so by default it migrates
 * the first `--naive-items` (2,000) of a second copy of the items and its rate is measured on
 * those; `--naive-items=20000` runs it on all of them.
 *
 * The target line is the run at `--latency`. The comparison is then repeated at each latency of
 * `--naive-also` (ms; the script on `--naive-also-items`, the fleet on `--also-items`, no verify
 * pass). At 5 ms the fleet is bound by this machine's CPU (3 requests per item on 2 cores shared
 * with aws-local) while the script is bound by latency; the extra rows show both at a latency
 * closer to S3's.
 *
 *   npx tsx test/bench/fleet-vs-naive.ts [--items=20000] [--naive-items=2000] [--concurrency=32] [--items-per-kms=4]
 *     [--batches-per-worker=2] [--naive-also=20] [--naive-also-items=300] [--also-items=10000]
 */
import { ReEncryptCommand, type KMSClient } from '@aws-sdk/client-kms';
import { CopyObjectCommand, HeadObjectCommand, ListObjectsV2Command, type S3Client } from '@aws-sdk/client-s3';
import { createKey, fleetShape, flag, isMain, listFlag, machine, seedEnvelope, startAwsChild, startFleet, table, timeFleetMigration, type AwsChild, type BenchResult } from './lib/fleet.js';

const TARGET = 30;

/** The naive script: list, then HEAD + ReEncrypt + COPY per object, one at a time. Returns items/s. */
async function naiveMigrate(s3: S3Client, kms: KMSClient, bucket: string, oldKey: string, newKey: string): Promise<{ done: number; seconds: number }> {
  const t0 = performance.now();
  let done = 0;
  let token: string | undefined;
  do {
    const page = await s3.send(new ListObjectsV2Command({ Bucket: bucket, ...(token ? { ContinuationToken: token } : {}) }));
    for (const o of page.Contents ?? []) {
      const head = await s3.send(new HeadObjectCommand({ Bucket: bucket, Key: o.Key! }));
      const meta = head.Metadata ?? {};
      const context = JSON.parse(meta['x-amz-matdesc'] ?? '{}') as Record<string, string>;
      const re = await kms.send(new ReEncryptCommand({ CiphertextBlob: Buffer.from(meta['x-amz-key-v2'] ?? '', 'base64'), SourceKeyId: oldKey, DestinationKeyId: newKey, SourceEncryptionContext: context, DestinationEncryptionContext: context }));
      await s3.send(new CopyObjectCommand({
        Bucket: bucket,
        Key: o.Key!,
        CopySource: `${bucket}/${encodeURIComponent(o.Key!)}`,
        CopySourceIfMatch: head.ETag,
        MetadataDirective: 'REPLACE',
        Metadata: { ...meta, 'x-amz-key-v2': Buffer.from(re.CiphertextBlob!).toString('base64') },
        ...(head.ContentType ? { ContentType: head.ContentType } : {}),
      }));
      done++;
    }
    token = page.IsTruncated ? page.NextContinuationToken : undefined;
  } while (token);
  return { done, seconds: (performance.now() - t0) / 1000 };
}

interface Point {
  readonly latencyMs: number;
  readonly naive: { readonly done: number; readonly seconds: number; readonly rate: number };
  readonly fleet: { readonly n: number; readonly seconds: number; readonly rate: number; readonly kmsInFlight: number; readonly note: string; readonly reencrypted: number };
  readonly ratio: number;
}

async function comparePoint(aws: AwsChild, keys: { oldKey: string; newKey: string }, tag: string, latencyMs: number, n: number, naiveN: number, settle: boolean): Promise<Point & { shapeText: string }> {
  const kms = aws.kms(undefined, 4, true);
  const s3 = aws.s3(undefined, 4, true);
  await aws.admin('POST', 'latency', { op: '*' }); // no latency while seeding
  await seedEnvelope(aws, `bench-naive-fleet${tag}`, keys.oldKey, n);
  await seedEnvelope(aws, `bench-naive-script${tag}`, keys.oldKey, naiveN);
  await aws.admin('POST', 'latency', { op: '*', fixedMs: latencyMs });
  const naive = await naiveMigrate(s3, kms, `bench-naive-script${tag}`, keys.oldKey, keys.newKey);

  const shape = fleetShape(flag('concurrency', 32), flag('items-per-kms', 4), flag('batches-per-worker', 2));
  const fleet = await startFleet({ awsUrl: aws.url, redisUrl: process.env['REDIS_URL'] ?? 'redis://127.0.0.1:6379', ...shape, budget: '1000000' });
  const run = await timeFleetMigration(
    fleet,
    { sources: [{ name: 'env', kind: 's3-envelope', bucket: `bench-naive-fleet${tag}` }], from: [keys.oldKey], to: keys.newKey, options: { concurrency: shape.itemsPerBatch } },
    n,
    undefined,
    settle,
  );
  const reencrypted = run.outcomes['reencrypted'] ?? 0;
  const note = `${run.kmsInFlight.toFixed(1)} KMS calls in flight on average; ${
    settle ? `all re-encrypted at ${run.seconds.toFixed(1)} s, ${run.state} (verify pass done) at ${run.settledSeconds.toFixed(1)} s; ` : ''
  }reencrypted ${reencrypted}, failed ${run.outcomes['failed'] ?? 0}`;
  const naiveRate = naive.done / naive.seconds;
  return {
    latencyMs,
    naive: { ...naive, rate: naiveRate },
    fleet: { n, seconds: run.seconds, rate: n / run.seconds, kmsInFlight: run.kmsInFlight, note, reencrypted },
    ratio: n / run.seconds / naiveRate,
    shapeText: shape.text,
  };
}

export async function fleetVsNaive(): Promise<BenchResult> {
  const n = flag('items', 20_000);
  const naiveN = Math.min(n, flag('naive-items', 2000));
  const latencyMs = flag('latency', 5);
  const alsoLatencies = listFlag('naive-also', [20], (part) => {
    const v = Number(part);
    if (part === '' || !Number.isFinite(v) || v < 0) throw new Error(`--naive-also must be a list of latencies in ms, got ${JSON.stringify(part)}`);
    return v;
  });
  const alsoN = flag('also-items', 10_000);
  const alsoNaiveN = Math.min(alsoN, flag('naive-also-items', 300));
  const aws = await startAwsChild();
  try {
    const kms = aws.kms(undefined, 4);
    const keys = { oldKey: await createKey(kms, 'bench old'), newKey: await createKey(kms, 'bench new') };
    const main = await comparePoint(aws, keys, '', latencyMs, n, naiveN, true);
    const extra: Point[] = [];
    for (const [i, l] of alsoLatencies.entries()) extra.push(await comparePoint(aws, keys, `-${i + 1}`, l, alsoN, alsoNaiveN, false));

    const ok = main.ratio >= TARGET && main.fleet.reencrypted === n;
    const report = [
      `fleet-vs-naive — ${machine()}`,
      `aws-local latency ${latencyMs} ms on every call, no quota; fleet: ${main.shapeText}`,
      '',
      table(['variant', 'items', 'seconds', 'items/s', 'notes'], [
        ['naive script (HEAD, ReEncrypt, COPY; sequential)', main.naive.done, main.naive.seconds.toFixed(1), main.naive.rate.toFixed(1), `${((main.naive.seconds * 1000) / main.naive.done).toFixed(1)} ms per item`],
        ['fleet, 2 workers', n, main.fleet.seconds.toFixed(1), main.fleet.rate.toFixed(0), main.fleet.note],
      ]),
      '',
      table(['latency ms', 'naive items', 'naive items/s', 'fleet items', 'fleet items/s', 'ratio', 'fleet KMS calls in flight'], [main, ...extra].map((p) => [
        p.latencyMs,
        p.naive.done,
        p.naive.rate.toFixed(1),
        p.fleet.n,
        p.fleet.rate.toFixed(0),
        p.ratio.toFixed(1),
        p.fleet.kmsInFlight.toFixed(1),
      ])),
      '',
    ].join('\n');
    const extraFields = extra.map((p) => `ratio_${p.latencyMs}ms=${p.ratio.toFixed(1)}`).join(' ');
    return { report, line: `bench: fleet-vs-naive ratio=${main.ratio.toFixed(1)} target=${TARGET} ${ok ? 'ok' : 'miss'}${extraFields ? ` ${extraFields}` : ''}`, ok };
  } finally {
    await aws.close();
  }
}

if (isMain(import.meta.url)) {
  const r = await fleetVsNaive();
  console.log(r.report);
  console.log(r.line);
}
