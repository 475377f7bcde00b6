import { DisableKeyCommand, EnableKeyCommand } from '@aws-sdk/client-kms';
import { decodeEnvelope } from '@rekey/core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createEnvelopeClient, EnvelopeError, type EnvelopeClient } from '../src/index.js';
import { kmsFixture, type KmsFixture } from './helpers/aws.js';

const context = { table: 'users', column: 'ssn', id: '42' };

async function codeOf(p: Promise<unknown>): Promise<string> {
  try {
    await p;
    return 'no-error';
  } catch (e) {
    return e instanceof EnvelopeError ? e.code : `foreign: ${String(e)}`;
  }
}

describe('envelope client against aws-local KMS', () => {
  let f: KmsFixture;
  const clients: EnvelopeClient[] = [];
  const client = (opts: Partial<Parameters<typeof createEnvelopeClient>[0]> = {}) => {
    const c = createEnvelopeClient({ kms: { client: f.kms }, alias: f.alias, staleTtlMs: 0, ...opts });
    clients.push(c);
    return c;
  };

  beforeAll(async () => {
    f = await kmsFixture();
  });
  afterAll(async () => {
    for (const c of clients) await c.close();
    await f?.close();
  });

  it('round-trips through the alias and names the key ARN in the envelope', async () => {
    const envelope = client();

    const blob = await envelope.encrypt('123-45-6789', { keyId: f.alias, context });
    const out = await envelope.decrypt(blob, { context });

    expect(out.plaintext.toString()).toBe('123-45-6789');
    expect(out.keyArn).toBe(f.keyA);
    expect(out.stale).toBe(false);
    expect(out.keyMaterialId).toMatch(/^[0-9a-f]{64}$/);
    expect(decodeEnvelope(blob).keyArn).toBe(f.keyA);
  });

  it('uses a fresh IV and a fresh data key for every encrypt when the cache is off', async () => {
    const envelope = client();

    const a = decodeEnvelope(await envelope.encrypt('same', { keyId: f.alias, context }));
    const b = decodeEnvelope(await envelope.encrypt('same', { keyId: f.alias, context }));

    expect(a.iv.equals(b.iv)).toBe(false);
    expect(a.wrappedKey.equals(b.wrappedKey)).toBe(false);
  });

  it('reports wrong-context for a different context', async () => {
    const envelope = client();
    const blob = await envelope.encrypt('x', { keyId: f.alias, context });

    expect(await codeOf(envelope.decrypt(blob, { context: { ...context, id: '43' } }))).toBe('wrong-context');
    expect(await codeOf(envelope.decrypt(blob, {}))).toBe('wrong-context');
  });

  it('reports key-disabled when the key is disabled', async () => {
    const envelope = client({ alias: undefined });
    const blob = await envelope.encrypt('x', { keyId: f.keyA, context });
    await f.kms.send(new DisableKeyCommand({ KeyId: f.keyA }));
    try {
      expect(await codeOf(envelope.decrypt(blob, { context }))).toBe('key-disabled');
      expect(await codeOf(envelope.encrypt('y', { keyId: f.keyA, context }))).toBe('key-disabled');
    } finally {
      await f.kms.send(new EnableKeyCommand({ KeyId: f.keyA }));
    }
  });

  it('reports access-denied when a policy denies Decrypt', async (t) => {
    if (!f.ep.local) t.skip();
    const envelope = client({ alias: undefined });
    const blob = await envelope.encrypt('x', { keyId: f.keyA, context });
    const remove = f.ep.local!.controls.addDenyRule({ service: 'kms', operation: 'Decrypt', resource: f.keyA });
    try {
      expect(await codeOf(envelope.decrypt(blob, { context }))).toBe('access-denied');
    } finally {
      remove();
    }
  });

  it('flips stale after the alias moves, and rewrap keeps the ciphertext', async () => {
    const envelope = client();
    const blob = await envelope.encrypt('rotate me', { keyId: f.alias, context });
    expect((await envelope.decrypt(blob, { context })).stale).toBe(false);

    await f.moveAlias(f.keyB);
    try {
      const read = await envelope.decrypt(blob, { context });
      expect(read.stale).toBe(true);

      f.ep.local?.controls.resetCounters();
      const rewrapped = await envelope.rewrap(blob, { to: f.alias, context });
      const counters = f.ep.local?.controls.getCounters();
      if (counters) {
        expect(counters['kms:ReEncrypt']?.calls).toBe(1);
        expect(counters['kms:Decrypt']).toBeUndefined();
        expect(counters['kms:GenerateDataKey']).toBeUndefined();
      }

      const before = decodeEnvelope(blob);
      const after = decodeEnvelope(rewrapped);
      expect(after.keyArn).toBe(f.keyB);
      expect(after.iv.equals(before.iv) && after.ciphertext.equals(before.ciphertext) && after.tag.equals(before.tag)).toBe(true);
      expect(after.wrappedKey.equals(before.wrappedKey)).toBe(false);
      const again = await envelope.decrypt(rewrapped, { context });
      expect(again.plaintext.toString()).toBe('rotate me');
      expect(again.keyArn).toBe(f.keyB);
      expect(again.stale).toBe(false);
    } finally {
      await f.moveAlias(f.keyA);
    }
  });

  it("onStale 'rewrap' returns the envelope rewrapped under the alias's new key", async () => {
    const envelope = client();
    const blob = await envelope.encrypt('on access', { keyId: f.alias, context });
    await f.moveAlias(f.keyB);
    try {
      const out = await envelope.decrypt(blob, { context, onStale: 'rewrap' });

      expect(out.stale).toBe(true);
      expect(out.plaintext.toString()).toBe('on access');
      expect(out.rewrapped).toBeInstanceOf(Buffer);
      expect(decodeEnvelope(out.rewrapped!).keyArn).toBe(f.keyB);
      const next = await envelope.decrypt(out.rewrapped!, { context, onStale: 'rewrap' });
      expect(next.stale).toBe(false);
      expect(next.rewrapped).toBeUndefined();
      expect(envelope.stats()).toMatchObject({ staleReads: 1, rewraps: 1 });
    } finally {
      await f.moveAlias(f.keyA);
    }
  });

  it("onStale 'rewrap' still returns the plaintext, with rewrapError, when the new key denies ReEncrypt", async (t) => {
    if (!f.ep.local) t.skip();
    const envelope = client();
    const blob = await envelope.encrypt('still readable', { keyId: f.alias, context });
    await f.moveAlias(f.keyB);
    const remove = f.ep.local!.controls.addDenyRule({ service: 'kms', operation: 'ReEncrypt' });
    try {
      const out = await envelope.decrypt(blob, { context, onStale: 'rewrap' });

      expect(out.plaintext.toString()).toBe('still readable');
      expect(out.rewrapped).toBeUndefined();
      expect(out.rewrapError?.code).toBe('access-denied');
      expect(envelope.stats().rewrapFailures).toBe(1);
    } finally {
      remove();
      await f.moveAlias(f.keyA);
    }
  });

  it('keeps the resolved alias target for staleTtlMs', async () => {
    const envelope = client({ staleTtlMs: 60_000 });
    const blob = await envelope.encrypt('x', { keyId: f.alias, context });
    expect((await envelope.decrypt(blob, { context })).stale).toBe(false);
    await f.moveAlias(f.keyB);
    try {
      expect((await envelope.decrypt(blob, { context })).stale).toBe(false);
      expect(await client({ staleTtlMs: 60_000 }).isStale(f.keyA)).toBe(true);
    } finally {
      await f.moveAlias(f.keyA);
    }
  });

  it('with the cache on, reuses one data key up to maxUses and one unwrap per envelope', async (t) => {
    if (!f.ep.local) t.skip();
    const envelope = client({ cache: { maxEntries: 10, maxAgeMs: 60_000, maxUses: 3 } });
    f.ep.local!.controls.resetCounters();

    const blobs = [];
    for (let i = 0; i < 5; i++) blobs.push(await envelope.encrypt(`m${i}`, { keyId: f.alias, context }));
    const gdk = f.ep.local!.controls.getCounters()['kms:GenerateDataKey']?.calls;
    // Uses: blob 0-2 share one key (3 uses), 3-4 a second one.
    expect(gdk).toBe(2);
    expect(decodeEnvelope(blobs[0]!).wrappedKey.equals(decodeEnvelope(blobs[2]!).wrappedKey)).toBe(true);
    expect(decodeEnvelope(blobs[0]!).iv.equals(decodeEnvelope(blobs[1]!).iv)).toBe(false);

    f.ep.local!.controls.resetCounters();
    for (let i = 0; i < 2; i++) expect((await envelope.decrypt(blobs[3]!, { context })).plaintext.toString()).toBe('m3');
    expect(f.ep.local!.controls.getCounters()['kms:Decrypt']?.calls).toBe(1);
    // Hits: encrypts 1, 2 and 4, then the second decrypt.
    expect(envelope.stats().cache).toMatchObject({ hits: 4 });
  });

  it('refuses bad arguments with invalid-argument', async () => {
    const envelope = client();
    expect(await codeOf(envelope.encrypt('x', { keyId: '', context }))).toBe('invalid-argument');
    expect(await codeOf(envelope.encrypt(42 as never, { keyId: f.alias }))).toBe('invalid-argument');
    expect(await codeOf(envelope.decrypt(Buffer.alloc(1), { onStale: 'sometimes' as never }))).toBe('invalid-argument');
    expect(await codeOf(envelope.decrypt(Buffer.alloc(1), { onStale: 'enqueue', item: { kind: 'row', pk: [1] } }))).toBe('invalid-argument');
    expect(() => createEnvelopeClient({ kms: { client: {} as never } })).toThrow(EnvelopeError);
  });
});
