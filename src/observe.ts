/**
 * What an operator sees of a running proxy, built from its plain counters only when asked: the
 * Prometheus metric families behind `/metrics` and `/stats`, the readiness behind `/readyz`, and
 * the access log line of a finished session. Nothing here runs on the data path.
 *
 * ```ts
 * import { metricFamilies } from "./observe.ts";
 * import { exposition } from "./metrics.ts";
 * declare const stats: import("./observe.ts").ProxyStats;
 * console.log(exposition(metricFamilies(stats)));
 * ```
 *
 * @module
 */

import { formatHostPort } from "./address.ts";
import type { Readiness } from "./admin.ts";
import type { PoolMode, ProxyConfig } from "./config.ts";
import {
  counterFamily,
  gaugeFamily,
  type Histogram,
  histogramFamily,
  type MetricFamily,
  type Sample,
  samplesByLabel,
} from "./metrics.ts";
import type { PoolStats } from "./pool.ts";
import type { ListenerChecks, TlsHandshakeCounts } from "./tls_listener.ts";
import { SESSION_ENDS, type SessionEnd, type SessionSummary } from "./session.ts";

/** The prefix of every metric of the proxy (process metrics aside). */
export const METRIC_PREFIX = "tcp_pool_proxy_";

/**
 * How recently the upstream must have shown it serves (a dial, a probe, an answer) for `/readyz`
 * to say ready without asking it again.
 */
export const READY_INTERVAL_MS = 10_000;

/**
 * Whether the listener takes new clients, and if not, why; `not accepting`: the TLS listener did
 * not accept its own probe (the runtime stopped its accept loop) and is being opened again.
 */
export type ListenerState =
  | "accepting"
  | "at max-clients"
  | "out of descriptors"
  | "not accepting"
  | "stopped";

/** A snapshot of the proxy's counters; the histograms are shared, not copied. */
export interface ProxyStats {
  /** The pool mode in force. */
  mode: PoolMode;
  /** The upstream's address as text. */
  upstream: string;
  /** Sessions accepted since start. */
  sessionsStarted: number;
  /** Sessions running now. */
  sessionsActive: number;
  /** Finished sessions by end code. */
  sessionsEnded: ReadonlyMap<SessionEnd, number>;
  /** Finished sessions whose failed pooled connection was replaced by a fresh one. */
  retries: number;
  /** Bytes read from clients and sent upstream, by finished sessions. */
  bytesFromClients: number;
  /** Bytes read from the upstream and sent to clients, by finished sessions. */
  bytesFromUpstream: number;
  /** How long finished sessions lasted, in seconds. */
  sessionSeconds: Histogram;
  /** The listener's state. */
  listener: ListenerState;
  /** `--max-clients` in force (0: none). */
  maxClients: number;
  /** Whether a drain has started (SIGTERM, SIGINT). */
  draining: boolean;
  /** Errors caught by the failsafe since start. */
  unexpectedErrors: number;
  /** Log lines dropped because stderr did not take them (`--log-buffer`), process-wide. */
  logLinesDropped: number;
  /** Bytes of the read-ahead budget taken now, process-wide. */
  readAheadBytes: number;
  /** The read-ahead budget in force (`--read-ahead-memory`), in bytes. */
  readAheadBudget: number;
  /** The pool's counters and gauges. */
  pool: PoolStats;
  /** Client TLS handshakes, with `--tls-cert` only. */
  clientTlsHandshakes?: TlsHandshakeCounts;
  /** The TLS listener's probes of itself, and times it listened again (`--tls-cert`). */
  listenerChecks?: ListenerChecks;
}

/** `pool full` → `pool_full`: label values in Prometheus' usual form. */
function labelValue(text: string): string {
  return text.replaceAll(" ", "_");
}

/** {@link samplesByLabel} with the label values in Prometheus' usual form. */
function byLabel(label: string, values: Iterable<[string, number]>): Sample[] {
  return samplesByLabel(
    label,
    new Map([...values].map(([key, value]) => [labelValue(key), value])),
  );
}

