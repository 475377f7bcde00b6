import type { Input } from './input.js';

/**
 * The SQS query protocol (form-encoded `Action=…` requests, XML responses), translated to and
 * from the JSON shapes the operations use.
 */

const XMLNS = 'http://queue.amazonaws.com/doc/2012-11-05/';
/** Parameters that are integers in the JSON shapes. */
const INT_PARAMS = new Set(['DelaySeconds', 'MaxNumberOfMessages', 'VisibilityTimeout', 'WaitTimeSeconds', 'MaxResults']);
/** Flattened list prefixes of batch operations, by JSON member. */
const BATCH_ENTRY_PREFIXES = [
  'SendMessageBatchRequestEntry',
  'DeleteMessageBatchRequestEntry',
  'ChangeMessageVisibilityBatchRequestEntry',
] as const;

interface Tree {
  value?: string;
  children: Map<string, Tree>;
}

function buildTree(params: Iterable<[string, string]>): Tree {
  const root: Tree = { children: new Map() };
  for (const [key, value] of params) {
    let node = root;
    for (const part of key.split('.')) {
      let next = node.children.get(part);
      if (!next) {
        next = { children: new Map() };
        node.children.set(part, next);
      }
      node = next;
    }
    node.value = value;
  }
  return root;
}

/** The members `Prefix.1`, `Prefix.2`, … of a flattened list, in index order. */
function listOf(node: Tree | undefined): Tree[] {
  if (!node) return [];
  return [...node.children.entries()]
    .filter(([k]) => /^\d+$/.test(k))
    .sort(([a], [b]) => Number(a) - Number(b))
    .map(([, v]) => v);
}

function leaf(node: Tree | undefined, name: string): string | undefined {
  return node?.children.get(name)?.value;
}

function messageAttributesOf(node: Tree | undefined): Record<string, unknown> | undefined {
  const items = listOf(node);
  if (items.length === 0) return undefined;
  const out: Record<string, unknown> = {};
  for (const item of items) {
    const name = leaf(item, 'Name') ?? '';
    const v = item.children.get('Value');
    const attr: Record<string, string> = {};
    for (const f of ['DataType', 'StringValue', 'BinaryValue']) {
      const x = leaf(v, f);
      if (x !== undefined) attr[f] = x;
    }
    out[name] = attr;
  }
  return out;
}

function mapOf(node: Tree | undefined, keyName: string, valueName: string): Record<string, string> | undefined {
  const items = listOf(node);
  if (items.length === 0) return undefined;
  const out: Record<string, string> = {};
  for (const item of items) out[leaf(item, keyName) ?? ''] = leaf(item, valueName) ?? '';
  return out;
}

function scalar(name: string, value: string): unknown {
  return INT_PARAMS.has(name) && /^-?\d+$/.test(value) ? Number(value) : value;
}

function structOf(node: Tree, action: string): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [name, child] of node.children) {
    switch (name) {
      case 'Action':
      case 'Version':
        break;
      case 'Attribute':
        out['Attributes'] = mapOf(child, 'Name', 'Value');
        break;
      case 'Tag':
        // CreateQueue's member is lower-case `tags` in the JSON model; TagQueue's is `Tags`.
        out[action === 'CreateQueue' ? 'tags' : 'Tags'] = mapOf(child, 'Key', 'Value');
        break;
      case 'TagKey':
        out['TagKeys'] = listOf(child).map((n) => n.value ?? '');
        break;
      case 'AttributeName':
        out['AttributeNames'] = listOf(child).map((n) => n.value ?? '');
        break;
      case 'MessageAttributeName':
        out['MessageAttributeNames'] = listOf(child).map((n) => n.value ?? '');
        break;
      case 'MessageSystemAttributeName':
        out['MessageSystemAttributeNames'] = listOf(child).map((n) => n.value ?? '');
        break;
      case 'MessageAttribute':
        out['MessageAttributes'] = messageAttributesOf(child);
        break;
      case 'MessageSystemAttribute':
        out['MessageSystemAttributes'] = messageAttributesOf(child);
        break;
      default:
        if ((BATCH_ENTRY_PREFIXES as readonly string[]).includes(name)) {
          out['Entries'] = listOf(child).map((n) => structOf(n, action));
        } else if (child.value !== undefined) out[name] = scalar(name, child.value);
    }
  }
  return out;
}

