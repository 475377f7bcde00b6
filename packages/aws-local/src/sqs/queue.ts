import { randomBytes, randomUUID } from 'node:crypto';
import type { MessageAttribute } from './md5.js';
import { sqsError } from './errors.js';

/** One message as the queue keeps it. */
export interface StoredMessage {
  readonly messageId: string;
  readonly body: string;
  readonly md5OfBody: string;
  readonly messageAttributes: Readonly<Record<string, MessageAttribute>> | undefined;
  readonly md5OfMessageAttributes: string | undefined;
  readonly systemAttributes: Readonly<Record<string, MessageAttribute>> | undefined;
  readonly senderId: string;
  /** Epoch ms when it was first sent (kept when it moves to a dead-letter queue). */
  readonly sentTimestamp: number;
  firstReceiveTimestamp: number | undefined;
  receiveCount: number;
  /** Epoch ms from when the message can be received (delay or visibility timeout). */
  visibleAt: number;
  /** Nonce of the newest receipt handle; older handles of this message are stale. */
  receiptNonce: string | undefined;
  deadLetterQueueSourceArn: string | undefined;
}

/** Integer queue attributes: range and default (from the SQS API reference). */
const INT_ATTRIBUTES = {
  DelaySeconds: { min: 0, max: 900, def: 0 },
  MaximumMessageSize: { min: 1024, max: 1_048_576, def: 262_144 },
  MessageRetentionPeriod: { min: 60, max: 1_209_600, def: 345_600 },
  ReceiveMessageWaitTimeSeconds: { min: 0, max: 20, def: 0 },
  VisibilityTimeout: { min: 0, max: 43_200, def: 30 },
  KmsDataKeyReusePeriodSeconds: { min: 60, max: 86_400, def: 300 },
} as const;
type IntAttribute = keyof typeof INT_ATTRIBUTES;

/** Attributes a caller may set on a standard queue. */
const SETTABLE = new Set<string>([
  ...Object.keys(INT_ATTRIBUTES),
  'Policy',
  'RedrivePolicy',
  'RedriveAllowPolicy',
  'KmsMasterKeyId',
  'SqsManagedSseEnabled',
]);
/** Attributes GetQueueAttributes computes. */
const COMPUTED = [
  'QueueArn',
  'ApproximateNumberOfMessages',
  'ApproximateNumberOfMessagesNotVisible',
  'ApproximateNumberOfMessagesDelayed',
  'CreatedTimestamp',
  'LastModifiedTimestamp',
] as const;
/** Every name GetQueueAttributes accepts, in the order `All` lists them. */
export const QUEUE_ATTRIBUTE_NAMES: readonly string[] = [...COMPUTED, ...SETTABLE];

/**
 * Validates attribute values for CreateQueue/SetQueueAttributes and returns them normalized.
 * RedrivePolicy's target is checked by the service, which can look queues up.
 */
export function validateQueueAttributes(attrs: Readonly<Record<string, string>>): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [name, value] of Object.entries(attrs)) {
    if (name === 'FifoQueue') {
      if (value.toLowerCase() === 'true') {
        throw sqsError('UnsupportedOperation', 'aws-local supports standard queues only; FifoQueue=true is not supported.');
      }
      if (value.toLowerCase() !== 'false') throw invalidValue(name);
      continue;
    }
    if (!SETTABLE.has(name)) throw sqsError('InvalidAttributeName', `Unknown Attribute ${name}.`);
    if (name in INT_ATTRIBUTES) {
      const r = INT_ATTRIBUTES[name as IntAttribute];
      const n = /^\d+$/.test(value) ? Number(value) : NaN;
      if (!(n >= r.min && n <= r.max)) throw invalidValue(name);
      out[name] = String(n);
    } else if (name === 'SqsManagedSseEnabled') {
      if (!/^(true|false)$/i.test(value)) throw invalidValue(name);
      out[name] = value.toLowerCase();
    } else if (name === 'Policy' || name === 'RedriveAllowPolicy') {
      if (value !== '') {
        try {
          JSON.parse(value);
        } catch {
          throw invalidValue(name);
        }
      }
      out[name] = value;
    } else out[name] = value;
  }
  return out;
}

function invalidValue(name: string) {
  return sqsError('InvalidAttributeValue', `Invalid value for the parameter ${name}.`);
}

/** Plain data of a queue, for `--data-dir` snapshots. */
export interface QueueData {
  name: string;
  accountId: string;
  region: string;
  createdAt: number;
  lastModifiedAt: number;
  attributes: Record<string, string>;
  tags: Record<string, string>;
  lastPurgeAt: number | undefined;
  messages: StoredMessage[];
}

/** A standard SQS queue: messages in send order, visibility, delays and retention. */
export class Queue {
  readonly arn: string;
  readonly messages = new Map<string, StoredMessage>();
  attributes: Record<string, string>;
  tags: Record<string, string>;
  lastModifiedAt: number;
  lastPurgeAt: number | undefined;
  private readonly waiters = new Set<() => void>();

  constructor(
    readonly name: string,
    readonly accountId: string,
    readonly region: string,
    readonly createdAt: number,
    attributes: Record<string, string>,
    tags: Record<string, string>,
  ) {
    this.arn = `arn:aws:sqs:${region}:${accountId}:${name}`;
    this.attributes = attributes;
    this.tags = tags;
    this.lastModifiedAt = createdAt;
  }

