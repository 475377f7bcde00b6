#!/usr/bin/env node
import {
  buildApi,
  closeOnSignals,
  createEngine,
  engineOptionsFromConfig,
  loadProcessConfig,
  processLogger,
  registerMetricsRoute,
  registerStatusPage,
  routeWarnings,
} from '@rekey/fleet';

/**
 * The coordinator process: reads config (env + optional YAML from REKEY_CONFIG or --config),
 * builds the engine, serves the HTTP API, runs the enumerator loop, and stops cleanly on signals.
 */
async function main(): Promise<void> {
  const logger = processLogger(['req.headers.authorization', 'req.headers.cookie']);
  routeWarnings((line, w) => logger.warn({ warning: w.name }, line));
  const config = await loadProcessConfig('coordinator');
  const token = config.api.token;
  if (!token) {
    console.error('config: api.token: set REKEY_API_TOKEN (the coordinator API always requires a token)');
    process.exit(2);
  }
  const engine = await createEngine({
    ...engineOptionsFromConfig(config, logger, `coordinator:${process.pid}`),
    ...(config.intake ? { intake: { ...config.intake, sources: config.sources ?? [], bindings: config.bindings ?? {} } } : {}),
  });
  const coordinator = engine.startCoordinator();
  const app = await buildApi(engine, {
    token,
    extend: (a) => {
      registerStatusPage(a, { token, engine });
      registerMetricsRoute(a, engine);
    },
  });
  await app.listen({ host: config.api.host, port: config.api.port });
  logger.info({ host: config.api.host, port: config.api.port }, 'coordinator listening');

  closeOnSignals(logger, 'coordinator stopping', async () => {
    await app.close();
    await coordinator.close();
    await engine.close();
  });
}

main().catch((err: unknown) => {
  console.error(`coordinator: ${(err as Error).message}`);
  process.exit(1);
});
