/**
 * The relay, end to end through an in-process proxy with real upstream servers on loopback:
 * bytes, backpressure, half-close both ways, errors, and how sessions end in each pool mode.
 */

import { assert, assertEquals, assertGreater, assertLess, assertNotEquals } from "./_assert.ts";
import type { PoolMode } from "../src/config.ts";
import { REUSE_SETTLE_MS } from "../src/pool.ts";
import {
  closeQuietly,
  connect,
  decoder,
  delay,
  echo,
  echoOnceThen,
  encoder,
  eventually,
  listenWithoutBacklog,
  patternBytes,
  readExactly,
  readToEnd,
  roundTrip,
  sendAndHalfClose,
  startProxy,
  TestUpstream,
  within,
  writeAll,
} from "./_net.ts";

const MODES: PoolMode[] = ["off", "warm", "reuse"];

for (const mode of MODES) {
  Deno.test(`${mode}: 4 MiB are relayed unchanged both ways`, async () => {
    const upstream = new TestUpstream(echo);
    const proxy = startProxy(upstream.address, { pool: mode, minIdle: mode === "off" ? 0 : 2 });
    const client = await connect(proxy.address);
    try {
      const sent = patternBytes(4 * 1024 * 1024, 7);
      const [, received] = await within(client, 10_000, () =>
        Promise.all([
          writeAll(client, sent),
          readExactly(client, sent.length),
        ]));
      await client.closeWrite();
      assertEquals((await within(client, 5_000, () => readToEnd(client))).length, 0);
      assertEquals(received.length, sent.length);
      assert(received.every((b, i) => b === sent[i]), "bytes differ");
      await proxy.sessionsEnded(1);
      assertEquals(proxy.sessions[0].bytesFromClient, sent.length);
      assertEquals(proxy.sessions[0].bytesFromServer, sent.length);
    } finally {
      closeQuietly(client);
      await proxy.close();
      await upstream.close();
    }
  });

  Deno.test(`${mode}: a client's half-close reaches the upstream and its answer still arrives`, async () => {
    // The upstream answers only after EOF: the length of what it got, then closes.
    const upstream = new TestUpstream(async (conn) => {
      const got = await readToEnd(conn);
      await writeAll(conn, encoder.encode(`got ${got.length} bytes: ${decoder.decode(got)}`));
    });
    const proxy = startProxy(upstream.address, { pool: mode });
    const client = await connect(proxy.address);
    try {
      const answer = await sendAndHalfClose(client, "question", 5_000);
      assertEquals(answer, "got 8 bytes: question");
      await proxy.sessionsEnded(1);
      assertEquals(proxy.sessions[0].end, "client-closed");
      assert(proxy.sessions[0].halfClosed);
      assertNotEquals(proxy.sessions[0].release, "pooled");
    } finally {
      closeQuietly(client);
      await proxy.close();
      await upstream.close();
    }
  });

  Deno.test(`${mode}: an upstream's half-close reaches the client and the client can still send`, async () => {
    let late = "";
    const upstream = new TestUpstream(async (conn) => {
      await writeAll(conn, encoder.encode("bye"));
      await conn.closeWrite();
      late = decoder.decode(await readToEnd(conn));
    });
    const proxy = startProxy(upstream.address, { pool: mode });
    const client = await connect(proxy.address);
    try {
      await within(client, 5_000, async () => {
        assertEquals(decoder.decode(await readToEnd(client)), "bye");
        await writeAll(client, encoder.encode("late words"));
        await client.closeWrite();
      });
      await proxy.sessionsEnded(1);
      await eventually(() => late === "late words", 3_000, "upstream got the late words");
      assertEquals(proxy.sessions[0].end, "server-closed");
      assertNotEquals(proxy.sessions[0].release, "pooled");
    } finally {
      closeQuietly(client);
      await proxy.close();
      await upstream.close();
    }
  });
}

