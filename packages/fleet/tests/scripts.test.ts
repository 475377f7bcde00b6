import { afterAll, describe, expect, it } from 'vitest';
import { createTestRedis } from '@rekey/testing';
import { loadScripts } from '../src/scripts.js';

describe('Lua scripts', () => {
  const redis = createTestRedis();
  afterAll(async () => {
    await redis.quit();
  });

  it('every script loads into Redis and documents KEYS, ARGV and the return value', async () => {
    const scripts = loadScripts();
    expect(scripts.length).toBeGreaterThanOrEqual(5);
    for (const s of scripts) {
      expect(s.lua, s.name).toMatch(/KEYS\[1\]/);
      expect(s.lua, s.name).toMatch(/Returns/);
      const sha = (await redis.script('LOAD', s.lua)) as string;
      expect(sha).toMatch(/^[0-9a-f]{40}$/);
    }
  });
});
