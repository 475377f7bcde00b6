import { describe, expect, it } from 'vitest';
import { classifyKmsError, EnvelopeError } from '../src/errors.js';
import { awsError } from './helpers/fake-aws.js';

describe('classifyKmsError', () => {
  const cases: Array<[unknown, string]> = [
    [awsError('InvalidCiphertextException'), 'wrong-context'],
    [awsError('IncorrectKeyException'), 'malformed'],
    [awsError('DisabledException'), 'key-disabled'],
    [awsError('KMSInvalidStateException'), 'key-disabled'],
    [awsError('NotFoundException'), 'key-not-found'],
    [awsError('AccessDeniedException'), 'access-denied'],
    [awsError('ThrottlingException'), 'kms-unavailable'],
    [awsError('KMSInternalException', 500), 'kms-unavailable'],
    [awsError('SomethingNew', 503), 'kms-unavailable'],
    [Object.assign(new Error('connect'), { code: 'ECONNREFUSED' }), 'kms-unavailable'],
    [awsError('ValidationException'), 'kms-error'],
    ['a string', 'kms-error'],
  ];
  for (const [err, code] of cases) {
    it(`maps ${(err as { name?: string }).name ?? String(err)} to ${code}`, () => {
      const out = classifyKmsError(err, 'Decrypt', 'arn:aws:kms:us-east-1:111122223333:key/k');
      expect(out).toBeInstanceOf(EnvelopeError);
      expect(out.code).toBe(code);
      expect(out.message).not.toContain('\n');
    });
  }

  it('marks only kms-unavailable as retryable', () => {
    expect(classifyKmsError(awsError('ThrottlingException'), 'Decrypt', undefined).retryable).toBe(true);
    expect(classifyKmsError(awsError('AccessDeniedException'), 'Decrypt', undefined).retryable).toBe(false);
  });
});
