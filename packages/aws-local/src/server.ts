import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { mkdir, readFile, rename, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { serialize, deserialize } from 'node:v8';
import { contextFromRequest, type RequestContext } from './context.js';
import { Controls } from './controls.js';
import { AwsError, ConnectionResetFault } from './errors.js';
import type { RawRequest, RawResponse } from './http.js';
import { KmsUsageLog } from './usage-log.js';
import { KmsService } from './kms/service.js';
import { S3Service } from './s3/service.js';
import { SqsService } from './sqs/service.js';
import { CloudTrailService } from './cloudtrail/service.js';
import { handleAdmin } from './admin.js';

/** Options for {@link startAwsLocal}. */
export interface AwsLocalOptions {
  /** Port to listen on; 0 picks a free one. @defaultValue 4566 */
  port?: number;
  /** Interface to bind. @defaultValue '127.0.0.1' */
  host?: string;
  /** Directory where state is kept across restarts; memory only when unset. */
  dataDir?: string;
  /** How often state is saved to `dataDir` when it changed. @defaultValue 10000 */
  saveIntervalMs?: number;
}

/** A running aws-local: its URL, the admin controls, the services and `close()`. */
export interface AwsLocal {
  readonly url: string;
  readonly port: number;
  readonly controls: Controls;
  readonly usage: KmsUsageLog;
  readonly kms: KmsService;
  readonly s3: S3Service;
  readonly sqs: SqsService;
  readonly cloudtrail: CloudTrailService;
  /** Clears all state and all admin rules. */
  reset(): void;
  /** Writes state to `dataDir` now (no-op without one). */
  save(): Promise<void>;
  /** Saves (with a data dir) and stops the server. */
  close(): Promise<void>;
}

const KMS_TARGET = 'TrentService.';
const SQS_TARGET = 'AmazonSQS.';
// The v3 SDK sends `CloudTrail_20131101.<Op>`; older SDKs the fully qualified form. AWS accepts both.
const CLOUDTRAIL_TARGETS = ['com.amazonaws.cloudtrail.v20131101.CloudTrail_20131101.', 'CloudTrail_20131101.'];
const STATE_FILE = 'aws-local.state';

function readBody(req: IncomingMessage): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => resolve(Buffer.concat(chunks)));
    req.on('error', reject);
  });
}

/** The request headers as single strings. Node has already lower-cased their names. */
function lowerHeaders(req: IncomingMessage): Record<string, string> {
  const out: Record<string, string> = {};
  const headers = req.headers;
  for (const k in headers) {
    const v = headers[k];
    if (v === undefined) continue;
    out[k] = Array.isArray(v) ? v.join(',') : v;
  }
  return out;
}

/**
 * The headers to send: as the service answered them, except that a non-empty `x-amzn-requestid`
 * goes first and an empty one is left out.
 */
function responseHeaders(headers: Record<string, string> = {}): Record<string, string> {
  const requestId = headers['x-amzn-requestid'];
  if (requestId === undefined) return headers;
  const { 'x-amzn-requestid': _, ...rest } = headers;
  return requestId ? { 'x-amzn-requestid': requestId, ...rest } : rest;
}

function jsonError(err: AwsError, contentType: string): RawResponse {
  return {
    status: err.status,
    headers: { 'content-type': contentType, 'x-amzn-errortype': err.code },
    body: JSON.stringify({ __type: err.code, message: err.message }),
  };
}

/** Parses an AWS JSON protocol body; an empty body is `{}`. */
function parseJsonInput(body: Buffer): Record<string, unknown> {
  if (body.length === 0) return {};
  let parsed: unknown;
  try {
    parsed = JSON.parse(body.toString('utf8'));
  } catch {
    throw new AwsError('SerializationException', 'Request body is not valid JSON');
  }
  if (parsed === null || typeof parsed !== 'object' || Array.isArray(parsed)) {
    throw new AwsError('SerializationException', 'Request body must be a JSON object');
  }
  return parsed as Record<string, unknown>;
}

/**
 * Starts aws-local: one HTTP server that routes by protocol to KMS (JSON 1.1), SQS (JSON 1.0
 * and query), CloudTrail (JSON 1.1) and S3 (REST-XML, path-style), plus `/_aws-local/*` admin.
 *
 * @example
 * const aws = await startAwsLocal({ port: 0 });
 * const kms = new KMSClient({ endpoint: aws.url, region: 'us-east-1', credentials });
 * await aws.close();
 */
