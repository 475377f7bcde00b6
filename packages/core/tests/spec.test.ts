import { describe, expect, it } from 'vitest';
import { ValidationError } from '../src/errors.js';
import { bucketNameProblem, checkKeyForMigration, checkKeyPlan, parseMigrationSpec, type KeyInfo } from '../src/spec.js';

const ARN_OLD = 'arn:aws:kms:us-east-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab';
const ARN_NEW = 'arn:aws:kms:us-east-1:111122223333:key/0987dcba-09fe-87dc-65ba-ab0987654321';

function problemsOf(input: unknown): readonly string[] {
  try {
    parseMigrationSpec(input);
  } catch (err) {
    expect(err).toBeInstanceOf(ValidationError);
    return (err as ValidationError).problems;
  }
  throw new Error('expected a ValidationError');
}

describe('parseMigrationSpec', () => {
  it('applies the defaults of options and of each source kind', () => {
    const spec = parseMigrationSpec({
      sources: [
        { name: 'docs', kind: 's3-sse-kms', bucket: 'docs-bucket' },
        { name: 'env-objs', kind: 's3-envelope', bucket: 'env.bucket', prefix: 'a/' },
        { name: 'users', kind: 'postgres', table: 'users', primaryKey: 'id', column: 'secret' },
      ],
      from: ['alias/old', ARN_OLD],
      to: 'alias/app',
    });

    expect(spec.options).toEqual({
      batchSize: 1000,
      concurrency: 16,
      dryRun: false,
      failureRateThreshold: 0.05,
      failureRateMinItems: 100,
      highWaterMark: 200,
      autoFinalize: false,
      quietWindowSeconds: 300,
      weight: 1,
      maxAttempts: 5,
    });
    expect(spec.sources[0]).toEqual({
      name: 'docs',
      kind: 's3-sse-kms',
      bucket: 'docs-bucket',
      includeVersions: false,
      strategy: 'update-encryption',
      multipartThresholdBytes: 5 * 1024 ** 3,
    });
    expect(spec.sources[2]).toMatchObject({ primaryKey: ['id'], format: 'kms-blob' });
  });

  it('keeps a composite primary key as a list and the given options', () => {
    const spec = parseMigrationSpec({
      id: 'm-1',
      sources: [{ name: 'orders', kind: 'postgres', schema: 'shop', table: 'orders', primaryKey: ['tenant', 'id'], column: 'card', format: 'rekey-envelope', context: { app: 'shop' } }],
      from: ['1234abcd-12ab-34cd-56ef-1234567890ab'],
      to: 'mrk-1234abcd12ab34cd56ef1234567890ab',
      options: { batchSize: 500, dryRun: true },
    });

    expect(spec.id).toBe('m-1');
    expect(spec.sources[0]).toMatchObject({ primaryKey: ['tenant', 'id'], format: 'rekey-envelope', context: { app: 'shop' } });
    expect(spec.options).toMatchObject({ batchSize: 500, dryRun: true, concurrency: 16 });
  });

  it('lists every bad field in one error, one path: reason line each', () => {
    const problems = problemsOf({
      id: 'Bad Id',
      sources: [
        { name: 'ok', kind: 's3-sse-kms', bucket: 'Bad_Bucket', strategy: 'move' },
        { name: 'pg', kind: 'postgres', table: 'drop table', primaryKey: [], column: '1col' },
        { name: 'x', kind: 'ftp' },
      ],
      from: ['not a key'],
      to: '',
      options: { batchSize: 0, concurrency: 1000, failureRateThreshold: 2, typo: true },
    });

    expect(problems).toEqual(
      expect.arrayContaining([
        expect.stringMatching(/^id: /),
        expect.stringMatching(/^sources\[0\]\.bucket: a bucket name may hold only/),
        expect.stringMatching(/^sources\[0\]\.strategy: /),
        expect.stringMatching(/^sources\[1\]\.table: must be an SQL identifier/),
        expect.stringMatching(/^sources\[1\]\.primaryKey/),
        expect.stringMatching(/^sources\[1\]\.column: /),
        expect.stringMatching(/^sources\[2\]\.kind: /),
        expect.stringMatching(/^from\[0\]: must be a KMS key id/),
        expect.stringMatching(/^to: must be a KMS key id/),
        expect.stringMatching(/^options\.batchSize: /),
        expect.stringMatching(/^options\.concurrency: /),
        expect.stringMatching(/^options\.failureRateThreshold: /),
        expect.stringMatching(/^options: Unrecognized key: "typo"/),
      ]),
    );
    expect(problems.every((p) => !p.includes('\n'))).toBe(true);
  });

  it('refuses duplicate source names', () => {
    const problems = problemsOf({
      sources: [
        { name: 'a', kind: 's3-envelope', bucket: 'one-bucket' },
        { name: 'a', kind: 's3-envelope', bucket: 'two-bucket' },
      ],
      from: ['alias/old'],
      to: 'alias/new',
    });

    expect(problems).toEqual(['sources[1].name: duplicate source name "a"']);
  });

  it('refuses a target that is also a from key, even alongside other problems', () => {
    const problems = problemsOf({
      sources: [{ name: 'a', kind: 's3-envelope', bucket: 'b' }],
      from: ['alias/app', 'alias/old'],
      to: 'alias/app',
    });

    expect(problems).toEqual([
      'sources[0].bucket: a bucket name must be 3-63 characters long',
      'to: the target key is also a from key (set refresh: true to move data to the current key material)',
    ]);
  });

  it('accepts a refresh migration only with from equal to [to]', () => {
    const base = { sources: [{ name: 'a', kind: 's3-envelope', bucket: 'bkt' }] };

    expect(parseMigrationSpec({ ...base, from: [ARN_NEW], to: ARN_NEW, refresh: true }).refresh).toBe(true);
    expect(problemsOf({ ...base, from: [ARN_OLD], to: ARN_NEW, refresh: true })).toEqual([
      'from: a refresh migration must have from equal to [to]',
    ]);
  });

  it('refuses context together with contextColumn, and the ciphertext column as a key column', () => {
    const problems = problemsOf({
      sources: [{ name: 'p', kind: 'postgres', table: 't', primaryKey: 'id', column: 'id', contextColumn: 'ctx', context: { a: 'b' } }],
      from: ['alias/old'],
      to: 'alias/new',
    });

    expect(problems).toEqual(['sources[0].context: set either context or contextColumn, not both', 'sources[0].column: must not be a primary key column']);
  });

  it('does not echo a database URL in its error', () => {
    const problems = problemsOf({
      sources: [{ name: 'p', kind: 'postgres', table: 't', primaryKey: 'id', column: 'c', databaseUrl: 'mysql://user:hunter2@db/x' }],
      from: ['alias/old'],
      to: 'alias/new',
    });

    expect(problems).toEqual(['sources[0].databaseUrl: must be a postgres:// or postgresql:// URL']);
    expect(problems.join()).not.toContain('hunter2');
  });

  it('throws a ValidationError for input that is not an object', () => {
    expect(problemsOf('migrate everything')).toEqual(['(root): Invalid input: expected object, received string']);
  });
});

