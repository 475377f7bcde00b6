import { describe, expect, it } from 'vitest';
import { App, aws_iam as iam } from 'aws-cdk-lib';
import { Match, Template } from 'aws-cdk-lib/assertions';
import { RekeyStack, type RekeyStackProps } from '../src/stack.js';

const ENV = { account: '111122223333', region: 'eu-west-1' };
const TAG = { key: 'rekey:managed', value: 'true' };

function synth(props: Partial<RekeyStackProps> = {}): Template {
  const app = new App();
  const stack = new RekeyStack(app, 'Rekey', { env: ENV, keys: { tag: TAG }, buckets: ['uploads', 'reports'], ...props });
  return Template.fromStack(stack);
}

/** Every statement of the policies attached to a role, by its logical id prefix. */
function statementsOf(t: Template, rolePrefix: string): Array<{ Sid?: string; Action: string | string[]; Resource: unknown; Condition?: unknown }> {
  const policies = Object.values(t.findResources('AWS::IAM::Policy')) as Array<{ Properties: { Roles: Array<{ Ref: string }>; PolicyDocument: { Statement: [] } } }>;
  return policies.filter((p) => p.Properties.Roles.some((r) => r.Ref.startsWith(rolePrefix))).flatMap((p) => p.Properties.PolicyDocument.Statement);
}

const actionsOf = (s: { Action: string | string[] }) => (Array.isArray(s.Action) ? s.Action : [s.Action]);

describe('RekeyStack: least-privilege roles for the coordinator and the workers', () => {
  it('lets workers use only keys with the managed tag, for ReEncrypt and what S3 needs to move SSE-KMS objects', () => {
    const statements = statementsOf(synth(), 'WorkerRole');
    const kms = statements.find((s) => s.Sid === 'KmsReEncrypt')!;

    expect(actionsOf(kms).sort()).toEqual(['kms:Decrypt', 'kms:DescribeKey', 'kms:Encrypt', 'kms:GenerateDataKey', 'kms:ReEncryptFrom', 'kms:ReEncryptTo']);
    expect(kms.Resource).toEqual({ 'Fn::Join': ['', ['arn:', { Ref: 'AWS::Partition' }, ':kms:eu-west-1:111122223333:key/*']] });
    expect(kms.Condition).toEqual({ StringEquals: { 'aws:ResourceTag/rekey:managed': 'true' } });
    // Never a wildcard action, never DisableKey or deletion on a worker.
    const all = statements.flatMap(actionsOf);
    expect(all.filter((a) => a.endsWith(':*') || a === '*')).toEqual([]);
    expect(all).not.toContain('kms:DisableKey');
    expect(all).not.toContain('kms:ScheduleKeyDeletion');
  });

  it('scopes worker S3 rights to the objects of the listed buckets, including UpdateObjectEncryption and tag copies', () => {
    const s3 = statementsOf(synth(), 'WorkerRole').find((s) => s.Sid === 'S3Objects')!;

    expect(s3.Resource).toEqual([
      { 'Fn::Join': ['', ['arn:', { Ref: 'AWS::Partition' }, ':s3:::uploads/*']] },
      { 'Fn::Join': ['', ['arn:', { Ref: 'AWS::Partition' }, ':s3:::reports/*']] },
    ]);
    expect(actionsOf(s3)).toEqual(expect.arrayContaining(['s3:GetObject', 's3:GetObjectVersion', 's3:PutObject', 's3:GetObjectTagging', 's3:PutObjectTagging', 's3:UpdateObjectEncryption']));
    expect(actionsOf(s3)).not.toContain('s3:DeleteObject');
  });

  it('lets the coordinator disable managed keys but schedule deletion only when allowed, and look up CloudTrail', () => {
    const plain = statementsOf(synth(), 'CoordinatorRole');
    const allowed = statementsOf(synth({ allowScheduleDeletion: true }), 'CoordinatorRole');
    const kms = (st: typeof plain) => actionsOf(st.find((s) => s.Sid === 'KmsGateAndFinalize')!);

    expect(kms(plain).sort()).toEqual(['kms:DescribeKey', 'kms:DisableKey', 'kms:GetKeyLastUsage']);
    expect(kms(allowed)).toContain('kms:ScheduleKeyDeletion');
    // TagResource only for the rekey:disabled-by tag key.
    expect(plain.find((s) => s.Sid === 'KmsTagDisabled')).toMatchObject({ Action: 'kms:TagResource', Condition: { 'ForAllValues:StringEquals': { 'aws:TagKeys': ['rekey:disabled-by'] } } });
    expect(plain.find((s) => s.Sid === 'CloudTrailLookup')).toMatchObject({ Action: 'cloudtrail:LookupEvents', Resource: '*' });
    expect(plain.find((s) => s.Sid === 'S3List')!.Resource).toHaveLength(2);
    expect(plain.flatMap(actionsOf)).not.toContain('kms:ReEncryptFrom');
  });

  it('with explicit key ARNs, grants on those keys only and without a tag condition', () => {
    const arns = ['arn:aws:kms:eu-west-1:111122223333:key/11111111-1111-4111-8111-111111111111', 'arn:aws:kms:eu-west-1:111122223333:key/22222222-2222-4222-8222-222222222222'];
    const kms = statementsOf(synth({ keys: { arns } }), 'WorkerRole').find((s) => s.Sid === 'KmsReEncrypt')!;

    expect(kms.Resource).toEqual(arns);
    expect(kms.Condition).toBeUndefined();
  });

  it('lets the coordinator write the audit export under rekey/audit/ of the audit bucket and nothing else there', () => {
    const st = statementsOf(synth({ auditBucket: 'rekey-audit' }), 'CoordinatorRole');

    expect(st.find((s) => s.Sid === 'AuditExport')).toMatchObject({ Action: ['s3:PutObject', 's3:GetObject'], Resource: { 'Fn::Join': ['', ['arn:', { Ref: 'AWS::Partition' }, ':s3:::rekey-audit/rekey/audit/*']] } });
    expect(st.find((s) => s.Sid === 'AuditBucketCheck')).toMatchObject({ Action: 's3:ListBucket' });
  });

  it('refuses an empty bucket list and an empty key list', () => {
    expect(() => synth({ buckets: [] })).toThrow('buckets must list at least one bucket');
    expect(() => synth({ keys: { arns: [] } })).toThrow('keys.arns must list at least one key ARN');
  });
});

