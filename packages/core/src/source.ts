/**
 * The Source contract: every place that holds encrypted items (an S3 prefix with SSE-KMS,
 * an S3 prefix with client-side envelopes, a Postgres column) is a plugin behind it.
 */

/** An opaque, JSON-serialisable position in a source's enumeration. */
export type Cursor = string;

/**
 * A small reference to one item. The data itself never goes through the queue.
 * S3: `{ kind: 's3', bucket, key, versionId?, etag? }`; Postgres: `{ kind: 'row', pk }`.
 */
export type ItemRef =
  | { readonly kind: 's3'; readonly key: string; readonly versionId?: string; readonly etag?: string; readonly size?: number }
  | { readonly kind: 'row'; readonly pk: readonly (string | number)[] };

/** One page of enumeration: up to N item references and the cursor after them (null at the end). */
export interface Page {
  readonly items: readonly ItemRef[];
  readonly next: Cursor | null;
}

/** The keys of a migration, all resolved to full ARNs at creation. */
export interface KeyPlan {
  /** Keys whose items are to be moved. */
  readonly from: readonly string[];
  /** The target key. */
  readonly to: string;
  /**
   * A refresh migration (from == [to]): items are moved to the key's current key material;
   * an item whose material is already current is `already-current`.
   */
  readonly refresh?: boolean;
}

/** What happened to one item. */
export type Outcome = 'reencrypted' | 'already-current' | 'not-in-scope' | 'gone' | 'conflict' | 'failed';

/** All outcomes, in report order. */
export const OUTCOMES: readonly Outcome[] = ['reencrypted', 'already-current', 'not-in-scope', 'gone', 'conflict', 'failed'];

/** The result of re-encrypting one item. */
export interface ItemOutcome {
  readonly outcome: Outcome;
  /** Why: for not-in-scope, conflict and failed (never contains ciphertext or plaintext). */
  readonly reason?: string;
  /** Error code for `failed`, e.g. `InvalidCiphertextException`. */
  readonly code?: string;
  /** The key the item was under when read, when known. */
  readonly fromKey?: string;
  /** Facts a strategy cannot keep and reports (e.g. `acl-reset`, `last-modified-changed`). */
  readonly notes?: readonly string[];
}

/** What verify mode found for one item (no writes). */
export interface Inspection {
  /** `old-key`: still under a `from` key; `current`: under the target; `other`: another key or not encrypted; `gone`. */
  readonly state: 'old-key' | 'current' | 'other' | 'gone';
  readonly keyArn?: string;
  readonly reason?: string;
  /** Optional facts for `rekey plan`: size, storage class, object lock, legacy wrap, ACL grants. */
  readonly facts?: Readonly<Record<string, string | number | boolean>>;
}

/** What a source gets for each item operation. */
export interface ItemContext {
  readonly signal: AbortSignal;
  /** The migration this item belongs to (for logs and idempotency tokens). */
  readonly migrationId: string;
  /** Dry run: decide the outcome but write nothing and call no KMS write operation. */
  readonly dryRun: boolean;
  /**
   * What this source's `readAhead` returned for the item, on the item's first try in a batch.
   * It may be seconds old: the source still writes conditionally, and reads again on a conflict.
   */
  readonly readAhead?: unknown;
}

/** A source of encrypted items. Implementations classify AWS/SQL errors through their package's single classifier. */
export interface Source {
  /** `s3-sse-kms` | `s3-envelope` | `postgres` | … */
  readonly kind: string;
  /** A stable, human name of the source (from the spec). */
  readonly name: string;
  /**
   * One cheap page of item references; no per-item KMS call. `limit` (at most the source's page
   * size, which is the default) caps this page: the enumerator starts each pass with small pages
   * and grows them, so workers start at once on big migrations that use big batches.
   */
  list(cursor: Cursor | null, signal: AbortSignal, limit?: number): Promise<Page>;
  /** Reads the item's current state, acts only if it is under a `from` key, and writes conditionally. */
  reencrypt(item: ItemRef, plan: KeyPlan, ctx: ItemContext): Promise<ItemOutcome>;
  /** Verify mode: reads only. */
  inspect(item: ItemRef, plan: KeyPlan, ctx: ItemContext): Promise<Inspection>;
  /**
   * Optional: reads the state of many items in one round trip (a Postgres `SELECT … IN`), so a
   * batch does not read row by row. Returns one entry per item, in order, each handed back as
   * `ctx.readAhead`; the worker reads a batch ahead a window at a time, and if this throws the
   * items are read one by one as usual.
   */
  readAhead?(items: readonly ItemRef[], signal: AbortSignal): Promise<readonly unknown[]>;
  /** Releases connections. */
  close?(): Promise<void>;
}
