#!/usr/bin/env node
import { closeOnSignals, createEngine, engineOptionsFromConfig, loadProcessConfig, processLogger, startMetricsServer } from '@rekey/fleet';

/**
 * The worker process: a BullMQ worker over the fleet queue. On SIGTERM it finishes the items in
 * flight, returns the rest of their batches to the queue, and exits.
 */
async function main(): Promise<void> {
  const logger = processLogger();
  const config = await loadProcessConfig('worker');
  const engine = await createEngine(engineOptionsFromConfig(config, logger, `worker:${process.pid}`));
  const worker = engine.startWorker({ concurrency: config.worker.concurrency });
  const metricsServer = config.worker.metricsPort !== undefined ? await startMetricsServer({ metrics: engine.metrics, port: config.worker.metricsPort }) : undefined;
  logger.info({ concurrency: config.worker.concurrency, metricsPort: metricsServer?.port }, 'worker started');

  closeOnSignals(logger, 'worker draining: finishing items in flight', async () => {
    await worker.close();
    await metricsServer?.close();
    await engine.close();
  });
}

main().catch((err: unknown) => {
  console.error(`worker: ${(err as Error).message}`);
  process.exit(1);
});
