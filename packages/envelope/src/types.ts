import type { KMSClient, KMSClientConfig } from '@aws-sdk/client-kms';
import type { SQSClient, SQSClientConfig } from '@aws-sdk/client-sqs';
import type { ItemRef } from '@rekey/core';
import type { EnvelopeError } from './errors.js';

/** A KMS encryption context: a flat map of strings, bound in KMS and as GCM AAD. */
export type EncryptionContext = Readonly<Record<string, string>>;

/** A ready SDK client, or the config to build one. */
export type ClientOrConfig<C, Cfg> = { readonly client: C } | { readonly clientConfig: Cfg };

/** Limits of the optional data-key cache; every limit is required, so no entry lives unbounded. */
export interface DataKeyCacheOptions {
  /** Most entries kept; the least recently used is evicted (and zeroed) first. */
  readonly maxEntries: number;
  /** An entry older than this is evicted (and zeroed) on its next lookup or sweep. */
  readonly maxAgeMs: number;
  /** Most messages one cached data key may encrypt or decrypt (at most 2^32, the GCM random-IV limit). */
  readonly maxUses: number;
}

/** What to do when the buffer of the SQS intake is full. */
export type IntakeDropPolicy = 'drop-new' | 'drop-oldest';

/** The SQS intake of the fleet's coordinator, for `onStale: 'enqueue'`. */
export interface IntakeOptions {
  readonly sqs: ClientOrConfig<SQSClient, SQSClientConfig>;
  readonly queueUrl: string;
  /** Name of the fleet source the items belong to (`source` in every message). */
  readonly source: string;
  /** Most messages waiting to be sent. @defaultValue 1000 */
  readonly maxBuffer?: number;
  /** Longest a message waits before a partial batch is sent. @defaultValue 1000 */
  readonly flushMs?: number;
  /** Which message is dropped when the buffer is full. @defaultValue 'drop-new' */
  readonly dropPolicy?: IntakeDropPolicy;
  /** Most SendMessageBatch calls in flight at once. @defaultValue 2 */
  readonly maxInFlight?: number;
  /** Told of every failed send (the read path never sees these errors). */
  readonly onError?: (err: unknown) => void;
}

/** Options of {@link createEnvelopeClient}. */
export interface EnvelopeClientOptions {
  readonly kms: ClientOrConfig<KMSClient, KMSClientConfig>;
  /**
   * The alias (or key) new data should be under, e.g. `alias/app-data`. An envelope whose key
   * ARN is not this alias's current target is reported `stale`. Without it nothing is stale.
   */
  readonly alias?: string;
  /** How long a resolved alias target is trusted before DescribeKey is called again. @defaultValue 30000 */
  readonly staleTtlMs?: number;
  /** Data-key cache; off when absent (every encrypt calls GenerateDataKey, every decrypt calls Decrypt). */
  readonly cache?: DataKeyCacheOptions;
  /** The fleet's SQS intake; required for `onStale: 'enqueue'`. */
  readonly intake?: IntakeOptions;
}

/** Options of `encrypt`. */
export interface EncryptOptions {
  /** Key id, key ARN, alias name or alias ARN for GenerateDataKey. */
  readonly keyId: string;
  readonly context?: EncryptionContext;
  readonly signal?: AbortSignal;
}

/** What `decrypt` does when the envelope is under a key that is not the alias's current target. */
export type OnStale = 'ignore' | 'rewrap' | 'enqueue';

/** Options of `decrypt`. */
export interface DecryptOptions {
  /** The context the envelope was encrypted with; `{}` when absent. */
  readonly context?: EncryptionContext;
  /** @defaultValue 'ignore' */
  readonly onStale?: OnStale;
  /** The item reference sent to the intake with `onStale: 'enqueue'`. */
  readonly item?: ItemRef;
  readonly signal?: AbortSignal;
}

/** The result of `decrypt`. */
export interface DecryptResult {
  readonly plaintext: Buffer;
  /** ARN of the key that wrapped the data key. */
  readonly keyArn: string;
  /** The key material that wrapped the data key, when KMS reports it. */
  readonly keyMaterialId?: string;
  /** True when `keyArn` is not the current target of the configured alias. */
  readonly stale: boolean;
  /** With `onStale: 'rewrap'` and a stale envelope: the same ciphertext under the alias's current key. */
  readonly rewrapped?: Buffer;
  /** With `onStale: 'rewrap'`: why the rewrap failed (the plaintext is still returned). */
  readonly rewrapError?: EnvelopeError;
  /** With `onStale: 'enqueue'`: whether the item was buffered for the intake (false: deduplicated or dropped). */
  readonly enqueued?: boolean;
}

/** Options of `rewrap`. */
export interface RewrapOptions {
  /** Destination key id, ARN or alias. */
  readonly to: string;
  /** The envelope's encryption context; `{}` when absent. */
  readonly context?: EncryptionContext;
  readonly signal?: AbortSignal;
}

/** Counters of one intake buffer. */
export interface IntakeStats {
  /** Messages SQS accepted. */
  readonly sent: number;
  /** Messages dropped because the buffer was full. */
  readonly dropped: number;
  /** Messages SQS refused or that a failed call carried; they are not retried. */
  readonly failed: number;
  /** Requests ignored because the same item was already waiting or in flight. */
  readonly deduplicated: number;
  /** Messages waiting now. */
  readonly buffered: number;
  /** SendMessageBatch calls in flight now. */
  readonly inFlight: number;
}

/** Counters of the data-key cache. */
export interface CacheStats {
  readonly hits: number;
  readonly misses: number;
  readonly evictions: number;
  readonly size: number;
}

/** A snapshot of the client's counters, for the app to export as metrics. */
export interface EnvelopeStats {
  readonly encrypts: number;
  readonly decrypts: number;
  readonly rewraps: number;
  readonly staleReads: number;
  readonly rewrapFailures: number;
  /** Times DescribeKey on the alias failed and the previous target was used. */
  readonly aliasRefreshFailures: number;
  readonly errors: Readonly<Record<string, number>>;
  readonly cache: CacheStats | undefined;
  readonly intake: IntakeStats | undefined;
}
