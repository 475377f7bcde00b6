/**
 * `rekey plan`: a read-only dry run of a migration. It lists every source in full (cheap LIST
 * calls or keyset pages), inspects a sample of the items (or all of them) with the source's
 * verify-mode `inspect`, and from that counts items per current key and estimates the KMS
 * requests, the time they take at the KMS budget, and the KMS and S3 request cost. It also
 * warns about what a migration of these sources needs attention for.
 *
 * Estimates follow what the sources do (see `packages/sources/src`): an `update-encryption`
 * object costs one KMS request, an in-place copy two, a multipart copy two per part plus two;
 * a KMS blob or wrapped key one ReEncrypt (plus one per `from` key tried, and one for the
 * target, when it is not under a `from` key); a verify pass one ReEncrypt per blob and none for
 * SSE-KMS objects (S3 reports their key).
 */
import { setMaxListeners } from 'node:events';
import {
  GetBucketVersioningCommand,
  GetObjectAclCommand,
  ListObjectVersionsCommand,
  type S3Client,
} from '@aws-sdk/client-s3';
import type { Inspection, ItemRef, KeyPlan, Source, SourceSpec } from '@rekey/core';
import { FleetError } from './errors.js';
import { mapBounded } from './pool.js';
import { readAheadWindow, windowedReadAhead } from './read-ahead.js';

/** One source to plan, with the keys of its migration resolved to ARNs. */
export interface PlanTarget {
  readonly spec: SourceSpec;
  readonly keys: KeyPlan;
  /** Item references per enumeration page (the migration's `batchSize`). @defaultValue 100 */
  readonly pageSize?: number;
}

/** Request prices in USD. Defaults: AWS list prices for KMS and S3 Standard in us-east-1. */
export interface PlanPrices {
  /** Per 10,000 KMS requests. @defaultValue 0.03 */
  readonly kmsPer10k?: number;
  /** Per 1,000 S3 PUT, COPY, POST and LIST requests (UpdateObjectEncryption is counted here too). @defaultValue 0.005 */
  readonly s3WritePer1k?: number;
  /** Per 1,000 S3 GET, HEAD and other requests. @defaultValue 0.0004 */
  readonly s3ReadPer1k?: number;
}

/** Input of {@link planMigration}. */
export interface PlanOptions {
  readonly targets: readonly PlanTarget[];
  /** Builds the source of a spec (the same factory the fleet uses). */
  readonly buildSource: (spec: SourceSpec) => Promise<Source>;
  /** For bucket checks (versioning, noncurrent versions) and ACL checks; skipped when absent. */
  readonly s3?: S3Client;
  /** Items inspected per source. @defaultValue 1000 */
  readonly sampleSize?: number;
  /** Inspect every item instead of a sample. @defaultValue false */
  readonly all?: boolean;
  /** The fleet's KMS budget in requests per second. */
  readonly budgetRps: number;
  readonly prices?: PlanPrices;
  /** Items inspected at once. @defaultValue 16 */
  readonly concurrency?: number;
  readonly signal?: AbortSignal;
}

/** Estimated requests of one source or of the whole plan. */
export interface PlanRequests {
  readonly kms: number;
  readonly s3Write: number;
  readonly s3Read: number;
}

/** What the plan found in one source. */
export interface SourcePlan {
  readonly name: string;
  readonly kind: string;
  readonly strategy?: string;
  /** Items the enumeration lists (every page). */
  readonly items: number;
  /** Items inspected. */
  readonly sampled: number;
  /** Inspected items per key ARN they are under; `(no KMS key)` and `(unknown key)` otherwise, `(gone)` for vanished items. */
  readonly byKey: Readonly<Record<string, number>>;
  /** Items under a `from` key: counted exactly when every item was inspected, else scaled from the sample. */
  readonly underOldKeys: number;
  readonly exact: boolean;
  readonly requests: PlanRequests;
  readonly warnings: readonly string[];
}

/** The plan of all sources, with totals. */
export interface MigrationPlan {
  readonly sources: readonly SourcePlan[];
  readonly requests: PlanRequests;
  readonly budgetRps: number;
  /** At least this long at the budget: KMS requests / budget rps. */
  readonly durationSeconds: number;
  readonly cost: { readonly kms: number; readonly s3: number; readonly total: number };
  readonly prices: Required<PlanPrices>;
  readonly warnings: readonly string[];
}

const GiB = 1024 ** 3;
const DEFAULT_PART = 512 * 1024 ** 2;
const MAX_PARTS = 10_000;

const num = (v: unknown) => (typeof v === 'number' && Number.isFinite(v) ? v : 0);

