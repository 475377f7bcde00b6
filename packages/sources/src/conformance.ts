/**
 * The shared conformance suite every Source passes, the way one adapter suite runs against every
 * Redis client in BullMQ. A test file supplies a harness (a source over a fresh bucket or schema,
 * and ways to seed, read back, mutate and remove items); the suite checks the contract's
 * behaviour: enumeration, re-encryption with identical content, idempotence, scope, gone items,
 * no lost concurrent write (also after a read-ahead), verify mode and dry run.
 *
 * @example
 * describeSourceConformance('s3-sse-kms copy', async ({ pageSize }) => makeS3Harness({ strategy: 'copy', pageSize }));
 */
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { ItemContext, ItemRef, KeyPlan, Source } from '@rekey/core';

/** What a test file provides for one source under test. */
export interface SourceHarness {
  /** The source under test, built with the harness options' page size. */
  readonly source: Source;
  /** `from` holds the key `seed` writes under; `to` is the target. */
  readonly plan: KeyPlan;
  /** A key that is neither a `from` key nor the target. */
  readonly unrelatedKey: string;
  /** Writes `n` items under `plan.from[0]` and returns their references as `list` would. */
  seed(n: number): Promise<ItemRef[]>;
  /** Writes `n` items under `keyArn`. */
  seedUnderKey(keyArn: string, n: number): Promise<ItemRef[]>;
  /** Reads an item back and returns its plaintext content (the test side may decrypt). */
  readPlain(item: ItemRef): Promise<Buffer>;
  /** The ARN of the key the item is under now. */
  currentKeyOf(item: ItemRef): Promise<string>;
  /** Simulates an app writing new content under the OLD key; returns the new plaintext. */
  mutate(item: ItemRef): Promise<Buffer>;
  /** Deletes the item. */
  remove(item: ItemRef): Promise<void>;
  /**
   * Runs `fn` once, right after the source's next read of `item` and before its conditional
   * write (an S3 middleware after HeadObject, a wrapped pool after the row SELECT).
   */
  afterNextRead(item: ItemRef, fn: () => Promise<void>): void;
  /** KMS operation names the source's identity has called so far, when the endpoint shows them. */
  sourceKmsCalls?(): readonly string[];
  /** Removes everything the harness created. */
  cleanup(): Promise<void>;
}

/** Options the suite passes to the harness factory. */
export interface HarnessOptions {
  /** The page size the source must be built with. */
  readonly pageSize: number;
}

/** Builds a fresh harness (own bucket or schema) for one test. */
export type HarnessFactory = (options: HarnessOptions) => Promise<SourceHarness>;

const PAGE_SIZE = 7;

function itemId(item: ItemRef): string {
  return item.kind === 's3' ? `s3:${item.key}#${item.versionId ?? ''}` : `row:${JSON.stringify(item.pk.map(String))}`;
}

function context(dryRun = false): ItemContext {
  return { signal: new AbortController().signal, migrationId: 'conformance', dryRun };
}

/**
 * Declares the conformance suite for one source as a vitest `describe` block.
 */
