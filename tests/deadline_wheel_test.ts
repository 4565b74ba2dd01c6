/**
 * The timer wheel behind the inactivity timeouts: one timer for every session, deadlines re-read
 * lazily, never early, and no timer left running once it is empty.
 */

import { assert, assertEquals, assertGreaterOrEqual, assertThrows } from "./_assert.ts";
import { DeadlineWheel } from "../src/deadline_wheel.ts";
import { delay, eventually } from "./_net.ts";

class Idle {
  lastActive = performance.now();
  firedAt: number | undefined;
  constructor(readonly timeoutMs: number) {}
  dueAt(): number {
    return this.lastActive + this.timeoutMs;
  }
  onDue(now: number): void {
    this.firedAt = now;
  }
}

Deno.test("the wheel fires an item once its deadline has passed, never before", async () => {
  const wheel = new DeadlineWheel<Idle>(10);
  const item = new Idle(60);
  const added = performance.now();
  wheel.add(item);
  await eventually(() => item.firedAt !== undefined, 2_000, "fired");
  assertGreaterOrEqual(item.firedAt! - added, 60);
  assertEquals(wheel.size, 0);
});

Deno.test("activity recorded in the item postpones its deadline without touching the wheel", async () => {
  const wheel = new DeadlineWheel<Idle>(10);
  const item = new Idle(80);
  wheel.add(item);
  for (let i = 0; i < 6; i++) {
    await delay(40);
    item.lastActive = performance.now();
  }
  assertEquals(item.firedAt, undefined, "an active item must not time out");
  const quietFrom = item.lastActive;
  await eventually(() => item.firedAt !== undefined, 2_000, "fired after going quiet");
  assertGreaterOrEqual(item.firedAt! - quietFrom, 80);
});

Deno.test("a deleted item never fires, and an empty wheel stops its timer", async () => {
  const wheel = new DeadlineWheel<Idle>(10);
  const kept = new Idle(30);
  const deleted = new Idle(30);
  wheel.add(kept);
  wheel.add(deleted);
  wheel.delete(deleted);
  wheel.delete(deleted); // twice is harmless
  await eventually(() => kept.firedAt !== undefined, 2_000, "kept fired");
  await delay(50);
  assertEquals(deleted.firedAt, undefined);
  // The op sanitizer fails this test if a timer were still pending here.
});

Deno.test("an item added with a deadline already past fires at the next tick", async () => {
  const wheel = new DeadlineWheel<Idle>(20);
  const item = new Idle(10);
  item.lastActive -= 1_000;
  wheel.add(item);
  await eventually(() => item.firedAt !== undefined, 500, "fired");
});

Deno.test("an item whose deadline moves earlier is added again, and then fires by the new one", async () => {
  const wheel = new DeadlineWheel<Idle>(10);
  const item = new Idle(Infinity);
  wheel.add(item);
  await delay(40);
  assertEquals(item.firedAt, undefined);
  (item as { timeoutMs: number }).timeoutMs = 20;
  wheel.add(item); // a shorter timeout started
  await eventually(() => item.firedAt !== undefined, 1_000, "fired once it had a deadline");
  assertEquals(wheel.size, 0);
});

Deno.test("adding an item that is filed no later than its deadline changes nothing", async () => {
  const wheel = new DeadlineWheel<Idle>(10);
  const item = new Idle(40);
  wheel.add(item);
  item.lastActive += 1_000; // activity: the deadline moved later
  wheel.add(item); // cheap: found by the lazy re-read when the early slot comes up
  await delay(100);
  assertEquals(item.firedAt, undefined);
  wheel.delete(item);
  assertEquals(wheel.size, 0);
});

Deno.test("10,000 items cost one timer, and each fires once", async () => {
  const wheel = new DeadlineWheel<Idle>(10);
  const items = Array.from({ length: 10_000 }, (_, i) => new Idle(20 + (i % 50)));
  for (const item of items) wheel.add(item);
  await eventually(() => items.every((item) => item.firedAt !== undefined), 3_000, "all fired");
  assert(items.every((item) => item.firedAt! >= item.dueAt()), "none early");
  assertEquals(wheel.size, 0);
  wheel.clear();
});

Deno.test("the wheel refuses a resolution that is not positive", () => {
  assertThrows(() => new DeadlineWheel(0), RangeError);
});
