import { createHash } from 'node:crypto';
import type { Controls } from '../controls.js';
import type { RequestContext } from '../context.js';
import { AwsError } from '../errors.js';
import type { KmsUsageEntry, KmsUsageLog } from '../usage-log.js';
import { cloudTrailEvent, isReadOnly, KMS_EVENT_SOURCE, KMS_KEY_RESOURCE_TYPE, userNameOf } from './event.js';

/** The LookupAttributes keys CloudTrail accepts. */
const ATTRIBUTE_KEYS = ['EventId', 'EventName', 'ReadOnly', 'Username', 'ResourceType', 'ResourceName', 'EventSource', 'AccessKeyId'] as const;
type AttributeKey = (typeof ATTRIBUTE_KEYS)[number];

const DEFAULT_MAX_RESULTS = 50;
/** LookupEvents sees the last 90 days of management events. */
const LOOKBACK_MS = 90 * 24 * 3600 * 1000;

interface Lookup {
  attribute: { key: AttributeKey; value: string } | undefined;
  startMs: number;
  endMs: number;
  maxResults: number;
  /** Identifies the query, so a token can't be replayed with other parameters. */
  fingerprint: string;
}

interface Cursor {
  /** eventTime (ms) and eventId of the last event of the previous page. */
  t: number;
  id: string;
  f: string;
}

function invalidAttributes(message: string): AwsError {
  return new AwsError('InvalidLookupAttributesException', message);
}

/** Parses a JSON 1.1 timestamp: epoch seconds (what the SDK sends) or an ISO 8601 string. */
function timestampMs(value: unknown, name: string): number | undefined {
  if (value === undefined || value === null) return undefined;
  const ms = typeof value === 'number' ? value * 1000 : typeof value === 'string' ? Date.parse(value) : NaN;
  if (!Number.isFinite(ms)) throw new AwsError('InvalidTimeRangeException', `${name} is not a valid timestamp.`);
  return ms;
}

/**
 * aws-local's CloudTrail: `LookupEvents` over the KMS usage log, i.e. every KMS call aws-local
 * answered (also the failed ones and those S3 made for a caller), as CloudTrail management events
 * of the caller's account and region, newest first.
 */
export class CloudTrailService {
  constructor(readonly deps: { controls: Controls; usage: KmsUsageLog }) {}

  /** Answers one CloudTrail API call; AWS errors are thrown as {@link AwsError}. */
  async handle(op: string, input: Record<string, unknown>, ctx: RequestContext): Promise<Record<string, unknown>> {
    if (op !== 'LookupEvents') {
      throw new AwsError('UnknownOperationException', `CloudTrail operation ${op} is not supported by aws-local.`);
    }
    await this.deps.controls.admit('cloudtrail', op, ctx);
    this.deps.controls.checkDeny('cloudtrail', op, ctx);
    return this.lookupEvents(input, ctx);
  }

  private parse(input: Record<string, unknown>, now: number): Lookup {
    const attrs = input['LookupAttributes'];
    let attribute: Lookup['attribute'];
    if (attrs !== undefined && attrs !== null) {
      if (!Array.isArray(attrs)) throw invalidAttributes('LookupAttributes must be a list.');
      if (attrs.length > 1) throw invalidAttributes('You can specify only one lookup attribute.');
      const a = attrs[0] as Record<string, unknown> | undefined;
      if (a) {
        const key = a['AttributeKey'];
        const value = a['AttributeValue'];
        if (typeof key !== 'string' || !(ATTRIBUTE_KEYS as readonly string[]).includes(key)) {
          throw invalidAttributes(`AttributeKey ${String(key)} is not valid; use one of ${ATTRIBUTE_KEYS.join(', ')}.`);
        }
        if (typeof value !== 'string' || value.length < 1 || value.length > 2000) {
          throw invalidAttributes('AttributeValue must be a string of 1 to 2000 characters.');
        }
        attribute = { key: key as AttributeKey, value };
      }
    }
    const category = input['EventCategory'];
    if (category !== undefined && category !== null && category !== 'insight') {
      throw new AwsError('InvalidEventCategoryException', `EventCategory ${String(category)} is not valid; the only valid value is insight.`);
    }
    const startMs = timestampMs(input['StartTime'], 'StartTime') ?? now - LOOKBACK_MS;
    const endMs = timestampMs(input['EndTime'], 'EndTime') ?? now;
    if (startMs > endMs) throw new AwsError('InvalidTimeRangeException', 'StartTime must be before EndTime.');
    const max = input['MaxResults'];
    let maxResults = DEFAULT_MAX_RESULTS;
    if (max !== undefined && max !== null) {
      if (typeof max !== 'number' || !Number.isInteger(max) || max < 1 || max > 50) {
        throw new AwsError('InvalidMaxResultsException', `MaxResults ${String(max)} is not valid; it must be between 1 and 50.`);
      }
      maxResults = max;
    }
    const fingerprint = createHash('sha256')
      .update(JSON.stringify([attribute, input['StartTime'] ?? null, input['EndTime'] ?? null, category ?? null]))
      .digest('base64url')
      .slice(0, 16);
    // Insights events are a separate category that aws-local never records.
    return { attribute, startMs: category === 'insight' ? endMs + 1 : startMs, endMs, maxResults, fingerprint };
  }

