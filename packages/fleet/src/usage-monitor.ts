import { setTimeout as sleep } from 'node:timers/promises';
import { GetKeyLastUsageCommand, type KMSClient } from '@aws-sdk/client-kms';
import { LookupEventsCommand, type CloudTrailClient, type Event as TrailEvent } from '@aws-sdk/client-cloudtrail';
import type { Logger } from 'pino';
import type { Migration } from '@rekey/core';
import type { OldKeyUsage, UsageStretch } from './gate.js';
import type { FleetMetrics } from './metrics.js';

/** Migration states whose old keys the monitor watches: verification has started and the keys are still enabled. */
export const MONITORED_STATES = ['verifying', 'ready', 'blocked'] as const;

/** Operations that put new data under a key: after verification started they block the gate. */
const ENCRYPT_TYPE = /^(Encrypt|GenerateDataKey(WithoutPlaintext|Pair|PairWithoutPlaintext)?)$/;

/** One use of an old key as the monitor sorts it. */
export type UseKind = 'fleet' | 'blocker' | 'reader' | 'ignore';

/** What one CloudTrail event says about one old key. */
export interface ClassifiedUse {
  readonly kind: UseKind;
  /** The KMS operation, with the direction for ReEncrypt (`ReEncrypt (to old key)` / `ReEncrypt (from old key)`). */
  readonly operation: string;
  /** Who called: the IAM ARN and access key id, plus the AWS service that called on its behalf. */
  readonly caller: string;
  readonly eventId: string | undefined;
  readonly time: Date;
}

type UsageRow = OldKeyUsage['blockers'][number];

function keyIdOf(arn: string): string {
  return arn.slice(arn.lastIndexOf('/') + 1);
}

function refersTo(ref: unknown, keyArn: string): boolean {
  return typeof ref === 'string' && (ref === keyArn || ref === keyIdOf(keyArn));
}

function record(v: unknown): Record<string, unknown> {
  return v && typeof v === 'object' && !Array.isArray(v) ? (v as Record<string, unknown>) : {};
}

/** Compiles principal ARN patterns (`*` matches any run of characters) into one matcher. */
export function principalMatcher(patterns: readonly string[]): (arn: string | undefined) => boolean {
  if (patterns.length === 0) return () => false;
  const res = patterns.map((p) => new RegExp(`^${p.split('*').map((part) => part.replace(/[.+?^${}()|[\]\\]/g, '\\$&')).join('.*')}$`));
  return (arn) => arn !== undefined && res.some((re) => re.test(arn));
}

/**
 * Sorts one CloudTrail KMS event for one old key: the fleet's own call (its access key id, or a
 * principal of `fleetPrincipal`: the caller's ARN or, for an assumed role, the role that issued
 * the session; also when S3 calls KMS on its behalf), an encrypt-type use by someone else (a
 * blocker), a read by someone else (a reader), or not a cryptographic use at all (DescribeKey,
 * failed calls).
 */
