import { KMSServiceException } from '@aws-sdk/client-kms';

/** An error shaped the way the AWS SDK v3 KMS client throws it. */
export function awsError(name: string, message = `${name} happened`, httpStatusCode = 400): KMSServiceException {
  return new KMSServiceException({
    name,
    message,
    $fault: httpStatusCode >= 500 ? 'server' : 'client',
    $metadata: { httpStatusCode, requestId: 'req-1' },
  });
}

/** A socket-level error the way Node's http module reports it. */
export function socketError(code: string, message = `connect ${code} 127.0.0.1:4566`): Error {
  return Object.assign(new Error(message), { code });
}
