#!/usr/bin/env node
import { CommanderError, type Command } from 'commander';
import { InvalidTransitionError, ValidationError } from '@rekey/core';
import { FleetError, routeWarnings } from '@rekey/fleet/offline';
import { CliError, EXIT } from './errors.js';
import { buildProgram } from './program.js';

/**
 * The CLI's single error boundary: typed errors become one line and an exit code
 * (0 success, 1 failure, 2 bad usage); stack traces only with --debug.
 */
async function main(argv: string[]): Promise<number> {
  const debug = argv.includes('--debug');
  // Every command throws its usage errors (already printed as one line) instead of exiting.
  const program: Command = buildProgram();
  try {
    await program.parseAsync(argv);
    return typeof process.exitCode === 'number' ? process.exitCode : EXIT.ok;
  } catch (err) {
    if (err instanceof CommanderError) {
      // --help, --version, and the help of bare `rekey` (or `rekey keys`) on stdout.
      if (err.code === 'commander.helpDisplayed' || err.code === 'commander.version' || err.code === 'commander.help') return EXIT.ok;
      return EXIT.usage;
    }
    if (debug) console.error(err);
    if (err instanceof ValidationError) {
      console.error(`rekey: invalid input:`);
      for (const p of err.problems) console.error(`  - ${p}`);
      return EXIT.usage;
    }
    if (err instanceof CliError) {
      console.error(`rekey: ${err.message}`);
      return err.exitCode;
    }
    if (err instanceof FleetError) {
      console.error(`rekey: ${err.message}`);
      return err.code === 'bad-input' ? EXIT.usage : EXIT.failure;
    }
    if (err instanceof InvalidTransitionError) {
      console.error(`rekey: ${err.message}`);
      return EXIT.failure;
    }
    console.error(`rekey: ${(err as Error)?.message ?? String(err)}${debug ? '' : ' (run with --debug for details)'}`);
    return EXIT.failure;
  }
}

// Node's warnings (the AWS SDK's Node 22 notice among them) as one line each, between the output.
routeWarnings((line) => process.stderr.write(`rekey: warning: ${line}\n`));

void main(process.argv).then((code) => {
  process.exit(code);
});

