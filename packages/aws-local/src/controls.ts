import { setTimeout as sleep } from 'node:timers/promises';
import { AwsError, ConnectionResetFault } from './errors.js';
import type { RequestContext } from './context.js';

/** The services aws-local answers for. */
export type ServiceName = 'kms' | 's3' | 'sqs' | 'cloudtrail';

/**
 * KMS operations that count against the shared "cryptographic operations" request quota
 * (AWS: the symmetric cryptographic-operations quota, per account and Region).
 */
export const KMS_CRYPTO_OPERATIONS: ReadonlySet<string> = new Set([
  'Encrypt',
  'Decrypt',
  'ReEncrypt',
  'GenerateDataKey',
  'GenerateDataKeyWithoutPlaintext',
  'GenerateDataKeyPair',
  'GenerateDataKeyPairWithoutPlaintext',
  'GenerateRandom',
]);

/** Latency injected before an operation is answered. */
export type LatencyRule = { fixedMs: number } | { minMs: number; maxMs: number };

/** A fault injected with a probability: an AWS 500 error, or a dropped connection. */
export interface FaultRule {
  probability: number;
  kind: 'error' | 'reset';
}

/** Answers AccessDeniedException to matching calls. Omitted fields match anything. */
export interface DenyRule {
  service?: ServiceName;
  operation?: string;
  /** A key ARN (KMS) or bucket name (S3) the rule applies to. */
  resource?: string;
  /** The caller's access key id. */
  caller?: string;
}

/** A request quota in requests per second, as a token bucket with one second of burst. */
export interface QuotaRule {
  rps: number;
  /** Bucket size; defaults to `rps` (one second of burst). */
  burst?: number;
}

interface Bucket {
  rule: QuotaRule;
  tokens: number;
  last: number;
}

/** Counts per `service:operation`. */
export interface OperationCounters {
  [op: string]: { calls: number; throttled: number; faults: number; denied: number };
}

/** Settings for an operation key: `kms:ReEncrypt`, `kms:*`, `s3:*` or `*`. */
type OpKey = string;

function opKeysFor(service: ServiceName, operation: string): OpKey[] {
  return [`${service}:${operation}`, `${service}:*`, '*'];
}

const FAULT_ERRORS: Record<ServiceName, { code: string; message: string }> = {
  kms: { code: 'KMSInternalException', message: 'An internal error occurred (injected fault)' },
  s3: { code: 'InternalError', message: 'We encountered an internal error. Please try again. (injected fault)' },
  sqs: { code: 'InternalFailure', message: 'The request processing has failed because of an unknown error (injected fault)' },
  cloudtrail: { code: 'InternalFailure', message: 'Internal failure (injected fault)' },
};

/**
 * Admin controls for tests and benchmarks: quota, latency, faults, deny rules, counters.
 * Every handled request passes through {@link Controls.admit} once.
 */
export class Controls {
  private readonly latency = new Map<OpKey, LatencyRule>();
  private readonly faults = new Map<OpKey, FaultRule>();
  private denyRules: DenyRule[] = [];
  /** Quota rules by `account:region` (or `*` for every account and region). */
  private readonly quotas = new Map<string, QuotaRule>();
  private readonly buckets = new Map<string, Bucket>();
  private counters: OperationCounters = {};

  /** Sets the KMS cryptographic-operations quota; `null` removes it. */
  setQuota(rule: QuotaRule | null, scope: { accountId?: string; region?: string } = {}): void {
    const key = scope.accountId || scope.region ? `${scope.accountId ?? '*'}:${scope.region ?? '*'}` : '*';
    if (rule === null) this.quotas.delete(key);
    else {
      if (!(rule.rps > 0)) throw new AwsError('ValidationException', 'quota rps must be > 0');
      this.quotas.set(key, rule);
    }
    this.buckets.clear();
  }

  /** Sets latency for an operation key such as `kms:ReEncrypt`, `kms:*` or `*`; `null` removes it. */
  setLatency(op: OpKey, rule: LatencyRule | null): void {
    if (rule === null) this.latency.delete(op);
    else this.latency.set(op, rule);
  }

  /** Sets a fault for an operation key; `null` removes it. */
  setFault(op: OpKey, rule: FaultRule | null): void {
    if (rule === null) this.faults.delete(op);
    else {
      if (!(rule.probability >= 0 && rule.probability <= 1)) {
        throw new AwsError('ValidationException', 'fault probability must be between 0 and 1');
      }
      this.faults.set(op, rule);
    }
  }

