/**
 * The load generator's workloads. Each one drives a target (the upstream itself or a proxy in
 * front of it) over real TCP sockets, verifies every echoed byte, and counts every failure.
 *
 * - {@linkcode runConnect}: connect, send one message, read its echo, close; in a loop per client
 *   (with the job's `tls`, each session does its own TLS handshake first).
 * - {@linkcode runPingPong}: persistent connections, each sending a message and awaiting its echo.
 * - {@linkcode runBulk}: streams writing a pattern while reading the echo back concurrently.
 * - {@linkcode runHold}: many sessions opened at once and held until released.
 * - {@linkcode runRespConnect}: connect-per-request with one Redis command, its reply checked.
 * - {@linkcode runRespBulk}: large `SET`s through one Redis-protocol session.
 *
 * A watchdog closes a socket that makes no progress for {@linkcode STALL_MS}, so that a stuck
 * proxy shows up as counted timeouts instead of a benchmark that never ends.
 *
 * ```ts
 * import { runConnect } from "./_workloads.ts";
 * const r = await runConnect({
 *   kind: "connect", target: "127.0.0.1:9000", clients: 8, durationMs: 2000, warmupMs: 200,
 *   messageBytes: 64,
 * });
 * console.log(r.perSecond, r.errors);
 * ```
 *
 * @module
 */

import type {
  BulkJob,
  BulkResult,
  ClientTls,
  ConnectJob,
  ConnectResult,
  HoldJob,
  HoldResult,
  PingPongJob,
  PingPongResult,
  RespBulkJob,
  RespConnectJob,
} from "./_job.ts";
import { splitHostPort } from "./_job.ts";
import { fillMessage, sameBytes, StreamPattern, StreamVerifier } from "./_pattern.ts";
import { respBulk, respCommand, RespFormatError, respReplyLength } from "./_resp.ts";
import { SampleRecorder } from "./_stats.ts";

/** A socket that makes no progress for this long is closed and counted as an error. */
export const STALL_MS = 10_000;
/** Bulk transfers move data in chunks of this many bytes. */
export const BULK_CHUNK = 256 * 1024;
/** Sessions the hold workload opens concurrently while it builds up. */
export const HOLD_OPEN_PARALLEL = 128;
const ERROR_SAMPLES = 5;
const BACKOFF_MS = 10;

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/** Failure counters shared by the clients of one workload. */
class Failures {
  errors = 0;
  mismatches = 0;
  readonly samples = new Set<string>();

  error(err: unknown, what: string): void {
    this.errors++;
    if (this.samples.size < ERROR_SAMPLES) {
      const text = err instanceof Error ? `${err.name}: ${err.message}` : String(err);
      this.samples.add(`${what}: ${text}`);
    }
  }

  mismatch(what: string, how = "echo differs from what was sent"): void {
    this.mismatches++;
    if (this.samples.size < ERROR_SAMPLES) {
      this.samples.add(`${what}: ${how}`);
    }
  }
}

/** One client's current socket and when it last made progress, for the watchdog. */
class Slot {
  conn: Deno.Conn | null = null;
  since = 0;
  busy = false;
  timedOut = false;
  abort = new AbortController();

  /** Marks the start of a step that must finish within the stall limit. */
  begin(): void {
    this.since = performance.now();
    this.busy = true;
  }

  /** Gets a fresh abort signal after a timeout used up the old one. */
  signal(): AbortSignal {
    if (this.abort.signal.aborted) this.abort = new AbortController();
    return this.abort.signal;
  }
}

/** Closes the socket of any busy slot that has made no progress for `STALL_MS`. */
class Watchdog {
  readonly #timer: ReturnType<typeof setInterval>;

  constructor(slots: Iterable<Slot>) {
    this.#timer = setInterval(() => {
      const now = performance.now();
      for (const s of slots) {
        if (!s.busy || now - s.since < STALL_MS) continue;
        s.timedOut = true;
        s.busy = false;
        s.abort.abort(new Deno.errors.TimedOut(`no progress for ${STALL_MS} ms`));
        try {
          s.conn?.close();
        } catch { /* already closed */ }
      }
    }, 500);
  }

  stop(): void {
    clearInterval(this.#timer);
  }
}

function explain(slot: Slot, err: unknown): unknown {
  if (!slot.timedOut) return err;
  slot.timedOut = false;
  return new Deno.errors.TimedOut(`no progress for ${STALL_MS} ms`);
}

async function writeAll(conn: Deno.Conn, data: Uint8Array): Promise<void> {
  let off = 0;
  while (off < data.length) off += await conn.write(data.subarray(off));
}

