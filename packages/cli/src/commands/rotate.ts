/**
 * `rekey rotate <alias>`: the AWS manual key rotation end to end (new key cloned from the old
 * one, alias moved, bound sources migrated, gates watched, old key disabled), resumable. With
 * `--local` the engine, a coordinator and workers run in this process; otherwise the
 * coordinator's workers do the work and this process drives it through the API (the rotation's
 * audit log is then written to Redis directly, so it needs REKEY_REDIS_URL too).
 */
import type { Command } from 'commander';
import type { RotateFlags } from './rotate-run.js';

/** Adds `rekey rotate` to the program; `local()` tells whether `--local` was given. */
export function registerRotate(program: Command, local: () => boolean): void {
  program
    .command('rotate <alias>')
    .description('rotate a key by hand: clone the key behind the alias, move the alias, migrate the bound sources, disable the old key (resumable)')
    .option('-f, --file <path>', 'rekey.yaml with sources and bindings (alias -> sources)', 'rekey.yaml')
    .option('--dry-run', 'print what would happen; call nothing that writes')
    .option('--no-finalize', 'stop once every gate is ready, leaving the old key enabled')
    .option('--workers <n>', 'with --local: batches processed in parallel in this process', '2')
    .option('--batch-size <n>', 'items per batch of each migration')
    .action(async (alias: string, f: RotateFlags) => (await import('./rotate-run.js')).runRotate(alias, f, local()));
}