  /** Adds a deny rule and returns a function that removes it. */
  addDenyRule(rule: DenyRule): () => void {
    this.denyRules.push(rule);
    return () => {
      this.denyRules = this.denyRules.filter((r) => r !== rule);
    };
  }

  clearDenyRules(): void {
    this.denyRules = [];
  }

  /** A copy of the per-operation counters. */
  getCounters(): OperationCounters {
    return structuredClone(this.counters);
  }

  resetCounters(): void {
    this.counters = {};
  }

  /** Removes every rule and counter. */
  reset(): void {
    this.latency.clear();
    this.faults.clear();
    this.denyRules = [];
    this.quotas.clear();
    this.buckets.clear();
    this.counters = {};
  }

  private count(service: ServiceName, operation: string) {
    const k = `${service}:${operation}`;
    return (this.counters[k] ??= { calls: 0, throttled: 0, faults: 0, denied: 0 });
  }

  /**
   * Applies latency, faults and (for KMS cryptographic operations) the quota to one call.
   * Deny rules that name a resource are checked by the service through {@link Controls.checkDeny}
   * once it knows the resource; rules without a resource are checked here.
   */
  async admit(service: ServiceName, operation: string, ctx: RequestContext): Promise<void> {
    const c = this.count(service, operation);
    c.calls++;
    const lat = this.first(this.latency, service, operation);
    if (lat) {
      const ms = 'fixedMs' in lat ? lat.fixedMs : lat.minMs + Math.random() * (lat.maxMs - lat.minMs);
      if (ms > 0) await sleep(ms);
    }
    const fault = this.first(this.faults, service, operation);
    if (fault && Math.random() < fault.probability) {
      c.faults++;
      if (fault.kind === 'reset') throw new ConnectionResetFault(`${service}:${operation}`);
      const f = FAULT_ERRORS[service];
      throw new AwsError(f.code, f.message, 500);
    }
    if (service === 'kms' && KMS_CRYPTO_OPERATIONS.has(operation) && !this.takeQuota(ctx)) {
      c.throttled++;
      throw new AwsError(
        'ThrottlingException',
        `You have exceeded the rate at which you may call KMS. Reduce the frequency of your calls.`,
        400,
      );
    }
  }

  /**
   * Takes one token of the KMS cryptographic quota for a call that S3 makes on a caller's
   * behalf; returns false when throttled (S3 then answers with its own throttling error).
   */
  takeQuota(ctx: Pick<RequestContext, 'accountId' | 'region'>): boolean {
    const scopeKey = `${ctx.accountId}:${ctx.region}`;
    const rule =
      this.quotas.get(scopeKey) ??
      this.quotas.get(`${ctx.accountId}:*`) ??
      this.quotas.get(`*:${ctx.region}`) ??
      this.quotas.get('*');
    if (!rule) return true;
    const now = performance.now();
    const burst = rule.burst ?? rule.rps;
    let b = this.buckets.get(scopeKey);
    if (!b || b.rule !== rule) {
      b = { rule, tokens: burst, last: now };
      this.buckets.set(scopeKey, b);
    }
    b.tokens = Math.min(burst, b.tokens + ((now - b.last) / 1000) * rule.rps);
    b.last = now;
    if (b.tokens < 1) return false;
    b.tokens -= 1;
    return true;
  }

  /** Throws AccessDeniedException (or S3's AccessDenied) when a deny rule matches. */
  checkDeny(service: ServiceName, operation: string, ctx: RequestContext, resource?: string): void {
    for (const r of this.denyRules) {
      if (r.service && r.service !== service) continue;
      if (r.operation && r.operation !== operation) continue;
      if (r.caller && r.caller !== ctx.accessKeyId) continue;
      if (r.resource && r.resource !== resource) continue;
      this.count(service, operation).denied++;
      const who = `arn:aws:iam::${ctx.accountId}:user/${ctx.accessKeyId}`;
      if (service === 's3') throw new AwsError('AccessDenied', 'Access Denied', 403);
      if (service === 'kms') {
        throw new AwsError(
          'AccessDeniedException',
          `User: ${who} is not authorized to perform: kms:${operation} on resource: ${resource ?? '*'} because no identity-based policy allows the kms:${operation} action`,
          400,
        );
      }
      throw new AwsError('AccessDenied', `User: ${who} is not authorized to perform: ${service}:${operation}`, 403);
    }
  }

  private first<T>(m: Map<OpKey, T>, service: ServiceName, operation: string): T | undefined {
    // Usually no rule is set at all: then there are no operation keys to build on every request.
    if (m.size === 0) return undefined;
    for (const k of opKeysFor(service, operation)) {
      const v = m.get(k);
      if (v) return v;
    }
    return undefined;
  }
}
