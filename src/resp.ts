/**
 * Follows the Redis protocol (RESP2 and RESP3) in both directions of one session, so the pool
 * can tell when a connection's exchange is provably complete: every request answered, no
 * message half-way, and no command that left per-connection state behind (`--protocol redis`).
 *
 * The tracker finds boundaries only. It keeps a few numbers (the length being read, the counts
 * of the open aggregates) and at most the first 32 bytes of a request's first two arguments, to
 * name the command; bulk data is skipped by its length, so a chunk costs a loop over its header
 * bytes and a jump over its data.
 *
 * ```ts
 * import { RedisTracker } from "./resp.ts";
 * import { isComplete } from "./framing.ts";
 *
 * const bytes = (text: string) => new TextEncoder().encode(text);
 * const tracker = new RedisTracker();
 * tracker.onClientBytes(bytes("*2\r\n$3\r\nGET\r\n$1\r\nk\r\n"));
 * tracker.onServerBytes(bytes("$5\r\nhel"));
 * console.log(tracker.owed, tracker.partialResponse); // 1 true
 * tracker.onServerBytes(bytes("lo\r\n"));
 * console.log(isComplete(tracker)); // true
 * tracker.onClientBytes(bytes("select 1\r\n"));
 * console.log(tracker.unfit); // { kind: "state", reason: "SELECT changes per-connection state" }
 * ```
 *
 * @module
 */

import type { ExchangeTracker, Unfit } from "./framing.ts";

const encoder = new TextEncoder();

/**
 * The bytes of a `RESET` request, `*1\r\n$5\r\nRESET\r\n`, which the proxy may send on a
 * connection that is only `state`-unfit, to pool it after {@link REDIS_RESET_REPLY}. Shared: do
 * not modify.
 */
export const REDIS_RESET_COMMAND: Uint8Array = encoder.encode("*1\r\n$5\r\nRESET\r\n");

/** The bytes of Redis's reply to {@link REDIS_RESET_COMMAND}, `+RESET\r\n`. Shared: do not modify. */
export const REDIS_RESET_REPLY: Uint8Array = encoder.encode("+RESET\r\n");

// Bytes.
const TAB = 0x09, LF = 0x0a, CR = 0x0d, SPACE = 0x20;
const BANG = 0x21, DQUOTE = 0x22, HASH = 0x23, DOLLAR = 0x24, PERCENT = 0x25, SQUOTE = 0x27;
const LPAREN = 0x28, STAR = 0x2a, PLUS = 0x2b, COMMA = 0x2c, MINUS = 0x2d, DOT = 0x2e;
const COLON = 0x3a, SEMICOLON = 0x3b, EQUALS = 0x3d, GT = 0x3e, QUESTION = 0x3f;
const BACKSLASH = 0x5c, UNDERSCORE = 0x5f, PIPE = 0x7c, TILDE = 0x7e;

/** Longest length or count accepted; anything above is treated as invalid bytes. */
const MAX_LENGTH = Number.MAX_SAFE_INTEGER;
/** Deepest nesting of reply aggregates followed; deeper is `broken`. */
const MAX_DEPTH = 1024;
/** Longest inline request line Redis waits for (`PROTO_INLINE_MAX_SIZE`); longer is `broken`. */
const MAX_INLINE = 64 * 1024;
/** Bytes kept of each of the first two arguments of a request, to name the command. */
const NAME_BYTES = 32;
/** Transaction commands (`MULTI`, `EXEC`, `WATCH`, ...) followed while awaiting their replies. */
const MAX_PENDING = 1024;

// ---------------------------------------------------------------------------------------------
// Length lines.

const L_FIRST = 0, L_AFTER_MINUS = 1, L_DIGITS = 2, L_NEED_CR = 3, L_NEED_LF = 4;
const MORE = 0, DONE = 1, INVALID = 2;

/**
 * Reads the number of one length line (`3\r\n`, `-1\r\n`, `?\r\n` after the type byte), a byte
 * at a time, keeping only its value. Numbers are written as Redis's `string2ll` reads them: no
 * sign but `-`, no leading zero, nothing around the digits.
 */
class LengthLine {
  /** The magnitude read. */
  value = 0;
  /** Whether the number had a `-`. */
  negative = false;
  /** Whether the line was `?` (a streamed string or aggregate). */
  streamed = false;
  /** Why the line is invalid, once {@link feed} returned `INVALID`. */
  problem = "";
  #step = L_FIRST;
  #allowStreamed = false;

  /** Starts a new line; `?` is accepted only with `allowStreamed`. */
  begin(allowStreamed: boolean): void {
    this.value = 0;
    this.negative = false;
    this.streamed = false;
    this.#step = L_FIRST;
    this.#allowStreamed = allowStreamed;
  }

