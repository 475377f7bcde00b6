import { createCipheriv, createDecipheriv, hkdfSync, randomBytes } from 'node:crypto';
import { AwsError } from '../errors.js';
import type { RequestContext } from '../context.js';
import { invalidArgument, notImplemented, s3Error } from './errors.js';
import type { Bucket, KmsSse, SseState } from './model.js';

/** The part of aws-local's KMS that S3 calls on a caller's behalf. */
export interface S3Kms {
  serviceGenerateDataKey(args: {
    keyId?: string;
    encryptionContext: Record<string, string>;
    ctx: RequestContext;
    invokedBy: string;
  }): Promise<{ keyArn: string; plaintext: Buffer; ciphertextBlob: Buffer }>;
  serviceDecrypt(args: {
    ciphertextBlob: Buffer;
    encryptionContext: Record<string, string>;
    ctx: RequestContext;
    invokedBy: string;
  }): Promise<{ keyArn: string; plaintext: Buffer }>;
  serviceReEncrypt(args: {
    ciphertextBlob: Buffer;
    encryptionContext: Record<string, string>;
    destinationKeyId: string;
    ctx: RequestContext;
    invokedBy: string;
  }): Promise<{ keyArn: string; ciphertextBlob: Buffer }>;
  resolveKeyArn(keyId: string, ctx: RequestContext): string;
}

const S3_PRINCIPAL = 's3.amazonaws.com';

/** Shared by every SSE-S3 object, so a million of them cost one object. */
export const SSE_S3: SseState = Object.freeze({ alg: 'AES256' });
const IV_LEN = 12;
const TAG_LEN = 16;

/** What a request (or the bucket default) asks for. */
export type SseRequest =
  | { alg: 'AES256' }
  | { alg: 'aws:kms'; keyId?: string; bucketKey: boolean; userContext?: Record<string, string> };

const SSE_HEADER = 'x-amz-server-side-encryption';
const KEY_HEADER = 'x-amz-server-side-encryption-aws-kms-key-id';
const CONTEXT_HEADER = 'x-amz-server-side-encryption-context';
const BUCKET_KEY_HEADER = 'x-amz-server-side-encryption-bucket-key-enabled';

/** True when the request carries any SSE header (an in-place copy with one is legal). */
export function hasSseHeaders(headers: Readonly<Record<string, string>>): boolean {
  return [SSE_HEADER, KEY_HEADER, CONTEXT_HEADER, BUCKET_KEY_HEADER].some((h) => headers[h] !== undefined);
}

/**
 * The encryption a write asks for: its SSE headers, else the bucket's default encryption
 * (SSE-S3 when none was configured, as on AWS since 2023).
 */
export function requestedSse(headers: Readonly<Record<string, string>>, bucket: Bucket): SseRequest {
  if (headers['x-amz-server-side-encryption-customer-algorithm'] !== undefined) {
    throw notImplemented('x-amz-server-side-encryption-customer-algorithm');
  }
  const alg = headers[SSE_HEADER];
  const keyId = headers[KEY_HEADER];
  const ctxHeader = headers[CONTEXT_HEADER];
  const bkHeader = headers[BUCKET_KEY_HEADER];
  if (bkHeader !== undefined && bkHeader !== 'true' && bkHeader !== 'false') {
    throw invalidArgument('Bucket key enabled must be true or false', BUCKET_KEY_HEADER, bkHeader);
  }
  if (alg === undefined) {
    if (keyId !== undefined || ctxHeader !== undefined) {
      throw invalidArgument(
        'Server Side Encryption with AWS KMS managed key requires HTTP header x-amz-server-side-encryption : aws:kms',
        SSE_HEADER,
      );
    }
    const rule = bucket.encryption;
    if (!rule || rule.alg === 'AES256') return { alg: 'AES256' };
    return {
      alg: 'aws:kms',
      ...(rule.kmsKeyId !== undefined && { keyId: rule.kmsKeyId }),
      bucketKey: bkHeader !== undefined ? bkHeader === 'true' : rule.bucketKeyEnabled,
    };
  }
  if (alg === 'AES256') {
    if (keyId !== undefined || ctxHeader !== undefined) {
      throw invalidArgument(
        'Server Side Encryption with AWS KMS managed key requires HTTP header x-amz-server-side-encryption : aws:kms',
        SSE_HEADER,
        alg,
      );
    }
    return { alg: 'AES256' };
  }
  if (alg === 'aws:kms:dsse') throw notImplemented(SSE_HEADER);
  if (alg !== 'aws:kms') {
    throw invalidArgument('The encryption method specified is not supported', SSE_HEADER, alg);
  }
  const rule = bucket.encryption;
  return {
    alg: 'aws:kms',
    ...(keyId !== undefined && keyId !== '' && { keyId }),
    bucketKey: bkHeader !== undefined ? bkHeader === 'true' : rule?.alg === 'aws:kms' && rule.bucketKeyEnabled,
    ...(ctxHeader !== undefined && { userContext: parseContextHeader(ctxHeader) }),
  };
}

