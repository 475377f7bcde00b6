import {
  constants,
  createCipheriv,
  createDecipheriv,
  createHash,
  createPrivateKey,
  createPublicKey,
  generateKeyPair,
  privateDecrypt,
  publicEncrypt,
  randomFillSync,
  type KeyObject,
} from 'node:crypto';
import { promisify } from 'node:util';

const generateKeyPairAsync = promisify(generateKeyPair);

/** Bytes of one symmetric key material entry: the 32-byte material id, then the 32-byte AES key. */
export const MATERIAL_ENTRY = 64;
const ID_LEN = 32;

/*
 * Symmetric ciphertext blob (aws-local's own format; AWS's is undocumented):
 *   [0]      version: 1 = key id is a UUID, 2 = key id is `mrk-` + 32 hex
 *   [1..17)  the key id's 16 bytes
 *   [17..49) the key material id (32 bytes, shown as 64 hex chars)
 *   [49..61) AES-GCM IV
 *   [61..77) AES-GCM tag
 *   [77..)   AES-256-GCM ciphertext
 * The header [0..49) and the canonical encryption context are the GCM AAD, so a changed
 * header, key, material id or context fails authentication.
 */
const HEADER = 49;
const IV_LEN = 12;
const TAG_LEN = 16;
const OVERHEAD = HEADER + IV_LEN + TAG_LEN;

/** What the header of a symmetric ciphertext blob names. */
export interface BlobHeader {
  keyId: string;
  materialId: string;
}

/** A new 64-byte material entry (random id, random AES-256 key). */
export function newMaterialEntry(): Buffer {
  const b = Buffer.allocUnsafe(MATERIAL_ENTRY); // pooled: keeps a million keys' material compact
  randomFillSync(b);
  return b;
}

/** A material entry for imported key material; the id is derived so re-importing keeps it. */
export function importedMaterialEntry(keyId: string, material: Buffer): Buffer {
  const id = createHash('sha256').update('aws-local:key-material-id:').update(keyId).update(material).digest();
  return Buffer.concat([id, material]);
}

/** The hex id of the material entry at `index` in a packed material buffer. */
export function materialIdAt(material: Buffer, index: number): string {
  const off = index * MATERIAL_ENTRY;
  return material.toString('hex', off, off + ID_LEN);
}

/** Number of entries in a packed symmetric material buffer. */
export function materialCount(material: Buffer): number {
  return material.length / MATERIAL_ENTRY;
}

function findMaterial(material: Buffer, materialId: Buffer): Buffer | undefined {
  for (let off = 0; off < material.length; off += MATERIAL_ENTRY) {
    if (material.compare(materialId, 0, ID_LEN, off, off + ID_LEN) === 0) {
      return material.subarray(off + ID_LEN, off + MATERIAL_ENTRY);
    }
  }
  return undefined;
}

function keyIdToBytes(keyId: string): { version: number; bytes: Buffer } {
  if (keyId.startsWith('mrk-')) return { version: 2, bytes: Buffer.from(keyId.slice(4), 'hex') };
  return { version: 1, bytes: Buffer.from(keyId.replace(/-/g, ''), 'hex') };
}

function bytesToKeyId(version: number, b: Buffer): string {
  const hex = b.toString('hex');
  if (version === 2) return `mrk-${hex}`;
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}

/**
 * The encryption context as bytes, independent of key order: AWS treats `{a, b}` and `{b, a}`
 * as the same context. Each key and value is length-prefixed so no two contexts collide.
 * Written after `prefix` bytes left free for the caller (the blob header of the GCM AAD).
 */
function canonicalContextAfter(prefix: number, ctx: Record<string, string> | undefined): Buffer {
  const keys = ctx ? Object.keys(ctx).sort() : [];
  const parts: string[] = [];
  let size = prefix;
  for (const k of keys) {
    for (const s of [k, ctx?.[k] ?? '']) {
      parts.push(s);
      size += 4 + Buffer.byteLength(s, 'utf8');
    }
  }
  const out = Buffer.allocUnsafe(size);
  let off = prefix;
  for (const s of parts) {
    const len = out.write(s, off + 4, 'utf8');
    out.writeUInt32BE(len, off);
    off += 4 + len;
  }
  return off === size ? out : out.subarray(0, off);
}

export function canonicalContext(ctx: Record<string, string> | undefined): Buffer {
  return canonicalContextAfter(0, ctx);
}

/** The GCM additional data: the blob header, then the canonical encryption context. */
function additionalData(blob: Buffer, context: Record<string, string> | undefined): Buffer {
  const aad = canonicalContextAfter(HEADER, context);
  blob.copy(aad, 0, 0, HEADER);
  return aad;
}

