/**
 * The proxy (`main.ts` as a child process, `--upstream-tls`) in front of real TLS servers from
 * Debian's packages, reached by plaintext clients: `openssl s_server -rev` (each line comes back
 * reversed) through `--pool off` and `--pool reuse`, and with a required client certificate
 * (`-Verify 1`): served with `--upstream-cert/--upstream-key`, refused without; `redis-server`
 * on its TLS port driven by `redis-benchmark` and `redis-cli`, with and without
 * `--tls-auth-clients yes`. Last, a test of `make_test_certs.ts` itself, with Deno's TLS and
 * `node:tls` only, which always runs.
 *
 * Each test makes its own throwaway PKI with `make_test_certs.ts` in a temporary directory
 * (removed at its end), and is ignored, with the reason in its name, where a binary it needs is
 * missing or `redis-server` was built without TLS. Every process a test starts is stopped by
 * its handle when the test ends (`await using`).
 *
 * @module
 */

import tls from "node:tls";
import {
  assert,
  assertEquals,
  assertGreaterOrEqual,
  assertLess,
  assertMatch,
  assertRejects,
} from "./_assert.ts";
import {
  closeQuietly,
  connect,
  decoder,
  discardingLease,
  encoder,
  readToEnd,
  startProxy,
  writeAll,
} from "./_net.ts";
import { UpstreamConnectError } from "../src/dial.ts";
import { MEMCACHED_OPENING_CHECK, type OpeningCheck } from "../src/opening_check.ts";
import { UpstreamPool } from "../src/pool.ts";

import { awaitClosed, MAIN_TS, ProxyProcess, relayOnce } from "./_proxy_process.ts";
import { describeRun, missingBinaries, onFreePort, run, type RunResult } from "./_servers.ts";
import { makeTestCerts, type TestCerts } from "./make_test_certs.ts";

/** `PoolStats.dialFailuresBy` with no failure. */
const NO_DIAL_FAILURES = { timeout: 0, refused: 0, closed: 0, tls: 0, descriptors: 0, error: 0 };

// ---- certificates, servers, proxies ----

