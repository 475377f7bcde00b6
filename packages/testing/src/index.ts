export { useAwsLocal, awsClientConfig, TEST_CREDENTIALS } from './aws.js';
export type { AwsTestEndpoint } from './aws.js';
export { uniqueName, uniquePrefix } from './names.js';
export { freePort } from './net.js';
export { runNode } from './process.js';
export type { Run } from './process.js';
export { redisUrl, createTestRedis, cleanupRedisPrefix } from './redis.js';
export { databaseUrl, createTestSchema } from './postgres.js';
export type { TestSchema } from './postgres.js';
