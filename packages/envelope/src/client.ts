import {
  GetObjectCommand,
  PutObjectCommand,
  type GetObjectCommandInput,
  type GetObjectCommandOutput,
  type PutObjectCommandInput,
  type PutObjectCommandOutput,
  type S3Client,
} from '@aws-sdk/client-s3';
import {
  decodeEnvelope,
  encodeEnvelope,
  envelopeAad,
  EnvelopeFormatError,
  ENVELOPE_TAG_BYTES,
  ENVELOPE_VERSION,
  type EnvelopeParts,
} from '@rekey/core';
import { checkContext, checkKeyId, contextId, sameContext } from './context.js';
import { freshIv, open, seal } from './crypto.js';
import { EnvelopeError, fromFormatError } from './errors.js';
import { IntakeBuffer } from './intake.js';
import { DataKeyCache, type CachedDataKey } from './key-cache.js';
import { KeyResolver, KmsCalls, type DataKey } from './kms.js';
import { rewrapStatements, type Queryable, type RewrapColumnOptions, type RewrapColumnOutcome } from './postgres.js';
import { buildS3ecMetadata, contextOfMatDesc, parseS3ecMetadata, S3EC_ALL_KEYS, s3ecMatDesc } from './s3ec.js';
import type {
  DecryptOptions,
  DecryptResult,
  EncryptionContext,
  EncryptOptions,
  EnvelopeClientOptions,
  EnvelopeStats,
  OnStale,
  RewrapOptions,
} from './types.js';

/** Parameters of `putObject`: PutObject input plus the key and context; the body is encrypted. */
export type PutObjectParams = Omit<PutObjectCommandInput, 'Body'> & {
  readonly Body: Uint8Array | string;
  /** Key id, key ARN, alias name or alias ARN for GenerateDataKey. */
  readonly keyId: string;
  /** The caller's encryption context (the reserved S3EC keys are refused). */
  readonly context?: EncryptionContext;
};

/** Parameters of `getObject`: GetObject input (no ranges) plus the expected context. */
export type GetObjectParams = Omit<GetObjectCommandInput, 'Range' | 'PartNumber'> & {
  /** The context the object was written with; `{}` when absent. It must equal the stored matdesc minus reserved keys. */
  readonly context?: EncryptionContext;
  /** When set, KMS Decrypt must use this key (KeyId); otherwise the key named in the wrapped key is used. */
  readonly keyId?: string;
};

/** The result of `getObject`. */
export interface GetObjectResult {
  readonly plaintext: Buffer;
  readonly keyArn: string;
  readonly keyMaterialId?: string;
  readonly stale: boolean;
  /** The caller's metadata (S3EC keys removed). */
  readonly metadata: Record<string, string>;
  /** The GetObject response without its body. */
  readonly response: Omit<GetObjectCommandOutput, 'Body'>;
}

/** The app-side envelope client. */
export interface EnvelopeClient {
  /** Encrypts into a Rekey binary envelope with a fresh data key (or a cached one when the cache is on). */
  encrypt(plaintext: Uint8Array | string, options: EncryptOptions): Promise<Buffer>;
  /** Decrypts an envelope, says whether its key is stale, and applies the `onStale` policy. */
  decrypt(envelope: Uint8Array, options?: DecryptOptions): Promise<DecryptResult>;
  /** The same ciphertext with its data key rewrapped under `to` (KMS ReEncrypt only). */
  rewrap(envelope: Uint8Array, options: RewrapOptions): Promise<Buffer>;
  /** Whether a key ARN is not the current target of the configured alias (false without an alias). */
  isStale(keyArn: string): Promise<boolean>;
  /** Writes an S3 Encryption Client v2 object (kms+context, AES/GCM/NoPadding). */
  putObject(s3: S3Client, params: PutObjectParams): Promise<PutObjectCommandOutput & { keyArn: string }>;
  /** Reads and decrypts an S3 Encryption Client v2 object. */
  getObject(s3: S3Client, params: GetObjectParams): Promise<GetObjectResult>;
  /** Rewraps an envelope column of one row with a compare-and-swap UPDATE. */
  rewrapColumn(pool: Queryable, options: RewrapColumnOptions): Promise<RewrapColumnOutcome>;
  /** A snapshot of the counters. */
  stats(): EnvelopeStats;
  /** Sends every buffered intake message now. */
  flush(): Promise<void>;
  /** Flushes the intake, zeroes cached keys and destroys clients built from config. */
  close(): Promise<void>;
}

