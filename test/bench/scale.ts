/**
 * scale: a migration of N Postgres rows (default 1,000,000) through the coordinator and 2 workers,
 * over a redis-server of its own (started here on a free port, so other tests don't pollute the
 * counts). Reports the coordinator's peak RSS (VmHWM), Redis `used_memory` growth (peak during
 * the run minus the value before it), and Redis commands per item (INFO commandstats, all
 * commands but the benchmark's own INFO). Targets: RSS <= 300 MB, growth <= 100 MB, <= 0.2
 * commands per item excluding the limiter's.
 *
 * The migration is a dry run over rows with a key-id column: each item is read from Postgres and
 * decided without a KMS call, so the queue, store, enumerator and coordinator carry the full
 * item count while KMS (and so the limiter) is out of the loop: the limiter's commands are zero
 * here (its own cost is measured in @rekey/kms's tests: < 0.3 Redis calls per token).
 *
 *   npx tsx test/bench/scale.ts [--rows=1000000] [--batch-size=N]   (default: the migration default, 1000)
 */
import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import pg from 'pg';
import { Redis } from 'ioredis';
import { createKey, flag, freePort, isMain, machine, startAwsChild, startFleet, table, type BenchResult } from './lib/fleet.js';

function commandCalls(info: string): Map<string, number> {
  const out = new Map<string, number>();
  for (const line of info.split('\n')) {
    const m = /^cmdstat_([^:]+):calls=(\d+)/.exec(line.trim());
    if (m) out.set(m[1]!, Number(m[2]));
  }
  return out;
}

function usedMemory(info: string): number {
  return Number(/used_memory:(\d+)/.exec(info)?.[1] ?? 0);
}

function peakRssMb(pid: number): number {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  return Number(/VmHWM:\s+(\d+) kB/.exec(status)?.[1] ?? 0) / 1024;
}

