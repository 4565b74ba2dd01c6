/**
 * What the benchmark measures and what it must reach: the workloads (the load generator's, and
 * the real clients' `redis-benchmark` and `ab` runs), the figures taken from each measurement
 * (with their ratio to a direct connection), and the targets of issue 3, of issue 7 (the
 * Redis-protocol workloads: `--protocol redis` against `--protocol raw`), of issue 8 (against
 * the minimal relay and HAProxy, warm against off, memory per held session) and of issue 10 (a
 * TLS upstream: reuse against off, and against reuse to a plain upstream).
 *
 * ```ts
 * import { computeFigures, evaluateGoals } from "./_figures.ts";
 * const rows = computeFigures([], ["direct", "reuse"]);
 * const goals = evaluateGoals(rows);
 * ```
 *
 * @module
 */

import type { JobResult } from "./_job.ts";
import type { ToolResult } from "./_tools.ts";

/** The workloads, by the names `--workloads` accepts. */
export const WORKLOAD_IDS = [
  "connect1",
  "connect32",
  "connect1000",
  "pingpong1",
  "pingpong32",
  "medium-ka-1k",
  "medium-ka-5k",
  "medium-ka-20k",
  "medium-cpr-1k",
  "medium-cpr-5k",
  "medium-cpr-20k",
  "bulk1",
  "bulk8",
  "hold",
  "redis1",
  "redis32",
  "redisbulk",
  "tls-connect32",
  "rb-k0-c50",
  "rb-k0-c50-d20k",
  "rb-k0-c1000",
  "rb-k1-c50",
  "ab-k-c50",
  "ab-c50",
] as const;

/** The workloads against the Redis-protocol upstream (the rest run against the echo upstream). */
export const REDIS_WORKLOADS: readonly WorkloadId[] = ["redis1", "redis32", "redisbulk"];

/** One workload name. */
export type WorkloadId = typeof WORKLOAD_IDS[number];

/**
 * The workloads against the TLS echo upstream (`echo_server.ts --tls-listen`): connect per
 * request from 32 clients, the proxy dialling the upstream with `--upstream-tls`; direct, the
 * client does the TLS handshake itself.
 */
export const TLS_WORKLOADS: readonly WorkloadId[] = ["tls-connect32"];

/**
 * The column of the TLS workloads that is `--pool reuse` to the same echo process's plain TCP
 * listener: the baseline of the TLS latency target.
 */
export const TLS_PLAIN_COLUMN = "reuse-plain";

/** The targets of issue 10, over a TLS upstream (the demo judges them too). */
export const TLS_TARGETS = {
  /** `reuse` sessions per second at least this times `off`'s. */
  reuseVsOffRate: 3,
  /** `reuse` median session latency at most this times that of `reuse` to a plain upstream. */
  reuseVsPlainLatency: 1.5,
} as const;

/**
 * The real-client workloads: `redis-benchmark -t set,get` against `redis-server` (`rb-`: `-k 0`
 * is a connection per request, `-k 1` keep-alive; `-c` clients; `-d` value bytes) and ApacheBench
 * against nginx serving a 5.5 KiB page (`ab-k`: keep-alive).
 */
export const REAL_CLIENT_WORKLOADS = [
  "rb-k0-c50",
  "rb-k0-c50-d20k",
  "rb-k0-c1000",
  "rb-k1-c50",
  "ab-k-c50",
  "ab-c50",
] as const satisfies readonly WorkloadId[];

/** One real-client workload name. */
export type RealClientWorkload = typeof REAL_CLIENT_WORKLOADS[number];

/** Whether `w` is run by a real client (redis-benchmark, ab) rather than the load generator. */
export function isRealClientWorkload(w: WorkloadId): w is RealClientWorkload {
  return (REAL_CLIENT_WORKLOADS as readonly string[]).includes(w);
}

/** The real-client workloads against `redis-server`, driven by `redis-benchmark`. */
export const REAL_REDIS_WORKLOADS: readonly RealClientWorkload[] = [
  "rb-k0-c50",
  "rb-k0-c50-d20k",
  "rb-k0-c1000",
  "rb-k1-c50",
];

/** The real-client workloads against nginx, driven by `ab`. */
export const REAL_HTTP_WORKLOADS: readonly RealClientWorkload[] = ["ab-k-c50", "ab-c50"];

