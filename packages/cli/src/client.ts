import type { Migration } from '@rekey/core';
import { ValidationError } from '@rekey/core';
import type { AuditVerification, Engine, FailureRecord, FinalizeResult, GateResult, MigrationStatus, StoredAuditEntry } from '@rekey/fleet';
import { CliError, EXIT } from './errors.js';

/** What the CLI needs from Rekey, served by the coordinator API or by an engine in this process (`--local`). */
export interface RekeyClient {
  create(spec: unknown): Promise<Migration>;
  list(): Promise<Migration[]>;
  get(id: string): Promise<Migration>;
  status(id: string): Promise<MigrationStatus>;
  gate(id: string): Promise<GateResult>;
  action(id: string, action: 'pause' | 'resume' | 'cancel' | 'verify', reason?: string): Promise<Migration>;
  finalize(id: string, opts: { force: boolean; scheduleDeletionDays?: number }): Promise<FinalizeResult>;
  failures(id: string, limit?: number): Promise<FailureRecord[]>;
  ack(id: string, which: { all: true } | { ids: string[] }, reason: string): Promise<number>;
  audit(id: string): Promise<{ entries: StoredAuditEntry[]; verification: AuditVerification }>;
  close(): Promise<void>;
}

/** A client of the coordinator's HTTP API. */
export function httpClient(baseUrl: string, token: string): RekeyClient {
  const base = baseUrl.replace(/\/$/, '');
  async function call<T>(method: string, path: string, body?: unknown): Promise<T> {
    let res: Response;
    try {
      res = await fetch(`${base}${path}`, {
        method,
        headers: { authorization: `Bearer ${token}`, ...(body !== undefined ? { 'content-type': 'application/json' } : {}) },
        ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
      });
    } catch (err) {
      throw new CliError(`cannot reach the coordinator at ${base}: ${(err as Error).message} (set REKEY_API_URL, or use --local)`);
    }
    const text = await res.text();
    let data: unknown;
    try {
      data = text ? JSON.parse(text) : {};
    } catch {
      throw new CliError(`coordinator answered ${res.status} with a body that is not JSON`);
    }
    if (!res.ok) {
      const d = data as { message?: string; problems?: string[] };
      if (res.status === 400 && d.problems) throw new ValidationError(d.problems);
      throw new CliError(d.message ?? `coordinator answered ${res.status}`, res.status === 400 ? EXIT.usage : EXIT.failure);
    }
    return data as T;
  }
  const enc = encodeURIComponent;
  return {
    create: (spec) => call('POST', '/migrations', spec),
    list: async () => (await call<{ migrations: Migration[] }>('GET', '/migrations')).migrations,
    get: (id) => call('GET', `/migrations/${enc(id)}`),
    status: (id) => call('GET', `/migrations/${enc(id)}/status`),
    gate: (id) => call('GET', `/migrations/${enc(id)}/gate`),
    action: (id, action, reason) => call('POST', `/migrations/${enc(id)}/${action}`, reason ? { reason } : {}),
    finalize: (id, o) => call('POST', `/migrations/${enc(id)}/finalize`, o),
    failures: async (id, limit) => (await call<{ failures: FailureRecord[] }>('GET', `/migrations/${enc(id)}/failures?limit=${limit ?? 1000}`)).failures,
    ack: async (id, which, reason) => (await call<{ acked: number }>('POST', `/migrations/${enc(id)}/ack`, { ...which, reason })).acked,
    audit: (id) => call('GET', `/migrations/${enc(id)}/audit?verify=1`),
    close: async () => undefined,
  };
}

/** A client over an engine running in this process. */
export function engineClient(engine: Engine, actor: string, onClose: () => Promise<void> = () => engine.close()): RekeyClient {
  return {
    create: (spec) => engine.createMigration(spec, actor),
    list: () => engine.list(),
    get: (id) => engine.get(id),
    status: (id) => engine.status(id),
    gate: (id) => engine.gate(id),
    action: (id, action, reason) => {
      switch (action) {
        case 'pause':
          return engine.pause(id, actor, reason);
        case 'resume':
          return engine.resume(id, actor);
        case 'cancel':
          return engine.cancel(id, actor, reason);
        case 'verify':
          return engine.verify(id, actor);
      }
    },
    finalize: (id, o) => engine.finalize(id, { actor, ...o }),
    failures: (id, limit) => engine.failures(id, limit),
    ack: (id, which, reason) => engine.ack(id, which, reason, actor),
    audit: async (id) => {
      const log = await engine.audit.readVerified(id);
      // Rotations, keys-audit and the fleet keep audit logs too; an id with neither a log nor a migration is unknown.
      if (log.entries.length === 0) await engine.get(id);
      return log;
    },
    close: onClose,
  };
}
