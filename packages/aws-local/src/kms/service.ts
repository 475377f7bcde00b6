import { randomBytes, randomUUID, timingSafeEqual } from 'node:crypto';
import type { Controls } from '../controls.js';
import type { RequestContext } from '../context.js';
import { AwsError, ConnectionResetFault } from '../errors.js';
import type { Persistent } from '../http.js';
import { StringInterner } from '../ids.js';
import type { KmsUsageLog } from '../usage-log.js';
import {
  clearKeyObjectCache,
  generateRsaPrivateKey,
  generateWrappingKey,
  importedMaterialEntry,
  materialCount,
  materialIdAt,
  newMaterialEntry,
  oaepMaxPlaintext,
  parseBlobHeader,
  RSA_BITS,
  rsaDecrypt,
  rsaEncrypt,
  rsaPublicKeyDer,
  symmetricDecrypt,
  symmetricEncrypt,
  unwrapImportedMaterial,
  type RsaSpec,
  type WrappingAlgorithm,
} from './crypto.js';
import {
  optBool,
  optContext,
  optDate,
  optEnum,
  optInt,
  optString,
  optStringList,
  optTags,
  reqBlob,
  reqString,
  unsupportedField,
  validation,
  type Input,
} from './input.js';
import {
  aliasArn,
  applyTime,
  clearKeyArnCache,
  currentMaterialId,
  DAY_MS,
  defaultPolicy,
  encryptionAlgorithms,
  isSymmetric,
  KEY_SPECS,
  keyArn,
  keyMetadata,
  newKeyRecord,
  partition,
  rotate,
  stateError,
  ts,
  type AliasRecord,
  type KeyRecord,
  type KeySpec,
} from './keys.js';

/** Operations whose successful calls count as key use for GetKeyLastUsage. */
const USAGE_TRACKED = new Set(['Encrypt', 'Decrypt', 'ReEncrypt', 'GenerateDataKey', 'GenerateDataKeyWithoutPlaintext']);

/** Request fields CloudTrail never records (key material, data and tokens). */
const SECRET_FIELDS = new Set(['Plaintext', 'CiphertextBlob', 'EncryptedKeyMaterial', 'ImportToken', 'Recipient']);

const ENCRYPTION_ALGORITHMS = ['SYMMETRIC_DEFAULT', 'RSAES_OAEP_SHA_1', 'RSAES_OAEP_SHA_256', 'SM2PKE'] as const;
type EncryptionAlgorithm = (typeof ENCRYPTION_ALGORITHMS)[number];

const KEY_ID_RE = /^([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}|mrk-[0-9a-f]{32})$/;
const ARN_RE = /^arn:(aws|aws-cn|aws-us-gov):kms:([a-z0-9-]+):(\d{12}):(key|alias)\/(.+)$/;
const ALIAS_NAME_RE = /^[a-zA-Z0-9:/_-]+$/;
const MAX_ON_DEMAND_ROTATIONS = 25;
const IMPORT_PARAMS_TTL_MS = DAY_MS;

/** AWS-managed key aliases aws-local creates on first use, with the description AWS gives them. */
const AWS_MANAGED: Readonly<Record<string, string>> = {
  'aws/s3': 'Default key that protects my S3 objects when no other key is defined',
  'aws/ebs': 'Default key that protects my EBS volumes when no other key is defined',
  'aws/rds': 'Default key that protects my RDS database volumes when no other key is defined',
  'aws/sqs': 'Default key that protects my SQS messages when no other key is defined',
  'aws/sns': 'Default key that protects my SNS messages when no other key is defined',
  'aws/lambda': 'Default key that protects my Lambda functions when no other key is defined',
  'aws/secretsmanager': 'Default key that protects my Secrets Manager data when no other key is defined',
  'aws/dynamodb': 'Default key that protects my DynamoDB data when no other key is defined',
};

interface Scope {
  /** Keys in creation order (ListKeys pages through this). */
  keys: KeyRecord[];
  aliases: Map<string, AliasRecord>;
}

/** One KMS call in progress: who called, which keys it touched, what to log. */
interface Call {
  op: string;
  ctx: RequestContext;
  invokedBy: string | undefined;
  keys: KeyRecord[];
  requestParameters: Record<string, unknown>;
}

interface Decrypted {
  key: KeyRecord;
  plaintext: Buffer;
  algorithm: EncryptionAlgorithm;
  materialId: string | undefined;
}

interface Encrypted {
  blob: Buffer;
  materialId: string | undefined;
}

/** Field order of the key tuples in a snapshot. */
const KEY_FIELDS = Object.keys(
  newKeyRecord({ id: '', account: '', region: '', created: 0, spec: 'SYMMETRIC_DEFAULT', origin: 'AWS_KMS', manager: 'CUSTOMER' }),
) as Array<keyof KeyRecord>;

interface SerializedState {
  version: 2;
  fields: string[];
  keys: unknown[][];
  aliases: Array<[scope: string, name: string, alias: AliasRecord]>;
}

/**
 * A new key id as a flat string. `randomUUID()` and concatenation give V8 rope strings of ~500
 * bytes each; copying through a Buffer keeps a million ids at ~60 bytes each.
 */
function newKeyId(multiRegion: boolean): string {
  const id = multiRegion ? `mrk-${randomBytes(16).toString('hex')}` : randomUUID();
  return Buffer.from(id, 'latin1').toString('latin1');
}

/** The keys a call used, first use first, each once (a call touches one or two keys). */
function distinct(keys: readonly KeyRecord[]): KeyRecord[] {
  const out: KeyRecord[] = [];
  for (const k of keys) if (!out.includes(k)) out.push(k);
  return out;
}

function b64(buf: Buffer): string {
  return buf.toString('base64');
}

function notFoundKey(arn: string): AwsError {
  return new AwsError('NotFoundException', `Key '${arn}' does not exist`);
}

function invalidKeyId(keyId: string): AwsError {
  return new AwsError('NotFoundException', `Invalid keyId '${keyId}'`);
}

function invalidCiphertext(): AwsError {
  return new AwsError('InvalidCiphertextException', 'The ciphertext is invalid, was not made by this KMS, or its encryption context does not match');
}

function lowerFirst(s: string): string {
  return s.charAt(0).toLowerCase() + s.slice(1);
}

/** Longer string parameters (descriptions, policies) are rarely repeated; they are not shared. */
const MAX_SHARED_PARAMETER = 256;

/**
 * Request parameters as CloudTrail records them: lowerCamel names, never plaintext or ciphertext.
 * The usage log keeps them for every call; string values (mostly the same few key ids) go
 * through `strings`, so that entries share them instead of each keeping its request body alive
 * (V8 may cut strings parsed from JSON out of the whole body text).
 */
function requestParameters(op: string, input: Input, strings: StringInterner): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const k in input) {
    const v = input[k];
    if (SECRET_FIELDS.has(k) || v === undefined || v === null) continue;
    out[lowerFirst(k)] = typeof v === 'string' && v.length <= MAX_SHARED_PARAMETER ? strings.intern(v) : v;
  }
  if (op === 'Encrypt' || op === 'Decrypt') out['encryptionAlgorithm'] ??= 'SYMMETRIC_DEFAULT';
  if (op === 'ReEncrypt') {
    out['sourceEncryptionAlgorithm'] ??= 'SYMMETRIC_DEFAULT';
    out['destinationEncryptionAlgorithm'] ??= 'SYMMETRIC_DEFAULT';
  }
  return out;
}

