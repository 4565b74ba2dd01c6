/**
 * What the proxy logs, captured in-process: the tests that check a warning, an info line or a
 * report run the code with logging configured and `Deno.stderr.writeSync` taken over.
 */

import { configureLogging, resetLogging } from "../src/logging.ts";

/**
 * Runs `fn` with the proxy's logging at `info` in `format`, and returns the lines written to
 * stderr meanwhile. `fn` is given the same array, filled as lines are written (to wait for one).
 */
export async function captureLog(
  fn: (lines: string[]) => unknown,
  format: "text" | "json" = "text",
): Promise<string[]> {
  const lines: string[] = [];
  const originalWrite = Deno.stderr.writeSync;
  configureLogging({ level: "info", format });
  Deno.stderr.writeSync = (bytes: Uint8Array) => {
    const text = new TextDecoder().decode(bytes);
    for (const line of text.split("\n")) if (line !== "") lines.push(line);
    return bytes.length;
  };
  try {
    await fn(lines);
  } finally {
    Deno.stderr.writeSync = originalWrite;
    resetLogging();
  }
  return lines;
}