export function describeSourceConformance(name: string, factory: HarnessFactory): void {
  describe(`source conformance: ${name}`, () => {
    let h: SourceHarness;

    beforeEach(async () => {
      h = await factory({ pageSize: PAGE_SIZE });
    });

    afterEach(async () => {
      await h.cleanup();
    });

    it('list pages enumerate every item exactly once', async () => {
      const seeded = await h.seed(20);
      const seen: string[] = [];
      let cursor: string | null = null;
      let pages = 0;
      do {
        const page = await h.source.list(cursor, new AbortController().signal);
        expect(page.items.length).toBeLessThanOrEqual(PAGE_SIZE);
        seen.push(...page.items.map(itemId));
        cursor = page.next;
        pages++;
        expect(pages).toBeLessThan(20);
      } while (cursor !== null);

      expect(pages).toBeGreaterThanOrEqual(3);
      expect(new Set(seen).size).toBe(seen.length);
      expect([...seen].sort()).toEqual(seeded.map(itemId).sort());
    });

    it('list honours a smaller limit per page, and pages of growing size still enumerate every item once', async () => {
      const seeded = await h.seed(20);
      const seen: string[] = [];
      const sizes: number[] = [];
      let cursor: string | null = null;
      // Limits as the enumerator ramps them (1, 2, 4, …), capped by the page size.
      for (let limit = 1; ; limit *= 2) {
        const page = await h.source.list(cursor, new AbortController().signal, limit);
        sizes.push(page.items.length);
        expect(page.items.length).toBeLessThanOrEqual(Math.min(limit, PAGE_SIZE));
        seen.push(...page.items.map(itemId));
        cursor = page.next;
        if (cursor === null) break;
        expect(sizes.length).toBeLessThan(20);
      }

      expect(sizes.slice(0, 3)).toEqual([1, 2, 4]);
      expect(new Set(seen).size).toBe(seen.length);
      expect([...seen].sort()).toEqual(seeded.map(itemId).sort());
    });

    it('reencrypt moves old-key items to the target with byte-identical content', async () => {
      const items = await h.seed(3);
      const before = await Promise.all(items.map((i) => h.readPlain(i)));

      const outcomes = await Promise.all(items.map((i) => h.source.reencrypt(i, h.plan, context())));

      for (const o of outcomes) {
        expect(o.outcome).toBe('reencrypted');
        expect(o.fromKey).toBe(h.plan.from[0]);
      }
      for (const [i, item] of items.entries()) {
        expect(await h.currentKeyOf(item)).toBe(h.plan.to);
        expect((await h.readPlain(item)).equals(before[i] as Buffer)).toBe(true);
      }
    });

    it('running reencrypt twice reports already-current the second time', async () => {
      const [item] = await h.seed(1);
      if (item === undefined) throw new Error('seed returned no item');

      const first = await h.source.reencrypt(item, h.plan, context());
      const second = await h.source.reencrypt(item, h.plan, context());

      expect(first.outcome).toBe('reencrypted');
      expect(second.outcome).toBe('already-current');
      expect(await h.currentKeyOf(item)).toBe(h.plan.to);
    });

    it('an item under an unrelated key is not-in-scope and left alone', async () => {
      const [item] = await h.seedUnderKey(h.unrelatedKey, 1);
      if (item === undefined) throw new Error('seed returned no item');
      const before = await h.readPlain(item);

      const out = await h.source.reencrypt(item, h.plan, context());

      expect(out.outcome).toBe('not-in-scope');
      expect(await h.currentKeyOf(item)).toBe(h.unrelatedKey);
      expect((await h.readPlain(item)).equals(before)).toBe(true);
    });

    it('a removed item is gone', async () => {
      const [item] = await h.seed(1);
      if (item === undefined) throw new Error('seed returned no item');
      await h.remove(item);

      const out = await h.source.reencrypt(item, h.plan, context());
      const seen = await h.source.inspect(item, h.plan, context());

      expect(out.outcome).toBe('gone');
      expect(seen.state).toBe('gone');
    });

    it('a write between the read and the conditional write is never lost', async () => {
      const [item] = await h.seed(1);
      if (item === undefined) throw new Error('seed returned no item');
      let written: Buffer | undefined;
      h.afterNextRead(item, async () => {
        written = await h.mutate(item);
      });

      const out = await h.source.reencrypt(item, h.plan, context());

      expect(written).toBeDefined();
      expect(['reencrypted', 'conflict']).toContain(out.outcome);
      expect((await h.readPlain(item)).equals(written as Buffer)).toBe(true);
      // Whatever the first pass decided, a later pass moves the new content without losing it.
      const again = await h.source.reencrypt(item, h.plan, context());
      expect(['reencrypted', 'already-current']).toContain(again.outcome);
      expect(await h.currentKeyOf(item)).toBe(h.plan.to);
      expect((await h.readPlain(item)).equals(written as Buffer)).toBe(true);
    });

    it('a batch read ahead (when the source reads ahead) moves like items read one by one, and a write after the read-ahead is kept', async (t) => {
      const readAhead = h.source.readAhead?.bind(h.source);
      if (!readAhead) return t.skip();
      const items = await h.seed(4);
      const before = await Promise.all(items.map((i) => h.readPlain(i)));
      const ahead = await readAhead(items, new AbortController().signal);
      const written = await h.mutate(items[0] as ItemRef);

      const outcomes = await Promise.all(items.map((i, k) => h.source.reencrypt(i, h.plan, { ...context(), readAhead: ahead[k] })));

      expect(ahead).toHaveLength(items.length);
      expect(outcomes.map((o) => o.outcome)).toEqual(items.map(() => 'reencrypted'));
      for (const [k, item] of items.entries()) {
        expect(await h.currentKeyOf(item)).toBe(h.plan.to);
        expect((await h.readPlain(item)).equals(k === 0 ? written : (before[k] as Buffer))).toBe(true);
      }
    });

    it('inspect reports old-key, then current after reencrypt, and writes nothing', async () => {
      const [item] = await h.seed(1);
      if (item === undefined) throw new Error('seed returned no item');

      const before = await h.source.inspect(item, h.plan, context());
      expect(await h.currentKeyOf(item)).toBe(h.plan.from[0]);
      await h.source.reencrypt(item, h.plan, context());
      const after = await h.source.inspect(item, h.plan, context());

      expect(before.state).toBe('old-key');
      expect(before.keyArn).toBe(h.plan.from[0]);
      expect(after.state).toBe('current');
      expect(after.keyArn).toBe(h.plan.to);
    });

    it('dry run decides but writes nothing and makes no ReEncrypt', async () => {
      const [item] = await h.seed(1);
      if (item === undefined) throw new Error('seed returned no item');
      const content = await h.readPlain(item);
      const callsBefore = h.sourceKmsCalls?.().length;

      const out = await h.source.reencrypt(item, h.plan, context(true));

      expect(out.outcome).toBe('reencrypted');
      expect(out.reason).toMatch(/dry run/);
      if (callsBefore !== undefined) expect(h.sourceKmsCalls?.().slice(callsBefore)).toEqual([]);
      expect(await h.currentKeyOf(item)).toBe(h.plan.from[0]);
      expect((await h.readPlain(item)).equals(content)).toBe(true);
    });
  });
}
