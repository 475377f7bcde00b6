/**
 * The worker side of re-encrypt on access: one `item` job moves one item with the same Source
 * objects batches use.
 *
 * - When the job names a running migration, the item is moved with that migration's key plan.
 * - Otherwise the target is the current key of the alias the source is bound to, and the `from`
 *   keys are the other keys the intake has seen behind that alias. The fleet never lets KMS pick
 *   a source key (see `@rekey/sources` rewrap.ts), so an item under a key that was never behind
 *   the alias is reported `not-in-scope`, not moved.
 *
 * Item outcomes go to the intake counters, not to a migration's counters: the migration's own
 * batch still visits the item later (and counts it `already-current`), so counting it here too
 * would count it twice.
 */
import { DelayedError, type Job } from 'bullmq';
import type { Redis } from 'ioredis';
import type { Logger } from 'pino';
import {
  ItemError,
  MigrationFatalError,
  RetryableError,
  isTerminal,
  parseJob,
  type ItemJob,
  type KeyPlan,
  type Migration,
  type Outcome,
  type Source,
  type SourceSpec,
} from '@rekey/core';
import type { KmsGateway } from '@rekey/kms';
import { FleetError } from './errors.js';
import { IntakeConfigSchema, aliasOfSource, type IntakeConfig } from './intake.js';
import type { RedisKeys } from './keys.js';
import { keyPlan, type SourceRegistry } from './processor.js';
import type { ProgressStore } from './store.js';

/** What the item processor needs. */
export interface ItemProcessorDeps {
  readonly store: Pick<ProgressStore, 'get'>;
  /** Sources of migrations (the batch processor's registry). */
  readonly sources: SourceRegistry;
  /**
   * Builds (and caches) the source of a spec that no migration holds; its KMS calls count against
   * the budget of the target key's account.
   */
  readonly sourceFor: (spec: SourceSpec, targetKeyArn: string) => Promise<Source>;
  readonly redis: Redis;
  readonly keys: RedisKeys;
  readonly kms: Pick<KmsGateway, 'describeKey'>;
  readonly logger: Logger;
  /** Aborted on SIGTERM. */
  readonly shutdown: AbortSignal;
  /** How long an item of a paused migration waits before it is looked at again. @defaultValue 5000 */
  readonly pausedRecheckMs?: number;
}

/** The plan for one item: its source, keys and the migration (if any) it belongs to. */
interface ItemPlan {
  readonly source: Source;
  readonly plan: KeyPlan;
  readonly migrationId: string;
  readonly dryRun: boolean;
}

/** Builds the worker's handler of `item` jobs. */
export function createItemProcessor(deps: ItemProcessorDeps) {
  const { store, sources, redis, keys, kms, logger, shutdown } = deps;

  async function publishedConfig(): Promise<IntakeConfig> {
    const raw = await redis.get(keys.intakeConfig());
    if (!raw) throw new FleetError('not-found', 'no intake config in Redis: the coordinator publishes it when its intake starts');
    const r = IntakeConfigSchema.safeParse(JSON.parse(raw));
    if (!r.success) throw new FleetError('bad-input', 'the intake config in Redis is not valid; restart the coordinator to publish it again');
    return r.data;
  }

  async function aliasPlan(sourceName: string): Promise<ItemPlan | { outcome: Outcome; reason: string }> {
    const config = await publishedConfig();
    const spec = config.sources.find((s) => s.name === sourceName);
    if (!spec) return { outcome: 'failed', reason: `source ${sourceName} is not in the intake config` };
    const alias = aliasOfSource(config.bindings, sourceName);
    if (!alias) return { outcome: 'failed', reason: `source ${sourceName} has no running migration and no alias binding` };
    const target = (await kms.describeKey(alias)).arn;
    const setKey = keys.intakeAliasKeys(alias);
    await redis.sadd(setKey, target);
    const from = (await redis.smembers(setKey)).filter((k) => k !== target).sort();
    if (from.length === 0) return { outcome: 'not-in-scope', reason: `no earlier key of ${alias} is known, so there is nothing to move from` };
    return { source: await deps.sourceFor(spec, target), plan: { from, to: target }, migrationId: `intake.${alias}`, dryRun: false };
  }

  return async function processItem(job: Job<ItemJob>, token: string | undefined): Promise<void> {
    const data = parseJob('item', job.data);
    let m: Migration | null = null;
    if (data.migrationId !== undefined) {
      m = await store.get(data.migrationId);
      if (m && m.state === 'paused') {
        await job.moveToDelayed(Date.now() + (deps.pausedRecheckMs ?? 5000), token);
        throw new DelayedError();
      }
      // A migration that has ended no longer defines the plan: the alias does.
      if (m && isTerminal(m.state)) m = null;
    }
    let planned: ItemPlan | { outcome: Outcome; reason: string };
    if (m) {
      planned = { source: await sources.get(m, data.source), plan: keyPlan(m), migrationId: m.id, dryRun: m.spec.options.dryRun };
    } else {
      planned = await aliasPlan(data.source);
    }
    let outcome: Outcome;
    let reason: string | undefined;
    let code: string | undefined;
    if ('outcome' in planned) {
      ({ outcome, reason } = planned);
    } else {
      const abort = new AbortController();
      const onShutdown = () => abort.abort();
      shutdown.addEventListener('abort', onShutdown, { once: true });
      try {
        const r = await planned.source.reencrypt(data.item, planned.plan, { signal: abort.signal, migrationId: planned.migrationId, dryRun: planned.dryRun });
        outcome = r.outcome;
        reason = r.reason;
        code = r.code;
      } catch (err) {
        // BullMQ retries the job with backoff.
        if (err instanceof RetryableError) throw err;
        if (err instanceof ItemError) {
          outcome = err.outcome;
          code = err.code;
          reason = err.message;
        } else if (err instanceof MigrationFatalError) {
          outcome = 'failed';
          code = err.code;
          reason = err.message;
        } else {
          throw err;
        }
      } finally {
        shutdown.removeEventListener('abort', onShutdown);
      }
    }
    await redis.hincrby(keys.intakeStats(), `item.${outcome}`, 1);
    const line = { job: job.id, source: data.source, migration: data.migrationId, outcome, ...(code !== undefined && { code }), ...(reason !== undefined && { reason: reason.replace(/\s+/g, ' ').slice(0, 300) }) };
    if (outcome === 'failed') logger.warn(line, 'item job failed');
    else logger.info(line, 'item job done');
  };
}
