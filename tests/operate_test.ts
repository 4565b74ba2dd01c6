/**
 * Operating the proxy: the admin endpoint's figures against sessions the test itself ran,
 * readiness (upstream reachable, --max-clients, the drain), the access log, and the flags' bad
 * input. In process through ProxyServer and startAdmin, and end to end through main.ts.
 */

import {
  assert,
  assertEquals,
  assertGreaterOrEqual,
  assertLessOrEqual,
  assertMatch,
  assertStringIncludes,
} from "./_assert.ts";
import { captureLog } from "./_log.ts";
import { startAdmin } from "../src/admin.ts";
import { formatHostPort, type HostPort } from "../src/address.ts";
import { exposition } from "../src/metrics.ts";
import { metricFamilies } from "../src/observe.ts";
import type { ProxyServer } from "../src/proxy.ts";
import {
  closeQuietly,
  connect,
  delay,
  echo,
  encoder,
  eventually,
  readExactly,
  readToEnd,
  roundTrip,
  startProxy,
  TestUpstream,
  twoOverlappingSessions,
  within,
  writeAll,
} from "./_net.ts";
import { EchoUpstream, exchange, MAIN_TS, ProxyProcess, relayOnce } from "./_proxy_process.ts";
import { describeRun, freePort, missingBinaries, run } from "./_servers.ts";

const MIB = 1024 * 1024;

/** Serves the admin endpoint of `server` on 127.0.0.1:0, as main.ts does. */
function adminOf(server: ProxyServer) {
  return startAdmin({
    listen: { hostname: "127.0.0.1", port: 0 },
    metrics: () => metricFamilies(server.stats),
    config: () => ({ pool: "test" }),
    readiness: () => server.readiness(),
  });
}

async function get(address: HostPort, path: string): Promise<{ status: number; body: string }> {
  const response = await fetch(`http://${formatHostPort(address)}${path}`);
  return { status: response.status, body: await response.text() };
}

/** Polls `/readyz` until it answers `status`, for up to `ms`. */
async function readyzBecomes(address: HostPort, status: number, ms: number): Promise<void> {
  const until = performance.now() + ms;
  let last = { status: 0, body: "" };
  while (performance.now() < until) {
    last = await get(address, "/readyz");
    if (last.status === status) return;
    await delay(20);
  }
  throw new Error(`/readyz stayed ${last.status} ${JSON.stringify(last.body)}, wanted ${status}`);
}

/** The value of the sample `name{labels}` (exactly as written) in an exposition text. */
function sample(text: string, series: string): number {
  const line = text.split("\n").find((l) => l.startsWith(`${series} `));
  assert(line !== undefined, `no sample ${series} in:\n${text}`);
  return Number(line.slice(series.length + 1));
}

