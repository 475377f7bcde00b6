import { describe, expect, it } from 'vitest';
import { SortedKeys } from '../src/s3/sorted-keys.js';

/** A small deterministic PRNG so a failure reproduces. */
function prng(seed: number): () => number {
  let s = seed;
  return () => {
    s = (s * 1103515245 + 12345) & 0x7fffffff;
    return s / 0x7fffffff;
  };
}

describe('SortedKeys', () => {
  it('stays sorted and unique through random adds and deletes across chunk splits', () => {
    const rand = prng(42);
    const keys = new SortedKeys();
    const reference = new Set<string>();

    for (let i = 0; i < 20_000; i++) {
      const k = `k${Math.floor(rand() * 5000)}`;
      if (rand() < 0.7) {
        expect(keys.add(k)).toBe(!reference.has(k));
        reference.add(k);
      } else {
        expect(keys.delete(k)).toBe(reference.has(k));
        reference.delete(k);
      }
    }

    expect(keys.size).toBe(reference.size);
    expect(keys.toArray()).toEqual([...reference].sort());
  });

  it('iterates from a start key, inclusive or exclusive', () => {
    const keys = SortedKeys.fromSorted(Array.from({ length: 3000 }, (_, i) => `k${String(i).padStart(4, '0')}`));

    const inclusive = [...keys.from('k1500')].slice(0, 2);
    const exclusive = [...keys.from('k1500', true)].slice(0, 2);
    const between = [...keys.from('k1500a')].slice(0, 1);

    expect(inclusive).toEqual(['k1500', 'k1501']);
    expect(exclusive).toEqual(['k1501', 'k1502']);
    expect(between).toEqual(['k1501']);
    expect([...keys.from('z')]).toEqual([]);
    expect(keys.size).toBe(3000);
  });
});
