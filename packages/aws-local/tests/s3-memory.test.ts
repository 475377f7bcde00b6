import { describe, expect, it } from 'vitest';
import type { RequestContext } from '../src/context.js';
import { startAwsLocal } from '../src/index.js';

/**
 * The 1,000,000-object memory measurement for docs/s3.md. It takes about a minute and a GB of
 * memory, so it runs only with AWS_LOCAL_MEASURE=1:
 *   AWS_LOCAL_MEASURE=1 npx vitest run tests/s3-memory.test.ts
 */
const N = Number(process.env['AWS_LOCAL_MEASURE_OBJECTS'] ?? 1_000_000);

describe.runIf(process.env['AWS_LOCAL_MEASURE'] === '1')('S3 at scale', () => {
  it(`holds ${N} small objects within 1.5 GB RSS and lists from the middle quickly`, { timeout: 600_000 }, async () => {
    const aws = await startAwsLocal({ port: 0 });
    const ctx: RequestContext = {
      requestId: 'measure',
      accessKeyId: 'AKIAMEASURE',
      accountId: '000000000000',
      region: 'us-east-1',
      sourceIp: '127.0.0.1',
      userAgent: 'measure',
      time: new Date(),
    };
    const request = (method: string, path: string, body = Buffer.alloc(0), query = '') => ({
      method,
      path,
      query: new URLSearchParams(query),
      rawQuery: query,
      headers: {},
      body,
      ctx,
    });
    const rssBefore = process.memoryUsage().rss;
    await aws.s3.handle(request('PUT', '/measure'));
    const started = performance.now();
    for (let i = 0; i < N; i++) {
      // A permutation of 0..N-1, so keys arrive out of order as they would from many writers.
      const n = (i * 7919) % N;
      const res = await aws.s3.handle(request('PUT', `/measure/data/${String(n).padStart(7, '0')}.json`, Buffer.from(`{"n":${n}}`)));
      if (res.status !== 200) throw new Error(`PutObject ${n} answered ${res.status}`);
    }
    const putSeconds = (performance.now() - started) / 1000;
    (globalThis as { gc?: () => void }).gc?.();
    const { rss, heapUsed } = process.memoryUsage();
    const listStarted = performance.now();
    const list = await aws.s3.handle(
      request('GET', '/measure', undefined, `list-type=2&start-after=data/${String(Math.floor(N / 2)).padStart(7, '0')}.json&max-keys=1000`),
    );
    const listMs = performance.now() - listStarted;
    const listed = String(list.body).match(/<Key>/g)?.length ?? 0;
    console.log(
      `aws-local S3: ${N} objects: RSS ${(rss / 2 ** 20).toFixed(0)} MiB (+${((rss - rssBefore) / 2 ** 20).toFixed(0)} MiB), ` +
        `heap ${(heapUsed / 2 ** 20).toFixed(0)} MiB, ${(N / putSeconds).toFixed(0)} puts/s, ListObjectsV2 from the middle ${listMs.toFixed(1)} ms`,
    );
    await aws.close();

    expect(listed).toBe(Math.min(1000, N - Math.floor(N / 2) - 1));
    expect(rss).toBeLessThan(1.5 * 2 ** 30);
  });
});
