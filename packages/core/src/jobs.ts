/**
 * The one map from queue job name to payload type, and the zod schemas that validate a job
 * taken from the queue. The fleet's BullMQ Queue and Worker wrappers are typed from
 * {@link JobPayloads}, so a payload can't drift from its handler.
 */
import { z } from 'zod';
import { ValidationError } from './errors.js';
import type { ItemRef } from './source.js';
import { NameSchema } from './spec.js';
import { formatIssues } from './validation.js';

/** An S3 object (or one version of it). */
export const S3ItemRefSchema = z
  .strictObject({
    kind: z.literal('s3'),
    key: z.string().min(1, 'must not be empty').max(1024, 'must be at most 1024 characters'),
    versionId: z.string().min(1).max(1024).optional(),
    etag: z.string().min(1).max(1024).optional(),
    size: z.int().min(0).optional(),
  })
  .readonly();

/** A table row, by the values of its primary key columns in order. */
export const RowItemRefSchema = z
  .strictObject({
    kind: z.literal('row'),
    pk: z
      .array(z.union([z.string().max(4096), z.number().finite()]))
      .min(1, 'must hold at least one primary key value')
      .max(32)
      .readonly(),
  })
  .readonly();

/** A reference to one item, as carried by queue messages. */
export const ItemRefSchema = z.discriminatedUnion('kind', [S3ItemRefSchema, RowItemRefSchema]);

// Keeps the schema and the hand-written contract in source.ts in step, in both directions.
type Same<A, B> = [A] extends [B] ? ([B] extends [A] ? true : false) : false;
const itemRefMatches: Same<z.output<typeof ItemRefSchema>, ItemRef> = true;
void itemRefMatches;

/** Batch pass modes: re-encrypt items, or only inspect them (verify, read only). */
export const BATCH_MODES = ['reencrypt', 'verify'] as const;

/** A batch of item references of one migration and one source. */
export const BatchJobSchema = z.strictObject({
  migrationId: NameSchema,
  source: NameSchema,
  /** The page number within the source's enumeration. */
  page: z.int().min(0),
  items: z.array(ItemRefSchema).min(1, 'must hold at least one item').max(1000, 'must hold at most 1000 items').readonly(),
  mode: z.enum(BATCH_MODES),
});

/** A batch job payload (`batch` and `verify` jobs). */
export type BatchJob = z.output<typeof BatchJobSchema>;

/** One item to re-encrypt now, requested by an app when it read the item (re-encrypt on access). */
export const ItemJobSchema = z.strictObject({
  /** The running migration the item belongs to; absent when the source's bound alias target applies. */
  migrationId: NameSchema.optional(),
  source: NameSchema,
  item: ItemRefSchema,
  /** When the app asked (ISO-8601). */
  requestedAt: z.iso.datetime({ offset: true }),
});

/** An item job payload. */
export type ItemJob = z.output<typeof ItemJobSchema>;

/** The one map from job name to payload type (graphile-worker `Tasks` style). */
export interface JobPayloads {
  batch: BatchJob;
  verify: BatchJob;
  item: ItemJob;
}

/** A job name. */
export type JobName = keyof JobPayloads;

/** The schema of each job name's payload. */
export const JOB_SCHEMAS = {
  batch: BatchJobSchema,
  verify: BatchJobSchema,
  item: ItemJobSchema,
} as const satisfies { [N in JobName]: z.ZodType<JobPayloads[N]> };

/** True when `name` is a job name of the fleet. */
export function isJobName(name: string): name is JobName {
  return Object.hasOwn(JOB_SCHEMAS, name);
}

/**
 * Validates a job taken from the queue against its name's schema.
 *
 * @throws ValidationError naming the job and each problem, e.g. `batch job: items: must hold at least one item`.
 */
export function parseJob<N extends JobName>(name: N, data: unknown): JobPayloads[N];
export function parseJob(name: string, data: unknown): JobPayloads[JobName];
export function parseJob(name: string, data: unknown): JobPayloads[JobName] {
  if (!isJobName(name)) throw new ValidationError([`job name "${name}" is not one of ${Object.keys(JOB_SCHEMAS).join(', ')}`]);
  const r = JOB_SCHEMAS[name].safeParse(data);
  if (!r.success) throw new ValidationError(formatIssues(r.error.issues).map((line) => `${name} job: ${line}`));
  if (name !== 'item') {
    const batch = r.data as BatchJob;
    const expected = name === 'verify' ? 'verify' : 'reencrypt';
    if (batch.mode !== expected) throw new ValidationError([`${name} job: mode: must be ${expected} for a ${name} job`]);
  }
  return r.data;
}

/**
 * The deterministic BullMQ job id of a batch, `{migration}.{source}.{r|v}{round}.{page}`, so a
 * repeated enqueue after a crash is a no-op. A new round (a re-verify, or a resume after Redis
 * was lost) gets new ids.
 *
 * Why `.` and not `:`: BullMQ (5.x, `Job.validateOptions`) rejects a custom job id that contains
 * `:` unless it splits into exactly three parts (a compatibility rule for old repeatable jobs
 * that its maintainers plan to tighten), because `:` separates the parts of its Redis keys.
 * Migration ids and source names can't contain `.` (see `NameSchema`), so the id is unambiguous.
 */
export function batchJobId(migrationId: string, source: string, page: number, mode: BatchJob['mode'], round = 1): string {
  if (!Number.isInteger(page) || page < 0) throw new RangeError(`batch page must be a non-negative integer, got ${page}`);
  if (!Number.isInteger(round) || round < 1) throw new RangeError(`batch round must be a positive integer, got ${round}`);
  return `${migrationId}.${source}.${mode === 'verify' ? 'v' : 'r'}${round}.${page}`;
}
