/** Codes of errors the fleet raises itself. */
export const FLEET_ERROR_CODES = [
  'redis-unavailable',
  'aws-unavailable',
  'not-found',
  'invalid-state',
  'gate-not-ready',
  'bad-input',
  'unknown-source',
  'not-supported',
  'bad-message',
  'awaiting-import',
] as const;

export type FleetErrorCode = (typeof FLEET_ERROR_CODES)[number];

/** The fleet package's error base: a code the API and CLI map to HTTP statuses and exit codes. */
export class FleetError extends Error {
  override readonly name = 'FleetError';
  constructor(
    readonly code: FleetErrorCode,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}
