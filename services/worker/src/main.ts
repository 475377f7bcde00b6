#!/usr/bin/env node
import { readFile } from 'node:fs/promises';
import pino from 'pino';
import { loadConfig, ValidationError } from '@rekey/core';
import { createEngine, startMetricsServer } from '@rekey/fleet';

/**
 * The worker process: a BullMQ worker over the fleet queue. On SIGTERM it finishes the items in
 * flight, returns the rest of their batches to the queue, and exits.
 */
async function main(): Promise<void> {
  const logger = pino({
    level: process.env['LOG_LEVEL'] ?? 'info',
    redact: { paths: ['*.ciphertext', '*.plaintext', '*.CiphertextBlob', '*.Plaintext', '*.token', '*.secretAccessKey'], censor: '[redacted]' },
  });
  const configPath = process.argv.includes('--config') ? process.argv[process.argv.indexOf('--config') + 1] : process.env['REKEY_CONFIG'];
  let config;
  try {
    const yamlText = configPath ? await readFile(configPath, 'utf8') : undefined;
    config = loadConfig({ ...(yamlText !== undefined ? { yamlText } : {}), env: process.env, role: 'worker' });
  } catch (err) {
    if (err instanceof ValidationError) {
      for (const p of err.problems) console.error(`config: ${p}`);
      process.exit(2);
    }
    console.error(`config: ${(err as Error).message}`);
    process.exit(2);
  }
  const engine = await createEngine({
    redisUrl: config.redis.url,
    prefix: config.redis.prefix,
    aws: { region: config.aws.region, ...(config.aws.endpoint ? { endpoint: config.aws.endpoint } : {}) },
    ...(config.kms.budgetRps ? { kmsBudgetRps: config.kms.budgetRps } : {}),
    ...(config.kms.quotaRps ? { kmsQuotaRps: config.kms.quotaRps } : {}),
    kmsMinRps: config.kms.minRps,
    kmsAimd: config.kms.aimd,
    logger,
    actor: `worker:${process.pid}`,
  });
  const worker = engine.startWorker({ concurrency: config.worker.concurrency });
  const metricsServer = config.worker.metricsPort !== undefined ? await startMetricsServer({ metrics: engine.metrics, port: config.worker.metricsPort }) : undefined;
  logger.info({ concurrency: config.worker.concurrency, metricsPort: metricsServer?.port }, 'worker started');

  let stopping = false;
  const stop = (signal: string) => {
    if (stopping) return;
    stopping = true;
    logger.info({ signal }, 'worker draining: finishing items in flight');
    void (async () => {
      await worker.close();
      await metricsServer?.close();
      await engine.close();
      process.exit(0);
    })();
  };
  process.on('SIGTERM', () => stop('SIGTERM'));
  process.on('SIGINT', () => stop('SIGINT'));
}

main().catch((err: unknown) => {
  console.error(`worker: ${(err as Error).message}`);
  process.exit(1);
});
