import { AwsError } from '../errors.js';
import { MATERIAL_ENTRY, materialCount, materialIdAt, newMaterialEntry } from './crypto.js';

export const KEY_SPECS = ['SYMMETRIC_DEFAULT', 'RSA_2048', 'RSA_3072', 'RSA_4096'] as const;
/** Key specs aws-local implements. */
export type KeySpec = (typeof KEY_SPECS)[number];
export type KeyState = 'Enabled' | 'Disabled' | 'PendingDeletion' | 'PendingImport';
export type Origin = 'AWS_KMS' | 'EXTERNAL';
export type KeyManager = 'CUSTOMER' | 'AWS';
export type RotationType = 'AUTOMATIC' | 'ON_DEMAND';

const DAY_MS = 86_400_000;

/** Parameters handed out by GetParametersForImport, kept until they expire. */
export interface ImportParams {
  token: Buffer;
  wrappingDer: Buffer;
  algorithm: string;
  validTo: number;
}

/** The last successful cryptographic use of a key (what GetKeyLastUsage returns). */
export interface LastUse {
  at: number;
  operation: string;
  eventId: string;
  requestId: string;
}

/**
 * One KMS key. Kept flat and small (numbers for dates, packed material bytes, `null` for the
 * common defaults) because aws-local must hold a million of them.
 */
export interface KeyRecord {
  id: string;
  account: string;
  region: string;
  created: number;
  state: KeyState;
  spec: KeySpec;
  origin: Origin;
  manager: KeyManager;
  description: string;
  multiRegion: boolean;
  /**
   * Symmetric: packed 64-byte entries `[materialId(32) | aesKey(32)]`, oldest first, current last.
   * RSA: the PKCS#8 DER private key. `null` while an EXTERNAL key awaits its material.
   */
  material: Buffer | null;
  /** When and how each entry after the first was added; `null` until the first rotation. */
  rotations: Array<{ at: number; type: RotationType }> | null;
  onDemandRotations: number;
  /** Automatic rotation period in days; 0 when automatic rotation is off. */
  rotationPeriodDays: number;
  nextRotation: number;
  deletionDate: number;
  pendingWindowDays: number;
  /** The key policy as given; `null` means the default key policy. */
  policy: string | null;
  tags: Array<[string, string]> | null;
  importParams: ImportParams | null;
  /** EXTERNAL keys: when the imported material expires; 0 when it does not. */
  materialValidTo: number;
  lastUse: LastUse | null;
}

/** A new key record with every field set, so all records share one shape. */
export function newKeyRecord(f: Pick<KeyRecord, 'id' | 'account' | 'region' | 'created' | 'spec' | 'origin' | 'manager'> & Partial<KeyRecord>): KeyRecord {
  return {
    id: f.id,
    account: f.account,
    region: f.region,
    created: f.created,
    state: f.state ?? 'Enabled',
    spec: f.spec,
    origin: f.origin,
    manager: f.manager,
    description: f.description ?? '',
    multiRegion: f.multiRegion ?? false,
    material: f.material ?? null,
    rotations: f.rotations ?? null,
    onDemandRotations: f.onDemandRotations ?? 0,
    rotationPeriodDays: f.rotationPeriodDays ?? 0,
    nextRotation: f.nextRotation ?? 0,
    deletionDate: f.deletionDate ?? 0,
    pendingWindowDays: f.pendingWindowDays ?? 0,
    policy: f.policy ?? null,
    tags: f.tags ?? null,
    importParams: f.importParams ?? null,
    materialValidTo: f.materialValidTo ?? 0,
    lastUse: f.lastUse ?? null,
  };
}

/** An alias; the name includes the `alias/` prefix. */
export interface AliasRecord {
  target: string;
  created: number;
  updated: number;
}

export function partition(region: string): string {
  if (region.startsWith('cn-')) return 'aws-cn';
  if (region.startsWith('us-gov-')) return 'aws-us-gov';
  return 'aws';
}

/*
 * ARNs of recently used keys. A KMS call needs its key's ARN several times (deny rules, the
 * response, the usage log), and the usage log keeps one per call: building it once per key saves
 * that work and lets the log's entries share one string. Bounded, so that a million keys do not
 * hold a million more strings; a key's id, account and Region never change.
 */
const ARN_CACHE_MAX = 4096;
const arnCache = new Map<Pick<KeyRecord, 'id' | 'account' | 'region'>, string>();

export function keyArn(k: Pick<KeyRecord, 'id' | 'account' | 'region'>): string {
  let arn = arnCache.get(k);
  if (arn === undefined) {
    arn = `arn:${partition(k.region)}:kms:${k.region}:${k.account}:key/${k.id}`;
    if (arnCache.size >= ARN_CACHE_MAX) arnCache.clear();
    arnCache.set(k, arn);
  }
  return arn;
}

/** Forgets cached ARNs (after reset/restore, so that dropped key records are not kept alive). */
export function clearKeyArnCache(): void {
  arnCache.clear();
}

