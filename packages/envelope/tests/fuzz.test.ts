import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { decodeEnvelope, EnvelopeFormatError, ENVELOPE_FORMAT_ERROR_CODES } from '@rekey/core';
import { describe, expect, it } from 'vitest';
import { createEnvelopeClient, EnvelopeError, ENVELOPE_ERROR_CODES } from '../src/index.js';
import { awsError, bareFakeKms } from './helpers/fake-aws.js';

/** Deterministic PRNG (mulberry32), so a failure can be replayed from its seed and index. */
function prng(seed: number) {
  let a = seed >>> 0;
  const next = () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  return { next, int: (n: number) => Math.floor(next() * n), byte: () => Math.floor(next() * 256) };
}

const SEED = 0x5eed;
const vectors = JSON.parse(readFileSync(new URL('../../core/tests/vectors/envelope-v1.json', import.meta.url), 'utf8')) as {
  dataKeyHex: string;
  vectors: Array<{ envelopeHex: string; keyArn: string; wrappedKeyHex: string; context: Record<string, string> }>;
};
const DATA_KEY = Buffer.from(vectors.dataKeyHex, 'hex');
const CONTEXT = { tenant: 't-1' };

/** One mutated (or random) envelope from a corpus of valid ones. */
function mutate(r: ReturnType<typeof prng>, corpus: Buffer[]): Buffer {
  const base = corpus[r.int(corpus.length)]!;
  const b = Buffer.from(base);
  switch (r.int(10)) {
    case 0: {
      const n = 1 + r.int(4);
      for (let i = 0; i < n; i++) {
        const at = r.int(b.length);
        b[at] = (b[at] ?? 0) ^ (1 << r.int(8));
      }
      return b;
    }
    case 1:
      b[r.int(b.length)] = r.byte();
      return b;
    case 2:
      return b.subarray(0, r.int(b.length));
    case 3:
      return Buffer.concat([b, Buffer.from(Array.from({ length: 1 + r.int(40) }, r.byte))]);
    case 4: {
      // An ARN or wrapped-key length field set to an edge value.
      const at = r.int(2) === 0 ? 4 : 6 + b.readUInt16BE(4);
      if (at + 2 <= b.length) b.writeUInt16BE([0, 1, 0xffff, 0x7fff, b.length, r.int(0x10000)][r.int(6)]!, at);
      return b;
    }
    case 5:
      b[3] = r.byte();
      return b;
    case 6: {
      const other = corpus[r.int(corpus.length)]!;
      const cut = r.int(Math.min(b.length, other.length));
      return Buffer.concat([b.subarray(0, cut), other.subarray(cut)]);
    }
    case 7:
      return Buffer.concat([Buffer.from('RKE\u0001'), Buffer.from(Array.from({ length: r.int(300) }, r.byte))]);
    case 8:
      return Buffer.from(Array.from({ length: r.int(200) }, r.byte));
    default: {
      // Remove a run of bytes from the middle, shifting every later field.
      const from = r.int(b.length);
      return Buffer.concat([b.subarray(0, from), b.subarray(from + 1 + r.int(16))]);
    }
  }
}

/**
 * A KMS that never touches the network: each wrapped key it makes unwraps to a fixed data key
 * derived from that wrapped key (distinct keys, as with KMS, so swapping wrapped keys between
 * envelopes is caught by GCM); other blobs get assorted KMS errors.
 */
function fixedKeyKms() {
  const made = new Map<string, { arn: string; key: Buffer }>(vectors.vectors.map((v) => [v.wrappedKeyHex, { arn: v.keyArn, key: DATA_KEY }]));
  let n = 0;
  const client = bareFakeKms((op, input) => {
    if (op === 'GenerateDataKey') {
      const blob = Buffer.from(`wrapped-${n++}-${String(input['KeyId'])}`);
      const arn = 'arn:aws:kms:us-east-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab';
      const key = createHash('sha256').update(blob).digest();
      made.set(blob.toString('hex'), { arn, key });
      return { Plaintext: Buffer.from(key), CiphertextBlob: blob, KeyId: arn };
    }
    if (op === 'Decrypt') {
      const blob = Buffer.from(input['CiphertextBlob'] as Uint8Array);
      const known = made.get(blob.toString('hex'));
      // Like KMS: a blob names its key, and a KeyId that is not that key is IncorrectKeyException.
      if (known !== undefined && known.arn !== input['KeyId']) throw awsError('IncorrectKeyException');
      if (known !== undefined) return { Plaintext: Buffer.from(known.key), KeyId: known.arn };
      const errors = ['InvalidCiphertextException', 'IncorrectKeyException', 'NotFoundException', 'DisabledException'];
      throw awsError(errors[blob.length % errors.length]!);
    }
    throw awsError('UnsupportedOperationException');
  });
  return client;
}

