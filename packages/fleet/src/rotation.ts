/**
 * `rekey rotate`: the AWS manual key rotation as one resumable workflow. Clone the key behind an
 * alias (spec, usage, description, policy, tags), move the alias, migrate every source bound to
 * the alias, wait for every gate, disable the old key, and write each step to the rotation's
 * own audit log.
 *
 * Resuming needs no state of its own: the new key carries `rekey:replaces=<old ARN>` and
 * `rekey:rotation=<id>` tags, the migrations have ids derived from the rotation id, and the
 * rotation's audit log says whether it completed. A second run finds the key by its tags (behind
 * the alias once it moved, through ListKeys before that) and carries on from the first step not
 * yet done, so it never creates a second key or a second migration.
 */
import { createHash } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { Redis } from 'ioredis';
import {
  CreateKeyCommand,
  DescribeKeyCommand,
  EnableKeyRotationCommand,
  GetKeyPolicyCommand,
  GetKeyRotationStatusCommand,
  ListKeysCommand,
  ListResourceTagsCommand,
  UpdateAliasCommand,
  type KMSClient,
  type KeyMetadata,
  type Tag,
} from '@aws-sdk/client-kms';
import type { Migration, SourceSpec } from '@rekey/core';
import { createAuditLog, type AuditLog, type StoredAuditEntry } from './audit.js';
import type { Engine, FinalizeResult } from './engine.js';
import { FleetError } from './errors.js';
import { sameSource } from './intake.js';
import type { GateResult } from './gate.js';
import { redisKeys } from './keys.js';

/** Tag on a new key naming the key it replaces; how a resumed rotation finds its key. */
export const REPLACES_TAG = 'rekey:replaces';
/** Tag on a new key naming the rotation that created it. */
export const ROTATION_TAG = 'rekey:rotation';

/** The steps of a rotation, in order; `onStep` is told each one as it finishes. */
export const ROTATION_STEPS = [
  'resolved',
  'key-created',
  'awaiting-import',
  'alias-updated',
  'migrations-started',
  'migrations-ready',
  'finalized',
  'completed',
] as const;

/** One step of a rotation. */
export type RotationStep = (typeof ROTATION_STEPS)[number];

/** What a rotation needs from the fleet's migrations: an engine in this process or the coordinator API. */
export interface RotationMigrations {
  create(spec: unknown): Promise<Migration>;
  /** The migration, or undefined when there is none with that id. */
  find(id: string): Promise<Migration | undefined>;
  /** Every migration (to find one another actor already started for the same move). */
  list(): Promise<Migration[]>;
  gate(id: string): Promise<GateResult>;
  finalize(id: string): Promise<FinalizeResult>;
}

/** Input of {@link planRotation} and {@link runRotation}. */
export interface RotationOptions {
  /** The alias to rotate, `alias/name`. */
  readonly alias: string;
  /** A KMS client with rights to describe, create and tag keys and update the alias. */
  readonly kms: KMSClient;
  readonly migrations: RotationMigrations;
  /** The audit log the rotation writes to (the fleet's, in the same Redis). */
  readonly audit: AuditLog;
  /** The sources `rekey.yaml` binds to the alias. */
  readonly sources: readonly SourceSpec[];
  readonly actor: string;
  /** Stop once every gate is ready, leaving the old key enabled. @defaultValue false */
  readonly noFinalize?: boolean;
  /** `options` of each migration the rotation starts (batch size, concurrency, …). */
  readonly migrationOptions?: Readonly<Record<string, unknown>>;
  /** Follows one migration until it settles (the CLI's progress view); polling when absent. */
  readonly waitFor?: (migrationId: string, signal: AbortSignal) => Promise<void>;
  /** Poll interval of the default `waitFor`. @defaultValue 500 */
  readonly pollMs?: number;
  /** Called after each step; an error thrown here stops the rotation (tests use it to simulate a crash). */
  readonly onStep?: (step: RotationStep, detail: Readonly<Record<string, unknown>>) => void | Promise<void>;
  readonly signal?: AbortSignal;
  /** Clock, for the rotation id. */
  readonly now?: () => Date;
}

