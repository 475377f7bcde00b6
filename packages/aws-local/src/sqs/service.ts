import type { Controls } from '../controls.js';
import type { RequestContext } from '../context.js';
import { AwsError, ConnectionResetFault } from '../errors.js';
import type { RawRequest, RawResponse } from '../http.js';
import { sqsError, toWireError } from './errors.js';
import {
  checkMessageContents,
  messageSize,
  optInt,
  optObjectList,
  optString,
  optStringList,
  optStringMap,
  readMessageAttributes,
  reqString,
  type Input,
} from './input.js';
import { md5Hex, md5OfAttributes, type MessageAttribute } from './md5.js';
import { parseQueryInput, queryErrorXml, queryResponseXml } from './query.js';
import { newMessageId, Queue, QUEUE_ATTRIBUTE_NAMES, validateQueueAttributes, type QueueData, type StoredMessage } from './queue.js';

const JSON_TARGET = 'AmazonSQS.';
const JSON_CONTENT_TYPE = 'application/x-amz-json-1.0';
const MAX_BATCH_ENTRIES = 10;
const PURGE_INTERVAL_MS = 60_000;
const QUEUE_NAME_RE = /^[A-Za-z0-9_-]{1,80}$/;
const BATCH_ID_RE = /^[A-Za-z0-9_-]{1,80}$/;
const MESSAGE_SYSTEM_ATTRIBUTES = new Set([
  'All',
  'SenderId',
  'SentTimestamp',
  'ApproximateReceiveCount',
  'ApproximateFirstReceiveTimestamp',
  'SequenceNumber',
  'MessageDeduplicationId',
  'MessageGroupId',
  'AWSTraceHeader',
  'DeadLetterQueueSourceArn',
]);

/** The SQS operations aws-local answers. */
const OPERATIONS = [
  'CreateQueue',
  'DeleteQueue',
  'ListQueues',
  'GetQueueUrl',
  'GetQueueAttributes',
  'SetQueueAttributes',
  'PurgeQueue',
  'SendMessage',
  'SendMessageBatch',
  'ReceiveMessage',
  'DeleteMessage',
  'DeleteMessageBatch',
  'ChangeMessageVisibility',
  'ChangeMessageVisibilityBatch',
  'ListDeadLetterSourceQueues',
  'TagQueue',
  'UntagQueue',
  'ListQueueTags',
] as const;
type Operation = (typeof OPERATIONS)[number];

function isOperation(op: string): op is Operation {
  return (OPERATIONS as readonly string[]).includes(op);
}

type Output = Record<string, unknown> | undefined;

interface Located {
  readonly accountId: string;
  readonly name: string;
  readonly arn: string;
  readonly key: string;
}

interface BatchFailure {
  Id: string;
  SenderFault: boolean;
  Code: string;
  Message: string;
}

/**
 * aws-local's SQS: standard queues over the JSON 1.0 protocol (`X-Amz-Target: AmazonSQS.*`) and
 * the query protocol (`Action=…`, XML), with visibility timeouts, delays, long polling, dead-letter
 * redrive and purge. Queues are scoped to account and region; URLs are `<base>/<account>/<name>`.
 */
export class SqsService {
  private queues = new Map<string, Queue>();
  /** Bumped by reset/close so that pending long polls end. */
  private generation = 0;
  private closed = false;

  constructor(readonly deps: { controls: Controls; baseUrl: () => string }) {}

