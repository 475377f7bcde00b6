import { describe, expect, it } from 'vitest';
import { randomId } from '../src/ids.js';
import { KmsUsageLog } from '../src/usage-log.js';

function entry(i: number) {
  return {
    eventTime: new Date(1_700_000_000_000 + i),
    eventName: 'Decrypt',
    accountId: '000000000000',
    region: 'us-east-1',
    accessKeyId: 'AKIATEST',
    sourceIp: '127.0.0.1',
    userAgent: 'test',
    keyArns: [],
    requestParameters: { n: i },
    responseElements: null,
    requestId: `req-${i}`,
  };
}

describe('KmsUsageLog', () => {
  it('keeps exactly the newest maxEntries entries, oldest first', () => {
    const log = new KmsUsageLog(100);
    for (let i = 0; i < 1000; i++) {
      log.append(entry(i));
      if (i % 37 === 0) {
        const all = log.all();
        expect(all.length).toBe(Math.min(i + 1, 100));
        expect(all[all.length - 1]?.requestId).toBe(`req-${i}`);
      }
    }
    const all = log.all();
    expect(all.map((e) => e.requestId)).toEqual(Array.from({ length: 100 }, (_, j) => `req-${900 + j}`));
    expect(log.snapshot()).toBe(all);
  });

  it('gives every entry a distinct event id', () => {
    const log = new KmsUsageLog();
    const ids = new Set(Array.from({ length: 500 }, (_, i) => log.append(entry(i)).eventId));
    expect(ids.size).toBe(500);
  });
});

describe('randomId', () => {
  it('formats version 4 UUIDs like crypto.randomUUID', () => {
    const ids = Array.from({ length: 1000 }, randomId);
    for (const id of ids) expect(id).toMatch(/^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
    expect(new Set(ids).size).toBe(ids.length);
  });
});