  /** Takes the next byte: `MORE` (needs more), `DONE` (the line ended) or `INVALID`. */
  feed(b: number): number {
    switch (this.#step) {
      case L_FIRST:
        if (b > 0x30 && b <= 0x39) {
          this.value = b - 0x30;
          this.#step = L_DIGITS;
          return MORE;
        }
        if (b === 0x30) {
          this.#step = L_NEED_CR;
          return MORE;
        }
        if (b === MINUS) {
          this.negative = true;
          this.#step = L_AFTER_MINUS;
          return MORE;
        }
        if (b === QUESTION && this.#allowStreamed) {
          this.streamed = true;
          this.#step = L_NEED_CR;
          return MORE;
        }
        return this.#invalid("a length that is not a number");
      case L_AFTER_MINUS:
        if (b > 0x30 && b <= 0x39) {
          this.value = b - 0x30;
          this.#step = L_DIGITS;
          return MORE;
        }
        return this.#invalid("a length that is not a number");
      case L_DIGITS:
        if (b >= 0x30 && b <= 0x39) {
          this.value = this.value * 10 + (b - 0x30);
          return this.value > MAX_LENGTH ? this.#invalid("a length over 2^53 - 1") : MORE;
        }
        if (b === CR) {
          this.#step = L_NEED_LF;
          return MORE;
        }
        return this.#invalid("a length that is not a number");
      case L_NEED_CR:
        if (b === CR) {
          this.#step = L_NEED_LF;
          return MORE;
        }
        return this.#invalid("a length that is not a number");
      default:
        return b === LF ? DONE : this.#invalid("a length line not ended by CRLF");
    }
  }

  #invalid(problem: string): number {
    this.problem = problem;
    return INVALID;
  }
}

// ---------------------------------------------------------------------------------------------
// Commands that matter to the pool.

/** What a command does to the connection. */
const C_STATE = 0, C_BROKEN = 1, C_SUBCOMMAND = 2, C_MULTI = 3, C_EXEC = 4, C_WATCH = 5;
const C_UNWATCH = 6, C_RESET = 7, C_BLOCKING = 8;

interface Command {
  /** The name in upper case ASCII. */
  readonly name: Uint8Array;
  readonly effect: number;
  readonly unfit: Unfit | undefined;
  /** With {@link C_SUBCOMMAND}: what its subcommands (argument 1) do. */
  readonly subcommands?: CommandTable;
}

/** Commands by the length of their name, for a lookup that decodes nothing. */
type CommandTable = readonly (readonly Command[])[];

function commandTable(
  entries: readonly [string, number, Unfit?, CommandTable?][],
): CommandTable {
  const table: Command[][] = [];
  for (const [name, effect, unfit, subcommands] of entries) {
    const bytes = encoder.encode(name);
    while (table.length <= bytes.length) table.push([]);
    table[bytes.length].push({ name: bytes, effect, unfit, subcommands });
  }
  return table;
}

function state(name: string): Unfit {
  return Object.freeze({ kind: "state", reason: `${name} changes per-connection state` });
}

/** State that `RESET` does not clear in every Redis version: the connection is closed. */
function stateResetKeeps(name: string, clearedFrom: string): Unfit {
  return Object.freeze({
    kind: "state",
    reason: `${name} changes per-connection state, which RESET clears only from ${clearedFrom} on`,
    resetClears: false,
  });
}

function broken(reason: string): Unfit {
  return Object.freeze({ kind: "broken", reason });
}

const PUBSUB = "pub/sub replies cannot be counted";

const CLIENT_SUBCOMMANDS = commandTable([
  ["SETNAME", C_STATE, state("CLIENT SETNAME")],
  ["TRACKING", C_STATE, state("CLIENT TRACKING")],
  // Redis 7.0's RESET leaves NO-EVICT on (7.2 clears both); NO-TOUCH came with 7.2, but a
  // server that knows it without clearing it on RESET (a fork) must not pass it on either.
  ["NO-EVICT", C_STATE, stateResetKeeps("CLIENT NO-EVICT", "Redis 7.2")],
  ["NO-TOUCH", C_STATE, stateResetKeeps("CLIENT NO-TOUCH", "Redis 7.2")],
  ["REPLY", C_BROKEN, broken("CLIENT REPLY: replies may be switched off or skipped")],
]);

// SCRIPT DEBUG starts a Lua debugging session on the connection (YES forks, SYNC blocks the
// server) that takes over what later requests get back, and RESET does not end it.
const SCRIPT_SUBCOMMANDS = commandTable([
  ["DEBUG", C_BROKEN, broken("SCRIPT DEBUG: a Lua debugging session takes over the connection")],
]);

