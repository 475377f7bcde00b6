const MAX_CHUNK = 1024;

/**
 * A sorted set of object keys kept as a list of sorted chunks, so that inserting into a
 * bucket of a million keys moves at most one chunk and listing from any key is a binary search.
 * Keys compare by UTF-16 code units (JavaScript `<`).
 */
export class SortedKeys {
  private chunks: string[][] = [];
  private count = 0;

  get size(): number {
    return this.count;
  }

  /** Builds the set from keys that are already sorted and unique. */
  static fromSorted(keys: readonly string[]): SortedKeys {
    const s = new SortedKeys();
    for (let i = 0; i < keys.length; i += MAX_CHUNK / 2) s.chunks.push(keys.slice(i, i + MAX_CHUNK / 2));
    s.count = keys.length;
    return s;
  }

  /** Adds a key; returns false when it was already there. */
  add(key: string): boolean {
    if (this.chunks.length === 0) {
      this.chunks.push([key]);
      this.count = 1;
      return true;
    }
    const ci = this.chunkFor(key);
    const chunk = this.chunks[ci] as string[];
    const i = lowerBound(chunk, key);
    if (chunk[i] === key) return false;
    chunk.splice(i, 0, key);
    this.count++;
    if (chunk.length > MAX_CHUNK) this.chunks.splice(ci + 1, 0, chunk.splice(MAX_CHUNK / 2));
    return true;
  }

  /** Removes a key; returns false when it was not there. */
  delete(key: string): boolean {
    if (this.chunks.length === 0) return false;
    const ci = this.chunkFor(key);
    const chunk = this.chunks[ci] as string[];
    const i = lowerBound(chunk, key);
    if (chunk[i] !== key) return false;
    chunk.splice(i, 1);
    this.count--;
    if (chunk.length === 0) this.chunks.splice(ci, 1);
    return true;
  }

  /** Keys in order, starting at `start` (or just after it when `exclusive`); do not change the set while iterating. */
  *from(start = '', exclusive = false): Generator<string> {
    if (this.chunks.length === 0) return;
    let ci = this.chunkFor(start);
    let chunk = this.chunks[ci] as string[];
    let i = lowerBound(chunk, start);
    if (exclusive && chunk[i] === start) i++;
    for (;;) {
      while (i < chunk.length) {
        yield chunk[i] as string;
        i++;
      }
      ci++;
      const next = this.chunks[ci];
      if (!next) return;
      chunk = next;
      i = 0;
    }
  }

  /** All keys in order. */
  toArray(): string[] {
    return this.chunks.flat();
  }

  /** Index of the last chunk whose first key is <= key (0 when key is before all). */
  private chunkFor(key: string): number {
    let lo = 0;
    let hi = this.chunks.length - 1;
    while (lo < hi) {
      const mid = (lo + hi + 1) >> 1;
      if ((this.chunks[mid] as string[])[0] as string <= key) lo = mid;
      else hi = mid - 1;
    }
    return lo;
  }
}

/** First index whose key is >= `key`. */
function lowerBound(arr: readonly string[], key: string): number {
  let lo = 0;
  let hi = arr.length;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if ((arr[mid] as string) < key) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}