Deno.test("/metrics and /stats count the sessions, bytes, borrows and dials the test ran", async () => {
  await using upstream = new TestUpstream(echo);
  await using proxy = startProxy(upstream.address, { pool: "reuse" });
  await using admin = adminOf(proxy.server);
  for (const text of ["one", "two!", "three"]) {
    assertEquals(await roundTrip(proxy.address, text), text);
  }
  await proxy.sessionsEnded(3);
  const metrics = await get(admin.address, "/metrics");
  assertEquals(metrics.status, 200);
  const m = metrics.body;
  assertEquals(sample(m, "tcp_pool_proxy_sessions_started_total"), 3);
  assertEquals(sample(m, 'tcp_pool_proxy_sessions_ended_total{end="client-closed"}'), 3);
  assertEquals(sample(m, "tcp_pool_proxy_sessions_active"), 0);
  assertEquals(sample(m, 'tcp_pool_proxy_bytes_total{direction="client_to_upstream"}'), 12);
  assertEquals(sample(m, 'tcp_pool_proxy_bytes_total{direction="upstream_to_client"}'), 12);
  assertEquals(sample(m, "tcp_pool_proxy_session_duration_seconds_count"), 3);
  const hits = proxy.sessions.filter((s) => s.source === "pool").length;
  assertEquals(sample(m, 'tcp_pool_proxy_pool_borrows_total{source="pool"}'), hits);
  assertEquals(sample(m, 'tcp_pool_proxy_pool_borrows_total{source="dial"}'), 3 - hits);
  assertEquals(sample(m, "tcp_pool_proxy_upstream_dials_total"), upstream.accepted);
  assertEquals(
    sample(m, "tcp_pool_proxy_upstream_connect_duration_seconds_count"),
    upstream.accepted,
  );
  assertEquals(sample(m, "tcp_pool_proxy_pool_returned_total"), 3);
  assertEquals(
    sample(m, 'tcp_pool_proxy_pool_connections{state="idle"}'),
    proxy.server.pool.stats.idle,
  );
  assertMatch(m, /^process_resident_memory_bytes \d+/m);
  // /stats: the same figures, one JSON document, with the configuration.
  const stats = JSON.parse((await get(admin.address, "/stats")).body);
  assertEquals(stats.metrics.tcp_pool_proxy_sessions_started_total, 3);
  assertEquals(stats.metrics.tcp_pool_proxy_sessions_ended_total["client-closed"], 3);
  assertEquals(stats.metrics.tcp_pool_proxy_pool_returned_total, 3);
  assertEquals(stats.config, { pool: "test" });
});

Deno.test("/metrics: dial failures by reason and connections refused by the pool, by reason", async () => {
  await using upstream = new TestUpstream(echo);
  await using proxy = startProxy(upstream.address, { pool: "reuse", poolSize: 1 });
  await using admin = adminOf(proxy.server);
  await twoOverlappingSessions(proxy.address);
  await proxy.sessionsEnded(2);
  const m = (await get(admin.address, "/metrics")).body;
  assertEquals(sample(m, 'tcp_pool_proxy_pool_release_refused_total{reason="pool_full"}'), 1);
  // A refused dial: an upstream that is gone.
  await upstream.close();
  await eventually(() => proxy.server.pool.stats.idle === 0, 2_000, "the idle one dropped");
  const c = await connect(proxy.address);
  await within(c, 3_000, () => c.read(new Uint8Array(1)).catch(() => null));
  closeQuietly(c);
  await proxy.sessionsEnded(3);
  const after = (await get(admin.address, "/metrics")).body;
  assertEquals(sample(after, 'tcp_pool_proxy_upstream_dial_failures_total{reason="refused"}'), 1);
  assertEquals(sample(after, 'tcp_pool_proxy_sessions_ended_total{end="connect-failed"}'), 1);
  assertGreaterOrEqual(
    sample(after, 'tcp_pool_proxy_pool_idle_dropped_total{reason="closed_by_upstream"}'),
    1,
  );
});

Deno.test("/readyz: checking, then ready once a probe reached the upstream; 503 with the reason once it is gone, 200 again when it returns", async () => {
  const upstream = new TestUpstream(echo);
  await using proxy = startProxy(upstream.address, { pool: "off", readyIntervalMs: 200 });
  await using admin = adminOf(proxy.server);
  const first = await get(admin.address, "/readyz");
  assertEquals(first.status, 503);
  assertStringIncludes(first.body, `checking upstream ${formatHostPort(upstream.address)}`);
  // The probe that first call started lands.
  await readyzBecomes(admin.address, 200, 3_000);
  assertEquals(upstream.accepted, 1, "one probe dial");
  await upstream.close();
  // Within the interval a success stands; past it, a probe finds the upstream gone.
  assertEquals((await get(admin.address, "/readyz")).status, 200);
  await delay(250);
  await readyzBecomes(admin.address, 503, 3_000);
  const gone = await get(admin.address, "/readyz");
  assertMatch(gone.body, /^upstream 127\.0\.0\.1:\d+ unreachable: .*connection refused/);
  // The upstream returns on the same port: the next probe finds it, ready again.
  await using back = new TestUpstream(echo, upstream.address);
  await readyzBecomes(admin.address, 200, 3_000);
  assertGreaterOrEqual(back.accepted, 1, "a probe reached it");
});

