import { describe, expect, it } from 'vitest';
import { ItemError, MigrationFatalError, RetryableError } from '@rekey/core';
import { ConflictError, classifyPgError, classifyS3Error } from '../src/errors.js';

const TARGET = 'arn:aws:kms:us-east-1:000000000000:key/11111111-1111-1111-1111-111111111111';
const SOURCE = 'arn:aws:kms:us-east-1:000000000000:key/22222222-2222-2222-2222-222222222222';

function s3Err(name: string, status: number, message = name): Error {
  return Object.assign(new Error(message), { name, $metadata: { httpStatusCode: status } });
}

const ctx = { op: 'CopyObject', bucket: 'b', key: 'k', targetKey: TARGET, sourceKey: SOURCE };

describe('classifyS3Error', () => {
  it.each([
    ['SlowDown', 503],
    ['InternalError', 500],
    ['ServiceUnavailable', 503],
    ['RequestTimeout', 400],
  ])('%s (%i) is retryable', (name, status) => {
    expect(classifyS3Error(s3Err(name, status), ctx)).toBeInstanceOf(RetryableError);
  });

  it('a dropped connection is retryable', () => {
    const err = Object.assign(new Error('socket hang up'), { code: 'ECONNRESET' });
    expect(classifyS3Error(err, ctx)).toBeInstanceOf(RetryableError);
  });

  it('NoSuchKey and a HEAD 404 are gone', () => {
    for (const e of [s3Err('NoSuchKey', 404), s3Err('NotFound', 404), s3Err('NoSuchVersion', 404)]) {
      const c = classifyS3Error(e, ctx);
      expect(c).toBeInstanceOf(ItemError);
      expect((c as ItemError).outcome).toBe('gone');
    }
  });

  it('412 PreconditionFailed and 409 ConditionalRequestConflict are conflicts', () => {
    expect(classifyS3Error(s3Err('PreconditionFailed', 412), ctx)).toBeInstanceOf(ConflictError);
    expect(classifyS3Error(s3Err('ConditionalRequestConflict', 409), ctx)).toBeInstanceOf(ConflictError);
  });

  it('NoSuchBucket and AccessDenied on the bucket are fatal', () => {
    expect(classifyS3Error(s3Err('NoSuchBucket', 404), ctx)).toBeInstanceOf(MigrationFatalError);
    expect(classifyS3Error(s3Err('AccessDenied', 403, 'Access Denied'), ctx)).toBeInstanceOf(MigrationFatalError);
  });

  it('a KMS failure naming the target key is fatal', () => {
    const c = classifyS3Error(s3Err('KMS.DisabledException', 400, `${TARGET} is disabled.`), ctx);
    expect(c).toBeInstanceOf(MigrationFatalError);
    expect(c.message).toContain('target key');
  });

  it('a KMS failure naming the item key fails only the item', () => {
    const c = classifyS3Error(s3Err('KMS.DisabledException', 400, `${SOURCE} is disabled.`), ctx);
    expect(c).toBeInstanceOf(ItemError);
    expect((c as ItemError).outcome).toBe('failed');
  });

  it.each([
    ['naming the target key', `Rate exceeded for key ${TARGET}`],
    ['naming the item key', `Rate exceeded for key ${SOURCE}`],
    ['naming no key', 'Rate exceeded'],
  ])('KMS throttling passed on by S3 is retryable, %s', (_, message) => {
    for (const code of ['KMS.ThrottlingException', 'KMS.LimitExceededException']) {
      const c = classifyS3Error(s3Err(code, 400, message), ctx);
      expect(c).toBeInstanceOf(RetryableError);
      expect(c.code).toBe(code);
    }
  });

  it('AccessDenied on the target key (by id) is fatal', () => {
    const c = classifyS3Error(s3Err('AccessDenied', 403, 'not authorized to perform kms:GenerateDataKey on resource 11111111-1111-1111-1111-111111111111'), ctx);
    expect(c).toBeInstanceOf(MigrationFatalError);
  });

  it('InvalidRequest fails the item with its code', () => {
    const c = classifyS3Error(s3Err('InvalidRequest', 400, 'bad'), ctx);
    expect(c).toBeInstanceOf(ItemError);
    expect((c as ItemError).outcome).toBe('failed');
    expect(c.code).toBe('InvalidRequest');
    expect(c.message).toBe('CopyObject s3://b/k: InvalidRequest: bad');
  });
});

describe('classifyPgError', () => {
  const t = { op: 'SELECT', table: 'public.t' };
  const pgErr = (code: string, message = 'x') => Object.assign(new Error(message), { code });

  it('undefined table, column and schema are fatal', () => {
    for (const code of ['42P01', '42703', '3F000', '42501']) expect(classifyPgError(pgErr(code), t)).toBeInstanceOf(MigrationFatalError);
  });

  it('connection errors, serialization failures and deadlocks are retryable', () => {
    for (const e of [pgErr('08006'), pgErr('40001'), pgErr('40P01'), pgErr('57P01'), pgErr('ECONNREFUSED', 'connect ECONNREFUSED'), new Error('Connection terminated unexpectedly')]) {
      expect(classifyPgError(e, t)).toBeInstanceOf(RetryableError);
    }
  });

  it('bad data in one row fails the item', () => {
    const c = classifyPgError(pgErr('22P02', 'invalid input syntax'), t);
    expect(c).toBeInstanceOf(ItemError);
    expect((c as ItemError).outcome).toBe('failed');
  });
});
