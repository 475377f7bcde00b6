import { createHash, randomBytes } from 'node:crypto';
import { CreateKeyCommand, DecryptCommand, EncryptCommand, type KMSClient } from '@aws-sdk/client-kms';
import { CreateBucketCommand, GetObjectCommand, PutObjectCommand, type S3Client } from '@aws-sdk/client-s3';
import type pg from 'pg';

export const sha = (b: Uint8Array) => createHash('sha256').update(b).digest('hex');

/** Runs `fn` over `n` indexes with bounded concurrency. */
export async function times(n: number, concurrency: number, fn: (i: number) => Promise<void>): Promise<void> {
  let next = 0;
  await Promise.all(Array.from({ length: Math.min(n, concurrency) }, async () => {
    while (next < n) await fn(next++);
  }));
}

export async function createKey(kms: KMSClient, description: string): Promise<string> {
  return (await kms.send(new CreateKeyCommand({ Description: description }))).KeyMetadata!.Arn!;
}

/** Writes `n` SSE-KMS objects under `keyId` and returns key -> sha256 of body. */
export async function seedSseObjects(s3: S3Client, bucket: string, keyId: string, n: number, opts: { size?: number; prefix?: string } = {}): Promise<Map<string, string>> {
  await s3.send(new CreateBucketCommand({ Bucket: bucket })).catch((err: { name?: string }) => {
    if (err.name !== 'BucketAlreadyOwnedByYou') throw err;
  });
  const out = new Map<string, string>();
  await times(n, 16, async (i) => {
    const key = `${opts.prefix ?? 'obj'}/${String(i).padStart(6, '0')}`;
    const body = randomBytes(opts.size ?? 64 + (i % 200));
    out.set(key, sha(body));
    await s3.send(new PutObjectCommand({
      Bucket: bucket,
      Key: key,
      Body: body,
      ServerSideEncryption: 'aws:kms',
      SSEKMSKeyId: keyId,
      ContentType: 'application/x-test',
      CacheControl: 'max-age=60',
      Metadata: { owner: 'e2e', index: String(i) },
      Tagging: `team=e2e&n=${i % 3}`,
      StorageClass: i % 2 === 0 ? 'STANDARD_IA' : 'STANDARD',
    }));
  });
  return out;
}

export async function readSse(s3: S3Client, bucket: string, key: string) {
  const o = await s3.send(new GetObjectCommand({ Bucket: bucket, Key: key }));
  return { hash: sha(await o.Body!.transformToByteArray()), keyArn: o.SSEKMSKeyId, metadata: o.Metadata, contentType: o.ContentType, cacheControl: o.CacheControl, storageClass: o.StorageClass ?? 'STANDARD', etag: o.ETag };
}

/** Creates a table of KMS-blob rows under `keyId`; returns id -> sha256 of plaintext. */
export async function seedRows(pool: pg.Pool, kms: KMSClient, table: string, keyId: string, n: number): Promise<Map<number, string>> {
  await pool.query(`CREATE TABLE ${table} (id bigint PRIMARY KEY, secret bytea NOT NULL, ctx jsonb NOT NULL, note text)`);
  const out = new Map<number, string>();
  await times(n, 16, async (i) => {
    const id = i + 1;
    const plain = randomBytes(32);
    const ctx = { table, id: String(id) };
    const ct = (await kms.send(new EncryptCommand({ KeyId: keyId, Plaintext: plain, EncryptionContext: ctx }))).CiphertextBlob!;
    out.set(id, sha(plain));
    await pool.query(`INSERT INTO ${table} (id, secret, ctx) VALUES ($1, $2, $3)`, [id, Buffer.from(ct), ctx]);
  });
  return out;
}

export async function readRow(pool: pg.Pool, kms: KMSClient, table: string, id: number) {
  const { rows } = await pool.query<{ secret: Buffer; ctx: Record<string, string> }>(`SELECT secret, ctx FROM ${table} WHERE id = $1`, [id]);
  const r = rows[0]!;
  const d = await kms.send(new DecryptCommand({ CiphertextBlob: r.secret, EncryptionContext: r.ctx }));
  return { hash: sha(d.Plaintext!), keyArn: d.KeyId! };
}
