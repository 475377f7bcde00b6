/**
 * The coordinator's SQS event intake. It long-polls one queue and turns each message into work:
 *
 * - EventBridge `aws.kms` "KMS CMK Rotation" events: audited, and per `onRotation` a refresh
 *   migration of the sources bound to the aliases behind the rotated key;
 * - EventBridge "AWS API Call via CloudTrail" events for KMS `UpdateAlias` / `CreateAlias`:
 *   audited, and with `autoMigrate` one migration per bound source from the alias's previous key
 *   (as last seen by the intake; CloudTrail does not record it) to its new key;
 * - app requests `{"type":"rekey.item","source":"<name>","item":{...}}` (what `@rekey/envelope`
 *   sends with `onStale: 'enqueue'`): one priority `item` job per item, deduplicated per window.
 *
 * A message is deleted only once its work is enqueued in BullMQ or recorded in the intake audit
 * log. A message that fails validation is left alone, so SQS redrives it to the queue's DLQ after
 * `maxReceiveCount`; it is logged once per MessageId. See docs/intake.md.
 */
import { createHash } from 'node:crypto';
import {
  ChangeMessageVisibilityCommand,
  DeleteMessageBatchCommand,
  ReceiveMessageCommand,
  type Message,
  type SQSClient,
} from '@aws-sdk/client-sqs';
import type { Redis } from 'ioredis';
import type { Logger } from 'pino';
import { z } from 'zod';
import {
  ItemRefSchema,
  NameSchema,
  SourceSpecSchema,
  ValidationError,
  formatIssues,
  isTerminal,
  type ItemJob,
  type ItemRef,
  type Migration,
  type MigrationSpecInput,
  type SourceSpec,
} from '@rekey/core';
import type { KmsGateway } from '@rekey/kms';
import { canonicalJson, type AuditLog } from './audit.js';
import { FleetError } from './errors.js';
import type { RedisKeys } from './keys.js';
import type { FleetQueue } from './queues.js';

/** The audit log id of the intake (not a valid migration id, so it never collides with one). */
export const INTAKE_AUDIT_ID = '_intake';

/** How long event decisions and "rejected message was logged" markers are kept: SQS's longest retention, 14 days. */
const MARKER_TTL_SECONDS = 14 * 24 * 3600;

/** Visibility given to an event message while its migrations are created, so a slow step is not redelivered. */
const EVENT_VISIBILITY_SECONDS = 120;

const ALIAS_NAME = /^alias\/[a-zA-Z0-9/_-]{1,250}$/;

/** The intake part of the process config, with the sources and bindings it acts on. */
export interface IntakeSettings {
  readonly queueUrl: string;
  /** Long-poll wait in seconds (0..20). */
  readonly waitSeconds: number;
  readonly onRotation: 'ignore' | 'refresh';
  readonly autoMigrate: boolean;
  /** Repeats of the same item within this window become one job (0: only repeats of one SQS message). */
  readonly dedupeWindowSeconds: number;
  readonly sources: readonly SourceSpec[];
  /** Alias name -> names of the sources holding data under it. */
  readonly bindings: Readonly<Record<string, readonly string[]>>;
}

/** What the intake publishes in Redis for workers, which build item sources from it. */
export const IntakeConfigSchema = z.object({
  sources: z.array(SourceSpecSchema),
  bindings: z.record(z.string().regex(ALIAS_NAME), z.array(NameSchema)),
});

/** The published intake config. */
export type IntakeConfig = z.output<typeof IntakeConfigSchema>;

/** An app's re-encrypt request, exactly as `@rekey/envelope` sends it. */
export const ItemRequestSchema = z.strictObject({
  type: z.literal('rekey.item'),
  source: NameSchema,
  item: ItemRefSchema,
});

