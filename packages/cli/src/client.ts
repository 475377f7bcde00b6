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

type Json = Record<string, unknown>;
const isObject = (v: unknown): v is Json => typeof v === 'object' && v !== null && !Array.isArray(v);

/**
 * The coordinator's error body: `{ error, message }` (and `problems` for a validation error),
 * never fastify's default `{ statusCode, error, message }`, which any fastify server answers.
 */
function isCoordinatorError(d: unknown): d is { error: string; message: string; problems?: unknown } {
  return isObject(d) && typeof d['error'] === 'string' && typeof d['message'] === 'string' && !('statusCode' in d);
}

/**
 * One request to the coordinator API. An answer that is not the coordinator's (an error body of
 * another shape, a body that is not JSON, or a success without the fields `expect` checks) is
 * reported as such, naming the URL, instead of relaying another server's words as Rekey's.
 */
export async function coordinatorCall<T>(
  base: string,
  token: string,
  method: string,
  path: string,
  body: unknown,
  expect: (data: Json) => boolean = () => true,
): Promise<T> {
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
  const notRekey = (what: string) =>
    new CliError(`${base} did not answer as a Rekey coordinator: ${method} ${path.split('?')[0]} got ${res.status}${res.statusText ? ` ${res.statusText}` : ''} ${what} (is REKEY_API_URL the coordinator's address?)`);
  const text = await res.text();
  let data: unknown;
  try {
    data = text ? JSON.parse(text) : {};
  } catch {
    throw notRekey('with a body that is not JSON');
  }
  if (!res.ok) {
    if (!isCoordinatorError(data)) throw notRekey('with an error that is not a Rekey error');
    const problems = Array.isArray(data.problems) && data.problems.every((p) => typeof p === 'string') ? (data.problems as string[]) : undefined;
    if (res.status === 400 && problems) throw new ValidationError(problems);
    throw new CliError(data.message, res.status === 400 ? EXIT.usage : EXIT.failure);
  }
  if (!isObject(data) || !expect(data)) throw notRekey('with a body that is not a Rekey answer');
  return data as T;
}

const has = (k: string, type: 'string' | 'number' | 'object' | 'array') => (d: Json) =>
  type === 'array' ? Array.isArray(d[k]) : type === 'object' ? isObject(d[k]) : typeof d[k] === type;
const migration = has('id', 'string');

/** A client of the coordinator's HTTP API. */
export function httpClient(baseUrl: string, token: string): RekeyClient {
  const base = baseUrl.replace(/\/$/, '');
  const call = <T>(method: string, path: string, body: unknown, expect: (d: Json) => boolean) => coordinatorCall<T>(base, token, method, path, body, expect);
  const enc = encodeURIComponent;
  return {
    create: (spec) => call('POST', '/migrations', spec, migration),
    list: async () => (await call<{ migrations: Migration[] }>('GET', '/migrations', undefined, has('migrations', 'array'))).migrations,
    get: (id) => call('GET', `/migrations/${enc(id)}`, undefined, migration),
    status: (id) => call('GET', `/migrations/${enc(id)}/status`, undefined, has('migration', 'object')),
    gate: (id) => call('GET', `/migrations/${enc(id)}/gate`, undefined, has('conditions', 'array')),
    action: (id, action, reason) => call('POST', `/migrations/${enc(id)}/${action}`, reason ? { reason } : {}, migration),
    finalize: (id, o) => call('POST', `/migrations/${enc(id)}/finalize`, o, has('disabled', 'array')),
    failures: async (id, limit) =>
      (await call<{ failures: FailureRecord[] }>('GET', `/migrations/${enc(id)}/failures?limit=${limit ?? 1000}`, undefined, has('failures', 'array'))).failures,
    ack: async (id, which, reason) => (await call<{ acked: number }>('POST', `/migrations/${enc(id)}/ack`, { ...which, reason }, has('acked', 'number'))).acked,
    audit: (id) => call('GET', `/migrations/${enc(id)}/audit?verify=1`, undefined, (d) => Array.isArray(d['entries']) && isObject(d['verification'])),
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
          return engine.resume(id, actor, reason);
        case 'cancel':
          return engine.cancel(id, actor, reason);
        case 'verify':
          return engine.verify(id, actor, reason);
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
