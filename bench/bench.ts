/**
 * `deno task bench`: measures the proxy against a direct connection to an echo upstream, in
 * every pool mode, against the minimal relay, and against HAProxy and socat where they are
 * installed; then against a Redis-protocol upstream (`redis-server` when it is on the PATH, else
 * `resp_server.ts`) with `--pool reuse --protocol raw` and `--protocol redis`; then against an
 * echo upstream behind TLS (throwaway certificates made for the run) with `--upstream-tls`, in
 * every pool mode, against a client that does the handshake itself (direct) and against reuse to
 * the same upstream's plain port; then, where the tools are installed, with real clients
 * (`redis-benchmark` against `redis-server`, `ab` against nginx) through the same columns; prints
 * a table with every proxy figure as a ratio to direct, judges the targets of issues 3, 7, 8 and
 * 10, and writes `latest.json` and `latest.svg` (default directory `bench/results/`).
 *
 * The echo upstream, the proxy and the load generator each run as their own process (the proxy
 * with the `deno run` flags of the `start` task, one fresh process per mode). Each latency, rate
 * and bulk workload runs in rounds, each in a fresh load generator process, interleaved across
 * the columns (round 1 of every column, then round 2, ..., each round starting one column later),
 * and the median round counts; the hold workload runs last, on a fresh proxy process per mode.
 * Every echoed byte and every Redis reply is verified; errors and mismatches are counted and
 * printed, and make the exit code 1 (2 for a bad option).
 *
 * ```sh
 * deno task bench                       # the full run, a few minutes
 * deno task bench --short               # a few seconds, tiny sizes (the test suite runs this)
 * deno task bench --workloads connect32,pingpong32 --modes reuse --duration 3s
 * deno task bench --workloads redis     # the Redis-protocol workloads only
 * deno task bench --workloads tls       # the TLS upstream workload only
 * deno task bench --workloads connect1000 --real-clients   # 1000 clients, and the real clients
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
  CONNECT_MANY_CLIENTS,
  countFailures,
  evaluateGoals,
  type GoalResult,
  isRealClientWorkload,
  type Measurement,
  medianRound,
  MEDIUM_WORKLOADS,
  REAL_CLIENT_WORKLOADS,
  REAL_HTTP_WORKLOADS,
  REAL_REDIS_WORKLOADS,
  type RealClientWorkload,
  REDIS_WORKLOADS,
  type Round,
  roundScore,
  type RunResult,
  TLS_PLAIN_COLUMN,
  TLS_WORKLOADS,
  WORKLOAD_IDS,
  type WorkloadId,
  workloadTitles,
} from "./_figures.ts";
import type { ClientTls, Job, RespExchange } from "./_job.ts";
import { runLoadgen } from "./_loadgen.ts";
import { renderGoals, renderSvg, renderTable } from "./_report.ts";
import { respCommand, respInfoStats, respQuery } from "./_resp.ts";
import {
  availablePeers,
  DEFAULT_PROXY_SCRIPT,
  type EchoProcess,
  type HttpUpstream,
  PAGE_BYTES,
  PAGE_PATH,
  type PeerName,
  PEERS,
  type RespUpstream,
  type RespUpstreamChoice,
  type Server,
  startEchoProcess,
  startNginx,
  startPeer,
  startProxy,
  startRelay,
  startRespUpstream,
  startTaskFlags,
} from "./_servers.ts";
import { fileUrl, findOnPath, openFileLimit } from "./_proc.ts";
import { formatNumber, roundOrder } from "./_stats.ts";
import { makeTempCerts, type TempCertsHandle } from "./temp_certs.ts";
import {
  missingTools,
  REAL_CLIENT_SPECS,
  type RealClientTarget,
  runRealClient,
  type ToolResult,
} from "./_tools.ts";

const POOL_MODES = ["off", "warm", "reuse"] as const;
/** The floor reference column: `bench/minimal_relay.ts`, a bare Deno relay. */
const RELAY = "relay";
/**
 * The columns of the Redis workloads: straight to the Redis upstream, and `--pool reuse` with
 * `--protocol raw` (pooling by timing) and with `--protocol redis` (pooling by framing).
 */
const REDIS_COLUMNS = ["direct", "reuse-raw", "reuse-redis"];
/**
 * Why the TLS workloads have no relay or peer column: each dials its upstream in plain TCP (the
 * minimal relay has no TLS, and the peers are not set up for it here).
 */
const TLS_SKIPPED_REASON = "not run over TLS: bench/minimal_relay.ts dials plain TCP only, and " +
  "the peers are not set up for TLS here";
/**
 * The columns the real clients may run through, in order (those of `--modes` that are among
 * them); against Redis `reuse` is `reuse-redis` (`--pool reuse --protocol redis`), as in the
 * redis workloads, and `--protocol raw` (the default) against nginx.
 */