export async function startAwsLocal(opts: AwsLocalOptions = {}): Promise<AwsLocal> {
  const controls = new Controls();
  const usage = new KmsUsageLog();
  const kms = new KmsService({ controls, usage });
  const s3 = new S3Service({ controls, kms });
  let baseUrl = '';
  const sqs = new SqsService({ controls, baseUrl: () => baseUrl });
  const cloudtrail = new CloudTrailService({ controls, usage });
  const persistent = { kms, s3, sqs, usage } as const;

  const reset = () => {
    controls.reset();
    usage.clear();
    kms.reset();
    s3.reset();
    sqs.reset();
  };

  const dataDir = opts.dataDir;
  if (dataDir) {
    await mkdir(dataDir, { recursive: true });
    try {
      const data = deserialize(await readFile(join(dataDir, STATE_FILE))) as Record<string, unknown>;
      for (const [name, svc] of Object.entries(persistent)) svc.restore(data[name]);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
    }
  }
  // Any request that is not a read may change state; only then is a periodic save needed.
  let dirty = false;
  // Saves never overlap: a save asked for while one runs waits for it, then writes once more.
  let saving: Promise<void> = Promise.resolve();
  const writeState = async () => {
    dirty = false;
    const data: Record<string, unknown> = {};
    for (const [name, svc] of Object.entries(persistent)) data[name] = svc.snapshot();
    const tmp = join(dataDir!, `${STATE_FILE}.tmp`);
    await writeFile(tmp, serialize(data));
    await rename(tmp, join(dataDir!, STATE_FILE));
  };
  const save = (): Promise<void> => {
    if (!dataDir) return Promise.resolve();
    saving = saving.catch(() => undefined).then(writeState);
    return saving;
  };

  async function route(req: IncomingMessage, body: Buffer, url: URL): Promise<RawResponse> {
    const headers = lowerHeaders(req);
    if (req.method !== 'GET' && req.method !== 'HEAD') dirty = true;
    if (url.pathname.startsWith('/_aws-local/')) {
      return handleAdmin({ method: req.method ?? 'GET', path: url.pathname, query: url.searchParams, body }, {
        controls,
        usage,
        reset,
        save,
      });
    }
    const target = headers['x-amz-target'] ?? '';
    const contentType = headers['content-type'] ?? '';
    let ctx: RequestContext;
    try {
      ctx = contextFromRequest(headers, url.searchParams, req.socket.remoteAddress ?? '127.0.0.1');
    } catch (err) {
      if (err instanceof AwsError && target) return jsonError(err, 'application/x-amz-json-1.1');
      throw err;
    }
    const raw: RawRequest = {
      method: req.method ?? 'GET',
      path: url.pathname,
      query: url.searchParams,
      rawQuery: url.search.startsWith('?') ? url.search.slice(1) : url.search,
      headers,
      body,
      ctx,
    };
    if (target.startsWith(KMS_TARGET)) {
      const ct = 'application/x-amz-json-1.1';
      try {
        const out = await kms.handle(target.slice(KMS_TARGET.length), parseJsonInput(body), ctx);
        return { status: 200, headers: { 'content-type': ct }, body: JSON.stringify(out) };
      } catch (err) {
        if (err instanceof AwsError) return jsonError(err, ct);
        throw err;
      }
    }
    if (CLOUDTRAIL_TARGETS.some((t) => target.startsWith(t))) {
      const ct = 'application/x-amz-json-1.1';
      try {
        const out = await cloudtrail.handle(target.slice(target.lastIndexOf('.') + 1), parseJsonInput(body), ctx);
        return { status: 200, headers: { 'content-type': ct }, body: JSON.stringify(out) };
      } catch (err) {
        if (err instanceof AwsError) return jsonError(err, ct);
        throw err;
      }
    }
    const isSqsQuery =
      (req.method === 'POST' && contentType.startsWith('application/x-www-form-urlencoded') &&
        /(^|&)Action=/.test(body.toString('latin1'))) ||
      (req.method === 'GET' && url.searchParams.has('Action'));
    if (target.startsWith(SQS_TARGET) || isSqsQuery) return sqs.handle(raw);
    return s3.handle(raw);
  }

  const server: Server = createServer((req: IncomingMessage, res: ServerResponse) => {
    void (async () => {
      let response: RawResponse;
      try {
        const body = await readBody(req);
        const url = new URL(req.url ?? '/', 'http://localhost');
        response = await route(req, body, url);
      } catch (err) {
        if (err instanceof ConnectionResetFault) {
          req.socket.destroy();
          return;
        }
        const message = err instanceof Error ? err.message : String(err);
        const code = err instanceof AwsError ? err.code : 'InternalFailure';
        const status = err instanceof AwsError ? err.status : 500;
        response = {
          status,
          headers: { 'content-type': 'application/json' },
          body: JSON.stringify({ __type: code, message }),
        };
      }
      if (res.destroyed) return;
      try {
        res.writeHead(response.status, responseHeaders(response.headers));
      } catch (err) {
        // A header value HTTP can't carry (e.g. a response-* override with non-Latin-1 text).
        res.writeHead(400, { 'content-type': 'application/xml' });
        res.end(`<?xml version="1.0" encoding="UTF-8"?><Error><Code>InvalidArgument</Code><Message>A response header value is not valid in HTTP: ${String((err as Error).message).replace(/[<>&]/g, '')}</Message></Error>`);
        return;
      }
      res.end(response.body ?? '');
    })();
  });
  server.keepAliveTimeout = 65_000;
  server.requestTimeout = 0;

  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(opts.port ?? 4566, opts.host ?? '127.0.0.1', () => resolve());
  });
  const addr = server.address() as AddressInfo;
  baseUrl = `http://${opts.host ?? '127.0.0.1'}:${addr.port}`;

  const timer = dataDir
    ? setInterval(() => {
        if (dirty) save().catch((err: unknown) => console.error(`aws-local: saving state failed: ${String(err)}`));
      }, opts.saveIntervalMs ?? 10_000)
    : undefined;
  timer?.unref();

  return {
    url: baseUrl,
    port: addr.port,
    controls,
    usage,
    kms,
    s3,
    sqs,
    cloudtrail,
    reset,
    save,
    async close() {
      if (timer) clearInterval(timer);
      sqs.close();
      await save();
      await new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      });
    },
  };
}
