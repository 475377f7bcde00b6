/**
 * The aws-local ceiling: raw KMS ReEncrypt throughput of aws-local through the real
 * `@aws-sdk/client-kms` client at 1, 16 and 64 concurrent callers. Later fleet benchmarks are
 * compared to these numbers, so nothing but aws-local and the SDK is in the loop.
 *
 * Run from the repo root: `npx tsx test/bench/aws-local.ts` (or `npm run bench:aws-local -w @rekey/test`).
 * Environment: `BENCH_ROUND_MS` (default 2000), `BENCH_ROUNDS` (default 5), `BENCH_CIPHERTEXTS` (default 512),
 * `BENCH_SERVER` (`in-process`, the default: aws-local shares the client's event loop, as in the
 * in-process test fixtures; `process`: aws-local runs as a child process, as `npx aws-local` would).
 */
import { Agent } from 'node:http';
import { readFileSync } from 'node:fs';
import { cpus, loadavg } from 'node:os';
import { fork } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import {
  CreateKeyCommand,
  DecryptCommand,
  GenerateDataKeyWithoutPlaintextCommand,
  KMSClient,
  ReEncryptCommand,
} from '@aws-sdk/client-kms';
// The TypeScript source, not `@rekey/aws-local`: tsx does not apply the `source` export
// condition, and the package's dist/ may be older than the source being measured.
import { startAwsLocal } from '../../packages/aws-local/src/index.js';

// The SDK's once-per-process notice that its 2027 releases need Node 22 (docs/decisions.md #27)
// would land in the middle of the table, as it does in the other benchmarks' processes.
process.env['AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED'] ??= 'true';

const CONCURRENCY = [1, 16, 64] as const;

function envInt(name: string, fallback: number): number {
  const raw = process.env[name];
  if (raw === undefined || raw === '') return fallback;
  const n = Number(raw);
  if (!Number.isInteger(n) || n <= 0) throw new Error(`${name} must be a positive integer, got "${raw}"`);
  return n;
}

const ROUND_MS = envInt('BENCH_ROUND_MS', 2000);
const ROUNDS = envInt('BENCH_ROUNDS', 5);
const CIPHERTEXTS = envInt('BENCH_CIPHERTEXTS', 512);
const WARMUP_MS = 1000;
const SERVER_MODES = ['in-process', 'process'] as const;
type ServerMode = (typeof SERVER_MODES)[number];

function serverMode(): ServerMode {
  const raw = process.env['BENCH_SERVER'] ?? 'in-process';
  const mode = SERVER_MODES.find((m) => m === raw);
  if (!mode) throw new Error(`BENCH_SERVER must be one of ${SERVER_MODES.join(', ')}, got "${raw}"`);
  return mode;
}

interface Server {
  url: string;
  close(): Promise<void>;
}

async function startServer(mode: ServerMode): Promise<Server> {
  switch (mode) {
    case 'in-process': {
      const aws = await startAwsLocal({ port: 0 });
      return { url: aws.url, close: () => aws.close() };
    }
    case 'process': {
      // Its own event loop (and core) for the server; a worker thread would not get tsx's loader.
      const child = fork(fileURLToPath(new URL('./lib/aws-local-child.ts', import.meta.url)), [], {
        execArgv: ['--import', 'tsx'],
        stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
      });
      const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
      const url = await new Promise<string>((resolve, reject) => {
        child.once('error', reject);
        child.once('exit', (code) => reject(new Error(`aws-local child exited with ${String(code)} before listening`)));
        child.once('message', (msg: { url?: unknown }) => {
          if (typeof msg.url === 'string') resolve(msg.url);
          else reject(new Error('aws-local child answered no URL'));
        });
      });
      return {
        url,
        close: async () => {
          child.send('close');
          await exited;
        },
      };
    }
  }
}

/** Value at quantile q of ascending `sorted` (nearest rank). */
function quantile(sorted: readonly number[], q: number): number {
  if (sorted.length === 0) return Number.NaN;
  const i = Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1));
  return sorted[i] ?? Number.NaN;
}

function median(values: readonly number[]): number {
  return quantile([...values].sort((a, b) => a - b), 0.5);
}

function cpuModel(): string {
  try {
    const line = readFileSync('/proc/cpuinfo', 'utf8')
      .split('\n')
      .find((l) => l.startsWith('model name'));
    if (line) return line.slice(line.indexOf(':') + 1).trim();
  } catch {
    // not Linux: fall back to what Node reports
  }
  return cpus()[0]?.model ?? 'unknown';
}

interface Round {
  ops: number;
  errors: number;
  elapsedMs: number;
  latenciesMs: number[];
}

/**
 * Runs `callers` loops of ReEncrypt for `durationMs`. Each caller stops issuing once the time is
 * up, and the round ends when the last in-flight call returns, so every call is counted.
 */
