import { createHash } from 'node:crypto';
import { ItemError, MigrationFatalError, RetryableError } from '@rekey/core';
import { describe, expect, it } from 'vitest';
import { classifyKmsError, isThrottleError, safeMessage } from '../src/errors.js';
import { awsError, socketError } from './helpers.js';

const TARGET_ARN = 'arn:aws:kms:us-east-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab';

describe('classifyKmsError: retryable', () => {
  it.each([
    ['ThrottlingException', 400],
    ['LimitExceededException', 400],
    ['KMSInternalException', 500],
    ['DependencyTimeoutException', 503],
    ['KeyUnavailableException', 500],
    ['TooManyRequestsException', 429],
    ['SomethingNew', 503],
    ['SomethingElse', 429],
  ])('%s (HTTP %i) is retryable with its AWS name as code', (name, status) => {
    const err = classifyKmsError(awsError(name, 'x', status), { op: 'ReEncrypt' });
    expect(err).toBeInstanceOf(RetryableError);
    expect(err.code).toBe(name);
    expect(err.message).toMatch(/^KMS ReEncrypt: /);
  });

  it.each(['ECONNRESET', 'ETIMEDOUT', 'ECONNREFUSED', 'EPIPE', 'EAI_AGAIN'])('a socket error %s is retryable', (code) => {
    const err = classifyKmsError(socketError(code), { op: 'Decrypt' });
    expect(err).toBeInstanceOf(RetryableError);
    expect(err.code).toBe(code);
  });

  it('a socket hang up without a code is retryable', () => {
    expect(classifyKmsError(new Error('socket hang up'))).toBeInstanceOf(RetryableError);
  });

  it('a socket error wrapped as the cause of another error is retryable', () => {
    const wrapped = new Error('request failed', { cause: socketError('ECONNRESET') });
    expect(classifyKmsError(wrapped).code).toBe('ECONNRESET');
  });

  it('an SDK TimeoutError is retryable', () => {
    const err = Object.assign(new Error('Connection timed out after 1000 ms'), { name: 'TimeoutError' });
    expect(classifyKmsError(err)).toBeInstanceOf(RetryableError);
  });
});

describe('classifyKmsError: item errors', () => {
  it('IncorrectKeyException is not-in-scope', () => {
    const err = classifyKmsError(awsError('IncorrectKeyException'), { op: 'ReEncrypt' });
    expect(err).toBeInstanceOf(ItemError);
    expect((err as ItemError).outcome).toBe('not-in-scope');
  });

  it('InvalidCiphertextException fails the item', () => {
    const err = classifyKmsError(awsError('InvalidCiphertextException'), { op: 'ReEncrypt', keyRole: 'source' });
    expect(err).toBeInstanceOf(ItemError);
    expect((err as ItemError).outcome).toBe('failed');
    expect(err.code).toBe('InvalidCiphertextException');
  });

  it('ValidationException fails the item', () => {
    const err = classifyKmsError(awsError('ValidationException', '1 validation error detected'), { op: 'ReEncrypt' });
    expect(err).toBeInstanceOf(ItemError);
    expect((err as ItemError).outcome).toBe('failed');
  });

  it('an unknown 4xx error fails the item with its AWS name', () => {
    const err = classifyKmsError(awsError('InvalidGrantTokenException'), { op: 'ReEncrypt' });
    expect(err).toBeInstanceOf(ItemError);
    expect(err.code).toBe('InvalidGrantTokenException');
  });

  it('a non-AWS error fails the item instead of being swallowed', () => {
    const err = classifyKmsError(new TypeError('boom'), { op: 'ReEncrypt' });
    expect(err).toBeInstanceOf(ItemError);
    expect(err.message).toContain('boom');
  });
});

