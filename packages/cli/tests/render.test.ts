import { describe, expect, it } from 'vitest';
import { parseMigrationSpec, type Migration } from '@rekey/core';
import { auditCopyLine } from '../src/render.js';

function migration(extra: Partial<Migration>, auditBucket?: string): Migration {
  const spec = parseMigrationSpec({ id: 'm1', sources: [{ name: 'docs', kind: 's3-sse-kms', bucket: 'docs' }], from: ['alias/old'], to: 'alias/new', ...(auditBucket && { auditBucket }) });
  return { id: 'm1', spec, state: 'running', keys: { from: ['k-old'], to: 'k-new', aliases: {} }, createdAt: '2026-01-01T00:00:00.000Z', updatedAt: '2026-01-01T00:00:00.000Z', ...extra };
}

const copy = { bucket: 'audit', key: 'rekey/audit/m1.jsonl', entries: 7, head: 'h', sha256: 's', at: '2026-01-01T00:05:00.000Z' };

describe('the audit copy line of `rekey status`', () => {
  it('says where the copy is, whether it is final, and why it was not written', () => {
    expect(auditCopyLine(migration({}))).toBeUndefined();
    expect(auditCopyLine(migration({}, 'audit'))).toBe('audit copy: not written yet (s3://audit)');
    expect(auditCopyLine(migration({ auditCheckpoint: copy }, 'audit'))).toBe('audit copy: s3://audit/rekey/audit/m1.jsonl, 7 entries at 2026-01-01T00:05:00.000Z');
    expect(auditCopyLine(migration({ auditCheckpoint: copy, auditExport: { ...copy, entries: 9 } }, 'audit'))).toBe('audit copy: s3://audit/rekey/audit/m1.jsonl, 9 entries (final) at 2026-01-01T00:05:00.000Z');
    expect(auditCopyLine(migration({ auditCheckpoint: { ...copy, entries: 1 } }, 'audit'))).toBe('audit copy: s3://audit/rekey/audit/m1.jsonl, 1 entry at 2026-01-01T00:05:00.000Z');
    expect(auditCopyLine(migration({ auditCheckpoint: copy, auditExportError: 'the audit log of m1 in Redis no longer extends the copy' }, 'audit'))).toBe(
      'audit copy: NOT WRITTEN: the audit log of m1 in Redis no longer extends the copy',
    );
  });
});
