/** What a pool learns of its upstream's greeting (`src/greeting.ts`), on real loopback connections. */

import {
  GreetingWatch,
  GREETS_REASON,
  MAX_CONNECT_WINDOW_MS,
  MIN_GREETING_WINDOW_MS,
} from "../src/greeting.ts";
import { UpstreamConn } from "../src/upstream_conn.ts";
import { assert, assertEquals, assertRejects } from "./_assert.ts";
import { captureLog } from "./_log.ts";
import { processUpstream } from "./_servers.ts";
import { connect, delay, echo, encoder, eventually, TestUpstream, writeAll } from "./_net.ts";

Deno.test("greeting watch: two connections that stay silent through the window say the upstream does not greet", async () => {
  await using upstream = new TestUpstream(echo);
  const watch = new GreetingWatch(0, "upstream");
  assertEquals(watch.windowMs, MIN_GREETING_WINDOW_MS); // --reuse-settle 0 still watches
  const conns = [
    new UpstreamConn(await connect(upstream.address)),
    new UpstreamConn(await connect(upstream.address)),
  ];
  try {
    const started = performance.now();
    await watch.watch(conns[0], 0, new AbortController().signal);
    assert(performance.now() - started >= MIN_GREETING_WINDOW_MS - 1);
    assertEquals(watch.known, false); // one silent connection is not enough
    await watch.watch(conns[1], 0, new AbortController().signal);
    assertEquals(watch.greets, false);
    watch.learnFrom(conns[1]);
    assertEquals(watch.unfitReason, undefined);
  } finally {
    for (const conn of conns) {
      conn.close();
      await conn.readerDone;
    }
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
      assertEquals(watch.unfitReason, GREETS_REASON);
      await eventually(() => second.spokeBeforeWrite, 3_000, "the second connection was greeted");
      watch.learnFrom(second); // a second warning? no
      assertEquals(watch.unfitReason, GREETS_REASON);
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
    watch.learnFrom(refused);
    assertEquals(watch.unfitReason, undefined);
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

Deno.test("greeting watch: a greeting that came within the window is seen even when the event loop stalled past it", async () => {
  // After a stall the window's timer runs before reads that became ready meanwhile: judged at
  // once, a greeting that came in time read as silence (found by review).
  await using greeter = await processUpstream(
    `await conn.write(new TextEncoder().encode("220 hello\\r\\n"));
     await conn.read(new Uint8Array(64)); // open until the watcher closes it`,
  );
  {
    for (let i = 0; i < 3; i++) {
      const watch = new GreetingWatch(5, "upstream");
      const conn = new UpstreamConn(await connect(greeter.address));
      try {
        const watching = watch.watch(conn, 0, new AbortController().signal);
        const until = performance.now() + 30;
        while (performance.now() < until) {
          // a stall (a GC pause, a throttled container): the greeting arrives unread meanwhile
        }
        await watching;
        assertEquals(watch.greets, true);
      } finally {
        conn.close();
        await conn.readerDone;
      }
    }
  }
});

Deno.test("greeting watch: a slow connect (a lost SYN) lengthens the window by at most MAX_CONNECT_WINDOW_MS", async () => {
  await using upstream = new TestUpstream(echo);
  const watch = new GreetingWatch(5, "upstream");
  const conn = new UpstreamConn(await connect(upstream.address));
  try {
    const started = performance.now();
    await watch.watch(conn, 1_000, new AbortController().signal); // a connect that took 1 s
    const took = performance.now() - started;
    assert(took >= MAX_CONNECT_WINDOW_MS - 1 && took < 1_000, `watched ${took} ms`);
  } finally {
    conn.close();
    await conn.readerDone;
  }
});

Deno.test("a connection closed while its writes are held lets the held write fail at once", async () => {
  await using upstream = new TestUpstream(echo);
  const conn = new UpstreamConn(await connect(upstream.address));
  conn.holdWrites(new Promise(() => {})); // a watch that would never end
  const writing = conn.write(encoder.encode("held"));
  await delay(5);
  conn.close();
  let timer: ReturnType<typeof setTimeout> | undefined;
  const outcome = await Promise.race([
    writing.then(() => "written", () => "failed"),
    new Promise<string>((resolve) => timer = setTimeout(() => resolve("still held"), 2_000)),
  ]);
  clearTimeout(timer);
  assertEquals(outcome, "failed");
  await assertRejects(() => writing);
  await conn.readerDone;
});
