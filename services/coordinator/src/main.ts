#!/usr/bin/env node
import { readFile } from 'node:fs/promises';
import pino from 'pino';
import { loadConfig, ValidationError } from '@rekey/core';
import { buildApi, createEngine, registerMetricsRoute, registerStatusPage } from '@rekey/fleet';

/**
 * The coordinator process: reads config (env + optional YAML from REKEY_CONFIG or --config),
 * builds the engine, serves the HTTP API, runs the enumerator loop, and stops cleanly on signals.
 */
async function main(): Promise<void> {
  const logger = pino({
    level: process.env['LOG_LEVEL'] ?? 'info',
    redact: { paths: ['*.ciphertext', '*.plaintext', '*.CiphertextBlob', '*.Plaintext', '*.token', '*.secretAccessKey', 'req.headers.authorization', 'req.headers.cookie'], censor: '[redacted]' },
  });
  const configPath = process.argv.includes('--config') ? process.argv[process.argv.indexOf('--config') + 1] : process.env['REKEY_CONFIG'];
  let config;
  try {
    const yamlText = configPath ? await readFile(configPath, 'utf8') : undefined;
    config = loadConfig({ ...(yamlText !== undefined ? { yamlText } : {}), env: process.env, role: 'coordinator' });
  } catch (err) {
    if (err instanceof ValidationError) {
      for (const p of err.problems) console.error(`config: ${p}`);
      process.exit(2);
    }
    console.error(`config: ${(err as Error).message}`);
    process.exit(2);
  }
  if (!config.api.token) {
    console.error('config: api.token: set REKEY_API_TOKEN (the coordinator API always requires a token)');
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
    actor: `coordinator:${process.pid}`,
    monitorUsage: config.gate.monitorUsage,
    quietWindowSeconds: config.gate.quietWindowSeconds ?? 'per-migration',
    usageMonitor: { intervalMs: config.gate.monitorIntervalSeconds * 1000 },
    ...(config.intake ? { intake: { ...config.intake, sources: config.sources ?? [], bindings: config.bindings ?? {} } } : {}),
  });
  const coordinator = engine.startCoordinator();
  const token = config.api.token;
  const app = await buildApi(engine, {
    token,
    extend: (a) => {
      registerStatusPage(a, { token, engine });
      registerMetricsRoute(a, engine);
    },
  });
  await app.listen({ host: config.api.host, port: config.api.port });
  logger.info({ host: config.api.host, port: config.api.port }, 'coordinator listening');

  let stopping = false;
  const stop = (signal: string) => {
    if (stopping) return;
    stopping = true;
    logger.info({ signal }, 'coordinator stopping');
    void (async () => {
      await app.close();
      await coordinator.close();
      await engine.close();
      process.exit(0);
    })();
  };
  process.on('SIGTERM', () => stop('SIGTERM'));
  process.on('SIGINT', () => stop('SIGINT'));
}

main().catch((err: unknown) => {
  console.error(`coordinator: ${(err as Error).message}`);
  process.exit(1);
});
