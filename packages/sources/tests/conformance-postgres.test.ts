import { afterAll, beforeAll } from 'vitest';
import { describeSourceConformance } from '../src/conformance.js';
import { startAwsWorld, type AwsWorld } from './helpers/aws.js';
import { postgresHarness } from './helpers/pg-harness.js';

let world: AwsWorld;

beforeAll(async () => {
  world = await startAwsWorld();
});

afterAll(async () => {
  await world.close();
});

describeSourceConformance('postgres kms-blob (composite key, context column)', ({ pageSize }) => postgresHarness(world, pageSize, 'kms-blob'));
describeSourceConformance('postgres rekey-envelope (fixed context)', ({ pageSize }) => postgresHarness(world, pageSize, 'rekey-envelope'));