export function classifyEvent(
  ev: TrailEvent,
  keyArn: string,
  fleetAccessKeyIds: ReadonlySet<string>,
  fleetPrincipal: (arn: string | undefined) => boolean = () => false,
): ClassifiedUse {
  let detail: Record<string, unknown> = {};
  try {
    detail = record(ev.CloudTrailEvent ? JSON.parse(ev.CloudTrailEvent) : {});
  } catch {
    // A CloudTrailEvent that is not JSON still has the top-level fields below.
  }
  const identity = record(detail['userIdentity']);
  const accessKeyId = typeof identity['accessKeyId'] === 'string' ? identity['accessKeyId'] : ev.AccessKeyId;
  const arn = typeof identity['arn'] === 'string' ? identity['arn'] : ev.Username;
  const invokedBy = typeof identity['invokedBy'] === 'string' ? identity['invokedBy'] : undefined;
  const caller = `${arn ?? 'unknown principal'}${accessKeyId ? ` (access key ${accessKeyId})` : ''}${invokedBy ? ` via ${invokedBy}` : ''}`;
  const name = ev.EventName ?? String(detail['eventName'] ?? '');
  const time = ev.EventTime ?? new Date(String(detail['eventTime'] ?? 0));
  const base = { caller, eventId: ev.EventId, time };
  // A failed call put nothing under the key.
  if (detail['errorCode'] !== undefined) return { ...base, kind: 'ignore', operation: name };
  let kind: UseKind;
  let operation = name;
  if (ENCRYPT_TYPE.test(name)) {
    kind = 'blocker';
  } else if (name === 'Decrypt') {
    kind = 'reader';
  } else if (name === 'ReEncrypt') {
    const params = record(detail['requestParameters']);
    const resources = (ev.Resources ?? []).map((r) => r.ResourceName);
    // CloudTrail lists the source key first and the destination key second.
    // One resource means source and destination are the same key.
    const toOld = refersTo(params['destinationKeyId'], keyArn) || (resources.length > 0 && resources[resources.length - 1] === keyArn);
    kind = toOld ? 'blocker' : 'reader';
    operation = toOld ? 'ReEncrypt (to old key)' : 'ReEncrypt (from old key)';
  } else {
    return { ...base, kind: 'ignore', operation: name };
  }
  if (accessKeyId !== undefined && fleetAccessKeyIds.has(accessKeyId)) return { ...base, kind: 'fleet', operation };
  const issuer = record(record(identity['sessionContext'])['sessionIssuer'])['arn'];
  if (fleetPrincipal(arn) || fleetPrincipal(typeof issuer === 'string' ? issuer : undefined)) return { ...base, kind: 'fleet', operation };
  return { ...base, kind, operation };
}

/** Adds one use to a list of (key, operation, caller) rows, keeping the count and the newest time. */
function tally(rows: Map<string, UsageRow>, key: string, use: ClassifiedUse): void {
  const k = `${key}\u0000${use.operation}\u0000${use.caller}`;
  const prev = rows.get(k);
  const at = use.time.toISOString();
  rows.set(k, prev ? { ...prev, count: prev.count + 1, lastSeen: prev.lastSeen > at ? prev.lastSeen : at } : { key, operation: use.operation, caller: use.caller, lastSeen: at, count: 1 });
}

/** The caller of a blocker that GetKeyLastUsage reported before CloudTrail delivered its event. */
const PENDING_CALLER = /^unknown caller \(CloudTrail event (.+) not delivered yet\)$/;

/**
 * The rows of one look merged with those of earlier looks of the same verify round: each look
 * reads the whole window again, so a row's count is the larger of the two and its last use the
 * later. A row only an earlier look has stays (this look may have read only the newest events).
 * An earlier "not delivered yet" row goes once CloudTrail has delivered its event (`seen`): the
 * look has counted it under its real caller.
 */
export function mergeRows(earlier: readonly UsageRow[], now: ReadonlyMap<string, UsageRow>, seen: ReadonlySet<string>): UsageRow[] {
  const out = new Map<string, UsageRow>();
  for (const r of earlier) {
    const pending = PENDING_CALLER.exec(r.caller)?.[1];
    if (pending !== undefined && seen.has(pending)) continue;
    out.set(`${r.key}\u0000${r.operation}\u0000${r.caller}`, r);
  }
  for (const [k, r] of now) {
    const e = out.get(k);
    out.set(k, e ? { ...r, count: Math.max(e.count, r.count), lastSeen: e.lastSeen > r.lastSeen ? e.lastSeen : r.lastSeen } : r);
  }
  return [...out.values()];
}

/**
 * Adds the stretch one look read of `key` to what earlier looks read (`read`, all keys), merging
 * stretches that touch; returns every key's merged stretches and, for `key`, the parts of
 * [`sinceMs`, `toMs`) that none of them covers.
 */
export function coverStretch(read: readonly UsageStretch[], key: string, fromMs: number, toMs: number, sinceMs: number): { read: UsageStretch[]; unread: UsageStretch[] } {
  const mine = read.filter((r) => r.key === key).map((r) => [Date.parse(r.from), Date.parse(r.to)] as [number, number]);
  // A look whose pages are all newer than `toMs` (a busy key) adds nothing.
  if (fromMs < toMs) mine.push([fromMs, toMs]);
  mine.sort((a, b) => a[0] - b[0]);
  const merged: [number, number][] = [];
  for (const [f, t] of mine) {
    const last = merged.at(-1);
    if (last && f <= last[1]) last[1] = Math.max(last[1], t);
    else merged.push([f, t]);
  }
  const unread: UsageStretch[] = [];
  let at = sinceMs;
  for (const [f, t] of merged) {
    const end = Math.min(f, toMs);
    if (end > at) unread.push({ key, from: new Date(at).toISOString(), to: new Date(end).toISOString() });
    at = Math.max(at, t);
    if (at >= toMs) break;
  }
  if (at < toMs) unread.push({ key, from: new Date(at).toISOString(), to: new Date(toMs).toISOString() });
  const iso = ([f, t]: [number, number]): UsageStretch => ({ key, from: new Date(f).toISOString(), to: new Date(t).toISOString() });
  return { read: [...read.filter((r) => r.key !== key), ...merged.map(iso)], unread };
}

