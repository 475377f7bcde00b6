import { timingSafeEqual } from 'node:crypto';
import Fastify, { type FastifyInstance, type FastifyReply, type FastifyRequest } from 'fastify';
import { InvalidTransitionError, ValidationError } from '@rekey/core';
import type { Engine } from './engine.js';
import { FleetError } from './errors.js';
import { failuresCsv } from './report.js';
import { registerBudgetRoutes } from './budget.js';

/** Options of the coordinator's HTTP API. */
export interface ApiOptions {
  /** Bearer token every route but `/healthz` requires. */
  readonly token: string;
  /** Extra routes (status page, metrics) registered by the caller. */
  readonly extend?: (app: FastifyInstance) => void | Promise<void>;
  readonly logger?: boolean;
}

function tokenMatches(given: string | undefined, token: string): boolean {
  if (!given) return false;
  const a = Buffer.from(given);
  const b = Buffer.from(token);
  return a.length === b.length && timingSafeEqual(a, b);
}

/** Reads the caller's token from `Authorization: Bearer …` or the status page's cookie. */
export function requestToken(req: FastifyRequest): string | undefined {
  const auth = req.headers.authorization;
  if (auth?.startsWith('Bearer ')) return auth.slice('Bearer '.length).trim();
  const cookie = req.headers.cookie;
  if (cookie) {
    for (const part of cookie.split(';')) {
      const [k, ...v] = part.trim().split('=');
      if (k === 'rekey_token') return decodeURIComponent(v.join('='));
    }
  }
  return undefined;
}

function sendError(reply: FastifyReply, err: unknown): FastifyReply {
  if (err instanceof ValidationError) return reply.code(400).send({ error: 'validation', message: err.message, problems: err.problems });
  if (err instanceof InvalidTransitionError) return reply.code(409).send({ error: 'invalid-transition', message: err.message });
  if (err instanceof FleetError) {
    const status = err.code === 'not-found' ? 404 : err.code === 'bad-input' ? 400 : err.code === 'redis-unavailable' || err.code === 'aws-unavailable' ? 503 : 409;
    return reply.code(status).send({ error: err.code, message: err.message });
  }
  const message = err instanceof Error ? err.message : String(err);
  return reply.code(500).send({ error: 'internal', message });
}

function bodyObject(body: unknown): Record<string, unknown> {
  if (body === undefined || body === null) return {};
  if (typeof body !== 'object' || Array.isArray(body)) throw new ValidationError(['body: must be a JSON object']);
  return body as Record<string, unknown>;
}

function optionalString(b: Record<string, unknown>, k: string): string | undefined {
  const v = b[k];
  if (v === undefined) return undefined;
  if (typeof v !== 'string' || v.trim() === '') throw new ValidationError([`${k}: must be a non-empty string`]);
  return v;
}

/**
 * The coordinator's HTTP API (fastify): migrations, their actions, status, failures, audit.
 * Every route but `/healthz` needs the API token.
 */
