import { CreateAliasCommand, CreateKeyCommand, KMSClient, UpdateAliasCommand } from '@aws-sdk/client-kms';
import { awsClientConfig, uniqueName, useAwsLocal, type AwsTestEndpoint } from '@rekey/testing';

/** aws-local (or AWS_ENDPOINT_URL), a KMS client, two fresh keys and an alias on the first. */
export interface KmsFixture {
  readonly ep: AwsTestEndpoint;
  readonly kms: KMSClient;
  readonly keyA: string;
  readonly keyB: string;
  readonly alias: string;
  moveAlias(to: string): Promise<void>;
  close(): Promise<void>;
}

export async function kmsFixture(): Promise<KmsFixture> {
  const ep = await useAwsLocal();
  const kms = new KMSClient(awsClientConfig(ep));
  const newKey = async () => {
    const out = await kms.send(new CreateKeyCommand({ Description: 'rekey envelope test' }));
    return out.KeyMetadata!.Arn!;
  };
  const keyA = await newKey();
  const keyB = await newKey();
  const alias = `alias/${uniqueName('envelope')}`;
  await kms.send(new CreateAliasCommand({ AliasName: alias, TargetKeyId: keyA }));
  return {
    ep,
    kms,
    keyA,
    keyB,
    alias,
    async moveAlias(to) {
      await kms.send(new UpdateAliasCommand({ AliasName: alias, TargetKeyId: to }));
    },
    async close() {
      kms.destroy();
      await ep.close();
    },
  };
}
