import { readdirSync, readFileSync } from 'node:fs';
import { cleanupRedisPrefix, createTestRedis, uniquePrefix } from '@rekey/testing';
import type { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { grantStep, type GrantRequest, type LimiterParams, type LimiterState } from '../src/limiter-math.js';
import { LUA_SCRIPT_FILES, loadScript, runScript } from '../src/scripts.js';

const LUA_DIR = new URL('../src/lua/', import.meta.url);

let redis: Redis;
let prefix: string;

beforeAll(() => {
  redis = createTestRedis();
  prefix = uniquePrefix('kms-lua');
});

afterAll(async () => {
  await cleanupRedisPrefix(redis, prefix);
  redis.disconnect();
});

describe('Lua scripts', () => {
  it('every .lua file is listed, named name-<numKeys>.lua and documents KEYS, ARGV and the return value', () => {
    const files = readdirSync(LUA_DIR).filter((f) => f.endsWith('.lua')).sort();
    expect(files).toEqual([...LUA_SCRIPT_FILES].sort());
    for (const f of files) {
      const m = /^(.+)-(\d+)\.lua$/.exec(f);
      expect(m, f).not.toBeNull();
      const text = readFileSync(new URL(f, LUA_DIR), 'utf8');
      const header = text.slice(0, text.indexOf(']]'));
      for (let k = 1; k <= Number(m?.[2]); k++) expect(header, f).toContain(`KEYS[${k}]`);
      expect(header, f).toContain('ARGV[1]');
      expect(header, f).toMatch(/Returns/);
    }
  });

  it.each([...LUA_SCRIPT_FILES])('%s loads into Redis (SCRIPT LOAD) with the SHA the runner uses', async (file) => {
    const script = loadScript(file);
    const sha = await redis.script('LOAD', script.lua);
    expect(sha).toBe(script.sha);
  });
});

/** Runs one grant step through acquire-1.lua at a fixed time and reads the hash back as a LimiterState. */
async function luaStep(key: string, req: GrantRequest, p: LimiterParams): Promise<{ granted: number; waitMs: number; state: LimiterState }> {
  const out = (await runScript(redis, loadScript('acquire-1.lua'), [key], [
    req.requested,
    p.budgetRps,
    p.minRps,
    p.decrease,
    p.increaseRps,
    p.windowMs,
    p.burstMs,
    req.throttled ? 1 : 0,
    req.succeeded ? 1 : 0,
    req.migration?.id ?? '',
    req.migration?.weight ?? 1,
    p.activeMs,
    req.nowMs,
    p.increasePercent,
  ])) as [number, string, string, string];
  const h = await redis.hgetall(key);
  const migrations: LimiterState['migrations'] = {};
  for (const f of Object.keys(h)) {
    const m = /^w:(.*)$/.exec(f);
    if (m?.[1] !== undefined) {
      const id = m[1];
      migrations[id] = { weight: Number(h[f]), seenMs: Number(h[`s:${id}`]), tokens: Number(h[`t:${id}`]), ts: Number(h[`u:${id}`]) };
    }
  }
  return {
    granted: Number(out[0]),
    waitMs: Number(out[1]),
    state: {
      rate: Number(h['rate']),
      tokens: Number(h['tokens']),
      ts: Number(h['ts']),
      lastDecreaseMs: Number(h['ldec']),
      lastIncreaseMs: Number(h['linc']),
      migrations,
    },
  };
}

describe('acquire-1.lua matches the TypeScript model (grantStep)', () => {
  const P: LimiterParams = { budgetRps: 200, minRps: 5, decrease: 0.7, increaseRps: 20, increasePercent: 1, windowMs: 500, burstMs: 100, activeMs: 300 };
  const T0 = 1_700_000_000_000;

  it.each([
    ['increaseRps', P],
    ['increasePercent of the budget', { ...P, increaseRps: 1, increasePercent: 10 }],
  ])('gives the same grants, waits and state over a scripted sequence (the step from %s)', async (name, params) => {
    const key = `${prefix}model:${name}`;
    const steps: GrantRequest[] = [];
    let t = T0;
    const ids = ['m1', 'm2', undefined];
    for (let i = 0; i < 120; i++) {
      t += (i * 37) % 23;
      const id = ids[i % 3];
      steps.push({
        nowMs: t,
        requested: (i * 13) % 9,
        throttled: i % 17 === 5,
        succeeded: i % 4 !== 0,
        ...(id && { migration: { id, weight: id === 'm1' ? 1 : 2.5 } }),
      });
      if (i === 60) t += 2000; // let m1/m2 expire
    }
    let model: LimiterState | undefined;
    for (const [i, req] of steps.entries()) {
      const expected = grantStep(model, req, params);
      const got = await luaStep(key, req, params);
      expect(got.granted, `step ${i} granted`).toBe(expected.granted);
      expect(got.waitMs, `step ${i} wait`).toBeCloseTo(expected.waitMs, 3);
      expect(got.state.rate, `step ${i} rate`).toBeCloseTo(expected.state.rate, 6);
      expect(got.state.tokens, `step ${i} tokens`).toBeCloseTo(expected.state.tokens, 6);
      expect(got.state.lastDecreaseMs, `step ${i} ldec`).toBeCloseTo(expected.state.lastDecreaseMs, 1);
      expect(Object.keys(got.state.migrations).sort(), `step ${i} migrations`).toEqual(Object.keys(expected.state.migrations).sort());
      for (const [id, slot] of Object.entries(expected.state.migrations)) {
        expect(got.state.migrations[id]?.tokens, `step ${i} ${id} tokens`).toBeCloseTo(slot.tokens, 6);
      }
      model = expected.state;
    }
  });

  it('uses the stored budget override over the configured one (set-budget-1.lua)', async () => {
    const key = `${prefix}override`;
    await runScript(redis, loadScript('set-budget-1.lua'), [key], [50, P.burstMs, P.budgetRps]);
    const r = await luaStep(key, { nowMs: T0, requested: 100, throttled: false, succeeded: false }, P);
    expect(r.state.rate).toBe(50);
    expect(r.granted).toBe(5);
    await runScript(redis, loadScript('set-budget-1.lua'), [key], ['', P.burstMs, P.budgetRps]);
    const after = await luaStep(key, { nowMs: T0 + 10_000, requested: 0, throttled: false, succeeded: false }, P);
    expect(after.state.rate).toBe(P.budgetRps);
  });
});