/** The EventBridge envelope every AWS event has. Extra fields are allowed: AWS adds them over time. */
const EventBridgeSchema = z.object({
  version: z.string(),
  id: z.string().min(1).max(256),
  'detail-type': z.string().min(1),
  source: z.string().min(1),
  account: z.string().regex(/^\d{12}$/, 'must be a 12-digit account id'),
  time: z.string(),
  region: z.string().min(1),
  resources: z.array(z.string()),
  detail: z.record(z.string(), z.unknown()),
});

const RotationDetailSchema = z.object({ 'key-id': z.string().min(1).max(2048) });

const CloudTrailDetailSchema = z.object({
  eventSource: z.literal('kms.amazonaws.com'),
  eventName: z.string().min(1),
  errorCode: z.string().optional(),
  requestParameters: z.unknown(),
  responseElements: z.unknown().optional(),
});

const AliasParamsSchema = z.object({
  aliasName: z.string().regex(ALIAS_NAME, 'must be an alias name such as alias/app'),
  targetKeyId: z.string().min(1).max(2048),
});

/** One validated intake message. */
export type IntakeMessage =
  | { readonly kind: 'item'; readonly source: string; readonly item: ItemRef }
  | { readonly kind: 'rotation'; readonly eventId: string; readonly keyId: string; readonly keyArn?: string; readonly time: string }
  | {
      readonly kind: 'alias';
      readonly eventId: string;
      readonly eventName: 'CreateAlias' | 'UpdateAlias';
      readonly aliasName: string;
      readonly targetKeyId: string;
      /** The target's ARN, which CloudTrail records in `responseElements.keyId` since December 2022. */
      readonly keyArn?: string;
      readonly time: string;
    }
  /** A well-formed `aws.kms` event the intake does not act on (another event, a failed API call). */
  | { readonly kind: 'ignored'; readonly eventId: string; readonly detailType: string; readonly reason: string };

function reject(what: string, issues: readonly z.core.$ZodIssue[]): never {
  throw new FleetError('bad-message', `${what}: ${formatIssues(issues).join('; ')}`);
}

/**
 * Validates one SQS message body and says what it is.
 *
 * @throws FleetError `bad-message` with one line naming the problem, e.g.
 *   `rekey.item message: item.key: must not be empty`.
 */
