/**
 * The demand tracker (src/demand.ts) with times given by the test: starts within one dial time,
 * the remembered peak, the ready and keep targets with their floor and ceiling.
 */

import { assertEquals, assertThrows } from "./_assert.ts";
import { DemandTracker, MIN_DIAL_WINDOW_MS } from "../src/demand.ts";

Deno.test("a burst of sessions started together asks for as many ready connections, times the ratio", () => {
  const demand = new DemandTracker({ ratio: 1.5, capacity: 100, peakPeriodMs: 1_000 });
  for (let i = 0; i < 10; i++) demand.started(5_000 + i * 0.01);
  assertEquals(demand.peakStarts(5_000.1), 10);
  assertEquals(demand.readyTarget(5_000.1, 2), 15);
});

Deno.test("a steady stream asks for its rate times the dial time (Little's law), not its total", () => {
  const demand = new DemandTracker({ ratio: 1, capacity: 100, peakPeriodMs: 1_000 });
  for (let i = 0; i < 5; i++) demand.dialed(4); // dials take about 4 ms
  // One session a millisecond for 200 ms: about 4 start within one dial time.
  for (let t = 0; t < 200; t++) demand.started(10_000 + t);
  const peak = demand.peakStarts(10_200);
  assertEquals(peak >= 3 && peak <= 5, true, `peak ${peak}`);
});

Deno.test("the dial-time window never falls below the timer granularity", () => {
  const demand = new DemandTracker({ ratio: 1, capacity: 100 });
  for (let i = 0; i < 10; i++) demand.dialed(0.05);
  assertEquals(demand.dialTimeMs, MIN_DIAL_WINDOW_MS);
});

Deno.test("a wider shortest window (minDialWindowMs) counts starts further apart as together", () => {
  const wide = new DemandTracker({ ratio: 1, capacity: 100, minDialWindowMs: 100 });
  const narrow = new DemandTracker({ ratio: 1, capacity: 100 });
  for (let i = 0; i < 12; i++) {
    wide.started(1_000 + i * 5); // 5 ms apart: a burst the machine spread out
    narrow.started(1_000 + i * 5);
  }
  assertEquals(wide.peakStarts(1_060), 12);
  assertEquals(narrow.peakStarts(1_060), 1);
  wide.dialed(0.1); // a fast dial never narrows it below its floor
  assertEquals(wide.dialTimeMs, 100);
});

Deno.test("a shortest window that is not a finite number >= 0 is refused", () => {
  for (const bad of [NaN, -1, Infinity]) {
    assertThrows(
      () => new DemandTracker({ ratio: 1, capacity: 10, minDialWindowMs: bad }),
      RangeError,
      "minDialWindowMs",
    );
  }
});

Deno.test("a peak is remembered for one to two periods, then forgotten", () => {
  const demand = new DemandTracker({ ratio: 1, capacity: 100, peakPeriodMs: 1_000 });
  for (let i = 0; i < 8; i++) demand.started(1_000);
  assertEquals(demand.readyTarget(1_500, 0), 8);
  assertEquals(demand.readyTarget(2_500, 0), 8, "the previous period still counts");
  assertEquals(demand.readyTarget(3_600, 0), 0, "two periods on, forgotten");
});

Deno.test("targets keep --min-idle as the floor and --pool-size as the ceiling; ratio 0 keeps just the floor", () => {
  const demand = new DemandTracker({ ratio: 2, capacity: 12, peakPeriodMs: 1_000 });
  assertEquals(demand.readyTarget(0, 4), 4);
  for (let i = 0; i < 30; i++) demand.started(100);
  assertEquals(demand.readyTarget(100, 4), 12);
  const none = new DemandTracker({ ratio: 0, capacity: 12 });
  for (let i = 0; i < 30; i++) none.started(100);
  assertEquals(none.readyTarget(100, 4), 4);
});

Deno.test("reuse keeps as many released connections as were in use at once recently, times the ratio above 1", () => {
  const demand = new DemandTracker({ ratio: 1, capacity: 1_000, peakPeriodMs: 1_000 });
  demand.leased(40, 100);
  demand.leased(3, 200);
  assertEquals(demand.keepTarget(300, 0), 40);
  assertEquals(demand.keepTarget(1_500, 0), 40, "still within the previous period");
  demand.leased(3, 2_600);
  assertEquals(demand.keepTarget(2_700, 0), 3, "the burst has been forgotten");
  assertEquals(demand.keepTarget(2_700, 5), 5, "never below --min-idle");
  const more = new DemandTracker({ ratio: 1.5, capacity: 1_000 });
  more.leased(40, 100);
  assertEquals(more.keepTarget(200, 0), 60);
  const none = new DemandTracker({ ratio: 0, capacity: 1_000 });
  none.leased(40, 100);
  assertEquals(none.keepTarget(200, 0), 40, "ratio 0 still keeps what was in use");
});

Deno.test("reuse keeps ready the ratio times the recent peak in use, less those in use now: ratio 1 dials nothing extra", () => {
  const demand = new DemandTracker({ ratio: 1, capacity: 1_000 });
  demand.leased(32, 100);
  assertEquals(demand.reuseReadyTarget(200, 0, 32), 0, "all in use: they come back");
  assertEquals(demand.reuseReadyTarget(200, 0, 10), 22, "after the burst, the rest stay ready");
  assertEquals(demand.reuseReadyTarget(200, 4, 32), 4, "--min-idle is the floor");
  const headroom = new DemandTracker({ ratio: 1.5, capacity: 1_000 });
  headroom.leased(32, 100);
  assertEquals(headroom.reuseReadyTarget(200, 0, 32), 16, "half again ready");
});

Deno.test("the peak of connections taken or waited for is its own, not capped by leased connections, and is forgotten like the others", () => {
  const demand = new DemandTracker({ ratio: 1, capacity: 10, peakPeriodMs: 1_000 });
  demand.leased(4, 100); // four connections, all in use
  demand.wanted(12, 100); // and eight more sessions waiting for one
  demand.wanted(2, 300);
  assertEquals(demand.peakLeased(300), 4);
  assertEquals(demand.peakWanted(300), 12, "not capped by the capacity (--pool-size) either");
  assertEquals(demand.peakWanted(2_500), 0);
});
