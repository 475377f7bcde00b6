import { createCipheriv, createDecipheriv, randomBytes } from 'node:crypto';
import { ENVELOPE_IV_BYTES, ENVELOPE_TAG_BYTES } from '@rekey/core';
import { EnvelopeError } from './errors.js';

/** AES-256 data keys only: GenerateDataKey is always called with KeySpec AES_256. */
export const DATA_KEY_BYTES = 32;

/** A fresh random 96-bit IV. */
export function freshIv(): Buffer {
  return randomBytes(ENVELOPE_IV_BYTES);
}

function checkKey(key: Uint8Array): void {
  if (key.length !== DATA_KEY_BYTES) {
    throw new EnvelopeError('malformed', `data key from KMS is ${key.length * 8} bits; expected ${DATA_KEY_BYTES * 8}`);
  }
}

/** AES-256-GCM encryption with a 128-bit tag; `aad` may be undefined (S3EC v2 content has none). */
export function seal(key: Uint8Array, iv: Uint8Array, aad: Uint8Array | undefined, plaintext: Uint8Array): { ciphertext: Buffer; tag: Buffer } {
  checkKey(key);
  const cipher = createCipheriv('aes-256-gcm', key, iv, { authTagLength: ENVELOPE_TAG_BYTES });
  if (aad) cipher.setAAD(aad);
  const ciphertext = Buffer.concat([cipher.update(plaintext), cipher.final()]);
  return { ciphertext, tag: cipher.getAuthTag() };
}

/** AES-256-GCM decryption; a failed tag check is `wrong-context` (`what` names the thing in the message). */
export function open(key: Uint8Array, iv: Uint8Array, aad: Uint8Array | undefined, ciphertext: Uint8Array, tag: Uint8Array, what: string): Buffer {
  checkKey(key);
  const decipher = createDecipheriv('aes-256-gcm', key, iv, { authTagLength: ENVELOPE_TAG_BYTES });
  if (aad) decipher.setAAD(aad);
  decipher.setAuthTag(tag);
  const out = decipher.update(ciphertext);
  try {
    return Buffer.concat([out, decipher.final()]);
  } catch (err) {
    out.fill(0);
    throw new EnvelopeError('wrong-context', `${what} failed GCM authentication: wrong context, or the data was altered`, { cause: err });
  }
}
