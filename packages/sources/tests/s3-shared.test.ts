import { describe, expect, it } from 'vitest';
import { ItemError, RetryableError } from '@rekey/core';
import { sendS3 } from '../src/s3-shared.js';
import type { SourceKms } from '../src/types.js';

const ctx = { op: 'CopyObject', bucket: 'b', key: 'k' };

function s3Err(name: string, status: number): Error {
  return Object.assign(new Error(name), { name, $metadata: { httpStatusCode: status } });
}

/** A gateway that records what sendS3 asked of it, in order. */
function recordingKms() {
  const log: string[] = [];
  const kms: SourceKms = {
    reEncrypt: () => Promise.reject(new Error('not used')),
    acquire: async () => {
      log.push('token');
    },
    reportS3Call: (outcome) => {
      log.push(outcome);
    },
  };
  return { kms, log };
}

/** An S3 send that fails with `errors` in turn, then answers `'done'`. */
function failing(errors: Error[]) {
  let calls = 0;
  const fn = async () => {
    calls++;
    const err = errors.shift();
    if (err) throw err;
    return 'done';
  };
  return { fn, calls: () => calls };
}

describe('sendS3', () => {
  it('takes the request\'s KMS tokens before every attempt and reports each throttle and the success', async () => {
    const { kms, log } = recordingKms();
    const s3 = failing([s3Err('SlowDown', 503), s3Err('SlowDown', 503)]);

    const out = await sendS3(s3.fn, ctx, new AbortController().signal, { kms, requests: 2 });

    expect(out).toBe('done');
    expect(s3.calls()).toBe(3);
    expect(log).toEqual(['token', 'token', 'throttled', 'token', 'token', 'throttled', 'token', 'token', 'ok']);
  });

  it('gives up after 3 attempts with the classified retryable error', async () => {
    const { kms, log } = recordingKms();
    const s3 = failing([s3Err('InternalError', 500), s3Err('InternalError', 500), s3Err('InternalError', 500), s3Err('InternalError', 500)]);

    const err = await sendS3(s3.fn, ctx, new AbortController().signal, { kms, requests: 1 }).catch((e: unknown) => e);

    expect(err).toBeInstanceOf(RetryableError);
    expect((err as RetryableError).code).toBe('InternalError');
    expect(s3.calls()).toBe(3);
    // A 500 is not a throttle: the limiter hears nothing, but every attempt had its token.
    expect(log).toEqual(['token', 'token', 'token']);
  });

  it('does not retry what retrying cannot fix', async () => {
    const s3 = failing([s3Err('NoSuchKey', 404)]);

    const err = await sendS3(s3.fn, ctx, new AbortController().signal).catch((e: unknown) => e);

    expect(err).toBeInstanceOf(ItemError);
    expect((err as ItemError).outcome).toBe('gone');
    expect(s3.calls()).toBe(1);
  });

  it('an abort during the backoff ends the wait with the abort reason, and no further attempt is made', async () => {
    const abort = new AbortController();
    const s3 = failing([s3Err('SlowDown', 503), s3Err('SlowDown', 503), s3Err('SlowDown', 503)]);
    const pending = sendS3(s3.fn, ctx, abort.signal).catch((e: unknown) => e);
    await new Promise((r) => setTimeout(r, 5));
    abort.abort(new Error('worker shutting down'));

    expect(await pending).toEqual(new Error('worker shutting down'));
    expect(s3.calls()).toBe(1);
  });
});
