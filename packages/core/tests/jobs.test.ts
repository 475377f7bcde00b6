import { describe, expect, it } from 'vitest';
import { ValidationError } from '../src/errors.js';
import { batchJobId, parseJob } from '../src/jobs.js';

const batch = {
  migrationId: 'm1',
  source: 'docs',
  page: 0,
  items: [
    { kind: 's3', key: 'a/b.txt', versionId: 'v1', etag: '"abc"', size: 12 },
    { kind: 'row', pk: ['tenant', 7] },
  ],
  mode: 'reencrypt',
};

function problemsOf(name: string, data: unknown): readonly string[] {
  try {
    parseJob(name, data);
  } catch (err) {
    expect(err).toBeInstanceOf(ValidationError);
    return (err as ValidationError).problems;
  }
  throw new Error('expected a ValidationError');
}

describe('parseJob', () => {
  it('returns a valid batch job as it is', () => {
    expect(parseJob('batch', batch)).toEqual(batch);
    expect(parseJob('verify', { ...batch, mode: 'verify' }).mode).toBe('verify');
  });

  it('returns a valid item job', () => {
    const job = { source: 'users', item: { kind: 'row', pk: [1] }, requestedAt: '2025-01-02T03:04:05.000Z' };

    expect(parseJob('item', job)).toEqual(job);
  });

  it('rejects a malformed batch naming the job and every problem', () => {
    const problems = problemsOf('batch', {
      migrationId: 'm1',
      source: 'docs',
      page: -1,
      items: [{ kind: 's3', key: '' }, { kind: 'row', pk: [] }, { kind: 'blob' }],
      mode: 'reencrypt',
      extra: 1,
    });

    expect(problems).toEqual([
      'batch job: page: Too small: expected number to be >=0',
      'batch job: items[0].key: must not be empty',
      'batch job: items[1].pk: must hold at least one primary key value',
      "batch job: items[2].kind: Invalid discriminator value. Expected 's3' | 'row'",
      'batch job: (root): Unrecognized key: "extra"',
    ]);
  });

  it('rejects an empty batch and one over 1000 items', () => {
    expect(problemsOf('batch', { ...batch, items: [] })).toEqual(['batch job: items: must hold at least one item']);
    const many = Array.from({ length: 1001 }, (_, i) => ({ kind: 's3', key: `k${i}` }));
    expect(problemsOf('batch', { ...batch, items: many })).toEqual(['batch job: items: must hold at most 1000 items']);
  });

  it('rejects a batch whose mode does not match its job name', () => {
    expect(problemsOf('verify', batch)).toEqual(['verify job: mode: must be verify for a verify job']);
  });

  it('rejects an item job without a valid time', () => {
    expect(problemsOf('item', { source: 'users', item: { kind: 'row', pk: [1] }, requestedAt: 'yesterday' })).toEqual([
      'item job: requestedAt: Invalid ISO datetime',
    ]);
  });

  it('rejects an unknown job name', () => {
    expect(problemsOf('purge', {})).toEqual(['job name "purge" is not one of batch, verify, item']);
  });

  it('rejects data that is not an object', () => {
    expect(problemsOf('batch', null)).toEqual(['batch job: (root): Invalid input: expected object, received null']);
  });
});

describe('batchJobId', () => {
  it('is deterministic and differs per mode, round and page', () => {
    expect(batchJobId('m1', 'docs', 3, 'reencrypt')).toBe('m1.docs.r1.3');
    expect(batchJobId('m1', 'docs', 3, 'verify', 2)).toBe('m1.docs.v2.3');
    expect(new Set([batchJobId('m1', 'docs', 0, 'reencrypt'), batchJobId('m1', 'docs', 0, 'verify'), batchJobId('m1', 'docs', 1, 'reencrypt'), batchJobId('m1', 'docs', 0, 'reencrypt', 2)]).size).toBe(4);
  });

  it('never contains ":" (BullMQ refuses it in custom ids) and is never an integer', () => {
    const id = batchJobId('123', '456', 7, 'verify', 9);

    expect(id).not.toContain(':');
    expect(`${Number.parseInt(id, 10)}`).not.toBe(id);
  });

  it('refuses a negative or fractional page', () => {
    expect(() => batchJobId('m1', 'docs', -1, 'reencrypt')).toThrow('batch page must be a non-negative integer, got -1');
    expect(() => batchJobId('m1', 'docs', 1.5, 'reencrypt')).toThrow(RangeError);
  });
});
