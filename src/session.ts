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
 * One end code per session drives both directions: whatever ends the session first sets it (the
 * {@link SessionEnd}) and starts the teardown (close the client socket, wait for every user of the
 * upstream connection, release it once); an `AbortController` exists only while a connection is
 * being borrowed, to stop that borrow.
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
import {
  type ClientConn,
  closeOrCut,
  describeError,
  isLocalInterruption,
  ReadBuffers,
  writeAll,
  writeConn,
} from "./_io.ts";
import type { Deadline, DeadlineWheel } from "./deadline_wheel.ts";
import { UpstreamConnectError } from "./dial.ts";
import { reportUnexpected } from "./failsafe.ts";
import { canAwaitWithoutClient, type ExchangeTracker } from "./framing.ts";
import type { Goodbye } from "./protocols.ts";
import { ReplayBuffer } from "./replay.ts";
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

/**
 * Endings after which what the client received may be an answer cut short: a failure or a
 * timeout on either side, an internal error, the drain running out. The others end cleanly.
 */
const MAY_CUT_SHORT: ReadonlySet<SessionEnd> = new Set<SessionEnd>([
  "client-error",
  "server-error",
  "client-timeout",
  "server-timeout",
  "fin-timeout",
  "internal-error",
  "shutdown",
]);

/** Every {@link SessionEnd}, in the order the README lists them. */
export const SESSION_ENDS: readonly SessionEnd[] = [
  "client-closed",
  "server-closed",
  "client-error",
  "server-error",
  "connect-failed",
  "connect-timeout",
  "queue-timeout",
  "client-timeout",
  "server-timeout",
  "fin-timeout",
  "internal-error",
  "shutdown",
];

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
  /** Milliseconds spent waiting in the `--max-upstream` queue. */
  queueMs: number;
  /**
   * Milliseconds from asking the pool for a connection to having one, the queue wait left out:
   * the dial (and TLS handshake), or next to nothing for a pooled connection; when none came,
   * the time until the borrow failed (a refused or timed-out dial), else 0. A retry's connecting
   * (or failing to) is added.
   */
  connectMs: number;
  /** What the pool did with the connection at the end. */
  release: ReleaseOutcome | "none";
  /** The error behind an error ending, in a few words. */
  error?: string;
  /** Set when no upstream connection could be had because this process ran out of descriptors. */
  outOfDescriptors?: true;
  /**
   * With a framed protocol: why the connection could not be reused, when the protocol said so
   * (`SELECT changes per-connection state`, `memcached binary protocol ...`, invalid bytes).
   */
  unfit?: string;
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
   * With a framed protocol (`--protocol redis` or `memcached`), makes the tracker that follows
   * one connection's exchange; `undefined` for `raw`.
   */
  newTracker: (() => ExchangeTracker) | undefined;
  /** After a framed client left: most bytes and time of owed answers read and dropped to keep its connection. */
  drain: { bytes: number; timeoutMs: number };
  /** With Redis: the command that clears per-connection state and its one reply (`--redis-reset`). */
  reset: { command: Uint8Array; reply: Uint8Array } | undefined;
  /** With a framed protocol: the client's goodbye (`QUIT`, `quit`), answered by the proxy. */
  goodbye: Goodbye | undefined;
  /** With a framed protocol: whether a client's first bytes need a connection that never spoke. */
  needsFreshConnection: ((first: Uint8Array) => boolean) | undefined;
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
  /** Bytes read from the client and sent upstream, so far. */
  readonly bytesFromClient: number;
  /** Bytes read from the upstream and sent to the client, so far. */
  readonly bytesFromServer: number;
  /** Whether a failed pooled connection was replaced by a fresh one. */
  readonly retried: boolean;
  /** Milliseconds since the session was accepted. */
  elapsedMs(): number;
  /** Ends the session now, as `shutdown` (the drain timeout ran out). */
  abort(): void;
  /** What the session did, for the log line (complete once ended). */
  summary(): SessionSummary;
}

/**
 * How long a client's FIN is held on a connection that may still be retried, waiting for the
 * first byte of an answer: a reused connection the upstream closed as it was handed out is then
 * retried with the FIN, instead of the FIN racing the upstream's close. An upstream that answers
 * only after EOF is delayed by this much at most.
 */
export const FIN_HOLD_MS = 50;

/**
 * Starts relaying client session number `id` to the upstream. The session closes `client` and
 * reports through `context.onEnd` once everything it used is released. No buffer is allocated per
 * chunk (only copies kept for a replay, up to 64 KiB: {@link ReplayBuffer}), and little per session: a
 * session is one object whose methods are its callbacks.
 */
