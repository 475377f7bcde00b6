/**
 * `rekey keys audit`: rotation hygiene of every customer-managed key in an account and Region.
 * For each key it reads aliases, spec, origin, state, automatic rotation and its period, the last
 * rotation, the next one and the last use, and flags what a rotation policy (a maximum key age)
 * does not allow. `fix` turns automatic rotation on, with the policy period, where KMS can.
 */
import {
  DescribeKeyCommand,
  EnableKeyRotationCommand,
  GetKeyLastUsageCommand,
  GetKeyRotationStatusCommand,
  ListAliasesCommand,
  ListKeyRotationsCommand,
  ListKeysCommand,
  ListResourceTagsCommand,
  type KMSClient,
  type KeyMetadata,
} from '@aws-sdk/client-kms';
import type { AuditLog } from './audit.js';
import { FleetError } from './errors.js';

/** The audit log `--fix` writes to. */
export const KEYS_AUDIT_ID = 'keys-audit';

/** What the audit flags. */
export const KEY_AUDIT_FLAGS = [
  'rotation-off',
  'period-too-long',
  'not-rotated-within-policy',
  'manual-rotation-required',
  'disabled-but-used',
  'pending-deletion-but-used',
] as const;

/**
 * Tag Rekey's finalize puts on a key it disabled (value: the migration id). The key's last use was
 * that migration's, after its gate saw no other caller for the quiet window, so a recent use of
 * such a key is not a finding.
 */
export const DISABLED_BY_TAG = 'rekey:disabled-by';

/** One kind of finding. */
export type KeyAuditFlagCode = (typeof KEY_AUDIT_FLAGS)[number];

/** One finding on one key, with why. */
export interface KeyAuditFlag {
  readonly code: KeyAuditFlagCode;
  readonly detail: string;
}

/** What the audit knows about one key. */
export interface KeyAuditRow {
  readonly arn: string;
  readonly keyId: string;
  readonly aliases: readonly string[];
  readonly keySpec: string;
  readonly keyUsage: string;
  readonly origin: string;
  readonly state: string;
  readonly customKeyStore: boolean;
  readonly multiRegion: boolean;
  readonly createdAt: string | null;
  /** Automatic rotation; `enabled` is null when the key type can't rotate automatically or the status could not be read. */
  readonly rotation: { readonly enabled: boolean | null; readonly periodDays: number | null; readonly nextRotation: string | null };
  readonly lastRotation: { readonly date: string | null; readonly type: string | null };
  readonly lastUse: { readonly at: string | null; readonly operation: string | null };
  /** The Rekey migration that disabled the key (its `rekey:disabled-by` tag), if any. */
  readonly disabledBy: string | null;
  readonly flags: readonly KeyAuditFlag[];
  /** Calls that failed for this key (e.g. AccessDenied), so a blank field is explained. */
  readonly errors: readonly string[];
}

/** The whole audit. */
export interface KeyAuditResult {
  readonly checkedAt: string;
  readonly maxAgeDays: number;
  readonly recentDays: number;
  readonly rows: readonly KeyAuditRow[];
  /** Keys `fix` turned automatic rotation on for. */
  readonly fixed: readonly { readonly key: string; readonly periodDays: number }[];
  /** Keys `fix` could not fix, with why. */
  readonly unfixable: readonly { readonly key: string; readonly reason: string }[];
  /** Number of flags over all keys. */
  readonly flagged: number;
}

/** Input of {@link auditKeys}. */
export interface KeyAuditOptions {
  readonly kms: KMSClient;
  /** The policy's maximum key age, in days. @defaultValue 365 */
  readonly maxAgeDays?: number;
  /** A disabled or pending-deletion key used within this many days is flagged. @defaultValue 30 */
  readonly recentDays?: number;
  /** The time the policy is judged at. @defaultValue now */
  readonly now?: Date;
  /** Turn automatic rotation on with the policy period where KMS can, writing each change to the `keys-audit` audit log. */
  readonly fix?: { readonly audit: AuditLog; readonly actor: string };
}

