/** The stored migration record and its per-source counters. */
import type { MigrationSpec } from './spec.js';
import type { MigrationState } from './state.js';

/** The keys of a migration, resolved and pinned at creation. */
export interface MigrationKeys {
  /** ARNs of the keys whose items move. */
  readonly from: readonly string[];
  /** ARN of the target key. */
  readonly to: string;
  /** Each alias in the spec and the ARN it resolved to at creation. */
  readonly aliases: Readonly<Record<string, string>>;
}

/** A migration as stored by the fleet. Timestamps are ISO-8601 strings. */
export interface Migration {
  readonly id: string;
  /** The spec, with its id filled in. */
  readonly spec: MigrationSpec;
  readonly state: MigrationState;
  /** The state it was paused from, while `paused`. */
  readonly pausedFrom?: MigrationState | undefined;
  /** Why it is paused, blocked or failed (one line). */
  readonly reason?: string | undefined;
  readonly keys: MigrationKeys;
  /** The re-encrypt pass number (a resume after losing Redis starts a new round). */
  readonly round?: number | undefined;
  /** The verify pass number (each re-verify starts a new round). */
  readonly verifyRound?: number | undefined;
  readonly createdAt: string;
  readonly updatedAt: string;
  readonly startedAt?: string | undefined;
  readonly enumeratedAt?: string | undefined;
  readonly verifyStartedAt?: string | undefined;
  readonly verifyEnumeratedAt?: string | undefined;
  readonly verifiedAt?: string | undefined;
  readonly finishedAt?: string | undefined;
  /** Where the audit log was written when the migration ended (`spec.auditBucket`). */
  readonly auditExport?: AuditExport | undefined;
  /** The last copy of the log written to `spec.auditBucket` while the migration ran (every `auditCheckpointMs`). */
  readonly auditCheckpoint?: AuditExport | undefined;
  /** Why the last audit export or checkpoint failed (retried by the coordinator). */
  readonly auditExportError?: string | undefined;
}

/** An audit log written to S3 as JSONL at the end of a migration, or so far while it runs. */
export interface AuditExport {
  readonly bucket: string;
  readonly key: string;
  /** Entries in the file. */
  readonly entries: number;
  /** Hash of the last entry in the file (the chain head at export). */
  readonly head: string;
  /** SHA-256 (hex) of the file. */
  readonly sha256: string;
  readonly at: string;
}

/** The item outcome counter fields, in report order (the same as `OUTCOMES`). */
export const OUTCOME_COUNTER_FIELDS = ['reencrypted', 'already-current', 'not-in-scope', 'gone', 'conflict', 'failed'] as const;

/** Every counter kept per source of a migration. */
export const COUNTER_FIELDS = [
  'discovered',
  ...OUTCOME_COUNTER_FIELDS,
  'batchesEnqueued',
  'batchesDone',
  'verifyDiscovered',
  'verifyBatchesEnqueued',
  'verifyBatchesDone',
  'verifyChecked',
  'verifyOldKey',
  'verifyCurrent',
  'verifyOther',
  'verifyGone',
] as const;

/** The name of one counter. */
export type CounterField = (typeof COUNTER_FIELDS)[number];

/** The counters of one source of a migration (all non-negative integers). */
export type Counters = Record<CounterField, number>;

/** Counters with every field at 0. */
export function emptyCounters(): Counters {
  return Object.fromEntries(COUNTER_FIELDS.map((f) => [f, 0])) as Counters;
}

/**
 * Reads counters from a Redis hash (string values; absent fields are 0).
 *
 * @throws RangeError when a field is not a non-negative integer.
 */
export function parseCounters(hash: Readonly<Record<string, string | undefined>>): Counters {
  const c = emptyCounters();
  for (const f of COUNTER_FIELDS) {
    const raw = hash[f];
    if (raw === undefined) continue;
    const n = Number(raw);
    if (!Number.isSafeInteger(n) || n < 0) throw new RangeError(`counter ${f}: "${raw}" is not a non-negative integer`);
    c[f] = n;
  }
  return c;
}