/** Reads exactly `buf.length` bytes. @throws {Deno.errors.UnexpectedEof} at an early EOF. */
async function readFull(conn: Deno.Conn, buf: Uint8Array): Promise<void> {
  let off = 0;
  while (off < buf.length) {
    const n = await conn.read(buf.subarray(off));
    if (n === null) {
      throw new Deno.errors.UnexpectedEof(`connection closed after ${off} of ${buf.length} bytes`);
    }
    off += n;
  }
}

function closeQuietly(conn: Deno.Conn | null): void {
  try {
    conn?.close();
  } catch { /* already closed */ }
}

async function connect(
  target: { hostname: string; port: number },
  slot: Slot,
): Promise<Deno.TcpConn> {
  slot.begin();
  const conn = await Deno.connect({ ...target, signal: slot.signal() });
  slot.conn = conn;
  conn.setNoDelay(true);
  return conn;
}

/**
 * Connects (TCP_NODELAY: a `Deno.connectTls` socket cannot have it, and Nagle would hold small
 * writes back) and does the TLS handshake over the connection. The watchdog closes the TCP
 * connection while the handshake is stuck, which ends it.
 */
async function connectTls(
  target: { hostname: string; port: number },
  tls: ClientTls,
  slot: Slot,
): Promise<Deno.Conn> {
  const tcp = await connect(target, slot);
  const conn = await Deno.startTls(tcp, {
    hostname: tls.serverName ?? target.hostname,
    caCerts: tls.caCerts,
  });
  slot.conn = conn;
  await conn.handshake();
  return conn;
}

/**
 * Runs connect-per-request sessions from `clients` clients for the job's duration: each
 * iteration connects (and with `job.tls` does the TLS handshake), runs `session` on the
 * connection, and closes; the latency of each session that `session` judged right is recorded,
 * connect and handshake included. One driver for every connect workload.
 *
 * @param session makes one request on `conn` and checks its answer; returns whether it was right
 * (a wrong answer counts as a mismatch there). `id` is the client's number, `seq` the
 * iteration's.
 */
async function runConnectSessions(
  job: {
    target: string;
    clients: number;
    warmupMs: number;
    durationMs: number;
    tls?: ClientTls;
  },
  what: string,
  session: (conn: Deno.Conn, id: number, seq: number, fail: Failures) => Promise<boolean>,
): Promise<ConnectResult> {
  const target = splitHostPort(job.target);
  const fail = new Failures();
  const latency = new SampleRecorder(1 << 16);
  const slots = Array.from({ length: job.clients }, () => new Slot());
  const watchdog = new Watchdog(slots);
  const measureFrom = performance.now() + job.warmupMs;
  const endAt = measureFrom + job.durationMs;
  let sessions = 0;
  let completed = 0;
  let lastEnd = measureFrom;

  const tls = job.tls;
  const open = tls === undefined
    ? (slot: Slot) => connect(target, slot)
    : (slot: Slot) => connectTls(target, tls, slot);

  async function client(id: number, slot: Slot): Promise<void> {
    let seq = 0;
    while (performance.now() < endAt) {
      const start = performance.now();
      let ok = false;
      try {
        ok = await session(await open(slot), id, seq++, fail);
      } catch (err) {
        fail.error(explain(slot, err), what);
      } finally {
        slot.busy = false;
        closeQuietly(slot.conn);
        slot.conn = null;
      }
      const end = performance.now();
      if (ok) completed++;
      if (ok && start >= measureFrom) {
        latency.add(end - start);
        sessions++;
        if (end > lastEnd) lastEnd = end;
      }
      if (!ok) await sleep(BACKOFF_MS);
    }
  }

  try {
    await Promise.all(slots.map((s, i) => client(i, s)));
  } finally {
    watchdog.stop();
  }
  const elapsedMs = Math.max(lastEnd, endAt) - measureFrom;
  return {
    kind: "connect",
    clients: job.clients,
    errors: fail.errors,
    mismatches: fail.mismatches,
    errorSamples: [...fail.samples],
    elapsedMs,
    sessions,
    completed,
    perSecond: sessions / (elapsedMs / 1000),
    latency: latency.summary(),
  };
}

/** Runs a {@linkcode ConnectJob}: one session per iteration, latency per session. */
export function runConnect(job: ConnectJob): Promise<ConnectResult> {
  // One message and one echo buffer per client, reused for its every session.
  const buffers = new Map<number, { msg: Uint8Array; echo: Uint8Array }>();
  return runConnectSessions(job, "connect session", async (conn, id, seq, fail) => {
    let own = buffers.get(id);
    if (own === undefined) {
      own = { msg: new Uint8Array(job.messageBytes), echo: new Uint8Array(job.messageBytes) };
      buffers.set(id, own);
    }
    fillMessage(own.msg, id, seq);
    await writeAll(conn, own.msg);
    await readFull(conn, own.echo);
    if (sameBytes(own.msg, own.echo)) return true;
    fail.mismatch("connect session");
    return false;
  });
}