/** What a dry run would do, computed with read-only calls. */
export interface RotationPlan {
  readonly id: string;
  readonly alias: string;
  readonly oldKey: string;
  /** The new key when an earlier run already created it. */
  readonly newKey: string | null;
  readonly resuming: boolean;
  readonly lines: readonly string[];
}

/** The outcome of a rotation run. */
export interface RotationReport {
  readonly id: string;
  readonly alias: string;
  readonly oldKey: string;
  readonly newKey: string;
  /** True when this run continued an earlier one. */
  readonly resumed: boolean;
  /** What this run did, in order. */
  readonly steps: readonly string[];
  readonly migrations: readonly { id: string; source: string; state: string; gateReady: boolean }[];
  readonly finalized: boolean;
  /** KeyState of the old key at the end. */
  readonly oldKeyState: string;
  readonly audit: { readonly entries: number; readonly intact: boolean };
}

const SETTLED = new Set(['ready', 'blocked', 'finalized', 'paused', 'cancelled', 'failed']);
const CUSTOM_STORE_ORIGINS = new Set(['AWS_CLOUDHSM', 'EXTERNAL_KEY_STORE']);

/** The {@link RotationMigrations} of an engine in this process. */
export function engineMigrations(engine: Engine, actor: string): RotationMigrations {
  return {
    create: (spec) => engine.createMigration(spec, actor),
    find: async (id) => (await engine.store.get(id)) ?? undefined,
    list: () => engine.list(),
    gate: (id) => engine.gate(id),
    finalize: (id) => engine.finalize(id, { actor }),
  };
}

