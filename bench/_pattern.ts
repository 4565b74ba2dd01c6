/**
 * Deterministic byte patterns that the load generator sends and verifies, so that every echoed
 * byte is checked: lost, duplicated, reordered or foreign bytes all show as a mismatch.
 *
 * - Messages (64 bytes in the latency workloads) carry the client number and sequence number, so
 *   bytes meant for another session cannot pass as ours.
 * - Streams (bulk) are pseudo-random 32-bit words from a per-stream seed, repeating with a prime
 *   period; checking works a word at a time.
 *
 * ```ts
 * import { fillMessage } from "./_pattern.ts";
 * const msg = new Uint8Array(64);
 * fillMessage(msg, 3, 1);
 * ```
 *
 * @module
 */

/** Fills `buf` with the message number `seq` of client `client`. */
export function fillMessage(buf: Uint8Array, client: number, seq: number): void {
  let x = (Math.imul(client + 1, 0x9e3779b1) ^ Math.imul(seq + 1, 0x85ebca6b)) >>> 0;
  for (let i = 0; i < buf.length; i++) {
    x = (Math.imul(x, 1103515245) + 12345) >>> 0;
    buf[i] = x >>> 24;
  }
}

/** True when the first `a.length` bytes of `b` equal `a`. */
export function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  if (b.length < a.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

/** Words in one period of a stream pattern: a prime, so chunk-sized slips never line up. */
export const PERIOD_WORDS = 65537;

/**
 * The byte pattern of one stream: pseudo-random 32-bit words that repeat every
 * {@linkcode PERIOD_WORDS} words. The table is precomputed once, so the writer sends slices of it
 * without filling buffers, and the verifier compares a word at a time.
 */
export class StreamPattern {
  /** The pattern as words: one period, then enough of the next one for any chunk. */
  readonly words: Int32Array;
  /** The same memory as bytes. */
  readonly bytes: Uint8Array;
  /** The longest slice {@linkcode slice} can give. */
  readonly maxChunk: number;

  /** Builds the pattern for `seed`, for chunks of at most `maxChunk` bytes. */
  constructor(seed: number, maxChunk: number) {
    this.maxChunk = maxChunk;
    const extra = Math.ceil(maxChunk / 4) + 2;
    this.words = new Int32Array(PERIOD_WORDS + extra);
    let x = (seed ^ 0x5bd1e995) >>> 0;
    for (let i = 0; i < PERIOD_WORDS; i++) {
      x ^= x << 13;
      x ^= x >>> 17;
      x ^= x << 5;
      this.words[i] = x;
    }
    for (let i = PERIOD_WORDS; i < this.words.length; i++) {
      this.words[i] = this.words[i - PERIOD_WORDS];
    }
    this.bytes = new Uint8Array(this.words.buffer);
  }

  /**
   * The stream bytes from `pos` (a multiple of 4), `len` (at most `maxChunk`) of them. A view
   * into the table: do not modify it.
   *
   * @throws {RangeError} when `pos` is not a multiple of 4 or `len` is too long.
   */
  slice(pos: number, len: number): Uint8Array {
    if (pos % 4 !== 0 || len > this.maxChunk) {
      throw new RangeError(
        `slice(${pos}, ${len}): position must be a multiple of 4, length <= ${this.maxChunk}`,
      );
    }
    const start = (Math.floor(pos / 4) % PERIOD_WORDS) * 4;
    return this.bytes.subarray(start, start + len);
  }
}

/**
 * Verifies a stream as it arrives in reads of any size. Read into {@linkcode readInto}'s view:
 * it keeps the incoming bytes at the same alignment as their stream position, so the check can
 * compare whole words.
 */
export class StreamVerifier {
  /** Stream bytes verified so far (the position of the next byte). */
  pos = 0;
  /** Reads that carried at least one wrong byte. */
  mismatches = 0;
  readonly #pattern: StreamPattern;
  readonly #bytes: Uint8Array;
  readonly #words: Int32Array;

  /** Creates a verifier of `pattern`; each read is at most `pattern.maxChunk` bytes. */
  constructor(pattern: StreamPattern) {
    this.#pattern = pattern;
    const size = Math.ceil(pattern.maxChunk / 4) * 4 + 4;
    this.#bytes = new Uint8Array(size);
    this.#words = new Int32Array(this.#bytes.buffer);
  }

  /** The buffer to pass to `conn.read` next, at most `limit` bytes long. */
  readInto(limit: number): Uint8Array {
    const a = this.pos & 3;
    return this.#bytes.subarray(a, a + Math.min(limit, this.#pattern.maxChunk));
  }

  /** Checks the `n` bytes that the last read put into the {@linkcode readInto} view. */
  check(n: number): void {
    const a = this.pos & 3;
    const end = a + n;
    // buffer word 0 holds stream word (pos - a) / 4, which is pattern word w0
    const w0 = (Math.floor(this.pos / 4)) % PERIOD_WORDS;
    const got = this.#bytes;
    const want = this.#pattern.bytes;
    const b0 = w0 * 4;
    let ok = true;
    let i = a;
    for (; i < end && (i & 3) !== 0; i++) if (got[i] !== want[b0 + i]) ok = false;
    const gw = this.#words;
    const ww = this.#pattern.words;
    const jEnd = end >>> 2;
    for (let j = i >>> 2; j < jEnd; j++) {
      if (gw[j] !== ww[w0 + j]) {
        ok = false;
        break;
      }
    }
    for (i = Math.max(i, jEnd * 4); i < end; i++) if (got[i] !== want[b0 + i]) ok = false;
    if (!ok) this.mismatches++;
    this.pos += n;
  }
}