describe('bucketNameProblem', () => {
  it.each([
    ['my-bucket.logs', null],
    ['ab', 'a bucket name must be 3-63 characters long'],
    ['My-Bucket', 'a bucket name may hold only lower-case letters, digits, "." and "-"'],
    ['-bucket', 'a bucket name must start and end with a letter or digit'],
    ['my..bucket', 'a bucket name must not contain two adjacent dots'],
    ['192.168.5.4', 'a bucket name must not be formatted as an IP address'],
    ['xn--bucket', 'a bucket name must not start with a prefix reserved by S3 (xn--, sthree-, amzn-s3-demo-)'],
    ['bucket-s3alias', 'a bucket name must not end with a suffix reserved by S3 (-s3alias, --ol-s3, .mrap, --x-s3)'],
  ])('%s', (name, expected) => {
    expect(bucketNameProblem(name)).toBe(expected);
  });
});

describe('checkKeyForMigration', () => {
  const key = (over: Partial<KeyInfo> = {}): KeyInfo => ({
    arn: ARN_OLD,
    keyId: '1234abcd-12ab-34cd-56ef-1234567890ab',
    state: 'Enabled',
    usage: 'ENCRYPT_DECRYPT',
    spec: 'SYMMETRIC_DEFAULT',
    origin: 'AWS_KMS',
    manager: 'CUSTOMER',
    multiRegion: false,
    ...over,
  });

  it('accepts an enabled symmetric customer managed pair', () => {
    expect(checkKeyForMigration('to', key({ arn: ARN_NEW }))).toBeNull();
    expect(checkKeyForMigration('from', key(), key({ arn: ARN_NEW }))).toBeNull();
  });

  it.each([
    ['from', { state: 'Disabled' }, 'the key is Disabled, not Enabled'],
    ['to', { state: 'PendingDeletion' }, 'the key is PendingDeletion, not Enabled'],
    ['to', { state: 'PendingImport', origin: 'EXTERNAL' }, 'the key is PendingImport, not Enabled'],
    ['from', { usage: 'SIGN_VERIFY', spec: 'RSA_2048' }, 'the key usage is SIGN_VERIFY, not ENCRYPT_DECRYPT'],
    ['to', { usage: 'GENERATE_VERIFY_MAC', spec: 'HMAC_256' }, 'the key usage is GENERATE_VERIFY_MAC, not ENCRYPT_DECRYPT'],
    ['to', { manager: 'AWS' }, 'the key is AWS managed; the target must be a customer managed key'],
  ] as const)('refuses a %s key with %o', (role, over, reason) => {
    expect(checkKeyForMigration(role, key(over))).toBe(reason);
  });

  it('refuses an asymmetric target for symmetric data', () => {
    expect(checkKeyForMigration('from', key(), key({ arn: ARN_NEW, spec: 'RSA_4096' }))).toBe(
      'the target key spec RSA_4096 cannot replace SYMMETRIC_DEFAULT; the target must be SYMMETRIC_DEFAULT',
    );
  });

  it('replaces an asymmetric key only with the same spec', () => {
    expect(checkKeyForMigration('from', key({ spec: 'RSA_2048' }), key({ arn: ARN_NEW, spec: 'RSA_2048' }))).toBeNull();
    expect(checkKeyForMigration('from', key({ spec: 'RSA_2048' }), key({ arn: ARN_NEW, spec: 'SYMMETRIC_DEFAULT' }))).toMatch(
      /cannot replace RSA_2048/,
    );
  });

  it('accepts an AWS managed key as a from key (only the target must be customer managed)', () => {
    expect(checkKeyForMigration('from', key({ manager: 'AWS' }), key({ arn: ARN_NEW }))).toBeNull();
  });
});

describe('checkKeyPlan', () => {
  it('catches a target that resolved to a from key', () => {
    expect(checkKeyPlan({ from: [ARN_OLD, ARN_NEW], to: ARN_NEW })).toMatch(/is also a from key/);
    expect(checkKeyPlan({ from: [ARN_OLD], to: ARN_NEW })).toBeNull();
    expect(checkKeyPlan({ from: [ARN_NEW], to: ARN_NEW, refresh: true })).toBeNull();
    expect(checkKeyPlan({ from: [ARN_OLD], to: ARN_NEW, refresh: true })).toMatch(/refresh migration/);
  });
});