/**
 * Reads one whole RESP reply into `buf`, which is sized for the reply expected; returns its
 * length, or -1 when what came is not one reply that fits `buf` (more bytes, another type, a
 * longer reply): a mismatch, found without waiting for bytes that will never come.
 *
 * @throws {Deno.errors.UnexpectedEof} when the connection ends first.
 */
async function readRespReply(conn: Deno.Conn, buf: Uint8Array): Promise<number> {
  let end = 0;
  while (true) {
    let len: number;
    try {
      len = respReplyLength(buf, end);
    } catch (err) {
      if (err instanceof RespFormatError) return -1;
      throw err;
    }
    if (len > buf.length || (len >= 0 && len < end)) return -1;
    if (len >= 0 && len === end) return len;
    if (end === buf.length) return -1;
    const n = await conn.read(buf.subarray(end));
    if (n === null) {
      throw new Deno.errors.UnexpectedEof(`connection closed after ${end} bytes of a reply`);
    }
    end += n;
  }
}

function equalBytes(a: Uint8Array, b: Uint8Array): boolean {
  return a.length === b.length && sameBytes(a, b);
}

/** Runs a {@linkcode RespConnectJob}: one RESP request per session, its reply checked exactly. */
export function runRespConnect(job: RespConnectJob): Promise<ConnectResult> {
  const encoder = new TextEncoder();
  const exchanges = job.exchanges.map((e) => ({
    request: encoder.encode(e.request),
    reply: encoder.encode(e.reply),
  }));
  const replyRoom = Math.max(...exchanges.map((e) => e.reply.length)) + 64;
  const replies = new Map<number, Uint8Array>();
  return runConnectSessions(job, "redis session", async (conn, id, seq, fail) => {
    let reply = replies.get(id);
    if (reply === undefined) replies.set(id, reply = new Uint8Array(replyRoom));
    const ex = exchanges[(id + seq) % exchanges.length];
    await writeAll(conn, ex.request);
    const n = await readRespReply(conn, reply);
    if (n >= 0 && equalBytes(ex.reply, reply.subarray(0, n))) return true;
    fail.mismatch("redis session", "reply differs from the one expected");
    return false;
  });
}

/**
 * Runs a {@linkcode RespBulkJob}: `values` SETs of `valueBytes` each on one connection, each
 * awaiting its `+OK` (a value differs from the one before in its first bytes); then one GET that
 * must return the last value exactly.
 */
export async function runRespBulk(job: RespBulkJob): Promise<BulkResult> {
  const target = splitHostPort(job.target);
  const fail = new Failures();
  const slot = new Slot();
  const watchdog = new Watchdog([slot]);
  const value = new Uint8Array(job.valueBytes);
  fillMessage(value, 0x5e7, 0); // binary: CR LF and '$' occur inside, as in real values
  const request = respCommand("SET", job.key, value);
  const valueAt = request.length - 2 - value.length;
  const stamp = new DataView(
    request.buffer,
    request.byteOffset + valueAt,
    Math.min(4, value.length),
  );
  const okReply = new TextEncoder().encode("+OK\r\n");
  const reply = new Uint8Array(64);
  let acknowledged = 0;
  let elapsedMs = 0;
  try {
    const conn = await connect(target, slot);
    const start = performance.now();
    for (let i = 0; i < job.values; i++) {
      slot.begin();
      if (stamp.byteLength === 4) stamp.setUint32(0, i);
      await writeAll(conn, request);
      slot.since = performance.now();
      const n = await readRespReply(conn, reply);
      if (n < 0 || !equalBytes(okReply, reply.subarray(0, n))) {
        fail.mismatch(`SET ${i + 1} of ${job.values}`, "reply is not +OK");
        break;
      }
      acknowledged += value.length;
    }
    elapsedMs = performance.now() - start;
    if (acknowledged === job.values * value.length) {
      // the last value back, byte for byte
      const want = respBulk(request.slice(valueAt, valueAt + value.length));
      slot.begin();
      await writeAll(conn, respCommand("GET", job.key));
      const got = new Uint8Array(want.length + 64);
      const n = await readRespReply(conn, got);
      if (n < 0 || !equalBytes(want, got.subarray(0, n))) {
        fail.mismatch("GET of the last value", "reply differs from the value set");
      }
    }
  } catch (err) {
    fail.error(explain(slot, err), "redis bulk");
  } finally {
    slot.busy = false;
    watchdog.stop();
    closeQuietly(slot.conn);
  }
  return {
    kind: "bulk",
    errors: fail.errors,
    mismatches: fail.mismatches,
    errorSamples: [...fail.samples],
    elapsedMs,
    bytes: acknowledged,
    mbPerSecond: elapsedMs > 0 ? acknowledged / 1e6 / (elapsedMs / 1000) : 0,
  };
}

