import { createHash, timingSafeEqual } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { requestToken } from '../api.js';
import type { AuditLog, StoredAuditEntry } from '../audit.js';
import type { Engine } from '../engine.js';
import { FleetError } from '../errors.js';
import type { MigrationStatus } from '../status.js';

/** What the status page needs from the engine; a full {@link Engine} satisfies it. */
export type StatusPageEngine = Pick<Engine, 'status'> & { readonly audit: Pick<AuditLog, 'read'> };

/** Options of {@link registerStatusPage}. */
export interface StatusPageOptions {
  /** The API token; the page trades it for an HttpOnly cookie and never writes it into HTML. */
  readonly token: string;
  readonly engine: StatusPageEngine;
  /**
   * How often the event stream sends the status.
   * @defaultValue 1000
   */
  readonly intervalMs?: number;
}

/** The name of the cookie that carries the API token for the browser. */
export const TOKEN_COOKIE = 'rekey_token';

const PAGE_HTML = readFileSync(new URL('./status.html', import.meta.url), 'utf8');
const PAGE_CSP = contentSecurityPolicy(PAGE_HTML);

// Hashing both sides first makes the comparison constant-time even when the lengths differ.
function tokenMatches(given: string | undefined, token: string): boolean {
  if (!given) return false;
  const a = createHash('sha256').update(given).digest();
  const b = createHash('sha256').update(token).digest();
  return timingSafeEqual(a, b);
}

/** A CSP that allows exactly the inline `<script>` and `<style>` blocks of `html`, by hash, and nothing external. */
function contentSecurityPolicy(html: string): string {
  const hashes = (tag: string) =>
    [...html.matchAll(new RegExp(`<${tag}>([\\s\\S]*?)</${tag}>`, 'g'))]
      .map((m) => `'sha256-${createHash('sha256').update(m[1] ?? '').digest('base64')}'`)
      .join(' ');
  const scripts = hashes('script');
  const styles = hashes('style');
  return [
    "default-src 'none'",
    `script-src ${scripts || "'none'"}`,
    `style-src ${styles || "'none'"}`,
    "connect-src 'self'",
    "img-src 'self' data:",
    "form-action 'self'",
    "frame-ancestors 'none'",
    "base-uri 'none'",
  ].join('; ');
}