/**
 * aws-local's KMS: the AWS JSON 1.1 `TrentService` API with real cryptography (AES-256-GCM with the
 * encryption context as AAD, RSA-OAEP), key states, aliases, rotation and import, plus the
 * internal calls S3 makes for SSE-KMS on a caller's behalf.
 */
export class KmsService implements Persistent {
  /** Every key by key id; ids are globally unique, and ciphertext blobs name keys by id. */
  private keys = new Map<string, KeyRecord>();
  /** Per `account:region`: key order and aliases. */
  private scopes = new Map<string, Scope>();
  /** Shares the string request parameters the usage log keeps (see {@link requestParameters}). */
  private readonly strings = new StringInterner();

  constructor(readonly deps: { controls: Controls; usage: KmsUsageLog }) {}

  /** Answers one KMS API call; AWS errors are thrown as {@link AwsError}. */
  async handle(op: string, input: Record<string, unknown>, ctx: RequestContext): Promise<Record<string, unknown>> {
    const call: Call = { op, ctx, invokedBy: ctx.invokedBy, keys: [], requestParameters: requestParameters(op, input, this.strings) };
    try {
      await this.deps.controls.admit('kms', op, ctx);
      const out = await this.dispatch(call, input);
      this.log(call, undefined);
      return out;
    } catch (err) {
      // A dropped connection never reached KMS as far as the caller can tell, so it is not logged.
      if (!(err instanceof ConnectionResetFault)) this.log(call, err);
      throw err;
    }
  }

  // ---------------------------------------------------------------- internal API for S3

  /**
   * S3 calling KMS for SSE-KMS on ctx's behalf. Counts one quota token (controls.takeQuota) ->
   * ThrottlingException; checks deny rules for the caller; logs with invokedBy. keyId undefined =
   * the aws/s3 managed key. Throws AwsError with KMS codes (NotFoundException, DisabledException,
   * KMSInvalidStateException, AccessDeniedException, ThrottlingException).
   */
  async serviceGenerateDataKey(args: {
    keyId?: string;
    encryptionContext: Record<string, string>;
    ctx: RequestContext;
    invokedBy: string;
  }): Promise<{ keyArn: string; keyMaterialId: string; plaintext: Buffer; ciphertextBlob: Buffer }> {
    const params: Record<string, unknown> = { keySpec: 'AES_256', encryptionContext: args.encryptionContext };
    return this.serviceCall('GenerateDataKey', args, params, (call) => {
      const key = args.keyId === undefined
        ? this.awsManagedKey('aws/s3', args.ctx)
        : this.lookup(args.keyId, args.ctx, true);
      params['keyId'] = args.keyId ?? keyArn(key);
      this.use(call, key);
      this.requireUsable(key);
      this.requireSymmetric(key, 'GenerateDataKey');
      const plaintext = randomBytes(32);
      const enc = this.encryptWith(key, plaintext, 'SYMMETRIC_DEFAULT', args.encryptionContext);
      return { keyArn: keyArn(key), keyMaterialId: enc.materialId ?? '', plaintext, ciphertextBlob: enc.blob };
    });
  }

  /** S3 decrypting an object's data key on ctx's behalf (see {@link KmsService.serviceGenerateDataKey}). */
  async serviceDecrypt(args: {
    ciphertextBlob: Buffer;
    encryptionContext: Record<string, string>;
    ctx: RequestContext;
    invokedBy: string;
  }): Promise<{ keyArn: string; plaintext: Buffer }> {
    const params = { encryptionContext: args.encryptionContext, encryptionAlgorithm: 'SYMMETRIC_DEFAULT' };
    return this.serviceCall('Decrypt', args, params, (call) => {
      const d = this.decryptBlob(call, args.ciphertextBlob, undefined, args.encryptionContext, undefined);
      return { keyArn: keyArn(d.key), plaintext: d.plaintext };
    });
  }

  /** Resolves a key id, ARN, alias name or alias ARN to the key ARN without a quota token; throws NotFoundException. */
  resolveKeyArn(keyId: string, ctx: RequestContext): string {
    return keyArn(this.lookup(keyId, ctx, true));
  }

  /** For S3's UpdateObjectEncryption: re-wrap a data key blob under another key (logs a ReEncrypt by invokedBy). */
  async serviceReEncrypt(args: {
    ciphertextBlob: Buffer;
    encryptionContext: Record<string, string>;
    destinationKeyId: string;
    ctx: RequestContext;
    invokedBy: string;
  }): Promise<{ keyArn: string; ciphertextBlob: Buffer }> {
    const params = {
      destinationKeyId: args.destinationKeyId,
      sourceEncryptionContext: args.encryptionContext,
      destinationEncryptionContext: args.encryptionContext,
      sourceEncryptionAlgorithm: 'SYMMETRIC_DEFAULT',
      destinationEncryptionAlgorithm: 'SYMMETRIC_DEFAULT',
    };
    return this.serviceCall('ReEncrypt', args, params, (call) => {
      const src = this.decryptBlob(call, args.ciphertextBlob, undefined, args.encryptionContext, undefined);
      const dest = this.lookup(args.destinationKeyId, args.ctx, true);
      this.use(call, dest);
      this.requireUsable(dest);
      const enc = this.encryptWith(dest, src.plaintext, 'SYMMETRIC_DEFAULT', args.encryptionContext);
      return { keyArn: keyArn(dest), ciphertextBlob: enc.blob };
    });
  }

  /** The ARN of an AWS managed key (`aws/s3`, …) in ctx's account and Region, created on first use. */
  getOrCreateAwsManagedKey(name: string, ctx: Pick<RequestContext, 'accountId' | 'region'>): string {
    return keyArn(this.awsManagedKey(name, ctx));
  }

  private async serviceCall<T>(
    op: string,
    args: { ctx: RequestContext; invokedBy: string },
    params: Record<string, unknown>,
    fn: (call: Call) => T,
  ): Promise<T> {
    const call: Call = { op, ctx: args.ctx, invokedBy: args.invokedBy, keys: [], requestParameters: params };
    try {
      if (!this.deps.controls.takeQuota(args.ctx)) {
        throw new AwsError('ThrottlingException', 'You have exceeded the rate at which you may call KMS. Reduce the frequency of your calls.');
      }
      const out = fn(call);
      this.log(call, undefined);
      return out;
    } catch (err) {
      this.log(call, err);
      throw err;
    }
  }

  // ---------------------------------------------------------------- persistence

  /** State for `--data-dir`: keys as value tuples (field names once, not a million times). */
  snapshot(): SerializedState {
    const aliases: SerializedState['aliases'] = [];
    for (const [scope, s] of this.scopes) for (const [name, a] of s.aliases) aliases.push([scope, name, a]);
    const keys: unknown[][] = [];
    for (const k of this.keys.values()) keys.push(KEY_FIELDS.map((f) => k[f]));
    return { version: 2, fields: KEY_FIELDS, keys, aliases };
  }

