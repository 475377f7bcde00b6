import { startAwsLocal, type AwsLocal } from '@rekey/aws-local';

/** Fixed test credentials; aws-local accepts any SigV4 signature. */
export const TEST_CREDENTIALS = { accessKeyId: 'AKIAREKEYTEST0000001', secretAccessKey: 'test-secret-not-a-real-key' } as const;

/** Where tests send AWS calls, and the in-process aws-local when there is one. */
export interface AwsTestEndpoint {
  readonly url: string;
  readonly region: string;
  /** The in-process server, or undefined when `AWS_ENDPOINT_URL` points elsewhere. */
  readonly local: AwsLocal | undefined;
  close(): Promise<void>;
}

/**
 * Starts aws-local in-process on a free port, unless `AWS_ENDPOINT_URL` is set, in which case
 * the tests run against that endpoint (LocalStack or real AWS) and admin controls are absent.
 */
export async function useAwsLocal(): Promise<AwsTestEndpoint> {
  const region = process.env['AWS_REGION'] ?? 'us-east-1';
  const external = process.env['AWS_ENDPOINT_URL'];
  if (external) return { url: external, region, local: undefined, close: async () => undefined };
  const local = await startAwsLocal({ port: 0 });
  return { url: local.url, region, local, close: () => local.close() };
}

/** Client config for the AWS SDK v3 clients pointing at a test endpoint. */
export function awsClientConfig(
  ep: Pick<AwsTestEndpoint, 'url' | 'region'>,
  credentials: { accessKeyId: string; secretAccessKey: string } = TEST_CREDENTIALS,
) {
  return {
    endpoint: ep.url,
    region: ep.region,
    credentials,
    forcePathStyle: true,
    maxAttempts: 1,
  };
}
