/**
 * `rekey budget [<rps|N%|default>]`: shows or changes the fleet's KMS budget while migrations
 * run, through the coordinator API (`GET`/`POST /budget`) or, with `--local`, on Redis directly.
 * A change is written to the `fleet` audit log either way.
 */
import type { Command } from 'commander';
import type { BudgetState } from '@rekey/fleet';
import { coordinatorCall } from '../client.js';
import { cliActor, loadCliConfig, localEngine } from '../config.js';
import { CliError, EXIT } from '../errors.js';

/** Lines that show a budget state, one per limiter. */
export function budgetLines(st: BudgetState): string[] {
  const head = `configured budget: ${fmt(st.configuredRps)} rps${st.quotaRps !== null ? ` (quota ${fmt(st.quotaRps)} rps)` : ''}`;
  return [
    head,
    ...st.limiters.map((l) => {
      const inForce = l.overrideRps ?? st.configuredRps;
      return `${l.account}/${l.region}: budget ${fmt(inForce)} rps${l.overrideRps !== null ? ' (override)' : ''}, current rate ${fmt(l.rateRps)} rps`;
    }),
  ];
}

function fmt(n: number): string {
  return Number.isInteger(n) ? String(n) : n.toFixed(1);
}

/** Turns the command-line value into the API body's `budget`: a number when it is one. */
export function budgetArgument(value: string): number | string {
  const v = value.trim();
  if (v === 'default' || v.endsWith('%')) return v;
  const n = Number(v);
  if (!/^\d+(\.\d+)?$/.test(v) || !(n > 0)) throw new CliError(`budget must be a number of requests per second, a percentage such as 40%, or "default", got ${JSON.stringify(value)}`, EXIT.usage);
  return n;
}

async function viaApi(value: number | string | undefined): Promise<BudgetState> {
  const base = (process.env['REKEY_API_URL'] ?? 'http://127.0.0.1:8080').replace(/\/$/, '');
  const token = process.env['REKEY_API_TOKEN'];
  if (!token) throw new CliError('REKEY_API_TOKEN is not set (the coordinator API needs it), or use --local to work on Redis directly', EXIT.usage);
  return coordinatorCall<BudgetState>(base, token, value === undefined ? 'GET' : 'POST', '/budget', value === undefined ? undefined : { budget: value }, (d) =>
    Array.isArray(d['limiters']),
  );
}

async function viaRedis(value: number | string | undefined, actor: string, configFlag: string | undefined): Promise<BudgetState> {
  const engine = await localEngine(await loadCliConfig(configFlag), actor);
  try {
    const budget = engine.budget;
    if (!budget) throw new CliError('no KMS budget is configured (kms.budget)');
    const { activeAccounts } = await import('@rekey/fleet');
    const accounts = await activeAccounts(engine, budget.home);
    return value === undefined ? await budget.state(accounts) : await budget.set(value, actor, accounts);
  } finally {
    await engine.close();
  }
}

/** Adds `rekey budget` to the program; `globals()` are the program's `--local` and `--config`. */
export function registerBudgetCommand(program: Command, globals: () => { local?: boolean; config?: string }): void {
  program
    .command('budget [value]')
    .description('show the fleet KMS budget, or change it while migrations run: an rps, a % of kms.quotaRps, or "default"')
    .action(async (value: string | undefined) => {
      const arg = value === undefined ? undefined : budgetArgument(value);
      const g = globals();
      const st = g.local ? await viaRedis(arg, cliActor(), g.config) : await viaApi(arg);
      if (arg !== undefined) console.log(`budget ${arg === 'default' ? 'reset to the configured value' : `set to ${arg}`}`);
      for (const l of budgetLines(st)) console.log(l);
    });
}
