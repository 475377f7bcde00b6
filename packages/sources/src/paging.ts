import { SourceError } from './errors.js';

/**
 * The size of one list page: the caller's `limit` when given (the enumerator's growing pages),
 * never more than the source's page size.
 *
 * @throws SourceError `invalid-item` when `limit` is not a positive integer.
 */
export function limitOf(limit: number | undefined, pageSize: number): number {
  if (limit === undefined) return pageSize;
  if (!Number.isInteger(limit) || limit < 1) throw new SourceError('invalid-item', `list limit must be a positive integer, got ${String(limit)}`);
  return Math.min(limit, pageSize);
}
