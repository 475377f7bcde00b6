import { randomBytes } from 'node:crypto';
import { SortedKeys } from './sorted-keys.js';

/** A bucket's versioning state once it has been set; a bucket that never had it is unversioned. */
export type VersioningStatus = 'Enabled' | 'Suspended';

/** How an object is encrypted at rest. */
export type SseState = { readonly alg: 'AES256' } | KmsSse;

/** SSE-KMS: the body is AES-256-GCM under a data key that aws-local's KMS wrapped. */
export interface KmsSse {
  readonly alg: 'aws:kms';
  /** Full ARN of the KMS key that wraps the data key. */
  readonly keyArn: string;
  /** The wrapped data key (with a bucket key: the wrapped bucket key, shared by many objects). */
  readonly wrappedKey: Buffer;
  /** The encryption context the data key was wrapped under. */
  readonly context: Readonly<Record<string, string>>;
  /** True when the caller gave an encryption context; S3 then echoes it back. */
  readonly userContext: boolean;
  /** What S3 reports as `x-amz-server-side-encryption-bucket-key-enabled`. */
  readonly bucketKey: boolean;
  /** Set when the object's data key is derived from a bucket key with this salt. */
  readonly salt?: Buffer;
}

/**
 * One version of an object (or a delete marker). Optional fields stay undefined when empty so a
 * million small objects stay small.
 */
export interface ObjectVersion {
  /** null is S3's "null" version of unversioned and versioning-suspended writes. */
  versionId: string | null;
  deleteMarker?: true;
  /** MD5 hex of the plaintext, or md5-of-md5s-N for multipart; without quotes. */
  etag: string;
  /** Plaintext size in bytes. */
  size: number;
  /** Milliseconds since the epoch. */
  lastModified: number;
  /** The bytes at rest: the plaintext, or for SSE-KMS iv|tag|ciphertext. */
  body: Buffer;
  storageClass?: string;
  /** Stored response headers (content-type, cache-control, x-amz-meta-*, x-amz-checksum-*…). */
  meta?: Record<string, string>;
  tags?: Record<string, string>;
  /** Canned ACL; undefined is `private`. */
  acl?: string;
  sse?: SseState;
  /** Number of parts when the object was made by a multipart upload. */
  partCount?: number;
}

/** One uploaded part of a multipart upload. */
export interface Part {
  etag: string;
  size: number;
  lastModified: number;
  /** The part's bytes at rest (encrypted like the object will be). */
  body: Buffer;
}

/** An in-progress multipart upload; the object's settings are fixed when it is created. */
export interface Upload {
  uploadId: string;
  key: string;
  initiated: number;
  initiator: string;
  storageClass?: string;
  meta?: Record<string, string>;
  tags?: Record<string, string>;
  acl?: string;
  sse?: SseState;
  parts: Map<number, Part>;
}

/** The bucket's default encryption (`PutBucketEncryption`). */
export interface EncryptionRule {
  alg: 'AES256' | 'aws:kms';
  /** As given by the caller (S3 does not resolve it until an object is written). */
  kmsKeyId?: string;
  bucketKeyEnabled: boolean;
}

/** A bucket: its settings, objects by key, sorted key index and open uploads. */
export interface Bucket {
  name: string;
  created: number;
  region: string;
  accountId: string;
  versioning?: VersioningStatus;
  /** Undefined means S3's default: SSE-S3 (AES256), no bucket key. */
  encryption?: EncryptionRule;
  /** One version, or all versions oldest first, per key. */
  objects: Map<string, ObjectVersion | ObjectVersion[]>;
  keys: SortedKeys;
  uploads: Map<string, Upload>;
}

/** An empty, unversioned bucket with S3's default encryption. */
export function newBucket(name: string, accountId: string, region: string): Bucket {
  return {
    name,
    created: Date.now(),
    region,
    accountId,
    objects: new Map(),
    keys: new SortedKeys(),
    uploads: new Map(),
  };
}

/** A version id that looks like S3's (32 URL-safe characters). */
export function newVersionId(): string {
  return randomBytes(24).toString('base64url');
}

/** All versions of a key, oldest first. */
export function versionsOf(entry: ObjectVersion | ObjectVersion[] | undefined): readonly ObjectVersion[] {
  if (entry === undefined) return [];
  return Array.isArray(entry) ? entry : [entry];
}

/** The newest version of a key (which may be a delete marker). */
export function latestVersion(bucket: Bucket, key: string): ObjectVersion | undefined {
  const e = bucket.objects.get(key);
  if (e === undefined) return undefined;
  return Array.isArray(e) ? e[e.length - 1] : e;
}

/** The current object of a key: its newest version unless that is a delete marker. */
export function currentObject(bucket: Bucket, key: string): ObjectVersion | undefined {
  const v = latestVersion(bucket, key);
  return v && !v.deleteMarker ? v : undefined;
}

/** A version by id; `'null'` names the null version. */
export function findVersion(bucket: Bucket, key: string, versionId: string): ObjectVersion | undefined {
  const id = versionId === 'null' ? null : versionId;
  return versionsOf(bucket.objects.get(key)).find((v) => v.versionId === id);
}

/**
 * Stores a new version of a key the way the bucket's versioning state says: replaces the object
 * (unversioned), adds a version with a new id (Enabled), or replaces the null version (Suspended).
 */
export function storeVersion(bucket: Bucket, key: string, v: ObjectVersion): ObjectVersion {
  if (bucket.versioning === undefined) {
    v.versionId = null;
    bucket.objects.set(key, v);
  } else {
    v.versionId = bucket.versioning === 'Enabled' ? newVersionId() : null;
    const others = versionsOf(bucket.objects.get(key)).filter((o) => v.versionId !== null || o.versionId !== null);
    setVersions(bucket, key, [...others, v]);
  }
  bucket.keys.add(key);
  return v;
}

/** Removes one version for good; returns it, or undefined when there was none. */
export function removeVersion(bucket: Bucket, key: string, versionId: string | null): ObjectVersion | undefined {
  const all = versionsOf(bucket.objects.get(key));
  const found = all.find((v) => v.versionId === versionId);
  if (!found) return undefined;
  setVersions(bucket, key, all.filter((v) => v !== found));
  return found;
}

function setVersions(bucket: Bucket, key: string, list: ObjectVersion[]): void {
  if (list.length === 0) {
    bucket.objects.delete(key);
    bucket.keys.delete(key);
  } else bucket.objects.set(key, list.length === 1 ? (list[0] as ObjectVersion) : list);
}
