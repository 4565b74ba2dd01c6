/** What a pool learns of its upstream's greeting (`src/greeting.ts`), on real loopback connections. */

import { GreetingWatch, GREETS_REASON, MIN_GREETING_WINDOW_MS } from "../src/greeting.ts";
import { UpstreamConn } from "../src/upstream_conn.ts";
import { assert, assertEquals } from "./_assert.ts";
import { captureLog } from "./_log.ts";
import { connect, delay, echo, encoder, eventually, TestUpstream, writeAll } from "./_net.ts";

Deno.test("greeting watch: a connection that stays silent through the window says the upstream does not greet", async () => {
  await using upstream = new TestUpstream(echo);
  const watch = new GreetingWatch(0, "upstream");
  assertEquals(watch.windowMs, MIN_GREETING_WINDOW_MS); // --reuse-settle 0 still watches
  const conn = new UpstreamConn(await connect(upstream.address));
  try {
    const started = performance.now();
    await watch.watch(conn, 0, new AbortController().signal);
    assert(performance.now() - started >= MIN_GREETING_WINDOW_MS - 1);
    assertEquals(watch.greets, false);
    assertEquals(watch.released(conn), undefined);
  } finally {
    conn.close();
    await conn.readerDone;
  }
});

Deno.test("greeting watch: a greeting in the window, or later before any write, says the upstream greets, with one warning", async () => {
  await using upstream = new TestUpstream(async (conn) => {
    await writeAll(conn, encoder.encode("220 hello\r\n"));
    await echo(conn);
  });
  const lines = await captureLog(async () => {
    const watch = new GreetingWatch(5, "upstream");
    const first = new UpstreamConn(await connect(upstream.address));
    const second = new UpstreamConn(await connect(upstream.address));
    try {
      await watch.watch(first, 0, new AbortController().signal);
      assertEquals(watch.greets, true);
      assertEquals(watch.released(first), GREETS_REASON);
      await eventually(() => second.spokeFirst, 3_000, "the second connection was greeted");
      assertEquals(watch.released(second), GREETS_REASON);
    } finally {
      for (const conn of [first, second]) {
        conn.close();
        await conn.readerDone;
      }
    }
  });
  assertEquals(lines.filter((line) => line.includes("speaks first")).length, 1, lines.join("\n"));
});

Deno.test("greeting watch: a connection the upstream refused (spoke and closed), one closed early, or a watch the pool gave up on teaches nothing", async () => {
  await using upstream = new TestUpstream(async (conn, index) => {
    if (index === 0) return await writeAll(conn, encoder.encode("-ERR max clients\r\n"));
    await echo(conn);
  });
  const watch = new GreetingWatch(5, "upstream");
  const refused = new UpstreamConn(await connect(upstream.address));
  const abandoned = new UpstreamConn(await connect(upstream.address));
  try {
    await watch.watch(refused, 0, new AbortController().signal);
    assertEquals(watch.greets, undefined);
    assertEquals(watch.released(refused), undefined);
    // Aborted (the pool closes): the watch ends at once and learns nothing.
    const closing = new AbortController();
    const watching = watch.watch(abandoned, 10_000, closing.signal);
    await delay(1);
    closing.abort();
    await watching;
    assertEquals(watch.known, false);
    // Closed by the proxy within the window (its client left at once): not watched that long.
    const closedEarly = new UpstreamConn(await connect(upstream.address));
    const watchingClosed = watch.watch(closedEarly, 0, new AbortController().signal);
    closedEarly.close();
    await watchingClosed;
    await closedEarly.readerDone;
    assertEquals(watch.known, false);
  } finally {
    for (const conn of [refused, abandoned]) {
      conn.close();
      await conn.readerDone;
    }
  }
});
