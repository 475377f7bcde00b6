import type { Readable } from 'node:stream';
import { setTimeout as sleep } from 'node:timers/promises';
import type { FastifyInstance } from 'fastify';
import { afterEach, describe, expect, it } from 'vitest';
import { buildApi } from '../src/api.js';
import type { StoredAuditEntry } from '../src/audit.js';
import type { Engine } from '../src/engine.js';
import { FleetError } from '../src/errors.js';
import { registerStatusPage } from '../src/page/status-page.js';
import type { MigrationStatus } from '../src/status.js';

const TOKEN = 'page-test-token-0123456789abcdef';

function counters(discovered: number, reencrypted: number) {
  return {
    discovered, reencrypted, 'already-current': 0, 'not-in-scope': 0, gone: 0, conflict: 0, failed: 0,
    batchesEnqueued: 4, batchesDone: 2, verifyDiscovered: 0, verifyBatchesEnqueued: 0, verifyBatchesDone: 0,
    verifyChecked: 0, verifyOldKey: 0, verifyCurrent: 0, verifyOther: 0, verifyGone: 0,
  };
}

const T0 = Date.parse('2025-06-01T12:00:00Z');

function statusOf(id: string, processed: number): MigrationStatus {
  const now = new Date(T0).toISOString();
  return {
    migration: {
      id,
      spec: { id, sources: [{ name: 'objects', kind: 's3-sse-kms', bucket: 'b' }], from: ['alias/old'], to: 'alias/new', options: { batchSize: 10 } },
      state: 'running',
      keys: { from: ['arn:aws:kms:us-east-1:111122223333:key/old'], to: 'arn:aws:kms:us-east-1:111122223333:key/new', aliases: {} },
      createdAt: now,
      updatedAt: now,
      round: 1,
    } as unknown as MigrationStatus['migration'], // the page only reads a few fields; a full spec adds nothing here
    sources: [{ name: 'objects', kind: 's3-sse-kms', counters: counters(100, processed), processed, ratio: processed / 100 }],
    totals: { discovered: 100, processed, ratio: processed / 100, outcomes: { reencrypted: processed } },
    ratePerSecond: 12.5,
    etaSeconds: 8,
    throughput: [[T0 - 5000, 40]],
    gate: {
      ready: false,
      conditions: [
        { name: 'enumeration-complete', ok: true, detail: '100 items discovered' },
        { name: 'no-batches-pending', ok: false, detail: '2 re-encrypt and 0 verify batches are waiting or active' },
      ],
      warnings: [],
    },
    latestFailures: [],
    usage: null,
  };
}

/** An engine with only what the API routes under test and the page use; the rest throws if touched. */
function fakeEngine() {
  const audit: StoredAuditEntry[] = [];
  let processed = 10;
  const calls = { status: 0 };
  const engine = {
    async status(id: string) {
      calls.status++;
      if (id !== 'm-1') throw new FleetError('not-found', `no migration with id ${id}`);
      processed = Math.min(100, processed + 5);
      return statusOf(id, processed);
    },
    audit: {
      async read(id: string) {
        if (id !== 'm-1') throw new FleetError('not-found', `no migration with id ${id}`);
        return [...audit];
      },
    },
  };
  const append = (type: string) => {
    const n = audit.length;
    audit.push({ id: `${n + 1}-0`, ts: new Date().toISOString(), actor: 'test', type, data: { n }, prev: n ? `h${n}` : '', hash: `h${n + 1}` });
  };
  return { engine, calls, append };
}

async function pageApp(fake = fakeEngine()): Promise<FastifyInstance> {
  // buildApi supplies the real auth hook; the fake engine only answers what these routes call.
  return buildApi(fake.engine as unknown as Engine, {
    token: TOKEN,
    extend: (app) => registerStatusPage(app, { token: TOKEN, engine: fake.engine, intervalMs: 20 }),
  });
}

const cookie = `rekey_token=${TOKEN}`;

interface SseEvent {
  readonly event: string;
  readonly data: unknown;
}