  /** An integer attribute, or its default. */
  int(name: IntAttribute): number {
    const v = this.attributes[name];
    return v === undefined ? INT_ATTRIBUTES[name].def : Number(v);
  }

  /** The value of one attribute as GetQueueAttributes returns it; undefined when unset. */
  attribute(name: string, now: number): string | undefined {
    switch (name) {
      case 'QueueArn':
        return this.arn;
      case 'ApproximateNumberOfMessages':
        return String(this.counts(now).visible);
      case 'ApproximateNumberOfMessagesNotVisible':
        return String(this.counts(now).inFlight);
      case 'ApproximateNumberOfMessagesDelayed':
        return String(this.counts(now).delayed);
      case 'CreatedTimestamp':
        return String(Math.floor(this.createdAt / 1000));
      case 'LastModifiedTimestamp':
        return String(Math.floor(this.lastModifiedAt / 1000));
      case 'SqsManagedSseEnabled':
        return this.attributes[name] ?? (this.attributes['KmsMasterKeyId'] ? 'false' : 'true');
      case 'KmsDataKeyReusePeriodSeconds':
        return this.attributes['KmsMasterKeyId'] ? String(this.int(name)) : undefined;
      default:
        if (name in INT_ATTRIBUTES) return String(this.int(name as IntAttribute));
        return this.attributes[name] || undefined;
    }
  }

  /** Visible, in-flight (received, not yet visible again) and delayed (never received) counts. */
  counts(now: number): { visible: number; inFlight: number; delayed: number } {
    this.expire(now);
    let visible = 0;
    let inFlight = 0;
    let delayed = 0;
    for (const m of this.messages.values()) {
      if (m.visibleAt <= now) visible++;
      else if (m.receiveCount > 0) inFlight++;
      else delayed++;
    }
    return { visible, inFlight, delayed };
  }

  /** Drops messages older than MessageRetentionPeriod. */
  expire(now: number): void {
    const cutoff = now - this.int('MessageRetentionPeriod') * 1000;
    for (const [id, m] of this.messages) if (m.sentTimestamp < cutoff) this.messages.delete(id);
  }

  /** Adds a message and wakes long-polling receivers. */
  put(m: StoredMessage): void {
    this.messages.set(m.messageId, m);
    this.notify();
  }

  /**
   * Receives up to `max` visible messages, oldest first, and hides them for `visibilitySec`.
   * A message already received `maxReceiveCount` times goes to `deadLetter` instead, as SQS moves
   * it on the next receive attempt.
   */
  receive(
    max: number,
    visibilitySec: number,
    now: number,
    deadLetter: { queue: Queue; maxReceiveCount: number } | undefined,
  ): StoredMessage[] {
    this.expire(now);
    const out: StoredMessage[] = [];
    for (const m of this.messages.values()) {
      if (out.length >= max) break;
      if (m.visibleAt > now) continue;
      if (deadLetter && m.receiveCount >= deadLetter.maxReceiveCount) {
        this.messages.delete(m.messageId);
        m.deadLetterQueueSourceArn = this.arn;
        m.receiptNonce = undefined;
        m.visibleAt = now;
        deadLetter.queue.put(m);
        continue;
      }
      m.receiveCount++;
      m.firstReceiveTimestamp ??= now;
      m.visibleAt = now + visibilitySec * 1000;
      m.receiptNonce = randomBytes(12).toString('hex');
      out.push(m);
    }
    return out;
  }

  /** Epoch ms when the next hidden message becomes visible, if any. */
  nextVisibleAt(now: number): number | undefined {
    let next: number | undefined;
    for (const m of this.messages.values()) {
      if (m.visibleAt > now && (next === undefined || m.visibleAt < next)) next = m.visibleAt;
    }
    return next;
  }

  /** Resolves when the queue changes or after `ms`, whichever comes first. */
  waitForChange(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const done = () => {
        clearTimeout(timer);
        this.waiters.delete(done);
        resolve();
      };
      const timer = setTimeout(done, Math.max(0, ms));
      // A pending long poll must not keep the process alive after the server closed.
      timer.unref();
      this.waiters.add(done);
    });
  }

  /** Wakes every long-polling receiver of this queue. */
  notify(): void {
    for (const w of [...this.waiters]) w();
  }

  /** Plain data for a snapshot. */
  toData(): QueueData {
    return {
      name: this.name,
      accountId: this.accountId,
      region: this.region,
      createdAt: this.createdAt,
      lastModifiedAt: this.lastModifiedAt,
      attributes: { ...this.attributes },
      tags: { ...this.tags },
      lastPurgeAt: this.lastPurgeAt,
      messages: [...this.messages.values()].map((m) => ({ ...m })),
    };
  }

  /** Rebuilds a queue from {@link Queue.toData}. */
  static fromData(d: QueueData): Queue {
    const q = new Queue(d.name, d.accountId, d.region, d.createdAt, d.attributes, d.tags);
    q.lastModifiedAt = d.lastModifiedAt;
    q.lastPurgeAt = d.lastPurgeAt;
    for (const m of d.messages) q.messages.set(m.messageId, m);
    return q;
  }
}

/** A new message id in the UUID form SQS uses. */
export function newMessageId(): string {
  return randomUUID();
}
