/**
 * What the framing trackers' tests compare: a tracker's state after it was fed, for any
 * {@link ExchangeTracker} (Redis, memcached).
 *
 * @module
 */

import type { ExchangeTracker, Unfit } from "../src/framing.ts";

/** A tracker's state at one moment. */
export interface Snapshot {
  owed: number;
  partialRequest: boolean;
  partialResponse: boolean;
  unfit: Unfit | undefined;
}

/** The state of `tracker` now. */
export function snapshot(tracker: ExchangeTracker): Snapshot {
  return {
    owed: tracker.owed,
    partialRequest: tracker.partialRequest,
    partialResponse: tracker.partialResponse,
    unfit: tracker.unfit,
  };
}
