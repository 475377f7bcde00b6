/**
 * The Rekey binary envelope: a compact, versioned container for one AES-256-GCM ciphertext and
 * the KMS-wrapped data key that protects it, for database fields and messages.
 *
 * Layout of version 1 (all integers big-endian, offsets in bytes):
 *
 * ```
 * offset        size  field
 * 0             3     magic: 0x52 0x4B 0x45 ("RKE")
 * 3             1     version: 0x01
 * 4             2     A = length of the key ARN (1..2048)
 * 6             A     key ARN, UTF-8 (`arn:<partition>:kms:<region>:<account>:key/<id>`)
 * 6+A           2     W = length of the wrapped data key (1..6144)
 * 8+A           W     wrapped data key: the KMS CiphertextBlob of the 256-bit data key
 * 8+A+W         12    IV (96-bit GCM nonce)
 * 20+A+W        C     ciphertext (C >= 0: everything up to the tag)
 * 20+A+W+C      16    GCM authentication tag (128 bits)
 * ```
 *
 * The smallest valid envelope is 22 + A + W bytes (empty plaintext). The ciphertext length is
 * implicit, so an envelope must be stored whole; GCM authentication catches any cut or splice.
 *
 * The GCM AAD is {@link envelopeAad}: magic, version, IV and the caller's canonical encryption
 * context. It deliberately excludes the key ARN and the wrapped key, so a rewrap (KMS ReEncrypt of
 * the wrapped key, then a new ARN) keeps the ciphertext and tag valid without ever seeing the
 * plaintext data key.
 *
 * This module is pure (no I/O) and never throws anything but {@link EnvelopeFormatError}.
 */

/** Codes of {@link EnvelopeFormatError}. */
export const ENVELOPE_FORMAT_ERROR_CODES = ['truncated', 'malformed', 'unknown-version', 'bad-magic'] as const;

/** Why an envelope could not be decoded or encoded. */
export type EnvelopeFormatErrorCode = (typeof ENVELOPE_FORMAT_ERROR_CODES)[number];

/** The only error the envelope codec throws; `code` says why, the message names the field. */
export class EnvelopeFormatError extends Error {
  override readonly name = 'EnvelopeFormatError';
  readonly code: EnvelopeFormatErrorCode;

  constructor(code: EnvelopeFormatErrorCode, message: string) {
    super(message);
    this.code = code;
  }
}

/** The first three bytes of every envelope: "RKE". */
export const ENVELOPE_MAGIC: Readonly<Uint8Array> = Uint8Array.of(0x52, 0x4b, 0x45);
/** The only version this codec writes and reads. */
export const ENVELOPE_VERSION = 1;
/** GCM IV length in bytes (96 bits, the length GCM is defined for without GHASH of the IV). */
export const ENVELOPE_IV_BYTES = 12;
/** GCM tag length in bytes (128 bits). */
export const ENVELOPE_TAG_BYTES = 16;
/** Largest key ARN accepted; KMS caps a KeyId at 2048 characters. */
export const ENVELOPE_MAX_ARN_BYTES = 2048;
/** Largest wrapped key accepted; KMS caps a CiphertextBlob at 6144 bytes. */
export const ENVELOPE_MAX_WRAPPED_KEY_BYTES = 6144;

/** The decoded fields of an envelope. Every buffer is a copy, not a view of the input. */
export interface EnvelopeParts {
  readonly version: number;
  /** Full ARN of the KMS key that wrapped the data key. */
  readonly keyArn: string;
  /** The KMS CiphertextBlob of the data key. */
  readonly wrappedKey: Buffer;
  readonly iv: Buffer;
  readonly ciphertext: Buffer;
  readonly tag: Buffer;
}

/** What {@link encodeEnvelope} takes; `version` defaults to {@link ENVELOPE_VERSION}. */
export type EnvelopeInput = Omit<EnvelopeParts, 'version' | 'wrappedKey' | 'iv' | 'ciphertext' | 'tag'> & {
  readonly version?: number;
  readonly wrappedKey: Uint8Array;
  readonly iv: Uint8Array;
  readonly ciphertext: Uint8Array;
  readonly tag: Uint8Array;
};

const FIXED_BYTES = ENVELOPE_MAGIC.length + 1 + 2 + 2 + ENVELOPE_IV_BYTES + ENVELOPE_TAG_BYTES;
const KMS_KEY_ARN = /^arn:aws[a-z-]*:kms:[a-z0-9-]{1,64}:\d{12}:key\/[A-Za-z0-9-]{1,128}$/;
const UTF8 = new TextDecoder('utf-8', { fatal: true });
// A lone surrogate would be encoded as U+FFFD, so two different contexts could share one AAD.
const LONE_SURROGATE = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/;

