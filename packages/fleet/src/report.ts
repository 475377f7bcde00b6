import type { FailureRecord } from './store.js';

/** One CSV field, quoted when it holds a comma, quote or line break (RFC 4180). */
export function csvField(v: string): string {
  return /[",\n\r]/.test(v) ? `"${v.replace(/"/g, '""')}"` : v;
}

/** Failures as CSV (id, source, item, code, reason, acked). */
export function failuresCsv(failures: readonly FailureRecord[]): string {
  const rows = [['id', 'source', 'item', 'code', 'reason', 'acked']];
  for (const f of failures) rows.push([f.id, f.source, f.item, f.code, f.reason, f.acked ?? '']);
  return rows.map((r) => r.map(csvField).join(',')).join('\n') + '\n';
}