describe('fuzz', () => {
  it('decodeEnvelope gets only EnvelopeFormatError on 100,000 random and mutated envelopes', () => {
    const r = prng(SEED);
    const corpus = vectors.vectors.map((v) => Buffer.from(v.envelopeHex, 'hex'));
    const codes = new Map<string, number>();
    for (let i = 0; i < 100_000; i++) {
      const input = mutate(r, corpus);
      try {
        decodeEnvelope(input);
        codes.set('ok', (codes.get('ok') ?? 0) + 1);
      } catch (e) {
        if (!(e instanceof EnvelopeFormatError) || !ENVELOPE_FORMAT_ERROR_CODES.includes(e.code)) {
          throw new Error(`seed ${SEED} case ${i}: ${String(e)}`);
        }
        codes.set(e.code, (codes.get(e.code) ?? 0) + 1);
      }
    }
    // The mutations reach every error path, and some still decode (to be caught by GCM later).
    for (const code of [...ENVELOPE_FORMAT_ERROR_CODES, 'ok']) expect(codes.get(code), code).toBeGreaterThan(0);
  });

  it('decrypt gets only typed EnvelopeErrors on 100,000 random and mutated envelopes', async () => {
    const r = prng(SEED + 1);
    const envelope = createEnvelopeClient({ kms: { client: fixedKeyKms() } });
    const corpus: Buffer[] = [];
    for (let i = 0; i < 8; i++) corpus.push(await envelope.encrypt(Buffer.from(Array.from({ length: i * 9 }, r.byte)), { keyId: 'alias/fuzz', context: CONTEXT }));
    corpus.push(...vectors.vectors.map((v) => Buffer.from(v.envelopeHex, 'hex')));

    const valid = new Set(corpus.map((b) => b.toString('hex')));
    const codes = new Map<string, number>();
    for (let i = 0; i < 100_000; i++) {
      const input = mutate(r, corpus);
      try {
        await envelope.decrypt(input, { context: CONTEXT });
        // Only an input equal to a corpus envelope (a splice with itself, a byte overwritten with
        // its own value) may open: every real change is caught by decoding, KMS or GCM.
        if (!valid.has(input.toString('hex'))) throw new Error(`seed ${SEED + 1} case ${i}: a changed envelope decrypted`);
        codes.set('ok', (codes.get('ok') ?? 0) + 1);
      } catch (e) {
        if (!(e instanceof EnvelopeError) || !ENVELOPE_ERROR_CODES.includes(e.code)) {
          throw new Error(`seed ${SEED + 1} case ${i}: ${String(e)}`, { cause: e });
        }
        codes.set(e.code, (codes.get(e.code) ?? 0) + 1);
      }
    }
    await envelope.close();

    for (const code of ['truncated', 'malformed', 'unknown-version', 'wrong-context', 'key-disabled', 'key-not-found']) {
      expect(codes.get(code), code).toBeGreaterThan(0);
    }

  }, 300_000);

  it('decrypt gets invalid-argument or malformed, never a crash, for inputs that are not bytes', async () => {
    const envelope = createEnvelopeClient({ kms: { client: fixedKeyKms() } });
    const inputs: unknown[] = [undefined, null, 0, 'RKE\u0001', [0x52, 0x4b, 0x45, 1], {}, new ArrayBuffer(10), Symbol('x')];
    for (const input of inputs) {
      const err = await envelope.decrypt(input as Uint8Array, { context: CONTEXT }).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(EnvelopeError);
    }
    const badContext = await envelope.decrypt(Buffer.alloc(0), { context: { a: 1 } as never }).catch((e: unknown) => e);
    expect((badContext as EnvelopeError).code).toBe('invalid-argument');
    await envelope.close();
  });
});