/** Concurrent clients of `connect1000` in a full run (`--short` runs fewer). */
export const CONNECT_MANY_CLIENTS = 1000;

/**
 * The connection-per-request workloads that run with both `off` and `warm` columns, on each of
 * which issue 8 asks `warm` to reach at least `off`'s rate.
 */
export const CPR_WORKLOADS: readonly WorkloadId[] = [
  "connect1",
  "connect32",
  "connect1000",
  "medium-cpr-1k",
  "medium-cpr-5k",
  "medium-cpr-20k",
  "rb-k0-c50",
  "rb-k0-c50-d20k",
  "rb-k0-c1000",
  "ab-c50",
];

/**
 * The medium-answer workloads (issue 8): echo messages of 1 KiB, 5.5 KiB and 20 KiB, over
 * keep-alive connections (`ka`, 8 clients) and connection-per-request (`cpr`, 32 clients).
 */
export const MEDIUM_WORKLOADS: Record<string, { keepAlive: boolean; messageBytes: number }> = {
  "medium-ka-1k": { keepAlive: true, messageBytes: 1024 },
  "medium-ka-5k": { keepAlive: true, messageBytes: 5632 },
  "medium-ka-20k": { keepAlive: true, messageBytes: 20 * 1024 },
  "medium-cpr-1k": { keepAlive: false, messageBytes: 1024 },
  "medium-cpr-5k": { keepAlive: false, messageBytes: 5632 },
  "medium-cpr-20k": { keepAlive: false, messageBytes: 20 * 1024 },
};

/** Human titles of the workloads, for tables and the chart. */
export const WORKLOAD_TITLES: Record<WorkloadId, string> = {
  connect1: "connect-per-request, 1 client",
  connect32: "connect-per-request, 32 clients",
  connect1000: `connect-per-request, ${CONNECT_MANY_CLIENTS} clients`,
  pingpong1: "persistent ping-pong, 1 client",
  pingpong32: "persistent ping-pong, 32 clients",
  "medium-ka-1k": "keep-alive 1 KiB answers, 8 clients",
  "medium-ka-5k": "keep-alive 5.5 KiB answers, 8 clients",
  "medium-ka-20k": "keep-alive 20 KiB answers, 8 clients",
  "medium-cpr-1k": "connect-per-request 1 KiB answers, 32 clients",
  "medium-cpr-5k": "connect-per-request 5.5 KiB answers, 32 clients",
  "medium-cpr-20k": "connect-per-request 20 KiB answers, 32 clients",
  bulk1: "bulk echo, 1 stream",
  bulk8: "bulk echo, 8 streams",
  hold: "open sessions held at once",
  redis1: "Redis connect-per-request, 1 client",
  redis32: "Redis connect-per-request, 32 clients",
  redisbulk: "Redis SET of 1 MiB values, 1 session",
  "tls-connect32": "TLS upstream, connect-per-request, 32 clients",
  "rb-k0-c50": "redis-benchmark -k 0 -c 50 (connection per request)",
  "rb-k0-c50-d20k": "redis-benchmark -k 0 -c 50 -d 20000 (20 KB values)",
  "rb-k0-c1000": "redis-benchmark -k 0 -c 1000 (connection per request)",
  "rb-k1-c50": "redis-benchmark -k 1 -c 50 (keep-alive)",
  "ab-k-c50": "ab -k -c 50, nginx 5.5 KiB page (keep-alive)",
  "ab-c50": "ab -c 50, nginx 5.5 KiB page (connection per request)",
};

/**
 * The titles for a run whose `connect1000` workload ran `connectManyClients` clients (fewer with
 * `--short`), so that no table names a client count that did not run.
 */
export function workloadTitles(connectManyClients: number): Record<WorkloadId, string> {
  return {
    ...WORKLOAD_TITLES,
    connect1000: `connect-per-request, ${connectManyClients} clients`,
  };
}

/** What one round of a workload returns: the load generator's result, or a real client's. */
export type RunResult = JobResult | ToolResult;

/** Resident memory of the proxy process around the hold workload. */
export interface RssDelta {
  /** VmRSS before the sessions were opened. */
  beforeBytes: number;
  /** VmRSS with every session open. */
  afterBytes: number;
  /** (after - before) / sessions held. */
  bytesPerSession: number;
}

