import { describe, expect, it } from 'vitest';
import { EnvelopeError } from '../src/errors.js';
import { DataKeyCache, type CachedDataKey } from '../src/key-cache.js';

const ARN = 'arn:aws:kms:us-east-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab';
function key(fill: number): CachedDataKey {
  return { plaintextKey: Buffer.alloc(32, fill), wrappedKey: Buffer.alloc(8, fill), keyArn: ARN, keyMaterialId: undefined };
}

describe('DataKeyCache', () => {
  it('serves a stored key until maxUses, then zeroes it and misses', () => {
    const cache = new DataKeyCache({ maxEntries: 4, maxAgeMs: 60_000, maxUses: 3 });
    const k = key(7);
    cache.put('a', k, () => undefined);
    expect(cache.take('a', (e) => e.plaintextKey[0])).toBe(7);
    expect(cache.take('a', (e) => e.plaintextKey[0])).toBe(7);
    expect(cache.take('a', () => 'third')).toBeUndefined();
    expect(k.plaintextKey.equals(Buffer.alloc(32))).toBe(true);
    expect(cache.stats()).toMatchObject({ hits: 2, misses: 1, size: 0 });
  });

  it('evicts an entry older than maxAgeMs and zeroes it', () => {
    let now = 0;
    const cache = new DataKeyCache({ maxEntries: 4, maxAgeMs: 100, maxUses: 100 }, () => now);
    const k = key(5);
    cache.put('a', k, () => undefined);
    now = 99;
    expect(cache.take('a', () => 'hit')).toBe('hit');
    now = 100;
    expect(cache.take('a', () => 'hit')).toBeUndefined();
    expect(k.plaintextKey.every((b) => b === 0)).toBe(true);
  });

  it('evicts the least recently used entry beyond maxEntries', () => {
    const cache = new DataKeyCache({ maxEntries: 2, maxAgeMs: 60_000, maxUses: 100 });
    const a = key(1);
    cache.put('a', a, () => undefined);
    cache.put('b', key(2), () => undefined);
    cache.take('a', () => undefined);
    cache.put('c', key(3), () => undefined);
    expect(cache.take('b', () => 'b')).toBeUndefined();
    expect(cache.take('a', () => 'a')).toBe('a');
    expect(a.plaintextKey[0]).toBe(1);
    expect(cache.stats().size).toBe(2);
  });

  it('never zeroes a key while the callback that uses it runs', () => {
    const cache = new DataKeyCache({ maxEntries: 1, maxAgeMs: 60_000, maxUses: 1 });
    const seen = cache.put('a', key(9), (e) => Buffer.from(e.plaintextKey));
    expect(seen.every((b) => b === 9)).toBe(true);
  });

  it('does not keep a key whose first use threw', () => {
    const cache = new DataKeyCache({ maxEntries: 2, maxAgeMs: 60_000, maxUses: 10 });
    const k = key(4);
    expect(() => cache.put('a', k, () => { throw new Error('bad key'); })).toThrow('bad key');
    expect(cache.stats().size).toBe(0);
    expect(k.plaintextKey.every((b) => b === 0)).toBe(true);
  });

  it('clear zeroes every key and sweep drops expired ones', () => {
    let now = 0;
    const cache = new DataKeyCache({ maxEntries: 4, maxAgeMs: 10, maxUses: 10 }, () => now);
    const a = key(1);
    const b = key(2);
    cache.put('a', a, () => undefined);
    now = 5;
    cache.put('b', b, () => undefined);
    now = 12;
    cache.sweep();
    expect(cache.stats().size).toBe(1);
    expect(a.plaintextKey.every((x) => x === 0)).toBe(true);
    cache.clear();
    expect(b.plaintextKey.every((x) => x === 0)).toBe(true);
  });

  it('refuses unbounded limits', () => {
    expect(() => new DataKeyCache({ maxEntries: 0, maxAgeMs: 1, maxUses: 1 })).toThrow(EnvelopeError);
    expect(() => new DataKeyCache({ maxEntries: 1, maxAgeMs: Infinity, maxUses: 1 })).toThrow(EnvelopeError);
    expect(() => new DataKeyCache({ maxEntries: 1, maxAgeMs: 1, maxUses: 2 ** 32 + 1 })).toThrow(EnvelopeError);
  });
});
