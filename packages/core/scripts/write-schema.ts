/**
 * Writes the JSON Schema of rekey.yaml to packages/core/rekey.schema.json, for editors
 * (`# yaml-language-server: $schema=...`). The snapshot test keeps the committed copy in step.
 * Run: `npm run schema -w @rekey/core`.
 */
import { writeFile } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import { configJsonSchema } from '../src/config.js';

const target = fileURLToPath(new URL('../rekey.schema.json', import.meta.url));
await writeFile(target, JSON.stringify(configJsonSchema(), null, 2) + '\n');
console.log(`wrote ${target}`);
