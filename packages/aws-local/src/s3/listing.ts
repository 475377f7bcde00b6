import { canonicalId, quoted, requireBucket, xmlResponse, type Handler } from './core.js';
import { invalidArgument } from './errors.js';
import { currentObject, versionsOf, type Bucket, type ObjectVersion } from './model.js';
import { isoDate, type S3Request } from './request.js';
import type { XmlChild } from './xml.js';

type Entry = { kind: 'key'; key: string } | { kind: 'prefix'; prefix: string };

/** The smallest string greater than every string that starts with `p` (null when none exists). */
function pastPrefix(p: string): string | null {
  let i = p.length - 1;
  while (i >= 0 && p.charCodeAt(i) === 0xffff) i--;
  if (i < 0) return null;
  return p.slice(0, i) + String.fromCharCode(p.charCodeAt(i) + 1);
}

/**
 * Walks a bucket's keys in order under `prefix`, rolling keys up into common prefixes at
 * `delimiter`. Starts at `start` (after it when `exclusive`). Keys that `include` rejects (deleted
 * keys for object listings) are skipped and do not make a common prefix.
 */
function* walk(
  bucket: Bucket,
  prefix: string,
  delimiter: string,
  start: string,
  exclusive: boolean,
  include: (key: string) => boolean,
): Generator<Entry> {
  let from = start;
  let excl = exclusive;
  if (from < prefix) {
    from = prefix;
    excl = false;
  }
  // A marker that is itself a common prefix resumes after everything it rolled up.
  if (excl && delimiter !== '' && from.startsWith(prefix) && from.endsWith(delimiter) && from.slice(prefix.length).indexOf(delimiter) === from.length - prefix.length - delimiter.length) {
    const next = pastPrefix(from);
    if (next === null) return;
    from = next;
    excl = false;
  }
  let it = bucket.keys.from(from, excl);
  for (;;) {
    const r = it.next();
    if (r.done) return;
    const key = r.value;
    if (!key.startsWith(prefix)) {
      if (key > prefix) return;
      continue;
    }
    if (delimiter !== '') {
      const i = key.indexOf(delimiter, prefix.length);
      if (i >= 0) {
        if (!include(key)) continue;
        const cp = key.slice(0, i + delimiter.length);
        yield { kind: 'prefix', prefix: cp };
        const next = pastPrefix(cp);
        if (next === null) return;
        it = bucket.keys.from(next, false);
        continue;
      }
    }
    if (include(key)) yield { kind: 'key', key };
  }
}

function maxKeysOf(req: S3Request): number {
  const text = req.query.get('max-keys');
  if (text === null) return 1000;
  const n = Number(text);
  if (!/^\d+$/.test(text) || !Number.isSafeInteger(n)) {
    throw invalidArgument('Provided max-keys not an integer or within integer range', 'max-keys', text);
  }
  return Math.min(n, 1000);
}

function encoderOf(req: S3Request): (s: string) => string {
  const type = req.query.get('encoding-type');
  if (type === null) return (s) => s;
  if (type !== 'url') throw invalidArgument('Invalid Encoding Method specified in Request', 'encoding-type', type);
  return (s) => encodeURIComponent(s).replace(/%2F/g, '/');
}

function take(gen: Generator<Entry>, max: number): { page: Entry[]; truncated: boolean } {
  const page: Entry[] = [];
  for (;;) {
    const r = gen.next();
    if (r.done) return { page, truncated: false };
    if (page.length === max) return { page, truncated: true };
    page.push(r.value);
  }
}

function contentXml(bucket: Bucket, key: string, v: ObjectVersion, enc: (s: string) => string, owner: boolean): XmlChild {
  return [
    'Contents',
    [
      ['Key', enc(key)],
      ['LastModified', isoDate(v.lastModified)],
      ['ETag', quoted(v.etag)],
      ['Size', v.size],
      ['StorageClass', v.storageClass ?? 'STANDARD'],
      owner && ['Owner', [['ID', canonicalId(bucket.accountId)]]],
    ],
  ];
}

