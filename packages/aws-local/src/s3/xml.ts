import { XMLParser, XMLValidator } from 'fast-xml-parser';
import { AwsError } from '../errors.js';

const S3_NS = 'http://s3.amazonaws.com/doc/2006-03-01/';
const XML_DECL = '<?xml version="1.0" encoding="UTF-8"?>\n';

/**
 * A node of an XML document to build: a text leaf, an element with children, or absent. The name
 * may carry attributes after a space (`Grantee xsi:type="CanonicalUser"`).
 */
export type XmlChild = readonly [name: string, value: string | number | boolean | readonly XmlChild[]] | null | undefined | false;

const NEEDS_ESCAPE = /[&<>"'\r\u0000-\u0008\u000b\u000c\u000e-\u001f]/;

/** Escapes text for XML content; also escapes characters XML 1.0 cannot carry literally. */
export function escapeXml(s: string): string {
  // Most text (keys, ETags, dates) has nothing to escape; a test is much cheaper than a replace.
  if (!NEEDS_ESCAPE.test(s)) return s;
  return s.replace(/[&<>"'\r\u0000-\u0008\u000b\u000c\u000e-\u001f]/g, (c) => {
    switch (c) {
      case '&':
        return '&amp;';
      case '<':
        return '&lt;';
      case '>':
        return '&gt;';
      case '"':
        return '&quot;';
      case "'":
        return '&apos;';
      default:
        return `&#x${c.charCodeAt(0).toString(16)};`;
    }
  });
}

function render(children: readonly XmlChild[], out: string[]): void {
  for (const c of children) {
    if (!c) continue;
    const [name, value] = c;
    const space = name.indexOf(' ');
    const tag = space < 0 ? name : name.slice(0, space);
    if (Array.isArray(value)) {
      out.push(`<${name}>`);
      render(value as readonly XmlChild[], out);
      out.push(`</${tag}>`);
    } else {
      // Numbers and booleans never need escaping.
      out.push(`<${name}>${typeof value === 'string' ? escapeXml(value) : String(value)}</${tag}>`);
    }
  }
}

/** Builds an S3 XML document with the S3 namespace on its root element. */
export function xmlDocument(root: string, children: readonly XmlChild[], namespace = true): string {
  const out: string[] = [XML_DECL, namespace ? `<${root} xmlns="${S3_NS}">` : `<${root}>`];
  render(children, out);
  out.push(`</${root}>`);
  return out.join('');
}

/** A parsed XML element: text, or an object of child elements (repeated ones are arrays). */
export type XmlValue = string | XmlObject | XmlValue[];
/** A parsed XML element with children. */
export interface XmlObject {
  [name: string]: XmlValue;
}

/**
 * Parses a request body. Elements named in `arrays` always come back as arrays. A body that is
 * not well-formed XML, or whose root is not `root`, is S3's MalformedXML.
 */
export function parseXmlBody(body: Buffer, root: string, arrays: readonly string[] = []): XmlObject {
  const text = body.toString('utf8');
  if (text.trim() === '' || XMLValidator.validate(text) !== true) throw malformed();
  const arraySet = new Set(arrays);
  const parser = new XMLParser({
    ignoreAttributes: true,
    removeNSPrefix: true,
    parseTagValue: false,
    trimValues: true,
    ignoreDeclaration: true,
    processEntities: true,
    isArray: (name) => arraySet.has(name),
  });
  const doc: unknown = parser.parse(text);
  if (!doc || typeof doc !== 'object') throw malformed();
  const top = (doc as Record<string, unknown>)[root];
  if (top === undefined) throw malformed();
  // An empty element parses as '' — treat it as an element with no children.
  if (top === '') return {};
  if (typeof top !== 'object' || Array.isArray(top)) throw malformed();
  return top as XmlObject;
}

/** The text of a child element, or undefined when absent; a nested element is MalformedXML. */
export function childText(o: XmlObject, name: string): string | undefined {
  const v = o[name];
  if (v === undefined) return undefined;
  if (typeof v === 'string') return v;
  throw malformed();
}

/** A child element that must be an element (object); an empty element is `{}`. */
export function childObject(o: XmlObject, name: string): XmlObject | undefined {
  const v = o[name];
  if (v === undefined) return undefined;
  if (v === '') return {};
  if (typeof v === 'object' && !Array.isArray(v)) return v;
  throw malformed();
}

/** A repeated child element as a list of elements. */
export function childObjects(o: XmlObject, name: string): XmlObject[] {
  const v = o[name];
  if (v === undefined) return [];
  const list = Array.isArray(v) ? v : [v];
  return list.map((x) => {
    if (x === '') return {};
    if (typeof x === 'object' && !Array.isArray(x)) return x;
    throw malformed();
  });
}

function malformed() {
  return new AwsError(
    'MalformedXML',
    'The XML you provided was not well-formed or did not validate against our published schema',
    400,
  );
}
