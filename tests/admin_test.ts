/**
 * The admin HTTP server (`src/admin.ts`), over real HTTP on loopback with `fetch`: each endpoint
 * with its status and content type, HEAD, 404 and 405, readiness flipping between 200 and 503,
 * a provider that throws (500, logged, and the server goes on), a taken port, shutdown with
 * connections that never finish a request or never read, and, where `promtool` is installed,
 * Prometheus's own check of a real scrape.
 *
 * Every response body is read to its end, so that no test leaves a stream behind.
 *
 * @module
 */

import {
  assert,
  assertEquals,
  assertGreater,
  assertInstanceOf,
  assertLess,
  assertMatch,
  assertStringIncludes,
  assertThrows,
} from "./_assert.ts";
import { AdminListenError, type AdminOptions, type AdminServer, startAdmin } from "../src/admin.ts";
import { closeQuietly, delay, encoder, readToEnd, within, writeAll } from "./_net.ts";
import { missingBinaries, run } from "./_servers.ts";
import { captureLog } from "./_log.ts";
import {
  counterFamily,
  exponentialBuckets,
  exposition,
  EXPOSITION_CONTENT_TYPE,
  gaugeFamily,
  Histogram,
  histogramFamily,
  type MetricFamily,
  samplesByLabel,
  statsJson,
} from "../src/metrics.ts";

const noPromtool = missingBinaries("promtool");

/** What a test's proxy would expose: counters it bumps, a gauge, a histogram. */
class FakeProxyFigures {
  dials = 0;
  refused: Record<string, number> = { "pool full": 0, "unfit": 0 };
  idle = 4;
  readonly connectSeconds = new Histogram([0.001, 0.01, 0.1]);

  families(): MetricFamily[] {
    return [
      counterFamily("tcp_pool_proxy_dials_total", "Upstream dials started.", this.dials),
      counterFamily(
        "tcp_pool_proxy_release_refusals_total",
        "Upstream connections closed instead of pooled, by reason.",
        samplesByLabel("reason", this.refused),
      ),
      gaugeFamily("tcp_pool_proxy_idle_connections", "Idle upstream connections.", this.idle),
      histogramFamily(
        "tcp_pool_proxy_connect_duration_seconds",
        "Time to connect to the upstream.",
        this.connectSeconds,
      ),
    ];
  }
}

function startOnLoopback(options: Omit<AdminOptions, "listen">): AdminServer {
  return startAdmin({ listen: { hostname: "127.0.0.1", port: 0 }, ...options });
}

interface Reply {
  status: number;
  contentType: string | null;
  contentLength: string | null;
  allow: string | null;
  body: string;
}

/** Sends one request to the admin server and reads the whole answer. */
async function request(admin: AdminServer, path: string, init: RequestInit = {}): Promise<Reply> {
  const response = await fetch(`http://127.0.0.1:${admin.address.port}${path}`, init);
  const body = await response.text();
  return {
    status: response.status,
    contentType: response.headers.get("content-type"),
    contentLength: response.headers.get("content-length"),
    allow: response.headers.get("allow"),
    body,
  };
}

/** Runs `fn` with the proxy's logging at `info` as JSON, and returns the records written. */
async function captureRecords(fn: () => Promise<void>): Promise<Record<string, unknown>[]> {
  return (await captureLog(fn, "json")).map((line) => JSON.parse(line));
}

Deno.test("GET /metrics answers the caller's families and the process's in Prometheus text", async () => {
  const figures = new FakeProxyFigures();
  await using admin = startOnLoopback({ metrics: () => figures.families() });
  figures.dials = 3;
  figures.refused["pool full"] = 2;
  figures.connectSeconds.observe(0.004);
  const reply = await request(admin, "/metrics");
  assertEquals(reply.status, 200);
  assertEquals(reply.contentType, "text/plain; version=0.0.4; charset=utf-8");
  assertEquals(reply.contentType, EXPOSITION_CONTENT_TYPE);
  assert(reply.body.startsWith(exposition(figures.families())), reply.body);
  assertStringIncludes(reply.body, "\ntcp_pool_proxy_dials_total 3\n");
  assertStringIncludes(
    reply.body,
    '\ntcp_pool_proxy_release_refusals_total{reason="pool full"} 2\n',
  );
  assertStringIncludes(
    reply.body,
    '\ntcp_pool_proxy_connect_duration_seconds_bucket{le="0.01"} 1\n',
  );
  assertMatch(reply.body, /^process_resident_memory_bytes \d+$/m);
  assertMatch(reply.body, /^process_start_time_seconds [\d.]+$/m);
  assert(reply.body.endsWith("\n"));
  // A later scrape sees the counters as they are then.
  figures.dials = 4;
  assertStringIncludes((await request(admin, "/metrics")).body, "\ntcp_pool_proxy_dials_total 4\n");
});

