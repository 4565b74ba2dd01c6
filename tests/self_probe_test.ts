/**
 * The TLS listener's probe clock (`src/self_probe.ts`): time the event loop spends held up does
 * not count towards a probe's timeout, so a busy or throttled proxy is not taken for a listener
 * that stopped accepting. (The probes themselves are tested with the listener in tls_test.ts.)
 */

import { assert, assertEquals } from "./_assert.ts";
import { onTimeClock } from "../src/self_probe.ts";

/** Holds the event loop for `ms`, as a long task or a stall would. */
function holdLoop(ms: number): void {
  const until = performance.now() + ms;
  while (performance.now() < until) { /* held */ }
}

Deno.test("onTimeClock: time the loop was held does not count; the timeout runs on after it", async () => {
  // Found by review: a probe timed by a plain timer took a throttled proxy (stopped 200 ms in
  // every 220) for one whose listener did not accept, and reopened a live listener.
  const started = performance.now();
  const { promise, resolve } = Promise.withResolvers<boolean>();
  onTimeClock(300, resolve);
  holdLoop(600);
  const onTime = await promise;
  const took = performance.now() - started;
  assertEquals(onTime, true);
  assert(took >= 800, `done after ${Math.round(took)} ms: the held 600 ms counted`);
});

Deno.test("onTimeClock: a loop held again and again gives up (finds nothing) rather than time out", async () => {
  const { promise, resolve } = Promise.withResolvers<boolean>();
  const stop = onTimeClock(200, resolve);
  let held = true;
  const holder = setInterval(() => held && holdLoop(150), 10);
  try {
    assertEquals(await promise, false);
  } finally {
    held = false;
    clearInterval(holder);
    stop();
  }
});

Deno.test("onTimeClock: on an idle loop it ends after its time, and stop() ends it without a call", async () => {
  const started = performance.now();
  const { promise, resolve } = Promise.withResolvers<boolean>();
  onTimeClock(200, resolve);
  assertEquals(await promise, true);
  const took = performance.now() - started;
  assert(took >= 200 && took < 600, `done after ${Math.round(took)} ms`);
  let called = false;
  const stop = onTimeClock(100, () => called = true);
  stop();
  await new Promise((r) => setTimeout(r, 200));
  assertEquals(called, false);
});
