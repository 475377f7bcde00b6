import { failuresCsv } from '@rekey/fleet';
import type { RekeyClient } from '../client.js';

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
    const outcomes = Object.keys(st.totals.outcomes);
    const rows = [['source', 'kind', 'discovered', ...outcomes].join(',')];
    for (const s of st.sources) rows.push([s.name, s.kind, s.counters.discovered, ...outcomes.map((o) => s.counters[o as keyof typeof s.counters])].join(','));
    return `${rows.join('\n')}\n\n${failuresCsv(failures)}`;
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