Deno.test("GET /stats answers the same figures as JSON, with the caller's config", async () => {
  const figures = new FakeProxyFigures();
  figures.dials = 7;
  figures.refused.unfit = 1;
  figures.connectSeconds.observe(0.05);
  const config = { pool: "reuse", poolSize: 100, listen: { hostname: "127.0.0.1", port: 8848 } };
  await using admin = startOnLoopback({
    metrics: () => figures.families(),
    config: () => config,
    processMetrics: false,
  });
  const reply = await request(admin, "/stats");
  assertEquals(reply.status, 200);
  assertEquals(reply.contentType, "application/json");
  const stats = JSON.parse(reply.body);
  assertEquals(stats.config, config);
  assertEquals(stats.metrics, JSON.parse(JSON.stringify(statsJson(figures.families()))));
  assertEquals(stats.metrics.tcp_pool_proxy_dials_total, 7);
  assertEquals(stats.metrics.tcp_pool_proxy_release_refusals_total, { "pool full": 0, unfit: 1 });
  assertEquals(stats.metrics.tcp_pool_proxy_connect_duration_seconds, {
    count: 1,
    sum: 0.05,
    buckets: { "0.001": 0, "0.01": 0, "0.1": 1, "+Inf": 1 },
  });
});

Deno.test("/stats includes the process's figures by default, and config is {} when none is given", async () => {
  await using admin = startOnLoopback({ metrics: () => [] });
  const stats = JSON.parse((await request(admin, "/stats")).body);
  assertEquals(stats.config, {});
  assertGreater(stats.metrics.process_resident_memory_bytes, 0);
  assertEquals(typeof stats.metrics.process_start_time_seconds, "number");
});

Deno.test("each request to /metrics or /stats asks the providers once", async () => {
  let metricsCalls = 0;
  let configCalls = 0;
  await using admin = startOnLoopback({
    metrics: () => {
      metricsCalls++;
      return [gaugeFamily("tcp_pool_proxy_calls", "Calls so far.", metricsCalls)];
    },
    config: () => {
      configCalls++;
      return {};
    },
  });
  await request(admin, "/metrics");
  await request(admin, "/stats");
  await request(admin, "/healthz");
  assertEquals([metricsCalls, configCalls], [2, 1]);
});

Deno.test("GET /healthz answers 200 ok", async () => {
  await using admin = startOnLoopback({ metrics: () => [] });
  const reply = await request(admin, "/healthz");
  assertEquals([reply.status, reply.contentType, reply.body], [
    200,
    "text/plain; charset=utf-8",
    "ok\n",
  ]);
});

Deno.test("/readyz flips between 200 ready and 503 with the reason on one line", async () => {
  let readiness: { ready: true } | { ready: false; reason: string } = { ready: true };
  await using admin = startOnLoopback({ metrics: () => [], readiness: () => readiness });
  let reply = await request(admin, "/readyz");
  assertEquals([reply.status, reply.contentType, reply.body], [
    200,
    "text/plain; charset=utf-8",
    "ready\n",
  ]);
  readiness = { ready: false, reason: "draining: 3 sessions\nstill running" };
  reply = await request(admin, "/readyz");
  assertEquals([reply.status, reply.body], [503, "draining: 3 sessions still running\n"]);
  readiness = { ready: false, reason: "" };
  assertEquals((await request(admin, "/readyz")).body, "not ready\n");
  readiness = { ready: true };
  assertEquals((await request(admin, "/readyz")).status, 200);
});

Deno.test("/readyz without a readiness provider is always ready", async () => {
  await using admin = startOnLoopback({ metrics: () => [] });
  assertEquals((await request(admin, "/readyz")).status, 200);
});

