/**
 * The command line, end to end: `main.ts` runs as a child process (`deno run --allow-net`), with
 * real sockets on loopback. Bad inputs, start-up failures, relaying in each pool mode, logging,
 * an unreachable upstream, and the drain on SIGTERM.
 */

import denoJson from "../deno.json" with { type: "json" };
import {
  assert,
  assertEquals,
  assertFalse,
  assertGreaterOrEqual,
  assertLess,
  assertMatch,
  assertStringIncludes,
} from "./_assert.ts";
import {
  awaitClosed,
  EchoUpstream,
  exchange,
  MAIN_TS,
  ProxyProcess,
  relayOnce,
} from "./_proxy_process.ts";
import { closeQuietly, delay } from "./_net.ts";

/**
 * No warning or error on stderr, except the one `--pool reuse --protocol raw` gives at start on
 * purpose (raw reuse guesses by timing).
 */
function assertNoWarningButRawReuse(stderr: string): void {
  const others = stderr.split("\n").filter((line) =>
    /\[(WRN|ERR)\]/.test(line) && !line.includes("--pool reuse with --protocol raw")
  );
  assertEquals(others, [], `no warning or error:\n${stderr}`);
}

const decoder = new TextDecoder();

/** What `main.ts` printed and returned for arguments that make it exit at once. */
interface Outcome {
  code: number;
  stdout: string;
  stderrLines: string[];
}