/** KMS and S3 requests to move one item that is under a `from` key. */
function moveCost(t: PlanTarget, facts: Inspection['facts']): PlanRequests {
  const s = t.spec;
  if (s.kind === 'postgres') return { kms: 1, s3Write: 0, s3Read: 0 };
  if (s.kind === 's3-envelope') {
    // One ReEncrypt of the wrapped key; a copy of an object that is also SSE-KMS at rest makes S3 call KMS twice.
    return { kms: 1 + (facts?.['sse'] === 'aws:kms' ? 2 : 0), s3Write: 1, s3Read: 0 };
  }
  const size = num(facts?.['size']);
  const multipart = s.strategy === 'multipart-copy' ? size > 0 : s.strategy === 'copy' && size > s.multipartThresholdBytes;
  if (s.strategy === 'update-encryption') return { kms: 1, s3Write: 1, s3Read: 0 };
  if (!multipart) return { kms: 2, s3Write: 1, s3Read: 0 };
  const parts = Math.max(1, Math.ceil(size / Math.max(DEFAULT_PART, Math.ceil(size / MAX_PARTS))));
  // CreateMultipartUpload + parts + CompleteMultipartUpload; GetObjectTagging is a read.
  return { kms: 2 * parts + 2, s3Write: parts + 2, s3Read: 1 };
}

/** KMS requests for an item that is not under a `from` key (blob sources must ask KMS to find out). */
function skipCost(t: PlanTarget): number {
  if (t.spec.kind === 's3-sse-kms') return 0;
  if (t.spec.kind === 'postgres' && t.spec.keyIdColumn !== undefined) return 0;
  return t.keys.from.filter((k) => k !== t.keys.to).length + 1;
}

/** KMS requests of the verify pass for one item. */
function verifyCost(t: PlanTarget): number {
  if (t.spec.kind === 's3-sse-kms') return 0;
  if (t.spec.kind === 'postgres' && t.spec.keyIdColumn !== undefined) return 0;
  return 1;
}

function keyLabel(i: Inspection): string {
  if (i.state === 'gone') return '(gone)';
  if (i.keyArn) return i.keyArn;
  return i.facts?.['sse'] !== undefined && i.facts['sse'] !== 'aws:kms' ? '(no KMS key)' : '(unknown key)';
}

async function bucketWarnings(s3: S3Client, spec: Extract<SourceSpec, { kind: 's3-sse-kms' | 's3-envelope' }>, signal: AbortSignal): Promise<{ warnings: string[]; reads: number }> {
  const warnings: string[] = [];
  const v = await s3.send(new GetBucketVersioningCommand({ Bucket: spec.bucket }), { abortSignal: signal });
  if (v.Status !== 'Enabled' && v.Status !== 'Suspended') return { warnings, reads: 1 };
  const page = await s3.send(new ListObjectVersionsCommand({ Bucket: spec.bucket, ...(spec.prefix ? { Prefix: spec.prefix } : {}), MaxKeys: 1000 }), { abortSignal: signal });
  const noncurrent = (page.Versions ?? []).filter((x) => x.IsLatest === false).length;
  const more = page.IsTruncated === true ? ' or more' : '';
  if (noncurrent > 0) {
    const includes = spec.kind === 's3-sse-kms' && spec.includeVersions;
    warnings.push(
      includes
        ? `bucket ${spec.bucket} is versioned with ${noncurrent}${more} noncurrent versions; they are migrated too (includeVersions), which costs the same per version`
        : `bucket ${spec.bucket} is versioned with ${noncurrent}${more} noncurrent versions; they stay under their old keys (set includeVersions: true with update-encryption to migrate them, or expire them) and the old key must stay enabled to read them`,
    );
  }
  return { warnings, reads: 2 };
}

/** Whether an object ACL grants anything beyond its owner's FULL_CONTROL (which a copy would reset). */
async function hasCustomAcl(s3: S3Client, bucket: string, item: ItemRef, signal: AbortSignal): Promise<boolean> {
  if (item.kind !== 's3') return false;
  const acl = await s3.send(new GetObjectAclCommand({ Bucket: bucket, Key: item.key, ...(item.versionId ? { VersionId: item.versionId } : {}) }), { abortSignal: signal });
  const owner = acl.Owner?.ID;
  return (acl.Grants ?? []).some((g) => !(g.Permission === 'FULL_CONTROL' && g.Grantee?.Type === 'CanonicalUser' && g.Grantee.ID === owner));
}

