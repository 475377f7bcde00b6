import { createHash } from 'node:crypto';
import { HeadBucketCommand, PutObjectCommand, type S3Client } from '@aws-sdk/client-s3';
import type { AuditExport, Migration } from '@rekey/core';
import { auditJsonl, type AuditLog } from './audit.js';

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
  if (!entries.some((e) => e.type === 'state.changed' && e.data['to'] === m.state)) return null;
  const body = auditJsonl(entries);
  const digest = createHash('sha256').update(body);
  const key = auditExportKey(m.id);
  await deps.s3.send(
    new PutObjectCommand({
      Bucket: bucket,
      Key: key,
      Body: body,
      ContentType: 'application/x-ndjson',
      ChecksumSHA256: digest.copy().digest('base64'),
      Metadata: { 'rekey-migration': m.id, 'rekey-audit-entries': String(entries.length), 'rekey-audit-head': entries.at(-1)?.hash ?? '' },
    }),
  );
  return { bucket, key, entries: entries.length, head: entries.at(-1)?.hash ?? '', sha256: digest.digest('hex'), at: new Date().toISOString() };
}
