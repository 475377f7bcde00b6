import { randomBytes } from 'node:crypto';

/** A name unique to this run: lower-case, safe for S3 buckets, SQS queues and SQL schemas. */
export function uniqueName(base: string): string {
  const clean = base.toLowerCase().replace(/[^a-z0-9-]/g, '-').slice(0, 30);
  return `${clean}-${Date.now().toString(36)}-${randomBytes(3).toString('hex')}`;
}

/** A Redis key prefix unique to this run, ending in `:`. */
export function uniquePrefix(base = 'rekey-test'): string {
  return `${uniqueName(base)}:`;
}