const DAY = 86_400_000;
/** KMS accepts rotation periods from 90 to 2560 days. */
const MIN_PERIOD = 90;
const MAX_PERIOD = 2560;
const CUSTOM_STORE_ORIGINS = new Set(['AWS_CLOUDHSM', 'EXTERNAL_KEY_STORE']);

const iso = (d: Date | undefined) => (d ? d.toISOString() : null);
const errText = (op: string, err: unknown) => `${op}: ${(err as { name?: string }).name ?? 'Error'}: ${(err as Error).message}`;

/** Why a key needs manual rotation (KMS can't rotate it automatically), or null when KMS can. */
function manualReason(k: KeyMetadata): string | null {
  if (k.CustomKeyStoreId || CUSTOM_STORE_ORIGINS.has(k.Origin ?? '')) return `its material is in a custom key store (${k.Origin}); rotate it by hand (rekey rotate)`;
  if (k.KeySpec?.startsWith('HMAC_')) return `${k.KeySpec} is an HMAC key; KMS can't rotate HMAC keys, rotate by hand (rekey rotate)`;
  if (k.KeySpec !== 'SYMMETRIC_DEFAULT') return `${k.KeySpec} is an asymmetric key; KMS can't rotate asymmetric keys, rotate by hand (rekey rotate)`;
  if (k.Origin === 'EXTERNAL') return `its key material is imported; KMS can't rotate it automatically, import new material or rotate by hand (rekey rotate)`;
  return null;
}

function validate(o: KeyAuditOptions): { maxAgeDays: number; recentDays: number } {
  const maxAgeDays = o.maxAgeDays ?? 365;
  const recentDays = o.recentDays ?? 30;
  if (!Number.isInteger(maxAgeDays) || maxAgeDays < 1) throw new FleetError('bad-input', `max age must be a whole number of days of at least 1, got ${maxAgeDays}`);
  if (!Number.isInteger(recentDays) || recentDays < 1) throw new FleetError('bad-input', `recent days must be a whole number of days of at least 1, got ${recentDays}`);
  return { maxAgeDays, recentDays };
}

async function allKeys(kms: KMSClient): Promise<string[]> {
  const out: string[] = [];
  let marker: string | undefined;
  do {
    const page = await kms.send(new ListKeysCommand({ Limit: 1000, ...(marker ? { Marker: marker } : {}) }));
    for (const k of page.Keys ?? []) if (k.KeyArn) out.push(k.KeyArn);
    marker = page.Truncated ? page.NextMarker : undefined;
  } while (marker);
  return out;
}

async function aliasesByKey(kms: KMSClient): Promise<Map<string, string[]>> {
  const out = new Map<string, string[]>();
  let marker: string | undefined;
  do {
    const page = await kms.send(new ListAliasesCommand({ Limit: 100, ...(marker ? { Marker: marker } : {}) }));
    for (const a of page.Aliases ?? []) {
      if (!a.TargetKeyId || !a.AliasName) continue;
      out.set(a.TargetKeyId, [...(out.get(a.TargetKeyId) ?? []), a.AliasName]);
    }
    marker = page.Truncated ? page.NextMarker : undefined;
  } while (marker);
  return out;
}

async function lastRotationOf(kms: KMSClient, arn: string): Promise<{ date: Date | undefined; type: string | null }> {
  let newest: { date: Date | undefined; type: string | null } = { date: undefined, type: null };
  let marker: string | undefined;
  do {
    const page = await kms.send(new ListKeyRotationsCommand({ KeyId: arn, Limit: 1000, ...(marker ? { Marker: marker } : {}) }));
    for (const r of page.Rotations ?? []) {
      if (r.RotationDate && (!newest.date || r.RotationDate > newest.date)) newest = { date: r.RotationDate, type: r.RotationType ?? null };
    }
    marker = page.Truncated ? page.NextMarker : undefined;
  } while (marker);
  return newest;
}

