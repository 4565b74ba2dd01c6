/**
 * The real clients of the benchmark: `redis-benchmark` (Debian package redis-tools) against a
 * Redis upstream and ApacheBench `ab` (apache2-utils) against an nginx upstream. Each run is
 * sized from the benchmark's duration (`-n`), killed when it outlives a bound, and its output
 * parsed into a {@linkcode ToolResult}: requests per second, and latencies where the tool gives
 * them. Nothing is ever installed: a tool that is not on the PATH is reported as missing.
 *
 * ```ts
 * import { parseAbOutput, parseRedisBenchmarkCsv } from "./_tools.ts";
 * const tests = parseRedisBenchmarkCsv('"test","rps"\n"SET","15735.64"\n"GET","15408.32"\n');
 * console.log(tests[0].perSecond); // 15735.64
 * ```
 *
 * @module
 */

import type { RealClientWorkload } from "./_figures.ts";
import { findOnPath } from "./_proc.ts";

/** The external client programs the real-client workloads run. */
export type ToolName = "redis-benchmark" | "ab";

/** One test of a tool's run: `SET` and `GET` for redis-benchmark, the page for ab. */
export interface ToolTest {
  /** `SET`, `GET`, or the path ab fetched. */
  name: string;
  /** Requests the tool completed in this test. */
  requests: number;
  /** Requests per second, as the tool reports it. */
  perSecond: number;
  /** Mean latency in ms (redis-benchmark's avg, ab's "Time per request (mean)"); null if none. */
  meanMs: number | null;
  /** Median latency in ms (redis-benchmark's p50; ab's whole-ms 50%); null if not given. */
  medianMs: number | null;
  /** 99th percentile latency in ms; null if not given. */
  p99Ms: number | null;
}

/** The result of one run of a real client, in the shape of the load generator's results. */
export interface ToolResult {
  kind: "tool";
  tool: ToolName;
  /** The command line that ran, for the report. */
  command: string;
  /** Failed requests and error replies the tool or the upstream counted. */
  errors: number;
  /** Requests the tool counted that never reached the upstream. */
  mismatches: number;
  /** The first few distinct error messages. */
  errorSamples: string[];
  /** Wall time of the tool's process, start to exit. */
  elapsedMs: number;
  /** Requests completed, every test together. */
  requests: number;
  /** Requests per second over every test together (requests / the tests' summed times). */
  perSecond: number;
  tests: ToolTest[];
}

/** Output of a tool that does not have the expected shape. */
export class ToolOutputError extends Error {
  /** Creates the error; `problem` says what was missing or wrong. */
  constructor(tool: ToolName, problem: string, output: string) {
    const tail = output.trim().split("\n").slice(-12).join("\n");
    super(`${tool}: ${problem}${tail ? `\n--- output of ${tool} ---\n${tail}` : ""}`);
    this.name = "ToolOutputError";
  }
}

/** A tool run that failed: a non-zero exit, a kill after its time bound, or a missing binary. */
export class ToolRunError extends Error {
  /** Creates the error; `output` is the end of the tool's stderr and stdout. */
  constructor(tool: string, problem: string, output = "") {
    const tail = output.trim().split("\n").slice(-12).join("\n");
    super(`${tool}: ${problem}${tail ? `\n--- output of ${tool} ---\n${tail}` : ""}`);
    this.name = "ToolRunError";
  }
}

/** The fields of one CSV line of redis-benchmark (quoted, no commas or quotes inside). */
function csvFields(line: string): string[] {
  return line.split(",").map((f) => f.trim().replace(/^"(.*)"$/, "$1"));
}

function csvNumber(tool: ToolName, text: string, what: string, output: string): number {
  const v = Number(text);
  if (text === "" || !Number.isFinite(v) || v < 0) {
    throw new ToolOutputError(tool, `${what} is not a number: "${text}"`, output);
  }
  return v;
}

/**
 * Parses the output of `redis-benchmark --csv` (one line per test; with Redis 7 a header line
 * `"test","rps","avg_latency_ms","min_latency_ms","p50_latency_ms",...` comes first, older
 * versions print `"SET","12345.67"` lines only). Each test's `requests` is 0: the CSV does not
 * carry it (the caller knows `-n`).
 *
 * @throws {ToolOutputError} when no test line is found or a rate is not a number.
 */