const ON_STALE: readonly OnStale[] = ['ignore', 'rewrap', 'enqueue'];

function toBytes(value: unknown, what: string): Buffer {
  if (typeof value === 'string') return Buffer.from(value, 'utf8');
  if (value instanceof Uint8Array) return Buffer.from(value.buffer, value.byteOffset, value.byteLength);
  throw new EnvelopeError('invalid-argument', `${what} must be a Buffer, Uint8Array or string`);
}

function decode(envelope: unknown): EnvelopeParts {
  try {
    return decodeEnvelope(envelope as Uint8Array);
  } catch (err) {
    if (err instanceof EnvelopeFormatError) throw fromFormatError(err);
    throw err;
  }
}

function aadOf(parts: Pick<EnvelopeParts, 'version' | 'iv'>, context: EncryptionContext): Buffer {
  try {
    return envelopeAad(parts.version, parts.iv, context);
  } catch (err) {
    if (err instanceof EnvelopeFormatError) throw new EnvelopeError('invalid-argument', err.message, { cause: err });
    throw err;
  }
}

class Client implements EnvelopeClient {
  private readonly kms: KmsCalls;
  private readonly resolver: KeyResolver;
  private readonly alias: string | undefined;
  private readonly cache: DataKeyCache | undefined;
  private readonly intake: IntakeBuffer | undefined;
  private readonly sweeper: NodeJS.Timeout | undefined;
  private readonly counts = { encrypts: 0, decrypts: 0, rewraps: 0, staleReads: 0, rewrapFailures: 0 };
  private readonly errors: Record<string, number> = {};

  constructor(options: EnvelopeClientOptions) {
    if (typeof options !== 'object' || options === null) throw new EnvelopeError('invalid-argument', 'options must be an object');
    const ttl = options.staleTtlMs ?? 30_000;
    if (!(ttl >= 0) || !Number.isFinite(ttl)) throw new EnvelopeError('invalid-argument', 'staleTtlMs must be a finite number >= 0');
    this.alias = options.alias === undefined ? undefined : checkKeyId(options.alias, 'alias');
    this.cache = options.cache ? new DataKeyCache(options.cache) : undefined;
    // Built last, so a bad option above leaves no client or timer behind.
    this.intake = options.intake ? new IntakeBuffer(options.intake) : undefined;
    this.kms = new KmsCalls(options.kms);
    this.resolver = new KeyResolver(this.kms, ttl);
    if (this.cache) {
      const cache = this.cache;
      this.sweeper = setInterval(() => cache.sweep(), Math.min(options.cache?.maxAgeMs ?? 60_000, 60_000));
      this.sweeper.unref();
    }
  }

  encrypt(plaintext: Uint8Array | string, options: EncryptOptions): Promise<Buffer> {
    return this.track(async () => {
      const data = toBytes(plaintext, 'plaintext');
      const keyId = checkKeyId(options?.keyId, 'keyId');
      const context = checkContext(options.context);
      const iv = freshIv();
      const aad = aadOf({ version: ENVELOPE_VERSION, iv }, context);
      const out = await this.withDataKey(keyId, context, options.signal, (dk) => {
        const { ciphertext, tag } = seal(dk.plaintextKey, iv, aad, data);
        return encodeEnvelope({ keyArn: dk.keyArn, wrappedKey: dk.wrappedKey, iv, ciphertext, tag });
      });
      this.counts.encrypts++;
      return out;
    });
  }