  /** Answers one SQS request in whichever protocol it came. */
  async handle(req: RawRequest): Promise<RawResponse> {
    const target = req.headers['x-amz-target'] ?? '';
    const json = target.startsWith(JSON_TARGET);
    const requestId = req.ctx.requestId;
    let action = '';
    try {
      let input: Input;
      if (json) {
        action = target.slice(JSON_TARGET.length);
        input = parseJsonBody(req.body);
      } else {
        const params =
          req.method === 'GET' ? new URLSearchParams(req.query) : new URLSearchParams(req.body.toString('utf8'));
        if (req.method !== 'GET') for (const [k, v] of req.query) if (!params.has(k)) params.set(k, v);
        const parsed = parseQueryInput(params);
        action = parsed.action;
        input = parsed.input;
        // Query clients may address the queue by the request path instead of a QueueUrl field.
        if (input['QueueUrl'] === undefined && /^\/\d{12}\/[^/]+\/?$/.test(req.path)) {
          input = { ...input, QueueUrl: `${this.deps.baseUrl()}${req.path.replace(/\/$/, '')}` };
        }
      }
      const out = await this.dispatch(action, input, req.ctx);
      if (json) {
        return {
          status: 200,
          headers: { 'content-type': JSON_CONTENT_TYPE, 'x-amzn-requestid': requestId },
          body: JSON.stringify(out ?? {}),
        };
      }
      return {
        status: 200,
        headers: { 'content-type': 'text/xml', 'x-amzn-requestid': requestId },
        body: queryResponseXml(action, out, requestId),
      };
    } catch (err) {
      if (err instanceof ConnectionResetFault) throw err;
      const awsErr =
        err instanceof AwsError
          ? err
          : new AwsError('InternalFailure', 'The request processing has failed because of an unknown error, exception or failure.', 500);
      const wire = toWireError(awsErr);
      if (json) {
        return {
          status: wire.status,
          headers: {
            'content-type': JSON_CONTENT_TYPE,
            'x-amzn-requestid': requestId,
            'x-amzn-query-error': `${wire.queryCode};${wire.fault}`,
          },
          body: JSON.stringify({ __type: wire.jsonType, message: wire.message }),
        };
      }
      const message =
        awsErr.code === 'QueueDoesNotExist' ? 'The specified queue does not exist for this wsdl version.' : wire.message;
      return {
        status: wire.status,
        headers: { 'content-type': 'text/xml', 'x-amzn-requestid': requestId },
        body: queryErrorXml(wire.fault, wire.queryCode, message, requestId),
      };
    }
  }

  private async dispatch(action: string, input: Input, ctx: RequestContext): Promise<Output> {
    if (!isOperation(action)) {
      if (action === '') throw sqsError('MissingParameter', 'The request must contain the parameter Action.');
      throw sqsError('InvalidAction', `The action ${action} is not valid for this endpoint.`);
    }
    await this.deps.controls.admit('sqs', action, ctx);
    switch (action) {
      case 'CreateQueue':
        return this.createQueue(input, ctx);
      case 'DeleteQueue':
        return this.deleteQueue(input, ctx);
      case 'ListQueues':
        return this.listQueues(input, ctx);
      case 'GetQueueUrl':
        return this.getQueueUrl(input, ctx);
      case 'GetQueueAttributes':
        return this.getQueueAttributes(input, ctx);
      case 'SetQueueAttributes':
        return this.setQueueAttributes(input, ctx);
      case 'PurgeQueue':
        return this.purgeQueue(input, ctx);
      case 'SendMessage':
        return this.sendMessage(input, ctx);
      case 'SendMessageBatch':
        return this.sendMessageBatch(input, ctx);
      case 'ReceiveMessage':
        return this.receiveMessage(input, ctx);
      case 'DeleteMessage':
        return this.deleteMessage(input, ctx);
      case 'DeleteMessageBatch':
        return this.deleteMessageBatch(input, ctx);
      case 'ChangeMessageVisibility':
        return this.changeMessageVisibility(input, ctx);
      case 'ChangeMessageVisibilityBatch':
        return this.changeMessageVisibilityBatch(input, ctx);
      case 'ListDeadLetterSourceQueues':
        return this.listDeadLetterSourceQueues(input, ctx);
      case 'TagQueue':
        return this.tagQueue(input, ctx);
      case 'UntagQueue':
        return this.untagQueue(input, ctx);
      case 'ListQueueTags':
        return this.listQueueTags(input, ctx);
    }
  }

  // ---- queues ------------------------------------------------------------------------------

  private key(accountId: string, region: string, name: string): string {
    return `${accountId}/${region}/${name}`;
  }

  private url(q: Queue): string {
    return `${this.deps.baseUrl()}/${q.accountId}/${q.name}`;
  }

  /** Parses a queue URL; the region is the caller's, as queue URLs of aws-local carry none. */
  private locate(queueUrl: string, ctx: RequestContext): Located {
    let path: string;
    try {
      path = new URL(queueUrl).pathname;
    } catch {
      throw sqsError('InvalidAddress', `The address ${queueUrl} is not valid for this endpoint.`);
    }
    const parts = path.split('/').filter((p) => p !== '');
    const [accountId, name] = parts;
    if (parts.length !== 2 || !accountId || !name || !/^\d{12}$/.test(accountId)) {
      throw sqsError('InvalidAddress', `The address ${queueUrl} is not valid for this endpoint.`);
    }
    const decoded = decodeURIComponent(name);
    return {
      accountId,
      name: decoded,
      arn: `arn:aws:sqs:${ctx.region}:${accountId}:${decoded}`,
      key: this.key(accountId, ctx.region, decoded),
    };
  }

