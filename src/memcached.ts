/**
 * Follows memcached's text protocol (classic and meta commands) in both directions of one
 * session, so the pool knows when the exchange is provably complete (`--protocol memcached`).
 *
 * ```ts
 * import { isComplete } from "./framing.ts";
 * import { MemcachedTracker } from "./memcached.ts";
 *
 * const bytes = (text: string) => new TextEncoder().encode(text);
 * const tracker = new MemcachedTracker();
 * tracker.onClientBytes(bytes("set k 0 0 5\r\nhello\r\nget k\r\n"));
 * tracker.onServerBytes(bytes("STORED\r\nVALUE k 0 5\r\nhel"));
 * console.log(tracker.owed, tracker.partialResponse); // 1 true
 * tracker.onServerBytes(bytes("lo\r\nEND\r\n"));
 * console.log(isComplete(tracker)); // true
 * ```
 *
 * How it reads the protocol, with memcached 1.6's own parser as the reference:
 * - Request lines end at `\n` (a `\r` before it is dropped) and split at spaces only, as memcached
 *   splits them; the command is the text before the first space, so a line that starts with a
 *   space is an unknown command. Nothing of a line is kept but a few counters and the first 16
 *   bytes of its first two words, so a `get` or `gets` line of any length costs nothing; any other
 *   line longer than 2048 bytes is unfit, as memcached closes such a connection.
 * - Data blocks (after `set`, `add`, `replace`, `append`, `prepend`, `cas`, `ms`, and in `VALUE`
 *   and `VA` replies) are skipped by their length and must end with `\r\n`. A storage line whose
 *   length, flags, exptime or cas is not a plain decimal in range, whose key is longer than 250
 *   bytes, or that has too few or too many words is unfit: some memcached versions answer it with
 *   an error and read its data block as commands, which would answer more than once.
 * - A request is counted from the end of its line (its reply can come before its data block
 *   ends, e.g. `SERVER_ERROR object too large for cache`), but {@link MemcachedTracker.owed}
 *   leaves out a request whose data block is still being forwarded, as framing.ts defines it.
 *
 * Quiet requests: a meta command with a `q` flag (a flag word starting with `q`) and any classic
 * command whose last word is `noreply` may rightly get no reply, or an error, or (when the server
 * does not honour the flag) its usual reply. Replies come in request order, so while such a request
 * is the oldest outstanding one, a reply cannot be attributed to it or to the next one. The tracker
 * then only follows the shape of the replies (skipping `VALUE` and `VA` data blocks) and settles
 * nothing until an `MN` arrives: `MN` answers the oldest outstanding `mn`, so every request up to
 * and including that `mn` is settled. A quiet batch ended by `mn`, the usual way clients use quiet
 * mode, settles; a quiet or `noreply` request with no `mn` after it keeps
 * {@link MemcachedTracker.owed} above 0 for good, so that connection is never pooled. That is the
 * safe choice: believing a reply complete while one is still coming would hand the next client a
 * stale reply, and believing one still owed only costs a pooled connection.
 *
 * The connection becomes `broken` (only closing it is safe) for: the binary protocol (a first
 * client byte of `0x80`), a `get`, `gets`, `gat` or `gats` with a key over 250 bytes (memcached
 * 1.6.18 answers it with one error line and drops answers of earlier requests it had not sent yet,
 * so what is owed is unknown), `quit`, `shutdown`, `watch` (a log stream), `lru_crawler metadump` and
 * `lru_crawler mgdump` (long dumps), a malformed storage line (see above), a data block not
 * followed by `\r\n`, a request line over the bound, more than 4096 requests outstanding, a reply
 * line not ended by `\r\n`, a reply when none is outstanding, a reply that does not fit the request
 * it answers (a `VALUE` answering a `set`, an `MN` answering a `get`), an error line in the middle
 * of a `VALUE` or `STAT` list, and an `MN` when no `mn` is outstanding.
 *
 * @module
 */

import type { ExchangeTracker, Unfit } from "./framing.ts";

const LF = 10;
const CR = 13;
const SP = 32;
const NUL = 0;
const MINUS = 45;
const D0 = 48;
const D9 = 57;
const Q = 113;

