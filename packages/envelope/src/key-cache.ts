import { EnvelopeError } from './errors.js';
import type { CacheStats, DataKeyCacheOptions } from './types.js';

/** A cached data key. `plaintextKey` is zeroed when the entry is evicted. */
export interface CachedDataKey {
  readonly plaintextKey: Buffer;
  readonly wrappedKey: Buffer;
  readonly keyArn: string;
  readonly keyMaterialId: string | undefined;
}

interface Entry extends CachedDataKey {
  readonly createdAt: number;
  uses: number;
  evicted: boolean;
}

// Random 96-bit IVs keep the GCM collision bound only up to 2^32 messages per key (NIST SP 800-38D).
const MAX_USES_LIMIT = 2 ** 32;

/**
 * A bounded LRU of plaintext data keys with a max age and a max number of uses per key.
 * Entries are used inside a synchronous callback, so an entry is never zeroed while in use.
 */
export class DataKeyCache {
  private readonly entries = new Map<string, Entry>();
  private hits = 0;
  private misses = 0;
  private evictions = 0;

  constructor(
    private readonly options: DataKeyCacheOptions,
    private readonly now: () => number = () => performance.now(),
  ) {
    const { maxEntries, maxAgeMs, maxUses } = options;
    if (!Number.isInteger(maxEntries) || maxEntries < 1) throw new EnvelopeError('invalid-argument', 'cache.maxEntries must be an integer >= 1');
    if (!(maxAgeMs > 0) || !Number.isFinite(maxAgeMs)) throw new EnvelopeError('invalid-argument', 'cache.maxAgeMs must be a finite number > 0');
    if (!Number.isInteger(maxUses) || maxUses < 1 || maxUses > MAX_USES_LIMIT) {
      throw new EnvelopeError('invalid-argument', `cache.maxUses must be an integer in 1..${MAX_USES_LIMIT}`);
    }
  }

  /** Runs `use` on a live entry (counting one use) and returns its result; undefined on a miss. */
  take<T>(id: string, use: (entry: CachedDataKey) => T): T | undefined {
    const e = this.entries.get(id);
    if (!e || this.expired(e)) {
      if (e) this.evict(id, e);
      this.misses++;
      return undefined;
    }
    this.hits++;
    this.entries.delete(id);
    this.entries.set(id, e);
    e.uses++;
    try {
      return use(e);
    } finally {
      if (e.uses >= this.options.maxUses) this.evict(id, e);
    }
  }

  /**
   * Stores a key (the cache takes ownership of `plaintextKey`), runs `use` on it as its first
   * use, and evicts the least recently used entries beyond `maxEntries`.
   */
  put<T>(id: string, key: CachedDataKey, use: (entry: CachedDataKey) => T): T {
    const old = this.entries.get(id);
    if (old) this.evict(id, old);
    const e: Entry = { ...key, createdAt: this.now(), uses: 1, evicted: false };
    this.entries.set(id, e);
    let ok = false;
    try {
      const result = use(e);
      ok = true;
      return result;
    } finally {
      // A key that failed its first use (for example a wrong length) is not kept.
      if (!ok || e.uses >= this.options.maxUses) this.evict(id, e);
      for (const [oldId, oldest] of this.entries) {
        if (this.entries.size <= this.options.maxEntries) break;
        this.evict(oldId, oldest);
      }
    }
  }

  /** Evicts expired entries; the client calls it on a timer so idle keys do not linger. */
  sweep(): void {
    for (const [id, e] of this.entries) if (this.expired(e)) this.evict(id, e);
  }

  /** Evicts and zeroes every entry. */
  clear(): void {
    for (const [id, e] of this.entries) this.evict(id, e);
  }

  stats(): CacheStats {
    return { hits: this.hits, misses: this.misses, evictions: this.evictions, size: this.entries.size };
  }

  private expired(e: Entry): boolean {
    return this.now() - e.createdAt >= this.options.maxAgeMs || e.uses >= this.options.maxUses;
  }

  private evict(id: string, e: Entry): void {
    if (this.entries.get(id) === e) this.entries.delete(id);
    if (e.evicted) return;
    e.evicted = true;
    e.plaintextKey.fill(0);
    this.evictions++;
  }
}
