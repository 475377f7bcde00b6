import type { Migration } from '@rekey/core';
import type { SourceCounters } from './store.js';

/** One condition of the gate, green or red, with why. */
export interface GateCondition {
  readonly name: 'enumeration-complete' | 'no-batches-pending' | 'no-unacknowledged-failures' | 'verify-clean' | 'old-key-quiet';
  readonly ok: boolean;
  readonly detail: string;
}

/** Whether the old keys can be disabled now and, if not, exactly what is in the way. */
export interface GateResult {
  readonly ready: boolean;
  readonly conditions: readonly GateCondition[];
  /** Warnings that do not block (e.g. Decrypt by other callers). */
  readonly warnings: readonly string[];
}

/** Old-key use seen by the usage monitor since verification started. */
export interface OldKeyUsage {
  /** Encrypt-type calls (Encrypt, GenerateDataKey*, ReEncrypt to the old key) by callers other than the fleet. */
  readonly blockers: readonly { key: string; operation: string; caller: string; lastSeen: string; count: number }[];
  /** Decrypt-type calls by callers other than the fleet: readers of data outside the sources. */
  readonly readers: readonly { key: string; operation: string; caller: string; lastSeen: string; count: number }[];
  /** When the monitor last looked; null when it has not looked yet. */
  readonly checkedAt: string | null;
  /** The start of the window the monitor looked at (the migration's `verifyStartedAt`); a usage of an earlier verify round is stale. */
  readonly since?: string;
  /** Why the last look failed (e.g. AccessDenied on cloudtrail:LookupEvents); the gate stays red while set. */
  readonly error?: string;
  /** Keys whose CloudTrail events the last look could not all read (the newest were read); shown as warnings. */
  readonly skipped?: readonly string[];
  /** Per key, the stretches of the window that looks of this verify round have read, merged (ISO times). */
  readonly read?: readonly UsageStretch[];
  /** Per key, the stretches of [since, checkedAt - quiet window] that no look of this verify round has read; the gate stays red while there are any. */
  readonly unread?: readonly UsageStretch[];
}

/** A stretch of CloudTrail time for one key, `from` inclusive, `to` exclusive (ISO times). */
export interface UsageStretch {
  readonly key: string;
  readonly from: string;
  readonly to: string;
}

export interface GateInput {
  readonly migration: Migration;
  readonly counters: Readonly<Record<string, SourceCounters>>;
  /** Failure stream ids acknowledged, or `*` for all. */
  readonly acks: ReadonlyMap<string, string>;
  /** Failure stream ids recorded (only `failed` outcomes, not verify findings). */
  readonly failureIds: readonly string[];
  readonly usage: OldKeyUsage | null;
  /** Whether the usage monitor is enabled; when it is not, the condition is green with a note. */
  readonly usageMonitored: boolean;
  /**
   * Seconds after verification started that the old keys must have been watched with no
   * encrypt-type use (CloudTrail may deliver events minutes late). @defaultValue 0
   */
  readonly quietWindowSeconds?: number;
}

const sum = (cs: Readonly<Record<string, SourceCounters>>, f: keyof SourceCounters) =>
  Object.values(cs).reduce((n, c) => n + c[f], 0);