/** Runs a {@linkcode PingPongJob}: round trips over persistent connections. */
export async function runPingPong(job: PingPongJob): Promise<PingPongResult> {
  const target = splitHostPort(job.target);
  const fail = new Failures();
  const rtt = new SampleRecorder(1 << 16);
  const slots = Array.from({ length: job.clients }, () => new Slot());
  const watchdog = new Watchdog(slots);
  let messages = 0;
  let completed = 0;
  let measureFrom = 0;
  let endAt = 0;
  let lastEnd = 0;

  async function open(slot: Slot): Promise<void> {
    try {
      await connect(target, slot);
    } catch (err) {
      fail.error(explain(slot, err), "ping-pong connect");
      closeQuietly(slot.conn);
      slot.conn = null;
    } finally {
      slot.busy = false;
    }
  }

  async function client(id: number, slot: Slot): Promise<void> {
    const msg = new Uint8Array(job.messageBytes);
    const echo = new Uint8Array(job.messageBytes);
    let seq = 0;
    while (performance.now() < endAt) {
      if (slot.conn === null) {
        await open(slot);
        if (slot.conn === null) {
          await sleep(BACKOFF_MS);
          continue;
        }
      }
      const conn: Deno.Conn = slot.conn;
      fillMessage(msg, id, seq++);
      const start = performance.now();
      try {
        slot.begin();
        await writeAll(conn, msg);
        await readFull(conn, echo);
        slot.busy = false;
      } catch (err) {
        slot.busy = false;
        fail.error(explain(slot, err), "ping-pong message");
        closeQuietly(conn);
        slot.conn = null;
        continue;
      }
      const end = performance.now();
      if (!sameBytes(msg, echo)) {
        // the stream is out of step now; start over on a new connection
        fail.mismatch("ping-pong message");
        closeQuietly(conn);
        slot.conn = null;
        continue;
      }
      completed++;
      if (start >= measureFrom) {
        rtt.add(end - start);
        messages++;
        if (end > lastEnd) lastEnd = end;
      }
    }
  }

  try {
    await Promise.all(slots.map(open));
    measureFrom = performance.now() + job.warmupMs;
    endAt = measureFrom + job.durationMs;
    lastEnd = measureFrom;
    await Promise.all(slots.map((s, i) => client(i, s)));
  } finally {
    watchdog.stop();
    for (const s of slots) closeQuietly(s.conn);
  }
  const elapsedMs = Math.max(lastEnd, endAt) - measureFrom;
  return {
    kind: "pingpong",
    errors: fail.errors,
    mismatches: fail.mismatches,
    errorSamples: [...fail.samples],
    elapsedMs,
    messages,
    completed,
    perSecond: messages / (elapsedMs / 1000),
    latency: rtt.summary(),
  };
}

