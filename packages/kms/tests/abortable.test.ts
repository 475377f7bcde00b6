import { getEventListeners } from 'node:events';
import { describe, expect, it } from 'vitest';
import { abortable } from '../src/abortable.js';

describe('abortable', () => {
  it('passes the answer through, and leaves no listener on the signal', async () => {
    const ac = new AbortController();
    await expect(abortable(async () => 'ok', ac.signal)).resolves.toBe('ok');
    expect(getEventListeners(ac.signal, 'abort')).toHaveLength(0);
  });

  it('passes the error through, and leaves no listener on the signal', async () => {
    const ac = new AbortController();
    const err = new Error('AccessDenied');
    await expect(abortable(() => Promise.reject(err), ac.signal)).rejects.toBe(err);
    expect(getEventListeners(ac.signal, 'abort')).toHaveLength(0);
  });

  it('rejects as soon as the signal fires, with the error the SDK gives (AbortError, the reason as its cause)', async () => {
    const ac = new AbortController();
    const reason = new Error('shutdown');
    let answer: (v: string) => void = () => undefined;
    const pending = abortable(() => new Promise<string>((resolve) => (answer = resolve)), ac.signal);
    ac.abort(reason);
    const err = await pending.catch((e: unknown) => e);
    expect(err).toBeInstanceOf(Error);
    expect((err as Error).name).toBe('AbortError');
    expect((err as Error).cause).toBe(reason);
    // The request's late answer is dropped.
    answer('late');
    await new Promise((r) => setImmediate(r));
    expect(getEventListeners(ac.signal, 'abort')).toHaveLength(0);
  });

  it('does not send when the signal has already fired', async () => {
    const ac = new AbortController();
    ac.abort();
    let sent = false;
    const err = await abortable(async () => (sent = true), ac.signal).catch((e: unknown) => e);
    expect((err as Error).name).toBe('AbortError');
    expect(sent).toBe(false);
  });

  it('without a signal, is the send itself', async () => {
    await expect(abortable(async () => 7, undefined)).resolves.toBe(7);
  });
});