  restore(data: unknown): void {
    this.reset();
    if (!data || typeof data !== 'object') return;
    const state = data as Partial<SerializedState>;
    if (state.version !== 2 || !Array.isArray(state.keys) || !Array.isArray(state.fields)) return;
    const fields = state.fields;
    // Deserialized strings are copies; interning the few account and Region names saves ~64 bytes a key.
    const interned = new Map<string, string>();
    const intern = (v: string) => interned.get(v) ?? (interned.set(v, v), v);
    for (const tuple of state.keys) {
      const raw: Record<string, unknown> = {};
      fields.forEach((f, i) => {
        raw[f] = tuple[i];
      });
      const k = newKeyRecord(raw as unknown as KeyRecord);
      k.account = intern(k.account);
      k.region = intern(k.region);
      if (k.material) k.material = Buffer.from(k.material);
      if (k.importParams) {
        k.importParams = {
          ...k.importParams,
          token: Buffer.from(k.importParams.token),
          wrappingDer: Buffer.from(k.importParams.wrappingDer),
        };
      }
      this.keys.set(k.id, k);
      this.scope(k.account, k.region).keys.push(k);
    }
    for (const [scopeKey, name, alias] of state.aliases ?? []) {
      const [account = '', region = ''] = scopeKey.split(':');
      this.scope(account, region).aliases.set(name, { ...alias });
    }
  }

  reset(): void {
    this.keys.clear();
    this.scopes.clear();
    clearKeyObjectCache();
    clearKeyArnCache();
  }

  // ---------------------------------------------------------------- plumbing

  private scope(account: string, region: string): Scope {
    const k = `${account}:${region}`;
    let s = this.scopes.get(k);
    if (!s) {
      s = { keys: [], aliases: new Map() };
      this.scopes.set(k, s);
    }
    return s;
  }

  private log(call: Call, err: unknown): void {
    const { ctx } = call;
    const keys = distinct(call.keys);
    const entry = this.deps.usage.append({
      eventTime: new Date(),
      eventName: call.op,
      accountId: ctx.accountId,
      region: ctx.region,
      accessKeyId: ctx.accessKeyId,
      invokedBy: call.invokedBy,
      sourceIp: call.invokedBy ?? ctx.sourceIp,
      userAgent: call.invokedBy ?? ctx.userAgent,
      keyArns: keys.map(keyArn),
      requestParameters: call.requestParameters,
      responseElements: null,
      errorCode: err === undefined ? undefined : err instanceof AwsError ? err.code : 'KMSInternalException',
      errorMessage: err === undefined ? undefined : err instanceof Error ? err.message : String(err),
      requestId: ctx.requestId,
    });
    if (err === undefined && USAGE_TRACKED.has(call.op)) {
      const at = entry.eventTime.getTime();
      for (const k of keys) {
        k.lastUse = { at, operation: call.op, eventId: entry.eventId, requestId: ctx.requestId };
      }
    }
  }

  /** Records that the call acts on a key, then applies deny rules for it. */
  private use(call: Call, key: KeyRecord): void {
    call.keys.push(key);
    this.deps.controls.checkDeny('kms', call.op, call.ctx, keyArn(key));
  }

  private getLive(id: string, now = Date.now()): KeyRecord | undefined {
    const k = this.keys.get(id);
    if (!k) return undefined;
    if (!applyTime(k, now)) {
      this.deleteKey(k);
      return undefined;
    }
    return k;
  }

  private deleteKey(k: KeyRecord): void {
    this.keys.delete(k.id);
    const s = this.scope(k.account, k.region);
    const i = s.keys.indexOf(k);
    if (i >= 0) s.keys.splice(i, 1);
    for (const [name, a] of s.aliases) if (a.target === k.id) s.aliases.delete(name);
  }

  /**
   * Finds a key by key id, key ARN, alias name or alias ARN (the last two only when `allowAlias`,
   * as for the operations whose AWS documentation accepts aliases). Throws NotFoundException.
   */
  private lookup(keyId: string, ctx: Pick<RequestContext, 'accountId' | 'region'>, allowAlias: boolean): KeyRecord {
    let account = ctx.accountId;
    let region = ctx.region;
    let id: string | undefined;
    let alias: string | undefined;
    const m = ARN_RE.exec(keyId);
    if (m) {
      region = m[2] ?? region;
      account = m[3] ?? account;
      if (m[4] === 'key') id = m[5];
      else alias = `alias/${m[5] ?? ''}`;
    } else if (keyId.startsWith('alias/')) {
      alias = keyId;
    } else {
      id = keyId;
    }
    if (alias !== undefined) {
      if (!allowAlias) throw invalidKeyId(keyId);
      const s = this.scopes.get(`${account}:${region}`);
      const a = s?.aliases.get(alias);
      if (!a) {
        const managed = alias.slice('alias/'.length);
        if (account === ctx.accountId && region === ctx.region && AWS_MANAGED[managed] !== undefined) {
          return this.awsManagedKey(managed, ctx);
        }
        throw new AwsError('NotFoundException', `Alias ${aliasArn(account, region, alias)} is not found.`);
      }
      id = a.target;
    }
    if (id === undefined || !KEY_ID_RE.test(id)) throw invalidKeyId(keyId);
    const k = this.getLive(id);
    if (!k || k.account !== account || k.region !== region) {
      throw notFoundKey(`arn:${partition(region)}:kms:${region}:${account}:key/${id}`);
    }
    return k;
  }

  private awsManagedKey(name: string, ctx: Pick<RequestContext, 'accountId' | 'region'>): KeyRecord {
    const aliasName = `alias/${name}`;
    const s = this.scope(ctx.accountId, ctx.region);
    const existing = s.aliases.get(aliasName);
    if (existing) {
      const k = this.getLive(existing.target);
      if (k) return k;
    }
    const now = Date.now();
    const k = newKeyRecord({
      id: newKeyId(false),
      account: ctx.accountId,
      region: ctx.region,
      created: now,
      spec: 'SYMMETRIC_DEFAULT',
      origin: 'AWS_KMS',
      manager: 'AWS',
      description: AWS_MANAGED[name] ?? `Default key for ${name}`,
      material: newMaterialEntry(),
      rotationPeriodDays: 365,
      nextRotation: now + 365 * DAY_MS,
    });
    this.keys.set(k.id, k);
    s.keys.push(k);
    s.aliases.set(aliasName, { target: k.id, created: now, updated: now });
    return k;
  }

  private requireUsable(k: KeyRecord): void {
    const err = stateError(k);
    if (err) throw err;
  }

  private requireCustomerManaged(k: KeyRecord, op: string): void {
    if (k.manager === 'AWS') {
      throw new AwsError(
        'AccessDeniedException',
        `${keyArn(k)} is an AWS managed key; customers cannot call kms:${op} on it`,
      );
    }
  }

  private requireSymmetric(k: KeyRecord, op: string): void {
    if (!isSymmetric(k)) {
      throw new AwsError('InvalidKeyUsageException', `${keyArn(k)} key usage is ENCRYPT_DECRYPT with KeySpec ${k.spec}, which is not valid for ${op}.`);
    }
  }

  /** Key states in which a key's configuration may change (not pending deletion). */
  private requireNotPendingDeletion(k: KeyRecord): void {
    if (k.state === 'PendingDeletion') {
      throw new AwsError('KMSInvalidStateException', `${keyArn(k)} is pending deletion.`);
    }
  }

