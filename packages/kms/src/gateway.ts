/**
 * The KMS gateway: every KMS call of Rekey goes through it, so every cryptographic call takes a
 * limiter token, is classified once, is retried with jitter when retryable, and feeds AIMD and
 * the metrics hook.
 */
import {
  DecryptCommand,
  DescribeKeyCommand,
  EncryptCommand,
  GenerateDataKeyCommand,
  GenerateDataKeyWithoutPlaintextCommand,
  KMSClient,
  ReEncryptCommand,
  type KMSClientConfig,
  type KeyMetadata,
} from '@aws-sdk/client-kms';
import { ItemError, RetryableError, type KeyInfo } from '@rekey/core';
import { classifyKmsError, isThrottleError, KmsGatewayError, type ClassifiedKmsError, type KeyRole } from './errors.js';
import type { InFlightLimit } from './in-flight.js';
import type { RateLimiter } from './limiter.js';
import { resolveRetryPolicy, retry, type RetryAttempt, type RetryPolicy } from './retry.js';
import { abortable } from './abortable.js';
import type {
  DecryptInput,
  DecryptOutput,
  EncryptInput,
  EncryptOutput,
  GenerateDataKeyInput,
  GenerateDataKeyOutput,
  GenerateDataKeyWithoutPlaintextOutput,
  KmsCallOutcome,
  KmsGateway,
  KmsMetricsHook,
  KmsOperation,
  ReEncryptInput,
  ReEncryptOutput,
} from './types.js';

/**
 * A ready KMS client, or the config to build one (Powertools style). The gateway retries on its
 * own, so a client built from `clientConfig` makes one attempt per call unless the config says
 * otherwise; give an injected client `maxAttempts: 1` too, or its retries of a throttled call
 * take no limiter token and reach AIMD late.
 */
export type KmsClientSource = { client: KMSClient } | { clientConfig: KMSClientConfig };

/** Options of {@link createKmsGateway}. */
export interface KmsGatewayOptions {
  /** Fleet-wide limiter; without one, calls are not rate limited (app-side use). */
  limiter?: RateLimiter;
  /**
   * Process-wide cap on cryptographic calls in flight, shared by every gateway of the process;
   * a call takes its limiter token first, then a slot, and frees the slot when KMS answers or
   * its signal aborts (the request may then still be on the wire: see `abortable`).
   */
  inFlight?: InFlightLimit;
  metrics?: KmsMetricsHook;
  /** @defaultValue `{ maxAttempts: 5, baseMs: 50, capMs: 5000 }` */
  retry?: RetryPolicy;
  /** Told before each retry wait (e.g. to log the error code, never the payload). */
  onRetry?: (op: KmsOperation, info: RetryAttempt) => void;
}

