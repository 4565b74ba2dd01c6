import { AsyncQueue, QueueClosedError } from "../src/async_queue.ts";
import {
  assert,
  assertEquals,
  assertFalse,
  assertRejects,
  assertStrictEquals,
  assertThrows,
} from "./_assert.ts";

/** Lets every queued promise reaction run (resolved takes settle within a few microtasks). */
function settle(): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, 0));
}

/** Tracks whether a promise has settled, without awaiting it. */
function track<T>(promise: Promise<T>): { readonly settled: boolean; promise: Promise<T> } {
  const state = { settled: false, promise };
  promise.then(() => state.settled = true, () => state.settled = true);
  return state;
}

Deno.test("offer holds items up to the capacity and refuses when full", () => {
  const queue = new AsyncQueue<number>({ capacity: 2 });
  assertEquals(queue.capacity, 2);
  assert(queue.offer(1));
  assert(queue.offer(2));
  assertFalse(queue.offer(3), "a full queue refuses");
  assertEquals(queue.size, 2);
  assertEquals(queue.snapshot(), [1, 2], "the refused item was not held");
  assertEquals(queue.tryTake(), 1);
  assert(queue.offer(3), "taking one makes room for one");
  assertFalse(queue.offer(4));
  assertEquals(queue.snapshot(), [2, 3]);
});

Deno.test("a queue of capacity 0 holds nothing but still hands items to waiters", async () => {
  const queue = new AsyncQueue<string>({ capacity: 0 });
  assertFalse(queue.offer("dropped"));
  assertEquals(queue.size, 0);
  const taking = queue.take();
  assert(queue.offer("handed"), "a waiter takes the item even though nothing can be held");
  assertEquals(await taking, "handed");
  assertEquals(queue.size, 0);
});

Deno.test("fifo order (the default) hands out the oldest item first", () => {
  const queue = new AsyncQueue<string>({ capacity: 3 });
  for (const item of ["a", "b", "c"]) queue.offer(item);
  assertEquals([queue.tryTake(), queue.tryTake(), queue.tryTake()], ["a", "b", "c"]);
});

Deno.test("lifo order hands out the most recently offered item first", () => {
  const queue = new AsyncQueue<string>({ capacity: 3, order: "lifo" });
  for (const item of ["a", "b", "c"]) queue.offer(item);
  assertEquals(queue.tryTake(), "c");
  queue.offer("d");
  assertEquals([queue.tryTake(), queue.tryTake(), queue.tryTake()], ["d", "b", "a"]);
});

Deno.test("tryTake on an empty queue returns undefined without waiting", () => {
  const queue = new AsyncQueue<number>({ capacity: 1 });
  assertStrictEquals(queue.tryTake(), undefined);
  assertEquals(queue.waiting, 0, "tryTake does not register a waiter");
  queue.offer(0);
  assertStrictEquals(queue.tryTake(), 0, "a falsy item is still an item");
  assertStrictEquals(queue.tryTake(), undefined);
});

Deno.test("take returns a held item at once", async () => {
  const queue = new AsyncQueue<string>({ capacity: 2, order: "lifo" });
  queue.offer("old");
  queue.offer("new");
  assertEquals(await queue.take(), "new");
  assertEquals(queue.size, 1);
  assertEquals(queue.waiting, 0);
});

Deno.test("take on an empty queue waits and a later offer goes to the waiter, not the buffer", async () => {
  const queue = new AsyncQueue<string>({ capacity: 5 });
  const taking = track(queue.take());
  await settle();
  assertFalse(taking.settled, "take waits while the queue is empty");
  assertEquals(queue.waiting, 1);
  assert(queue.offer("x"));
  assertEquals(await taking.promise, "x");
  assertEquals(queue.size, 0, "the item was handed over, not held");
  assertEquals(queue.waiting, 0);
  assertEquals(queue.snapshot(), []);
});

Deno.test("waiters are served in the order they started waiting, whatever the item order", async () => {
  const queue = new AsyncQueue<string>({ capacity: 3, order: "lifo" });
  const first = queue.take();
  const second = queue.take();
  const third = queue.take();
  assertEquals(queue.waiting, 3);
  queue.offer("a");
  queue.offer("b");
  queue.offer("c");
  assertEquals(await Promise.all([first, second, third]), ["a", "b", "c"]);
  assertEquals(queue.waiting, 0);
  assertEquals(queue.size, 0);
});

Deno.test("take with an aborted signal rejects with the signal's reason", async () => {
  const queue = new AsyncQueue<number>({ capacity: 1 });
  const reason = new Error("caller gave up");
  const controller = new AbortController();
  controller.abort(reason);
  const error = await assertRejects(() => queue.take(controller.signal));
  assertStrictEquals(error, reason);
  assertEquals(queue.waiting, 0);
});

Deno.test("take with an already aborted signal still returns a held item", async () => {
  const queue = new AsyncQueue<number>({ capacity: 1 });
  queue.offer(7);
  const controller = new AbortController();
  controller.abort(new Error("too late"));
  assertEquals(await queue.take(controller.signal), 7);
});

