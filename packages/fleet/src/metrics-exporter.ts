import { createServer, type Server } from 'node:http';
import type { FastifyInstance } from 'fastify';
import { MIGRATION_STATES } from '@rekey/core';
import type { Engine } from './engine.js';
import type { FleetMetrics } from './metrics.js';

/** What the coordinator's migration-level gauges are read from. */
export type MetricsSource = Pick<Engine, 'list' | 'status' | 'queue' | 'metrics'>;

/**
 * Sets the coordinator's migration-level gauges from Redis: discovered items, progress, ETA,
 * state, gate, batches by BullMQ state and old-key last use. Called on each scrape, so the values
 * are fleet-wide and exact whichever coordinator is scraped.
 */
export async function collectMigrationMetrics(src: MetricsSource): Promise<void> {
  const m = src.metrics;
  const [migrations, counts] = await Promise.all([src.list(), src.queue.counts()]);
  const statuses = await Promise.all(migrations.map((x) => src.status(x.id)));
  // Reset first: a migration deleted from Redis must not linger as a stale series.
  for (const g of [m.itemsDiscovered, m.progressRatio, m.etaSeconds, m.migrationState, m.gateReady, m.batches]) g.reset();
  for (const [state, n] of Object.entries(counts)) m.batches.set({ state }, n);
  for (const st of statuses) {
    const id = st.migration.id;
    for (const s of st.sources) m.itemsDiscovered.set({ migration: id, source: s.name }, s.counters.discovered);
    m.progressRatio.set({ migration: id }, st.totals.ratio);
    // No estimate (no recent throughput) is left out rather than exported as a made-up number.
    if (st.etaSeconds !== null && Number.isFinite(st.etaSeconds)) m.etaSeconds.set({ migration: id }, st.etaSeconds);
    for (const state of MIGRATION_STATES) m.migrationState.set({ migration: id, state }, st.migration.state === state ? 1 : 0);
    m.gateReady.set({ migration: id }, st.gate.ready ? 1 : 0);
    for (const u of [...(st.usage?.blockers ?? []), ...(st.usage?.readers ?? [])]) {
      const seconds = Date.parse(u.lastSeen) / 1000;
      const labels = { key: u.key, operation: u.operation };
      // Several migrations may watch one key: keep the newest use.
      const current = (await m.oldKeyLastUse.get()).values.find((v) => v.labels['key'] === u.key && v.labels['operation'] === u.operation)?.value ?? 0;
      if (seconds > current) m.oldKeyLastUse.set(labels, seconds);
    }
  }
}

/**
 * Registers `GET /metrics` on the coordinator's API (behind the API token like every route):
 * the migration gauges read from Redis at scrape time, this process's counters and histograms,
 * and Node's default process metrics.
 */
export function registerMetricsRoute(app: FastifyInstance, src: MetricsSource): void {
  app.get('/metrics', async (_req, reply) => {
    await collectMigrationMetrics(src);
    return reply.type(src.metrics.registry.contentType).send(await src.metrics.registry.metrics());
  });
}

/** Options of a worker's metrics endpoint. */
export interface MetricsServerOptions {
  readonly metrics: FleetMetrics;
  readonly port: number;
  /** @defaultValue '127.0.0.1' */
  readonly host?: string;
}

/**
 * Serves `GET /metrics` (this process's registry) on its own port, for workers, which have no
 * API. It binds 127.0.0.1 by default so only a local scraper or sidecar can read it.
 */
export async function startMetricsServer(opts: MetricsServerOptions): Promise<{ readonly port: number; close(): Promise<void> }> {
  const server: Server = createServer((req, res) => {
    const path = (req.url ?? '/').split('?')[0];
    if (req.method !== 'GET' || path !== '/metrics') {
      res.writeHead(404, { 'content-type': 'text/plain' }).end('not found: the only route is GET /metrics\n');
      return;
    }
    opts.metrics.registry.metrics().then(
      (body) => res.writeHead(200, { 'content-type': opts.metrics.registry.contentType }).end(body),
      (err: unknown) => res.writeHead(500, { 'content-type': 'text/plain' }).end(`metrics failed: ${(err as Error).message}\n`),
    );
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(opts.port, opts.host ?? '127.0.0.1', () => {
      server.off('error', reject);
      resolve();
    });
  });
  const address = server.address();
  const port = typeof address === 'object' && address ? address.port : opts.port;
  return {
    port,
    close: () => new Promise<void>((resolve, reject) => server.close((err) => (err ? reject(err) : resolve()))),
  };
}