/** Reads the action name and its JSON-shaped input from query-protocol parameters. */
export function parseQueryInput(params: URLSearchParams): { action: string; input: Input } {
  const action = params.get('Action') ?? '';
  return { action, input: structOf(buildTree(params.entries()), action) };
}

function esc(s: string): string {
  return s
    .replace(/&/g, '&amp;')
    .replace(/</g, '&lt;')
    .replace(/>/g, '&gt;')
    .replace(/"/g, '&quot;')
    .replace(/'/g, '&apos;')
    .replace(/\r/g, '&#xD;');
}

function el(name: string, content: string): string {
  return `<${name}>${content}</${name}>`;
}

function attributeMap(elName: string, map: Record<string, unknown>): string {
  return Object.entries(map)
    .map(([k, v]) => el(elName, el('Name', esc(k)) + el('Value', esc(String(v)))))
    .join('');
}

function messageAttributeMap(map: Record<string, unknown>): string {
  return Object.entries(map)
    .map(([k, v]) => {
      const a = v as Record<string, unknown>;
      let value = '';
      if (a['StringValue'] !== undefined) value += el('StringValue', esc(String(a['StringValue'])));
      if (a['BinaryValue'] !== undefined) value += el('BinaryValue', esc(String(a['BinaryValue'])));
      value += el('DataType', esc(String(a['DataType'])));
      return el('MessageAttribute', el('Name', esc(k)) + el('Value', value));
    })
    .join('');
}

/** Element names of flattened list members in results, by JSON member name and action. */
function listElement(action: string, member: string): string {
  if (member === 'QueueUrls' || member === 'queueUrls') return 'QueueUrl';
  if (member === 'Messages') return 'Message';
  if (member === 'Failed') return 'BatchResultErrorEntry';
  if (member === 'Successful') return `${action}ResultEntry`;
  return member;
}

function structXml(action: string, obj: Record<string, unknown>): string {
  let xml = '';
  for (const [k, v] of Object.entries(obj)) {
    if (v === undefined || v === null) continue;
    if (k === 'Attributes') xml += attributeMap('Attribute', v as Record<string, unknown>);
    else if (k === 'MessageAttributes') xml += messageAttributeMap(v as Record<string, unknown>);
    else if (k === 'Tags') {
      xml += Object.entries(v as Record<string, unknown>)
        .map(([tk, tv]) => el('Tag', el('Key', esc(tk)) + el('Value', esc(String(tv)))))
        .join('');
    } else if (Array.isArray(v)) {
      const name = listElement(action, k);
      xml += v
        .map((item) =>
          typeof item === 'object' && item !== null
            ? el(name, structXml(action, item as Record<string, unknown>))
            : el(name, esc(String(item))),
        )
        .join('');
    } else if (typeof v === 'object') xml += el(k, structXml(action, v as Record<string, unknown>));
    else xml += el(k, esc(String(v)));
  }
  return xml;
}

/** The XML body of a successful query-protocol response; `output` is undefined for actions without a result. */
export function queryResponseXml(action: string, output: Record<string, unknown> | undefined, requestId: string): string {
  const resultEl = output === undefined ? '' : el(`${action}Result`, structXml(action, output));
  return (
    `<?xml version="1.0"?><${action}Response xmlns="${XMLNS}">${resultEl}` +
    `${el('ResponseMetadata', el('RequestId', requestId))}</${action}Response>`
  );
}

/** The XML body of a query-protocol error. */
export function queryErrorXml(type: string, code: string, message: string, requestId: string): string {
  return (
    `<?xml version="1.0"?><ErrorResponse xmlns="${XMLNS}">` +
    el('Error', el('Type', type) + el('Code', esc(code)) + el('Message', esc(message)) + '<Detail/>') +
    `${el('RequestId', requestId)}</ErrorResponse>`
  );
}
