/**
 * The AWS side of a Rekey deployment: one IAM role for the coordinator and one for the workers,
 * each allowed exactly the calls its process makes, and (optionally) the SQS intake queue with
 * its dead-letter queue and the EventBridge rules that feed it KMS alias moves and rotations.
 *
 * Which KMS keys Rekey may touch is set once, either as explicit ARNs or, better for repeated
 * rotations, as a tag: `rekey rotate` copies the old key's tags to the new key, so a key created
 * by a rotation is covered without redeploying (attribute-based access control).
 *
 * @example
 * new RekeyStack(app, 'Rekey', { keys: { tag: { key: 'rekey:managed', value: 'true' } }, buckets: ['uploads'], intake: {} });
 */
import { CfnOutput, Duration, Stack, type StackProps, aws_events as events, aws_events_targets as targets, aws_iam as iam, aws_sqs as sqs } from 'aws-cdk-lib';
import type { Construct } from 'constructs';

/** The KMS keys Rekey may use: listed ARNs, or every key of this account and Region with a tag. */
export type RekeyKeys = { readonly arns: readonly string[] } | { readonly tag: { readonly key: string; readonly value: string } };

export interface RekeyStackProps extends StackProps {
  readonly keys: RekeyKeys;
  /** Buckets of the `s3-sse-kms` and `s3-envelope` sources. */
  readonly buckets: readonly string[];
  /** The migrations' `auditBucket`: the coordinator may write `rekey/audit/*` there and nothing else. */
  readonly auditBucket?: string;
  /** Create the SQS intake (queue, DLQ, EventBridge rules). `producers` may send app item requests. */
  readonly intake?: { readonly producers?: readonly iam.IPrincipal[]; readonly maxReceiveCount?: number };
  /** Let `rekey finalize --schedule-deletion-days` schedule key deletion. Off by default: disabling is reversible, deletion is not. */
  readonly allowScheduleDeletion?: boolean;
  /** Who assumes the roles (for example an EKS service account's web identity). @defaultValue this account's root, so the account's IAM decides */
  readonly assumedBy?: { readonly coordinator?: iam.IPrincipal; readonly worker?: iam.IPrincipal };
}

/** The EventBridge patterns of the intake: alias moves (CloudTrail) and automatic rotations. */
export const INTAKE_PATTERNS: Readonly<Record<'aliasMoves' | 'rotations', events.EventPattern>> = {
  aliasMoves: {
    source: ['aws.kms'],
    detailType: ['AWS API Call via CloudTrail'],
    detail: { eventSource: ['kms.amazonaws.com'], eventName: ['UpdateAlias', 'CreateAlias'] },
  },
  rotations: { source: ['aws.kms'], detailType: ['KMS CMK Rotation'] },
};

export class RekeyStack extends Stack {
  readonly coordinatorRole: iam.Role;
  readonly workerRole: iam.Role;
  readonly intakeQueue: sqs.Queue | undefined;
  readonly intakeDlq: sqs.Queue | undefined;

