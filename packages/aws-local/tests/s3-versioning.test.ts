import {
  CopyObjectCommand,
  CreateBucketCommand,
  DeleteObjectCommand,
  DeleteObjectsCommand,
  GetBucketVersioningCommand,
  GetObjectCommand,
  GetObjectTaggingCommand,
  HeadObjectCommand,
  ListObjectsV2Command,
  ListObjectVersionsCommand,
  PutBucketVersioningCommand,
  PutObjectCommand,
  PutObjectTaggingCommand,
  S3Client,
} from '@aws-sdk/client-s3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { clientConfig, startEndpoint, type Endpoint } from './helpers.js';
import { BucketTracker, expectS3Error } from './s3-support.js';

let ep: Endpoint;
let s3: S3Client;
let buckets: BucketTracker;

beforeAll(async () => {
  ep = await startEndpoint();
  s3 = new S3Client(clientConfig(ep));
  buckets = new BucketTracker(s3);
});

afterAll(async () => {
  await buckets.cleanup();
  s3.destroy();
  await ep.close();
});

async function versionedBucket(status: 'Enabled' | 'Suspended' = 'Enabled'): Promise<string> {
  const Bucket = buckets.name('s3ver');
  await s3.send(new CreateBucketCommand({ Bucket }));
  await s3.send(new PutBucketVersioningCommand({ Bucket, VersioningConfiguration: { Status: 'Enabled' } }));
  if (status === 'Suspended') {
    await s3.send(new PutBucketVersioningCommand({ Bucket, VersioningConfiguration: { Status: 'Suspended' } }));
  }
  return Bucket;
}

async function body(Bucket: string, Key: string, VersionId?: string): Promise<string> {
  const out = await s3.send(new GetObjectCommand({ Bucket, Key, VersionId }));
  return (await out.Body?.transformToString()) ?? '';
}