/** Collects server-sent events from a stream; `next` waits until enough new ones arrived. */
function sseReader(stream: Readable) {
  const events: SseEvent[] = [];
  let buf = '';
  let seen = 0;
  stream.on('data', (chunk: Buffer) => {
    buf += chunk.toString('utf8');
    let i: number;
    while ((i = buf.indexOf('\n\n')) >= 0) {
      const block = buf.slice(0, i);
      buf = buf.slice(i + 2);
      const ev = /^event: (.*)$/m.exec(block)?.[1];
      const data = /^data: (.*)$/m.exec(block)?.[1];
      if (ev && data !== undefined) events.push({ event: ev, data: JSON.parse(data) as unknown });
    }
  });
  return {
    async next(enough: (evs: readonly SseEvent[]) => boolean, timeoutMs = 5000): Promise<SseEvent[]> {
      const until = Date.now() + timeoutMs;
      while (!enough(events.slice(seen))) {
        if (Date.now() > until) throw new Error(`timed out waiting for events; got ${events.slice(seen).map((e) => e.event).join(', ') || 'none'}`);
        await sleep(5);
      }
      const fresh = events.slice(seen);
      seen = events.length;
      return fresh;
    },
  };
}

describe('status page', () => {
  let app: FastifyInstance | undefined;
  afterEach(async () => {
    await app?.close();
    app = undefined;
  });

  it('shows a login form, not the page, without the cookie', async () => {
    app = await pageApp();
    const res = await app.inject({ method: 'GET', url: '/' });
    expect(res.statusCode).toBe(200);
    expect(res.headers['content-type']).toMatch(/^text\/html/);
    expect(res.body).toContain('<form method="post" action="/login"');
    expect(res.body).not.toContain('data-testid="migrations"');
  });

  it('trades ?token= for an HttpOnly SameSite=Strict cookie and redirects to / without it', async () => {
    app = await pageApp();
    const res = await app.inject({ method: 'GET', url: `/?token=${TOKEN}` });
    expect(res.statusCode).toBe(303);
    expect(res.headers.location).toBe('/');
    expect(res.headers['referrer-policy']).toBe('no-referrer');
    const setCookie = String(res.headers['set-cookie']);
    expect(setCookie).toContain(`rekey_token=${TOKEN}`);
    expect(setCookie).toContain('HttpOnly');
    expect(setCookie).toContain('SameSite=Strict');
    expect(setCookie).toContain('Path=/');
  });

  it('answers a wrong ?token= with 401 and the form, and sets no cookie', async () => {
    app = await pageApp();
    const res = await app.inject({ method: 'GET', url: '/?token=not-the-right-token-at-all' });
    expect(res.statusCode).toBe(401);
    expect(res.headers['set-cookie']).toBeUndefined();
    expect(res.body).toContain('action="/login"');
    expect(res.body).toContain('The token in the link is wrong.');
  });

  it('answers a wrong token posted to /login with 401, the form and a one-line error', async () => {
    app = await pageApp();
    const res = await app.inject({ method: 'POST', url: '/login', headers: { 'content-type': 'application/x-www-form-urlencoded' }, payload: 'token=wrong-token-wrong-token' });
    expect(res.statusCode).toBe(401);
    expect(res.headers['set-cookie']).toBeUndefined();
    expect(res.body).toMatch(/<div class="error" role="alert" data-testid="login-error">Wrong token\.<\/div>/);
  });

  it('signs in with the right token posted to /login', async () => {
    app = await pageApp();
    const res = await app.inject({ method: 'POST', url: '/login', headers: { 'content-type': 'application/x-www-form-urlencoded' }, payload: `token=${encodeURIComponent(TOKEN)}` });
    expect(res.statusCode).toBe(303);
    expect(res.headers.location).toBe('/');
    expect(String(res.headers['set-cookie'])).toMatch(/^rekey_token=page-test-token-0123456789abcdef; HttpOnly; SameSite=Strict; Path=\//);
  });

  it('serves the page with the cookie, with a strict CSP and no token anywhere in the HTML', async () => {
    app = await pageApp();
    const res = await app.inject({ method: 'GET', url: '/', headers: { cookie } });
    expect(res.statusCode).toBe(200);
    expect(res.body).toContain('data-testid="migrations"');
    expect(res.body).not.toContain(TOKEN);
    expect(res.body).not.toMatch(/innerHTML|outerHTML|insertAdjacentHTML|document\.write/);
    const csp = String(res.headers['content-security-policy']);
    expect(csp).toContain("default-src 'none'");
    expect(csp).toMatch(/script-src 'sha256-[A-Za-z0-9+/=]+'/);
    expect(csp).not.toContain('unsafe-inline');
  });

  it('signs out by clearing the cookie', async () => {
    app = await pageApp();
    const res = await app.inject({ method: 'POST', url: '/logout', headers: { cookie } });
    expect(res.statusCode).toBe(303);
    expect(String(res.headers['set-cookie'])).toMatch(/^rekey_token=; HttpOnly; SameSite=Strict; Path=\/; Max-Age=0/);
  });

  it('refuses the event stream without the token', async () => {
    app = await pageApp();
    const res = await app.inject({ method: 'GET', url: '/migrations/m-1/events' });
    expect(res.statusCode).toBe(401);
  });

  it('answers 404 for the event stream of an unknown migration', async () => {
    app = await pageApp();
    const res = await app.inject({ method: 'GET', url: '/migrations/nope/events', headers: { cookie } });
    expect(res.statusCode).toBe(404);
    expect(res.json()).toMatchObject({ error: 'not-found' });
  });

  it('streams the status as `event: status` and audit entries as `event: audit`, only new ones after the first', async () => {
    const fake = fakeEngine();
    fake.append('migration.created');
    app = await pageApp(fake);
    const res = await app.inject({ method: 'GET', url: '/migrations/m-1/events', headers: { authorization: `Bearer ${TOKEN}` }, payloadAsStream: true });
    expect(res.statusCode).toBe(200);
    expect(res.headers['content-type']).toMatch(/^text\/event-stream/);
    const stream = res.stream();
    const reader = sseReader(stream);

    const first = await reader.next((evs) => evs.some((e) => e.event === 'audit') && evs.filter((e) => e.event === 'status').length >= 2);
    fake.append('state.changed');
    const later = await reader.next((evs) => evs.some((e) => e.event === 'audit'));
    stream.destroy();

    const statuses = first.filter((e) => e.event === 'status').map((e) => e.data as MigrationStatus);
    expect(statuses[0]).toEqual(JSON.parse(JSON.stringify(statusOf('m-1', 15))));
    expect(statuses[1]!.totals.processed).toBeGreaterThan(statuses[0]!.totals.processed);
    expect(first.filter((e) => e.event === 'audit')).toEqual([
      { event: 'audit', data: { append: false, entries: [expect.objectContaining({ id: '1-0', type: 'migration.created' })] } },
    ]);
    expect(later.filter((e) => e.event === 'audit')).toEqual([
      { event: 'audit', data: { append: true, entries: [expect.objectContaining({ id: '2-0', type: 'state.changed' })] } },
    ]);
  });

  it('stops reading the engine once the client goes away', async () => {
    const fake = fakeEngine();
    app = await pageApp(fake);
    const res = await app.inject({ method: 'GET', url: '/migrations/m-1/events', headers: { cookie }, payloadAsStream: true });
    await sseReader(res.stream()).next((evs) => evs.length >= 2);
    (res.raw.res as { destroy(): void }).destroy();
    await sleep(60);
    const after = fake.calls.status;
    await sleep(200);
    expect(fake.calls.status).toBe(after);
  });

  it('ends open event streams when the app closes', async () => {
    app = await pageApp();
    const res = await app.inject({ method: 'GET', url: '/migrations/m-1/events', headers: { cookie }, payloadAsStream: true });
    const stream = res.stream();
    await sseReader(stream).next((evs) => evs.length >= 1);
    const ended = new Promise<void>((resolve) => stream.once('end', resolve));
    await app.close();
    app = undefined;
    await expect(ended).resolves.toBeUndefined();
  });
});