export function startSession(
  client: ClientConn,
  id: number,
  context: SessionContext,
): SessionHandle {
  const session = new Session(client, id, context);
  session.start();
  return session;
}

class Session implements LeaseHandlers, SessionHandle, Deadline {
  readonly #client: ClientConn;
  readonly #id: number;
  readonly #context: SessionContext;
  readonly #startedAt = performance.now();
  /** Time spent getting connections (a retry's too), the --max-upstream queue left out. */
  #connectMs = 0;
  #queueMs = 0;
  #up: UpstreamConn | undefined;
  #source: SessionSummary["source"] = "none";
  /**
   * How the session ended; `undefined` while it runs. Set once, by {@link #finish}, by whatever
   * ends the session first; setting it starts the teardown, and both pumps stop when they see it.
   */
  #end: SessionEnd | undefined;
  /**
   * Aborts the borrow under way (a wait in the `--max-upstream` queue, a dial) when the session
   * ends meanwhile; only while borrowing, so a running session holds no controller.
   */
  #borrowing: AbortController | undefined;
  #error: unknown;
  #starting: Promise<void> | undefined;
  #pumping: Promise<void> | undefined;
  /** Where the client's FIN stands; see {@link ClientFin}. */
  #clientFin: ClientFin = "open";
  /** Where the upstream's FIN stands: not seen, seen (the session ended on it), passed on. */
  #upstreamFin: "open" | "seen" | "passed" = "open";
  #lastSpeaker: "none" | "client" | "upstream" = "none";
  /** Runs of client chunks with upstream bytes between them: requests, as far as `raw` can tell. */
  #clientTurns = 0;
  #deliveringToClient = false;
  #bytesFromClient = 0;
  #bytesFromServer = 0;
  /** Client chunks, kept for a replay while one is possible, with the current connection's cursor. */
  #replay = new ReplayBuffer(false);
  /** Writes started on the current upstream connection. */
  #writesToUp = 0;
  #retried = false;
  #release: ReleaseOutcome | "none" = "none";
  #retrying: Promise<boolean> | undefined;
  /** Ends a `held` client FIN after {@link FIN_HOLD_MS}. */
  #finHoldTimer: ReturnType<typeof setTimeout> | undefined;
  /** With a framed protocol: follows the current connection's exchange. */
  #tracker: ExchangeTracker | undefined;
  /** After the client left, with a framed protocol: owed answers are read and dropped. */
  #drain: DrainState | undefined;
  /** The client said goodbye (`QUIT`): the proxy answers it once every owed answer is out. */
  #saidGoodbye = false;
  // Inactivity timeouts: `performance.now()` of the last byte read from or written to each side
  // (the upstream's from the lease on), and of the first FIN; read by the timer wheel.
  #clientActiveAt: number;
  #serverActiveAt = Infinity;
  #halfClosedAt = Infinity;

