/**
 * One client session: gets an upstream connection from the pool and relays bytes both ways until
 * the session ends, then gives the connection back (or closes it) exactly once, after every user
 * of it has finished.
 *
 * Client to upstream is a pump that owns the client's reader; upstream to client is the upstream
 * connection's lifelong reader ({@link UpstreamConn}), which delivers to this session while it
 * holds the lease. Each direction waits for a write before starting the next, so a side that
 * does not read stalls the other side's reads instead of growing a buffer. Read buffers start at
 * 256 bytes and grow only while a direction is busy ({@link ReadBuffers}).
 *
 * One `AbortController` per session drives both directions: whatever ends the session first
 * aborts it with the {@link SessionEnd} as reason, which starts the teardown (close the client
 * socket, wait for every user of the upstream connection, release it once).
 *
 * How a session ends (its {@link SessionEnd}):
 * - The client sends FIN. In `reuse`, if the upstream spoke last (its answer came after the
 *   client's last bytes) or nobody spoke, and no more of the answer is on its way, the exchange is
 *   complete: the session ends and the connection may be pooled. Otherwise (the client's bytes are
 *   unanswered, the answer is still flowing, or the mode does not reuse) the FIN is passed on, the
 *   upstream's answer is still relayed, and the session ends when the upstream closes:
 *   `client-closed` either way.
 * - The upstream sends FIN: passed on to the client, whose bytes are still relayed until it
 *   closes: `server-closed`.
 * - An error on either socket closes both: `client-error`, `server-error`.
 * - A connection that came from the pool and fails before a single byte came back is replaced
 *   once by a fresh dial, and the client's bytes so far (up to 64 KiB) are replayed.
 * - No byte read from or written to the client for `--client-timeout`, or the upstream for
 *   `--server-timeout` (a write the peer does not take is no byte), or either way for
 *   `--fin-timeout` once a FIN was seen: `client-timeout`, `server-timeout`, `fin-timeout`. The
 *   session records activity in three fields; one timer wheel for the whole proxy reads them.
 *
 * @module
 */

import { formatHostPort, type HostPort } from "./address.ts";
import { closeQuietly, describeError, isLocalInterruption, ReadBuffers, writeAll } from "./_io.ts";
import type { Deadline, DeadlineWheel } from "./deadline_wheel.ts";
import { UpstreamConnectError } from "./dial.ts";
import { reportUnexpected } from "./failsafe.ts";
import { QueueTimeoutError, type ReleaseOutcome, type UpstreamPool } from "./pool.ts";
import type { LeaseHandlers, UpstreamConn } from "./upstream_conn.ts";

/**
 * How a session ended, one vocabulary for logs, metrics and tests (after HAProxy's termination
 * states):
 * - `client-closed`: the client closed first (its FIN ended or was passed on).
 * - `server-closed`: the upstream closed first; its FIN was passed on to the client.
 * - `client-error`: a read or write on the client's socket failed (for example a reset).
 * - `server-error`: a read or write on the upstream socket failed, after any retry.
 * - `connect-failed`: no upstream connection could be had (refused, unreachable).
 * - `connect-timeout`: the upstream did not accept within the connect timeout.
 * - `queue-timeout`: every upstream connection allowed (`--max-upstream`) stayed in use for the
 *   queue timeout.
 * - `client-timeout`: nothing was read from or written to the client for the client timeout (a
 *   write the client does not take counts as nothing).
 * - `server-timeout`: the same on the upstream side, for the server timeout.
 * - `fin-timeout`: half-closed (one side sent FIN), the session saw no byte either way for the
 *   fin timeout.
 * - `internal-error`: a fault in the proxy itself ended the session (logged at `error`).
 * - `shutdown`: the proxy was stopping and the drain timeout ran out.
 */
export type SessionEnd =
  | "client-closed"
  | "server-closed"
  | "client-error"
  | "server-error"
  | "connect-failed"
  | "connect-timeout"
  | "queue-timeout"
  | "client-timeout"
  | "server-timeout"
  | "fin-timeout"
  | "internal-error"
  | "shutdown";

