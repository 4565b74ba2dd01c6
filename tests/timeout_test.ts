/**
 * The inactivity timeouts (--client-timeout, --server-timeout, --fin-timeout), through an
 * in-process proxy with real upstreams on loopback: each ends its session with its own code,
 * cuts a blocked write, never pools the connection, and never fires while bytes flow.
 */

import { assert, assertEquals, assertLess, assertNotEquals } from "./_assert.ts";
import {
  closeQuietly,
  connect,
  delay,
  echo,
  encoder,
  readExactly,
  readToEnd,
  startProxy,
  TestUpstream,
  within,
  writeAll,
} from "./_net.ts";

/** Reads until EOF or an error and says how long it took; the proxy closing us ends it. */
async function closedWithin(conn: Deno.Conn, ms: number): Promise<number> {
  const started = performance.now();
  await within(conn, ms, () => readToEnd(conn).catch(() => new Uint8Array()));
  return performance.now() - started;
}

Deno.test("--client-timeout: a client that sends nothing is closed, client-timeout", async () => {
  await using upstream = new TestUpstream(echo);
  await using proxy = startProxy(upstream.address, { pool: "reuse", clientTimeoutMs: 200 });
  const client = await connect(proxy.address);
  try {
    const took = await closedWithin(client, 2_000);
    assert(took >= 190, `closed after ${took}ms`);
  } finally {
    closeQuietly(client);
  }
  await proxy.sessionsEnded(1);
  assertEquals(proxy.sessions[0].end, "client-timeout");
  assertNotEquals(proxy.sessions[0].release, "pooled");
});

Deno.test("--server-timeout: an upstream that never answers ends the session, server-timeout", async () => {
  await using upstream = new TestUpstream(async (conn) => {
    await conn.read(new Uint8Array(1024));
    await delay(3_000);
  });
  await using proxy = startProxy(upstream.address, { pool: "reuse", serverTimeoutMs: 200 });
  const client = await connect(proxy.address);
  try {
    await writeAll(client, encoder.encode("GET key\r\n"));
    assertLess(await closedWithin(client, 2_000), 1_000);
  } finally {
    closeQuietly(client);
  }
  await proxy.sessionsEnded(1);
  assertEquals(proxy.sessions[0].end, "server-timeout");
  assertEquals(proxy.sessions[0].release, "session not clean");
});

Deno.test("--fin-timeout: a half-closed session that goes quiet ends, fin-timeout", async () => {
  // The upstream echoes, and keeps its side open after the client's FIN.
  await using upstream = new TestUpstream(async (conn) => {
    await echo(conn);
    await delay(3_000);
  });
  await using proxy = startProxy(upstream.address, {
    pool: "off",
    finTimeoutMs: 200,
    clientTimeoutMs: 60_000,
    serverTimeoutMs: 60_000,
  });
  const client = await connect(proxy.address);
  try {
    await writeAll(client, encoder.encode("bye"));
    await readExactly(client, 3);
    await client.closeWrite();
    assertLess(await closedWithin(client, 2_000), 1_000);
  } finally {
    closeQuietly(client);
  }
  await proxy.sessionsEnded(1);
  assertEquals(proxy.sessions[0].end, "fin-timeout");
});

Deno.test("a write blocked on an upstream that never reads is cut by --server-timeout, and the client is closed", async () => {
  await using upstream = new TestUpstream(() => delay(4_000)); // accepts, never reads
  await using proxy = startProxy(upstream.address, { pool: "reuse", serverTimeoutMs: 300 });
  const client = await connect(proxy.address);
  let wrote = 0;
  const flood = (async () => {
    const chunk = new Uint8Array(256 * 1024);
    try {
      for (let i = 0; i < 256; i++) wrote += await client.write(chunk); // up to 64 MiB
    } catch {
      // the proxy closed us
    }
  })();
  try {
    assertLess(await closedWithin(client, 3_000), 2_500);
  } finally {
    closeQuietly(client);
    await flood;
  }
  await proxy.sessionsEnded(1);
  assertEquals(proxy.sessions[0].end, "server-timeout");
  assert(wrote < 64 * 1024 * 1024, "the upstream did not read, so the writes must have stalled");
  assertEquals(proxy.server.pool.stats.idle, 0);
});

Deno.test("no timeout fires while bytes keep flowing, even past every timeout", async () => {
  await using upstream = new TestUpstream(echo);
  await using proxy = startProxy(upstream.address, {
    pool: "reuse",
    clientTimeoutMs: 150,
    serverTimeoutMs: 150,
    finTimeoutMs: 150,
  });
  const client = await connect(proxy.address);
  try {
    await within(client, 5_000, async () => {
      for (let i = 0; i < 10; i++) {
        await writeAll(client, encoder.encode("tick"));
        await readExactly(client, 4);
        await delay(60);
      }
    });
  } finally {
    closeQuietly(client);
  }
  await proxy.sessionsEnded(1);
  assertEquals(proxy.sessions[0].end, "client-closed");
});

Deno.test("with equal timeouts, a client that stops reading a large answer ends client-timeout, not server-timeout", async () => {
  const answer = new Uint8Array(32 * 1024 * 1024);
  await using upstream = new TestUpstream(async (conn) => {
    await conn.read(new Uint8Array(64));
    await writeAll(conn, answer).catch(() => {});
  });
  await using proxy = startProxy(upstream.address, {
    pool: "off",
    clientTimeoutMs: 300,
    serverTimeoutMs: 300,
  });
  const client = await connect(proxy.address);
  try {
    await writeAll(client, encoder.encode("GET big"));
    // Reads nothing: the proxy's writes to the client block first.
    const started = performance.now();
    await within(client, 3_000, async () => {
      while (true) {
        await delay(100);
        if (proxy.sessions.length > 0) return;
      }
    });
    assertLess(performance.now() - started, 2_500);
  } finally {
    closeQuietly(client);
  }
  await proxy.sessionsEnded(1);
  assertEquals(proxy.sessions[0].end, "client-timeout");
});
