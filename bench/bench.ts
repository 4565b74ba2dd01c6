/**
 * `deno task bench`: measures the proxy against a direct connection to an echo upstream, in
 * every pool mode, and against HAProxy and socat where they are installed; then against a
 * Redis-protocol upstream (`redis-server` when it is on the PATH, else `resp_server.ts`) with
 * `--pool reuse --protocol raw` and `--protocol redis`; prints a table with every proxy figure as
 * a ratio to direct, judges the targets of issues 3 and 7, and writes `latest.json` and
 * `latest.svg` (default directory `bench/results/`).
 *
 * The echo upstream, the proxy and the load generator each run as their own process (the proxy
 * with the `deno run` flags of the `start` task, one fresh process per mode). Each latency, rate
 * and bulk workload runs in rounds, each in a fresh load generator process, interleaved across
 * the columns (round 1 of every column, then round 2, ...), and the median round counts; the hold
 * workload runs last, on a fresh proxy process per mode. Every echoed byte and every Redis reply
 * is verified; errors and mismatches are counted and printed, and make the exit code 1 (2 for a
 * bad option).
 *
 * ```sh
 * deno task bench                       # the full run, a few minutes
 * deno task bench --short               # a few seconds, tiny sizes (the test suite runs this)
 * deno task bench --workloads connect32,pingpong32 --modes reuse --duration 3s
 * deno task bench --workloads redis     # the Redis-protocol workloads only
 * ```
 *
 * @module
 */

import {
  optionsOrExitCode,
  parseDurationMs,
  parseFlags,
  parseIntFlag,
  UsageError,
} from "./_cli.ts";
import {
  computeFigures,
  countFailures,
  evaluateGoals,
  type Measurement,
  medianRound,
  MEDIUM_WORKLOADS,
  REDIS_WORKLOADS,
  type Round,
  roundScore,
  WORKLOAD_IDS,
  WORKLOAD_TITLES,
  type WorkloadId,
} from "./_figures.ts";
import type { Job, JobResult, RespExchange } from "./_job.ts";
import { runLoadgen } from "./_loadgen.ts";
import { renderGoals, renderSvg, renderTable } from "./_report.ts";
import { respCommand, respQuery } from "./_resp.ts";
import {
  availablePeers,
  DEFAULT_PROXY_SCRIPT,
  type PeerName,
  PEERS,
  type RespUpstream,
  type RespUpstreamChoice,
  type Server,
  startEchoProcess,
  startPeer,
  startProxy,
  startRelay,
  startRespUpstream,
  startTaskFlags,
} from "./_servers.ts";
import { fileUrl, findOnPath } from "./_proc.ts";
import { formatNumber } from "./_stats.ts";

const POOL_MODES = ["off", "warm", "reuse"] as const;
/** The floor reference column: `bench/minimal_relay.ts`, a bare Deno relay. */
const RELAY = "relay";
/**
 * The columns of the Redis workloads: straight to the Redis upstream, and `--pool reuse` with
 * `--protocol raw` (pooling by timing) and with `--protocol redis` (pooling by framing).
 */
const REDIS_COLUMNS = ["direct", "reuse-raw", "reuse-redis"];
const MESSAGE_BYTES = 64;
const MIB = 1024 * 1024;
/** The key the Redis workloads read (set before they start) and its 64-byte value. */
const REDIS_KEY = "bench:value";
const REDIS_VALUE = "0123456789abcdef".repeat(4);
/** A key that is never set: its GET gets the nil reply. */
const REDIS_MISSING_KEY = "bench:missing";
/** The key the Redis bulk workload sets, and the size of each value. */
const REDIS_BULK_KEY = "bench:bulk";
const REDIS_BULK_VALUE_BYTES = MIB;

