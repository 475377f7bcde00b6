/**
 * Runs `fn` over `items` with at most `concurrency` in flight. Stops starting new items once
 * `shouldStop()` is true, or at index `end()` (read before each start, so it can shrink while
 * items run: a batch that gives its tail away). Items already started always finish. Returns
 * results by index (undefined for items never started).
 */
export async function mapBounded<T, R>(
  items: readonly T[],
  concurrency: number,
  fn: (item: T, index: number) => Promise<R>,
  shouldStop: () => boolean = () => false,
  end: () => number = () => items.length,
): Promise<(R | undefined)[]> {
  const results: (R | undefined)[] = new Array(items.length).fill(undefined);
  let next = 0;
  async function lane(): Promise<void> {
    while (next < Math.min(end(), items.length) && !shouldStop()) {
      const i = next++;
      results[i] = await fn(items[i] as T, i);
    }
  }
  const lanes = Array.from({ length: Math.max(1, Math.min(concurrency, items.length)) }, () => lane());
  await Promise.all(lanes);
  return results;
}
