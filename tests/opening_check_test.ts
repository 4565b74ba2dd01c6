/**
 * The opening check (`src/opening_check.ts`) against small upstreams on loopback that answer
 * memcached's `version` in every way that matters: served, asking for a login, something else,
 * in pieces, more than one line, not at all, or by closing; and what the pool makes of an answer
 * it does not know (a login, against a real memcached -Y, is in `reuse_memcached_test.ts`).
 */

import {
  assert,
  assertEquals,
  assertNotEquals,
  assertRejects,
  assertStringIncludes,
} from "./_assert.ts";
import {
  closeQuietly,
  connect,
  decoder,
  delay,
  encoder,
  readExactly,
  startProxy,
  TestUpstream,
  writeAll,
} from "./_net.ts";
import { captureLog } from "./_log.ts";
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

/** An upstream that calls `answer` for each `\r\n`-ended line of each connection `index`. */
function lineByLine(
  answer: (conn: Deno.TcpConn, line: string, index: number) => Promise<void>,
): TestUpstream {
  return new TestUpstream(async (conn, index) => {
    const buffer = new Uint8Array(256);
    let pending = "";
    while (true) {
      const n = await conn.read(buffer);
      if (n === null) return;
      pending += decoder.decode(buffer.subarray(0, n));
      for (let end = pending.indexOf("\r\n"); end >= 0; end = pending.indexOf("\r\n")) {
        const line = pending.slice(0, end);
        pending = pending.slice(end + 2);
        await answer(conn, line, index);
      }
    }
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
  assertEquals(await check(whole), { verdict: "serves", line: "VERSION 1.6.18" });
  await using pieces = answering("VERS", "ION 1.4.", "5\r", "\n");
  assertEquals(await check(pieces), { verdict: "serves", line: "VERSION 1.4.5" });
});

Deno.test("opening check: CLIENT_ERROR unauthenticated asks for a login", async () => {
  await using upstream = answering("CLIENT_ERROR unauthenticated\r\n");
  assertEquals(await check(upstream), {
    verdict: "asks-login",
    line: "CLIENT_ERROR unauthenticated",
  });
});

Deno.test("opening check: another line is unexpected; more than one line, or one too long, fails the dial", async () => {
  await using error = answering("ERROR\r\n");
  assertEquals(await check(error), { verdict: "unexpected", line: "ERROR" });
  // A second line would reach the first client as if the upstream had greeted it.
  await using twoLines = answering("VERSION 1.6.18\r\nVERSION 1.6.18\r\n");
  await assertFails(check(twoLines), "error", "not one line: not the protocol of --protocol?");
  await using endless = answering("x".repeat(600));
  await assertFails(check(endless), "error", '"xxxx');
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

Deno.test("opening check in the pool: an upstream that answers version unlike memcached serves each client on a connection of its own, with one warning", async () => {
  // Answers `version` with ERROR, and anything else (`mn`) with MN.
  await using upstream = lineByLine(async (conn, line) => {
    await writeAll(conn, encoder.encode(line === "version" ? "ERROR\r\n" : "MN\r\n"));
  });
  const lines = await captureLog(async () => {
    await using proxy = startProxy(upstream.address, { pool: "reuse", protocol: "memcached" });
    for (let i = 0; i < 2; i++) {
      const client = await connect(proxy.address);
      try {
        await writeAll(client, encoder.encode("mn\r\n"));
        assertEquals(decoder.decode(await readExactly(client, 4)), "MN\r\n");
      } finally {
        closeQuietly(client);
      }
      await proxy.sessionsEnded(i + 1);
      assertNotEquals(proxy.sessions[i].release, "pooled");
    }
  });
  assertEquals(upstream.accepted, 2, "a connection per client");
  const warnings = lines.filter((l) =>
    /answered .*version.* with "?ERROR"?, not as memcached does/.test(l)
  );
  assertEquals(warnings.length, 1, lines.join("\n"));
});

Deno.test("opening check: an abort that lands after the reply was read, before the check resumed, still fails it", async () => {
  const controller = new AbortController();
  let closes = 0;
  const reply = encoder.encode("VERSION 1.6.18\r\n");
  // A socket whose read has its reply, and an abort (a session ending, the pool closing) that
  // runs before the check's continuation, as another op's completion in the same batch would.
  const socket = {
    write: (p: Uint8Array) => Promise.resolve(p.length),
    closeWrite: () => Promise.resolve(),
    close: () => void closes++,
    read(p: Uint8Array): Promise<number | null> {
      p.set(reply);
      const read = Promise.resolve(reply.length);
      queueMicrotask(() => controller.abort("session ended"));
      return read;
    },
  };
  const address = { hostname: "127.0.0.1", port: 1 };
  const checking = checkOpening(socket, MEMCACHED_OPENING_CHECK, address, 1_000, [
    controller.signal,
  ]);
  await assertFails(checking, "aborted", "aborted");
  assert(closes >= 1, "the socket is closed");
});

Deno.test("opening check in the pool: bytes after the answer, in a later segment, reach no client; the session goes on over a fresh connection", async () => {
  // The first connection answers version, then 30 ms later sends a line nobody asked for;
  // every connection answers mn with MN.
  await using upstream = lineByLine(async (conn, line, index) => {
    await writeAll(conn, encoder.encode(line === "version" ? "VERSION 1.6.18\r\n" : "MN\r\n"));
    if (line === "version" && index === 0) {
      await delay(30);
      await writeAll(conn, encoder.encode("SERVER_ERROR injected\r\n"));
    }
  });
  await using proxy = startProxy(upstream.address, { pool: "reuse", protocol: "memcached" });
  const client = await connect(proxy.address);
  try {
    await delay(100); // the stray line has come by now
    await writeAll(client, encoder.encode("mn\r\n"));
    assertEquals(decoder.decode(await readExactly(client, 4)), "MN\r\n");
    await writeAll(client, encoder.encode("mn\r\n"));
    assertEquals(decoder.decode(await readExactly(client, 4)), "MN\r\n");
  } finally {
    closeQuietly(client);
  }
  await proxy.sessionsEnded(1);
  assertEquals(upstream.accepted, 2, "the first connection was replaced");
  assertEquals(proxy.sessions[0].retried, true);
});
