/**
 * The S3 Encryption Client v2 object format ("V2 format" of the S3EC specification), kms+context
 * wrapping and AES/GCM/NoPadding content only. Metadata names are the user-metadata keys
 * (S3 sends them as `x-amz-meta-<name>` headers).
 */
import { EnvelopeError } from './errors.js';

/** Metadata keys of the V2 format. */
export const S3EC_METADATA = {
  keyV2: 'x-amz-key-v2',
  wrapAlg: 'x-amz-wrap-alg',
  matDesc: 'x-amz-matdesc',
  cekAlg: 'x-amz-cek-alg',
  iv: 'x-amz-iv',
  tagLen: 'x-amz-tag-len',
  unencryptedContentLength: 'x-amz-unencrypted-content-length',
} as const;

/** The only wrapping algorithm written and read. */
export const S3EC_WRAP_ALG = 'kms+context';
/** The only content algorithm written and read. */
export const S3EC_CEK_ALG = 'AES/GCM/NoPadding';
/** GCM tag length in bits, as written in `x-amz-tag-len`. */
export const S3EC_TAG_LEN = '128';
/** The context key the S3EC adds to the KMS encryption context, holding the content algorithm. */
export const S3EC_CEK_ALG_CONTEXT_KEY = 'aws:x-amz-cek-alg';
/** Context keys reserved by S3EC implementations: a caller may not set them. */
export const S3EC_RESERVED_CONTEXT_KEYS: readonly string[] = [S3EC_CEK_ALG_CONTEXT_KEY, 'kms_cmk_id'];

const V1_ONLY = ['x-amz-key'];
const V3_ONLY = ['x-amz-3', 'x-amz-c', 'x-amz-d', 'x-amz-i', 'x-amz-w', 'x-amz-m', 'x-amz-t'];
/** Every metadata key any S3EC format uses: callers may not pass these as their own metadata. */
export const S3EC_ALL_KEYS: ReadonlySet<string> = new Set([...Object.values(S3EC_METADATA), ...V1_ONLY, ...V3_ONLY]);

const BASE64 = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/;
const GCM_IV_BYTES = 12;
const MAX_WRAPPED_KEY_BYTES = 6144;

/** The V2 metadata of one object, validated. */
export interface S3ecMetadata {
  readonly wrappedKey: Buffer;
  readonly iv: Buffer;
  /** The full KMS encryption context, reserved key included. */
  readonly matDesc: Record<string, string>;
  readonly unencryptedContentLength: number | undefined;
}