/** Longest request line memcached reads without closing the connection (except `get`, `gets`). */
const MAX_LINE = 2048;
/** Most requests outstanding at once; a power of two (the FIFO is a ring indexed by a mask). */
const MAX_OUTSTANDING = 4096;
/** The rings' first size; they double as a pipeline needs, up to {@link MAX_OUTSTANDING}. */
const FIRST_RING = 16;
/** Longest key memcached accepts. */
const MAX_KEY = 250;
/**
 * Fewest words of an `ms` line that memcached refuses (`CLIENT_ERROR options flags too long`)
 * without skipping its data block, which it then reads as commands (1.6: `MFLAG_MAX_OPT_LENGTH`,
 * 20 tokens counting the empty one after the last word).
 */
const MS_TOO_MANY_WORDS = 20;
/** Bytes kept of a command or reply word (the longest word looked at is `CLIENT_ERROR`...). */
const WORD = 16;
/** Largest data block length memcached accepts in a request (`INT_MAX - 2`). */
const MAX_DATA = 2147483645;
/** A word position no line reaches (flag words start there for commands without flags). */
const NEVER = 0x7fffffff;

// Commands, by their first word.
const C_NONE = 0;
const C_OTHER = 1;
const C_GET = 2;
const C_GETS = 3;
const C_GAT = 4;
const C_STORE = 5;
const C_CAS = 6;
const C_DELETE = 7;
const C_ARITH = 8;
const C_TOUCH = 9;
const C_STATS = 10;
const C_VERSION = 11;
const C_QUIT = 12;
const C_SHUTDOWN = 13;
const C_WATCH = 14;
const C_LRU_CRAWLER = 15;
const C_MG = 16;
const C_MS = 17;
const C_MD = 18;
const C_MA = 19;
const C_MN = 20;
const C_ME = 21;

// What a request expects back: its kind in the FIFO, with QUIET set when it may get no reply.
const K_RETRIEVAL = 1;
const K_STORAGE = 2;
const K_DELETE = 3;
const K_ARITH = 4;
const K_TOUCH = 5;
const K_STATS = 6;
const K_VERSION = 7;
const K_LINE = 8;
const K_MG = 9;
const K_MS = 10;
const K_MD = 11;
const K_MA = 12;
const K_MN = 13;
const K_ME = 14;
const QUIET = 0x80;
const KIND = 0x7f;

/** Request names for unfit reasons, by kind. */
const KIND_NAMES = [
  "",
  "a retrieval (get, gets, gat, gats)",
  "a storage command",
  "delete",
  "incr or decr",
  "touch",
  "stats",
  "version",
  "a one-line command",
  "mg",
  "ms",
  "md",
  "ma",
  "mn",
  "me",
];

// Replies, by their first word.
const R_OTHER = 0;
const R_VALUE = 1;
const R_END = 2;
const R_STAT = 3;
const R_ERROR = 4;
const R_STORED = 5;
const R_NOT_STORED = 6;
const R_EXISTS = 7;
const R_NOT_FOUND = 8;
const R_DELETED = 9;
const R_TOUCHED = 10;
const R_NUMBER = 11;
const R_VERSION = 12;
const R_OK = 13;
const R_RESET = 14;
const R_VA = 15;
const R_HD = 16;
const R_EN = 17;
const R_NF = 18;
const R_NS = 19;
const R_EX = 20;
const R_MN = 21;
const R_ME = 22;

// Multi-line replies in progress.
const L_NONE = 0;
const L_VALUES = 1;
const L_STATS = 2;

function ascii(text: string): Uint8Array {
  const bytes = new Uint8Array(text.length);
  for (let i = 0; i < text.length; i++) bytes[i] = text.charCodeAt(i);
  return bytes;
}

const COMMANDS: readonly (readonly [Uint8Array, number])[] = [
  [ascii("get"), C_GET],
  [ascii("gets"), C_GETS],
  [ascii("gat"), C_GAT],
  [ascii("gats"), C_GAT],
  [ascii("set"), C_STORE],
  [ascii("add"), C_STORE],
  [ascii("replace"), C_STORE],
  [ascii("append"), C_STORE],
  [ascii("prepend"), C_STORE],
  [ascii("cas"), C_CAS],
  [ascii("delete"), C_DELETE],
  [ascii("incr"), C_ARITH],
  [ascii("decr"), C_ARITH],
  [ascii("touch"), C_TOUCH],
  [ascii("stats"), C_STATS],
  [ascii("version"), C_VERSION],
  [ascii("quit"), C_QUIT],
  [ascii("shutdown"), C_SHUTDOWN],
  [ascii("watch"), C_WATCH],
  [ascii("lru_crawler"), C_LRU_CRAWLER],
  [ascii("mg"), C_MG],
  [ascii("ms"), C_MS],
  [ascii("md"), C_MD],
  [ascii("ma"), C_MA],
  [ascii("mn"), C_MN],
  [ascii("me"), C_ME],
];

