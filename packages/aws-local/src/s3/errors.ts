import { AwsError } from '../errors.js';
import type { RawResponse } from '../http.js';
import { escapeXml } from './xml.js';

/** An S3 error: code, HTTP status and the extra elements S3 puts in its `<Error>` body. */
export function s3Error(code: string, message: string, status = 400, extra: Record<string, string> = {}): AwsError {
  return new AwsError(code, message, status, extra);
}

/** 404 NoSuchBucket with `BucketName`. */
export const noSuchBucket = (bucket: string) =>
  s3Error('NoSuchBucket', 'The specified bucket does not exist', 404, { BucketName: bucket });

/** 404 NoSuchKey with `Key`. */
export const noSuchKey = (key: string) => s3Error('NoSuchKey', 'The specified key does not exist.', 404, { Key: key });

/** 404 NoSuchVersion with `Key` and `VersionId`. */
export const noSuchVersion = (key: string, versionId: string) =>
  s3Error('NoSuchVersion', 'The specified version does not exist.', 404, { Key: key, VersionId: versionId });

/** 404 NoSuchUpload with `UploadId`. */
export const noSuchUpload = (uploadId: string) =>
  s3Error(
    'NoSuchUpload',
    'The specified upload does not exist. The upload ID may be invalid, or the upload may have been aborted or completed.',
    404,
    { UploadId: uploadId },
  );

/** 412 PreconditionFailed naming the failed `Condition`. */
export const preconditionFailed = (condition: string) =>
  s3Error('PreconditionFailed', 'At least one of the pre-conditions you specified did not hold', 412, {
    Condition: condition,
  });

/** 400 InvalidArgument naming the argument and its value. */
export const invalidArgument = (message: string, name?: string, value?: string) =>
  s3Error('InvalidArgument', message, 400, {
    ...(name !== undefined && { ArgumentName: name }),
    ...(value !== undefined && { ArgumentValue: value }),
  });

/** 400 InvalidRequest. */
export const invalidRequest = (message: string) => s3Error('InvalidRequest', message, 400);

/** 501 NotImplemented naming the header or subresource aws-local does not support. */
export const notImplemented = (what: string) =>
  s3Error('NotImplemented', 'A header you provided implies functionality that is not implemented', 501, {
    Header: what,
  });

/** The error response S3 sends: an XML `<Error>` body, or no body at all for HEAD. */
export function errorResponse(err: AwsError, resource: string, requestId: string, method: string): RawResponse {
  const headers: Record<string, string> = { 'x-amz-request-id': requestId, 'x-amz-id-2': requestId };
  for (const [k, v] of Object.entries(err.extra)) {
    // Some errors carry response headers, e.g. x-amz-delete-marker on a NoSuchKey for a deleted key.
    if (k.startsWith('header:')) headers[k.slice('header:'.length)] = v;
  }
  if (err.status === 304 || method === 'HEAD') return { status: err.status, headers };
  const extra = Object.entries(err.extra)
    .filter(([k]) => !k.startsWith('header:'))
    .map(([k, v]) => `<${k}>${escapeXml(v)}</${k}>`)
    .join('');
  const body =
    '<?xml version="1.0" encoding="UTF-8"?>\n' +
    `<Error><Code>${escapeXml(err.code)}</Code><Message>${escapeXml(err.message)}</Message>${extra}` +
    `<Resource>${escapeXml(resource)}</Resource><RequestId>${requestId}</RequestId><HostId>${requestId}</HostId></Error>`;
  headers['content-type'] = 'application/xml';
  return { status: err.status, headers, body };
}
