import { createHash } from 'node:crypto';
import type { KmsUsageEntry } from '../usage-log.js';

/** The `eventSource` of every event aws-local records. */
export const KMS_EVENT_SOURCE = 'kms.amazonaws.com';
/** CloudTrail's resource type for KMS keys. */
export const KMS_KEY_RESOURCE_TYPE = 'AWS::KMS::Key';

/**
 * KMS operations CloudTrail marks `readOnly: true`: the cryptographic operations and the
 * Describe/Get/List family (AWS's own KMS event examples, e.g. ReEncrypt and Decrypt, are read-only).
 */
const READ_ONLY_RE = /^(Describe|Get|List|Encrypt$|Decrypt$|ReEncrypt$|GenerateDataKey|GenerateRandom$|Sign$|Verify$|GenerateMac$|VerifyMac$|DeriveSharedSecret$)/;

/** Whether CloudTrail records the KMS operation as read-only. */
export function isReadOnly(eventName: string): boolean {
  return READ_ONLY_RE.test(eventName) && eventName !== 'GetParametersForImport';
}

/**
 * The IAM user name aws-local shows for a caller. aws-local has no IAM, so the access key id stands
 * for the user, as in the ARNs of its AccessDenied messages.
 */
export function userNameOf(e: KmsUsageEntry): string {
  return e.accessKeyId;
}

/** A stable IAM-user-style principal id (`AIDA…`) derived from the access key id. */
function principalIdOf(accessKeyId: string): string {
  return `AIDA${createHash('sha256').update(accessKeyId).digest('hex').slice(0, 17).toUpperCase()}`;
}

/** CloudTrail's second-precision ISO time, e.g. `2025-05-22T19:34:55Z`. */
function isoSeconds(d: Date): string {
  return `${d.toISOString().slice(0, 19)}Z`;
}

/**
 * The `CloudTrailEvent` JSON document of one KMS call, shaped like the KMS events AWS documents
 * (see "Logging AWS KMS API calls with AWS CloudTrail": ReEncrypt lists source then destination key).
 */
export function cloudTrailEvent(e: KmsUsageEntry): Record<string, unknown> {
  const userIdentity: Record<string, unknown> = {
    type: 'IAMUser',
    principalId: principalIdOf(e.accessKeyId),
    arn: `arn:aws:iam::${e.accountId}:user/${userNameOf(e)}`,
    accountId: e.accountId,
    accessKeyId: e.accessKeyId,
    userName: userNameOf(e),
  };
  if (e.invokedBy !== undefined) userIdentity['invokedBy'] = e.invokedBy;
  const event: Record<string, unknown> = {
    eventVersion: '1.11',
    userIdentity,
    eventTime: isoSeconds(e.eventTime),
    eventSource: KMS_EVENT_SOURCE,
    eventName: e.eventName,
    awsRegion: e.region,
    sourceIPAddress: e.invokedBy ?? e.sourceIp,
    userAgent: e.invokedBy ?? e.userAgent,
  };
  if (e.errorCode !== undefined) {
    event['errorCode'] = e.errorCode;
    event['errorMessage'] = e.errorMessage ?? '';
  }
  Object.assign(event, {
    requestParameters: e.requestParameters,
    responseElements: e.responseElements ?? null,
    requestID: e.requestId,
    eventID: e.eventId,
    readOnly: isReadOnly(e.eventName),
    resources: e.keyArns.map((arn) => ({ accountId: accountOfArn(arn) ?? e.accountId, type: KMS_KEY_RESOURCE_TYPE, ARN: arn })),
    eventType: 'AwsApiCall',
    managementEvent: true,
    recipientAccountId: e.accountId,
    eventCategory: 'Management',
  });
  return event;
}

function accountOfArn(arn: string): string | undefined {
  return /^arn:[^:]+:kms:[^:]*:(\d{12}):/.exec(arn)?.[1];
}