/** Runs `deno run --allow-net main.ts ...args` to completion. */
async function runMain(args: string[]): Promise<Outcome> {
  const { code, stdout, stderr } = await new Deno.Command(Deno.execPath(), {
    args: ["run", "--quiet", "--allow-net", MAIN_TS, ...args],
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).output();
  const errText = decoder.decode(stderr);
  const stderrLines = errText === "" ? [] : errText.replace(/\n$/, "").split("\n");
  return { code, stdout: decoder.decode(stdout), stderrLines };
}

/** Asserts one line on stderr, prefixed `tcp-pool-proxy: `, with no trace of a stack. */
function assertOneCleanErrorLine(outcome: Outcome): string {
  const all = outcome.stderrLines.join("\n");
  assertEquals(outcome.stderrLines.length, 1, `exactly one line on stderr, got:\n${all}`);
  const [line] = outcome.stderrLines;
  assertMatch(line, /^tcp-pool-proxy: \S/);
  assertFalse(/^\s+at /m.test(all), `no stack trace:\n${all}`);
  assertFalse(all.includes("error: Uncaught"), `no uncaught error:\n${all}`);
  assertEquals(outcome.stdout, "", "nothing on stdout");
  return line;
}

/** A port on 127.0.0.1 where nothing listens (bound, noted, closed). */
function freePort(): number {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const { port } = listener.addr;
  listener.close();
  return port;
}

// ---- bad command lines: exit 2, one line naming the flag ----

const BAD_INPUTS: { what: string; args: string[]; names: string }[] = [
  { what: "an unknown flag", args: ["--bogus", "1"], names: "--bogus" },
  { what: "an unknown short flag", args: ["-p", "8848"], names: "-p" },
  { what: "a flag missing its value at the end", args: ["--upstream"], names: "--upstream" },
  {
    what: "a flag followed by another flag instead of its value",
    args: ["--listen", "--pool", "warm"],
    names: "--listen",
  },
  { what: "an empty value after =", args: ["--pool="], names: "--pool" },
  { what: "a flag given twice", args: ["--pool", "off", "--pool", "warm"], names: "--pool" },
  { what: "an unknown pool mode", args: ["--pool", "sometimes"], names: "--pool" },
  { what: "a duration without a unit", args: ["--idle-timeout", "5"], names: "--idle-timeout" },
  {
    what: "a duration with an unknown unit",
    args: ["--connect-timeout", "5x"],
    names: "--connect-timeout",
  },
  { what: "a negative duration", args: ["--drain-timeout", "-1s"], names: "--drain-timeout" },
  { what: "a bare IPv6 address", args: ["--listen", "::1:8848"], names: "--listen" },
  { what: "a port out of range", args: ["--upstream", "127.0.0.1:70000"], names: "--upstream" },
  { what: "upstream port 0", args: ["--upstream", "127.0.0.1:0"], names: "--upstream" },
  { what: "a pool size that is not a number", args: ["--pool-size", "many"], names: "--pool-size" },
  {
    what: "--min-idle greater than --pool-size",
    args: ["--pool-size", "2", "--min-idle", "5"],
    names: "--min-idle",
  },
  { what: "an unknown log level", args: ["--log-level", "verbose"], names: "--log-level" },
  { what: "an unknown log format", args: ["--log-format", "xml"], names: "--log-format" },
  { what: "a positional argument", args: ["--pool", "warm", "extra"], names: '"extra"' },
  { what: "an unknown flag with a newline", args: ["--bo\ngus"], names: '"--bo\\ngus"' },
  {
    what: "a value with a carriage return",
    args: ["--pool", "warm\r\n"],
    names: '--pool: "warm\\r\\n"',
  },
  { what: "a negative pool size", args: ["--pool-size", "-3"], names: "--pool-size" },
  { what: "--max-clients 0", args: ["--max-clients", "0"], names: "--max-clients" },
  { what: "--queue-timeout 0", args: ["--queue-timeout", "0"], names: "--queue-timeout" },
  {
    what: "--min-idle greater than --max-upstream",
    args: ["--max-upstream", "2", "--min-idle", "3"],
    names: "--min-idle",
  },
  {
    what: "an upstream that is the listen address",
    args: ["--listen", "127.0.0.1:18848", "--upstream", "127.0.0.1:18848"],
    names: "--upstream",
  },
  { what: "--protocol redis with --pool warm", args: ["--protocol", "redis"], names: "--protocol" },
];

for (const { what, args, names } of BAD_INPUTS) {
  Deno.test(`cli exits 2 with one line naming ${names} for ${what}`, async () => {
    const outcome = await runMain(args);
    assertEquals(outcome.code, 2, outcome.stderrLines.join("\n"));
    const line = assertOneCleanErrorLine(outcome);
    assertStringIncludes(line, names);
  });
}

Deno.test("cli takes a negative number after a flag as its value and says it is negative", async () => {
  const cases: [string[], string][] = [
    [
      ["--pool-size", "-3"],
      `tcp-pool-proxy: --pool-size: "-3" is negative; give an integer from 0 to 100000`,
    ],
    [
      ["--connect-timeout", "-5s"],
      `tcp-pool-proxy: --connect-timeout: "-5s" is negative; use a number with a unit ms, s, m or h, e.g. 250ms, 5s, 1.5s, 2m`,
    ],
  ];
  for (const [args, expected] of cases) {
    const outcome = await runMain(args);
    assertEquals(outcome.code, 2, outcome.stderrLines.join("\n"));
    assertEquals(assertOneCleanErrorLine(outcome), expected);
  }
});

Deno.test("cli exits 1 with one line naming --listen when the port is in use", async () => {
  const taken = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  try {
    const outcome = await runMain([
      "--listen",
      `127.0.0.1:${taken.addr.port}`,
      "--upstream",
      "127.0.0.1:9",
      "--pool",
      "off",
    ]);
    assertEquals(outcome.code, 1, outcome.stderrLines.join("\n"));
    const line = assertOneCleanErrorLine(outcome);
    assertStringIncludes(line, "--listen");
    assertStringIncludes(line, `127.0.0.1:${taken.addr.port}`);
    assertStringIncludes(line, "address already in use");
  } finally {
    taken.close();
  }
});

Deno.test("cli --help exits 0 and lists every flag with its default", async () => {
  const outcome = await runMain(["--help"]);
  assertEquals(outcome.code, 0);
  assertEquals(outcome.stderrLines, []);
  const flags = [
    "--listen",
    "--upstream",
    "--pool",
    "--pool-size",
    "--min-idle",
    "--idle-timeout",
    "--max-lifetime",
    "--connect-timeout",
    "--client-timeout",
    "--server-timeout",
    "--fin-timeout",
    "--max-clients",
    "--max-upstream",
    "--queue-timeout",
    "--drain-timeout",
    "--log-level",
    "--log-format",
    "--help",
    "--version",
  ];
  for (const flag of flags) {
    assertMatch(outcome.stdout, new RegExp(`^\\s+${flag}\\b`, "m"), `${flag} is listed`);
  }
  const defaults = [
    "127.0.0.1:8848",
    "127.0.0.1:8849",
    "default warm",
    "default 100",
    "default 4 with warm, 0 with reuse",
    "default 60s",
    "default 30m",
    "default 5s",
    "default 30s",
    "default 60m",
    "default auto, from the open-file limit",
    "default 0 = no limit",
    "default info",
    "default text",
  ];
  for (const text of defaults) assertStringIncludes(outcome.stdout, text);
});

Deno.test("cli --version prints the version from deno.json and exits 0", async () => {
  const outcome = await runMain(["--version"]);
  assertEquals(outcome.code, 0);
  assertEquals(outcome.stderrLines, []);
  assertEquals(outcome.stdout, `tcp-pool-proxy ${denoJson.version}\n`);
});

Deno.test("cli --help and --version into a pipe closed early exit 0; into a full disk, 1 with one line", async () => {
  for (const flag of ["--help", "--version"]) {
    const child = new Deno.Command(Deno.execPath(), {
      args: ["run", "--quiet", "--allow-net", MAIN_TS, flag],
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    await child.stdout.cancel(); // the reader leaves before a byte is written
    const { code, stderr } = await child.output();
    assertEquals([code, decoder.decode(stderr)], [0, ""], `${flag} into a closed pipe`);
    const toFull = await new Deno.Command("sh", {
      args: ["-c", 'exec "$0" run --quiet --allow-net "$1" "$2" >/dev/full', Deno.execPath()]
        .concat([MAIN_TS, flag]),
      stdin: "null",
      stdout: "null",
      stderr: "piped",
    }).output();
    const lines = decoder.decode(toFull.stderr).trimEnd().split("\n");
    assertEquals(toFull.code, 1, `${flag} into /dev/full`);
    assertEquals(lines.length, 1, lines.join("\n"));
    assertMatch(lines[0], new RegExp(`^tcp-pool-proxy: ${flag}: cannot write to stdout: `));
  }
});

/** Starts main.ts on 127.0.0.1:0 in front of `upstream` in pool mode `mode`, plus `extra` flags. */
function spawnProxy(upstream: string, mode: string, ...extra: string[]): ProxyProcess {
  return ProxyProcess.spawnMain([
    "--listen",
    "127.0.0.1:0",
    "--upstream",
    upstream,
    "--pool",
    mode,
    ...extra,
  ]);
}

// ---- a running proxy ----

for (const mode of ["off", "warm", "reuse"] as const) {
  const signal = mode === "warm" ? "SIGINT" : "SIGTERM";
  Deno.test(`cli relays through main.ts with --pool ${mode} and exits 0 after draining on ${signal}`, async () => {
    await using upstream = EchoUpstream.start();
    await using proxy = spawnProxy(upstream.address, mode);
    const port = await proxy.listeningPort();
    assertEquals(await relayOnce(port, `hello via ${mode}`), `hello via ${mode}`);
    assertEquals(await relayOnce(port, "and again"), "and again");
    proxy.kill(signal);
    const status = await proxy.exited();
    assertEquals(status.code, 0, proxy.stderr);
    assertMatch(
      proxy.stderr,
      new RegExp(`\\[INF\\] tcp-pool-proxy: ${signal}: draining \\d+ sessions`),
    );
    assertMatch(proxy.stderr, /stopped: \d+ sessions drained, 0 cut/);
    assertNoWarningButRawReuse(proxy.stderr);
  });
}

Deno.test("cli /stats shows the addresses bound, not the port 0 given", async () => {
  // Found by review: /stats said listen 127.0.0.1:0 and admin 127.0.0.1:0.
  await using upstream = EchoUpstream.start();
  await using proxy = spawnProxy(upstream.address, "off", "--admin", "127.0.0.1:0");
  const adminPort = (await proxy.waitForLine(/admin server on 127\.0\.0\.1:(\d+)/)).match[1];
  const port = await proxy.listeningPort();
  const stats = await fetch(`http://127.0.0.1:${adminPort}/stats`).then((r) => r.json());
  assertEquals(stats.config.listen, `127.0.0.1:${port}`);
  assertEquals(stats.config.admin, `127.0.0.1:${adminPort}`);
  proxy.kill("SIGTERM");
  assertEquals((await proxy.exited()).code, 0, proxy.stderr);
});

Deno.test("cli listens on IPv6 loopback given as [::1]:0", async () => {
  await using upstream = EchoUpstream.start();
  await using proxy = ProxyProcess.spawnMain([
    "--listen",
    "[::1]:0",
    "--upstream",
    upstream.address,
    "--pool",
    "off",
  ]);
  const { match } = await proxy.waitForLine(/listening on \[::1\]:(\d+) /);
  const conn = await Deno.connect({ hostname: "::1", port: Number(match[1]) });
  try {
    assertEquals(await exchange(conn, "over IPv6"), "over IPv6");
  } finally {
    closeQuietly(conn);
  }
  proxy.kill("SIGTERM");
  assertEquals((await proxy.exited()).code, 0, proxy.stderr);
});

Deno.test("cli on SIGTERM stops accepting at once, lets an open session finish, then exits 0", async () => {
  await using upstream = EchoUpstream.start();
  await using proxy = spawnProxy(upstream.address, "reuse");
  const port = await proxy.listeningPort();
  const session = await Deno.connect({ hostname: "127.0.0.1", port });
  try {
    assertEquals(await exchange(session, "before"), "before");
    proxy.kill("SIGTERM");
    await proxy.waitForLine(/SIGTERM: draining 1 sessions/);

    // New connections are refused: the listener is closed (allow the few microseconds between
    // the log line and the close, during which the kernel may still queue one).
    const started = performance.now();
    for (;;) {
      try {
        const late = await Deno.connect({ hostname: "127.0.0.1", port });
        closeQuietly(late);
      } catch (error) {
        assert(error instanceof Deno.errors.ConnectionRefused, String(error));
        break;
      }
      assertLess(performance.now() - started, 1_000, "still accepting 1s after SIGTERM");
      await delay(20);
    }

    // The open session still relays, and the proxy waits for it.
    assertEquals(await exchange(session, "during the drain"), "during the drain");
    await delay(100);
    assertFalse(proxy.hasExited, "the proxy waits while a session is open");
  } finally {
    closeQuietly(session);
  }
  const status = await proxy.exited();
  assertEquals(status.code, 0, proxy.stderr);
  assertMatch(proxy.stderr, /stopped: 1 sessions drained, 0 cut/);
});

Deno.test("cli with --drain-timeout 300ms cuts a session that never ends and exits 0", async () => {
  await using upstream = EchoUpstream.start();
  await using proxy = spawnProxy(upstream.address, "warm", "--drain-timeout", "300ms");
  const port = await proxy.listeningPort();
  const session = await Deno.connect({ hostname: "127.0.0.1", port });
  try {
    assertEquals(await exchange(session, "still here"), "still here");
    const signalled = performance.now();
    proxy.kill("SIGTERM");
    const cut = await awaitClosed(session, 5_000);
    const status = await proxy.exited();
    const elapsed = performance.now() - signalled;
    assertEquals(status.code, 0, proxy.stderr);
    assert(cut.ended !== "deadline", "the proxy closed the session");
    assertGreaterOrEqual(cut.ms, 250, "the session was given the drain time");
    assertGreaterOrEqual(elapsed, 300);
    assertLess(elapsed, 3_000, "the proxy exits soon after the drain timeout");
    assertMatch(proxy.stderr, /draining 1 sessions for up to 300ms/);
    assertMatch(proxy.stderr, /stopped: 0 sessions drained, 1 cut at the drain timeout/);
  } finally {
    closeQuietly(session);
  }
});

Deno.test("cli start line names max-clients and where it came from, and max-upstream when set", async () => {
  await using upstream = EchoUpstream.start();
  const startLine = async (proxy: ProxyProcess): Promise<string> => {
    await proxy.listeningPort();
    const { line } = await proxy.waitForLine(/listening on /);
    proxy.kill("SIGTERM");
    assertEquals((await proxy.exited()).code, 0, proxy.stderr);
    return line;
  };

  // Under --allow-net alone the limit cannot be read: 1024 is assumed, and the line says so.
  const assumed = await startLine(spawnProxy(upstream.address, "off"));
  assertMatch(
    assumed,
    /listening on 127\.0\.0\.1:\d+ upstream \S+ pool off size 330 min-idle 0 max-clients 496 \(open-file limit assumed 1024\)$/,
  );

  const given = await startLine(
    spawnProxy(upstream.address, "warm", "--max-clients", "50", "--max-upstream", "8"),
  );
  assertMatch(given, / min-idle 4 max-clients 50 max-upstream 8$/);

  if (Deno.build.os === "linux") {
    // With --allow-all, Deno reads /proc/self/limits: two descriptors per session after a
    // reserve of 32 and the pool size.
    const { stdout } = await new Deno.Command("sh", { args: ["-c", "ulimit -n"] }).output();
    const limit = Number(decoder.decode(stdout).trim());
    const pool = Math.min(1000, Math.floor((limit - 32) / 3)); // --pool-size, at most a third
    const expected = Math.max(1, Math.floor((limit - 32 - pool) / 2));
    const read = await startLine(ProxyProcess.spawn(Deno.execPath(), [
      "run",
      "--quiet",
      "--allow-all",
      MAIN_TS,
      "--listen",
      "127.0.0.1:0",
      "--upstream",
      upstream.address,
      "--pool",
      "reuse",
    ]));
    assertStringIncludes(read, ` max-clients ${expected} (open-file limit ${limit})`);
  }
});

for (const [signal, code] of [["SIGTERM", 143], ["SIGINT", 130]] as const) {
  Deno.test(`cli exits ${code} at once on a second ${signal} during a drain`, async () => {
    await using upstream = EchoUpstream.start();
    await using proxy = spawnProxy(upstream.address, "reuse", "--drain-timeout", "60s");
    const port = await proxy.listeningPort();
    const session = await Deno.connect({ hostname: "127.0.0.1", port });
    try {
      assertEquals(await exchange(session, "stay open"), "stay open");
      proxy.kill(signal);
      await proxy.waitForLine(new RegExp(`${signal}: draining 1 sessions for up to 60s`));
      await delay(100);
      assertFalse(proxy.hasExited, "the open session keeps the drain going");
      const signalled = performance.now();
      proxy.kill(signal);
      const status = await proxy.exited(5_000);
      assertEquals(status.code, code, proxy.stderr);
      assertLess(performance.now() - signalled, 3_000, "the second signal exits at once");
      assertMatch(
        proxy.stderr,
        new RegExp(`\\[WRN\\] .*${signal} during the drain: exiting at once with 1 sessions open`),
      );
      assertFalse(proxy.stderr.includes("stopped:"), proxy.stderr);
    } finally {
      closeQuietly(session);
    }
  });
}

Deno.test({
  name: "cli on SIGHUP logs the state of the pool and sessions and goes on serving",
  ignore: Deno.build.os === "windows",
  fn: async () => {
    await using upstream = EchoUpstream.start();
    await using proxy = spawnProxy(upstream.address, "reuse");
    const port = await proxy.listeningPort();
    assertEquals(await relayOnce(port, "before the hangup"), "before the hangup");

    proxy.kill("SIGHUP");
    const first = await proxy.waitForLine(/SIGHUP: /, 5_000);
    assertMatch(first.line, /\[INF\] tcp-pool-proxy(\.\w+)?: SIGHUP: /);
    proxy.kill("SIGHUP");
    await proxy.waitForLine(/SIGHUP: /, 5_000, first.index + 1);

    assertFalse(proxy.hasExited, "SIGHUP never ends the proxy");
    assertEquals(await relayOnce(port, "after the hangup"), "after the hangup");
    proxy.kill("SIGTERM");
    assertEquals((await proxy.exited()).code, 0, proxy.stderr);
    assertNoWarningButRawReuse(proxy.stderr);
  },
});

interface JsonRecord {
  "@timestamp": string;
  level: string;
  message: string;
  logger: string;
  properties: Record<string, unknown>;
}

function parseRecord(line: string): JsonRecord {
  const value: unknown = JSON.parse(line);
  assert(typeof value === "object" && value !== null && !Array.isArray(value), line);
  const record = value as Record<string, unknown>;
  for (const key of ["@timestamp", "level", "message", "logger"]) {
    assertEquals(typeof record[key], "string", `${key} in ${line}`);
  }
  assertEquals(typeof record.properties, "object", `properties in ${line}`);
  return value as JsonRecord;
}

Deno.test("cli --log-format json writes one JSON object per line, with a per-session record at debug", async () => {
  await using upstream = EchoUpstream.start();
  await using proxy = spawnProxy(
    upstream.address,
    "reuse",
    "--log-format",
    "json",
    "--log-level",
    "debug",
  );
  const port = await proxy.listeningPort();
  assertEquals(await relayOnce(port, "twelve bytes"), "twelve bytes");
  await proxy.waitForLine(/"logger":"tcp-pool-proxy\.session"/);
  proxy.kill("SIGTERM");
  assertEquals((await proxy.exited()).code, 0, proxy.stderr);

  assertGreaterOrEqual(proxy.lines.length, 4, proxy.stderr);
  const records = proxy.lines.map(parseRecord);
  const start = records.find((r) => r.message.startsWith("listening on"));
  assert(start !== undefined, proxy.stderr);
  assertEquals(start.level, "INFO");
  assertEquals(start.properties.listen, `127.0.0.1:${port}`);
  assertEquals(start.properties.upstream, upstream.address);
  assertEquals(start.properties.pool, "reuse");
  assertEquals(
    start.properties.maxClients,
    331,
    "1024 assumed, less 32 and a third of that for the pool (of 1000), halved",
  );
  assertEquals(start.properties.maxClientsSource, "assumed");
  assertEquals(start.properties.openFileLimit, 1024);

  const sessions = records.filter((r) => r.logger === "tcp-pool-proxy.session");
  assertEquals(sessions.length, 1, proxy.stderr);
  const [session] = sessions;
  assertEquals(session.level, "DEBUG");
  assertEquals(session.properties.bytesFromClient, 12);
  assertEquals(session.properties.bytesFromServer, 12);
  assertEquals(session.properties.end, "client-closed");
  assertEquals(session.properties.upstream, upstream.address);
  assertEquals(session.properties.release, "pooled");
  assertEquals(typeof session.properties.durationMs, "number");
  assertMatch(String(session.properties.client), /^127\.0\.0\.1:\d+$/);
  assertStringIncludes(session.message, "up 12B down 12B");

  assert(records.some((r) => r.message.startsWith("stopped:")), proxy.stderr);
});

Deno.test("cli at the default log level writes no per-session line", async () => {
  await using upstream = EchoUpstream.start();
  await using proxy = spawnProxy(upstream.address, "reuse");
  const port = await proxy.listeningPort();
  assertEquals(await relayOnce(port, "quiet"), "quiet");
  proxy.kill("SIGTERM");
  assertEquals((await proxy.exited()).code, 0, proxy.stderr);
  assertFalse(proxy.stderr.includes("tcp-pool-proxy.session"), proxy.stderr);
  assertFalse(proxy.stderr.includes("[DBG]"), proxy.stderr);
});

for (const mode of ["off", "warm"] as const) {
  Deno.test(`cli with --pool ${mode} closes clients promptly while the upstream is down, warns, and recovers when it is back`, async () => {
    const upstreamPort = freePort();
    const upstreamAddress = `127.0.0.1:${upstreamPort}`;
    await using proxy = spawnProxy(upstreamAddress, mode);
    const port = await proxy.listeningPort();

    const client = await Deno.connect({ hostname: "127.0.0.1", port });
    let closed;
    try {
      closed = await awaitClosed(client, 3_000);
    } finally {
      closeQuietly(client);
    }
    assert(closed.ended !== "deadline", "the proxy closed the client");
    assertLess(closed.ms, 1_000, "the client was closed promptly");
    assertEquals(closed.bytes, 0);

    const { line } = await proxy.waitForLine(
      /\[WRN\] .*session \d+: upstream .* unavailable/,
      5_000,
    );
    assertStringIncludes(line, upstreamAddress);
    assertStringIncludes(line, "connection refused");

    // The proxy keeps serving: once the upstream is there, the next session works.
    await using upstream = EchoUpstream.start(upstreamPort);
    assertEquals(await relayOnce(port, "back again"), "back again");
    assertGreaterOrEqual(upstream.accepted, 1);

    proxy.kill("SIGTERM");
    assertEquals((await proxy.exited()).code, 0, proxy.stderr);
  });
}
