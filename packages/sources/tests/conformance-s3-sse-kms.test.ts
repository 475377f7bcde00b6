import { afterAll, beforeAll } from 'vitest';
import { describeSourceConformance } from '../src/conformance.js';
import { startAwsWorld, type AwsWorld } from './helpers/aws.js';
import { sseKmsHarness } from './helpers/s3-harness.js';

let world: AwsWorld;

beforeAll(async () => {
  world = await startAwsWorld();
  // Lets the multipart strategy copy 1 KiB parts instead of 5 MiB ones.
  if (world.ep.local !== undefined) world.ep.local.s3.minPartSize = 1024;
});

afterAll(async () => {
  await world.close();
});

describeSourceConformance('s3-sse-kms update-encryption', ({ pageSize }) => sseKmsHarness(world, pageSize, 'update-encryption'));
describeSourceConformance('s3-sse-kms copy', ({ pageSize }) => sseKmsHarness(world, pageSize, 'copy'));
describeSourceConformance('s3-sse-kms multipart-copy', ({ pageSize }) =>
  sseKmsHarness(world, pageSize, 'multipart-copy', { contentBytes: [2500, 4000], sourceOptions: { partSizeBytes: 1024 } }),
);