async function runRound(
  kms: KMSClient,
  blobs: readonly Uint8Array[],
  sourceArn: string,
  destinationArn: string,
  callers: number,
  durationMs: number,
): Promise<Round> {
  const latenciesMs: number[] = [];
  let errors = 0;
  let next = 0;
  const started = performance.now();
  const deadline = started + durationMs;
  const caller = async () => {
    while (performance.now() < deadline) {
      const blob = blobs[next++ % blobs.length];
      const t0 = performance.now();
      try {
        const out = await kms.send(
          new ReEncryptCommand({ CiphertextBlob: blob, SourceKeyId: sourceArn, DestinationKeyId: destinationArn }),
        );
        if (out.KeyId !== destinationArn || out.SourceKeyId !== sourceArn || !out.CiphertextBlob?.length) {
          throw new Error('ReEncrypt answered an unexpected key');
        }
        latenciesMs.push(performance.now() - t0);
      } catch (err) {
        errors++;
        if (errors === 1) console.error(`bench: ReEncrypt failed: ${err instanceof Error ? `${err.name}: ${err.message}` : String(err)}`);
      }
    }
  };
  await Promise.all(Array.from({ length: callers }, caller));
  return { ops: latenciesMs.length, errors, elapsedMs: performance.now() - started, latenciesMs };
}

async function main(): Promise<void> {
  const mode = serverMode();
  const aws = await startServer(mode);
  const agent = new Agent({ keepAlive: true, maxSockets: 64 });
  const kms = new KMSClient({
    endpoint: aws.url,
    region: 'us-east-1',
    credentials: { accessKeyId: 'AKIAREKEYBENCH000001', secretAccessKey: 'bench-secret-not-a-real-key' },
    maxAttempts: 1,
    // The SDK builds its NodeHttpHandler from these options.
    requestHandler: { httpAgent: agent },
  });
  try {
    // A busy machine lowers every number; the load average says how busy it was.
    const load = loadavg().map((l) => l.toFixed(2)).join(' ');
    console.log(`aws-local ReEncrypt ceiling — node ${process.version}, ${cpus().length} CPUs (${cpuModel()}), load average ${load}`);
    console.log(
      `aws-local ${mode === 'in-process' ? 'shares the client\'s event loop' : 'runs in a child process'}; ` +
        `${ROUNDS} rounds of ${ROUND_MS} ms per concurrency level`,
    );

    const source = await kms.send(new CreateKeyCommand({ Description: 'bench source' }));
    const destination = await kms.send(new CreateKeyCommand({ Description: 'bench destination' }));
    const sourceArn = source.KeyMetadata?.Arn;
    const destinationArn = destination.KeyMetadata?.Arn;
    if (!sourceArn || !destinationArn) throw new Error('CreateKey answered no key ARN');

    const blobs: Uint8Array[] = [];
    for (let i = 0; i < CIPHERTEXTS; i += 16) {
      const batch = await Promise.all(
        Array.from({ length: Math.min(16, CIPHERTEXTS - i) }, () =>
          kms.send(new GenerateDataKeyWithoutPlaintextCommand({ KeyId: sourceArn, KeySpec: 'AES_256' })),
        ),
      );
      for (const out of batch) {
        if (!out.CiphertextBlob) throw new Error('GenerateDataKeyWithoutPlaintext answered no CiphertextBlob');
        blobs.push(out.CiphertextBlob);
      }
    }

    // A re-encrypted blob must decrypt under the destination key, or the numbers mean nothing.
    const check = await kms.send(new ReEncryptCommand({ CiphertextBlob: blobs[0], DestinationKeyId: destinationArn }));
    const decrypted = await kms.send(new DecryptCommand({ CiphertextBlob: check.CiphertextBlob, KeyId: destinationArn }));
    if (decrypted.KeyId !== destinationArn || decrypted.Plaintext?.length !== 32) {
      throw new Error('a re-encrypted data key does not decrypt under the destination key');
    }

    await runRound(kms, blobs, sourceArn, destinationArn, 16, WARMUP_MS);

    const results: { callers: number; opsPerSec: number; p50: number; p99: number; errors: number }[] = [];
    for (const callers of CONCURRENCY) {
      const rates: number[] = [];
      const latencies: number[] = [];
      let errors = 0;
      for (let r = 0; r < ROUNDS; r++) {
        const round = await runRound(kms, blobs, sourceArn, destinationArn, callers, ROUND_MS);
        rates.push((round.ops / round.elapsedMs) * 1000);
        latencies.push(...round.latenciesMs);
        errors += round.errors;
      }
      latencies.sort((a, b) => a - b);
      results.push({ callers, opsPerSec: median(rates), p50: quantile(latencies, 0.5), p99: quantile(latencies, 0.99), errors });
    }

    console.log('');
    console.log('| callers | ReEncrypt ops/s (median of rounds) | p50 latency | p99 latency | errors |');
    console.log('|---:|---:|---:|---:|---:|');
    for (const r of results) {
      console.log(`| ${r.callers} | ${r.opsPerSec.toFixed(0)} | ${r.p50.toFixed(2)} ms | ${r.p99.toFixed(2)} ms | ${r.errors} |`);
    }
    console.log('');

    const failed = results.some((r) => r.errors > 0);
    const fields = results.map((r) => `reencrypt_c${r.callers}=${r.opsPerSec.toFixed(0)}`).join(' ');
    console.log(`bench: aws-local ${fields} ${failed ? 'failed' : 'ok'}`);
    if (failed) process.exitCode = 1;
  } finally {
    kms.destroy();
    agent.destroy();
    await aws.close();
  }
}

main().catch((err: unknown) => {
  console.error(`bench: aws-local failed: ${err instanceof Error ? err.message : String(err)}`);
  process.exitCode = 1;
});