Deno.test("HEAD on each endpoint answers GET's status and headers, with no body", async () => {
  let ready = true;
  const figures = new FakeProxyFigures();
  await using admin = startOnLoopback({
    metrics: () => figures.families(),
    processMetrics: false,
    readiness: () => ready ? { ready: true } : { ready: false, reason: "starting" },
  });
  for (const path of ["/metrics", "/stats", "/healthz", "/readyz"]) {
    const get = await request(admin, path);
    const head = await request(admin, path, { method: "HEAD" });
    assertEquals(head.status, get.status, path);
    assertEquals(head.contentType, get.contentType, path);
    assertEquals(head.contentLength, String(encoder.encode(get.body).length), path);
    assertEquals(head.body, "", path);
  }
  ready = false;
  const head = await request(admin, "/readyz", { method: "HEAD" });
  assertEquals([head.status, head.body], [503, ""]);
});

Deno.test("an unknown path is 404, whatever the method; a query string is ignored", async () => {
  await using admin = startOnLoopback({ metrics: () => [] });
  for (const path of ["/", "/metric", "/metrics/", "/Metrics", "/stats.json", "/healthz/x"]) {
    const reply = await request(admin, path);
    assertEquals([reply.status, reply.body], [404, "not found\n"], path);
  }
  assertEquals((await request(admin, "/nowhere", { method: "POST", body: "x" })).status, 404);
  assertEquals((await request(admin, "/healthz?verbose=1")).status, 200);
});

Deno.test("a method other than GET or HEAD on a known path is 405 with Allow: GET, HEAD", async () => {
  let calls = 0;
  await using admin = startOnLoopback({
    metrics: () => {
      calls++;
      return [];
    },
  });
  for (const path of ["/metrics", "/stats", "/healthz", "/readyz"]) {
    for (const method of ["POST", "PUT", "DELETE", "OPTIONS"]) {
      const body = method === "POST" || method === "PUT" ? "ignored" : undefined;
      const reply = await request(admin, path, { method, body });
      assertEquals([reply.status, reply.allow], [405, "GET, HEAD"], `${method} ${path}`);
      assertEquals(reply.body, "method not allowed; use GET or HEAD\n");
    }
  }
  assertEquals(calls, 0, "a refused method runs no provider");
});

Deno.test("a provider that throws gives a 500 with one line, is logged once, and the server goes on serving", async () => {
  let broken = true;
  let records: Record<string, unknown>[] = [];
  const figures = new FakeProxyFigures();
  records = await captureRecords(async () => {
    await using admin = startOnLoopback({
      metrics: () => {
        if (broken) throw new TypeError("cannot read the pool\nat all");
        return figures.families();
      },
    });
    for (const path of ["/metrics", "/stats", "/metrics"]) {
      const reply = await request(admin, path);
      assertEquals(reply.status, 500, path);
      assertEquals(reply.contentType, "text/plain; charset=utf-8");
      assertEquals(reply.body.split("\n").length, 2, `one line: ${reply.body}`);
      assertStringIncludes(reply.body, "failed: cannot read the pool at all");
    }
    assertEquals((await request(admin, "/healthz")).status, 200);
    broken = false;
    assertEquals((await request(admin, "/metrics")).status, 200);
    assertEquals((await request(admin, "/stats")).status, 200);
  });
  const errors = records.filter((r) => r.level === "ERROR");
  // One for /metrics (the second failure within a minute is counted, not logged), one for /stats.
  assertEquals(errors.length, 2, JSON.stringify(errors));
  for (const record of errors) {
    assertEquals(record.logger, "tcp-pool-proxy.admin");
    const stack = String((record.properties as Record<string, unknown>).stack);
    assertStringIncludes(stack, "TypeError: cannot read the pool");
    assertStringIncludes(stack, "admin_test.ts");
  }
  const info = records.find((r) => r.level === "INFO");
  assertStringIncludes(String(info?.message), "admin server on ");
  assertMatch(String((info?.properties as Record<string, unknown>).address), /^127\.0\.0\.1:\d+$/);
});

