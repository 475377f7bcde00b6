import { createHash } from 'node:crypto';
import type { Redis } from 'ioredis';
import { fleetCommands } from './scripts.js';
import type { RedisKeys } from './keys.js';

/** One audit entry: what happened, who did it, when, and the hash chain. */
export interface AuditEntry {
  /** ISO time. */
  readonly ts: string;
  /** Who: `api:<token-name>`, `cli:<user>`, `coordinator:<host>`, `worker:<host>`, `intake`. */
  readonly actor: string;
  /** What: `migration.created`, `state.changed`, `key.disabled`, `failure.acked`, `finalize.forced`, … */
  readonly type: string;
  readonly data: Readonly<Record<string, unknown>>;
  /** SHA-256 of the previous entry ('' for the first). */
  readonly prev: string;
}

/** An audit entry as stored, with its id and hash. */
export interface StoredAuditEntry extends AuditEntry {
  readonly id: string;
  readonly hash: string;
}

/** Result of checking an audit chain. */
export type AuditVerification =
  | { readonly ok: true; readonly entries: number }
  | { readonly ok: false; readonly entries: number; readonly brokenAt: string; readonly reason: string };

/** JSON with sorted object keys, so the hash does not depend on insertion order. */
export function canonicalJson(v: unknown): string {
  if (v === null || typeof v !== 'object') return JSON.stringify(v) ?? 'null';
  if (Array.isArray(v)) return `[${v.map(canonicalJson).join(',')}]`;
  const o = v as Record<string, unknown>;
  return `{${Object.keys(o)
    .filter((k) => o[k] !== undefined)
    .sort()
    .map((k) => `${JSON.stringify(k)}:${canonicalJson(o[k])}`)
    .join(',')}}`;
}

/** The hash of an entry: SHA-256 over its canonical JSON (which includes `prev`). */
export function auditHash(entry: AuditEntry): string {
  return createHash('sha256').update(canonicalJson(entry)).digest('hex');
}

/**
 * An append-only, hash-chained audit log per migration (or rotation) in a Redis stream.
 * Each entry carries the SHA-256 of the previous one, so editing or deleting an entry breaks
 * the chain and {@link AuditLog.verify} reports where.
 */
export interface AuditLog {
  append(id: string, e: { actor: string; type: string; data?: Record<string, unknown> }): Promise<StoredAuditEntry>;
  read(id: string): Promise<StoredAuditEntry[]>;
  verify(id: string): Promise<AuditVerification>;
  /** The entries and their chain check from one read of the stream (entries up to an unreadable one). */
  readVerified(id: string): Promise<{ entries: StoredAuditEntry[]; verification: AuditVerification }>;
}

export function createAuditLog(redis: Redis, keys: RedisKeys): AuditLog {
  const cmd = fleetCommands(redis);
  async function readVerified(id: string): Promise<{ entries: StoredAuditEntry[]; verification: AuditVerification }> {
    // One MULTI, so an append between reading the stream and the head can't look like a break.
    const res = await redis.multi().xrange(keys.audit(id), '-', '+').get(keys.auditHead(id)).exec();
    if (!res || res[0]?.[0] || res[1]?.[0]) throw new Error(`audit log of ${id}: could not read it: ${String(res?.[0]?.[0] ?? res?.[1]?.[0] ?? 'transaction aborted')}`);
    const rows = res[0]![1] as [string, string[]][];
    const head = res[1]![1] as string | null;
    const entries: StoredAuditEntry[] = [];
    for (const [sid, fields] of rows) {
      try {
        entries.push(parseRow(sid, fields));
      } catch (err) {
        return { entries, verification: { ok: false, entries: entries.length + 1, brokenAt: sid, reason: (err as Error).message } };
      }
    }
    return { entries, verification: verifyAuditChain(entries, head ?? '') };
  }

  return {
    async append(id, e) {
      for (let attempt = 0; attempt < 50; attempt++) {
        const head = (await redis.get(keys.auditHead(id))) ?? '';
        const entry: AuditEntry = { ts: new Date().toISOString(), actor: e.actor, type: e.type, data: e.data ?? {}, prev: head };
        const hash = auditHash(entry);
        const sid = await cmd.auditAppend([keys.audit(id), keys.auditHead(id)], head, hash, canonicalJson(entry));
        if (sid) return { ...entry, id: sid, hash };
      }
      throw new Error(`audit log of ${id}: could not append after 50 concurrent retries`);
    },

    async read(id) {
      const rows = await redis.xrange(keys.audit(id), '-', '+');
      return rows.map(([sid, fields]) => parseRow(sid, fields));
    },

    async verify(id) {
      return (await readVerified(id)).verification;
    },

    readVerified,
  };
}