/** JSON with every non-ASCII character escaped, so the value is a valid (ASCII) HTTP header. */
export function asciiJson(value: Record<string, string>): string {
  return JSON.stringify(value).replace(/[\u007f-\uffff]/g, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`);
}

/** Builds the user metadata of a V2 object. */
export function buildS3ecMetadata(args: { wrappedKey: Uint8Array; iv: Uint8Array; matDesc: Record<string, string>; plaintextLength: number }): Record<string, string> {
  return {
    [S3EC_METADATA.keyV2]: Buffer.from(args.wrappedKey).toString('base64'),
    [S3EC_METADATA.wrapAlg]: S3EC_WRAP_ALG,
    [S3EC_METADATA.matDesc]: asciiJson(args.matDesc),
    [S3EC_METADATA.cekAlg]: S3EC_CEK_ALG,
    [S3EC_METADATA.iv]: Buffer.from(args.iv).toString('base64'),
    [S3EC_METADATA.tagLen]: S3EC_TAG_LEN,
    [S3EC_METADATA.unencryptedContentLength]: String(args.plaintextLength),
  };
}

/** The KMS context (and matdesc) for a caller's context: the context plus the content algorithm. */
export function s3ecMatDesc(context: Readonly<Record<string, string>>): Record<string, string> {
  for (const k of S3EC_RESERVED_CONTEXT_KEYS) {
    if (Object.prototype.hasOwnProperty.call(context, k)) {
      throw new EnvelopeError('invalid-argument', `context key "${k}" is reserved for the S3 Encryption Client`);
    }
  }
  return { ...context, [S3EC_CEK_ALG_CONTEXT_KEY]: S3EC_CEK_ALG };
}

/** The caller-visible context of a stored matdesc: the matdesc without the reserved keys. */
export function contextOfMatDesc(matDesc: Readonly<Record<string, string>>): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(matDesc)) if (!S3EC_RESERVED_CONTEXT_KEYS.includes(k)) out[k] = v;
  return out;
}

/**
 * Validates the metadata of an object read with GetObject (keys lower-case, without
 * `x-amz-meta-`), following the S3EC "Determining S3EC Object Status" rules.
 */
export function parseS3ecMetadata(meta: Readonly<Record<string, string>> | undefined): S3ecMetadata {
  const m = meta ?? {};
  const get = (k: string) => m[k];
  const hasV2 = get(S3EC_METADATA.keyV2) !== undefined;
  const other = [...V1_ONLY, ...V3_ONLY].filter((k) => get(k) !== undefined);
  if (hasV2 && other.length > 0) {
    throw new EnvelopeError('malformed', `object metadata mixes S3EC format versions (${S3EC_METADATA.keyV2} with ${other.join(', ')})`);
  }
  if (!hasV2) {
    if (get('x-amz-key') !== undefined) throw new EnvelopeError('unknown-version', 'object is in the S3EC V1 format (x-amz-key), which is not read');
    if (other.length > 0) throw new EnvelopeError('unknown-version', 'object is in the S3EC V3 format (x-amz-3), which is not read');
    throw new EnvelopeError('malformed', 'object has no S3 Encryption Client V2 metadata (instruction files are not read)');
  }
  const required = (k: string): string => {
    const v = get(k);
    if (v === undefined) throw new EnvelopeError('malformed', `object metadata lacks ${k}`);
    return v;
  };
  const wrapAlg = required(S3EC_METADATA.wrapAlg);
  if (wrapAlg !== S3EC_WRAP_ALG) throw new EnvelopeError('unsupported-algorithm', `object wrapping algorithm "${clip(wrapAlg)}" is not supported (only ${S3EC_WRAP_ALG})`);
  const cekAlg = required(S3EC_METADATA.cekAlg);
  if (cekAlg !== S3EC_CEK_ALG) throw new EnvelopeError('unsupported-algorithm', `object content algorithm "${clip(cekAlg)}" is not supported (only ${S3EC_CEK_ALG})`);
  const tagLen = required(S3EC_METADATA.tagLen);
  if (tagLen !== S3EC_TAG_LEN) throw new EnvelopeError('unsupported-algorithm', `object tag length "${clip(tagLen)}" is not supported (only ${S3EC_TAG_LEN})`);

  const wrappedKey = base64(required(S3EC_METADATA.keyV2), S3EC_METADATA.keyV2);
  if (wrappedKey.length < 1 || wrappedKey.length > MAX_WRAPPED_KEY_BYTES) {
    throw new EnvelopeError('malformed', `${S3EC_METADATA.keyV2} is ${wrappedKey.length} bytes; expected 1..${MAX_WRAPPED_KEY_BYTES}`);
  }
  const iv = base64(required(S3EC_METADATA.iv), S3EC_METADATA.iv);
  if (iv.length !== GCM_IV_BYTES) throw new EnvelopeError('malformed', `${S3EC_METADATA.iv} is ${iv.length} bytes; expected ${GCM_IV_BYTES}`);

  const matDesc = parseMatDesc(required(S3EC_METADATA.matDesc));
  if (matDesc[S3EC_CEK_ALG_CONTEXT_KEY] !== cekAlg) {
    throw new EnvelopeError('malformed', `${S3EC_METADATA.matDesc} must hold "${S3EC_CEK_ALG_CONTEXT_KEY}": "${cekAlg}" for ${S3EC_WRAP_ALG}`);
  }
  const lengthText = get(S3EC_METADATA.unencryptedContentLength);
  let unencryptedContentLength: number | undefined;
  if (lengthText !== undefined) {
    if (!/^\d{1,15}$/.test(lengthText)) throw new EnvelopeError('malformed', `${S3EC_METADATA.unencryptedContentLength} is not a byte count`);
    unencryptedContentLength = Number(lengthText);
  }
  return { wrappedKey, iv, matDesc, unencryptedContentLength };
}

function parseMatDesc(raw: string): Record<string, string> {
  let value: unknown;
  try {
    value = JSON.parse(decodeMimeWords(raw));
  } catch {
    throw new EnvelopeError('malformed', `${S3EC_METADATA.matDesc} is not valid JSON`);
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    throw new EnvelopeError('malformed', `${S3EC_METADATA.matDesc} is not a JSON object`);
  }
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(value)) {
    if (typeof v !== 'string') throw new EnvelopeError('malformed', `${S3EC_METADATA.matDesc} value of "${clip(k)}" is not a string`);
    out[k] = v;
  }
  return out;
}

/**
 * S3 returns a metadata value that was stored with non-ASCII characters as RFC 2047 encoded
 * words (`=?UTF-8?B?...?=`); the S3EC specification calls this the double-encoding scheme.
 * Plain values pass through unchanged.
 */
export function decodeMimeWords(value: string): string {
  const word = /=\?([^?\s]+)\?([BbQq])\?([^?\s]*)\?=/g;
  if (!/^\s*(?:=\?[^?\s]+\?[BbQq]\?[^?\s]*\?=\s*)+$/.test(value)) return value;
  // Bytes are joined before UTF-8 decoding: one character may be split across two words.
  const parts: Buffer[] = [];
  for (const m of value.matchAll(word)) {
    const charset = (m[1] ?? '').toLowerCase();
    if (charset !== 'utf-8' && charset !== 'us-ascii') throw new EnvelopeError('malformed', `metadata uses charset ${clip(charset)}, not UTF-8`);
    const text = m[3] ?? '';
    const bytes =
      (m[2] ?? '').toUpperCase() === 'B'
        ? Buffer.from(text, 'base64')
        : Buffer.from(text.replace(/_/g, ' ').replace(/=([0-9A-Fa-f]{2})/g, (_s, h: string) => String.fromCharCode(parseInt(h, 16))), 'latin1');
    parts.push(bytes);
  }
  return new TextDecoder('utf-8').decode(Buffer.concat(parts));
}

function base64(text: string, what: string): Buffer {
  if (!BASE64.test(text)) throw new EnvelopeError('malformed', `${what} is not valid base64`);
  return Buffer.from(text, 'base64');
}

/** Keeps untrusted metadata out of long error lines. */
function clip(s: string): string {
  return s.length > 40 ? `${s.slice(0, 40)}…` : s;
}
