import { afterEach, describe, expect, it } from 'vitest';
import { routeWarnings, warningLine } from '../src/warnings.js';

/** What the AWS SDK (3.9xx, `emitWarningIfUnsupportedVersion`) emits on Node 20. */
const SDK_NOTICE = `NodeVersionSupportWarning: The AWS SDK for JavaScript (v3)
versions published after the first week of January 2027
will require node >=22. You are running node v20.20.2.

To continue receiving updates to AWS services, bug fixes,
and security updates please upgrade to node >=22.

More information can be found at: https://a.co/c895JFp`;

describe('process warnings', () => {
  const saved = process.listeners('warning');
  afterEach(() => {
    process.removeAllListeners('warning');
    for (const l of saved) process.on('warning', l);
  });

  it("the AWS SDK's eight-line Node 22 notice becomes one sentence that says what it means", () => {
    const w = Object.assign(new Error(SDK_NOTICE), { name: 'Warning' });
    expect(warningLine(w)).toBe(
      "the AWS SDK's releases after the first week of January 2027 need Node 22+; this is Node v20.20.2: the SDK versions Rekey pins keep working, but get no new fixes (https://a.co/c895JFp)",
    );
  });

  it('any other warning is its name and its message on one line', () => {
    const w = Object.assign(new Error('Possible EventTarget memory leak detected.\n  11 abort listeners added'), { name: 'MaxListenersExceededWarning' });
    expect(warningLine(w)).toBe('MaxListenersExceededWarning: Possible EventTarget memory leak detected. 11 abort listeners added');
  });

  it('routes emitted warnings to the reporter instead of Node printing them', async () => {
    const lines: string[] = [];
    routeWarnings((line) => lines.push(line));
    expect(process.listenerCount('warning')).toBe(1);
    process.emitWarning(SDK_NOTICE);
    process.emitWarning('something else', 'DeprecationWarning');
    await new Promise((r) => setImmediate(r));
    expect(lines).toEqual([expect.stringMatching(/^the AWS SDK's releases .* need Node 22\+; this is Node v20\.20\.2/), 'DeprecationWarning: something else']);
  });
});
