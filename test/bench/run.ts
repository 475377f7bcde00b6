/**
 * `npm run bench`: the four fleet benchmarks in one run, one after another (each starts its own
 * aws-local and fleet), then their final lines together. Flags (`--items=…`, `--rows=…`,
 * `--seconds=…`, `--quota=…`) pass through to every benchmark.
 */
import { budgetAdherence } from './budget-adherence.js';
import { fleetVsNaive } from './fleet-vs-naive.js';
import { fleetVsRaw } from './fleet-vs-raw.js';
import { scale } from './scale.js';
import type { BenchResult } from './lib/fleet.js';

const started = performance.now();
const lines: string[] = [];
for (const [name, bench] of [['fleet-vs-raw', fleetVsRaw], ['fleet-vs-naive', fleetVsNaive], ['budget-adherence', budgetAdherence], ['scale', scale]] as const) {
  const t = performance.now();
  let r: BenchResult;
  try {
    r = await bench();
  } catch (err) {
    r = { report: `${name} failed: ${(err as Error).stack ?? String(err)}`, line: `bench: ${name} error ${(err as Error).message.split('\n')[0]} miss`, ok: false };
  }
  console.log(r.report);
  console.log(`(${name} took ${((performance.now() - t) / 1000).toFixed(0)} s)`);
  console.log(r.line);
  console.log('');
  lines.push(r.line);
}
console.log(`all benchmarks took ${((performance.now() - started) / 1000).toFixed(0)} s`);
for (const l of lines) console.log(l);
