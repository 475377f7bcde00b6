import { describe, expect, it } from 'vitest';
import { InvalidTransitionError, ItemError, MigrationFatalError, RekeyError, RetryableError, ValidationError, errorKind } from '../src/errors.js';

describe('errors', () => {
  it('behaviour-steering errors carry the AWS code, their kind and the cause', () => {
    const cause = new Error('socket hang up');
    const retry = new RetryableError('ThrottlingException', 'KMS ReEncrypt throttled', { cause });
    const item = new ItemError('InvalidCiphertextException', 'not a KMS ciphertext', { outcome: 'not-in-scope' });
    const fatal = new MigrationFatalError('AccessDeniedException', 'no kms:ReEncryptTo on the target key');

    expect(retry).toMatchObject({ name: 'RetryableError', code: 'ThrottlingException', kind: 'retryable', cause });
    expect(item).toMatchObject({ name: 'ItemError', code: 'InvalidCiphertextException', kind: 'item', outcome: 'not-in-scope' });
    expect(fatal).toMatchObject({ name: 'MigrationFatalError', kind: 'fatal', message: 'no kms:ReEncryptTo on the target key' });
    expect([retry, item, fatal].every((e) => e instanceof RekeyError && e instanceof Error)).toBe(true);
    expect('cause' in fatal).toBe(false);
  });

  it('errorKind classifies only the three steering types', () => {
    expect(errorKind(new RetryableError('x', 'y'))).toBe('retryable');
    expect(errorKind(new ItemError('x', 'y', { outcome: 'gone' }))).toBe('item');
    expect(errorKind(new MigrationFatalError('x', 'y'))).toBe('fatal');
    expect(errorKind(new ValidationError(['a: b']))).toBeUndefined();
    expect(errorKind(new Error('plain'))).toBeUndefined();
    expect(errorKind('string')).toBeUndefined();
  });

  it('ValidationError joins its problems one per line', () => {
    const err = new ValidationError(['a: bad', 'b: worse']);

    expect(err.message).toBe('a: bad\nb: worse');
    expect(err.code).toBe('validation-failed');
    expect(err.problems).toEqual(['a: bad', 'b: worse']);
  });

  it('InvalidTransitionError names both states', () => {
    expect(new InvalidTransitionError('created', 'ready').message).toBe('cannot move a migration from created to ready');
  });
});