describe('bucket versioning', () => {
  it('a new bucket has no versioning status; Enabled and Suspended are stored', async () => {
    const Bucket = buckets.name('s3ver');
    await s3.send(new CreateBucketCommand({ Bucket }));

    const before = await s3.send(new GetBucketVersioningCommand({ Bucket }));
    await s3.send(new PutBucketVersioningCommand({ Bucket, VersioningConfiguration: { Status: 'Enabled' } }));
    const enabled = await s3.send(new GetBucketVersioningCommand({ Bucket }));
    await s3.send(new PutBucketVersioningCommand({ Bucket, VersioningConfiguration: { Status: 'Suspended' } }));
    const suspended = await s3.send(new GetBucketVersioningCommand({ Bucket }));

    expect(before.Status).toBeUndefined();
    expect(enabled.Status).toBe('Enabled');
    expect(suspended.Status).toBe('Suspended');
  });

  it('each write gets a version id and older versions stay readable by id', async () => {
    const Bucket = await versionedBucket();

    const v1 = await s3.send(new PutObjectCommand({ Bucket, Key: 'k', Body: 'one' }));
    const v2 = await s3.send(new PutObjectCommand({ Bucket, Key: 'k', Body: 'two' }));
    const head = await s3.send(new HeadObjectCommand({ Bucket, Key: 'k', VersionId: v1.VersionId }));

    expect(v1.VersionId).toMatch(/^[A-Za-z0-9_-]{32}$/);
    expect(v2.VersionId).not.toBe(v1.VersionId);
    expect(await body(Bucket, 'k')).toBe('two');
    expect(await body(Bucket, 'k', v1.VersionId)).toBe('one');
    expect(head.VersionId).toBe(v1.VersionId);
  });

  it('an unknown version id is NoSuchVersion and a malformed one InvalidArgument', async () => {
    const Bucket = await versionedBucket();
    await s3.send(new PutObjectCommand({ Bucket, Key: 'k', Body: 'one' }));

    await expectS3Error(s3.send(new GetObjectCommand({ Bucket, Key: 'k', VersionId: 'A'.repeat(32) })), 'NoSuchVersion', 404);
    await expectS3Error(s3.send(new GetObjectCommand({ Bucket, Key: 'k', VersionId: 'bad id' })), 'InvalidArgument', 400);
  });

  it('DeleteObject without a version id adds a delete marker; the key reads as NoSuchKey but its versions remain', async () => {
    const Bucket = await versionedBucket();
    const v1 = await s3.send(new PutObjectCommand({ Bucket, Key: 'k', Body: 'one' }));

    const del = await s3.send(new DeleteObjectCommand({ Bucket, Key: 'k' }));
    const err = await expectS3Error(s3.send(new GetObjectCommand({ Bucket, Key: 'k' })), 'NoSuchKey', 404);
    const list = await s3.send(new ListObjectsV2Command({ Bucket }));
    const headers = (err['$response'] as { headers: Record<string, string> }).headers;

    expect(del.DeleteMarker).toBe(true);
    expect(del.VersionId).toBeDefined();
    expect(headers['x-amz-delete-marker']).toBe('true');
    expect(headers['x-amz-version-id']).toBe(del.VersionId);
    expect(list.KeyCount).toBe(0);
    expect(await body(Bucket, 'k', v1.VersionId)).toBe('one');
  });

  it('GetObject of a delete marker by version id is 405 MethodNotAllowed', async () => {
    const Bucket = await versionedBucket();
    await s3.send(new PutObjectCommand({ Bucket, Key: 'k', Body: 'one' }));
    const marker = await s3.send(new DeleteObjectCommand({ Bucket, Key: 'k' }));

    await expectS3Error(s3.send(new GetObjectCommand({ Bucket, Key: 'k', VersionId: marker.VersionId })), 'MethodNotAllowed', 405);
  });

  it('DeleteObject with a version id removes that version for good; removing the marker restores the key', async () => {
    const Bucket = await versionedBucket();
    const v1 = await s3.send(new PutObjectCommand({ Bucket, Key: 'k', Body: 'one' }));
    const v2 = await s3.send(new PutObjectCommand({ Bucket, Key: 'k', Body: 'two' }));
    const marker = await s3.send(new DeleteObjectCommand({ Bucket, Key: 'k' }));

    const delMarker = await s3.send(new DeleteObjectCommand({ Bucket, Key: 'k', VersionId: marker.VersionId }));
    await s3.send(new DeleteObjectCommand({ Bucket, Key: 'k', VersionId: v2.VersionId }));

    expect(delMarker).toMatchObject({ DeleteMarker: true, VersionId: marker.VersionId });
    expect(await body(Bucket, 'k')).toBe('one');
    await expectS3Error(s3.send(new GetObjectCommand({ Bucket, Key: 'k', VersionId: v2.VersionId })), 'NoSuchVersion', 404);
    expect((await s3.send(new HeadObjectCommand({ Bucket, Key: 'k' }))).VersionId).toBe(v1.VersionId);
  });

  it('CopyObject from an older version id restores it as the newest version', async () => {
    const Bucket = await versionedBucket();
    const v1 = await s3.send(new PutObjectCommand({ Bucket, Key: 'k', Body: 'one' }));
    await s3.send(new PutObjectCommand({ Bucket, Key: 'k', Body: 'two' }));

    const copy = await s3.send(new CopyObjectCommand({ Bucket, Key: 'k', CopySource: `${Bucket}/k?versionId=${v1.VersionId}` }));

    expect(copy.CopySourceVersionId).toBe(v1.VersionId);
    expect(copy.VersionId).not.toBe(v1.VersionId);
    expect(await body(Bucket, 'k')).toBe('one');
  });

  it('CopyObject naming a delete marker by version id is InvalidRequest', async () => {
    const Bucket = await versionedBucket();
    await s3.send(new PutObjectCommand({ Bucket, Key: 'k', Body: 'one' }));
    const marker = await s3.send(new DeleteObjectCommand({ Bucket, Key: 'k' }));

    await expectS3Error(
      s3.send(new CopyObjectCommand({ Bucket, Key: 'x', CopySource: `${Bucket}/k?versionId=${marker.VersionId}` })),
      'InvalidRequest',
      400,
    );
  });

  it('tags belong to a version', async () => {
    const Bucket = await versionedBucket();
    const v1 = await s3.send(new PutObjectCommand({ Bucket, Key: 'k', Body: 'one', Tagging: 'v=1' }));
    await s3.send(new PutObjectCommand({ Bucket, Key: 'k', Body: 'two', Tagging: 'v=2' }));

    await s3.send(new PutObjectTaggingCommand({ Bucket, Key: 'k', VersionId: v1.VersionId, Tagging: { TagSet: [{ Key: 'v', Value: 'old' }] } }));
    const old = await s3.send(new GetObjectTaggingCommand({ Bucket, Key: 'k', VersionId: v1.VersionId }));
    const current = await s3.send(new GetObjectTaggingCommand({ Bucket, Key: 'k' }));

    expect(old).toMatchObject({ VersionId: v1.VersionId, TagSet: [{ Key: 'v', Value: 'old' }] });
    expect(current.TagSet).toEqual([{ Key: 'v', Value: '2' }]);
  });

  it('with versioning suspended, writes replace the null version and deletes add a null delete marker', async () => {
    const Bucket = await versionedBucket('Suspended');
    await s3.send(new PutObjectCommand({ Bucket, Key: 'k', Body: 'one' }));
    const second = await s3.send(new PutObjectCommand({ Bucket, Key: 'k', Body: 'two' }));

    const versions = await s3.send(new ListObjectVersionsCommand({ Bucket }));
    const del = await s3.send(new DeleteObjectCommand({ Bucket, Key: 'k' }));
    const after = await s3.send(new ListObjectVersionsCommand({ Bucket }));

    expect(second.VersionId).toBe('null');
    expect(versions.Versions?.map((v) => v.VersionId)).toEqual(['null']);
    expect(del).toMatchObject({ DeleteMarker: true, VersionId: 'null' });
    expect(after.Versions ?? []).toEqual([]);
    expect(after.DeleteMarkers?.map((m) => m.VersionId)).toEqual(['null']);
  });
});