/** The inactivity timeouts of a session, in milliseconds; 0 turns one off. */
export interface SessionTimeouts {
  /** `--client-timeout`: no byte read from or written to the client for this long. */
  clientMs: number;
  /** `--server-timeout`: no byte read from or written to the upstream for this long. */
  serverMs: number;
  /** `--fin-timeout`: once half-closed, no byte either way for this long. */
  finMs: number;
}

/** What a finished session reports (the per-session log line). */
export interface SessionSummary {
  /** Session number, for logs. */
  id: number;
  /** The client's address. */
  client: string;
  /** The upstream's address. */
  upstream: string;
  /** How it ended. */
  end: SessionEnd;
  /** Where its upstream connection came from: the pool, a dial, or none at all. */
  source: "pool" | "dial" | "none";
  /** Whether a failed pooled connection was replaced by a fresh one. */
  retried: boolean;
  /** Whether a FIN was passed on (so the connection could not be reused). */
  halfClosed: boolean;
  /** Bytes read from the client and sent upstream. */
  bytesFromClient: number;
  /** Bytes read from the upstream and sent to the client. */
  bytesFromServer: number;
  /** Milliseconds from accept to end. */
  durationMs: number;
  /** What the pool did with the connection at the end. */
  release: ReleaseOutcome | "none";
  /** The error behind an error ending, in a few words. */
  error?: string;
}

/** What every session of one proxy shares (one object, not one per session). */
export interface SessionContext {
  /** Where upstream connections come from. */
  pool: UpstreamPool;
  /** The upstream's address as text, formatted once (for {@link SessionSummary.upstream}). */
  upstream: string;
  /** Whether connections may go back to the pool (`--pool reuse`). */
  reuse: boolean;
  /** The proxy's shutdown signal: aborts a dial under way when the drain runs out. */
  signal: AbortSignal;
  /** The inactivity timeouts. */
  timeouts: SessionTimeouts;
  /** The one timer wheel that watches every session's timeouts; none when all are 0. */
  wheel: DeadlineWheel<Deadline> | undefined;
  /**
   * Called once per session, when it has ended and its upstream connection was released. The
   * summary is built only if asked for, so that the default log level costs nothing per session.
   */
  onEnd(session: SessionHandle): void;
}

/** A session, as the proxy holds it. */
export interface SessionHandle {
  /** How it ended; `undefined` while it runs. */
  readonly end: SessionEnd | undefined;
  /** Ends the session now, as `shutdown` (the drain timeout ran out). */
  abort(): void;
  /** What the session did, for the log line (complete once ended). */
  summary(): SessionSummary;
}

/** Most client bytes kept for replaying onto a fresh connection. */
export const REPLAY_LIMIT = 64 * 1024;

/**
 * Starts relaying client session number `id` to the upstream. The session closes `client` and
 * reports through `context.onEnd` once everything it used is released. No buffer is allocated per
 * chunk (only copies kept for a replay, up to {@link REPLAY_LIMIT}), and little per session: a
 * session is one object whose methods are its callbacks.
 */
export function startSession(
  client: Deno.TcpConn,
  id: number,
  context: SessionContext,
): SessionHandle {
  const session = new Session(client, id, context);
  session.start();
  return session;
}

