/**
 * The part of `@rekey/fleet` that opens no connection and loads no AWS, Redis, Postgres or HTTP
 * server library: errors, the audit chain's offline checks and exports, CSV, and the warning
 * router. The CLI imports this before it knows which command runs, so `rekey --help` or a usage
 * error does not pay for loading the whole fleet (the main entry takes ~0.9 s; this ~0.1 s).
 */
export { FleetError, FLEET_ERROR_CODES, type FleetErrorCode } from './errors.js';
export { auditJsonl, parseAuditJsonl, verifyAuditChain, type AuditVerification, type StoredAuditEntry } from './audit.js';
export { failuresCsv, csvField } from './report.js';
export { routeWarnings, warningLine } from './warnings.js';