  private matches(e: KmsUsageEntry, a: NonNullable<Lookup['attribute']>): boolean {
    switch (a.key) {
      case 'EventId':
        return e.eventId === a.value;
      case 'EventName':
        return e.eventName === a.value;
      case 'ReadOnly':
        return String(isReadOnly(e.eventName)) === a.value;
      case 'Username':
        return userNameOf(e) === a.value;
      case 'ResourceType':
        return a.value === KMS_KEY_RESOURCE_TYPE && e.keyArns.length > 0;
      case 'ResourceName':
        return e.keyArns.includes(a.value);
      case 'EventSource':
        return a.value === KMS_EVENT_SOURCE;
      case 'AccessKeyId':
        return e.accessKeyId === a.value;
    }
  }

  private decodeToken(token: unknown, fingerprint: string): Cursor {
    if (typeof token !== 'string') throw new AwsError('InvalidNextTokenException', 'NextToken must be a string.');
    let c: Partial<Cursor> | undefined;
    try {
      c = JSON.parse(Buffer.from(token, 'base64url').toString('utf8')) as Partial<Cursor>;
    } catch {
      c = undefined;
    }
    if (!c || typeof c.t !== 'number' || typeof c.id !== 'string' || typeof c.f !== 'string') {
      throw new AwsError('InvalidNextTokenException', 'The NextToken is not valid.');
    }
    if (c.f !== fingerprint) {
      throw new AwsError('InvalidNextTokenException', 'The NextToken was issued for a request with different parameters.');
    }
    return { t: c.t, id: c.id, f: c.f };
  }

  private lookupEvents(input: Record<string, unknown>, ctx: RequestContext): Record<string, unknown> {
    const q = this.parse(input, ctx.time.getTime());
    const cursor = input['NextToken'] === undefined || input['NextToken'] === null ? undefined : this.decodeToken(input['NextToken'], q.fingerprint);
    const entries = this.deps.usage.all();
    const events: Record<string, unknown>[] = [];
    let seeking = cursor !== undefined;
    let last: KmsUsageEntry | undefined;
    let more = false;
    // The log is append-only in time order, so walking it backwards gives newest first.
    for (let i = entries.length - 1; i >= 0; i--) {
      const e = entries[i];
      if (!e) continue;
      const t = e.eventTime.getTime();
      if (t < q.startMs) break;
      if (seeking && cursor) {
        if (e.eventId === cursor.id) {
          seeking = false;
          continue;
        }
        // The previous page's last event is gone (log trimmed or reset): resume below its time.
        if (t < cursor.t) seeking = false;
        else continue;
      }
      if (t > q.endMs) continue;
      if (e.accountId !== ctx.accountId || e.region !== ctx.region) continue;
      if (q.attribute && !this.matches(e, q.attribute)) continue;
      if (events.length === q.maxResults) {
        more = true;
        break;
      }
      events.push(this.toEvent(e));
      last = e;
    }
    const out: Record<string, unknown> = { Events: events };
    if (more && last) {
      const c: Cursor = { t: last.eventTime.getTime(), id: last.eventId, f: q.fingerprint };
      out['NextToken'] = Buffer.from(JSON.stringify(c), 'utf8').toString('base64url');
    }
    return out;
  }

  private toEvent(e: KmsUsageEntry): Record<string, unknown> {
    return {
      EventId: e.eventId,
      EventName: e.eventName,
      ReadOnly: String(isReadOnly(e.eventName)),
      AccessKeyId: e.accessKeyId,
      EventTime: e.eventTime.getTime() / 1000,
      EventSource: KMS_EVENT_SOURCE,
      Username: userNameOf(e),
      Resources: e.keyArns.map((arn) => ({ ResourceType: KMS_KEY_RESOURCE_TYPE, ResourceName: arn })),
      CloudTrailEvent: JSON.stringify(cloudTrailEvent(e)),
    };
  }
}
