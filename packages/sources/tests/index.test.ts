import { describe, expect, it } from 'vitest';
import { S3Client } from '@aws-sdk/client-s3';
import type { SourceSpec } from '@rekey/core';
import { SourceError, createSource, type SourceKms } from '../src/index.js';

const kms: SourceKms = {
  async acquire() {},
  reportS3Call() {},
  async reEncrypt() {
    throw new Error('not called');
  },
};
const s3 = new S3Client({ region: 'us-east-1', credentials: { accessKeyId: 'a', secretAccessKey: 'b' } });

describe('createSource', () => {
  it('builds each kind from its spec', async () => {
    const sse = await createSource({ name: 'a', kind: 's3-sse-kms', bucket: 'bkt', includeVersions: false, strategy: 'copy', multipartThresholdBytes: 5 * 1024 ** 3 }, { kms, s3 });
    const env = await createSource({ name: 'b', kind: 's3-envelope', bucket: 'bkt' }, { kms, s3 });
    const pg = await createSource(
      { name: 'c', kind: 'postgres', table: 't', primaryKey: ['id'], column: 'c', format: 'kms-blob' },
      { kms, connectionString: 'postgres://postgres@127.0.0.1:5432/test' },
    );

    expect([sse.kind, env.kind, pg.kind]).toEqual(['s3-sse-kms', 's3-envelope', 'postgres']);
    expect([sse.name, env.name, pg.name]).toEqual(['a', 'b', 'c']);
    await pg.close?.();
  });

  it('refuses a source whose client is missing, naming the source', async () => {
    await expect(createSource({ name: 'a', kind: 's3-envelope', bucket: 'bkt' }, { kms })).rejects.toThrow('source a: s3-envelope needs deps.s3');
    await expect(createSource({ name: 'c', kind: 'postgres', table: 't', primaryKey: ['id'], column: 'c', format: 'kms-blob' }, { kms })).rejects.toThrow(SourceError);
  });

  it('refuses an unknown kind', async () => {
    await expect(createSource({ name: 'z', kind: 'ftp' } as unknown as SourceSpec, { kms })).rejects.toThrow('unknown source kind ftp');
  });
});
