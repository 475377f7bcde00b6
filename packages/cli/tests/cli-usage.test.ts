import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { createServer, type Server } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startAwsLocal, type AwsLocal } from '@rekey/aws-local';
import { uniquePrefix } from '@rekey/testing';
import { closedPort, lines, rekey, rekeyAll } from './run-cli.js';

// Each case starts a process (about 2 s of CPU); they run a few at a time, hence the long timeouts.
// Every command here fails before it touches Redis or AWS; the prefix keeps a mistake from landing on shared keys.
const ISOLATED = { REKEY_REDIS_PREFIX: uniquePrefix('cli-usage') };

describe('rekey usage errors: one line on stderr, exit 2, for the root and every subcommand', { timeout: 180_000 }, () => {
  const cases: [string[], string][] = [
    [['list', '--bogus'], "rekey: error: unknown option '--bogus' (see rekey list --help)"],
    [['--bogus', 'list'], "rekey: error: unknown option '--bogus' (see rekey --help)"],
    [['status'], "rekey: error: missing required argument 'id' (see rekey status --help)"],
    [['ack', 'm-1'], "rekey: error: required option '--reason <text>' not specified (see rekey ack --help)"],
    [['report', 'm-1', '--format', 'xml'], "rekey: error: option '--format <f>' argument 'xml' is invalid. Allowed choices are json, csv, md. (see rekey report --help)"],
    [['migrate', '--strategy', 'foo'], "rekey: error: option '--strategy <s>' argument 'foo' is invalid. Allowed choices are update-encryption, copy, multipart-copy. (see rekey migrate --help)"],
    [['frobnicate'], "rekey: error: unknown command 'frobnicate' (see rekey --help)"],
    [['keys', 'frobnicate'], "rekey: error: unknown command 'frobnicate' (see rekey keys --help)"],
    [['keys', 'audit', '--bogus'], "rekey: error: unknown option '--bogus' (see rekey keys audit --help)"],
    [['help', 'frobnicate'], "rekey: error: unknown command 'frobnicate' (see rekey --help)"],
    [['status', 'm-1', '--jsn'], "rekey: error: unknown option '--jsn' (Did you mean --json?) (see rekey status --help)"],
    [['list', 'extra'], "rekey: error: too many arguments for 'list'. Expected 0 arguments but got 1. (see rekey list --help)"],
  ];

  it('prints no usage text, only the error', async () => {
    const runs = await rekeyAll(
      cases.map(([args]) => args),
      ISOLATED,
    );
    runs.forEach((r, i) => {
      const [args, line] = cases[i]!;
      expect({ args, code: r.code, stderr: lines(r.stderr), stdout: r.stdout }).toEqual({ args, code: 2, stderr: [line], stdout: '' });
    });
  });

  it('`rekey --version` prints the package version; help goes to stdout with exit 0, bare `rekey` too', async () => {
    const [version, bare, help, helpList, group] = await rekeyAll([['--version'], [], ['--help'], ['help', 'list'], ['keys']], ISOLATED);
    expect(version).toEqual({ code: 0, stdout: '0.1.0\n', stderr: '' });
    for (const r of [bare, help]) {
      expect(r!.code).toBe(0);
      expect(r!.stderr).toBe('');
      expect(r!.stdout).toMatch(/^Usage: rekey \[options\] \[command\]/);
      expect(r!.stdout).toContain('-V, --version');
      expect(r!.stdout).toContain('--config <path>');
    }
    expect(bare!.stdout).toBe(help!.stdout);
    expect(helpList).toMatchObject({ code: 0, stderr: '' });
    expect(helpList!.stdout).toMatch(/^Usage: rekey list \[options\]/);
    expect(group).toMatchObject({ code: 0, stderr: '' });
    expect(group!.stdout).toMatch(/^Usage: rekey keys \[options\] \[command\]/);
  });

  it('`rekey migrate` and `rekey plan` name the missing --source, --from and --to flags', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'rekey-cli-'));
    const spec = join(dir, 'spec.yaml');
    await writeFile(spec, 'from: [alias/old]\nsources:\n  - { name: a, kind: s3-sse-kms, bucket: b }\n');
    try {
      const [migrate, plan, some, fromFile] = await rekeyAll(
        [['migrate'], ['plan'], ['migrate', '--from', 'alias/old'], ['--local', 'migrate', '-f', spec]],
        ISOLATED,
      );
      expect(migrate).toEqual({ code: 2, stdout: '', stderr: 'rekey: missing --source, --from and --to (or give -f with a migration spec)\n' });
      expect(plan).toEqual({ code: 2, stdout: '', stderr: 'rekey: missing --source, --from and --to (or give -f with a migration spec)\n' });
      expect(some).toEqual({ code: 2, stdout: '', stderr: 'rekey: missing --source and --to (or give -f with a migration spec)\n' });
      expect(fromFile).toEqual({ code: 2, stdout: '', stderr: `rekey: missing --to (${spec} does not set to either)\n` });
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('flags that take numbers are checked before anything runs', async () => {
    const [workers, noLocal, limit] = await rekeyAll(
      [
        ['--local', 'migrate', '--workers', 'many', '--from', 'a', '--to', 'b', '--source', 's3-sse-kms:b'],
        ['migrate', '--workers', '4', '--from', 'a', '--to', 'b', '--source', 's3-sse-kms:b'],
        ['failures', 'm-1', '--limit', 'all'],
      ],
      ISOLATED,
    );
    expect(workers).toEqual({ code: 2, stdout: '', stderr: 'rekey: --workers must be a whole number from 1 to 64, got "many"\n' });
    expect(noLocal).toEqual({ code: 2, stdout: '', stderr: "rekey: --workers needs --local (the coordinator's workers do the work otherwise)\n" });
    expect(limit).toEqual({ code: 2, stdout: '', stderr: 'rekey: --limit must be a whole number from 1 to 100000, got "all"\n' });
  });
});

