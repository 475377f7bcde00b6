import { readFile } from 'node:fs/promises';
import { parse as parseYaml } from 'yaml';
import { CliError, EXIT } from './errors.js';

/** Flags of `rekey migrate` that build a spec without a file. */
export interface MigrateFlags {
  file?: string;
  id?: string;
  from?: string[];
  to?: string;
  source?: string[];
  batchSize?: string;
  concurrency?: string;
  dryRun?: boolean;
  strategy?: string;
  autoFinalize?: boolean;
  includeVersions?: boolean;
}

/**
 * Parses `--source KIND:ARG`:
 * `s3-sse-kms:bucket[/prefix]`, `s3-envelope:bucket[/prefix]`,
 * `postgres:[schema.]table.column?pk=id[,id2]&format=kms-blob|rekey-envelope&context-column=c`.
 */
export function parseSourceFlag(flag: string, index: number, f: MigrateFlags): Record<string, unknown> {
  const colon = flag.indexOf(':');
  if (colon < 0) throw new CliError(`--source ${flag}: expected KIND:ARG, e.g. s3-sse-kms:my-bucket/prefix`, EXIT.usage);
  const kind = flag.slice(0, colon);
  const arg = flag.slice(colon + 1);
  const name = `${kind === 'postgres' ? 'pg' : kind}-${index + 1}`;
  if (kind === 's3-sse-kms' || kind === 's3-envelope') {
    const slash = arg.indexOf('/');
    const bucket = slash < 0 ? arg : arg.slice(0, slash);
    const prefix = slash < 0 ? undefined : arg.slice(slash + 1);
    return {
      name,
      kind,
      bucket,
      ...(prefix ? { prefix } : {}),
      ...(kind === 's3-sse-kms' && f.strategy ? { strategy: f.strategy } : {}),
      ...(kind === 's3-sse-kms' && f.includeVersions ? { includeVersions: true } : {}),
    };
  }
  if (kind === 'postgres') {
    const [path = '', query = ''] = arg.split('?');
    const parts = path.split('.');
    if (parts.length < 2 || parts.length > 3) throw new CliError(`--source ${flag}: expected postgres:[schema.]table.column?pk=id`, EXIT.usage);
    const column = parts.pop()!;
    const table = parts.pop()!;
    const schema = parts.pop();
    const q = new URLSearchParams(query);
    return {
      name,
      kind,
      table,
      column,
      ...(schema ? { schema } : {}),
      primaryKey: (q.get('pk') ?? 'id').split(','),
      ...(q.get('format') ? { format: q.get('format') } : {}),
      ...(q.get('context-column') ? { contextColumn: q.get('context-column') } : {}),
    };
  }
  throw new CliError(`--source ${flag}: unknown kind ${kind} (s3-sse-kms, s3-envelope or postgres)`, EXIT.usage);
}

function int(v: string | undefined, flag: string): number | undefined {
  if (v === undefined) return undefined;
  const n = Number(v);
  if (!Number.isInteger(n)) throw new CliError(`${flag} must be a whole number, got "${v}"`, EXIT.usage);
  return n;
}

/** Reads a file the user named; the error (exit 2) names the file and the reason. */
export async function readUserFile(path: string): Promise<string> {
  try {
    return await readFile(path, 'utf8');
  } catch (err) {
    throw new CliError(`${path}: ${(err as NodeJS.ErrnoException).code === 'ENOENT' ? 'no such file' : (err as Error).message}`, EXIT.usage);
  }
}

/** Reads a YAML or JSON file as data; errors name the file and the reason. */
export async function readYamlFile(path: string): Promise<unknown> {
  const text = await readUserFile(path);
  try {
    return parseYaml(text);
  } catch (err) {
    throw new CliError(`${path}: not valid YAML: ${(err as Error).message.split('\n')[0]}`, EXIT.usage);
  }
}

/**
 * Builds the migration spec input from `-f rekey.yaml` (a spec, or a file with `migrations:`
 * holding one) and/or flags; flags override the file. A missing `--source`, `--from` or `--to`
 * is named here, as a flag; everything else is validated in core.
 */
export async function specFromFlags(f: MigrateFlags): Promise<unknown> {
  let base: Record<string, unknown> = {};
  if (f.file) {
    const data = await readYamlFile(f.file);
    if (!data || typeof data !== 'object' || Array.isArray(data)) throw new CliError(`${f.file}: expected a mapping with sources, from and to`, EXIT.usage);
    const d = data as Record<string, unknown>;
    if (Array.isArray(d['migrations'])) {
      const list = d['migrations'] as unknown[];
      if (list.length !== 1 && !f.id) throw new CliError(`${f.file}: holds ${list.length} migrations; pick one with --id`, EXIT.usage);
      const found = f.id ? list.find((x) => (x as Record<string, unknown>)?.['id'] === f.id) : list[0];
      if (!found) throw new CliError(`${f.file}: no migration with id ${f.id}`, EXIT.usage);
      base = found as Record<string, unknown>;
    } else {
      base = d;
    }
  }
  const options: Record<string, unknown> = { ...((base['options'] as Record<string, unknown> | undefined) ?? {}) };
  const bs = int(f.batchSize, '--batch-size');
  const cc = int(f.concurrency, '--concurrency');
  if (bs !== undefined) options['batchSize'] = bs;
  if (cc !== undefined) options['concurrency'] = cc;
  if (f.dryRun) options['dryRun'] = true;
  if (f.autoFinalize) options['autoFinalize'] = true;
  const spec: Record<string, unknown> = { ...base, options };
  if (f.id) spec['id'] = f.id;
  if (f.from?.length) spec['from'] = f.from;
  if (f.to) spec['to'] = f.to;
  if (f.source?.length) spec['sources'] = f.source.map((s, i) => parseSourceFlag(s, i, f));
  const missing = (
    [
      ['sources', '--source'],
      ['from', '--from'],
      ['to', '--to'],
    ] as const
  )
    .filter(([field]) => spec[field] === undefined || spec[field] === null)
    .map(([, flag]) => flag);
  if (missing.length > 0) {
    const list = missing.length === 1 ? missing[0] : `${missing.slice(0, -1).join(', ')} and ${missing.at(-1)}`;
    throw new CliError(`missing ${list}${f.file ? ` (${f.file} does not set ${missing.map((m) => m.slice(2).replace('source', 'sources')).join(', ')} either)` : ' (or give -f with a migration spec)'}`, EXIT.usage);
  }
  return spec;
}
