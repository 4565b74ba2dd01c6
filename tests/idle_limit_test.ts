/**
 * Learning the upstream's idle limit: the rule on its own, and a pool in front of an upstream
 * that closes connections idle for 400 ms, which then retires them itself before that.
 */

import { assert, assertEquals, assertLess } from "./_assert.ts";
import { IdleLimitLearner } from "../src/idle_limit.ts";
import { captureLog } from "./_log.ts";
import { delay, echo, eventually, startProxy, TestUpstream } from "./_net.ts";

/** Feeds `learner` closes of `idleMs`, one second apart from `clock.at` on. */
function closes(learner: IdleLimitLearner, clock: { at: number }, ...idleMs: number[]): void {
  for (const ms of idleMs) learner.observe(ms, clock.at += 1_000);
}

Deno.test("three agreeing idle closes make a limit, retired at 90% of the shortest", () => {
  const learned: [number, number][] = [];
  const learner = new IdleLimitLearner((closes, retire) => learned.push([closes, retire]));
  const clock = { at: 0 };
  closes(learner, clock, 10_020, 10_003);
  assertEquals(learner.retireAfterMs, Infinity, "two are not enough");
  closes(learner, clock, 10_011);
  assertEquals(learner.retireAfterMs, 9_002);
  assertEquals(learned, [[10_003, 9_002]]);
  // A lower limit later is learned again; a higher one changes nothing.
  closes(learner, clock, 5_000, 5_010, 5_005);
  assertEquals(learner.retireAfterMs, 4_500);
  closes(learner, clock, 20_000, 20_000, 20_000);
  assertEquals(learner.retireAfterMs, 4_500);
  assertEquals(learned.length, 2);
});

Deno.test("closes that disagree, or come too soon to be a timeout, teach nothing", () => {
  const learner = new IdleLimitLearner(() => {});
  closes(learner, { at: 0 }, 500, 900, 300, 700, 1_200);
  assertEquals(learner.retireAfterMs, Infinity);
  const quick = new IdleLimitLearner(() => {});
  closes(quick, { at: 0 }, 20, 21, 20);
  assertEquals(quick.retireAfterMs, Infinity);
});

Deno.test("closes at one moment (an upstream restart) are one observation, however well their idle times agree", () => {
  const learner = new IdleLimitLearner(() => {});
  // Ten connections left idle together by a burst of sessions, closed by a restart.
  for (let i = 0; i < 10; i++) learner.observe(513 + i, 5_000 + i * 2);
  assertEquals(learner.retireAfterMs, Infinity);
  // Two more restarts later, each closing several at once: three events, but they agree only
  // if the upstream really closes at that age, which these do not.
  for (let i = 0; i < 5; i++) learner.observe(2_000 + i, 20_000 + i);
  for (let i = 0; i < 5; i++) learner.observe(7_000 + i, 40_000 + i);
  assertEquals(learner.retireAfterMs, Infinity);
  // Three separate closes that agree still teach the limit.
  closes(learner, { at: 60_000 }, 10_000, 10_050, 10_020);
  assertEquals(learner.retireAfterMs, 9_000);
});

Deno.test("a warm pool learns that the upstream closes idle connections after 400 ms, says so once, and retires them first", async () => {
  let closedByUpstream = 0;
  let closedByProxy = 0;
  // Closes a connection idle for 400 ms, as Redis with `timeout` or MariaDB's connect_timeout.
  await using upstream = new TestUpstream(async (conn) => {
    const buffer = new Uint8Array(1024);
    while (true) {
      let timer: ReturnType<typeof setTimeout> | undefined;
      const idle = new Promise<"idle">((resolve) => timer = setTimeout(() => resolve("idle"), 400));
      let read: number | null | "idle";
      try {
        read = await Promise.race([conn.read(buffer), idle]);
      } finally {
        clearTimeout(timer);
      }
      if (read === "idle") {
        closedByUpstream++;
        return; // TestUpstream closes it
      }
      if (read === null) {
        closedByProxy++;
        return;
      }
      await echo(conn);
      return;
    }
  });
  const lines = await captureLog(async (lines) => {
    await using proxy = startProxy(upstream.address, {
      pool: "warm",
      minIdle: 2,
      refillProbationMs: 100,
    });
    await eventually(
      () => lines.some((l) => l.includes("closes idle connections after about")),
      5_000,
      "the limit was learned",
    );
    const upstreamClosesWhenLearned = closedByUpstream;
    await delay(1_500);
    // From now on the proxy retires them (at 360 ms) before the upstream's 400 ms.
    assertLess(closedByUpstream - upstreamClosesWhenLearned, 2);
    assert(closedByProxy >= 2, `the proxy retired ${closedByProxy}`);
    void proxy;
  });
  const learned = lines.filter((l) => l.includes("closes idle connections after about"));
  assertEquals(learned.length, 1, lines.join("\n"));
  assert(/after about 4\d\dms; retiring them at 3\d\dms/.test(learned[0]), learned[0]);
});

Deno.test("an upstream idle limit shorter than the refill probation: refills back off instead of redialling each ready connection at that pace", async () => {
  let accepted = 0;
  // Closes a connection idle for 150 ms: once learned, the proxy retires its idle ones at 135 ms.
  await using upstream = new TestUpstream(async (conn) => {
    accepted++;
    const buffer = new Uint8Array(1024);
    let timer: ReturnType<typeof setTimeout> | undefined;
    const idle = new Promise<"idle">((resolve) => timer = setTimeout(() => resolve("idle"), 150));
    try {
      await Promise.race([conn.read(buffer), idle]);
    } finally {
      clearTimeout(timer);
    }
  });
  const lines = await captureLog(async (lines) => {
    await using proxy = startProxy(upstream.address, { pool: "warm", minIdle: 4 });
    await eventually(
      () => lines.some((l) => l.includes("closes idle connections after about")),
      5_000,
      "the limit was learned",
    );
    const learnedAt = accepted;
    await delay(3_000);
    // Redialled at the limit's pace this would be 4 every 135 ms: about 90 in 3 s. With the
    // backoff (100 ms doubling to 5 s after each failed round), a handful of rounds of 4.
    assertLess(accepted - learnedAt, 40, `${accepted - learnedAt} dials in 3 s`);
    void proxy;
  });
  // One warning for the episode (its first failure, the upstream's own closes before the limit
  // was learned), not one per round.
  const warnings = lines.filter((l) => l.includes("cannot keep idle connections ready"));
  assertEquals(warnings.length, 1, lines.join("\n"));
});
