/**
 * Whether a `raw` upstream greets, learned once per pool, so that `raw` reuse never pools a
 * connection that carries handshake state.
 *
 * A server that speaks first (MySQL, SMTP, FTP) sets up handshake state that `raw` reuse cannot see
 * the end of, so a connection whose upstream spoke before any client byte was written to it is
 * never pooled. That rule alone needs the greeting to arrive before the client's first write. A
 * client that does not wait to be greeted, on a connection dialled for it, races the greeting:
 * its request is written at once, the greeting arrives after it and reads as the answer, and the
 * connection went back to the pool with that client's login in it, for the next client to use.
 *
 * So the pool finds out, once, whether its upstream greets. Until it knows, every new connection
 * is leased at once (what the upstream sends is relayed), but no client byte is written to it for
 * {@link GreetingWatch.windowMs} (or twice its own connect time, if longer, up to
 * {@link MAX_CONNECT_WINDOW_MS}). Two connections that stay silent that long say the upstream does
 * not greet, and from then on nothing waits; one that speaks says it does, and from then on no
 * connection is pooled at all (any of them may have raced its greeting). A connection that speaks
 * first later on teaches the same. A timing guess, as `raw` reuse is: a greeting later than the
 * window is taken for silence. A window is judged only after the event loop has polled the socket
 * once more: after a stall (a long GC pause, a throttled container) the window's timer runs before
 * reads that became ready meanwhile, and a greeting that came in time would read as silence.
 *
 * ```ts
 * const watch = new GreetingWatch(5, "127.0.0.1:3306");
 * // in the pool's dial: the connection is leased at once, its writes wait for the watch
 * if (!watch.known) conn.holdWrites(watch.watch(conn, dialMs, closing));
 * // in the pool's release:
 * watch.learnFrom(conn);
 * conn.unfitReason ??= watch.unfitReason;
 * ```
 *
 * @module
 */

import { anyAborted, onAnyAbort } from "./abort.ts";
import { getProxyLogger, type Logger } from "./logging.ts";
import type { UpstreamConn } from "./upstream_conn.ts";

/** Why a connection of an upstream that greets is not pooled with `raw` reuse. */
export const GREETS_REASON = "the upstream greets (handshake state)";

/** The least time a new connection is watched for a greeting, however short `--reuse-settle` is. */
export const MIN_GREETING_WINDOW_MS = 5;

/**
 * The most a slow connect lengthens the window (twice the connect time): a connect that took a
 * second lost its SYN, which says nothing of the round trip a greeting takes.
 */
export const MAX_CONNECT_WINDOW_MS = 250;

/** How many connections must stay silent through their window before the pool stops watching. */
export const SILENT_CONNECTIONS_TO_LEARN = 2;

/** What one pool has learned of its upstream's greeting; see the module documentation. */
export class GreetingWatch {
  /** How long a new connection is watched while it is not known (at least twice its connect time). */
  readonly windowMs: number;
  readonly #upstream: string;
  readonly #log: Logger = getProxyLogger("pool");
  #greets: boolean | undefined;
  #silentConnections = 0;

  /**
   * @param windowMs How long a connection must stay silent to show that the upstream does not
   *   greet (`--reuse-settle`, at least {@link MIN_GREETING_WINDOW_MS}).
   * @param upstream The upstream's address, for the log line.
   */
  constructor(windowMs: number, upstream: string) {
    this.windowMs = Math.max(windowMs, MIN_GREETING_WINDOW_MS);
    this.#upstream = upstream;
  }

  /** Whether it is known yet whether the upstream greets. */
  get known(): boolean {
    return this.#greets !== undefined;
  }

  /** `true` once a connection spoke first, `false` once enough stayed silent, `undefined` before. */
  get greets(): boolean | undefined {
    return this.#greets;
  }

  /** Why no connection may be pooled: {@link GREETS_REASON} once the upstream is known to greet. */
  get unfitReason(): string | undefined {
    return this.#greets === true ? GREETS_REASON : undefined;
  }

  /**
   * Waits on a new connection (its reader running, leased or not, its writes held) for its
   * window, or until one of `signals` aborts, then learns from it: bytes before any write (kept
   * as its greeting, or relayed to its session) say the upstream greets; silence says it may not;
   * a connection lost or closed meanwhile says nothing. Never rejects.
   */
  async watch(conn: UpstreamConn, dialMs: number, ...signals: AbortSignal[]): Promise<void> {
    const ms = Math.max(this.windowMs, Math.min(2 * dialMs, MAX_CONNECT_WINDOW_MS));
    await waitFor(ms, signals);
    // One more turn of the event loop, so that a read that became ready by now has run.
    await waitFor(0, signals);
    if (anyAborted(signals)) return;
    this.learnFrom(conn);
    // Not a silent window: it spoke (learned above), was lost, or was closed early (its client
    // left at once), so it was not watched that long.
    if (conn.spokeBeforeWrite || conn.unfitReason !== undefined || conn.state === "closed") return;
    if (this.#greets === undefined && ++this.#silentConnections >= SILENT_CONNECTIONS_TO_LEARN) {
      this.#greets = false;
    }
  }

  /** Learns from a connection that spoke before anything was written to it (and was not refused). */
  learnFrom(conn: UpstreamConn): void {
    if (!greeted(conn) || this.#greets === true) return;
    this.#greets = true;
    this.#log.warn(
      "upstream {upstream} speaks first (a greeting): with --protocol raw its connections carry " +
        "handshake state, so from now on each serves one session and is closed; use --pool warm",
      { upstream: this.#upstream },
    );
  }
}

/** Resolves after `ms`, or at once when one of `signals` aborts (at once if one has). */
function waitFor(ms: number, signals: AbortSignal[]): Promise<void> {
  if (anyAborted(signals)) return Promise.resolve();
  return new Promise<void>((resolve) => {
    const done = () => {
      clearTimeout(timer);
      stop();
      resolve();
    };
    const timer = setTimeout(done, ms);
    const stop = onAnyAbort(signals, done);
  });
}

/**
 * Whether `conn` was greeted: its upstream spoke first and did not end it on its own. A server
 * that speaks and closes (Redis at its client limit: `-ERR max number of clients reached`)
 * refused the connection; that says nothing about greeting the next one.
 */
function greeted(conn: UpstreamConn): boolean {
  return conn.spokeBeforeWrite && conn.lostToUpstream === undefined;
}