/** The gate, computed in one place from counters, acknowledgements and old-key usage. */
export function computeGate(input: GateInput): GateResult {
  const { migration: m, counters } = input;
  const conditions: GateCondition[] = [];
  const enumerated = ['running', 'verifying', 'ready', 'blocked', 'finalized'].includes(m.state) ||
    (m.state === 'paused' && m.pausedFrom !== undefined && m.pausedFrom !== 'enumerating' && m.enumeratedAt !== undefined);
  conditions.push({
    name: 'enumeration-complete',
    ok: enumerated,
    detail: enumerated ? `${sum(counters, 'discovered')} items discovered` : `enumeration still running (${sum(counters, 'discovered')} items so far)`,
  });

  const pending = sum(counters, 'batchesEnqueued') - sum(counters, 'batchesDone');
  const verifyPending = sum(counters, 'verifyBatchesEnqueued') - sum(counters, 'verifyBatchesDone');
  conditions.push({
    name: 'no-batches-pending',
    ok: pending === 0 && verifyPending === 0,
    detail: pending === 0 && verifyPending === 0 ? 'no batch is waiting or active' : `${pending} re-encrypt and ${verifyPending} verify batches are waiting or active`,
  });

  const failed = sum(counters, 'failed');
  const allAcked = input.acks.has('*');
  const unacked = allAcked ? 0 : input.failureIds.filter((id) => !input.acks.has(id)).length;
  // The failures stream is capped; beyond the cap, counters decide.
  const unackedCount = allAcked ? 0 : Math.max(unacked, failed - input.failureIds.length);
  conditions.push({
    name: 'no-unacknowledged-failures',
    ok: failed === 0 || unackedCount === 0,
    detail: failed === 0 ? 'no item failed' : unackedCount === 0 ? `${failed} failures, all acknowledged` : `${unackedCount} of ${failed} failed items are not acknowledged (rekey failures / rekey ack)`,
  });

  const verified = m.verifiedAt !== undefined && verifyPending === 0 && sum(counters, 'verifyBatchesDone') >= sum(counters, 'verifyBatchesEnqueued');
  const oldLeft = sum(counters, 'verifyOldKey');
  conditions.push({
    name: 'verify-clean',
    ok: verified && oldLeft === 0,
    detail: !verified ? 'the verify pass has not finished' : oldLeft === 0 ? `verify checked ${sum(counters, 'verifyChecked')} items: 0 under the old keys` : `verify found ${oldLeft} items still under the old keys`,
  });

  const warnings: string[] = [];
  if (!input.usageMonitored) {
    conditions.push({ name: 'old-key-quiet', ok: true, detail: 'old-key usage monitoring is off' });
  } else if (input.usage?.error !== undefined) {
    conditions.push({ name: 'old-key-quiet', ok: false, detail: `the usage monitor could not look at the old keys: ${input.usage.error}` });
  } else if (!input.usage || input.usage.checkedAt === null) {
    conditions.push({ name: 'old-key-quiet', ok: false, detail: 'old-key usage has not been checked yet' });
  } else if (input.usage.since !== undefined && input.usage.since !== m.verifyStartedAt) {
    conditions.push({ name: 'old-key-quiet', ok: false, detail: 'old-key usage has not been checked since verification restarted' });
  } else {
    const b = input.usage.blockers;
    const checked = Date.parse(input.usage.checkedAt);
    const started = m.verifyStartedAt ? Date.parse(m.verifyStartedAt) : NaN;
    const watched = Number.isNaN(started) ? 0 : Math.max(0, (checked - started) / 1000);
    const windowS = input.quietWindowSeconds ?? 0;
    // A look that began before the verify pass ended can't vouch for the whole window.
    const lookedAfterVerify = m.verifiedAt !== undefined && checked >= Date.parse(m.verifiedAt);
    const unread = input.usage.unread ?? [];
    let detail: string;
    if (b.length > 0) {
      detail = `encrypt-type use of the old keys since verification started: ${b.map((u) => `${u.operation} by ${u.caller} (${u.count}x, last ${u.lastSeen})`).join('; ')}`;
    } else if (unread.length > 0) {
      // A blocker could hide there: the newest-first reads of later looks never reached it.
      detail = `the usage monitor could not read every CloudTrail event of the old keys since verification started (more per look than it reads): ${unread.map((u) => `${u.key} from ${u.from} to ${u.to}`).join('; ')} unread`;
    } else if (!lookedAfterVerify) {
      detail = 'waiting for the usage monitor to look at the old keys after the verify pass';
    } else if (watched < windowS) {
      detail = `no encrypt-type use so far, but the quiet window is ${windowS} s and the old keys have been watched for ${Math.floor(watched)} s since verification started`;
    } else {
      detail = `no encrypt-type use of the old keys since verification started (checked ${input.usage.checkedAt})`;
    }
    conditions.push({ name: 'old-key-quiet', ok: b.length === 0 && unread.length === 0 && lookedAfterVerify && watched >= windowS, detail });
    for (const r of input.usage.readers) {
      warnings.push(`${r.operation} of ${r.key} by ${r.caller} (${r.count}x, last ${r.lastSeen}): it reads data outside this migration's sources`);
    }
    for (const line of input.usage.skipped ?? []) warnings.push(`old-key usage monitor: ${line}`);
  }
  return { ready: conditions.every((c) => c.ok), conditions, warnings };
}