  decrypt(envelope: Uint8Array, opts?: DecryptOptions): Promise<DecryptResult> {
    return this.track(async () => {
      const options = opts ?? {};
      const context = checkContext(options.context);
      const onStale = options.onStale ?? 'ignore';
      if (!ON_STALE.includes(onStale)) throw new EnvelopeError('invalid-argument', "onStale must be 'ignore', 'rewrap' or 'enqueue'");
      if (onStale === 'enqueue') {
        if (!this.intake) throw new EnvelopeError('invalid-argument', "onStale 'enqueue' needs the intake option");
        if (options.item === undefined) throw new EnvelopeError('invalid-argument', "onStale 'enqueue' needs an item");
      }
      const parts = decode(envelope);
      const aad = aadOf(parts, context);
      // The alias lookup runs alongside Decrypt, so stale detection adds no round trip.
      const target = this.alias ? this.resolver.resolve(this.alias) : undefined;
      target?.catch(() => undefined);
      const opened = await this.openParts(parts, context, aad, 'envelope', options.signal);
      let targetArn: string | undefined;
      try {
        targetArn = await target;
      } catch (err) {
        opened.plaintext.fill(0);
        throw err;
      }
      const stale = targetArn !== undefined && targetArn !== opened.keyArn;
      this.counts.decrypts++;
      const result: { -readonly [K in keyof DecryptResult]: DecryptResult[K] } = { ...opened, stale };
      if (!stale || targetArn === undefined) return result;
      this.counts.staleReads++;
      if (onStale === 'rewrap') {
        try {
          result.rewrapped = await this.rewrapParts(parts, targetArn, context, options.signal);
        } catch (err) {
          this.counts.rewrapFailures++;
          result.rewrapError = err instanceof EnvelopeError ? err : new EnvelopeError('kms-error', 'rewrap failed', { cause: err });
        }
      } else if (onStale === 'enqueue' && this.intake) {
        result.enqueued = this.intake.enqueue(options.item);
      }
      return result;
    });
  }

  rewrap(envelope: Uint8Array, options: RewrapOptions): Promise<Buffer> {
    return this.track(async () => {
      const to = checkKeyId(options?.to, 'to');
      const context = checkContext(options.context);
      const parts = decode(envelope);
      return this.rewrapParts(parts, to, context, options.signal);
    });
  }

  isStale(keyArn: string): Promise<boolean> {
    return this.track(async () => {
      if (!this.alias) return false;
      return (await this.resolver.resolve(this.alias)) !== keyArn;
    });
  }

  putObject(s3: S3Client, params: PutObjectParams): Promise<PutObjectCommandOutput & { keyArn: string }> {
    return this.track(async () => {
      checkS3Client(s3);
      const { Body, keyId: rawKeyId, context: rawContext, Metadata, ...rest } = params;
      const keyId = checkKeyId(rawKeyId, 'keyId');
      const data = toBytes(Body, 'Body');
      for (const k of ['ContentMD5', 'ContentLength', 'ChecksumCRC32', 'ChecksumCRC32C', 'ChecksumCRC64NVME', 'ChecksumSHA1', 'ChecksumSHA256']) {
        if ((rest as Record<string, unknown>)[k] !== undefined) {
          throw new EnvelopeError('invalid-argument', `${k} would describe the plaintext, not the stored ciphertext; leave it unset`);
        }
      }
      const userMeta: Record<string, string> = {};
      for (const [k, v] of Object.entries(Metadata ?? {})) {
        if (S3EC_ALL_KEYS.has(k.toLowerCase())) throw new EnvelopeError('invalid-argument', `Metadata key "${k}" is reserved for the S3 Encryption Client`);
        userMeta[k] = v;
      }
      const matDesc = s3ecMatDesc(checkContext(rawContext));
      const iv = freshIv();
      const { body, metadata, keyArn } = await this.withDataKey(keyId, matDesc, undefined, (dk) => {
        const { ciphertext, tag } = seal(dk.plaintextKey, iv, undefined, data);
        return {
          body: Buffer.concat([ciphertext, tag]),
          metadata: buildS3ecMetadata({ wrappedKey: dk.wrappedKey, iv, matDesc, plaintextLength: data.length }),
          keyArn: dk.keyArn,
        };
      });
      const out = await s3.send(new PutObjectCommand({ ...rest, Body: body, Metadata: { ...userMeta, ...metadata } }));
      this.counts.encrypts++;
      return { ...out, keyArn };
    });
  }

