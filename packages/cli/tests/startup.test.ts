import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { freePort, runNode } from '@rekey/testing';

const CLI_DIR = fileURLToPath(new URL('..', import.meta.url));
const RECORDER = fileURLToPath(new URL('./fixtures/record-imports.mjs', import.meta.url));

/** The module URLs `rekey <args>` resolves, run from this package's sources as run-cli.ts does. */
async function modulesOf(args: readonly string[], extra: Record<string, string> = {}): Promise<{ code: number | null; urls: string[] }> {
  const dir = await mkdtemp(join(tmpdir(), 'rekey-startup-'));
  const file = join(dir, 'imports.txt');
  try {
    const env: NodeJS.ProcessEnv = { ...process.env, ...extra, RECORD_IMPORTS_TO: file };
    delete env['REKEY_CONFIG'];
    const run = await runNode(['--import', 'tsx', '--conditions=source', '--import', RECORDER, 'src/bin.ts', ...args], { cwd: CLI_DIR, env, timeoutMs: 60_000, what: `rekey ${args.join(' ')}` });
    return { code: run.code, urls: (await readFile(file, 'utf8')).split('\n').filter(Boolean) };
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

/** Libraries only a command that talks to AWS, Redis or Postgres (or runs the fleet) needs. */
const HEAVY = /\/node_modules\/(@aws-sdk|@smithy|bullmq|ioredis|pg|fastify|prom-client)\/|\/packages\/(fleet\/src\/index|kms|sources|aws-local|envelope)\//;

describe('the CLI starts without the fleet, the AWS SDK and the database clients', { timeout: 120_000 }, () => {
  it('help, a usage error and an API command load none of them; a command that runs an engine does', async () => {
    // Nothing listens on the port: the API command fails after loading all it needs to call.
    const closed = { REKEY_API_URL: `http://127.0.0.1:${await freePort()}`, REKEY_API_TOKEN: 't', REKEY_REDIS_URL: `redis://127.0.0.1:${await freePort()}` };
    for (const args of [['--help'], ['list', '--bogus'], ['status', 'm-1']]) {
      const { code, urls } = await modulesOf(args, closed);
      expect({ args, code }).toEqual({ args, code: args[0] === '--help' ? 0 : args[0] === 'list' ? 2 : 1 });
      expect(urls.length).toBeGreaterThan(10); // the recorder saw the CLI's own modules
      expect({ args, heavy: urls.filter((u) => HEAVY.test(u)) }).toEqual({ args, heavy: [] });
    }
    // The guard can fail: `rekey --local list` loads the engine (and then fails on the closed Redis port).
    const local = await modulesOf(['--local', 'list'], closed);
    expect(local.code).toBe(1);
    expect(local.urls.some((u) => HEAVY.test(u))).toBe(true);
  });
});
