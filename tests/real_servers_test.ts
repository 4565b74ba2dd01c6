/**
 * Exact reuse against real servers: `redis-server` and `memcached` behind the proxy (in-process,
 * `--pool reuse --protocol redis|memcached`), driven by their own clients (`redis-benchmark`,
 * `redis-cli`, `memcslap`, `memccp`, `memccat`) as child processes, and by raw Deno sockets
 * where a client must misbehave. Every assertion is on what a user sees: client output and exit
 * codes, and the servers' own counters and contents, asked directly (not through the proxy) on
 * an admin connection opened before the test steps, so that asking adds no connection.
 *
 * Covered: redis-benchmark with a new connection per request; redis-cli, its stdin batch and
 * `--pipe`; `SELECT` never leaks to the next client, with and without `--redis-reset` (and with
 * it, the reset connection is the one handed out next); memcslap load and files stored and read
 * back byte for byte by separate processes (libmemcached's tools end with `quit`, so they cannot
 * be reused), and reuse for memcached clients that just close; a Redis client that leaves with
 * answers owed does not cost the connection (drain), unless the drain takes too long.
 *
 * Each test is ignored, with the reason in its name, where a binary it needs is missing (CI
 * installs redis-server, redis-tools, memcached and libmemcached-tools).
 */

import {
  assert,
  assertEquals,
  assertGreaterOrEqual,
  assertLess,
  assertLessOrEqual,
  assertMatch,
  assertStringIncludes,
} from "./_assert.ts";
import {
  closeQuietly,
  connect,
  decoder,
  delay,
  encoder,
  patternBytes,
  readExactly,
  readToEnd,
  startProxy,
  type TestProxy,
  within,
  writeAll,
} from "./_net.ts";
import {
  describeRun,
  MemcachedServer,
  missingBinaries,
  RedisServer,
  respCommand,
  run,
  type RunResult,
} from "./_servers.ts";

const noRedisBenchmark = missingBinaries("redis-server", "redis-cli", "redis-benchmark");
const noRedis = missingBinaries("redis-server", "redis-cli");
const noMemcslap = missingBinaries("memcached", "memcslap");
const noMemcTools = missingBinaries("memcached", "memccp", "memccat");
const noMemcached = missingBinaries("memcached");

// ---- helpers ----

function upstreamAt(port: number) {
  return { hostname: "127.0.0.1", port };
}

/** The sessions so far, one line each, for assertion messages. */
function sessionsText(proxy: TestProxy): string {
  return proxy.sessions.map((s) =>
    `#${s.id} ${s.end} source=${s.source} release=${s.release}${s.error ? ` (${s.error})` : ""}`
  ).join("\n");
}

/** Runs `redis-cli -h 127.0.0.1 -p port ...args`; asserts exit 0; returns stdout. */
async function redisCli(port: number, args: string[], stdin?: string): Promise<string> {
  const result = await run("redis-cli", ["-h", "127.0.0.1", "-p", String(port), ...args], {
    stdin: stdin === undefined ? undefined : encoder.encode(stdin),
    timeoutMs: 5_000,
  });
  assertEquals(result.code, 0, `redis-cli ${args.join(" ")}: ${describeRun(result)}`);
  return result.stdout;
}

/** Asserts that a client's output says nothing of an error. */
function assertNoErrorOutput(result: RunResult, what: string): void {
  const text = `${result.stdout}\n${result.stderr}`;
  assert(
    !/error|fail|reset|refused|timed? ?out/i.test(text),
    `${what} reported a problem: ${describeRun(result)}`,
  );
}

