/**
 * One line for a Node process warning. The AWS SDK's notice that its releases after early
 * January 2027 need Node 22 (eight lines from `process.emitWarning`) becomes one sentence that
 * also says what it means here: the pinned SDK keeps working, but gets no new fixes.
 */
export function warningLine(w: Error): string {
  const text = w.message.replace(/\s+/g, ' ').trim();
  const sdk = /^NodeVersionSupportWarning: .*? will require node >=(\d+)\. You are running node (v[\d.]+)\./.exec(text);
  if (sdk) return `the AWS SDK's releases after the first week of January 2027 need Node ${sdk[1]}+; this is Node ${sdk[2]}: the SDK versions Rekey pins keep working, but get no new fixes (https://a.co/c895JFp)`;
  return `${w.name}: ${text}`;
}

/**
 * Replaces Node's default printing of process warnings (several raw lines on stderr, between a
 * command's output or a service's JSON logs) with `report(line, warning)`, one line each.
 */
export function routeWarnings(report: (line: string, w: Error) => void): void {
  process.removeAllListeners('warning');
  process.on('warning', (w) => report(warningLine(w), w));
}
