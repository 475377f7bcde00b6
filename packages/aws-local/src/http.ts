import type { RequestContext } from './context.js';

/** A request as every service handler sees it: body read, headers lower-cased. */
export interface RawRequest {
  readonly method: string;
  /** The URL path, still percent-encoded. */
  readonly path: string;
  readonly query: URLSearchParams;
  /** The raw query string without `?`, for services that need key order or bare keys. */
  readonly rawQuery: string;
  readonly headers: Readonly<Record<string, string>>;
  readonly body: Buffer;
  readonly ctx: RequestContext;
}

/** What a service handler answers; the server writes it. */
export interface RawResponse {
  status: number;
  headers?: Record<string, string>;
  body?: Buffer | string;
}

/** A service that handles raw HTTP requests and formats its own errors. */
export interface RawService {
  handle(req: RawRequest): Promise<RawResponse>;
}

/** A service that speaks an AWS JSON protocol: one operation name and one JSON input. */
export interface JsonService {
  handle(operation: string, input: Record<string, unknown>, ctx: RequestContext): Promise<Record<string, unknown>>;
}

/** State that `--data-dir` keeps across restarts. */
export interface Persistent {
  snapshot(): unknown;
  restore(data: unknown): void;
  reset(): void;
}
