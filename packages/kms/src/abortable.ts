/**
 * Waiting for an AWS SDK request with an AbortSignal, without handing the signal to the SDK.
 *
 * `client.send(command, { abortSignal })` makes the SDK resolve the client's whole middleware
 * stack again for that one call, and drops the handler cache of a client built with
 * `cacheMiddleware: true`. The fleet's KMS and S3 clients are built with it (decisions.md #42):
 * it saves about a sixth of the client CPU of every request. So the fleet sends with no options,
 * and the signal ends the wait instead: the caller gets the same error the SDK gives (an `Error`
 * named `AbortError`, its `cause` the signal's reason) as soon as the signal fires, and the
 * request itself runs on until it is answered or its socket times out, its result dropped.
 * S3 and KMS may carry out a request whose caller was aborted either way: the SDK's own abort
 * can't call back one already sent.
 *
 * @example
 * const head = await abortable(() => s3.send(new HeadObjectCommand({ Bucket, Key })), signal);
 */
export function abortable<T>(send: () => Promise<T>, signal: AbortSignal | undefined): Promise<T> {
  if (signal === undefined) return send();
  if (signal.aborted) return Promise.reject(abortError(signal));
  return new Promise<T>((resolve, reject) => {
    const onAbort = () => reject(abortError(signal));
    signal.addEventListener('abort', onAbort, { once: true });
    send().then(
      (out) => {
        signal.removeEventListener('abort', onAbort);
        resolve(out);
      },
      (err: unknown) => {
        signal.removeEventListener('abort', onAbort);
        reject(err);
      },
    );
  });
}

/** The error the SDK's HTTP handler rejects an aborted request with. */
function abortError(signal: AbortSignal): Error {
  const err = new Error('Request aborted', signal.reason === undefined ? {} : { cause: signal.reason });
  err.name = 'AbortError';
  return err;
}
