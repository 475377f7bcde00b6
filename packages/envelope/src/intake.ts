import { createHash } from 'node:crypto';
import { SendMessageBatchCommand, SQSClient, type SendMessageBatchRequestEntry } from '@aws-sdk/client-sqs';
import type { ItemRef } from '@rekey/core';
import { EnvelopeError } from './errors.js';
import { resolveClient, type Resolved } from './kms.js';
import type { IntakeDropPolicy, IntakeOptions, IntakeStats } from './types.js';

/** SQS takes at most 10 entries per SendMessageBatch. */
const BATCH = 10;

interface Pending {
  readonly id: string;
  readonly body: string;
}

/** JSON with object keys sorted, so the same item always gives the same message and dedupe id. */
function stableJson(value: unknown): string {
  if (Array.isArray(value)) return `[${value.map(stableJson).join(',')}]`;
  if (value !== null && typeof value === 'object') {
    const entries = Object.entries(value as Record<string, unknown>)
      .filter(([, v]) => v !== undefined)
      .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
    return `{${entries.map(([k, v]) => `${JSON.stringify(k)}:${stableJson(v)}`).join(',')}}`;
  }
  const s = JSON.stringify(value);
  if (s === undefined) throw new EnvelopeError('invalid-argument', 'item must be JSON-serialisable');
  return s;
}

function checkItem(item: unknown): ItemRef {
  const i = item as { kind?: unknown; key?: unknown; pk?: unknown } | null | undefined;
  if (i && i.kind === 's3' && typeof i.key === 'string' && i.key.length > 0) return item as ItemRef;
  if (i && i.kind === 'row' && Array.isArray(i.pk) && i.pk.length > 0 && i.pk.every((v) => typeof v === 'string' || typeof v === 'number')) {
    return item as ItemRef;
  }
  throw new EnvelopeError('invalid-argument', "item must be { kind: 's3', key, ... } or { kind: 'row', pk: [...] }");
}

/**
 * A bounded, fire-and-forget buffer of `rekey.item` messages for the fleet's SQS intake.
 * `enqueue` only buffers (O(1)); sends happen in the background with SendMessageBatch, 10 at a
 * time, after `flushMs` or as soon as a full batch is waiting. A failed send is counted and not
 * retried: the item is asked for again on its next read, and the fleet's verify pass finds it.
 */
export class IntakeBuffer {
  private readonly sqs: Resolved<SQSClient>;
  private readonly queueUrl: string;
  private readonly source: string;
  private readonly maxBuffer: number;
  private readonly flushMs: number;
  private readonly dropPolicy: IntakeDropPolicy;
  private readonly maxInFlight: number;
  private readonly fifo: boolean;
  private readonly onError: ((err: unknown) => void) | undefined;
  /** Waiting messages in arrival order, keyed by body (the dedupe key). */
  private readonly waiting = new Map<string, Pending>();
  /** Bodies being sent now, still deduplicated against. */
  private readonly sending = new Set<string>();
  private readonly calls = new Set<Promise<void>>();
  private timer: NodeJS.Timeout | undefined;
  private seq = 0;
  private closed = false;
  private counts = { sent: 0, dropped: 0, failed: 0, deduplicated: 0 };

  constructor(options: IntakeOptions) {
    this.sqs = resolveClient(options.sqs, 'SQS', (cfg) => new SQSClient(cfg), 'intake.sqs');
    if (typeof options.queueUrl !== 'string' || !/^https?:\/\//.test(options.queueUrl)) {
      throw new EnvelopeError('invalid-argument', 'intake.queueUrl must be an SQS queue URL');
    }
    if (typeof options.source !== 'string' || options.source.length === 0) {
      throw new EnvelopeError('invalid-argument', 'intake.source must be the name of a fleet source');
    }
    this.queueUrl = options.queueUrl;
    this.source = options.source;
    this.maxBuffer = positiveInt(options.maxBuffer ?? 1000, 'intake.maxBuffer');
    this.flushMs = positiveInt(options.flushMs ?? 1000, 'intake.flushMs');
    this.maxInFlight = positiveInt(options.maxInFlight ?? 2, 'intake.maxInFlight');
    const policy = options.dropPolicy ?? 'drop-new';
    if (policy !== 'drop-new' && policy !== 'drop-oldest') {
      throw new EnvelopeError('invalid-argument', "intake.dropPolicy must be 'drop-new' or 'drop-oldest'");
    }
    this.dropPolicy = policy;
    this.fifo = this.queueUrl.endsWith('.fifo');
    this.onError = options.onError;
  }

