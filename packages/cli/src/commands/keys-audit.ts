/**
 * `rekey keys audit`: rotation hygiene of every customer-managed key in the account and Region.
 * Exit code 1 when anything is flagged (so it can gate CI or run on a schedule), 2 for bad usage.
 * `--fix` turns automatic rotation on with the policy period where KMS can, and writes each
 * change to the `keys-audit` audit log in Redis (`rekey audit keys-audit` prints it).
 */
import { Option, type Command } from 'commander';
import type { KeysAuditFlags } from './keys-audit-run.js';

/** Adds `rekey keys audit` to the program. */
export function registerKeysAudit(program: Command): void {
  const keys = program.commands.find((c) => c.name() === 'keys') ?? program.command('keys').description('KMS key hygiene');
  keys
    .command('audit')
    .description('report rotation and use of every customer-managed key; exit 1 when anything is flagged')
    .option('--max-age-days <n>', 'the policy: at most this many days between rotations', '365')
    .option('--recent-days <n>', 'a disabled or pending-deletion key used within this many days is flagged', '30')
    .addOption(new Option('--format <f>', 'output format').choices(['table', 'json', 'csv']).default('table'))
    .option('--fix', 'turn automatic rotation on with the policy period where it is off or too long (audited)')
    .action(async (f: KeysAuditFlags) => (await import('./keys-audit-run.js')).runKeysAudit(f));
}
