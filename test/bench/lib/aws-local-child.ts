/**
 * Runs aws-local as a child process of the benchmark, so that the SDK client and the server each
 * get an event loop (and, on a multi-core machine, a core) of their own. Sends `{ url }` over IPC
 * once listening, and closes the server when the parent sends `'close'` or disconnects.
 */
import { startAwsLocal } from '../../../packages/aws-local/src/index.js';

if (!process.send) throw new Error('aws-local-child.ts must be started with an IPC channel (child_process.fork)');
const aws = await startAwsLocal({ port: 0 });
const stop = () => {
  aws.close().then(
    () => process.exit(0),
    (err: unknown) => {
      console.error(`aws-local child: close failed: ${String(err)}`);
      process.exit(1);
    },
  );
};
process.on('message', (msg: unknown) => {
  if (msg === 'close') stop();
});
process.once('disconnect', stop);
process.send({ url: aws.url });