/**
 * A shared gate that lets at most `rps` requests through per second, in call order
 * (CloudTrail LookupEvents allows 2 requests per second per account and Region).
 */
export function createRateGate(rps: number): { take(): Promise<void> } {
  if (!(rps > 0)) throw new RangeError(`rate gate: requests per second must be above 0, got ${rps}`);
  const spacing = 1000 / rps;
  let next = 0;
  return {
    async take() {
      const now = Date.now();
      const at = Math.max(now, next);
      next = at + spacing;
      if (at > now) await sleep(at - now);
    },
  };
}

/** Dependencies and settings of the old-key usage monitor. */
export interface UsageMonitorDeps {
  readonly kms: KMSClient;
  readonly cloudtrail: CloudTrailClient;
  /** Every migration (the monitor picks those in {@link MONITORED_STATES}). */
  readonly migrations: () => Promise<Migration[]>;
  readonly getUsage: (id: string) => Promise<OldKeyUsage | null>;
  readonly setUsage: (id: string, usage: OldKeyUsage) => Promise<void>;
  /** Whether this process should watch a migration (the coordinator holding its lease does). @defaultValue always */
  readonly owns?: (id: string) => Promise<boolean>;
  readonly metrics?: FleetMetrics;
  readonly logger: Logger;
  /** Access key ids of the fleet; resolved once from the KMS client's credentials when absent. */
  readonly fleetAccessKeyIds?: readonly string[];
  /** IAM principal ARN patterns whose calls are also the fleet's (`gate.fleetPrincipals`). */
  readonly fleetPrincipals?: readonly string[];
  /** Requests per second to KMS GetKeyLastUsage and CloudTrail LookupEvents together. @defaultValue 2 */
  readonly requestsPerSecond?: number;
  /** Time between two looks at every monitored migration. @defaultValue 60000 */
  readonly intervalMs?: number;
  /** LookupEvents pages (50 events each) read per key per look; the rest is logged as skipped. @defaultValue 200 */
  readonly maxPagesPerKey?: number;
  /**
   * The gate's quiet window for a migration, in seconds: how late CloudTrail may deliver. A look
   * counts as having read a stretch only up to this long before it began. @defaultValue 0
   */
  readonly quietWindowSeconds?: (m: Migration) => number;
}

/** Watches the old keys of verified migrations and stores what it sees for the gate. */
export interface UsageMonitor {
  /** Looks at one migration's old keys now and stores the result. */
  check(m: Migration): Promise<OldKeyUsage>;
  /** Looks at every monitored migration this process owns. */
  checkAll(): Promise<void>;
  /** Looks now when the stored usage can't speak for the current verify pass (none, stale round, or taken before verify ended). */
  ensureFresh(m: Migration): Promise<void>;
  /** The access key ids the monitor treats as the fleet. */
  fleetIdentity(): Promise<ReadonlySet<string>>;
  start(): void;
  stop(): Promise<void>;
}

/**
 * Creates the old-key usage monitor. For each `from` key of a migration in verification or after,
 * it reads KMS GetKeyLastUsage and CloudTrail LookupEvents (ResourceName = key ARN, from the
 * migration's `verifyStartedAt`, paged) through one shared rate gate, sorts the events into the
 * fleet's own calls, blockers (encrypt-type use by others) and readers (Decrypt by others), and
 * stores an {@link OldKeyUsage} that the gate reads.
 */