  /** The queue named by `QueueUrl`, after the deny rules for `op` on its ARN. */
  private queueFor(input: Input, op: Operation, ctx: RequestContext): Queue {
    const loc = this.locate(reqString(input, 'QueueUrl'), ctx);
    this.deps.controls.checkDeny('sqs', op, ctx, loc.arn);
    const q = this.queues.get(loc.key);
    if (!q) throw sqsError('QueueDoesNotExist', 'The specified queue does not exist.');
    return q;
  }

  private queueByArn(arn: string): Queue | undefined {
    const m = /^arn:aws:sqs:([^:]+):(\d{12}):([^:]+)$/.exec(arn);
    if (!m) return undefined;
    return this.queues.get(this.key(m[2] ?? '', m[1] ?? '', m[3] ?? ''));
  }

  /** Checks and normalizes a RedrivePolicy for `q` ('' removes it). */
  private checkRedrivePolicy(value: string, accountId: string, region: string): string {
    if (value === '') return '';
    const invalid = (reason: string) =>
      sqsError('InvalidParameterValue', `Value ${value} for parameter RedrivePolicy is invalid. Reason: ${reason}`);
    let policy: unknown;
    try {
      policy = JSON.parse(value);
    } catch {
      throw invalid('Redrive policy is not a valid JSON map.');
    }
    if (policy === null || typeof policy !== 'object' || Array.isArray(policy)) {
      throw invalid('Redrive policy is not a valid JSON map.');
    }
    const p = policy as Record<string, unknown>;
    const target = p['deadLetterTargetArn'];
    if (typeof target !== 'string' || target === '') throw invalid('Redrive policy does not contain mandatory attribute: deadLetterTargetArn.');
    const rawCount = p['maxReceiveCount'];
    if (rawCount === undefined) throw invalid('Redrive policy does not contain mandatory attribute: maxReceiveCount.');
    const count = typeof rawCount === 'string' && /^\d+$/.test(rawCount) ? Number(rawCount) : rawCount;
    if (typeof count !== 'number' || !Number.isInteger(count) || count < 1 || count > 1000) {
      throw invalid(`Invalid value for maxReceiveCount: ${String(rawCount)}, valid values are from 1 to 1000 both inclusive.`);
    }
    const dlq = this.queueByArn(target);
    if (!dlq || dlq.accountId !== accountId || dlq.region !== region) throw invalid('Dead letter target does not exist.');
    return JSON.stringify({ deadLetterTargetArn: target, maxReceiveCount: count });
  }

  private deadLetterOf(q: Queue): { queue: Queue; maxReceiveCount: number } | undefined {
    const policy = q.attributes['RedrivePolicy'];
    if (!policy) return undefined;
    const p = JSON.parse(policy) as { deadLetterTargetArn: string; maxReceiveCount: number };
    const queue = this.queueByArn(p.deadLetterTargetArn);
    return queue ? { queue, maxReceiveCount: p.maxReceiveCount } : undefined;
  }

  private createQueue(input: Input, ctx: RequestContext): Output {
    const name = reqString(input, 'QueueName');
    if (!QUEUE_NAME_RE.test(name)) {
      throw sqsError(
        'InvalidParameterValue',
        `Value ${name} for parameter QueueName is invalid. Reason: Can only include alphanumeric characters, hyphens, or underscores. 1 to 80 in length.`,
      );
    }
    const arn = `arn:aws:sqs:${ctx.region}:${ctx.accountId}:${name}`;
    this.deps.controls.checkDeny('sqs', 'CreateQueue', ctx, arn);
    const attrs = validateQueueAttributes(optStringMap(input, 'Attributes') ?? {});
    if (attrs['RedrivePolicy'] !== undefined) {
      attrs['RedrivePolicy'] = this.checkRedrivePolicy(attrs['RedrivePolicy'], ctx.accountId, ctx.region);
    }
    const tags = optStringMap(input, 'tags') ?? {};
    const key = this.key(ctx.accountId, ctx.region, name);
    const existing = this.queues.get(key);
    if (existing) {
      const now = Date.now();
      for (const [k, v] of Object.entries(attrs)) {
        if ((existing.attribute(k, now) ?? '') !== v) {
          throw sqsError('QueueNameExists', `A queue already exists with the same name and a different value for attribute ${k}`);
        }
      }
      return { QueueUrl: this.url(existing) };
    }
    for (const [k, v] of Object.entries(attrs)) if (v === '') delete attrs[k];
    const q = new Queue(name, ctx.accountId, ctx.region, Date.now(), attrs, { ...tags });
    this.queues.set(key, q);
    return { QueueUrl: this.url(q) };
  }