/** One round of a workload: one load generator process. */
export interface Round {
  result: RunResult;
  /** Connections the echo upstream accepted while the round ran (its warm-up included). */
  upstreamConnections: number;
  /**
   * TLS handshakes the upstream completed while the round ran (its warm-up included), as it
   * counted them; only for the TLS workloads.
   */
  upstreamHandshakes?: number;
  /**
   * CPU time the proxy process used while the round ran (user + system, reaped children
   * included, from /proc/PID/stat), in microseconds; absent for direct and where /proc is not.
   */
  proxyCpuMicros?: number;
}

/**
 * One workload run against one column (direct, a pool mode, or a peer proxy). A workload runs in
 * one or more rounds, each in a fresh load generator process (so the operating system places the
 * processes on CPUs anew); the figures are those of the median round, ranked by rate or
 * throughput (robust against one lucky or unlucky round on a shared machine).
 */
export interface Measurement {
  workload: WorkloadId;
  /**
   * `direct`, `off`, `warm`, `reuse`, `relay`, `haproxy` or `socat`; for the Redis workloads
   * `direct`, `reuse-raw` or `reuse-redis` (`--pool reuse --protocol raw` or `redis`), which is
   * also the reuse column of the redis-benchmark workloads; for the TLS workloads `direct`,
   * `off`, `warm`, `reuse` and {@linkcode TLS_PLAIN_COLUMN}.
   */
  column: string;
  /** The median round's result. */
  result: RunResult;
  /** The median round's upstream connections. */
  upstreamConnections: number;
  /** The median round's upstream TLS handshakes (the TLS workloads only). */
  upstreamHandshakes?: number;
  /** The median round's proxy CPU time, in microseconds (see {@linkcode Round}). */
  proxyCpuMicros?: number;
  /** Every round, in the order run; errors and mismatches count from all of them. */
  rounds: Round[];
  /** Only for the hold workload through a proxy. */
  rss?: RssDelta;
}

/** The score by which rounds are ranked: rate, throughput, or sessions held. */
export function roundScore(r: RunResult): number {
  switch (r.kind) {
    case "connect":
    case "pingpong":
    case "tool":
      return r.perSecond;
    case "bulk":
      return r.mbPerSecond;
    case "hold":
      return r.opened;
  }
}

/** The median of `rounds` by {@linkcode roundScore} (the lower middle one for an even count). */
export function medianRound(rounds: Round[]): Round {
  if (rounds.length === 0) throw new RangeError("medianRound needs at least one round");
  const ranked = [...rounds].sort((a, b) => roundScore(a.result) - roundScore(b.result));
  return ranked[Math.floor((ranked.length - 1) / 2)];
}

/** Errors and mismatches over every round of every measurement. */
export function countFailures(measurements: Measurement[]): { errors: number; mismatches: number } {
  let errors = 0, mismatches = 0;
  for (const m of measurements) {
    for (const r of m.rounds) {
      errors += r.result.errors;
      mismatches += r.result.mismatches;
    }
  }
  return { errors, mismatches };
}

/** Whether a smaller or a larger value of a figure is better. */
export type Better = "lower" | "higher";

interface FigureSpec {
  workload: WorkloadId;
  key: string;
  label: string;
  unit: string;
  better: Better;
  /** False when a ratio to direct means nothing (memory, connection counts). */
  ratio: boolean;
  value(m: Measurement): number | undefined;
}

function latency(m: Measurement, which: "medianMs" | "p99Ms"): number | undefined {
  const r = m.result;
  return r.kind === "connect" || r.kind === "pingpong" ? r.latency[which] : undefined;
}

function rate(m: Measurement): number | undefined {
  const r = m.result;
  return r.kind === "connect" || r.kind === "pingpong" || r.kind === "tool"
    ? r.perSecond
    : undefined;
}

/** A figure of one test of a real client's run (`SET`, `GET`; ab's only test when `name` is ""). */
function toolTest(
  m: Measurement,
  name: string,
  which: "perSecond" | "meanMs" | "medianMs" | "p99Ms",
): number | undefined {
  const r = m.result;
  if (r.kind !== "tool") return undefined;
  const t = name === "" ? r.tests[0] : r.tests.find((x) => x.name === name);
  return t?.[which] ?? undefined;
}