const USAGE = `Usage: deno task bench [options]

  --duration DURATION   measured time of one round of a latency or rate workload
                        (default 2s; --short: 300ms)
  --rounds N            rounds of each latency, rate and bulk workload, each in a fresh load
                        generator process; the median round counts (default 3; --short: 1)
  --workloads LIST      comma list of connect1, connect32, pingpong1, pingpong32, bulk1,
                        bulk8, hold, redis1, redis32, redisbulk,
                        medium-ka-1k, medium-ka-5k, medium-ka-20k (keep-alive, 8 clients),
                        medium-cpr-1k, medium-cpr-5k, medium-cpr-20k (connect per request,
                        32 clients; 1 KiB, 5.5 KiB, 20 KiB echoes)
                        or the groups connect, pingpong, medium, bulk, redis, all
                        (default all; with --short, all but the 1k and 20k medium ones)
  --modes LIST          comma list of off, warm, reuse, relay, ${PEERS.join(", ")}
                        (default: the three pool modes, relay (bench/minimal_relay.ts, the
                        floor reference) and the peers found on the PATH);
                        direct is always included. The redis workloads always run direct,
                        reuse-raw and reuse-redis (--pool reuse --protocol raw / redis)
  --bulk-mib N          bytes of the 1-stream bulk workload in MiB; the 8 streams carry N/4 MiB
                        each, redisbulk sets N values of 1 MiB (default 1024; --short: 4)
  --redis-upstream U    the upstream of the redis workloads: redis-server (from the PATH),
                        bench (bench/resp_server.ts), or auto: redis-server when on the PATH,
                        else bench (default auto)
  --hold N              sessions held open at once (default 5000; --short: 200)
  --short               a few seconds in all: tiny durations and sizes
  --out DIR             where latest.json and latest.svg go (default bench/results)
  --proxy FILE          the proxy entry point to run (default main.ts of this repository)
  --proxy-args="FLAGS"  more flags for the proxy under test, separated by spaces (give it
                        with "=", as its value starts with dashes; not --protocol, which the
                        columns set), e.g.
                        --proxy-args="--client-timeout 0 --server-timeout 0 --fin-timeout 0"
  --help                this text`;

/** The validated options of one run. */
interface Options {
  durationMs: number;
  rounds: number;
  warmupMs: number;
  workloads: WorkloadId[];
  /** The columns of the echo workloads (the redis ones have {@linkcode REDIS_COLUMNS}). */
  columns: string[];
  bulkMib: number;
  redisUpstream: RespUpstreamChoice;
  holdSessions: number;
  short: boolean;
  outDir: string;
  proxyScript: URL;
  proxyArgs: string[];
  peersMissing: string[];
}

function parseList(flag: string, text: string, known: readonly string[]): string[] {
  const items = text.split(",").map((s) => s.trim()).filter((s) => s !== "");
  if (items.length === 0) throw new UsageError(`--${flag}: expected a comma list, got "${text}"`);
  for (const i of items) {
    if (!known.includes(i)) {
      throw new UsageError(`--${flag}: unknown "${i}"; expected some of ${known.join(", ")}`);
    }
  }
  return items;
}