  private encryptWith(
    k: KeyRecord,
    plaintext: Buffer,
    algorithm: EncryptionAlgorithm,
    context: Record<string, string> | undefined,
  ): Encrypted {
    if (!k.material) throw new AwsError('KMSInvalidStateException', `${keyArn(k)} is pending import.`);
    if (isSymmetric(k)) {
      if (algorithm !== 'SYMMETRIC_DEFAULT') {
        throw new AwsError('InvalidKeyUsageException', `The encryption algorithm ${algorithm} is not valid for ${keyArn(k)} (KeySpec SYMMETRIC_DEFAULT).`);
      }
      return symmetricEncrypt(k.id, k.material, plaintext, context);
    }
    if (algorithm !== 'RSAES_OAEP_SHA_1' && algorithm !== 'RSAES_OAEP_SHA_256') {
      throw new AwsError('InvalidKeyUsageException', `The encryption algorithm ${algorithm} is not valid for ${keyArn(k)} (KeySpec ${k.spec}).`);
    }
    if (context && Object.keys(context).length > 0) {
      throw new AwsError('ValidationException', `EncryptionContext is not supported with asymmetric KMS key ${keyArn(k)}`);
    }
    const max = oaepMaxPlaintext(k.spec as RsaSpec, algorithm);
    if (plaintext.length > max) {
      throw new AwsError('ValidationException', `Plaintext is ${plaintext.length} bytes; ${k.spec} with ${algorithm} encrypts at most ${max} bytes`);
    }
    return { blob: rsaEncrypt(k.id, k.material, algorithm, plaintext), materialId: undefined };
  }

  /**
   * Decrypts a ciphertext blob for Decrypt and ReEncrypt. With `keyId`, the blob must belong to
   * that key (IncorrectKeyException); without it, a symmetric blob names its own key.
   */
  private decryptBlob(
    call: Call,
    blob: Buffer,
    keyId: string | undefined,
    context: Record<string, string> | undefined,
    algorithm: EncryptionAlgorithm | undefined,
  ): Decrypted {
    const alg = algorithm ?? 'SYMMETRIC_DEFAULT';
    let key: KeyRecord | undefined;
    if (keyId !== undefined) {
      key = this.lookup(keyId, call.ctx, true);
      this.use(call, key);
      if (!isSymmetric(key)) {
        if (alg !== 'RSAES_OAEP_SHA_1' && alg !== 'RSAES_OAEP_SHA_256') {
          throw new AwsError('InvalidKeyUsageException', `The encryption algorithm ${alg} is not valid for ${keyArn(key)} (KeySpec ${key.spec}).`);
        }
        this.requireUsable(key);
        if (context && Object.keys(context).length > 0) {
          throw new AwsError('ValidationException', `EncryptionContext is not supported with asymmetric KMS key ${keyArn(key)}`);
        }
        const plaintext = key.material ? rsaDecrypt(key.id, key.material, alg, blob) : undefined;
        if (!plaintext) throw invalidCiphertext();
        return { key, plaintext, algorithm: alg, materialId: undefined };
      }
    }
    const header = parseBlobHeader(blob);
    if (!header) throw invalidCiphertext();
    if (key) {
      this.requireUsable(key);
      if (header.keyId !== key.id) {
        throw new AwsError('IncorrectKeyException', 'The key ID in the request does not identify a CMK that can perform this operation.');
      }
    } else {
      key = this.getLive(header.keyId);
      // A blob names its key only by id; a key of another Region cannot decrypt here.
      if (!key || key.region !== call.ctx.region) throw invalidCiphertext();
      this.use(call, key);
      this.requireUsable(key);
    }
    if (alg !== 'SYMMETRIC_DEFAULT') {
      throw new AwsError('InvalidKeyUsageException', `The encryption algorithm ${alg} is not valid for ${keyArn(key)} (KeySpec SYMMETRIC_DEFAULT).`);
    }
    const plaintext = key.material ? symmetricDecrypt(key.material, blob, context) : undefined;
    if (!plaintext) throw invalidCiphertext();
    return { key, plaintext, algorithm: 'SYMMETRIC_DEFAULT', materialId: header.materialId };
  }

  private dryRun(input: Input): void {
    if (optBool(input, 'DryRun')) {
      throw new AwsError('DryRunOperationException', 'The request would have succeeded, but the DryRun option is set.', 412);
    }
  }

  // ---------------------------------------------------------------- operations

  private async dispatch(call: Call, input: Input): Promise<Record<string, unknown>> {
    switch (call.op) {
      case 'CreateKey':
        return this.createKey(call, input);
      case 'DescribeKey':
        return this.describeKey(call, input);
      case 'ListKeys':
        return this.listKeys(call, input);
      case 'CreateAlias':
        return this.createAlias(call, input);
      case 'UpdateAlias':
        return this.updateAlias(call, input);
      case 'DeleteAlias':
        return this.deleteAlias(call, input);
      case 'ListAliases':
        return this.listAliases(call, input);
      case 'Encrypt':
        return this.encrypt(call, input);
      case 'Decrypt':
        return this.decrypt(call, input);
      case 'ReEncrypt':
        return this.reEncrypt(call, input);
      case 'GenerateDataKey':
        return this.generateDataKey(call, input, true);
      case 'GenerateDataKeyWithoutPlaintext':
        return this.generateDataKey(call, input, false);
      case 'GenerateRandom':
        return this.generateRandom(call, input);
      case 'GetPublicKey':
        return this.getPublicKey(call, input);
      case 'EnableKey':
      case 'DisableKey':
        return this.setEnabled(call, input, call.op === 'EnableKey');
      case 'ScheduleKeyDeletion':
        return this.scheduleKeyDeletion(call, input);
      case 'CancelKeyDeletion':
        return this.cancelKeyDeletion(call, input);
      case 'EnableKeyRotation':
        return this.enableKeyRotation(call, input);
      case 'DisableKeyRotation':
        return this.disableKeyRotation(call, input);
      case 'GetKeyRotationStatus':
        return this.getKeyRotationStatus(call, input);
      case 'RotateKeyOnDemand':
        return this.rotateKeyOnDemand(call, input);
      case 'ListKeyRotations':
        return this.listKeyRotations(call, input);
      case 'GetKeyLastUsage':
        return this.getKeyLastUsage(call, input);
      case 'GetKeyPolicy':
        return this.getKeyPolicy(call, input);
      case 'PutKeyPolicy':
        return this.putKeyPolicy(call, input);
      case 'ListKeyPolicies':
        return this.listKeyPolicies(call, input);
      case 'UpdateKeyDescription':
        return this.updateKeyDescription(call, input);
      case 'TagResource':
        return this.tagResource(call, input);
      case 'UntagResource':
        return this.untagResource(call, input);
      case 'ListResourceTags':
        return this.listResourceTags(call, input);
      case 'GetParametersForImport':
        return this.getParametersForImport(call, input);
      case 'ImportKeyMaterial':
        return this.importKeyMaterial(call, input);
      default:
        this.deps.controls.checkDeny('kms', call.op, call.ctx);
        throw new AwsError('UnknownOperationException', `KMS operation ${call.op} is not supported by aws-local`);
    }
  }

  /** Resolves the request's KeyId (key id or ARN unless `allowAlias`) and applies deny rules. */
  private keyFor(call: Call, input: Input, allowAlias: boolean, field = 'KeyId'): KeyRecord {
    const key = this.lookup(reqString(input, field, 1, 2048), call.ctx, allowAlias);
    this.use(call, key);
    return key;
  }

