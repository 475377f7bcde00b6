import type { MessageAttribute } from './md5.js';
import { sqsError } from './errors.js';

/** An operation's input, JSON-shaped whichever protocol carried it. */
export type Input = Readonly<Record<string, unknown>>;

/** A string parameter that must be present and non-empty. */
export function reqString(input: Input, name: string): string {
  const v = input[name];
  if (v === undefined || v === null || v === '') {
    throw sqsError('MissingParameter', `The request must contain the parameter ${name}.`);
  }
  if (typeof v !== 'string') throw sqsError('InvalidParameterValue', `Value for parameter ${name} must be a string.`);
  return v;
}

/** An optional string parameter. */
export function optString(input: Input, name: string): string | undefined {
  const v = input[name];
  if (v === undefined || v === null) return undefined;
  if (typeof v !== 'string') throw sqsError('InvalidParameterValue', `Value for parameter ${name} must be a string.`);
  return v;
}

/** An optional integer parameter; `reason` is the range text AWS puts in its message. */
export function optInt(input: Input, name: string, min: number, max: number, reason: string): number | undefined {
  const v = input[name];
  if (v === undefined || v === null) return undefined;
  if (typeof v !== 'number' || !Number.isInteger(v) || v < min || v > max) {
    throw sqsError('InvalidParameterValue', `Value ${String(v)} for parameter ${name} is invalid. Reason: ${reason}`);
  }
  return v;
}

/** An optional list of strings. */
export function optStringList(input: Input, name: string): string[] | undefined {
  const v = input[name];
  if (v === undefined || v === null) return undefined;
  if (!Array.isArray(v) || v.some((s) => typeof s !== 'string')) {
    throw sqsError('InvalidParameterValue', `Value for parameter ${name} must be a list of strings.`);
  }
  return v as string[];
}

/** An optional map of string to string (queue attributes, tags). */
export function optStringMap(input: Input, name: string): Record<string, string> | undefined {
  const v = input[name];
  if (v === undefined || v === null) return undefined;
  if (typeof v !== 'object' || Array.isArray(v) || Object.values(v).some((s) => typeof s !== 'string')) {
    throw sqsError('InvalidParameterValue', `Value for parameter ${name} must be a map of strings.`);
  }
  return v as Record<string, string>;
}

/** An optional list of objects (batch entries). */
export function optObjectList(input: Input, name: string): Input[] | undefined {
  const v = input[name];
  if (v === undefined || v === null) return undefined;
  if (!Array.isArray(v) || v.some((e) => e === null || typeof e !== 'object' || Array.isArray(e))) {
    throw sqsError('InvalidParameterValue', `Value for parameter ${name} must be a list of objects.`);
  }
  return v as Input[];
}

const ATTRIBUTE_NAME_RE = /^[A-Za-z0-9_.-]{1,256}$/;
const DATA_TYPE_RE = /^(String|Number|Binary)(\.[^\s]{1,250})?$/;
const BASE64_RE = /^[A-Za-z0-9+/]*={0,2}$/;
const MAX_MESSAGE_ATTRIBUTES = 10;

function checkAttributeName(name: string, label: string): void {
  const lower = name.toLowerCase();
  if (
    !ATTRIBUTE_NAME_RE.test(name) ||
    name.startsWith('.') ||
    name.endsWith('.') ||
    name.includes('..') ||
    lower.startsWith('aws.') ||
    lower.startsWith('amazon.')
  ) {
    throw sqsError(
      'InvalidParameterValue',
      `${label} name '${name}' is invalid. Names may contain letters, digits, '_', '-' and '.', up to 256 characters; they cannot start with 'AWS.' or 'Amazon.', start or end with '.', or contain '..'.`,
    );
  }
}

/**
 * Reads and validates `MessageAttributes` (or `MessageSystemAttributes`): data types, non-empty
 * values, numbers that parse, base64 binary values, at most 10 attributes.
 */