  getObject(s3: S3Client, params: GetObjectParams): Promise<GetObjectResult> {
    return this.track(async () => {
      checkS3Client(s3);
      const { context: rawContext, keyId: rawKeyId, ...input } = params;
      const context = checkContext(rawContext);
      const keyId = rawKeyId === undefined ? undefined : checkKeyId(rawKeyId, 'keyId');
      for (const k of ['Range', 'PartNumber']) {
        if ((input as Record<string, unknown>)[k] !== undefined) throw new EnvelopeError('invalid-argument', `${k} is not supported: GCM needs the whole object`);
      }
      const target = this.alias ? this.resolver.resolve(this.alias) : undefined;
      target?.catch(() => undefined);
      const res = await s3.send(new GetObjectCommand(input));
      const { Body, ...response } = res;
      const meta = parseS3ecMetadata(res.Metadata);
      // The S3EC specification: the stored context minus the reserved keys must equal the caller's.
      if (!sameContext(contextOfMatDesc(meta.matDesc), context)) {
        throw new EnvelopeError('wrong-context', 'the provided encryption context does not match the object’s x-amz-matdesc');
      }
      if (!Body) throw new EnvelopeError('malformed', 'GetObject returned no body');
      const stored = Buffer.from(await Body.transformToByteArray());
      if (stored.length < ENVELOPE_TAG_BYTES) throw new EnvelopeError('truncated', `object body is ${stored.length} bytes, shorter than its GCM tag`);
      const ciphertext = stored.subarray(0, stored.length - ENVELOPE_TAG_BYTES);
      const tag = stored.subarray(stored.length - ENVELOPE_TAG_BYTES);
      const opened = await this.openWith(
        { wrappedKey: meta.wrappedKey, keyId, context: meta.matDesc },
        (key) => open(key, meta.iv, undefined, ciphertext, tag, 'object body'),
        undefined,
      );
      if (meta.unencryptedContentLength !== undefined && meta.unencryptedContentLength !== opened.plaintext.length) {
        opened.plaintext.fill(0);
        throw new EnvelopeError('malformed', 'object plaintext length differs from x-amz-unencrypted-content-length');
      }
      let targetArn: string | undefined;
      try {
        targetArn = await target;
      } catch (err) {
        opened.plaintext.fill(0);
        throw err;
      }
      const stale = targetArn !== undefined && targetArn !== opened.keyArn;
      if (stale) this.counts.staleReads++;
      this.counts.decrypts++;
      const metadata: Record<string, string> = {};
      for (const [k, v] of Object.entries(res.Metadata ?? {})) if (!S3EC_ALL_KEYS.has(k)) metadata[k] = v;
      return { ...opened, stale, metadata, response };
    });
  }

  rewrapColumn(pool: Queryable, options: RewrapColumnOptions): Promise<RewrapColumnOutcome> {
    return this.track(async () => {
      if (!pool || typeof pool.query !== 'function') throw new EnvelopeError('invalid-argument', 'pool must have a query(text, values) method (pg.Pool)');
      const sql = rewrapStatements(options);
      const to = checkKeyId(options.to, 'to');
      const context = checkContext(options.context);
      const read = await pool.query(sql.select, sql.keyValues);
      const row = read.rows[0] as { v?: unknown } | undefined;
      if (!row || row.v === null || row.v === undefined) return 'gone';
      if (!(row.v instanceof Uint8Array)) throw new EnvelopeError('malformed', `column ${options.column} is not bytea`);
      const old = Buffer.from(row.v);
      const parts = decode(old);
      const toArn = await this.resolver.resolve(to);
      if (parts.keyArn === toArn) return 'already-current';
      const next = await this.rewrapParts(parts, toArn, context, options.signal);
      const write = await pool.query(sql.update, [...sql.keyValues, next, old]);
      if (write.rowCount === 1) return 'updated';
      const again = await pool.query(sql.select, sql.keyValues);
      return again.rows.length === 0 ? 'gone' : 'conflict';
    });
  }

  stats(): EnvelopeStats {
    return {
      ...this.counts,
      aliasRefreshFailures: this.resolver.refreshFailures,
      errors: { ...this.errors },
      cache: this.cache?.stats(),
      intake: this.intake?.stats(),
    };
  }

  async flush(): Promise<void> {
    await this.intake?.flush();
  }

  async close(): Promise<void> {
    if (this.sweeper) clearInterval(this.sweeper);
    try {
      await this.intake?.close();
    } finally {
      this.cache?.clear();
      this.kms.close();
    }
  }

  /** Counts failures by code; anything that is not an EnvelopeError is a bug or a caller's S3 error and passes through. */
  private async track<T>(fn: () => Promise<T>): Promise<T> {
    try {
      return await fn();
    } catch (err) {
      const code = err instanceof EnvelopeError ? err.code : 'other';
      this.errors[code] = (this.errors[code] ?? 0) + 1;
      throw err;
    }
  }