const REPLIES: readonly (readonly [Uint8Array, number])[] = [
  [ascii("VALUE"), R_VALUE],
  [ascii("END"), R_END],
  [ascii("STAT"), R_STAT],
  [ascii("ERROR"), R_ERROR],
  [ascii("STORED"), R_STORED],
  [ascii("NOT_STORED"), R_NOT_STORED],
  [ascii("EXISTS"), R_EXISTS],
  [ascii("NOT_FOUND"), R_NOT_FOUND],
  [ascii("DELETED"), R_DELETED],
  [ascii("TOUCHED"), R_TOUCHED],
  [ascii("VERSION"), R_VERSION],
  [ascii("OK"), R_OK],
  [ascii("RESET"), R_RESET],
  [ascii("VA"), R_VA],
  [ascii("HD"), R_HD],
  [ascii("EN"), R_EN],
  [ascii("NF"), R_NF],
  [ascii("NS"), R_NS],
  [ascii("EX"), R_EX],
  [ascii("MN"), R_MN],
  [ascii("ME"), R_ME],
];

const CLIENT_ERROR = ascii("CLIENT_ERROR");
const SERVER_ERROR = ascii("SERVER_ERROR");
const NOREPLY = ascii("noreply");
const METADUMP = ascii("metadump");
const MGDUMP = ascii("mgdump");

/** Whether the first `len` bytes of `buf` are `word`. */
function isWord(buf: Uint8Array, len: number, word: Uint8Array): boolean {
  if (len !== word.length) return false;
  for (let i = 0; i < len; i++) if (buf[i] !== word[i]) return false;
  return true;
}

/** Whether `buf` starts with `prefix` (`len` bytes of `buf` are valid). */
function startsWith(buf: Uint8Array, len: number, prefix: Uint8Array): boolean {
  if (len < prefix.length) return false;
  for (let i = 0; i < prefix.length; i++) if (buf[i] !== prefix[i]) return false;
  return true;
}

function lookup(
  table: readonly (readonly [Uint8Array, number])[],
  buf: Uint8Array,
  len: number,
  otherwise: number,
): number {
  if (len > WORD) return otherwise;
  for (const [word, code] of table) if (isWord(buf, len, word)) return code;
  return otherwise;
}

/** The first word of a reply line, for an unfit reason. */
function wordText(buf: Uint8Array, len: number): string {
  let text = "";
  for (let i = 0; i < Math.min(len, WORD); i++) text += String.fromCharCode(buf[i]);
  return len === 0 ? "an empty line" : len > WORD ? `${text}...` : text;
}

/**
 * An {@link ExchangeTracker} for memcached's text protocol, classic and meta commands; see the
 * module documentation for what it reads, how it settles quiet requests, and what makes a
 * connection `broken`. Never throws; keeps no reference to a chunk.
 */
export class MemcachedTracker implements ExchangeTracker {
  #unfit: Unfit | undefined;
  #started = false;

  // Outstanding requests, oldest first: kinds by sequence number, in a ring that grows (by
  // doubling, up to MAX_OUTSTANDING) only as a pipeline needs: a held session costs little.
  #kinds = new Uint8Array(FIRST_RING);
  #head = 0;
  #tail = 0;
  // Sequence numbers of the outstanding `mn` requests, oldest first, in a ring that grows alike.
  #mns = new Float64Array(FIRST_RING);
  #mnHead = 0;
  #mnTail = 0;
  // Sequence number of the newest quiet or noreply request, -1 before any.
  #lastQuiet = -1;

  // Client side: the request line in progress.
  #cLen = 0; // bytes of the line so far, a dropped final `\r` not counted
  #cCR = false; // the last byte was `\r`; it belongs to the line unless `\n` follows
  #cTokens = 0; // words started
  #cInToken = false;
  #cTokenLen = 0;
  #cNoreply = 0; // bytes of `noreply` the current word matches so far, -1 when it does not
  #cNum = 0; // the current word as a decimal
  #cDigits = 0;
  #cNumOk = true;
  #cNeg = false;
  readonly #cWord = new Uint8Array(WORD); // the first word
  readonly #cSub = new Uint8Array(WORD); // the second word
  #cCmd = C_NONE;
  #cFlagsFrom = NEVER; // first meta flag word
  #cLong = false; // a get or gets line, which may be longer than the bound
  #cLastNoreply = false;
  #cQuiet = false;
  #cBad = "";
  #cData = -1; // the line's data block length, -1 for none
  // Client side: a data block in progress.
  #cSkip = 0; // data bytes left
  #cCrlf = 0; // 2: `\r\n` expected after the data, 1: `\n` expected

