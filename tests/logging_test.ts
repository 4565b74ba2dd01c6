import { captureLog } from "./_log.ts";
import {
  configureLogging,
  getProxyLogger,
  isDebugEnabled,
  resetLogging,
  ROOT_CATEGORY,
} from "../src/logging.ts";
import type { LogFormat, LogLevel } from "../src/config.ts";
import { assert, assertEquals, assertFalse, assertMatch } from "./_assert.ts";
import { formatHostPort } from "../src/address.ts";
import {
  closeQuietly,
  connect,
  decoder,
  echo,
  encoder,
  readExactly,
  TestUpstream,
  within,
  writeAll,
} from "./_net.ts";
import { MAIN_TS } from "./_proxy_process.ts";

const CHILD = import.meta.resolve("./_log_child.ts");

interface ChildOutput {
  stderrLines: string[];
  stdoutLines: string[];
  debugEnabled: boolean;
  sessionDebug: boolean;
}

/** Runs `_log_child.ts` with no permissions and returns what it wrote. */
async function runChild(level: LogLevel, format: LogFormat): Promise<ChildOutput> {
  const { code, stdout, stderr } = await new Deno.Command(Deno.execPath(), {
    args: ["run", "--quiet", "--no-prompt", CHILD, level, format],
    stdout: "piped",
    stderr: "piped",
  }).output();
  const errText = new TextDecoder().decode(stderr);
  assertEquals(code, 0, errText);
  assert(errText.endsWith("\n"), "every record ends with a newline");
  const stdoutLines = new TextDecoder().decode(stdout).trimEnd().split("\n");
  const flags: { debugEnabled: boolean; sessionDebug: boolean } = JSON.parse(
    stdoutLines.at(-1) ?? "",
  );
  return { stderrLines: errText.slice(0, -1).split("\n"), stdoutLines, ...flags };
}

Deno.test("json format writes one parseable JSON object per record to stderr", async () => {
  const { stderrLines } = await runChild("info", "json");
  const records = stderrLines.map((line) => JSON.parse(line));
  assertEquals(records.map((r) => [r.level, r.logger, r.message]), [
    ["INFO", "tcp-pool-proxy.session", "info record 2"],
    ["WARN", "tcp-pool-proxy.session", `warn record "two\\nlines"`],
    ["ERROR", "tcp-pool-proxy.session", "error record 4"],
    ["INFO", "tcp-pool-proxy", "root record"],
  ]);
  assertEquals(records[0].properties, { id: 2 });
  assertEquals(records[1].properties, { text: "two\nlines" });
  assertMatch(records[0]["@timestamp"], /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/);
});

Deno.test("json format renders the message as the text format does: words and addresses bare, other strings quoted", async () => {
  // Found by review: LogTape's JSON rendering quoted every string, so the SIGHUP line read
  // "\"SIGHUP\": sessions 0 ... pool \"warm\"" and did not start with SIGHUP: as documented.
  const lines = await captureLog(() => {
    getProxyLogger().info("{reason}: pool {mode} upstream {upstream} error {error} n {n}", {
      reason: "SIGHUP",
      mode: "warm",
      upstream: "127.0.0.1:6379",
      error: "connection refused",
      n: 3,
    });
  }, "json");
  assertEquals(lines.length, 1, lines.join("\n"));
  const record = JSON.parse(lines[0]);
  assertEquals(
    record.message,
    'SIGHUP: pool warm upstream 127.0.0.1:6379 error "connection refused" n 3',
  );
  assertEquals(record.properties.mode, "warm");
});

Deno.test("text format writes one line per record with time, level, category and message", async () => {
  const { stderrLines } = await runChild("info", "text");
  assertEquals(stderrLines.length, 4, stderrLines.join("\n"));
  const TIME = String.raw`\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z`;
  assertMatch(
    stderrLines[0],
    new RegExp(`^${TIME} \\[INF\\] tcp-pool-proxy\\.session: info record 2$`),
  );
  assertMatch(stderrLines[1], /\[WRN\] tcp-pool-proxy\.session: warn record "two\\nlines"$/);
  assertMatch(stderrLines[2], /\[ERR\] tcp-pool-proxy\.session: error record 4$/);
  assertMatch(stderrLines[3], /\[INF\] tcp-pool-proxy: root record$/);
});

Deno.test("debug records are written only at --log-level debug", async () => {
  const debug = await runChild("debug", "json");
  assertEquals(debug.stderrLines.length, 5);
  assertEquals(JSON.parse(debug.stderrLines[0]).level, "DEBUG");
  assert(debug.debugEnabled && debug.sessionDebug);
  const info = await runChild("info", "json");
  assertFalse(info.debugEnabled || info.sessionDebug);
});

