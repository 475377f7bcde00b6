/**
 * `rekey plan`: a read-only dry run of the migrations in `rekey.yaml` (its `migrations`, and one
 * per alias in `bindings`, from the key behind the alias), or of one migration given with the
 * same flags as `rekey migrate`. Lists the sources, inspects a sample (or `--all`), and prints
 * items per key, KMS requests, the time at the budget, the request cost and warnings.
 */
import type { Command } from 'commander';
import type { PlanFlags } from './plan-run.js';

/** Adds `rekey plan` to the program. */
export function registerPlan(program: Command): void {
  program
    .command('plan')
    .description('read-only dry run: items per key, KMS requests, duration at the budget, cost and warnings')
    .option('-f, --file <path>', 'rekey.yaml (migrations and bindings) or a migration spec')
    .option('--from <key>', 'old key id, ARN or alias (repeatable)', (v: string, p: string[] = []) => [...p, v])
    .option('--to <key>', 'new key id, ARN or alias')
    .option('--source <kind:arg>', 'a source, as in rekey migrate (repeatable)', (v: string, p: string[] = []) => [...p, v])
    .option('--strategy <s>', 'strategy of s3-sse-kms sources')
    .option('--include-versions', 'plan noncurrent versions too (s3-sse-kms)')
    .option('--sample <n>', 'items inspected per source', '1000')
    .option('--all', 'inspect every item instead of a sample')
    .option('--budget <rps>', 'KMS budget in requests per second (default: kms.budget of the config)')
    .option('--kms-price <usd>', 'USD per 10,000 KMS requests', '0.03')
    .option('--s3-write-price <usd>', 'USD per 1,000 S3 PUT/COPY/LIST requests', '0.005')
    .option('--s3-read-price <usd>', 'USD per 1,000 S3 GET/HEAD requests', '0.0004')
    .option('--json', 'print the plan as JSON')
    .action(async (f: PlanFlags) => (await import('./plan-run.js')).runPlan(f));
}
