import {
  DecryptCommand,
  DescribeKeyCommand,
  GenerateDataKeyCommand,
  KMSClient,
  ReEncryptCommand,
  type KMSClientConfig,
} from '@aws-sdk/client-kms';
import { isKmsKeyArn } from '@rekey/core';
import { kmsContext } from './context.js';
import { classifyKmsError, EnvelopeError } from './errors.js';
import type { ClientOrConfig, EncryptionContext } from './types.js';

/** A client that was given, or built (and then owned, so `close()` destroys it). */
export interface Resolved<C> {
  readonly client: C;
  readonly owned: boolean;
}

/** Takes `{ client } | { clientConfig }` for an AWS SDK v3 client; a client of another service throws. */
export function resolveClient<C extends { send: unknown; config: unknown }, Cfg>(
  option: ClientOrConfig<C, Cfg> | undefined,
  serviceId: string,
  make: (config: Cfg) => C,
  what: string,
): Resolved<C> {
  if (option && typeof option === 'object' && 'client' in option) {
    const c = option.client as { send?: unknown; config?: { serviceId?: unknown } } | undefined;
    if (!c || typeof c.send !== 'function' || c.config?.serviceId !== serviceId) {
      throw new EnvelopeError('invalid-argument', `${what}.client must be an AWS SDK v3 ${serviceId} client`);
    }
    return { client: option.client, owned: false };
  }
  if (option && typeof option === 'object' && 'clientConfig' in option) return { client: make(option.clientConfig), owned: true };
  throw new EnvelopeError('invalid-argument', `${what} must be { client } or { clientConfig }`);
}

/** A data key as KMS returned it; `plaintextKey` is the caller's to zero. */
export interface DataKey {
  readonly plaintextKey: Buffer;
  readonly wrappedKey: Buffer;
  readonly keyArn: string;
  readonly keyMaterialId: string | undefined;
}

function takePlaintext(p: Uint8Array | undefined, op: string): Buffer {
  if (!(p instanceof Uint8Array)) throw new EnvelopeError('kms-error', `KMS ${op} returned no plaintext`);
  const copy = Buffer.from(p);
  p.fill(0);
  return copy;
}

function requireArn(arn: string | undefined, op: string): string {
  if (typeof arn !== 'string' || !isKmsKeyArn(arn)) throw new EnvelopeError('kms-error', `KMS ${op} returned no key ARN`);
  return arn;
}

function requireBlob(blob: Uint8Array | undefined, op: string): Buffer {
  if (!(blob instanceof Uint8Array) || blob.length === 0) throw new EnvelopeError('kms-error', `KMS ${op} returned no ciphertext blob`);
  return Buffer.from(blob);
}

/**
 * Per-call options only when there is a signal: `send(command, options)` resolves the client's
 * middleware again and drops the handler cache of an app's client built with `cacheMiddleware: true`.
 */
const httpOptions = (signal: AbortSignal | undefined) => (signal ? { abortSignal: signal } : undefined);

/** The KMS operations the library makes, each with its errors classified once. */
export class KmsCalls {
  private readonly resolved: Resolved<KMSClient>;

  constructor(option: ClientOrConfig<KMSClient, KMSClientConfig>) {
    this.resolved = resolveClient(option, 'KMS', (cfg) => new KMSClient(cfg), 'kms');
  }

  async generateDataKey(keyId: string, context: EncryptionContext, signal?: AbortSignal): Promise<DataKey> {
    const op = 'GenerateDataKey';
    try {
      const out = await this.resolved.client.send(
        new GenerateDataKeyCommand({ KeyId: keyId, KeySpec: 'AES_256', EncryptionContext: kmsContext(context) }),
        httpOptions(signal),
      );
      const plaintextKey = takePlaintext(out.Plaintext, op);
      return { plaintextKey, wrappedKey: requireBlob(out.CiphertextBlob, op), keyArn: requireArn(out.KeyId, op), keyMaterialId: out.KeyMaterialId };
    } catch (err) {
      throw classifyKmsError(err, op, keyId);
    }
  }