function parseContextHeader(value: string): Record<string, string> {
  const bad = () =>
    invalidArgument(
      "The header 'x-amz-server-side-encryption-context' shall be Base64-encoded UTF-8 string holding JSON which represents a string-string map",
      CONTEXT_HEADER,
      value,
    );
  let parsed: unknown;
  try {
    parsed = JSON.parse(Buffer.from(value, 'base64').toString('utf8'));
  } catch {
    throw bad();
  }
  if (!parsed || typeof parsed !== 'object' || Array.isArray(parsed)) throw bad();
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(parsed)) {
    if (typeof v !== 'string') throw bad();
    out[k] = v;
  }
  return out;
}

/**
 * The response headers that describe an object's encryption. Writes echo the encryption context;
 * reads do not (GetObject and HeadObject have no such field).
 */
export function sseHeaders(sse: SseState | undefined, withContext = true): Record<string, string> {
  if (!sse) return {};
  if (sse.alg === 'AES256') return { [SSE_HEADER]: 'AES256' };
  return {
    [SSE_HEADER]: 'aws:kms',
    [KEY_HEADER]: sse.keyArn,
    ...(sse.bucketKey && { [BUCKET_KEY_HEADER]: 'true' }),
    ...(sse.userContext && withContext && { [CONTEXT_HEADER]: Buffer.from(JSON.stringify(sse.context)).toString('base64') }),
  };
}

/**
 * Maps an error of aws-local's KMS, met while S3 acted for the caller, to what S3 answers:
 * `KMS.<Code>` (400) for key state and lookup failures, AccessDenied (403) for a denied key,
 * SlowDown (503) when KMS throttled S3, InternalError (500) for KMS 5xx.
 */
export function kmsFailure(err: unknown): unknown {
  if (!(err instanceof AwsError)) return err;
  if (err.code === 'ThrottlingException') return s3Error('SlowDown', 'Please reduce your request rate.', 503);
  if (err.code === 'AccessDeniedException') return s3Error('AccessDenied', err.message, 403);
  if (err.status >= 500) return s3Error('InternalError', 'We encountered an internal error. Please try again.', 500);
  return s3Error(`KMS.${err.code}`, err.message, 400);
}

interface CachedKey {
  keyArn: string;
  plaintext: Buffer;
  wrapped: Buffer;
  expires: number;
}

/**
 * Encrypts and decrypts object bodies at rest with data keys from aws-local's KMS, like S3's
 * SSE-KMS. With a bucket key, one data key per bucket, KMS key and context is generated and
 * cached for `bucketKeyTtlMs`; each object's key is derived from it with a random salt, so S3
 * calls KMS far less often (and those calls carry the bucket ARN as context).
 */
export class SseEngine {
  /** How long a bucket key is reused for writes and a decrypted bucket key for reads. */
  bucketKeyTtlMs = 60_000;
  private readonly writeCache = new Map<string, CachedKey>();
  private readonly readCache = new Map<string, CachedKey>();

  constructor(private readonly kms: S3Kms) {}

  clearCache(): void {
    this.writeCache.clear();
    this.readCache.clear();
  }

  /** Makes the SSE state and data key for a new object (or multipart upload). */
  async newDataKey(
    req: SseRequest,
    bucket: Bucket,
    key: string,
    ctx: RequestContext,
  ): Promise<{ sse: SseState; dataKey?: Buffer }> {
    if (req.alg === 'AES256') return { sse: SSE_S3 };
    const arnOf = req.bucketKey ? `arn:aws:s3:::${bucket.name}` : `arn:aws:s3:::${bucket.name}/${key}`;
    const context = { ...req.userContext, 'aws:s3:arn': arnOf };
    const userContext = req.userContext !== undefined;
    if (!req.bucketKey) {
      const dk = await this.generate(req.keyId, context, ctx);
      const sse: KmsSse = { alg: 'aws:kms', keyArn: dk.keyArn, wrappedKey: dk.ciphertextBlob, context, userContext, bucketKey: false };
      return { sse, dataKey: dk.plaintext };
    }
    const keyArn = req.keyId === undefined ? '' : this.resolve(req.keyId, ctx);
    const cacheKey = `${bucket.name}\0${keyArn}\0${JSON.stringify(context)}`;
    let cached = this.writeCache.get(cacheKey);
    if (!cached || cached.expires <= Date.now()) {
      const dk = await this.generate(req.keyId, context, ctx);
      cached = { keyArn: dk.keyArn, plaintext: dk.plaintext, wrapped: dk.ciphertextBlob, expires: Date.now() + this.bucketKeyTtlMs };
      this.writeCache.set(cacheKey, cached);
      this.readCache.set(readCacheKey(bucket.name, cached.wrapped), cached);
    }
    const salt = randomBytes(16);
    const sse: KmsSse = {
      alg: 'aws:kms',
      keyArn: cached.keyArn,
      wrappedKey: cached.wrapped,
      context,
      userContext,
      bucketKey: true,
      salt,
    };
    return { sse, dataKey: deriveObjectKey(cached.plaintext, salt) };
  }

