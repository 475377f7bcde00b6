import { AwsError } from '../errors.js';

/**
 * SQS errors by the shape name the JSON protocol uses (`__type: com.amazonaws.sqs#<name>`),
 * with the code the query protocol and the `x-amzn-query-error` header use, and the HTTP status.
 * Taken from the `awsQueryError` traits of the SQS Smithy model.
 */
export const SQS_ERRORS = {
  QueueDoesNotExist: { queryCode: 'AWS.SimpleQueueService.NonExistentQueue', status: 400 },
  QueueNameExists: { queryCode: 'QueueAlreadyExists', status: 400 },
  ReceiptHandleIsInvalid: { queryCode: 'ReceiptHandleIsInvalid', status: 404 },
  MessageNotInflight: { queryCode: 'AWS.SimpleQueueService.MessageNotInflight', status: 400 },
  EmptyBatchRequest: { queryCode: 'AWS.SimpleQueueService.EmptyBatchRequest', status: 400 },
  TooManyEntriesInBatchRequest: { queryCode: 'AWS.SimpleQueueService.TooManyEntriesInBatchRequest', status: 400 },
  BatchEntryIdsNotDistinct: { queryCode: 'AWS.SimpleQueueService.BatchEntryIdsNotDistinct', status: 400 },
  InvalidBatchEntryId: { queryCode: 'AWS.SimpleQueueService.InvalidBatchEntryId', status: 400 },
  BatchRequestTooLong: { queryCode: 'AWS.SimpleQueueService.BatchRequestTooLong', status: 400 },
  PurgeQueueInProgress: { queryCode: 'AWS.SimpleQueueService.PurgeQueueInProgress', status: 403 },
  UnsupportedOperation: { queryCode: 'AWS.SimpleQueueService.UnsupportedOperation', status: 400 },
  InvalidAttributeName: { queryCode: 'InvalidAttributeName', status: 400 },
  InvalidAttributeValue: { queryCode: 'InvalidAttributeValue', status: 400 },
  InvalidMessageContents: { queryCode: 'InvalidMessageContents', status: 400 },
  InvalidAddress: { queryCode: 'InvalidAddress', status: 404 },
  // Common errors of every query-era AWS service; they have no SQS-specific shape.
  InvalidParameterValue: { queryCode: 'InvalidParameterValue', status: 400 },
  MissingParameter: { queryCode: 'MissingParameter', status: 400 },
  InvalidAction: { queryCode: 'InvalidAction', status: 400 },
} as const;

/** The name of an SQS error aws-local raises. */
export type SqsErrorName = keyof typeof SQS_ERRORS;

/** Builds the AwsError for an SQS error; the protocol layer adds the query code and fault type. */
export function sqsError(name: SqsErrorName, message: string): AwsError {
  return new AwsError(name, message, SQS_ERRORS[name].status);
}

/** How one error is written on the wire, in both protocols. */
export interface SqsWireError {
  /** `__type` of the JSON protocol. */
  readonly jsonType: string;
  /** `<Code>` of the query protocol, and the first half of `x-amzn-query-error`. */
  readonly queryCode: string;
  readonly fault: 'Sender' | 'Receiver';
  readonly status: number;
  readonly message: string;
}

/** Maps any AwsError (also those from the shared controls, e.g. AccessDenied) to its wire form. */
export function toWireError(err: AwsError): SqsWireError {
  const known = (SQS_ERRORS as Record<string, { queryCode: string; status: number }>)[err.code];
  return {
    jsonType: `com.amazonaws.sqs#${err.code}`,
    queryCode: known?.queryCode ?? err.code,
    fault: err.status >= 500 ? 'Receiver' : 'Sender',
    status: err.status,
    message: err.message,
  };
}
