/**
 * Config and the engine of `rekey --local`: the config file comes from `--config <path>` or
 * `REKEY_CONFIG` (as for the coordinator and workers), merged with the environment; every
 * problem is reported as one line that names the file.
 */
import { readFile } from 'node:fs/promises';
import type { Logger } from 'pino';
import { configReadReason, loadConfig, locateConfigProblems, ValidationError, type Config } from '@rekey/core';
import type { Engine } from '@rekey/fleet';
import { CliError, EXIT } from './errors.js';

/** Where a config file was named: the flag or the environment variable. */
export function configPath(flag: string | undefined, env: NodeJS.ProcessEnv = process.env): { path: string; from: string } | undefined {
  if (flag !== undefined) {
    if (flag.trim() === '') throw new CliError('--config: needs the path of a config file, got ""', EXIT.usage);
    return { path: flag, from: '--config' };
  }
  const v = env['REKEY_CONFIG']?.trim();
  return v ? { path: v, from: 'REKEY_CONFIG' } : undefined;
}

/** One line for config problems, located in the file given (see core's `locateConfigProblems`). */
export function configProblemsLine(problems: readonly string[], path: string | undefined): string {
  return locateConfigProblems(problems, path).join('; ');
}

/**
 * The CLI's config: the file from `--config` (else `REKEY_CONFIG`), merged with the environment.
 * @throws CliError (exit 2) naming the file and the reason, in one line
 */
export async function loadCliConfig(flag: string | undefined, env: NodeJS.ProcessEnv = process.env): Promise<Config> {
  const named = configPath(flag, env);
  let yamlText: string | undefined;
  if (named) {
    try {
      yamlText = await readFile(named.path, 'utf8');
    } catch (err) {
      throw new CliError(`${named.from} ${named.path}: ${configReadReason(err)}`, EXIT.usage);
    }
  }
  try {
    return loadConfig({ ...(yamlText !== undefined ? { yamlText } : {}), env, role: 'cli' });
  } catch (err) {
    if (err instanceof ValidationError) throw new CliError(configProblemsLine(err.problems, named?.path), EXIT.usage);
    throw err;
  }
}

/** Fields the logger redacts, as every Rekey process does (see processLogger in @rekey/fleet). */
const REDACT = ['*.ciphertext', '*.plaintext', '*.CiphertextBlob', '*.Plaintext', '*.token', '*.secretAccessKey'];
const LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'];

/** `LOG_LEVEL` for the engine of `--local`; default `warn`, so a command's output is not buried in log lines. */
export function localLogLevel(env: NodeJS.ProcessEnv = process.env): string {
  const v = env['LOG_LEVEL']?.trim();
  if (!v) return 'warn';
  if (!LEVELS.includes(v)) throw new CliError(`LOG_LEVEL must be one of ${LEVELS.join(', ')}, got "${v}"`, EXIT.usage);
  return v;
}

/**
 * The engine of `--local`, on the Redis and prefix of the config. Its JSON log goes to stderr and
 * starts only once Redis answered: while connecting, ioredis retries and logs each attempt, and a
 * Redis that is not there is reported once, by the error that ends the command.
 */
export async function localEngine(config: Config, actor: string, opts: { logger?: Logger } = {}): Promise<Engine> {
  const level = localLogLevel();
  // Loaded here, not at the top: the CLI starts without the fleet and the AWS SDK (~0.6 s), which
  // only the commands that run an engine need.
  const [{ default: pino }, { createEngine, engineOptionsFromConfig }] = await Promise.all([import('pino'), import('@rekey/fleet')]);
  const logger = opts.logger ?? pino({ level: 'silent', redact: { paths: REDACT, censor: '[redacted]' } }, pino.destination({ fd: 2, sync: true }));
  const engine = await createEngine(engineOptionsFromConfig(config, logger, actor));
  logger.level = level;
  return engine;
}

/** The actor the audit log records for this user's commands. */
export function cliActor(): string {
  return `cli:${process.env['USER'] ?? 'local'}`;
}
