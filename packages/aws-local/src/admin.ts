import { AwsError } from './errors.js';
import type { Controls, DenyRule, FaultRule, LatencyRule, ServiceName } from './controls.js';
import type { RawResponse } from './http.js';
import type { KmsUsageLog } from './usage-log.js';

interface AdminRequest {
  method: string;
  path: string;
  query: URLSearchParams;
  body: Buffer;
}

interface AdminDeps {
  controls: Controls;
  usage: KmsUsageLog;
  reset: () => void;
  save: () => Promise<void>;
}

const SERVICES: readonly ServiceName[] = ['kms', 's3', 'sqs', 'cloudtrail'];

function ok(body: unknown = { ok: true }): RawResponse {
  return { status: 200, headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) };
}

function bad(message: string): never {
  throw new AwsError('ValidationException', `aws-local admin: ${message}`, 400);
}

function input(body: Buffer): Record<string, unknown> {
  if (body.length === 0) return {};
  try {
    const v: unknown = JSON.parse(body.toString('utf8'));
    if (v && typeof v === 'object' && !Array.isArray(v)) return v as Record<string, unknown>;
  } catch {
    // fall through to the error below
  }
  return bad('body must be a JSON object');
}

function num(o: Record<string, unknown>, k: string): number | undefined {
  const v = o[k];
  if (v === undefined || v === null) return undefined;
  if (typeof v !== 'number' || !Number.isFinite(v) || v < 0) bad(`${k} must be a non-negative number`);
  return v;
}

function str(o: Record<string, unknown>, k: string): string | undefined {
  const v = o[k];
  if (v === undefined || v === null) return undefined;
  if (typeof v !== 'string' || v === '') bad(`${k} must be a non-empty string`);
  return v;
}

/**
 * The `/_aws-local/*` admin API over HTTP, mirroring the in-process {@link Controls}:
 * `GET health`, `POST reset`, `POST save`, `POST quota`, `POST latency`, `POST faults`,
 * `POST|DELETE deny`, `GET|DELETE counters`, `GET kms-usage`.
 */
export async function handleAdmin(req: AdminRequest, deps: AdminDeps): Promise<RawResponse> {
  const name = req.path.slice('/_aws-local/'.length);
  const { controls } = deps;
  switch (`${req.method} ${name}`) {
    case 'GET health':
      return ok({ ok: true, services: SERVICES });
    case 'POST reset':
      deps.reset();
      return ok();
    case 'POST save':
      await deps.save();
      return ok();
    case 'POST quota': {
      const b = input(req.body);
      const rps = num(b, 'rps');
      const burst = num(b, 'burst');
      const scope = { accountId: str(b, 'accountId'), region: str(b, 'region') };
      if (rps === undefined && burst !== undefined) bad('burst needs rps (send {"rps": null} to remove the quota)');
      controls.setQuota(rps === undefined ? null : { rps, ...(burst !== undefined && { burst }) }, scope);
      return ok();
    }
    case 'POST latency': {
      const b = input(req.body);
      const op = str(b, 'op') ?? bad('op is required, e.g. "kms:ReEncrypt", "kms:*" or "*"');
      const fixedMs = num(b, 'fixedMs');
      const minMs = num(b, 'minMs');
      const maxMs = num(b, 'maxMs');
      let rule: LatencyRule | null = null;
      if ((minMs === undefined) !== (maxMs === undefined)) bad('minMs and maxMs go together');
      if (fixedMs !== undefined) rule = { fixedMs };
      else if (minMs !== undefined && maxMs !== undefined) {
        if (maxMs < minMs) bad('maxMs must be >= minMs');
        rule = { minMs, maxMs };
      }
      controls.setLatency(op, rule);
      return ok();
    }
    case 'POST faults': {
      const b = input(req.body);
      const op = str(b, 'op') ?? bad('op is required');
      if (!('probability' in b)) bad('probability is required (0 removes the fault)');
      const probability = num(b, 'probability');
      const kind = str(b, 'kind') ?? 'error';
      if (kind !== 'error' && kind !== 'reset') bad('kind must be "error" or "reset"');
      const rule: FaultRule | null = probability ? { probability, kind } : null;
      controls.setFault(op, rule);
      return ok();
    }
    case 'POST deny': {
      const b = input(req.body);
      const service = str(b, 'service');
      if (service !== undefined && !SERVICES.includes(service as ServiceName)) bad(`unknown service ${service}`);
      const rule: DenyRule = {
        ...(service !== undefined && { service: service as ServiceName }),
        ...(str(b, 'operation') !== undefined && { operation: str(b, 'operation') }),
        ...(str(b, 'resource') !== undefined && { resource: str(b, 'resource') }),
        ...(str(b, 'caller') !== undefined && { caller: str(b, 'caller') }),
      };
      controls.addDenyRule(rule);
      return ok();
    }
    case 'DELETE deny':
      controls.clearDenyRules();
      return ok();
    case 'GET counters':
      return ok(controls.getCounters());
    case 'DELETE counters':
      controls.resetCounters();
      return ok();
    case 'GET kms-usage': {
      const keyArn = req.query.get('keyArn');
      const since = req.query.get('since');
      const sinceMs = since ? Date.parse(since) : 0;
      if (Number.isNaN(sinceMs)) bad('since must be an ISO date');
      const entries = deps.usage
        .all()
        .filter((e) => e.eventTime.getTime() >= sinceMs && (!keyArn || e.keyArns.includes(keyArn)))
        .map((e) => ({
          eventTime: e.eventTime.toISOString(),
          eventName: e.eventName,
          accessKeyId: e.accessKeyId,
          invokedBy: e.invokedBy ?? null,
          keyArns: e.keyArns,
          errorCode: e.errorCode ?? null,
        }));
      return ok({ entries });
    }
    default:
      return { status: 404, headers: { 'content-type': 'application/json' }, body: JSON.stringify({ message: `aws-local admin: no route ${req.method} ${req.path}` }) };
  }
}