describe('ListObjectVersions', () => {
  let Bucket: string;
  const ids: Record<string, string[]> = {};
  beforeAll(async () => {
    Bucket = await versionedBucket();
    for (const [Key, n] of [['a', 3], ['b', 1], ['c/d', 2]] as const) {
      ids[Key] = [];
      for (let i = 0; i < n; i++) {
        const out = await s3.send(new PutObjectCommand({ Bucket, Key, Body: `${Key}${i}` }));
        ids[Key]?.unshift(out.VersionId ?? '');
      }
    }
    await s3.send(new DeleteObjectCommand({ Bucket, Key: 'b' }));
  });

  it('lists keys in order, versions newest first, with IsLatest and delete markers', async () => {
    const out = await s3.send(new ListObjectVersionsCommand({ Bucket }));

    expect(out.Versions?.map((v) => [v.Key, v.VersionId, v.IsLatest])).toEqual([
      ['a', ids['a']?.[0], true],
      ['a', ids['a']?.[1], false],
      ['a', ids['a']?.[2], false],
      ['b', ids['b']?.[0], false],
      ['c/d', ids['c/d']?.[0], true],
      ['c/d', ids['c/d']?.[1], false],
    ]);
    expect(out.DeleteMarkers?.map((m) => [m.Key, m.IsLatest])).toEqual([['b', true]]);
    expect(out.Versions?.[0]).toMatchObject({ Size: 2, StorageClass: 'STANDARD' });
  });

  it('pages with KeyMarker and VersionIdMarker without gaps or repeats', async () => {
    const seen: string[] = [];
    let KeyMarker: string | undefined;
    let VersionIdMarker: string | undefined;
    for (;;) {
      const out = await s3.send(new ListObjectVersionsCommand({ Bucket, MaxKeys: 2, KeyMarker, VersionIdMarker }));
      const page = [...(out.Versions ?? []), ...(out.DeleteMarkers ?? [])].map((v) => `${v.Key}:${v.VersionId}`);
      expect(page.length).toBeLessThanOrEqual(2);
      seen.push(...page);
      if (!out.IsTruncated) break;
      KeyMarker = out.NextKeyMarker;
      VersionIdMarker = out.NextVersionIdMarker;
    }

    expect(seen).toHaveLength(7);
    expect(new Set(seen).size).toBe(7);
  });

  it('filters by Prefix and rolls up with Delimiter', async () => {
    const out = await s3.send(new ListObjectVersionsCommand({ Bucket, Delimiter: '/' }));
    const inC = await s3.send(new ListObjectVersionsCommand({ Bucket, Prefix: 'c/' }));

    expect(out.CommonPrefixes?.map((p) => p.Prefix)).toEqual(['c/']);
    expect(out.Versions?.every((v) => !v.Key?.startsWith('c/'))).toBe(true);
    expect(inC.Versions?.map((v) => v.VersionId)).toEqual(ids['c/d']);
  });

  it('a VersionIdMarker without a KeyMarker is InvalidArgument', async () => {
    await expectS3Error(s3.send(new ListObjectVersionsCommand({ Bucket, VersionIdMarker: ids['a']?.[0] })), 'InvalidArgument', 400);
  });

  it('DeleteObjects with version ids deletes those versions', async () => {
    const B = await versionedBucket();
    const v1 = await s3.send(new PutObjectCommand({ Bucket: B, Key: 'k', Body: '1' }));
    const v2 = await s3.send(new PutObjectCommand({ Bucket: B, Key: 'k', Body: '2' }));

    const out = await s3.send(
      new DeleteObjectsCommand({ Bucket: B, Delete: { Objects: [{ Key: 'k', VersionId: v1.VersionId }, { Key: 'k', VersionId: v2.VersionId }] } }),
    );
    const left = await s3.send(new ListObjectVersionsCommand({ Bucket: B }));

    expect(out.Deleted?.map((d) => d.VersionId)).toEqual([v1.VersionId, v2.VersionId]);
    expect(left.Versions ?? []).toEqual([]);
  });
});
