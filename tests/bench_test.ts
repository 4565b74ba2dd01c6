/**
 * Tests of the benchmark (`bench/`): its byte verification catches corruption, and the short
 * benchmark and the demo run end to end against `main.ts`, so that neither can rot.
 *
 * @module
 */

import { StreamPattern, StreamVerifier } from "../bench/_pattern.ts";
import { percentile } from "../bench/_stats.ts";
import { runConnect, runRespBulk, runRespConnect } from "../bench/_workloads.ts";
import {
  assert,
  assertEquals,
  assertGreater,
  assertMatch,
  assertStringIncludes,
  fail,
} from "./_assert.ts";

const BENCH = new URL("../bench/bench.ts", import.meta.url);
const DEMO = new URL("../bench/demo.ts", import.meta.url);
const PERMISSIONS = [
  "--allow-net",
  "--allow-run",
  "--allow-read",
  "--allow-write",
  "--allow-env",
];

interface Output {
  code: number;
  stdout: string;
  stderr: string;
}

async function runScript(script: URL, args: string[]): Promise<Output> {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "--quiet", ...PERMISSIONS, decodeURIComponent(script.pathname), ...args],
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).output();
  const dec = new TextDecoder();
  return { code: out.code, stdout: dec.decode(out.stdout), stderr: dec.decode(out.stderr) };
}

function show(o: Output): string {
  return `exit ${o.code}\n--- stdout ---\n${o.stdout}\n--- stderr ---\n${o.stderr}`;
}

function record(v: unknown, what: string): Record<string, unknown> {
  if (typeof v !== "object" || v === null || Array.isArray(v)) fail(`${what} is not an object`);
  return v as Record<string, unknown>;
}

function list(v: unknown, what: string): unknown[] {
  if (!Array.isArray(v)) fail(`${what} is not an array`);
  return v;
}

Deno.test("stream verifier accepts the pattern in reads of any size and alignment", () => {
  const pattern = new StreamPattern(7, 1024);
  const total = 300_000; // crosses the pattern's period
  const v = new StreamVerifier(pattern);
  let sent = 0;
  const sizes = [1, 3, 1024, 5, 777, 2, 1000];
  for (let i = 0; v.pos < total; i++) {
    const view = v.readInto(Math.min(sizes[i % sizes.length], total - v.pos));
    // what the wire would carry: the pattern's bytes from position `sent`
    for (let j = 0; j < view.length; j++) {
      const p = sent + j;
      view[j] = pattern.slice(p - (p % 4), 4)[p % 4];
    }
    sent += view.length;
    v.check(view.length);
  }
  assertEquals(v.pos, total);
  assertEquals(v.mismatches, 0);
});

Deno.test("stream verifier counts a flipped byte, a lost byte and a foreign stream", () => {
  const flipped = new StreamVerifier(new StreamPattern(1, 4096));
  const view = flipped.readInto(4096);
  view.set(new StreamPattern(1, 4096).slice(0, 4096));
  view[1234] ^= 1;
  flipped.check(4096);
  assertEquals(flipped.mismatches, 1);

  const shifted = new StreamVerifier(new StreamPattern(1, 4096));
  const view2 = shifted.readInto(4000);
  view2.set(new StreamPattern(1, 4096).slice(0, 4004).subarray(1, 4001)); // first byte lost
  shifted.check(4000);
  assertEquals(shifted.mismatches, 1);

  const foreign = new StreamVerifier(new StreamPattern(1, 4096));
  const view3 = foreign.readInto(4096);
  view3.set(new StreamPattern(2, 4096).slice(0, 4096));
  foreign.check(4096);
  assertEquals(foreign.mismatches, 1);
});

Deno.test("percentile takes the nearest rank", () => {
  const sorted = Float64Array.from({ length: 100 }, (_, i) => i + 1);
  assertEquals(percentile(sorted, 50), 50);
  assertEquals(percentile(sorted, 99), 99);
  assertEquals(percentile(sorted, 100), 100);
  assertEquals(percentile(new Float64Array([4]), 99), 4);
});

