/**
 * What `rekey keys audit` runs, loaded only when it runs (`keys-audit.ts` adds the command and its flags, so
 * the CLI starts without the AWS SDK and the fleet). The command:
 *
 * `rekey keys audit`: rotation hygiene of every customer-managed key in the account and Region.
 * Exit code 1 when anything is flagged (so it can gate CI or run on a schedule), 2 for bad usage.
 * `--fix` turns automatic rotation on with the policy period where KMS can, and writes each
 * change to the `keys-audit` audit log in Redis (`rekey audit keys-audit` prints it).
 */
import { KMSClient } from '@aws-sdk/client-kms';
import { loadConfig } from '@rekey/core';
import { auditKeys, awsClientConfig, connectAuditLog, keyAuditCsv, keyAuditTable, type KeyAuditResult } from '@rekey/fleet';
import { CliError, EXIT } from '../errors.js';

export interface KeysAuditFlags {
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

/** Runs `rekey keys audit` with its parsed flags. */
export async function runKeysAudit(f: KeysAuditFlags): Promise<void> {
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
}
