import type { z } from 'zod';
import { ValidationError } from './errors.js';

/** Renders a zod issue path as `sources[0].bucket`; the empty path is `(root)`. */
export function formatPath(path: readonly PropertyKey[], prefix = ''): string {
  let out = prefix;
  for (const seg of path) {
    if (typeof seg === 'number') out += `[${seg}]`;
    else out += out === '' ? String(seg) : `.${String(seg)}`;
  }
  return out === '' ? '(root)' : out;
}

/** Turns zod issues into one `path: message` line each, in the order zod found them. */
export function formatIssues(issues: readonly z.core.$ZodIssue[], prefix = ''): string[] {
  return issues.map((i) => `${formatPath(i.path, prefix)}: ${i.message}`);
}

/**
 * Parses `input` with `schema` and returns the output, or throws one {@link ValidationError}
 * listing every problem as `path: message` (paths prefixed with `prefix`).
 */
export function parseOrThrow<S extends z.ZodType>(schema: S, input: unknown, prefix = ''): z.output<S> {
  const r = schema.safeParse(input);
  if (!r.success) throw new ValidationError(formatIssues(r.error.issues, prefix));
  return r.data;
}
