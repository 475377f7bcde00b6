// Copies src/lua/*.lua next to the compiled limiter (dist/lua), where it reads them at runtime.
import { cpSync, mkdirSync, readdirSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const from = join(root, 'src', 'lua');
const to = join(root, 'dist', 'lua');
mkdirSync(to, { recursive: true });
const files = readdirSync(from).filter((f) => f.endsWith('.lua'));
for (const f of files) cpSync(join(from, f), join(to, f));
console.log(`copy-lua: ${files.length} script(s) -> dist/lua`);