describe('rekey --local config: --config or REKEY_CONFIG, errors name the file', { timeout: 180_000 }, () => {
  let dir: string;
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'rekey-cli-config-'));
    await writeFile(join(dir, 'bad2.yaml'), 'redis:\n  prefix: x\nkms:\n  budget: 1\n  budget: 2\n');
    await writeFile(join(dir, 'bad3.yaml'), 'redis:\n  prefx: x\n');
  });
  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('one line naming the file given and the reason, exit 2', async () => {
    const bad2 = join(dir, 'bad2.yaml');
    const bad3 = join(dir, 'bad3.yaml');
    const missing = join(dir, 'missing.yaml');
    const runs = await rekeyAll(
      [
        ['--local', '--config', bad2, 'list'],
        ['--local', '--config', bad3, 'list'],
        ['--local', '--config', dir, 'list'],
        ['--local', '--config', missing, 'list'],
        ['--local', 'list', '--config'],
        ['--local', '--config', '', 'list'],
        ['--config', bad3, 'list'],
        ['--local', '--config', bad3, 'plan'],
      ],
      ISOLATED,
    );
    expect(runs.map((r) => [r.code, lines(r.stderr)])).toEqual([
      [2, [`rekey: ${bad2} line 5: Map keys must be unique`]],
      [2, [`rekey: ${bad3}: redis: Unrecognized key: "prefx"`]],
      [2, [`rekey: --config ${dir}: is a directory, not a file`]],
      [2, [`rekey: --config ${missing}: no such file`]],
      [2, ["rekey: error: option '--config <path>' argument missing (see rekey --help)"]],
      [2, ['rekey: --config: needs the path of a config file, got ""']],
      [2, ['rekey: --config needs --local (through the API, the coordinator uses its own config)']],
      [2, ['rekey: --config: rekey plan reads a config or spec file from -f, not --config']],
    ]);
  });

  it('REKEY_CONFIG is read the same way when --config is absent', async () => {
    const bad2 = join(dir, 'bad2.yaml');
    const r = await rekey(['--local', 'list'], { ...ISOLATED, REKEY_CONFIG: bad2 });
    expect(r.code).toBe(2);
    expect(lines(r.stderr)).toEqual([`rekey: ${bad2} line 5: Map keys must be unique`]);
  });
});