  /** The plaintext data key of an SSE-KMS object: one KMS Decrypt, or the bucket-key cache. */
  async dataKeyOf(sse: KmsSse, bucket: string, ctx: RequestContext): Promise<Buffer> {
    if (sse.salt) {
      const ck = readCacheKey(bucket, sse.wrappedKey);
      const cached = this.readCache.get(ck);
      if (cached && cached.expires > Date.now()) return deriveObjectKey(cached.plaintext, sse.salt);
      const plain = await this.decrypt(sse, ctx);
      this.readCache.set(ck, { keyArn: sse.keyArn, plaintext: plain, wrapped: sse.wrappedKey, expires: Date.now() + this.bucketKeyTtlMs });
      return deriveObjectKey(plain, sse.salt);
    }
    return this.decrypt(sse, ctx);
  }

  /** Encrypts a plaintext body for storage. */
  async seal(req: SseRequest, bucket: Bucket, key: string, plaintext: Buffer, ctx: RequestContext): Promise<{ sse: SseState; body: Buffer }> {
    const { sse, dataKey } = await this.newDataKey(req, bucket, key, ctx);
    return { sse, body: dataKey ? sealWith(dataKey, plaintext) : plaintext };
  }

  /** The plaintext of a stored body. */
  async open(sse: SseState | undefined, bucket: string, body: Buffer, ctx: RequestContext): Promise<Buffer> {
    if (!sse || sse.alg === 'AES256') return body;
    return openWith(await this.dataKeyOf(sse, bucket, ctx), body);
  }

  /**
   * Re-wraps an SSE-KMS object's data key under another KMS key with one KMS ReEncrypt; the body
   * is not touched, so its ETag, checksums and LastModified stay.
   */
  async rewrap(sse: KmsSse, destinationKeyArn: string, bucketKey: boolean, ctx: RequestContext): Promise<KmsSse> {
    let out: { keyArn: string; ciphertextBlob: Buffer };
    try {
      out = await this.kms.serviceReEncrypt({
        ciphertextBlob: sse.wrappedKey,
        encryptionContext: { ...sse.context },
        destinationKeyId: destinationKeyArn,
        ctx,
        invokedBy: S3_PRINCIPAL,
      });
    } catch (err) {
      throw kmsFailure(err);
    }
    return { ...sse, keyArn: out.keyArn, wrappedKey: out.ciphertextBlob, bucketKey };
  }

  /** A key id as a full ARN; an unknown key is S3's KMS.NotFoundException. */
  resolve(keyId: string, ctx: RequestContext): string {
    try {
      return this.kms.resolveKeyArn(keyId, ctx);
    } catch (err) {
      throw kmsFailure(err);
    }
  }

  private async generate(keyId: string | undefined, context: Record<string, string>, ctx: RequestContext) {
    try {
      return await this.kms.serviceGenerateDataKey({
        ...(keyId !== undefined && { keyId }),
        encryptionContext: context,
        ctx,
        invokedBy: S3_PRINCIPAL,
      });
    } catch (err) {
      throw kmsFailure(err);
    }
  }

  private async decrypt(sse: KmsSse, ctx: RequestContext): Promise<Buffer> {
    try {
      const out = await this.kms.serviceDecrypt({
        ciphertextBlob: sse.wrappedKey,
        encryptionContext: { ...sse.context },
        ctx,
        invokedBy: S3_PRINCIPAL,
      });
      return out.plaintext;
    } catch (err) {
      throw kmsFailure(err);
    }
  }
}

function readCacheKey(bucket: string, wrapped: Buffer): string {
  return `${bucket}\0${wrapped.toString('base64')}`;
}

function deriveObjectKey(bucketKey: Buffer, salt: Buffer): Buffer {
  return Buffer.from(hkdfSync('sha256', bucketKey, salt, 'aws-local s3 object key', 32));
}

/** AES-256-GCM: iv | tag | ciphertext. */
export function sealWith(dataKey: Buffer, plaintext: Buffer): Buffer {
  const iv = randomBytes(IV_LEN);
  const c = createCipheriv('aes-256-gcm', dataKey, iv);
  const ct = Buffer.concat([c.update(plaintext), c.final()]);
  return Buffer.concat([iv, c.getAuthTag(), ct]);
}

/** Decrypts an iv|tag|ciphertext body; a wrong key or tampered bytes throw. */
export function openWith(dataKey: Buffer, blob: Buffer): Buffer {
  const d = createDecipheriv('aes-256-gcm', dataKey, blob.subarray(0, IV_LEN));
  d.setAuthTag(blob.subarray(IV_LEN, IV_LEN + TAG_LEN));
  return Buffer.concat([d.update(blob.subarray(IV_LEN + TAG_LEN)), d.final()]);
}