  constructor(client: ClientConn, id: number, context: SessionContext) {
    this.#client = client;
    this.#id = id;
    this.#context = context;
    this.#clientActiveAt = this.#startedAt;
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

  get bytesFromClient(): number {
    return this.#bytesFromClient;
  }

  get bytesFromServer(): number {
    return this.#bytesFromServer;
  }

  get retried(): boolean {
    return this.#retried;
  }

  elapsedMs(): number {
    return performance.now() - this.#startedAt;
  }

  /** Part of {@link LeaseHandlers}: the session waited `ms` in the `--max-upstream` queue. */
  onQueued(ms: number): void {
    this.#queueMs += ms;
  }

  async #connect(): Promise<void> {
    const { pool, signal } = this.#context;
    try {
      try {
        this.#client.setNoDelay(true);
        // The connection arrives through onLease, before anything can be delivered on it. Whatever
        // ends the session (the drain included) stops a wait in the --max-upstream queue or a dial
        // at once.
        // An idle pooled connection is leased at once; only a dial or a wait needs a borrow that
        // can be stopped.
        const hitAt = performance.now();
        if (pool.borrowIdle(this) !== undefined) this.#connectMs += performance.now() - hitAt;
        else await this.#borrow(pool, false);
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
    this.#writesToUp = 0;
    this.#tracker = this.#context.newTracker?.();
    this.#rearm(); // the server timeout starts now
    if (this.#source !== "none") return; // a retry's fresh connection
    this.#source = fromPool ? "pool" : "dial";
    // Go's rule: only a connection that served an earlier session may be retried after a client
    // byte was written to it, so only then are the client's bytes kept for a replay.
    this.#replay = new ReplayBuffer(conn.leases > 1);
  }

  /**
   * Ends the session, once: whatever comes first names the end. Stops a borrow under way and
   * starts the teardown (its synchronous part runs now).
   */
  #finish(end: SessionEnd, error?: unknown): void {
    if (this.#end !== undefined) return;
    this.#end = end;
    this.#error = error;
    this.#borrowing?.abort(end);
    this.#teardown().catch((error: unknown) =>
      reportUnexpected(`the teardown of session ${this.#id}`, error)
    );
  }

  /**
   * Closes the client. After an ending that may have cut an answer short, a TLS client is closed
   * without close_notify, so that it sees a truncated stream, not a complete one (the upstream
   * likewise: {@link closeUpstream}).
   */
  #closeClient(): void {
    closeOrCut(this.#client, this.#mayHaveCutShort);
  }

  /**
   * Closes the upstream connection, after the same endings as {@link closeClient} without the
   * clean end of stream (over TLS, no close_notify), so that a request cut short is not taken
   * for a complete one; unless the framing knows every request sent was whole.
   */
  #closeUpstream(): void {
    if (this.#requestMayBeCutShort) this.#up?.abort();
    else this.#up?.close();
  }

  /**
   * Whether the upstream may have received a request cut short: after an ending that may cut
   * short, unless a framed session's tracker saw every request it sent end (a client that went
   * quiet after a whole `BLPOP` was cut, and the server logged it). A request the tracker saw
   * whole but whose write is still under way is cut all the same: the clean end queues behind
   * the unwritten bytes, which the close drops (`SocketConn.close`).
   */
  get #requestMayBeCutShort(): boolean {
    if (!this.#mayHaveCutShort) return false;
    const tracker = this.#tracker;
    // Per-connection state (AUTH, SELECT: `state`) leaves the exchange framed; `broken` does not.
    return tracker === undefined || tracker.unfit?.kind === "broken" || tracker.partialRequest;
  }

  /** Whether the session's ending may have cut a request or an answer short ({@link MAY_CUT_SHORT}). */
  get #mayHaveCutShort(): boolean {
    return this.#end !== undefined && MAY_CUT_SHORT.has(this.#end);
  }

  /**
   * Borrows a connection (leased through onLease), stopped if the session ends meanwhile. The
   * time it takes, to the connection or to the failure, adds to the connect time; its wait in
   * the --max-upstream queue does not.
   */
  async #borrow(
    pool: SessionContext["pool"],
    fresh: boolean,
    unchecked = false,
  ): Promise<UpstreamConn> {
    const borrowing = new AbortController();
    if (this.#end !== undefined) borrowing.abort(this.#end);
    this.#borrowing = borrowing;
    const startedAt = performance.now();
    const queuedBefore = this.#queueMs;
    try {
      return (await pool.borrow(this, borrowing.signal, { fresh, unchecked })).conn;
    } finally {
      this.#borrowing = undefined;
      const queued = this.#queueMs - queuedBefore;
      this.#connectMs += Math.max(0, performance.now() - startedAt - queued);
    }
  }

  /** Unblocks and waits for every user of the sockets, releases the upstream, reports. */
  async #teardown(): Promise<void> {
    this.#context.wheel?.delete(this);
    clearTimeout(this.#finHoldTimer);
    let bound: ReturnType<typeof setTimeout> | undefined;
    try {
      // A framed connection may outlive its client, if its owed answers can be drained.
      const framed = this.#framedReuse;
      const keep = framed ? this.#mayDrain() : this.#isClean();
      if (keep && framed) {
        this.#drain = { bytes: 0, done: undefined, expect: undefined, matched: 0 };
        // Everything after the client left is bounded by --reuse-drain-timeout. A complete
        // exchange (the usual end) waits for nothing, and sets no timer.
        if (this.#drainMayWait()) bound = this.#boundDrain();
      }
      // A write stuck on a peer that stopped reading, a pending read: closing ends them.
      if (!keep) this.#closeUpstream();
      this.#closeClient();
      let ok = false;
      try {
        await this.#starting;
        if (!keep) this.#closeUpstream();
        await this.#pumping;
        if (this.#retrying !== undefined) await this.#retrying;
        // A complete exchange waits for nothing more (the usual end: no async step).
        if (keep && !framed) ok = true;
        else if (keep && this.#drainMayWait()) {
          bound ??= this.#boundDrain(); // something owed since the teardown began
          ok = await this.#finishExchange();
        } else if (keep) ok = this.#mayDrain();
      } finally {
        clearTimeout(bound);
        // Whatever went wrong above, the connection (and its --max-upstream slot) is given back.
        const up = this.#up;
        if (up !== undefined) {
          await up.endLease();
          this.#release = this.#context.pool.release(up, ok);
        }
        // Kept bytes no answer came for (a client that left first, a request with no reply):
        // their store goes back to the free list, unless a retry still sends them (it drops).
        if (this.#retrying === undefined) this.#replay.drop();
      }
    } finally {
      this.#context.onEnd(this);
    }
  }

  // ---- after a framed client left: drain owed answers, reset state ----

  /** Whether the connection can still be brought to a complete exchange once the client is gone. */
  #mayDrain(): boolean {
    const up = this.#up;
    const tracker = this.#tracker;
    return up !== undefined && tracker !== undefined && !this.#halfClosed &&
      up.state !== "closed" && up.unfitReason === undefined && canAwaitWithoutClient(tracker) &&
      !UNDRAINABLE.has(this.#end ?? "shutdown");
  }

  /** Starts the --reuse-drain-timeout timer of a drain: at the end, the connection is closed. */
  #boundDrain(): ReturnType<typeof setTimeout> {
    return setTimeout(
      () => this.#endDrain(false, "owed answers too slow"),
      this.#context.drain.timeoutMs,
    );
  }

  /**
   * Whether {@link #finishExchange} will wait on the upstream: answers are owed or arriving, or
   * per-connection state must be reset. Otherwise the client's leaving ends the exchange at once.
   */
  #drainMayWait(): boolean {
    const tracker = this.#tracker;
    return tracker === undefined || tracker.owed > 0 || tracker.partialResponse ||
      tracker.unfit?.kind === "state" || this.#retrying !== undefined;
  }

  /**
   * Reads the owed answers to their end and drops them, then clears per-connection state with
   * the protocol's reset if allowed. @returns whether the connection may go back to the pool.
   */
  async #finishExchange(): Promise<boolean> {
    const up = this.#up;
    const tracker = this.#tracker;
    const drain = this.#drain;
    if (up === undefined || tracker === undefined || drain === undefined || !this.#mayDrain()) {
      return false;
    }
    if (tracker.owed > 0 || tracker.partialResponse) {
      // A connection that serves one session is closed whatever comes: no use waiting for it.
      if (up.oneSessionOnly !== undefined) return false;
      const complete = new Promise<boolean>((resolve) => drain.done = resolve);
      if (!await complete) return false;
    }
    if (tracker.unfit?.kind !== "state") return true;
    const reset = this.#context.reset;
    if (reset === undefined || tracker.unfit.resetClears === false) {
      // Complete, but with state (that no reset is sure to clear): the pool refuses it as
      // unfit, with the command named.
      up.unfitReason ??= tracker.unfit.reason;
      return true;
    }
    drain.expect = reset.reply;
    const replied = new Promise<boolean>((resolve) => drain.done = resolve);
    try {
      await up.write(reset.command);
    } catch {
      return false;
    }
    return await replied;
  }

  /** Upstream bytes after the session ended: dropped, counted, and checked for the drain's end. */
  #drained(conn: UpstreamConn, chunk: Uint8Array): void {
    const drain = this.#drain;
    if (drain === undefined) {
      conn.unfitReason ??= "answer cut short"; // not draining: what is left must not reach anyone
      return;
    }
    const expect = drain.expect;
    if (expect !== undefined) {
      // The reset's one reply, byte for byte, and nothing after it.
      const fits = chunk.length <= expect.length - drain.matched &&
        chunk.every((byte, i) => byte === expect[drain.matched + i]);
      if (!fits) {
        this.#endDrain(false, "unexpected reply to the reset");
        return;
      }
      drain.matched += chunk.length;
      if (drain.matched === expect.length) this.#endDrain(true);
      return;
    }
    drain.bytes += chunk.length;
    const tracker = this.#tracker;
    if (drain.bytes > this.#context.drain.bytes) {
      this.#endDrain(false, "owed answers over --reuse-drain-bytes");
    } else if (tracker === undefined || tracker.unfit?.kind === "broken") {
      this.#endDrain(false, tracker?.unfit?.reason ?? "no framing");
    } else if (tracker.owed === 0 && !tracker.partialResponse) {
      this.#endDrain(true);
    }
  }