function ops(r: RunResult): number | undefined {
  switch (r.kind) {
    case "connect":
    case "pingpong":
      return r.completed;
    case "tool":
      return r.requests;
    default:
      return undefined;
  }
}

/**
 * Proxy CPU microseconds per completed session, message or request of the round (warm-up
 * included on both sides of the division, as the CPU is read around the whole load generator or
 * tool run).
 */
function cpuPerOp(m: Measurement): number | undefined {
  const n = ops(m.result);
  if (m.proxyCpuMicros === undefined || n === undefined) return undefined;
  return n > 0 ? m.proxyCpuMicros / n : undefined;
}

function specsFor(workload: WorkloadId): FigureSpec[] {
  const w = workload;
  const cpu = (what: string) =>
    spec(w, "cpuUsPerOp", `proxy CPU per ${what}`, "µs", "lower", false, cpuPerOp);
  const upstreamConnections = spec(
    w,
    "upstreamConnections",
    "upstream connections opened",
    "",
    "lower",
    false,
    (m) => m.upstreamConnections,
  );
  // Every connection-per-request workload: latency, rate and how many upstream connections.
  const sessionFigures = [
    spec(
      w,
      "medianMs",
      "median session latency",
      "ms",
      "lower",
      true,
      (m) => latency(m, "medianMs"),
    ),
    spec(w, "p99Ms", "p99 session latency", "ms", "lower", true, (m) => latency(m, "p99Ms")),
    spec(w, "perSecond", "sessions per second", "1/s", "higher", true, rate),
    upstreamConnections,
  ];
  switch (workload) {
    case "connect1":
    case "connect32":
    case "connect1000":
    case "medium-cpr-1k":
    case "medium-cpr-5k":
    case "medium-cpr-20k":
    case "redis1":
    case "redis32":
      return [
        ...sessionFigures,
        cpu("session"),
      ];
    case "tls-connect32":
      return [
        ...sessionFigures,
        spec(
          w,
          "upstreamHandshakes",
          "upstream TLS handshakes",
          "",
          "lower",
          false,
          (m) => m.upstreamHandshakes,
        ),
        cpu("session"),
      ];
    case "rb-k0-c50":
    case "rb-k0-c50-d20k":
    case "rb-k0-c1000":
    case "rb-k1-c50":
      return [
        spec(w, "perSecond", "requests per second (SET and GET)", "1/s", "higher", true, rate),
        spec(
          w,
          "setPerSecond",
          "SET requests per second",
          "1/s",
          "higher",
          true,
          (m) => toolTest(m, "SET", "perSecond"),
        ),
        spec(
          w,
          "getPerSecond",
          "GET requests per second",
          "1/s",
          "higher",
          true,
          (m) => toolTest(m, "GET", "perSecond"),
        ),
        spec(
          w,
          "medianMs",
          "median GET latency",
          "ms",
          "lower",
          true,
          (m) => toolTest(m, "GET", "medianMs"),
        ),
        spec(
          w,
          "p99Ms",
          "p99 GET latency",
          "ms",
          "lower",
          true,
          (m) => toolTest(m, "GET", "p99Ms"),
        ),
        upstreamConnections,
        cpu("request"),
      ];
    case "ab-k-c50":
    case "ab-c50":
      return [
        spec(w, "perSecond", "requests per second", "1/s", "higher", true, rate),
        spec(
          w,
          "meanMs",
          "mean request latency",
          "ms",
          "lower",
          true,
          (m) => toolTest(m, "", "meanMs"),
        ),
        upstreamConnections,
        cpu("request"),
      ];
    case "pingpong1":
    case "pingpong32":
    case "medium-ka-1k":
    case "medium-ka-5k":
    case "medium-ka-20k":
      return [
        spec(
          w,
          "medianMs",
          "median round trip",
          "ms",
          "lower",
          true,
          (m) => latency(m, "medianMs"),
        ),
        spec(w, "p99Ms", "p99 round trip", "ms", "lower", true, (m) => latency(m, "p99Ms")),
        spec(w, "perSecond", "messages per second", "1/s", "higher", true, rate),
        cpu("message"),
      ];
    case "bulk1":
    case "bulk8":
    case "redisbulk":
      return [
        spec(
          w,
          "mbPerSecond",
          "throughput",
          "MB/s",
          "higher",
          true,
          (m) => m.result.kind === "bulk" ? m.result.mbPerSecond : undefined,
        ),
      ];
    case "hold":
      return [
        spec(
          w,
          "kibPerSession",
          "resident memory per session",
          "KiB",
          "lower",
          false,
          (m) => m.rss ? m.rss.bytesPerSession / 1024 : undefined,
        ),
      ];
  }
}

