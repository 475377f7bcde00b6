/**
 * The migration spec: what to re-encrypt (sources), from which keys, to which key, and how
 * (options). Validated with zod at the edges (API bodies, rekey.yaml, CLI flags).
 */
import { z } from 'zod';
import { ValidationError } from './errors.js';
import { formatIssues } from './validation.js';

const GiB = 1024 ** 3;
// Cross-field refinements run even when a field failed, so the user sees every problem at once.
const ALWAYS = { when: () => true };
const MiB = 1024 ** 2;

/** A name of a source or a migration: lower-case, digits, `-` and `_`; it has no `.` or `:` so it can sit in job ids and Redis keys. */
export const NameSchema = z
  .string()
  .regex(/^[a-z0-9][a-z0-9-_]{0,62}$/, 'must be 1-63 characters of a-z, 0-9, "-" and "_", starting with a letter or digit');

/** An S3 bucket name, checked with S3's general-purpose bucket naming rules. */
export const BucketNameSchema = z.string().superRefine((name, ctx) => {
  const problem = bucketNameProblem(name);
  if (problem) ctx.addIssue({ code: 'custom', message: problem });
});

/** Why `name` is not a valid S3 bucket name, or null when it is. */
export function bucketNameProblem(name: string): string | null {
  if (name.length < 3 || name.length > 63) return 'a bucket name must be 3-63 characters long';
  if (!/^[a-z0-9.-]+$/.test(name)) return 'a bucket name may hold only lower-case letters, digits, "." and "-"';
  if (!/^[a-z0-9].*[a-z0-9]$/.test(name)) return 'a bucket name must start and end with a letter or digit';
  if (name.includes('..')) return 'a bucket name must not contain two adjacent dots';
  if (/^\d{1,3}(\.\d{1,3}){3}$/.test(name)) return 'a bucket name must not be formatted as an IP address';
  if (name.startsWith('xn--') || name.startsWith('sthree-') || name.startsWith('amzn-s3-demo-')) {
    return 'a bucket name must not start with a prefix reserved by S3 (xn--, sthree-, amzn-s3-demo-)';
  }
  if (name.endsWith('-s3alias') || name.endsWith('--ol-s3') || name.endsWith('.mrap') || name.endsWith('--x-s3')) {
    return 'a bucket name must not end with a suffix reserved by S3 (-s3alias, --ol-s3, .mrap, --x-s3)';
  }
  return null;
}

/** A Postgres identifier (table, schema or column), unquoted-style so it can be quoted safely. */
export const SqlIdentifierSchema = z
  .string()
  .regex(/^[A-Za-z_][A-Za-z0-9_]{0,62}$/, 'must be an SQL identifier: a letter or "_" then up to 62 letters, digits or "_"');

const KEY_ID = /^([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}|mrk-[0-9a-f]{32})$/i;
const ALIAS = /^alias\/[a-zA-Z0-9/_-]{1,250}$/;
const KEY_ARN = /^arn:aws[a-z-]*:kms:[a-z0-9-]+:\d{12}:(key\/[a-zA-Z0-9-]+|alias\/[a-zA-Z0-9/_-]{1,250})$/;

/** A KMS key reference: a key id, a key ARN, an alias name (`alias/x`) or an alias ARN. */
export const KeyRefSchema = z
  .string()
  .refine((s) => KEY_ID.test(s) || ALIAS.test(s) || KEY_ARN.test(s), {
    message: 'must be a KMS key id, key ARN, alias name (alias/...) or alias ARN',
  });

/** An S3 key prefix. */
const PrefixSchema = z.string().max(1024, 'must be at most 1024 characters');

