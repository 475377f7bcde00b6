import { createHash } from 'node:crypto';
import { HeadBucketCommand, HeadObjectCommand, PutObjectCommand, type S3Client } from '@aws-sdk/client-s3';
import type { AuditExport, Migration } from '@rekey/core';
import { auditJsonl, type AuditLog, type StoredAuditEntry } from './audit.js';

/** The object key of a migration's audit export. */
export function auditExportKey(id: string): string {
  return `rekey/audit/${id}.jsonl`;
}

/** Refuses an audit bucket that does not exist or that the fleet can't reach, at migration creation. */
export async function checkAuditBucket(s3: S3Client, bucket: string): Promise<string | null> {
  try {
    await s3.send(new HeadBucketCommand({ Bucket: bucket }));
    return null;
  } catch (err) {
    const e = err as { name?: string; $metadata?: { httpStatusCode?: number } };
    const status = e.$metadata?.httpStatusCode;
    if (status === 404 || e.name === 'NotFound' || e.name === 'NoSuchBucket') return `auditBucket ${bucket}: the bucket does not exist`;
    if (status === 403) return `auditBucket ${bucket}: access denied (the coordinator needs s3:ListBucket and s3:PutObject on it)`;
    return `auditBucket ${bucket}: ${e.name ?? 'error'}: ${(err as Error).message}`;
  }
}

/**
 * The copy of a migration's log the audit bucket holds: its entry count and head, from the
 * object's metadata. null when there is none yet.
 */
async function bucketCopy(s3: S3Client, bucket: string, key: string): Promise<{ entries: number; head: string } | null> {
  try {
    const h = await s3.send(new HeadObjectCommand({ Bucket: bucket, Key: key }));
    const entries = Number(h.Metadata?.['rekey-audit-entries']);
    if (!Number.isInteger(entries) || entries < 0) throw new Error(`s3://${bucket}/${key} has no rekey-audit-entries metadata, so it is not a copy Rekey wrote; not overwritten`);
    return { entries, head: h.Metadata?.['rekey-audit-head'] ?? '' };
  } catch (err) {
    const e = err as { name?: string; $metadata?: { httpStatusCode?: number } };
    if (e.$metadata?.httpStatusCode === 404 || e.name === 'NotFound' || e.name === 'NoSuchKey') return null;
    throw err;
  }
}

/**
 * Writes `entries` (a chain that checks) over the copy in the bucket, which it must extend: the
 * copy's last entry has to be in the live log, at the same place and with the same hash. A log
 * in Redis that was rewritten with its hashes recomputed checks on its own, but not against the
 * copy written before; it is not written, and the error says where the two part. Returns null,
 * writing nothing, when the copy already ends where the log does and `always` is false.
 */
async function writeCopy(s3: S3Client, m: Migration, entries: readonly StoredAuditEntry[], always: boolean): Promise<AuditExport | null> {
  const bucket = m.spec.auditBucket!;
  const key = auditExportKey(m.id);
  const copy = await bucketCopy(s3, bucket, key);
  if (copy && copy.entries > 0) {
    const at = entries[copy.entries - 1];
    if (!at || at.hash !== copy.head) {
      throw new Error(
        `the audit log of ${m.id} in Redis no longer extends the copy in s3://${bucket}/${key}: ` +
          (at ? `its entry ${copy.entries} has hash ${at.hash}, the copy ends at ${copy.head}` : `it has ${entries.length} entries, the copy ${copy.entries}`) +
          ' (entries were changed or removed after the copy was written); not written',
      );
    }
    if (!always && copy.entries === entries.length) return null;
  }
  const body = auditJsonl(entries);
  const digest = createHash('sha256').update(body);
  const head = entries.at(-1)?.hash ?? '';
  await s3.send(
    new PutObjectCommand({
      Bucket: bucket,
      Key: key,
      Body: body,
      ContentType: 'application/x-ndjson',
      ChecksumSHA256: digest.copy().digest('base64'),
      Metadata: { 'rekey-migration': m.id, 'rekey-audit-entries': String(entries.length), 'rekey-audit-head': head },
    }),
  );
  return { bucket, key, entries: entries.length, head, sha256: digest.digest('hex'), at: new Date().toISOString() };
}

/** Whether the log holds the entry of the migration's current state (its state is saved before the entry is appended). */
function recordsState(entries: readonly StoredAuditEntry[], m: Migration): boolean {
  return m.state === 'created' || entries.some((e) => e.type === 'state.changed' && e.data['to'] === m.state);
}

/**
 * Writes a running migration's audit log so far to its `auditBucket` (the same object the final
 * export writes), so the bucket holds the log up to a minute ago and a later rewrite of the log in
 * Redis can't pass unnoticed. `copy` is null when the bucket's copy was already up to date;
 * `recordsState` tells whether the log (and so the copy) holds the entry of the current state.
 * @throws when the chain does not check, or no longer extends the copy in the bucket
 */
export async function checkpointAudit(deps: { s3: S3Client; audit: AuditLog }, m: Migration): Promise<{ copy: AuditExport | null; recordsState: boolean }> {
  if (!m.spec.auditBucket) throw new Error(`migration ${m.id} has no auditBucket`);
  const { entries, verification: check } = await deps.audit.readVerified(m.id);
  if (!check.ok) throw new Error(`audit chain of ${m.id} is broken at ${check.brokenAt} (${check.reason}); not written`);
  return { copy: await writeCopy(deps.s3, m, entries, false), recordsState: recordsState(entries, m) };
}

/**
 * Writes a finished migration's audit log to `s3://<auditBucket>/rekey/audit/<id>.jsonl`.
 * The chain is verified first: a broken chain is not exported (the caller records why), so the
 * file in S3 is always a chain that checks. Each line is a stored entry, so the file can be
 * verified on its own with the same hash rule (`prev` of each line = `hash` of the line before).
 * The object is written with a SHA-256 checksum that S3 checks on receipt. Returns null (try
 * again later) while the log does not yet hold the entry of the migration's final state change.
 */
export async function exportAudit(deps: { s3: S3Client; audit: AuditLog }, m: Migration): Promise<AuditExport | null> {
  const bucket = m.spec.auditBucket;
  if (!bucket) throw new Error(`migration ${m.id} has no auditBucket`);
  const { entries, verification: check } = await deps.audit.readVerified(m.id);
  if (!check.ok) throw new Error(`audit chain of ${m.id} is broken at ${check.brokenAt} (${check.reason}); not exported`);
  // The state is saved before its audit entry is appended: wait until the log records the end.
  if (!recordsState(entries, m)) return null;
  return writeCopy(deps.s3, m, entries, true);
}
