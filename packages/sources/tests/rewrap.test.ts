import { describe, expect, it } from 'vitest';
import { ItemError } from '@rekey/core';
import type { ReEncryptInput, ReEncryptOutput } from '@rekey/kms';
import { probeBlobKey, rewrapBlob } from '../src/rewrap.js';
import type { SourceKms } from '../src/types.js';

const OLD = 'arn:aws:kms:us-east-1:000000000000:key/old';
const OLD2 = 'arn:aws:kms:us-east-1:000000000000:key/old2';
const NEW = 'arn:aws:kms:us-east-1:000000000000:key/new';
const OTHER = 'arn:aws:kms:us-east-1:000000000000:key/other';

/** A fake KMS whose blobs are `<key arn>|<material>`; it behaves like ReEncrypt with SourceKeyId set. */
function fakeKms(material: Record<string, string> = {}) {
  const calls: ReEncryptInput[] = [];
  const kms: SourceKms = {
    async acquire() {},
    reportS3Call() {},
    async reEncrypt(input): Promise<ReEncryptOutput> {
      calls.push(input);
      const [key = '', mat = 'm1'] = Buffer.from(input.ciphertextBlob).toString().split('|');
      if (input.sourceKeyId !== key) throw new ItemError('IncorrectKeyException', 'incorrect key', { outcome: 'not-in-scope' });
      const destMat = material[input.destinationKeyId] ?? 'm1';
      return {
        ciphertextBlob: Buffer.from(`${input.destinationKeyId}|${destMat}`),
        sourceKeyId: key,
        keyId: input.destinationKeyId,
        sourceKeyMaterialId: mat,
        destinationKeyMaterialId: destMat,
      };
    },
  };
  return { kms, calls };
}

const signal = new AbortController().signal;

describe('rewrapBlob', () => {
  it('moves a blob under the single from key with one ReEncrypt naming that key', async () => {
    const { kms, calls } = fakeKms();

    const r = await rewrapBlob(kms, Buffer.from(`${OLD}|m1`), { from: [OLD], to: NEW }, { signal, encryptionContext: { a: 'b' } });

    expect(r.kind).toBe('rewrapped');
    expect(calls).toHaveLength(1);
    expect(calls[0]?.sourceKeyId).toBe(OLD);
    expect(calls[0]?.sourceEncryptionContext).toEqual({ a: 'b' });
    expect(calls[0]?.destinationEncryptionContext).toEqual({ a: 'b' });
  });

  it('always names a SourceKeyId, and tells already-current from not-in-scope with one more call', async () => {
    const { kms, calls } = fakeKms();

    const current = await rewrapBlob(kms, Buffer.from(`${NEW}|m1`), { from: [OLD, OLD2], to: NEW }, { signal });
    const other = await rewrapBlob(kms, Buffer.from(`${OTHER}|m1`), { from: [OLD], to: NEW }, { signal });

    expect(current.kind).toBe('already-current');
    expect(other.kind).toBe('not-in-scope');
    expect(calls.every((c) => c.sourceKeyId !== undefined)).toBe(true);
    expect(calls.map((c) => c.sourceKeyId)).toEqual([OLD, OLD2, NEW, OLD, NEW]);
  });

  it('tries the hinted key first', async () => {
    const { kms, calls } = fakeKms();

    await rewrapBlob(kms, Buffer.from(`${OLD2}|m1`), { from: [OLD, OLD2], to: NEW }, { signal, hint: OLD2 });

    expect(calls.map((c) => c.sourceKeyId)).toEqual([OLD2]);
  });

  it('a refresh whose material is already current is already-current', async () => {
    const { kms } = fakeKms({ [NEW]: 'm2' });

    const same = await rewrapBlob(kms, Buffer.from(`${NEW}|m2`), { from: [NEW], to: NEW, refresh: true }, { signal });
    const stale = await rewrapBlob(kms, Buffer.from(`${NEW}|m1`), { from: [NEW], to: NEW, refresh: true }, { signal });

    expect(same.kind).toBe('already-current');
    expect(stale.kind).toBe('rewrapped');
  });

  it('passes other KMS errors through', async () => {
    const kms: SourceKms = {
      async acquire() {},
      reportS3Call() {},
      async reEncrypt() {
        throw new ItemError('InvalidCiphertextException', 'bad', { outcome: 'failed' });
      },
    };
    await expect(rewrapBlob(kms, Buffer.from('x'), { from: [OLD], to: NEW }, { signal })).rejects.toThrow(ItemError);
  });
});

describe('probeBlobKey', () => {
  it('tries the target first, so a current blob costs one call and never touches the old key', async () => {
    const { kms, calls } = fakeKms();

    const k = await probeBlobKey(kms, Buffer.from(`${NEW}|m1`), { from: [OLD], to: NEW }, { signal });

    expect(k).toEqual({ state: 'current', keyArn: NEW });
    expect(calls.map((c) => c.sourceKeyId)).toEqual([NEW]);
  });

  it('finds old-key and other', async () => {
    const { kms } = fakeKms();

    expect(await probeBlobKey(kms, Buffer.from(`${OLD}|m1`), { from: [OLD], to: NEW }, { signal })).toEqual({ state: 'old-key', keyArn: OLD });
    expect((await probeBlobKey(kms, Buffer.from(`${OTHER}|m1`), { from: [OLD], to: NEW }, { signal })).state).toBe('other');
  });
});
