/** Public types of `@rekey/kms`. */
import type { KMSClient } from '@aws-sdk/client-kms';
import type { KeyInfo } from '@rekey/core';

/** KMS operations the gateway makes (the `op` label of its metrics). */
export type KmsOperation = 'ReEncrypt' | 'Decrypt' | 'Encrypt' | 'GenerateDataKey' | 'GenerateDataKeyWithoutPlaintext' | 'DescribeKey';

/** How one KMS call attempt ended, for metrics. */
export type KmsCallOutcome = 'ok' | 'retryable' | 'item' | 'fatal' | 'aborted';

/**
 * Hook the gateway reports to; the fleet backs it with prom-client (this package has no
 * metrics library), e.g. `rekey_kms_calls_total{op,outcome}` and a latency histogram.
 */
export interface KmsMetricsHook {
  /** One KMS call attempt finished after `seconds`. */
  observe(op: KmsOperation, outcome: KmsCallOutcome, seconds: number): void;
  /** KMS (or S3 on our behalf) throttled a call. */
  throttled(): void;
}

/** Encryption context: non-secret key/value pairs bound to a ciphertext. */
export type EncryptionContext = Record<string, string>;

/** Input of {@link KmsGateway.reEncrypt}. */
export interface ReEncryptInput {
  ciphertextBlob: Uint8Array;
  /** The key the blob is expected under; KMS answers IncorrectKeyException (`not-in-scope`) if it is not. */
  sourceKeyId?: string;
  destinationKeyId: string;
  sourceEncryptionContext?: EncryptionContext;
  destinationEncryptionContext?: EncryptionContext;
}

/** Output of {@link KmsGateway.reEncrypt}; key ids are ARNs as KMS returns them. */
export interface ReEncryptOutput {
  ciphertextBlob: Uint8Array;
  sourceKeyId: string;
  keyId: string;
  sourceKeyMaterialId?: string;
  destinationKeyMaterialId?: string;
}

/** Input of {@link KmsGateway.decrypt}. */
export interface DecryptInput {
  ciphertextBlob: Uint8Array;
  /** Required by KMS for asymmetric keys; for symmetric ones a guard like ReEncrypt's SourceKeyId. */
  keyId?: string;
  encryptionContext?: EncryptionContext;
}

/** Output of {@link KmsGateway.decrypt}. The plaintext is secret: never log it, zero it after use. */
export interface DecryptOutput {
  plaintext: Uint8Array;
  keyId: string;
  keyMaterialId?: string;
}

/** Input of {@link KmsGateway.encrypt}. */
export interface EncryptInput {
  keyId: string;
  plaintext: Uint8Array;
  encryptionContext?: EncryptionContext;
}

/** Output of {@link KmsGateway.encrypt} (KMS's Encrypt response names no key material). */
export interface EncryptOutput {
  ciphertextBlob: Uint8Array;
  keyId: string;
}

/** Input of {@link KmsGateway.generateDataKey}: a `keySpec` or a `numberOfBytes`. */
export interface GenerateDataKeyInput {
  keyId: string;
  /** @defaultValue 'AES_256' when numberOfBytes is absent */
  keySpec?: 'AES_256' | 'AES_128';
  numberOfBytes?: number;
  encryptionContext?: EncryptionContext;
}

/** Output of {@link KmsGateway.generateDataKey}. The plaintext is secret: zero it after use. */
export interface GenerateDataKeyOutput {
  plaintext: Uint8Array;
  ciphertextBlob: Uint8Array;
  keyId: string;
  keyMaterialId?: string;
}

/** Output of {@link KmsGateway.generateDataKeyWithoutPlaintext}. */
export type GenerateDataKeyWithoutPlaintextOutput = Omit<GenerateDataKeyOutput, 'plaintext'>;

/**
 * Every KMS call Rekey makes. Cryptographic calls take a limiter token first, are retried
 * when retryable, and reject only with `RetryableError`, `ItemError` or `MigrationFatalError`
 * (or the abort reason when `signal` aborts).
 */
export interface KmsGateway {
  reEncrypt(input: ReEncryptInput, signal?: AbortSignal): Promise<ReEncryptOutput>;
  decrypt(input: DecryptInput, signal?: AbortSignal): Promise<DecryptOutput>;
  encrypt(input: EncryptInput, signal?: AbortSignal): Promise<EncryptOutput>;
  generateDataKey(input: GenerateDataKeyInput, signal?: AbortSignal): Promise<GenerateDataKeyOutput>;
  generateDataKeyWithoutPlaintext(input: GenerateDataKeyInput, signal?: AbortSignal): Promise<GenerateDataKeyWithoutPlaintextOutput>;
  /** Describes a key by id, ARN, alias name or alias ARN (no limiter token: not a cryptographic call). */
  describeKey(keyId: string, signal?: AbortSignal): Promise<KeyInfo>;
  /** Describes several keys (aliases resolved), in the order given. */
  resolveKeys(ids: string[], signal?: AbortSignal): Promise<KeyInfo[]>;
  /** Takes one limiter token for an S3 request that makes S3 call KMS on our behalf. */
  acquire(signal?: AbortSignal): Promise<void>;
  /** Reports the outcome of such an S3 request, so S3-side KMS throttling feeds AIMD too. */
  reportS3Call(outcome: 'ok' | 'throttled'): void;
  readonly client: KMSClient;
  /** Destroys the client if the gateway created it from `clientConfig`; an injected client is left alone. */
  destroy(): void;
}
