import { randomFillSync } from 'node:crypto';

/*
 * Random version 4 UUIDs as flat strings. `crypto.randomUUID()` builds its result by
 * concatenation, which V8 keeps as a rope of ~300 bytes. Every KMS call keeps two ids (request
 * and event) in the usage log, so ropes there cost memory and, on every request, the garbage
 * collector's time copying them. Writing the 36 characters into a buffer gives one flat string.
 */
const UUIDS_PER_FILL = 128;
const pool = Buffer.alloc(16 * UUIDS_PER_FILL);
let nextInPool = UUIDS_PER_FILL;
const text = Buffer.alloc(36);
const HEX = Buffer.from('0123456789abcdef', 'latin1');

/** A random (version 4) UUID, formatted like `crypto.randomUUID()`. */
export function randomId(): string {
  if (nextInPool === UUIDS_PER_FILL) {
    randomFillSync(pool);
    nextInPool = 0;
  }
  const off = 16 * nextInPool++;
  pool[off + 6] = ((pool[off + 6] as number) & 0x0f) | 0x40; // version 4
  pool[off + 8] = ((pool[off + 8] as number) & 0x3f) | 0x80; // RFC 4122 variant
  let p = 0;
  for (let i = 0; i < 16; i++) {
    if (i === 4 || i === 6 || i === 8 || i === 10) text[p++] = 0x2d; // '-'
    const b = pool[off + i] as number;
    text[p++] = HEX[b >> 4] as number;
    text[p++] = HEX[b & 0x0f] as number;
  }
  return text.toString('latin1');
}

/**
 * Hands out one shared instance of equal strings. Long-lived records that repeat a few values
 * (caller, user agent, Region) then hold one copy instead of one per record; a string cut from a
 * request header would otherwise also keep the whole header alive. Bounded: when it is full it
 * starts over, which only costs some sharing.
 */
export class StringInterner {
  private readonly seen = new Map<string, string>();

  constructor(private readonly max = 1024) {}

  intern(s: string): string {
    const known = this.seen.get(s);
    if (known !== undefined) return known;
    if (this.seen.size >= this.max) this.seen.clear();
    this.seen.set(s, s);
    return s;
  }
}
