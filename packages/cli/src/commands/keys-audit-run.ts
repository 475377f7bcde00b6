/** What `rekey keys audit` runs, loaded only when it runs; `keys-audit.ts` adds the command, its flags and what it does. */
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