/** S3 objects encrypted with SSE-KMS. */
export const S3SseKmsSourceSchema = z.strictObject({
  name: NameSchema,
  kind: z.literal('s3-sse-kms'),
  bucket: BucketNameSchema,
  prefix: PrefixSchema.optional(),
  /**
   * Migrate noncurrent versions too (only `update-encryption` can change a noncurrent version in place).
   * @defaultValue false
   */
  includeVersions: z.boolean().default(false),
  /**
   * How an object is moved to the new key.
   * @defaultValue 'update-encryption'
   */
  strategy: z.enum(['update-encryption', 'copy', 'multipart-copy']).default('update-encryption'),
  /**
   * Objects at or above this size are copied in parts by the `copy` strategy (a single CopyObject stops at 5 GiB).
   * @defaultValue 5 GiB
   */
  multipartThresholdBytes: z
    .int()
    .min(5 * MiB, 'must be at least 5 MiB (the smallest S3 part)')
    .max(5 * GiB, 'must be at most 5 GiB (the largest single CopyObject)')
    .default(5 * GiB),
});

/** S3 objects encrypted on the client side, with the wrapped data key in their metadata. */
export const S3EnvelopeSourceSchema = z.strictObject({
  name: NameSchema,
  kind: z.literal('s3-envelope'),
  bucket: BucketNameSchema,
  prefix: PrefixSchema.optional(),
});