function encodeToken(e: Entry): string {
  return Buffer.from(e.kind === 'key' ? `K${e.key}` : `P${e.prefix}`, 'utf8').toString('base64url');
}

function decodeToken(token: string): { start: string; exclusive: boolean } {
  const text = Buffer.from(token, 'base64url').toString('utf8');
  const bad = () => invalidArgument('The continuation token provided is incorrect', 'continuation-token', token);
  if (token === '' || Buffer.from(text, 'utf8').toString('base64url') !== token) throw bad();
  if (text.startsWith('K')) return { start: text.slice(1), exclusive: true };
  if (text.startsWith('P')) {
    const next = pastPrefix(text.slice(1));
    return next === null ? { start: '\uffff\uffff', exclusive: true } : { start: next, exclusive: false };
  }
  throw bad();
}

/** ListObjectsV2: prefix, delimiter, continuation-token, start-after, max-keys (<= 1000), encoding-type=url. */
export const listObjectsV2: Handler = (core, req) => {
  const bucket = requireBucket(core, req);
  const prefix = req.query.get('prefix') ?? '';
  const delimiter = req.query.get('delimiter') ?? '';
  const max = maxKeysOf(req);
  const enc = encoderOf(req);
  const token = req.query.get('continuation-token');
  const startAfter = req.query.get('start-after');
  const fetchOwner = req.query.get('fetch-owner') === 'true';
  const pos = token !== null ? decodeToken(token) : { start: startAfter ?? '', exclusive: startAfter !== null };
  const { page, truncated } = take(
    walk(bucket, prefix, delimiter, pos.start, pos.exclusive, (k) => currentObject(bucket, k) !== undefined),
    max,
  );
  const last = page[page.length - 1];
  const children: XmlChild[] = [
    ['Name', bucket.name],
    ['Prefix', enc(prefix)],
    delimiter !== '' && ['Delimiter', enc(delimiter)],
    ['MaxKeys', max],
    req.query.get('encoding-type') !== null && ['EncodingType', 'url'],
    ['KeyCount', page.length],
    ['IsTruncated', truncated],
    token !== null && ['ContinuationToken', token],
    truncated && last && ['NextContinuationToken', encodeToken(last)],
    startAfter !== null && ['StartAfter', enc(startAfter)],
    ...page.map((e): XmlChild =>
      e.kind === 'key'
        ? contentXml(bucket, e.key, currentObject(bucket, e.key) as ObjectVersion, enc, fetchOwner)
        : ['CommonPrefixes', [['Prefix', enc(e.prefix)]]],
    ),
  ];
  return xmlResponse(req, 'ListBucketResult', children);
};

/** ListObjects (v1): marker paging; NextMarker only with a delimiter, as on AWS. */
export const listObjects: Handler = (core, req) => {
  const bucket = requireBucket(core, req);
  const prefix = req.query.get('prefix') ?? '';
  const delimiter = req.query.get('delimiter') ?? '';
  const max = maxKeysOf(req);
  const enc = encoderOf(req);
  const marker = req.query.get('marker') ?? '';
  const { page, truncated } = take(
    walk(bucket, prefix, delimiter, marker, marker !== '', (k) => currentObject(bucket, k) !== undefined),
    max,
  );
  const last = page[page.length - 1];
  const children: XmlChild[] = [
    ['Name', bucket.name],
    ['Prefix', enc(prefix)],
    ['Marker', enc(marker)],
    truncated && delimiter !== '' && last && ['NextMarker', enc(last.kind === 'key' ? last.key : last.prefix)],
    ['MaxKeys', max],
    delimiter !== '' && ['Delimiter', enc(delimiter)],
    req.query.get('encoding-type') !== null && ['EncodingType', 'url'],
    ['IsTruncated', truncated],
    ...page.map((e): XmlChild =>
      e.kind === 'key'
        ? contentXml(bucket, e.key, currentObject(bucket, e.key) as ObjectVersion, enc, true)
        : ['CommonPrefixes', [['Prefix', enc(e.prefix)]]],
    ),
  ];
  return xmlResponse(req, 'ListBucketResult', children);
};

