/**
 * Reads a batch's items ahead, a window at a time, through the source's optional `readAhead`
 * (one Postgres `SELECT … IN (…)` per window instead of one SELECT per row). A window is read when
 * its first item is asked for, and the next one when the lanes are half way through it, so the
 * lanes rarely wait and no row is read long before its item runs.
 *
 * @example
 * const ahead = windowedReadAhead(source, data.items, { window: 64, signal, skip: (i) => carried.has(i) });
 * const ctx = { ...base, readAhead: await ahead?.(index) };
 */
import type { ItemRef, Source } from '@rekey/core';

export interface ReadAheadOptions {
  /** Items per read. */
  readonly window: number;
  readonly signal: AbortSignal;
  /** Items not to read (finished by an earlier attempt). */
  readonly skip?: (index: number) => boolean;
  /** Called when a window's read fails; its items are then read one by one by the source. */
  readonly onError?: (err: unknown) => void;
}

/** The window size for a batch run at `concurrency`: two rounds of its lanes, 64 to 500 items. */
export function readAheadWindow(concurrency: number): number {
  return Math.min(500, Math.max(64, 2 * concurrency));
}

/**
 * Returns `get(index)`, which gives the read-ahead of item `index` (undefined when the window's
 * read failed or the source has nothing for it), or undefined when the source reads no ahead.
 */
export function windowedReadAhead(
  source: Source,
  items: readonly ItemRef[],
  options: ReadAheadOptions,
): ((index: number) => Promise<unknown>) | undefined {
  if (!source.readAhead) return undefined;
  const readAhead = source.readAhead.bind(source);
  const { window, signal, skip = () => false, onError } = options;
  const windows = new Map<number, Promise<Map<number, unknown>>>();

  function load(w: number): Promise<Map<number, unknown>> {
    let loaded = windows.get(w);
    if (loaded) return loaded;
    const indexes: number[] = [];
    for (let i = w * window; i < Math.min((w + 1) * window, items.length); i++) if (!skip(i)) indexes.push(i);
    loaded =
      indexes.length === 0 || signal.aborted
        ? Promise.resolve(new Map())
        : readAhead(
            indexes.map((i) => items[i]!),
            signal,
          ).then(
            (found) => new Map(indexes.map((i, k) => [i, found[k]])),
            (err: unknown) => {
              if (!signal.aborted) onError?.(err);
              return new Map();
            },
          );
    windows.set(w, loaded);
    // Only the window in use and the next are kept.
    windows.delete(w - 2);
    return loaded;
  }

  return async (index) => {
    const w = Math.floor(index / window);
    if (index - w * window >= window / 2 && (w + 1) * window < items.length) void load(w + 1);
    return (await load(w)).get(index);
  };
}