describe('RekeyStack: the SQS intake', () => {
  it('feeds alias moves and automatic rotations from EventBridge into an encrypted queue with a DLQ after 5 receives', () => {
    const t = synth({ intake: {} });

    t.hasResourceProperties('AWS::SQS::Queue', { SqsManagedSseEnabled: true, RedrivePolicy: { maxReceiveCount: 5, deadLetterTargetArn: Match.anyValue() } });
    t.resourceCountIs('AWS::SQS::Queue', 2);
    t.hasResourceProperties('AWS::Events::Rule', {
      EventPattern: { source: ['aws.kms'], 'detail-type': ['AWS API Call via CloudTrail'], detail: { eventSource: ['kms.amazonaws.com'], eventName: ['UpdateAlias', 'CreateAlias'] } },
    });
    t.hasResourceProperties('AWS::Events::Rule', { EventPattern: { source: ['aws.kms'], 'detail-type': ['KMS CMK Rotation'] } });
    // Only EventBridge rules of this stack may send (aws:SourceArn), and only over TLS.
    t.hasResourceProperties('AWS::SQS::QueuePolicy', {
      PolicyDocument: {
        Statement: Match.arrayWith([
          Match.objectLike({ Effect: 'Deny', Condition: { Bool: { 'aws:SecureTransport': 'false' } } }),
          Match.objectLike({ Action: ['sqs:SendMessage', 'sqs:GetQueueAttributes', 'sqs:GetQueueUrl'], Principal: { Service: 'events.amazonaws.com' }, Condition: { ArnEquals: { 'aws:SourceArn': Match.anyValue() } } }),
        ]),
      },
    });
    const consume = statementsOf(t, 'CoordinatorRole').flatMap(actionsOf);
    expect(consume).toEqual(expect.arrayContaining(['sqs:ReceiveMessage', 'sqs:DeleteMessage', 'sqs:ChangeMessageVisibility']));
    expect(statementsOf(t, 'WorkerRole').flatMap(actionsOf).some((a) => a.startsWith('sqs:'))).toBe(false);
  });

  it('lets the listed app roles send item requests, and creates nothing for the intake when it is off', () => {
    const app = new App();
    const stack = new RekeyStack(app, 'Rekey', { env: ENV, keys: { tag: TAG }, buckets: ['uploads'], intake: { producers: [new iam.ArnPrincipal('arn:aws:iam::111122223333:role/billing-app')] } });
    const t = Template.fromStack(stack);
    const off = synth();

    // A role of another stack gets the right in the queue's resource policy.
    t.hasResourceProperties('AWS::SQS::QueuePolicy', {
      PolicyDocument: { Statement: Match.arrayWith([Match.objectLike({ Action: Match.arrayWith(['sqs:SendMessage']), Principal: { AWS: 'arn:aws:iam::111122223333:role/billing-app' } })]) },
    });
    off.resourceCountIs('AWS::SQS::Queue', 0);
    off.resourceCountIs('AWS::Events::Rule', 0);
  });
});
