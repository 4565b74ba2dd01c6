/**
 * onAbort (src/abort.ts): abort callbacks on a shared signal, one listener per signal, callbacks
 * in a Set, each one removable in constant time; a callback that throws is reported, never
 * thrown into the event dispatch, and does not keep the others from running.
 */

import { assertEquals, assertStringIncludes } from "./_assert.ts";
import { anyAborted, onAbort, onAnyAbort } from "../src/abort.ts";
import { unexpectedErrors } from "../src/failsafe.ts";
import { captureLog } from "./_log.ts";

Deno.test("onAbort calls every callback still registered, once, with the reason", () => {
  const controller = new AbortController();
  const calls: string[] = [];
  const stops = ["a", "b", "c"].map((name) =>
    onAbort(controller.signal, (reason) => calls.push(`${name}:${reason}`))
  );
  stops[1](); // removed before the abort
  stops[1](); // a second removal does nothing
  controller.abort("closing");
  controller.abort("again"); // a signal aborts once
  assertEquals(calls, ["a:closing", "c:closing"]);
  stops[0](); // after the abort: harmless
});

Deno.test("onAbort: thousands of callbacks on one signal come and go, and the last ones still run", () => {
  const controller = new AbortController();
  let called = 0;
  for (let i = 0; i < 10_000; i++) onAbort(controller.signal, () => called++)();
  const kept = [
    onAbort(controller.signal, () => called++),
    onAbort(controller.signal, () => called++),
  ];
  controller.abort();
  assertEquals(called, 2);
  kept.forEach((stop) => stop());
});

Deno.test("onAbort: a callback that throws is reported at error and the others still run", async () => {
  const calls: number[] = [];
  const before = unexpectedErrors();
  const lines = await captureLog(() => {
    const controller = new AbortController();
    onAbort(controller.signal, () => calls.push(1));
    onAbort(controller.signal, () => {
      throw new Error("a faulty callback");
    });
    onAbort(controller.signal, () => calls.push(3));
    controller.abort();
  });
  assertEquals(calls, [1, 3]);
  assertEquals(unexpectedErrors(), before + 1);
  assertStringIncludes(lines.join("\n"), 'unexpected error in "an abort callback"');
});

Deno.test("onAnyAbort calls back when any of its signals aborts, and one stop removes it from all", () => {
  const first = new AbortController();
  const second = new AbortController();
  const reasons: unknown[] = [];
  const stop = onAnyAbort([first.signal, second.signal], (reason) => reasons.push(reason));
  assertEquals(anyAborted([first.signal, second.signal]), false);
  second.abort("second");
  assertEquals(reasons, ["second"]);
  assertEquals(anyAborted([first.signal, second.signal]), true);
  stop();
  first.abort("first");
  assertEquals(reasons, ["second"]);
});
