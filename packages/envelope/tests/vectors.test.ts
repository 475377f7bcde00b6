import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { createEnvelopeClient, EnvelopeError } from '../src/index.js';
import { awsError, fakeKms } from './helpers/fake-aws.js';

interface Vector {
  name: string;
  keyArn: string;
  wrappedKeyHex: string;
  context: Record<string, string>;
  plaintextHex: string;
  envelopeHex: string;
}
const file = JSON.parse(readFileSync(new URL('../../core/tests/vectors/envelope-v1.json', import.meta.url), 'utf8')) as {
  dataKeyHex: string;
  vectors: Vector[];
};

/** A KMS that unwraps each vector's fake wrapped key to the vectors' data key when the context matches. */
function vectorKms() {
  const calls: Array<Record<string, unknown>> = [];
  const client = fakeKms((op, input) => {
    calls.push({ op, ...input });
    if (op !== 'Decrypt') throw awsError('UnsupportedOperationException');
    const blob = Buffer.from(input['CiphertextBlob'] as Uint8Array).toString('hex');
    const v = file.vectors.find((x) => x.wrappedKeyHex === blob && x.keyArn === input['KeyId']);
    if (!v) throw awsError('InvalidCiphertextException');
    const ctx = (input['EncryptionContext'] as Record<string, string> | undefined) ?? {};
    if (JSON.stringify(Object.entries(ctx).sort()) !== JSON.stringify(Object.entries(v.context).sort())) throw awsError('InvalidCiphertextException');
    return { Plaintext: Buffer.from(file.dataKeyHex, 'hex'), KeyId: v.keyArn };
  });
  return { client, calls };
}

describe('decrypt of the committed test vectors', () => {
  for (const v of file.vectors) {
    it(`decrypts "${v.name}" to its plaintext with Decrypt pinned to the envelope key`, async () => {
      const { client, calls } = vectorKms();
      const envelope = createEnvelopeClient({ kms: { client } });

      const out = await envelope.decrypt(Buffer.from(v.envelopeHex, 'hex'), { context: v.context });

      expect(out.plaintext.toString('hex')).toBe(v.plaintextHex);
      expect(out.keyArn).toBe(v.keyArn);
      expect(out.stale).toBe(false);
      expect(calls).toHaveLength(1);
      expect(calls[0]?.['KeyId']).toBe(v.keyArn);
      await envelope.close();
    });
  }

  it('reports wrong-context when the AAD context differs even if KMS accepts the key', async () => {
    const v = file.vectors[0]!;
    // This KMS ignores the context, so only GCM authentication of the AAD can catch the mismatch.
    const client = fakeKms(() => ({ Plaintext: Buffer.from(file.dataKeyHex, 'hex'), KeyId: v.keyArn }));
    const envelope = createEnvelopeClient({ kms: { client } });

    const err = await envelope.decrypt(Buffer.from(v.envelopeHex, 'hex'), { context: { ...v.context, tenant: 'other' } }).catch((e: unknown) => e);

    expect(err).toBeInstanceOf(EnvelopeError);
    expect((err as EnvelopeError).code).toBe('wrong-context');
    await envelope.close();
  });

  it('reports malformed when KMS unwraps the data key with another key than the envelope names', async () => {
    const v = file.vectors[0]!;
    const other = 'arn:aws:kms:us-east-1:111122223333:key/99999999-12ab-34cd-56ef-1234567890ab';
    const client = fakeKms(() => ({ Plaintext: Buffer.from(file.dataKeyHex, 'hex'), KeyId: other }));
    const envelope = createEnvelopeClient({ kms: { client } });

    const err = await envelope.decrypt(Buffer.from(v.envelopeHex, 'hex'), { context: v.context }).catch((e: unknown) => e);

    expect((err as EnvelopeError).code).toBe('malformed');
    await envelope.close();
  });
});