/**
 * Checks a chain of entries: each `prev` is the hash of the entry before it, each hash matches
 * its entry, and the last hash is `head` (when given: entries removed from the end).
 */
export function verifyAuditChain(entries: readonly StoredAuditEntry[], head?: string): AuditVerification {
  let prev = '';
  let n = 0;
  for (const e of entries) {
    n++;
    if (e.prev !== prev) return { ok: false, entries: n, brokenAt: e.id, reason: 'prev does not match the hash of the entry before it (an entry was removed or reordered)' };
    const { id: _id, hash, ...body } = e;
    if (auditHash(body) !== hash) return { ok: false, entries: n, brokenAt: e.id, reason: 'entry content does not match its hash (the entry was changed)' };
    prev = hash;
  }
  if (head !== undefined && head !== prev) return { ok: false, entries: n, brokenAt: 'head', reason: 'the chain head does not match the last entry (entries were removed from the end)' };
  return { ok: true, entries: n };
}

/** The audit log as JSONL: one stored entry (with its id and hash) per line. */
export function auditJsonl(entries: readonly StoredAuditEntry[]): string {
  return entries.map((e) => JSON.stringify(e)).join('\n') + (entries.length ? '\n' : '');
}

/**
 * Reads an exported audit log (JSONL, one stored entry per line, as written to `auditBucket` and
 * by `rekey audit <id> --jsonl`).
 *
 * @throws Error naming the line when a line is not an audit entry.
 */
export function parseAuditJsonl(text: string): StoredAuditEntry[] {
  const out: StoredAuditEntry[] = [];
  text.split('\n').forEach((line, i) => {
    if (line.trim() === '') return;
    let o: unknown;
    try {
      o = JSON.parse(line);
    } catch {
      throw new Error(`line ${i + 1}: not JSON`);
    }
    if (!o || typeof o !== 'object') throw new Error(`line ${i + 1}: not an object`);
    const r = o as Record<string, unknown>;
    if (typeof r['id'] !== 'string' || typeof r['hash'] !== 'string') throw new Error(`line ${i + 1}: lacks id or hash`);
    try {
      out.push(entryOf(r['id'], r['hash'], r));
    } catch (err) {
      throw new Error(`line ${i + 1}: ${(err as Error).message}`);
    }
  });
  return out;
}

function parseRow(sid: string, fields: string[]): StoredAuditEntry {
  const m = new Map<string, string>();
  for (let i = 0; i + 1 < fields.length; i += 2) m.set(fields[i]!, fields[i + 1]!);
  const raw = m.get('entry');
  const hash = m.get('hash');
  if (!raw || !hash) throw new Error(`audit entry ${sid} is missing its entry or hash field`);
  const parsed: unknown = JSON.parse(raw);
  if (!parsed || typeof parsed !== 'object') throw new Error(`audit entry ${sid} is not an object`);
  return entryOf(sid, hash, parsed as Record<string, unknown>);
}

function entryOf(sid: string, hash: string, o: Record<string, unknown>): StoredAuditEntry {
  if (typeof o['ts'] !== 'string' || typeof o['actor'] !== 'string' || typeof o['type'] !== 'string' || typeof o['prev'] !== 'string') {
    throw new Error(`audit entry ${sid} lacks ts, actor, type or prev`);
  }
  return {
    id: sid,
    hash,
    ts: o['ts'],
    actor: o['actor'],
    type: o['type'],
    prev: o['prev'],
    data: (o['data'] && typeof o['data'] === 'object' ? o['data'] : {}) as Record<string, unknown>,
  };
}
