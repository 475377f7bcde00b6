// Copies non-TypeScript assets (Lua scripts, HTML) from src/ to dist/ after tsc, keeping paths.
import { cpSync, existsSync, readdirSync, statSync } from 'node:fs';
import { join, relative } from 'node:path';

const exts = new Set(['.lua', '.html', '.css', '.svg']);
const src = join(process.cwd(), 'src');
const dist = join(process.cwd(), 'dist');

function walk(dir) {
  for (const name of readdirSync(dir)) {
    const p = join(dir, name);
    if (statSync(p).isDirectory()) walk(p);
    else if (exts.has(name.slice(name.lastIndexOf('.')))) cpSync(p, join(dist, relative(src, p)));
  }
}
if (existsSync(src)) walk(src);
