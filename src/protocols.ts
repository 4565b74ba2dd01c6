/**
 * The framed protocols by name: what `--protocol` turns into for the relay (a tracker per
 * connection) and for the pool (the reset command, where the protocol has one).
 *
 * @module
 */

import type { ExchangeTracker, Protocol } from "./framing.ts";
import { MemcachedTracker } from "./memcached.ts";
import { REDIS_RESET_COMMAND, REDIS_RESET_REPLY, RedisTracker } from "./resp.ts";

/** What a framed protocol brings. */
export interface ProtocolSupport {
  /** A tracker for one connection's exchange. */
  newTracker: () => ExchangeTracker;
  /** The command that clears per-connection state, and its one reply, if the protocol has one. */
  reset?: { command: Uint8Array; reply: Uint8Array };
}

const SUPPORT: Record<Exclude<Protocol, "raw">, ProtocolSupport> = {
  redis: {
    newTracker: () => new RedisTracker(),
    reset: { command: REDIS_RESET_COMMAND, reply: REDIS_RESET_REPLY },
  },
  memcached: { newTracker: () => new MemcachedTracker() },
};

/** The support for `protocol`; `undefined` for `raw`, which has no framing. */
export function protocolSupport(protocol: Protocol): ProtocolSupport | undefined {
  return protocol === "raw" ? undefined : SUPPORT[protocol];
}