class Session implements LeaseHandlers, SessionHandle, Deadline {
  readonly #client: Deno.TcpConn;
  readonly #id: number;
  readonly #context: SessionContext;
  readonly #startedAt = performance.now();
  #up: UpstreamConn | undefined;
  #source: SessionSummary["source"] = "none";
  /**
   * The session's end signal: aborted, with the {@link SessionEnd} as its reason, by whatever ends
   * the session first. Aborting it starts the teardown; both pumps stop when they see it.
   */
  readonly #stop = new AbortController();
  #error: unknown;
  #starting: Promise<void> | undefined;
  #pumping: Promise<void> | undefined;
  #clientEof = false;
  #upstreamEof = false;
  #finSentUpstream = false;
  #halfClosed = false;
  #lastSpeaker: "none" | "client" | "upstream" = "none";
  #deliveringToClient = false;
  #bytesFromClient = 0;
  #bytesFromServer = 0;
  // Replay: client chunks kept, in order, until the upstream answers or they exceed the limit.
  #replay: Uint8Array[] | undefined;
  #replayBytes = 0;
  #replayable = false;
  #retried = false;
  #release: ReleaseOutcome | "none" = "none";
  #retrying: Promise<boolean> | undefined;
  /** Client chunks read so far, and how many of them the current upstream has been sent. */
  #clientChunks = 0;
  #sentToUpstream = 0;
  // Inactivity timeouts: `performance.now()` of the last byte read from or written to each side
  // (the upstream's from the lease on), and of the first FIN; read by the timer wheel.
  #clientActiveAt: number;
  #serverActiveAt = Infinity;
  #halfClosedAt = Infinity;