export async function scale(): Promise<BenchResult> {
  const n = flag('rows', 1_000_000);
  // 0: leave batchSize out of the spec, so the migration's default applies (pages of 100, 200, … 1000).
  const batchSize = flag('batch-size', 0);
  const dbUrl = process.env['DATABASE_URL'] ?? 'postgres://postgres@127.0.0.1:5432/test';
  const schema = `bench_scale_${process.pid}`;
  const port = await freePort();
  const server = spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--maxmemory', '0'], { stdio: 'ignore' });
  const redisUrl = `redis://127.0.0.1:${port}`;
  const redis = new Redis(redisUrl, { retryStrategy: (t) => (t > 50 ? null : 100) });
  // The server is still starting: refused connects are retried; ping() below reports a real failure.
  redis.on('error', () => undefined);
  const pool = new pg.Pool({ connectionString: dbUrl, max: 2 });
  const aws = await startAwsChild();
  try {
    await redis.ping();
    const kms = aws.kms();
    const oldKey = await createKey(kms, 'bench old');
    const newKey = await createKey(kms, 'bench new');
    const t0 = performance.now();
    await pool.query(`CREATE SCHEMA ${schema}`);
    await pool.query(`CREATE TABLE ${schema}.secrets (id bigint PRIMARY KEY, secret bytea NOT NULL, kid text NOT NULL)`);
    await pool.query(`INSERT INTO ${schema}.secrets SELECT g, '\\x0102030405'::bytea, $1 FROM generate_series(1, $2) g`, [oldKey, n]);
    await pool.query(`VACUUM ANALYZE ${schema}.secrets`);
    const seedS = (performance.now() - t0) / 1000;

    const fleet = await startFleet({ awsUrl: aws.url, redisUrl, workers: 2, workerConcurrency: 2, budget: '1000000', databaseUrl: dbUrl });
    let rssMb = 0;
    let baseMem = 0;
    let peakMem = 0;
    let seconds = 0;
    let state = '';
    let processed = 0;
    let calls = new Map<string, number>();
    try {
      await sleep(1000);
      baseMem = usedMemory(await redis.info('memory'));
      peakMem = baseMem;
      const before = commandCalls(await redis.info('commandstats'));
      const tm = performance.now();
      const m = await fleet.api.create({
        sources: [{ name: 'rows', kind: 'postgres', schema, table: 'secrets', primaryKey: ['id'], column: 'secret', keyIdColumn: 'kid' }],
        from: [oldKey],
        to: newKey,
        options: { ...(batchSize > 0 ? { batchSize } : {}), concurrency: 16, dryRun: true },
      });
      // The window is the re-encrypt pass: it ends when the migration leaves `running` (the
      // coordinator moves it to `verifying` as soon as the last batch is recorded), read every
      // 100 ms so little of the verify pass falls inside it.
      for (let polls = 0; ; polls++) {
        if (polls % 2 === 0) peakMem = Math.max(peakMem, usedMemory(await redis.info('memory')));
        const mig = await fleet.api.get(m.id);
        if (!['created', 'enumerating', 'running'].includes(mig.state)) {
          if (['blocked', 'paused', 'failed', 'cancelled'].includes(mig.state)) throw new Error(`migration ${m.id} is ${mig.state}: ${mig.reason ?? ''}`);
          break;
        }
        await sleep(100);
      }
      seconds = (performance.now() - tm) / 1000;
      const after = commandCalls(await redis.info('commandstats'));
      peakMem = Math.max(peakMem, usedMemory(await redis.info('memory')));
      processed = (await fleet.api.status(m.id)).totals.processed;
      if (processed !== n) throw new Error(`the re-encrypt pass ended with ${processed} of ${n} rows processed`);
      for (const [k, v] of after) calls.set(k, v - (before.get(k) ?? 0));
      calls.delete('info');
      rssMb = peakRssMb(fleet.coordinator.pid!);
      state = (await fleet.api.get(m.id)).state;
      await fleet.api.action(m.id, 'cancel', 'benchmark over').catch(() => undefined);
    } finally {
      await fleet.stop();
    }
    calls = new Map([...calls].filter(([, v]) => v > 0).sort((a, b) => b[1] - a[1]));
    const total = [...calls.values()].reduce((a, b) => a + b, 0);
    const perItem = total / n;
    const growthMb = (peakMem - baseMem) / 2 ** 20;
    const ok = rssMb <= 300 && growthMb <= 100 && perItem <= 0.2;
    const report = [
      `scale — ${machine()}`,
      `${n} Postgres rows (seeded in ${seedS.toFixed(1)} s), dry run with a key-id column, batchSize ${batchSize > 0 ? batchSize : 'default (1000; first pages 100, 200, 400, 800)'}; coordinator + 2 workers (2 batches x 16 items); own redis-server on port ${port}`,
      `re-encrypt pass over all rows took ${seconds.toFixed(1)} s (${(n / seconds).toFixed(0)} items/s); state when measured: ${state}`,
      '',
      table(['measure', 'value', 'target'], [
        ['coordinator peak RSS (VmHWM)', `${rssMb.toFixed(0)} MB`, '<= 300 MB'],
        ['Redis used_memory growth (peak - before)', `${growthMb.toFixed(1)} MB`, '<= 100 MB'],
        ['Redis commands per item (all but INFO)', perItem.toFixed(3), '<= 0.2'],
      ]),
      '',
      'Redis commands during the run (top 12):',
      '',
      table(['command', 'calls', 'per item'], [...calls].slice(0, 12).map(([k, v]) => [k, v, (v / n).toFixed(4)])),
      '',
    ].join('\n');
    const line = `bench: scale rss_mb=${rssMb.toFixed(0)} redis_mb=${growthMb.toFixed(1)} cmds_per_item=${perItem.toFixed(3)} ${ok ? 'ok' : 'miss'}`;
    return { report, line, ok };
  } finally {
    await aws.close();
    await pool.query(`DROP SCHEMA IF EXISTS ${schema} CASCADE`).catch(() => undefined);
    await pool.end();
    redis.disconnect();
    server.kill('SIGTERM');
    await Promise.race([new Promise((r) => server.once('exit', r)), sleep(5000)]);
  }
}

if (isMain(import.meta.url)) {
  const r = await scale();
  console.log(r.report);
  console.log(r.line);
}
