import { freePort, runNode, type Run } from '@rekey/testing';
import { fileURLToPath } from 'node:url';

const CLI_DIR = fileURLToPath(new URL('..', import.meta.url));

export type { Run };

/**
 * Runs `rekey …` as a user does, as a child process, from this package's sources (tsx, and the
 * workspace packages' `source` condition, so no build is needed). stdout is a pipe, not a TTY.
 * `env` is laid over the test's environment; a value of undefined removes the variable.
 */
export function rekey(args: readonly string[], env: Record<string, string | undefined> = {}, timeoutMs = 60_000): Promise<Run> {
  const merged: NodeJS.ProcessEnv = { ...process.env, REKEY_API_URL: undefined, REKEY_API_TOKEN: undefined, REKEY_CONFIG: undefined, LOG_LEVEL: undefined, ...env };
  for (const k of Object.keys(merged)) if (merged[k] === undefined) delete merged[k];
  return runNode(['--import', 'tsx', '--conditions=source', 'src/bin.ts', ...args], { cwd: CLI_DIR, env: merged, timeoutMs, what: `rekey ${args.join(' ')}` });
}

/** Runs several `rekey` commands, at most `n` at a time (the machine may have few cores). */
export async function rekeyAll(runs: readonly (readonly string[])[], env: Record<string, string | undefined> = {}, n = 2): Promise<Run[]> {
  const out: Run[] = new Array<Run>(runs.length);
  let next = 0;
  await Promise.all(
    Array.from({ length: Math.min(n, runs.length) }, async () => {
      while (next < runs.length) {
        const i = next++;
        out[i] = await rekey(runs[i]!, env);
      }
    }),
  );
  return out;
}

/** A TCP port on 127.0.0.1 that nothing listens on (it was free a moment ago). */
export const closedPort = freePort;

/** The lines of stderr, without a trailing empty one. */
export function lines(s: string): string[] {
  return s.trimEnd() === '' ? [] : s.trimEnd().split('\n');
}
