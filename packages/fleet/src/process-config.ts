import { readFile } from 'node:fs/promises';
import pino, { type Logger } from 'pino';
import { configReadReason, loadConfig, locateConfigProblems, ValidationError, type Config, type ConfigRole } from '@rekey/core';
import { AWS_TIMEOUTS, type EngineOptions } from './engine.js';

export { routeWarnings, warningLine } from './warnings.js';

/** Fields pino redacts in every Rekey process: key material, ciphertext and credentials. */
const REDACT = ['*.ciphertext', '*.plaintext', '*.CiphertextBlob', '*.Plaintext', '*.token', '*.secretAccessKey'];

/** The JSON logger of a Rekey process (`LOG_LEVEL`, default info), redacting secrets. */
export function processLogger(extraRedact: readonly string[] = []): Logger {
  return pino({ level: process.env['LOG_LEVEL'] ?? 'info', redact: { paths: [...REDACT, ...extraRedact], censor: '[redacted]' } });
}

/**
 * Reads a process's config from env and the optional YAML file named by `--config` or
 * `REKEY_CONFIG`: the config, or one line per problem, naming the file (or the variable).
 */
export async function readProcessConfig(
  role: ConfigRole,
  argv: readonly string[] = process.argv,
  env: NodeJS.ProcessEnv = process.env,
): Promise<{ config: Config } | { problems: string[] }> {
  const at = argv.indexOf('--config');
  const from = at >= 0 ? '--config' : 'REKEY_CONFIG';
  const path = at >= 0 ? argv[at + 1] : env['REKEY_CONFIG'];
  if (at >= 0 && !path) return { problems: ['--config: needs the path of a config file'] };
  let yamlText: string | undefined;
  try {
    yamlText = path ? await readFile(path, 'utf8') : undefined;
  } catch (err) {
    return { problems: [`${from} ${path}: ${configReadReason(err)}`] };
  }
  try {
    return { config: loadConfig({ ...(yamlText !== undefined ? { yamlText } : {}), env, role }) };
  } catch (err) {
    if (err instanceof ValidationError) return { problems: locateConfigProblems(err.problems, path) };
    throw err;
  }
}

/** {@link readProcessConfig}, printing each problem as one `config: …` line and exiting with status 2. */
export async function loadProcessConfig(role: ConfigRole, argv: readonly string[] = process.argv, env: NodeJS.ProcessEnv = process.env): Promise<Config> {
  const r = await readProcessConfig(role, argv, env);
  if ('config' in r) return r.config;
  for (const p of r.problems) console.error(`config: ${p}`);
  process.exit(2);
}

/**
 * The engine options every process derives from config the same way (Redis, AWS, KMS budget and
 * the gate's usage monitor and quiet window), so `rekey --local` judges the gate as the
 * coordinator does.
 */
export function engineOptionsFromConfig(config: Config, logger: Logger | undefined, actor: string): EngineOptions {
  return {
    redisUrl: config.redis.url,
    prefix: config.redis.prefix,
    aws: { region: config.aws.region, ...(config.aws.endpoint ? { endpoint: config.aws.endpoint } : {}), ...(config.aws.timeouts ? { timeouts: config.aws.timeouts } : {}) },
    ...(config.kms.budgetRps ? { kmsBudgetRps: config.kms.budgetRps } : {}),
    ...(config.kms.quotaRps ? { kmsQuotaRps: config.kms.quotaRps } : {}),
    kmsMinRps: config.kms.minRps,
    kmsConcurrency: config.worker.kmsConcurrency,
    jobLockMs: config.worker.lockSeconds * 1000,
    kmsAimd: config.kms.aimd,
    monitorUsage: config.gate.monitorUsage,
    quietWindowSeconds: config.gate.quietWindowSeconds ?? 'per-migration',
    usageMonitor: { intervalMs: config.gate.monitorIntervalSeconds * 1000, ...(config.gate.fleetPrincipals ? { fleetPrincipals: config.gate.fleetPrincipals } : {}) },
    ...(logger ? { logger } : {}),
    actor,
  };
}

/**
 * The AWS SDK client config of a one-off command (the CLI): Region, endpoint, and the
 * control-plane timeouts of `aws.timeouts` (see docs/decisions.md #35), so a stalled connection
 * fails the command instead of hanging it.
 */
export function awsClientConfig(config: Config) {
  const t = { ...AWS_TIMEOUTS, ...config.aws.timeouts };
  return {
    region: config.aws.region,
    ...(config.aws.endpoint ? { endpoint: config.aws.endpoint } : {}),
    requestHandler: { connectionTimeout: t.connectMs, socketTimeout: t.controlIdleMs },
  };
}

/** Runs `close` once on SIGTERM or SIGINT, then exits 0. */
export function closeOnSignals(logger: Logger, message: string, close: () => Promise<void>): void {
  let stopping = false;
  const stop = (signal: string) => {
    if (stopping) return;
    stopping = true;
    logger.info({ signal }, message);
    close().then(
      () => process.exit(0),
      (err: unknown) => {
        logger.error({ err: (err as Error).message }, 'shutdown failed');
        process.exit(1);
      },
    );
  };
  process.on('SIGTERM', () => stop('SIGTERM'));
  process.on('SIGINT', () => stop('SIGINT'));
}