Deno.test("aborting a waiting take rejects it with the reason, and a later offer is held, not lost", async () => {
  const queue = new AsyncQueue<string>({ capacity: 2 });
  const controller = new AbortController();
  const taking = queue.take(controller.signal);
  assertEquals(queue.waiting, 1);
  const reason = new DOMException("timed out waiting", "TimeoutError");
  controller.abort(reason);
  const error = await assertRejects(() => taking);
  assertStrictEquals(error, reason);
  assertEquals(queue.waiting, 0, "the aborted waiter is removed");
  assert(queue.offer("kept"));
  assertEquals(queue.size, 1, "the offer was held, not handed to the gone waiter");
  assertEquals(queue.tryTake(), "kept");
});

Deno.test("aborting one waiter leaves the others waiting in order", async () => {
  const queue = new AsyncQueue<string>({ capacity: 2 });
  const controller = new AbortController();
  const first = queue.take();
  const aborted = queue.take(controller.signal);
  const third = queue.take();
  controller.abort(new Error("no longer wanted"));
  await assertRejects(() => aborted, Error, "no longer wanted");
  assertEquals(queue.waiting, 2);
  queue.offer("a");
  queue.offer("b");
  assertEquals(await Promise.all([first, third]), ["a", "b"]);
});

Deno.test("a take that was served ignores a later abort of its signal", async () => {
  const queue = new AsyncQueue<string>({ capacity: 1 });
  const controller = new AbortController();
  const taking = queue.take(controller.signal);
  queue.offer("served");
  controller.abort(new Error("after the fact"));
  assertEquals(await taking, "served");
  assert(queue.offer("next"));
  assertEquals(queue.size, 1);
});

Deno.test("close rejects every waiter with QueueClosedError", async () => {
  const queue = new AsyncQueue<number>({ capacity: 1 });
  const first = queue.take();
  const second = queue.take(new AbortController().signal);
  assertEquals(queue.close(), []);
  assert(queue.closed);
  assertEquals(queue.waiting, 0);
  await assertRejects(() => first, QueueClosedError);
  await assertRejects(() => second, QueueClosedError);
});

Deno.test("close returns the held items and empties the queue", () => {
  const queue = new AsyncQueue<string>({ capacity: 3, order: "lifo" });
  queue.offer("a");
  queue.offer("b");
  assertEquals(queue.close(), ["a", "b"]);
  assertEquals(queue.size, 0);
  assertEquals(queue.snapshot(), []);
  assertEquals(queue.close(), [], "a second close returns nothing");
});

Deno.test("after close, offers refuse and takes reject", async () => {
  const queue = new AsyncQueue<string>({ capacity: 3 });
  queue.offer("held");
  queue.close();
  assertFalse(queue.offer("late"), "the caller keeps a refused item");
  assertEquals(queue.size, 0);
  const error = await assertRejects(() => queue.take(), QueueClosedError, "closed");
  assertEquals(error.name, "QueueClosedError");
  assertStrictEquals(queue.tryTake(), undefined);
});

Deno.test("remove takes out one held item and says whether it was there", () => {
  const queue = new AsyncQueue<string>({ capacity: 3 });
  for (const item of ["a", "b", "c"]) queue.offer(item);
  assert(queue.remove("b"));
  assertFalse(queue.remove("b"), "already gone");
  assertFalse(queue.remove("z"), "never there");
  assertEquals(queue.snapshot(), ["a", "c"]);
  assert(queue.offer("d"), "removing made room");
});

Deno.test("remove finds items by identity", () => {
  const first = { id: 1 };
  const queue = new AsyncQueue<{ id: number }>({ capacity: 2 });
  queue.offer(first);
  assertFalse(queue.remove({ id: 1 }), "an equal but different object is not removed");
  assert(queue.remove(first));
  assertEquals(queue.size, 0);
});

Deno.test("removeWhere removes and returns every matching item, oldest first", () => {
  const queue = new AsyncQueue<number>({ capacity: 6, order: "lifo" });
  for (const n of [1, 2, 3, 4, 5, 6]) queue.offer(n);
  assertEquals(queue.removeWhere((n) => n % 2 === 0), [2, 4, 6]);
  assertEquals(queue.snapshot(), [1, 3, 5]);
  assertEquals(queue.removeWhere(() => false), []);
  assertEquals(queue.tryTake(), 5, "lifo order is kept among the rest");
});

Deno.test("snapshot lists the held items oldest first, and changing it does not change the queue", () => {
  const queue = new AsyncQueue<string>({ capacity: 3, order: "lifo" });
  queue.offer("a");
  queue.offer("b");
  const snapshot = queue.snapshot();
  assertEquals(snapshot, ["a", "b"]);
  snapshot.push("c");
  snapshot.length = 0;
  assertEquals(queue.snapshot(), ["a", "b"]);
  assertEquals(queue.size, 2);
});

Deno.test("the constructor rejects a capacity that is not a whole number >= 0", () => {
  for (const capacity of [-1, 1.5, Number.NaN, Infinity]) {
    const error = assertThrows(() => new AsyncQueue({ capacity }), RangeError, "capacity");
    assert(error.message.includes(String(capacity)), error.message);
  }
  assertEquals(new AsyncQueue({ capacity: 0 }).capacity, 0);
});
