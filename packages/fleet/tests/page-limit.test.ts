import { describe, expect, it } from 'vitest';
import { FIRST_PAGE, pageLimit } from '../src/enumerator.js';

describe('pageLimit: page sizes grow from 100 to the batch size', () => {
  it('doubles from the first page up to batchSize, then stays there', () => {
    expect(Array.from({ length: 7 }, (_, p) => pageLimit(p, 1000))).toEqual([100, 200, 400, 800, 1000, 1000, 1000]);
    expect(FIRST_PAGE).toBe(100);
  });

  it('never goes over a small batchSize, and stays finite on huge page numbers', () => {
    expect([0, 1, 5].map((p) => pageLimit(p, 10))).toEqual([10, 10, 10]);
    expect(pageLimit(1_000_000, 1000)).toBe(1000);
    expect(pageLimit(3, 250)).toBe(250);
  });
});
