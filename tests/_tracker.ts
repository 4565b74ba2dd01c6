/**
 * What the framing trackers' tests share: a tracker's state after it was fed, for any
 * {@link ExchangeTracker} (Redis, memcached), and the seeded generator of their random splits.
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

/** A small seeded generator (mulberry32): random splits that repeat from run to run. */
export function seededRandom(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}