  /** Runs `use` with a data key for (keyId, context): a cached one, or a fresh one from GenerateDataKey that is zeroed after use. */
  private async withDataKey<T>(keyId: string, context: EncryptionContext, signal: AbortSignal | undefined, use: (dk: CachedDataKey) => T): Promise<T> {
    const id = `enc\u0000${keyId}\u0000${contextId(context)}`;
    if (this.cache) {
      const hit = this.cache.take(id, use);
      if (hit !== undefined) return hit;
    }
    const dk = await this.kms.generateDataKey(keyId, context, signal);
    return this.useFresh(id, dk, use);
  }

  private async openParts(parts: EnvelopeParts, context: EncryptionContext, aad: Buffer, what: string, signal: AbortSignal | undefined) {
    return this.openWith(
      { wrappedKey: parts.wrappedKey, keyId: parts.keyArn, context },
      (key) => open(key, parts.iv, aad, parts.ciphertext, parts.tag, what),
      signal,
    );
  }

  /** Unwraps a data key (cache or KMS Decrypt) and runs `decryptBody` with it. */
  private async openWith(
    wrapped: { wrappedKey: Buffer; keyId: string | undefined; context: EncryptionContext },
    decryptBody: (key: Buffer) => Buffer,
    signal: AbortSignal | undefined,
  ): Promise<{ plaintext: Buffer; keyArn: string; keyMaterialId?: string }> {
    const use = (dk: CachedDataKey) => {
      const plaintext = decryptBody(dk.plaintextKey);
      return { plaintext, keyArn: dk.keyArn, ...(dk.keyMaterialId !== undefined && { keyMaterialId: dk.keyMaterialId }) };
    };
    const id = `dec\u0000${wrapped.keyId ?? ''}\u0000${wrapped.wrappedKey.toString('base64')}\u0000${contextId(wrapped.context)}`;
    if (this.cache) {
      const hit = this.cache.take(id, use);
      if (hit !== undefined) return hit;
    }
    const dk = await this.kms.decrypt(wrapped.wrappedKey, wrapped.keyId, wrapped.context, signal);
    if (wrapped.keyId !== undefined && dk.keyArn !== wrapped.keyId) {
      dk.plaintextKey.fill(0);
      throw new EnvelopeError('malformed', `KMS decrypted the data key with ${dk.keyArn}, not the key the envelope names`);
    }
    return this.useFresh(id, dk, use);
  }

  /** Hands a fresh key to the cache (which then owns it), or uses it once and zeroes it. */
  private useFresh<T>(id: string, dk: DataKey, use: (dk: CachedDataKey) => T): T {
    if (this.cache) return this.cache.put(id, dk, use);
    try {
      return use(dk);
    } finally {
      dk.plaintextKey.fill(0);
    }
  }

  private async rewrapParts(parts: EnvelopeParts, to: string, context: EncryptionContext, signal: AbortSignal | undefined): Promise<Buffer> {
    const out = await this.kms.reEncrypt(parts.wrappedKey, parts.keyArn, to, context, signal);
    this.counts.rewraps++;
    try {
      return encodeEnvelope({ ...parts, keyArn: out.keyArn, wrappedKey: out.wrappedKey });
    } catch (err) {
      if (err instanceof EnvelopeFormatError) throw fromFormatError(err);
      throw err;
    }
  }
}

function checkS3Client(s3: unknown): void {
  const c = s3 as { send?: unknown; config?: { serviceId?: unknown } } | undefined;
  if (!c || typeof c.send !== 'function' || c.config?.serviceId !== 'S3') {
    throw new EnvelopeError('invalid-argument', 's3 must be an AWS SDK v3 S3 client');
  }
}

/**
 * Creates the app-side envelope client: encrypt/decrypt with KMS data keys, stale-key detection
 * against an alias, rewrap, re-encrypt on access, S3EC v2 objects and a Postgres rewrap helper.
 *
 * @example
 * ```ts
 * const envelope = createEnvelopeClient({ kms: { clientConfig: { region: 'eu-west-1' } }, alias: 'alias/app-data' });
 * const blob = await envelope.encrypt('4111 1111 1111 1111', { keyId: 'alias/app-data', context: { table: 'cards', id: '42' } });
 * const { plaintext, stale, rewrapped } = await envelope.decrypt(blob, { context: { table: 'cards', id: '42' }, onStale: 'rewrap' });
 * ```
 */
export function createEnvelopeClient(options: EnvelopeClientOptions): EnvelopeClient {
  return new Client(options);
}