/** True when `buf` starts with the envelope magic: a cheap test to tell envelopes from raw KMS blobs. */
export function looksLikeEnvelope(buf: Uint8Array): boolean {
  if (!(buf instanceof Uint8Array) || buf.length < ENVELOPE_MAGIC.length) return false;
  return buf[0] === ENVELOPE_MAGIC[0] && buf[1] === ENVELOPE_MAGIC[1] && buf[2] === ENVELOPE_MAGIC[2];
}

/** Whether a string is a full KMS key ARN (not a key id or alias). */
export function isKmsKeyArn(value: string): boolean {
  return KMS_KEY_ARN.test(value);
}

/**
 * Decodes an envelope, checking every length against the buffer and its bound.
 * @throws EnvelopeFormatError (`bad-magic`, `unknown-version`, `truncated` or `malformed`), never anything else.
 */
export function decodeEnvelope(buf: Uint8Array): EnvelopeParts {
  if (!(buf instanceof Uint8Array)) throw new EnvelopeFormatError('malformed', 'envelope must be a Buffer or Uint8Array');
  const magicLen = ENVELOPE_MAGIC.length;
  for (let i = 0; i < magicLen; i++) {
    if (i >= buf.length) throw new EnvelopeFormatError('truncated', `envelope is ${buf.length} bytes, shorter than its magic`);
    if (buf[i] !== ENVELOPE_MAGIC[i]) throw new EnvelopeFormatError('bad-magic', 'envelope does not start with the Rekey magic "RKE"');
  }
  const version = buf[magicLen];
  if (version === undefined) throw new EnvelopeFormatError('truncated', 'envelope ends before its version byte');
  if (version !== ENVELOPE_VERSION) {
    throw new EnvelopeFormatError('unknown-version', `envelope version ${version} is not supported (this codec reads ${ENVELOPE_VERSION})`);
  }
  const view = Buffer.from(buf.buffer, buf.byteOffset, buf.byteLength);
  let at = magicLen + 1;

  const arnLen = readU16(view, at, 'key ARN length');
  at += 2;
  if (arnLen < 1 || arnLen > ENVELOPE_MAX_ARN_BYTES) {
    throw new EnvelopeFormatError('malformed', `envelope key ARN length ${arnLen} is outside 1..${ENVELOPE_MAX_ARN_BYTES}`);
  }
  need(view, at, arnLen, 'key ARN');
  let keyArn: string;
  try {
    keyArn = UTF8.decode(view.subarray(at, at + arnLen));
  } catch {
    throw new EnvelopeFormatError('malformed', 'envelope key ARN is not valid UTF-8');
  }
  if (!KMS_KEY_ARN.test(keyArn)) throw new EnvelopeFormatError('malformed', 'envelope key ARN is not a KMS key ARN');
  at += arnLen;

  const wrappedLen = readU16(view, at, 'wrapped key length');
  at += 2;
  if (wrappedLen < 1 || wrappedLen > ENVELOPE_MAX_WRAPPED_KEY_BYTES) {
    throw new EnvelopeFormatError('malformed', `envelope wrapped key length ${wrappedLen} is outside 1..${ENVELOPE_MAX_WRAPPED_KEY_BYTES}`);
  }
  need(view, at, wrappedLen, 'wrapped key');
  const wrappedKey = Buffer.from(view.subarray(at, at + wrappedLen));
  at += wrappedLen;

  need(view, at, ENVELOPE_IV_BYTES + ENVELOPE_TAG_BYTES, 'IV and tag');
  const iv = Buffer.from(view.subarray(at, at + ENVELOPE_IV_BYTES));
  at += ENVELOPE_IV_BYTES;
  const tagAt = view.length - ENVELOPE_TAG_BYTES;
  const ciphertext = Buffer.from(view.subarray(at, tagAt));
  const tag = Buffer.from(view.subarray(tagAt));
  return { version, keyArn, wrappedKey, iv, ciphertext, tag };
}

/**
 * Encodes envelope fields into the version-1 layout.
 * @throws EnvelopeFormatError (`malformed` or `unknown-version`) when a field is out of bounds.
 */