function parseOptions(args: string[]): Options | "help" {
  const flags = parseFlags(args, {
    string: [
      "duration",
      "rounds",
      "workloads",
      "modes",
      "bulk-mib",
      "hold",
      "out",
      "proxy",
      "proxy-args",
      "redis-upstream",
    ],
    boolean: ["short", "help"],
  });
  if (flags.booleans.get("help")) return "help";
  if (flags.positional.length > 0) {
    throw new UsageError(`unexpected argument "${flags.positional[0]}" (see --help)`);
  }
  const short = flags.booleans.get("short") ?? false;
  const s = (name: string) => flags.strings.get(name);

  const durationText = s("duration");
  const durationMs = durationText ? parseDurationMs("duration", durationText) : short ? 300 : 2000;
  const roundsText = s("rounds");
  const rounds = roundsText ? parseIntFlag("rounds", roundsText, 1, 100) : short ? 1 : 3;
  const warmupMs = Math.min(1000, Math.max(50, Math.round(durationMs / 10)));

  const medium = WORKLOAD_IDS.filter((w) => w in MEDIUM_WORKLOADS);
  const groups: Record<string, WorkloadId[]> = {
    // --short without --workloads: of the medium workloads only the 5.5 KiB pair, to stay quick
    all: short && s("workloads") === undefined
      ? WORKLOAD_IDS.filter((w) => !medium.includes(w) || w.endsWith("-5k"))
      : [...WORKLOAD_IDS],
    connect: ["connect1", "connect32"],
    pingpong: ["pingpong1", "pingpong32"],
    medium,
    bulk: ["bulk1", "bulk8"],
    redis: [...REDIS_WORKLOADS],
  };
  const wanted = parseList("workloads", s("workloads") ?? "all", [
    ...WORKLOAD_IDS,
    ...Object.keys(groups),
  ]);
  const chosen = new Set<string>(wanted.flatMap((w) => groups[w] ?? [w]));
  const workloads = WORKLOAD_IDS.filter((w) => chosen.has(w));

  const found = availablePeers();
  const peersMissing = PEERS.filter((p) => !found.includes(p));
  const modesText = s("modes");
  let modes: string[];
  if (modesText === undefined) {
    modes = [...POOL_MODES, RELAY, ...found];
  } else {
    const listed = parseList("modes", modesText, ["direct", ...POOL_MODES, RELAY, ...PEERS]);
    for (const p of PEERS) {
      if (listed.includes(p) && !found.includes(p)) {
        throw new UsageError(`--modes: ${p} is not on the PATH (this benchmark never installs it)`);
      }
    }
    modes = [...POOL_MODES, RELAY, ...PEERS].filter((m) => listed.includes(m));
  }

  const bulkText = s("bulk-mib");
  const bulkMib = bulkText ? parseIntFlag("bulk-mib", bulkText, 1, 65536) : short ? 4 : 1024;
  const holdText = s("hold");
  // each held session costs the proxy two descriptors; the open-file limit here is 20000
  const holdSessions = holdText ? parseIntFlag("hold", holdText, 1, 9000) : short ? 200 : 5000;

  const redisUpstream = parseList("redis-upstream", s("redis-upstream") ?? "auto", [
    "auto",
    "redis-server",
    "bench",
  ]);
  if (redisUpstream.length !== 1) throw new UsageError("--redis-upstream: expected one value");
  const redisWorkloads = workloads.some((w) => REDIS_WORKLOADS.includes(w));
  if (redisWorkloads && redisUpstream[0] === "redis-server" && !findOnPath("redis-server")) {
    throw new UsageError(
      "--redis-upstream: redis-server is not on the PATH (this benchmark never installs it)",
    );
  }
  const proxyArgs = (s("proxy-args") ?? "").split(/\s+/).filter((arg) => arg !== "");
  if (redisWorkloads && proxyArgs.some((a) => /^--protocol(=|$)/.test(a))) {
    throw new UsageError(
      "--proxy-args: --protocol is set by the redis workloads' columns; drop it, or leave out " +
        "the redis workloads",
    );
  }

  const outText = s("out");
  const outDir = outText ?? decodeURIComponent(new URL("./results", import.meta.url).pathname);
  const proxyText = s("proxy");
  let proxyScript = DEFAULT_PROXY_SCRIPT;
  if (proxyText) proxyScript = fileUrl(proxyText);
  if (redisWorkloads || modes.some((m) => (POOL_MODES as readonly string[]).includes(m))) {
    try {
      Deno.statSync(proxyScript);
    } catch {
      throw new UsageError(
        `--proxy: cannot find the proxy at ${decodeURIComponent(proxyScript.pathname)}`,
      );
    }
  }
  return {
    durationMs,
    rounds,
    warmupMs,
    workloads,
    columns: ["direct", ...modes],
    bulkMib,
    redisUpstream: redisUpstream[0] as RespUpstreamChoice,
    holdSessions,
    short,
    outDir,
    proxyScript,
    proxyArgs,
    peersMissing,
  };
}