Deno.test("/readyz: a finished exchange proves the upstream serves, with no probe, in off", async () => {
  await using upstream = new TestUpstream(echo);
  await using proxy = startProxy(upstream.address, { pool: "off", maxUpstream: 1 });
  await using admin = adminOf(proxy.server);
  // The client sends, reads the echo, closes; its FIN is passed on and the echo closes too.
  assertEquals(await roundTrip(proxy.address, "ping"), "ping");
  await proxy.sessionsEnded(1);
  const answer = await get(admin.address, "/readyz");
  assertEquals(answer.status, 200, answer.body);
  assertEquals(proxy.server.pool.stats.dials, 1, "no probe was needed");
});

Deno.test("/readyz at --max-upstream with one long session: checking (no probe past the bound), ready once the session's exchange ends", async () => {
  await using upstream = new TestUpstream(echo);
  await using proxy = startProxy(upstream.address, { pool: "off", maxUpstream: 1 });
  await using admin = adminOf(proxy.server);
  const held = await connect(proxy.address);
  try {
    await within(held, 2_000, async () => {
      await writeAll(held, encoder.encode("x"));
      await readExactly(held, 1);
    });
    const waiting = await get(admin.address, "/readyz");
    assertEquals([waiting.status, waiting.body], [
      503,
      `checking upstream ${formatHostPort(upstream.address)}\n`,
    ]);
    assertEquals(proxy.server.pool.stats.dials, 1, "no probe past --max-upstream");
  } finally {
    closeQuietly(held);
  }
  await proxy.sessionsEnded(1);
  assertEquals((await get(admin.address, "/readyz")).status, 200);
});

Deno.test("/readyz against a refusing upstream: a flood of requests makes at most one probe dial a second", async () => {
  const gone = new TestUpstream(echo);
  const address = gone.address;
  await gone.close();
  await using proxy = startProxy(address, { pool: "off", readyIntervalMs: 200 });
  await using admin = adminOf(proxy.server);
  const started = performance.now();
  let answers = 0;
  while (performance.now() - started < 1_500) {
    assertEquals((await get(admin.address, "/readyz")).status, 503);
    answers++;
  }
  assertGreaterOrEqual(answers, 50);
  // 1.5 s: the first probe, then at most one a second after each one's end.
  assertLessOrEqual(proxy.server.pool.stats.dials, 3, `${answers} requests`);
});

for (
  const [what, behaviour] of [
    ["accepts and closes at once", () => Promise.resolve()],
    ["greets with -ERR max number of clients reached and closes", async (conn: Deno.TcpConn) => {
      await writeAll(conn, encoder.encode("-ERR max number of clients reached\r\n"));
    }],
  ] as const
) {
  for (const pool of ["off", "warm"] as const) {
    Deno.test(`/readyz (${pool}) is 503 for an upstream that ${what}, clients or not`, async () => {
      await using upstream = new TestUpstream(behaviour);
      await captureLog(async () => {
        // The default readiness interval (10 s): a connect, refills' included, is no proof.
        await using proxy = startProxy(upstream.address, { pool });
        await using admin = adminOf(proxy.server);
        await get(admin.address, "/readyz"); // starts a probe
        await readyzBecomes(admin.address, 503, 3_000);
        for (let i = 0; i < 8; i++) {
          // A client whose session gets the upstream's greeting, or nothing, and its close; every
          // other one sends a request first (a real client does, before the greeting is read).
          const client = await connect(proxy.address);
          if (i % 2 === 1) await writeAll(client, encoder.encode("PING\r\n")).catch(() => {});
          await within(client, 2_000, () => readToEnd(client).catch(() => new Uint8Array()));
          closeQuietly(client);
          const answer = await get(admin.address, "/readyz");
          assertEquals(answer.status, 503, answer.body);
          assertMatch(answer.body, /unreachable: .*(closed|reset)/);
          await delay(200);
        }
      });
    });
  }
}

