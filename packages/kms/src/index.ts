export { classifyKmsError, isCredentialError, isThrottleError, safeMessage, KmsGatewayError, KMS_GATEWAY_ERROR_CODES } from './errors.js';
export type { ClassifiedKmsError, KeyRole, KmsCallRole, KmsGatewayErrorCode } from './errors.js';
export { retry, nextDelay, resolveRetryPolicy, DEFAULT_RETRY_POLICY } from './retry.js';
export type { RetryAttempt, RetryOptions, RetryPolicy } from './retry.js';
export { createKmsGateway, toKeyInfo } from './gateway.js';
export type { KmsClientSource, KmsGatewayOptions } from './gateway.js';
export { abortable } from './abortable.js';
export { createInFlightLimit } from './in-flight.js';
export type { InFlightLimit } from './in-flight.js';
export { createRedisLimiter } from './limiter.js';
export type { BudgetOption, LimiterStats, LongWaitInfo, RateLimiter, RedisLimiter, RedisLimiterOptions } from './limiter.js';
export { aimdUpdate, capacity, fairShare, grantStep, increaseStep, initialState, maxGrant, refill, MAX_INCREASE_STEP_MS } from './limiter-math.js';
export type { GrantRequest, GrantResult, LimiterParams, LimiterState, MigrationSlot } from './limiter-math.js';
export { LUA_SCRIPT_FILES, loadScript } from './scripts.js';
export type { LuaScript } from './scripts.js';
export type {
  DecryptInput,
  DecryptOutput,
  EncryptInput,
  EncryptOutput,
  EncryptionContext,
  GenerateDataKeyInput,
  GenerateDataKeyOutput,
  GenerateDataKeyWithoutPlaintextOutput,
  KmsCallOutcome,
  KmsGateway,
  KmsMetricsHook,
  KmsOperation,
  ReEncryptInput,
  ReEncryptOutput,
} from './types.js';
