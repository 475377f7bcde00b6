/**
 * Memory of aws-local holding 1,000,000 KMS keys and 1,000,000 small S3 objects in one process,
 * and the cost of a `--data-dir` save at that size. Calls the services' `handle` methods directly
 * (no HTTP), so it measures aws-local's state, not sockets or the SDK.
 *
 * Run from the repo root (about two minutes and 2 GB of memory):
 *   node --expose-gc --import tsx test/bench/lib/aws-local-memory.ts
 * `MEMORY_KEYS` and `MEMORY_OBJECTS` (default 1000000 each) change the counts.
 */
import { mkdtemp, readdir, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { RequestContext } from '../../../packages/aws-local/src/context.js';
import { startAwsLocal } from '../../../packages/aws-local/src/index.js';

function count(name: string): number {
  const raw = process.env[name];
  if (raw === undefined || raw === '') return 1_000_000;
  const n = Number(raw);
  if (!Number.isInteger(n) || n < 0) throw new Error(`${name} must be a non-negative integer, got "${raw}"`);
  return n;
}

const KEYS = count('MEMORY_KEYS');
const OBJECTS = count('MEMORY_OBJECTS');
const MiB = 2 ** 20;

function settle(): { rss: number; heap: number } {
  const gc = (globalThis as { gc?: () => void }).gc;
  if (!gc) throw new Error('run with node --expose-gc so that the heap is measured after a full collection');
  gc();
  gc();
  const { rss, heapUsed } = process.memoryUsage();
  return { rss, heap: heapUsed };
}

function report(label: string, m: { rss: number; heap: number }, base?: { rss: number; heap: number }): void {
  const delta = base ? ` (+${((m.rss - base.rss) / MiB).toFixed(0)} MiB RSS, +${((m.heap - base.heap) / MiB).toFixed(0)} MiB heap)` : '';
  console.log(`${label}: RSS ${(m.rss / MiB).toFixed(0)} MiB, heap ${(m.heap / MiB).toFixed(0)} MiB${delta}`);
}

async function main(): Promise<void> {
  const dataDir = await mkdtemp(join(tmpdir(), 'aws-local-memory-'));
  // The periodic save is kept out of the way; the save below is timed on its own.
  const aws = await startAwsLocal({ port: 0, dataDir, saveIntervalMs: 24 * 3600 * 1000 });
  try {
    const ctx: RequestContext = {
      requestId: 'memory',
      accessKeyId: 'AKIAREKEYMEMORY00001',
      accountId: '000000000000',
      region: 'us-east-1',
      sourceIp: '127.0.0.1',
      userAgent: 'aws-local-memory',
      time: new Date(),
    };
    const empty = settle();
    report('empty', empty);

    let started = performance.now();
    for (let i = 0; i < KEYS; i++) await aws.kms.handle('CreateKey', {}, ctx);
    const keySeconds = (performance.now() - started) / 1000;
    const withKeys = settle();
    report(`${KEYS} KMS keys (${(KEYS / keySeconds).toFixed(0)} CreateKey/s)`, withKeys, empty);
    // The usage log holds one entry per CreateKey; it is part of aws-local's state too.
    console.log(`  KMS usage log entries: ${aws.usage.all().length}`);

    const put = (path: string, body: Buffer) =>
      aws.s3.handle({ method: 'PUT', path, query: new URLSearchParams(), rawQuery: '', headers: {}, body, ctx });
    const bucket = await put('/memory', Buffer.alloc(0));
    if (bucket.status !== 200) throw new Error(`CreateBucket answered ${bucket.status}`);
    started = performance.now();
    for (let i = 0; i < OBJECTS; i++) {
      // A permutation of 0..N-1, so keys arrive out of order as they do from many writers.
      const n = (i * 7919) % OBJECTS;
      const res = await put(`/memory/data/${String(n).padStart(7, '0')}.json`, Buffer.from(`{"n":${n}}`));
      if (res.status !== 200) throw new Error(`PutObject ${n} answered ${res.status}`);
    }
    const objectSeconds = (performance.now() - started) / 1000;
    const withObjects = settle();
    report(`+ ${OBJECTS} S3 objects (${(OBJECTS / objectSeconds).toFixed(0)} PutObject/s)`, withObjects, withKeys);

    started = performance.now();
    await aws.save();
    const saveSeconds = (performance.now() - started) / 1000;
    let stateBytes = 0;
    for (const name of await readdir(dataDir)) stateBytes += (await stat(join(dataDir, name))).size;
    const afterSave = process.memoryUsage().rss;
    console.log(
      `--data-dir save: ${saveSeconds.toFixed(1)} s (event loop blocked), state file ${(stateBytes / MiB).toFixed(0)} MiB, ` +
        `RSS right after ${(afterSave / MiB).toFixed(0)} MiB`,
    );

    // The usage log's share: what clearing it gives back.
    const entries = aws.usage.all().length;
    const beforeClear = settle();
    aws.usage.clear();
    const cleared = settle();
    console.log(
      `KMS usage log: ${entries} entries held ${((beforeClear.heap - cleared.heap) / MiB).toFixed(0)} MiB of heap ` +
        `(${((beforeClear.heap - cleared.heap) / Math.max(1, entries)).toFixed(0)} bytes per entry)`,
    );
    report('without the usage log', cleared, empty);
  } finally {
    await aws.close();
    await rm(dataDir, { recursive: true, force: true });
  }
}

main().catch((err: unknown) => {
  console.error(`aws-local-memory failed: ${err instanceof Error ? err.message : String(err)}`);
  process.exitCode = 1;
});