  private async createKey(call: Call, input: Input): Promise<Record<string, unknown>> {
    const { ctx } = call;
    this.deps.controls.checkDeny('kms', call.op, ctx);
    const keySpecIn = optString(input, 'KeySpec', 1, 64);
    const cmkSpecIn = optString(input, 'CustomerMasterKeySpec', 1, 64);
    if (keySpecIn !== undefined && cmkSpecIn !== undefined) {
      throw new AwsError('ValidationException', 'You cannot specify KeySpec and CustomerMasterKeySpec in the same request. CustomerMasterKeySpec is deprecated.');
    }
    const specIn = keySpecIn ?? cmkSpecIn ?? 'SYMMETRIC_DEFAULT';
    if (!(KEY_SPECS as readonly string[]).includes(specIn)) {
      throw new AwsError('UnsupportedOperationException', `aws-local does not support KeySpec ${specIn}; it supports ${KEY_SPECS.join(', ')}`);
    }
    const spec = specIn as KeySpec;
    const usage = optString(input, 'KeyUsage', 1, 64) ?? 'ENCRYPT_DECRYPT';
    if (usage !== 'ENCRYPT_DECRYPT') {
      if (spec === 'SYMMETRIC_DEFAULT' || !['SIGN_VERIFY'].includes(usage)) {
        throw new AwsError('ValidationException', `KeyUsage ${usage} is not compatible with KeySpec ${spec}`);
      }
      throw new AwsError('UnsupportedOperationException', `aws-local does not support KeyUsage ${usage}`);
    }
    const origin = optString(input, 'Origin', 1, 64) ?? 'AWS_KMS';
    if (origin !== 'AWS_KMS' && origin !== 'EXTERNAL') {
      throw new AwsError('UnsupportedOperationException', `aws-local does not support Origin ${origin}; it supports AWS_KMS and EXTERNAL`);
    }
    if (origin === 'EXTERNAL' && spec !== 'SYMMETRIC_DEFAULT') {
      throw new AwsError('UnsupportedOperationException', 'aws-local supports imported key material for SYMMETRIC_DEFAULT keys only');
    }
    unsupportedField(input, 'CustomKeyStoreId', 'custom key stores');
    unsupportedField(input, 'XksKeyId', 'external key stores');
    const description = optString(input, 'Description', 0, 8192) ?? '';
    const policy = optString(input, 'Policy', 1, 32768);
    if (policy !== undefined) this.checkPolicy(policy);
    const tags = optTags(input, 'Tags');
    if (tags && tags.length > 50) throw new AwsError('TagException', 'A KMS key can have at most 50 tags');
    optBool(input, 'BypassPolicyLockoutSafetyCheck');
    const multiRegion = optBool(input, 'MultiRegion') ?? false;

    const now = Date.now();
    const id = newKeyId(multiRegion);
    let material: Buffer | null = null;
    if (origin === 'AWS_KMS') {
      material = spec === 'SYMMETRIC_DEFAULT' ? newMaterialEntry() : await generateRsaPrivateKey(RSA_BITS[spec as RsaSpec]);
    }
    const k = newKeyRecord({
      id,
      account: ctx.accountId,
      region: ctx.region,
      created: now,
      state: origin === 'EXTERNAL' ? 'PendingImport' : 'Enabled',
      spec,
      origin,
      manager: 'CUSTOMER',
      description,
      multiRegion,
      material,
      policy: policy ?? null,
      tags: tags && tags.length > 0 ? tags : null,
    });
    this.keys.set(id, k);
    this.scope(k.account, k.region).keys.push(k);
    call.keys.push(k);
    return { KeyMetadata: keyMetadata(k) };
  }

  private checkPolicy(policy: string): void {
    let parsed: unknown;
    try {
      parsed = JSON.parse(policy);
    } catch {
      throw new AwsError('MalformedPolicyDocumentException', 'The policy is not valid JSON');
    }
    if (!parsed || typeof parsed !== 'object' || Array.isArray(parsed)) {
      throw new AwsError('MalformedPolicyDocumentException', 'The policy must be a JSON object');
    }
  }

  private describeKey(call: Call, input: Input): Record<string, unknown> {
    const k = this.keyFor(call, input, true);
    return { KeyMetadata: keyMetadata(k) };
  }

  private paging(input: Input, max: number, dflt: number): { start: number; limit: number } {
    const limit = optInt(input, 'Limit', 1, max) ?? dflt;
    const marker = optString(input, 'Marker', 1, 1024);
    let start = 0;
    if (marker !== undefined) {
      if (!/^\d+$/.test(marker)) throw new AwsError('InvalidMarkerException', `Marker ${marker} is not valid`);
      start = Number(marker);
    }
    return { start, limit };
  }

  private page<T>(items: T[], start: number, limit: number): { items: T[]; Truncated: boolean; NextMarker?: string } {
    const slice = items.slice(start, start + limit);
    const next = start + limit;
    return next < items.length ? { items: slice, Truncated: true, NextMarker: String(next) } : { items: slice, Truncated: false };
  }

  private listKeys(call: Call, input: Input): Record<string, unknown> {
    this.deps.controls.checkDeny('kms', call.op, call.ctx);
    const { start, limit } = this.paging(input, 1000, 100);
    const s = this.scope(call.ctx.accountId, call.ctx.region);
    const now = Date.now();
    // Keys whose deletion date passed disappear lazily; sweep just the page being returned.
    for (const k of s.keys.slice(start, start + limit)) this.getLive(k.id, now);
    const { items, ...rest } = this.page(s.keys, start, limit);
    return { Keys: items.map((k) => ({ KeyId: k.id, KeyArn: keyArn(k) })), ...rest };
  }

  private aliasName(input: Input): string {
    const name = reqString(input, 'AliasName', 1, 256);
    if (!ALIAS_NAME_RE.test(name)) throw validation('AliasName', name, 'Member must satisfy regular expression pattern: ^[a-zA-Z0-9:/_-]+$');
    if (!name.startsWith('alias/') || name.length === 'alias/'.length) {
      throw new AwsError('ValidationException', `Alias must start with the prefix "alias/" and name a key: ${name}`);
    }
    if (name.startsWith('alias/aws/')) {
      throw new AwsError('NotAuthorizedException', `The alias prefix alias/aws/ is reserved for AWS managed keys: ${name}`);
    }
    return name;
  }

  private aliasTarget(call: Call, input: Input): KeyRecord {
    const k = this.keyFor(call, input, false, 'TargetKeyId');
    if (k.manager === 'AWS') throw new AwsError('NotAuthorizedException', `Aliases cannot point to AWS managed key ${keyArn(k)}`);
    this.requireNotPendingDeletion(k);
    return k;
  }

  private createAlias(call: Call, input: Input): Record<string, unknown> {
    const name = this.aliasName(input);
    const k = this.aliasTarget(call, input);
    const s = this.scope(call.ctx.accountId, call.ctx.region);
    if (s.aliases.has(name)) {
      throw new AwsError('AlreadyExistsException', `An alias with the name ${aliasArn(call.ctx.accountId, call.ctx.region, name)} already exists`);
    }
    const now = Date.now();
    s.aliases.set(name, { target: k.id, created: now, updated: now });
    return {};
  }

  private existingAlias(call: Call, name: string): AliasRecord {
    const a = this.scope(call.ctx.accountId, call.ctx.region).aliases.get(name);
    if (!a) throw new AwsError('NotFoundException', `Alias ${aliasArn(call.ctx.accountId, call.ctx.region, name)} is not found.`);
    return a;
  }

  private updateAlias(call: Call, input: Input): Record<string, unknown> {
    const name = this.aliasName(input);
    const a = this.existingAlias(call, name);
    const k = this.aliasTarget(call, input);
    const current = this.keys.get(a.target);
    if (current && current.spec !== k.spec && (isSymmetric(current) || isSymmetric(k))) {
      throw new AwsError('ValidationException', `Alias ${name} points to a ${current.spec} key; it can only be moved to a key of the same type and usage, not ${k.spec}`);
    }
    a.target = k.id;
    a.updated = Date.now();
    return {};
  }

