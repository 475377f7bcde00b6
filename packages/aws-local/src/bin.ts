#!/usr/bin/env node
import { parseArgs } from 'node:util';
import { startAwsLocal } from './server.js';

const USAGE = 'usage: aws-local [--port 4566] [--host 127.0.0.1] [--data-dir DIR]';

function main(): Promise<void> | void {
  let values;
  try {
    ({ values } = parseArgs({
      options: {
        port: { type: 'string', default: '4566' },
        host: { type: 'string', default: '127.0.0.1' },
        'data-dir': { type: 'string' },
        help: { type: 'boolean', short: 'h' },
      },
    }));
  } catch (err) {
    console.error(`aws-local: ${(err as Error).message}\n${USAGE}`);
    process.exit(2);
  }
  if (values.help) {
    console.log(USAGE);
    return;
  }
  const port = Number(values.port);
  if (!Number.isInteger(port) || port < 0 || port > 65535) {
    console.error(`aws-local: --port must be an integer from 0 to 65535, got "${values.port}"`);
    process.exit(2);
  }
  return startAwsLocal({ port, host: values.host, dataDir: values['data-dir'] }).then((aws) => {
    console.log(`aws-local listening on ${aws.url}${values['data-dir'] ? ` (state in ${values['data-dir']})` : ''}`);
    const stop = () => {
      aws.close().then(
        () => process.exit(0),
        (err: unknown) => {
          console.error(`aws-local: ${String(err)}`);
          process.exit(1);
        },
      );
    };
    process.once('SIGINT', stop);
    process.once('SIGTERM', stop);
  }, (err: unknown) => {
    console.error(`aws-local: cannot start: ${(err as Error).message}`);
    process.exit(1);
  });
}

void main();
