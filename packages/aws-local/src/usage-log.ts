import { randomId, StringInterner } from './ids.js';

/** One KMS API call as aws-local saw it; CloudTrail's LookupEvents reads these. */
export interface KmsUsageEntry {
  readonly eventId: string;
  readonly eventTime: Date;
  readonly eventName: string;
  readonly accountId: string;
  readonly region: string;
  /** Access key id of the caller (for S3-made calls: the caller S3 acted for). */
  readonly accessKeyId: string;
  /** `s3.amazonaws.com` when S3 called KMS on the caller's behalf. */
  readonly invokedBy?: string;
  readonly sourceIp: string;
  readonly userAgent: string;
  /** Full key ARNs involved; for ReEncrypt both the source and destination key. */
  readonly keyArns: readonly string[];
  readonly requestParameters: Record<string, unknown>;
  readonly responseElements?: Record<string, unknown> | null;
  readonly errorCode?: string;
  readonly errorMessage?: string;
  readonly requestId: string;
}

type Mutable<T> = { -readonly [K in keyof T]: T[K] };

/**
 * Append-only log of KMS calls (successful and failed), bounded in size.
 * It feeds CloudTrail LookupEvents and KMS GetKeyLastUsage.
 */
export class KmsUsageLog {
  /** Entries, oldest first; the first `dropped` of them are past the bound and no longer count. */
  private entries: KmsUsageEntry[] = [];
  private dropped = 0;
  /** The log holds up to millions of entries whose caller fields repeat; they share one copy each. */
  private readonly strings = new StringInterner();

  constructor(private readonly maxEntries = 2_000_000) {}

  /** Appends an entry; optional fields that are undefined are left out. */
  append(e: Omit<KmsUsageEntry, 'eventId'>): KmsUsageEntry {
    // Built field by field (not spread from `e`) so that every entry is a compact fast-mode object.
    const entry: Mutable<KmsUsageEntry> = {
      eventTime: e.eventTime,
      eventName: e.eventName,
      accountId: this.strings.intern(e.accountId),
      region: this.strings.intern(e.region),
      accessKeyId: this.strings.intern(e.accessKeyId),
    } as Mutable<KmsUsageEntry>;
    if (e.invokedBy !== undefined) entry.invokedBy = e.invokedBy;
    entry.sourceIp = this.strings.intern(e.sourceIp);
    entry.userAgent = this.strings.intern(e.userAgent);
    entry.keyArns = e.keyArns;
    entry.requestParameters = e.requestParameters;
    if (e.responseElements !== undefined) entry.responseElements = e.responseElements;
    if (e.errorCode !== undefined) entry.errorCode = e.errorCode;
    if (e.errorMessage !== undefined) entry.errorMessage = e.errorMessage;
    entry.requestId = e.requestId;
    entry.eventId = randomId();
    this.entries.push(entry);
    if (this.entries.length - this.dropped > this.maxEntries) this.drop(this.entries.length - this.dropped - this.maxEntries);
    return entry;
  }

  /**
   * Forgets the oldest entries. Moving two million entries down on every append of a full log
   * would cost milliseconds per KMS call, so dropped entries are only skipped, and removed in
   * bulk once they are a sixteenth of the bound (or when the log is read).
   */
  private drop(n: number): void {
    this.dropped += n;
    if (this.dropped >= Math.max(1, this.maxEntries / 16)) this.compact();
  }

  private compact(): void {
    if (this.dropped === 0) return;
    this.entries.splice(0, this.dropped);
    this.dropped = 0;
  }

  /** All entries, oldest first. Callers must not mutate. */
  all(): readonly KmsUsageEntry[] {
    this.compact();
    return this.entries;
  }

  clear(): void {
    this.entries = [];
    this.dropped = 0;
  }

  snapshot(): unknown {
    this.compact();
    return this.entries;
  }

  restore(data: unknown): void {
    if (!Array.isArray(data)) return;
    this.dropped = 0;
    this.entries = (data as Array<Record<string, unknown>>).map((e) => ({
      ...(e as unknown as KmsUsageEntry),
      eventTime: new Date(e['eventTime'] as string),
    }));
  }
}