  constructor(client: Deno.TcpConn, id: number, context: SessionContext) {
    this.#client = client;
    this.#id = id;
    this.#context = context;
    this.#clientActiveAt = this.#startedAt;
    this.#stop.signal.addEventListener("abort", () => {
      this.#teardown().catch((error: unknown) =>
        reportUnexpected(`the teardown of session ${this.#id}`, error)
      );
    }, { once: true });
  }

  start(): void {
    this.#context.wheel?.add(this);
    this.#starting = this.#connect();
  }

  get end(): SessionEnd | undefined {
    return this.#end;
  }

  abort(): void {
    this.#finish("shutdown");
  }

  async #connect(): Promise<void> {
    const { pool, signal } = this.#context;
    try {
      try {
        this.#client.setNoDelay(true);
        // The connection arrives through onLease, before anything can be delivered on it. The
        // session's own signal (aborted by whatever ends it, the drain included) stops a wait in
        // the --max-upstream queue or a dial as soon as the session is over.
        await pool.borrow(this, this.#stop.signal);
      } catch (error) {
        this.#finish(connectEnd(error, signal), error);
        return;
      }
      // Ended while connecting: the teardown releases the connection.
      if (this.#end !== undefined) return;
      this.#pumping = this.#pumpClientToUpstream();
    } catch (error) {
      // Nothing above should throw; if it does, it costs this session, not the process.
      reportUnexpected(`session ${this.#id}`, error);
      this.#finish("internal-error", error);
    }
  }

  /** Part of {@link LeaseHandlers}: the pool leased `conn` to this session. */
  onLease(conn: UpstreamConn, fromPool: boolean): void {
    this.#up = conn;
    this.#serverActiveAt = performance.now();
    this.#rearm(); // the server timeout starts now
    if (this.#source !== "none") return; // a retry's fresh connection
    // Only a connection that sat in the pool can be retried, so only then are bytes kept.
    this.#replayable = fromPool;
    this.#source = fromPool ? "pool" : "dial";
  }

  /** How the session ended, from its end signal; `undefined` while it runs. */
  get #end(): SessionEnd | undefined {
    const signal = this.#stop.signal;
    return signal.aborted ? signal.reason as SessionEnd : undefined;
  }

  #finish(end: SessionEnd, error?: unknown): void {
    if (this.#stop.signal.aborted) return;
    this.#error = error;
    this.#stop.abort(end);
  }

  /** Unblocks and waits for every user of the sockets, releases the upstream, reports. */
  async #teardown(): Promise<void> {
    this.#context.wheel?.delete(this);
    try {
      const clean = this.#isClean();
      // A write stuck on a peer that stopped reading, a pending read: closing ends them.
      if (!clean) this.#up?.close();
      closeQuietly(this.#client);
      try {
        await this.#starting;
        if (!clean) this.#up?.close();
        await this.#pumping;
        if (this.#retrying !== undefined) await this.#retrying;
      } finally {
        // Whatever went wrong above, the connection (and its --max-upstream slot) is given back.
        const up = this.#up;
        if (up !== undefined) {
          await up.endLease();
          this.#release = this.#context.pool.release(up, clean);
        }
      }
    } finally {
      this.#context.onEnd(this);
    }
  }

  summary(): SessionSummary {
    const summary: SessionSummary = {
      id: this.#id,
      client: addressOf(this.#client.remoteAddr),
      upstream: this.#context.upstream,
      end: this.#end ?? "shutdown",
      source: this.#source,
      retried: this.#retried,
      halfClosed: this.#halfClosed,
      bytesFromClient: this.#bytesFromClient,
      bytesFromServer: this.#bytesFromServer,
      durationMs: performance.now() - this.#startedAt,
      release: this.#release,
    };
    if (this.#error !== undefined) summary.error = describeError(this.#error);
    return summary;
  }

  /** The only clean end: the client closed after a complete exchange, with no FIN passed on. */
  #isClean(): boolean {
    return this.#end === "client-closed" && !this.#halfClosed && this.#context.reuse;
  }

  // ---- inactivity timeouts (read by the proxy's timer wheel) ----

  /** Part of {@link Deadline}: when the first of the session's timeouts falls due. */
  dueAt(): number {
    const { clientMs, serverMs, finMs } = this.#context.timeouts;
    let due = Infinity;
    if (clientMs > 0) due = this.#clientActiveAt + clientMs;
    if (serverMs > 0) due = Math.min(due, this.#serverActiveAt + serverMs);
    if (finMs > 0) due = Math.min(due, this.#finDeadline(finMs));
    return due;
  }

  /** Part of {@link Deadline}: a timeout fell due; ends the session with its code. */
  onDue(_now: number): void {
    // The timeout whose deadline came first names the end.
    const { clientMs, serverMs, finMs } = this.#context.timeouts;
    const client = clientMs > 0 ? this.#clientActiveAt + clientMs : Infinity;
    const server = serverMs > 0 ? this.#serverActiveAt + serverMs : Infinity;
    const fin = finMs > 0 ? this.#finDeadline(finMs) : Infinity;
    if (fin <= client && fin <= server) this.#finish("fin-timeout");
    else if (server < client) this.#finish("server-timeout");
    else this.#finish("client-timeout");
  }

  /** Half-closed, the session must see a byte either way within `finMs`; Infinity before. */
  #finDeadline(finMs: number): number {
    if (this.#halfClosedAt === Infinity) return Infinity;
    const lastByte = Math.max(
      this.#clientActiveAt,
      this.#serverActiveAt === Infinity ? 0 : this.#serverActiveAt,
    );
    return Math.max(lastByte, this.#halfClosedAt) + finMs;
  }

  #halfClosing(): void {
    if (this.#halfClosedAt !== Infinity) return;
    this.#halfClosedAt = performance.now();
    this.#rearm(); // the fin timeout starts now
  }

  /**
   * Files the session under its deadline again. Activity only moves a deadline later, which the
   * wheel finds by itself; a timeout that starts (the lease, the first FIN) can move it earlier.
   */
  #rearm(): void {
    if (this.#end === undefined) this.#context.wheel?.add(this);
  }

  // ---- client to upstream ----

  async #pumpClientToUpstream(): Promise<void> {
    const buffers = new ReadBuffers();
    // The previous chunk's send, still in flight while the next chunk is read.
    let sending: Promise<boolean> | undefined;
    try {
      while (this.#end === undefined) {
        let bytesRead: number | null;
        try {
          bytesRead = await this.#client.read(buffers.current);
        } catch (error) {
          // Seen at once, even while a write upstream is blocked: the teardown cuts that write.
          if (!isLocalInterruption(error)) this.#finish("client-error", error);
          return;
        }
        // The client's FIN starts the fin timeout now, even if a write upstream is blocked.
        if (bytesRead === null) this.#halfClosing();
        if (sending !== undefined && !await sending) return;
        sending = undefined;
        if (bytesRead === null) {
          await this.#onClientEof();
          return;
        }
        if (this.#end !== undefined) return;
        const chunk = buffers.current.subarray(0, bytesRead);
        this.#clientActiveAt = performance.now();
        this.#bytesFromClient += bytesRead;
        this.#lastSpeaker = "client";
        const seq = ++this.#clientChunks;
        this.#keepForReplay(chunk);
        sending = this.#sendUpstream(chunk, seq);
        if (buffers.rotate(bytesRead)) {
          if (!await sending) return;
          sending = undefined;
        }
      }
    } finally {
      // Every user of the upstream connection finishes before the session lets it go.
      if (sending !== undefined) await sending;
    }
  }

  #keepForReplay(chunk: Uint8Array): void {
    if (!this.#replayable) return;
    this.#replayBytes += chunk.length;
    if (this.#replayBytes > REPLAY_LIMIT) {
      this.#stopReplay();
      return;
    }
    (this.#replay ??= []).push(chunk.slice());
  }

  #stopReplay(): void {
    this.#replayable = false;
    if (this.#retrying === undefined) this.#replay = undefined;
  }

  /**
   * Sends client chunk number `seq` to the current upstream. During a retry, the retry sends
   * every kept chunk itself; a chunk it already sent is not sent twice.
   *
   * @returns false when the session has ended.
   */
  async #sendUpstream(chunk: Uint8Array, seq: number): Promise<boolean> {
    if (this.#retrying !== undefined && !await this.#retrying) return false;
    if (this.#sentToUpstream >= seq) return true;
    const up = this.#up;
    if (up === undefined) return false;
    try {
      await up.write(chunk);
      this.#serverActiveAt = performance.now();
      if (this.#up === up) this.#sentToUpstream = seq;
      return this.#end === undefined;
    } catch (error) {
      if (this.#end !== undefined) return false;
      if (this.#retrying === undefined && !this.#canRetry()) {
        this.#finish("server-error", error);
        return false;
      }
      // The connection failed under us: a retry (started now, or already by the reader) resends.
      if (!await (this.#retrying ?? this.#retry(up))) return false;
      return this.#sentToUpstream >= seq || await this.#sendUpstream(chunk, seq);
    }
  }

  async #onClientEof(): Promise<void> {
    this.#clientEof = true;
    if (this.#retrying !== undefined && !await this.#retrying) return;
    if (this.#end !== undefined) return;
    if (this.#upstreamEof) {
      this.#finish("server-closed");
      return;
    }
    if (this.#context.reuse && this.#lastSpeaker !== "client" && !this.#answerFlowing()) {
      // The upstream answered after the client's last bytes, and nothing more is on its way:
      // the exchange is complete.
      this.#finish("client-closed");
      return;
    }
    await this.#passFinUpstream();
  }

  /**
   * Whether the upstream's answer is still arriving: a chunk of it is being written to the
   * client, or its last read filled the read buffer (more was waiting).
   */
  #answerFlowing(): boolean {
    return this.#deliveringToClient || this.#up?.lastReadFilled === true;
  }

  async #passFinUpstream(): Promise<void> {
    const up = this.#up;
    if (up === undefined) return;
    this.#halfClosed = true;
    this.#finSentUpstream = true;
    this.#halfClosing();
    try {
      await up.closeWrite();
    } catch (error) {
      if (this.#up === up && !isLocalInterruption(error)) this.#finish("server-error", error);
    }
  }

  // ---- upstream to client (called by the upstream connection's reader) ----

  /** Part of {@link LeaseHandlers}: bytes from the upstream go to the client. */
  async onUpstreamData(_conn: UpstreamConn, chunk: Uint8Array): Promise<void> {
    this.#serverActiveAt = performance.now();
    this.#bytesFromServer += chunk.length;
    this.#lastSpeaker = "upstream";
    if (this.#replayable) this.#stopReplay();
    this.#deliveringToClient = true;
    try {
      await writeAll(this.#client, chunk);
      this.#clientActiveAt = performance.now();
      this.#deliveringToClient = false;
    } catch (error) {
      this.#deliveringToClient = false;
      if (this.#end === undefined) this.#finish("client-error", error);
      // The answer was cut short: what is left of it must not reach anyone.
      else if (this.#up !== undefined) this.#up.unfitReason ??= "answer cut short";
    }
  }

  /** Part of {@link LeaseHandlers}: the upstream sent FIN. */
  onUpstreamEof(conn: UpstreamConn): void {
    if (this.#end !== undefined || conn !== this.#up) return;
    // After our FIN, a clean close is the upstream's answer to it (a sink that read to the end),
    // not a connection that died in the pool; only a reset or a failed write is retried then.
    if (!this.#finSentUpstream && this.#canRetry()) {
      void this.#retry(conn);
      return;
    }
    this.#upstreamEof = true;
    if (this.#clientEof) {
      this.#finish("client-closed");
      return;
    }
    this.#halfClosed = true;
    this.#halfClosing();
    this.#client.closeWrite().catch((error: unknown) => {
      if (!isLocalInterruption(error)) this.#finish("client-error", error);
    });
  }

  /** Part of {@link LeaseHandlers}: a read from the upstream failed. */
  onUpstreamError(conn: UpstreamConn, error: unknown): void {
    if (this.#end !== undefined || conn !== this.#up) return;
    if (this.#canRetry()) {
      void this.#retry(conn);
      return;
    }
    this.#finish("server-error", error);
  }

  // ---- retry on a fresh connection ----

  /**
   * A pooled connection that failed before anything came back may be replaced, once. (Only a
   * connection from the pool is ever `#replayable`.)
   */
  #canRetry(): boolean {
    return !this.#retried && this.#replayable && this.#end === undefined &&
      // A client that sent nothing and left has nothing to rescue.
      !(this.#clientEof && this.#clientChunks === 0);
  }

  /** Replaces the failed `failed` with a fresh connection and replays the client's bytes. */
  #retry(failed: UpstreamConn): Promise<boolean> {
    this.#retried = true;
    const retrying = this.#replaceUpstream(failed).finally(() => {
      // Every kept chunk has been sent again; there is no second retry to keep them for.
      this.#retrying = undefined;
      this.#replayable = false;
      this.#replay = undefined;
    });
    this.#retrying = retrying;
    return retrying;
  }

  async #replaceUpstream(failed: UpstreamConn): Promise<boolean> {
    const { pool, signal } = this.#context;
    failed.close();
    await failed.endLease();
    this.#up = undefined;
    pool.release(failed, false);
    if (this.#end !== undefined) return false;
    let fresh: UpstreamConn;
    try {
      this.#sentToUpstream = 0;
      // Leased through onLease, which makes it the session's connection.
      fresh = (await pool.borrow(this, this.#stop.signal, { fresh: true })).conn;
    } catch (error) {
      this.#finish(connectEnd(error, signal), error);
      return false;
    }
    // Ended meanwhile: the teardown releases it.
    if (this.#end !== undefined) return false;
    try {
      // Chunks the pump keeps while this runs are sent here too, until caught up.
      for (const replay = this.#replay ?? []; this.#sentToUpstream < replay.length;) {
        await fresh.write(replay[this.#sentToUpstream]);
        this.#serverActiveAt = performance.now();
        this.#sentToUpstream++;
      }
      if (this.#finSentUpstream) await fresh.closeWrite();
    } catch (error) {
      if (this.#end === undefined) this.#finish("server-error", error);
      return false;
    }
    return this.#end === undefined;
  }
}

function connectEnd(error: unknown, signal: AbortSignal): SessionEnd {
  if (signal.aborted) return "shutdown";
  if (error instanceof QueueTimeoutError) return "queue-timeout";
  if (error instanceof UpstreamConnectError && error.failure === "timeout") {
    return "connect-timeout";
  }
  return "connect-failed";
}

function addressOf(addr: Deno.Addr): string {
  if (addr.transport === "tcp" || addr.transport === "udp") {
    return formatHostPort({ hostname: addr.hostname, port: addr.port } satisfies HostPort);
  }
  return addr.transport;
}
