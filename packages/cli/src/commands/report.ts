import { csvField } from '@rekey/fleet/offline';
import type { RekeyClient } from '../client.js';

/** The CSV report's columns: one table, a row per fact, so a spreadsheet or `grep` reads any part of it. */
export const REPORT_CSV_COLUMNS = ['section', 'id', 'time', 'source', 'name', 'value', 'detail'] as const;

export type ReportFormat = 'json' | 'csv' | 'md';

/** A completion report: spec, resolved key ARNs, times, counts per source and outcome, failures, gate and audit log. */
export async function buildReport(c: RekeyClient, id: string, format: ReportFormat): Promise<string> {
  const st = await c.status(id);
  const failures = await c.failures(id, 100_000);
  const audit = await c.audit(id);
  const m = st.migration;
  if (format === 'json') {
    return `${JSON.stringify({ migration: m, sources: st.sources, totals: st.totals, gate: st.gate, failures, audit: audit.entries, auditChain: audit.verification }, null, 2)}\n`;
  }
  if (format === 'csv') {
    type Row = Partial<Record<(typeof REPORT_CSV_COLUMNS)[number], string | number | boolean | undefined>>;
    const rows: Row[] = [];
    rows.push({ section: 'migration', id: m.id, name: 'state', value: m.state, detail: m.reason });
    const times = ['createdAt', 'startedAt', 'enumeratedAt', 'verifyStartedAt', 'verifiedAt', 'finishedAt'] as const;
    for (const t of times) if (m[t]) rows.push({ section: 'migration', id: m.id, time: m[t], name: t });
    for (const k of m.keys.from) rows.push({ section: 'key', id: m.id, name: 'from', value: k });
    rows.push({ section: 'key', id: m.id, name: 'to', value: m.keys.to });
    for (const [alias, arn] of Object.entries(m.keys.aliases ?? {})) rows.push({ section: 'key', id: m.id, name: alias, value: arn, detail: 'alias resolved at creation' });
    rows.push({ section: 'spec', id: m.id, name: 'json', value: JSON.stringify(m.spec) });
    for (const s of st.sources) {
      for (const [field, n] of Object.entries(s.counters)) rows.push({ section: 'count', id: m.id, source: s.name, name: field, value: n, detail: s.kind });
    }
    rows.push({ section: 'gate', id: m.id, name: 'ready', value: st.gate.ready });
    for (const g of st.gate.conditions) rows.push({ section: 'gate', id: m.id, name: g.name, value: g.ok, detail: g.detail });
    for (const w of st.gate.warnings) rows.push({ section: 'gate', id: m.id, name: 'warning', detail: w });
    for (const f of failures) {
      rows.push({ section: 'failure', id: f.id, source: f.source, name: f.code, value: f.item, detail: f.acked ? `${f.reason} (acknowledged: ${f.acked})` : f.reason });
    }
    rows.push({
      section: 'audit-chain',
      id: m.id,
      name: audit.verification.ok ? 'intact' : 'broken',
      value: audit.verification.entries,
      detail: audit.verification.ok ? undefined : `at ${audit.verification.brokenAt}: ${audit.verification.reason}`,
    });
    for (const e of audit.entries) rows.push({ section: 'audit', id: e.id, time: e.ts, name: e.type, value: e.actor, detail: JSON.stringify(e.data) });
    const line = (r: Row) => REPORT_CSV_COLUMNS.map((c) => csvField(r[c] === undefined ? '' : String(r[c]))).join(',');
    return `${[REPORT_CSV_COLUMNS.join(','), ...rows.map(line)].join('\n')}\n`;
  }
  const lines = [
    `# Rekey migration ${m.id}`,
    '',
    `- state: **${m.state}**${m.reason ? ` (${m.reason})` : ''}`,
    `- from: ${m.keys.from.map((k) => `\`${k}\``).join(', ')}`,
    `- to: \`${m.keys.to}\``,
    ...Object.entries(m.keys.aliases ?? {}).map(([a, k]) => `- alias \`${a}\` resolved to \`${k}\` at creation`),
    `- created: ${m.createdAt}; started: ${m.startedAt ?? '-'}; enumerated: ${m.enumeratedAt ?? '-'}; verified: ${m.verifiedAt ?? '-'}; finished: ${m.finishedAt ?? '-'}`,
    '',
    '## Counts',
    '',
    `| source | kind | discovered | ${Object.keys(st.totals.outcomes).join(' | ')} | verify: under old keys |`,
    `|---|---|---|${Object.keys(st.totals.outcomes).map(() => '---').join('|')}|---|`,
    ...st.sources.map((s) => `| ${s.name} | ${s.kind} | ${s.counters.discovered} | ${Object.keys(st.totals.outcomes).map((o) => s.counters[o as keyof typeof s.counters]).join(' | ')} | ${s.counters.verifyOldKey} |`),
    '',
    '## Gate',
    '',
    `${st.gate.ready ? 'READY' : 'NOT READY'}`,
    '',
    ...st.gate.conditions.map((g) => `- [${g.ok ? 'x' : ' '}] **${g.name}**: ${g.detail}`),
    ...st.gate.warnings.map((w) => `- warning: ${w}`),
    '',
    `## Failures (${failures.length})`,
    '',
    ...(failures.length ? ['| id | source | code | reason | item | acked |', '|---|---|---|---|---|---|', ...failures.map((f) => `| ${f.id} | ${f.source} | ${f.code} | ${f.reason.replace(/\|/g, '\\|')} | \`${f.item}\` | ${f.acked ?? ''} |`)] : ['none']),
    '',
    `## Audit log (${audit.verification.ok ? 'chain intact' : `chain BROKEN at ${audit.verification.brokenAt}: ${audit.verification.reason}`})`,
    '',
    ...audit.entries.map((e) => `- ${e.ts} \`${e.actor}\` **${e.type}** ${JSON.stringify(e.data)}`),
    '',
    '## Spec',
    '',
    '```json',
    JSON.stringify(m.spec, null, 2),
    '```',
    '',
  ];
  return lines.join('\n');
}