  private deleteAlias(call: Call, input: Input): Record<string, unknown> {
    const name = this.aliasName(input);
    const a = this.existingAlias(call, name);
    const k = this.keys.get(a.target);
    if (k) this.use(call, k);
    else this.deps.controls.checkDeny('kms', call.op, call.ctx);
    this.scope(call.ctx.accountId, call.ctx.region).aliases.delete(name);
    return {};
  }

  private listAliases(call: Call, input: Input): Record<string, unknown> {
    const { start, limit } = this.paging(input, 100, 50);
    let filter: string | undefined;
    if (input['KeyId'] !== undefined) filter = this.keyFor(call, input, false).id;
    else this.deps.controls.checkDeny('kms', call.op, call.ctx);
    const { accountId, region } = call.ctx;
    const all: Array<[string, AliasRecord]> = [];
    for (const entry of this.scope(accountId, region).aliases) {
      if (filter === undefined || entry[1].target === filter) all.push(entry);
    }
    const { items, ...rest } = this.page(all, start, limit);
    return {
      Aliases: items.map(([name, a]) => ({
        AliasName: name,
        AliasArn: aliasArn(accountId, region, name),
        TargetKeyId: a.target,
        CreationDate: ts(a.created),
        LastUpdatedDate: ts(a.updated),
      })),
      ...rest,
    };
  }

  private encryptionAlgorithm(input: Input, field: string): EncryptionAlgorithm | undefined {
    const alg = optEnum(input, field, ENCRYPTION_ALGORITHMS);
    if (alg === 'SM2PKE') throw new AwsError('UnsupportedOperationException', 'aws-local does not support SM2PKE');
    return alg;
  }

  private encrypt(call: Call, input: Input): Record<string, unknown> {
    const k = this.keyFor(call, input, true);
    const plaintext = reqBlob(input, 'Plaintext', 1, 4096);
    const context = optContext(input, 'EncryptionContext');
    const alg = this.encryptionAlgorithm(input, 'EncryptionAlgorithm') ?? 'SYMMETRIC_DEFAULT';
    optStringList(input, 'GrantTokens', 10);
    this.requireUsable(k);
    if (!isSymmetric(k) && alg === 'SYMMETRIC_DEFAULT') {
      throw new AwsError('InvalidKeyUsageException', `The encryption algorithm SYMMETRIC_DEFAULT is not valid for ${keyArn(k)} (KeySpec ${k.spec}); specify RSAES_OAEP_SHA_1 or RSAES_OAEP_SHA_256.`);
    }
    const enc = this.encryptWith(k, plaintext, alg, context);
    this.dryRun(input);
    return { CiphertextBlob: b64(enc.blob), KeyId: keyArn(k), EncryptionAlgorithm: alg };
  }

  private decrypt(call: Call, input: Input): Record<string, unknown> {
    const blob = reqBlob(input, 'CiphertextBlob', 1, 6144);
    const context = optContext(input, 'EncryptionContext');
    const keyId = optString(input, 'KeyId', 1, 2048);
    const alg = this.encryptionAlgorithm(input, 'EncryptionAlgorithm');
    optStringList(input, 'GrantTokens', 10);
    unsupportedField(input, 'Recipient', 'Nitro Enclaves attestation');
    const d = this.decryptBlob(call, blob, keyId, context, alg);
    this.dryRun(input);
    return {
      KeyId: keyArn(d.key),
      Plaintext: b64(d.plaintext),
      EncryptionAlgorithm: d.algorithm,
      ...(d.materialId !== undefined && { KeyMaterialId: d.materialId }),
    };
  }

  private reEncrypt(call: Call, input: Input): Record<string, unknown> {
    const blob = reqBlob(input, 'CiphertextBlob', 1, 6144);
    const destId = reqString(input, 'DestinationKeyId', 1, 2048);
    const srcContext = optContext(input, 'SourceEncryptionContext');
    const destContext = optContext(input, 'DestinationEncryptionContext');
    const srcKeyId = optString(input, 'SourceKeyId', 1, 2048);
    const srcAlg = this.encryptionAlgorithm(input, 'SourceEncryptionAlgorithm');
    const destAlg = this.encryptionAlgorithm(input, 'DestinationEncryptionAlgorithm') ?? 'SYMMETRIC_DEFAULT';
    optStringList(input, 'GrantTokens', 10);
    const src = this.decryptBlob(call, blob, srcKeyId, srcContext, srcAlg);
    const dest = this.lookup(destId, call.ctx, true);
    this.use(call, dest);
    this.requireUsable(dest);
    if (!isSymmetric(dest) && destAlg === 'SYMMETRIC_DEFAULT') {
      throw new AwsError('InvalidKeyUsageException', `The encryption algorithm SYMMETRIC_DEFAULT is not valid for ${keyArn(dest)} (KeySpec ${dest.spec}).`);
    }
    const enc = this.encryptWith(dest, src.plaintext, destAlg, destContext);
    this.dryRun(input);
    return {
      CiphertextBlob: b64(enc.blob),
      SourceKeyId: keyArn(src.key),
      KeyId: keyArn(dest),
      SourceEncryptionAlgorithm: src.algorithm,
      DestinationEncryptionAlgorithm: destAlg,
      ...(src.materialId !== undefined && { SourceKeyMaterialId: src.materialId }),
      ...(enc.materialId !== undefined && { DestinationKeyMaterialId: enc.materialId }),
    };
  }

  private generateDataKey(call: Call, input: Input, withPlaintext: boolean): Record<string, unknown> {
    const k = this.keyFor(call, input, true);
    const context = optContext(input, 'EncryptionContext');
    const keySpec = optEnum(input, 'KeySpec', ['AES_256', 'AES_128'] as const);
    const bytes = optInt(input, 'NumberOfBytes', 1, 1024);
    optStringList(input, 'GrantTokens', 10);
    unsupportedField(input, 'Recipient', 'Nitro Enclaves attestation');
    if ((keySpec === undefined) === (bytes === undefined)) {
      throw new AwsError('ValidationException', 'Specify exactly one of KeySpec or NumberOfBytes.');
    }
    this.requireUsable(k);
    this.requireSymmetric(k, call.op);
    const plaintext = randomBytes(bytes ?? (keySpec === 'AES_128' ? 16 : 32));
    const enc = this.encryptWith(k, plaintext, 'SYMMETRIC_DEFAULT', context);
    this.dryRun(input);
    return {
      CiphertextBlob: b64(enc.blob),
      ...(withPlaintext && { Plaintext: b64(plaintext) }),
      KeyId: keyArn(k),
      ...(enc.materialId !== undefined && { KeyMaterialId: enc.materialId }),
    };
  }

  private generateRandom(call: Call, input: Input): Record<string, unknown> {
    this.deps.controls.checkDeny('kms', call.op, call.ctx);
    unsupportedField(input, 'CustomKeyStoreId', 'custom key stores');
    unsupportedField(input, 'Recipient', 'Nitro Enclaves attestation');
    const n = optInt(input, 'NumberOfBytes', 1, 1024);
    if (n === undefined) throw validation('NumberOfBytes', undefined, 'Member must not be null');
    return { Plaintext: b64(randomBytes(n)) };
  }