  /** Ends the drain: complete, or not (then the connection is closed, with the reason). */
  #endDrain(complete: boolean, reason?: string): void {
    const drain = this.#drain;
    if (drain === undefined) return;
    if (!complete && this.#up !== undefined) {
      this.#up.unfitReason ??= reason ?? "drain failed";
      this.#up.close();
    }
    const done = drain.done;
    drain.done = undefined;
    done?.(complete);
  }

  /** Whether a FIN was passed on, either way: the connection can no longer be reused. */
  get #halfClosed(): boolean {
    return this.#clientFin === "passed" || this.#upstreamFin === "passed";
  }

  /** Whether connections are pooled by framing (`--pool reuse` with a framed protocol). */
  get #framedReuse(): boolean {
    return this.#context.reuse && this.#context.newTracker !== undefined;
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
      queueMs: this.#queueMs,
      connectMs: this.#connectMs,
      release: this.#release,
    };
    if (this.#error !== undefined) summary.error = describeError(this.#error);
    if (this.#error instanceof UpstreamConnectError && this.#error.failure === "descriptors") {
      summary.outOfDescriptors = true;
    }
    const unfit = this.#tracker?.unfit;
    if (unfit !== undefined) summary.unfit = `${unfit.kind}: ${unfit.reason}`;
    return summary;
  }

  /** The only clean end: the client closed after a complete exchange, with no FIN passed on. */
  #isClean(): boolean {
    // A retried raw session is not pooled either: what its fresh connection said first is not
    // known to have been a reply.
    return this.#end === "client-closed" && !this.#halfClosed && this.#context.reuse &&
      !this.#retried;
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
    // A new client's first request is usually waiting already: one read for it, up to 64 KiB.
    const buffers = new ReadBuffers({ firstReadLarge: true });
    // The previous chunk's send, still in flight while the next chunk is read.
    let sending: Promise<boolean> | undefined;
    try {
      while (this.#end === undefined) {
        let chunk: Uint8Array | null;
        try {
          // next() is the socket's own read: a quiet client's pending read holds nothing more.
          const n = await buffers.next(this.#client);
          chunk = n === null || n === 0
            ? null // the end of the stream
            : buffers.chunk(n) ?? await buffers.readRest(this.#client);
        } catch (error) {
          // Seen at once, even while a write upstream is blocked: the teardown cuts that write.
          if (!isLocalInterruption(error)) this.#finish("client-error", error);
          return;
        }
        // The client's FIN starts the fin timeout now, even if a write upstream is blocked.
        if (chunk === null) this.#halfClosing();
        if (sending !== undefined && !await sending) return;
        sending = undefined;
        if (chunk === null) {
          await this.#onClientEof();
          return;
        }
        if (this.#end !== undefined) return;
        this.#clientActiveAt = performance.now();
        this.#bytesFromClient += chunk.length;
        if (this.#lastSpeaker !== "client") this.#clientTurns++;
        this.#lastSpeaker = "client";
        const goodbye = this.#goodbyeLength(chunk);
        const forward = goodbye > 0 ? chunk.subarray(0, chunk.length - goodbye) : chunk;
        if (forward.length > 0) sending = this.#sendUpstream(forward, this.#replay.take(forward));
        if (goodbye > 0) {
          if (this.#retrying === undefined && this.#canKeepFinBack()) {
            // A goodbye at a request boundary: not passed on; the session ends as at a FIN.
            this.#saidGoodbye = true;
            this.#halfClosing();
            if (sending !== undefined && !await sending) return;
            sending = undefined;
            await this.#onClientEof();
            return;
          }
          const rest = chunk.subarray(chunk.length - goodbye);
          if (sending !== undefined && !await sending) return;
          sending = this.#sendUpstream(rest, this.#replay.take(rest));
        }
        if (buffers.rotate(chunk.length)) {
          if (!await sending) return;
          sending = undefined;
        }
      }
    } finally {
      // Every user of the upstream connection finishes before the session lets it go.
      try {
        if (sending !== undefined) await sending;
      } finally {
        buffers.dispose();
      }
    }
  }

  /**
   * Sends client chunk number `seq` to the current upstream. During a retry, the retry sends
   * every kept chunk itself; a chunk it already sent is not sent twice.
   *
   * @returns false when the session has ended.
   */
  async #sendUpstream(chunk: Uint8Array, seq: number): Promise<boolean> {
    if (this.#retrying !== undefined && !await this.#retrying) return false;
    if (this.#replay.isSent(seq)) return true;
    const up = this.#up;
    // No client byte goes upstream once the session has ended (a retry may finish after that).
    if (up === undefined || this.#end !== undefined) return false;
    if (
      seq === 1 && (up.leases > 1 || up.checked) &&
      this.#context.needsFreshConnection?.(chunk) === true
    ) {
      // The connection has spoken (to an earlier client, or the pool's opening check) in another
      // dialect than this client's: swap it for a fresh one that has not, before a byte is
      // written (a retry: nothing was written, nothing came back).
      if (!this.#canRetry() || !await this.#retry(up, { dialectSwap: true })) {
        if (this.#end === undefined) this.#finish("connect-failed");
        return false;
      }
      return this.#replay.isSent(seq) || await this.#sendUpstream(chunk, seq);
    }
    try {
      await this.#writeUp(up, chunk);
      this.#serverActiveAt = performance.now();
      if (this.#up === up) this.#replay.markSent(seq);
      return this.#end === undefined;
    } catch (error) {
      if (this.#end !== undefined) return false;
      if (this.#retrying === undefined && !this.#canRetry()) {
        this.#finish("server-error", error);
        return false;
      }
      // The connection failed under us: a retry (started now, or already by the reader) resends.
      if (!await (this.#retrying ?? this.#retry(up))) return false;
      return this.#replay.isSent(seq) || await this.#sendUpstream(chunk, seq);
    }
  }

  /**
   * Writes client bytes to `up`: the one place they go upstream, and where framing sees them.
   * The caller records the upstream's activity ({@link #serverActiveAt}) once the write is done.
   */
  #writeUp(up: UpstreamConn, chunk: Uint8Array): Promise<void> {
    this.#writesToUp++;
    this.#tracker?.onClientBytes(chunk);
    return up.write(chunk);
  }

  /**
   * Framed reuse can keep the client's FIN (or goodbye) back and wait for the owed answers: the
   * tracker still follows the exchange, nothing is sent in part, and every owed answer can settle.
   */
  #canKeepFinBack(): boolean {
    const tracker = this.#tracker;
    // A connection that serves one session only is closed anyway: its FIN is passed on, as in
    // `off`, and the session need not wait for answers that may never come.
    return this.#framedReuse && tracker !== undefined && canAwaitWithoutClient(tracker) &&
      this.#up?.oneSessionOnly === undefined;
  }

  /** The bytes of a goodbye command ending `chunk`, if the exchange is framed and reused. */
  #goodbyeLength(chunk: Uint8Array): number {
    const goodbye = this.#context.goodbye;
    return goodbye === undefined || !this.#framedReuse ? 0 : goodbye.suffix(chunk);
  }

  /**
   * Every owed answer is out: ends the session, after answering the client's goodbye if it said
   * one. @returns the write of that answer, the only thing to wait for; undefined without one.
   */
  #answeredAll(): Promise<void> | undefined {
    const reply = this.#context.goodbye?.reply;
    if (!this.#saidGoodbye || reply === undefined) {
      this.#finish("client-closed");
      return undefined;
    }
    return writeAll(this.#client, reply).catch(() => {
      // the client did not wait for it
    }).finally(() => this.#finish("client-closed"));
  }

  async #onClientEof(): Promise<void> {
    this.#clientFin = "read";
    if (this.#retrying !== undefined && !await this.#retrying) return;
    if (this.#end !== undefined) return;
    if (this.#upstreamFin !== "open") {
      this.#finish("server-closed");
      return;
    }
    const tracker = this.#framedReuse ? this.#tracker : undefined;
    if (tracker !== undefined && this.#canKeepFinBack()) {
      // Framed: the FIN is not passed on (the connection stays reusable). Every owed answer is
      // still relayed to the client (it may have only half-closed), then the session ends; a
      // client that closed for good is found out by the write, and the answers are drained.
      this.#clientFin = "kept";
      if (tracker.owed === 0 && !tracker.partialResponse && !this.#deliveringToClient) {
        await this.#answeredAll();
      }
      return;
    }
    if (
      tracker === undefined && this.#context.reuse && this.#lastSpeaker !== "client" &&
      !this.#answerFlowing() && this.#clientTurns === 1 && this.#upstreamMayGoBack()
    ) {
      // Raw: the upstream answered after the client's one request, and nothing more is on its
      // way: as complete as timing can tell. (With two or more requests, a late tail of an
      // earlier answer looks the same as a whole answer to the last one: never pooled. With
      // none, the client may be waiting for the upstream to speak first. And a connection that
      // cannot go back anyway, one that greeted, gets the FIN as in `off`: its greeting is no
      // answer.)
      this.#clientFin = "kept";
      this.#finish("client-closed");
      return;
    }
    if (this.#canRetry()) {
      // Held until an answer begins, the connection fails (then the retry passes it on), or
      // FIN_HOLD_MS passes: a FIN must not race a reused connection's close.
      this.#clientFin = "held";
      this.#finHoldTimer = setTimeout(() => void this.#releaseFin(), FIN_HOLD_MS);
      return;
    }
    await this.#passFinUpstream();
  }

  /** Whether the upstream connection could still go back to the pool as far as it knows. */
  #upstreamMayGoBack(): boolean {
    const up = this.#up;
    return up !== undefined && up.unfitReason === undefined && !up.spokeBeforeWrite &&
      up.oneSessionOnly === undefined;
  }

  /**
   * Whether the upstream's answer is still arriving: a chunk of it is being written to the
   * client, or its last read filled the read buffer (more was waiting).
   */
  #answerFlowing(): boolean {
    return this.#deliveringToClient || this.#up?.lastReadFilled === true;
  }

  /** Passes on a held client FIN, if one is held. */
  async #releaseFin(): Promise<void> {
    if (this.#clientFin !== "held") return;
    clearTimeout(this.#finHoldTimer);
    if (this.#end !== undefined) return;
    if (this.#retrying !== undefined) this.#clientFin = "owed"; // the retry passes it on
    else await this.#passFinUpstream();
  }

  async #passFinUpstream(): Promise<void> {
    const up = this.#up;
    if (up === undefined) return;
    this.#clientFin = "passed"; // the fin timeout runs since the FIN was read
    try {
      await up.closeWrite();
    } catch (error) {
      if (this.#up === up && !isLocalInterruption(error)) this.#finish("server-error", error);
    }
  }

  // ---- upstream to client (called by the upstream connection's reader) ----

  /** Part of {@link LeaseHandlers}: bytes from the upstream go to the client. */
  async onUpstreamData(conn: UpstreamConn, chunk: Uint8Array): Promise<void> {
    try {
      this.#serverActiveAt = performance.now();
      this.#bytesFromServer += chunk.length;
      this.#lastSpeaker = "upstream";
      // A server that speaks first (MySQL, SMTP, FTP) sets up handshake state that raw reuse
      // cannot see the end of: never pooled.
      if (this.#replay.taken === 0) {
        conn.unfitReason ??= "the upstream spoke first (handshake state)";
      }
      // The reply to a reset is the proxy's own, not part of the client's exchange.
      if (this.#drain?.expect === undefined) this.#tracker?.onServerBytes(chunk);
      // An answer began: nothing will be replayed, and a held FIN may go.
      if (this.#retrying === undefined) this.#replay.drop();
      else this.#replay.stopKeeping();
      if (this.#clientFin === "held") void this.#releaseFin();
      if (this.#end !== undefined) {
        this.#drained(conn, chunk);
        return;
      }
      this.#deliveringToClient = true;
      try {
        // As in UpstreamConn.write: writeAll only for the rest of a short write.
        const written = await writeConn(this.#client, chunk);
        if (written < chunk.length) await writeAll(this.#client, chunk.subarray(written));
        this.#clientActiveAt = performance.now();
        this.#deliveringToClient = false;
      } catch (error) {
        this.#deliveringToClient = false;
        if (this.#end === undefined) this.#finish("client-error", error);
        // The answer was cut short: what is left of it must not reach anyone (framing drains it).
        else if (this.#drain === undefined) conn.unfitReason ??= "answer cut short";
        return;
      }
      // A framed client whose FIN was kept back waits for its owed answers: the last one ends the
      // session. If the exchange can no longer be followed, the FIN goes on after all.
      const tracker = this.#tracker;
      if (this.#clientFin !== "kept" || tracker === undefined || this.#retrying !== undefined) {
        return;
      }
      if (!this.#canKeepFinBack()) {
        await this.#passFinUpstream();
      } else if (tracker.owed === 0 && !tracker.partialResponse) {
        await this.#answeredAll();
      }
    } catch (error) {
      // Nothing above should throw (it must not reject); if it does, it costs this session and
      // this connection, not the process, and the session ends now.
      reportUnexpected(`session ${this.#id}`, error);
      conn.unfitReason ??= "internal error";
      this.#endDrain(false, "internal error"); // when the client had left already
      this.#finish("internal-error", error);
    }
  }

  /** Part of {@link LeaseHandlers}: the upstream sent FIN. */
  onUpstreamEof(conn: UpstreamConn): void {
    if (conn !== this.#up) return;
    if (this.#end !== undefined) {
      this.#endDrain(false, "closed by upstream while draining");
      return;
    }
    // After our FIN, a clean close is the upstream's answer to it (a sink that read to the end),
    // not a connection that died in the pool; only a reset or a failed write is retried then.
    if (this.#clientFin !== "passed" && this.#canRetry()) {
      void this.#retry(conn);
      return;
    }
    this.#upstreamFin = "seen";
    if (this.#clientFin !== "open") {
      this.#finish("client-closed");
      return;
    }
    this.#upstreamFin = "passed";
    this.#halfClosing();
    this.#client.closeWrite().catch((error: unknown) => {
      if (!isLocalInterruption(error)) this.#finish("client-error", error);
    });
  }

  /** Part of {@link LeaseHandlers}: a read from the upstream failed. */
  onUpstreamError(conn: UpstreamConn, error: unknown): void {
    if (conn !== this.#up) return;
    if (this.#end !== undefined) {
      this.#endDrain(false, "read failed while draining");
      return;
    }
    if (conn.handshakeRefused !== undefined && conn.leases === 1 && this.#bytesFromServer === 0) {
      // A TLS 1.3 server refused our certificate after the handshake: the dial failed after all
      // (and a retry would only be refused again).
      this.#finish("connect-failed", this.#context.pool.refusedOnFirstUse(conn));
      return;
    }
    if (this.#canRetry()) {
      void this.#retry(conn);
      return;
    }
    this.#finish("server-error", error);
  }

  // ---- retry on a fresh connection ----

  /**
   * Go's rule: a connection that failed before anything came back may be replaced, once, when
   * either no client byte was written to it yet, or it served an earlier session (and every
   * client byte is kept for the replay). A fresh connection on its first use is never retried
   * after a byte was written: a server has no reason to hang up on it, and a replay could run a
   * command twice.
   */
  #canRetry(): boolean {
    const up = this.#up;
    return !this.#retried && this.#end === undefined && up !== undefined &&
      this.#bytesFromServer === 0 &&
      (this.#writesToUp === 0 || (up.leases > 1 && this.#replay.whole)) &&
      // A client that sent nothing and left has nothing to rescue.
      !(this.#clientFin !== "open" && this.#replay.taken === 0);
  }

  /**
   * Replaces `previous` (it failed, or with `dialectSwap` it has spoken in another dialect than
   * this client's) with a fresh connection and replays the client's bytes.
   */
  #retry(previous: UpstreamConn, { dialectSwap = false } = {}): Promise<boolean> {
    this.#retried = true;
    const retrying = this.#replaceUpstream(previous, dialectSwap).finally(() => {
      // Every kept chunk has been sent again; there is no second retry to keep them for.
      this.#retrying = undefined;
      this.#replay.drop();
    });
    this.#retrying = retrying;
    return retrying;
  }

  async #replaceUpstream(previous: UpstreamConn, dialectSwap: boolean): Promise<boolean> {
    const { pool, signal } = this.#context;
    // After a dialect swap the connection is good: nothing was written to it and nothing came
    // back, so it goes back to the pool (as after a clean session) for a client of its dialect.
    if (!dialectSwap) previous.close();
    await previous.endLease();
    this.#up = undefined;
    pool.release(previous, dialectSwap);
    if (this.#end !== undefined) return false;
    let fresh: UpstreamConn;
    try {
      this.#replay.restart();
      // Leased through onLease, which makes it the session's connection.
      // The fresh one for a dialect swap must not have spoken either: no opening check.
      fresh = await this.#borrow(pool, true, dialectSwap);
    } catch (error) {
      this.#finish(connectEnd(error, signal), error);
      return false;
    }
    // Ended meanwhile: the teardown releases it.
    if (this.#end !== undefined) return false;
    try {
      // Chunks the pump keeps while this runs are sent here too, until caught up.
      while (true) {
        // Checked before a chunk is lent: a lent chunk keeps its store off the free list.
        if (this.#end !== undefined) return false;
        const chunk = this.#replay.nextUnsent();
        if (chunk === undefined) break;
        await this.#writeUp(fresh, chunk);
        this.#serverActiveAt = performance.now();
        this.#replay.advance();
      }
      // The client's FIN, passed on or held, goes to the fresh connection too.
      const fin = this.#clientFin;
      if (fin === "passed" || fin === "held" || fin === "owed") {
        clearTimeout(this.#finHoldTimer);
        this.#clientFin = "passed";
        await fresh.closeWrite();
      }
    } catch (error) {
      if (this.#end === undefined) this.#finish("server-error", error);
      return false;
    }
    return this.#end === undefined;
  }
}

/** Ends after which a framed connection is not worth draining: the upstream failed or stalled. */
const UNDRAINABLE: ReadonlySet<SessionEnd> = new Set<SessionEnd>([
  "server-timeout",
  "server-error",
  "server-closed",
  "internal-error",
  "shutdown",
]);

/**
 * Where the client's FIN stands:
 * - `open`: none read yet.
 * - `read`: read; what to do with it is being decided (a retry under way finishes first).
 * - `held`: held back while the connection may still be retried, until an answer begins, the
 *   retry takes it along, or {@link FIN_HOLD_MS} pass.
 * - `owed`: the hold ended while a retry was under way: the retry passes it to the fresh
 *   connection.
 * - `kept`: not passed on, the exchange being complete or framed: the session ends once every
 *   owed answer has been written (at once when none is owed).
 * - `passed`: passed on upstream; the connection is half-closed and never pooled.
 */
type ClientFin = "open" | "read" | "held" | "owed" | "kept" | "passed";

/** A framed session's connection after its client left. */
interface DrainState {
  /** Upstream bytes dropped so far (bounded by `--reuse-drain-bytes`). */
  bytes: number;
  /** Called once the drain (or the reset) is over: complete or not. */
  done: ((complete: boolean) => void) | undefined;
  /** While a reset runs: the one reply expected, and how much of it arrived. */
  expect: Uint8Array | undefined;
  matched: number;
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
