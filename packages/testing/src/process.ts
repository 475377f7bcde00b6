/**
 * Runs a command as a child process the way a user's shell would, with stdout and stderr piped
 * (so not a TTY), and collects both.
 */
import { spawn } from 'node:child_process';

/** What a finished child process printed, and its exit code (null when killed by a signal). */
export interface Run {
  readonly code: number | null;
  readonly stdout: string;
  readonly stderr: string;
}

/**
 * Runs `node <args…>` (this Node) and resolves when it exits; rejects, with its output so far,
 * if it runs longer than `timeoutMs` (it is killed).
 */
export function runNode(args: readonly string[], o: { env?: NodeJS.ProcessEnv; cwd?: string; timeoutMs?: number; what?: string } = {}): Promise<Run> {
  const timeoutMs = o.timeoutMs ?? 60_000;
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [...args], { ...(o.cwd ? { cwd: o.cwd } : {}), env: o.env ?? process.env, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`${o.what ?? args.join(' ')} did not exit within ${timeoutMs} ms; output so far: ${stdout}${stderr}`));
    }, timeoutMs);
    child.once('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
    child.once('exit', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
  });
}