/** Runs `fn` with a fresh throwaway PKI in a temporary directory, removed afterwards. */
async function withCerts<T>(fn: (certs: TestCerts) => Promise<T>): Promise<T> {
  const dir = await Deno.makeTempDir({ prefix: "tls_real_servers_test_" });
  try {
    return await fn(await makeTestCerts(dir));
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

/**
 * A server process started by a test, listening on 127.0.0.1:`port`; its stderr is collected
 * line by line. Disposing of it kills it and awaits its exit.
 */
interface TestServer extends AsyncDisposable {
  process: ProxyProcess;
  port: number;
}

/**
 * Starts `command` with `argsFor(port)` on a free port, and waits until `ready` succeeds; up to 3
 * tries (another process may take the port between our probe and the server's bind).
 *
 * @throws {Error} with the server's stderr, when no try came up.
 */
async function startServer(
  command: string,
  argsFor: (port: number) => string[],
  ready: (server: TestServer) => Promise<void>,
): Promise<TestServer> {
  return await onFreePort(async (port) => {
    const child = ProxyProcess.spawn(command, argsFor(port));
    const server = { process: child, port, [Symbol.asyncDispose]: () => child.dispose() };
    try {
      await ready(server);
      return server;
    } catch (error) {
      await child.dispose();
      throw new Error(`${command} did not start: ${error}\nstderr:\n${child.stderr}`, {
        cause: error,
      });
    }
  });
}

/** Waits until 127.0.0.1:`port` accepts a TCP connection (closed at once). */
async function untilListening(server: TestServer, timeoutMs = 5_000): Promise<void> {
  const deadline = performance.now() + timeoutMs;
  for (;;) {
    if (server.process.hasExited) throw new Error("it exited while starting");
    try {
      const probe = await Deno.connect({ hostname: "127.0.0.1", port: server.port });
      closeQuietly(probe);
      return;
    } catch (error) {
      if (performance.now() > deadline) {
        throw new Error(`nothing listening on ${server.port} after ${timeoutMs}ms`, {
          cause: error,
        });
      }
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
  }
}

/**
 * `openssl s_server -rev` with `certs`' server certificate: for each line it reads, it writes
 * the line reversed; it serves one connection at a time, and logs each (`CONNECTION
 * ESTABLISHED`, `Peer certificate: ...`, `CONNECTION CLOSED` or `CONNECTION FAILURE`) on stderr.
 */
function startSServer(certs: TestCerts, extra: string[] = []): Promise<TestServer> {
  return startServer(
    "openssl",
    (port) => [
      "s_server",
      ...["-accept", `127.0.0.1:${port}`],
      ...["-cert", certs.serverCertFile, "-key", certs.serverKeyFile],
      "-quiet",
      "-rev",
      ...extra,
    ],
    // The probe's connection fails its handshake (logged); s_server goes on to the next one.
    (server) => untilListening(server),
  );
}

/** What `openssl s_server -rev` answers to `line` (which ends with a newline). */
function reversedLine(line: string): string {
  return `${[...line.slice(0, -1)].reverse().join("")}\n`;
}

/**
 * `redis-server` with only its TLS port (on 127.0.0.1) and `certs`' server certificate; clients
 * need `certs`' client certificate when `authClients`. No persistence; its log on stderr.
 */
function startRedisTls(certs: TestCerts, authClients: boolean): Promise<TestServer> {
  return startServer(
    "redis-server",
    (port) => [
      ...["--port", "0", "--bind", "127.0.0.1", "--tls-port", String(port)],
      ...["--tls-cert-file", certs.serverCertFile, "--tls-key-file", certs.serverKeyFile],
      ...["--tls-ca-cert-file", certs.caFile, "--tls-auth-clients", authClients ? "yes" : "no"],
      ...["--save", "", "--appendonly", "no", "--daemonize", "no", "--dir", certs.dir],
      ...["--logfile", "/dev/stderr", "--loglevel", "notice"],
    ],
    async (server) => {
      await server.process.waitForLine(/Ready to accept connections/, 5_000);
    },
  );
}

/** Lines of a `redis-server` that fails on its TLS options because it was built without TLS. */
const NO_TLS_BUILD = /Bad directive|not supported|not compiled|without TLS|connection listener/i;

/**
 * `""` where `redis-server` serves TLS; otherwise ` (ignored: ...)` with its own words. A start
 * that fails for another reason is not a reason to ignore: the tests then run and show it.
 */
async function redisWithoutTls(): Promise<string> {
  try {
    await withCerts(async (certs) => {
      await using _redis = await startRedisTls(certs, false);
    });
    return "";
  } catch (error) {
    const cause = error instanceof Error ? error.message : String(error);
    const line = cause.split("\n").find((text) => NO_TLS_BUILD.test(text));
    if (line === undefined) return "";
    return ` (ignored: redis-server has no TLS: ${JSON.stringify(line.trim())})`;
  }
}

/**
 * Spawns the proxy (`deno run main.ts`, reading only `certs.dir`) on 127.0.0.1 port 0 in front
 * of the TLS upstream 127.0.0.1:`upstreamPort`, trusting `certs`' CA, with an access log line
 * per session; `flags` add to that. Take its port from {@link ProxyProcess.listeningPort}.
 */
function spawnProxy(certs: TestCerts, upstreamPort: number, flags: string[]): ProxyProcess {
  return ProxyProcess.spawn(Deno.execPath(), [
    ...["run", "--quiet", "--allow-net", `--allow-read=${certs.dir}`, MAIN_TS],
    ...["--listen", "127.0.0.1:0", "--upstream", `127.0.0.1:${upstreamPort}`, "--access-log"],
    ...["--upstream-tls", "--upstream-ca", certs.caFile],
    ...flags,
  ]);
}

/** `--upstream-cert` and `--upstream-key` with `certs`' client certificate. */
function clientCertFlags(certs: TestCerts): string[] {
  return ["--upstream-cert", certs.clientCertFile, "--upstream-key", certs.clientKeyFile];
}

/** One finished session, from the proxy's access log (`accessLogEntry` of src/observe.ts). */
interface AccessEntry {
  source: string;
  down: number;
  end: string;
  release: string;
}

const ACCESS_LINE =
  /session \d+ (\S+) [\d./]+ms up \d+B down (\d+)B (\S+) retried (?:yes|no) release (\S+)/;

/** Waits for the first `count` access log lines of `proxy`, and returns them. */
async function accessEntries(proxy: ProxyProcess, count: number): Promise<AccessEntry[]> {
  const entries: AccessEntry[] = [];
  for (let from = 0; entries.length < count;) {
    const { index, match } = await proxy.waitForLine(ACCESS_LINE, 5_000, from);
    const [, source, down, end, release] = match;
    entries.push({ source, down: Number(down), end, release });
    from = index + 1;
  }
  return entries;
}

/** Waits until `process` has written `count` stderr lines matching `pattern`; returns the count. */
async function linesMatching(
  process: ProxyProcess,
  pattern: RegExp,
  count: number,
): Promise<number> {
  for (let from = 0, seen = 0; seen < count; seen++) {
    from = (await process.waitForLine(pattern, 5_000, from)).index + 1;
  }
  return process.lines.filter((line) => pattern.test(line)).length;
}

// ---- openssl s_server ----

const noOpenssl = missingBinaries("openssl");

for (const pool of ["off", "reuse"] as const) {
  const clients = 3;
  const handshakes = pool === "reuse" ? 1 : clients;
  Deno.test({
    name:
      `openssl s_server: ${clients} plaintext clients one after the other through --pool ${pool} --upstream-tls --upstream-ca each get their line reversed, over ${
        handshakes === 1 ? "one TLS connection" : `${handshakes} TLS connections`
      }${noOpenssl}`,
    ignore: noOpenssl !== "",
    fn: () =>
      withCerts(async (certs) => {
        await using server = await startSServer(certs);
        // s_server serves one connection at a time: a connection dialled ahead (preconnect)
        // would wait for its handshake behind the pooled one, so reuse runs without.
        const poolFlags = pool === "reuse" ? ["--preconnect-ratio", "0"] : [];
        await using proxy = spawnProxy(certs, server.port, ["--pool", pool, ...poolFlags]);
        const port = await proxy.listeningPort();
        for (let i = 0; i < clients; i++) {
          const line = `client ${i} over TLS\n`;
          assertEquals(await relayOnce(port, line), reversedLine(line), proxy.stderr);
        }
        const sessions = await accessEntries(proxy, clients);
        assertEquals(
          sessions.map((s) => `${s.source} ${s.end}`),
          Array.from(
            { length: clients },
            (_, i) => `${pool === "reuse" && i > 0 ? "pool" : "dial"} client-closed`,
          ),
          proxy.stderr,
        );
        const established = /^CONNECTION ESTABLISHED$/;
        assertEquals(
          await linesMatching(server.process, established, handshakes),
          handshakes,
          `s_server's own count of TLS handshakes\n${server.process.stderr}`,
        );
        proxy.kill("SIGTERM");
        assertEquals((await proxy.exited()).code, 0, proxy.stderr);
      }),
  });
}

Deno.test({
  name:
    `openssl s_server -Verify 1 (a client certificate required): served with --upstream-cert/--upstream-key; without them each client's connection is closed unanswered and that proxy goes on${noOpenssl}`,
  ignore: noOpenssl !== "",
  fn: () =>
    withCerts(async (certs) => {
      await using server = await startSServer(certs, ["-Verify", "1", "-CAfile", certs.caFile]);

      // Without a client certificate: TLS 1.3 lets the proxy finish its side of the handshake
      // before s_server checks the certificate, so the refusal (an alert) can come after the
      // dial; either way the client is closed without an answer.
      await using withoutCert = spawnProxy(certs, server.port, ["--pool", "off"]);
      const refusedPort = await withoutCert.listeningPort();
      for (let attempt = 0; attempt < 2; attempt++) {
        const conn = await connect({ hostname: "127.0.0.1", port: refusedPort });
        try {
          await writeAll(conn, encoder.encode("no certificate\n")).catch(() => {});
          const closed = await awaitClosed(conn, 5_000);
          assert(
            closed.ended !== "deadline",
            `attempt ${attempt}: not closed\n${withoutCert.stderr}`,
          );
          assertEquals(closed.bytes, 0, `attempt ${attempt}: no answer`);
        } finally {
          closeQuietly(conn);
        }
      }
      for (const session of await accessEntries(withoutCert, 2)) {
        // A refusal that came as the first read's alert is the dial's failure all the same.
        assertEquals(session.end, "connect-failed", withoutCert.stderr);
        assertEquals(session.down, 0);
      }
      assertMatch(
        withoutCert.stderr,
        /\[WRN\].*unavailable \(connect-failed\): .*TLS: the upstream requires a client certificate/,
      );
      // The readiness probe and memcached's opening check meet the refusal as their first read's
      // error: each counts one failed dial, as TLS (they counted it "closed" and "error").
      const secureContext = tls.createSecureContext({ ca: [certs.ca] });
      const refusingPool = (mode: "off" | "reuse", openingCheck?: OpeningCheck) =>
        new UpstreamPool({
          upstream: { hostname: "127.0.0.1", port: server.port },
          ...{ mode, maxIdle: 1, minIdle: 0, idleTimeoutMs: 60_000, maxLifetimeMs: 0 },
          connectTimeoutMs: 5_000,
          tls: { secureContext: () => secureContext },
          openingCheck,
        });
      const probing = refusingPool("off");
      try {
        await probing.probe();
        assertEquals(probing.stats.dialFailuresBy, { ...NO_DIAL_FAILURES, tls: 1 });
      } finally {
        await probing.close();
      }
      // Sessions in reuse: a refusal read before the borrower leased the connection was counted
      // twice, once as TLS while idle and again as "closed", with that reason for the session.
      {
        await using proxy = startProxy({ hostname: "127.0.0.1", port: server.port }, {
          pool: "reuse",
          tls: { secureContext: () => secureContext },
        });
        for (let i = 0; i < 60; i++) {
          const conn = await connect(proxy.address);
          try {
            await writeAll(conn, encoder.encode("no certificate\n")).catch(() => {});
            assertEquals((await awaitClosed(conn, 5_000)).bytes, 0);
          } finally {
            closeQuietly(conn);
          }
        }
        await proxy.sessionsEnded(60);
        const stats = proxy.server.pool.stats;
        assertEquals(stats.dialFailuresBy, { ...NO_DIAL_FAILURES, tls: stats.dials });
        for (const session of proxy.sessions) {
          assertEquals(session.end, "connect-failed");
          assertMatch(session.error ?? "", /TLS: the upstream requires a client certificate/);
        }
      }
      const checking = refusingPool("reuse", MEMCACHED_OPENING_CHECK);
      try {
        const error = await assertRejects(() => checking.borrow(discardingLease));
        assert(error instanceof UpstreamConnectError && error.failure === "tls", String(error));
        assertMatch(error.message, /TLS: the upstream requires a client certificate/);
        assertEquals(checking.stats.dialFailuresBy, { ...NO_DIAL_FAILURES, tls: 1 });
      } finally {
        await checking.close();
      }

      // warm: its refills are refused the same way while idle, and said to be, not "closed".
      await using warm = spawnProxy(certs, server.port, ["--pool", "warm", "--min-idle", "1"]);
      await warm.waitForLine(
        /\[WRN\].*cannot keep idle connections ready.*TLS: the upstream requires a client certificate/,
        5_000,
      );
      // s_server's own word, at least once per session (how often the proxy dials is its own).
      assertGreaterOrEqual(
        await linesMatching(server.process, /peer did not return a certificate/, 2),
        2,
        `${server.process.stderr}\nproxy:\n${withoutCert.stderr}`,
      );

      // With the client certificate, through the same s_server: served, and reused.
      await using withCert = spawnProxy(certs, server.port, [
        ...["--pool", "reuse", "--preconnect-ratio", "0"],
        ...clientCertFlags(certs),
      ]);
      const port = await withCert.listeningPort();
      for (let i = 0; i < 2; i++) {
        const line = `with a certificate ${i}\n`;
        assertEquals(await relayOnce(port, line), reversedLine(line), withCert.stderr);
      }
      const peer = /^Peer certificate: .*tcp-pool-proxy test client \(throwaway\)/;
      assertEquals(await linesMatching(server.process, peer, 1), 1, server.process.stderr);
      assert(!withoutCert.hasExited, `the refused proxy went on\n${withoutCert.stderr}`);
    }),
});

// ---- redis-server over TLS ----

const noRedisTools = missingBinaries("redis-server", "redis-cli", "redis-benchmark");
/** `noRedisTools`, or why this machine's `redis-server` cannot serve TLS. */
const noRedisTls = noRedisTools !== "" ? noRedisTools : await redisWithoutTls();

/** Runs `redis-benchmark -k 0` (a new connection per request) against `port`; asserts success. */
async function redisBenchmark(port: number, requests: number, what: string): Promise<void> {
  const bench = await run("redis-benchmark", [
    ...["-h", "127.0.0.1", "-p", String(port)],
    ...["-k", "0", "-c", "10", "-n", String(requests), "-t", "set,get", "-q"],
  ], { timeoutMs: 20_000 });
  assertEquals(bench.code, 0, `${what}: ${describeRun(bench)}`);
  assertNoErrorOutput(bench, what);
  // -q prints one final line per test (after \r-separated progress lines).
  const finals = bench.stdout.split(/[\r\n]+/).map((line) => line.trim())
    .filter((line) => /^[A-Z]+: [\d.]+ requests per second/.test(line));
  assertEquals(finals.map((line) => line.split(":")[0]), ["SET", "GET"], describeRun(bench));
  console.log(`${what}: ${finals.join("; ")}`);
}

/** Asserts that a client's output says nothing of an error. */
function assertNoErrorOutput(result: RunResult, what: string): void {
  const text = `${result.stdout}\n${result.stderr}`;
  assert(!/error|fail|reset|refused|timed? ?out/i.test(text), `${what}: ${describeRun(result)}`);
}

/** `redis-cli PING` in plaintext through the proxy at `port`. */
function redisPing(port: number): Promise<RunResult> {
  return run("redis-cli", ["-h", "127.0.0.1", "-p", String(port), "PING"], { timeoutMs: 5_000 });
}

/**
 * `total_connections_received` of the TLS `redis-server` at `port`, asked directly with
 * `redis-cli --tls` (this connection included).
 */
async function redisConnectionsReceived(
  certs: TestCerts,
  port: number,
  withClientCert: boolean,
): Promise<number> {
  const result = await run("redis-cli", [
    ...["--tls", "--cacert", certs.caFile],
    ...(withClientCert ? ["--cert", certs.clientCertFile, "--key", certs.clientKeyFile] : []),
    ...["-h", "127.0.0.1", "-p", String(port), "INFO", "stats"],
  ], { timeoutMs: 5_000 });
  const count = /^total_connections_received:(\d+)\r?$/m.exec(result.stdout)?.[1];
  if (result.code !== 0 || count === undefined) {
    throw new Error(`redis-cli --tls INFO stats: ${describeRun(result)}`);
  }
  return Number(count);
}

Deno.test({
  name:
    `redis-server on its TLS port: redis-benchmark -k 0 (10 clients, 2,000 SET and 2,000 GET) and redis-cli PING in plaintext through --pool reuse --protocol redis --upstream-tls --upstream-ca, over under 10% as many TLS connections${noRedisTls}`,
  ignore: noRedisTls !== "",
  fn: () =>
    withCerts(async (certs) => {
      await using redis = await startRedisTls(certs, false);
      await using proxy = spawnProxy(certs, redis.port, ["--pool", "reuse", "--protocol", "redis"]);
      const port = await proxy.listeningPort();
      const before = await redisConnectionsReceived(certs, redis.port, false);
      await redisBenchmark(port, 2_000, "redis-benchmark over TLS");
      const ping = await redisPing(port);
      assertEquals(ping.stdout, "PONG\n", describeRun(ping));
      // Less this question's own connection.
      const connections = await redisConnectionsReceived(certs, redis.port, false) - before - 1;
      console.log(`redis over TLS: 4,001 requests, ${connections} TLS connections to redis-server`);
      assert(connections >= 1, "the proxy connected");
      assertLess(connections, 4_000 / 10, `TLS connections were reused\n${proxy.stderr}`);
    }),
});

Deno.test({
  name:
    `redis-server --tls-auth-clients yes: redis-benchmark and redis-cli PING served through --upstream-cert/--upstream-key; without them, no PONG${noRedisTls}`,
  ignore: noRedisTls !== "",
  fn: () =>
    withCerts(async (certs) => {
      await using redis = await startRedisTls(certs, true);
      const flags = ["--pool", "reuse", "--protocol", "redis"];
      {
        // TLS 1.3: redis-server refuses the missing certificate after the proxy's side of the
        // handshake is done, so the session fails at its first read, as a server error.
        await using withoutCert = spawnProxy(certs, redis.port, flags);
        const ping = await redisPing(await withoutCert.listeningPort());
        assert(ping.code !== 0 && !ping.stdout.includes("PONG"), describeRun(ping));
        assertMatch(ping.stderr, /closed/i, describeRun(ping));
        const [session] = await accessEntries(withoutCert, 1);
        assertMatch(
          session.end,
          /^(connect-failed|server-error|server-closed)$/,
          withoutCert.stderr,
        );
        assertEquals(session.down, 0);
        assert(!withoutCert.hasExited, withoutCert.stderr);
      }
      await using proxy = spawnProxy(certs, redis.port, [...flags, ...clientCertFlags(certs)]);
      const port = await proxy.listeningPort();
      const ping = await redisPing(port);
      assertEquals(ping.stdout, "PONG\n", `${describeRun(ping)}\nproxy:\n${proxy.stderr}`);
      await redisBenchmark(port, 1_000, "redis-benchmark over mutual TLS");
      const connections = await redisConnectionsReceived(certs, redis.port, true);
      assertLess(connections, 2_001 / 10, `TLS connections were reused\n${proxy.stderr}`);
    }),
});

// ---- make_test_certs.ts itself (no openssl needed) ----

/**
 * Serves one TLS connection with `cert`/`key` on 127.0.0.1 (it writes `served` and closes), and
 * connects to it with `connectTo`; returns what came back, or `refused: <the client's error>`.
 */
async function oneHandshake(
  cert: string,
  key: string,
  connectTo: (port: number) => Promise<string>,
): Promise<string> {
  const listener = Deno.listenTls({ hostname: "127.0.0.1", port: 0, cert, key });
  const serving = (async () => {
    const conn = await listener.accept();
    try {
      await conn.handshake();
      await writeAll(conn, encoder.encode("served"));
    } catch {
      // the client refused the certificate
    } finally {
      closeQuietly(conn);
    }
  })();
  try {
    return await connectTo(listener.addr.port);
  } finally {
    await serving;
    closeQuietly(listener);
  }
}

/** Deno's TLS (rustls) as the client: TCP to 127.0.0.1, certificate checked for `name`. */
async function denoClient(port: number, name: string, ca: string): Promise<string> {
  let conn: Deno.TlsConn;
  if (name === "127.0.0.1") {
    conn = await Deno.connectTls({ hostname: name, port, caCerts: [ca] });
  } else {
    // `localhost` may resolve to ::1 first; the name is only the one to check.
    const tcp = await Deno.connect({ hostname: "127.0.0.1", port });
    conn = await Deno.startTls(tcp, { hostname: name, caCerts: [ca] });
  }
  try {
    await conn.handshake();
    return decoder.decode(await readToEnd(conn));
  } catch (error) {
    return `refused: ${error instanceof Error ? error.message : error}`;
  } finally {
    closeQuietly(conn);
  }
}

/** `node:tls` as the client of 127.0.0.1:`port`, for the name `localhost`. */
function nodeClient(port: number, options: tls.ConnectionOptions): Promise<string> {
  return new Promise((resolve) => {
    const socket = tls.connect({ host: "127.0.0.1", port, servername: "localhost", ...options });
    let received = "";
    let failure: string | undefined;
    socket.setEncoding("utf8");
    socket.on("data", (chunk: string) => received += chunk);
    socket.on("error", (error: Error) => failure = error.message);
    socket.on("close", () => resolve(failure === undefined ? received : `refused: ${failure}`));
  });
}

Deno.test("make_test_certs: the CA signs server and client; expired and other-server are refused", () =>
  withCerts(async (certs) => {
    const files: [string, string][] = [
      [certs.caFile, certs.ca],
      [certs.serverCertFile, certs.serverCert],
      [certs.serverKeyFile, certs.serverKey],
      [certs.clientCertFile, certs.clientCert],
      [certs.clientKeyFile, certs.clientKey],
      [certs.otherCaFile, certs.otherCa],
      [certs.otherServerCertFile, certs.otherServerCert],
      [certs.otherServerKeyFile, certs.otherServerKey],
      [certs.expiredCertFile, certs.expiredCert],
      [certs.expiredKeyFile, certs.expiredKey],
    ];
    for (const [file, text] of files) {
      assertEquals(await Deno.readTextFile(file), text, file);
      assertMatch(text, /^-----BEGIN (CERTIFICATE|PRIVATE KEY)-----\n[A-Za-z0-9+/=\n]+-----END/);
    }
    const names = [...Deno.readDirSync(certs.dir)].map((entry) => entry.name).sort();
    assertEquals(names, [
      ...["ca.crt", "ca.key", "client.crt", "client.key", "expired.crt", "expired.key"],
      ...["other-ca.crt", "other-ca.key", "other-server.crt", "other-server.key"],
      ...["server.crt", "server.key"],
    ]);

    // Deno (rustls) trusts the server certificate by name and by IP address; refuses the others.
    const { serverCert, serverKey, ca } = certs;
    for (const name of ["localhost", "127.0.0.1"]) {
      const answer = await oneHandshake(serverCert, serverKey, (p) => denoClient(p, name, ca));
      assertEquals(answer, "served", name);
    }
    assertMatch(
      await oneHandshake(
        certs.expiredCert,
        certs.expiredKey,
        (p) => denoClient(p, "localhost", ca),
      ),
      /^refused: .*expired/i,
    );
    assertMatch(
      await oneHandshake(
        certs.otherServerCert,
        certs.otherServerKey,
        (p) => denoClient(p, "localhost", ca),
      ),
      /^refused: .*UnknownIssuer/,
    );
    // node:tls as the client does too.
    assertEquals(
      await oneHandshake(serverCert, serverKey, (p) => nodeClient(p, { ca: [ca] })),
      "served",
    );
    assertMatch(
      await oneHandshake(
        certs.otherServerCert,
        certs.otherServerKey,
        (p) => nodeClient(p, { ca: [ca] }),
      ),
      /^refused: /,
    );

    // A node:tls server that requires a client certificate from the CA takes the client one.
    const server = tls.createServer(
      { cert: serverCert, key: serverKey, ca: [ca], requestCert: true, rejectUnauthorized: true },
      (socket) => socket.end(`hello ${socket.getPeerCertificate().subject.CN}`),
    );
    server.on("tlsClientError", () => {});
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    try {
      const address = server.address();
      assert(address !== null && typeof address === "object");
      const withCert = { ca: [ca], cert: certs.clientCert, key: certs.clientKey };
      assertEquals(
        await nodeClient(address.port, withCert),
        "hello tcp-pool-proxy test client (throwaway)",
      );
      assertMatch(await nodeClient(address.port, { ca: [ca] }), /^refused: /);
    } finally {
      await new Promise((resolve) => server.close(resolve));
    }
  }));
