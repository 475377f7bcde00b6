import { describe, expect, it } from 'vitest';
import { EnvelopeError } from '../src/errors.js';
import { buildS3ecMetadata, decodeMimeWords, parseS3ecMetadata, s3ecMatDesc, contextOfMatDesc } from '../src/s3ec.js';

function valid(): Record<string, string> {
  return buildS3ecMetadata({
    wrappedKey: Buffer.alloc(40, 1),
    iv: Buffer.alloc(12, 2),
    matDesc: s3ecMatDesc({ tenant: 'é-1' }),
    plaintextLength: 10,
  });
}

function codeOf(fn: () => unknown): string {
  try {
    fn();
    return 'no-error';
  } catch (e) {
    return e instanceof EnvelopeError ? e.code : 'foreign-error';
  }
}

describe('S3EC v2 metadata', () => {
  it('writes exactly the V2 keys with kms+context, AES/GCM/NoPadding and a 128-bit tag', () => {
    const m = valid();
    expect(Object.keys(m).sort()).toEqual(
      ['x-amz-cek-alg', 'x-amz-iv', 'x-amz-key-v2', 'x-amz-matdesc', 'x-amz-tag-len', 'x-amz-unencrypted-content-length', 'x-amz-wrap-alg'].sort(),
    );
    expect(m['x-amz-wrap-alg']).toBe('kms+context');
    expect(m['x-amz-cek-alg']).toBe('AES/GCM/NoPadding');
    expect(m['x-amz-tag-len']).toBe('128');
    expect(Buffer.from(m['x-amz-iv']!, 'base64')).toHaveLength(12);
    expect(JSON.parse(m['x-amz-matdesc']!)).toEqual({ tenant: 'é-1', 'aws:x-amz-cek-alg': 'AES/GCM/NoPadding' });
  });

  it('writes the matdesc as ASCII-only JSON so it is a valid header value', () => {
    expect(valid()['x-amz-matdesc']).toMatch(/^[\x20-\x7e]+$/);
  });

  it('parses what it writes', () => {
    const parsed = parseS3ecMetadata(valid());
    expect(parsed.wrappedKey).toEqual(Buffer.alloc(40, 1));
    expect(parsed.iv).toEqual(Buffer.alloc(12, 2));
    expect(contextOfMatDesc(parsed.matDesc)).toEqual({ tenant: 'é-1' });
    expect(parsed.unencryptedContentLength).toBe(10);
  });

  it('refuses the reserved context keys aws:x-amz-cek-alg and kms_cmk_id', () => {
    expect(codeOf(() => s3ecMatDesc({ 'aws:x-amz-cek-alg': 'AES/GCM/NoPadding' }))).toBe('invalid-argument');
    expect(codeOf(() => s3ecMatDesc({ kms_cmk_id: 'k' }))).toBe('invalid-argument');
  });

  it('reports V1 and V3 objects as unknown-version and mixed formats as malformed', () => {
    expect(codeOf(() => parseS3ecMetadata({ 'x-amz-key': 'AAAA', 'x-amz-iv': 'AAAA', 'x-amz-matdesc': '{}' }))).toBe('unknown-version');
    expect(codeOf(() => parseS3ecMetadata({ 'x-amz-3': 'AAAA', 'x-amz-c': '115', 'x-amz-d': 'AA==', 'x-amz-i': 'AA==' }))).toBe('unknown-version');
    expect(codeOf(() => parseS3ecMetadata({ ...valid(), 'x-amz-key': 'AAAA' }))).toBe('malformed');
  });

  it('reports an object without S3EC metadata as malformed', () => {
    expect(codeOf(() => parseS3ecMetadata({}))).toBe('malformed');
    expect(codeOf(() => parseS3ecMetadata(undefined))).toBe('malformed');
  });

  it('refuses legacy and unknown algorithms', () => {
    expect(codeOf(() => parseS3ecMetadata({ ...valid(), 'x-amz-wrap-alg': 'kms' }))).toBe('unsupported-algorithm');
    expect(codeOf(() => parseS3ecMetadata({ ...valid(), 'x-amz-cek-alg': 'AES/CBC/PKCS5Padding' }))).toBe('unsupported-algorithm');
    expect(codeOf(() => parseS3ecMetadata({ ...valid(), 'x-amz-tag-len': '96' }))).toBe('unsupported-algorithm');
  });

  it('reports missing or invalid fields as malformed', () => {
    for (const k of ['x-amz-iv', 'x-amz-matdesc', 'x-amz-tag-len', 'x-amz-cek-alg', 'x-amz-wrap-alg']) {
      const m = valid();
      delete m[k];
      expect(codeOf(() => parseS3ecMetadata(m)), k).toBe('malformed');
    }
    expect(codeOf(() => parseS3ecMetadata({ ...valid(), 'x-amz-iv': 'not base64!' }))).toBe('malformed');
    expect(codeOf(() => parseS3ecMetadata({ ...valid(), 'x-amz-iv': Buffer.alloc(16).toString('base64') }))).toBe('malformed');
    expect(codeOf(() => parseS3ecMetadata({ ...valid(), 'x-amz-key-v2': '' }))).toBe('malformed');
    expect(codeOf(() => parseS3ecMetadata({ ...valid(), 'x-amz-matdesc': '{"a":1}' }))).toBe('malformed');
    expect(codeOf(() => parseS3ecMetadata({ ...valid(), 'x-amz-matdesc': '[]' }))).toBe('malformed');
    expect(codeOf(() => parseS3ecMetadata({ ...valid(), 'x-amz-matdesc': '{"a":"b"}' }))).toBe('malformed');
    expect(codeOf(() => parseS3ecMetadata({ ...valid(), 'x-amz-unencrypted-content-length': '-1' }))).toBe('malformed');
  });

  it('decodes RFC 2047 encoded words, including a character split across two words', () => {
    const json = '{"k":"é"}';
    const b = Buffer.from(json, 'utf8');
    expect(decodeMimeWords(`=?UTF-8?B?${b.toString('base64')}?=`)).toBe(json);
    const cut = b.indexOf(0xc3) + 1;
    expect(decodeMimeWords(`=?UTF-8?B?${b.subarray(0, cut).toString('base64')}?= =?UTF-8?B?${b.subarray(cut).toString('base64')}?=`)).toBe(json);
    expect(decodeMimeWords('=?UTF-8?Q?=7B=22k=22:=22=C3=A9=22=7D?=')).toBe(json);
    expect(decodeMimeWords('{"plain":"json"}')).toBe('{"plain":"json"}');
  });
});
