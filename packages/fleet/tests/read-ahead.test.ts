import { describe, expect, it } from 'vitest';
import type { ItemRef, Source } from '@rekey/core';
import { readAheadWindow, windowedReadAhead } from '../src/read-ahead.js';

const rows = (n: number): ItemRef[] => Array.from({ length: n }, (_, i) => ({ kind: 'row', pk: [String(i)] }));

/** A source whose read-ahead notes each call's rows and answers `ahead <pk>` per item. */
function readingSource(calls: string[][], fail = false): Source {
  return {
    kind: 'postgres',
    name: 'rows',
    list: async () => ({ items: [], next: null }),
    reencrypt: async () => ({ outcome: 'reencrypted' }),
    inspect: async () => ({ state: 'current' }),
    readAhead: async (items) => {
      calls.push(items.map((i) => (i.kind === 'row' ? String(i.pk[0]) : '?')));
      if (fail) throw new Error('connection terminated');
      return items.map((i) => (i.kind === 'row' ? `ahead ${String(i.pk[0])}` : undefined));
    },
  };
}

describe('windowed read-ahead', () => {
  it('reads a window when its first item is asked for, and the next one half way through', async () => {
    const calls: string[][] = [];
    const get = windowedReadAhead(readingSource(calls), rows(10), { window: 4, signal: new AbortController().signal })!;

    expect(await get(0)).toBe('ahead 0');
    expect(calls).toEqual([['0', '1', '2', '3']]);
    expect(await get(1)).toBe('ahead 1');
    expect(await get(2)).toBe('ahead 2');
    // Item 2 is half way through window 0: window 1 was read with it.
    expect(calls).toHaveLength(2);
    for (let i = 3; i < 10; i++) expect(await get(i)).toBe(`ahead ${i}`);
    expect(calls).toEqual([
      ['0', '1', '2', '3'],
      ['4', '5', '6', '7'],
      ['8', '9'],
    ]);
  });

  it('skips the items it is told to (finished by an earlier attempt)', async () => {
    const calls: string[][] = [];
    const get = windowedReadAhead(readingSource(calls), rows(4), { window: 4, signal: new AbortController().signal, skip: (i) => i % 2 === 0 })!;

    expect(await get(1)).toBe('ahead 1');
    expect(await get(3)).toBe('ahead 3');
    expect(calls).toEqual([['1', '3']]);
  });

  it('when a read fails, reports it once and gives nothing for its items', async () => {
    const errors: unknown[] = [];
    const get = windowedReadAhead(readingSource([], true), rows(3), { window: 4, signal: new AbortController().signal, onError: (e) => errors.push(e) })!;

    expect([await get(0), await get(1), await get(2)]).toEqual([undefined, undefined, undefined]);
    expect(errors).toHaveLength(1);
  });

  it('is absent for a source that reads no ahead, and sized from the concurrency', () => {
    const { readAhead: _, ...plain } = readingSource([]);
    expect(windowedReadAhead(plain, rows(3), { window: 4, signal: new AbortController().signal })).toBeUndefined();
    expect([readAheadWindow(4), readAheadWindow(100), readAheadWindow(1000)]).toEqual([64, 200, 500]);
  });
});