/** The proxy's metric families, in `/metrics` order. */
export function metricFamilies(stats: ProxyStats): MetricFamily[] {
  const p = METRIC_PREFIX;
  const pool = stats.pool;
  const ends = SESSION_ENDS.map((
    end,
  ): [string, number] => [end, stats.sessionsEnded.get(end) ?? 0]);
  return [
    gaugeFamily(`${p}info`, "Always 1; the labels say how the proxy is configured.", [
      { labels: { mode: stats.mode, upstream: stats.upstream }, value: 1 },
    ]),
    counterFamily(`${p}sessions_started`, "Client sessions accepted.", stats.sessionsStarted),
    gaugeFamily(`${p}sessions_active`, "Client sessions running now.", stats.sessionsActive),
    counterFamily(
      `${p}sessions_ended`,
      "Client sessions finished, by end code (see the README's end codes).",
      byLabel("end", ends),
    ),
    counterFamily(
      `${p}session_retries`,
      "Sessions whose failed pooled connection was replaced by a fresh one, the client's bytes replayed.",
      stats.retries,
    ),
    counterFamily(
      `${p}bytes`,
      "Bytes relayed by finished sessions, by direction (counted when a session ends).",
      [
        { labels: { direction: "client_to_upstream" }, value: stats.bytesFromClients },
        { labels: { direction: "upstream_to_client" }, value: stats.bytesFromUpstream },
      ],
    ),
    histogramFamily(
      `${p}session_duration_seconds`,
      "How long finished client sessions lasted (1 ms to 1 h).",
      stats.sessionSeconds,
    ),
    gaugeFamily(
      `${p}listener_accepting`,
      "1 while the listener takes new clients; 0 at --max-clients, out of descriptors, not accepting its own probe (TLS), or draining.",
      stats.listener === "accepting" ? 1 : 0,
    ),
    ...(stats.clientTlsHandshakes === undefined ? [] : [
      counterFamily(
        `${p}client_tls_handshakes`,
        "TLS handshakes with clients (--tls-cert), by result: completed, or failed (refused, broken, timed out).",
        [
          { labels: { result: "completed" }, value: stats.clientTlsHandshakes.completed },
          { labels: { result: "failed" }, value: stats.clientTlsHandshakes.failed },
        ],
      ),
    ]),
    ...(stats.listenerChecks === undefined ? [] : [
      counterFamily(
        `${p}listener_reopened`,
        "Times the TLS listener found, by probing itself, that it no longer accepted, and listened again.",
        stats.listenerChecks.reopened,
      ),
    ]),
    gaugeFamily(`${p}max_clients`, "--max-clients in force (0: none).", stats.maxClients),
    gaugeFamily(`${p}draining`, "1 once a drain has started.", stats.draining ? 1 : 0),
    gaugeFamily(
      `${p}read_ahead_bytes`,
      "Bytes of --read-ahead-memory taken now by busy directions reading ahead (512 KiB each).",
      stats.readAheadBytes,
    ),
    gaugeFamily(
      `${p}read_ahead_budget_bytes`,
      "--read-ahead-memory in force.",
      stats.readAheadBudget,
    ),
    gaugeFamily(
      `${p}pool_connections`,
      "Upstream connections by state: idle (ready), settling (released, watched before reuse), leased (serving a session), dialling, checking (the pool's own readiness probe or idle-limit check, never lent).",
      [
        { labels: { state: "idle" }, value: pool.idle },
        { labels: { state: "settling" }, value: pool.settling },
        { labels: { state: "leased" }, value: pool.leased },
        { labels: { state: "dialling" }, value: pool.dialling },
        { labels: { state: "checking" }, value: pool.checking },
      ],
    ),
    counterFamily(
      `${p}pool_borrows`,
      "Upstream connections handed to sessions, by source: pool (a hit) or dial (a miss; a retry's fresh connection counts here too).",
      [
        { labels: { source: "pool" }, value: pool.hits },
        { labels: { source: "dial" }, value: pool.misses },
      ],
    ),
    counterFamily(
      `${p}upstream_dials`,
      "Dials to the upstream started (sessions, refills, readiness probes).",
      pool.dials,
    ),
    counterFamily(
      `${p}upstream_dial_failures`,
      "Dials to the upstream that failed, by reason (closed: the upstream closed a new connection before it could be used).",
      byLabel("reason", Object.entries(pool.dialFailuresBy)),
    ),
    histogramFamily(
      `${p}upstream_connect_duration_seconds`,
      "How long successful dials to the upstream took.",
      pool.connectSeconds,
    ),
    counterFamily(
      `${p}pool_returned`,
      "Upstream connections a session gave back to the pool (reuse).",
      pool.pooled,
    ),
    counterFamily(
      `${p}pool_release_refused`,
      "Upstream connections closed at the end of their session instead of pooled, by reason.",
      byLabel("reason", Object.entries(pool.refused)),
    ),
    counterFamily(
      `${p}pool_idle_dropped`,
      "Idle upstream connections that left the pool other than to a session, by reason.",
      byLabel("reason", Object.entries(pool.idleDroppedBy)),
    ),
    counterFamily(
      `${p}pool_trimmed`,
      "Idle upstream connections closed as more than recent demand needed.",
      pool.trimmed,
    ),
    gaugeFamily(
      `${p}queue_waiting`,
      "Sessions waiting for an upstream connection at --max-upstream.",
      pool.queued,
    ),
    counterFamily(
      `${p}queue_timeouts`,
      "Sessions that gave up waiting for an upstream connection (--queue-timeout).",
      pool.queueTimeouts,
    ),
    gaugeFamily(
      `${p}refill_backing_off`,
      "1 while refills back off after failed dials (warm, reuse).",
      pool.refillFailure === undefined ? 0 : 1,
    ),
    counterFamily(
      `${p}unexpected_errors`,
      "Errors caught by the failsafe (a bug: each is logged with its stack).",
      stats.unexpectedErrors,
    ),
    counterFamily(
      `${p}log_lines_dropped`,
      "Log lines dropped because stderr did not take them in time (--log-buffer).",
      stats.logLinesDropped,
    ),
  ];
}