export function createUsageMonitor(deps: UsageMonitorDeps): UsageMonitor {
  const gate = createRateGate(deps.requestsPerSecond ?? 2);
  const maxPages = deps.maxPagesPerKey ?? 200;
  const isFleetPrincipal = principalMatcher(deps.fleetPrincipals ?? []);
  let identity: Promise<ReadonlySet<string>> | undefined;
  let timer: NodeJS.Timeout | undefined;
  let running: Promise<void> | undefined;
  let stopped = true;
  let halting = false;

  function fleetIdentity(): Promise<ReadonlySet<string>> {
    identity ??= (async () => {
      if (deps.fleetAccessKeyIds?.length) return new Set(deps.fleetAccessKeyIds);
      const creds = await deps.kms.config.credentials();
      return new Set([creds.accessKeyId]);
    })();
    identity.catch(() => {
      identity = undefined;
    });
    return identity;
  }

  async function lookup(keyArn: string, since: Date): Promise<{ events: TrailEvent[]; truncated: boolean }> {
    const events: TrailEvent[] = [];
    let token: string | undefined;
    for (let page = 0; page < maxPages; page++) {
      await gate.take();
      const r = await deps.cloudtrail.send(new LookupEventsCommand({
        LookupAttributes: [{ AttributeKey: 'ResourceName', AttributeValue: keyArn }],
        StartTime: since,
        MaxResults: 50,
        ...(token ? { NextToken: token } : {}),
      }));
      events.push(...(r.Events ?? []));
      token = r.NextToken;
      if (!token) return { events, truncated: false };
    }
    return { events, truncated: true };
  }

  async function check(m: Migration): Promise<OldKeyUsage> {
    if (!m.verifyStartedAt) throw new RangeError(`migration ${m.id} has not started verification; there is no window to watch`);
    // What earlier looks of this verify round saw stays: a look that could read only the newest
    // events (see maxPagesPerKey) must not drop a blocker an earlier look found.
    const prev = await deps.getUsage(m.id);
    const earlier = prev && prev.since === m.verifyStartedAt && prev.checkedAt !== null ? prev : undefined;
    const skipped: string[] = [];
    const checkedAt = new Date();
    // CloudTrail times have second precision: an event in the same second as the start counts (the safe side).
    const since = new Date(Math.floor(Date.parse(m.verifyStartedAt) / 1000) * 1000);
    // What the looks of this round have read, per key: a look that hit maxPagesPerKey read only
    // the newest events, and what neither it nor an earlier look read keeps the gate red. A
    // usage stored before stretches were kept read the whole window unless it skipped.
    // Events of the last quiet window before a look may not be delivered yet: later looks read them.
    const lateMs = (deps.quietWindowSeconds?.(m) ?? 0) * 1000;
    let read: UsageStretch[] = [];
    if (earlier?.read !== undefined) read = [...earlier.read];
    else if (earlier?.checkedAt && !earlier.skipped?.length) {
      const to = Date.parse(earlier.checkedAt) - lateMs;
      if (to > since.getTime()) read = m.keys.from.map((key) => ({ key, from: since.toISOString(), to: new Date(to).toISOString() }));
    }
    const unread: UsageStretch[] = [];
    const fleet = await fleetIdentity();
    const blockers = new Map<string, UsageRow>();
    const readers = new Map<string, UsageRow>();
    const lastUse = new Map<string, number>();
    const seenIds = new Set<string>();
    for (const key of m.keys.from) {
      await gate.take();
      const last = await deps.kms.send(new GetKeyLastUsageCommand({ KeyId: key }));
      const { events, truncated } = await lookup(key, since);
      const oldest = events.reduce<Date | undefined>((o, ev) => (ev.EventTime && (!o || ev.EventTime < o) ? ev.EventTime : o), undefined);
      // CloudTrail times have second precision: the oldest second read may have more events unread.
      const readFrom = truncated ? (oldest ? Math.floor(oldest.getTime() / 1000) * 1000 + 1000 : checkedAt.getTime()) : since.getTime();
      const cover = coverStretch(read, key, readFrom, checkedAt.getTime() - lateMs, since.getTime());
      read = cover.read;
      unread.push(...cover.unread);
      if (truncated) {
        const line = `${key}: more CloudTrail events since verification started than one look reads (${maxPages * 50}); this look skipped those before ${oldest?.toISOString() ?? 'its newest page'}, uses seen by earlier looks are kept`;
        skipped.push(line);
        deps.logger.warn({ migration: m.id, key, pages: maxPages, oldest: oldest?.toISOString() }, 'old-key usage: more CloudTrail events than the monitor reads per look; older ones were skipped in this look');
      }
      for (const ev of events) {
        if (ev.EventId) seenIds.add(ev.EventId);
        if (ev.EventTime && ev.EventTime < since) continue;
        const use = classifyEvent(ev, key, fleet, isFleetPrincipal);
        if (use.kind === 'blocker') tally(blockers, key, use);
        else if (use.kind === 'reader') tally(readers, key, use);
        else continue;
        const label = `${key}\u0000${use.operation}`;
        lastUse.set(label, Math.max(lastUse.get(label) ?? 0, use.time.getTime() / 1000));
      }
      // CloudTrail can deliver minutes late; GetKeyLastUsage already knows about an encrypt-type use.
      const u = last.KeyLastUsage;
      if (u?.Timestamp && u.Timestamp >= since && u.Operation && ENCRYPT_TYPE.test(u.Operation) && !(u.CloudTrailEventId && seenIds.has(u.CloudTrailEventId))) {
        tally(blockers, key, {
          kind: 'blocker',
          operation: u.Operation,
          caller: `unknown caller (CloudTrail event ${u.CloudTrailEventId ?? 'without id'} not delivered yet)`,
          eventId: u.CloudTrailEventId,
          time: u.Timestamp,
        });
      }
    }
    const usage: OldKeyUsage = {
      blockers: mergeRows(earlier?.blockers ?? [], blockers, seenIds),
      readers: mergeRows(earlier?.readers ?? [], readers, seenIds),
      checkedAt: checkedAt.toISOString(),
      since: m.verifyStartedAt,
      ...(skipped.length > 0 && { skipped }),
      read,
      ...(unread.length > 0 && { unread }),
    };
    await deps.setUsage(m.id, usage);
    for (const [label, seconds] of lastUse) {
      const [key, operation] = label.split('\u0000') as [string, string];
      deps.metrics?.oldKeyLastUse.set({ key, operation }, seconds);
    }
    return usage;
  }

  /** Checks; a failure is stored with the usage so the gate says why it can't vouch for the keys. */
  async function checkOrRecord(m: Migration): Promise<void> {
    try {
      await check(m);
    } catch (err) {
      const reason = (err as Error).message.split('\n')[0] ?? 'unknown error';
      deps.logger.warn({ migration: m.id, err: reason }, 'old-key usage check failed; it is retried');
      const prev = await deps.getUsage(m.id).catch(() => null);
      await deps.setUsage(m.id, { blockers: prev?.blockers ?? [], readers: prev?.readers ?? [], checkedAt: prev?.checkedAt ?? null, ...(prev?.since ? { since: prev.since } : {}), error: `${(err as Error).name}: ${reason}` })
        .catch((e: unknown) => deps.logger.warn({ migration: m.id, err: (e as Error).message }, 'could not store the usage check failure'));
    }
  }

  async function checkAll(): Promise<void> {
    const all = await deps.migrations();
    for (const m of all) {
      if (halting) return;
      if (!(MONITORED_STATES as readonly string[]).includes(m.state) || !m.verifyStartedAt) continue;
      if (deps.owns && !(await deps.owns(m.id))) continue;
      await checkOrRecord(m);
    }
  }

  return {
    check,
    checkAll,
    fleetIdentity,
    async ensureFresh(m) {
      if (!m.verifyStartedAt || !m.verifiedAt) return;
      const u = await deps.getUsage(m.id);
      const stale = !u || u.checkedAt === null || (u.since !== undefined && u.since !== m.verifyStartedAt) || Date.parse(u.checkedAt) < Date.parse(m.verifiedAt);
      if (!stale) return;
      await checkOrRecord(m);
    },
    start() {
      if (!stopped) return;
      stopped = false;
      halting = false;
      const loop = () => {
        running = checkAll()
          .catch((err: unknown) => deps.logger.warn({ err: (err as Error).message }, 'old-key usage monitor pass failed'))
          .finally(() => {
            running = undefined;
            if (!stopped) timer = setTimeout(loop, deps.intervalMs ?? 60_000);
          });
      };
      loop();
    },
    async stop() {
      stopped = true;
      halting = true;
      if (timer) clearTimeout(timer);
      timer = undefined;
      await running;
    },
  };
}
