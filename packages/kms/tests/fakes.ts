import { KMSClient } from '@aws-sdk/client-kms';
import type { RateLimiter } from '../src/limiter.js';
import type { KmsCallOutcome, KmsMetricsHook, KmsOperation } from '../src/types.js';

/** What the fake KMS answers for one command: an output object, or an error to throw (or a promise of either). */
export type FakeAnswer = (command: string, input: Record<string, unknown>) => unknown;

/**
 * A real KMSClient whose requests never leave the process: an `initialize` middleware answers
 * each command from `answer` (throwing when it returns an Error).
 */
export function fakeKmsClient(answer: FakeAnswer): { client: KMSClient; calls: Array<{ command: string; input: Record<string, unknown> }> } {
  const client = new KMSClient({ region: 'us-east-1', credentials: { accessKeyId: 'AKIAFAKE', secretAccessKey: 'fake' } });
  const calls: Array<{ command: string; input: Record<string, unknown> }> = [];
  client.middlewareStack.add(
    (_next, context) => async (args) => {
      const command = String(context.commandName).replace(/Command$/, '');
      const input = args.input as Record<string, unknown>;
      calls.push({ command, input });
      const out = await answer(command, input);
      if (out instanceof Error) throw out;
      return { output: { $metadata: { httpStatusCode: 200 }, ...(out as object) }, response: {} } as never;
    },
    { step: 'initialize', name: 'fakeKms' },
  );
  return { client, calls };
}

/** A limiter that counts what the gateway tells it and always has a token. */
export class CountingLimiter implements RateLimiter {
  acquired = 0;
  throttles = 0;
  successes = 0;
  async acquire(signal?: AbortSignal): Promise<void> {
    signal?.throwIfAborted();
    this.acquired++;
  }
  onThrottle(): void {
    this.throttles++;
  }
  onSuccess(): void {
    this.successes++;
  }
  async currentRate(): Promise<number> {
    return 100;
  }
  async setBudget(): Promise<void> {}
  close(): void {}
}

/** A metrics hook that records every observation. */
export class RecordingMetrics implements KmsMetricsHook {
  readonly observed: Array<{ op: KmsOperation; outcome: KmsCallOutcome }> = [];
  throttledCount = 0;
  observe(op: KmsOperation, outcome: KmsCallOutcome, seconds: number): void {
    if (!(seconds >= 0)) throw new Error(`negative duration ${seconds}`);
    this.observed.push({ op, outcome });
  }
  throttled(): void {
    this.throttledCount++;
  }
}
