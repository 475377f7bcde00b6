/**
 * An error answered to the client the way the AWS service would answer it:
 * the AWS error code (`__type` / `<Code>`), an HTTP status and a message.
 */
export class AwsError extends Error {
  override readonly name = 'AwsError';
  constructor(
    /** The AWS error code, e.g. `DisabledException` or `PreconditionFailed`. */
    readonly code: string,
    message: string,
    /** HTTP status AWS uses for this code. */
    readonly status = 400,
    /** Extra fields some S3 errors carry (e.g. `Condition`, `BucketName`). */
    readonly extra: Record<string, string> = {},
  ) {
    super(message);
  }
}

/** A fault injected by the admin controls that must drop the connection instead of answering. */
export class ConnectionResetFault extends Error {
  override readonly name = 'ConnectionResetFault';
}
