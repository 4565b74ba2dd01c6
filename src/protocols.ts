/**
 * The framed protocols by name: what `--protocol` turns into for the relay (a tracker per
 * connection) and for the pool (the reset command, where the protocol has one).
 *
 * @module
 */

import type { ExchangeTracker, Protocol } from "./framing.ts";
import { MemcachedTracker } from "./memcached.ts";
import { MEMCACHED_OPENING_CHECK, type OpeningCheck } from "./opening_check.ts";
import { REDIS_RESET_COMMAND, REDIS_RESET_REPLY, RedisTracker } from "./resp.ts";

/**
 * A client's goodbye: the command a client sends before it closes (Redis `QUIT`, memcached
 * `quit`). Passed on, it would make the server close a connection that could serve the next
 * client, so the proxy answers it itself, as mcrouter and PgBouncer do.
 */
export interface Goodbye {
  /** How many bytes at the end of `chunk` are the goodbye command (0 when it does not end so). */
  suffix(chunk: Uint8Array): number;
  /** What the server would have answered, sent to the client after every owed answer. */
  reply: Uint8Array | undefined;
}

/** What a framed protocol brings. */
export interface ProtocolSupport {
  /** A tracker for one connection's exchange. */
  newTracker: () => ExchangeTracker;
  /** The command that clears per-connection state, and its one reply, if the protocol has one. */
  reset?: { command: Uint8Array; reply: Uint8Array };
  /** The client's goodbye, answered by the proxy. */
  goodbye: Goodbye;
  /**
   * Whether a client whose first bytes are `first` needs a connection that has never spoken
   * (memcached settles a connection's protocol, text or binary, at its first byte).
   */
  needsFreshConnection?: (first: Uint8Array) => boolean;
  /**
   * Sent on each new connection in `reuse` before a client uses it, to find the connections that
   * ask for a login (memcached `-Y`), which must never be pooled (`src/opening_check.ts`).
   */
  openingCheck?: OpeningCheck;
}

const encoder = new TextEncoder();

/**
 * The length of `text` at the end of `chunk`, matched without regard to ASCII case when
 * `anyCase`, and starting a line (at the chunk's start or after `\n`); 0 when it is not there.
 */
function endsWithLine(chunk: Uint8Array, text: Uint8Array, anyCase: boolean): number {
  const start = chunk.length - text.length;
  if (start < 0 || (start > 0 && chunk[start - 1] !== 0x0a)) return 0;
  for (let i = 0; i < text.length; i++) {
    const a = chunk[start + i];
    const b = text[i];
    if (
      a !== b && !(anyCase && (a | 0x20) === (b | 0x20) && (b | 0x20) >= 0x61 && (b | 0x20) <= 0x7a)
    ) {
      return 0;
    }
  }
  return text.length;
}

/** The first of `forms` that ends `chunk`, by its length; 0 for none. */
function suffixOf(chunk: Uint8Array, forms: readonly Uint8Array[], anyCase: boolean): number {
  for (const form of forms) {
    const length = endsWithLine(chunk, form, anyCase);
    if (length > 0) return length;
  }
  return 0;
}

const REDIS_QUIT = ["*1\r\n$4\r\nQUIT\r\n", "QUIT\r\n", "QUIT\n"].map((t) => encoder.encode(t));
const MEMCACHED_QUIT = ["quit\r\n", "quit\n"].map((t) => encoder.encode(t));

const SUPPORT: Record<Exclude<Protocol, "raw">, ProtocolSupport> = {
  redis: {
    newTracker: () => new RedisTracker(),
    reset: { command: REDIS_RESET_COMMAND, reply: REDIS_RESET_REPLY },
    goodbye: {
      suffix: (chunk) => suffixOf(chunk, REDIS_QUIT, true),
      reply: encoder.encode("+OK\r\n"),
    },
  },
  memcached: {
    newTracker: () => new MemcachedTracker(),
    // memcached closes at once, answering nothing; its commands are lower case.
    goodbye: { suffix: (chunk) => suffixOf(chunk, MEMCACHED_QUIT, false), reply: undefined },
    // A pooled connection speaks the text protocol; a binary client (first byte 0x80) needs its own.
    needsFreshConnection: (first) => first[0] === 0x80,
    // A login (-Y) is a `set`, and leaves the connection logged in: found before any client.
    openingCheck: MEMCACHED_OPENING_CHECK,
  },
};

/** The support for `protocol`; `undefined` for `raw`, which has no framing. */
export function protocolSupport(protocol: Protocol): ProtocolSupport | undefined {
  return protocol === "raw" ? undefined : SUPPORT[protocol];
}