function escapeHtml(s: string): string {
  return s.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

function loginHtml(error?: string): string {
  return `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="referrer" content="no-referrer">
<link rel="icon" href="data:,">
<title>Rekey — sign in</title>
<style>
body{font:15px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;background:#f4f6f9;color:#1c2430;margin:0;display:flex;min-height:100vh;align-items:center;justify-content:center}
form{background:#fff;border:1px solid #dde3ea;border-radius:10px;padding:28px 32px;width:340px;box-shadow:0 2px 10px rgba(20,30,50,.06)}
h1{font-size:20px;margin:0 0 4px}p{margin:0 0 16px;color:#5b6675;font-size:13px}
label{display:block;font-weight:600;margin-bottom:6px}
input{width:100%;box-sizing:border-box;padding:8px 10px;border:1px solid #c5cdd8;border-radius:6px;font:inherit}
button{margin-top:14px;width:100%;padding:9px;border:0;border-radius:6px;background:#2563eb;color:#fff;font:inherit;font-weight:600;cursor:pointer}
.error{color:#b42318;background:#fef3f2;border:1px solid #fecdca;border-radius:6px;padding:6px 10px;margin-bottom:12px;font-size:13px}
</style>
</head>
<body>
<form method="post" action="/login" data-testid="login-form">
<h1>Rekey</h1>
<p>Enter the coordinator's API token (REKEY_API_TOKEN) to see the status page.</p>
${error ? `<div class="error" role="alert" data-testid="login-error">${escapeHtml(error)}</div>\n` : ''}<label for="token">API token</label>
<input id="token" name="token" type="password" autocomplete="current-password" required autofocus>
<button type="submit">Sign in</button>
</form>
</body>
</html>
`;
}

function securityHeaders(reply: FastifyReply, csp: string): FastifyReply {
  return reply
    .header('content-security-policy', csp)
    .header('cache-control', 'no-store')
    // The first request may carry ?token=…; no Referer must ever repeat it.
    .header('referrer-policy', 'no-referrer')
    .header('x-content-type-options', 'nosniff')
    .header('x-frame-options', 'DENY');
}

function sendLogin(reply: FastifyReply, status: number, error?: string): FastifyReply {
  const html = loginHtml(error);
  return securityHeaders(reply, contentSecurityPolicy(html)).code(status).type('text/html; charset=utf-8').send(html);
}

function tokenCookie(req: FastifyRequest, value: string, maxAge?: number): string {
  const parts = [`${TOKEN_COOKIE}=${encodeURIComponent(value)}`, 'HttpOnly', 'SameSite=Strict', 'Path=/'];
  if (req.protocol === 'https') parts.push('Secure');
  if (maxAge !== undefined) parts.push(`Max-Age=${maxAge}`);
  return parts.join('; ');
}

function signIn(req: FastifyRequest, reply: FastifyReply, token: string): FastifyReply {
  return reply.header('set-cookie', tokenCookie(req, token)).header('cache-control', 'no-store').header('referrer-policy', 'no-referrer').redirect('/', 303);
}

function sse(event: string, data: unknown): string {
  // JSON.stringify never emits a raw newline, so one `data:` line always holds the whole value.
  return `event: ${event}\ndata: ${JSON.stringify(data)}\n\n`;
}

/**
 * Registers the coordinator's live status page: `GET /` (the page, or a login form), `POST /login`,
 * `POST /logout` and `GET /migrations/:id/events` (Server-Sent Events with the status every second
 * and new audit entries). It uses the API token, traded for an HttpOnly cookie, so no secret ever
 * appears in the HTML. The event stream relies on the API's auth hook, which guards `/migrations/`.
 *
 * @example
 * const app = await buildApi(engine, { token, extend: (app) => registerStatusPage(app, { token, engine }) });
 */
export function registerStatusPage(app: FastifyInstance, opts: StatusPageOptions): void {
  const intervalMs = opts.intervalMs ?? 1000;
  const { engine, token } = opts;
  const streams = new Set<AbortController>();

  // Ends open event streams before the server waits for its connections to close.
  app.addHook('preClose', async () => {
    for (const s of streams) s.abort();
  });

  void app.register(async (page) => {
    page.addContentTypeParser('application/x-www-form-urlencoded', { parseAs: 'string', bodyLimit: 4096 }, (_req, body, done) => {
      done(null, Object.fromEntries(new URLSearchParams(String(body))));
    });

    page.get('/', async (req, reply) => {
      const q = req.query as Record<string, unknown>;
      if (typeof q['token'] === 'string') {
        if (!tokenMatches(q['token'], token)) return sendLogin(reply, 401, 'The token in the link is wrong.');
        return signIn(req, reply, token);
      }
      if (!tokenMatches(requestToken(req), token)) return sendLogin(reply, 200);
      return securityHeaders(reply, PAGE_CSP).type('text/html; charset=utf-8').send(PAGE_HTML);
    });

    page.post('/login', async (req, reply) => {
      const body = req.body as Record<string, unknown> | undefined;
      const given = body && typeof body === 'object' ? body['token'] : undefined;
      if (typeof given !== 'string' || given === '') return sendLogin(reply, 401, 'Enter the API token.');
      if (!tokenMatches(given, token)) return sendLogin(reply, 401, 'Wrong token.');
      return signIn(req, reply, token);
    });

    page.post('/logout', async (req, reply) => reply.header('set-cookie', tokenCookie(req, '', 0)).redirect('/', 303));

    page.get('/migrations/:id/events', async (req: FastifyRequest<{ Params: { id: string } }>, reply) => {
      const { id } = req.params;
      let first: MigrationStatus;
      try {
        first = await engine.status(id);
      } catch (err) {
        if (err instanceof FleetError && err.code === 'not-found') return reply.code(404).send({ error: err.code, message: err.message });
        throw err;
      }
      const stop = new AbortController();
      streams.add(stop);
      const res = reply.raw;
      reply.hijack();
      res.writeHead(200, {
        'content-type': 'text/event-stream; charset=utf-8',
        'cache-control': 'no-store',
        connection: 'keep-alive',
        // Proxies such as nginx would otherwise buffer the stream.
        'x-accel-buffering': 'no',
      });
      const end = () => {
        stop.abort();
        streams.delete(stop);
        if (!res.writableEnded) res.end();
      };
      res.on('close', end);
      stop.signal.addEventListener('abort', end, { once: true });

      void (async () => {
        let auditSent = false;
        let auditCount = 0;
        let lastAuditId: string | undefined;
        let status: MigrationStatus | undefined = first;
        res.write('retry: 2000\n\n');
        while (!stop.signal.aborted) {
          try {
            status ??= await engine.status(id);
            if (stop.signal.aborted) break;
            res.write(sse('status', status));
            const entries: StoredAuditEntry[] = await engine.audit.read(id);
            if (stop.signal.aborted) break;
            // The log is append-only, so only its new tail is sent; anything else means it was replaced, so all of it is.
            const continues = auditSent && entries.length >= auditCount && (auditCount === 0 || entries[auditCount - 1]?.id === lastAuditId);
            if (!continues) res.write(sse('audit', { entries, append: false }));
            else if (entries.length > auditCount) res.write(sse('audit', { entries: entries.slice(auditCount), append: true }));
            auditSent = true;
            auditCount = entries.length;
            lastAuditId = entries.at(-1)?.id;
          } catch (err) {
            if (stop.signal.aborted) break;
            if (err instanceof FleetError && err.code === 'not-found') {
              res.write(sse('gone', { message: err.message }));
              end();
              return;
            }
            res.write(sse('problem', { message: err instanceof Error ? err.message : String(err) }));
          }
          status = undefined;
          await sleep(intervalMs, undefined, { signal: stop.signal }).catch(() => undefined);
        }
      })();
    });
  });
}