/*
 * IVs come from a pool filled a few hundred at a time: one CSPRNG call per IV was a visible
 * share of a ReEncrypt's CPU time. Each IV is still fresh random bytes, used once.
 */
const IVS_PER_FILL = 256;
const ivPool = Buffer.alloc(IV_LEN * IVS_PER_FILL);
let nextIv = IVS_PER_FILL;

/** Copies a fresh random IV into `target` at `offset`. */
function writeRandomIv(target: Buffer, offset: number): void {
  if (nextIv === IVS_PER_FILL) {
    randomFillSync(ivPool);
    nextIv = 0;
  }
  const start = IV_LEN * nextIv++;
  ivPool.copy(target, offset, start, start + IV_LEN);
}

/** Encrypts under the current (last) material entry; returns the blob and the material id used. */
export function symmetricEncrypt(
  keyId: string,
  material: Buffer,
  plaintext: Buffer,
  context: Record<string, string> | undefined,
): { blob: Buffer; materialId: string } {
  const entryOff = material.length - MATERIAL_ENTRY;
  const { version, bytes } = keyIdToBytes(keyId);
  const blob = Buffer.allocUnsafe(OVERHEAD + plaintext.length);
  blob[0] = version;
  bytes.copy(blob, 1);
  material.copy(blob, 17, entryOff, entryOff + ID_LEN);
  writeRandomIv(blob, HEADER);
  const iv = blob.subarray(HEADER, HEADER + IV_LEN);
  const cipher = createCipheriv('aes-256-gcm', material.subarray(entryOff + ID_LEN, entryOff + MATERIAL_ENTRY), iv);
  cipher.setAAD(additionalData(blob, context));
  // GCM is a stream mode: update() returns every byte, final() none.
  const written = cipher.update(plaintext).copy(blob, OVERHEAD);
  cipher.final().copy(blob, OVERHEAD + written);
  cipher.getAuthTag().copy(blob, HEADER + IV_LEN);
  return { blob, materialId: material.toString('hex', entryOff, entryOff + ID_LEN) };
}

/** Reads a symmetric blob's header; undefined when the bytes are not an aws-local symmetric blob. */
export function parseBlobHeader(blob: Buffer): BlobHeader | undefined {
  if (blob.length < OVERHEAD) return undefined;
  const version = blob[0];
  if (version !== 1 && version !== 2) return undefined;
  return {
    keyId: bytesToKeyId(version, blob.subarray(1, 17)),
    materialId: blob.toString('hex', 17, HEADER),
  };
}

/** Decrypts a symmetric blob with the key's materials; undefined when it does not authenticate. */
export function symmetricDecrypt(
  material: Buffer,
  blob: Buffer,
  context: Record<string, string> | undefined,
): Buffer | undefined {
  const aesKey = findMaterial(material, blob.subarray(17, HEADER));
  if (!aesKey) return undefined;
  try {
    const decipher = createDecipheriv('aes-256-gcm', aesKey, blob.subarray(HEADER, HEADER + IV_LEN));
    decipher.setAAD(additionalData(blob, context));
    decipher.setAuthTag(blob.subarray(HEADER + IV_LEN, OVERHEAD));
    return Buffer.concat([decipher.update(blob.subarray(OVERHEAD)), decipher.final()]);
  } catch {
    return undefined;
  }
}

/** RSA key sizes by KMS key spec. */
export const RSA_BITS = { RSA_2048: 2048, RSA_3072: 3072, RSA_4096: 4096 } as const;
export type RsaSpec = keyof typeof RSA_BITS;

/** OAEP algorithms KMS offers for RSA ENCRYPT_DECRYPT keys. */
export type OaepAlgorithm = 'RSAES_OAEP_SHA_1' | 'RSAES_OAEP_SHA_256';

function oaepHash(alg: OaepAlgorithm): 'sha1' | 'sha256' {
  return alg === 'RSAES_OAEP_SHA_1' ? 'sha1' : 'sha256';
}

/** Largest plaintext RSA-OAEP can take for this key size and hash. */
export function oaepMaxPlaintext(spec: RsaSpec, alg: OaepAlgorithm): number {
  const hashLen = alg === 'RSAES_OAEP_SHA_1' ? 20 : 32;
  return RSA_BITS[spec] / 8 - 2 * hashLen - 2;
}

/** A new RSA private key as PKCS#8 DER (generated off the event loop). */
export async function generateRsaPrivateKey(bits: number): Promise<Buffer> {
  const { privateKey } = await generateKeyPairAsync('rsa', {
    modulusLength: bits,
    publicKeyEncoding: { type: 'spki', format: 'der' },
    privateKeyEncoding: { type: 'pkcs8', format: 'der' },
  });
  return privateKey;
}

