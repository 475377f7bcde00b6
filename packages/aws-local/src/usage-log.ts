import { randomUUID } from 'node:crypto';

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

/**
 * Append-only log of KMS calls (successful and failed), bounded in size.
 * It feeds CloudTrail LookupEvents and KMS GetKeyLastUsage.
 */
export class KmsUsageLog {
  private entries: KmsUsageEntry[] = [];

  constructor(private readonly maxEntries = 2_000_000) {}

  append(e: Omit<KmsUsageEntry, 'eventId'>): KmsUsageEntry {
    const entry = { ...e, eventId: randomUUID() };
    this.entries.push(entry);
    if (this.entries.length > this.maxEntries) this.entries.splice(0, this.entries.length - this.maxEntries);
    return entry;
  }

  /** All entries, oldest first. Callers must not mutate. */
  all(): readonly KmsUsageEntry[] {
    return this.entries;
  }

  clear(): void {
    this.entries = [];
  }

  snapshot(): unknown {
    return this.entries;
  }

  restore(data: unknown): void {
    if (!Array.isArray(data)) return;
    this.entries = (data as Array<Record<string, unknown>>).map((e) => ({
      ...(e as unknown as KmsUsageEntry),
      eventTime: new Date(e['eventTime'] as string),
    }));
  }
}
