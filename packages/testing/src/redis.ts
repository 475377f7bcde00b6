import { Redis } from 'ioredis';

/** The Redis URL tests use: `REDIS_URL` or the local default. */
export function redisUrl(): string {
  return process.env['REDIS_URL'] ?? 'redis://127.0.0.1:6379';
}

/** A new ioredis connection to the test Redis. */
export function createTestRedis(): Redis {
  return new Redis(redisUrl(), { maxRetriesPerRequest: 1, lazyConnect: false });
}

/** Deletes every key under a prefix (SCAN, never KEYS). */
export async function cleanupRedisPrefix(redis: Redis, prefix: string): Promise<void> {
  let cursor = '0';
  do {
    const [next, keys] = await redis.scan(cursor, 'MATCH', `${prefix}*`, 'COUNT', 1000);
    cursor = next;
    if (keys.length) await redis.unlink(...keys);
  } while (cursor !== '0');
}