function jobFor(w: Exclude<WorkloadId, "hold">, target: string, o: Options): Job {
  const timed = {
    target,
    durationMs: o.durationMs,
    warmupMs: o.warmupMs,
    messageBytes: MESSAGE_BYTES,
  };
  switch (w) {
    case "connect1":
      return { kind: "connect", clients: 1, ...timed };
    case "connect32":
      return { kind: "connect", clients: 32, ...timed };
    case "pingpong1":
      return { kind: "pingpong", clients: 1, ...timed };
    case "pingpong32":
      return { kind: "pingpong", clients: 32, ...timed };
    case "medium-ka-1k":
    case "medium-ka-5k":
    case "medium-ka-20k":
    case "medium-cpr-1k":
    case "medium-cpr-5k":
    case "medium-cpr-20k": {
      const { keepAlive, messageBytes } = MEDIUM_WORKLOADS[w];
      return keepAlive
        ? { kind: "pingpong", clients: 8, ...timed, messageBytes }
        : { kind: "connect", clients: 32, ...timed, messageBytes };
    }
    case "bulk1":
      return { kind: "bulk", target, streams: 1, bytesPerStream: o.bulkMib * MIB };
    case "bulk8":
      return {
        kind: "bulk",
        target,
        streams: 8,
        bytesPerStream: Math.max(4096, Math.floor((o.bulkMib * MIB) / 4 / 4) * 4),
      };
    case "redis1":
    case "redis32":
      return {
        kind: "resp-connect",
        target,
        clients: w === "redis1" ? 1 : 32,
        durationMs: o.durationMs,
        warmupMs: o.warmupMs,
        exchanges: REDIS_EXCHANGES,
      };
    case "redisbulk":
      return {
        kind: "resp-bulk",
        target,
        key: REDIS_BULK_KEY,
        valueBytes: REDIS_BULK_VALUE_BYTES,
        values: o.bulkMib,
      };
  }
}

const ascii = (bytes: Uint8Array) => new TextDecoder().decode(bytes);

/**
 * The sessions of the redis workloads take turns: a PING, a GET of the key set before the
 * workload (a 64-byte bulk back), a GET of a key never set (the nil reply).
 */
const REDIS_EXCHANGES: RespExchange[] = [
  { request: ascii(respCommand("PING")), reply: "+PONG\r\n" },
  {
    request: ascii(respCommand("GET", REDIS_KEY)),
    reply: `$${REDIS_VALUE.length}\r\n${REDIS_VALUE}\r\n`,
  },
  { request: ascii(respCommand("GET", REDIS_MISSING_KEY)), reply: "$-1\r\n" },
];

function describe(r: JobResult, rounds: Round[]): string {
  let errors = 0, mismatches = 0;
  for (const x of rounds) {
    errors += x.result.errors;
    mismatches += x.result.mismatches;
  }
  const failures = `errors ${errors}, mismatches ${mismatches}`;
  switch (r.kind) {
    case "connect":
      return `${formatNumber(r.perSecond)} sessions/s, median ${
        formatNumber(r.latency.medianMs)
      } ms, ` +
        `p99 ${formatNumber(r.latency.p99Ms)} ms; ${failures}`;
    case "pingpong":
      return `${formatNumber(r.perSecond)} messages/s, median ${
        formatNumber(r.latency.medianMs)
      } ms, ` +
        `p99 ${formatNumber(r.latency.p99Ms)} ms; ${failures}`;
    case "bulk":
      return `${formatNumber(r.mbPerSecond)} MB/s (${
        formatNumber(r.bytes / MIB)
      } MiB verified); ${failures}`;
    case "hold":
      return `${r.opened} sessions held; ${failures}`;
  }
}

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/**
 * A set of workloads with their upstream and the columns measured against it: the echo
 * workloads (direct, the pool modes, the peers) or the redis ones ({@linkcode REDIS_COLUMNS}).
 */
interface Suite {
  /** The upstream every column reaches, directly or through a proxy. */
  upstream: Server;
  /** Connections the upstream has accepted so far. */
  accepted(): Promise<number>;
  columns: string[];
  /** The suite's workloads that were asked for, in order. */
  workloads: WorkloadId[];
}

/** The workloads asked for that run against the echo upstream / the Redis upstream. */
function echoWorkloads(o: Options): WorkloadId[] {
  return o.workloads.filter((w) => !REDIS_WORKLOADS.includes(w));
}
function redisWorkloads(o: Options): WorkloadId[] {
  return o.workloads.filter((w) => REDIS_WORKLOADS.includes(w));
}

/**
 * The pool mode and protocol flags of a proxy column: a pool mode (`reuse`), or a pool mode and a
 * protocol (`reuse-redis` is `--pool reuse --protocol redis`); undefined for direct and peers.
 */
