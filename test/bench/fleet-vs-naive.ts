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
 *   npx tsx test/bench/fleet-vs-naive.ts [--items=20000] [--naive-items=2000] [--concurrency=32] [--items-per-kms=4] [--batches-per-worker=2]
 */
import { ReEncryptCommand } from '@aws-sdk/client-kms';
import { CopyObjectCommand, HeadObjectCommand, ListObjectsV2Command } from '@aws-sdk/client-s3';
import { createKey, fleetShape, flag, isMain, machine, seedEnvelope, startAwsChild, startFleet, table, timeFleetMigration, type BenchResult } from './lib/fleet.js';

const TARGET = 30;

export async function fleetVsNaive(): Promise<BenchResult> {
  const n = flag('items', 20_000);
  const naiveN = Math.min(n, flag('naive-items', 2000));
  const c = flag('concurrency', 32);
  const latencyMs = flag('latency', 5);
  const redisUrl = process.env['REDIS_URL'] ?? 'redis://127.0.0.1:6379';
  const aws = await startAwsChild();
  try {
    const kms = aws.kms(undefined, 4);
    const s3 = aws.s3(undefined, 4);
    const oldKey = await createKey(kms, 'bench old');
    const newKey = await createKey(kms, 'bench new');
    await seedEnvelope(aws, 'bench-naive-fleet', oldKey, n);
    await seedEnvelope(aws, 'bench-naive-script', oldKey, naiveN);
    await aws.admin('POST', 'latency', { op: '*', fixedMs: latencyMs });

    // The naive script: list, then HEAD + ReEncrypt + COPY per object, one at a time.
    const tn = performance.now();
    let done = 0;
    let token: string | undefined;
    do {
      const page = await s3.send(new ListObjectsV2Command({ Bucket: 'bench-naive-script', ...(token ? { ContinuationToken: token } : {}) }));
      for (const o of page.Contents ?? []) {
        const head = await s3.send(new HeadObjectCommand({ Bucket: 'bench-naive-script', Key: o.Key! }));
        const meta = head.Metadata ?? {};
        const context = JSON.parse(meta['x-amz-matdesc'] ?? '{}') as Record<string, string>;
        const re = await kms.send(new ReEncryptCommand({ CiphertextBlob: Buffer.from(meta['x-amz-key-v2'] ?? '', 'base64'), SourceKeyId: oldKey, DestinationKeyId: newKey, SourceEncryptionContext: context, DestinationEncryptionContext: context }));
        await s3.send(new CopyObjectCommand({
          Bucket: 'bench-naive-script',
          Key: o.Key!,
          CopySource: `bench-naive-script/${encodeURIComponent(o.Key!)}`,
          CopySourceIfMatch: head.ETag,
          MetadataDirective: 'REPLACE',
          Metadata: { ...meta, 'x-amz-key-v2': Buffer.from(re.CiphertextBlob!).toString('base64') },
          ...(head.ContentType ? { ContentType: head.ContentType } : {}),
        }));
        done++;
      }
      token = page.IsTruncated ? page.NextContinuationToken : undefined;
    } while (token);
    const naiveS = (performance.now() - tn) / 1000;
    const naiveRate = done / naiveS;

    const shape = fleetShape(c, flag('items-per-kms', 4), flag('batches-per-worker', 2));
    const fleet = await startFleet({ awsUrl: aws.url, redisUrl, ...shape, budget: '1000000' });
    const run = await timeFleetMigration(fleet, { sources: [{ name: 'env', kind: 's3-envelope', bucket: 'bench-naive-fleet' }], from: [oldKey], to: newKey, options: { concurrency: shape.itemsPerBatch } }, n);
    const { seconds: fleetS, settledSeconds: readyS, state, outcomes, kmsInFlight } = run;
    const fleetRate = n / fleetS;
    const ratio = fleetRate / naiveRate;
    const ok = ratio >= TARGET && outcomes['reencrypted'] === n;
    const report = [
      `fleet-vs-naive — ${machine()}`,
      `aws-local latency ${latencyMs} ms on every call, no quota; fleet: ${shape.text}`,
      '',
      table(['variant', 'items', 'seconds', 'items/s', 'notes'], [
        ['naive script (HEAD, ReEncrypt, COPY; sequential)', done, naiveS.toFixed(1), naiveRate.toFixed(1), `${((naiveS * 1000) / done).toFixed(1)} ms per item`],
        ['fleet, 2 workers', n, fleetS.toFixed(1), fleetRate.toFixed(0), `${kmsInFlight.toFixed(1)} KMS calls in flight on average; all re-encrypted at ${fleetS.toFixed(1)} s, ${state} (verify pass done) at ${readyS.toFixed(1)} s; reencrypted ${outcomes['reencrypted'] ?? 0}, failed ${outcomes['failed'] ?? 0}`],
      ]),
      '',
    ].join('\n');
    return { report, line: `bench: fleet-vs-naive ratio=${ratio.toFixed(1)} target=${TARGET} ${ok ? 'ok' : 'miss'}`, ok };
  } finally {
    await aws.close();
  }
}

if (isMain(import.meta.url)) {
  const r = await fleetVsNaive();
  console.log(r.report);
  console.log(r.line);
}
