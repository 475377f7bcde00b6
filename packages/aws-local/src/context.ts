import { AwsError } from './errors.js';
import { randomId } from './ids.js';

/** Who called and where: parsed from the SigV4 credential scope. Signatures are not verified. */
export interface RequestContext {
  readonly requestId: string;
  /** The access key id from the SigV4 credential; names the caller in usage logs. */
  readonly accessKeyId: string;
  readonly accountId: string;
  readonly region: string;
  readonly sourceIp: string;
  readonly userAgent: string;
  readonly time: Date;
  /** Set when the call is made by an AWS service on the caller's behalf (S3 calling KMS). */
  readonly invokedBy?: string;
}

/** Account used when the access key id does not name one (LocalStack uses the same default). */
export const DEFAULT_ACCOUNT = '000000000000';
export const DEFAULT_REGION = 'us-east-1';

const CREDENTIAL_RE = /Credential=([^/,\s]+)\/(\d{8})\/([^/]+)\/([^/]+)\/aws4_request/;

/**
 * Parses the SigV4 `Authorization` header (or the presigned `X-Amz-Credential` query value).
 * An access key id of exactly twelve digits names the account, as in LocalStack; any other
 * id is a caller of the default account.
 */
export function contextFromRequest(
  headers: Record<string, string | undefined>,
  query: URLSearchParams,
  sourceIp: string,
): RequestContext {
  const auth = headers['authorization'];
  let accessKeyId: string | undefined;
  let region: string | undefined;
  const m = auth ? CREDENTIAL_RE.exec(auth) : null;
  if (m) {
    accessKeyId = m[1];
    region = m[3];
  } else {
    const cred = query.get('X-Amz-Credential');
    if (cred) {
      const parts = cred.split('/');
      accessKeyId = parts[0];
      region = parts[2];
    }
  }
  if (!accessKeyId || !region) {
    throw new AwsError(
      'MissingAuthenticationToken',
      'Request is missing a SigV4 Authorization header or X-Amz-Credential query parameter',
      403,
    );
  }
  const accountId = /^\d{12}$/.test(accessKeyId) ? accessKeyId : DEFAULT_ACCOUNT;
  return {
    requestId: randomId(),
    accessKeyId,
    accountId,
    region,
    sourceIp,
    userAgent: headers['user-agent'] ?? '',
    time: new Date(),
  };
}