Deno.test("a client that does not read stalls the upstream instead of filling the proxy's memory", async () => {
  let written = 0;
  const chunk = new Uint8Array(64 * 1024);
  const upstream = new TestUpstream(async (conn) => {
    for (let i = 0; i < 2048; i++) { // up to 128 MiB
      written += await conn.write(chunk);
    }
  });
  const proxy = startProxy(upstream.address, { pool: "off" });
  const client = await connect(proxy.address);
  try {
    await delay(1_000);
    const after1s = written;
    await delay(500);
    // Only socket buffers and one proxy read buffer are in flight: the upstream is stalled.
    assertEquals(written, after1s, "the upstream kept writing into a client that does not read");
    assertLess(written, 48 * 1024 * 1024);
  } finally {
    closeQuietly(client);
    await proxy.sessionsEnded(1);
    await proxy.close();
    await upstream.close();
  }
});

Deno.test("reuse: a clean session returns its connection once and the next client gets it", async () => {
  await using upstream = new TestUpstream(echo);
  await using proxy = startProxy(upstream.address, { pool: "reuse" });
  assertEquals(await roundTrip(proxy.address, "one"), "one");
  await proxy.sessionsEnded(1);
  assertEquals(await roundTrip(proxy.address, "two"), "two");
  await proxy.sessionsEnded(2);
  assertEquals(upstream.accepted, 1);
  assertEquals(proxy.sessions.map((s) => [s.source, s.end, s.release]), [
    ["dial", "client-closed", "pooled"],
    ["pool", "client-closed", "pooled"],
  ]);
  assertEquals(proxy.server.pool.stats.idle, 1);
});

Deno.test("reuse: many concurrent sessions never put one connection in the pool twice", async () => {
  const open = new Set<number>();
  await using upstream = new TestUpstream(async (conn, index) => {
    open.add(index);
    try {
      await echo(conn);
    } finally {
      open.delete(index);
    }
  });
  // No settle time: connections go back the moment their client leaves, the most pressure.
  await using proxy = startProxy(upstream.address, { pool: "reuse" });
  const clients = Array.from({ length: 16 }, async (_, c) => {
    for (let round = 0; round < 10; round++) {
      assertEquals(await roundTrip(proxy.address, `c${c}r${round}`), `c${c}r${round}`);
    }
  });
  await Promise.all(clients);
  await proxy.sessionsEnded(160);
  const stats = proxy.server.pool.stats;
  // A connection closed as "pool full" may not have reached its upstream handler yet.
  await eventually(
    () => proxy.server.pool.stats.idle === open.size,
    2_000,
    `idle entries (${proxy.server.pool.stats.idle}) are distinct live connections (${open.size})`,
  );
  // Reused, not dialled per session (a dial that loses the race to a returned one is pooled).
  assert(upstream.accepted <= 32, `dialled ${upstream.accepted} for 160 sessions of 16 clients`);
  // Each went back, unless dials that lost their race had filled the pool to the number in use
  // at once (then it is closed as "pool full"); never refused for another reason.
  const refused = Object.entries(stats.refused).filter(([reason, n]) =>
    n > 0 && reason !== "pool full"
  );
  assertEquals(refused, [], "no release refused but as pool full");
  assertEquals(stats.pooled + stats.refused["pool full"], 160);
});