  private getPublicKey(call: Call, input: Input): Record<string, unknown> {
    const k = this.keyFor(call, input, true);
    if (isSymmetric(k)) {
      throw new AwsError('UnsupportedOperationException', `${keyArn(k)} is a symmetric key; it has no public key.`);
    }
    this.requireUsable(k);
    if (!k.material) throw new AwsError('KMSInvalidStateException', `${keyArn(k)} is pending import.`);
    return {
      KeyId: keyArn(k),
      PublicKey: b64(rsaPublicKeyDer(k.id, k.material)),
      CustomerMasterKeySpec: k.spec,
      KeySpec: k.spec,
      KeyUsage: 'ENCRYPT_DECRYPT',
      EncryptionAlgorithms: encryptionAlgorithms(k),
    };
  }

  private setEnabled(call: Call, input: Input, enable: boolean): Record<string, unknown> {
    const k = this.keyFor(call, input, false);
    this.requireCustomerManaged(k, call.op);
    if (k.state === 'PendingDeletion' || k.state === 'PendingImport') {
      throw new AwsError('KMSInvalidStateException', `${keyArn(k)} is pending ${k.state === 'PendingDeletion' ? 'deletion' : 'import'}.`);
    }
    k.state = enable ? 'Enabled' : 'Disabled';
    return {};
  }

  private scheduleKeyDeletion(call: Call, input: Input): Record<string, unknown> {
    const k = this.keyFor(call, input, false);
    const days = optInt(input, 'PendingWindowInDays', 7, 30) ?? 30;
    this.requireCustomerManaged(k, call.op);
    this.requireNotPendingDeletion(k);
    k.state = 'PendingDeletion';
    k.pendingWindowDays = days;
    k.deletionDate = Date.now() + days * DAY_MS;
    return { KeyId: keyArn(k), DeletionDate: ts(k.deletionDate), KeyState: k.state, PendingWindowInDays: days };
  }

  private cancelKeyDeletion(call: Call, input: Input): Record<string, unknown> {
    const k = this.keyFor(call, input, false);
    this.requireCustomerManaged(k, call.op);
    if (k.state !== 'PendingDeletion') {
      throw new AwsError('KMSInvalidStateException', `${keyArn(k)} is not pending deletion.`);
    }
    k.state = k.material ? 'Disabled' : 'PendingImport';
    k.deletionDate = 0;
    k.pendingWindowDays = 0;
    return { KeyId: keyArn(k) };
  }

  /** Automatic and on-demand rotation exist only for symmetric keys with KMS-made material. */
  private requireRotatable(k: KeyRecord, allowExternal: boolean): void {
    if (!isSymmetric(k)) {
      throw new AwsError('UnsupportedOperationException', `${keyArn(k)} is an asymmetric key; KMS cannot rotate it.`);
    }
    if (k.origin === 'EXTERNAL' && !allowExternal) {
      throw new AwsError('UnsupportedOperationException', `${keyArn(k)} origin is EXTERNAL which is not valid for this operation.`);
    }
  }

  private enableKeyRotation(call: Call, input: Input): Record<string, unknown> {
    const k = this.keyFor(call, input, false);
    const period = optInt(input, 'RotationPeriodInDays', 90, 2560) ?? 365;
    this.requireCustomerManaged(k, call.op);
    this.requireRotatable(k, false);
    this.requireUsable(k);
    k.rotationPeriodDays = period;
    k.nextRotation = Date.now() + period * DAY_MS;
    return {};
  }

  private disableKeyRotation(call: Call, input: Input): Record<string, unknown> {
    const k = this.keyFor(call, input, false);
    this.requireCustomerManaged(k, call.op);
    this.requireRotatable(k, false);
    this.requireUsable(k);
    k.rotationPeriodDays = 0;
    k.nextRotation = 0;
    return {};
  }

  private getKeyRotationStatus(call: Call, input: Input): Record<string, unknown> {
    const k = this.keyFor(call, input, false);
    this.requireRotatable(k, true);
    const on = k.rotationPeriodDays > 0;
    return {
      KeyRotationEnabled: on,
      KeyId: keyArn(k),
      ...(on && { RotationPeriodInDays: k.rotationPeriodDays, NextRotationDate: ts(k.nextRotation) }),
    };
  }

  private rotateKeyOnDemand(call: Call, input: Input): Record<string, unknown> {
    const k = this.keyFor(call, input, false);
    this.requireCustomerManaged(k, call.op);
    this.requireRotatable(k, false);
    this.requireUsable(k);
    if (k.onDemandRotations >= MAX_ON_DEMAND_ROTATIONS) {
      throw new AwsError('LimitExceededException', `${keyArn(k)} has reached the limit of ${MAX_ON_DEMAND_ROTATIONS} on-demand rotations.`);
    }
    rotate(k, Date.now(), 'ON_DEMAND');
    return { KeyId: k.id };
  }

  private listKeyRotations(call: Call, input: Input): Record<string, unknown> {
    const k = this.keyFor(call, input, false);
    const include = optEnum(input, 'IncludeKeyMaterial', ['ALL_KEY_MATERIAL', 'ROTATIONS_ONLY'] as const) ?? 'ROTATIONS_ONLY';
    const { start, limit } = this.paging(input, 1000, 100);
    this.requireRotatable(k, true);
    const arn = keyArn(k);
    const count = k.material ? materialCount(k.material) : 0;
    const entries: Array<Record<string, unknown>> = [];
    for (let i = 0; i < count && k.material; i++) {
      const rotation = i > 0 ? k.rotations?.[i - 1] : undefined;
      if (i === 0 && include === 'ROTATIONS_ONLY') continue;
      entries.push({
        KeyId: arn,
        KeyMaterialId: materialIdAt(k.material, i),
        KeyMaterialState: i === count - 1 ? 'CURRENT' : 'NON_CURRENT',
        ...(k.origin === 'EXTERNAL' && {
          ImportState: 'IMPORTED',
          ExpirationModel: k.materialValidTo ? 'KEY_MATERIAL_EXPIRES' : 'KEY_MATERIAL_DOES_NOT_EXPIRE',
          ...(k.materialValidTo && { ValidTo: ts(k.materialValidTo) }),
        }),
        ...(rotation && { RotationDate: ts(rotation.at), RotationType: rotation.type }),
      });
    }
    const { items, ...rest } = this.page(entries, start, limit);
    return { Rotations: items, ...rest };
  }

  private getKeyLastUsage(call: Call, input: Input): Record<string, unknown> {
    const k = this.keyFor(call, input, false);
    const u = k.lastUse;
    return {
      KeyId: k.id,
      KeyLastUsage: u
        ? { Operation: u.operation, Timestamp: ts(u.at), CloudTrailEventId: u.eventId, KmsRequestId: u.requestId }
        : {},
      TrackingStartDate: ts(k.created),
      KeyCreationDate: ts(k.created),
    };
  }

  private policyName(input: Input): string {
    const name = optString(input, 'PolicyName', 1, 128) ?? 'default';
    if (name !== 'default') throw new AwsError('ValidationException', `PolicyName ${name} is not valid; the only key policy name is "default"`);
    return name;
  }

  private getKeyPolicy(call: Call, input: Input): Record<string, unknown> {
    const k = this.keyFor(call, input, false);
    const name = this.policyName(input);
    return { Policy: k.policy ?? defaultPolicy(k.account, k.region), PolicyName: name };
  }

  private putKeyPolicy(call: Call, input: Input): Record<string, unknown> {
    const k = this.keyFor(call, input, false);
    this.policyName(input);
    const policy = reqString(input, 'Policy', 1, 32768);
    optBool(input, 'BypassPolicyLockoutSafetyCheck');
    this.requireCustomerManaged(k, call.op);
    this.requireNotPendingDeletion(k);
    this.checkPolicy(policy);
    k.policy = policy;
    return {};
  }

