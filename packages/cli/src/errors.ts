/** Exit codes of the `rekey` command. */
export const EXIT = { ok: 0, failure: 1, usage: 2 } as const;

/** An error the CLI reports as one line with an exit code. */
export class CliError extends Error {
  override readonly name = 'CliError';
  constructor(
    message: string,
    readonly exitCode: (typeof EXIT)[keyof typeof EXIT] = EXIT.failure,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}