const COMMANDS = commandTable([
  ["SELECT", C_STATE, state("SELECT")],
  ["AUTH", C_STATE, state("AUTH")],
  ["HELLO", C_STATE, state("HELLO")],
  ["READONLY", C_STATE, state("READONLY")],
  ["READWRITE", C_STATE, state("READWRITE")],
  ["ASKING", C_STATE, state("ASKING")],
  ["RESET", C_RESET, state("RESET")],
  ["MULTI", C_MULTI],
  ["EXEC", C_EXEC],
  ["DISCARD", C_EXEC],
  ["WATCH", C_WATCH],
  ["UNWATCH", C_UNWATCH],
  ["CLIENT", C_SUBCOMMAND, undefined, CLIENT_SUBCOMMANDS],
  ["SCRIPT", C_SUBCOMMAND, undefined, SCRIPT_SUBCOMMANDS],
  ["SUBSCRIBE", C_BROKEN, broken(`SUBSCRIBE: ${PUBSUB}`)],
  ["PSUBSCRIBE", C_BROKEN, broken(`PSUBSCRIBE: ${PUBSUB}`)],
  ["SSUBSCRIBE", C_BROKEN, broken(`SSUBSCRIBE: ${PUBSUB}`)],
  ["UNSUBSCRIBE", C_BROKEN, broken(`UNSUBSCRIBE: ${PUBSUB}`)],
  ["PUNSUBSCRIBE", C_BROKEN, broken(`PUNSUBSCRIBE: ${PUBSUB}`)],
  ["SUNSUBSCRIBE", C_BROKEN, broken(`SUNSUBSCRIBE: ${PUBSUB}`)],
  ["MONITOR", C_BROKEN, broken("MONITOR: its stream of replies cannot be counted")],
  ["QUIT", C_BROKEN, broken("QUIT: the server closes the connection")],
  ["SYNC", C_BROKEN, broken("SYNC: a replication stream cannot be followed")],
  ["PSYNC", C_BROKEN, broken("PSYNC: a replication stream cannot be followed")],
  ["REPLCONF", C_BROKEN, broken("REPLCONF: replication commands may get no reply")],
  // Blocking commands that take what they wait for: answered after their client left, they
  // would take an item for nobody (Redis itself ends them when their client closes).
  // XREADGROUP claims entries with or without BLOCK; without, its answer comes at once anyway.
  ["BLPOP", C_BLOCKING],
  ["BRPOP", C_BLOCKING],
  ["BRPOPLPUSH", C_BLOCKING],
  ["BLMOVE", C_BLOCKING],
  ["BLMPOP", C_BLOCKING],
  ["BZPOPMIN", C_BLOCKING],
  ["BZPOPMAX", C_BLOCKING],
  ["BZMPOP", C_BLOCKING],
  ["XREADGROUP", C_BLOCKING],
]);

/** The command in `table` named by `names[offset, offset + length)` (upper case), if any. */
function lookup(
  table: CommandTable,
  names: Uint8Array,
  offset: number,
  length: number,
): Command | undefined {
  if (length >= table.length) return undefined;
  const bucket = table[length];
  next: for (let c = 0; c < bucket.length; c++) {
    const name = bucket[c].name;
    for (let k = 0; k < length; k++) if (name[k] !== names[offset + k]) continue next;
    return bucket[c];
  }
  return undefined;
}

function upper(b: number): number {
  return b >= 0x61 && b <= 0x7a ? b - 0x20 : b;
}

/** `isspace` in the C locale, as Redis's `sdssplitargs` uses it. */
function isSpace(b: number): boolean {
  return b === SPACE || (b >= TAB && b <= CR);
}

function hexValue(b: number): number {
  if (b >= 0x30 && b <= 0x39) return b - 0x30;
  const l = b | 0x20;
  return l >= 0x61 && l <= 0x66 ? l - 0x61 + 10 : -1;
}

/** The byte a `\<b>` escape in a double-quoted inline argument stands for. */
function unescape(b: number): number {
  switch (b) {
    case 0x6e:
      return LF; // \n
    case 0x72:
      return CR; // \r
    case 0x74:
      return TAB; // \t
    case 0x62:
      return 0x08; // \b
    case 0x61:
      return 0x07; // \a
    default:
      return b;
  }
}

// Shared by every tracker, so frozen.
const OPEN_MULTI: Unfit = Object.freeze({
  kind: "state",
  reason: "MULTI without EXEC or DISCARD answered",
});
const OPEN_WATCH: Unfit = Object.freeze({
  kind: "state",
  reason: "WATCH without EXEC, DISCARD or UNWATCH answered",
});
const TOO_MANY_PENDING: Unfit = Object.freeze({
  kind: "state",
  reason: `more than ${MAX_PENDING} MULTI, EXEC, DISCARD, WATCH, UNWATCH or RESET awaiting replies`,
});
const NO_REQUEST: Unfit = broken("reply with no request");

// ---------------------------------------------------------------------------------------------
// The tracker.

// Request parser steps.
const R_START = 0, R_COUNT = 1, R_DOLLAR = 2, R_LENGTH = 3, R_DATA = 4, R_DATA_CR = 5;
const R_DATA_LF = 6, R_INLINE = 7;

// Inline tokenizer steps (Redis's `sdssplitargs`).
const K_BETWEEN = 0, K_BARE = 1, K_DQ = 2, K_DQ_ESCAPE = 3, K_DQ_X = 4, K_DQ_XH = 5, K_SQ = 6;
const K_SQ_ESCAPE = 7, K_CLOSED = 8;

// Reply parser steps.
const P_TYPE = 0, P_LINE = 1, P_INT_SIGN = 2, P_INT_DIGIT = 3, P_INT_DIGITS = 4, P_BOOL = 5;
const P_CR = 6, P_LF = 7, P_LENGTH = 8, P_DATA = 9, P_PART = 10;

// What a reply line's CRLF ends.
const THEN_VALUE = 0, THEN_STREAMED_AGGREGATE = 1, THEN_PART = 2;