Deno.test("/readyz is 503 at --max-clients, and ready again below it", async () => {
  await using upstream = new TestUpstream(echo);
  await using proxy = startProxy(upstream.address, { pool: "reuse", maxClients: 1 });
  await using admin = adminOf(proxy.server);
  assertEquals(await roundTrip(proxy.address, "x"), "x");
  await proxy.sessionsEnded(1);
  assertEquals((await get(admin.address, "/readyz")).status, 200);
  const held = await connect(proxy.address);
  await within(held, 2_000, async () => {
    await writeAll(held, encoder.encode("y"));
    await readExactly(held, 1);
  });
  await readyzBecomes(admin.address, 503, 2_000);
  assertEquals((await get(admin.address, "/readyz")).body, "at --max-clients 1\n");
  closeQuietly(held);
  await proxy.sessionsEnded(2);
  await readyzBecomes(admin.address, 200, 2_000);
});

Deno.test("cli --admin: /healthz and /metrics while serving; /readyz turns 503 the moment a drain starts, while a session still runs", async () => {
  await using upstream = await EchoUpstream.start();
  await using proxy = ProxyProcess.spawnMain([
    "--listen",
    "127.0.0.1:0",
    "--upstream",
    upstream.address,
    "--pool",
    "reuse",
    "--admin",
    "127.0.0.1:0",
  ]);
  const port = await proxy.listeningPort();
  const found = await proxy.waitForLine(/admin server on 127\.0\.0\.1:(\d+)/);
  const admin = { hostname: "127.0.0.1", port: Number(found.match[1]) };
  assertEquals(await get(admin, "/healthz"), { status: 200, body: "ok\n" });
  const session = await Deno.connect({ hostname: "127.0.0.1", port });
  try {
    assertEquals(await exchange(session, "ping", 3_000), "ping");
    await readyzBecomes(admin, 200, 3_000);
    const metrics = await get(admin, "/metrics");
    assertEquals(sample(metrics.body, "tcp_pool_proxy_sessions_active"), 1);
    proxy.kill("SIGTERM");
    await proxy.waitForLine(/SIGTERM: draining 1 sessions/);
    const draining = await get(admin, "/readyz");
    assertEquals(draining, { status: 503, body: "draining: not taking new clients\n" });
    assertEquals((await get(admin, "/healthz")).status, 200, "still serving the drain");
  } finally {
    closeQuietly(session);
  }
  assertEquals((await proxy.exited()).code, 0);
});

Deno.test("cli --read-ahead-memory: /metrics gives the budget in force (32 MiB by default, 0 when given 0), and clients whose upstream stopped reading never take more", async () => {
  for (
    const [flags, budget] of [[[], 32 * 1024 * 1024], [["--read-ahead-memory", "0"], 0]] as const
  ) {
    const release = Promise.withResolvers<void>();
    await using upstream = new TestUpstream(async () => await release.promise); // never reads
    await using proxy = ProxyProcess.spawnMain([
      "--listen",
      "127.0.0.1:0",
      "--upstream",
      formatHostPort(upstream.address),
      "--pool",
      "off",
      "--admin",
      "127.0.0.1:0",
      ...flags,
    ]);
    const port = await proxy.listeningPort();
    const found = await proxy.waitForLine(/admin server on 127\.0\.0\.1:(\d+)/);
    const admin = { hostname: "127.0.0.1", port: Number(found.match[1]) };
    const clients = await Promise.all(
      Array.from({ length: 4 }, () => connect({ hostname: "127.0.0.1", port })),
    );
    // More than the kernel's buffers take: the proxy's writes upstream block.
    const writing = clients.map((c) => writeAll(c, new Uint8Array(16 * MIB)).catch(() => {}));
    try {
      await delay(300); // the buffers fill and the writes block
      const metrics = (await get(admin, "/metrics")).body;
      const what = `with ${flags.join(" ") || "the default"}`;
      assertEquals(sample(metrics, "tcp_pool_proxy_read_ahead_budget_bytes"), budget, what);
      assertLessOrEqual(sample(metrics, "tcp_pool_proxy_read_ahead_bytes"), budget, what);
    } finally {
      for (const client of clients) closeQuietly(client);
      release.resolve();
      await Promise.all(writing);
    }
    proxy.kill("SIGTERM");
    assertEquals((await proxy.exited()).code, 0, proxy.stderr);
  }
});