  constructor(scope: Construct, id: string, props: RekeyStackProps) {
    super(scope, id, props);
    if (props.buckets.length === 0 && props.auditBucket === undefined) throw new Error('RekeyStack: buckets must list at least one bucket (or set auditBucket)');
    if ('arns' in props.keys && props.keys.arns.length === 0) throw new Error('RekeyStack: keys.arns must list at least one key ARN');

    const root = new iam.AccountRootPrincipal();
    this.coordinatorRole = new iam.Role(this, 'CoordinatorRole', {
      assumedBy: props.assumedBy?.coordinator ?? root,
      description: 'Rekey coordinator: enumerates sources, watches old-key use, finalizes (DisableKey), reads the SQS intake',
    });
    this.workerRole = new iam.Role(this, 'WorkerRole', {
      assumedBy: props.assumedBy?.worker ?? root,
      description: 'Rekey worker: re-encrypts items (KMS ReEncrypt, S3 copy or UpdateObjectEncryption)',
    });

    const keyAccess = (actions: string[], sid: string): iam.PolicyStatement => {
      if ('arns' in props.keys) return new iam.PolicyStatement({ sid, actions, resources: [...props.keys.arns] });
      return new iam.PolicyStatement({
        sid,
        actions,
        resources: [this.formatArn({ service: 'kms', resource: 'key', resourceName: '*' })],
        conditions: { StringEquals: { [`aws:ResourceTag/${props.keys.tag.key}`]: props.keys.tag.value } },
      });
    };
    const bucketArns = props.buckets.map((b) => `arn:${this.partition}:s3:::${b}`);
    const objectArns = bucketArns.map((b) => `${b}/*`);

    // Workers: ReEncrypt of wrapped keys; S3 SSE-KMS objects moved by CopyObject (S3 decrypts under
    // the old key and generates a data key under the new one, with the caller's rights) or by
    // UpdateObjectEncryption (s3:UpdateObjectEncryption plus kms:Encrypt, Decrypt, GenerateDataKey
    // and ReEncrypt*, as its API reference lists); aliases resolved with DescribeKey.
    this.workerRole.addToPolicy(keyAccess(['kms:ReEncryptFrom', 'kms:ReEncryptTo', 'kms:DescribeKey', 'kms:Decrypt', 'kms:Encrypt', 'kms:GenerateDataKey'], 'KmsReEncrypt'));
    if (bucketArns.length > 0) {
      this.workerRole.addToPolicy(
        new iam.PolicyStatement({
          sid: 'S3Objects',
          actions: [
            's3:GetObject',
            's3:GetObjectVersion',
            's3:GetObjectTagging',
            's3:GetObjectVersionTagging',
            's3:PutObject',
            's3:PutObjectTagging',
            's3:AbortMultipartUpload',
            's3:UpdateObjectEncryption',
          ],
          resources: objectArns,
        }),
      );
    }

    // Coordinator: DescribeKey when a migration is created, GetKeyLastUsage and CloudTrail for the
    // usage monitor, DisableKey (and only when allowed, ScheduleKeyDeletion) at finalize, listing
    // for enumeration and the verify pass.
    const coordinatorKms = ['kms:DescribeKey', 'kms:GetKeyLastUsage', 'kms:DisableKey', ...(props.allowScheduleDeletion ? ['kms:ScheduleKeyDeletion'] : [])];
    this.coordinatorRole.addToPolicy(keyAccess(coordinatorKms, 'KmsGateAndFinalize'));
    // Finalize tags the key it disabled `rekey:disabled-by` (for `rekey keys audit`); only that tag
    // key may be written, so the role can't change the tag its own key access depends on.
    const tagDisabled = keyAccess(['kms:TagResource'], 'KmsTagDisabled');
    tagDisabled.addCondition('ForAllValues:StringEquals', { 'aws:TagKeys': ['rekey:disabled-by'] });
    this.coordinatorRole.addToPolicy(tagDisabled);
    // LookupEvents has no resource-level permissions.
    this.coordinatorRole.addToPolicy(new iam.PolicyStatement({ sid: 'CloudTrailLookup', actions: ['cloudtrail:LookupEvents'], resources: ['*'] }));
    if (bucketArns.length > 0) {
      this.coordinatorRole.addToPolicy(new iam.PolicyStatement({ sid: 'S3List', actions: ['s3:ListBucket', 's3:ListBucketVersions', 's3:GetBucketVersioning'], resources: bucketArns }));
    }
    if (props.auditBucket !== undefined) {
      const audit = `arn:${this.partition}:s3:::${props.auditBucket}`;
      this.coordinatorRole.addToPolicy(new iam.PolicyStatement({ sid: 'AuditBucketCheck', actions: ['s3:ListBucket'], resources: [audit] }));
      // GetObject for HeadObject: a copy is written only over one it extends (the check reads its metadata).
      this.coordinatorRole.addToPolicy(new iam.PolicyStatement({ sid: 'AuditExport', actions: ['s3:PutObject', 's3:GetObject'], resources: [`${audit}/rekey/audit/*`] }));
    }

    if (props.intake) {
      this.intakeDlq = new sqs.Queue(this, 'IntakeDlq', { encryption: sqs.QueueEncryption.SQS_MANAGED, retentionPeriod: Duration.days(14), enforceSSL: true });
      this.intakeQueue = new sqs.Queue(this, 'IntakeQueue', {
        encryption: sqs.QueueEncryption.SQS_MANAGED,
        enforceSSL: true,
        visibilityTimeout: Duration.seconds(60),
        retentionPeriod: Duration.days(4),
        deadLetterQueue: { queue: this.intakeDlq, maxReceiveCount: props.intake.maxReceiveCount ?? 5 },
      });
      this.intakeQueue.grantConsumeMessages(this.coordinatorRole);
      for (const p of props.intake.producers ?? []) this.intakeQueue.grantSendMessages(p);
      new events.Rule(this, 'KmsAliasMoves', { description: 'KMS UpdateAlias/CreateAlias (CloudTrail) to the Rekey intake', eventPattern: INTAKE_PATTERNS.aliasMoves, targets: [new targets.SqsQueue(this.intakeQueue)] });
      new events.Rule(this, 'KmsRotations', { description: 'KMS automatic key rotations to the Rekey intake', eventPattern: INTAKE_PATTERNS.rotations, targets: [new targets.SqsQueue(this.intakeQueue)] });
      new CfnOutput(this, 'IntakeQueueUrl', { value: this.intakeQueue.queueUrl, description: 'intake.queueUrl in rekey.yaml' });
      new CfnOutput(this, 'IntakeDlqUrl', { value: this.intakeDlq.queueUrl, description: 'poison intake messages land here after maxReceiveCount receives' });
    }

    new CfnOutput(this, 'CoordinatorRoleArn', { value: this.coordinatorRole.roleArn });
    new CfnOutput(this, 'WorkerRoleArn', {
      value: this.workerRole.roleArn,
      description: "set REKEY_GATE_FLEET_PRINCIPALS to it, so the workers' sessions count as the fleet's own KMS use",
    });
  }
}