export function encodeEnvelope(parts: EnvelopeInput): Buffer {
  const version = parts.version ?? ENVELOPE_VERSION;
  if (version !== ENVELOPE_VERSION) {
    throw new EnvelopeFormatError('unknown-version', `cannot encode envelope version ${String(version)} (this codec writes ${ENVELOPE_VERSION})`);
  }
  if (typeof parts.keyArn !== 'string' || !KMS_KEY_ARN.test(parts.keyArn)) {
    throw new EnvelopeFormatError('malformed', 'cannot encode envelope: keyArn must be a full KMS key ARN');
  }
  const arn = Buffer.from(parts.keyArn, 'utf8');
  if (arn.length > ENVELOPE_MAX_ARN_BYTES) {
    throw new EnvelopeFormatError('malformed', `cannot encode envelope: keyArn is longer than ${ENVELOPE_MAX_ARN_BYTES} bytes`);
  }
  checkBytes(parts.wrappedKey, 'wrappedKey', 1, ENVELOPE_MAX_WRAPPED_KEY_BYTES);
  checkBytes(parts.iv, 'iv', ENVELOPE_IV_BYTES, ENVELOPE_IV_BYTES);
  checkBytes(parts.ciphertext, 'ciphertext', 0, Number.MAX_SAFE_INTEGER);
  checkBytes(parts.tag, 'tag', ENVELOPE_TAG_BYTES, ENVELOPE_TAG_BYTES);

  const out = Buffer.allocUnsafe(FIXED_BYTES + arn.length + parts.wrappedKey.length + parts.ciphertext.length);
  let at = 0;
  out.set(ENVELOPE_MAGIC, at);
  at += ENVELOPE_MAGIC.length;
  out[at++] = version;
  at = out.writeUInt16BE(arn.length, at);
  out.set(arn, at);
  at += arn.length;
  at = out.writeUInt16BE(parts.wrappedKey.length, at);
  out.set(parts.wrappedKey, at);
  at += parts.wrappedKey.length;
  out.set(parts.iv, at);
  at += ENVELOPE_IV_BYTES;
  out.set(parts.ciphertext, at);
  at += parts.ciphertext.length;
  out.set(parts.tag, at);
  return out;
}

/**
 * The GCM additional authenticated data of an envelope: magic, version, IV and the canonical
 * encryption context. Canonical means: entries sorted by the UTF-8 bytes of their keys, each
 * written as `u16 keyLength, key, u16 valueLength, value` after a `u16 count`, so the AAD is the
 * same whatever order the caller built the object in, and unambiguous in any language.
 * @throws EnvelopeFormatError (`malformed`) when the context is not a flat map of strings or too large.
 */
export function envelopeAad(version: number, iv: Uint8Array, context: Readonly<Record<string, string>>): Buffer {
  if (!Number.isInteger(version) || version < 0 || version > 255) {
    throw new EnvelopeFormatError('malformed', `envelope AAD: version ${String(version)} is not a byte`);
  }
  checkBytes(iv, 'iv', ENVELOPE_IV_BYTES, ENVELOPE_IV_BYTES);
  const ctx = canonicalContext(context);
  const parts: Buffer[] = [Buffer.from(ENVELOPE_MAGIC), Buffer.of(version), Buffer.from(iv), u16(ctx.length, 'context entry count')];
  for (const [k, v] of ctx) {
    parts.push(u16(k.length, 'context key length'), k, u16(v.length, 'context value length'), v);
  }
  return Buffer.concat(parts);
}

/** Context entries as UTF-8 pairs, sorted by key bytes; validates the shape. */
function canonicalContext(context: Readonly<Record<string, string>>): Array<[Buffer, Buffer]> {
  if (typeof context !== 'object' || context === null || Array.isArray(context)) {
    throw new EnvelopeFormatError('malformed', 'encryption context must be an object of string values');
  }
  const entries: Array<[Buffer, Buffer]> = [];
  for (const [k, v] of Object.entries(context)) {
    if (typeof v !== 'string') throw new EnvelopeFormatError('malformed', `encryption context value of "${k}" is not a string`);
    if (LONE_SURROGATE.test(k) || LONE_SURROGATE.test(v)) {
      throw new EnvelopeFormatError('malformed', 'encryption context contains a lone UTF-16 surrogate');
    }
    entries.push([Buffer.from(k, 'utf8'), Buffer.from(v, 'utf8')]);
  }
  return entries.sort((a, b) => Buffer.compare(a[0], b[0]));
}

function u16(n: number, what: string): Buffer {
  if (n > 0xffff) throw new EnvelopeFormatError('malformed', `envelope AAD: ${what} ${n} exceeds 65535`);
  const b = Buffer.allocUnsafe(2);
  b.writeUInt16BE(n, 0);
  return b;
}

function readU16(view: Buffer, at: number, what: string): number {
  need(view, at, 2, what);
  return view.readUInt16BE(at);
}

function need(view: Buffer, at: number, len: number, what: string): void {
  if (at + len > view.length) {
    throw new EnvelopeFormatError('truncated', `envelope ends before its ${what} (needs ${at + len} bytes, has ${view.length})`);
  }
}

function checkBytes(value: unknown, what: string, min: number, max: number): void {
  if (!(value instanceof Uint8Array)) throw new EnvelopeFormatError('malformed', `cannot encode envelope: ${what} must be a Buffer or Uint8Array`);
  if (value.length < min || value.length > max) {
    const range = min === max ? `exactly ${min}` : `${min}..${max}`;
    throw new EnvelopeFormatError('malformed', `${what} is ${value.length} bytes; expected ${range}`);
  }
}