describe('rekey --local with Redis down', { timeout: 180_000 }, () => {
  it('prints the one-line error, and no log lines of the connection attempts', async () => {
    const port = await closedPort();
    const r = await rekey(['--local', 'list'], { ...ISOLATED, REDIS_URL: `redis://127.0.0.1:${port}`, REKEY_REDIS_URL: undefined });
    expect(r.code).toBe(1);
    expect(r.stdout).toBe('');
    expect(lines(r.stderr)).toHaveLength(1);
    expect(r.stderr).toMatch(new RegExp(`^rekey: Redis is not reachable at redis://127\\.0\\.0\\.1:${port}: `));
  });

  it('LOG_LEVEL is checked', async () => {
    const r = await rekey(['--local', 'list'], { ...ISOLATED, LOG_LEVEL: 'loud' });
    expect(r.code).toBe(2);
    expect(lines(r.stderr)).toEqual(['rekey: LOG_LEVEL must be one of fatal, error, warn, info, debug, trace, silent, got "loud"']);
  });
});

describe('rekey against a server that is not a Rekey coordinator', { timeout: 180_000 }, () => {
  let aws: AwsLocal;
  let other: Server;
  let otherUrl: string;
  beforeAll(async () => {
    aws = await startAwsLocal({ port: 0 });
    // A fastify-like server: its default 404 body has error and message, and statusCode.
    other = createServer((req, res) => {
      if (req.url === '/budget') {
        res.writeHead(200, { 'content-type': 'application/json' }).end('{"ok":true}');
        return;
      }
      res.writeHead(404, { 'content-type': 'application/json' }).end(JSON.stringify({ statusCode: 404, error: 'Not Found', message: `Route ${req.method}:${req.url} not found` }));
    });
    await new Promise<void>((r) => other.listen(0, '127.0.0.1', r));
    otherUrl = `http://127.0.0.1:${(other.address() as { port: number }).port}`;
  });
  afterAll(async () => {
    await aws?.close();
    await new Promise((r) => other?.close(r));
  });

  it('says so, naming the URL, instead of relaying that server\'s error as the coordinator\'s', async () => {
    const token = { REKEY_API_TOKEN: 'a-token-of-sixteen-chars' };
    const [awsList, otherStatus, otherBudget] = await Promise.all([
      rekey(['list'], { ...ISOLATED, ...token, REKEY_API_URL: aws.url }),
      rekey(['status', 'm-1'], { ...ISOLATED, ...token, REKEY_API_URL: otherUrl }),
      rekey(['budget'], { ...ISOLATED, ...token, REKEY_API_URL: otherUrl }),
    ]);
    expect(awsList.code).toBe(1);
    expect(lines(awsList.stderr)).toEqual([
      `rekey: ${aws.url} did not answer as a Rekey coordinator: GET /migrations got 403 Forbidden with an error that is not a Rekey error (is REKEY_API_URL the coordinator's address?)`,
    ]);
    expect(awsList.stderr).not.toContain('SigV4');
    expect(otherStatus.code).toBe(1);
    expect(lines(otherStatus.stderr)).toEqual([
      `rekey: ${otherUrl} did not answer as a Rekey coordinator: GET /migrations/m-1/status got 404 Not Found with an error that is not a Rekey error (is REKEY_API_URL the coordinator's address?)`,
    ]);
    expect(lines(otherBudget.stderr)).toEqual([
      `rekey: ${otherUrl} did not answer as a Rekey coordinator: GET /budget got 200 OK with a body that is not a Rekey answer (is REKEY_API_URL the coordinator's address?)`,
    ]);
  });
});