function spec(
  workload: WorkloadId,
  key: string,
  label: string,
  unit: string,
  better: Better,
  ratio: boolean,
  value: (m: Measurement) => number | undefined,
): FigureSpec {
  return { workload, key, label, unit, better, ratio, value };
}

/** One row of the report: one figure of one workload, across every column. */
export interface FigureRow {
  workload: WorkloadId;
  /** The workload's title in this run (see {@linkcode workloadTitles}). */
  title: string;
  /** Figure key, e.g. `medianMs`, `perSecond`, `mbPerSecond`, `kibPerSession`. */
  key: string;
  label: string;
  unit: string;
  better: Better;
  /** Value per column; null where the column was not measured. */
  values: Record<string, number | null>;
  /** Ratio to direct per non-direct column; null where it does not apply. */
  ratios: Record<string, number | null>;
}

/**
 * Builds the report rows from the measurements, for the given columns (direct first); `titles`
 * names the workloads (default {@linkcode WORKLOAD_TITLES}).
 */
export function computeFigures(
  measurements: Measurement[],
  columns: string[],
  titles: Record<WorkloadId, string> = WORKLOAD_TITLES,
): FigureRow[] {
  const workloads = WORKLOAD_IDS.filter((w) => measurements.some((m) => m.workload === w));
  const rows: FigureRow[] = [];
  for (const w of workloads) {
    for (const s of specsFor(w)) {
      const values: Record<string, number | null> = {};
      const ratios: Record<string, number | null> = {};
      for (const c of columns) {
        const m = measurements.find((x) => x.workload === w && x.column === c);
        values[c] = m ? s.value(m) ?? null : null;
      }
      const direct = values["direct"];
      for (const c of columns) {
        if (c === "direct") continue;
        const v = values[c];
        ratios[c] = s.ratio && v !== null && direct !== null && direct !== undefined && direct > 0
          ? v / direct
          : null;
      }
      rows.push({
        workload: w,
        title: titles[w],
        key: s.key,
        label: s.label,
        unit: s.unit,
        better: s.better,
        values,
        ratios,
      });
    }
  }
  return rows;
}

/**
 * The issue a target comes from: 3 (the first targets), 7 (framed reuse), 8 (real clients), 10
 * (a TLS upstream).
 */
export type GoalIssue = 3 | 7 | 8 | 10;

/** A target of issue 3, 7, 8 or 10 and how it came out. */
export interface GoalResult {
  /** The issue that sets the target. */
  issue: GoalIssue;
  /** The workload as the issue names it. */
  workload: string;
  /** The figure as the issue names it. */
  figure: string;
  /** The target as the issue states it. */
  target: string;
  /** The mode whose figure is judged, e.g. `reuse`, `reuse vs off`. */
  mode: string;
  /** The column whose figure is judged. */
  column: string;
  /** What the measured ratio is to: `direct`, or another column (`off`, `relay`, `haproxy`). */
  baseline: string;
  /** Which report row it reads. */
  row: { workload: WorkloadId; key: string };
  /** `max`: measured must be at most `threshold`; `min`: at least. */
  bound: "max" | "min";
  threshold: number;
  /** The measured ratio (or KiB for memory); null when not measured. */
  measured: number | null;
  /** Unit of `measured`: `x` for a ratio, `KiB`. */
  unit: string;
  /** null when not measured: never met then. */
  met: boolean | null;
  /** When not measured, why (a workload not run or skipped, a column not run); else absent. */
  note?: string;
}

interface GoalSpec {
  issue: GoalIssue;
  /** The workload as the issue names it; default the row's workload title. */
  workload?: string;
  figure: string;
  target: string;
  column: string;
  baseline: string;
  row: { workload: WorkloadId; key: string };
  bound: "max" | "min";
  threshold: number;
  unit: string;
  measure(rows: FigureRow[]): number | null;
}

