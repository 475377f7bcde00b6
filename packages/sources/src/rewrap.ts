/**
 * Moving one KMS ciphertext blob (a wrapped data key or a raw blob) to the target key with
 * ReEncrypt only, when the blob's key is not known up front.
 *
 * Why SourceKeyId is always set: KMS could tell us the key of a symmetric blob if we left
 * SourceKeyId out, but then any blob in the source (one under another team's key, another
 * migration's old key, a key of a foreign account we happen to be allowed to use) would make the
 * fleet use that key. That use lands in the key's CloudTrail and GetKeyLastUsage, which is exactly
 * what another migration's gate reads to decide that an old key is idle, and the fleet's IAM
 * policy would need `kms:ReEncryptFrom` on every key. With SourceKeyId set, KMS refuses
 * (IncorrectKeyException) before using any key we did not name, so the fleet only ever touches the
 * migration's own keys. The price is a second call for items that are not under a `from` key:
 * one ReEncrypt with SourceKeyId = the target tells `already-current` from `not-in-scope`.
 * Items under the single `from` key (the bulk of a migration) cost exactly one ReEncrypt.
 */
import { ItemError } from '@rekey/core';
import type { KeyPlan } from '@rekey/core';
import type { SourceKms } from './types.js';

/** What happened when a blob was offered to KMS. */
export type RewrapResult =
  | { readonly kind: 'rewrapped'; readonly ciphertextBlob: Uint8Array; readonly fromKey: string; readonly toKey: string }
  | { readonly kind: 'already-current'; readonly keyArn: string }
  | { readonly kind: 'not-in-scope'; readonly keyArn?: string; readonly reason: string };

/** The encryption contexts of one blob. */
export interface BlobContext {
  readonly encryptionContext?: Readonly<Record<string, string>>;
}

function isIncorrectKey(err: unknown): boolean {
  return err instanceof ItemError && err.code === 'IncorrectKeyException';
}

/**
 * Re-encrypts `blob` from whichever `from` key protects it to `plan.to`, trying `hint` first when
 * the caller knows the key (a key-id column, an envelope header). Returns `already-current` or
 * `not-in-scope` when the blob is under the target or another key; other KMS errors are thrown as
 * classified by the gateway.
 */
export async function rewrapBlob(
  kms: SourceKms,
  blob: Uint8Array,
  plan: KeyPlan,
  ctx: BlobContext & { readonly signal: AbortSignal; readonly hint?: string },
): Promise<RewrapResult> {
  const context = ctx.encryptionContext === undefined ? {} : { ...ctx.encryptionContext };
  const call = (sourceKeyId: string) =>
    kms.reEncrypt(
      {
        ciphertextBlob: blob,
        sourceKeyId,
        destinationKeyId: plan.to,
        ...(ctx.encryptionContext !== undefined && { sourceEncryptionContext: context, destinationEncryptionContext: context }),
      },
      ctx.signal,
    );

  if (plan.refresh === true) {
    try {
      const r = await call(plan.to);
      // Same material on both sides: the blob already uses the key's current material, so
      // writing the new ciphertext would change bytes for nothing.
      if (r.sourceKeyMaterialId !== undefined && r.sourceKeyMaterialId === r.destinationKeyMaterialId) {
        return { kind: 'already-current', keyArn: r.sourceKeyId };
      }
      return { kind: 'rewrapped', ciphertextBlob: r.ciphertextBlob, fromKey: r.sourceKeyId, toKey: r.keyId };
    } catch (err) {
      if (isIncorrectKey(err)) return { kind: 'not-in-scope', reason: 'the blob is not under the key being refreshed' };
      throw err;
    }
  }

  const candidates = [...plan.from];
  if (ctx.hint !== undefined && candidates.includes(ctx.hint)) {
    candidates.splice(candidates.indexOf(ctx.hint), 1);
    candidates.unshift(ctx.hint);
  }
  for (const from of candidates) {
    try {
      const r = await call(from);
      return { kind: 'rewrapped', ciphertextBlob: r.ciphertextBlob, fromKey: r.sourceKeyId, toKey: r.keyId };
    } catch (err) {
      if (!isIncorrectKey(err)) throw err;
    }
  }
  try {
    const r = await call(plan.to);
    return { kind: 'already-current', keyArn: r.sourceKeyId };
  } catch (err) {
    if (isIncorrectKey(err)) return { kind: 'not-in-scope', reason: 'the blob is under a key that is neither a from key nor the target' };
    throw err;
  }
}

/** What verify mode learned about a blob's key. */
export type BlobKeyState =
  | { readonly state: 'current'; readonly keyArn: string }
  | { readonly state: 'old-key'; readonly keyArn: string }
  | { readonly state: 'other'; readonly reason: string };

/**
 * Finds which of the migration's keys protects `blob` without writing anything: ReEncrypt calls
 * whose results are discarded, SourceKeyId always set (see the module comment). The target is
 * tried first because verify runs after the migration, when most blobs are already current, and
 * so that a verify pass does not touch the old keys for items that left them.
 */
export async function probeBlobKey(
  kms: SourceKms,
  blob: Uint8Array,
  plan: KeyPlan,
  ctx: BlobContext & { readonly signal: AbortSignal },
): Promise<BlobKeyState> {
  const context = ctx.encryptionContext === undefined ? undefined : { ...ctx.encryptionContext };
  const tryKey = async (keyId: string) => {
    try {
      return await kms.reEncrypt(
        {
          ciphertextBlob: blob,
          sourceKeyId: keyId,
          destinationKeyId: keyId,
          ...(context !== undefined && { sourceEncryptionContext: context, destinationEncryptionContext: context }),
        },
        ctx.signal,
      );
    } catch (err) {
      if (isIncorrectKey(err)) return undefined;
      throw err;
    }
  };
  const onTarget = await tryKey(plan.to);
  if (onTarget !== undefined) {
    if (plan.refresh === true && onTarget.sourceKeyMaterialId !== undefined && onTarget.sourceKeyMaterialId !== onTarget.destinationKeyMaterialId) {
      return { state: 'old-key', keyArn: onTarget.sourceKeyId };
    }
    return { state: 'current', keyArn: onTarget.sourceKeyId };
  }
  for (const from of plan.from) {
    if (from === plan.to) continue;
    const r = await tryKey(from);
    if (r !== undefined) return { state: 'old-key', keyArn: r.sourceKeyId };
  }
  return { state: 'other', reason: 'the blob is under a key that is neither a from key nor the target' };
}
