/**
 * `rekey keys audit`: rotation hygiene of every customer-managed key in the account and Region.
 * Exit code 1 when anything is flagged (so it can gate CI or run on a schedule), 2 for bad usage.
 * `--fix` turns automatic rotation on with the policy period where KMS can, and writes each
 * change to the `keys-audit` audit log in Redis (`rekey audit keys-audit` prints it).
 */
import { Option, type Command } from 'commander';
import { KMSClient } from '@aws-sdk/client-kms';
import { loadConfig } from '@rekey/core';
import { auditKeys, awsClientConfig, connectAuditLog, keyAuditCsv, keyAuditTable, type KeyAuditResult } from '@rekey/fleet';
import { CliError, EXIT } from '../errors.js';

interface KeysAuditFlags {
  maxAgeDays: string;
  recentDays: string;
  format: 'table' | 'json' | 'csv';
  fix?: boolean;
}

function days(v: string, flag: string): number {
  const n = Number(v);
  if (!/^\d+$/.test(v.trim()) || !Number.isInteger(n) || n < 1) throw new CliError(`${flag} must be a whole number of days of at least 1, got "${v}"`, EXIT.usage);
  return n;
}

/** Prints an audit in the chosen format. */
export function printKeyAudit(r: KeyAuditResult, format: KeysAuditFlags['format']): void {
  if (format === 'json') console.log(JSON.stringify(r, null, 2));
  else if (format === 'csv') process.stdout.write(keyAuditCsv(r));
  else for (const l of keyAuditTable(r)) console.log(l);
}

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
    .action(async (f: KeysAuditFlags) => {
      const maxAgeDays = days(f.maxAgeDays, '--max-age-days');
      const recentDays = days(f.recentDays, '--recent-days');
      const config = loadConfig({ env: process.env, role: 'cli' });
      const kms = new KMSClient(awsClientConfig(config));
      const log = f.fix ? await connectAuditLog(config.redis.url, config.redis.prefix) : undefined;
      try {
        const r = await auditKeys({
          kms,
          maxAgeDays,
          recentDays,
          ...(log ? { fix: { audit: log.audit, actor: `cli:${process.env['USER'] ?? 'local'}` } } : {}),
        });
        printKeyAudit(r, f.format);
        process.exitCode = r.flagged > 0 || r.unfixable.length > 0 ? EXIT.failure : EXIT.ok;
      } finally {
        await log?.close();
        kms.destroy();
      }
    });
}