  /** Decrypts a wrapped data key; `keyId` pins the key KMS must use (the envelope's ARN). */
  async decrypt(wrappedKey: Uint8Array, keyId: string | undefined, context: EncryptionContext, signal?: AbortSignal): Promise<DataKey> {
    const op = 'Decrypt';
    try {
      const out = await this.resolved.client.send(
        new DecryptCommand({ CiphertextBlob: wrappedKey, KeyId: keyId, EncryptionContext: kmsContext(context) }),
        httpOptions(signal),
      );
      const plaintextKey = takePlaintext(out.Plaintext, op);
      return { plaintextKey, wrappedKey: Buffer.from(wrappedKey), keyArn: requireArn(out.KeyId, op), keyMaterialId: out.KeyMaterialId };
    } catch (err) {
      throw classifyKmsError(err, op, keyId);
    }
  }

  /** ReEncrypt of a wrapped key to `to` with the same context: KMS never returns the plaintext key. */
  async reEncrypt(
    wrappedKey: Uint8Array,
    sourceKeyId: string | undefined,
    to: string,
    context: EncryptionContext,
    signal?: AbortSignal,
  ): Promise<{ wrappedKey: Buffer; keyArn: string; sourceKeyArn: string; keyMaterialId: string | undefined }> {
    const op = 'ReEncrypt';
    try {
      const ctx = kmsContext(context);
      const out = await this.resolved.client.send(
        new ReEncryptCommand({
          CiphertextBlob: wrappedKey,
          SourceKeyId: sourceKeyId,
          SourceEncryptionContext: ctx,
          DestinationKeyId: to,
          DestinationEncryptionContext: ctx,
        }),
        httpOptions(signal),
      );
      return {
        wrappedKey: requireBlob(out.CiphertextBlob, op),
        keyArn: requireArn(out.KeyId, op),
        sourceKeyArn: requireArn(out.SourceKeyId, op),
        keyMaterialId: out.DestinationKeyMaterialId,
      };
    } catch (err) {
      throw classifyKmsError(err, op, sourceKeyId);
    }
  }

  /** The full ARN of the key a key id, ARN or alias names now. */
  async describeKeyArn(keyId: string, signal?: AbortSignal): Promise<string> {
    const op = 'DescribeKey';
    try {
      const out = await this.resolved.client.send(new DescribeKeyCommand({ KeyId: keyId }), httpOptions(signal));
      return requireArn(out.KeyMetadata?.Arn, op);
    } catch (err) {
      throw classifyKmsError(err, op, keyId);
    }
  }

  close(): void {
    if (this.resolved.owned) this.resolved.client.destroy();
  }
}

/**
 * Resolves key ids and aliases to key ARNs with DescribeKey, trusting each answer for `ttlMs`.
 * Concurrent lookups of one name share one call. When a refresh fails and a previous answer
 * exists, the previous answer is used (and counted) so a DescribeKey outage does not fail reads.
 */
export class KeyResolver {
  private readonly known = new Map<string, { arn: string; at: number }>();
  private readonly pending = new Map<string, Promise<string>>();
  refreshFailures = 0;

  constructor(
    private readonly kms: KmsCalls,
    private readonly ttlMs: number,
    private readonly now: () => number = () => performance.now(),
  ) {}

  async resolve(keyId: string): Promise<string> {
    if (isKmsKeyArn(keyId)) return keyId;
    const hit = this.known.get(keyId);
    if (hit && this.now() - hit.at < this.ttlMs) return hit.arn;
    let p = this.pending.get(keyId);
    if (!p) {
      // No caller's AbortSignal here: the lookup is shared, one caller's abort must not fail the others.
      p = this.refresh(keyId, hit).finally(() => this.pending.delete(keyId));
      this.pending.set(keyId, p);
    }
    return p;
  }

  private async refresh(keyId: string, previous: { arn: string } | undefined): Promise<string> {
    try {
      const arn = await this.kms.describeKeyArn(keyId);
      this.known.set(keyId, { arn, at: this.now() });
      return arn;
    } catch (err) {
      if (!previous) throw err;
      this.refreshFailures++;
      // Retry after another TTL instead of on every read while DescribeKey is failing.
      this.known.set(keyId, { arn: previous.arn, at: this.now() });
      return previous.arn;
    }
  }
}
