import { AwsError } from '../errors.js';

/** A JSON 1.1 request body, already parsed to an object by the server. */
export type Input = Record<string, unknown>;

/** AWS names a field in lowerCamel case in its validation messages (`keyId`, `plaintext`). */
function wireName(field: string): string {
  return field.charAt(0).toLowerCase() + field.slice(1);
}

/** A ValidationException worded like AWS's constraint messages. */
export function validation(field: string, value: unknown, constraint: string): AwsError {
  const shown = value === undefined || value === null ? 'null' : typeof value === 'string' ? `'${value}'` : String(value);
  return new AwsError(
    'ValidationException',
    `1 validation error detected: Value ${shown} at '${wireName(field)}' failed to satisfy constraint: ${constraint}`,
  );
}

function typeError(field: string, expected: string): AwsError {
  return new AwsError('SerializationException', `${field} must be ${expected}`);
}

/** An optional string field with AWS's length limits. */
export function optString(input: Input, field: string, min = 1, max = 2048): string | undefined {
  const v = input[field];
  if (v === undefined || v === null) return undefined;
  if (typeof v !== 'string') throw typeError(field, 'a string');
  if (v.length < min) throw validation(field, v, `Member must have length greater than or equal to ${min}`);
  if (v.length > max) throw validation(field, `${v.slice(0, 64)}…`, `Member must have length less than or equal to ${max}`);
  return v;
}

/** A required string field. */
export function reqString(input: Input, field: string, min = 1, max = 2048): string {
  const v = optString(input, field, min, max);
  if (v === undefined) throw validation(field, undefined, 'Member must not be null');
  return v;
}

/** An optional string that must be one of `values`. */
export function optEnum<T extends string>(input: Input, field: string, values: readonly T[]): T | undefined {
  const v = optString(input, field, 1, 256);
  if (v === undefined) return undefined;
  if (!(values as readonly string[]).includes(v)) {
    throw validation(field, v, `Member must satisfy enum value set: [${values.join(', ')}]`);
  }
  return v as T;
}

/** An optional integer within [min, max]. */
export function optInt(input: Input, field: string, min: number, max: number): number | undefined {
  const v = input[field];
  if (v === undefined || v === null) return undefined;
  if (typeof v !== 'number' || !Number.isInteger(v)) throw typeError(field, 'an integer');
  if (v < min) throw validation(field, v, `Member must have value greater than or equal to ${min}`);
  if (v > max) throw validation(field, v, `Member must have value less than or equal to ${max}`);
  return v;
}

/** An optional boolean. */
export function optBool(input: Input, field: string): boolean | undefined {
  const v = input[field];
  if (v === undefined || v === null) return undefined;
  if (typeof v !== 'boolean') throw typeError(field, 'a boolean');
  return v;
}

/** An optional timestamp (JSON 1.1 sends epoch seconds). */
export function optDate(input: Input, field: string): number | undefined {
  const v = input[field];
  if (v === undefined || v === null) return undefined;
  if (typeof v === 'number' && Number.isFinite(v)) return Math.round(v * 1000);
  if (typeof v === 'string' && !Number.isNaN(Date.parse(v))) return Date.parse(v);
  throw typeError(field, 'a timestamp');
}

const BASE64_RE = /^[A-Za-z0-9+/]*={0,2}$/;

/** An optional base64 blob field with AWS's size limits in bytes. */
export function optBlob(input: Input, field: string, min: number, max: number): Buffer | undefined {
  const v = input[field];
  if (v === undefined || v === null) return undefined;
  if (typeof v !== 'string' || v.length % 4 !== 0 || !BASE64_RE.test(v)) {
    throw typeError(field, 'a base64-encoded blob');
  }
  const buf = Buffer.from(v, 'base64');
  if (buf.length < min) throw validation(field, 'java.nio.HeapByteBuffer', `Member must have length greater than or equal to ${min}`);
  if (buf.length > max) throw validation(field, 'java.nio.HeapByteBuffer', `Member must have length less than or equal to ${max}`);
  return buf;
}

/** A required base64 blob field. */
export function reqBlob(input: Input, field: string, min: number, max: number): Buffer {
  const v = optBlob(input, field, min, max);
  if (v === undefined) throw validation(field, undefined, 'Member must not be null');
  return v;
}

/** An encryption context: a flat map of strings to strings. */
export function optContext(input: Input, field: string): Record<string, string> | undefined {
  const v = input[field];
  if (v === undefined || v === null) return undefined;
  if (typeof v !== 'object' || Array.isArray(v)) throw typeError(field, 'a map of strings');
  const out: Record<string, string> = {};
  for (const [k, val] of Object.entries(v as Record<string, unknown>)) {
    if (typeof val !== 'string') throw typeError(`${field}.${k}`, 'a string');
    out[k] = val;
  }
  return out;
}

/** An optional list of strings (TagKeys, GrantTokens). */
export function optStringList(input: Input, field: string, maxItems: number): string[] | undefined {
  const v = input[field];
  if (v === undefined || v === null) return undefined;
  if (!Array.isArray(v) || v.some((x) => typeof x !== 'string')) throw typeError(field, 'a list of strings');
  if (v.length > maxItems) throw validation(field, `[${v.length} items]`, `Member must have length less than or equal to ${maxItems}`);
  return v as string[];
}

/** A KMS tag list `[{TagKey, TagValue}]`, validated as AWS does (TagException for bad tags). */
export function optTags(input: Input, field: string): Array<[string, string]> | undefined {
  const v = input[field];
  if (v === undefined || v === null) return undefined;
  if (!Array.isArray(v)) throw typeError(field, 'a list of tags');
  const out: Array<[string, string]> = [];
  const seen = new Set<string>();
  for (const t of v) {
    if (!t || typeof t !== 'object') throw typeError(field, 'a list of {TagKey, TagValue}');
    const tag = t as Record<string, unknown>;
    const key = reqString(tag, 'TagKey', 1, 128);
    const value = reqString(tag, 'TagValue', 0, 256);
    if (key.startsWith('aws:')) throw new AwsError('TagException', `Tag key ${key} uses the reserved prefix aws:`);
    if (seen.has(key)) throw new AwsError('TagException', `Duplicate tag key ${key}`);
    seen.add(key);
    out.push([key, value]);
  }
  return out;
}

/** Rejects an input field aws-local does not implement, instead of silently ignoring it. */
export function unsupportedField(input: Input, field: string, what: string): void {
  if (input[field] !== undefined && input[field] !== null) {
    throw new AwsError('UnsupportedOperationException', `aws-local does not support ${field} (${what})`);
  }
}