// Counts of streamed aggregates on the stack (fixed counts are positive).
const STREAMED = -1, STREAMED_MAP_KEY = -2, STREAMED_MAP_VALUE = -3;

// The kind of the top-level reply being read.
const TOP_UNKNOWN = 0, TOP_REPLY = 1, TOP_PUSH = 2;

/**
 * Follows one session's Redis exchange, requests and replies, for the pool; see the module
 * documentation. Create one per session, feed it every chunk in each direction in order, and
 * read {@link owed}, {@link partialRequest}, {@link partialResponse} and {@link unfit}.
 *
 * Requests are RESP arrays of bulk strings or inline commands (split like Redis splits them,
 * quotes included); `*0`, `*-1` and blank inline lines get no reply and count for nothing.
 * Replies are any RESP2 or RESP3 value: an attribute (`|`) is part of the reply it precedes,
 * and a push (`>`) settles nothing. `unfit` is `state` for a command that leaves per-connection
 * state (`SELECT`, `AUTH`, `HELLO`, `CLIENT SETNAME`/`TRACKING`/`NO-EVICT`/`NO-TOUCH`,
 * `READONLY`, `READWRITE`, `ASKING`, `RESET`, and `MULTI` or `WATCH` while open; for
 * `NO-EVICT` and `NO-TOUCH` with `resetClears: false`, as Redis 7.0's `RESET` keeps them), and
 * `broken` for invalid bytes in either direction, a reply with no request, and commands whose
 * replies cannot be counted (the pub/sub subscriptions, `MONITOR`, `CLIENT REPLY`, `QUIT`,
 * `SYNC`, `PSYNC`, `REPLCONF`). Once `broken`, both directions stop being read and the counts
 * stay as they were.
 *
 * @example
 * ```ts
 * import { RedisTracker } from "./resp.ts";
 *
 * const bytes = (text: string) => new TextEncoder().encode(text);
 * const tracker = new RedisTracker();
 * tracker.onClientBytes(bytes("MULTI\r\nINCR n\r\nEX"));
 * tracker.onServerBytes(bytes("+OK\r\n+QUEUED\r\n"));
 * console.log(tracker.owed, tracker.partialRequest, tracker.unfit?.reason);
 * // 0 true "MULTI without EXEC or DISCARD answered"
 * tracker.onClientBytes(bytes("EC\r\n"));
 * tracker.onServerBytes(bytes("*1\r\n:1\r\n"));
 * console.log(tracker.unfit); // undefined
 * ```
 */
export class RedisTracker implements ExchangeTracker {
  // Both directions.
  #requests = 0;
  #replies = 0;
  /** The number of the last blocking request (`BLPOP`, ...); replies come in order. */
  #lastBlockingAt = 0;
  #sticky: Unfit | undefined;
  #broken = false;

  // Requests.
  #rq = R_START;
  readonly #rqLength = new LengthLine();
  #argCount = 0;
  #argIndex = 0;
  #dataLeft = 0;
  #dataPos = 0;
  /** The first {@link NAME_BYTES} bytes of argument 0, then of argument 1, in upper case. */
  #names: Uint8Array | undefined;
  #nameLength0 = 0;
  #nameLength1 = 0;
  #tok = K_BETWEEN;
  #hexDigit = 0;
  #lineLength = 0;

  // Replies.
  #rp = P_TYPE;
  readonly #rpLength = new LengthLine();
  #header = 0;
  #rpDataLeft = 0;
  #then = THEN_VALUE;
  #counts: number[] = [];
  #attribute: boolean[] = [];
  #depth = 0;
  #inReply = false;
  #top = TOP_UNKNOWN;
  #topIsError = false;

  // MULTI and WATCH: the server's state as its replies confirm it, and the requests that may
  // change it, awaiting their replies (by request number).
  #multiOpen = false;
  #watchOpen = false;
  #pendingAt: number[] = [];
  #pendingEffect: number[] = [];
  #pendingHead = 0;
  #pendingMulti = 0;
  #pendingWatch = 0;

  /**
   * Entries the tracker holds for MULTI, EXEC, DISCARD, WATCH, UNWATCH and RESET: those awaiting
   * a reply and settled ones not yet dropped. Bounded (about twice {@link MAX_PENDING}) however
   * long the session; for tests.
   */
  get pendingEntries(): number {
    return this.#pendingAt.length;
  }

  /** Requests complete whose complete reply has not arrived. */
  get owed(): number {
    return this.#requests - this.#replies;
  }

  /** See {@link ExchangeTracker.settleable}: every Redis request gets exactly one reply. */
  get settleable(): boolean {
    return true;
  }

  /**
   * See {@link ExchangeTracker.drainable}: false while a blocking command that takes what it
   * waits for (`BLPOP`, `BRPOP`, `BRPOPLPUSH`, `BLMOVE`, `BLMPOP`, `BZPOPMIN`, `BZPOPMAX`,
   * `BZMPOP`, `XREADGROUP`) is owed its reply.
   */
  get drainable(): boolean {
    return this.#replies >= this.#lastBlockingAt;
  }