export async function buildApi(engine: Engine, opts: ApiOptions): Promise<FastifyInstance> {
  if (!opts.token || opts.token.length < 16) throw new FleetError('bad-input', 'the API token must be at least 16 characters (REKEY_API_TOKEN)');
  const app = Fastify({ logger: opts.logger ?? false, bodyLimit: 1_048_576 });
  const actorOf = (req: FastifyRequest) => `api:${req.ip}`;

  app.addHook('onRequest', async (req, reply) => {
    const path = req.url.split('?')[0] ?? '';
    if (path === '/healthz' || path === '/login' || path === '/' ) return;
    if (!tokenMatches(requestToken(req), opts.token)) {
      await reply.code(401).header('www-authenticate', 'Bearer').send({ error: 'unauthorized', message: 'missing or wrong API token (Authorization: Bearer $REKEY_API_TOKEN)' });
    }
  });
  app.setErrorHandler((err, _req, reply) => {
    const e = err as { statusCode?: number; message: string };
    if (e.statusCode && e.statusCode < 500) return reply.code(e.statusCode).send({ error: 'bad-request', message: e.message });
    return sendError(reply, err);
  });

  app.get('/healthz', async () => {
    await engine.redis.ping();
    return { ok: true };
  });

  app.post('/migrations', async (req, reply) => {
    try {
      const m = await engine.createMigration(req.body, actorOf(req));
      return reply.code(201).send(m);
    } catch (err) {
      return sendError(reply, err);
    }
  });
  app.get('/migrations', async () => ({ migrations: await engine.list() }));

  type IdReq = FastifyRequest<{ Params: { id: string } }>;
  const withId = (fn: (req: IdReq, reply: FastifyReply) => Promise<unknown>) => async (req: IdReq, reply: FastifyReply) => {
    try {
      return await fn(req, reply);
    } catch (err) {
      return sendError(reply, err);
    }
  };

  app.get('/migrations/:id', withId(async (req) => engine.get(req.params.id)));
  app.get('/migrations/:id/status', withId(async (req) => engine.status(req.params.id)));
  app.get('/migrations/:id/gate', withId(async (req) => engine.gate(req.params.id)));
  app.post('/migrations/:id/pause', withId(async (req) => engine.pause(req.params.id, actorOf(req), optionalString(bodyObject(req.body), 'reason'))));
  app.post('/migrations/:id/resume', withId(async (req) => engine.resume(req.params.id, actorOf(req), optionalString(bodyObject(req.body), 'reason'))));
  app.post('/migrations/:id/cancel', withId(async (req) => engine.cancel(req.params.id, actorOf(req), optionalString(bodyObject(req.body), 'reason'))));
  app.post('/migrations/:id/verify', withId(async (req) => engine.verify(req.params.id, actorOf(req), optionalString(bodyObject(req.body), 'reason'))));
  app.post('/migrations/:id/finalize', withId(async (req) => {
    const b = bodyObject(req.body);
    const force = b['force'];
    const days = b['scheduleDeletionDays'];
    if (force !== undefined && typeof force !== 'boolean') throw new ValidationError(['force: must be true or false']);
    if (days !== undefined && typeof days !== 'number') throw new ValidationError(['scheduleDeletionDays: must be a number from 7 to 30']);
    return engine.finalize(req.params.id, { actor: actorOf(req), force: force === true, ...(days !== undefined ? { scheduleDeletionDays: days } : {}) });
  }));
  app.get('/migrations/:id/failures', withId(async (req, reply) => {
    const q = req.query as Record<string, string | undefined>;
    const limit = q['limit'] ? Number(q['limit']) : 1000;
    if (!Number.isInteger(limit) || limit < 1 || limit > 100_000) throw new ValidationError(['limit: must be a whole number from 1 to 100000']);
    const failures = await engine.failures(req.params.id, limit);
    if (q['format'] === 'csv') return reply.type('text/csv').send(failuresCsv(failures));
    if (q['format'] !== undefined && q['format'] !== 'json') throw new ValidationError(['format: must be json or csv']);
    return { failures };
  }));
  app.post('/migrations/:id/ack', withId(async (req) => {
    const b = bodyObject(req.body);
    const reason = optionalString(b, 'reason');
    if (!reason) throw new ValidationError(['reason: an acknowledgement needs a reason']);
    const ids = b['ids'];
    if (b['all'] === true) return { acked: await engine.ack(req.params.id, { all: true }, reason, actorOf(req)) };
    if (!Array.isArray(ids) || ids.length === 0 || !ids.every((x) => typeof x === 'string')) {
      throw new ValidationError(['ids: give a list of failure ids, or all: true']);
    }
    return { acked: await engine.ack(req.params.id, { ids: ids as string[] }, reason, actorOf(req)) };
  }));
  app.get('/migrations/:id/audit', withId(async (req) => {
    const q = req.query as Record<string, string | undefined>;
    const log = q['verify'] ? await engine.audit.readVerified(req.params.id) : { entries: await engine.audit.read(req.params.id) };
    // Rotations, keys-audit and the fleet keep audit logs too; an id with neither a log nor a migration is unknown.
    if (log.entries.length === 0) await engine.get(req.params.id);
    return log;
  }));

  registerBudgetRoutes(app, engine);
  await opts.extend?.(app);
  return app;
}