Deno.test("cli --access-log: one line per finished session with its times, bytes, source, end and release; none without the flag", async () => {
  await using upstream = await EchoUpstream.start();
  for (const [flags, lines] of [[["--access-log"], 2], [[], 0]] as const) {
    await using proxy = ProxyProcess.spawnMain([
      "--listen",
      "127.0.0.1:0",
      "--upstream",
      upstream.address,
      "--pool",
      "reuse",
      ...flags,
    ]);
    const port = await proxy.listeningPort();
    for (const text of ["hello", "again"]) {
      assertEquals(await relayOnce(port, text, 3_000), text);
    }
    if (lines > 0) {
      const first = await proxy.waitForLine(/tcp-pool-proxy\.access: /);
      assertMatch(
        first.line,
        /\[INF\] tcp-pool-proxy\.access: 127\.0\.0\.1:\d+ -> 127\.0\.0\.1:\d+ session 1 dial [\d.]+\/[\d.]+\/[\d.]+ms up 5B down 5B client-closed retried no release pooled$/,
      );
      // The second may find the first's connection still settling (--reuse-settle 5ms): a dial.
      const second = await proxy.waitForLine(/tcp-pool-proxy\.access: .* session 2 (pool|dial) /);
      assertMatch(second.line, / up 5B down 5B client-closed retried no release pooled$/);
    } else {
      await delay(200);
    }
    proxy.kill("SIGTERM");
    await proxy.exited();
    assertEquals(proxy.lines.filter((l) => l.includes("tcp-pool-proxy.access")).length, lines);
  }
});

Deno.test("cli --access-log with --log-format json: one JSON record per session with the fields", async () => {
  await using upstream = await EchoUpstream.start();
  await using proxy = ProxyProcess.spawnMain([
    "--listen",
    "127.0.0.1:0",
    "--upstream",
    upstream.address,
    "--pool",
    "off",
    "--access-log",
    "--log-format",
    "json",
  ]);
  const port = await proxy.listeningPort();
  assertEquals(await relayOnce(port, "abc", 3_000), "abc");
  const found = await proxy.waitForLine(/"logger":"tcp-pool-proxy\.access"/);
  const record = JSON.parse(found.line);
  const p = record.properties;
  assertEquals([p.source, p.end, p.release, p.retried], [
    "dial",
    "client-closed",
    "mode_does_not_reuse",
    "no",
  ]);
  assertEquals([p.bytesFromClient, p.bytesFromServer], [3, 3]);
  for (const key of ["queueMs", "connectMs", "durationMs"]) assertEquals(typeof p[key], "number");
  assertEquals(p.upstream, upstream.address);
  assertMatch(p.client, /^127\.0\.0\.1:\d+$/);
});