function proxyColumn(column: string): { mode: string; args: string[] } | undefined {
  if ((POOL_MODES as readonly string[]).includes(column)) return { mode: column, args: [] };
  const m = /^(off|warm|reuse)-(raw|redis|memcached)$/.exec(column);
  return m ? { mode: m[1], args: ["--protocol", m[2]] } : undefined;
}

/** One benchmark run: measures every column of each suite, collects the results. */
class Run {
  readonly measurements: Measurement[] = [];
  readonly failures: { column: string; workload: string | null; message: string }[] = [];
  #step = 0;
  readonly #steps: number;

  constructor(readonly options: Options) {
    const o = options;
    this.#steps = o.columns.reduce(
      (n, c) => n + echoWorkloads(o).filter((w) => w !== "hold" || holdApplies(c)).length,
      0,
    ) + REDIS_COLUMNS.length * redisWorkloads(o).length;
  }

  #progress(column: string, workload: string, text: string): void {
    this.#step++;
    const n = String(this.#steps).length;
    console.log(
      `[${String(this.#step).padStart(n)}/${this.#steps}] ${column.padEnd(11)} ${
        workload.padEnd(11)
      } ${text}`,
    );
  }

  fail(column: string, workload: string | null, err: unknown): void {
    const message = err instanceof Error ? err.message : String(err);
    this.failures.push({ column, workload, message });
    console.log(`FAILED ${column}${workload ? ` ${workload}` : ""}: ${message}`);
  }

  async #start(column: string, upstream: string): Promise<Server | undefined> {
    if (column === "direct") return undefined;
    if (column === RELAY) return await startRelay(upstream);
    if ((PEERS as readonly string[]).includes(column)) {
      return await startPeer(column as PeerName, upstream);
    }
    const proxy = proxyColumn(column);
    if (!proxy) throw new Error(`unknown column ${column}`);
    return await startProxy({
      mode: proxy.mode,
      label: column,
      upstream,
      script: this.options.proxyScript,
      extraArgs: [...this.options.proxyArgs, ...proxy.args],
    });
  }

  async #stop(column: string, server: Server | undefined): Promise<void> {
    if (!server) return;
    const code = await server.stop();
    // our proxy must drain and exit 0 on SIGTERM; peers have their own conventions
    if (!(PEERS as readonly string[]).includes(column) && code !== 0) {
      this.fail(
        column,
        null,
        `${server.name} exited with code ${code} after SIGTERM (expected 0)\n` +
          server.proc.tail(),
      );
    }
  }

  /**
   * Runs the latency, rate and bulk workloads of `suite` against every column of it. Every
   * column's server stays up for the whole pass, and the rounds are interleaved (round 1 of every
   * column, then round 2, ...), so a drift of the machine's speed during the run touches every
   * column alike.
   */
  async timed(suite: Suite): Promise<void> {
    const timed = suite.workloads.filter((w): w is Exclude<WorkloadId, "hold"> => w !== "hold");
    if (timed.length === 0) return;
    const targets = new Map<string, { target: string; server?: Server }>();
    try {
      for (const c of suite.columns) {
        try {
          const server = await this.#start(c, suite.upstream.address);
          targets.set(c, { target: server?.address ?? suite.upstream.address, server });
        } catch (err) {
          this.fail(c, null, err);
        }
      }
      for (const w of timed) {
        console.log(
          `${w}: ${this.options.rounds} round(s) through ${[...targets.keys()].join(", ")} ...`,
        );
        const rounds = new Map<string, Round[]>();
        const failed = new Set<string>();
        for (let i = 0; i < this.options.rounds; i++) {
          for (const [c, { target }] of targets) {
            if (failed.has(c)) continue;
            const proc = targets.get(c)?.server?.proc;
            try {
              const before = await suite.accepted();
              const cpuBefore = await proc?.cpuMicros();
              const result = await runLoadgen(jobFor(w, target, this.options));
              const cpuAfter = await proc?.cpuMicros();
              const upstreamConnections = (await suite.accepted()) - before;
              const round: Round = { result, upstreamConnections };
              if (cpuBefore !== undefined && cpuAfter !== undefined) {
                round.proxyCpuMicros = cpuAfter - cpuBefore;
              }
              rounds.set(c, [...rounds.get(c) ?? [], round]);
            } catch (err) {
              failed.add(c);
              this.fail(c, w, err);
            }
          }
        }
        for (const c of suite.columns) {
          const rs = rounds.get(c);
          if (!rs || failed.has(c)) {
            this.#progress(c, w, "failed");
            continue;
          }
          const median = medianRound(rs);
          this.measurements.push({ workload: w, column: c, ...median, rounds: rs });
          const spread = rs.length > 1
            ? ` [rounds: ${rs.map((r) => formatNumber(roundScore(r.result))).join(", ")}]`
            : "";
          this.#progress(c, w, describe(median.result, rs) + cpuText(median) + spread);
        }
      }
    } finally {
      for (const [c, { server }] of targets) await this.#stop(c, server);
    }
  }

  /** Runs the hold workload against every column it applies to, each on a fresh server. */
  async holds(suite: Suite): Promise<void> {
    if (!suite.workloads.includes("hold")) return;
    for (const c of suite.columns) if (holdApplies(c)) await this.#hold(suite, c);
  }

  /** The hold workload, on a fresh proxy process so that earlier workloads do not blur it. */
  async #hold(suite: Suite, column: string): Promise<void> {
    let server: Server | undefined;
    try {
      server = await this.#start(column, suite.upstream.address);
      if (!server) return;
      const proc = server.proc;
      let beforeBytes = 0;
      let afterBytes = 0;
      const acceptedBefore = await suite.accepted();
      const result = await runLoadgen({
        kind: "hold",
        target: server.address,
        sessions: this.options.holdSessions,
        warmupSessions: Math.min(100, this.options.holdSessions),
        messageBytes: MESSAGE_BYTES,
      }, {
        warm: async () => {
          await sleep(300);
          beforeBytes = await proc.rssBytes();
        },
        ready: async () => {
          await sleep(300);
          afterBytes = await proc.rssBytes();
        },
      });
      const upstreamConnections = (await suite.accepted()) - acceptedBefore;
      const opened = result.kind === "hold" ? result.opened : 0;
      const rss = {
        beforeBytes,
        afterBytes,
        bytesPerSession: opened > 0 ? (afterBytes - beforeBytes) / opened : 0,
      };
      this.measurements.push({
        workload: "hold",
        column,
        result,
        upstreamConnections,
        rounds: [{ result, upstreamConnections }],
        rss,
      });
      this.#progress(
        column,
        "hold",
        `${describe(result, [{ result, upstreamConnections }])}; RSS ${
          formatNumber(beforeBytes / MIB)
        } -> ${formatNumber(afterBytes / MIB)} MiB = ${
          formatNumber(rss.bytesPerSession / 1024)
        } KiB per session`,
      );
    } catch (err) {
      this.#progress(column, "hold", "failed");
      this.fail(column, "hold", err);
    } finally {
      await this.#stop(column, server);
    }
  }
}

