/**
 * The opening check (`src/opening_check.ts`) against small upstreams on loopback that answer
 * memcached's `version` in every way that matters: served, asking for a login, something else,
 * in pieces, more than one line, not at all, or by closing.
 */

import { assertEquals, assertRejects, assertStringIncludes } from "./_assert.ts";
import { decoder, delay, encoder, TestUpstream, writeAll } from "./_net.ts";
import { UpstreamConnectError } from "../src/dial.ts";
import { checkOpening, MEMCACHED_OPENING_CHECK } from "../src/opening_check.ts";

/** An upstream that reads the check's command, then answers with each of `parts` in turn. */
function answering(...parts: string[]): TestUpstream {
  return new TestUpstream(async (conn) => {
    const buffer = new Uint8Array(64);
    let got = "";
    while (!got.endsWith("\r\n")) {
      const n = await conn.read(buffer);
      if (n === null) return;
      got += decoder.decode(buffer.subarray(0, n));
    }
    assertEquals(got, "version\r\n");
    for (const part of parts) {
      await writeAll(conn, encoder.encode(part));
      await delay(20);
    }
    // Holds the connection until the test closes its side.
    while (await conn.read(buffer) !== null) { /* nothing more is expected */ }
  });
}

/** Runs the memcached check against `upstream` over a real connection. */
async function check(upstream: TestUpstream, timeoutMs = 2_000, signals: AbortSignal[] = []) {
  const socket = await Deno.connect(upstream.address);
  try {
    return await checkOpening(
      socket,
      MEMCACHED_OPENING_CHECK,
      upstream.address,
      timeoutMs,
      signals,
    );
  } finally {
    try {
      socket.close();
    } catch { /* closed by a failed check */ }
  }
}

/** Asserts that the check fails with `failure`, in a message that includes `text`. */
async function assertFails(
  run: Promise<unknown>,
  failure: UpstreamConnectError["failure"],
  text: string,
): Promise<void> {
  const error = await assertRejects(() => run, UpstreamConnectError);
  assertEquals(error.failure, failure, error.message);
  assertStringIncludes(error.message, text);
}

Deno.test("opening check: VERSION serves, also when it comes in pieces", async () => {
  await using whole = answering("VERSION 1.6.18\r\n");
  assertEquals(await check(whole), "serves");
  await using pieces = answering("VERS", "ION 1.4.", "5\r", "\n");
  assertEquals(await check(pieces), "serves");
});

Deno.test("opening check: CLIENT_ERROR unauthenticated asks for a login", async () => {
  await using upstream = answering("CLIENT_ERROR unauthenticated\r\n");
  assertEquals(await check(upstream), "asks-login");
});

Deno.test("opening check: any other answer, or more than one line, fails the dial and says what came", async () => {
  await using error = answering("ERROR\r\n");
  await assertFails(check(error), "error", 'answered memcached `version` with "ERROR\\r\\n"');
  await using twoLines = answering("VERSION 1.6.18\r\nVERSION 1.6.18\r\n");
  await assertFails(check(twoLines), "error", "answered memcached `version`");
  await using endless = answering("x".repeat(600));
  await assertFails(check(endless), "error", "...: not the protocol of --protocol?");
});

Deno.test("opening check: an upstream that closes first, never answers, or a dial given up on", async () => {
  await using closing = new TestUpstream(async () => {});
  await assertFails(check(closing), "closed", "closed the connection before answering");
  await using silent = answering();
  await assertFails(check(silent, 100), "timeout", "timed out after 100ms");
  const controller = new AbortController();
  setTimeout(() => controller.abort(), 50);
  await assertFails(check(silent, 2_000, [controller.signal]), "aborted", "aborted");
  await assertFails(check(silent, 2_000, [AbortSignal.abort()]), "aborted", "aborted");
});