/** Polls `read` until it returns something `ok` accepts, for up to `ms`; returns the last value. */
async function settle<T>(
  read: () => Promise<T>,
  ok: (value: T) => boolean,
  ms = 2_000,
): Promise<T> {
  const deadline = performance.now() + ms;
  for (;;) {
    const value = await read();
    if (ok(value) || performance.now() > deadline) return value;
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}

// ---- Redis ----

Deno.test({
  name:
    `redis: redis-benchmark -k 0 (a new connection per request, 50 clients, 25,000 requests) through --pool reuse --protocol redis shows no error, and redis-server received under 10% as many connections${noRedisBenchmark}`,
  ignore: noRedisBenchmark !== "",
  fn: async () => {
    await using redis = await RedisServer.start();
    await using proxy = startProxy(upstreamAt(redis.port), { protocol: "redis" });
    const tests = ["SET", "GET", "INCR", "LPUSH", "LPOP"];
    const perTest = 5_000;
    const requests = tests.length * perTest;
    const connectionsBefore = await redis.connectionsReceived();
    const commandsBefore = await redis.commandsProcessed();
    const bench = await run("redis-benchmark", [
      ...["-h", "127.0.0.1", "-p", String(proxy.address.port)],
      ...["-k", "0", "-c", "50", "-n", String(perTest), "-t", tests.join(","), "-q"],
    ], { timeoutMs: 25_000 });
    assertEquals(bench.code, 0, describeRun(bench));
    assertNoErrorOutput(bench, "redis-benchmark");
    // -q prints one final line per test (after \r-separated progress lines).
    const finals = bench.stdout.split(/[\r\n]+/).map((line) => line.trim())
      .filter((line) => /^[A-Z]+: [\d.]+ requests per second/.test(line));
    assertEquals(finals.map((line) => line.split(":")[0]), tests, describeRun(bench));
    const connections = await redis.connectionsReceived() - connectionsBefore;
    const commands = await redis.commandsProcessed() - commandsBefore;
    console.log(
      `redis-benchmark -k 0: ${requests} requests, ${commands} commands processed, ` +
        `${connections} connections received by redis-server`,
    );
    assertGreaterOrEqual(commands, requests, "every request reached the server");
    assertLess(connections, requests / 10, `connections were reused\n${bench.stdout}`);
    assertGreaterOrEqual(connections, 1);
  },
});

Deno.test({
  name:
    `redis: redis-cli through the proxy: SET then GET in two processes, a batch on stdin, and --pipe with 1,000 commands${noRedis}`,
  ignore: noRedis !== "",
  fn: async () => {
    await using redis = await RedisServer.start();
    await using proxy = startProxy(upstreamAt(redis.port), { protocol: "redis" });
    const port = proxy.address.port;
    assertEquals(await redisCli(port, ["SET", "k", "v"]), "OK\n");
    assertEquals(await redisCli(port, ["GET", "k"]), "v\n");

    const batch = "SET n 10\nINCR n\nINCRBY n 5\nGET n\nRPUSH l a b c\nLRANGE l 0 -1\n";
    assertEquals(await redisCli(port, [], batch), "OK\n11\n16\n16\n3\na\nb\nc\n");

    const count = 1_000;
    let pipe = "";
    for (let i = 0; i < count; i++) pipe += decoder.decode(respCommand("SET", `pipe:${i}`, `${i}`));
    const piped = await redisCli(port, ["--pipe"], pipe);
    assertMatch(piped, new RegExp(`errors: 0, replies: ${count}\\b`), piped);
    // Asked directly: the last and a middle one arrived.
    assertEquals(await redis.command("GET", `pipe:${count - 1}`), `${count - 1}`);
    assertEquals(await redis.command("GET", "pipe:500"), "500");
    assertEquals(await redis.command("GET", "k"), "v");
  },
});

/** How many times client B runs after A in the state tests. */
const B_RUNS = 5;

/** Client A: `redis-cli -n 5 SET leaked a` (redis-cli sends `SELECT 5` first). */
async function runClientA(proxy: TestProxy): Promise<void> {
  assertEquals(await redisCli(proxy.address.port, ["-n", "5", "SET", "leaked", "a"]), "OK\n");
  await proxy.sessionsEnded(1);
}

/** Client B, `B_RUNS` times one after the other: plain `redis-cli SET b<i> 1` (db 0). */
async function runClientsB(proxy: TestProxy): Promise<void> {
  for (let i = 0; i < B_RUNS; i++) {
    assertEquals(await redisCli(proxy.address.port, ["SET", `b${i}`, "1"]), "OK\n");
    // Sequential sessions: the next B starts when this one's connection is back (or closed).
    await proxy.sessionsEnded(2 + i);
  }
}

/** Asked directly: every `b<i>` and no `leaked` in db 0; `leaked` and no `b<i>` in db 5. */
async function assertNoLeak(redis: RedisServer, proxy: TestProxy): Promise<void> {
  const where = `\nsessions:\n${sessionsText(proxy)}`;
  const bs = Array.from({ length: B_RUNS }, (_, i) => `b${i}`);
  assertEquals(await redis.command("SELECT", "0"), "OK");
  assertEquals(await redis.command("EXISTS", ...bs), B_RUNS, `every B wrote to db 0${where}`);
  assertEquals(await redis.command("EXISTS", "leaked"), 0, `A did not write to db 0${where}`);
  assertEquals(await redis.command("SELECT", "5"), "OK");
  assertEquals(await redis.command("EXISTS", "leaked"), 1, `A wrote to db 5${where}`);
  assertEquals(await redis.command("EXISTS", ...bs), 0, `no B inherited SELECT 5${where}`);
  assertEquals(await redis.command("SELECT", "0"), "OK");
}

Deno.test({
  name:
    `redis: a client's SELECT never leaks to the next client: after redis-cli -n 5, ${B_RUNS} plain redis-cli runs all write to db 0, and the SELECTed connection is closed${noRedis}`,
  ignore: noRedis !== "",
  fn: async () => {
    await using redis = await RedisServer.start();
    await using proxy = startProxy(upstreamAt(redis.port), { protocol: "redis" });
    const before = await redis.connectionsReceived();
    await runClientA(proxy);
    // A's connection carries SELECT 5: closed after A, so the server soon has no other client.
    const left = await settle(() => redis.otherClients(), (clients) => clients.length === 0);
    assertEquals(left.map((c) => `db=${c.get("db")} cmd=${c.get("cmd")}`), [], sessionsText(proxy));
    const afterA = await redis.connectionsReceived();
    assertEquals(afterA - before, 1, "A used one connection");
    await runClientsB(proxy);
    await assertNoLeak(redis, proxy);
    // A's connection could not be handed to B: the first B dialled a new one, the others may
    // have reused that one (it never saw SELECT).
    const forB = await redis.connectionsReceived() - afterA;
    assertGreaterOrEqual(forB, 1, sessionsText(proxy));
    assertLessOrEqual(forB, B_RUNS, sessionsText(proxy));
    for (const client of await redis.otherClients()) {
      assertEquals(client.get("db"), "0", `a pooled connection is in db 0: ${[...client]}`);
    }
  },
});

/** Sends `command` on a new connection to `port`, reads `replyBytes` bytes, and closes. */
async function rawRedis(port: number, command: Uint8Array, replyBytes: number): Promise<string> {
  const conn = await connect({ hostname: "127.0.0.1", port });
  try {
    await writeAll(conn, command);
    return decoder.decode(await within(conn, 3_000, () => readExactly(conn, replyBytes)));
  } finally {
    closeQuietly(conn);
  }
}

Deno.test({
  name:
    `redis: a client's SCRIPT DEBUG never reaches the next client: its connection is closed, and the next EVAL gets its own reply, not the debugger's${noRedis}`,
  ignore: noRedis !== "",
  fn: async () => {
    await using redis = await RedisServer.start();
    await using proxy = startProxy(upstreamAt(redis.port), { protocol: "redis", redisReset: true });
    const port = proxy.address.port;
    assertEquals(await rawRedis(port, respCommand("SCRIPT", "DEBUG", "YES"), 5), "+OK\r\n");
    await proxy.sessionsEnded(1);
    assert(proxy.sessions[0].release !== "pooled", sessionsText(proxy));
    // Through a debugging connection this would be "*2\r\n+* Stopped at 1, ...".
    assertEquals(await rawRedis(port, respCommand("EVAL", "return 7", "0"), 4), ":7\r\n");
    await proxy.sessionsEnded(2);
  },
});

Deno.test({
  name:
    `redis: a worker that leaves while its BLPOP (or BRPOP, BZPOPMIN, BLMOVE, XREADGROUP BLOCK) waits loses no item: the connection is closed, not drained, and the item pushed next stays for the next worker; a half-close passes the FIN on${noRedis}`,
  ignore: noRedis !== "",
  fn: async () => {
    // Found by review: draining the owed BLPOP kept it alive after its client left, and it
    // popped the next item pushed for nobody. Redis ends a blocked command when its client goes.
    await using redis = await RedisServer.start();
    await using proxy = startProxy(upstreamAt(redis.port), { protocol: "redis" });
    const port = proxy.address.port;
    const waits: [string[], string[], string][] = [
      [["BLPOP", "jobs:l", "0"], ["RPUSH", "jobs:l", "job-1"], "LRANGE jobs:l 0 -1"],
      [["BRPOP", "jobs:r", "0"], ["LPUSH", "jobs:r", "job-2"], "LRANGE jobs:r 0 -1"],
      [["BZPOPMIN", "jobs:z", "0"], ["ZADD", "jobs:z", "1", "job-3"], "ZRANGE jobs:z 0 -1"],
      [
        ["BLMOVE", "jobs:m", "done:m", "LEFT", "LEFT", "0"],
        ["RPUSH", "jobs:m", "job-4"],
        "LRANGE jobs:m 0 -1",
      ],
    ];
    await redisCli(redis.port, ["XGROUP", "CREATE", "jobs:s", "g", "$", "MKSTREAM"]);
    let ended = 0;
    for (const [wait, push, check] of waits) {
      const worker = await connect({ hostname: "127.0.0.1", port });
      await writeAll(worker, respCommand(...wait));
      await delay(100);
      closeQuietly(worker);
      await proxy.sessionsEnded(++ended);
      assert(proxy.sessions[ended - 1].release !== "pooled", sessionsText(proxy));
      await rawRedis(port, respCommand(...push), 4);
      await proxy.sessionsEnded(++ended);
      await delay(200); // what a drain would have taken, it would have taken by now
      const left = await redisCli(redis.port, check.split(" "));
      assertStringIncludes(left, push[push.length - 1], `${wait[0]}: ${sessionsText(proxy)}`);
    }
    // A stream entry read with XREADGROUP BLOCK would be claimed (pending) for nobody.
    const reader = await connect({ hostname: "127.0.0.1", port });
    await writeAll(
      reader,
      respCommand("XREADGROUP", "GROUP", "g", "c", "BLOCK", "0", "STREAMS", "jobs:s", ">"),
    );
    await delay(100);
    closeQuietly(reader);
    await proxy.sessionsEnded(++ended);
    await redisCli(redis.port, ["XADD", "jobs:s", "*", "job", "5"]);
    await delay(200);
    assertStringIncludes(await redisCli(redis.port, ["XPENDING", "jobs:s", "g"]), "0");
    // A half-closed worker: its FIN reaches Redis, which ends the BLPOP and the connection.
    const halfClosed = await connect({ hostname: "127.0.0.1", port });
    await writeAll(halfClosed, respCommand("BLPOP", "jobs:h", "0"));
    await halfClosed.closeWrite();
    assertEquals((await within(halfClosed, 3_000, () => readToEnd(halfClosed))).length, 0);
    closeQuietly(halfClosed);
    await proxy.sessionsEnded(++ended);
    await redisCli(redis.port, ["RPUSH", "jobs:h", "job-6"]);
    await delay(200);
    assertStringIncludes(await redisCli(redis.port, ["LRANGE", "jobs:h", "0", "-1"]), "job-6");
  },
});

Deno.test({
  name:
    `redis: with redisReset, a client's CLIENT NO-EVICT never reaches the next client (Redis 7.0's RESET keeps it): its connection is closed${noRedis}`,
  ignore: noRedis !== "",
  fn: async () => {
    await using redis = await RedisServer.start();
    await using proxy = startProxy(upstreamAt(redis.port), { protocol: "redis", redisReset: true });
    const port = proxy.address.port;
    assertEquals(await rawRedis(port, respCommand("CLIENT", "NO-EVICT", "on"), 5), "+OK\r\n");
    await proxy.sessionsEnded(1);
    assertEquals(proxy.sessions[0].release, "unfit", sessionsText(proxy));
    // Pooled after RESET, it would stay listed here, with flags=e.
    let others = await redis.otherClients();
    for (let i = 0; i < 30 && others.length > 0; i++) {
      await delay(100);
      others = await redis.otherClients();
    }
    assertEquals(others.map((c) => `flags=${c.get("flags")}`), [], sessionsText(proxy));
  },
});

Deno.test({
  name:
    `redis: with redisReset, a client's SELECT still never leaks: after redis-cli -n 5, ${B_RUNS} plain redis-cli runs all write to db 0, over A's own connection after RESET${noRedis}`,
  ignore: noRedis !== "",
  fn: async () => {
    await using redis = await RedisServer.start();
    await using proxy = startProxy(upstreamAt(redis.port), { protocol: "redis", redisReset: true });
    const before = await redis.connectionsReceived();
    await runClientA(proxy);
    const afterA = await redis.connectionsReceived();
    assertEquals(afterA - before, 1, "A used one connection");
    // The session ends only once the RESET reply came back and the connection is pooled: the
    // server then has exactly one other client, in db 0, whose last command was RESET.
    const pooled = await redis.otherClients();
    assertEquals(
      pooled.map((c) => `db=${c.get("db")} cmd=${c.get("cmd")}`),
      ["db=0 cmd=reset"],
      sessionsText(proxy),
    );
    const id = pooled[0].get("id");
    await runClientsB(proxy);
    await assertNoLeak(redis, proxy);
    // Reasoning: the pool was empty before A (no min-idle), so A dialled the only connection
    // there is (+1 above). If RESET had not made it poolable, the first B would have had to
    // dial (the test without reset sees exactly that). No new connection during the B runs,
    // and the same client id (A's connection) still open and last running B's SET, show that
    // every B was served over A's connection after RESET, in db 0.
    assertEquals(await redis.connectionsReceived() - afterA, 0, sessionsText(proxy));
    const after = await redis.otherClients();
    assertEquals(
      after.map((c) => `id=${c.get("id")} db=${c.get("db")} cmd=${c.get("cmd")}`),
      [`id=${id} db=0 cmd=set`],
      sessionsText(proxy),
    );
  },
});

Deno.test({
  name:
    `redis: a client that pipelines 10 LLEN and closes without reading does not cost the connection: the next client is served on it${noRedis}`,
  ignore: noRedis !== "",
  fn: async () => {
    await using redis = await RedisServer.start();
    await using proxy = startProxy(upstreamAt(redis.port), { protocol: "redis" });
    const before = await redis.connectionsReceived();
    const rude = await connect(proxy.address);
    const llen = encoder.encode("*2\r\n$4\r\nLLEN\r\n$1\r\nx\r\n".repeat(10));
    try {
      await writeAll(rude, llen);
    } finally {
      closeQuietly(rude);
    }
    await proxy.sessionsEnded(1);
    const afterRude = await redis.connectionsReceived();
    assertEquals(afterRude - before, 1, "the rude client used one connection");
    // The owed answers were relayed to the closed socket (or drained) and the connection pooled,
    // so the server still has it, its last command an LLEN.
    const kept = await redis.otherClients();
    assertEquals(kept.map((c) => `cmd=${c.get("cmd")}`), ["cmd=llen"], sessionsText(proxy));

    // A new client through the proxy gets its own answer (not one of the drained ones) ...
    assertEquals(await redisCli(proxy.address.port, ["PING"]), "PONG\n");
    const conn = await connect(proxy.address);
    try {
      const reply = await within(conn, 5_000, async () => {
        await writeAll(conn, respCommand("ECHO", "after-drain"));
        return decoder.decode(await readExactly(conn, "$11\r\nafter-drain\r\n".length));
      });
      assertEquals(reply, "$11\r\nafter-drain\r\n");
    } finally {
      closeQuietly(conn);
    }
    await proxy.sessionsEnded(3);
    // ... over the drained connection: the server received no new connection for either.
    assertEquals(await redis.connectionsReceived() - afterRude, 0, sessionsText(proxy));
    assertEquals(
      (await redis.otherClients()).map((c) => `id=${c.get("id")}`),
      kept.map((c) => `id=${c.get("id")}`),
      "the same connection served them",
    );
  },
});

/**
 * A client that sends three `XREAD BLOCK 100 STREAMS <empty stream> $` and ten `LLEN`, pipelined,
 * and closes at once: Redis answers the XREADs one after the other, each at least 100 ms after the
 * previous one (timeouts are checked 10 times a second). (A blocked command that takes what it
 * waits for, such as `BLPOP`, is never drained: its connection is closed (the BLPOP test).) The first answer reaches the closed socket (its
 * kernel answers with a reset), writing the second fails, and the third with the LLENs is still
 * on its way: owed after the client is known gone, so only a drain can make the connection
 * reusable. (The test above, LLEN alone, never gets that far: its 40 bytes of answers are
 * accepted by the closed socket's kernel in one write.)
 */
async function leaveWithBlockedAnswersOwed(proxy: TestProxy): Promise<void> {
  const conn = await connect(proxy.address);
  try {
    const requests = [
      ...["a", "b", "c"].map((stream) =>
        decoder.decode(respCommand("XREAD", "BLOCK", "100", "STREAMS", `empty-${stream}`, "$"))
      ),
      "*2\r\n$4\r\nLLEN\r\n$1\r\nx\r\n".repeat(10),
    ].join("");
    await writeAll(conn, encoder.encode(requests));
  } finally {
    closeQuietly(conn);
  }
  await proxy.sessionsEnded(1);
}

Deno.test({
  name:
    `redis: a client that leaves while answers to blocked commands are still on their way does not cost the connection (drained within --reuse-drain-timeout 1s); with 20 ms it is closed, and the next client still gets only its own answers${noRedis}`,
  ignore: noRedis !== "",
  fn: async () => {
    for (const drainTimeoutMs of [undefined, 20]) {
      await using redis = await RedisServer.start();
      await using proxy = startProxy(upstreamAt(redis.port), {
        protocol: "redis",
        reuseDrainTimeoutMs: drainTimeoutMs,
      });
      const what = `reuseDrainTimeoutMs ${drainTimeoutMs ?? "default"}`;
      const before = await redis.connectionsReceived();
      await leaveWithBlockedAnswersOwed(proxy);
      const afterRude = await redis.connectionsReceived();
      assertEquals(afterRude - before, 1, `${what}: the rude client used one connection`);
      // Drained: the connection is still open on the server, its last command an LLEN (all 13
      // ran on it). Cut short: the proxy closed it, so the server soon has no other client.
      const kept = await settle(
        () => redis.otherClients(),
        (clients) => drainTimeoutMs === undefined || clients.length === 0,
      );
      assertEquals(
        kept.map((c) => `cmd=${c.get("cmd")}`),
        drainTimeoutMs === undefined ? ["cmd=llen"] : [],
        `${what}: the drained connection is kept, a cut drain closes it\n${sessionsText(proxy)}`,
      );
      // The next client gets PONG, not one of the owed answers ...
      assertEquals(await redisCli(proxy.address.port, ["PING"]), "PONG\n", what);
      await proxy.sessionsEnded(2);
      // ... over the drained connection, or over a new one where the drain was cut short.
      assertEquals(
        await redis.connectionsReceived() - afterRude,
        drainTimeoutMs === undefined ? 0 : 1,
        `${what}\n${sessionsText(proxy)}`,
      );
    }
  },
});

// ---- memcached ----

Deno.test({
  name:
    `memcached: memcslap (8 threads x 2,000 gets, after loading 2,000 keys) through --pool reuse --protocol memcached exits 0 and reports no failure${noMemcslap}`,
  ignore: noMemcslap !== "",
  fn: async () => {
    await using memcached = await MemcachedServer.start();
    await using proxy = startProxy(upstreamAt(memcached.port), { protocol: "memcached" });
    const before = await memcached.stats();
    const slap = await run("memcslap", [
      `--servers=127.0.0.1:${proxy.address.port}`,
      "--concurrency=8",
      "--execute-number=2000",
      "--test=get",
    ], { timeoutMs: 20_000 });
    assertEquals(slap.code, 0, describeRun(slap));
    // memcslap exits 0 even when every connection failed: the counts it reports tell.
    assertNoErrorOutput(slap, "memcslap");
    assertMatch(slap.stdout, /Time to set\s+2000 keys/, describeRun(slap));
    assertMatch(slap.stdout, /Time to get\s+16000 keys by\s+8 threads/, describeRun(slap));
    const after = await memcached.stats();
    const delta = (name: string) => Number(after.get(name)) - Number(before.get(name));
    assertEquals(delta("cmd_set"), 2_000, "the keys were stored on the server");
    assertGreaterOrEqual(delta("cmd_get"), 16_000, "every get reached the server");
    assertEquals(delta("get_misses"), 0, "every get found its key");
  },
});

Deno.test({
  name:
    `memcached: 20 processes (memccp, then memccat) store 10 files and read them back byte for byte through the proxy, reusing server connections although each ends with quit${noMemcTools}`,
  ignore: noMemcTools !== "",
  fn: async () => {
    await using memcached = await MemcachedServer.start();
    await using proxy = startProxy(upstreamAt(memcached.port), { protocol: "memcached" });
    const servers = `--servers=127.0.0.1:${proxy.address.port}`;
    const dir = await Deno.makeTempDir({ prefix: "real_servers_test_" });
    try {
      const files = Array.from({ length: 10 }, (_, i) => ({
        key: `file${i}`,
        // 1 byte to 300,000 bytes: answers from one read to many (the proxy's read buffers grow
        // to 256 KiB), all under memcached's default 1 MiB item limit.
        bytes: patternBytes(
          [1, 100, 1_000, 4_096, 10_000, 65_535, 65_536, 100_000, 200_000, 300_000][i],
          i + 1,
        ),
      }));
      for (const file of files) await Deno.writeFile(`${dir}/${file.key}`, file.bytes);
      const before = await memcached.connectionsReceived();
      for (const file of files) {
        const stored = await run("memccp", [servers, `${dir}/${file.key}`], { timeoutMs: 5_000 });
        assertEquals(stored.code, 0, `memccp ${file.key}: ${describeRun(stored)}`);
      }
      for (const file of files) {
        const out = `${dir}/${file.key}.out`;
        const read = await run("memccat", [servers, `--file=${out}`, file.key], {
          timeoutMs: 5_000,
        });
        assertEquals(read.code, 0, `memccat ${file.key}: ${describeRun(read)}`);
        const back = await Deno.readFile(out);
        assertEquals(back.length, file.bytes.length, `${file.key}: length`);
        assert(back.every((byte, i) => byte === file.bytes[i]), `${file.key}: the same bytes`);
      }
      await proxy.sessionsEnded(2 * files.length);
      const connections = await memcached.connectionsReceived() - before;
      console.log(
        `memccp/memccat: ${2 * files.length} client processes, ${connections} connections ` +
          `received by memcached`,
      );
      // libmemcached's tools end every connection with `quit`; the proxy answers it itself
      // (README, "Exact reuse") instead of passing it on, so the connection serves the next one.
      assertLessOrEqual(connections, 2, sessionsText(proxy));
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test({
  name:
    `memcached: a client that half-closes after version and a get of a 251-byte key (memcached drops the version answer) gets its EOF at once, not after --fin-timeout, and its connection is closed${noMemcached}`,
  ignore: noMemcached !== "",
  fn: async () => {
    await using memcached = await MemcachedServer.start();
    await using proxy = startProxy(upstreamAt(memcached.port), {
      protocol: "memcached",
      finTimeoutMs: 30_000,
    });
    const conn = await connect(proxy.address);
    try {
      await writeAll(conn, encoder.encode(`version\r\nget ${"x".repeat(251)}\r\n`));
      await conn.closeWrite();
      // memcached sends the error line alone; the version's answer never comes.
      const reply = await within(conn, 3_000, () => readToEnd(conn));
      assertEquals(decoder.decode(reply), "CLIENT_ERROR bad command line format\r\n");
    } finally {
      closeQuietly(conn);
    }
    await proxy.sessionsEnded(1);
    const [summary] = proxy.sessions;
    assertStringIncludes(summary.unfit ?? "", "longer than 250 bytes", sessionsText(proxy));
    assertEquals(proxy.server.pool.stats.idle, 0, "the connection was closed, not pooled");
  },
});

Deno.test({
  name:
    `memcached: 20 clients one after the other, each set + get + close (no quit), are served over reused server connections${noMemcached}`,
  ignore: noMemcached !== "",
  fn: async () => {
    await using memcached = await MemcachedServer.start();
    await using proxy = startProxy(upstreamAt(memcached.port), { protocol: "memcached" });
    const clients = 20;
    const before = await memcached.connectionsReceived();
    for (let i = 0; i < clients; i++) {
      const value = decoder.decode(patternBytes(100 + i, i + 1).map((b) => 97 + (b % 26)));
      const request = `set k${i} 0 0 ${value.length}\r\n${value}\r\nget k${i}\r\n`;
      const expected = `STORED\r\nVALUE k${i} 0 ${value.length}\r\n${value}\r\nEND\r\n`;
      const conn = await connect(proxy.address);
      try {
        const reply = await within(conn, 5_000, async () => {
          await writeAll(conn, encoder.encode(request));
          return decoder.decode(await readExactly(conn, encoder.encode(expected).length));
        });
        assertEquals(reply, expected);
      } finally {
        closeQuietly(conn);
      }
      await proxy.sessionsEnded(i + 1);
    }
    const connections = await memcached.connectionsReceived() - before;
    console.log(`memcached, clients without quit: ${clients} clients, ${connections} connections`);
    assertLessOrEqual(connections, 2, `connections were reused\n${sessionsText(proxy)}`);
    assertGreaterOrEqual(connections, 1);
  },
});
