import { afterAll, beforeAll } from 'vitest';
import { describeSourceConformance } from '../src/conformance.js';
import { startAwsWorld, type AwsWorld } from './helpers/aws.js';
import { envelopeHarness } from './helpers/s3-harness.js';

let world: AwsWorld;

beforeAll(async () => {
  world = await startAwsWorld();
});

afterAll(async () => {
  await world.close();
});

describeSourceConformance('s3-envelope', ({ pageSize }) => envelopeHarness(world, pageSize));