describe('classifyKmsError: key state depends on which key', () => {
  it.each(['DisabledException', 'KMSInvalidStateException', 'NotFoundException', 'InvalidKeyUsageException'])(
    '%s on the target key is fatal',
    (name) => {
      const err = classifyKmsError(awsError(name, `${TARGET_ARN} is disabled.`), { op: 'ReEncrypt', keyRole: 'target' });
      expect(err).toBeInstanceOf(MigrationFatalError);
      expect(err.message).toContain('target key');
      expect(err.message).toContain(TARGET_ARN);
    },
  );

  it.each(['DisabledException', 'KMSInvalidStateException', 'NotFoundException', 'InvalidKeyUsageException'])(
    '%s on the source key fails only the item',
    (name) => {
      const err = classifyKmsError(awsError(name), { op: 'ReEncrypt', keyRole: 'source' });
      expect(err).toBeInstanceOf(ItemError);
      expect((err as ItemError).outcome).toBe('failed');
    },
  );

  it('a key-state error with no known key role is fatal (pause and ask)', () => {
    expect(classifyKmsError(awsError('DisabledException'), { op: 'ReEncrypt' })).toBeInstanceOf(MigrationFatalError);
  });
});

describe('classifyKmsError: access denied', () => {
  it.each(['source', 'target', undefined] as const)('AccessDenied on ReEncrypt is fatal (key role %s)', (keyRole) => {
    const err = classifyKmsError(awsError('AccessDeniedException', 'User: x is not authorized to perform: kms:ReEncryptFrom'), {
      op: 'ReEncrypt',
      ...(keyRole && { keyRole }),
    });
    expect(err).toBeInstanceOf(MigrationFatalError);
    expect(err.message).toContain('kms:ReEncryptFrom');
  });

  it('AccessDenied on a Decrypt of the item key fails only the item', () => {
    const err = classifyKmsError(awsError('AccessDeniedException'), { op: 'Decrypt', keyRole: 'source' });
    expect(err).toBeInstanceOf(ItemError);
  });

  it('AccessDenied on GenerateDataKey under the target is fatal', () => {
    expect(classifyKmsError(awsError('AccessDeniedException'), { op: 'GenerateDataKey', keyRole: 'target' })).toBeInstanceOf(
      MigrationFatalError,
    );
  });

  it.each(['UnrecognizedClientException', 'ExpiredTokenException', 'InvalidSignatureException'])('%s (broken credentials) is fatal', (name) => {
    expect(classifyKmsError(awsError(name))).toBeInstanceOf(MigrationFatalError);
  });
});

describe('classifyKmsError: messages', () => {
  it('returns an already classified error unchanged', () => {
    const e = new RetryableError('X', 'y');
    expect(classifyKmsError(e)).toBe(e);
  });

  it('keeps the SDK error as the cause', () => {
    const sdk = awsError('ThrottlingException');
    expect(classifyKmsError(sdk).cause).toBe(sdk);
  });

  it('never puts a base64 run (ciphertext) or a newline into the message', () => {
    const blob = createHash('sha512').update('a ciphertext').digest('base64');
    const err = classifyKmsError(awsError('ValidationException', `bad value\n${blob}\nat line 2`), { op: 'ReEncrypt' });
    expect(err.message).not.toContain(blob);
    expect(err.message).not.toContain('\n');
    expect(err.message).toContain('[redacted]');
  });

  it('keeps key ARNs readable', () => {
    expect(safeMessage(`${TARGET_ARN} is disabled.`)).toBe(`${TARGET_ARN} is disabled.`);
  });

  it('bounds the message length', () => {
    expect(safeMessage('word '.repeat(500)).length).toBeLessThanOrEqual(300);
  });
});

describe('isThrottleError', () => {
  it('recognises ThrottlingException, 429 and a classified throttle', () => {
    expect(isThrottleError(awsError('ThrottlingException'))).toBe(true);
    expect(isThrottleError(awsError('Whatever', 'x', 429))).toBe(true);
    expect(isThrottleError(new RetryableError('ThrottlingException', 'x'))).toBe(true);
    expect(isThrottleError(awsError('KMSInternalException', 'x', 500))).toBe(false);
  });
});