/** The proxy CPU per session or message of a round, for the progress line ("" when none). */
function cpuText(round: Round): string {
  const r = round.result;
  if (round.proxyCpuMicros === undefined || (r.kind !== "connect" && r.kind !== "pingpong")) {
    return "";
  }
  if (r.completed === 0) return "";
  return `; proxy CPU ${formatNumber(round.proxyCpuMicros / r.completed)} µs per ${
    r.kind === "connect" ? "session" : "message"
  }`;
}

/** Memory per session is a proxy's figure; socat forks a process per session, so it is skipped. */
function holdApplies(column: string): boolean {
  return column !== "direct" && column !== "socat";
}

function machine(): Record<string, string | number> {
  let kernel = "unknown";
  try {
    kernel = Deno.readTextFileSync("/proc/sys/kernel/osrelease").trim();
  } catch { /* not Linux */ }
  return {
    cpus: navigator.hardwareConcurrency,
    os: Deno.build.os,
    arch: Deno.build.arch,
    kernel,
    deno: Deno.version.deno,
    v8: Deno.version.v8,
  };
}

/**
 * Starts the Redis upstream, sets the key the workloads read, runs the redis workloads, stops
 * it; returns what the upstream was (undefined when it did not start).
 */
async function redisSuite(run: Run, o: Options): Promise<string | undefined> {
  let redis: RespUpstream | undefined;
  try {
    redis = await startRespUpstream(o.redisUpstream);
    console.log(
      `redis workloads: upstream ${redis.kind} at ${redis.address}; columns ${
        REDIS_COLUMNS.join(", ")
      } (reuse-raw / reuse-redis = --pool reuse --protocol raw / redis)`,
    );
    const set = await respQuery(redis.address, respCommand("SET", REDIS_KEY, REDIS_VALUE));
    if (set !== "+OK") throw new Error(`${redis.kind}: SET ${REDIS_KEY} answered ${set}`);
    const upstream = redis;
    await run.timed({
      upstream,
      accepted: () => upstream.accepted(),
      columns: REDIS_COLUMNS,
      workloads: redisWorkloads(o),
    });
    return redis.kind;
  } catch (err) {
    run.fail("direct", null, err);
    return redis?.kind;
  } finally {
    const code = await redis?.stop();
    if (code !== undefined && code !== 0) {
      run.fail("direct", null, `${redis?.kind} exited with code ${code} after SIGTERM`);
    }
  }
}