  // Server side: the reply line in progress.
  #sLen = 0;
  #sCR = false;
  #sTokens = 0;
  #sInToken = false;
  #sTokenLen = 0;
  readonly #sWord = new Uint8Array(WORD);
  #sWordLen = 0;
  #sDigits0 = true; // the first word is all digits
  #sClass = R_OTHER;
  #sSizeAt = -1; // the word that holds a data block length (VALUE: 3, VA: 1)
  #sNum = 0;
  #sDigits = 0;
  #sNumOk = true;
  #sSize = -1;
  // Server side: what the current reply is in the middle of.
  #sList = L_NONE; // a VALUE or STAT list (exact mode)
  #sLooseList = false; // the same, followed by shape only while a quiet request is oldest
  #sSkip = 0;
  #sCrlf = 0;
  #sPopAfterData = false;

  /** See {@link ExchangeTracker.owed}: requests forwarded whole whose reply has not arrived. */
  get owed(): number {
    const count = this.#tail - this.#head;
    return count > 0 && (this.#cSkip > 0 || this.#cCrlf !== 0) ? count - 1 : count;
  }

  /**
   * See {@link ExchangeTracker.settleable}: false while a quiet or `noreply` request is
   * outstanding with no `mn` after it, whose reply may or may not come.
   */
  get settleable(): boolean {
    if (this.#lastQuiet < this.#head) return true; // no quiet request outstanding
    return this.#mnTail > this.#mnHead &&
      this.#mns[(this.#mnTail - 1) & (this.#mns.length - 1)] > this.#lastQuiet;
  }

  /** See {@link ExchangeTracker.drainable}: memcached has no command that waits for an item. */
  get drainable(): boolean {
    return true;
  }

  /** Whether a request line or its data block has been forwarded in part. */
  get partialRequest(): boolean {
    return this.#cLen > 0 || this.#cCR || this.#cSkip > 0 || this.#cCrlf !== 0;
  }

  /** Whether a reply has arrived in part: a line, a data block, or a VALUE or STAT list. */
  get partialResponse(): boolean {
    return this.#sLen > 0 || this.#sCR || this.#sSkip > 0 || this.#sCrlf !== 0 ||
      this.#sList !== L_NONE || this.#sLooseList;
  }

  /** Set once the connection is `broken`; memcached has no `state` kind of unfitness here. */
  get unfit(): Unfit | undefined {
    return this.#unfit;
  }

  /** Client bytes, as forwarded upstream. */
  onClientBytes(chunk: Uint8Array): void {
    if (this.#unfit !== undefined || chunk.length === 0) return;
    if (!this.#started) {
      this.#started = true;
      if (chunk[0] === 0x80) {
        this.#break("memcached binary protocol is relayed but never pooled");
        return;
      }
    }
    const n = chunk.length;
    let i = 0;
    while (i < n) {
      if (this.#cSkip > 0) {
        const take = Math.min(this.#cSkip, n - i);
        this.#cSkip -= take;
        i += take;
        continue;
      }
      const b = chunk[i++];
      if (this.#cCrlf !== 0) {
        if (b !== (this.#cCrlf === 2 ? CR : LF)) {
          this.#break("a request data block is not followed by \\r\\n");
          return;
        }
        this.#cCrlf--;
        continue;
      }
      if (b === LF) {
        this.#clientLine();
      } else {
        if (this.#cCR) {
          this.#cCR = false;
          this.#clientByte(CR);
        }
        if (b === CR) this.#cCR = true;
        else this.#clientByte(b);
      }
      if (this.#unfit !== undefined) return;
    }
  }

  /** Upstream bytes, as relayed to the client (or discarded while draining). */
  onServerBytes(chunk: Uint8Array): void {
    if (this.#unfit !== undefined) return;
    const n = chunk.length;
    let i = 0;
    while (i < n) {
      if (this.#sSkip > 0) {
        const take = Math.min(this.#sSkip, n - i);
        this.#sSkip -= take;
        i += take;
        continue;
      }
      const b = chunk[i++];
      if (this.#sCrlf !== 0) {
        if (b !== (this.#sCrlf === 2 ? CR : LF)) {
          this.#break("a reply data block is not followed by \\r\\n");
          return;
        }
        if (--this.#sCrlf === 0 && this.#sPopAfterData) this.#pop();
        continue;
      }
      if (b === LF) {
        if (!this.#sCR) {
          this.#break("a reply line ends in \\n without \\r");
          return;
        }
        this.#sCR = false;
        this.#serverLine();
      } else {
        if (this.#sCR) {
          this.#sCR = false;
          this.#serverByte(CR);
        }
        if (b === CR) this.#sCR = true;
        else this.#serverByte(b);
      }
      if (this.#unfit !== undefined) return;
    }
  }

  #break(reason: string): void {
    this.#unfit ??= { kind: "broken", reason };
  }

  // ---- client side ----

  #clientByte(b: number): void {
    if (++this.#cLen > MAX_LINE && !this.#cLong) {
      this.#break(
        `a request line is longer than ${MAX_LINE} bytes and not get or gets ` +
          "(memcached closes such a connection)",
      );
      return;
    }
    if (b === SP) {
      if (this.#cInToken) this.#clientTokenEnd();
      return;
    }
    if (b === NUL) {
      // memcached cuts the line at a NUL (it splits it with strlen) and runs what is before it,
      // which may be a command this tracker cannot see, such as `watch` or `mn`.
      this.#break("a request line holds a NUL byte (memcached ignores the rest of the line)");
      return;
    }
    if (!this.#cInToken) {
      this.#cInToken = true;
      this.#cTokenLen = 0;
      this.#cNoreply = 0;
      this.#cNum = 0;
      this.#cDigits = 0;
      this.#cNumOk = true;
      this.#cNeg = false;
      if (this.#cTokens++ >= this.#cFlagsFrom && b === Q) this.#cQuiet = true;
    }
    const at = this.#cTokenLen++;
    const token = this.#cTokens - 1;
    if (token === 0) {
      if (at < WORD) this.#cWord[at] = b;
    } else if (token === 1) {
      if (at < WORD) this.#cSub[at] = b;
    }
    if (b >= D0 && b <= D9) {
      this.#cNum = this.#cNum * 10 + (b - D0);
      this.#cDigits++;
    } else if (b === MINUS && at === 0) {
      this.#cNeg = true;
    } else {
      this.#cNumOk = false;
    }
    if (this.#cNoreply >= 0) this.#cNoreply = at < 7 && b === NOREPLY[at] ? at + 1 : -1;
  }

  #clientTokenEnd(): void {
    this.#cInToken = false;
    const token = this.#cTokens - 1;
    const len = this.#cTokenLen;
    this.#cLastNoreply = this.#cNoreply === 7;
    if (token === 0) {
      const cmd = lookup(COMMANDS, this.#cWord, len, C_OTHER);
      this.#cCmd = cmd;
      this.#cLong = cmd === C_GET || cmd === C_GETS;
      this.#cFlagsFrom = cmd === C_MG || cmd === C_MD || cmd === C_MA
        ? 2
        : cmd === C_MS
        ? 3
        : NEVER;
      return;
    }
    const cmd = this.#cCmd;
    if (cmd === C_STORE || cmd === C_CAS || cmd === C_MS) {
      if (this.#cBad !== "") return;
      const digits = this.#cDigits;
      const unsigned = this.#cNumOk && !this.#cNeg && digits > 0;
      if (token === 1) {
        if (len > MAX_KEY) this.#cBad = `its key is longer than ${MAX_KEY} bytes`;
      } else if (token === 2 && cmd === C_MS) {
        if (unsigned && digits <= 10 && this.#cNum <= MAX_DATA) this.#cData = this.#cNum;
        else this.#cBad = "its data length is not a decimal from 0 to 2147483645";
      } else if (token === 2) {
        if (!(unsigned && digits <= 10 && this.#cNum <= 0xffffffff)) {
          this.#cBad = "its flags are not a decimal from 0 to 4294967295";
        }
      } else if (token === 3 && cmd !== C_MS) {
        const limit = this.#cNeg ? 2147483648 : 2147483647;
        if (!(this.#cNumOk && digits > 0 && digits <= 10 && this.#cNum <= limit)) {
          this.#cBad = "its exptime is not a 32-bit decimal";
        }
      } else if (token === 4 && cmd !== C_MS) {
        if (unsigned && digits <= 10 && this.#cNum <= MAX_DATA) this.#cData = this.#cNum;
        else this.#cBad = "its byte count is not a decimal from 0 to 2147483645";
      } else if (token === 5 && cmd === C_CAS) {
        if (!(unsigned && digits <= 19)) this.#cBad = "its cas unique is not a 64-bit decimal";
      }
    } else if (cmd === C_GET || cmd === C_GETS || cmd === C_GAT) {
      // Keys follow the command (gat and gats: after the exptime). memcached 1.6 answers a key
      // over 250 bytes with one error line and drops answers of earlier requests that it had not
      // sent yet (which ones depends on how its reads fell): nothing then says what is owed.
      if (len > MAX_KEY && (cmd !== C_GAT || token >= 2) && this.#cBad === "") {
        this.#cBad = `a key is longer than ${MAX_KEY} bytes`;
      }
    } else if (cmd === C_LRU_CRAWLER && token === 1) {
      if (isWord(this.#cSub, len, METADUMP) || isWord(this.#cSub, len, MGDUMP)) {
        this.#cBad = "lru_crawler dumps stream until the crawl ends";
      }
    }
  }

  #clientLine(): void {
    if (this.#cInToken) this.#clientTokenEnd();
    // memcached answers a line shorter than 4 bytes with its `\r\n` or `\n` with an error,
    // except `mn\n`, which 1.6.18 answers `MN`. Which an MN answers decides where a quiet batch
    // ends, so a line that one version may count as mn and another not is not followed.
    const short = this.#cLen + (this.#cCR ? 2 : 1) < 4;
    if (short && this.#cCmd === C_MN) {
      this.#break("`mn` ended by a bare \\n (memcached versions answer it differently)");
      return;
    }
    const cmd = short ? C_OTHER : this.#cCmd;
    this.#cCR = false;
    const tokens = this.#cTokens;
    const bad = this.#cBad;
    const data = this.#cData;
    const quiet = this.#cLastNoreply ? QUIET : 0;
    const metaQuiet = this.#cQuiet ? QUIET : 0;
    this.#cLen = 0;
    this.#cTokens = 0;
    this.#cCmd = C_NONE;
    this.#cFlagsFrom = NEVER;
    this.#cLong = false;
    this.#cLastNoreply = false;
    this.#cQuiet = false;
    this.#cBad = "";
    this.#cData = -1;
    switch (cmd) {
      case C_GET:
      case C_GETS:
      case C_GAT:
        if (bad !== "") {
          this.#break(
            `a retrieval whose key is longer than ${MAX_KEY} bytes (memcached answers it with an ` +
              "error and drops answers of earlier requests it has not sent yet)",
          );
          return;
        }
        return this.#push(K_RETRIEVAL | quiet);
      case C_STORE:
      case C_CAS: {
        const min = cmd === C_CAS ? 6 : 5;
        if (bad !== "" || tokens < min || tokens > min + 1) {
          const why = bad !== "" ? bad : `it has ${tokens} words, not ${min} or ${min + 1}`;
          this.#break(
            `a malformed storage command (${why}): its data block may be read as commands`,
          );
          return;
        }
        this.#push(K_STORAGE | quiet);
        this.#cSkip = data;
        this.#cCrlf = 2;
        return;
      }
      case C_MS:
        if (bad !== "" || data < 0 || tokens >= MS_TOO_MANY_WORDS) {
          const why = bad !== ""
            ? bad
            : data < 0
            ? "it has no data length"
            : `it has ${tokens} words, memcached refuses ${MS_TOO_MANY_WORDS} or more`;
          this.#break(`a malformed ms (${why}): its data block may be read as commands`);
          return;
        }
        this.#push(K_MS | metaQuiet);
        this.#cSkip = data;
        this.#cCrlf = 2;
        return;
      case C_DELETE:
        return this.#push(K_DELETE | quiet);
      case C_ARITH:
        return this.#push(K_ARITH | quiet);
      case C_TOUCH:
        return this.#push(K_TOUCH | quiet);
      case C_STATS:
        return this.#push(K_STATS | quiet);
      case C_VERSION:
        return this.#push(K_VERSION | quiet);
      case C_MG:
        return this.#push(K_MG | metaQuiet);
      case C_MD:
        return this.#push(K_MD | metaQuiet);
      case C_MA:
        return this.#push(K_MA | metaQuiet);
      case C_MN:
        return this.#push(K_MN);
      case C_ME:
        return this.#push(K_ME);
      case C_QUIT:
        return this.#break("quit: the server closes the connection");
      case C_SHUTDOWN:
        return this.#break("shutdown stops the server");
      case C_WATCH:
        return this.#break("watch turns the connection into a log stream");
      case C_LRU_CRAWLER:
        if (bad !== "") return this.#break(bad);
        return this.#push(K_LINE | quiet);
      default:
        return this.#push(K_LINE | quiet);
    }
  }

  #push(kind: number): void {
    if (this.#tail - this.#head >= MAX_OUTSTANDING) {
      this.#break(`more than ${MAX_OUTSTANDING} requests outstanding`);
      return;
    }
    if (this.#tail - this.#head === this.#kinds.length) {
      this.#kinds = doubled(this.#kinds, this.#head, this.#tail);
    }
    if (kind === K_MN) {
      if (this.#mnTail - this.#mnHead === this.#mns.length) {
        this.#mns = doubled(this.#mns, this.#mnHead, this.#mnTail);
      }
      this.#mns[this.#mnTail++ & (this.#mns.length - 1)] = this.#tail;
    }
    if ((kind & QUIET) !== 0) this.#lastQuiet = this.#tail;
    this.#kinds[this.#tail++ & (this.#kinds.length - 1)] = kind;
  }

  // ---- server side ----

  #serverByte(b: number): void {
    this.#sLen++;
    if (b === SP) {
      if (this.#sInToken) this.#serverTokenEnd();
      return;
    }
    if (!this.#sInToken) {
      this.#sInToken = true;
      this.#sTokenLen = 0;
      this.#sTokens++;
    }
    const at = this.#sTokenLen++;
    const token = this.#sTokens - 1;
    if (token === 0) {
      if (at < WORD) this.#sWord[at] = b;
      if (b < D0 || b > D9) this.#sDigits0 = false;
    } else if (token === this.#sSizeAt) {
      if (b >= D0 && b <= D9) {
        this.#sNum = this.#sNum * 10 + (b - D0);
        this.#sDigits++;
      } else {
        this.#sNumOk = false;
      }
    }
  }

  #serverTokenEnd(): void {
    this.#sInToken = false;
    const token = this.#sTokens - 1;
    const len = this.#sTokenLen;
    if (token === 0) {
      this.#sWordLen = len;
      let cls = lookup(REPLIES, this.#sWord, len, R_OTHER);
      if (cls === R_OTHER) {
        if (
          startsWith(this.#sWord, len, CLIENT_ERROR) || startsWith(this.#sWord, len, SERVER_ERROR)
        ) {
          cls = R_ERROR;
        } else if (this.#sDigits0) {
          cls = R_NUMBER;
        }
      }
      this.#sClass = cls;
      this.#sSizeAt = cls === R_VALUE ? 3 : cls === R_VA ? 1 : -1;
      this.#sNum = 0;
      this.#sDigits = 0;
      this.#sNumOk = true;
    } else if (token === this.#sSizeAt) {
      this.#sSize = this.#sNumOk && this.#sDigits > 0 && this.#sDigits <= 15 ? this.#sNum : -1;
    }
  }

  #serverLine(): void {
    if (this.#sInToken) this.#serverTokenEnd();
    const cls = this.#sTokens === 0 ? R_OTHER : this.#sClass;
    const size = this.#sSize;
    const wordLen = this.#sTokens === 0 ? 0 : this.#sWordLen;
    this.#sLen = 0;
    this.#sTokens = 0;
    this.#sDigits0 = true;
    this.#sClass = R_OTHER;
    this.#sSizeAt = -1;
    this.#sSize = -1;

    if ((cls === R_VALUE || cls === R_VA) && size < 0) {
      this.#break(`a ${cls === R_VALUE ? "VALUE" : "VA"} line without a valid data length`);
      return;
    }
    const list = this.#sList;
    if (list !== L_NONE) {
      if (cls === R_END) return this.#pop();
      if (list === L_VALUES && cls === R_VALUE) return this.#serverData(size, false);
      if (list === L_STATS && cls !== R_ERROR && cls !== R_VALUE && cls !== R_VA && cls !== R_MN) {
        return;
      }
      return this.#mismatch(
        cls,
        wordLen,
        `in the middle of a ${list === L_VALUES ? "VALUE" : "STAT"} list`,
      );
    }
    if (this.#tail === this.#head) {
      this.#break("a reply arrived with no request outstanding");
      return;
    }
    const kind = this.#kinds[this.#head & (this.#kinds.length - 1)];
    if ((kind & QUIET) !== 0) return this.#looseLine(cls, size);
    switch (kind) {
      case K_RETRIEVAL:
        if (cls === R_VALUE) {
          this.#sList = L_VALUES;
          return this.#serverData(size, false);
        }
        if (cls === R_END || cls === R_ERROR) return this.#pop();
        break;
      case K_STORAGE:
        if (
          cls === R_STORED || cls === R_NOT_STORED || cls === R_EXISTS || cls === R_NOT_FOUND ||
          cls === R_ERROR
        ) return this.#pop();
        break;
      case K_DELETE:
        if (cls === R_DELETED || cls === R_NOT_FOUND || cls === R_ERROR) return this.#pop();
        break;
      case K_ARITH:
        if (cls === R_NUMBER || cls === R_NOT_FOUND || cls === R_ERROR) return this.#pop();
        break;
      case K_TOUCH:
        if (cls === R_TOUCHED || cls === R_NOT_FOUND || cls === R_ERROR) return this.#pop();
        break;
      case K_STATS:
        if (cls === R_END || cls === R_RESET || cls === R_OK || cls === R_ERROR) return this.#pop();
        if (cls !== R_VALUE && cls !== R_VA && cls !== R_MN) {
          this.#sList = L_STATS;
          return;
        }
        break;
      case K_VERSION:
        if (cls === R_VERSION || cls === R_ERROR) return this.#pop();
        break;
      case K_LINE:
        if (cls !== R_VALUE && cls !== R_VA && cls !== R_MN && cls !== R_STAT && cls !== R_END) {
          return this.#pop();
        }
        break;
      case K_MG:
        if (cls === R_VA) return this.#serverData(size, true);
        if (cls === R_HD || cls === R_EN || cls === R_ERROR) return this.#pop();
        break;
      case K_MS:
        if (cls === R_HD || cls === R_NS || cls === R_EX || cls === R_NF || cls === R_ERROR) {
          return this.#pop();
        }
        break;
      case K_MD:
        if (cls === R_HD || cls === R_NF || cls === R_EX || cls === R_ERROR) return this.#pop();
        break;
      case K_MA:
        if (cls === R_VA) return this.#serverData(size, true);
        if (
          cls === R_HD || cls === R_NF || cls === R_NS || cls === R_EX || cls === R_ERROR
        ) return this.#pop();
        break;
      case K_MN:
        if (cls === R_MN || cls === R_ERROR) return this.#pop();
        break;
      case K_ME:
        if (cls === R_ME || cls === R_EN || cls === R_ERROR) return this.#pop();
        break;
    }
    this.#mismatch(cls, wordLen, `answering ${KIND_NAMES[kind]}`);
  }

  /** A reply line while a quiet request is the oldest outstanding: follow its shape only. */
  #looseLine(cls: number, size: number): void {
    switch (cls) {
      case R_MN: {
        if (this.#mnHead === this.#mnTail) {
          this.#break("MN arrived with no mn outstanding");
          return;
        }
        this.#head = this.#mns[this.#mnHead++ & (this.#mns.length - 1)] + 1;
        this.#sLooseList = false;
        return;
      }
      case R_VALUE:
        this.#sLooseList = true;
        return this.#serverData(size, false);
      case R_VA:
        return this.#serverData(size, false);
      case R_STAT:
        this.#sLooseList = true;
        return;
      case R_END:
      case R_ERROR:
        this.#sLooseList = false;
        return;
    }
  }

  #serverData(size: number, popAfter: boolean): void {
    this.#sSkip = size;
    this.#sCrlf = 2;
    this.#sPopAfterData = popAfter;
  }

  /** Settles the oldest outstanding request. */
  #pop(): void {
    if ((this.#kinds[this.#head & (this.#kinds.length - 1)] & KIND) === K_MN) this.#mnHead++;
    this.#head++;
    this.#sList = L_NONE;
    this.#sPopAfterData = false;
  }

  #mismatch(cls: number, wordLen: number, where: string): void {
    const word = cls === R_ERROR ? "an error line" : wordText(this.#sWord, wordLen);
    this.#break(`a reply does not fit: ${word} ${where}`);
  }
}

/**
 * `ring` (a power of two long) at twice its length, each entry numbered `from` to `to` (exclusive)
 * at its place modulo the new length, as the ring reads it.
 */
function doubled<Ring extends Uint8Array | Float64Array>(
  ring: Ring,
  from: number,
  to: number,
): Ring {
  const grown = new (ring.constructor as new (length: number) => Ring)(ring.length * 2);
  for (let i = from; i < to; i++) grown[i & (grown.length - 1)] = ring[i & (ring.length - 1)];
  return grown;
}
