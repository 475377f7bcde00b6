/**
 * fleet-vs-raw: N envelope items (default 20,000), aws-local latency fixed at 5 ms on every call,
 * no quota. (a) a raw loop of ReEncrypt calls at concurrency C, no queue and no writes back (the
 * ceiling); (b) the fleet: a coordinator and 2 worker processes at the same total concurrency C,
 * doing the full job through BullMQ, Redis and S3 (HEAD, ReEncrypt, CopyObject). Reports b/a.
 *
 *   npx tsx test/bench/fleet-vs-raw.ts [--items=20000] [--concurrency=32] [--latency=5] [--items-per-kms=4]
 */
import { GenerateDataKeyWithoutPlaintextCommand, ReEncryptCommand } from '@aws-sdk/client-kms';
import { createKey, fleetShape, flag, isMain, machine, startAwsChild, startFleet, table, times, timeFleetMigration, seedEnvelope, type BenchResult } from './lib/fleet.js';

const TARGET = 0.85;

export async function fleetVsRaw(): Promise<BenchResult> {
  const n = flag('items', 20_000);
  const c = flag('concurrency', 32);
  const latencyMs = flag('latency', 5);
  const itemsPerKms = flag('items-per-kms', 4);
  const redisUrl = process.env['REDIS_URL'] ?? 'redis://127.0.0.1:6379';
  const aws = await startAwsChild();
  try {
    const kms = aws.kms(undefined, c);
    const oldKey = await createKey(kms, 'bench old');
    const newKey = await createKey(kms, 'bench new');
    const t0 = performance.now();
    await seedEnvelope(aws, 'bench-raw', oldKey, n);
    const seedS = (performance.now() - t0) / 1000;
    // The raw loop cycles over 512 wrapped keys with the same context as the objects' keys.
    const context = { app: 'bench' };
    const blobs: Uint8Array[] = [];
    await times(512, 32, async () => {
      blobs.push((await kms.send(new GenerateDataKeyWithoutPlaintextCommand({ KeyId: oldKey, KeySpec: 'AES_256', EncryptionContext: context }))).CiphertextBlob!);
    });
    await aws.admin('POST', 'latency', { op: '*', fixedMs: latencyMs });

    // Every request aws-local answered, from its own counters: the machine's work in each variant.
    const requests = async () => Object.values((await aws.admin('GET', 'counters')) as Record<string, { calls: number }>).reduce((n, x) => n + x.calls, 0);

    // (a) raw ReEncrypt loop at concurrency c.
    let errors = 0;
    const ra = await requests();
    const ta = performance.now();
    await times(n, c, async (i) => {
      try {
        await kms.send(new ReEncryptCommand({ CiphertextBlob: blobs[i % blobs.length], SourceKeyId: oldKey, DestinationKeyId: newKey, SourceEncryptionContext: context, DestinationEncryptionContext: context }));
      } catch {
        errors++;
      }
    });
    const rawS = (performance.now() - ta) / 1000;
    const rawRate = n / rawS;
    const rawRequests = (await requests()) - ra;

    // (b) the fleet at the same KMS concurrency c.
    const shape = fleetShape(c, itemsPerKms);
    const fleet = await startFleet({ awsUrl: aws.url, redisUrl, ...shape, budget: '1000000' });
    const run = await timeFleetMigration(fleet, { sources: [{ name: 'env', kind: 's3-envelope', bucket: 'bench-raw' }], from: [oldKey], to: newKey, options: { concurrency: shape.itemsPerBatch } }, n, requests);
    const { seconds: fleetS, settledSeconds: readyS, state, outcomes, counted: fleetRequests, kmsInFlight } = run;
    const fleetRate = n / fleetS;
    const ratio = fleetRate / rawRate;
    const ok = ratio >= TARGET && outcomes['reencrypted'] === n;
    const report = [
      `fleet-vs-raw — ${machine()}`,
      `N=${n}, C=${c}, aws-local latency ${latencyMs} ms on every call, no quota; seeding took ${seedS.toFixed(1)} s`,
      '',
      table(['variant', 'items', 'seconds', 'items/s', 'aws-local requests/s', 'notes'], [
        ['(a) raw ReEncrypt loop', n, rawS.toFixed(1), rawRate.toFixed(0), (rawRequests / rawS).toFixed(0), `${errors} errors`],
        ['(b) fleet, 2 workers', n, fleetS.toFixed(1), fleetRate.toFixed(0), (fleetRequests / fleetS).toFixed(0), `all re-encrypted at ${fleetS.toFixed(1)} s, ${state} (verify pass done) at ${readyS.toFixed(1)} s; reencrypted ${outcomes['reencrypted'] ?? 0}, failed ${outcomes['failed'] ?? 0}`],
      ]),
      '',
      `aws-local requests/s, fleet / raw: ${(fleetRequests / fleetS / (rawRequests / rawS)).toFixed(2)} (the fleet makes ${(fleetRequests / n).toFixed(2)} requests per item: HEAD, ReEncrypt, CopyObject; the raw loop 1)`,
      `KMS calls in flight, mean over the pass: raw loop ${c} (by construction), fleet ${kmsInFlight.toFixed(1)} (${shape.text})`,
      '',
    ].join('\n');
    const line = `bench: fleet-vs-raw ratio=${ratio.toFixed(3)} target=${TARGET} ${ok ? 'ok' : 'miss'}`;
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