Deno.test("a readiness or config provider that throws gives a 500, and families that cannot be written too", async () => {
  await using admin = startOnLoopback({
    metrics: () => [gaugeFamily("bad name", "Help.", 1)],
    config: () => {
      throw new Error("no config");
    },
    readiness: () => {
      throw new Error("no readiness");
    },
  });
  let reply = await request(admin, "/readyz");
  assertEquals([reply.status, reply.body], [
    500,
    "the readiness for /readyz failed: no readiness\n",
  ]);
  reply = await request(admin, "/metrics");
  assertEquals(reply.status, 500);
  assertStringIncludes(reply.body, `metric "bad name": is not a valid metric name`);
  assertEquals((await request(admin, "/stats")).status, 500);
  assertEquals((await request(admin, "/healthz")).status, 200);
});

Deno.test("a stats config that JSON cannot hold gives a 500, not a broken answer", async () => {
  await using admin = startOnLoopback({
    metrics: () => [],
    config: () => ({ big: 1n }),
  });
  const reply = await request(admin, "/stats");
  assertEquals(reply.status, 500);
  assertStringIncludes(reply.body, "BigInt");
});

Deno.test("startAdmin on a port in use throws AdminListenError naming the address", async () => {
  await using first = startOnLoopback({ metrics: () => [] });
  const error = assertThrows(
    () =>
      startAdmin({
        listen: { hostname: "127.0.0.1", port: first.address.port },
        metrics: () => [],
      }),
    AdminListenError,
    "address already in use",
  );
  assertEquals(error.address, { hostname: "127.0.0.1", port: first.address.port });
  assertStringIncludes(error.message, `cannot listen on 127.0.0.1:${first.address.port}: `);
  assertInstanceOf(error.cause, Deno.errors.AddrInUse);
});

Deno.test("shutdown stops listening, can be called twice, and the port refuses connections after", async () => {
  const admin = startOnLoopback({ metrics: () => [] });
  assertEquals((await request(admin, "/healthz")).status, 200);
  const first = admin.shutdown();
  const second = admin.shutdown();
  assert(first === second, "the same promise");
  await first;
  let refused = false;
  try {
    const conn = await Deno.connect({ hostname: "127.0.0.1", port: admin.address.port });
    closeQuietly(conn);
  } catch (error) {
    refused = error instanceof Deno.errors.ConnectionRefused;
  }
  assert(refused, "connection refused after shutdown");
});

Deno.test("shutdown is prompt with connections that are silent, half-sent, idle after an answer, or not reading", async () => {
  const admin = startOnLoopback({
    metrics: () => [gaugeFamily("tcp_pool_proxy_padding", "x".repeat(4000), 1)],
    processMetrics: false,
  });
  const address = { hostname: "127.0.0.1", port: admin.address.port };
  const silent = await Deno.connect(address);
  const halfSent = await Deno.connect(address);
  const keptAlive = await Deno.connect(address);
  const notReading = await Deno.connect(address);
  const conns = [silent, halfSent, keptAlive, notReading];
  try {
    await writeAll(halfSent, encoder.encode("GET /metrics HTTP/1.1\r\nHost: x\r\nX-Slow: "));
    await writeAll(keptAlive, encoder.encode("GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"));
    const answer = new Uint8Array(1024);
    const n = await within(keptAlive, 2_000, () => keptAlive.read(answer));
    assert(n !== null && new TextDecoder().decode(answer.subarray(0, n)).includes("200 OK"));
    // Many pipelined scrapes of about 4 KiB each that are never read fill the socket buffers.
    const pipelined = encoder.encode("GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n".repeat(2_000));
    const writing = writeAll(notReading, pipelined).catch(() => {});
    await delay(200);
    const started = performance.now();
    await admin.shutdown();
    assertLess(performance.now() - started, 1_000, "shutdown waited for a client");
    // Every connection ends: each reads to EOF (or a reset) promptly.
    for (const conn of conns) {
      await within(conn, 2_000, () => readToEnd(conn).catch(() => new Uint8Array()));
    }
    closeQuietly(notReading);
    await writing;
  } finally {
    for (const conn of conns) closeQuietly(conn);
  }
});

/** Sends `text` on a new connection to `admin` and reads until the server closes it. */
async function rawExchange(admin: AdminServer, text: string): Promise<string> {
  const conn = await Deno.connect({ hostname: "127.0.0.1", port: admin.address.port });
  try {
    await writeAll(conn, encoder.encode(text));
    return new TextDecoder().decode(await within(conn, 2_000, () => readToEnd(conn)));
  } finally {
    closeQuietly(conn);
  }
}

