/**
 * `cdk synth` / `cdk deploy` entry. Settings come from CDK context (cdk.json or `-c name=value`):
 *
 * - `keyTag` (`key=value`, default `rekey:managed=true`) or `keyArns` (comma-separated)
 * - `buckets` (comma-separated, required), `auditBucket`
 * - `intake` (`true` to create the SQS intake), `allowScheduleDeletion` (`true`)
 */
import { App } from 'aws-cdk-lib';
import { RekeyStack, type RekeyKeys } from './stack.js';

const app = new App();
const ctx = (name: string): string | undefined => {
  const v: unknown = app.node.tryGetContext(name);
  return v === undefined || v === null || v === '' ? undefined : String(v);
};
const list = (v: string | undefined) => (v ?? '').split(',').map((s) => s.trim()).filter(Boolean);

function keysFromContext(): RekeyKeys {
  const arns = list(ctx('keyArns'));
  if (arns.length > 0) return { arns };
  const tag = ctx('keyTag') ?? 'rekey:managed=true';
  const at = tag.indexOf('=');
  if (at <= 0) throw new Error(`context keyTag: expected key=value, got "${tag}"`);
  return { tag: { key: tag.slice(0, at), value: tag.slice(at + 1) } };
}

const buckets = list(ctx('buckets'));
const auditBucket = ctx('auditBucket');
if (buckets.length === 0 && auditBucket === undefined) throw new Error('context buckets: list the buckets of your S3 sources, e.g. cdk synth -c buckets=uploads,reports');

new RekeyStack(app, ctx('stackName') ?? 'Rekey', {
  keys: keysFromContext(),
  buckets,
  ...(auditBucket !== undefined ? { auditBucket } : {}),
  ...(ctx('intake') === 'true' ? { intake: {} } : {}),
  allowScheduleDeletion: ctx('allowScheduleDeletion') === 'true',
  ...(process.env['CDK_DEFAULT_ACCOUNT'] ? { env: { account: process.env['CDK_DEFAULT_ACCOUNT'], region: process.env['CDK_DEFAULT_REGION'] } } : {}),
});