  /**
   * Buffers one request; returns false when it was deduplicated or dropped. Never waits and
   * never throws for a send failure.
   */
  enqueue(item: unknown): boolean {
    if (this.closed) throw new EnvelopeError('invalid-argument', 'the intake is closed');
    const body = `{"type":"rekey.item","source":${JSON.stringify(this.source)},"item":${stableJson(checkItem(item))}}`;
    if (this.waiting.has(body) || this.sending.has(body)) {
      this.counts.deduplicated++;
      return false;
    }
    if (this.waiting.size >= this.maxBuffer) {
      this.counts.dropped++;
      if (this.dropPolicy === 'drop-new') return false;
      const oldest = this.waiting.keys().next();
      if (!oldest.done) this.waiting.delete(oldest.value);
    }
    this.waiting.set(body, { id: String(this.seq++ % 1_000_000), body });
    this.schedule();
    return true;
  }

  /** Sends everything buffered now and waits for every send in flight. */
  async flush(): Promise<void> {
    this.clearTimer();
    while (this.waiting.size > 0 || this.calls.size > 0) {
      this.pump(true);
      if (this.calls.size > 0) await Promise.race(this.calls);
    }
  }

  /** Flushes, then refuses new requests and destroys an owned SQS client. */
  async close(): Promise<void> {
    await this.flush();
    this.closed = true;
    if (this.sqs.owned) this.sqs.client.destroy();
  }

  stats(): IntakeStats {
    return { ...this.counts, buffered: this.waiting.size, inFlight: this.calls.size };
  }

  private schedule(): void {
    if (this.waiting.size >= BATCH) {
      this.pump(false);
      if (this.waiting.size === 0) this.clearTimer();
    }
    if (this.waiting.size > 0 && !this.timer) {
      this.timer = setTimeout(() => {
        this.timer = undefined;
        this.pump(true);
        if (this.waiting.size > 0) this.schedule();
      }, this.flushMs);
      // A pending flush must not keep the app's process alive.
      this.timer.unref();
    }
  }

  /** Starts batch sends while there is room in flight; partial batches only when `partial`. */
  private pump(partial: boolean): void {
    while (this.calls.size < this.maxInFlight && (this.waiting.size >= BATCH || (partial && this.waiting.size > 0))) {
      const batch: Pending[] = [];
      for (const [body, p] of this.waiting) {
        batch.push(p);
        this.waiting.delete(body);
        this.sending.add(body);
        if (batch.length === BATCH) break;
      }
      const call = this.send(batch).finally(() => {
        for (const p of batch) this.sending.delete(p.body);
        this.calls.delete(call);
        if (this.waiting.size >= BATCH) this.pump(false);
      });
      this.calls.add(call);
    }
  }

  private async send(batch: Pending[]): Promise<void> {
    const entries: SendMessageBatchRequestEntry[] = batch.map((p) => ({
      Id: p.id,
      MessageBody: p.body,
      ...(this.fifo && {
        MessageGroupId: this.source,
        MessageDeduplicationId: createHash('sha256').update(p.body).digest('hex'),
      }),
    }));
    try {
      const out = await this.sqs.client.send(new SendMessageBatchCommand({ QueueUrl: this.queueUrl, Entries: entries }));
      const failed = out.Failed?.length ?? 0;
      this.counts.sent += out.Successful?.length ?? 0;
      this.counts.failed += failed;
      if (failed > 0) this.report(new EnvelopeError('intake-failed', `SQS refused ${failed} of ${batch.length} intake messages (${out.Failed?.[0]?.Code ?? 'unknown'})`));
    } catch (err) {
      this.counts.failed += batch.length;
      this.report(new EnvelopeError('intake-failed', `SendMessageBatch of ${batch.length} intake messages failed`, { cause: err }));
    }
  }

  private report(err: unknown): void {
    if (!this.onError) return;
    try {
      this.onError(err);
    } catch {
      // The app's error hook must not break the background sender.
    }
  }

  private clearTimer(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
  }
}

function positiveInt(n: number, what: string): number {
  if (!Number.isInteger(n) || n < 1) throw new EnvelopeError('invalid-argument', `${what} must be an integer >= 1`);
  return n;
}
