import { randomBytes } from 'node:crypto';
import { startAwsLocal, type AwsLocal } from '../src/index.js';

/**
 * The conformance suite's endpoint: `AWS_ENDPOINT_URL` when set (LocalStack, real AWS), otherwise
 * aws-local started in-process on a free port. `local` is undefined against another endpoint, and
 * tests of aws-local's admin controls skip themselves then.
 */
export interface Endpoint {
  readonly url: string;
  readonly region: string;
  readonly local: AwsLocal | undefined;
  close(): Promise<void>;
}

export const CREDENTIALS = { accessKeyId: 'AKIAREKEYTEST0000001', secretAccessKey: 'test-secret-not-a-real-key' } as const;
export const OTHER_CALLER = { accessKeyId: 'AKIAREKEYOTHER000002', secretAccessKey: 'test-secret-not-a-real-key' } as const;

export async function startEndpoint(): Promise<Endpoint> {
  const region = process.env['AWS_REGION'] ?? 'us-east-1';
  const external = process.env['AWS_ENDPOINT_URL'];
  if (external) return { url: external, region, local: undefined, close: async () => undefined };
  const local = await startAwsLocal({ port: 0 });
  return { url: local.url, region, local, close: () => local.close() };
}

/** SDK v3 client config for the endpoint: path-style S3, no SDK retries (tests see every error). */
export function clientConfig(ep: Endpoint, credentials: { accessKeyId: string; secretAccessKey: string } = CREDENTIALS) {
  return { endpoint: ep.url, region: ep.region, credentials, forcePathStyle: true, maxAttempts: 1 };
}

/** A name unique to this run, valid as an S3 bucket or SQS queue name. */
export function uniqueName(base: string): string {
  return `${base}-${Date.now().toString(36)}-${randomBytes(3).toString('hex')}`;
}
