import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { fileURLToPath } from 'node:url';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { EncryptCommand } from '@aws-sdk/client-kms';
import { redisKeys } from '@rekey/fleet';
import { createTestRedis, createTestSchema, runNode, type Run, type TestSchema } from '@rekey/testing';
import { startStack, type Stack } from './harness.js';
import { createKey, seedSseObjects } from './seed.js';

const BIN = fileURLToPath(new URL('../../packages/cli/dist/bin.js', import.meta.url));

describe('the rekey CLI against a running coordinator', () => {
  let stack: Stack;
  let db: TestSchema;
  let redis: ReturnType<typeof createTestRedis>;
  let oldKey: string;
  let newKey: string;
  /** A migration with one item that can't be re-encrypted. */
  let failing: string;

  /** Runs `rekey …` as a child process with the harness's API URL and token; stdout is a pipe, so not a TTY. */
  function rekey(args: string[], timeoutMs = 60_000): Promise<Run> {
    return runNode([BIN, ...args], { env: { ...process.env, REKEY_API_URL: stack.apiUrl, REKEY_API_TOKEN: stack.token }, timeoutMs, what: `rekey ${args.join(' ')}` });
  }

  beforeAll(async () => {
    stack = await startStack({ workers: 1 });
    db = await createTestSchema('e2e_cli');
    redis = createTestRedis();
    oldKey = await createKey(stack.kms, 'old');
    newKey = await createKey(stack.kms, 'new');
    await db.pool.query('CREATE TABLE secrets (id int PRIMARY KEY, secret bytea NOT NULL)');
    for (let i = 1; i <= 4; i++) {
      const ct = (await stack.kms.send(new EncryptCommand({ KeyId: oldKey, Plaintext: Buffer.from(`s${i}`) }))).CiphertextBlob!;
      await db.pool.query('INSERT INTO secrets VALUES ($1, $2)', [i, Buffer.from(ct)]);
    }
    await db.pool.query('INSERT INTO secrets VALUES (5, $1)', [Buffer.from('not a KMS ciphertext')]);
    const m = await stack.api.create({
      sources: [{ name: 'rows', kind: 'postgres', schema: db.schema, table: 'secrets', primaryKey: ['id'], column: 'secret' }],
      from: [oldKey],
      to: newKey,
      options: { failureRateMinItems: 1000 },
    });
    failing = m.id;
    await stack.waitForState(failing, ['ready', 'blocked', 'paused']);
  });

  afterAll(async () => {
    stack?.aws.controls.setLatency('*', null);
    await redis?.quit();
    await stack?.stop();
    await db?.drop();
  });

  it('`rekey status <id>` prints plain lines with sources, outcomes and the gate when stdout is not a TTY', async () => {
    const r = await rekey(['status', failing]);

    expect(r.code).toBe(0);
    expect(r.stdout).not.toContain('\u001b[');
    const lines = r.stdout.trimEnd().split('\n');
    expect(lines[0]).toMatch(new RegExp(`^migration ${failing}: blocked`));
    expect(r.stdout).toContain('  rows (postgres): 5/5 100.0%');
    expect(r.stdout).toContain('reencrypted 4');
    expect(r.stdout).toContain('failed 1');
    expect(r.stdout).toContain('gate: not ready');
    expect(r.stdout).toMatch(/\[ \] no-unacknowledged-failures: 1 of 1 failed items are not acknowledged/);
    expect(r.stdout).toMatch(/\[x\] verify-clean/);
  });

  it('`rekey finalize` is refused while the gate is red (exit 1, the red condition named)', async () => {
    const r = await rekey(['finalize', failing]);

    expect(r.code).toBe(1);
    expect(r.stderr).toContain('no-unacknowledged-failures');
    expect(r.stderr.trim().split('\n')).toHaveLength(1);
  });

  it('`rekey finalize --schedule-deletion-days` accepts only 7..30 (exit 2)', async () => {
    for (const days of ['3', '31', 'soon']) {
      const r = await rekey(['finalize', failing, '--schedule-deletion-days', days]);
      expect(r.code).toBe(2);
      expect(r.stderr).toContain(`--schedule-deletion-days must be a whole number from 7 to 30, got "${days}"`);
    }
  });

  it('`rekey report` has spec, keys, times, counts, failures, gate and audit as json, md and csv', async () => {
    const json = await rekey(['report', failing, '--format', 'json']);
    const md = await rekey(['report', failing, '--format', 'md']);
    const csv = await rekey(['report', failing, '--format', 'csv']);

    expect([json.code, md.code, csv.code]).toEqual([0, 0, 0]);
    const report: unknown = JSON.parse(json.stdout);
    expect(report).toMatchObject({
      migration: { spec: { sources: [{ table: 'secrets' }] }, keys: { from: [oldKey], to: newKey } },
      totals: { outcomes: { reencrypted: 4, failed: 1 } },
      failures: [{ source: 'rows' }],
      gate: { ready: false },
      audit: expect.arrayContaining([expect.objectContaining({ type: 'migration.created' })]),
      auditChain: { ok: true },
    });
    expect(md.stdout).toContain(`# Rekey migration ${failing}`);
    expect(md.stdout).toContain(`- from: \`${oldKey}\``);
    expect(md.stdout).toContain('| rows | postgres | 5 |');
    expect(md.stdout).toContain('## Gate');
    expect(md.stdout).toContain('## Failures (1)');
    expect(md.stdout).toMatch(/## Audit log \(chain intact\)/);
    expect(md.stdout).toContain('"table": "secrets"');
    const [header, ...rows] = parseCsv(csv.stdout);
    expect(header).toEqual(['section', 'id', 'time', 'source', 'name', 'value', 'detail']);
    const find = (section: string, name: string, source = '') => rows.filter((r) => r[0] === section && r[4] === name && (source === '' || r[3] === source));
    expect(find('migration', 'state')[0]?.[5]).toBe('blocked');
    expect(find('migration', 'createdAt')[0]?.[2]).toMatch(/^\d{4}-\d\d-\d\dT/);
    expect(find('key', 'from').map((r) => r[5])).toEqual([oldKey]);
    expect(find('key', 'to').map((r) => r[5])).toEqual([newKey]);
    expect(JSON.parse(find('spec', 'json')[0]?.[5] ?? '{}')).toMatchObject({ sources: [{ table: 'secrets' }] });
    expect(find('count', 'discovered', 'rows')[0]?.[5]).toBe('5');
    expect(find('count', 'reencrypted', 'rows')[0]?.[5]).toBe('4');
    expect(find('count', 'failed', 'rows')[0]?.[5]).toBe('1');
    expect(find('gate', 'ready')[0]?.[5]).toBe('false');
    expect(rows.filter((r) => r[0] === 'gate' && r[5] === 'false' && r[4] !== 'ready').length).toBeGreaterThan(0);
    expect(rows.filter((r) => r[0] === 'failure')).toEqual([[expect.any(String), expect.any(String), '', 'rows', expect.any(String), expect.any(String), expect.any(String)]]);
    expect(find('audit-chain', 'intact')).toHaveLength(1);
    expect(find('audit', 'migration.created')).toHaveLength(1);
  });

  it('`rekey ack --all --reason` makes the failures condition green and the migration ready', async () => {
    const missingReason = await rekey(['ack', failing, '--all']);
    const r = await rekey(['ack', failing, '--all', '--reason', 'row 5 holds test garbage']);

    expect(missingReason.code).not.toBe(0);
    expect(r.code).toBe(0);
    expect(r.stdout.trim()).toBe('1 failures acknowledged');
    await stack.waitForState(failing, ['ready'], 30_000);
    const gate = await stack.api.gate(failing);
    expect(gate.conditions.find((c) => c.name === 'no-unacknowledged-failures')).toMatchObject({ ok: true, detail: '1 failures, all acknowledged' });
    expect((await stack.api.audit(failing)).entries.find((e) => e.type === 'failure.acked')?.data).toMatchObject({ all: true, reason: 'row 5 holds test garbage' });
  });

  it('`rekey audit <id> --jsonl` exports the log, and `rekey audit --verify --file` checks a copy offline', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'rekey-audit-'));
    try {
      const exported = await rekey(['audit', failing, '--jsonl']);
      expect(exported.code).toBe(0);
      const lines = exported.stdout.trim().split('\n');
      expect(JSON.parse(lines[0]!)).toMatchObject({ type: 'migration.created', prev: '', hash: expect.stringMatching(/^[0-9a-f]{64}$/) });
      await writeFile(join(dir, 'good.jsonl'), exported.stdout);
      await writeFile(join(dir, 'bad.jsonl'), exported.stdout.replace(/"actor":"[^"]*"/, '"actor":"forged"'));
      await writeFile(join(dir, 'junk.jsonl'), 'not json\n');

      const good = await rekey(['audit', '--verify', '--file', join(dir, 'good.jsonl')]);
      const bad = await rekey(['audit', '--verify', '--file', join(dir, 'bad.jsonl')]);
      const junk = await rekey(['audit', '--verify', '--file', join(dir, 'junk.jsonl')]);
      const missing = await rekey(['audit', '--verify', '--file', join(dir, 'nope.jsonl')]);

      expect([good.code, bad.code, junk.code, missing.code]).toEqual([0, 1, 2, 2]);
      expect(good.stdout).toContain(`is intact (${lines.length} entries)`);
      expect(bad.stdout).toContain('is BROKEN at');
      expect(bad.stdout).toContain('entry content does not match its hash');
      expect(junk.stderr.trim()).toMatch(/--file .*junk\.jsonl: line 1: not JSON$/);
      expect(missing.stderr.trim()).toMatch(/--file .*nope\.jsonl: no such file$/);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('`rekey audit <id> --verify` passes on an intact chain and exits 1 on a tampered entry', async () => {
    const intact = await rekey(['audit', failing, '--verify']);
    expect(intact.code).toBe(0);
    expect(intact.stdout).toMatch(new RegExp(`^audit chain of ${failing} is intact \\(\\d+ entries\\)`));
    // Rewrite the stream with one entry's actor changed but its stored hash kept, as an attacker with Redis access would.
    const key = redisKeys(stack.prefix).audit(failing);
    const rows = await redis.xrange(key, '-', '+');
    const victim = rows[1]!;
    const pipe = redis.multi().del(key);
    for (const [sid, fields] of rows) {
      const f = [...fields];
      if (sid === victim[0]) {
        const i = f.indexOf('entry') + 1;
        f[i] = f[i]!.replace(/"actor":"[^"]*"/, '"actor":"someone-else"');
      }
      pipe.xadd(key, sid, ...f);
    }
    await pipe.exec();

    const r = await rekey(['audit', failing, '--verify']);

    expect(r.code).toBe(1);
    expect(r.stdout).toContain(`audit chain of ${failing} is BROKEN at ${victim[0]}: entry content does not match its hash`);
  });

  it('`rekey status <id> --watch` prints plain lines while the migration runs and ends when it settles', async () => {
    await seedSseObjects(stack.s3, 'e2e-cli-watch', oldKey, 40);
    // Slow the work down so the watch sees the migration before it settles.
    stack.aws.controls.setLatency('*', { fixedMs: 40 });
    const m = await stack.api.create({ sources: [{ name: 'objs', kind: 's3-sse-kms', bucket: 'e2e-cli-watch' }], from: [oldKey], to: newKey, options: { batchSize: 5, concurrency: 1 } });

    const r = await rekey(['status', m.id, '--watch'], 120_000);
    stack.aws.controls.setLatency('*', null);

    expect(r.code).toBe(0);
    const blocks = r.stdout.split('\n').filter((l) => /^\d{4}-\d\d-\d\dT\S+ migration /.test(l));
    expect(blocks.length).toBeGreaterThanOrEqual(2);
    expect(blocks[0]).not.toMatch(/: ready/);
    expect(blocks.at(-1)).toMatch(new RegExp(`migration ${m.id}: ready`));
    expect(r.stdout).toContain('objs (s3-sse-kms): 40/40 100.0%');
    expect((await stack.api.get(m.id)).state).toBe('ready');
  });
});

/** RFC 4180 CSV (quoted fields may hold commas, quotes and line breaks). */
function parseCsv(text: string): string[][] {
  const rows: string[][] = [];
  let row: string[] = [];
  let field = '';
  let quoted = false;
  for (let i = 0; i < text.length; i++) {
    const ch = text[i]!;
    if (quoted) {
      if (ch === '"' && text[i + 1] === '"') {
        field += '"';
        i++;
      } else if (ch === '"') quoted = false;
      else field += ch;
    } else if (ch === '"') quoted = true;
    else if (ch === ',') {
      row.push(field);
      field = '';
    } else if (ch === '\n') {
      row.push(field);
      rows.push(row);
      row = [];
      field = '';
    } else field += ch;
  }
  if (field !== '' || row.length) rows.push([...row, field]);
  return rows;
}