  private deleteQueue(input: Input, ctx: RequestContext): Output {
    const q = this.queueFor(input, 'DeleteQueue', ctx);
    this.queues.delete(this.key(q.accountId, q.region, q.name));
    q.notify();
    return undefined;
  }

  private listQueues(input: Input, ctx: RequestContext): Output {
    this.deps.controls.checkDeny('sqs', 'ListQueues', ctx);
    const prefix = optString(input, 'QueueNamePrefix') ?? '';
    const maxResults = optInt(input, 'MaxResults', 1, 1000, 'MaxResults must be an integer between 1 and 1000.');
    const token = optString(input, 'NextToken');
    let after = '';
    if (token !== undefined) {
      const decoded = Buffer.from(token, 'base64url').toString('utf8');
      if (!decoded.startsWith('q:') || Buffer.from(decoded, 'utf8').toString('base64url') !== token) {
        throw sqsError('InvalidParameterValue', 'Invalid NextToken value.');
      }
      after = decoded.slice(2);
    }
    const names = [...this.queues.values()]
      .filter((q) => q.accountId === ctx.accountId && q.region === ctx.region && q.name.startsWith(prefix) && q.name > after)
      .map((q) => q.name)
      .sort();
    const limit = maxResults ?? 1000;
    const page = names.slice(0, limit);
    const out: Record<string, unknown> = {};
    if (page.length > 0) out['QueueUrls'] = page.map((n) => `${this.deps.baseUrl()}/${ctx.accountId}/${n}`);
    const last = page[page.length - 1];
    if (maxResults !== undefined && names.length > limit && last !== undefined) {
      out['NextToken'] = Buffer.from(`q:${last}`, 'utf8').toString('base64url');
    }
    return out;
  }

  private getQueueUrl(input: Input, ctx: RequestContext): Output {
    const name = reqString(input, 'QueueName');
    const owner = optString(input, 'QueueOwnerAWSAccountId') ?? ctx.accountId;
    this.deps.controls.checkDeny('sqs', 'GetQueueUrl', ctx, `arn:aws:sqs:${ctx.region}:${owner}:${name}`);
    const q = this.queues.get(this.key(owner, ctx.region, name));
    if (!q) throw sqsError('QueueDoesNotExist', 'The specified queue does not exist.');
    return { QueueUrl: this.url(q) };
  }

  private getQueueAttributes(input: Input, ctx: RequestContext): Output {
    const q = this.queueFor(input, 'GetQueueAttributes', ctx);
    const requested = optStringList(input, 'AttributeNames') ?? [];
    for (const n of requested) {
      if (n !== 'All' && !QUEUE_ATTRIBUTE_NAMES.includes(n)) throw sqsError('InvalidAttributeName', `Unknown Attribute ${n}.`);
    }
    const names = requested.includes('All') ? QUEUE_ATTRIBUTE_NAMES : requested;
    const now = Date.now();
    const attributes: Record<string, string> = {};
    for (const n of names) {
      const v = q.attribute(n, now);
      if (v !== undefined) attributes[n] = v;
    }
    return Object.keys(attributes).length > 0 ? { Attributes: attributes } : {};
  }

  private setQueueAttributes(input: Input, ctx: RequestContext): Output {
    const q = this.queueFor(input, 'SetQueueAttributes', ctx);
    const raw = optStringMap(input, 'Attributes');
    if (!raw || Object.keys(raw).length === 0) throw sqsError('MissingParameter', 'The request must contain the parameter Attributes.');
    if ('FifoQueue' in raw) throw sqsError('InvalidAttributeName', 'Unknown Attribute FifoQueue.');
    const attrs = validateQueueAttributes(raw);
    if (attrs['RedrivePolicy'] !== undefined) {
      attrs['RedrivePolicy'] = this.checkRedrivePolicy(attrs['RedrivePolicy'], q.accountId, q.region);
    }
    for (const [k, v] of Object.entries(attrs)) {
      if (v === '') delete q.attributes[k];
      else q.attributes[k] = v;
    }
    q.lastModifiedAt = Date.now();
    // A shorter delay or a new redrive policy can make messages receivable now.
    q.notify();
    return undefined;
  }

