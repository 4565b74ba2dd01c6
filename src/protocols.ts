/**
 * The framed protocols by name: what `--protocol` turns into for the relay (a tracker per
 * connection) and for the pool (the reset command, where the protocol has one).
 *
 * @module
 */

import type { ExchangeTracker, Protocol } from "./framing.ts";

/** What a framed protocol brings. */
export interface ProtocolSupport {
  /** A tracker for one connection's exchange. */
  newTracker: () => ExchangeTracker;
  /** The command that clears per-connection state, and its one reply, if the protocol has one. */
  reset?: { command: Uint8Array; reply: Uint8Array };
}

/** The support for `protocol`; `undefined` for `raw`, which has no framing. */
export function protocolSupport(protocol: Protocol): ProtocolSupport | undefined {
  switch (protocol) {
    case "raw":
      return undefined;
    default:
      throw new Error(`protocol ${protocol} is not built yet`);
  }
}