/** Largest ciphertext KMS accepts (CiphertextBlob length constraint). */
const MAX_CIPHERTEXT_BYTES = 6144;
/** How long a target key's DescribeKey answer is trusted when telling a source error from a target one. */
const TARGET_CACHE_MS = 1000;
/** Names of key-state errors whose meaning depends on which key they concern. */
const KEY_STATE_NAMES: ReadonlySet<string> = new Set(['DisabledException', 'KMSInvalidStateException', 'NotFoundException', 'InvalidKeyUsageException']);
const KEY_ARN_OR_ID = /arn:aws[a-z-]*:kms:[a-z0-9-]+:\d{12}:(?:key|alias)\/[A-Za-z0-9/_+=.@-]+|\b[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\b|\bmrk-[0-9a-f]{32}\b/g;

function errorName(err: unknown): string {
  return typeof err === 'object' && err !== null && typeof (err as { name?: unknown }).name === 'string' ? (err as { name: string }).name : '';
}

function errorMessage(err: unknown): string {
  return typeof err === 'object' && err !== null && typeof (err as { message?: unknown }).message === 'string'
    ? (err as { message: string }).message
    : '';
}

/** The bare key id inside a key ARN, or the reference itself when it is a key id. */
function keyIdOf(ref: string): string | undefined {
  const m = /:key\/(.+)$/.exec(ref);
  if (m?.[1]) return m[1];
  return ref.startsWith('alias/') || ref.startsWith('arn:') ? undefined : ref;
}

function mentions(message: string, ref: string | undefined): boolean {
  if (!ref) return false;
  if (message.includes(ref)) return true;
  const id = keyIdOf(ref);
  return id !== undefined && message.includes(id);
}

function bytes(field: string, op: KmsOperation, v: Uint8Array | undefined): Uint8Array {
  if (!(v instanceof Uint8Array) || v.length === 0) {
    throw new RetryableError('InvalidResponse', `KMS ${op}: the response has no ${field}`);
  }
  return v;
}

function str(field: string, op: KmsOperation, v: string | undefined): string {
  if (typeof v !== 'string' || v.length === 0) throw new RetryableError('InvalidResponse', `KMS ${op}: the response has no ${field}`);
  return v;
}

function checkCiphertext(op: KmsOperation, blob: unknown): Uint8Array {
  if (!(blob instanceof Uint8Array)) throw new KmsGatewayError('invalid-input', `KMS ${op}: ciphertextBlob must be a Uint8Array`);
  if (blob.length === 0 || blob.length > MAX_CIPHERTEXT_BYTES) {
    // Data, not a programming error: the item's stored value can't be a KMS ciphertext.
    throw new ItemError('InvalidCiphertextException', `KMS ${op}: the stored ciphertext is ${blob.length} bytes; KMS accepts 1 to ${MAX_CIPHERTEXT_BYTES}`, {
      outcome: 'failed',
    });
  }
  return blob;
}

function checkKeyRef(op: KmsOperation, field: string, v: unknown): string {
  if (typeof v !== 'string' || v.length === 0 || v.length > 2048) {
    throw new KmsGatewayError('invalid-input', `KMS ${op}: ${field} must be a key id, key ARN, alias name or alias ARN`);
  }
  return v;
}

/** Maps DescribeKey's KeyMetadata to core's {@link KeyInfo}. */
export function toKeyInfo(md: KeyMetadata | undefined): KeyInfo {
  const op: KmsOperation = 'DescribeKey';
  const info: KeyInfo = {
    arn: str('KeyMetadata.Arn', op, md?.Arn),
    keyId: str('KeyMetadata.KeyId', op, md?.KeyId),
    state: str('KeyMetadata.KeyState', op, md?.KeyState),
    usage: str('KeyMetadata.KeyUsage', op, md?.KeyUsage),
    spec: str('KeyMetadata.KeySpec', op, md?.KeySpec ?? md?.CustomerMasterKeySpec),
    origin: md?.Origin ?? 'AWS_KMS',
    manager: md?.KeyManager ?? 'CUSTOMER',
    multiRegion: md?.MultiRegion ?? false,
    customKeyStore: md?.CustomKeyStoreId !== undefined,
    ...(md?.CurrentKeyMaterialId !== undefined && { currentKeyMaterialId: md.CurrentKeyMaterialId }),
  };
  return info;
}

/**
 * Creates the KMS gateway over a ready `KMSClient` or a client config. An injected client of
 * another kind throws. With a `limiter`, each cryptographic call (and each {@link KmsGateway.acquire})
 * takes one token first, and throttles and successes are reported to it.
 *
 * @example
 * const kms = createKmsGateway({ clientConfig: { region } }, { limiter: limiter.forMigration(id), metrics });
 * const out = await kms.reEncrypt({ ciphertextBlob, sourceKeyId: from, destinationKeyId: to }, signal);
 */
export function createKmsGateway(source: KmsClientSource, options: KmsGatewayOptions = {}): KmsGateway {
  let client: KMSClient;
  let owned = false;
  if (typeof source !== 'object' || source === null) {
    throw new KmsGatewayError('invalid-client', 'createKmsGateway needs { client } or { clientConfig }');
  }
  if ('client' in source) {
    if (!(source.client instanceof KMSClient)) {
      const kind = typeof source.client === 'object' && source.client !== null ? (source.client as object).constructor?.name : typeof source.client;
      throw new KmsGatewayError('invalid-client', `createKmsGateway needs a KMSClient from @aws-sdk/client-kms, got ${kind ?? 'object'}`);
    }
    client = source.client;
  } else if ('clientConfig' in source) {
    // The gateway retries, taking a limiter token per attempt; SDK retries would bypass both.
    client = new KMSClient({ maxAttempts: 1, ...source.clientConfig });
    owned = true;
  } else {
    throw new KmsGatewayError('invalid-client', 'createKmsGateway needs { client } or { clientConfig }');
  }
  const policy = resolveRetryPolicy(options.retry);
  const { limiter, inFlight, metrics } = options;
  const targetCache = new Map<string, { info: KeyInfo; at: number }>();

  /** One attempt of a KMS call, with its token, classification and reports. */
  async function attempt<T>(
    op: KmsOperation,
    send: () => Promise<T>,
    classify: (err: unknown) => Promise<ClassifiedKmsError>,
    signal: AbortSignal | undefined,
    crypto: boolean,
  ): Promise<T> {
    if (crypto && limiter) await limiter.acquire(signal);
    const release = crypto && inFlight ? await inFlight.acquire(signal) : undefined;
    const t0 = performance.now();
    const observe = (outcome: KmsCallOutcome) => metrics?.observe(op, outcome, (performance.now() - t0) / 1000);
    let out: T;
    try {
      out = await send();
    } catch (err) {
      release?.();
      if (signal?.aborted) {
        observe('aborted');
        throw signal.reason ?? err;
      }
      if (isThrottleError(err)) {
        if (crypto) limiter?.onThrottle();
        metrics?.throttled();
      }
      const classified = await classify(err);
      observe(classified.kind);
      throw classified;
    }
    release?.();
    if (crypto) limiter?.onSuccess();
    observe('ok');
    return out;
  }

  function run<T>(
    op: KmsOperation,
    send: () => Promise<T>,
    signal: AbortSignal | undefined,
    opts: { crypto: boolean; keyRole?: KeyRole; classify?: (err: unknown) => Promise<ClassifiedKmsError> },
  ): Promise<T> {
    const classify = opts.classify ?? (async (err: unknown) => classifyKmsError(err, { op, ...(opts.keyRole && { keyRole: opts.keyRole }) }));
    // Sent with no per-call options, so a client with `cacheMiddleware: true` keeps its handler cache.
    return retry(() => attempt(op, () => abortable(send, signal), classify, signal, opts.crypto), {
      ...policy,
      ...(signal && { signal }),
      ...(options.onRetry && { onRetry: (info: RetryAttempt) => options.onRetry?.(op, info) }),
    });
  }

  async function describeKey(keyId: string, signal?: AbortSignal): Promise<KeyInfo> {
    const ref = checkKeyRef('DescribeKey', 'keyId', keyId);
    const out = await run('DescribeKey', () => client.send(new DescribeKeyCommand({ KeyId: ref })), signal, { crypto: false });
    return toKeyInfo(out.KeyMetadata);
  }

  async function describeTarget(ref: string, signal: AbortSignal | undefined): Promise<KeyInfo> {
    const hit = targetCache.get(ref);
    if (hit && performance.now() - hit.at < TARGET_CACHE_MS) return hit.info;
    const info = await describeKey(ref, signal);
    targetCache.set(ref, { info, at: performance.now() });
    return info;
  }

  /**
   * Which key a ReEncrypt key-state error is about. KMS names the key's ARN in these messages;
   * when it names neither key clearly, the target is described: a target that is usable means
   * the problem is the item's own key.
   */
  async function reEncryptKeyRole(err: unknown, input: ReEncryptInput, signal: AbortSignal | undefined): Promise<KeyRole | undefined> {
    const msg = errorMessage(err);
    const cached = targetCache.get(input.destinationKeyId)?.info;
    if (mentions(msg, input.destinationKeyId) || (cached && mentions(msg, cached.arn))) return 'target';
    if (mentions(msg, input.sourceKeyId)) return 'source';
    let target: KeyInfo;
    try {
      target = await describeTarget(input.destinationKeyId, signal);
    } catch (describeErr) {
      if (describeErr instanceof Error && (describeErr as { code?: unknown }).code === 'NotFoundException') return 'target';
      return undefined;
    }
    if (target.state !== 'Enabled' || target.usage !== 'ENCRYPT_DECRYPT' || mentions(msg, target.arn)) return 'target';
    const named = msg.match(KEY_ARN_OR_ID);
    return named && named.length > 0 ? 'source' : undefined;
  }

  return {
    client,

    async reEncrypt(input, signal) {
      const blob = checkCiphertext('ReEncrypt', input?.ciphertextBlob);
      const dest = checkKeyRef('ReEncrypt', 'destinationKeyId', input.destinationKeyId);
      const src = input.sourceKeyId === undefined ? undefined : checkKeyRef('ReEncrypt', 'sourceKeyId', input.sourceKeyId);
      const op: KmsOperation = 'ReEncrypt';
      const out = await run(
        op,
        () =>
          client.send(
            new ReEncryptCommand({
              CiphertextBlob: blob,
              DestinationKeyId: dest,
              ...(src !== undefined && { SourceKeyId: src }),
              ...(input.sourceEncryptionContext && { SourceEncryptionContext: input.sourceEncryptionContext }),
              ...(input.destinationEncryptionContext && { DestinationEncryptionContext: input.destinationEncryptionContext }),
            }),
          ),
        signal,
        {
          crypto: true,
          classify: async (err) => {
            const keyRole = KEY_STATE_NAMES.has(errorName(err)) ? await reEncryptKeyRole(err, input, signal) : undefined;
            return classifyKmsError(err, { op, ...(keyRole && { keyRole }) });
          },
        },
      );
      return {
        ciphertextBlob: bytes('CiphertextBlob', op, out.CiphertextBlob),
        sourceKeyId: str('SourceKeyId', op, out.SourceKeyId),
        keyId: str('KeyId', op, out.KeyId),
        ...(out.SourceKeyMaterialId !== undefined && { sourceKeyMaterialId: out.SourceKeyMaterialId }),
        ...(out.DestinationKeyMaterialId !== undefined && { destinationKeyMaterialId: out.DestinationKeyMaterialId }),
      } satisfies ReEncryptOutput;
    },

    async decrypt(input: DecryptInput, signal?: AbortSignal): Promise<DecryptOutput> {
      const op: KmsOperation = 'Decrypt';
      const blob = checkCiphertext(op, input?.ciphertextBlob);
      const keyId = input.keyId === undefined ? undefined : checkKeyRef(op, 'keyId', input.keyId);
      const out = await run(
        op,
        () =>
          client.send(
            new DecryptCommand({
              CiphertextBlob: blob,
              ...(keyId !== undefined && { KeyId: keyId }),
              ...(input.encryptionContext && { EncryptionContext: input.encryptionContext }),
            }),
          ),
        signal,
        { crypto: true, keyRole: 'source' },
      );
      return {
        plaintext: bytes('Plaintext', op, out.Plaintext),
        keyId: str('KeyId', op, out.KeyId),
        ...(out.KeyMaterialId !== undefined && { keyMaterialId: out.KeyMaterialId }),
      };
    },

    async encrypt(input: EncryptInput, signal?: AbortSignal): Promise<EncryptOutput> {
      const op: KmsOperation = 'Encrypt';
      const keyId = checkKeyRef(op, 'keyId', input?.keyId);
      if (!(input.plaintext instanceof Uint8Array)) throw new KmsGatewayError('invalid-input', 'KMS Encrypt: plaintext must be a Uint8Array');
      const out = await run(
        op,
        () =>
          client.send(
            new EncryptCommand({
              KeyId: keyId,
              Plaintext: input.plaintext,
              ...(input.encryptionContext && { EncryptionContext: input.encryptionContext }),
            }),
          ),
        signal,
        { crypto: true, keyRole: 'target' },
      );
      return { ciphertextBlob: bytes('CiphertextBlob', op, out.CiphertextBlob), keyId: str('KeyId', op, out.KeyId) };
    },

    async generateDataKey(input: GenerateDataKeyInput, signal?: AbortSignal): Promise<GenerateDataKeyOutput> {
      const op: KmsOperation = 'GenerateDataKey';
      const keyId = checkKeyRef(op, 'keyId', input?.keyId);
      const out = await run(
        op,
        () => client.send(new GenerateDataKeyCommand(dataKeyRequest(keyId, input))),
        signal,
        { crypto: true, keyRole: 'target' },
      );
      return {
        plaintext: bytes('Plaintext', op, out.Plaintext),
        ciphertextBlob: bytes('CiphertextBlob', op, out.CiphertextBlob),
        keyId: str('KeyId', op, out.KeyId),
        ...(out.KeyMaterialId !== undefined && { keyMaterialId: out.KeyMaterialId }),
      };
    },

    async generateDataKeyWithoutPlaintext(input: GenerateDataKeyInput, signal?: AbortSignal): Promise<GenerateDataKeyWithoutPlaintextOutput> {
      const op: KmsOperation = 'GenerateDataKeyWithoutPlaintext';
      const keyId = checkKeyRef(op, 'keyId', input?.keyId);
      const out = await run(
        op,
        () => client.send(new GenerateDataKeyWithoutPlaintextCommand(dataKeyRequest(keyId, input))),
        signal,
        { crypto: true, keyRole: 'target' },
      );
      return {
        ciphertextBlob: bytes('CiphertextBlob', op, out.CiphertextBlob),
        keyId: str('KeyId', op, out.KeyId),
        ...(out.KeyMaterialId !== undefined && { keyMaterialId: out.KeyMaterialId }),
      };
    },

    describeKey,

    async resolveKeys(ids: string[], signal?: AbortSignal): Promise<KeyInfo[]> {
      if (!Array.isArray(ids)) throw new KmsGatewayError('invalid-input', 'resolveKeys needs an array of key references');
      const unique = [...new Set(ids)];
      const infos = await Promise.all(unique.map((id) => describeKey(id, signal)));
      const byRef = new Map(unique.map((id, i) => [id, infos[i]]));
      return ids.map((id) => {
        const info = byRef.get(id);
        if (!info) throw new KmsGatewayError('invalid-input', `resolveKeys lost key ${id}`);
        return info;
      });
    },

    async acquire(signal?: AbortSignal): Promise<void> {
      if (limiter) await limiter.acquire(signal);
    },

    reportS3Call(outcome: 'ok' | 'throttled'): void {
      if (outcome === 'throttled') {
        limiter?.onThrottle();
        metrics?.throttled();
      } else limiter?.onSuccess();
    },

    destroy(): void {
      if (owned) client.destroy();
    },
  };
}

function dataKeyRequest(keyId: string, input: GenerateDataKeyInput) {
  if (input.numberOfBytes !== undefined && (!Number.isInteger(input.numberOfBytes) || input.numberOfBytes < 1 || input.numberOfBytes > 1024)) {
    throw new KmsGatewayError('invalid-input', `KMS GenerateDataKey: numberOfBytes must be an integer from 1 to 1024, got ${input.numberOfBytes}`);
  }
  return {
    KeyId: keyId,
    ...(input.numberOfBytes !== undefined ? { NumberOfBytes: input.numberOfBytes } : { KeySpec: input.keySpec ?? 'AES_256' }),
    ...(input.encryptionContext && { EncryptionContext: input.encryptionContext }),
  };
}