Deno.test("warn and error levels drop the records below them", async () => {
  const warn = await runChild("warn", "json");
  assertEquals(warn.stderrLines.map((l) => JSON.parse(l).level), ["WARN", "ERROR"]);
  const error = await runChild("error", "text");
  assertEquals(error.stderrLines.length, 1);
  assertMatch(error.stderrLines[0], /\[ERR\]/);
});

Deno.test("LogTape's own start-up notice is not printed", async () => {
  const { stderrLines, stdoutLines } = await runChild("debug", "text");
  const all = [...stderrLines, ...stdoutLines];
  assertFalse(all.some((line) => line.includes("logtape")), all.join("\n"));
  assertEquals(stdoutLines.length, 1, "logging writes nothing to stdout");
});

Deno.test("isDebugEnabled follows the configured level and resetLogging turns logging off", () => {
  try {
    configureLogging({ level: "info", format: "text" });
    assertFalse(isDebugEnabled());
    assertFalse(getProxyLogger("pool").isEnabledFor("debug"));
    assert(getProxyLogger("pool").isEnabledFor("info"));
    configureLogging({ level: "debug", format: "json" });
    assert(isDebugEnabled(getProxyLogger("pool", "idle")));
  } finally {
    resetLogging();
  }
  assertFalse(getProxyLogger().isEnabledFor("error"));
});

Deno.test("getProxyLogger puts every logger under the tcp-pool-proxy category", () => {
  assertEquals(ROOT_CATEGORY, "tcp-pool-proxy");
  assertEquals(getProxyLogger().category, ["tcp-pool-proxy"]);
  assertEquals(getProxyLogger("pool", "idle").category, ["tcp-pool-proxy", "pool", "idle"]);
});

Deno.test("a proxy whose stderr nobody reads keeps serving, and its admin endpoint answering; the lines past --log-buffer are dropped, counted and said to be once stderr is read again", async () => {
  // Found by review: logs were written with blocking writes, so a log reader that stopped
  // (a stuck collector, a stopped `cat`) froze every session and /healthz after 64 KiB.
  await using upstream = new TestUpstream(echo);
  const child = new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "--quiet",
      "--allow-net",
      MAIN_TS,
      ...["--listen", "127.0.0.1:0", "--upstream", formatHostPort(upstream.address)],
      ...["--pool", "off", "--admin", "127.0.0.1:0", "--access-log", "--log-level", "debug"],
      ...["--log-buffer", "16KiB"],
    ],
    stdin: "null",
    stdout: "null",
    stderr: "piped",
  }).spawn();
  const stderr = child.stderr.pipeThrough(new TextDecoderStream()).getReader();
  let text = "";
  const readUntil = async (pattern: RegExp) => {
    while (!pattern.test(text)) {
      const { value, done } = await stderr.read();
      if (done) throw new Error(`stderr ended before ${pattern}:\n${text}`);
      text += value;
    }
    return pattern.exec(text) as RegExpExecArray;
  };
  try {
    const port = Number((await readUntil(/listening on 127\.0\.0\.1:(\d+)/))[1]);
    const adminPort = Number((await readUntil(/admin server on 127\.0\.0\.1:(\d+)/))[1]);
    // From here nobody reads stderr: its pipe (64 KiB) fills within a few hundred sessions.
    for (let i = 0; i < 1_500; i++) {
      const client = await connect({ hostname: "127.0.0.1", port });
      try {
        await within(client, 3_000, async () => {
          await writeAll(client, encoder.encode("hi"));
          assertEquals(decoder.decode(await readExactly(client, 2)), "hi");
        });
      } finally {
        closeQuietly(client);
      }
    }
    const health = await fetch(`http://127.0.0.1:${adminPort}/healthz`, {
      signal: AbortSignal.timeout(3_000),
    });
    await health.body?.cancel();
    assertEquals(health.status, 200);
    const metrics = await fetch(`http://127.0.0.1:${adminPort}/metrics`).then((r) => r.text());
    const dropped = Number(/\ntcp_pool_proxy_log_lines_dropped_total (\d+)\n/.exec(metrics)?.[1]);
    assert(dropped > 100, `dropped ${dropped}`);
    // Read again: the queued lines arrive, then the notice.
    await readUntil(/\[WRN\] tcp-pool-proxy\.log: \d+ log lines dropped: stderr did not take them/);
  } finally {
    child.kill("SIGTERM");
    await readUntil(/\[INF\] tcp-pool-proxy: stopped/).catch(() => {});
    await stderr.cancel().catch(() => {});
    await child.status;
  }
});