export function parseRedisBenchmarkCsv(text: string): ToolTest[] {
  const tool = "redis-benchmark";
  let header = ["test", "rps"];
  const tests: ToolTest[] = [];
  for (const raw of text.split(/\r?\n/)) {
    const line = raw.trim();
    if (!line.startsWith('"')) continue; // warnings, progress, blank lines
    const fields = csvFields(line);
    if (fields[0] === "test") {
      header = fields;
      continue;
    }
    const at = (name: string) => {
      const i = header.indexOf(name);
      return i >= 0 && i < fields.length ? fields[i] : undefined;
    };
    const rps = at("rps");
    if (rps === undefined) throw new ToolOutputError(tool, `no rate in line ${line}`, text);
    const ms = (name: string) => {
      const v = at(name);
      return v === undefined ? null : csvNumber(tool, v, `${fields[0]} ${name}`, text);
    };
    tests.push({
      name: fields[0],
      requests: 0,
      perSecond: csvNumber(tool, rps, `${fields[0]} rps`, text),
      meanMs: ms("avg_latency_ms"),
      medianMs: ms("p50_latency_ms"),
      p99Ms: ms("p99_latency_ms"),
    });
  }
  if (tests.length === 0) throw new ToolOutputError(tool, "no test lines in the CSV output", text);
  return tests;
}

/** What ApacheBench reports, parsed. */
export interface AbSummary {
  /** "Document Path". */
  path: string;
  /** "Document Length" in bytes. */
  documentBytes: number;
  /** "Complete requests". */
  complete: number;
  /** "Failed requests" (connect, receive, length and exception failures). */
  failed: number;
  /** The breakdown ab prints after a non-zero "Failed requests", e.g. `Length: 5`; "" if none. */
  failedDetail: string;
  /** "Non-2xx responses" (ab prints the line only when there are some). */
  non2xx: number;
  /** "Keep-Alive requests" (printed with -k only). */
  keepAlive: number;
  /** "Requests per second". */
  perSecond: number;
  /** The first "Time per request" (mean latency of one request), ms. */
  meanMs: number;
  /** The 50% line of "Percentage of the requests served within" (whole ms); null if absent. */
  medianMs: number | null;
  /** The 99% line (whole ms); null if absent. */
  p99Ms: number | null;
}

/**
 * Parses the report ApacheBench (`ab`) prints on stdout.
 *
 * @throws {ToolOutputError} naming the first required line that is missing.
 */