Deno.test("reuse: a session served by a returned connection aborts its own dial once the pool holds what was wanted at once, so an upstream slow to accept does not pile up dials in flight", async () => {
  // Accepts one connection, the pool's, and no more; a backlog of 0 then drops further connects.
  const { listener, address } = listenWithoutBacklog();
  const served = (async () => {
    const conn = await listener.accept();
    try {
      await echo(conn);
    } catch {
      // closed at the end
    } finally {
      closeQuietly(conn);
    }
  })();
  const proxy = startProxy(address, { pool: "reuse", connectTimeoutMs: 10_000 });
  const filler = await (async () => {
    assertEquals(await roundTrip(proxy.address, "first"), "first"); // the pooled connection
    await proxy.sessionsEnded(1);
    return await Deno.connect(address); // fills the accept queue: later connects hang
  })();
  try {
    // Two clients in turn on one pooled connection: whoever finds it leased dials, and is then
    // served by the other's release.
    await Promise.all([0, 1].map(async (client) => {
      for (let i = 0; i < 15; i++) {
        const text = `c${client}r${i}`;
        assertEquals(await roundTrip(proxy.address, text), text);
      }
    }));
    await proxy.sessionsEnded(31);
    const stats = proxy.server.pool.stats;
    assertGreater(stats.dials, 3, "sessions found the connection leased and dialled");
    // A served session's dial goes on only while connections open and being dialled are no more
    // than the sessions that wanted one at once: two clients, up to three sessions as one ends
    // and its client's next begins, one pooled connection, so at most two dials. Before, each
    // went on until the connect timeout (10 s here): 29 of 30.
    await eventually(
      () => proxy.server.pool.stats.dialling <= 2,
      1_000,
      `at most two dials left in flight (${proxy.server.pool.stats.dialling} of ${stats.dials})`,
    );
  } finally {
    await proxy.close();
    closeQuietly(filler);
    closeQuietly(listener);
    await served;
  }
});

Deno.test("reuse: a client EOF after an unanswered request passes the FIN on and the answer arrives", async () => {
  // Upstream answers each request only after a pause: the client closes before the answer.
  const upstream = new TestUpstream(async (conn) => {
    const buffer = new Uint8Array(1024);
    while (true) {
      const n = await conn.read(buffer);
      if (n === null) return;
      await delay(100);
      await writeAll(conn, buffer.subarray(0, n));
    }
  });
  const proxy = startProxy(upstream.address, { pool: "reuse" });
  const client = await connect(proxy.address);
  try {
    const answer = await sendAndHalfClose(client, "slow", 5_000);
    assertEquals(answer, "slow");
    await proxy.sessionsEnded(1);
    assertEquals(proxy.sessions[0].halfClosed, true);
    assertEquals(proxy.sessions[0].release, "session not clean");
  } finally {
    closeQuietly(client);
    await proxy.close();
    await upstream.close();
  }
});

Deno.test("bytes the upstream sends after a client left never reach the next client", async () => {
  // Conn 0 echoes, then 50 ms later sends a stray "LEAK"; later conns only echo.
  await using upstream = new TestUpstream(echoOnceThen(async (conn) => {
    await delay(50);
    await writeAll(conn, encoder.encode("LEAK"));
    return "echo";
  }));
  await using proxy = startProxy(upstream.address, { pool: "reuse" });
  assertEquals(await roundTrip(proxy.address, "first"), "first");
  await proxy.sessionsEnded(1);
  assertEquals(proxy.sessions[0].release, "pooled");
  await eventually(
    () => proxy.server.pool.stats.idle === 0,
    2_000,
    "stray bytes drop the connection",
  );
  const client = await connect(proxy.address);
  try {
    const got = await within(client, 5_000, async () => {
      await writeAll(client, encoder.encode("second"));
      const echoed = decoder.decode(await readExactly(client, 6));
      await client.closeWrite();
      return echoed + decoder.decode(await readToEnd(client));
    });
    assertEquals(got, "second");
  } finally {
    closeQuietly(client);
  }
  await proxy.sessionsEnded(2);
  assertEquals(proxy.sessions[1].source, "dial");
  assertEquals(upstream.accepted, 2);
});

// warm: with refills failing (none in flight), a session that finds nothing ready only dials.
for (const pool of ["reuse", "warm"] as const) {
  Deno.test(`${pool}: an upstream that is down closes the client promptly; sessions succeed once it is back`, async () => {
    const probe = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    const port = probe.addr.port;
    probe.close();
    const proxy = startProxy({ hostname: "127.0.0.1", port }, { pool });
    let upstream: TestUpstream | undefined;
    try {
      const client = await connect(proxy.address);
      try {
        const started = performance.now();
        const got = await within(
          client,
          2_000,
          () => readToEnd(client).catch(() => new Uint8Array()),
        );
        assertEquals(got.length, 0);
        assertLess(performance.now() - started, 1_000);
      } finally {
        closeQuietly(client);
      }
      await proxy.sessionsEnded(1);
      assertEquals(proxy.sessions[0].end, "connect-failed");
      assert(proxy.sessions[0].error?.includes("refused"), proxy.sessions[0].error);
      upstream = new TestUpstream(echo, { hostname: "127.0.0.1", port });
      assertEquals(await roundTrip(proxy.address, "back"), "back");
    } finally {
      await proxy.close();
      await upstream?.close();
    }
  });
}