  private purgeQueue(input: Input, ctx: RequestContext): Output {
    const q = this.queueFor(input, 'PurgeQueue', ctx);
    const now = Date.now();
    if (q.lastPurgeAt !== undefined && now - q.lastPurgeAt < PURGE_INTERVAL_MS) {
      throw sqsError('PurgeQueueInProgress', `Only one PurgeQueue operation on ${q.name} is allowed every 60 seconds.`);
    }
    q.lastPurgeAt = now;
    q.messages.clear();
    return undefined;
  }

  private listDeadLetterSourceQueues(input: Input, ctx: RequestContext): Output {
    const dlq = this.queueFor(input, 'ListDeadLetterSourceQueues', ctx);
    const maxResults = optInt(input, 'MaxResults', 1, 1000, 'MaxResults must be an integer between 1 and 1000.');
    const urls: string[] = [];
    for (const q of this.queues.values()) {
      const policy = q.attributes['RedrivePolicy'];
      if (policy && (JSON.parse(policy) as { deadLetterTargetArn: string }).deadLetterTargetArn === dlq.arn) urls.push(this.url(q));
    }
    urls.sort();
    return { queueUrls: urls.slice(0, maxResults ?? 1000) };
  }

  private tagQueue(input: Input, ctx: RequestContext): Output {
    const q = this.queueFor(input, 'TagQueue', ctx);
    const tags = optStringMap(input, 'Tags');
    if (!tags || Object.keys(tags).length === 0) throw sqsError('MissingParameter', 'The request must contain the parameter Tags.');
    Object.assign(q.tags, tags);
    return undefined;
  }

  private untagQueue(input: Input, ctx: RequestContext): Output {
    const q = this.queueFor(input, 'UntagQueue', ctx);
    const keys = optStringList(input, 'TagKeys');
    if (!keys || keys.length === 0) throw sqsError('MissingParameter', 'The request must contain the parameter TagKeys.');
    for (const k of keys) delete q.tags[k];
    return undefined;
  }

  private listQueueTags(input: Input, ctx: RequestContext): Output {
    const q = this.queueFor(input, 'ListQueueTags', ctx);
    return Object.keys(q.tags).length > 0 ? { Tags: { ...q.tags } } : {};
  }

  // ---- messages ----------------------------------------------------------------------------

  /** Validates one message (SendMessage or a batch entry) and builds it. */
  private buildMessage(q: Queue, input: Input, ctx: RequestContext, now: number): StoredMessage {
    const body = optString(input, 'MessageBody');
    if (body === undefined || body === '') throw sqsError('MissingParameter', 'The request must contain the parameter MessageBody.');
    const delay = optInt(input, 'DelaySeconds', 0, 900, 'DelaySeconds must be >= 0 and <= 900.') ?? q.int('DelaySeconds');
    if (optString(input, 'MessageDeduplicationId') !== undefined) {
      throw sqsError('InvalidParameterValue', 'The request include parameter that is not valid for this queue type');
    }
    const groupId = optString(input, 'MessageGroupId');
    const attrs = readMessageAttributes(input, 'MessageAttributes');
    const system = readMessageAttributes(input, 'MessageSystemAttributes');
    checkMessageContents(body, 'Message body');
    const max = q.int('MaximumMessageSize');
    if (messageSize(body, attrs) > max) {
      throw sqsError('InvalidParameterValue', `One or more parameters are invalid. Reason: Message must be shorter than ${max} bytes.`);
    }
    const systemAttributes: Record<string, MessageAttribute> | undefined =
      groupId !== undefined ? { ...system, MessageGroupId: { DataType: 'String', StringValue: groupId } } : system;
    return {
      messageId: newMessageId(),
      body,
      md5OfBody: md5Hex(body),
      messageAttributes: attrs,
      md5OfMessageAttributes: md5OfAttributes(attrs),
      systemAttributes,
      senderId: ctx.accessKeyId,
      sentTimestamp: now,
      firstReceiveTimestamp: undefined,
      receiveCount: 0,
      visibleAt: now + delay * 1000,
      receiptNonce: undefined,
      deadLetterQueueSourceArn: undefined,
    };
  }

  private sendResult(m: StoredMessage): Record<string, unknown> {
    const out: Record<string, unknown> = { MessageId: m.messageId, MD5OfMessageBody: m.md5OfBody };
    if (m.md5OfMessageAttributes) out['MD5OfMessageAttributes'] = m.md5OfMessageAttributes;
    const trace = m.systemAttributes?.['AWSTraceHeader'];
    if (trace) out['MD5OfMessageSystemAttributes'] = md5OfAttributes({ AWSTraceHeader: trace });
    return out;
  }