export function parseAbOutput(text: string): AbSummary {
  const find = (re: RegExp) => re.exec(text);
  const need = (label: string, re: RegExp): RegExpExecArray => {
    const m = find(re);
    if (!m) throw new ToolOutputError("ab", `no "${label}" line`, text);
    return m;
  };
  const num = (s: string) => Number(s);
  const failed = need("Failed requests", /^Failed requests:\s+(\d+)\s*$/m);
  const detail = find(/^Failed requests:\s+\d+\s*\n\s+\((Connect: .*)\)\s*$/m);
  const percent = (p: number) => {
    const m = new RegExp(`^\\s*${p}%\\s+(\\d+)`, "m").exec(text);
    return m ? num(m[1]) : null;
  };
  return {
    path: find(/^Document Path:\s+(\S+)/m)?.[1] ?? "",
    documentBytes: num(find(/^Document Length:\s+(\d+) bytes/m)?.[1] ?? "0"),
    complete: num(need("Complete requests", /^Complete requests:\s+(\d+)/m)[1]),
    failed: num(failed[1]),
    failedDetail: detail ? detail[1] : "",
    non2xx: num(find(/^Non-2xx responses:\s+(\d+)/m)?.[1] ?? "0"),
    keepAlive: num(find(/^Keep-Alive requests:\s+(\d+)/m)?.[1] ?? "0"),
    perSecond: num(need("Requests per second", /^Requests per second:\s+([\d.]+) \[#\/sec\]/m)[1]),
    meanMs: num(need("Time per request", /^Time per request:\s+([\d.]+) \[ms\] \(mean\)$/m)[1]),
    medianMs: percent(50),
    p99Ms: percent(99),
  };
}

/** How one real-client workload runs its tool. */
export interface RealClientSpec {
  tool: ToolName;
  /** Concurrent connections (`-c`). */
  clients: number;
  /** Keep-alive (`-k 1`, `ab -k`) or a connection per request (`-k 0`, ab without `-k`). */
  keepAlive: boolean;
  /** redis-benchmark's `-d` (value bytes); undefined for its default (3) and for ab. */
  dataBytes?: number;
  /**
   * About the rate of the slower columns on a small machine, requests per second: sizes `-n`
   * so that one run takes about the benchmark's duration.
   */
  expectedPerSecond: number;
}

/** The real-client workloads: what users run against Redis and a web server. */
export const REAL_CLIENT_SPECS: Record<RealClientWorkload, RealClientSpec> = {
  "rb-k0-c50": { tool: "redis-benchmark", clients: 50, keepAlive: false, expectedPerSecond: 8000 },
  "rb-k0-c50-d20k": {
    tool: "redis-benchmark",
    clients: 50,
    keepAlive: false,
    dataBytes: 20000,
    expectedPerSecond: 6000,
  },
  "rb-k0-c1000": {
    tool: "redis-benchmark",
    clients: 1000,
    keepAlive: false,
    expectedPerSecond: 8000,
  },
  "rb-k1-c50": { tool: "redis-benchmark", clients: 50, keepAlive: true, expectedPerSecond: 30000 },
  "ab-k-c50": { tool: "ab", clients: 50, keepAlive: true, expectedPerSecond: 20000 },
  "ab-c50": { tool: "ab", clients: 50, keepAlive: false, expectedPerSecond: 6000 },
};

/** The tests redis-benchmark runs (`-t`), in order; ab runs one. */
export const REDIS_BENCHMARK_TESTS = ["SET", "GET"] as const;

/** Where a real client points: the column's address, and for ab the page's path. */
export interface RealClientTarget {
  /** `HOST:PORT` of the column (the upstream itself, or a proxy in front of it). */
  address: string;
  /** The path of the static page, for ab (e.g. `/page.html`). */
  path?: string;
}

/** A planned run of a tool: the program, its arguments, its request count and time bound. */
export interface ToolCommand {
  tool: ToolName;
  args: string[];
  /** `-n`: per test for redis-benchmark (SET and GET each), in all for ab. */
  requestsPerTest: number;
  /** Tests the run makes (2 for redis-benchmark's SET and GET, 1 for ab). */
  tests: number;
  /** The run is killed after this long. */
  timeoutMs: number;
}

/**
 * Plans one run of a real-client workload against `target`: `-n` sized so that the run takes
 * about `durationMs` at the spec's expected rate (at least 2 requests per connection), and a
 * time bound of 15 times that, at least 30 s.
 */
export function realClientCommand(
  spec: RealClientSpec,
  target: RealClientTarget,
  durationMs: number,
): ToolCommand {
  const [host, port] = splitAddress(target.address);
  const tests = spec.tool === "redis-benchmark" ? REDIS_BENCHMARK_TESTS.length : 1;
  const n = Math.max(
    spec.clients * 2,
    Math.round((spec.expectedPerSecond * durationMs) / 1000 / tests),
  );
  const expectedMs = (n * tests * 1000) / spec.expectedPerSecond;
  const timeoutMs = Math.max(30_000, 15 * expectedMs);
  if (spec.tool === "redis-benchmark") {
    return {
      tool: spec.tool,
      args: [
        "-h",
        host,
        "-p",
        port,
        "-k",
        spec.keepAlive ? "1" : "0",
        "-c",
        String(spec.clients),
        ...(spec.dataBytes === undefined ? [] : ["-d", String(spec.dataBytes)]),
        "-t",
        REDIS_BENCHMARK_TESTS.map((t) => t.toLowerCase()).join(","),
        "-n",
        String(n),
        "-q",
        "--csv",
      ],
      requestsPerTest: n,
      tests,
      timeoutMs,
    };
  }
  const url = `http://${host.includes(":") ? `[${host}]` : host}:${port}${target.path ?? "/"}`;
  return {
    tool: spec.tool,
    args: [...(spec.keepAlive ? ["-k"] : []), "-c", String(spec.clients), "-n", String(n), url],
    requestsPerTest: n,
    tests,
    timeoutMs,
  };
}

function splitAddress(address: string): [string, string] {
  const m = /^(?:\[([^\]]+)\]|([^:\s]+)):(\d{1,5})$/.exec(address);
  if (!m) throw new RangeError(`expected HOST:PORT, got "${address}"`);
  return [m[1] ?? m[2], m[3]];
}

/** What a finished tool process left. */
export interface ToolOutput {
  code: number;
  stdout: string;
  stderr: string;
  elapsedMs: number;
}

/**
 * Runs `exe args` with stdin closed, and kills it (SIGKILL, by its process) when it has not
 * exited within `timeoutMs`.
 *
 * @throws {ToolRunError} when it was killed for its time bound.
 * @throws {Deno.errors.NotFound} when `exe` does not exist.
 */
export async function runBounded(
  name: string,
  exe: string,
  args: string[],
  timeoutMs: number,
): Promise<ToolOutput> {
  const start = performance.now();
  const child = new Deno.Command(exe, {
    args,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  let killed = false;
  const timer = setTimeout(() => {
    killed = true;
    try {
      child.kill("SIGKILL");
    } catch { /* it exited meanwhile */ }
  }, timeoutMs);
  try {
    const out = await child.output();
    const dec = new TextDecoder();
    const result = {
      code: out.code,
      stdout: dec.decode(out.stdout),
      stderr: dec.decode(out.stderr),
      elapsedMs: performance.now() - start,
    };
    if (killed) {
      throw new ToolRunError(
        name,
        `did not finish within ${Math.round(timeoutMs / 1000)} s; killed`,
        result.stderr + result.stdout,
      );
    }
    return result;
  } finally {
    clearTimeout(timer);
  }
}

/** The tools a real-client workload needs that are not on the PATH (never installs them). */
export function missingTools(names: readonly string[]): string[] {
  return names.filter((n) => findOnPath(n) === undefined);
}

/** redis-benchmark's stderr lines that are not errors (its advice when keep-alive is off). */
const HARMLESS_STDERR = /^WARNING: Keepalive disabled/;

/**
 * Runs one real-client workload against `target` (the tool found on the PATH) and returns its
 * result: failed requests and non-2xx answers (ab) and unexpected stderr lines (redis-benchmark)
 * count as errors; the caller adds what the upstream's own counters say.
 *
 * @throws {ToolRunError} when the tool is missing, exits non-zero, or outlives its bound.
 * @throws {ToolOutputError} when its output cannot be parsed.
 */
export async function runRealClient(
  spec: RealClientSpec,
  target: RealClientTarget,
  durationMs: number,
): Promise<ToolResult> {
  const exe = findOnPath(spec.tool);
  if (!exe) throw new ToolRunError(spec.tool, "not on the PATH");
  const cmd = realClientCommand(spec, target, durationMs);
  const out = await runBounded(spec.tool, exe, cmd.args, cmd.timeoutMs);
  if (out.code !== 0) {
    throw new ToolRunError(spec.tool, `exit code ${out.code}`, out.stderr + out.stdout);
  }
  const command = [spec.tool, ...cmd.args].join(" ");
  const samples = new Set<string>();
  let errors = 0;
  let tests: ToolTest[];
  if (spec.tool === "redis-benchmark") {
    tests = parseRedisBenchmarkCsv(out.stdout).map((t) => ({
      ...t,
      requests: cmd.requestsPerTest,
    }));
    const names = tests.map((t) => t.name);
    if (REDIS_BENCHMARK_TESTS.some((t) => !names.includes(t))) {
      throw new ToolOutputError(spec.tool, `expected tests SET and GET, got ${names}`, out.stdout);
    }
    for (const line of out.stderr.split("\n").map((l) => l.trim())) {
      if (line === "" || HARMLESS_STDERR.test(line)) continue;
      errors++;
      if (samples.size < 5) samples.add(`redis-benchmark: ${line}`);
    }
  } else {
    const ab = parseAbOutput(out.stdout);
    tests = [{
      name: ab.path,
      requests: ab.complete,
      perSecond: ab.perSecond,
      meanMs: ab.meanMs,
      medianMs: ab.medianMs,
      p99Ms: ab.p99Ms,
    }];
    errors += ab.failed + ab.non2xx;
    if (ab.failed > 0) samples.add(`ab: ${ab.failed} failed requests (${ab.failedDetail})`);
    if (ab.non2xx > 0) samples.add(`ab: ${ab.non2xx} non-2xx responses`);
    if (ab.complete < cmd.requestsPerTest) {
      errors += cmd.requestsPerTest - ab.complete;
      samples.add(`ab: ${ab.complete} of ${cmd.requestsPerTest} requests completed`);
    }
  }
  return {
    kind: "tool",
    tool: spec.tool,
    command,
    errors,
    mismatches: 0,
    errorSamples: [...samples],
    elapsedMs: out.elapsedMs,
    ...combine(tests),
    tests,
  };
}

/**
 * The requests of every test together and their rate: requests / the sum of each test's
 * requests / rate (the time the tests took, one after the other).
 */
export function combine(tests: ToolTest[]): { requests: number; perSecond: number } {
  let requests = 0;
  let seconds = 0;
  for (const t of tests) {
    requests += t.requests;
    if (t.perSecond > 0) seconds += t.requests / t.perSecond;
  }
  return { requests, perSecond: seconds > 0 ? requests / seconds : 0 };
}