/*
 * KeyObjects are rebuilt from the stored DER on demand and only a few are cached, so a million
 * keys hold only their bytes, and a restored snapshot needs no special handling.
 */
const keyObjectCache = new Map<string, KeyObject>();
const CACHE_MAX = 256;

function privateKeyObject(cacheKey: string, der: Buffer): KeyObject {
  let k = keyObjectCache.get(cacheKey);
  if (k) {
    keyObjectCache.delete(cacheKey);
    keyObjectCache.set(cacheKey, k);
    return k;
  }
  k = createPrivateKey({ key: der, format: 'der', type: 'pkcs8' });
  keyObjectCache.set(cacheKey, k);
  if (keyObjectCache.size > CACHE_MAX) {
    const oldest = keyObjectCache.keys().next().value;
    if (oldest !== undefined) keyObjectCache.delete(oldest);
  }
  return k;
}

/** Forgets cached KeyObjects (after reset/restore, when ids may be reused for other bytes). */
export function clearKeyObjectCache(): void {
  keyObjectCache.clear();
}

/** The SPKI DER public key of a stored RSA private key (what GetPublicKey returns). */
export function rsaPublicKeyDer(cacheKey: string, privateDer: Buffer): Buffer {
  return createPublicKey(privateKeyObject(cacheKey, privateDer)).export({ type: 'spki', format: 'der' });
}

/** RSA-OAEP encryption with the public half of a stored private key. */
export function rsaEncrypt(cacheKey: string, privateDer: Buffer, alg: OaepAlgorithm, plaintext: Buffer): Buffer {
  const key = createPublicKey(privateKeyObject(cacheKey, privateDer));
  return publicEncrypt({ key, padding: constants.RSA_PKCS1_OAEP_PADDING, oaepHash: oaepHash(alg) }, plaintext);
}

/** RSA-OAEP decryption; undefined when the ciphertext does not decrypt under this key and hash. */
export function rsaDecrypt(cacheKey: string, privateDer: Buffer, alg: OaepAlgorithm, ciphertext: Buffer): Buffer | undefined {
  try {
    const key = privateKeyObject(cacheKey, privateDer);
    return privateDecrypt({ key, padding: constants.RSA_PKCS1_OAEP_PADDING, oaepHash: oaepHash(alg) }, ciphertext);
  } catch {
    return undefined;
  }
}

/** Wrapping algorithms aws-local accepts for ImportKeyMaterial. */
export type WrappingAlgorithm = 'RSAES_OAEP_SHA_1' | 'RSAES_OAEP_SHA_256' | 'RSA_AES_KEY_WRAP_SHA_1' | 'RSA_AES_KEY_WRAP_SHA_256';

/**
 * Unwraps imported key material. The RSA_AES_KEY_WRAP_* algorithms are an RSA-OAEP-wrapped
 * ephemeral AES key followed by the material wrapped with AES key wrap with padding (RFC 5649),
 * as AWS describes them. Undefined when unwrapping fails.
 */
export function unwrapImportedMaterial(wrappingDer: Buffer, alg: WrappingAlgorithm, encrypted: Buffer): Buffer | undefined {
  const key = createPrivateKey({ key: wrappingDer, format: 'der', type: 'pkcs8' });
  const hash = alg.endsWith('SHA_1') ? 'sha1' : 'sha256';
  try {
    if (alg === 'RSAES_OAEP_SHA_1' || alg === 'RSAES_OAEP_SHA_256') {
      return privateDecrypt({ key, padding: constants.RSA_PKCS1_OAEP_PADDING, oaepHash: hash }, encrypted);
    }
    const rsaLen = (key.asymmetricKeyDetails?.modulusLength ?? 0) / 8;
    if (encrypted.length <= rsaLen) return undefined;
    const aesKey = privateDecrypt(
      { key, padding: constants.RSA_PKCS1_OAEP_PADDING, oaepHash: hash },
      encrypted.subarray(0, rsaLen),
    );
    if (aesKey.length !== 32) return undefined;
    const d = createDecipheriv('id-aes256-wrap-pad', aesKey, Buffer.from('A65959A6', 'hex'));
    return Buffer.concat([d.update(encrypted.subarray(rsaLen)), d.final()]);
  } catch {
    return undefined;
  }
}

/** A PKCS#8 RSA wrapping key pair for GetParametersForImport. */
export async function generateWrappingKey(bits: number): Promise<{ privateDer: Buffer; publicDer: Buffer }> {
  const { privateKey, publicKey } = await generateKeyPairAsync('rsa', {
    modulusLength: bits,
    publicKeyEncoding: { type: 'spki', format: 'der' },
    privateKeyEncoding: { type: 'pkcs8', format: 'der' },
  });
  return { privateDer: privateKey, publicDer: publicKey };
}
