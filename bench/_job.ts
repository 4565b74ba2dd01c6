/**
 * The load generator's job and result shapes, shared by `loadgen.ts` (which runs jobs) and the
 * orchestrators `bench.ts` and `demo.ts` (which send jobs and read results). Everything that
 * crosses a process boundary is JSON, so each shape has a parser that checks every field and
 * throws {@linkcode JobFormatError} naming the field that was wrong.
 *
 * ```ts
 * import { parseJob } from "./_job.ts";
 * const job = parseJob(JSON.parse('{"kind":"connect","target":"127.0.0.1:9000","clients":8,' +
 *   '"durationMs":2000,"warmupMs":200,"messageBytes":64}'));
 * ```
 *
 * @module
 */

import type { LatencySummary } from "./_stats.ts";

/** Connect, send one message, read its echo, close; repeat per client until the time is up. */
export interface ConnectJob {
  kind: "connect";
  /** `HOST:PORT` to connect to. */
  target: string;
  /** Concurrent clients. */
  clients: number;
  /** Measured time, after the warm-up. */
  durationMs: number;
  /** Time spent running the workload before measuring. */
  warmupMs: number;
  /** Size of the message each session sends. */
  messageBytes: number;
  /**
   * When present, each session is TLS: the client connects (TCP_NODELAY), then does the
   * handshake itself, and sends its message over TLS. Absent: plain TCP.
   */
  tls?: ClientTls;
}

/** TLS from the load generator's side. */
export interface ClientTls {
  /** PEM certificates to trust (instead of the root store): the test CA. */
  caCerts: string[];
  /** The name the server's certificate must be valid for; default the target's host. */
  serverName?: string;
}

/** Persistent connections, each sending a message and awaiting its echo in a loop. */
export interface PingPongJob {
  kind: "pingpong";
  target: string;
  clients: number;
  durationMs: number;
  warmupMs: number;
  messageBytes: number;
}

/** Streams that each write `bytesPerStream` bytes while reading the echo back. */
export interface BulkJob {
  kind: "bulk";
  target: string;
  streams: number;
  bytesPerStream: number;
}

/**
 * Opens `sessions` sessions at once and holds them. Line protocol with the orchestrator: the
 * generator prints `{"event":"warm"}` after `warmupSessions` throwaway sessions, waits for a
 * `go` line on stdin, prints `{"event":"ready",...}` once every session echoed, then waits for a
 * `release` line before closing them all and printing its result.
 */
export interface HoldJob {
  kind: "hold";
  target: string;
  sessions: number;
  warmupSessions: number;
  messageBytes: number;
}

/** One RESP request and the exact bytes of the reply it must get. */
export interface RespExchange {
  /** The request, e.g. `*1\r\n$4\r\nPING\r\n` (ASCII). */
  request: string;
  /** The whole reply, e.g. `+PONG\r\n` (ASCII). */
  reply: string;
}

/**
 * Connect-per-request against a Redis-protocol target: connect, send one RESP request, read its
 * whole reply (checked byte for byte), close; in a loop per client. Session `n` of client `c`
 * sends `exchanges[(c + n) % exchanges.length]`. The result is a {@linkcode ConnectResult}.
 */
export interface RespConnectJob {
  kind: "resp-connect";
  target: string;
  clients: number;
  durationMs: number;
  warmupMs: number;
  exchanges: RespExchange[];
}

/**
 * Bulk through one framed session: `SET key <valueBytes bytes>` sent `values` times on one
 * connection, each awaiting `+OK`; then (not timed) one `GET key` whose reply must be the last
 * value. The result is a {@linkcode BulkResult} counting the value bytes acknowledged.
 */
export interface RespBulkJob {
  kind: "resp-bulk";
  target: string;
  key: string;
  valueBytes: number;
  values: number;
}

/** Any load generator job. */
export type Job = ConnectJob | PingPongJob | BulkJob | HoldJob | RespConnectJob | RespBulkJob;

/** Workload kinds, as named in jobs. */
export type JobKind = Job["kind"];

/** What every result carries: failures are counted, never hidden. */
export interface ResultBase {
  /** Connect failures, resets, early EOFs, timeouts. */
  errors: number;
  /** Echoes whose bytes differed from what was sent. */
  mismatches: number;
  /** The first few distinct error messages, for the report. */
  errorSamples: string[];
  /** Wall time of the measured part. */
  elapsedMs: number;
}

