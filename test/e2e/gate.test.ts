import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { setTimeout as sleep } from 'node:timers/promises';
import { DescribeKeyCommand, DecryptCommand, EncryptCommand, GenerateDataKeyCommand, KMSClient } from '@aws-sdk/client-kms';
import { CreateBucketCommand, GetObjectCommand } from '@aws-sdk/client-s3';
import { parseAuditJsonl, verifyAuditChain } from '@rekey/fleet';
import { startStack, freePort, type Stack } from './harness.js';
import { createKey, seedSseObjects } from './seed.js';

/** Another application with its own access key: its use of the old key is not the fleet's. */
const OTHER_APP = { accessKeyId: 'AKIAOTHERAPP000000001', secretAccessKey: 'other-app-secret-not-real' };

describe('old-key usage, the gate, /metrics and finalize across processes', () => {
  let stack: Stack;
  let other: KMSClient;
  let oldKey: string;
  let newKey: string;
  let id: string;
  let workerMetricsPort: number;

  async function waitForGate(pred: (g: Awaited<ReturnType<Stack['api']['gate']>>) => boolean, timeoutMs = 30_000) {
    const until = Date.now() + timeoutMs;
    let last: Awaited<ReturnType<Stack['api']['gate']>> | undefined;
    while (Date.now() < until) {
      last = await stack.api.gate(id);
      if (pred(last)) return last;
      await sleep(250);
    }
    throw new Error(`the gate of ${id} did not change as expected; last: ${JSON.stringify(last?.conditions)}`);
  }

  beforeAll(async () => {
    workerMetricsPort = await freePort();
    // The harness passes this process's environment to its children: one worker serves /metrics here.
    process.env['REKEY_METRICS_PORT'] = String(workerMetricsPort);
    stack = await startStack({ workers: 1 });
    delete process.env['REKEY_METRICS_PORT'];
    other = new KMSClient({ endpoint: stack.aws.url, region: 'us-east-1', credentials: OTHER_APP });
    oldKey = await createKey(stack.kms, 'old');
    await seedSseObjects(stack.s3, 'e2e-gate', oldKey, 30);
    newKey = await createKey(stack.kms, 'new');
    await stack.s3.send(new CreateBucketCommand({ Bucket: 'e2e-gate-audit' }));
    const m = await stack.api.create({ sources: [{ name: 'objs', kind: 's3-sse-kms', bucket: 'e2e-gate' }], from: [oldKey], to: newKey, auditBucket: 'e2e-gate-audit', options: { batchSize: 10 } });
    id = m.id;
    await stack.waitForState(id, ['ready', 'blocked', 'paused']);
  });

  afterAll(async () => {
    other?.destroy();
    await stack?.stop();
  });

  it("reaches ready: the fleet's own ReEncrypt and S3 calls on its behalf do not block", async () => {
    const gate = await stack.api.gate(id);

    expect((await stack.api.get(id)).state).toBe('ready');
    expect(gate.ready).toBe(true);
    expect(gate.conditions.find((c) => c.name === 'old-key-quiet')).toMatchObject({ ok: true, detail: expect.stringContaining('no encrypt-type use') });
  });

  it('serves /metrics on the coordinator behind the token, and on the worker port', async () => {
    const denied = await fetch(`${stack.apiUrl}/metrics`);
    const coord = await (await fetch(`${stack.apiUrl}/metrics`, { headers: { authorization: `Bearer ${stack.token}` } })).text();
    const worker = await (await fetch(`http://127.0.0.1:${workerMetricsPort}/metrics`)).text();

    expect(denied.status).toBe(401);
    expect(coord).toContain(`rekey_gate_ready{migration="${id}"} 1`);
    expect(coord).toContain(`rekey_items_discovered_total{migration="${id}",source="objs"} 30`);
    expect(coord).toContain(`rekey_migration_state{migration="${id}",state="ready"} 1`);
    expect(coord).toContain('process_cpu_seconds_total');
    expect(worker).toContain(`rekey_items_total{migration="${id}",source="objs",outcome="reencrypted"} 30`);
    expect(worker).toMatch(/^rekey_batch_duration_seconds_count \d+$/m);
  });

  it('shows Decrypt of the old key by another caller as a warning, and the gate stays green', async () => {
    const blob = (await stack.kms.send(new EncryptCommand({ KeyId: oldKey, Plaintext: Buffer.from('old data outside the sources') }))).CiphertextBlob!;
    await other.send(new DecryptCommand({ CiphertextBlob: blob }));

    const gate = await waitForGate((g) => g.warnings.some((w) => w.includes(OTHER_APP.accessKeyId)));

    expect(gate.ready).toBe(true);
    expect(gate.warnings.find((w) => w.includes(OTHER_APP.accessKeyId))).toMatch(/^Decrypt of arn:aws:kms:.* by .*AKIAOTHERAPP000000001.*reads data outside this migration's sources$/);
    expect((await stack.api.get(id)).state).toBe('ready');
  });

  it('blocks on Encrypt and GenerateDataKey with the old key by another caller, naming it, and refuses finalize', async () => {
    await other.send(new EncryptCommand({ KeyId: oldKey, Plaintext: Buffer.from('a writer still on the old key') }));
    await other.send(new GenerateDataKeyCommand({ KeyId: oldKey, KeySpec: 'AES_256' }));

    const gate = await waitForGate((g) => !g.ready);
    await stack.waitForState(id, ['blocked'], 30_000);

    const quiet = gate.conditions.find((c) => c.name === 'old-key-quiet')!;
    expect(quiet.ok).toBe(false);
    expect(quiet.detail).toContain(`by arn:aws:iam::000000000000:user/${OTHER_APP.accessKeyId} (access key ${OTHER_APP.accessKeyId})`);
    expect(quiet.detail).toMatch(/Encrypt by/);
    const refused = await fetch(`${stack.apiUrl}/migrations/${id}/finalize`, { method: 'POST', headers: { authorization: `Bearer ${stack.token}`, 'content-type': 'application/json' }, body: '{}' });
    expect(refused.status).toBe(409);
    expect(((await refused.json()) as { message: string }).message).toContain('old-key-quiet');
    const metrics = await (await fetch(`${stack.apiUrl}/metrics`, { headers: { authorization: `Bearer ${stack.token}` } })).text();
    expect(metrics).toContain(`rekey_gate_ready{migration="${id}"} 0`);
    expect(metrics).toMatch(new RegExp(`rekey_old_key_last_use_timestamp_seconds\\{key="${oldKey}",operation="Encrypt"\\} \\d+`));
  });

  it('turns ready again after the writer stops and verify runs again, then finalize disables the old key', async () => {
    // The writer is fixed; a new verify pass starts a new watch window (CloudTrail times have one-second precision).
    await sleep(1100);
    await stack.api.action(id, 'verify', 'the writer was moved to the new key');

    await stack.waitForState(id, ['ready'], 60_000);
    const fin = await stack.api.finalize(id, { force: false });

    expect(fin).toMatchObject({ disabled: [oldKey], forced: false });
    expect((await stack.kms.send(new DescribeKeyCommand({ KeyId: oldKey }))).KeyMetadata!.KeyState).toBe('Disabled');
    expect((await stack.kms.send(new DescribeKeyCommand({ KeyId: newKey }))).KeyMetadata!.KeyState).toBe('Enabled');
    const audit = await stack.api.audit(id);
    expect(audit.verification.ok).toBe(true);
    expect(audit.entries.filter((e) => e.type === 'key.disabled').map((e) => e.data)).toEqual([expect.objectContaining({ key: oldKey, forced: false })]);
    expect(audit.entries.map((e) => e.type)).toContain('state.changed');
    expect(audit.entries.some((e) => e.type === 'state.changed' && (e.data as { to?: string }).to === 'blocked')).toBe(true);
    expect((await stack.api.get(id)).state).toBe('finalized');
  });

  it('writes the audit log of the finalized migration to its auditBucket as JSONL', async () => {
    let exported = (await stack.api.get(id)).auditExport;
    for (let i = 0; i < 100 && !exported; i++) {
      await sleep(200);
      exported = (await stack.api.get(id)).auditExport;
    }
    const text = await (await stack.s3.send(new GetObjectCommand({ Bucket: 'e2e-gate-audit', Key: `rekey/audit/${id}.jsonl` }))).Body!.transformToString();
    const entries = parseAuditJsonl(text);

    expect(exported).toMatchObject({ bucket: 'e2e-gate-audit', entries: entries.length, head: entries.at(-1)!.hash });
    expect(verifyAuditChain(entries).ok).toBe(true);
    expect(entries.map((e) => e.type)).toEqual(expect.arrayContaining(['migration.created', 'key.disabled']));
    expect(entries.at(-1)).toMatchObject({ type: 'state.changed', data: expect.objectContaining({ to: 'finalized' }) });
  });
});