Deno.test("load generator counts a corrupted echo as a mismatch, never as a session", async () => {
  // an "echo" server that flips one bit of everything it sends back
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const serving: Promise<void>[] = [];
  const accepting = (async () => {
    for await (const conn of listener) {
      serving.push((async () => {
        const buf = new Uint8Array(1024);
        try {
          while (true) {
            const n = await conn.read(buf);
            if (n === null) break;
            buf[0] ^= 0x80;
            await conn.write(buf.subarray(0, n));
          }
        } catch {
          /* the client closed */
        } finally {
          conn.close();
        }
      })());
    }
  })();
  try {
    const r = await runConnect({
      kind: "connect",
      target: `127.0.0.1:${(listener.addr as Deno.NetAddr).port}`,
      clients: 2,
      durationMs: 100,
      warmupMs: 0,
      messageBytes: 64,
    });
    assertGreater(r.mismatches, 0);
    assertEquals(r.sessions, 0);
    assertEquals(r.latency.count, 0);
  } finally {
    listener.close();
    await accepting;
    await Promise.all(serving);
  }
});

/** Serves `answer(request bytes)` to every read on a loopback listener, until closed. */
function fakeServer(answer: (request: Uint8Array) => Uint8Array) {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const serving: Promise<void>[] = [];
  const accepting = (async () => {
    for await (const conn of listener) {
      serving.push((async () => {
        const buf = new Uint8Array(64 * 1024);
        try {
          while (true) {
            const n = await conn.read(buf);
            if (n === null) break;
            const out = answer(buf.subarray(0, n));
            for (let off = 0; off < out.length;) off += await conn.write(out.subarray(off));
          }
        } catch {
          /* the client closed */
        } finally {
          conn.close();
        }
      })());
    }
  })();
  return {
    target: `127.0.0.1:${(listener.addr as Deno.NetAddr).port}`,
    async close() {
      listener.close();
      await accepting;
      await Promise.all(serving);
    },
  };
}

Deno.test("redis load generator counts a wrong, short or long reply as a mismatch", async () => {
  const enc = new TextEncoder();
  for (
    const wrong of ["$-1\r\n", "+PONG\r\n+PONG\r\n", "$5\r\nhellO\r\n", "-ERR no\r\n", "*0\r\n"]
  ) {
    const server = fakeServer(() => enc.encode(wrong));
    try {
      const r = await runRespConnect({
        kind: "resp-connect",
        target: server.target,
        clients: 2,
        durationMs: 100,
        warmupMs: 0,
        exchanges: [{ request: "*2\r\n$3\r\nGET\r\n$1\r\nk\r\n", reply: "$5\r\nhello\r\n" }],
      });
      assertGreater(r.mismatches, 0, wrong);
      assertEquals(r.errors, 0, `${wrong}: ${r.errorSamples}`);
      assertEquals(r.sessions, 0, wrong);
    } finally {
      await server.close();
    }
  }
});

Deno.test("redis bulk load generator checks every +OK and the value read back", async () => {
  // answers +OK to anything, and a GET with a value one byte off
  const enc = new TextEncoder();
  const server = fakeServer((req) =>
    req[0] === 42 && req[8] === 71 /* *2\r\n$3\r\nG */
      ? enc.encode("$4\r\nabcd\r\n")
      : enc.encode("+OK\r\n")
  );
  try {
    const r = await runRespBulk({
      kind: "resp-bulk",
      target: server.target,
      key: "k",
      valueBytes: 4,
      values: 3,
    });
    assertEquals(r.errors, 0, r.errorSamples.join("; "));
    assertEquals(r.bytes, 12);
    assertEquals(r.mismatches, 1, "the GET of the last value must not match");
  } finally {
    await server.close();
  }
});

