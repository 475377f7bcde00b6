import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { engineOptionsFromConfig, readProcessConfig } from '../src/process-config.js';

describe('a service reading its config', () => {
  let dir: string;
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'rekey-config-'));
  });
  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('names the file it was given, with the line, for a YAML error and a bad setting', async () => {
    const file = join(dir, 'prod.yaml');
    await writeFile(file, 'redis:\n  url: redis://127.0.0.1:6379\nkms:\n  budget: lots\n');
    const r = await readProcessConfig('worker', ['node', 'main.js', '--config', file], {});
    expect(r).toEqual({ problems: [expect.stringMatching(new RegExp(`^${file.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&')}: kms\\.budget`))] });

    await writeFile(file, 'redis:\n  url: [\n');
    const y = await readProcessConfig('worker', ['node', 'main.js'], { REKEY_CONFIG: file });
    expect('problems' in y && y.problems[0]).toMatch(new RegExp(`^${file.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&')} line \\d+: `));
  });

  it('says which flag or variable named a file that is not there, and keeps a variable problem under its name', async () => {
    const missing = join(dir, 'nope.yaml');
    expect(await readProcessConfig('worker', ['node', 'main.js', '--config', missing], {})).toEqual({ problems: [`--config ${missing}: no such file`] });
    expect(await readProcessConfig('worker', ['node', 'main.js'], { REKEY_CONFIG: missing })).toEqual({ problems: [`REKEY_CONFIG ${missing}: no such file`] });
    expect(await readProcessConfig('worker', ['node', 'main.js', '--config'], {})).toEqual({ problems: ['--config: needs the path of a config file'] });
    const env = await readProcessConfig('worker', ['node', 'main.js'], { REKEY_KMS_QUOTA_RPS: 'many' });
    expect(env).toEqual({ problems: [expect.stringMatching(/^REKEY_KMS_QUOTA_RPS: /)] });
  });

  it('gives the config when all is well, and the engine gets its AWS client timeouts', async () => {
    const file = join(dir, 'ok.yaml');
    await writeFile(file, 'redis:\n  prefix: "svc-test:"\naws:\n  timeouts: { kmsIdleMs: 5000 }\n');
    const r = await readProcessConfig('worker', ['node', 'main.js', '--config', file], {});
    if (!('config' in r)) throw new Error(r.problems.join('; '));
    expect(r.config.redis.prefix).toBe('svc-test:');
    expect(engineOptionsFromConfig(r.config, undefined, 'test').aws).toEqual({ region: 'us-east-1', timeouts: { kmsIdleMs: 5000 } });
  });
});
