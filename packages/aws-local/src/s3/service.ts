import type { Controls } from '../controls.js';
import { AwsError, ConnectionResetFault } from '../errors.js';
import type { RawRequest, RawResponse } from '../http.js';
import type { KmsService } from '../kms/service.js';
import {
  createBucket,
  deleteBucket,
  deleteBucketEncryption,
  getBucketEncryption,
  getBucketLocation,
  getBucketVersioning,
  headBucket,
  listBuckets,
  putBucketEncryption,
  putBucketVersioning,
} from './buckets.js';
import { copyObject } from './copy.js';
import { AWS_MIN_PART_SIZE, type Handler, type S3Core } from './core.js';
import { errorResponse } from './errors.js';
import { listObjects, listObjectsV2, listObjectVersions } from './listing.js';
import { SortedKeys } from './sorted-keys.js';
import type { Bucket, ObjectVersion, Upload } from './model.js';
import {
  abortMultipartUpload,
  completeMultipartUpload,
  createMultipartUpload,
  listMultipartUploads,
  listParts,
  uploadPart,
  uploadPartCopy,
} from './multipart.js';
import {
  deleteObject,
  deleteObjects,
  deleteObjectTagging,
  getObject,
  getObjectAcl,
  getObjectTagging,
  headObject,
  putObject,
  putObjectAcl,
  putObjectTagging,
  updateObjectEncryption,
} from './objects.js';
import { decodeBody, operationOf, splitPath, type S3Request } from './request.js';
import { SSE_S3, SseEngine } from './sse.js';

const HANDLERS: Record<string, Handler> = {
  ListBuckets: listBuckets,
  CreateBucket: createBucket,
  HeadBucket: headBucket,
  DeleteBucket: deleteBucket,
  GetBucketLocation: getBucketLocation,
  PutBucketVersioning: putBucketVersioning,
  GetBucketVersioning: getBucketVersioning,
  PutBucketEncryption: putBucketEncryption,
  GetBucketEncryption: getBucketEncryption,
  DeleteBucketEncryption: deleteBucketEncryption,
  ListObjectsV2: listObjectsV2,
  ListObjects: listObjects,
  ListObjectVersions: listObjectVersions,
  ListMultipartUploads: listMultipartUploads,
  PutObject: putObject,
  GetObject: getObject,
  HeadObject: headObject,
  DeleteObject: deleteObject,
  DeleteObjects: deleteObjects,
  CopyObject: copyObject,
  PutObjectTagging: putObjectTagging,
  GetObjectTagging: getObjectTagging,
  DeleteObjectTagging: deleteObjectTagging,
  PutObjectAcl: putObjectAcl,
  GetObjectAcl: getObjectAcl,
  UpdateObjectEncryption: updateObjectEncryption,
  CreateMultipartUpload: createMultipartUpload,
  UploadPart: uploadPart,
  UploadPartCopy: uploadPartCopy,
  CompleteMultipartUpload: completeMultipartUpload,
  AbortMultipartUpload: abortMultipartUpload,
  ListParts: listParts,
};

/** The operations aws-local's S3 answers (the rest are 501 NotImplemented). */
export const S3_OPERATIONS: readonly string[] = Object.keys(HANDLERS);

interface BucketSnapshot {
  name: string;
  created: number;
  region: string;
  accountId: string;
  versioning?: Bucket['versioning'];
  encryption?: Bucket['encryption'];
  keys: string[];
  objects: Map<string, ObjectVersion | ObjectVersion[]>;
  uploads: Map<string, Upload>;
}

/**
 * aws-local's S3: REST-XML, path-style, with versioning, multipart uploads, conditional writes and
 * SSE-KMS at rest through aws-local's KMS. It formats its own XML responses and errors.
 */
export class S3Service {
  private readonly core: S3Core;
  private readonly sse: SseEngine;

  constructor(readonly deps: { controls: Controls; kms: KmsService }) {
    this.sse = new SseEngine(deps.kms);
    this.core = { buckets: new Map(), sse: this.sse, controls: deps.controls, minPartSize: AWS_MIN_PART_SIZE };
  }

  /** Smallest size of a multipart part that is not the last; tests may lower it. @defaultValue 5 MiB */
  get minPartSize(): number {
    return this.core.minPartSize;
  }

  set minPartSize(bytes: number) {
    this.core.minPartSize = bytes;
  }

  /** How long a bucket key is reused before S3 asks KMS again. @defaultValue 60000 */
  get bucketKeyTtlMs(): number {
    return this.sse.bucketKeyTtlMs;
  }

  set bucketKeyTtlMs(ms: number) {
    this.sse.bucketKeyTtlMs = ms;
    this.sse.clearCache();
  }

  async handle(raw: RawRequest): Promise<RawResponse> {
    let resource = raw.path;
    try {
      const { bucket, key } = splitPath(raw.path);
      resource = key === undefined ? `/${bucket ?? ''}` : `/${bucket}/${key}`;
      const op = operationOf(raw.method, bucket, key, raw.query, raw.headers);
      const handler = HANDLERS[op];
      if (!handler) throw new AwsError('NotImplemented', `aws-local does not implement ${op}`, 501);
      await this.deps.controls.admit('s3', op, raw.ctx);
      const { body, trailers } = decodeBody(raw);
      const req: S3Request = {
        op,
        method: raw.method,
        bucket,
        key,
        query: raw.query,
        headers: Object.keys(trailers).length > 0 ? { ...raw.headers, ...trailers } : raw.headers,
        body,
        ctx: raw.ctx,
        resource,
      };
      return await handler(this.core, req);
    } catch (err) {
      if (err instanceof AwsError) return errorResponse(err, resource, raw.ctx.requestId, raw.method);
      if (err instanceof ConnectionResetFault) throw err;
      // A bug must still answer like S3 does, not with another protocol's error shape.
      const internal = new AwsError('InternalError', 'We encountered an internal error. Please try again.', 500);
      return errorResponse(internal, resource, raw.ctx.requestId, raw.method);
    }
  }

  snapshot(): unknown {
    const buckets: BucketSnapshot[] = [...this.core.buckets.values()].map((b) => ({
      name: b.name,
      created: b.created,
      region: b.region,
      accountId: b.accountId,
      ...(b.versioning !== undefined && { versioning: b.versioning }),
      ...(b.encryption !== undefined && { encryption: b.encryption }),
      keys: b.keys.toArray(),
      objects: b.objects,
      uploads: b.uploads,
    }));
    return { version: 1, buckets };
  }

  restore(data: unknown): void {
    this.reset();
    if (!data || typeof data !== 'object' || (data as { version?: unknown }).version !== 1) return;
    for (const s of (data as { buckets: BucketSnapshot[] }).buckets) {
      for (const entry of s.objects.values()) {
        for (const v of Array.isArray(entry) ? entry : [entry]) {
          if (v.sse?.alg === 'AES256') v.sse = SSE_S3;
        }
      }
      const bucket: Bucket = {
        name: s.name,
        created: s.created,
        region: s.region,
        accountId: s.accountId,
        objects: s.objects,
        keys: SortedKeys.fromSorted(s.keys),
        uploads: s.uploads,
        ...(s.versioning !== undefined && { versioning: s.versioning }),
        ...(s.encryption !== undefined && { encryption: s.encryption }),
      };
      this.core.buckets.set(bucket.name, bucket);
    }
  }

  reset(): void {
    this.core.buckets.clear();
    this.sse.clearCache();
  }
}