async function planSource(o: PlanOptions, t: PlanTarget, signal: AbortSignal): Promise<SourcePlan> {
  const source = await o.buildSource(t.spec);
  const sampleSize = o.all ? Number.POSITIVE_INFINITY : (o.sampleSize ?? 1000);
  const sample: ItemRef[] = [];
  let items = 0;
  let cursor: string | null = null;
  do {
    const page = await source.list(cursor, signal);
    items += page.items.length;
    for (const it of page.items) if (sample.length < sampleSize) sample.push(it);
    cursor = page.next;
  } while (cursor !== null);

  const ctx = { signal, migrationId: 'plan', dryRun: true };
  const copies = t.spec.kind === 's3-envelope' || (t.spec.kind === 's3-sse-kms' && t.spec.strategy !== 'update-encryption');
  const s3 = o.s3;
  const bucket = t.spec.kind === 'postgres' ? undefined : t.spec.bucket;
  const concurrency = o.concurrency ?? 16;
  // Postgres rows are read a window at a time, as a worker reads a batch.
  const ahead = windowedReadAhead(source, sample, { window: readAheadWindow(concurrency), signal });
  const inspected = await mapBounded(sample, concurrency, async (item, index) => {
    const readAhead = await ahead?.(index);
    const insp = await source.inspect(item, t.keys, readAhead === undefined ? ctx : { ...ctx, readAhead });
    const acl = copies && s3 && bucket && insp.state !== 'gone' ? await hasCustomAcl(s3, bucket, item, signal) : false;
    return { insp, acl };
  });
  const seen = inspected.filter((x) => x !== undefined);

  const byKey: Record<string, number> = {};
  let old = 0;
  const move = { kms: 0, s3Write: 0, s3Read: 0 };
  let skipKms = 0;
  let big = 0;
  let locked = 0;
  let legacy = 0;
  let acls = 0;
  for (const { insp, acl } of seen) {
    const label = keyLabel(insp);
    byKey[label] = (byKey[label] ?? 0) + 1;
    const underOld = insp.state === 'old-key' || (insp.keyArn !== undefined && t.keys.from.includes(insp.keyArn) && t.keys.refresh !== true);
    if (underOld) {
      old++;
      const c = moveCost(t, insp.facts);
      move.kms += c.kms;
      move.s3Write += c.s3Write;
      move.s3Read += c.s3Read;
    } else if (insp.state !== 'gone') {
      skipKms += skipCost(t);
    }
    if (num(insp.facts?.['size']) > 5 * GiB) big++;
    if (insp.facts?.['objectLock'] === true) locked++;
    if (insp.facts?.['legacyWrap'] === true) legacy++;
    if (acl) acls++;
  }
  const exact = seen.length === items;
  const scale = seen.length === 0 ? 0 : items / seen.length;
  const underOldKeys = exact ? old : Math.round(old * scale);
  const isS3 = t.spec.kind !== 'postgres';
  const pageSize = t.pageSize ?? 100;
  const listPages = Math.ceil(items / pageSize);
  const requests: PlanRequests = {
    kms: Math.ceil((move.kms + skipKms) * scale) + items * verifyCost(t),
    // LIST pages of the re-encrypt and verify enumerations, then the writes.
    s3Write: isS3 ? Math.ceil(move.s3Write * scale) + 2 * Math.max(1, listPages) : 0,
    // HEAD per item by the worker and again by verify.
    s3Read: isS3 ? Math.ceil(move.s3Read * scale) + 2 * items : 0,
  };
  const warnings: string[] = [];
  const of = exact ? '' : ` of ${seen.length} sampled`;
  if (big > 0) {
    warnings.push(
      t.spec.kind === 's3-sse-kms' && t.spec.strategy === 'update-encryption'
        ? `${big}${of} objects are over 5 GiB; update-encryption handles them without copying`
        : `${big}${of} objects are over 5 GiB; a single CopyObject stops at 5 GiB, so they need a multipart copy (2 KMS requests per part)`,
    );
  }
  if (locked > 0) warnings.push(`${locked}${of} objects are under Object Lock (retention or legal hold); a copy writes a new version and can't remove the locked one`);
  if (legacy > 0) warnings.push(`${legacy}${of} objects use the legacy S3EC "kms" wrap (no encryption context) and will be not-in-scope; re-encrypt them with an S3 Encryption Client v2 first`);
  if (acls > 0) warnings.push(`${acls}${of} objects have ACL grants beyond the owner; a copy resets the ACL to the bucket default (use update-encryption, or re-apply the ACLs)`);
  if (s3 && isS3) {
    const b = await bucketWarnings(s3, t.spec as Extract<SourceSpec, { kind: 's3-sse-kms' | 's3-envelope' }>, signal);
    warnings.push(...b.warnings);
  }
  await source.close?.();
  return {
    name: t.spec.name,
    kind: t.spec.kind,
    ...(t.spec.kind === 's3-sse-kms' ? { strategy: t.spec.strategy } : {}),
    items,
    sampled: seen.length,
    byKey,
    underOldKeys,
    exact,
    requests,
    warnings,
  };
}