  private sendMessage(input: Input, ctx: RequestContext): Output {
    const q = this.queueFor(input, 'SendMessage', ctx);
    const m = this.buildMessage(q, input, ctx, Date.now());
    q.put(m);
    return this.sendResult(m);
  }

  /** Checks a batch's entry list: not empty, at most 10, valid and distinct ids. */
  private batchEntries(input: Input, entryName: string): Input[] {
    const entries = optObjectList(input, 'Entries') ?? [];
    if (entries.length === 0) throw sqsError('EmptyBatchRequest', `There should be at least one ${entryName} in the request.`);
    if (entries.length > MAX_BATCH_ENTRIES) {
      throw sqsError(
        'TooManyEntriesInBatchRequest',
        `Maximum number of entries per request are ${MAX_BATCH_ENTRIES}. You have sent ${entries.length}.`,
      );
    }
    const seen = new Set<string>();
    for (const e of entries) {
      const id = e['Id'];
      if (typeof id !== 'string' || !BATCH_ID_RE.test(id)) {
        throw sqsError(
          'InvalidBatchEntryId',
          'A batch entry id can only contain alphanumeric characters, hyphens and underscores. It can be at most 80 letters long.',
        );
      }
      if (seen.has(id)) throw sqsError('BatchEntryIdsNotDistinct', `Id ${id} repeated.`);
      seen.add(id);
    }
    return entries;
  }

  /** Runs `fn` per entry; an AwsError of one entry becomes a `Failed` item. */
  private runBatch(
    entries: Input[],
    fn: (e: Input) => Record<string, unknown>,
  ): { Successful: Record<string, unknown>[]; Failed: BatchFailure[] } {
    const Successful: Record<string, unknown>[] = [];
    const Failed: BatchFailure[] = [];
    for (const e of entries) {
      const Id = e['Id'] as string;
      try {
        Successful.push({ Id, ...fn(e) });
      } catch (err) {
        if (!(err instanceof AwsError)) throw err;
        const wire = toWireError(err);
        Failed.push({ Id, SenderFault: wire.fault === 'Sender', Code: wire.queryCode, Message: wire.message });
      }
    }
    return { Successful, Failed };
  }

  private sendMessageBatch(input: Input, ctx: RequestContext): Output {
    const q = this.queueFor(input, 'SendMessageBatch', ctx);
    const entries = this.batchEntries(input, 'SendMessageBatchRequestEntry');
    const max = q.int('MaximumMessageSize');
    let total = 0;
    for (const e of entries) {
      const body = typeof e['MessageBody'] === 'string' ? e['MessageBody'] : '';
      total += Buffer.byteLength(body, 'utf8');
      try {
        total += messageSize('', readMessageAttributes(e, 'MessageAttributes'));
      } catch {
        // An invalid entry fails on its own below; it does not fail the whole batch.
      }
    }
    if (total > max) {
      throw sqsError('BatchRequestTooLong', `Batch requests cannot be longer than ${max} bytes. You have sent ${total} bytes.`);
    }
    const now = Date.now();
    return this.runBatch(entries, (e) => {
      const m = this.buildMessage(q, e, ctx, now);
      q.put(m);
      return this.sendResult(m);
    });
  }

  private async receiveMessage(input: Input, ctx: RequestContext): Promise<Output> {
    const loc = this.locate(reqString(input, 'QueueUrl'), ctx);
    const q0 = this.queueFor(input, 'ReceiveMessage', ctx);
    const max = optInt(input, 'MaxNumberOfMessages', 1, 10, 'Must be between 1 and 10, if provided.') ?? 1;
    const visibility =
      optInt(input, 'VisibilityTimeout', 0, 43_200, 'Must be >= 0 and <= 43200, if provided.') ?? q0.int('VisibilityTimeout');
    const wait =
      optInt(input, 'WaitTimeSeconds', 0, 20, 'Must be >= 0 and <= 20, if provided.') ?? q0.int('ReceiveMessageWaitTimeSeconds');
    const systemNames = [...(optStringList(input, 'AttributeNames') ?? []), ...(optStringList(input, 'MessageSystemAttributeNames') ?? [])];
    for (const n of systemNames) {
      if (!MESSAGE_SYSTEM_ATTRIBUTES.has(n) && !QUEUE_ATTRIBUTE_NAMES.includes(n)) {
        throw sqsError('InvalidAttributeName', `Unknown Attribute ${n}.`);
      }
    }
    const attributeNames = optStringList(input, 'MessageAttributeNames') ?? [];
    const deadline = Date.now() + wait * 1000;
    const generation = this.generation;
    for (;;) {
      const q = this.queues.get(loc.key);
      // The queue was deleted, or the server reset or closed, while this receive was waiting.
      if (!q || generation !== this.generation || this.closed) return {};
      const now = Date.now();
      const got = q.receive(max, visibility, now, this.deadLetterOf(q));
      if (got.length > 0) {
        return { Messages: got.map((m) => this.messageOutput(q, m, systemNames, attributeNames)) };
      }
      if (now >= deadline) return {};
      const next = q.nextVisibleAt(now);
      await q.waitForChange(Math.min(deadline, next ?? deadline) - now);
    }
  }