/**
 * Whether the proxy should get new clients (`/readyz`), and whether the upstream should be
 * probed: not while draining or not accepting; ready when the upstream showed it serves within
 * `intervalMs` ({@link READY_INTERVAL_MS}); otherwise it asks for a probe and goes by the last news (a failure
 * since the last success is not ready; no news at all is not ready yet).
 */
export function readiness(
  stats: ProxyStats,
  now: number,
  intervalMs: number = READY_INTERVAL_MS,
): Readiness & { probe: boolean } {
  if (stats.draining) {
    return { ready: false, reason: "draining: not taking new clients", probe: false };
  }
  if (stats.listener !== "accepting") {
    const why = stats.listener === "at max-clients"
      ? `at --max-clients ${stats.maxClients}`
      : stats.listener === "out of descriptors"
      ? "accepts paused: out of file descriptors"
      : stats.listener === "not accepting"
      ? "the TLS listener did not accept its own probe: opening it again"
      : "the listener is closed";
    return { ready: false, reason: why, probe: false };
  }
  const pool = stats.pool;
  if (now - pool.lastSuccessAt <= intervalMs) return { ready: true, probe: false };
  if (pool.lastFailureAt > pool.lastSuccessAt) {
    return {
      ready: false,
      reason: `upstream ${stats.upstream} unreachable: ${pool.lastDialError ?? "dial failed"}`,
      probe: true,
    };
  }
  if (pool.lastSuccessAt > -Infinity) return { ready: true, probe: true };
  return { ready: false, reason: `checking upstream ${stats.upstream}`, probe: true };
}

/**
 * The access log of a finished session: one stable line, after HAProxy's `tcplog`, and its
 * fields (times rounded to 0.01 ms) for the JSON form:
 *
 * `CLIENT -> UPSTREAM session ID SOURCE QUEUE/CONNECT/TOTALms up NB down NB END retried yes|no release WHAT`
 */
export function accessLogEntry(
  summary: SessionSummary,
): { line: string; fields: Record<string, unknown> } {
  const ms = (x: number) => Math.round(x * 100) / 100;
  const fields = {
    ...summary,
    queueMs: ms(summary.queueMs),
    connectMs: ms(summary.connectMs),
    durationMs: ms(summary.durationMs),
    retried: summary.retried ? "yes" : "no",
    release: labelValue(summary.release),
  };
  const line = `${fields.client} -> ${fields.upstream} session ${fields.id} ${fields.source} ` +
    `${fields.queueMs}/${fields.connectMs}/${fields.durationMs}ms ` +
    `up ${fields.bytesFromClient}B down ${fields.bytesFromServer}B ${fields.end} ` +
    `retried ${fields.retried} release ${fields.release}`;
  return { line, fields };
}

/**
 * The configuration in force, as `/stats` shows it: every flag's value, addresses as
 * `HOST:PORT`, durations in milliseconds (the field names say so), `--max-clients` resolved.
 */
export function configInForce(config: ProxyConfig, maxClients: number): Record<string, unknown> {
  return {
    ...config,
    listen: formatHostPort(config.listen),
    upstream: formatHostPort(config.upstream),
    admin: config.admin === undefined ? null : formatHostPort(config.admin),
    maxClients,
  };
}
