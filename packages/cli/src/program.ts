import { Command, Option } from 'commander';
import { readFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { auditJsonl, failuresCsv, parseAuditJsonl, verifyAuditChain } from '@rekey/fleet/offline';
import { engineClient, httpClient, type RekeyClient } from './client.js';
import { cliActor, loadCliConfig, localEngine } from './config.js';
import { CliError, EXIT } from './errors.js';
import { specFromFlags, type MigrateFlags } from './spec-input.js';
import { statusLines, watchStatus } from './render.js';
import { buildReport, type ReportFormat } from './commands/report.js';
import { registerBudgetCommand } from './commands/budget.js';
import { registerRotate } from './commands/rotate.js';
import { registerKeysAudit } from './commands/keys-audit.js';
import { registerPlan } from './commands/plan.js';

interface GlobalOpts {
  local?: boolean;
  config?: string;
  debug?: boolean;
}

const collect = (v: string, prev: string[] = []) => [...prev, v];

/** The version of this package, for `rekey --version`. */
export const VERSION: string = (createRequire(import.meta.url)('../package.json') as { version: string }).version;

/** Builds a client: the coordinator API by default, or an engine on Redis directly with --local (config from --config or REKEY_CONFIG). */
export async function clientFor(g: GlobalOpts): Promise<RekeyClient> {
  if (g.local) {
    const engine = await localEngine(await loadCliConfig(g.config), cliActor());
    return engineClient(engine, cliActor());
  }
  const url = process.env['REKEY_API_URL'] ?? 'http://127.0.0.1:8080';
  const token = process.env['REKEY_API_TOKEN'];
  if (!token) throw new CliError('REKEY_API_TOKEN is not set (the coordinator API needs it), or use --local to work on Redis directly', EXIT.usage);
  return httpClient(url, token);
}

async function withClient<T>(g: GlobalOpts, fn: (c: RekeyClient) => Promise<T>): Promise<T> {
  const c = await clientFor(g);
  try {
    return await fn(c);
  } finally {
    await c.close();
  }
}

export function buildProgram(): Command {
  const program = new Command('rekey')
    .description('Re-encrypt data after AWS KMS key rotations, prove nothing is left, then disable the old key.')
    .version(VERSION, '-V, --version', 'print the version of rekey')
    .option('--local', 'work on Redis directly instead of through the coordinator API')
    .option('--config <path>', 'with --local: rekey.yaml with redis, aws and kms settings (default: $REKEY_CONFIG)')
    .option('--debug', 'print stack traces');
  const g = () => program.opts<GlobalOpts>();

  program
    .command('migrate')
    .description('start a migration from flags or -f rekey.yaml')
    .option('-f, --file <path>', 'a YAML file with a migration spec (or migrations: [one])')
    .option('--id <id>', 'migration id (generated when absent)')
    .option('--from <key>', 'old key id, ARN or alias (repeatable)', collect)
    .option('--to <key>', 'new key id, ARN or alias')
    .option('--source <kind:arg>', 'a source: s3-sse-kms:bucket[/prefix], s3-envelope:bucket[/prefix], postgres:[schema.]table.column?pk=id (repeatable)', collect)
    .addOption(new Option('--strategy <s>', 'strategy of s3-sse-kms sources').choices(['update-encryption', 'copy', 'multipart-copy']))
    .option('--include-versions', 'also migrate noncurrent versions (s3-sse-kms)')
    .option('--batch-size <n>', 'items per batch, at most (1..1000; default 1000, first pages 100, 200, 400…)')
    .option('--concurrency <n>', 'items in flight per worker batch')
    .option('--dry-run', 'decide every outcome, write nothing')
    .option('--auto-finalize', 'disable the old keys as soon as the gate is ready')
    .option('--watch', 'follow progress until the migration settles')
    .option('--workers <n>', 'with --local: batches processed in parallel in this process', '2')
    .action(async (f: MigrateFlags & { watch?: boolean; workers: string }, cmd: Command) => {
      const workers = Number(f.workers);
      if (!/^\d+$/.test(f.workers.trim()) || workers < 1 || workers > 64) throw new CliError(`--workers must be a whole number from 1 to 64, got "${f.workers}"`, EXIT.usage);
      if (!g().local && cmd.getOptionValueSource('workers') === 'cli') throw new CliError('--workers needs --local (the coordinator\'s workers do the work otherwise)', EXIT.usage);
      const spec = await specFromFlags(f);
      if (g().local) {
        const config = await loadCliConfig(g().config);
        const engine = await localEngine(config, cliActor());
        const client = engineClient(engine, cliActor());
        const coordinator = engine.startCoordinator({ tickMs: 250 });
        const worker = engine.startWorker({ concurrency: workers });
        try {
          const m = await client.create(spec);
          console.log(`migration ${m.id} created: ${m.keys.from.join(', ')} -> ${m.keys.to}`);
          const tty = Boolean(process.stdout.isTTY);
          const st = await watchStatus(client, m.id, { tty });
          // Off a terminal, watchStatus has printed the last status as plain lines already.
          if (tty) for (const l of statusLines(st)) console.log(l);
          process.exitCode = st.migration.state === 'ready' || st.migration.state === 'finalized' ? EXIT.ok : EXIT.failure;
        } finally {
          await worker.close();
          await coordinator.close();
          await client.close();
        }
        return;
      }
      await withClient(g(), async (c) => {
        const m = await c.create(spec);
        console.log(`migration ${m.id} created: ${m.keys.from.join(', ')} -> ${m.keys.to}`);
        if (f.watch) {
          const st = await watchStatus(c, m.id, { tty: Boolean(process.stdout.isTTY) });
          process.exitCode = st.migration.state === 'ready' || st.migration.state === 'finalized' ? EXIT.ok : EXIT.failure;
        }
      });
    });

  program
    .command('list')
    .description('list migrations')
    .action(() =>
      withClient(g(), async (c) => {
        const all = await c.list();
        if (all.length === 0) console.log('no migrations');
        for (const m of all) console.log(`${m.id}\t${m.state}\t${m.createdAt}\t${m.spec.sources.map((s) => s.name).join(',')}`);
      }),
    );

  program
    .command('status <id>')
    .description('progress, outcomes and the gate of a migration')
    .option('--watch', 'refresh live until the migration settles')
    .option('--json', 'print the status as JSON')
    .action((id: string, o: { watch?: boolean; json?: boolean }) =>
      withClient(g(), async (c) => {
        if (o.watch) {
          await watchStatus(c, id, { tty: Boolean(process.stdout.isTTY) });
          return;
        }
        const st = await c.status(id);
        if (o.json) console.log(JSON.stringify(st, null, 2));
        else for (const l of statusLines(st)) console.log(l);
      }),
    );

  for (const action of ['pause', 'resume', 'cancel', 'verify'] as const) {
    program
      .command(`${action} <id>`)
      .description(action === 'verify' ? 'run the read-only verify pass again' : `${action} a migration`)
      .option('--reason <text>', 'why (kept in the audit log)')
      .action((id: string, o: { reason?: string }) =>
        withClient(g(), async (c) => {
          const m = await c.action(id, action, o.reason);
          console.log(`migration ${m.id}: ${m.state}`);
        }),
      );
  }

  program
    .command('failures <id>')
    .description('failed items with reasons')
    .addOption(new Option('--format <f>', 'output format').choices(['table', 'csv', 'json']).default('table'))
    .option('--limit <n>', 'at most this many', '1000')
    .action((id: string, o: { format: string; limit: string }) => {
      const limit = Number(o.limit);
      if (!/^\d+$/.test(o.limit.trim()) || limit < 1 || limit > 100_000) throw new CliError(`--limit must be a whole number from 1 to 100000, got "${o.limit}"`, EXIT.usage);
      return withClient(g(), async (c) => {
        const fs = await c.failures(id, limit);
        if (o.format === 'json') console.log(JSON.stringify(fs, null, 2));
        else if (o.format === 'csv') process.stdout.write(failuresCsv(fs));
        else {
          if (fs.length === 0) console.log('no failures');
          for (const f of fs) console.log(`${f.id}\t${f.source}\t${f.code}\t${f.reason}\t${f.item}${f.acked ? `\tacked: ${f.acked}` : ''}`);
        }
      });
    });

  program
    .command('ack <id>')
    .description('acknowledge failures so the gate can pass')
    .option('--item <failureId>', 'a failure id from `rekey failures` (repeatable)', collect)
    .option('--all', 'acknowledge every failure')
    .requiredOption('--reason <text>', 'why these failures are acceptable (audited)')
    .action((id: string, o: { item?: string[]; all?: boolean; reason: string }) =>
      withClient(g(), async (c) => {
        if (!o.all && !o.item?.length) throw new CliError('give --item ID (repeatable) or --all', EXIT.usage);
        const n = await c.ack(id, o.all ? { all: true } : { ids: o.item! }, o.reason);
        console.log(`${n} failures acknowledged`);
      }),
    );

  program
    .command('finalize <id>')
    .description('disable the old keys once the gate is ready')
    .option('--force', 'disable even though the gate is not ready (audited as forced)')
    .option('--schedule-deletion-days <n>', 'also schedule deletion of the old keys (7..30 days)')
    .action((id: string, o: { force?: boolean; scheduleDeletionDays?: string }) =>
      withClient(g(), async (c) => {
        const days = o.scheduleDeletionDays !== undefined ? Number(o.scheduleDeletionDays) : undefined;
        if (days !== undefined && (!Number.isInteger(days) || days < 7 || days > 30)) {
          throw new CliError(`--schedule-deletion-days must be a whole number from 7 to 30, got "${o.scheduleDeletionDays}"`, EXIT.usage);
        }
        const r = await c.finalize(id, { force: Boolean(o.force), ...(days !== undefined ? { scheduleDeletionDays: days } : {}) });
        for (const k of r.disabled) console.log(`disabled ${k}${r.forced ? ' (forced)' : ''}`);
        for (const k of r.scheduledDeletion) console.log(`deletion scheduled for ${k} in ${days} days`);
        for (const s of r.skipped) console.log(`kept ${s.key}: ${s.reason}`);
      }),
    );

  program
    .command('audit [id]')
    .description('print the audit log of a migration or rotation, or check one (also an exported JSONL file)')
    .option('--verify', 'check the hash chain; exit 1 when it is broken')
    .option('--jsonl', 'print the log as JSONL, one entry with its id and hash per line (what auditBucket receives)')
    .option('--file <path>', 'with --verify: check an exported JSONL file offline, no coordinator needed')
    .action(async (id: string | undefined, o: { verify?: boolean; jsonl?: boolean; file?: string }) => {
      const report = (name: string, v: ReturnType<typeof verifyAuditChain>) => {
        if (v.ok) console.log(`audit chain of ${name} is intact (${v.entries} entries)`);
        else {
          console.log(`audit chain of ${name} is BROKEN at ${v.brokenAt}: ${v.reason}`);
          process.exitCode = EXIT.failure;
        }
      };
      if (o.file !== undefined) {
        if (!o.verify) throw new CliError('--file needs --verify', EXIT.usage);
        const text = await readFile(o.file, 'utf8').catch((err: NodeJS.ErrnoException) => {
          throw new CliError(`--file ${o.file}: ${err.code === 'ENOENT' ? 'no such file' : err.message}`, EXIT.usage);
        });
        let entries;
        try {
          entries = parseAuditJsonl(text);
        } catch (err) {
          throw new CliError(`--file ${o.file}: ${(err as Error).message}`, EXIT.usage);
        }
        report(o.file, verifyAuditChain(entries));
        return;
      }
      if (id === undefined) throw new CliError('audit needs a migration or rotation id (or --verify --file <path>)', EXIT.usage);
      await withClient(g(), async (c) => {
        const a = await c.audit(id);
        if (o.verify) report(id, a.verification);
        else if (o.jsonl) process.stdout.write(auditJsonl(a.entries));
        else for (const e of a.entries) console.log(`${e.ts}\t${e.actor}\t${e.type}\t${JSON.stringify(e.data)}`);
      });
    });

  program
    .command('report <id>')
    .description('a completion report: spec, keys, times, counts, failures, gate, audit')
    .addOption(new Option('--format <f>', 'output format').choices(['json', 'csv', 'md']).default('md'))
    .action((id: string, o: { format: ReportFormat }) =>
      withClient(g(), async (c) => {
        process.stdout.write(await buildReport(c, id, o.format));
      }),
    );

  program
    .command('demo')
    .description('run the whole job end to end on aws-local, Redis and (if reachable) PostgreSQL')
    .option('--items <n>', 'SSE-KMS objects to write (envelope objects and rows are 40% of it each)', '5000')
    .option('--keep', 'leave the stack running after the demo')
    .action(async (o: { items: string; keep?: boolean }) => {
      const n = Number(o.items);
      if (!Number.isInteger(n) || n < 1 || n > 1_000_000) throw new CliError(`--items must be a whole number from 1 to 1000000, got "${o.items}"`, EXIT.usage);
      const { runDemo } = await import('./commands/demo.js');
      process.exitCode = await runDemo({ items: n, keep: Boolean(o.keep) });
    });

  registerBudgetCommand(program, g);
  registerRotate(program, () => Boolean(g().local));
  registerKeysAudit(program);
  registerPlan(program);

  // Commander's built-in `help <command>` answers an unknown command with the program's help and
  // exit 0; this one reports it as a usage error, and takes a path (`rekey help keys audit`).
  program.helpCommand(false);
  program
    .command('help [command...]')
    .description('display help for a command')
    .action((names: string[]) => {
      let cmd: Command = program;
      for (const n of names) {
        const sub = cmd.commands.find((c) => c.name() === n || c.aliases().includes(n));
        if (!sub) cmd.error(`error: unknown command '${names.join(' ')}'`, { code: 'commander.unknownCommand', exitCode: EXIT.usage });
        cmd = sub;
      }
      cmd.help();
    });

  // --config is read where an engine runs on Redis directly; anywhere else it would be ignored.
  program.hook('preAction', (_root, action) => {
    const { local, config } = g();
    const name = commandPath(action).slice('rekey '.length);
    if (config === undefined || name === 'help') return;
    if (NO_CONFIG[name]) throw new CliError(`--config: rekey ${name} ${NO_CONFIG[name]}`, EXIT.usage);
    if (!local) throw new CliError('--config needs --local (through the API, the coordinator uses its own config)', EXIT.usage);
  });
  configureUsageErrors(program);
  return program;
}

/** Commands that do not read `--config`, and what they read instead. */
const NO_CONFIG: Record<string, string> = {
  rotate: 'reads its config from -f (default rekey.yaml), not --config',
  plan: 'reads a config or spec file from -f, not --config',
  demo: 'starts its own stack and reads no config',
  'keys audit': 'reads its settings from the environment, not --config',
};

/** `rekey list`, `rekey keys audit`: the command as a user types it. */
function commandPath(cmd: Command): string {
  const names: string[] = [];
  for (let c: Command | null = cmd; c; c = c.parent) names.unshift(c.name());
  return names.join(' ');
}

/**
 * Usage errors of the program and every subcommand: one line on stderr naming the command's help
 * (`rekey: error: unknown option '--bogus' (see rekey list --help)`), no usage text, and thrown
 * as a CommanderError for bin.ts to turn into exit code 2. Applied to every command once all are
 * added (commander copies settings only to subcommands created after them), wherever a command
 * was registered.
 *
 * Commander writes errors through outputError and, otherwise, uses writeErr only for the help it
 * shows when a command that needs a subcommand gets none (bare `rekey`, `rekey keys`): that help
 * goes to stdout like `rekey --help`, and bin.ts exits 0 for it.
 */
export function configureUsageErrors(cmd: Command): void {
  const path = commandPath(cmd);
  cmd.exitOverride();
  cmd.showHelpAfterError(false);
  cmd.configureOutput({
    writeOut: (s) => process.stdout.write(s),
    writeErr: (s) => process.stdout.write(s),
    outputError: (s) => process.stderr.write(`rekey: ${s.trim().replace(/\s*\n\s*/g, ' ')} (see ${path} --help)\n`),
  });
  for (const sub of cmd.commands) configureUsageErrors(sub);
}