  private messageOutput(q: Queue, m: StoredMessage, systemNames: string[], attributeNames: string[]): Record<string, unknown> {
    const out: Record<string, unknown> = {
      MessageId: m.messageId,
      ReceiptHandle: encodeReceiptHandle(q.arn, m.messageId, m.receiptNonce ?? ''),
      MD5OfBody: m.md5OfBody,
      Body: m.body,
    };
    const all = systemNames.includes('All');
    const sys: Record<string, string> = {};
    const want = (n: string) => all || systemNames.includes(n);
    if (want('SenderId')) sys['SenderId'] = m.senderId;
    if (want('SentTimestamp')) sys['SentTimestamp'] = String(m.sentTimestamp);
    if (want('ApproximateReceiveCount')) sys['ApproximateReceiveCount'] = String(m.receiveCount);
    if (want('ApproximateFirstReceiveTimestamp') && m.firstReceiveTimestamp !== undefined) {
      sys['ApproximateFirstReceiveTimestamp'] = String(m.firstReceiveTimestamp);
    }
    const trace = m.systemAttributes?.['AWSTraceHeader']?.StringValue;
    if (want('AWSTraceHeader') && trace !== undefined) sys['AWSTraceHeader'] = trace;
    const group = m.systemAttributes?.['MessageGroupId']?.StringValue;
    if (want('MessageGroupId') && group !== undefined) sys['MessageGroupId'] = group;
    if (want('DeadLetterQueueSourceArn') && m.deadLetterQueueSourceArn) sys['DeadLetterQueueSourceArn'] = m.deadLetterQueueSourceArn;
    if (Object.keys(sys).length > 0) out['Attributes'] = sys;

    if (m.messageAttributes) {
      const selected: Record<string, MessageAttribute> = {};
      for (const [name, a] of Object.entries(m.messageAttributes)) {
        const match = attributeNames.some(
          (p) => p === 'All' || p === '.*' || p === name || (p.endsWith('.*') && name.startsWith(p.slice(0, -1))),
        );
        if (match) selected[name] = a;
      }
      if (Object.keys(selected).length > 0) {
        out['MD5OfMessageAttributes'] = md5OfAttributes(selected);
        out['MessageAttributes'] = Object.fromEntries(
          Object.entries(selected).map(([k, a]) => [
            k,
            a.BinaryValue !== undefined
              ? { DataType: a.DataType, BinaryValue: a.BinaryValue.toString('base64') }
              : { DataType: a.DataType, StringValue: a.StringValue },
          ]),
        );
      } else if (m.md5OfMessageAttributes) out['MD5OfMessageAttributes'] = m.md5OfMessageAttributes;
    }
    return out;
  }

  /** The in-flight message a receipt handle names; throws for handles that are not ours. */
  private messageForHandle(q: Queue, handle: string): { message: StoredMessage | undefined; current: boolean } {
    const parsed = decodeReceiptHandle(handle);
    if (!parsed || parsed.queueArn !== q.arn) {
      throw sqsError('ReceiptHandleIsInvalid', `The input receipt handle "${handle}" is not a valid receipt handle.`);
    }
    const message = q.messages.get(parsed.messageId);
    return { message, current: message !== undefined && message.receiptNonce === parsed.nonce };
  }

  private deleteOne(q: Queue, handle: string): void {
    const { message, current } = this.messageForHandle(q, handle);
    // Like SQS, deleting an already deleted message succeeds; a stale handle deletes nothing.
    if (message && current) q.messages.delete(message.messageId);
  }

  private deleteMessage(input: Input, ctx: RequestContext): Output {
    const q = this.queueFor(input, 'DeleteMessage', ctx);
    this.deleteOne(q, reqString(input, 'ReceiptHandle'));
    return undefined;
  }