Deno.test("a request head over the limit is 431, a malformed request line is 400, and each connection is closed after one answer", async () => {
  await using admin = startOnLoopback({ metrics: () => [], limits: { maxHeadBytes: 256 } });
  const long = await rawExchange(
    admin,
    `GET /healthz HTTP/1.1\r\nX-Long: ${"x".repeat(300)}\r\n\r\n`,
  );
  assertMatch(long, /^HTTP\/1\.1 431 /);
  for (
    const line of [
      "GET /healthz",
      "GET  /healthz HTTP/1.1",
      "G@T /healthz HTTP/1.1",
      "GET /healthz HTTP/2",
    ]
  ) {
    assertMatch(await rawExchange(admin, `${line}\r\nHost: x\r\n\r\n`), /^HTTP\/1\.1 400 /, line);
  }
  // Two requests on one connection: one answer, then the server closes.
  const two = await rawExchange(admin, "GET /healthz HTTP/1.1\r\n\r\nGET /readyz HTTP/1.1\r\n\r\n");
  assertEquals(two.match(/HTTP\/1\.1 /g)?.length, 1, two);
  assertStringIncludes(two, "connection: close\r\n");
  assert(two.endsWith("\r\n\r\nok\n"), two);
  // Lines may end in a bare LF, and empty lines before the request line are ignored.
  assertMatch(await rawExchange(admin, "GET /healthz HTTP/1.1\nHost: x\n\n"), /^HTTP\/1\.1 200 /);
  assertMatch(
    await rawExchange(admin, "\r\n\r\nGET /healthz HTTP/1.0\r\n\r\n"),
    /^HTTP\/1\.1 200 /,
  );
  // An absolute-form target names the same path.
  assertMatch(
    await rawExchange(admin, "GET http://x/healthz HTTP/1.1\r\n\r\n"),
    /^HTTP\/1\.1 200 /,
  );
});

Deno.test("a connection that sends nothing, or half a request, is closed at the deadline", async () => {
  await using admin = startOnLoopback({ metrics: () => [], limits: { deadlineMs: 300 } });
  const address = { hostname: "127.0.0.1", port: admin.address.port };
  const silent = await Deno.connect(address);
  const halfSent = await Deno.connect(address);
  try {
    await writeAll(halfSent, encoder.encode("GET /metrics HTTP/1.1\r\nHost: x\r\nX-Slow: "));
    const started = performance.now();
    for (const conn of [silent, halfSent]) {
      assertEquals((await within(conn, 3_000, () => readToEnd(conn))).length, 0);
    }
    assertLess(performance.now() - started, 2_000);
    assertEquals((await request(admin, "/healthz")).status, 200, "the server goes on serving");
  } finally {
    closeQuietly(silent);
    closeQuietly(halfSent);
  }
});

Deno.test("silent connections at the limit cannot lock out a health check: the oldest one still waiting for its request makes room, with one warning", async () => {
  const records = await captureRecords(async () => {
    await using admin = startOnLoopback({ metrics: () => [], limits: { maxConnections: 4 } });
    const address = { hostname: "127.0.0.1", port: admin.address.port };
    const silent: Deno.TcpConn[] = [];
    try {
      for (let i = 0; i < 4; i++) silent.push(await Deno.connect(address));
      await delay(50); // all four accepted
      for (let i = 0; i < 3; i++) {
        const started = performance.now();
        assertEquals((await request(admin, "/healthz")).status, 200);
        assertLess(performance.now() - started, 1_000);
      }
      // The three oldest silent connections were closed to make room, the newest is open.
      for (const conn of silent.slice(0, 3)) {
        const bytes = await within(
          conn,
          2_000,
          () => readToEnd(conn).catch(() => new Uint8Array()),
        );
        assertEquals(bytes.length, 0, "closed without an answer");
      }
    } finally {
      for (const conn of silent) closeQuietly(conn);
    }
  });
  const warnings = records.filter((r) =>
    String(r.message).includes("admin connections at the limit")
  );
  assertEquals(warnings.length, 1, "one warning for three evictions");
});