/** A Postgres column holding a KMS ciphertext blob or a Rekey envelope. */
export const PostgresSourceSchema = z
  .strictObject({
    name: NameSchema,
    kind: z.literal('postgres'),
    table: SqlIdentifierSchema,
    schema: SqlIdentifierSchema.optional(),
    /** One column, or several for a composite key; normalised to a list. */
    primaryKey: z
      .union([SqlIdentifierSchema, z.array(SqlIdentifierSchema).min(1, 'must list at least one column')])
      .transform((pk) => (typeof pk === 'string' ? [pk] : pk)),
    column: SqlIdentifierSchema,
    /**
     * What the column holds.
     * @defaultValue 'kms-blob'
     */
    format: z.enum(['kms-blob', 'rekey-envelope']).default('kms-blob'),
    /** A column holding each row's encryption context as a JSON object of strings. */
    contextColumn: SqlIdentifierSchema.optional(),
    /** A fixed encryption context for every row. */
    context: z.record(z.string(), z.string()).optional(),
    /** A column holding the ARN of the key each row is under (lets enumeration skip current rows). */
    keyIdColumn: SqlIdentifierSchema.optional(),
    /** Connection string; the process default is used when absent. Never logged. */
    databaseUrl: z
      .string()
      .refine((u) => /^postgres(ql)?:\/\//.test(u), { message: 'must be a postgres:// or postgresql:// URL' })
      .optional(),
  })
  // Runs even when other fields failed, so one error lists every problem.
  .superRefine((raw, ctx) => {
    const s = raw as Partial<Record<string, unknown>>;
    if (s['contextColumn'] !== undefined && s['context'] !== undefined) {
      ctx.addIssue({ code: 'custom', path: ['context'], message: 'set either context or contextColumn, not both' });
    }
    const pkRaw = s['primaryKey'];
    const pk = typeof pkRaw === 'string' ? [pkRaw] : Array.isArray(pkRaw) ? pkRaw.filter((c) => typeof c === 'string') : [];
    if (typeof s['column'] === 'string' && pk.includes(s['column'])) {
      ctx.addIssue({ code: 'custom', path: ['column'], message: 'must not be a primary key column' });
    }
    if (new Set(pk).size !== pk.length) ctx.addIssue({ code: 'custom', path: ['primaryKey'], message: 'lists a column twice' });
  }, ALWAYS);

/** One source of a migration, by kind. */
export const SourceSpecSchema = z.discriminatedUnion('kind', [S3SseKmsSourceSchema, S3EnvelopeSourceSchema, PostgresSourceSchema]);

/** One source of a migration (defaults applied). */
export type SourceSpec = z.output<typeof SourceSpecSchema>;
/** The input form of {@link SourceSpec} (before defaults). */
export type SourceSpecInput = z.input<typeof SourceSpecSchema>;
/** The kind of a source. */
export type SourceKind = SourceSpec['kind'];
/** An `s3-sse-kms` source. */
export type S3SseKmsSourceSpec = z.output<typeof S3SseKmsSourceSchema>;
/** An `s3-envelope` source. */
export type S3EnvelopeSourceSpec = z.output<typeof S3EnvelopeSourceSchema>;
/** A `postgres` source. */
export type PostgresSourceSpec = z.output<typeof PostgresSourceSchema>;

/** How a migration runs. Every field has a default. */
export const MigrationOptionsSchema = z.strictObject({
  /**
   * Item references per batch job, at most. Each pass starts with pages of 100 and doubles them
   * up to this size. @defaultValue 1000
   */
  batchSize: z.int().min(1).max(1000).default(1000),
  /** Items processed in parallel per worker. @defaultValue 16 */
  concurrency: z.int().min(1).max(256).default(16),
  /** Decide outcomes but write nothing and make no KMS write call. @defaultValue false */
  dryRun: z.boolean().default(false),
  /** The migration pauses when failed / processed goes over this. @defaultValue 0.05 */
  failureRateThreshold: z.number().min(0).max(1).default(0.05),
  /** The failure rate is judged only after this many processed items. @defaultValue 100 */
  failureRateMinItems: z.int().min(1).default(100),
  /** Waiting batches above which enumeration pauses. @defaultValue 200 */
  highWaterMark: z.int().min(1).default(200),
  /** Finalize (disable the old keys) as soon as the gate is ready. @defaultValue false */
  autoFinalize: z.boolean().default(false),
  /** Seconds without blocking old-key use the gate requires. @defaultValue 300 */
  quietWindowSeconds: z.int().min(0).default(300),
  /** Share of the KMS budget relative to other running migrations. @defaultValue 1 */
  weight: z.number().positive().max(1000).default(1),
  /** Attempts per item for retryable errors. @defaultValue 5 */
  maxAttempts: z.int().min(1).max(100).default(5),
});

/** How a migration runs (defaults applied). */
export type MigrationOptions = z.output<typeof MigrationOptionsSchema>;

/** The input of a migration (before defaults). */
export const MigrationSpecSchema = z
  .strictObject({
    /** A slug; generated by the fleet when absent. */
    id: NameSchema.optional(),
    sources: z.array(SourceSpecSchema).min(1, 'must list at least one source'),
    /** Keys whose items move: key ids, ARNs or aliases. */
    from: z.array(KeyRefSchema).min(1, 'must list at least one key'),
    /** The target key: key id, ARN or alias. */
    to: KeyRefSchema,
    options: MigrationOptionsSchema.prefault({}),
    /** A bucket the audit log is written to as JSONL at the end. */
    auditBucket: BucketNameSchema.optional(),
    /** Move items to the current key material of one key (from == [to]). */
    refresh: z.boolean().optional(),
  })
  // Runs even when other fields failed, so one error lists every problem.
  .superRefine((raw, ctx) => {
    const spec = raw as Partial<Record<string, unknown>>;
    const sources = Array.isArray(spec['sources']) ? (spec['sources'] as unknown[]) : [];
    const seen = new Set<string>();
    sources.forEach((s, i) => {
      const name = typeof s === 'object' && s !== null ? (s as Record<string, unknown>)['name'] : undefined;
      if (typeof name !== 'string') return;
      if (seen.has(name)) ctx.addIssue({ code: 'custom', path: ['sources', i, 'name'], message: `duplicate source name "${name}"` });
      seen.add(name);
    });
    const from = Array.isArray(spec['from']) ? (spec['from'] as unknown[]).filter((k) => typeof k === 'string') : [];
    const to = typeof spec['to'] === 'string' ? spec['to'] : undefined;
    if (new Set(from).size !== from.length) ctx.addIssue({ code: 'custom', path: ['from'], message: 'lists a key twice' });
    if (to === undefined) return;
    if (spec['refresh'] === true) {
      if (from.length !== 1 || from[0] !== to) {
        ctx.addIssue({ code: 'custom', path: ['from'], message: 'a refresh migration must have from equal to [to]' });
      }
    } else if (from.includes(to)) {
      ctx.addIssue({
        code: 'custom',
        path: ['to'],
        message: 'the target key is also a from key (set refresh: true to move data to the current key material)',
      });
    }
  }, ALWAYS);

/** A validated migration spec with defaults applied. */
export type MigrationSpec = z.output<typeof MigrationSpecSchema>;
/** The input form of {@link MigrationSpec} (what a user writes). */
export type MigrationSpecInput = z.input<typeof MigrationSpecSchema>;

/**
 * Validates a migration spec and applies defaults.
 *
 * @throws ValidationError listing every problem as a `path: message` line.
 * @example
 * const spec = parseMigrationSpec({ sources: [{ name: 'docs', kind: 's3-sse-kms', bucket: 'docs' }], from: ['alias/old'], to: 'alias/app' });
 */
export function parseMigrationSpec(input: unknown): MigrationSpec {
  const r = MigrationSpecSchema.safeParse(input);
  if (!r.success) throw new ValidationError(formatIssues(r.error.issues));
  return r.data;
}

/** What core needs to know about a resolved KMS key (from DescribeKey). */
export interface KeyInfo {
  readonly arn: string;
  readonly keyId: string;
  /** KMS KeyState: `Enabled`, `Disabled`, `PendingDeletion`, `PendingImport`, … */
  readonly state: string;
  /** KMS KeyUsage: `ENCRYPT_DECRYPT`, `SIGN_VERIFY`, `GENERATE_VERIFY_MAC`, `KEY_AGREEMENT`. */
  readonly usage: string;
  /** KMS KeySpec: `SYMMETRIC_DEFAULT`, `RSA_2048`, … */
  readonly spec: string;
  /** KMS Origin: `AWS_KMS`, `EXTERNAL`, `AWS_CLOUDHSM`, `EXTERNAL_KEY_STORE`. */
  readonly origin: string;
  /** KMS KeyManager: `CUSTOMER` or `AWS`. */
  readonly manager: string;
  readonly multiRegion: boolean;
  /** True when the key lives in a custom key store. */
  readonly customKeyStore?: boolean;
  readonly currentKeyMaterialId?: string;
}

/**
 * Why `key` can't play `role` in a migration, as one line, or null when it can. For a `from`
 * key, pass the resolved `target` to check that the target's spec can replace the key's.
 */
export function checkKeyForMigration(role: 'from' | 'to', key: KeyInfo, target?: KeyInfo): string | null {
  if (key.state !== 'Enabled') return `the key is ${key.state}, not Enabled`;
  if (key.usage !== 'ENCRYPT_DECRYPT') return `the key usage is ${key.usage}, not ENCRYPT_DECRYPT`;
  if (role === 'to') {
    if (key.manager === 'AWS') return 'the key is AWS managed; the target must be a customer managed key';
    return null;
  }
  if (target === undefined) return null;
  // ReEncrypt can cross specs, but symmetric data moved under an asymmetric key would need a
  // different decrypt path (and SSE-KMS accepts symmetric keys only), so it is refused.
  if (key.spec === 'SYMMETRIC_DEFAULT' && target.spec !== 'SYMMETRIC_DEFAULT') {
    return `the target key spec ${target.spec} cannot replace SYMMETRIC_DEFAULT; the target must be SYMMETRIC_DEFAULT`;
  }
  if (key.spec !== 'SYMMETRIC_DEFAULT' && target.spec !== key.spec) {
    return `the target key spec ${target.spec} cannot replace ${key.spec}; an asymmetric key can only be replaced by one of the same spec`;
  }
  return null;
}

/**
 * Why a resolved key plan is invalid, or null. The spec check compares the references as
 * written; this one compares ARNs, so it catches an alias and an ARN naming the same key.
 */
export function checkKeyPlan(plan: { readonly from: readonly string[]; readonly to: string; readonly refresh?: boolean | undefined }): string | null {
  if (plan.refresh) {
    return plan.from.length === 1 && plan.from[0] === plan.to ? null : `a refresh migration must have from equal to [${plan.to}]`;
  }
  if (plan.from.includes(plan.to)) return `the target ${plan.to} is also a from key (set refresh: true to move data to the current key material)`;
  return null;
}