/** Result of a {@linkcode ConnectJob} (and of a {@linkcode RespConnectJob}). */
export interface ConnectResult extends ResultBase {
  kind: "connect";
  /** Concurrent clients that ran (the job's `clients`). */
  clients: number;
  /** Sessions completed in the measured window. */
  sessions: number;
  /** Sessions completed in the whole run, warm-up included. */
  completed: number;
  /** Sessions per second. */
  perSecond: number;
  /** Session latency: from the start of the connect to the close after the full echo. */
  latency: LatencySummary;
}

/** Result of a {@linkcode PingPongJob}. */
export interface PingPongResult extends ResultBase {
  kind: "pingpong";
  /** Round trips completed in the measured window. */
  messages: number;
  /** Round trips completed in the whole run, warm-up included. */
  completed: number;
  /** Round trips per second, all clients together. */
  perSecond: number;
  /** Round trip time of one message. */
  latency: LatencySummary;
}

/** Result of a {@linkcode BulkJob} (and of a {@linkcode RespBulkJob}). */
export interface BulkResult extends ResultBase {
  kind: "bulk";
  /** Bytes echoed back and verified, all streams together (value bytes acknowledged, for RESP). */
  bytes: number;
  /** Verified bytes per second, in units of 10^6 bytes. */
  mbPerSecond: number;
}

/** Result of a {@linkcode HoldJob}. */
export interface HoldResult extends ResultBase {
  kind: "hold";
  /** Sessions that were established end to end and held. */
  opened: number;
  /** Held sessions that the far side closed before they were released. */
  closedEarly: number;
}

/** Any load generator result. */
export type JobResult = ConnectResult | PingPongResult | BulkResult | HoldResult;

/** A line the load generator prints on stdout. */
export type LoadgenEvent =
  | { event: "warm" }
  | { event: "ready"; opened: number; errors: number }
  | { event: "result"; result: JobResult };

/** Thrown when JSON from another process does not have the expected shape. */
export class JobFormatError extends Error {
  /** Creates the error; `path` names the offending field. */
  constructor(path: string, expected: string, got: unknown) {
    super(`${path}: expected ${expected}, got ${JSON.stringify(got) ?? String(got)}`);
    this.name = "JobFormatError";
  }
}

type Rec = Record<string, unknown>;

function record(v: unknown, path: string): Rec {
  if (typeof v !== "object" || v === null || Array.isArray(v)) {
    throw new JobFormatError(path, "an object", v);
  }
  return v as Rec;
}

function num(o: Rec, key: string, path: string, min = 0): number {
  const v = o[key];
  if (typeof v !== "number" || !Number.isFinite(v) || v < min) {
    throw new JobFormatError(`${path}.${key}`, `a finite number >= ${min}`, v);
  }
  return v;
}

function int(o: Rec, key: string, path: string, min = 0): number {
  const v = num(o, key, path, min);
  if (!Number.isInteger(v)) throw new JobFormatError(`${path}.${key}`, "an integer", v);
  return v;
}

function str(o: Rec, key: string, path: string): string {
  const v = o[key];
  if (typeof v !== "string") throw new JobFormatError(`${path}.${key}`, "a string", v);
  return v;
}

function clientTls(v: unknown, path: string): ClientTls {
  const o = record(v, path);
  const certs = o.caCerts;
  if (!Array.isArray(certs) || certs.length === 0 || !certs.every((c) => typeof c === "string")) {
    throw new JobFormatError(`${path}.caCerts`, "a non-empty array of strings", certs);
  }
  const tls: ClientTls = { caCerts: certs as string[] };
  if (o.serverName !== undefined) tls.serverName = str(o, "serverName", path);
  return tls;
}

function target(o: Rec, path: string): string {
  const v = str(o, "target", path);
  splitHostPort(v); // throws on a malformed address
  return v;
}

/**
 * Splits `HOST:PORT` (or `[V6]:PORT`) into its parts.
 *
 * @throws {JobFormatError} when the text is not an address with a port 1..65535.
 */
export function splitHostPort(addr: string): { hostname: string; port: number } {
  const m = /^(?:\[([^\]]+)\]|([^:\s]+)):(\d{1,5})$/.exec(addr);
  const port = m ? Number(m[3]) : NaN;
  if (!m || port < 1 || port > 65535) throw new JobFormatError("address", "HOST:PORT", addr);
  return { hostname: m[1] ?? m[2], port };
}