Deno.test("at the limit, a connection answered and not yet closed by its client makes room before an older one still waiting for its request", async () => {
  // Found by review: 16 clients in a loop (connect, GET /healthz, read, close) against 16 places
  // lost 13% of their requests: the oldest connection waiting for its request head was closed
  // first, though its request had arrived and was not yet read, while answered ones were kept.
  await using admin = startOnLoopback({ metrics: () => [], limits: { maxConnections: 2 } });
  const address = { hostname: "127.0.0.1", port: admin.address.port };
  const waiting = await Deno.connect(address); // the older one: its request not yet here
  const answered = await Deno.connect(address);
  try {
    await writeAll(answered, encoder.encode("GET /healthz HTTP/1.1\r\n\r\n"));
    await within(answered, 2_000, () => readToEnd(answered)); // answered; never closes
    assertEquals((await request(admin, "/healthz")).status, 200);
    // The answered one made room; the waiting one is still served when its request comes.
    await writeAll(waiting, encoder.encode("GET /healthz HTTP/1.1\r\n\r\n"));
    const answer = new TextDecoder().decode(await within(waiting, 2_000, () => readToEnd(waiting)));
    assertEquals(answer.split("\r\n")[0], "HTTP/1.1 200 OK");
  } finally {
    closeQuietly(waiting);
    closeQuietly(answered);
  }
});

Deno.test("clients that got their answer but keep the connection open make room too, the oldest first", async () => {
  await using admin = startOnLoopback({ metrics: () => [], limits: { maxConnections: 2 } });
  const address = { hostname: "127.0.0.1", port: admin.address.port };
  const lingering: Deno.TcpConn[] = [];
  try {
    for (let i = 0; i < 2; i++) {
      const conn = await Deno.connect(address);
      lingering.push(conn);
      await writeAll(conn, encoder.encode("GET /healthz HTTP/1.1\r\n\r\n"));
      // Reads the answer (and the server's FIN), and never closes.
      await within(conn, 2_000, () => readToEnd(conn));
    }
    for (let i = 0; i < 3; i++) assertEquals((await request(admin, "/healthz")).status, 200);
  } finally {
    for (const conn of lingering) closeQuietly(conn);
  }
});

Deno.test({
  name: `promtool check metrics accepts a real scrape${noPromtool}`,
  ignore: noPromtool !== "",
  fn: async () => {
    const figures = new FakeProxyFigures();
    figures.dials = 12;
    figures.refused["pool full"] = 2;
    for (const seconds of [0.0004, 0.003, 0.2]) figures.connectSeconds.observe(seconds);
    const tiny = new Histogram(exponentialBuckets(1e-7, 10, 3));
    tiny.observe(1e-8);
    await using admin = startOnLoopback({
      metrics: () => [
        ...figures.families(),
        counterFamily(
          "tcp_pool_proxy_sessions_ended_total",
          `Sessions ended, by "end" code\\reason\nsee README.`,
          [
            { labels: { end: "client-closed", note: `a "quoted"\nvalue\\` }, value: 1190 },
            { labels: { end: "connect-failed", note: "" }, value: 7 },
          ],
        ),
        gaugeFamily("tcp_pool_proxy_max_clients", "Most client sessions at once.", Infinity),
        gaugeFamily("tcp_pool_proxy_odd_values", "Values JSON cannot hold.", [
          { labels: { value: "nan" }, value: NaN },
          { labels: { value: "minus_inf" }, value: -Infinity },
          { labels: { value: "tiny" }, value: 1.5e-7 },
        ]),
        histogramFamily("tcp_pool_proxy_tiny_duration_seconds", "Bounds in exponent form.", tiny),
      ],
    });
    const scrape = await request(admin, "/metrics");
    assertEquals(scrape.status, 200);
    // promtool accepts an empty input: make sure this one is the real thing.
    for (
      const line of [
        "# TYPE tcp_pool_proxy_sessions_ended_total counter",
        'tcp_pool_proxy_connect_duration_seconds_bucket{le="+Inf"} 3',
        'tcp_pool_proxy_tiny_duration_seconds_bucket{le="1e-7"} 1',
        'tcp_pool_proxy_odd_values{value="nan"} NaN',
        "tcp_pool_proxy_max_clients +Inf",
        "# TYPE process_resident_memory_bytes gauge",
      ]
    ) assertStringIncludes(scrape.body, `${line}\n`);
    const checked = await run("promtool", ["check", "metrics"], {
      stdin: encoder.encode(scrape.body),
    });
    assertEquals([checked.code, checked.stdout + checked.stderr], [0, ""], scrape.body);
  },
});