const REAL_COLUMNS = ["direct", "off", "warm", "reuse", "relay", "haproxy"];
/** `connect1000`'s clients with `--short`. */
const SHORT_MANY_CLIENTS = 100;
/** Descriptors the proxy needs besides two per session: its reserve (32) and the pool (100). */
const PROXY_FD_OVERHEAD = 132;
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
  --workloads LIST      comma list of connect1, connect32, connect1000 (${SHORT_MANY_CLIENTS} clients
                        with --short), pingpong1, pingpong32, bulk1, bulk8, hold,
                        redis1, redis32, redisbulk,
                        medium-ka-1k, medium-ka-5k, medium-ka-20k (keep-alive, 8 clients),
                        medium-cpr-1k, medium-cpr-5k, medium-cpr-20k (connect per request,
                        32 clients; 1 KiB, 5.5 KiB, 20 KiB echoes),
                        tls-connect32 (connect per request, 32 clients, to an echo upstream
                        behind TLS on loopback: direct = the client does the handshake, the
                        pool modes run --upstream-tls, reuse-plain = --pool reuse to the
                        same echo's plain port; certificates made for the run),
                        the real clients (see --real-clients) rb-k0-c50, rb-k0-c50-d20k,
                        rb-k0-c1000, rb-k1-c50, ab-k-c50, ab-c50,
                        or the groups connect, pingpong, medium, bulk, redis, tls,
                        redis-benchmark, ab, real, all (default all; with --short, all but
                        the 1k and 20k medium ones and the real clients)
  --real-clients        add the real clients (the group real) to the workloads: against a
                        redis-server of their own (--save '' --appendonly no),
                        redis-benchmark -t set,get -q --csv with -k 0 -c 50 (rb-k0-c50),
                        -k 0 -c 50 -d 20000 (rb-k0-c50-d20k), -k 0 -c 1000 (rb-k0-c1000),
                        -k 1 -c 50 (rb-k1-c50); against nginx serving a ${PAGE_BYTES}-byte
                        page, ab -k -c 50 (ab-k-c50) and ab -c 50 (ab-c50); -n sized for
                        about --duration per run, each run killed after 15 times that
                        (at least 30 s). Columns: direct, off, warm, reuse (reuse-redis:
                        --protocol redis against Redis), relay, haproxy, as --modes allows.
                        A part whose programs are not on the PATH is skipped, with its
                        reason, and its targets are not measured. On by default in a full
                        run, off with --short unless given
  --no-real-clients     leave the real clients out (of all, or of a group that has them)
  --modes LIST          comma list of off, warm, reuse, relay, ${PEERS.join(", ")}
                        (default: the three pool modes, relay (bench/minimal_relay.ts, the
                        floor reference) and the peers found on the PATH);
                        direct is always included. The redis workloads always run direct,
                        reuse-raw and reuse-redis (--pool reuse --protocol raw / redis); the
                        tls workloads the pool modes and reuse-plain (no relay, no peers)
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
                        columns set; a flag that does nothing in a column's mode, such as
                        --pool-size with off, stops that column, as the proxy refuses it), e.g.
                        --proxy-args="--client-timeout 0 --server-timeout 0 --fin-timeout 0"
  --help                this text`;

/** The validated options of one run. */
interface Options {
  durationMs: number;
  /** `connect1000`'s clients: 1000, or {@linkcode SHORT_MANY_CLIENTS} with `--short`. */
  connectManyClients: number;
  rounds: number;
  warmupMs: number;
  workloads: WorkloadId[];
  /** The columns of the echo workloads (the redis ones have {@linkcode REDIS_COLUMNS}). */
  columns: string[];
  bulkMib: number;
  redisUpstream: RespUpstreamChoice;
  holdSessions: number;
  /**
   * Workloads asked for that cannot run here, with the reason (a real client's program not on
   * the PATH, an open-file limit too low); filled in before the run starts.
   */
  skipped: Map<WorkloadId, string>;
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
    boolean: ["short", "help", "real-clients", "no-real-clients"],
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
  const real: WorkloadId[] = [...REAL_CLIENT_WORKLOADS];
  const addReal = flags.booleans.get("real-clients") ?? false;
  const dropReal = flags.booleans.get("no-real-clients") ?? false;
  if (addReal && dropReal) {
    throw new UsageError("--real-clients and --no-real-clients: give one of them");
  }
  const groups: Record<string, WorkloadId[]> = {
    // --short: of the medium workloads only the 5.5 KiB pair, and no real clients, to stay quick
    all: short
      ? WORKLOAD_IDS.filter((w) =>
        (!medium.includes(w) || w.endsWith("-5k") || s("workloads") !== undefined) &&
        !real.includes(w)
      )
      : [...WORKLOAD_IDS],
    connect: ["connect1", "connect32", "connect1000"],
    pingpong: ["pingpong1", "pingpong32"],
    medium,
    bulk: ["bulk1", "bulk8"],
    redis: [...REDIS_WORKLOADS],
    tls: [...TLS_WORKLOADS],
    "redis-benchmark": [...REAL_REDIS_WORKLOADS],
    ab: [...REAL_HTTP_WORKLOADS],
    real,
  };
  const wanted = parseList("workloads", s("workloads") ?? "all", [
    ...WORKLOAD_IDS,
    ...Object.keys(groups),
  ]);
  const chosen = new Set<string>(wanted.flatMap((w) => groups[w] ?? [w]));
  if (addReal) { for (const w of real) chosen.add(w); }
  if (dropReal) { for (const w of real) chosen.delete(w); }
  const workloads = WORKLOAD_IDS.filter((w) => chosen.has(w));
  if (workloads.length === 0) {
    throw new UsageError("--workloads: nothing left to run after --no-real-clients");
  }

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
  const framedColumns = redisWorkloads ||
    workloads.some((w) => (REAL_REDIS_WORKLOADS as readonly string[]).includes(w));
  if (framedColumns && proxyArgs.some((a) => /^--protocol(=|$)/.test(a))) {
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
    connectManyClients: short ? SHORT_MANY_CLIENTS : CONNECT_MANY_CLIENTS,
    rounds,
    warmupMs,
    workloads,
    columns: ["direct", ...modes],
    bulkMib,
    redisUpstream: redisUpstream[0] as RespUpstreamChoice,
    holdSessions,
    skipped: new Map(),
    short,
    outDir,
    proxyScript,
    proxyArgs,
    peersMissing,
  };
}

/** The workloads the load generator runs as timed jobs. */
type LoadgenWorkload = Exclude<WorkloadId, "hold" | RealClientWorkload>;

/** The job of one round of `w` against `target`; `tls` when the client itself speaks TLS. */
function jobFor(w: LoadgenWorkload, target: string, o: Options, tls?: ClientTls): Job {
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
    case "tls-connect32":
      return { kind: "connect", clients: 32, ...timed, ...(tls ? { tls } : {}) };
    case "connect1000":
      return { kind: "connect", clients: o.connectManyClients, ...timed };
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

function describe(r: RunResult, rounds: Round[]): string {
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
    case "tool": {
      const tests = r.tests.length > 1
        ? ` (${r.tests.map((t) => `${t.name} ${formatNumber(t.perSecond)}/s`).join(", ")})`
        : "";
      const mean = r.tests.length === 1 && r.tests[0].meanMs !== null
        ? `, mean ${formatNumber(r.tests[0].meanMs)} ms`
        : "";
      return `${formatNumber(r.perSecond)} requests/s${tests}${mean}; ${failures}`;
    }
  }
}

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/** How long {@link settledCount} waits between reads, and the most it waits in all. */
const SETTLE_STEP_MS = 100;
const SETTLE_MAX_MS = 3_000;

/**
 * Reads `count` until two reads {@link SETTLE_STEP_MS} apart agree (at most {@link SETTLE_MAX_MS}):
 * what a column's round set going, counted when it has finished.
 */
async function settledCount(count: () => Promise<number>): Promise<number> {
  const deadline = performance.now() + SETTLE_MAX_MS;
  let last = await count();
  while (performance.now() < deadline) {
    await new Promise((resolve) => setTimeout(resolve, SETTLE_STEP_MS));
    const now = await count();
    if (now === last) return now;
    last = now;
  }
  return last;
}

/**
 * A set of workloads with their upstream and the columns measured against it: the echo
 * workloads (direct, the pool modes, the peers), the redis ones ({@linkcode REDIS_COLUMNS}), or
 * a real client's ({@linkcode realColumns}).
 */
interface Suite {
  /** The upstream every column reaches, directly or through a proxy. */
  upstream: Server;
  /** Connections the upstream has accepted so far. */
  accepted(): Promise<number>;
  columns: string[];
  /** The suite's workloads that were asked for, in order. */
  workloads: WorkloadId[];
  /** Runs one round of timed workload `w` against `target` (the address of `column`). */
  run(w: Exclude<WorkloadId, "hold">, target: string, column: string): Promise<RunResult>;
  /**
   * The upstream a column's proxy dials, and whether over TLS; default {@linkcode upstream}'s
   * address in plain TCP.
   */
  upstreamOf?(column: string): { address: string; tls?: { caFile: string } };
  /** TLS handshakes the upstream has completed so far; only for a TLS upstream. */
  handshakes?(): Promise<number>;
  /**
   * Warms a column up once, after it started and before its first round, its result dropped
   * (the real clients have no warm-up of their own, and a fresh Deno process is cold).
   */
  warmup?(target: string): Promise<void>;
}

/** The workloads asked for that run against the echo upstream / the Redis / the TLS upstream. */
function echoWorkloads(o: Options): WorkloadId[] {
  return o.workloads.filter((w) =>
    !REDIS_WORKLOADS.includes(w) && !TLS_WORKLOADS.includes(w) && !isRealClientWorkload(w)
  );
}
function tlsWorkloads(o: Options): WorkloadId[] {
  return o.workloads.filter((w) => TLS_WORKLOADS.includes(w));
}
function redisWorkloads(o: Options): WorkloadId[] {
  return o.workloads.filter((w) => REDIS_WORKLOADS.includes(w));
}
/** The real-client workloads asked for that can run here: redis-benchmark's / ab's. */
function realRedisWorkloads(o: Options): RealClientWorkload[] {
  return REAL_REDIS_WORKLOADS.filter((w) => o.workloads.includes(w) && !o.skipped.has(w));
}
function realHttpWorkloads(o: Options): RealClientWorkload[] {
  return REAL_HTTP_WORKLOADS.filter((w) => o.workloads.includes(w) && !o.skipped.has(w));
}

/**
 * The columns of a real client's suite: those of {@linkcode REAL_COLUMNS} the run has (from
 * `--modes` and the peers found), `reuse` as `reuse-redis` against Redis.
 */
function realColumns(o: Options, redis: boolean): string[] {
  return REAL_COLUMNS.filter((c) => o.columns.includes(c)).map((c) =>
    redis && c === "reuse" ? "reuse-redis" : c
  );
}

/**
 * The columns of the TLS workloads: direct, the pool modes of the run, and
 * {@linkcode TLS_PLAIN_COLUMN} when reuse is among them (it is the latency target's baseline).
 */
function tlsColumns(o: Options): string[] {
  const modes = POOL_MODES.filter((m) => o.columns.includes(m));
  return ["direct", ...modes, ...(modes.includes("reuse") ? [TLS_PLAIN_COLUMN] : [])];
}

/** The columns of the run that the TLS workloads leave out (the relay, the peers). */
function tlsSkippedColumns(o: Options): string[] {
  return o.columns.filter((c) => c !== "direct" && !tlsColumns(o).includes(c));
}

/** Runs one round of a load generator workload (the echo and redis suites). */
function loadgenRound(o: Options) {
  return (w: Exclude<WorkloadId, "hold">, target: string): Promise<RunResult> => {
    if (isRealClientWorkload(w)) throw new Error(`${w} is not a load generator workload`);
    return runLoadgen(jobFor(w, target, o));
  };
}

/**
 * The pool mode and protocol flags of a proxy column: a pool mode (`reuse`), or a pool mode and a
 * protocol (`reuse-redis` is `--pool reuse --protocol redis`); undefined for direct and peers.
 */
function proxyColumn(column: string): { mode: string; args: string[] } | undefined {
  if ((POOL_MODES as readonly string[]).includes(column)) return { mode: column, args: [] };
  if (column === TLS_PLAIN_COLUMN) return { mode: "reuse", args: [] };
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
    ) + REDIS_COLUMNS.length * redisWorkloads(o).length +
      tlsColumns(o).length * tlsWorkloads(o).length +
      realColumns(o, true).length * realRedisWorkloads(o).length +
      realColumns(o, false).length * realHttpWorkloads(o).length;
  }

  #progress(column: string, workload: string, text: string): void {
    this.#step++;
    const n = String(this.#steps).length;
    console.log(
      `[${String(this.#step).padStart(n)}/${this.#steps}] ${column.padEnd(11)} ${
        workload.padEnd(14)
      } ${text}`,
    );
  }

  fail(column: string, workload: string | null, err: unknown): void {
    const message = err instanceof Error ? err.message : String(err);
    this.failures.push({ column, workload, message });
    console.log(`FAILED ${column}${workload ? ` ${workload}` : ""}: ${message}`);
  }

  async #start(
    column: string,
    upstream: string,
    upstreamTls?: { caFile: string },
  ): Promise<Server | undefined> {
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
      upstreamTls,
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
   * column, then round 2, ..., each round starting one column later), so a drift of the machine's
   * speed during the run touches every column alike.
   */
  async timed(suite: Suite): Promise<void> {
    const timed = suite.workloads.filter((w): w is Exclude<WorkloadId, "hold"> => w !== "hold");
    if (timed.length === 0) return;
    const targets = new Map<string, { target: string; server?: Server }>();
    try {
      for (const c of suite.columns) {
        let server: Server | undefined;
        try {
          const upstream = suite.upstreamOf?.(c) ?? { address: suite.upstream.address };
          server = await this.#start(c, upstream.address, upstream.tls);
          const target = server?.address ?? upstream.address;
          await suite.warmup?.(target);
          targets.set(c, { target, server });
        } catch (err) {
          this.fail(c, null, err);
          await this.#stop(c, server); // not measured: a warm-up that failed stops it
        }
      }
      for (const w of timed) {
        console.log(
          `${w}: ${this.options.rounds} round(s) through ${[...targets.keys()].join(", ")} ...`,
        );
        const rounds = new Map<string, Round[]>();
        const failed = new Set<string>();
        for (let i = 0; i < this.options.rounds; i++) {
          for (const [c, { target }] of roundOrder([...targets], i)) {
            if (failed.has(c)) continue;
            const proc = targets.get(c)?.server?.proc;
            try {
              const before = await suite.accepted();
              const handshakesBefore = suite.handshakes && await settledCount(suite.handshakes);
              const cpuBefore = await proc?.cpuMicros();
              const result = await suite.run(w, target, c);
              const cpuAfter = await proc?.cpuMicros();
              const upstreamConnections = (await suite.accepted()) - before;
              const round: Round = { result, upstreamConnections };
              // Refills a round or a warm-up started (warm and reuse keep connections ready)
              // finish their handshakes after it: counted there, not in another column's round.
              const handshakesAfter = suite.handshakes && await settledCount(suite.handshakes);
              if (handshakesBefore !== undefined && handshakesAfter !== undefined) {
                round.upstreamHandshakes = handshakesAfter - handshakesBefore;
              }
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
          const handshakes = median.upstreamHandshakes === undefined
            ? ""
            : `; ${formatNumber(median.upstreamHandshakes)} upstream TLS handshakes`;
          this.#progress(
            c,
            w,
            describe(median.result, rs) + handshakes + cpuText(median) + spread,
          );
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

/** The proxy CPU per session, message or request of a round, for the progress line. */
function cpuText(round: Round): string {
  const r = round.result;
  if (round.proxyCpuMicros === undefined) return "";
  const [n, what] = r.kind === "connect"
    ? [r.completed, "session"]
    : r.kind === "pingpong"
    ? [r.completed, "message"]
    : r.kind === "tool"
    ? [r.requests, "request"]
    : [0, ""];
  if (n === 0) return "";
  return `; proxy CPU ${formatNumber(round.proxyCpuMicros / n)} µs per ${what}`;
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
      run: loadgenRound(o),
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

/**
 * The TLS part: makes throwaway certificates (`temp_certs.ts`), starts the echo upstream with a
 * TLS listener besides its plain one, runs the TLS workloads through direct (the load generator
 * does the handshake itself), the pool modes (`--upstream-tls --upstream-ca`) and
 * {@linkcode TLS_PLAIN_COLUMN} (reuse to the plain listener), counting the handshakes the
 * upstream completed in each round; then stops it and removes the certificates. Returns what
 * answered (undefined when it did not start).
 */
async function tlsSuite(run: Run, o: Options): Promise<string | undefined> {
  let certs: TempCertsHandle | undefined;
  let echo: EchoProcess | undefined;
  try {
    certs = await makeTempCerts();
    echo = await startEchoProcess({ certFile: certs.serverCertFile, keyFile: certs.serverKeyFile });
    const upstream = echo;
    const tlsAddress = upstream.tlsAddress;
    if (tlsAddress === undefined) throw new Error(`${upstream.name} has no TLS listener`);
    const caFile = certs.caFile;
    const clientTls: ClientTls = { caCerts: [certs.ca] };
    const what = `bench/echo_server.ts over TLS at ${tlsAddress} (plain at ${upstream.address})`;
    console.log(
      `tls workloads: upstream ${what}, certificates of a throwaway CA in ${certs.dir}; columns ${
        tlsColumns(o).join(", ")
      } (direct = the client does the TLS handshake; ${TLS_PLAIN_COLUMN} = --pool reuse to the ` +
        `plain port)`,
    );
    await run.timed({
      upstream,
      accepted: async () => (await upstream.stats()).accepted,
      handshakes: async () => (await upstream.stats()).handshakes,
      upstreamOf: (c) =>
        c === TLS_PLAIN_COLUMN
          ? { address: upstream.address }
          : { address: tlsAddress, tls: { caFile } },
      columns: tlsColumns(o),
      workloads: tlsWorkloads(o),
      run: (w, target, column) => {
        if (isRealClientWorkload(w)) throw new Error(`${w} is not a load generator workload`);
        return runLoadgen(jobFor(w, target, o, column === "direct" ? clientTls : undefined));
      },
    });
    return what;
  } catch (err) {
    run.fail("direct", tlsWorkloads(o).join(","), err);
    return undefined;
  } finally {
    const code = await echo?.stop();
    if (code !== undefined && code !== 0) {
      run.fail("direct", null, `${echo?.name} exited with code ${code} after SIGTERM`);
    }
    await certs?.remove();
  }
}

/** The real clients' parts: the programs each needs, from which Debian packages. */
const REAL_PARTS = [
  {
    part: "redis-benchmark",
    programs: ["redis-server", "redis-benchmark"],
    packages: "redis-server, redis-tools",
    workloads: REAL_REDIS_WORKLOADS,
  },
  {
    part: "ab",
    programs: ["nginx", "ab"],
    packages: "nginx, apache2-utils",
    workloads: REAL_HTTP_WORKLOADS,
  },
] as const;

/**
 * Decides, before the run, which workloads asked for cannot run here, and why: a real client's
 * part whose programs are not on the PATH, and what the open-file limit does not allow (1000
 * connections through the proxy take 2 descriptors each and the proxy's reserve); lowers
 * `connect1000`'s clients to what the limit allows, saying so. Fills `o.skipped`.
 */
async function planLimits(o: Options): Promise<number | undefined> {
  for (const p of REAL_PARTS) {
    const asked = p.workloads.filter((w) => o.workloads.includes(w));
    if (asked.length === 0) continue;
    const missing = missingTools(p.programs);
    if (missing.length === 0) continue;
    const reason = `${missing.join(" and ")} not on the PATH (Debian packages ${p.packages}; ` +
      `this benchmark never installs them)`;
    for (const w of asked) o.skipped.set(w, reason);
  }
  const limit = await openFileLimit();
  if (limit === undefined) return undefined;
  const fit = Math.floor((limit - PROXY_FD_OVERHEAD) / 2);
  if (o.workloads.includes("connect1000") && fit < o.connectManyClients) {
    console.log(
      `connect1000: the open-file limit is ${limit}; ${o.connectManyClients} clients through ` +
        `the proxy need ${2 * o.connectManyClients + PROXY_FD_OVERHEAD}, so it runs ${
          Math.max(1, fit)
        } clients`,
    );
    o.connectManyClients = Math.max(1, fit);
  }
  const c1000 = REAL_CLIENT_SPECS["rb-k0-c1000"].clients;
  if (o.workloads.includes("rb-k0-c1000") && !o.skipped.has("rb-k0-c1000") && fit < c1000) {
    o.skipped.set(
      "rb-k0-c1000",
      `the open-file limit ${limit} is below the ${
        2 * c1000 + PROXY_FD_OVERHEAD
      } that ${c1000} connections through the proxy need`,
    );
  }
  return limit;
}

/**
 * Adds what the upstream's own counters saw during a real client's run: its error replies as
 * errors, and as mismatches the requests the tool counted that the upstream never served.
 */
function withUpstreamCounts(
  r: ToolResult,
  what: string,
  served: number | undefined,
  errorReplies: number | undefined,
): ToolResult {
  const samples = [...r.errorSamples];
  let { errors, mismatches } = r;
  if (errorReplies !== undefined && errorReplies > 0) {
    errors += errorReplies;
    samples.push(`${what}: ${errorReplies} error replies`);
  }
  if (served !== undefined && served < r.requests) {
    mismatches += r.requests - served;
    samples.push(`${what} served ${served} of the ${r.requests} requests ${r.tool} counted`);
  }
  return { ...r, errors, mismatches, errorSamples: samples };
}

/** The difference of a field of two `INFO stats` answers; undefined where either lacks it. */
function statDelta(
  before: Map<string, number>,
  after: Map<string, number>,
  key: string,
): number | undefined {
  const a = before.get(key);
  const b = after.get(key);
  return a === undefined || b === undefined ? undefined : b - a;
}

/**
 * One run of the first of `workloads` for about the warm-up time, its figures dropped; a
 * failure still counts (it fails the column, as a failed round would).
 */
async function realWarmup(
  o: Options,
  workloads: RealClientWorkload[],
  target: RealClientTarget,
): Promise<void> {
  if (workloads.length === 0) return;
  await runRealClient(REAL_CLIENT_SPECS[workloads[0]], target, o.warmupMs);
}

/**
 * The redis-benchmark part: starts a `redis-server` of its own (no persistence, a temporary
 * directory, a free loopback port), runs the workloads through every column, checks Redis's own
 * counters around each run, and stops it. Returns what answered (undefined when it did not
 * start).
 */
async function realRedisSuite(run: Run, o: Options): Promise<string | undefined> {
  let redis: RespUpstream | undefined;
  try {
    redis = await startRespUpstream("redis-server");
    const upstream = redis;
    const columns = realColumns(o, true);
    console.log(
      `real clients: redis-benchmark against ${upstream.kind} at ${upstream.address}; columns ` +
        `${columns.join(", ")} (reuse-redis = --pool reuse --protocol redis)`,
    );
    await run.timed({
      upstream,
      accepted: () => upstream.accepted(),
      columns,
      workloads: realRedisWorkloads(o),
      warmup: (target) => realWarmup(o, realRedisWorkloads(o), { address: target }),
      run: async (w, target) => {
        if (!isRealClientWorkload(w)) throw new Error(`${w} is not a real-client workload`);
        const before = await respInfoStats(upstream.address);
        const r = await runRealClient(REAL_CLIENT_SPECS[w], { address: target }, o.durationMs);
        const after = await respInfoStats(upstream.address);
        return withUpstreamCounts(
          r,
          upstream.kind,
          statDelta(before, after, "total_commands_processed"),
          statDelta(before, after, "total_error_replies"),
        );
      },
    });
    return upstream.kind;
  } catch (err) {
    run.fail("direct", "redis-benchmark", err);
    return redis?.kind;
  } finally {
    const code = await redis?.stop();
    if (code !== undefined && code !== 0) {
      run.fail("direct", null, `${redis?.kind} exited with code ${code} after SIGTERM`);
    }
  }
}

/**
 * The ab part: starts nginx of its own serving a {@linkcode PAGE_BYTES}-byte page, runs the
 * workloads through every column, checks nginx's request counter around each run, and stops it.
 * Returns what answered (undefined when it did not start).
 */
async function realHttpSuite(run: Run, o: Options): Promise<string | undefined> {
  let nginx: HttpUpstream | undefined;
  try {
    nginx = await startNginx();
    const upstream = nginx;
    const columns = realColumns(o, false);
    console.log(
      `real clients: ab against ${upstream.kind} at ${upstream.address} (a ${PAGE_BYTES}-byte ` +
        `page); columns ${columns.join(", ")}`,
    );
    await run.timed({
      upstream,
      accepted: () => upstream.accepted(),
      columns,
      workloads: realHttpWorkloads(o),
      warmup: (target) => realWarmup(o, realHttpWorkloads(o), { address: target, path: PAGE_PATH }),
      run: async (w, target) => {
        if (!isRealClientWorkload(w)) throw new Error(`${w} is not a real-client workload`);
        const before = await upstream.requests();
        const r = await runRealClient(
          REAL_CLIENT_SPECS[w],
          { address: target, path: PAGE_PATH },
          o.durationMs,
        );
        const after = await upstream.requests();
        return withUpstreamCounts(r, upstream.kind, after - before, undefined);
      },
    });
    return upstream.kind;
  } catch (err) {
    run.fail("direct", "ab", err);
    return nginx?.kind;
  } finally {
    const code = await nginx?.stop();
    if (code !== undefined && code !== 0) {
      run.fail("direct", null, `${nginx?.kind} exited with code ${code} after SIGTERM`);
    }
  }
}

/** Why a goal's workload or column was not measured: skipped workloads, missing peers. */
function notMeasuredReasons(o: Options): Record<string, string> {
  const reasons: Record<string, string> = {};
  for (const [w, why] of o.skipped) reasons[w] = `skipped: ${why}`;
  for (const p of o.peersMissing) reasons[p] = "not on the PATH";
  if (!o.columns.includes("reuse")) reasons[TLS_PLAIN_COLUMN] = "runs only with reuse in --modes";
  for (const w of WORKLOAD_IDS) {
    if (o.workloads.includes(w) || w in reasons) continue;
    reasons[w] = o.short && isRealClientWorkload(w)
      ? "real clients are off with --short; add --real-clients"
      : "not in --workloads";
  }
  return reasons;
}

async function main(): Promise<number> {
  const parsed = optionsOrExitCode("bench", USAGE, Deno.args, parseOptions);
  if (typeof parsed === "number") return parsed;
  const o: Options = parsed;
  const startedAt = new Date();
  const fileLimit = await planLimits(o);
  const titles = workloadTitles(o.connectManyClients);
  const withEcho = echoWorkloads(o).length > 0;
  const withRedis = redisWorkloads(o).length > 0;
  const withTls = tlsWorkloads(o).length > 0;
  const withRealRedis = realRedisWorkloads(o).length > 0;
  const withRealHttp = realHttpWorkloads(o).length > 0;
  console.log(
    `tcp-pool-proxy benchmark: ${
      [
        ...(withEcho ? [o.columns.join(", ")] : []),
        ...(withRedis ? [`redis workloads ${REDIS_COLUMNS.join(", ")}`] : []),
        ...(withTls ? [`tls workloads ${tlsColumns(o).join(", ")}`] : []),
        ...(withRealRedis ? [`redis-benchmark ${realColumns(o, true).join(", ")}`] : []),
        ...(withRealHttp ? [`ab ${realColumns(o, false).join(", ")}`] : []),
      ].join("; ")
    }; workloads ${o.workloads.filter((w) => !o.skipped.has(w)).join(", ")}; ` +
      `${
        o.rounds === 1 ? "1 round" : `median of ${o.rounds} rounds`
      } of ${o.durationMs} ms (+${o.warmupMs} ms warm-up) per timed workload, bulk ${o.bulkMib} MiB, ` +
      `hold ${o.holdSessions} sessions` +
      (o.workloads.includes("connect1000") ? `, connect1000 ${o.connectManyClients} clients` : ""),
  );
  const withProxy = withRedis || withTls || withRealRedis || withRealHttp ||
    o.columns.some((c) => (POOL_MODES as readonly string[]).includes(c));
  if (withProxy) {
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
  const tlsSkipped = withTls ? tlsSkippedColumns(o) : [];
  const tlsSkippedLine = tlsSkipped.length > 0
    ? `tls workloads: no ${tlsSkipped.join(", ")} column: ${TLS_SKIPPED_REASON}`
    : undefined;
  if (tlsSkippedLine) console.log(tlsSkippedLine);
  const skippedLines = REAL_PARTS.flatMap((p) => {
    const ws = p.workloads.filter((w) => o.skipped.has(w));
    const reasons = [...new Set(ws.map((w) => o.skipped.get(w)))];
    return reasons.map((why) =>
      `real clients, ${p.part}: SKIPPED ${
        ws.filter((w) => o.skipped.get(w) === why).join(", ")
      }: ${why}`
    );
  });
  for (const line of skippedLines) console.log(line);

  const run = new Run(o);
  if (withEcho) {
    const echo = await startEchoProcess();
    const suite: Suite = {
      upstream: echo,
      accepted: async () => (await echo.stats()).accepted,
      columns: o.columns,
      workloads: echoWorkloads(o),
      run: loadgenRound(o),
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
  const tlsUpstream = withTls ? await tlsSuite(run, o) : undefined;
  const realRedisUpstream = withRealRedis ? await realRedisSuite(run, o) : undefined;
  const realHttpUpstream = withRealHttp ? await realHttpSuite(run, o) : undefined;

  const inRedis = (m: Measurement) => REDIS_WORKLOADS.includes(m.workload);
  const inTls = (m: Measurement) => TLS_WORKLOADS.includes(m.workload);
  const inRealRedis = (m: Measurement) =>
    (REAL_REDIS_WORKLOADS as readonly string[]).includes(m.workload);
  const inRealHttp = (m: Measurement) =>
    (REAL_HTTP_WORKLOADS as readonly string[]).includes(m.workload);
  const echoFigures = computeFigures(
    run.measurements.filter((m) => !inRedis(m) && !inTls(m) && !isRealClientWorkload(m.workload)),
    o.columns,
    titles,
  );
  const redisFigures = computeFigures(run.measurements.filter(inRedis), REDIS_COLUMNS, titles);
  const tlsFigures = computeFigures(run.measurements.filter(inTls), tlsColumns(o), titles);
  const realRedisFigures = computeFigures(
    run.measurements.filter(inRealRedis),
    realColumns(o, true),
    titles,
  );
  const realHttpFigures = computeFigures(
    run.measurements.filter(inRealHttp),
    realColumns(o, false),
    titles,
  );
  const figures = [
    ...echoFigures,
    ...redisFigures,
    ...tlsFigures,
    ...realRedisFigures,
    ...realHttpFigures,
  ];
  const allColumns = [
    ...new Set([
      ...o.columns,
      ...(withRedis ? REDIS_COLUMNS : []),
      ...(withTls ? tlsColumns(o) : []),
      ...(withRealRedis ? realColumns(o, true) : []),
    ]),
  ];
  const goals = evaluateGoals(figures, {
    titles,
    holdSessions: o.holdSessions,
    reasons: notMeasuredReasons(o),
  });
  const totals = countFailures(run.measurements);
  const finishedAt = new Date();

  if (echoFigures.length > 0) {
    console.log("");
    console.log(renderTable(echoFigures, goals, o.columns, "target"));
  }
  if (redisFigures.length > 0) {
    console.log("");
    console.log(
      `Redis protocol (upstream ${redisUpstream}; reuse-raw / reuse-redis = --pool reuse ` +
        `--protocol raw / redis):`,
    );
    console.log(renderTable(redisFigures, goals, REDIS_COLUMNS, "target"));
  }
  if (tlsFigures.length > 0) {
    console.log("");
    console.log(
      `TLS upstream (loopback; ${tlsUpstream ?? "did not start"}): direct = the client does the ` +
        `TLS handshake itself; off, warm, reuse = --upstream-tls; ${TLS_PLAIN_COLUMN} = --pool ` +
        `reuse to the same echo's plain port; upstream TLS handshakes as the upstream counted them:`,
    );
    console.log(renderTable(tlsFigures, goals, tlsColumns(o), "target (issue 10)"));
    if (tlsSkippedLine) console.log(tlsSkippedLine);
  }
  if (realRedisFigures.length > 0) {
    console.log("");
    console.log(
      `Real clients: redis-benchmark -t set,get against ${realRedisUpstream} (reuse-redis = ` +
        `--pool reuse --protocol redis):`,
    );
    console.log(renderTable(realRedisFigures, goals, realColumns(o, true), "target (issue 8)"));
  }
  if (realHttpFigures.length > 0) {
    console.log("");
    console.log(`Real clients: ab against ${realHttpUpstream} serving a ${PAGE_BYTES}-byte page:`);
    console.log(renderTable(realHttpFigures, goals, realColumns(o, false), "target (issue 8)"));
  }
  if (skippedLines.length > 0) {
    console.log("");
    for (const line of skippedLines) console.log(line);
  }
  const goalsOf = (issues: number[]) => goals.filter((g: GoalResult) => issues.includes(g.issue));
  console.log("");
  console.log(
    "Targets (issue 3, and issue 7 for the Redis workloads; reuse mode unless said; " +
      "ratio to direct unless said; in the same run):",
  );
  console.log(renderGoals(goalsOf([3, 7])));
  console.log("");
  console.log(
    "Targets of issue 8 (ratios between two columns of the same run; relay = " +
      "bench/minimal_relay.ts; a target whose columns were not measured is not measured, " +
      "never met):",
  );
  console.log(renderGoals(goalsOf([8])));
  console.log("");
  console.log(
    `Targets of issue 10 (a TLS upstream; ratios between two columns of the same run; ` +
      `${TLS_PLAIN_COLUMN} = --pool reuse to the same echo upstream in plain TCP):`,
  );
  console.log(renderGoals(goalsOf([10])));
  console.log("");
  console.log(
    `Ratios are proxy / direct (direct: to the echo upstream, or to the Redis upstream for ` +
      `the Redis workloads, or a client doing TLS itself for the TLS workload, or to ` +
      `redis-server / nginx for the real clients); each timed ` +
      `figure is the median of ${o.rounds} round(s).` +
      (o.workloads.includes("hold")
        ? ` Memory per session = (proxy VmRSS with ${o.holdSessions} sessions held - VmRSS ` +
          `before) / ${o.holdSessions}.`
        : "") +
      ` Proxy CPU per session / message / request = the proxy process's utime + stime ` +
      `(/proc/PID/stat, ticks of 10 ms) over the whole round / the sessions, messages or ` +
      `requests of the round, warm-up included.`,
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
    `errors: ${totals.errors}, mismatches: ${totals.mismatches}, failures: ${run.failures.length}` +
      (o.skipped.size > 0 ? `, skipped: ${o.skipped.size} workload(s)` : ""),
  );

  const skipped = [...o.skipped].map(([workload, reason]) => ({ workload, reason }));
  const realPart = (
    part: string,
    workloads: readonly RealClientWorkload[],
    redis: boolean,
    upstream: string | undefined,
  ) => {
    const asked = workloads.filter((w) => o.workloads.includes(w));
    const ran = asked.filter((w) => !o.skipped.has(w));
    return {
      upstream: ran.length > 0 ? upstream ?? "(did not start)" : "(not started)",
      client: part,
      columns: realColumns(o, redis),
      workloads: ran,
      skipped: skipped.filter((x) => (asked as string[]).includes(x.workload)),
    };
  };
  const report = {
    benchmark: "tcp-pool-proxy",
    version: 2,
    startedAt: startedAt.toISOString(),
    finishedAt: finishedAt.toISOString(),
    seconds: (finishedAt.getTime() - startedAt.getTime()) / 1000,
    machine: { ...machine(), openFileLimit: fileLimit ?? null },
    options: {
      durationMs: o.durationMs,
      rounds: o.rounds,
      warmupMs: o.warmupMs,
      workloads: o.workloads,
      bulkMib: o.bulkMib,
      holdSessions: o.holdSessions,
      connect1000Clients: o.connectManyClients,
      realClients: o.workloads.some(isRealClientWorkload),
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
      ...(withTls
        ? [{
          upstream: tlsUpstream ?? "(did not start)",
          columns: tlsColumns(o),
          workloads: tlsWorkloads(o),
          columnsNotRun: tlsSkipped.map((column) => ({ column, reason: TLS_SKIPPED_REASON })),
        }]
        : []),
      ...REAL_PARTS
        .filter((p) => p.workloads.some((w) => o.workloads.includes(w)))
        .map((p) =>
          realPart(
            p.part,
            p.workloads,
            p.part === "redis-benchmark",
            p.part === "redis-benchmark" ? realRedisUpstream : realHttpUpstream,
          )
        ),
    ],
    // workloads asked for that did not run here, and why: never counted as passed
    skipped,
    peersMissing: o.peersMissing,
    workloadTitles: titles,
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
    (withRedis ? `; Redis upstream ${redisUpstream}` : "") +
    (withRealRedis || withRealHttp
      ? `; real clients against ${
        [realRedisUpstream, realHttpUpstream].filter((x) => x).join(", ")
      }`
      : "") +
    (skipped.length > 0 ? `; skipped: ${skipped.map((x) => x.workload).join(", ")}` : "");
  await Deno.writeTextFile(svgPath, renderSvg(figures, goals, allColumns, subtitle));
  console.log(`wrote ${jsonPath} and ${svgPath} (${report.seconds.toFixed(0)} s)`);

  return totals.errors > 0 || totals.mismatches > 0 || run.failures.length > 0 ? 1 : 0;
}

Deno.exit(await main());
