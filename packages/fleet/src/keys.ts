/**
 * Every Redis key Rekey uses, in one place, under one configurable prefix (default `rekey:`).
 * Keys of one migration share a `{id}` hash tag so a Lua script can touch them together on a cluster.
 */
export interface RedisKeys {
  readonly prefix: string;
  /** Set of migration ids. */
  migrations(): string;
  /** Hash: the migration record (state, spec JSON, keys, timestamps). */
  migration(id: string): string;
  /** Hash: counters of one source of a migration. */
  counters(id: string, source: string): string;
  /** Hash: enumeration checkpoint of one source (cursor, page, done) for a mode. */
  cursor(id: string, source: string, mode: 'reencrypt' | 'verify'): string;
  /** Set of batch job ids whose outcomes were recorded (so a re-delivered batch is never counted twice). */
  recorded(id: string): string;
  /** Hash: split points of batch jobs that gave part of their items to new jobs (`<mode>|<job id>` -> "500,250"). */
  splits(id: string): string;
  /**
   * Hash: outcomes of the items a batch job finished in attempts that went back to the queue
   * (retry, pause, shutdown) without being recorded (`<mode>|<job id>` -> JSON), so its next
   * attempt counts them as they were instead of as already-current. Cleared when the batch is recorded.
   */
  carried(id: string): string;
  /** Stream: failed items (capped). */
  failures(id: string): string;
  /** Hash: acknowledged failures (item -> reason). */
  acks(id: string): string;
  /** Stream: the hash-chained audit log of a migration (or of a rotation, by its id). */
  audit(id: string): string;
  /** String: the hash of the newest audit entry (the chain head). */
  auditHead(id: string): string;
  /** String with TTL: the enumeration leader lease of a migration. */
  lease(id: string): string;
  /** Sorted set: throughput samples (time -> processed) for the status page chart. */
  samples(id: string): string;
  /** Hash: old-key usage seen by the monitor. */
  usage(id: string): string;
  /** The fleet-wide KMS limiter of an account and Region. */
  limiter(account: string, region: string): string;
  /** Hash: the operator's fleet-wide budget override (`rekey budget`), applied to limiters created later. */
  budgetOverride(): string;
  /** String: dedupe marker of an app-requested item. */
  intakeDedupe(hash: string): string;
  /** String (JSON): the sources and alias bindings the coordinator's intake published for workers. */
  intakeConfig(): string;
  /** Hash: alias name -> the key ARN the intake last saw behind it. */
  intakeAliases(): string;
  /** Set: every key ARN the intake has seen behind an alias (the keys item jobs may move data from). */
  intakeAliasKeys(alias: string): string;
  /** String with TTL (JSON): the decision taken for one EventBridge event, so a redelivery repeats it. */
  intakeEvent(eventId: string): string;
  /** String with TTL: set once a rejected SQS message was logged, so it is logged once. */
  intakeRejected(messageId: string): string;
  /** Hash: intake counters (messages, items enqueued and deduplicated, item outcomes). */
  intakeStats(): string;
  /** Pub/sub channel: a migration was created, changed state, or had the last outstanding batch of a pass recorded (payload: its id); wakes coordinators. */
  changes(): string;
  /** The BullMQ prefix (BullMQ adds `:<queue>:…`). */
  bullPrefix(): string;
}

/** Builds the key module for a prefix such as `rekey:` (a trailing `:` is added when missing). */
export function redisKeys(prefix = 'rekey:'): RedisKeys {
  const p = prefix.endsWith(':') ? prefix : `${prefix}:`;
  const m = (id: string) => `${p}m:{${id}}`;
  return {
    prefix: p,
    migrations: () => `${p}migrations`,
    migration: (id) => m(id),
    counters: (id, source) => `${m(id)}:counters:${source}`,
    cursor: (id, source, mode) => `${m(id)}:cursor:${mode}:${source}`,
    recorded: (id) => `${m(id)}:recorded`,
    splits: (id) => `${m(id)}:splits`,
    carried: (id) => `${m(id)}:carried`,
    failures: (id) => `${m(id)}:failures`,
    acks: (id) => `${m(id)}:acks`,
    audit: (id) => `${m(id)}:audit`,
    auditHead: (id) => `${m(id)}:audit-head`,
    lease: (id) => `${m(id)}:lease`,
    samples: (id) => `${m(id)}:samples`,
    usage: (id) => `${m(id)}:usage`,
    limiter: (account, region) => `${p}limiter:${account}:${region}`,
    budgetOverride: () => `${p}budget-override`,
    intakeDedupe: (hash) => `${p}intake:${hash}`,
    intakeConfig: () => `${p}intake-config`,
    intakeAliases: () => `${p}intake-aliases`,
    intakeAliasKeys: (alias) => `${p}intake-alias-keys:${alias}`,
    intakeEvent: (eventId) => `${p}intake-event:${eventId}`,
    intakeRejected: (messageId) => `${p}intake-rejected:${messageId}`,
    intakeStats: () => `${p}intake-stats`,
    changes: () => `${p}changes`,
    bullPrefix: () => `${p}bull`,
  };
}
