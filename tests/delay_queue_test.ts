/** The delay queue on its own: order, timing, batching, clear. */

import { assert, assertEquals, assertGreaterOrEqual, assertThrows } from "./_assert.ts";
import { DelayQueue } from "../src/delay_queue.ts";
import { delay, eventually } from "./_net.ts";

Deno.test("delay queue calls back each item once, in the order added, no sooner than the delay", async () => {
  const due: [string, number][] = [];
  const start = performance.now();
  const queue = new DelayQueue<string>(20, (item) => due.push([item, performance.now() - start]));
  queue.add("a");
  queue.add("b");
  await delay(5);
  queue.add("c");
  assertEquals(queue.size, 3);
  await eventually(() => due.length === 3, 2_000, "all three due");
  assertEquals(due.map(([item]) => item), ["a", "b", "c"]);
  for (const [item, at] of due) assertGreaterOrEqual(at, item === "c" ? 25 : 20);
  assertEquals(queue.size, 0);
  queue.clear();
});

Deno.test("delay queue handles items that fall due close together in one batch", async () => {
  const batches: number[] = [];
  let last = -1;
  const queue = new DelayQueue<number>(30, () => {
    const now = Math.floor(performance.now());
    if (now !== last) batches.push(0);
    batches[batches.length - 1]++;
    last = now;
  });
  for (let i = 0; i < 10; i++) {
    queue.add(i);
    await delay(1);
  }
  await eventually(() => batches.reduce((a, b) => a + b, 0) === 10, 2_000, "all ten due");
  assert(batches.length < 10, `expected batches, got ${JSON.stringify(batches)}`);
  queue.clear();
});

Deno.test("delay queue clear drops the items and stops its timer", async () => {
  const due: number[] = [];
  const queue = new DelayQueue<number>(10, (item) => due.push(item));
  queue.add(1);
  queue.clear();
  await delay(30);
  assertEquals(due, []);
  assertEquals(queue.size, 0);
});

Deno.test("delay queue rejects a delay that is not above 0", () => {
  assertThrows(() => new DelayQueue<number>(0, () => {}), RangeError);
});

Deno.test("DelayQueue tells how late its timer ran: after a stall, by about the stall", async () => {
  const late: number[] = [];
  const { promise, resolve } = Promise.withResolvers<void>();
  const queue = new DelayQueue<number>(5, (_item, lateMs) => {
    late.push(lateMs);
    resolve();
  });
  queue.add(1);
  const until = performance.now() + 40;
  while (performance.now() < until) {
    // a stall: the timer falls due at 5 ms and cannot run until 40
  }
  await promise;
  assert(late[0] >= 30, `late by ${late[0]} ms`);
  queue.clear();
});
