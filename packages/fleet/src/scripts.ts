import { readFileSync, readdirSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Redis } from 'ioredis';

const LUA_DIR = join(dirname(fileURLToPath(import.meta.url)), 'lua');

/** The fleet's Lua scripts, each loaded from `lua/<name>-<numKeys>.lua`. */
export type ScriptName = 'record-batch' | 'split-batch' | 'checkpoint' | 'audit-append' | 'lease' | 'lease-release';

interface LoadedScript {
  readonly name: string;
  readonly numberOfKeys: number;
  readonly lua: string;
}

/** Reads every `name-<numKeys>.lua` file next to this module. */
export function loadScripts(): LoadedScript[] {
  return readdirSync(LUA_DIR)
    .filter((f) => f.endsWith('.lua'))
    .map((f) => {
      const m = /^(.+)-(\d+)\.lua$/.exec(f);
      if (!m) throw new Error(`Lua script ${f} must be named <name>-<numKeys>.lua`);
      return { name: m[1] as string, numberOfKeys: Number(m[2]), lua: readFileSync(join(LUA_DIR, f), 'utf8') };
    });
}

/** Redis commands the fleet adds to an ioredis connection. */
export interface FleetCommands {
  recordBatch(keys: [string, string, string, string, string], ...args: (string | number)[]): Promise<number>;
  splitBatch(keys: [string, string], jobKey: string, at: number, counter: string): Promise<string>;
  checkpoint(keys: [string, string], ...args: (string | number)[]): Promise<number>;
  auditAppend(keys: [string, string], ...args: string[]): Promise<string | null>;
  lease(key: string, owner: string, ttlMs: number): Promise<number>;
  leaseRelease(key: string, owner: string): Promise<number>;
}

const defined = new WeakSet<Redis>();

/** Defines the fleet's scripts on a connection (once per connection) and returns typed callers. */
export function fleetCommands(redis: Redis): FleetCommands {
  if (!defined.has(redis)) {
    for (const s of loadScripts()) {
      const camel = s.name.replace(/-([a-z])/g, (_, c: string) => c.toUpperCase());
      redis.defineCommand(camel, { numberOfKeys: s.numberOfKeys, lua: s.lua });
    }
    defined.add(redis);
  }
  // ioredis adds defined commands dynamically; this is the one place that types them.
  const r = redis as unknown as Record<string, (...a: unknown[]) => Promise<unknown>>;
  return {
    recordBatch: (keys, ...args) => r['recordBatch']!(...keys, ...args) as Promise<number>,
    splitBatch: (keys, jobKey, at, counter) => r['splitBatch']!(...keys, jobKey, at, counter) as Promise<string>,
    checkpoint: (keys, ...args) => r['checkpoint']!(...keys, ...args) as Promise<number>,
    auditAppend: (keys, ...args) => r['auditAppend']!(...keys, ...args) as Promise<string | null>,
    lease: (key, owner, ttlMs) => r['lease']!(key, owner, ttlMs) as Promise<number>,
    leaseRelease: (key, owner) => r['leaseRelease']!(key, owner) as Promise<number>,
  };
}
