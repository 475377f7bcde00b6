import { KMSClient } from '@aws-sdk/client-kms';
import { SQSClient } from '@aws-sdk/client-sqs';

const CONFIG = { region: 'us-east-1', credentials: { accessKeyId: 'AKIAFAKE', secretAccessKey: 'fake' }, maxAttempts: 1 };

type Handler = (operation: string, input: Record<string, unknown>) => unknown;

/**
 * An initialize-step middleware that answers every command with `handler`, so unit tests make no
 * network call but still go through the SDK's command path.
 */
function answerWith(handler: Handler) {
  return (_next: unknown, context: { commandName?: string }) => async (args: { input: object }) => {
    const operation = String(context.commandName).replace(/Command$/, '');
    const output = await handler(operation, args.input as Record<string, unknown>);
    return { output: { $metadata: {}, ...(output as object) }, response: {} };
  };
}

/** A KMS client answered by `handler`. */
export function fakeKms(handler: Handler): KMSClient {
  const client = new KMSClient(CONFIG);
  client.middlewareStack.add(answerWith(handler) as never, { step: 'initialize', name: 'fakeAws', priority: 'high' });
  return client;
}

/**
 * A bare stand-in with the KMS client's `send` and `config.serviceId`, for bulk runs (the fuzz
 * test) where the SDK's middleware stack would dominate the time.
 */
export function bareFakeKms(handler: Handler): KMSClient {
  const send = async (command: { constructor: { name: string }; input: Record<string, unknown> }) => ({
    $metadata: {},
    ...((await handler(command.constructor.name.replace(/Command$/, ''), command.input)) as object),
  });
  // The library only calls send() and checks config.serviceId, which this object provides.
  return { config: { serviceId: 'KMS' }, send, destroy: () => undefined } as unknown as KMSClient;
}

/** An SQS client answered by `handler`. */
export function fakeSqs(handler: Handler): SQSClient {
  const client = new SQSClient(CONFIG);
  client.middlewareStack.add(answerWith(handler) as never, { step: 'initialize', name: 'fakeAws', priority: 'high' });
  return client;
}

/** An error shaped like an AWS SDK service exception. */
export function awsError(name: string, status = 400): Error {
  return Object.assign(new Error(`${name} (fake)`), { name, $metadata: { httpStatusCode: status }, $fault: status >= 500 ? 'server' : 'client' });
}