/** The rotation id for an alias at a time: `rot-<alias-slug>-<yyyymmddhhmmss>`, short enough to prefix migration ids. */
export function rotationId(alias: string, at: Date): string {
  const slug = alias.replace(/^alias\//, '').toLowerCase().replace(/[^a-z0-9]+/g, '-').replace(/^-+|-+$/g, '').slice(0, 24) || 'key';
  return `rot-${slug}-${at.toISOString().replace(/[-:T]/g, '').slice(0, 14)}`;
}

/** The migration id of one source of a rotation; the same on every run, so a resumed run finds it. */
export function rotationMigrationId(rotation: string, source: string): string {
  const id = `${rotation}-${source}`;
  return id.length <= 63 ? id : `${rotation}-${createHash('sha256').update(source).digest('hex').slice(0, 12)}`;
}

/** The `aws kms` steps that import key material into an EXTERNAL key, as lines to print. */
export function importInstructions(keyArn: string): string[] {
  return [
    `The new key ${keyArn} has Origin EXTERNAL and is waiting for its key material. Import it, then run rekey rotate again:`,
    `  1. aws kms get-parameters-for-import --key-id ${keyArn} --wrapping-algorithm RSAES_OAEP_SHA_256 --wrapping-key-spec RSA_4096`,
    '     (base64-decode PublicKey into WrappingPublicKey.bin and ImportToken into ImportToken.bin; they are valid for 24 hours)',
    '  2. wrap your 256-bit key material: openssl pkeyutl -encrypt -in PlaintextKeyMaterial.bin -out EncryptedKeyMaterial.bin -inkey WrappingPublicKey.bin -keyform DER -pubin -pkeyopt rsa_padding_mode:oaep -pkeyopt rsa_oaep_md:sha256',
    `  3. aws kms import-key-material --key-id ${keyArn} --encrypted-key-material fileb://EncryptedKeyMaterial.bin --import-token fileb://ImportToken.bin --expiration-model KEY_MATERIAL_DOES_NOT_EXPIRE`,
  ];
}

/** Opens the fleet's audit log on its own Redis connection, for a CLI that talks to the coordinator API. */
export async function connectAuditLog(redisUrl: string, prefix: string): Promise<{ audit: AuditLog; close(): Promise<void> }> {
  const redis = new Redis(redisUrl, { maxRetriesPerRequest: 3 });
  try {
    await redis.ping();
  } catch (err) {
    redis.disconnect();
    throw new FleetError('redis-unavailable', `Redis is not reachable at ${redisUrl}: ${(err as Error).message}`);
  }
  return { audit: createAuditLog(redis, redisKeys(prefix)), close: async () => void (await redis.quit()) };
}

function awsMessage(op: string, err: unknown): string {
  const e = err as { name?: string; message?: string };
  return `${op} failed: ${e.name ?? 'Error'}: ${e.message ?? String(err)}`;
}

async function call<T>(op: string, fn: () => Promise<T>): Promise<T> {
  try {
    return await fn();
  } catch (err) {
    if (err instanceof FleetError) throw err;
    const name = (err as { name?: string }).name;
    throw new FleetError(name === 'NotFoundException' ? 'not-found' : 'invalid-state', awsMessage(op, err), { cause: err });
  }
}

async function describe(kms: KMSClient, keyId: string): Promise<KeyMetadata> {
  const out = await call(`DescribeKey ${keyId}`, () => kms.send(new DescribeKeyCommand({ KeyId: keyId })));
  if (!out.KeyMetadata?.Arn) throw new FleetError('invalid-state', `DescribeKey ${keyId} returned no key metadata`);
  return out.KeyMetadata;
}

async function tagsOf(kms: KMSClient, keyId: string): Promise<Tag[]> {
  const tags: Tag[] = [];
  let marker: string | undefined;
  do {
    const out = await call(`ListResourceTags ${keyId}`, () => kms.send(new ListResourceTagsCommand({ KeyId: keyId, ...(marker ? { Marker: marker } : {}) })));
    tags.push(...(out.Tags ?? []));
    marker = out.Truncated ? out.NextMarker : undefined;
  } while (marker);
  return tags;
}

const tag = (tags: readonly Tag[], key: string) => tags.find((t) => t.TagKey === key)?.TagValue;

/** Why rotate can't clone this key, or null when it can. */
function refusal(alias: string, k: KeyMetadata): string | null {
  if (k.KeyManager !== 'CUSTOMER') return `${alias} points to ${k.Arn}, an AWS managed key; AWS rotates those itself`;
  if (k.MultiRegion) {
    return `${alias} points to ${k.Arn}, a multi-Region key; rotate clones single-Region keys only (a multi-Region rotation needs a new primary and a replica in every Region), so create the keys by hand and use rekey migrate`;
  }
  if (k.CustomKeyStoreId || CUSTOM_STORE_ORIGINS.has(k.Origin ?? '')) {
    return `${alias} points to ${k.Arn}, a key in a custom key store (${k.Origin}); its material lives in your HSM or external key manager, so create the new key there and use rekey migrate`;
  }
  return null;
}

interface Discovery {
  readonly id: string;
  readonly old: KeyMetadata;
  /** The new key when an earlier run created it. */
  readonly created: KeyMetadata | null;
  readonly aliasTarget: string;
  readonly resuming: boolean;
  readonly entries: readonly StoredAuditEntry[];
}

/** Finds which rotation this run is: a new one, or the unfinished one an earlier run left. Reads only. */
async function discover(o: RotationOptions): Promise<Discovery> {
  const current = await call(`DescribeKey ${o.alias}`, () => o.kms.send(new DescribeKeyCommand({ KeyId: o.alias }))).then((r) => r.KeyMetadata);
  if (!current?.Arn) throw new FleetError('not-found', `alias ${o.alias} does not resolve to a key`);
  const currentTags = await tagsOf(o.kms, current.Arn);
  const replaced = tag(currentTags, REPLACES_TAG);
  const rid = tag(currentTags, ROTATION_TAG);
  if (replaced && rid) {
    // The alias already moved: this key is a rotation's new key, unless that rotation completed.
    const entries = await o.audit.read(rid);
    const old = await describe(o.kms, replaced);
    // Without its audit log (Redis lost), a rotation whose old key is off counts as done.
    const done = entries.some((e) => e.type === 'rotation.completed') || (entries.length === 0 && (old.KeyState === 'Disabled' || old.KeyState === 'PendingDeletion'));
    if (!done) {
      return { id: rid, old, created: current, aliasTarget: current.Arn, resuming: true, entries };
    }
  }
  const why = refusal(o.alias, current);
  if (why) throw new FleetError('not-supported', why);
  if (current.KeyState !== 'Enabled') throw new FleetError('invalid-state', `${o.alias} points to ${current.Arn}, which is ${current.KeyState}; rotate starts from an Enabled key`);
  // The alias has not moved yet: an earlier run may have created the new key and stopped.
  const found = await findReplacement(o.kms, current.Arn);
  if (found) {
    return { id: found.rotation, old: current, created: found.key, aliasTarget: current.Arn, resuming: true, entries: await o.audit.read(found.rotation) };
  }
  const id = rotationId(o.alias, (o.now ?? (() => new Date()))());
  return { id, old: current, created: null, aliasTarget: current.Arn, resuming: false, entries: [] };
}

/** The newest live key tagged as replacing `oldArn` (ListKeys + ListResourceTags: one call per key in the account). */
async function findReplacement(kms: KMSClient, oldArn: string): Promise<{ key: KeyMetadata; rotation: string } | null> {
  let best: { key: KeyMetadata; rotation: string } | null = null;
  let marker: string | undefined;
  do {
    const page = await call('ListKeys', () => kms.send(new ListKeysCommand({ Limit: 1000, ...(marker ? { Marker: marker } : {}) })));
    for (const k of page.Keys ?? []) {
      if (!k.KeyArn || k.KeyArn === oldArn) continue;
      let tags: Tag[];
      try {
        tags = await tagsOf(kms, k.KeyArn);
      } catch {
        // A key we may not read the tags of (another team's policy) is not one rotate created.
        continue;
      }
      const rotation = tag(tags, ROTATION_TAG);
      if (tag(tags, REPLACES_TAG) !== oldArn || !rotation) continue;
      const meta = await describe(kms, k.KeyArn);
      if (meta.KeyState === 'PendingDeletion' || meta.KeyState === 'Disabled') continue;
      if (!best || (meta.CreationDate?.getTime() ?? 0) > (best.key.CreationDate?.getTime() ?? 0)) best = { key: meta, rotation };
    }
    marker = page.Truncated ? page.NextMarker : undefined;
  } while (marker);
  return best;
}

function checkSources(o: RotationOptions): void {
  if (o.sources.length === 0) {
    throw new FleetError(
      'bad-input',
      `${o.alias} has no bindings in rekey.yaml; list the sources that hold its data (bindings: { "${o.alias}": [source, …] }) so rotate can migrate them before the old key is disabled`,
    );
  }
}

/** The key tags of the clone: the old key's (minus `aws:` and earlier rotation tags) plus the rotation's own. */
function cloneTags(old: readonly Tag[], oldArn: string, id: string): Tag[] {
  const kept = old.filter((t) => t.TagKey && !t.TagKey.startsWith('aws:') && t.TagKey !== REPLACES_TAG && t.TagKey !== ROTATION_TAG);
  const tags = [...kept, { TagKey: REPLACES_TAG, TagValue: oldArn }, { TagKey: ROTATION_TAG, TagValue: id }];
  if (tags.length > 50) throw new FleetError('invalid-state', `the old key has ${kept.length} tags; with the two rotation tags the clone would pass the KMS limit of 50`);
  return tags;
}

/**
 * What `rekey rotate --dry-run` prints: the key to clone, the alias move, the migrations and the
 * finalize step. Makes only read calls (DescribeKey, ListResourceTags, GetKeyPolicy, ListKeys) and
 * writes nothing, not even the audit log.
 */
export async function planRotation(o: RotationOptions): Promise<RotationPlan> {
  checkSources(o);
  const d = await discover(o);
  const oldArn = d.old.Arn!;
  const lines: string[] = [];
  lines.push(`rotation ${d.id}${d.resuming ? ' (resuming an earlier run)' : ''}: ${o.alias} -> currently ${d.aliasTarget}`);
  if (d.created) {
    lines.push(`  new key: ${d.created.Arn} already exists (${d.created.KeyState}); it will be reused`);
  } else {
    const tags = cloneTags(await tagsOf(o.kms, oldArn), oldArn, d.id);
    const policy = await call(`GetKeyPolicy ${oldArn}`, () => o.kms.send(new GetKeyPolicyCommand({ KeyId: oldArn, PolicyName: 'default' })));
    lines.push(`  would create a key cloning ${oldArn}: KeySpec ${d.old.KeySpec}, KeyUsage ${d.old.KeyUsage}, Origin ${d.old.Origin}, description ${JSON.stringify(d.old.Description ?? '')}`);
    lines.push(`  with its key policy (${(policy.Policy ?? '').length} characters) and tags ${tags.map((t) => `${t.TagKey}=${t.TagValue}`).join(', ')}`);
    if (d.old.Origin === 'EXTERNAL') lines.push('  the new key is EXTERNAL: rotate stops after creating it until you import its key material');
  }
  const newRef = d.created?.Arn ?? '<new key>';
  lines.push(d.aliasTarget === d.created?.Arn ? `  ${o.alias} already points to the new key` : `  would move ${o.alias} to ${newRef}`);
  for (const s of o.sources) {
    const id = rotationMigrationId(d.id, s.name);
    const existing = await o.migrations.find(id);
    lines.push(existing ? `  migration ${id} (${s.kind} ${s.name}) exists: ${existing.state}` : `  would start migration ${id}: ${s.kind} ${s.name}, ${oldArn} -> ${newRef}`);
  }
  lines.push(o.noFinalize ? '  would stop when every gate is ready (--no-finalize), leaving the old key enabled' : `  would disable ${oldArn} once every gate is ready`);
  return { id: d.id, alias: o.alias, oldKey: oldArn, newKey: d.created?.Arn ?? null, resuming: d.resuming, lines };
}

/**
 * Runs (or resumes) the rotation of `alias` to the end: the new key, the alias, the migrations,
 * the gates and the finalize. Every step is appended to the audit log `<rotation id>`.
 *
 * @throws FleetError `not-supported` for multi-Region, custom key store and AWS managed keys;
 *   `awaiting-import` when the new EXTERNAL key has no key material yet; `gate-not-ready` when a
 *   migration settled with its gate red; `bad-input` when the alias has no bound sources.
 * @example
 * const report = await runRotation({ alias: 'alias/app', kms, migrations, audit: engine.audit, sources, actor: 'cli:me' });
 */
export async function runRotation(o: RotationOptions): Promise<RotationReport> {
  checkSources(o);
  const signal = o.signal ?? new AbortController().signal;
  const d = await discover(o);
  const id = d.id;
  const oldArn = d.old.Arn!;
  const steps: string[] = [];
  const logged = new Set(d.entries.map((e) => e.type));
  const audit = async (type: string, data: Record<string, unknown>) => {
    await o.audit.append(id, { actor: o.actor, type, data });
    logged.add(type);
  };
  const step = async (s: RotationStep, detail: Record<string, unknown>) => {
    signal.throwIfAborted();
    await o.onStep?.(s, detail);
  };

  if (d.resuming) {
    steps.push(`resumed rotation ${id}`);
    await audit('rotation.resumed', { alias: o.alias, oldKey: oldArn, newKey: d.created?.Arn });
  } else {
    await audit('rotation.started', { alias: o.alias, oldKey: oldArn, sources: o.sources.map((s) => s.name), finalize: !o.noFinalize });
  }
  await step('resolved', { id, oldKey: oldArn });

  // 1. The new key.
  let created = d.created;
  if (!created) {
    const tags = cloneTags(await tagsOf(o.kms, oldArn), oldArn, id);
    const policy = (await call(`GetKeyPolicy ${oldArn}`, () => o.kms.send(new GetKeyPolicyCommand({ KeyId: oldArn, PolicyName: 'default' })))).Policy;
    const out = await call('CreateKey', () =>
      o.kms.send(
        new CreateKeyCommand({
          KeySpec: d.old.KeySpec,
          KeyUsage: d.old.KeyUsage,
          Description: d.old.Description ?? '',
          Origin: d.old.Origin === 'EXTERNAL' ? 'EXTERNAL' : 'AWS_KMS',
          ...(policy ? { Policy: policy } : {}),
          Tags: tags,
        }),
      ),
    );
    if (!out.KeyMetadata?.Arn) throw new FleetError('invalid-state', 'CreateKey returned no key metadata');
    created = out.KeyMetadata;
    steps.push(`created ${created.Arn} cloning ${oldArn}`);
    await audit('key.created', {
      key: created.Arn,
      clonedFrom: oldArn,
      keySpec: created.KeySpec,
      keyUsage: created.KeyUsage,
      origin: created.Origin,
      tags: tags.map((t) => t.TagKey),
      policySha256: policy ? createHash('sha256').update(policy).digest('hex') : null,
    });
  }
  const newArn = created.Arn!;
  await step('key-created', { key: newArn });

  // Keep automatic rotation as the old key had it (symmetric keys with KMS-made material only).
  if (d.old.KeySpec === 'SYMMETRIC_DEFAULT' && d.old.Origin === 'AWS_KMS' && created.KeyState === 'Enabled') {
    const [was, is] = await Promise.all([
      call('GetKeyRotationStatus', () => o.kms.send(new GetKeyRotationStatusCommand({ KeyId: oldArn }))),
      call('GetKeyRotationStatus', () => o.kms.send(new GetKeyRotationStatusCommand({ KeyId: newArn }))),
    ]);
    if (was.KeyRotationEnabled && !is.KeyRotationEnabled) {
      const days = was.RotationPeriodInDays ?? 365;
      await call('EnableKeyRotation', () => o.kms.send(new EnableKeyRotationCommand({ KeyId: newArn, RotationPeriodInDays: days })));
      steps.push(`enabled automatic rotation of ${newArn} every ${days} days, as on the old key`);
      await audit('key.rotation-enabled', { key: newArn, periodDays: days });
    }
  }

  // 2. EXTERNAL keys wait for their material; nothing may use the key before that.
  const fresh = await describe(o.kms, newArn);
  if (fresh.KeyState === 'PendingImport') {
    if (!logged.has('key.awaiting-import')) await audit('key.awaiting-import', { key: newArn });
    await o.onStep?.('awaiting-import', { key: newArn, instructions: importInstructions(newArn) });
    throw new FleetError('awaiting-import', `the new key ${newArn} (Origin EXTERNAL) has no key material yet; import it (see the steps above) and run rekey rotate ${o.alias} again`);
  }
  if (fresh.KeyState !== 'Enabled') throw new FleetError('invalid-state', `the new key ${newArn} is ${fresh.KeyState}; rotate needs it Enabled`);

  // 3. The alias.
  if (d.aliasTarget !== newArn) {
    await call(`UpdateAlias ${o.alias}`, () => o.kms.send(new UpdateAliasCommand({ AliasName: o.alias, TargetKeyId: newArn })));
    steps.push(`moved ${o.alias} from ${d.aliasTarget} to ${newArn}`);
    await audit('alias.updated', { alias: o.alias, from: d.aliasTarget, to: newArn });
  } else if (!logged.has('alias.updated')) {
    // A run stopped between UpdateAlias and its audit entry: the move happened, so record it now.
    await audit('alias.updated', { alias: o.alias, from: oldArn, to: newArn, recovered: true });
  }
  await step('alias-updated', { alias: o.alias, key: newArn });

  // 4. One migration per bound source, with ids a resumed run finds again.
  const ids: { id: string; source: string }[] = [];
  for (const s of o.sources) {
    const mid = rotationMigrationId(id, s.name);
    ids.push({ id: mid, source: s.name });
    const existing = await o.migrations.find(mid);
    if (!existing) {
      // The SQS intake (autoMigrate) may have seen the alias move first and started the same move
      // for this source: adopt that migration rather than run a second one, which would keep the
      // old key listed as a from key by a migration the rotation does not finalize.
      const covering = (await o.migrations.list()).find(
        (m) => m.state !== 'cancelled' && m.state !== 'failed' && !m.spec.refresh && m.keys.to === newArn && m.keys.from.includes(oldArn) && m.spec.sources.some((x) => sameSource(x, s)),
      );
      if (covering) {
        ids[ids.length - 1] = { id: covering.id, source: s.name };
        if (!d.entries.some((e) => e.type === 'migration.adopted' && e.data['migration'] === covering.id)) {
          steps.push(`adopted migration ${covering.id} (${s.name}), started by ${covering.id.startsWith('ev-') ? 'the SQS intake' : 'someone else'} for the same move`);
          await audit('migration.adopted', { migration: covering.id, source: s.name, from: oldArn, to: newArn });
        }
        continue;
      }
    }
    if (existing) {
      if (existing.state === 'cancelled' || existing.state === 'failed') {
        throw new FleetError('invalid-state', `migration ${mid} of rotation ${id} is ${existing.state}; the rotation can't finish while source ${s.name} is not migrated`);
      }
      // A run killed between creating the migration and logging it: log it now, so the record is whole.
      if (!d.entries.some((e) => e.type === 'migration.started' && e.data['migration'] === mid)) {
        await audit('migration.started', { migration: mid, source: s.name, from: oldArn, to: newArn, recovered: true });
      }
      continue;
    }
    await o.migrations.create({ id: mid, sources: [s], from: [oldArn], to: newArn, ...(o.migrationOptions ? { options: o.migrationOptions } : {}) });
    steps.push(`started migration ${mid} (${s.name})`);
    await audit('migration.started', { migration: mid, source: s.name, from: oldArn, to: newArn });
  }
  await step('migrations-started', { migrations: ids.map((m) => m.id) });

  // 5. Wait for every migration to settle, then read every gate.
  const waitFor = o.waitFor ?? ((mid: string, sig: AbortSignal) => pollUntilSettled(o.migrations, mid, o.pollMs ?? 500, sig));
  const gates = new Map<string, GateResult>();
  for (const m of ids) {
    const before = await o.migrations.find(m.id);
    if (before?.state !== 'finalized') await waitFor(m.id, signal);
    const after = await o.migrations.find(m.id);
    if (after?.state === 'finalized') continue;
    gates.set(m.id, await o.migrations.gate(m.id));
  }
  const red = [...gates].filter(([, g]) => !g.ready);
  if (red.length > 0) {
    const why = red.map(([mid, g]) => `${mid}: ${g.conditions.filter((c) => !c.ok).map((c) => `${c.name}: ${c.detail}`).join('; ')}`);
    await audit('rotation.blocked', { migrations: Object.fromEntries(red.map(([mid, g]) => [mid, g.conditions.filter((c) => !c.ok)])) });
    throw new FleetError('gate-not-ready', `rotation ${id} is waiting on a gate (fix it, then run rekey rotate ${o.alias} again): ${why.join(' | ')}`);
  }
  if (gates.size > 0 && !logged.has('migrations.ready')) await audit('migrations.ready', { migrations: [...gates.keys()] });
  await step('migrations-ready', { migrations: ids.map((m) => m.id) });

  // 6. Finalize: the last migration to let go of the old key disables it.
  let finalized = false;
  if (o.noFinalize) {
    steps.push('stopped before finalize (--no-finalize); the old key stays enabled');
    await audit('rotation.finalize-skipped', { oldKey: oldArn, reason: '--no-finalize' });
  } else {
    for (const m of ids) {
      if (!gates.has(m.id)) continue;
      const r = await o.migrations.finalize(m.id);
      for (const k of r.disabled) steps.push(`disabled ${k} (migration ${m.id})`);
    }
    const oldNow = await describe(o.kms, oldArn);
    if (oldNow.KeyState !== 'Disabled') {
      await audit('rotation.blocked', { oldKey: oldArn, oldKeyState: oldNow.KeyState, reason: 'the old key was not disabled by finalize' });
      throw new FleetError('invalid-state', `rotation ${id}: every migration is finalized but ${oldArn} is ${oldNow.KeyState}; another migration still lists it as a from key (rekey list)`);
    }
    finalized = true;
    if (!logged.has('key.disabled')) await audit('key.disabled', { key: oldArn });
    await step('finalized', { oldKey: oldArn });
  }

  const migrations = [];
  for (const m of ids) {
    const mm = await o.migrations.find(m.id);
    migrations.push({ id: m.id, source: m.source, state: mm?.state ?? 'unknown', gateReady: mm?.state === 'finalized' || (gates.get(m.id)?.ready ?? false) });
  }
  const oldKeyState = (await describe(o.kms, oldArn)).KeyState ?? 'unknown';
  if (finalized) {
    await audit('rotation.completed', { alias: o.alias, oldKey: oldArn, newKey: newArn, oldKeyState, migrations: migrations.map((m) => m.id) });
    await step('completed', { id });
  }
  const verification = await o.audit.verify(id);
  return {
    id,
    alias: o.alias,
    oldKey: oldArn,
    newKey: newArn,
    resumed: d.resuming,
    steps,
    migrations,
    finalized,
    oldKeyState,
    audit: { entries: verification.entries, intact: verification.ok },
  };
}

/**
 * Whether a rotation stops waiting on a migration: it is ready, finalized or stopped, or blocked
 * by something other than old-key use (which the usage monitor clears on its own once the
 * writers have moved to the new key, so the rotation keeps waiting for it).
 */
export function settledForRotation(state: string, red: readonly { name: string }[]): boolean {
  if (state !== 'blocked') return SETTLED.has(state);
  return red.some((c) => c.name !== 'old-key-quiet');
}

async function pollUntilSettled(migrations: RotationMigrations, id: string, pollMs: number, signal: AbortSignal): Promise<void> {
  for (;;) {
    const m = await migrations.find(id);
    if (!m) throw new FleetError('not-found', `no migration with id ${id}`);
    const red = m.state === 'blocked' ? (await migrations.gate(id)).conditions.filter((c) => !c.ok) : [];
    if (settledForRotation(m.state, red)) return;
    await sleep(pollMs, undefined, { signal });
  }
}

/** Lines of a rotation report for the terminal. */
export function rotationReportLines(r: RotationReport): string[] {
  return [
    `rotation ${r.id}${r.resumed ? ' (resumed)' : ''}: ${r.alias}`,
    `  old key ${r.oldKey}: ${r.oldKeyState}`,
    `  new key ${r.newKey}`,
    ...r.steps.map((s) => `  - ${s}`),
    ...r.migrations.map((m) => `  migration ${m.id} (${m.source}): ${m.state}${m.gateReady ? ', gate ready' : ''}`),
    `  ${r.finalized ? 'finalized: the old key is disabled' : 'not finalized: the old key stays enabled'}`,
    `  audit log ${r.id}: ${r.audit.entries} entries, chain ${r.audit.intact ? 'intact' : 'BROKEN'} (rekey audit ${r.id})`,
  ];
}
