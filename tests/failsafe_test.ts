/**
 * The failsafe: an error that escaped its owner is logged and counted, and the process goes on.
 */

import { assertEquals, assertStringIncludes } from "./_assert.ts";
import { installFailsafe, unexpectedErrors } from "../src/failsafe.ts";
import { delay } from "./_net.ts";
import { configureLogging, resetLogging } from "../src/logging.ts";

Deno.test("an unhandled rejection is counted and logged at error, and the process goes on", async () => {
  const lines: string[] = [];
  const originalWrite = Deno.stderr.writeSync;
  configureLogging({ level: "info", format: "text" });
  const uninstall = installFailsafe();
  const before = unexpectedErrors();
  Deno.stderr.writeSync = (bytes: Uint8Array) => {
    lines.push(new TextDecoder().decode(bytes));
    return bytes.length;
  };
  try {
    void Promise.reject(new Error("nobody owns this promise"));
    await delay(20);
  } finally {
    Deno.stderr.writeSync = originalWrite;
    uninstall();
    resetLogging();
  }
  assertEquals(unexpectedErrors(), before + 1);
  const line = lines.join("");
  assertStringIncludes(line, "[ERR]");
  assertStringIncludes(line, 'unexpected error in "unhandled rejection"');
  assertStringIncludes(line, "nobody owns this promise");
  assertStringIncludes(line, "failsafe_test.ts"); // the stack, on the same line
  assertEquals(line.trimEnd().split("\n").length, 1, line);
});