export function readMessageAttributes(
  input: Input,
  name: 'MessageAttributes' | 'MessageSystemAttributes',
): Record<string, MessageAttribute> | undefined {
  const v = input[name];
  if (v === undefined || v === null) return undefined;
  if (typeof v !== 'object' || Array.isArray(v)) {
    throw sqsError('InvalidParameterValue', `Value for parameter ${name} must be a map.`);
  }
  const entries = Object.entries(v as Record<string, unknown>);
  if (entries.length === 0) return undefined;
  const system = name === 'MessageSystemAttributes';
  const label = system ? 'Message system attribute' : 'Message (user) attribute';
  if (!system && entries.length > MAX_MESSAGE_ATTRIBUTES) {
    throw sqsError(
      'InvalidParameterValue',
      `Number of message attributes [${entries.length}] exceeds the allowed maximum [${MAX_MESSAGE_ATTRIBUTES}].`,
    );
  }
  const out: Record<string, MessageAttribute> = {};
  for (const [attrName, raw] of entries) {
    if (system) {
      if (attrName !== 'AWSTraceHeader') {
        throw sqsError('InvalidParameterValue', `Message system attribute name '${attrName}' is invalid.`);
      }
    } else checkAttributeName(attrName, label);
    if (raw === null || typeof raw !== 'object' || Array.isArray(raw)) {
      throw sqsError('InvalidParameterValue', `${label} '${attrName}' must be an object with DataType and a value.`);
    }
    const a = raw as Record<string, unknown>;
    const dataType = a['DataType'];
    if (typeof dataType !== 'string' || dataType === '') {
      throw sqsError('InvalidParameterValue', `The message attribute '${attrName}' must contain non-empty message attribute type.`);
    }
    if (!DATA_TYPE_RE.test(dataType)) {
      throw sqsError(
        'InvalidParameterValue',
        `The type of message (user) attribute '${attrName}' is invalid. You must use only the following supported type prefixes: Binary, Number, String.`,
      );
    }
    const base = dataType.split('.')[0];
    if (system && base !== 'String') {
      throw sqsError('InvalidParameterValue', `Message system attribute '${attrName}' must be of type String.`);
    }
    if (base === 'Binary') {
      const b = a['BinaryValue'];
      if (typeof b !== 'string' || b === '' || !BASE64_RE.test(b) || b.length % 4 !== 0) {
        throw sqsError(
          'InvalidParameterValue',
          `The message attribute '${attrName}' with type 'Binary' must use field 'Binary' with a non-empty base64 value.`,
        );
      }
      out[attrName] = { DataType: dataType, BinaryValue: Buffer.from(b, 'base64') };
      continue;
    }
    const s = a['StringValue'];
    if (typeof s !== 'string' || s === '') {
      throw sqsError(
        'InvalidParameterValue',
        `The message attribute '${attrName}' must contain non-empty message attribute value for message attribute type '${base ?? dataType}'.`,
      );
    }
    if (base === 'Number' && !/^[+-]?(\d+\.?\d*|\.\d+)(e[+-]?\d+)?$/i.test(s)) {
      throw sqsError('InvalidParameterValue', `Can't cast the value of message (user) attribute '${attrName}' to a number.`);
    }
    checkMessageContents(s, `Value of message attribute '${attrName}'`, 'InvalidParameterValue');
    out[attrName] = { DataType: dataType, StringValue: s };
  }
  return out;
}

/** Byte size SQS counts against MaximumMessageSize: body plus attribute names, types and values. */
export function messageSize(body: string, attrs: Readonly<Record<string, MessageAttribute>> | undefined): number {
  let n = Buffer.byteLength(body, 'utf8');
  for (const [k, a] of Object.entries(attrs ?? {})) {
    n += Buffer.byteLength(k, 'utf8') + Buffer.byteLength(a.DataType, 'utf8');
    n += a.BinaryValue ? a.BinaryValue.length : Buffer.byteLength(a.StringValue ?? '', 'utf8');
  }
  return n;
}

/**
 * SQS accepts only #x9 | #xA | #xD | #x20 to #xD7FF | #xE000 to #xFFFD | #x10000 to #x10FFFF;
 * lone surrogates are invalid too.
 */
const INVALID_CHARS_RE = /[\u0000-\u0008\u000B\u000C\u000E-\u001F\uFFFE\uFFFF]|[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/;

/** Throws when a body or attribute value holds characters SQS refuses. */
export function checkMessageContents(
  s: string,
  what: string,
  code: 'InvalidMessageContents' | 'InvalidParameterValue' = 'InvalidMessageContents',
): void {
  if (INVALID_CHARS_RE.test(s)) {
    throw sqsError(
      code,
      `${what} contains invalid characters. Valid unicode characters are #x9 | #xA | #xD | #x20 to #xD7FF | #xE000 to #xFFFD | #x10000 to #x10FFFF`,
    );
  }
}