export function parseIntakeMessage(body: string | undefined): IntakeMessage {
  if (body === undefined || body.trim() === '') throw new FleetError('bad-message', 'message body is empty');
  let json: unknown;
  try {
    json = JSON.parse(body);
  } catch {
    throw new FleetError('bad-message', 'message body is not JSON');
  }
  if (json === null || typeof json !== 'object' || Array.isArray(json)) throw new FleetError('bad-message', 'message body is not a JSON object');
  const obj = json as Record<string, unknown>;
  if ('type' in obj) {
    const r = ItemRequestSchema.safeParse(obj);
    if (!r.success) reject('rekey.item message', r.error.issues);
    return { kind: 'item', source: r.data.source, item: r.data.item };
  }
  if (!('detail-type' in obj)) throw new FleetError('bad-message', 'message is neither a rekey.item request (type) nor an EventBridge event (detail-type)');
  const e = EventBridgeSchema.safeParse(obj);
  if (!e.success) reject('EventBridge event', e.error.issues);
  const ev = e.data;
  if (ev.source !== 'aws.kms') throw new FleetError('bad-message', `EventBridge event: source: must be aws.kms, got ${JSON.stringify(ev.source).slice(0, 80)}`);
  const detailType = ev['detail-type'];
  if (detailType === 'KMS CMK Rotation') {
    const d = RotationDetailSchema.safeParse(ev.detail);
    if (!d.success) reject('KMS CMK Rotation event detail', d.error.issues);
    const keyArn = ev.resources.find((r) => /^arn:aws[a-z-]*:kms:[a-z0-9-]+:\d{12}:key\//.test(r));
    return { kind: 'rotation', eventId: ev.id, keyId: d.data['key-id'], ...(keyArn !== undefined && { keyArn }), time: ev.time };
  }
  if (detailType === 'AWS API Call via CloudTrail') {
    const d = CloudTrailDetailSchema.safeParse(ev.detail);
    if (!d.success) reject('CloudTrail event detail', d.error.issues);
    const { eventName, errorCode } = d.data;
    if (eventName !== 'UpdateAlias' && eventName !== 'CreateAlias') {
      return { kind: 'ignored', eventId: ev.id, detailType, reason: `KMS ${eventName.slice(0, 64)} calls are not acted on` };
    }
    if (errorCode !== undefined) {
      return { kind: 'ignored', eventId: ev.id, detailType, reason: `the ${eventName} call failed (${errorCode.slice(0, 64)}); the alias did not move` };
    }
    const p = AliasParamsSchema.safeParse(d.data.requestParameters);
    if (!p.success) reject(`${eventName} event requestParameters`, p.error.issues);
    const resp = d.data.responseElements as { keyId?: unknown } | null | undefined;
    const keyArn = typeof resp?.keyId === 'string' && resp.keyId.startsWith('arn:') ? resp.keyId : undefined;
    return { kind: 'alias', eventId: ev.id, eventName, aliasName: p.data.aliasName, targetKeyId: p.data.targetKeyId, ...(keyArn !== undefined && { keyArn }), time: ev.time };
  }
  return { kind: 'ignored', eventId: ev.id, detailType: detailType.slice(0, 64), reason: `${detailType.slice(0, 64)} events are not acted on` };
}

/** Whether two source specs name the same data (same kind, location and options). */
export function sameSource(a: SourceSpec, b: SourceSpec): boolean {
  return canonicalJson(a) === canonicalJson(b);
}

/** The alias whose current target the items of `source` belong under (the first bound alias, by name). */
export function aliasOfSource(bindings: IntakeSettings['bindings'], source: string): string | undefined {
  return Object.keys(bindings)
    .sort()
    .find((alias) => bindings[alias]?.includes(source));
}

/**
 * The BullMQ job id of an app-requested item: a hash of the source, the item reference and the
 * dedupe time bucket, so repeats within one window are the same job. (No `:`: BullMQ reserves it.)
 */
export function itemJobId(source: string, item: ItemRef, bucket: string | number): string {
  return `item.${itemHash(source, item, bucket)}`;
}

function itemHash(source: string, item: ItemRef, bucket: string | number): string {
  return createHash('sha256').update(canonicalJson({ source, item, bucket })).digest('hex').slice(0, 40);
}

function shortHash(...parts: string[]): string {
  return createHash('sha256').update(parts.join('\n')).digest('hex').slice(0, 20);
}

/** What the intake needs; services pass the engine's parts, tests may pass fakes. */
export interface IntakeDeps {
  readonly settings: IntakeSettings;
  readonly sqs: Pick<SQSClient, 'send'>;
  readonly redis: Redis;
  readonly keys: RedisKeys;
  readonly queue: Pick<FleetQueue, 'add'>;
  readonly audit: Pick<AuditLog, 'append'>;
  readonly kms: Pick<KmsGateway, 'describeKey'>;
  readonly migrations: {
    create(spec: MigrationSpecInput, actor: string): Promise<Migration>;
    list(): Promise<Migration[]>;
  };
  readonly logger: Logger;
  /** Who the intake is in audit entries and migrations it starts. */
  readonly actor: string;
  /** Clock (ms), for tests. @defaultValue Date.now */
  readonly now?: () => number;
}

/** What handling one message came to. */
export type HandleResult =
  | { readonly done: true; readonly summary: string }
  | { readonly done: false; readonly rejected: true; readonly reason: string };

/** A running intake. */
export interface Intake {
  /** Publishes the config for workers and records each bound alias's current key. */
  prime(): Promise<void>;
  /** Validates and acts on one message body; `done` means it may be deleted. Other errors are thrown (retry later). */
  handle(body: string | undefined, meta?: { messageId?: string; sentAt?: number }): Promise<HandleResult>;
  /** One ReceiveMessage and the handling of what it returned; resolves to the number of messages received. */
  pollOnce(signal?: AbortSignal): Promise<number>;
  start(): void;
  stop(): Promise<void>;
}

/** Reads the intake counters (messages, items, outcomes) from Redis. */
export async function readIntakeStats(redis: Redis, keys: RedisKeys): Promise<Record<string, number>> {
  const raw = await redis.hgetall(keys.intakeStats());
  return Object.fromEntries(Object.entries(raw).map(([k, v]) => [k, Number(v)]));
}

/** Builds the intake (call `prime()` then `start()`, or let the engine's coordinator do it). */
export function createIntake(deps: IntakeDeps): Intake {
  const { settings, sqs, redis, keys, queue, audit, kms, migrations, logger, actor } = deps;
  const now = deps.now ?? Date.now;
  const specs = new Map(settings.sources.map((s) => [s.name, s]));
  let listCache: { at: number; list: Promise<Migration[]> } | undefined;
  let loop: Promise<void> | undefined;
  let abort: AbortController | undefined;

  const bump = (field: string, by = 1) => redis.hincrby(keys.intakeStats(), field, by);

  /** Non-terminal migrations, cached briefly: item requests come in bursts. */
  function activeMigrations(): Promise<Migration[]> {
    if (!listCache || now() - listCache.at > 2000) {
      const list = migrations.list().then((all) => all.filter((m) => !isTerminal(m.state)));
      list.catch(() => (listCache = undefined));
      listCache = { at: now(), list };
    }
    return listCache.list;
  }

  async function observeAlias(alias: string, arn: string): Promise<void> {
    await redis.multi().hset(keys.intakeAliases(), alias, arn).sadd(keys.intakeAliasKeys(alias), arn).exec();
  }

  async function startMigration(id: string, spec: MigrationSpecInput, covered: (m: Migration) => boolean): Promise<Record<string, unknown>> {
    const all = await migrations.list();
    if (all.some((m) => m.id === id)) return { migration: id, result: 'already started' };
    const other = all.find((m) => !isTerminal(m.state) && covered(m));
    if (other) return { migration: other.id, result: 'covered by a running migration' };
    try {
      const m = await migrations.create({ ...spec, id }, actor);
      listCache = undefined;
      return { migration: m.id, result: 'started', from: m.keys.from, to: m.keys.to };
    } catch (err) {
      // A refused spec (disabled key, missing bucket) does not get better on redelivery: record it.
      if (err instanceof ValidationError) return { migration: id, result: 'refused', reason: err.problems.join('; ').slice(0, 1000) };
      throw err;
    }
  }

  async function onAlias(msg: Extract<IntakeMessage, { kind: 'alias' }>): Promise<string> {
    const alias = msg.aliasName;
    const bound = settings.bindings[alias];
    const decisionKey = keys.intakeEvent(msg.eventId);
    let decision = await readDecision(decisionKey);
    if (!decision) {
      const next = msg.keyArn ?? (await kms.describeKey(msg.targetKeyId)).arn;
      const prev = bound ? ((await redis.hget(keys.intakeAliases(), alias)) ?? undefined) : undefined;
      const fresh = { ...(prev !== undefined && { prev }), next };
      // NX: on a redelivery, or with two coordinators, the first decision stands.
      if (await redis.set(decisionKey, JSON.stringify(fresh), 'EX', MARKER_TTL_SECONDS, 'NX')) {
        decision = fresh;
        if (bound) await observeAlias(alias, next);
      } else {
        decision = (await readDecision(decisionKey)) ?? fresh;
      }
    }
    const { prev, next } = decision;
    const actions: Record<string, unknown>[] = [];
    let outcome: string;
    if (!bound) outcome = 'none: the alias is not bound to any source';
    else if (!settings.autoMigrate) outcome = 'none: autoMigrate is off';
    else if (prev === undefined) outcome = 'none: the alias had no earlier key known to the intake';
    else if (prev === next) outcome = 'none: the alias already pointed to this key';
    else {
      for (const name of bound) {
        const spec = specs.get(name);
        if (!spec) continue;
        const id = `ev-${shortHash(msg.eventId, alias, name)}`;
        const r = await startMigration(id, { sources: [spec], from: [prev], to: next }, (m) =>
          !m.spec.refresh && m.keys.to === next && m.keys.from.includes(prev) && m.spec.sources.some((s) => sameSource(s, spec)),
        );
        actions.push({ source: name, ...r });
      }
      outcome = `${actions.filter((a) => a['result'] === 'started').length} migration(s) started`;
    }
    await audit.append(INTAKE_AUDIT_ID, {
      actor,
      type: 'intake.alias-moved',
      data: { eventId: msg.eventId, eventName: msg.eventName, eventTime: msg.time, alias, from: prev ?? null, to: next, bound: Boolean(bound), outcome, actions },
    });
    return `${msg.eventName} ${alias}: ${outcome}`;
  }

  async function onRotation(msg: Extract<IntakeMessage, { kind: 'rotation' }>): Promise<string> {
    const keyArn = msg.keyArn ?? (await kms.describeKey(msg.keyId)).arn;
    const actions: Record<string, unknown>[] = [];
    let outcome: string;
    if (settings.onRotation === 'ignore') {
      outcome = 'none: onRotation is ignore';
    } else {
      const names = new Set<string>();
      for (const [alias, list] of Object.entries(settings.bindings)) {
        let target: string;
        try {
          target = (await kms.describeKey(alias)).arn;
        } catch (err) {
          actions.push({ alias, result: 'alias not resolved', reason: (err as Error).message.slice(0, 300) });
          continue;
        }
        await observeAlias(alias, target);
        if (target === keyArn) for (const n of list) names.add(n);
      }
      for (const name of names) {
        const spec = specs.get(name);
        if (!spec) continue;
        const id = `rf-${shortHash(msg.eventId, name)}`;
        const r = await startMigration(id, { sources: [spec], from: [keyArn], to: keyArn, refresh: true }, (m) =>
          m.spec.refresh === true && m.keys.to === keyArn && m.spec.sources.some((s) => sameSource(s, spec)),
        );
        actions.push({ source: name, ...r });
      }
      outcome = names.size === 0 ? 'none: no bound alias points to the key' : `${actions.filter((a) => a['result'] === 'started').length} refresh migration(s) started`;
    }
    await audit.append(INTAKE_AUDIT_ID, { actor, type: 'intake.key-rotated', data: { eventId: msg.eventId, eventTime: msg.time, key: keyArn, outcome, actions } });
    return `rotation of ${keyArn}: ${outcome}`;
  }

  async function onItem(msg: Extract<IntakeMessage, { kind: 'item' }>, meta: { messageId?: string; sentAt?: number }): Promise<HandleResult> {
    const spec = specs.get(msg.source);
    if (!spec) return { done: false, rejected: true, reason: `rekey.item message: source: no source named ${msg.source} in the coordinator config` };
    if (spec.kind === 'postgres') {
      if (msg.item.kind !== 'row') return { done: false, rejected: true, reason: `rekey.item message: item.kind: source ${msg.source} holds rows, so the item must be { kind: 'row', pk }` };
      if (msg.item.pk.length !== spec.primaryKey.length) {
        return { done: false, rejected: true, reason: `rekey.item message: item.pk: source ${msg.source} has a ${spec.primaryKey.length}-column primary key, the item gives ${msg.item.pk.length} values` };
      }
    } else if (msg.item.kind !== 's3') {
      return { done: false, rejected: true, reason: `rekey.item message: item.kind: source ${msg.source} holds S3 objects, so the item must be { kind: 's3', key }` };
    }
    const running = (await activeMigrations())
      .filter((m) => m.spec.sources.some((s) => sameSource(s, spec)))
      .sort((a, b) => b.createdAt.localeCompare(a.createdAt))[0];
    if (!running && aliasOfSource(settings.bindings, msg.source) === undefined) {
      return { done: false, rejected: true, reason: `rekey.item message: source ${msg.source} has no running migration and no alias binding, so there is no target key` };
    }
    const t = now();
    const windowMs = settings.dedupeWindowSeconds * 1000;
    // Window 0 still folds redeliveries of one SQS message into one job.
    const bucket = windowMs > 0 ? Math.floor(t / windowMs) : (meta.messageId ?? String(t));
    const hash = itemHash(msg.source, msg.item, bucket);
    const job: ItemJob = {
      ...(running && { migrationId: running.id }),
      source: msg.source,
      item: msg.item,
      requestedAt: new Date(meta.sentAt ?? t).toISOString(),
    };
    // BullMQ runs non-prioritized jobs before any job with a `priority`, so "priority" here is LIFO:
    // the item goes to the head of the wait list, ahead of the waiting batches.
    await queue.add('item', job, { jobId: `item.${hash}`, lifo: true });
    // The marker only counts: the job id already made the enqueue idempotent.
    const first = await redis.set(keys.intakeDedupe(hash), '1', 'EX', Math.max(1, settings.dedupeWindowSeconds), 'NX');
    await bump(first ? 'items.enqueued' : 'items.deduplicated');
    return { done: true, summary: first ? `item of ${msg.source} enqueued` : `item of ${msg.source} deduplicated` };
  }

  async function handle(body: string | undefined, meta: { messageId?: string; sentAt?: number } = {}): Promise<HandleResult> {
    let msg: IntakeMessage;
    try {
      msg = parseIntakeMessage(body);
    } catch (err) {
      if (err instanceof FleetError && err.code === 'bad-message') return { done: false, rejected: true, reason: err.message };
      throw err;
    }
    switch (msg.kind) {
      case 'item':
        return onItem(msg, meta);
      case 'alias':
        await bump('events.alias');
        return { done: true, summary: await onAlias(msg) };
      case 'rotation':
        await bump('events.rotation');
        return { done: true, summary: await onRotation(msg) };
      case 'ignored':
        await bump('events.ignored');
        await audit.append(INTAKE_AUDIT_ID, { actor, type: 'intake.event-ignored', data: { eventId: msg.eventId, detailType: msg.detailType, reason: msg.reason } });
        return { done: true, summary: `event ${msg.eventId} ignored: ${msg.reason}` };
    }
  }

  async function onRejected(m: Message, reason: string): Promise<void> {
    await bump('messages.rejected');
    const id = m.MessageId ?? 'unknown';
    if (await redis.set(keys.intakeRejected(id), '1', 'EX', MARKER_TTL_SECONDS, 'NX')) {
      await bump('messages.rejected.unique');
      // The body is not logged: an app request could carry anything.
      logger.warn({ messageId: id, reason }, 'intake message rejected: left on the queue for SQS to move to its dead-letter queue');
    }
  }

  async function pollOnce(signal?: AbortSignal): Promise<number> {
    const out = await sqs.send(
      new ReceiveMessageCommand({
        QueueUrl: settings.queueUrl,
        MaxNumberOfMessages: 10,
        WaitTimeSeconds: settings.waitSeconds,
        MessageSystemAttributeNames: ['SentTimestamp', 'ApproximateReceiveCount'],
      }),
      signal ? { abortSignal: signal } : {},
    );
    const messages = out.Messages ?? [];
    const done: { Id: string; ReceiptHandle: string }[] = [];
    for (const [i, m] of messages.entries()) {
      const sent = Number(m.Attributes?.SentTimestamp);
      const meta = { ...(m.MessageId !== undefined && { messageId: m.MessageId }), ...(Number.isFinite(sent) && sent > 0 && { sentAt: sent }) };
      try {
        if (m.ReceiptHandle && m.Body?.includes('"detail-type"')) {
          await sqs.send(new ChangeMessageVisibilityCommand({ QueueUrl: settings.queueUrl, ReceiptHandle: m.ReceiptHandle, VisibilityTimeout: EVENT_VISIBILITY_SECONDS }));
        }
        const r = await handle(m.Body, meta);
        if (r.done) {
          await bump('messages.handled');
          logger.info({ messageId: m.MessageId }, r.summary);
          if (m.ReceiptHandle) done.push({ Id: String(i), ReceiptHandle: m.ReceiptHandle });
        } else {
          await onRejected(m, r.reason);
        }
      } catch (err) {
        // Not the message's fault (Redis, KMS or a throttle): it comes back after its visibility timeout.
        await bump('messages.retried').catch(() => undefined);
        logger.error({ messageId: m.MessageId, err: (err as Error).message }, 'intake message could not be handled now; SQS will deliver it again');
      }
    }
    if (done.length > 0) {
      const del = await sqs.send(new DeleteMessageBatchCommand({ QueueUrl: settings.queueUrl, Entries: done }));
      for (const f of del.Failed ?? []) logger.warn({ code: f.Code, reason: f.Message }, 'intake could not delete a handled message; its work is idempotent');
    }
    return messages.length;
  }

  async function readDecision(key: string): Promise<{ prev?: string; next: string } | undefined> {
    const raw = await redis.get(key);
    if (!raw) return undefined;
    const r = z.object({ prev: z.string().optional(), next: z.string() }).safeParse(JSON.parse(raw));
    return r.success ? { ...(r.data.prev !== undefined && { prev: r.data.prev }), next: r.data.next } : undefined;
  }

  async function prime(): Promise<void> {
    const config: IntakeConfig = { sources: [...settings.sources], bindings: Object.fromEntries(Object.entries(settings.bindings).map(([a, l]) => [a, [...l]])) };
    await redis.set(keys.intakeConfig(), JSON.stringify(config));
    for (const alias of Object.keys(settings.bindings)) {
      try {
        const arn = (await kms.describeKey(alias)).arn;
        const seen = await redis.hget(keys.intakeAliases(), alias);
        if (seen === arn) continue;
        if (seen === null) {
          await observeAlias(alias, arn);
          continue;
        }
        // The alias moved while no intake was watching: act as if its event had arrived.
        await onAlias({ kind: 'alias', eventId: `observed-${shortHash(alias, seen, arn)}`, eventName: 'UpdateAlias', aliasName: alias, targetKeyId: arn, keyArn: arn, time: new Date(now()).toISOString() });
      } catch (err) {
        logger.warn({ alias, err: (err as Error).message }, 'intake could not resolve a bound alias; item requests for its sources wait for it');
      }
    }
  }

  return {
    prime,
    handle,
    pollOnce,
    start() {
      if (loop) return;
      abort = new AbortController();
      const signal = abort.signal;
      loop = (async () => {
        let backoff = 0;
        try {
          await prime();
        } catch (err) {
          logger.error({ err: (err as Error).message }, 'intake could not publish its config');
        }
        while (!signal.aborted) {
          try {
            await pollOnce(signal);
            backoff = 0;
          } catch (err) {
            if (signal.aborted) break;
            backoff = Math.min(30_000, backoff === 0 ? 500 : backoff * 2);
            logger.error({ err: (err as Error).message, retryInMs: backoff }, 'intake ReceiveMessage failed');
            await new Promise<void>((resolve) => {
              const t = setTimeout(resolve, backoff);
              signal.addEventListener('abort', () => { clearTimeout(t); resolve(); }, { once: true });
            });
          }
        }
      })();
    },
    async stop() {
      abort?.abort();
      await loop;
      loop = undefined;
    },
  };
}