function rowOf(rows: FigureRow[], workload: WorkloadId, key: string): FigureRow | undefined {
  return rows.find((r) => r.workload === workload && r.key === key);
}

function ratioGoal(
  workload: WorkloadId,
  key: string,
  figure: string,
  bound: "max" | "min",
  threshold: number,
): GoalSpec {
  return {
    issue: 3,
    figure,
    target: `${bound === "max" ? "at most" : "at least"} ${threshold}x direct`,
    row: { workload, key },
    column: "reuse",
    baseline: "direct",
    bound,
    threshold,
    unit: "x",
    measure: (rows) => rowOf(rows, workload, key)?.ratios["reuse"] ?? null,
  };
}

/** A target of `column`'s figure as a ratio to `baseline`'s (both measured in the same run). */
function columnGoal(
  issue: GoalIssue,
  workload: WorkloadId,
  key: string,
  figure: string,
  column: string,
  baseline: string,
  bound: "max" | "min",
  threshold: number,
): GoalSpec {
  return {
    issue,
    figure,
    target: `${bound === "max" ? "at most" : "at least"} ${threshold}x ${baseline}`,
    column,
    baseline,
    row: { workload, key },
    bound,
    threshold,
    unit: "x",
    measure: (rows) => {
      const r = rowOf(rows, workload, key);
      const v = r?.values[column];
      const base = r?.values[baseline];
      return v != null && base != null && base > 0 ? v / base : null;
    },
  };
}

/** A target on the memory per held session of `reuse`, in KiB. */
function memoryGoal(issue: GoalIssue, threshold: number): GoalSpec {
  return {
    issue,
    workload: "5000 open sessions",
    figure: "resident memory per session",
    target: `at most ${threshold} KiB`,
    column: "reuse",
    baseline: "direct",
    row: { workload: "hold", key: "kibPerSession" },
    bound: "max",
    threshold,
    unit: "KiB",
    measure: (rows) => rowOf(rows, "hold", "kibPerSession")?.values["reuse"] ?? null,
  };
}

/**
 * The targets table of issue 3 (reuse mode unless said; ratios to direct in the same run), of
 * issue 7 (`--protocol redis` against `--protocol raw`, both `--pool reuse`), of issue 8
 * (against the minimal relay and HAProxy, warm against off, memory), and of issue 10 (a TLS
 * upstream: reuse against off, and against reuse to a plain upstream); all in the same run.
 */
const GOALS: GoalSpec[] = [
  ratioGoal("connect1", "medianMs", "median session latency", "max", 1.5),
  ratioGoal("connect32", "perSecond", "sessions per second", "min", 1.0),
  ratioGoal("pingpong1", "medianMs", "median round trip", "max", 2.0),
  ratioGoal("pingpong32", "perSecond", "messages per second", "min", 0.65),
  ratioGoal("bulk1", "mbPerSecond", "MB/s", "min", 0.75),
  ratioGoal("bulk8", "mbPerSecond", "MB/s", "min", 0.75),
  memoryGoal(3, 8),
  {
    issue: 3,
    workload: "pool effect",
    figure: "reuse vs off, connect-per-request, 32 clients",
    target: "at least 1.8x the sessions per second",
    column: "reuse",
    baseline: "off",
    row: { workload: "connect32", key: "perSecond" },
    bound: "min",
    threshold: 1.8,
    unit: "x",
    measure: (rows) => {
      const r = rowOf(rows, "connect32", "perSecond");
      const reuse = r?.values["reuse"];
      const off = r?.values["off"];
      return reuse != null && off != null && off > 0 ? reuse / off : null;
    },
  },
  columnGoal(
    7,
    "redis32",
    "perSecond",
    "sessions per second",
    "reuse-redis",
    "reuse-raw",
    "min",
    0.9,
  ),
  columnGoal(7, "redisbulk", "mbPerSecond", "MB/s", "reuse-redis", "reuse-raw", "min", 0.8),
  columnGoal(
    8,
    "medium-ka-5k",
    "cpuUsPerOp",
    "proxy CPU per message",
    "reuse",
    "relay",
    "max",
    1.2,
  ),
  columnGoal(8, "ab-k-c50", "perSecond", "requests per second", "reuse", "haproxy", "min", 0.9),
  columnGoal(8, "medium-cpr-5k", "perSecond", "sessions per second", "off", "relay", "min", 0.9),
  columnGoal(8, "connect32", "perSecond", "sessions per second", "off", "relay", "min", 0.9),
  columnGoal(
    8,
    "rb-k0-c50",
    "perSecond",
    "requests per second",
    "reuse-redis",
    "haproxy",
    "min",
    1,
  ),
  columnGoal(
    8,
    "rb-k0-c50-d20k",
    "perSecond",
    "requests per second",
    "reuse-redis",
    "haproxy",
    "min",
    1,
  ),
  ...CPR_WORKLOADS.map((w) =>
    columnGoal(
      8,
      w,
      "perSecond",
      `${isRealClientWorkload(w) ? "requests" : "sessions"} per second, warm vs off`,
      "warm",
      "off",
      "min",
      1,
    )
  ),
  memoryGoal(8, 12),
  columnGoal(
    10,
    "tls-connect32",
    "perSecond",
    "sessions per second, reuse vs off",
    "reuse",
    "off",
    "min",
    TLS_TARGETS.reuseVsOffRate,
  ),
  columnGoal(
    10,
    "tls-connect32",
    "medianMs",
    "median session latency, TLS vs plain upstream",
    "reuse",
    TLS_PLAIN_COLUMN,
    "max",
    TLS_TARGETS.reuseVsPlainLatency,
  ),
];