/**
 * ListObjectVersions: every version and delete marker, keys in order and versions newest first,
 * with key-marker / version-id-marker paging.
 */
export const listObjectVersions: Handler = (core, req) => {
  const bucket = requireBucket(core, req);
  const prefix = req.query.get('prefix') ?? '';
  const delimiter = req.query.get('delimiter') ?? '';
  const max = maxKeysOf(req);
  const enc = encoderOf(req);
  const keyMarker = req.query.get('key-marker') ?? '';
  const versionMarker = req.query.get('version-id-marker');
  if (versionMarker !== null && versionMarker !== '' && keyMarker === '') {
    throw invalidArgument('A version-id marker cannot be specified without a key marker.', 'version-id-marker', versionMarker);
  }
  const resumeInKey = versionMarker !== null && versionMarker !== '';
  const gen = walk(bucket, prefix, delimiter, keyMarker, keyMarker !== '' && !resumeInKey, () => true);
  type Item = { kind: 'version'; key: string; v: ObjectVersion; latest: boolean } | { kind: 'prefix'; prefix: string };
  const items: Item[] = [];
  let truncated = false;
  outer: for (;;) {
    const r = gen.next();
    if (r.done) break;
    const e = r.value;
    if (e.kind === 'prefix') {
      if (items.length === max) {
        truncated = true;
        break;
      }
      items.push(e);
      continue;
    }
    const newestFirst = [...versionsOf(bucket.objects.get(e.key))].reverse();
    let i = 0;
    if (resumeInKey && e.key === keyMarker) {
      const at = newestFirst.findIndex((v) => (v.versionId ?? 'null') === versionMarker);
      i = at >= 0 ? at + 1 : newestFirst.length;
    }
    for (; i < newestFirst.length; i++) {
      if (items.length === max) {
        truncated = true;
        break outer;
      }
      items.push({ kind: 'version', key: e.key, v: newestFirst[i] as ObjectVersion, latest: i === 0 });
    }
  }
  const last = items[items.length - 1];
  const owner: XmlChild = ['Owner', [['ID', canonicalId(bucket.accountId)]]];
  const children: XmlChild[] = [
    ['Name', bucket.name],
    ['Prefix', enc(prefix)],
    ['KeyMarker', enc(keyMarker)],
    ['VersionIdMarker', versionMarker ?? ''],
    truncated && last && ['NextKeyMarker', enc(last.kind === 'version' ? last.key : last.prefix)],
    truncated && last?.kind === 'version' && ['NextVersionIdMarker', last.v.versionId ?? 'null'],
    ['MaxKeys', max],
    delimiter !== '' && ['Delimiter', enc(delimiter)],
    req.query.get('encoding-type') !== null && ['EncodingType', 'url'],
    ['IsTruncated', truncated],
    ...items.map((it): XmlChild => {
      if (it.kind === 'prefix') return ['CommonPrefixes', [['Prefix', enc(it.prefix)]]];
      const common: XmlChild[] = [
        ['Key', enc(it.key)],
        ['VersionId', it.v.versionId ?? 'null'],
        ['IsLatest', it.latest],
        ['LastModified', isoDate(it.v.lastModified)],
      ];
      if (it.v.deleteMarker) return ['DeleteMarker', [...common, owner]];
      return [
        'Version',
        [...common, ['ETag', quoted(it.v.etag)], ['Size', it.v.size], ['StorageClass', it.v.storageClass ?? 'STANDARD'], owner],
      ];
    }),
  ];
  return xmlResponse(req, 'ListVersionsResult', children);
};