/** Reads one key and judges it against the policy. */
async function inspectKey(kms: KMSClient, meta: KeyMetadata, aliases: readonly string[], now: Date, p: { maxAgeDays: number; recentDays: number }): Promise<KeyAuditRow> {
  const arn = meta.Arn!;
  const errors: string[] = [];
  const manual = manualReason(meta);
  const symmetric = meta.KeySpec === 'SYMMETRIC_DEFAULT' && !meta.CustomKeyStoreId && !CUSTOM_STORE_ORIGINS.has(meta.Origin ?? '');
  let rotation: KeyAuditRow['rotation'] = { enabled: null, periodDays: null, nextRotation: null };
  let last: { date: Date | undefined; type: string | null } = { date: undefined, type: null };
  if (symmetric) {
    try {
      const r = await kms.send(new GetKeyRotationStatusCommand({ KeyId: arn }));
      rotation = { enabled: manual ? null : (r.KeyRotationEnabled ?? false), periodDays: r.RotationPeriodInDays ?? null, nextRotation: iso(r.NextRotationDate) };
    } catch (err) {
      errors.push(errText('GetKeyRotationStatus', err));
    }
    try {
      last = await lastRotationOf(kms, arn);
    } catch (err) {
      errors.push(errText('ListKeyRotations', err));
    }
  }
  let lastUse: KeyAuditRow['lastUse'] = { at: null, operation: null };
  try {
    const u = await kms.send(new GetKeyLastUsageCommand({ KeyId: arn }));
    lastUse = { at: iso(u.KeyLastUsage?.Timestamp), operation: u.KeyLastUsage?.Operation ?? null };
  } catch (err) {
    errors.push(errText('GetKeyLastUsage', err));
  }

  const flags: KeyAuditFlag[] = [];
  const state = meta.KeyState ?? 'Unknown';
  const live = state !== 'PendingDeletion' && state !== 'PendingReplicaDeletion';
  if (manual && live) flags.push({ code: 'manual-rotation-required', detail: manual });
  if (!manual && state === 'Enabled' && rotation.enabled === false) {
    flags.push({ code: 'rotation-off', detail: `automatic rotation is off; turn it on with a period of at most ${p.maxAgeDays} days (--fix)` });
  }
  if (rotation.enabled === true && rotation.periodDays !== null && rotation.periodDays > p.maxAgeDays) {
    flags.push({ code: 'period-too-long', detail: `rotates every ${rotation.periodDays} days; the policy allows at most ${p.maxAgeDays}` });
  }
  const since = last.date ?? meta.CreationDate;
  if (state === 'Enabled' && since && now.getTime() - since.getTime() > p.maxAgeDays * DAY) {
    const days = Math.floor((now.getTime() - since.getTime()) / DAY);
    flags.push({
      code: 'not-rotated-within-policy',
      detail: `${last.date ? 'last rotated' : 'created and never rotated'} ${days} days ago (${since.toISOString().slice(0, 10)}); the policy allows ${p.maxAgeDays}`,
    });
  }
  const usedAt = lastUse.at ? new Date(lastUse.at) : undefined;
  const recent = usedAt !== undefined && now.getTime() - usedAt.getTime() <= p.recentDays * DAY;
  let disabledBy: string | null = null;
  if (recent && (state === 'Disabled' || state === 'PendingDeletion')) {
    try {
      const tags = await kms.send(new ListResourceTagsCommand({ KeyId: arn }));
      disabledBy = tags.Tags?.find((t) => t.TagKey === DISABLED_BY_TAG)?.TagValue ?? null;
    } catch (err) {
      errors.push(errText('ListResourceTags', err));
    }
  }
  if (recent && state === 'Disabled' && disabledBy === null) {
    flags.push({ code: 'disabled-but-used', detail: `disabled, but used (${lastUse.operation}) on ${lastUse.at}, within ${p.recentDays} days; something may still depend on it` });
  }
  if (recent && state === 'PendingDeletion' && disabledBy === null) {
    flags.push({
      code: 'pending-deletion-but-used',
      detail: `pending deletion${meta.DeletionDate ? ` on ${meta.DeletionDate.toISOString().slice(0, 10)}` : ''}, but used (${lastUse.operation}) on ${lastUse.at}; cancel the deletion unless that use is gone`,
    });
  }
  return {
    arn,
    keyId: meta.KeyId ?? arn,
    aliases,
    keySpec: meta.KeySpec ?? 'unknown',
    keyUsage: meta.KeyUsage ?? 'unknown',
    origin: meta.Origin ?? 'unknown',
    state,
    customKeyStore: Boolean(meta.CustomKeyStoreId) || CUSTOM_STORE_ORIGINS.has(meta.Origin ?? ''),
    multiRegion: meta.MultiRegion === true,
    createdAt: iso(meta.CreationDate),
    rotation,
    lastRotation: { date: iso(last.date), type: last.type },
    lastUse,
    disabledBy,
    flags,
    errors,
  };
}

