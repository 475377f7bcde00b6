#!/usr/bin/env node
import { closeOnSignals, createEngine, engineOptionsFromConfig, loadProcessConfig, processLogger, routeWarnings, startMetricsServer } from '@rekey/fleet';

/**
 * The worker process: a BullMQ worker over the fleet queue. On SIGTERM it aborts the items in
 * flight, returns their batches to the queue whole (nothing is counted; every item operation is
 * idempotent, so the next worker redoes them safely), and exits.
 */
async function main(): Promise<void> {
  const logger = processLogger();
  routeWarnings((line, w) => logger.warn({ warning: w.name }, line));
  const config = await loadProcessConfig('worker');
  const engine = await createEngine(engineOptionsFromConfig(config, logger, `worker:${process.pid}`));
  const worker = engine.startWorker({ concurrency: config.worker.concurrency });
  const metricsServer = config.worker.metricsPort !== undefined ? await startMetricsServer({ metrics: engine.metrics, port: config.worker.metricsPort, host: config.worker.metricsHost }) : undefined;
  logger.info({ concurrency: config.worker.concurrency, metricsPort: metricsServer?.port }, 'worker started');

  closeOnSignals(logger, 'worker stopping: returning its batches to the queue', async () => {
    await worker.close();
    await metricsServer?.close();
    await engine.close();
  });
}

main().catch((err: unknown) => {
  console.error(`worker: ${(err as Error).message}`);
  process.exit(1);
});
