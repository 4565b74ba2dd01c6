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
 * {@link GreetingWatch.windowMs} (or twice its own connect time, if longer). One that stays
 * silent that long says the upstream does not greet, and from then on nothing waits; one that
 * speaks says it does, and from then on no connection is pooled at all (any of them may have
 * raced its greeting). A connection that speaks first later on teaches the same. A timing guess,
 * as `raw` reuse is: a greeting later than the window is taken for silence.
 *
 * ```ts
 * const watch = new GreetingWatch(5, "127.0.0.1:3306");
 * // in the pool's dial: the connection is leased at once, its writes wait for the watch
 * if (!watch.known) conn.holdWrites(watch.watch(conn, dialMs, closing));
 * // in the pool's release:
 * conn.unfitReason ??= watch.released(conn);
 * ```
 *
 * @module
 */

import { onAbort } from "./abort.ts";
import { getProxyLogger, type Logger } from "./logging.ts";
import type { UpstreamConn } from "./upstream_conn.ts";

/** Why a connection of an upstream that greets is not pooled with `raw` reuse. */
export const GREETS_REASON = "the upstream greets (handshake state)";

/** The least time a new connection is watched for a greeting, however short `--reuse-settle` is. */
export const MIN_GREETING_WINDOW_MS = 5;

/** What one pool has learned of its upstream's greeting; see the module documentation. */
export class GreetingWatch {
  /** How long a new connection is watched while it is not known (at least twice its connect time). */
  readonly windowMs: number;
  readonly #upstream: string;
  readonly #log: Logger = getProxyLogger("pool");
  #greets: boolean | undefined;

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

  /** `true` once a connection spoke first, `false` once one stayed silent, `undefined` before. */
  get greets(): boolean | undefined {
    return this.#greets;
  }

  /**
   * Waits on a new, idle connection (its reader running, nothing written) for the window, or
   * until one of `signals` aborts, then learns from it: bytes in that time (kept as its greeting)
   * say the upstream greets; silence says it does not; a connection lost or closed meanwhile says
   * nothing.
   * Never throws; the caller checks the signals and the connection after.
   */
  async watch(conn: UpstreamConn, dialMs: number, ...signals: AbortSignal[]): Promise<void> {
    const aborted = () => signals.some((signal) => signal.aborted);
    if (aborted()) return;
    const ms = Math.max(this.windowMs, 2 * dialMs);
    await new Promise<void>((resolve) => {
      const done = () => {
        clearTimeout(timer);
        for (const stop of stops) stop();
        resolve();
      };
      const timer = setTimeout(done, ms);
      const stops = signals.map((signal) => onAbort(signal, done));
    });
    if (aborted()) return;
    if (greeted(conn)) this.#learnGreets();
    else if (!conn.spokeFirst && conn.unfitReason === undefined && conn.state !== "closed") {
      // Silent through the whole window, and open: closed early (its client left at once), it
      // was not watched that long.
      this.#greets ??= false;
    }
  }

  /**
   * Learns from a connection whose session ended, and says why it must not be pooled:
   * {@link GREETS_REASON} once the upstream is known to greet, `undefined` otherwise.
   */
  released(conn: UpstreamConn): string | undefined {
    if (greeted(conn)) this.#learnGreets();
    return this.#greets === true ? GREETS_REASON : undefined;
  }

  #learnGreets(): void {
    if (this.#greets === true) return;
    this.#greets = true;
    this.#log.warn(
      "upstream {upstream} speaks first (a greeting): with --protocol raw its connections carry " +
        "handshake state, so from now on each serves one session and is closed; use --pool warm",
      { upstream: this.#upstream },
    );
  }
}

/**
 * Whether `conn` was greeted: its upstream spoke first and did not end it on its own. A server
 * that speaks and closes (Redis at its client limit: `-ERR max number of clients reached`)
 * refused the connection; that says nothing about greeting the next one.
 */
function greeted(conn: UpstreamConn): boolean {
  return conn.spokeFirst && conn.lostToUpstream === undefined;
}