  private deleteMessageBatch(input: Input, ctx: RequestContext): Output {
    const q = this.queueFor(input, 'DeleteMessageBatch', ctx);
    const entries = this.batchEntries(input, 'DeleteMessageBatchRequestEntry');
    return this.runBatch(entries, (e) => {
      this.deleteOne(q, reqString(e, 'ReceiptHandle'));
      return {};
    });
  }

  private changeVisibilityOne(q: Queue, handle: string, timeout: number): void {
    const { message, current } = this.messageForHandle(q, handle);
    const now = Date.now();
    if (!message || !current) {
      throw sqsError(
        'InvalidParameterValue',
        `Value ${handle} for parameter ReceiptHandle is invalid. Reason: The receipt handle has expired.`,
      );
    }
    if (message.visibleAt <= now) throw sqsError('MessageNotInflight', 'The message referred to is not in flight.');
    message.visibleAt = now + timeout * 1000;
    if (timeout === 0) q.notify();
  }

  private changeMessageVisibility(input: Input, ctx: RequestContext): Output {
    const q = this.queueFor(input, 'ChangeMessageVisibility', ctx);
    const handle = reqString(input, 'ReceiptHandle');
    const timeout = optInt(input, 'VisibilityTimeout', 0, 43_200, 'Must be >= 0 and <= 43200.');
    if (timeout === undefined) throw sqsError('MissingParameter', 'The request must contain the parameter VisibilityTimeout.');
    this.changeVisibilityOne(q, handle, timeout);
    return undefined;
  }

  private changeMessageVisibilityBatch(input: Input, ctx: RequestContext): Output {
    const q = this.queueFor(input, 'ChangeMessageVisibilityBatch', ctx);
    const entries = this.batchEntries(input, 'ChangeMessageVisibilityBatchRequestEntry');
    return this.runBatch(entries, (e) => {
      const timeout = optInt(e, 'VisibilityTimeout', 0, 43_200, 'Must be >= 0 and <= 43200.');
      if (timeout === undefined) throw sqsError('MissingParameter', 'The request must contain the parameter VisibilityTimeout.');
      this.changeVisibilityOne(q, reqString(e, 'ReceiptHandle'), timeout);
      return {};
    });
  }

  // ---- lifecycle ---------------------------------------------------------------------------

  /** Ends every pending long poll (each answers with no messages). */
  private releaseWaiters(): void {
    this.generation++;
    for (const q of this.queues.values()) q.notify();
  }

  /** Ends pending long polls for good; call before the HTTP server closes. */
  close(): void {
    this.closed = true;
    this.releaseWaiters();
  }

  snapshot(): unknown {
    return { queues: [...this.queues.values()].map((q) => q.toData()) };
  }

  restore(data: unknown): void {
    if (data === null || typeof data !== 'object' || !Array.isArray((data as { queues?: unknown }).queues)) return;
    this.releaseWaiters();
    this.queues = new Map();
    for (const d of (data as { queues: QueueData[] }).queues) {
      const q = Queue.fromData(d);
      this.queues.set(this.key(q.accountId, q.region, q.name), q);
    }
  }

  reset(): void {
    this.releaseWaiters();
    this.queues = new Map();
  }
}

function parseJsonBody(body: Buffer): Input {
  if (body.length === 0) return {};
  let parsed: unknown;
  try {
    parsed = JSON.parse(body.toString('utf8'));
  } catch {
    throw new AwsError('SerializationException', 'Request body is not valid JSON.');
  }
  if (parsed === null || typeof parsed !== 'object' || Array.isArray(parsed)) {
    throw new AwsError('SerializationException', 'Request body must be a JSON object.');
  }
  return parsed as Input;
}

/** Receipt handles carry the queue ARN, the message id and a per-receive nonce. */
function encodeReceiptHandle(queueArn: string, messageId: string, nonce: string): string {
  return Buffer.from(`${queueArn} ${messageId} ${nonce}`, 'utf8').toString('base64');
}

function decodeReceiptHandle(handle: string): { queueArn: string; messageId: string; nonce: string } | undefined {
  if (!/^[A-Za-z0-9+/]+={0,2}$/.test(handle)) return undefined;
  const parts = Buffer.from(handle, 'base64').toString('utf8').split(' ');
  const [queueArn, messageId, nonce] = parts;
  if (parts.length !== 3 || !queueArn?.startsWith('arn:aws:sqs:') || !messageId || !nonce || !/^[0-9a-f]{24}$/.test(nonce)) {
    return undefined;
  }
  return { queueArn, messageId, nonce };
}
