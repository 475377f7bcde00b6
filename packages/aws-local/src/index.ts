export { startAwsLocal } from './server.js';
export type { AwsLocal, AwsLocalOptions } from './server.js';
export { Controls, KMS_CRYPTO_OPERATIONS } from './controls.js';
export type { DenyRule, FaultRule, LatencyRule, QuotaRule, OperationCounters, ServiceName } from './controls.js';
export type { KmsUsageEntry } from './usage-log.js';
export { DEFAULT_ACCOUNT, DEFAULT_REGION } from './context.js';