Deno.test("bench --short runs every workload through every mode with no error", async () => {
  const dir = await Deno.makeTempDir({ prefix: "bench-test-" });
  try {
    const out = await runScript(BENCH, ["--short", "--out", dir]);
    assertEquals(out.code, 0, show(out));
    assertStringIncludes(out.stdout, "Targets (issue 3");
    assertStringIncludes(out.stdout, "Redis protocol (upstream ");

    const report = record(JSON.parse(await Deno.readTextFile(`${dir}/latest.json`)), "report");
    for (
      const key of ["columns", "suites", "measurements", "figures", "goals", "totals", "failures"]
    ) {
      assert(key in report, `latest.json has no "${key}"`);
    }
    const columns = list(report.columns, "columns");
    for (const c of ["direct", "off", "warm", "reuse", "relay"]) {
      assert(columns.includes(c), `no ${c} column`);
    }

    const totals = record(report.totals, "totals");
    assertEquals(totals.errors, 0, show(out));
    assertEquals(totals.mismatches, 0, show(out));
    assertEquals(list(report.failures, "failures").length, 0, show(out));

    const measured = new Set(
      list(report.measurements, "measurements").map((m) => {
        const r = record(m, "measurement");
        const rounds = list(r.rounds, "rounds");
        assertGreater(rounds.length, 0);
        for (const round of rounds) {
          const result = record(record(round, "round").result, "result");
          assertEquals(result.errors, 0, JSON.stringify(result));
          assertEquals(result.mismatches, 0, JSON.stringify(result));
        }
        return `${r.column}/${r.workload}`;
      }),
    );
    for (const c of columns) {
      for (
        const w of [
          "connect1",
          "connect32",
          "pingpong1",
          "pingpong32",
          "medium-ka-5k",
          "medium-cpr-5k",
          "bulk1",
          "bulk8",
        ]
      ) {
        assert(measured.has(`${c}/${w}`), `${c}/${w} was not measured`);
      }
    }
    for (const c of ["off", "warm", "reuse", "relay"]) {
      assert(measured.has(`${c}/hold`), `${c}/hold missing`);
    }
    // --short keeps only the 5.5 KiB pair of the medium workloads
    assert(!measured.has("direct/medium-ka-1k"), "--short ran medium-ka-1k");

    // proxy CPU per session / message: a positive figure for every proxy column, none for direct
    const figures = list(report.figures, "figures").map((f) => record(f, "figure"));
    for (const w of ["connect32", "pingpong32", "medium-ka-5k", "medium-cpr-5k", "redis32"]) {
      const row = figures.find((f) => f.workload === w && f.key === "cpuUsPerOp");
      assert(row, `no proxy CPU figure for ${w}`);
      const values = record(row.values, `${w} cpuUsPerOp values`);
      const proxies = w === "redis32" ? ["reuse-raw", "reuse-redis"] : ["off", "reuse", "relay"];
      for (const c of proxies) {
        assertEquals(typeof values[c], "number", `${w}/${c}: ${JSON.stringify(values)}`);
        assertGreater(values[c] as number, 0, `${w}/${c}`);
      }
      assertEquals(values.direct, null);
    }
    const redis = list(report.suites, "suites").map((x) => record(x, "suite"))
      .find((x) => list(x.workloads, "suite workloads").includes("redis32"));
    assert(redis, "no suite with the redis workloads");
    assertEquals(redis.columns, ["direct", "reuse-raw", "reuse-redis"]);
    for (const c of ["direct", "reuse-raw", "reuse-redis"]) {
      for (const w of ["redis1", "redis32", "redisbulk"]) {
        assert(measured.has(`${c}/${w}`), `${c}/${w} was not measured`);
      }
    }

    const goals = list(report.goals, "goals");
    assertEquals(goals.length, 10);
    for (const g of goals) {
      const goal = record(g, "goal");
      assertEquals(typeof goal.met, "boolean", `goal not judged: ${JSON.stringify(goal)}`);
    }

    const svg = await Deno.readTextFile(`${dir}/latest.svg`);
    assertMatch(svg, /^<svg [^>]*xmlns="http:\/\/www.w3.org\/2000\/svg"/);
    assertStringIncludes(svg, "</svg>");
    assertStringIncludes(svg, "reuse-redis");
    assertStringIncludes(svg, "proxy CPU per message");
    assertStringIncludes(out.stdout, "proxy CPU per session");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("bench --short runs the redis workloads against its own RESP server", async () => {
  const dir = await Deno.makeTempDir({ prefix: "bench-test-" });
  try {
    const out = await runScript(BENCH, [
      "--short",
      "--workloads",
      "redis",
      "--redis-upstream",
      "bench",
      "--out",
      dir,
    ]);
    assertEquals(out.code, 0, show(out));
    assertStringIncludes(out.stdout, "upstream bench/resp_server.ts");
    const report = record(JSON.parse(await Deno.readTextFile(`${dir}/latest.json`)), "report");
    const totals = record(report.totals, "totals");
    assertEquals(totals.errors, 0, show(out));
    assertEquals(totals.mismatches, 0, show(out));
    const measured = list(report.measurements, "measurements").map((m) => {
      const r = record(m, "measurement");
      return `${r.column}/${r.workload}`;
    });
    assertEquals(measured.length, 9, show(out));
    const judged = list(report.goals, "goals").map((g) => record(g, "goal"))
      .filter((g) => g.met !== null);
    assertEquals(judged.map((g) => g.mode), [
      "reuse-redis vs reuse-raw",
      "reuse-redis vs reuse-raw",
    ]);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("bench --workloads medium runs every medium workload, relay as a column", async () => {
  const dir = await Deno.makeTempDir({ prefix: "bench-test-" });
  try {
    const out = await runScript(BENCH, [
      "--short",
      "--workloads",
      "medium",
      "--modes",
      "reuse,relay",
      "--duration",
      "100ms",
      "--out",
      dir,
    ]);
    assertEquals(out.code, 0, show(out));
    const report = record(JSON.parse(await Deno.readTextFile(`${dir}/latest.json`)), "report");
    const measured = list(report.measurements, "measurements").map((m) => {
      const r = record(m, "measurement");
      const result = record(r.result, "result");
      if (r.column !== "direct") assertEquals(typeof r.proxyCpuMicros, "number");
      return `${r.column}/${r.workload}/${result.kind}`;
    });
    const expected = [];
    for (const size of ["1k", "5k", "20k"]) {
      for (const [style, kind] of [["ka", "pingpong"], ["cpr", "connect"]]) {
        for (const c of ["direct", "reuse", "relay"]) {
          expected.push(`${c}/medium-${style}-${size}/${kind}`);
        }
      }
    }
    assertEquals(measured.sort(), expected.sort());
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("bench rejects a bad option with one clear line and exit code 2", async () => {
  const out = await runScript(BENCH, ["--duration", "fast"]);
  assertEquals(out.code, 2, show(out));
  assertEquals(out.stderr.trim().split("\n").length, 1, show(out));
  assertStringIncludes(out.stderr, "--duration");

  const unknown = await runScript(BENCH, ["--bogus"]);
  assertEquals(unknown.code, 2, show(unknown));
  assertStringIncludes(unknown.stderr, "unknown option --bogus");

  const protocol = await runScript(BENCH, ["--workloads", "redis", "--proxy-args=--protocol raw"]);
  assertEquals(protocol.code, 2, show(protocol));
  assertStringIncludes(protocol.stderr, "--protocol");
});

Deno.test("demo prints sessions per second and upstream connections for each mode", async () => {
  const out = await runScript(DEMO, ["--seconds", "0.5"]);
  assertEquals(out.code, 0, show(out));
  assertStringIncludes(out.stdout, "upstream connections opened");
  for (const mode of ["direct (no proxy)", "off", "warm", "reuse"]) {
    assertMatch(out.stdout, new RegExp(`^${mode.replace(/[()]/g, "\\$&")}\\s+[\\d,]+\\s`, "m"));
  }
  assertStringIncludes(out.stdout, "What the pool buys");
});