async function main(): Promise<number> {
  const parsed = optionsOrExitCode("bench", USAGE, Deno.args, parseOptions);
  if (typeof parsed === "number") return parsed;
  const o: Options = parsed;
  const startedAt = new Date();
  const withEcho = echoWorkloads(o).length > 0;
  const withRedis = redisWorkloads(o).length > 0;
  console.log(
    `tcp-pool-proxy benchmark: ${
      [
        ...(withEcho ? [o.columns.join(", ")] : []),
        ...(withRedis ? [`redis workloads ${REDIS_COLUMNS.join(", ")}`] : []),
      ].join("; ")
    }; workloads ${o.workloads.join(", ")}; ` +
      `${
        o.rounds === 1 ? "1 round" : `median of ${o.rounds} rounds`
      } of ${o.durationMs} ms (+${o.warmupMs} ms warm-up) per timed workload, bulk ${o.bulkMib} MiB, ` +
      `hold ${o.holdSessions} sessions`,
  );
  if (withRedis || o.columns.some((c) => (POOL_MODES as readonly string[]).includes(c))) {
    console.log(
      `proxy: deno run ${startTaskFlags().join(" ")} ${
        decodeURIComponent(o.proxyScript.pathname)
      } (flags of the start task)${o.proxyArgs.length > 0 ? ` ${o.proxyArgs.join(" ")}` : ""}`,
    );
  }
  if (o.columns.includes(RELAY)) {
    console.log(
      `relay: deno run ${startTaskFlags().join(" ")} bench/minimal_relay.ts (the floor ` +
        `reference: a bare Deno relay, 16 KiB buffers, no pool)`,
    );
  }
  if (o.peersMissing.length > 0) {
    console.log(`peers not on the PATH, so not compared: ${o.peersMissing.join(", ")}`);
  }

  const run = new Run(o);
  if (withEcho) {
    const echo = await startEchoProcess();
    const suite: Suite = {
      upstream: echo,
      accepted: async () => (await echo.stats()).accepted,
      columns: o.columns,
      workloads: echoWorkloads(o),
    };
    try {
      await run.timed(suite);
      await run.holds(suite);
    } finally {
      const code = await echo.stop();
      if (code !== 0) {
        run.failures.push({ column: "direct", workload: null, message: `echo exit ${code}` });
      }
    }
  }
  const redisUpstream = withRedis ? await redisSuite(run, o) : undefined;

  const inRedis = (m: Measurement) => REDIS_WORKLOADS.includes(m.workload);
  const echoFigures = computeFigures(run.measurements.filter((m) => !inRedis(m)), o.columns);
  const redisFigures = computeFigures(run.measurements.filter(inRedis), REDIS_COLUMNS);
  const figures = [...echoFigures, ...redisFigures];
  const allColumns = [...new Set([...o.columns, ...(withRedis ? REDIS_COLUMNS : [])])];
  const goals = evaluateGoals(figures);
  const totals = countFailures(run.measurements);
  const finishedAt = new Date();

  if (echoFigures.length > 0) {
    console.log("");
    console.log(renderTable(echoFigures, goals, o.columns));
  }
  if (redisFigures.length > 0) {
    console.log("");
    console.log(
      `Redis protocol (upstream ${redisUpstream}; reuse-raw / reuse-redis = --pool reuse ` +
        `--protocol raw / redis):`,
    );
    console.log(renderTable(redisFigures, goals, REDIS_COLUMNS, "target"));
  }
  console.log("");
  console.log(
    "Targets (issue 3, and issue 7 for the Redis workloads; reuse mode unless said; " +
      "ratio to direct unless said; in the same run):",
  );
  console.log(renderGoals(goals));
  console.log("");
  console.log(
    `Ratios are proxy / direct (direct: to the echo upstream, or to the Redis upstream for ` +
      `the Redis workloads); each timed figure is the median of ${o.rounds} round(s).` +
      (o.workloads.includes("hold")
        ? ` Memory per session = (proxy VmRSS with ${o.holdSessions} sessions held - VmRSS ` +
          `before) / ${o.holdSessions}.`
        : "") +
      ` Proxy CPU per session / message = the proxy process's utime + stime (/proc/PID/stat, ` +
      `ticks of 10 ms) over the whole round / the sessions or messages of the round, warm-up ` +
      `included.`,
  );
  for (const m of run.measurements) {
    m.rounds.forEach(({ result: r }, i) => {
      if (r.errors === 0 && r.mismatches === 0) return;
      console.log(
        `${m.column} ${m.workload} round ${
          i + 1
        }: ${r.errors} errors, ${r.mismatches} mismatches: ${r.errorSamples.join("; ")}`,
      );
    });
  }
  console.log(
    `errors: ${totals.errors}, mismatches: ${totals.mismatches}, failures: ${run.failures.length}`,
  );

  const report = {
    benchmark: "tcp-pool-proxy",
    version: 1,
    startedAt: startedAt.toISOString(),
    finishedAt: finishedAt.toISOString(),
    seconds: (finishedAt.getTime() - startedAt.getTime()) / 1000,
    machine: machine(),
    options: {
      durationMs: o.durationMs,
      rounds: o.rounds,
      warmupMs: o.warmupMs,
      workloads: o.workloads,
      bulkMib: o.bulkMib,
      holdSessions: o.holdSessions,
      short: o.short,
      proxy: decodeURIComponent(o.proxyScript.pathname),
      proxyDenoFlags: startTaskFlags(),
      proxyArgs: o.proxyArgs,
      redisUpstream: o.redisUpstream,
    },
    // the columns of the echo workloads
    columns: o.columns,
    // each set of workloads: its upstream and its columns
    suites: [
      ...(withEcho
        ? [{ upstream: "bench/echo_server.ts", columns: o.columns, workloads: echoWorkloads(o) }]
        : []),
      ...(withRedis
        ? [{
          upstream: redisUpstream ?? "(did not start)",
          columns: REDIS_COLUMNS,
          workloads: redisWorkloads(o),
        }]
        : []),
    ],
    peersMissing: o.peersMissing,
    workloadTitles: WORKLOAD_TITLES,
    figures,
    goals,
    totals,
    failures: run.failures,
    measurements: run.measurements,
  };
  await Deno.mkdir(o.outDir, { recursive: true });
  const jsonPath = `${o.outDir}/latest.json`;
  const svgPath = `${o.outDir}/latest.svg`;
  await Deno.writeTextFile(jsonPath, JSON.stringify(report, null, 2) + "\n");
  const subtitle = `${startedAt.toISOString().slice(0, 16).replace("T", " ")} UTC, ` +
    `${navigator.hardwareConcurrency} CPUs, Deno ${Deno.version.deno}; median of ${o.rounds} round(s) of ${o.durationMs} ms per timed ` +
    `workload, bulk ${o.bulkMib} MiB, ${o.holdSessions} held sessions` +
    (withRedis ? `; Redis upstream ${redisUpstream}` : "");
  await Deno.writeTextFile(svgPath, renderSvg(figures, goals, allColumns, subtitle));
  console.log(`wrote ${jsonPath} and ${svgPath} (${report.seconds.toFixed(0)} s)`);

  return totals.errors > 0 || totals.mismatches > 0 || run.failures.length > 0 ? 1 : 0;
}

Deno.exit(await main());
