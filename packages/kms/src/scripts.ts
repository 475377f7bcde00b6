/**
 * The limiter's Lua scripts, read from `lua/<name>-<numKeys>.lua` next to this module and run
 * with EVALSHA (falling back to EVAL once when Redis does not have the script cached).
 */
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import type { Redis } from 'ioredis';
import { KmsGatewayError } from './errors.js';

/** A Lua script and the number of KEYS it takes (from its file name). */
export interface LuaScript {
  readonly name: string;
  readonly numKeys: number;
  readonly lua: string;
  readonly sha: string;
}

/** The file names of the limiter's scripts, `name-<numKeys>.lua`. */
export const LUA_SCRIPT_FILES = ['acquire-1.lua', 'set-budget-1.lua'] as const;

const cache = new Map<string, LuaScript>();

/** Loads one script from `lua/` (cached per process). */
export function loadScript(file: (typeof LUA_SCRIPT_FILES)[number]): LuaScript {
  const hit = cache.get(file);
  if (hit) return hit;
  const m = /^(.+)-(\d+)\.lua$/.exec(file);
  if (!m?.[1] || !m[2]) throw new KmsGatewayError('script-missing', `Lua script file ${file} is not named name-<numKeys>.lua`);
  let lua: string;
  try {
    lua = readFileSync(new URL(`./lua/${file}`, import.meta.url), 'utf8');
  } catch (err) {
    throw new KmsGatewayError('script-missing', `Lua script ${file} not found next to the limiter module (was dist/lua copied?)`, {
      cause: err,
    });
  }
  const script: LuaScript = { name: m[1], numKeys: Number(m[2]), lua, sha: createHash('sha1').update(lua).digest('hex') };
  cache.set(file, script);
  return script;
}

/** Runs a script by SHA, loading it with EVAL when Redis answers NOSCRIPT. */
export async function runScript(redis: Redis, script: LuaScript, keys: string[], args: Array<string | number>): Promise<unknown> {
  if (keys.length !== script.numKeys) {
    throw new KmsGatewayError('invalid-input', `Lua script ${script.name} takes ${script.numKeys} keys, got ${keys.length}`);
  }
  try {
    return await redis.evalsha(script.sha, script.numKeys, ...keys, ...args);
  } catch (err) {
    if (err instanceof Error && err.message.startsWith('NOSCRIPT')) {
      return await redis.eval(script.lua, script.numKeys, ...keys, ...args);
    }
    throw err;
  }
}