/** Checks that `v` is a {@linkcode Job}; returns it typed. @throws {JobFormatError} */
export function parseJob(v: unknown): Job {
  const o = record(v, "job");
  const kind = o.kind;
  switch (kind) {
    case "connect":
    case "pingpong": {
      const job: ConnectJob | PingPongJob = {
        kind,
        target: target(o, "job"),
        clients: int(o, "clients", "job", 1),
        durationMs: num(o, "durationMs", "job", 1),
        warmupMs: num(o, "warmupMs", "job"),
        messageBytes: int(o, "messageBytes", "job", 1),
      };
      if (o.tls !== undefined) {
        if (job.kind !== "connect") {
          throw new JobFormatError("job.tls", "no TLS for pingpong", o.tls);
        }
        job.tls = clientTls(o.tls, "job.tls");
      }
      return job;
    }
    case "bulk":
      return {
        kind,
        target: target(o, "job"),
        streams: int(o, "streams", "job", 1),
        bytesPerStream: int(o, "bytesPerStream", "job", 1),
      };
    case "hold":
      return {
        kind,
        target: target(o, "job"),
        sessions: int(o, "sessions", "job", 1),
        warmupSessions: int(o, "warmupSessions", "job"),
        messageBytes: int(o, "messageBytes", "job", 1),
      };
    case "resp-connect": {
      const list = o.exchanges;
      if (!Array.isArray(list) || list.length === 0) {
        throw new JobFormatError("job.exchanges", "a non-empty array", list);
      }
      return {
        kind,
        target: target(o, "job"),
        clients: int(o, "clients", "job", 1),
        durationMs: num(o, "durationMs", "job", 1),
        warmupMs: num(o, "warmupMs", "job"),
        exchanges: list.map((x, i) => {
          const e = record(x, `job.exchanges[${i}]`);
          return {
            request: str(e, "request", `job.exchanges[${i}]`),
            reply: str(e, "reply", `job.exchanges[${i}]`),
          };
        }),
      };
    }
    case "resp-bulk":
      return {
        kind,
        target: target(o, "job"),
        key: str(o, "key", "job"),
        valueBytes: int(o, "valueBytes", "job", 1),
        values: int(o, "values", "job", 1),
      };
    default:
      throw new JobFormatError(
        "job.kind",
        "connect, pingpong, bulk, hold, resp-connect or resp-bulk",
        kind,
      );
  }
}

function parseLatency(v: unknown, path: string): LatencySummary {
  const o = record(v, path);
  return {
    count: int(o, "count", path),
    meanMs: num(o, "meanMs", path),
    medianMs: num(o, "medianMs", path),
    p99Ms: num(o, "p99Ms", path),
    minMs: num(o, "minMs", path),
    maxMs: num(o, "maxMs", path),
  };
}

/** Checks that `v` is a {@linkcode JobResult}; returns it typed. @throws {JobFormatError} */
export function parseResult(v: unknown): JobResult {
  const p = "result";
  const o = record(v, p);
  const samples = o.errorSamples;
  if (!Array.isArray(samples) || !samples.every((s) => typeof s === "string")) {
    throw new JobFormatError(`${p}.errorSamples`, "an array of strings", samples);
  }
  const base: ResultBase = {
    errors: int(o, "errors", p),
    mismatches: int(o, "mismatches", p),
    errorSamples: samples as string[],
    elapsedMs: num(o, "elapsedMs", p),
  };
  switch (o.kind) {
    case "connect":
      return {
        kind: "connect",
        ...base,
        clients: int(o, "clients", p, 1),
        sessions: int(o, "sessions", p),
        completed: int(o, "completed", p),
        perSecond: num(o, "perSecond", p),
        latency: parseLatency(o.latency, `${p}.latency`),
      };
    case "pingpong":
      return {
        kind: "pingpong",
        ...base,
        messages: int(o, "messages", p),
        completed: int(o, "completed", p),
        perSecond: num(o, "perSecond", p),
        latency: parseLatency(o.latency, `${p}.latency`),
      };
    case "bulk":
      return {
        kind: "bulk",
        ...base,
        bytes: int(o, "bytes", p),
        mbPerSecond: num(o, "mbPerSecond", p),
      };
    case "hold":
      return {
        kind: "hold",
        ...base,
        opened: int(o, "opened", p),
        closedEarly: int(o, "closedEarly", p),
      };
    default:
      throw new JobFormatError(`${p}.kind`, "connect, pingpong, bulk or hold", o.kind);
  }
}

/** Parses one stdout line of the load generator. @throws {JobFormatError} or `SyntaxError` */
export function parseLoadgenEvent(line: string): LoadgenEvent {
  const o = record(JSON.parse(line), "event");
  switch (o.event) {
    case "warm":
      return { event: "warm" };
    case "ready":
      return {
        event: "ready",
        opened: int(o, "opened", "event"),
        errors: int(o, "errors", "event"),
      };
    case "result":
      return { event: "result", result: parseResult(o.result) };
    default:
      throw new JobFormatError("event.event", "warm, ready or result", o.event);
  }
}