export function aliasArn(account: string, region: string, name: string): string {
  return `arn:${partition(region)}:kms:${region}:${account}:${name}`;
}

export function isSymmetric(k: KeyRecord): boolean {
  return k.spec === 'SYMMETRIC_DEFAULT';
}

export function encryptionAlgorithms(k: KeyRecord): string[] {
  return isSymmetric(k) ? ['SYMMETRIC_DEFAULT'] : ['RSAES_OAEP_SHA_1', 'RSAES_OAEP_SHA_256'];
}

/** The id of the symmetric key material new ciphertexts use; undefined for RSA or without material. */
export function currentMaterialId(k: KeyRecord): string | undefined {
  if (!isSymmetric(k) || !k.material) return undefined;
  return materialIdAt(k.material, materialCount(k.material) - 1);
}

/** Adds new symmetric key material; new ciphertexts use it, old ones keep decrypting. */
export function rotate(k: KeyRecord, at: number, type: RotationType): void {
  if (!k.material) throw new Error(`key ${k.id} has no material to rotate`);
  k.material = Buffer.concat([k.material, newMaterialEntry()]);
  (k.rotations ??= []).push({ at, type });
  if (type === 'ON_DEMAND') k.onDemandRotations++;
}

/** Epoch milliseconds as the epoch seconds AWS JSON protocols use for timestamps. */
export function ts(ms: number): number {
  return ms / 1000;
}

/** KMS's default key policy: the account root may do everything. */
export function defaultPolicy(account: string, region: string): string {
  return JSON.stringify(
    {
      Version: '2012-10-17',
      Id: 'key-default-1',
      Statement: [
        {
          Sid: 'Enable IAM User Permissions',
          Effect: 'Allow',
          Principal: { AWS: `arn:${partition(region)}:iam::${account}:root` },
          Action: 'kms:*',
          Resource: '*',
        },
      ],
    },
    null,
    2,
  );
}

/** DescribeKey's KeyMetadata for a key. */
export function keyMetadata(k: KeyRecord): Record<string, unknown> {
  const arn = keyArn(k);
  const md: Record<string, unknown> = {
    AWSAccountId: k.account,
    KeyId: k.id,
    Arn: arn,
    CreationDate: ts(k.created),
    Enabled: k.state === 'Enabled',
    Description: k.description,
    KeyUsage: 'ENCRYPT_DECRYPT',
    KeyState: k.state,
    Origin: k.origin,
    KeyManager: k.manager,
    CustomerMasterKeySpec: k.spec,
    KeySpec: k.spec,
    EncryptionAlgorithms: encryptionAlgorithms(k),
    MultiRegion: k.multiRegion,
  };
  if (k.state === 'PendingDeletion') {
    md['DeletionDate'] = ts(k.deletionDate);
    md['PendingDeletionWindowInDays'] = k.pendingWindowDays;
  }
  if (k.origin === 'EXTERNAL' && k.material) {
    md['ExpirationModel'] = k.materialValidTo ? 'KEY_MATERIAL_EXPIRES' : 'KEY_MATERIAL_DOES_NOT_EXPIRE';
    if (k.materialValidTo) md['ValidTo'] = ts(k.materialValidTo);
  }
  if (k.multiRegion) {
    md['MultiRegionConfiguration'] = {
      MultiRegionKeyType: 'PRIMARY',
      PrimaryKey: { Arn: arn, Region: k.region },
      ReplicaKeys: [],
    };
  }
  const current = currentMaterialId(k);
  if (current) md['CurrentKeyMaterialId'] = current;
  return md;
}

/**
 * Applies what time alone changes about a key, the way KMS does in the background: automatic
 * rotation when due, expiry of imported material. Returns false when the key's deletion date
 * has passed (the caller deletes it).
 */
export function applyTime(k: KeyRecord, now: number): boolean {
  if (k.state === 'PendingDeletion' && now >= k.deletionDate) return false;
  if (k.rotationPeriodDays > 0 && k.state === 'Enabled' && k.material && now >= k.nextRotation) {
    // A key that missed several periods (e.g. restored from an old snapshot) rotates once, as KMS does.
    rotate(k, now, 'AUTOMATIC');
    k.nextRotation = now + k.rotationPeriodDays * DAY_MS;
  }
  if (k.materialValidTo && now >= k.materialValidTo && k.material) {
    k.material = null;
    k.materialValidTo = 0;
    if (k.state !== 'PendingDeletion') k.state = 'PendingImport';
  }
  return true;
}

export { DAY_MS, MATERIAL_ENTRY };

/** The error KMS answers when a key's state forbids a cryptographic operation. */
export function stateError(k: KeyRecord): AwsError | undefined {
  const arn = keyArn(k);
  switch (k.state) {
    case 'Enabled':
      return undefined;
    case 'Disabled':
      return new AwsError('DisabledException', `${arn} is disabled.`);
    case 'PendingDeletion':
      return new AwsError('KMSInvalidStateException', `${arn} is pending deletion.`);
    case 'PendingImport':
      return new AwsError('KMSInvalidStateException', `${arn} is pending import.`);
  }
}