  /** Whether the client sent part of a request (even of a blank inline line). */
  get partialRequest(): boolean {
    return this.#rq !== R_START;
  }

  /** Whether part of a top-level reply or push arrived (an attribute counts as its reply's). */
  get partialResponse(): boolean {
    return this.#inReply;
  }

  /**
   * Why the connection may not go back as it is, if it may not. A `broken` reason wins; then a
   * lasting `state` reason (the first); then an open `MULTI` (from its request until a reply
   * other than an error to `EXEC`, `DISCARD` or `RESET`), then an open `WATCH` (likewise, or
   * `UNWATCH`).
   */
  get unfit(): Unfit | undefined {
    if (this.#sticky !== undefined) return this.#sticky;
    if (this.#multiOpen || this.#pendingMulti > 0) return OPEN_MULTI;
    if (this.#watchOpen || this.#pendingWatch > 0) return OPEN_WATCH;
    return undefined;
  }

  /** Client bytes, as forwarded upstream; see the class documentation. Never keeps `chunk`. */
  onClientBytes(chunk: Uint8Array): void {
    const n = chunk.length;
    let i = 0;
    while (i < n && !this.#broken) {
      switch (this.#rq) {
        case R_START:
          if (chunk[i] === STAR) {
            i++;
            this.#rqLength.begin(false);
            this.#rq = R_COUNT;
          } else {
            this.#argCount = 0;
            this.#nameLength0 = 0;
            this.#nameLength1 = 0;
            this.#tok = K_BETWEEN;
            this.#lineLength = 0;
            this.#rq = R_INLINE;
          }
          break;
        case R_COUNT:
        case R_LENGTH: {
          const read = this.#rqLength.feed(chunk[i++]);
          if (read === MORE) break;
          if (read === INVALID) this.#mark(broken(`invalid request: ${this.#rqLength.problem}`));
          else if (this.#rq === R_COUNT) this.#countRead();
          else this.#lengthRead();
          break;
        }
        case R_DOLLAR: {
          const b = chunk[i++];
          if (b === DOLLAR) {
            this.#rqLength.begin(false);
            this.#rq = R_LENGTH;
          } else {
            this.#mark(broken(`invalid request: expected '$', got ${hex(b)}`));
          }
          break;
        }
        case R_DATA: {
          const take = Math.min(this.#dataLeft, n - i);
          if (this.#argIndex < 2 && this.#dataPos < NAME_BYTES) {
            const names = this.#names ??= new Uint8Array(2 * NAME_BYTES);
            const to = this.#argIndex * NAME_BYTES + this.#dataPos;
            const count = Math.min(take, NAME_BYTES - this.#dataPos);
            for (let k = 0; k < count; k++) names[to + k] = upper(chunk[i + k]);
          }
          i += take;
          this.#dataPos += take;
          this.#dataLeft -= take;
          if (this.#dataLeft === 0) this.#rq = R_DATA_CR;
          break;
        }
        case R_DATA_CR:
          if (chunk[i++] === CR) this.#rq = R_DATA_LF;
          else this.#mark(broken("invalid request: bulk data not followed by CRLF"));
          break;
        case R_DATA_LF:
          if (chunk[i++] !== LF) {
            this.#mark(broken("invalid request: bulk data not followed by CRLF"));
          } else if (++this.#argIndex === this.#argCount) {
            this.#requestRead(this.#argCount);
          } else {
            this.#rq = R_DOLLAR;
          }
          break;
        default: // R_INLINE
          i = this.#inline(chunk, i);
      }
    }
  }

  /**
   * Upstream bytes, as relayed to the client or drained; see the class documentation. Never
   * keeps `chunk`.
   */
  onServerBytes(chunk: Uint8Array): void {
    const n = chunk.length;
    let i = 0;
    while (i < n && !this.#broken) {
      switch (this.#rp) {
        case P_TYPE:
          this.#typeRead(chunk[i++]);
          break;
        case P_LINE: {
          const cr = chunk.indexOf(CR, i);
          if (cr < 0) {
            i = n;
          } else {
            i = cr + 1;
            this.#then = THEN_VALUE;
            this.#rp = P_LF;
          }
          break;
        }
        case P_INT_SIGN: {
          const b = chunk[i++];
          if (b === MINUS || b === PLUS) this.#rp = P_INT_DIGIT;
          else if (b >= 0x30 && b <= 0x39) this.#rp = P_INT_DIGITS;
          else this.#mark(broken(`invalid reply: a number with ${hex(b)}`));
          break;
        }
        case P_INT_DIGIT: {
          const b = chunk[i++];
          if (b >= 0x30 && b <= 0x39) this.#rp = P_INT_DIGITS;
          else this.#mark(broken(`invalid reply: a number with ${hex(b)}`));
          break;
        }
        case P_INT_DIGITS: {
          const b = chunk[i++];
          if (b === CR) {
            this.#then = THEN_VALUE;
            this.#rp = P_LF;
          } else if (b < 0x30 || b > 0x39) {
            this.#mark(broken(`invalid reply: a number with ${hex(b)}`));
          }
          break;
        }
        case P_BOOL: {
          const b = chunk[i++];
          if (b === 0x74 || b === 0x66) { // t, f
            this.#then = THEN_VALUE;
            this.#rp = P_CR;
          } else {
            this.#mark(broken(`invalid reply: a boolean ${hex(b)}`));
          }
          break;
        }
        case P_LENGTH: {
          const read = this.#rpLength.feed(chunk[i++]);
          if (read === MORE) break;
          if (read === INVALID) this.#mark(broken(`invalid reply: ${this.#rpLength.problem}`));
          else this.#headerRead();
          break;
        }
        case P_DATA: {
          const take = Math.min(this.#rpDataLeft, n - i);
          i += take;
          this.#rpDataLeft -= take;
          if (this.#rpDataLeft === 0) this.#rp = P_CR;
          break;
        }
        case P_CR:
          if (chunk[i++] === CR) this.#rp = P_LF;
          else this.#mark(broken("invalid reply: a line or data not ended by CRLF"));
          break;
        case P_LF:
          if (chunk[i++] === LF) this.#lineRead();
          else this.#mark(broken("invalid reply: a line or data not ended by CRLF"));
          break;
        default: { // P_PART
          const b = chunk[i++];
          if (b === SEMICOLON) {
            this.#rpLength.begin(false);
            this.#header = SEMICOLON;
            this.#rp = P_LENGTH;
          } else {
            this.#mark(broken(`invalid reply: expected ';' in a streamed string, got ${hex(b)}`));
          }
        }
      }
    }
  }

  // -------------------------------------------------------------------------------------------
  // Requests.

  #countRead(): void {
    const length = this.#rqLength;
    if (length.negative && length.value !== 1) {
      this.#mark(broken("invalid request: a negative array length"));
    } else if (length.negative || length.value === 0) {
      this.#rq = R_START; // Redis ignores `*0` and `*-1`, without a reply.
    } else {
      this.#argCount = length.value;
      this.#argIndex = 0;
      this.#nameLength0 = 0;
      this.#nameLength1 = 0;
      this.#rq = R_DOLLAR;
    }
  }

  #lengthRead(): void {
    const length = this.#rqLength;
    if (length.negative) {
      this.#mark(broken("invalid request: a negative bulk length"));
      return;
    }
    if (this.#argIndex === 0) this.#nameLength0 = length.value;
    else if (this.#argIndex === 1) this.#nameLength1 = length.value;
    this.#dataLeft = length.value;
    this.#dataPos = 0;
    this.#rq = length.value === 0 ? R_DATA_CR : R_DATA;
  }

  /** Reads inline request bytes from `chunk[i]` up to the line's end; returns the next index. */
  #inline(chunk: Uint8Array, i: number): number {
    const n = chunk.length;
    while (i < n) {
      const b = chunk[i++];
      if (b === LF) {
        if (this.#tok !== K_BETWEEN && this.#tok !== K_BARE && this.#tok !== K_CLOSED) {
          this.#mark(broken("invalid request: unbalanced quotes in an inline request"));
        } else if (this.#argCount > 0) {
          this.#requestRead(this.#argCount);
        } else {
          this.#rq = R_START; // A blank line: Redis ignores it, without a reply.
        }
        return i;
      }
      if (b === 0) {
        // Redis looks for the end of an inline line with strchr, which stops at a NUL.
        this.#mark(broken("invalid request: a NUL byte in an inline request"));
        return i;
      }
      if (++this.#lineLength > MAX_INLINE) {
        this.#mark(broken(`invalid request: an inline request over ${MAX_INLINE} bytes`));
        return i;
      }
      if (!this.#inlineByte(b)) {
        this.#mark(broken("invalid request: a closing quote not followed by a space"));
        return i;
      }
    }
    return i;
  }

  /** One byte of an inline line (not its LF), split into arguments as `sdssplitargs` does. */
  #inlineByte(b: number): boolean {
    for (;;) {
      switch (this.#tok) {
        case K_BETWEEN:
          if (isSpace(b)) return true;
          this.#argCount++;
          this.#tok = K_BARE;
          continue;
        case K_BARE:
          if (b === SPACE || b === CR || b === TAB) this.#tok = K_BETWEEN;
          else if (b === DQUOTE) this.#tok = K_DQ;
          else if (b === SQUOTE) this.#tok = K_SQ;
          else this.#argByte(b);
          return true;
        case K_DQ:
          if (b === BACKSLASH) this.#tok = K_DQ_ESCAPE;
          else if (b === DQUOTE) this.#tok = K_CLOSED;
          else this.#argByte(b);
          return true;
        case K_DQ_ESCAPE:
          if (b === 0x78) { // \x, if two hex digits follow
            this.#tok = K_DQ_X;
          } else {
            this.#argByte(unescape(b));
            this.#tok = K_DQ;
          }
          return true;
        case K_DQ_X:
          if (hexValue(b) >= 0) {
            this.#hexDigit = b;
            this.#tok = K_DQ_XH;
            return true;
          }
          this.#argByte(0x78);
          this.#tok = K_DQ;
          continue;
        case K_DQ_XH:
          this.#tok = K_DQ;
          if (hexValue(b) >= 0) {
            this.#argByte(hexValue(this.#hexDigit) * 16 + hexValue(b));
            return true;
          }
          this.#argByte(0x78);
          this.#argByte(this.#hexDigit);
          continue;
        case K_SQ:
          if (b === BACKSLASH) this.#tok = K_SQ_ESCAPE;
          else if (b === SQUOTE) this.#tok = K_CLOSED;
          else this.#argByte(b);
          return true;
        case K_SQ_ESCAPE:
          this.#tok = K_SQ;
          if (b === SQUOTE) {
            this.#argByte(SQUOTE);
            return true;
          }
          this.#argByte(BACKSLASH);
          continue;
        default: // K_CLOSED
          if (!isSpace(b)) return false;
          this.#tok = K_BETWEEN;
          return true;
      }
    }
  }

  /** One byte of the current inline argument: kept if it may name the command. */
  #argByte(b: number): void {
    if (this.#argCount === 1) {
      if (this.#nameLength0 < NAME_BYTES) {
        (this.#names ??= new Uint8Array(2 * NAME_BYTES))[this.#nameLength0] = upper(b);
      }
      this.#nameLength0++;
    } else if (this.#argCount === 2) {
      if (this.#nameLength1 < NAME_BYTES) {
        (this.#names ??= new Uint8Array(2 * NAME_BYTES))[NAME_BYTES + this.#nameLength1] = upper(b);
      }
      this.#nameLength1++;
    }
  }

  /** A complete request of `argc` arguments, its name in {@link #names}. */
  #requestRead(argc: number): void {
    this.#rq = R_START;
    const at = ++this.#requests;
    const names = this.#names;
    if (names === undefined) return;
    const command = lookup(COMMANDS, names, 0, this.#nameLength0);
    if (command === undefined) return;
    switch (command.effect) {
      case C_STATE:
      case C_BROKEN:
        this.#mark(command.unfit as Unfit);
        return;
      case C_SUBCOMMAND: {
        if (argc < 2) return;
        const table = command.subcommands as CommandTable;
        const sub = lookup(table, names, NAME_BYTES, this.#nameLength1);
        if (sub !== undefined) this.#mark(sub.unfit as Unfit);
        return;
      }
      case C_RESET:
        this.#mark(command.unfit as Unfit);
        this.#await(at, C_RESET);
        return;
      case C_BLOCKING:
        this.#lastBlockingAt = at;
        return;
      default: // MULTI, EXEC or DISCARD, WATCH, UNWATCH
        this.#await(at, command.effect);
    }
  }

  /** Notes that request number `at` may change the MULTI or WATCH state once answered. */
  #await(at: number, effect: number): void {
    if (this.#pendingAt.length - this.#pendingHead >= MAX_PENDING) {
      this.#mark(TOO_MANY_PENDING);
      return;
    }
    this.#pendingAt.push(at);
    this.#pendingEffect.push(effect);
    if (effect === C_MULTI) this.#pendingMulti++;
    else if (effect === C_WATCH) this.#pendingWatch++;
  }

  // -------------------------------------------------------------------------------------------
  // Replies.

  #typeRead(b: number): void {
    if (this.#depth === 0) this.#inReply = true;
    let next: number;
    switch (b) {
      case PLUS:
      case MINUS:
      case COMMA:
        next = P_LINE;
        break;
      case COLON:
      case LPAREN:
        next = P_INT_SIGN;
        break;
      case UNDERSCORE:
        this.#then = THEN_VALUE;
        next = P_CR;
        break;
      case HASH:
        next = P_BOOL;
        break;
      case DOLLAR:
      case STAR:
      case PERCENT:
      case TILDE:
        this.#rpLength.begin(true);
        next = P_LENGTH;
        break;
      case BANG:
      case EQUALS:
      case PIPE:
      case GT:
        this.#rpLength.begin(false);
        next = P_LENGTH;
        break;
      case DOT: {
        const top = this.#depth - 1;
        if (
          top < 0 || !(this.#counts[top] === STREAMED || this.#counts[top] === STREAMED_MAP_KEY)
        ) {
          this.#mark(broken("invalid reply: '.' outside a streamed aggregate"));
          return;
        }
        this.#then = THEN_STREAMED_AGGREGATE;
        this.#rp = P_CR;
        return;
      }
      default:
        this.#mark(broken(`invalid reply: type byte ${hex(b)}`));
        return;
    }
    this.#header = b;
    this.#rp = next;
    if (this.#depth > 0 || this.#top !== TOP_UNKNOWN || b === PIPE) return;
    if (b === GT) {
      this.#top = TOP_PUSH;
    } else if (this.#requests === this.#replies) {
      this.#mark(NO_REQUEST);
    } else {
      this.#top = TOP_REPLY;
      this.#topIsError = b === MINUS || b === BANG;
    }
  }

  /** The length line of a `$ ! = * % ~ | >` header, or of a streamed string's `;` part. */
  #headerRead(): void {
    const length = this.#rpLength;
    const h = this.#header;
    this.#rp = P_TYPE;
    if (length.negative) {
      if (length.value === 1 && (h === DOLLAR || h === STAR)) this.#valueRead(); // null
      else this.#mark(broken("invalid reply: a negative length"));
      return;
    }
    switch (h) {
      case SEMICOLON:
        if (length.value === 0) {
          this.#valueRead(); // the end of a streamed string
        } else {
          this.#rpDataLeft = length.value;
          this.#then = THEN_PART;
          this.#rp = P_DATA;
        }
        return;
      case DOLLAR:
      case BANG:
      case EQUALS:
        if (length.streamed) {
          this.#rp = P_PART;
        } else {
          this.#rpDataLeft = length.value;
          this.#then = THEN_VALUE;
          this.#rp = length.value === 0 ? P_CR : P_DATA;
        }
        return;
    }
    // An aggregate.
    if (this.#depth === MAX_DEPTH) {
      this.#mark(broken(`invalid reply: aggregates nested deeper than ${MAX_DEPTH}`));
      return;
    }
    let count: number;
    if (length.streamed) {
      count = h === PERCENT ? STREAMED_MAP_KEY : STREAMED;
    } else {
      count = h === PERCENT || h === PIPE ? 2 * length.value : length.value;
      if (count > MAX_LENGTH) {
        this.#mark(broken("invalid reply: a length over 2^53 - 1"));
        return;
      }
      if (count === 0) {
        if (h !== PIPE) this.#valueRead(); // An empty attribute annotates the next value.
        return;
      }
    }
    this.#counts[this.#depth] = count;
    this.#attribute[this.#depth] = h === PIPE;
    this.#depth++;
  }

  /** The CRLF that ends a simple value, bulk data, a streamed part or a streamed aggregate. */
  #lineRead(): void {
    switch (this.#then) {
      case THEN_VALUE:
        this.#rp = P_TYPE;
        this.#valueRead();
        return;
      case THEN_STREAMED_AGGREGATE:
        this.#rp = P_TYPE;
        this.#depth--;
        this.#valueRead();
        return;
      default: // THEN_PART
        this.#rp = P_PART;
    }
  }

  /** A complete value: counts it in its aggregate, and ends the aggregates it completes. */
  #valueRead(): void {
    while (this.#depth > 0) {
      const top = this.#depth - 1;
      const count = this.#counts[top];
      if (count === STREAMED) return;
      if (count === STREAMED_MAP_KEY) {
        this.#counts[top] = STREAMED_MAP_VALUE;
        return;
      }
      if (count === STREAMED_MAP_VALUE) {
        this.#counts[top] = STREAMED_MAP_KEY;
        return;
      }
      if (count > 1) {
        this.#counts[top] = count - 1;
        return;
      }
      this.#depth = top;
      if (this.#attribute[top]) return; // An attribute annotates the next value; it is none.
    }
    this.#inReply = false;
    const top = this.#top;
    this.#top = TOP_UNKNOWN;
    if (top === TOP_PUSH) return;
    const at = ++this.#replies;
    if (this.#pendingHead < this.#pendingAt.length && this.#pendingAt[this.#pendingHead] === at) {
      this.#settle(this.#pendingEffect[this.#pendingHead++]);
    }
  }

  /** The reply to a MULTI, EXEC, DISCARD, WATCH, UNWATCH or RESET arrived. */
  #settle(effect: number): void {
    if (this.#pendingHead === this.#pendingAt.length) {
      this.#pendingAt.length = 0;
      this.#pendingEffect.length = 0;
      this.#pendingHead = 0;
    } else if (this.#pendingHead > MAX_PENDING && this.#pendingHead * 2 > this.#pendingAt.length) {
      // Some are always awaited (a pipeline that never drains): drop the settled ones, or the
      // lists grow for the whole session (at most MAX_PENDING are awaited at once).
      this.#pendingAt.splice(0, this.#pendingHead);
      this.#pendingEffect.splice(0, this.#pendingHead);
      this.#pendingHead = 0;
    }
    if (effect === C_MULTI) this.#pendingMulti--;
    else if (effect === C_WATCH) this.#pendingWatch--;
    if (this.#topIsError) return; // The command failed: nothing changed (or, for EXEC, maybe).
    switch (effect) {
      case C_MULTI:
        this.#multiOpen = true;
        return;
      case C_WATCH:
        this.#watchOpen = true;
        return;
      case C_UNWATCH:
        this.#watchOpen = false;
        return;
      default: // EXEC, DISCARD, RESET
        this.#multiOpen = false;
        this.#watchOpen = false;
    }
  }

  // -------------------------------------------------------------------------------------------

  /**
   * Keeps the worst reason: `broken` beats `state`, state a reset may leave beats state it
   * clears, and the first of a kind stays.
   */
  #mark(unfit: Unfit): void {
    const sticky = this.#sticky;
    if (unfit.kind === "broken") {
      if (this.#broken) return;
      this.#broken = true;
      this.#sticky = unfit;
    } else if (
      sticky === undefined ||
      (sticky.kind === "state" && sticky.resetClears !== false && unfit.resetClears === false)
    ) {
      this.#sticky = unfit;
    }
  }
}

function hex(b: number): string {
  return `0x${b.toString(16).padStart(2, "0")}`;
}