/**
 * Audits every customer-managed key (ListKeys, DescribeKey, GetKeyRotationStatus, ListKeyRotations,
 * ListAliases, GetKeyLastUsage) against a maximum key age, and with `fix` enables automatic
 * rotation where it is off or too slow.
 *
 * @example
 * const r = await auditKeys({ kms, maxAgeDays: 180 });
 * process.exitCode = r.flagged > 0 ? 1 : 0;
 */
export async function auditKeys(o: KeyAuditOptions): Promise<KeyAuditResult> {
  const p = validate(o);
  const now = o.now ?? new Date();
  const [arns, aliases] = await Promise.all([allKeys(o.kms), aliasesByKey(o.kms)]);
  const rows: KeyAuditRow[] = [];
  const fixed: { key: string; periodDays: number }[] = [];
  const unfixable: { key: string; reason: string }[] = [];
  for (const arn of arns) {
    let meta: KeyMetadata | undefined;
    try {
      meta = (await o.kms.send(new DescribeKeyCommand({ KeyId: arn }))).KeyMetadata;
    } catch (err) {
      // A key we can't describe is still listed, so the gap is visible.
      rows.push(unreadable(arn, errText('DescribeKey', err)));
      continue;
    }
    if (!meta?.Arn || meta.KeyManager !== 'CUSTOMER') continue;
    let row = await inspectKey(o.kms, meta, aliases.get(meta.KeyId ?? '') ?? [], now, p);
    // KMS changes rotation only on Enabled keys.
    const fixable = row.state === 'Enabled' && row.flags.some((f) => f.code === 'rotation-off' || f.code === 'period-too-long');
    if (o.fix && fixable) {
      const period = Math.min(p.maxAgeDays, MAX_PERIOD);
      if (period < MIN_PERIOD) {
        unfixable.push({ key: row.arn, reason: `KMS rotation periods are ${MIN_PERIOD} to ${MAX_PERIOD} days; a policy of ${p.maxAgeDays} days needs manual rotation (rekey rotate)` });
      } else {
        try {
          await o.kms.send(new EnableKeyRotationCommand({ KeyId: row.arn, RotationPeriodInDays: period }));
          await o.fix.audit.append(KEYS_AUDIT_ID, {
            actor: o.fix.actor,
            type: 'key.rotation-enabled',
            data: { key: row.arn, periodDays: period, before: { enabled: row.rotation.enabled, periodDays: row.rotation.periodDays }, policyMaxAgeDays: p.maxAgeDays },
          });
          fixed.push({ key: row.arn, periodDays: period });
          row = await inspectKey(o.kms, meta, row.aliases, now, p);
        } catch (err) {
          unfixable.push({ key: row.arn, reason: errText('EnableKeyRotation', err) });
        }
      }
    }
    rows.push(row);
  }
  return { checkedAt: now.toISOString(), maxAgeDays: p.maxAgeDays, recentDays: p.recentDays, rows, fixed, unfixable, flagged: rows.reduce((n, r) => n + r.flags.length, 0) };
}