/** Runs a {@linkcode BulkJob}: every stream writes and reads back `bytesPerStream` bytes. */
export async function runBulk(job: BulkJob): Promise<BulkResult> {
  const target = splitHostPort(job.target);
  const fail = new Failures();
  const slots = Array.from({ length: job.streams }, () => new Slot());
  const watchdog = new Watchdog(slots);
  const size = job.bytesPerStream;
  let verified = 0;
  let mismatches = 0;

  async function stream(id: number, slot: Slot): Promise<void> {
    const conn = slot.conn;
    if (conn === null) return;
    const pattern = new StreamPattern(0x1234567 + id * 7919, BULK_CHUNK);
    const verifier = new StreamVerifier(pattern);
    const writer = async () => {
      for (let pos = 0; pos < size; pos += BULK_CHUNK) {
        await writeAll(conn, pattern.slice(pos, Math.min(BULK_CHUNK, size - pos)));
        slot.since = performance.now();
      }
    };
    const reader = async () => {
      while (verifier.pos < size) {
        const n = await conn.read(verifier.readInto(size - verifier.pos));
        if (n === null) {
          throw new Deno.errors.UnexpectedEof(
            `stream ended after ${verifier.pos} of ${size} bytes`,
          );
        }
        verifier.check(n);
        slot.since = performance.now();
      }
    };
    slot.begin();
    try {
      const results = await Promise.allSettled([writer(), reader()]);
      const bad = results.find((r) => r.status === "rejected");
      if (bad) throw bad.reason;
    } catch (err) {
      fail.error(explain(slot, err), `bulk stream ${id}`);
      closeQuietly(conn); // also ends the other half
    } finally {
      slot.busy = false;
      verified += verifier.pos;
      mismatches += verifier.mismatches;
      if (verifier.mismatches > 0) fail.mismatch(`bulk stream ${id}`);
    }
  }

  let elapsedMs = 0;
  try {
    await Promise.all(slots.map(async (slot, i) => {
      try {
        await connect(target, slot);
      } catch (err) {
        fail.error(explain(slot, err), `bulk connect ${i}`);
        slot.conn = null;
      } finally {
        slot.busy = false;
      }
    }));
    const start = performance.now();
    await Promise.all(slots.map((s, i) => stream(i, s)));
    elapsedMs = performance.now() - start;
  } finally {
    watchdog.stop();
    for (const s of slots) closeQuietly(s.conn);
  }
  return {
    kind: "bulk",
    errors: fail.errors,
    // count mismatched reads, not streams: a stream that drifted shows as many
    mismatches: mismatches,
    errorSamples: [...fail.samples],
    elapsedMs,
    bytes: verified,
    mbPerSecond: elapsedMs > 0 ? verified / 1e6 / (elapsedMs / 1000) : 0,
  };
}

/** The orchestrator side of the hold workload, as seen by {@linkcode runHold}. */
export interface HoldControl {
  /** Called after the warm-up sessions; resolves when the sessions may be opened. */
  warm(): Promise<void>;
  /** Called with every session held; resolves when they may be closed. */
  ready(opened: number, errors: number): Promise<void>;
}

/** Runs a {@linkcode HoldJob}; `control` paces it (see {@linkcode HoldControl}). */
export async function runHold(job: HoldJob, control: HoldControl): Promise<HoldResult> {
  const target = splitHostPort(job.target);
  const fail = new Failures();
  const held: Deno.Conn[] = [];
  const slots = Array.from({ length: HOLD_OPEN_PARALLEL }, () => new Slot());
  const watchdog = new Watchdog(slots);
  let released = false;
  let closedEarly = 0;
  const watches: Promise<void>[] = [];
  const sink = new Uint8Array(64);

  async function session(slot: Slot, id: number, keep: boolean): Promise<void> {
    const msg = new Uint8Array(job.messageBytes);
    const echo = new Uint8Array(job.messageBytes);
    fillMessage(msg, id, 0);
    let conn: Deno.Conn | null = null;
    try {
      conn = await connect(target, slot);
      await writeAll(conn, msg);
      await readFull(conn, echo);
      if (!sameBytes(msg, echo)) {
        fail.mismatch("held session");
        return;
      }
      if (keep) {
        held.push(conn);
        conn = null;
      }
    } catch (err) {
      fail.error(explain(slot, err), "held session");
    } finally {
      slot.busy = false;
      slot.conn = null;
      closeQuietly(conn);
    }
  }

  async function openMany(count: number, keep: boolean, firstId: number): Promise<void> {
    let next = 0;
    await Promise.all(slots.map(async (slot) => {
      while (next < count) await session(slot, firstId + next++, keep);
    }));
  }

  let elapsedMs = 0;
  try {
    await openMany(job.warmupSessions, false, 1_000_000);
    await control.warm();
    const start = performance.now();
    await openMany(job.sessions, true, 0);
    elapsedMs = performance.now() - start;
    for (const conn of held) {
      // one read per held session: the far side must neither close nor speak while held
      watches.push(
        conn.read(sink).then(
          (n) => {
            if (released) return;
            if (n === null) closedEarly++;
            else fail.mismatch("held session (unexpected bytes)");
          },
          (err) => {
            if (!released) fail.error(err, "held session");
          },
        ),
      );
    }
    await control.ready(held.length, fail.errors);
  } finally {
    released = true;
    watchdog.stop();
    for (const conn of held) closeQuietly(conn);
    await Promise.all(watches);
  }
  if (closedEarly > 0) {
    fail.errors += closedEarly;
    fail.samples.add(`held session: ${closedEarly} closed by the far side while held`);
  }
  return {
    kind: "hold",
    errors: fail.errors,
    mismatches: fail.mismatches,
    errorSamples: [...fail.samples],
    elapsedMs,
    opened: held.length,
    closedEarly,
  };
}