/**
 * Plans a migration without writing anything: item counts per key, KMS requests, duration at
 * the budget, request cost and warnings, per source and in total.
 *
 * @throws FleetError `bad-input` when the budget, sample size or a price is not a positive number.
 * @example
 * const plan = await planMigration({ targets, buildSource, s3, budgetRps: 100 });
 * console.log(planLines(plan).join('\n'));
 */
export async function planMigration(o: PlanOptions): Promise<MigrationPlan> {
  if (!(o.budgetRps > 0)) throw new FleetError('bad-input', `the KMS budget must be a positive number of requests per second, got ${o.budgetRps}`);
  if (o.sampleSize !== undefined && !(Number.isInteger(o.sampleSize) && o.sampleSize >= 1)) {
    throw new FleetError('bad-input', `the sample size must be a whole number of at least 1, got ${o.sampleSize}`);
  }
  const prices: Required<PlanPrices> = { kmsPer10k: 0.03, s3WritePer1k: 0.005, s3ReadPer1k: 0.0004, ...o.prices };
  for (const [k, v] of Object.entries(prices)) {
    if (!(typeof v === 'number' && v >= 0 && Number.isFinite(v))) throw new FleetError('bad-input', `price ${k} must be a number of at least 0, got ${String(v)}`);
  }
  const signal = o.signal ?? new AbortController().signal;
  // Each sampled item in flight (and each SDK call in it) listens on this signal; without this,
  // Node warns of a listener leak from 11 on, in the middle of `rekey plan`'s output.
  setMaxListeners((o.concurrency ?? 16) * 8 + 16, signal);
  const sources: SourcePlan[] = [];
  for (const t of o.targets) sources.push(await planSource(o, t, signal));
  const requests = sources.reduce((a, s) => ({ kms: a.kms + s.requests.kms, s3Write: a.s3Write + s.requests.s3Write, s3Read: a.s3Read + s.requests.s3Read }), { kms: 0, s3Write: 0, s3Read: 0 });
  const kms = (requests.kms / 10_000) * prices.kmsPer10k;
  const s3 = (requests.s3Write / 1000) * prices.s3WritePer1k + (requests.s3Read / 1000) * prices.s3ReadPer1k;
  return {
    sources,
    requests,
    budgetRps: o.budgetRps,
    durationSeconds: requests.kms / o.budgetRps,
    cost: { kms, s3, total: kms + s3 },
    prices,
    warnings: sources.flatMap((s) => s.warnings.map((w) => `${s.name}: ${w}`)),
  };
}

/** The plan as lines for the terminal. */
export function planLines(p: MigrationPlan): string[] {
  const usd = (n: number) => `$${n < 0.01 && n > 0 ? n.toFixed(4) : n.toFixed(2)}`;
  const lines: string[] = [];
  for (const s of p.sources) {
    lines.push(`${s.name} (${s.kind}${s.strategy ? `, ${s.strategy}` : ''}): ${s.items} items, ${s.sampled} inspected${s.exact ? '' : ' (sample)'}`);
    for (const [k, n] of Object.entries(s.byKey).sort((a, b) => b[1] - a[1])) lines.push(`  ${n}\t${k}`);
    lines.push(`  under the old keys: ${s.underOldKeys}${s.exact ? '' : ' (estimated from the sample)'}`);
    lines.push(`  requests: KMS ${s.requests.kms}, S3 PUT/COPY/LIST ${s.requests.s3Write}, S3 HEAD/GET ${s.requests.s3Read}`);
    for (const w of s.warnings) lines.push(`  (!) ${w}`);
  }
  const d = p.durationSeconds;
  const dur = d >= 3600 ? `${(d / 3600).toFixed(1)} h` : d >= 60 ? `${(d / 60).toFixed(1)} min` : `${d.toFixed(1)} s`;
  lines.push(`total: ${p.requests.kms} KMS requests -> at least ${dur} at ${p.budgetRps} rps`);
  lines.push(`cost: KMS ${usd(p.cost.kms)} (${p.prices.kmsPer10k}/10k) + S3 ${usd(p.cost.s3)} = ${usd(p.cost.total)}`);
  return lines;
}