function unreadable(arn: string, error: string): KeyAuditRow {
  return {
    arn,
    keyId: arn,
    aliases: [],
    keySpec: 'unknown',
    keyUsage: 'unknown',
    origin: 'unknown',
    state: 'unknown',
    customKeyStore: false,
    multiRegion: false,
    createdAt: null,
    rotation: { enabled: null, periodDays: null, nextRotation: null },
    lastRotation: { date: null, type: null },
    lastUse: { at: null, operation: null },
    disabledBy: null,
    flags: [],
    errors: [error],
  };
}

const CSV_COLUMNS = [
  'arn',
  'aliases',
  'keySpec',
  'keyUsage',
  'origin',
  'state',
  'rotationEnabled',
  'rotationPeriodDays',
  'nextRotation',
  'lastRotation',
  'lastRotationType',
  'lastUse',
  'lastUseOperation',
  'flags',
] as const;

function csvCell(v: string): string {
  // A leading =, +, - or @ would run as a formula in a spreadsheet.
  const safe = /^[=+\-@]/.test(v) ? `'${v}` : v;
  return /[",\n\r]/.test(safe) ? `"${safe.replace(/"/g, '""')}"` : safe;
}

/** The audit as CSV, one key per line. */
export function keyAuditCsv(r: KeyAuditResult): string {
  const lines = [CSV_COLUMNS.join(',')];
  for (const k of r.rows) {
    const cells = [
      k.arn,
      k.aliases.join(' '),
      k.keySpec,
      k.keyUsage,
      k.origin,
      k.state,
      k.rotation.enabled === null ? 'n/a' : String(k.rotation.enabled),
      k.rotation.periodDays === null ? '' : String(k.rotation.periodDays),
      k.rotation.nextRotation ?? '',
      k.lastRotation.date ?? '',
      k.lastRotation.type ?? '',
      k.lastUse.at ?? '',
      k.lastUse.operation ?? '',
      k.flags.map((f) => f.code).join(' '),
    ];
    lines.push(cells.map(csvCell).join(','));
  }
  return `${lines.join('\n')}\n`;
}

/** The audit as a terminal table plus one line per flag. */
export function keyAuditTable(r: KeyAuditResult): string[] {
  const date = (s: string | null) => (s ? s.slice(0, 10) : '-');
  const head = ['key', 'aliases', 'spec', 'origin', 'state', 'rotation', 'last rotation', 'next rotation', 'last use', 'flags'];
  const body = r.rows.map((k) => [
    k.keyId,
    k.aliases.join(' ') || '-',
    k.keySpec,
    k.origin,
    k.state,
    k.rotation.enabled === null ? 'n/a' : k.rotation.enabled ? `on/${k.rotation.periodDays}d` : 'off',
    k.lastRotation.date ? `${date(k.lastRotation.date)} ${k.lastRotation.type ?? ''}`.trim() : '-',
    date(k.rotation.nextRotation),
    k.lastUse.at ? `${date(k.lastUse.at)} ${k.lastUse.operation ?? ''}`.trim() : '-',
    String(k.flags.length),
  ]);
  const widths = head.map((h, i) => Math.max(h.length, ...body.map((row) => row[i]!.length)));
  const fmt = (row: string[]) => row.map((c, i) => c.padEnd(widths[i]!)).join('  ').trimEnd();
  const lines = [fmt(head), ...body.map(fmt)];
  for (const k of r.rows) {
    for (const f of k.flags) lines.push(`! ${k.keyId} ${f.code}: ${f.detail}`);
    for (const e of k.errors) lines.push(`? ${k.keyId} ${e}`);
  }
  for (const f of r.fixed) lines.push(`fixed ${f.key}: automatic rotation on, every ${f.periodDays} days`);
  for (const u of r.unfixable) lines.push(`not fixed ${u.key}: ${u.reason}`);
  lines.push(`${r.rows.length} customer-managed keys, ${r.flagged} flags (policy: at most ${r.maxAgeDays} days between rotations, checked ${r.checkedAt})`);
  return lines;
}