  private listKeyPolicies(call: Call, input: Input): Record<string, unknown> {
    this.keyFor(call, input, false);
    return { PolicyNames: ['default'], Truncated: false };
  }

  private updateKeyDescription(call: Call, input: Input): Record<string, unknown> {
    const k = this.keyFor(call, input, false);
    const description = reqString(input, 'Description', 0, 8192);
    this.requireCustomerManaged(k, call.op);
    this.requireNotPendingDeletion(k);
    k.description = description;
    return {};
  }

  private tagResource(call: Call, input: Input): Record<string, unknown> {
    const k = this.keyFor(call, input, false);
    const tags = optTags(input, 'Tags');
    if (!tags) throw validation('Tags', undefined, 'Member must not be null');
    this.requireCustomerManaged(k, call.op);
    this.requireNotPendingDeletion(k);
    const merged = new Map(k.tags ?? []);
    for (const [key, value] of tags) merged.set(key, value);
    if (merged.size > 50) throw new AwsError('TagException', 'A KMS key can have at most 50 tags');
    k.tags = merged.size > 0 ? [...merged] : null;
    return {};
  }

  private untagResource(call: Call, input: Input): Record<string, unknown> {
    const k = this.keyFor(call, input, false);
    const keys = optStringList(input, 'TagKeys', 50);
    if (!keys) throw validation('TagKeys', undefined, 'Member must not be null');
    this.requireCustomerManaged(k, call.op);
    this.requireNotPendingDeletion(k);
    const remove = new Set(keys);
    const left = (k.tags ?? []).filter(([key]) => !remove.has(key));
    k.tags = left.length > 0 ? left : null;
    return {};
  }

  private listResourceTags(call: Call, input: Input): Record<string, unknown> {
    const k = this.keyFor(call, input, false);
    const { start, limit } = this.paging(input, 50, 50);
    const { items, ...rest } = this.page(k.tags ?? [], start, limit);
    return { Tags: items.map(([TagKey, TagValue]) => ({ TagKey, TagValue })), ...rest };
  }

  private requireExternal(k: KeyRecord): void {
    if (k.origin !== 'EXTERNAL') {
      throw new AwsError('UnsupportedOperationException', `${keyArn(k)} origin is ${k.origin} which is not valid for this operation.`);
    }
  }

  private async getParametersForImport(call: Call, input: Input): Promise<Record<string, unknown>> {
    const k = this.keyFor(call, input, false);
    const algorithm = reqString(input, 'WrappingAlgorithm', 1, 64);
    const spec = reqString(input, 'WrappingKeySpec', 1, 64);
    const supportedAlgs = ['RSAES_OAEP_SHA_1', 'RSAES_OAEP_SHA_256', 'RSA_AES_KEY_WRAP_SHA_1', 'RSA_AES_KEY_WRAP_SHA_256'];
    if (!supportedAlgs.includes(algorithm)) {
      throw new AwsError('UnsupportedOperationException', `aws-local does not support WrappingAlgorithm ${algorithm}; it supports ${supportedAlgs.join(', ')}`);
    }
    if (spec !== 'RSA_2048' && spec !== 'RSA_3072' && spec !== 'RSA_4096') {
      throw new AwsError('UnsupportedOperationException', `aws-local does not support WrappingKeySpec ${spec}`);
    }
    this.requireExternal(k);
    this.requireNotPendingDeletion(k);
    const { privateDer, publicDer } = await generateWrappingKey(RSA_BITS[spec]);
    const validTo = Date.now() + IMPORT_PARAMS_TTL_MS;
    const token = randomBytes(48);
    k.importParams = { token, wrappingDer: privateDer, algorithm, validTo };
    return { KeyId: keyArn(k), ImportToken: b64(token), PublicKey: b64(publicDer), ParametersValidTo: ts(validTo) };
  }

  private importKeyMaterial(call: Call, input: Input): Record<string, unknown> {
    const k = this.keyFor(call, input, false);
    const token = reqBlob(input, 'ImportToken', 1, 6144);
    const encrypted = reqBlob(input, 'EncryptedKeyMaterial', 1, 6144);
    const validTo = optDate(input, 'ValidTo');
    const model = optEnum(input, 'ExpirationModel', ['KEY_MATERIAL_EXPIRES', 'KEY_MATERIAL_DOES_NOT_EXPIRE'] as const)
      ?? (validTo !== undefined ? 'KEY_MATERIAL_EXPIRES' : 'KEY_MATERIAL_DOES_NOT_EXPIRE');
    const importType = optEnum(input, 'ImportType', ['NEW_KEY_MATERIAL', 'EXISTING_KEY_MATERIAL'] as const);
    optString(input, 'KeyMaterialDescription', 0, 256);
    const wantedMaterialId = optString(input, 'KeyMaterialId', 64, 64);
    const now = Date.now();
    if (model === 'KEY_MATERIAL_EXPIRES') {
      if (validTo === undefined) throw new AwsError('ValidationException', 'ValidTo is required when ExpirationModel is KEY_MATERIAL_EXPIRES');
      if (validTo <= now || validTo > now + 365 * DAY_MS) {
        throw new AwsError('ValidationException', 'ValidTo must be in the future and at most 365 days from now');
      }
    } else if (validTo !== undefined) {
      throw new AwsError('ValidationException', 'ValidTo must be omitted when ExpirationModel is KEY_MATERIAL_DOES_NOT_EXPIRE');
    }
    this.requireExternal(k);
    this.requireNotPendingDeletion(k);
    if (importType === 'NEW_KEY_MATERIAL' && k.material) {
      throw new AwsError('UnsupportedOperationException', 'aws-local does not support rotating imported key material (ImportType NEW_KEY_MATERIAL on a key that has material)');
    }
    const params = k.importParams;
    if (!params || params.token.length !== token.length || !timingSafeEqual(params.token, token)) {
      throw new AwsError('InvalidImportTokenException', `The import token is not valid for ${keyArn(k)}`);
    }
    if (now >= params.validTo) {
      throw new AwsError('ExpiredImportTokenException', `The import token for ${keyArn(k)} has expired; call GetParametersForImport again`);
    }
    const material = unwrapImportedMaterial(params.wrappingDer, params.algorithm as WrappingAlgorithm, encrypted);
    if (!material) throw invalidCiphertext();
    if (material.length !== 32) {
      throw new AwsError('IncorrectKeyMaterialException', `Symmetric key material must be 256 bits; got ${material.length * 8} bits`);
    }
    const entry = importedMaterialEntry(k.id, material);
    material.fill(0);
    if (k.material && !k.material.equals(entry)) {
      throw new AwsError('IncorrectKeyMaterialException', `The key material is not the key material previously imported into ${keyArn(k)}`);
    }
    const materialId = entry.toString('hex', 0, 32);
    if (wantedMaterialId !== undefined && wantedMaterialId !== materialId) {
      throw new AwsError('IncorrectKeyMaterialException', `KeyMaterialId ${wantedMaterialId} does not identify this key material`);
    }
    k.material = entry;
    k.materialValidTo = model === 'KEY_MATERIAL_EXPIRES' ? (validTo ?? 0) : 0;
    if (k.state === 'PendingImport') k.state = 'Enabled';
    return { KeyId: keyArn(k), KeyMaterialId: currentMaterialId(k) ?? materialId };
  }
}
