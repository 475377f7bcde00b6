import {
  DeleteBucketCommand,
  DeleteObjectCommand,
  ListObjectVersionsCommand,
  type S3Client,
} from '@aws-sdk/client-s3';
import { expect } from 'vitest';
import { uniqueName } from './helpers.js';

/** The error a promise rejects with (fails the test when it resolves). */
export async function failure(p: Promise<unknown>): Promise<Record<string, unknown> & { name: string; $metadata: { httpStatusCode?: number } }> {
  const result = await p.then(
    () => ({ ok: true as const }),
    (err: unknown) => ({ ok: false as const, err }),
  );
  if (result.ok) throw new Error('expected the request to fail, but it succeeded');
  return result.err as Record<string, unknown> & { name: string; $metadata: { httpStatusCode?: number } };
}

/** Asserts an S3 error's code and HTTP status and returns it. */
export async function expectS3Error(p: Promise<unknown>, code: string, status: number) {
  const err = await failure(p);
  expect({ name: err.name, status: err.$metadata.httpStatusCode }).toEqual({ name: code, status });
  return err;
}

/** Buckets created by a suite, emptied (all versions) and deleted at the end. */
export class BucketTracker {
  private readonly names: string[] = [];

  constructor(private readonly s3: S3Client) {}

  name(base = 's3test'): string {
    const n = uniqueName(base);
    this.names.push(n);
    return n;
  }

  async cleanup(): Promise<void> {
    for (const Bucket of this.names) {
      try {
        let KeyMarker: string | undefined;
        let VersionIdMarker: string | undefined;
        for (;;) {
          const page = await this.s3.send(new ListObjectVersionsCommand({ Bucket, KeyMarker, VersionIdMarker }));
          for (const v of [...(page.Versions ?? []), ...(page.DeleteMarkers ?? [])]) {
            await this.s3.send(new DeleteObjectCommand({ Bucket, Key: v.Key, VersionId: v.VersionId }));
          }
          if (!page.IsTruncated) break;
          KeyMarker = page.NextKeyMarker;
          VersionIdMarker = page.NextVersionIdMarker;
        }
        await this.s3.send(new DeleteBucketCommand({ Bucket }));
      } catch (err) {
        if ((err as { name?: string }).name !== 'NoSuchBucket') throw err;
      }
    }
  }
}