Deno.test("the proxy listens and dials on IPv6 loopback", async () => {
  await using upstream = new TestUpstream(echo, { hostname: "::1", port: 0 });
  await using proxy = startProxy(upstream.address, {
    pool: "reuse",
    listen: { hostname: "::1", port: 0 },
  });
  assertEquals(proxy.address.hostname, "::1");
  assertEquals(await roundTrip(proxy.address, "six"), "six");
});

Deno.test("reuse: the late tail of an answer drops the connection while it settles, never reaching the next client", async () => {
  // Conn 0 echoes, then 20 ms later sends the tail of its answer ("LEAK"), then echoes.
  await using upstream = new TestUpstream(echoOnceThen(async (conn) => {
    await delay(20);
    await writeAll(conn, encoder.encode("LEAK"));
    return "echo";
  }));
  await using proxy = startProxy(upstream.address, { pool: "reuse", reuseSettleMs: 100 });
  assertEquals(await roundTrip(proxy.address, "first"), "first");
  await proxy.sessionsEnded(1);
  assertEquals(proxy.sessions[0].release, "pooled");
  assertEquals(proxy.server.pool.stats.settling, 1);
  // The next client comes at once, before the tail: it gets a connection of its own.
  assertEquals(await roundTrip(proxy.address, "second"), "second");
  await proxy.sessionsEnded(2);
  assertEquals(proxy.sessions[1].source, "dial");
  await eventually(() => proxy.server.pool.stats.idleDropped === 1, 2_000, "the first dropped");
});

Deno.test("reuse: a released connection is handed out again once its settle time has passed", async () => {
  await using upstream = new TestUpstream(echo);
  await using proxy = startProxy(upstream.address, {
    pool: "reuse",
    reuseSettleMs: REUSE_SETTLE_MS,
  });
  assertEquals(await roundTrip(proxy.address, "one"), "one");
  await proxy.sessionsEnded(1);
  await eventually(() => proxy.server.pool.stats.idle === 1, 2_000, "settled into the pool");
  assertEquals(await roundTrip(proxy.address, "two"), "two");
  await proxy.sessionsEnded(2);
  assertEquals(upstream.accepted, 1);
  assertEquals(proxy.sessions[1].source, "pool");
});

Deno.test("reuse: a client's FIN while the answer is still being written to it is passed on, and the whole answer arrives", async () => {
  // The upstream answers a request with 8 MiB, written as fast as the client takes it.
  const answer = patternBytes(8 * 1024 * 1024, 3);
  const upstream = new TestUpstream(async (conn) => {
    const buffer = new Uint8Array(16);
    if (await conn.read(buffer) === null) return;
    await writeAll(conn, answer);
    await readToEnd(conn);
  });
  const proxy = startProxy(upstream.address, { pool: "reuse" });
  const client = await connect(proxy.address);
  try {
    const got = await within(client, 10_000, async () => {
      await writeAll(client, encoder.encode("GET"));
      const head = await readExactly(client, 1024 * 1024);
      await delay(50); // socket buffers fill up: the proxy's write to this client is pending
      await client.closeWrite(); // mid-answer
      const rest = await readToEnd(client);
      return head.length + rest.length;
    });
    assertEquals(got, answer.length);
    await proxy.sessionsEnded(1);
    assertEquals(proxy.sessions[0].halfClosed, true);
    assertNotEquals(proxy.sessions[0].release, "pooled");
  } finally {
    closeQuietly(client);
    await proxy.close();
    await upstream.close();
  }
});