/** What {@linkcode evaluateGoals} needs to know of the run besides the rows. */
export interface GoalContext {
  /** The workloads' titles in this run; default {@linkcode WORKLOAD_TITLES}. */
  titles?: Record<WorkloadId, string>;
  /** Sessions the hold workload held (the memory targets name it); default 5000. */
  holdSessions?: number;
  /**
   * Why a workload or a column was not measured, by its name (a real-client part skipped, a
   * peer not on the PATH): shown as the note of a target that is not measured.
   */
  reasons?: Record<string, string>;
}

function notMeasuredNote(g: GoalSpec, rows: FigureRow[], ctx: GoalContext): string {
  const reasons = ctx.reasons ?? {};
  const w = g.row.workload;
  const row = rowOf(rows, w, g.row.key);
  if (!row) return reasons[w] ? `${w}: ${reasons[w]}` : `${w} not run`;
  for (const c of [g.column, g.baseline]) {
    if (row.values[c] == null) return reasons[c] ? `${c}: ${reasons[c]}` : `${c} not measured`;
  }
  return "no figure";
}

/** Judges every target of issues 3, 7, 8 and 10 against the report rows. */
export function evaluateGoals(rows: FigureRow[], ctx: GoalContext = {}): GoalResult[] {
  const titles = ctx.titles ?? WORKLOAD_TITLES;
  return GOALS.map((g) => {
    const measured = g.measure(rows);
    const met = measured === null
      ? null
      : g.bound === "max"
      ? measured <= g.threshold
      : measured >= g.threshold;
    let workload = g.workload ?? titles[g.row.workload];
    if (g.row.workload === "hold" && g.workload !== undefined) {
      workload = `${ctx.holdSessions ?? 5000} open sessions`;
    }
    const result: GoalResult = {
      issue: g.issue,
      workload,
      figure: g.figure,
      target: g.target,
      mode: g.baseline === "direct" ? g.column : `${g.column} vs ${g.baseline}`,
      column: g.column,
      baseline: g.baseline,
      row: g.row,
      bound: g.bound,
      threshold: g.threshold,
      measured,
      unit: g.unit,
      met,
    };
    if (measured === null) result.note = notMeasuredNote(g, rows, ctx);
    return result;
  });
}

/** The goal, if any, that judges a report row (the pool effect is judged apart). */
export function goalForRow(goals: GoalResult[], row: FigureRow): GoalResult | undefined {
  return goals.find((g) =>
    g.row.workload === row.workload && g.row.key === row.key && g.workload !== "pool effect"
  );
}

/** Every goal that judges a report row, the pool effect included. */
export function goalsForRow(goals: GoalResult[], row: FigureRow): GoalResult[] {
  return goals.filter((g) => g.row.workload === row.workload && g.row.key === row.key);
}
