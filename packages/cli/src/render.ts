import cliProgress from 'cli-progress';
import type { MigrationStatus } from '@rekey/fleet';
import type { RekeyClient } from './client.js';

/** Seconds as `1h02m`, `3m05s` or `12s`; `?` when unknown. */
export function formatDuration(s: number | null): string {
  if (s === null || !Number.isFinite(s)) return '?';
  const t = Math.round(s);
  if (t >= 3600) return `${Math.floor(t / 3600)}h${String(Math.floor((t % 3600) / 60)).padStart(2, '0')}m`;
  if (t >= 60) return `${Math.floor(t / 60)}m${String(t % 60).padStart(2, '0')}s`;
  return `${t}s`;
}

/** The outcome counts in one line. */
export function outcomeLine(st: MigrationStatus): string {
  const o = st.totals.outcomes;
  return Object.entries(o)
    .map(([k, v]) => `${k} ${v}`)
    .join(' · ');
}

/** The gate checklist as lines: `[x]` green, `[ ]` red, with why. */
export function gateLines(st: MigrationStatus): string[] {
  const lines = st.gate.conditions.map((c) => `  [${c.ok ? 'x' : ' '}] ${c.name}: ${c.detail}`);
  for (const w of st.gate.warnings) lines.push(`  (!) ${w}`);
  lines.unshift(`gate: ${st.gate.ready ? 'READY — the old keys can be disabled' : 'not ready'}`);
  return lines;
}

/** Where the audit log's copy in `auditBucket` stands, or why it could not be written; none without a bucket. */
export function auditCopyLine(m: MigrationStatus['migration']): string | undefined {
  if (!m.spec.auditBucket) return undefined;
  if (m.auditExportError) return `audit copy: NOT WRITTEN: ${m.auditExportError}`;
  const c = m.auditExport ?? m.auditCheckpoint;
  if (!c) return `audit copy: not written yet (s3://${m.spec.auditBucket})`;
  return `audit copy: s3://${c.bucket}/${c.key}, ${c.entries} ${c.entries === 1 ? 'entry' : 'entries'}${m.auditExport ? ' (final)' : ''} at ${c.at}`;
}

/** A plain, non-TTY rendering of a status (one block of lines). */
export function statusLines(st: MigrationStatus): string[] {
  const m = st.migration;
  const lines = [
    `migration ${m.id}: ${m.state}${m.reason ? ` (${m.reason})` : ''}`,
    `  from ${m.keys.from.join(', ')}`,
    `  to   ${m.keys.to}`,
  ];
  for (const s of st.sources) {
    lines.push(`  ${s.name} (${s.kind}): ${s.processed}/${s.counters.discovered} ${(s.ratio * 100).toFixed(1)}%` +
      (s.counters.verifyChecked ? ` · verify ${s.counters.verifyChecked} checked, ${s.counters.verifyOldKey} under old keys` : ''));
  }
  lines.push(`  total ${st.totals.processed}/${st.totals.discovered} ${(st.totals.ratio * 100).toFixed(1)}% · ${st.ratePerSecond.toFixed(1)} items/s · ETA ${formatDuration(st.etaSeconds)}`);
  lines.push(`  ${outcomeLine(st)}`);
  const audit = auditCopyLine(m);
  if (audit) lines.push(`  ${audit}`);
  return [...lines, ...gateLines(st).map((l) => `  ${l}`)];
}

const FINAL_STATES = new Set(['ready', 'blocked', 'finalized', 'cancelled', 'failed', 'paused']);

/**
 * Follows a migration: live bars per source on a TTY (refreshed in place with cli-progress),
 * plain status lines otherwise. Returns the last status once the migration reaches `until`.
 */
export async function watchStatus(
  client: RekeyClient,
  id: string,
  opts: { tty: boolean; intervalMs?: number; until?: (st: MigrationStatus) => boolean; out?: NodeJS.WritableStream; signal?: AbortSignal },
): Promise<MigrationStatus> {
  const out = opts.out ?? process.stdout;
  const until = opts.until ?? ((st) => FINAL_STATES.has(st.migration.state));
  const interval = opts.intervalMs ?? 1000;
  let multi: cliProgress.MultiBar | undefined;
  const bars = new Map<string, cliProgress.SingleBar>();
  let info: cliProgress.SingleBar | undefined;
  let lastPlain = '';
  try {
    for (;;) {
      const st = await client.status(id);
      if (opts.tty) {
        if (!multi) {
          multi = new cliProgress.MultiBar(
            { clearOnComplete: false, hideCursor: true, stream: out as NodeJS.WriteStream, forceRedraw: true, autopadding: true, format: ' {name} [{bar}] {percentage}% | {value}/{total} | {rate}/s | ETA {etaText}' },
            cliProgress.Presets.shades_classic,
          );
          for (const s of st.sources) bars.set(s.name, multi.create(Math.max(1, s.counters.discovered), s.processed, { name: s.name.padEnd(16), rate: '0.0', etaText: '?' }));
          info = multi.create(0, 0, { text: '' }, { format: '{text}' });
        }
        for (const s of st.sources) {
          const b = bars.get(s.name);
          b?.setTotal(Math.max(1, s.counters.discovered));
          b?.update(s.processed, { name: s.name.padEnd(16), rate: st.ratePerSecond.toFixed(1), etaText: formatDuration(st.etaSeconds) });
        }
        info?.update(0, { text: [` ${st.migration.id}: ${st.migration.state}${st.migration.reason ? ` — ${st.migration.reason}` : ''}`, ` ${outcomeLine(st)}`, ...gateLines(st).map((l) => ` ${l}`)].join('\n') });
      } else {
        const text = statusLines(st).join('\n');
        if (text !== lastPlain) {
          out.write(`${new Date().toISOString()} ${text}\n`);
          lastPlain = text;
        }
      }
      if (until(st) || opts.signal?.aborted) return st;
      await new Promise((r) => setTimeout(r, interval));
    }
  } finally {
    multi?.stop();
  }
}
