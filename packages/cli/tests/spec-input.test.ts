import { mkdtemp, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { parseMigrationSpec } from '@rekey/core';
import { CliError, EXIT } from '../src/errors.js';
import { parseSourceFlag, specFromFlags } from '../src/spec-input.js';

describe('rekey migrate input', () => {
  it('builds a valid spec from flags', async () => {
    const spec = await specFromFlags({
      from: ['alias/old'],
      to: 'alias/new',
      source: ['s3-sse-kms:my-bucket/prefix/', 'postgres:app.secrets.blob?pk=id,tenant&format=rekey-envelope'],
      strategy: 'copy',
      batchSize: '50',
    });
    const parsed = parseMigrationSpec(spec);
    expect(parsed.sources[0]).toMatchObject({ kind: 's3-sse-kms', bucket: 'my-bucket', prefix: 'prefix/', strategy: 'copy' });
    expect(parsed.sources[1]).toMatchObject({ kind: 'postgres', schema: 'app', table: 'secrets', column: 'blob', primaryKey: ['id', 'tenant'], format: 'rekey-envelope' });
    expect(parsed.options.batchSize).toBe(50);
  });

  it('rejects an unknown source kind as bad usage', () => {
    expect(() => parseSourceFlag('dynamodb:table', 0, {})).toThrow(CliError);
    try {
      parseSourceFlag('dynamodb:table', 0, {});
    } catch (err) {
      expect((err as CliError).exitCode).toBe(EXIT.usage);
      expect((err as CliError).message).toMatch(/unknown kind dynamodb/);
    }
  });

  it('names the file and the reason for YAML that does not parse', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'rekey-cli-'));
    const file = join(dir, 'rekey.yaml');
    await writeFile(file, 'sources: [\n  - kind: s3\n');
    const err = (await specFromFlags({ file }).catch((e: unknown) => e)) as CliError;
    expect(err).toBeInstanceOf(CliError);
    expect(err.exitCode).toBe(EXIT.usage);
    expect(err.message).toMatch(new RegExp(`${file.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}: not valid YAML`));
  });

  it('names a missing file', async () => {
    const err = (await specFromFlags({ file: '/nonexistent/rekey.yaml' }).catch((e: unknown) => e)) as CliError;
    expect(err.message).toBe('/nonexistent/rekey.yaml: no such file');
  });

  it('a whole-number flag rejects other text', async () => {
    await expect(specFromFlags({ batchSize: 'lots' })).rejects.toThrow('--batch-size must be a whole number, got "lots"');
  });
});
