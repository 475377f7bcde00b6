/**
 * `npm run bench`: the four fleet benchmarks, one after another, each in a process of its own
 * (each starts its own aws-local and fleet, and none inherits another's heap, sockets or timers),
 * then their final lines together. Flags (`--items=…`, `--rows=…`, `--seconds=…`, `--quota=…`)
 * pass through to every benchmark.
 */
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';

const BENCHMARKS = ['fleet-vs-raw', 'fleet-vs-naive', 'budget-adherence', 'scale'] as const;

/** Runs one benchmark file in a child process (with tsx's loader, as this process has it), echoing its output. */
function runOne(name: string): Promise<string> {
  const file = fileURLToPath(new URL(`./${name}.ts`, import.meta.url));
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [...process.execArgv, file, ...process.argv.slice(2)], { stdio: ['ignore', 'pipe', 'inherit'] });
    let last = '';
    let tail = '';
    child.stdout.on('data', (chunk: Buffer) => {
      process.stdout.write(chunk);
      const lines = (tail + chunk.toString('utf8')).split('\n');
      tail = lines.pop() ?? '';
      for (const l of lines) if (l.startsWith('bench: ')) last = l;
    });
    child.on('close', (code, signal) => {
      if (tail.startsWith('bench: ')) last = tail;
      resolve(last !== '' ? last : `bench: ${name} error exited with ${signal ?? String(code)} before its final line miss`);
    });
    child.on('error', (err) => resolve(`bench: ${name} error ${err.message} miss`));
  });
}

const started = performance.now();
const lines: string[] = [];
for (const name of BENCHMARKS) {
  const t = performance.now();
  const line = await runOne(name);
  console.log(`(${name} took ${((performance.now() - t) / 1000).toFixed(0)} s)\n`);
  lines.push(line);
}
console.log(`all benchmarks took ${((performance.now() - started) / 1000).toFixed(0)} s`);
for (const l of lines) console.log(l);
