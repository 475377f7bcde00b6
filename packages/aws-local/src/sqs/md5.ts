import { createHash } from 'node:crypto';

/** A message attribute as SQS stores it; binary values are kept as bytes. */
export interface MessageAttribute {
  readonly DataType: string;
  readonly StringValue?: string;
  readonly BinaryValue?: Buffer;
}

/** Hex MD5 of a UTF-8 string, as SQS returns for `MD5OfMessageBody`. */
export function md5Hex(s: string): string {
  return createHash('md5').update(s, 'utf8').digest('hex');
}

function lengthPrefixed(bytes: Buffer): Buffer {
  const len = Buffer.alloc(4);
  len.writeUInt32BE(bytes.length);
  return Buffer.concat([len, bytes]);
}

/**
 * MD5 of message attributes the way SQS computes `MD5OfMessageAttributes`: attributes sorted by
 * name; each encoded as length-prefixed name, length-prefixed data type, a transport byte
 * (1 = String/Number, 2 = Binary) and the length-prefixed value. Undefined when there are none.
 */
export function md5OfAttributes(attrs: Readonly<Record<string, MessageAttribute>> | undefined): string | undefined {
  if (!attrs) return undefined;
  const names = Object.keys(attrs).sort((a, b) => Buffer.compare(Buffer.from(a, 'utf8'), Buffer.from(b, 'utf8')));
  if (names.length === 0) return undefined;
  const hash = createHash('md5');
  for (const name of names) {
    const a = attrs[name];
    if (!a) continue;
    hash.update(lengthPrefixed(Buffer.from(name, 'utf8')));
    hash.update(lengthPrefixed(Buffer.from(a.DataType, 'utf8')));
    if (a.BinaryValue !== undefined) {
      hash.update(Buffer.from([2]));
      hash.update(lengthPrefixed(a.BinaryValue));
    } else {
      hash.update(Buffer.from([1]));
      hash.update(lengthPrefixed(Buffer.from(a.StringValue ?? '', 'utf8')));
    }
  }
  return hash.digest('hex');
}
