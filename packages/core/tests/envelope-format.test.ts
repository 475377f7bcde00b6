import { createDecipheriv, randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import {
  decodeEnvelope,
  encodeEnvelope,
  envelopeAad,
  EnvelopeFormatError,
  isKmsKeyArn,
  looksLikeEnvelope,
  type EnvelopeFormatErrorCode,
} from '../src/envelope-format.js';

interface Vector {
  name: string;
  version: number;
  keyArn: string;
  wrappedKeyHex: string;
  ivHex: string;
  context: Record<string, string>;
  plaintextHex: string;
  aadHex: string;
  ciphertextHex: string;
  tagHex: string;
  envelopeHex: string;
}

const file = JSON.parse(readFileSync(new URL('./vectors/envelope-v1.json', import.meta.url), 'utf8')) as {
  dataKeyHex: string;
  vectors: Vector[];
};
const hex = (s: string) => Buffer.from(s, 'hex');
const ARN = 'arn:aws:kms:us-east-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab';

function codeOf(fn: () => unknown): EnvelopeFormatErrorCode | 'no-error' | 'foreign-error' {
  try {
    fn();
    return 'no-error';
  } catch (e) {
    return e instanceof EnvelopeFormatError ? e.code : 'foreign-error';
  }
}

function sample(overrides: Partial<Parameters<typeof encodeEnvelope>[0]> = {}) {
  return encodeEnvelope({
    keyArn: ARN,
    wrappedKey: Buffer.alloc(20, 1),
    iv: Buffer.alloc(12, 2),
    ciphertext: Buffer.alloc(5, 3),
    tag: Buffer.alloc(16, 4),
    ...overrides,
  });
}

describe('envelope format v1 test vectors', () => {
  it('holds at least three committed vectors', () => {
    expect(file.vectors.length).toBeGreaterThanOrEqual(3);
  });

  for (const v of file.vectors) {
    it(`decodes "${v.name}" to the exact fields`, () => {
      const parts = decodeEnvelope(hex(v.envelopeHex));
      expect(parts.version).toBe(v.version);
      expect(parts.keyArn).toBe(v.keyArn);
      expect(parts.wrappedKey.toString('hex')).toBe(v.wrappedKeyHex);
      expect(parts.iv.toString('hex')).toBe(v.ivHex);
      expect(parts.ciphertext.toString('hex')).toBe(v.ciphertextHex);
      expect(parts.tag.toString('hex')).toBe(v.tagHex);
    });

    it(`encodes the fields of "${v.name}" to the exact bytes`, () => {
      const out = encodeEnvelope({
        keyArn: v.keyArn,
        wrappedKey: hex(v.wrappedKeyHex),
        iv: hex(v.ivHex),
        ciphertext: hex(v.ciphertextHex),
        tag: hex(v.tagHex),
      });
      expect(out.toString('hex')).toBe(v.envelopeHex);
    });

    it(`computes the committed AAD of "${v.name}" and it authenticates the ciphertext`, () => {
      const aad = envelopeAad(v.version, hex(v.ivHex), v.context);
      expect(aad.toString('hex')).toBe(v.aadHex);
      const d = createDecipheriv('aes-256-gcm', hex(file.dataKeyHex), hex(v.ivHex), { authTagLength: 16 });
      d.setAAD(aad);
      d.setAuthTag(hex(v.tagHex));
      const plain = Buffer.concat([d.update(hex(v.ciphertextHex)), d.final()]);
      expect(plain.toString('hex')).toBe(v.plaintextHex);
    });
  }
});

describe('envelopeAad', () => {
  it('is the same whatever order the context keys were inserted in', () => {
    const iv = Buffer.alloc(12, 9);
    expect(envelopeAad(1, iv, { b: '2', a: '1', '10': 'x' })).toEqual(envelopeAad(1, iv, { '10': 'x', a: '1', b: '2' }));
  });

  it('differs when the IV, the version or any context value differs', () => {
    const iv = Buffer.alloc(12, 9);
    const base = envelopeAad(1, iv, { a: '1' });
    expect(envelopeAad(1, Buffer.alloc(12, 8), { a: '1' })).not.toEqual(base);
    expect(envelopeAad(2, iv, { a: '1' })).not.toEqual(base);
    expect(envelopeAad(1, iv, { a: '2' })).not.toEqual(base);
    expect(envelopeAad(1, iv, { a: '1', b: '' })).not.toEqual(base);
  });

  it('keeps key/value boundaries unambiguous', () => {
    const iv = Buffer.alloc(12);
    expect(envelopeAad(1, iv, { ab: 'c' })).not.toEqual(envelopeAad(1, iv, { a: 'bc' }));
  });

  it('rejects a non-string context value, a lone surrogate and a wrong IV length as malformed', () => {
    const iv = Buffer.alloc(12);
    expect(codeOf(() => envelopeAad(1, iv, { a: 1 as unknown as string }))).toBe('malformed');
    expect(codeOf(() => envelopeAad(1, iv, { a: '\uD800' }))).toBe('malformed');
    expect(codeOf(() => envelopeAad(1, Buffer.alloc(11), {}))).toBe('malformed');
    expect(codeOf(() => envelopeAad(1, iv, null as unknown as Record<string, string>))).toBe('malformed');
  });
});

describe('decodeEnvelope errors', () => {
  it('reports bad-magic for a raw KMS blob', () => {
    expect(codeOf(() => decodeEnvelope(Buffer.from('0102020078', 'hex')))).toBe('bad-magic');
  });

  it('reports truncated for an empty buffer and a cut magic', () => {
    expect(codeOf(() => decodeEnvelope(Buffer.alloc(0)))).toBe('truncated');
    expect(codeOf(() => decodeEnvelope(Buffer.from('RK')))).toBe('truncated');
    expect(codeOf(() => decodeEnvelope(Buffer.from('RKE')))).toBe('truncated');
  });

  it('reports unknown-version for version 2 and version 0', () => {
    const env = sample();
    env[3] = 2;
    expect(codeOf(() => decodeEnvelope(env))).toBe('unknown-version');
    env[3] = 0;
    expect(codeOf(() => decodeEnvelope(env))).toBe('unknown-version');
  });

  it('reports truncated for every proper prefix of a valid envelope', () => {
    const env = sample();
    for (let n = 0; n < env.length; n++) {
      // A prefix that still holds IV+tag past the header decodes as a shorter ciphertext; that is the
      // implicit-length trade-off GCM authentication catches.
      const minimal = env.length - 5;
      const code = codeOf(() => decodeEnvelope(env.subarray(0, n)));
      if (n >= minimal) expect(code).toBe('no-error');
      else expect(code).toBe('truncated');
    }
  });

  it('reports malformed for a zero or oversized ARN length and a zero wrapped key length', () => {
    const env = sample();
    const zeroArn = Buffer.from(env);
    zeroArn.writeUInt16BE(0, 4);
    expect(codeOf(() => decodeEnvelope(zeroArn))).toBe('malformed');
    const bigArn = Buffer.from(env);
    bigArn.writeUInt16BE(0xffff, 4);
    expect(codeOf(() => decodeEnvelope(bigArn))).toBe('malformed');
    const zeroWrapped = Buffer.from(env);
    zeroWrapped.writeUInt16BE(0, 6 + ARN.length);
    expect(codeOf(() => decodeEnvelope(zeroWrapped))).toBe('malformed');
  });

  it('reports malformed for an ARN that is not UTF-8 or not a KMS key ARN', () => {
    const env = sample();
    const badUtf8 = Buffer.from(env);
    badUtf8[6] = 0xff;
    expect(codeOf(() => decodeEnvelope(badUtf8))).toBe('malformed');
    const notArn = Buffer.from(env);
    notArn[6] = 'x'.charCodeAt(0);
    expect(codeOf(() => decodeEnvelope(notArn))).toBe('malformed');
  });

  it('reports malformed for input that is not bytes', () => {
    expect(codeOf(() => decodeEnvelope('RKE' as unknown as Uint8Array))).toBe('malformed');
    expect(codeOf(() => decodeEnvelope(undefined as unknown as Uint8Array))).toBe('malformed');
  });

  it('decodes a Uint8Array view at an offset inside a larger buffer', () => {
    const env = sample();
    const big = new Uint8Array(env.length + 10);
    big.set(env, 7);
    const parts = decodeEnvelope(big.subarray(7, 7 + env.length));
    expect(parts.keyArn).toBe(ARN);
    expect(parts.ciphertext).toEqual(Buffer.alloc(5, 3));
  });

  it('returns copies, so changing the input afterwards leaves the parts intact', () => {
    const env = sample();
    const parts = decodeEnvelope(env);
    env.fill(0);
    expect(parts.wrappedKey).toEqual(Buffer.alloc(20, 1));
    expect(parts.tag).toEqual(Buffer.alloc(16, 4));
  });

  it('never throws anything but EnvelopeFormatError on random bytes and mutations', () => {
    const valid = sample();
    for (let i = 0; i < 5000; i++) {
      let buf: Buffer;
      if (i % 2 === 0) buf = randomBytes(i % 97);
      else {
        buf = Buffer.from(valid);
        buf[i % buf.length] = (buf[i % buf.length] ?? 0) ^ (1 + (i % 255));
      }
      expect(codeOf(() => decodeEnvelope(buf))).not.toBe('foreign-error');
    }
  });
});

describe('encodeEnvelope validation', () => {
  it('round-trips an empty ciphertext', () => {
    const env = sample({ ciphertext: Buffer.alloc(0) });
    expect(decodeEnvelope(env).ciphertext.length).toBe(0);
  });

  it('refuses an alias, a short IV, a long tag, an empty wrapped key and another version', () => {
    expect(codeOf(() => sample({ keyArn: 'alias/app' }))).toBe('malformed');
    expect(codeOf(() => sample({ iv: Buffer.alloc(11) }))).toBe('malformed');
    expect(codeOf(() => sample({ tag: Buffer.alloc(17) }))).toBe('malformed');
    expect(codeOf(() => sample({ wrappedKey: Buffer.alloc(0) }))).toBe('malformed');
    expect(codeOf(() => sample({ wrappedKey: Buffer.alloc(6145) }))).toBe('malformed');
    expect(codeOf(() => sample({ version: 2 }))).toBe('unknown-version');
  });
});

describe('helpers', () => {
  it('looksLikeEnvelope tells envelopes from raw KMS blobs', () => {
    expect(looksLikeEnvelope(sample())).toBe(true);
    expect(looksLikeEnvelope(Buffer.from('0102020078', 'hex'))).toBe(false);
    expect(looksLikeEnvelope(Buffer.alloc(0))).toBe(false);
  });

  it('isKmsKeyArn accepts key ARNs of every partition and refuses aliases and key ids', () => {
    expect(isKmsKeyArn(ARN)).toBe(true);
    expect(isKmsKeyArn('arn:aws-cn:kms:cn-north-1:111122223333:key/mrk-0123')).toBe(true);
    expect(isKmsKeyArn('arn:aws:kms:us-east-1:111122223333:alias/app')).toBe(false);
    expect(isKmsKeyArn('1234abcd-12ab-34cd-56ef-1234567890ab')).toBe(false);
  });
});