Deno.test("cli: a bad --admin or --access-log value is one line and exit 2; an --admin address in use is one line and exit 1", async () => {
  const run = async (args: string[]) => {
    const { code, stderr } = await new Deno.Command(Deno.execPath(), {
      args: ["run", "--quiet", "--allow-net", MAIN_TS, "--listen", "127.0.0.1:0", ...args],
      stdin: "null",
      stdout: "null",
      stderr: "piped",
    }).output();
    return { code, lines: new TextDecoder().decode(stderr).trimEnd().split("\n") };
  };
  const bad = await run(["--admin", "nowhere"]);
  assertEquals(bad.code, 2);
  assertEquals(bad.lines.length, 1);
  assertMatch(bad.lines[0], /^tcp-pool-proxy: --admin: /);
  const valued = await run(["--access-log=yes"]);
  assertEquals(valued, {
    code: 2,
    lines: ['tcp-pool-proxy: --access-log: takes no value, got "yes"; give --access-log alone'],
  });
  using taken = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const inUse = await run(["--admin", `127.0.0.1:${(taken.addr as Deno.NetAddr).port}`]);
  assertEquals(inUse.code, 1);
  assertEquals(inUse.lines.length, 1, inUse.lines.join("\n"));
  assertMatch(inUse.lines[0], /^tcp-pool-proxy: --admin: cannot listen on 127\.0\.0\.1:\d+: /);
});

const noPromtool = missingBinaries("promtool");

Deno.test({
  name: `promtool check metrics accepts a real scrape of a proxy that served sessions${noPromtool}`,
  ignore: noPromtool !== "",
  fn: async () => {
    await using upstream = new TestUpstream(echo);
    await using proxy = startProxy(upstream.address, { pool: "reuse" });
    assertEquals(await roundTrip(proxy.address, "p"), "p");
    await proxy.sessionsEnded(1);
    const text = exposition(metricFamilies(proxy.server.stats));
    const checked = await run("promtool", ["check", "metrics"], { stdin: encoder.encode(text) });
    const said = checked.stdout + checked.stderr;
    assertEquals(checked.code, 0, describeRun(checked));
    assertEquals(said.trim(), "", "no lint warnings");
  },
});

const noPrometheus = missingBinaries("prometheus");

Deno.test({
  name:
    `a real Prometheus server scrapes /metrics and answers a query for the sessions the test ran${noPrometheus}`,
  ignore: noPrometheus !== "",
  fn: async () => {
    await using upstream = new TestUpstream(echo);
    await using proxy = startProxy(upstream.address, { pool: "reuse" });
    await using admin = adminOf(proxy.server);
    for (let i = 0; i < 7; i++) assertEquals(await roundTrip(proxy.address, `m${i}`), `m${i}`);
    await proxy.sessionsEnded(7);
    const dir = await Deno.makeTempDir({ prefix: "prometheus-" });
    const config = `${dir}/prometheus.yml`;
    await Deno.writeTextFile(
      config,
      [
        "global:",
        "  scrape_interval: 1s",
        "scrape_configs:",
        "  - job_name: tcp-pool-proxy",
        "    static_configs:",
        `      - targets: ["${formatHostPort(admin.address)}"]`,
        "",
      ].join("\n"),
    );
    const port = freePort();
    const server = new Deno.Command("prometheus", {
      args: [
        `--config.file=${config}`,
        `--storage.tsdb.path=${dir}/data`,
        `--web.listen-address=127.0.0.1:${port}`,
        "--log.level=error",
      ],
      stdin: "null",
      stdout: "null",
      stderr: "piped",
    }).spawn();
    try {
      const query = encodeURIComponent("tcp_pool_proxy_sessions_started_total");
      let value: string | undefined;
      const until = performance.now() + 20_000;
      while (value === undefined && performance.now() < until) {
        await delay(250);
        try {
          const response = await fetch(`http://127.0.0.1:${port}/api/v1/query?query=${query}`);
          const body = await response.json();
          value = body?.data?.result?.[0]?.value?.[1];
        } catch {
          // not up yet
        }
      }
      assertEquals(value, "7", "Prometheus has the counter the proxy exposed");
    } finally {
      server.kill("SIGTERM");
      await server.stderr.cancel();
      await server.status;
      await Deno.remove(dir, { recursive: true });
    }
  },
});
