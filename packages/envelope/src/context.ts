import { EnvelopeError } from './errors.js';
import type { EncryptionContext } from './types.js';

// A lone surrogate becomes U+FFFD in UTF-8, so two different contexts would look the same to KMS.
const LONE_SURROGATE = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/;

/**
 * Validates a caller's encryption context and returns a null-prototype copy, so later changes to
 * the caller's object cannot change what was bound.
 */
export function checkContext(context: unknown, what = 'context'): Record<string, string> {
  if (context === undefined) return Object.create(null) as Record<string, string>;
  if (typeof context !== 'object' || context === null || Array.isArray(context) || context instanceof Uint8Array) {
    throw new EnvelopeError('invalid-argument', `${what} must be an object of string values`);
  }
  const out = Object.create(null) as Record<string, string>;
  for (const [k, v] of Object.entries(context)) {
    if (k.length === 0) throw new EnvelopeError('invalid-argument', `${what} has an empty key`);
    if (typeof v !== 'string') throw new EnvelopeError('invalid-argument', `${what} value of "${k}" is not a string`);
    if (LONE_SURROGATE.test(k) || LONE_SURROGATE.test(v)) {
      throw new EnvelopeError('invalid-argument', `${what} entry "${k}" contains a lone UTF-16 surrogate`);
    }
    out[k] = v;
  }
  return out;
}

/** The context as KMS takes it: undefined when empty, so no empty map is sent. */
export function kmsContext(context: EncryptionContext): Record<string, string> | undefined {
  const keys = Object.keys(context);
  return keys.length === 0 ? undefined : { ...context };
}

/** A stable string of the context (entries sorted by key), for cache keys and comparisons. */
export function contextId(context: EncryptionContext): string {
  return JSON.stringify(Object.entries(context).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)));
}

/** Whether two contexts hold the same entries. */
export function sameContext(a: EncryptionContext, b: EncryptionContext): boolean {
  return contextId(a) === contextId(b);
}

/** Checks a key id, ARN or alias argument. */
export function checkKeyId(value: unknown, what: string): string {
  if (typeof value !== 'string' || value.length === 0 || value.length > 2048) {
    throw new EnvelopeError('invalid-argument', `${what} must be a KMS key id, key ARN, alias name or alias ARN`);
  }
  return value;
}
