/**
 * The bounded pool of upstream connections, in three modes:
 *
 * - `off`: every {@link UpstreamPool.borrow} dials; every release closes.
 * - `warm`: `minIdle` fresh, never-used connections are dialled ahead of demand and refilled in
 *   the background; a connection serves one session and is then closed.
 * - `reuse`: a connection that ended its session cleanly goes back to the pool for the next one.
 *
 * Idle connections sit in a LIFO {@link AsyncQueue} (the most recently returned is handed out
 * first). Each is watched by its own lifelong reader ({@link UpstreamConn}): one that closes,
 * errors or sends a byte while idle leaves the pool at once; in `reuse` a released connection is
 * watched for a few milliseconds before it can be handed out again, so that the late tail of an
 * answer drops it instead of reaching the next client. One timer closes idle connections
 * past the idle timeout or the maximum lifetime. {@link UpstreamPool.release} is the one place
 * that decides whether a connection may go back, and each refusal has a name.
 *
 * @module
 */

import { formatHostPort, type HostPort } from "./address.ts";
import { AsyncQueue } from "./async_queue.ts";
import { DelayQueue } from "./delay_queue.ts";
import type { PoolMode } from "./config.ts";
import { dialUpstream, UpstreamConnectError } from "./dial.ts";
import { getProxyLogger, type Logger } from "./logging.ts";
import { type IdleLossReason, UpstreamConn } from "./upstream_conn.ts";

/** Options for {@link UpstreamPool}. */
export interface PoolOptions {
  /** Where connections go. */
  upstream: HostPort;
  /** How connections are pooled; see the module documentation. */
  mode: PoolMode;
  /** Most idle connections kept (`--pool-size`). */
  maxIdle: number;
  /** Idle connections kept ready ahead of demand in `warm` and `reuse` (`--min-idle`). */
  minIdle: number;
  /** An idle connection idle longer than this is closed (`--idle-timeout`). */
  idleTimeoutMs: number;
  /** A connection older than this is not reused; 0 means no limit (`--max-lifetime`). */
  maxLifetimeMs: number;
  /** Bound on one dial (`--connect-timeout`). */
  connectTimeoutMs: number;
  /**
   * In `reuse`, how long a released connection is watched before it can be handed out again, so
   * that the late tail of an answer its client did not wait for discards the connection instead
   * of reaching the next client. 0 hands it out at once. Default {@link REUSE_SETTLE_MS}.
   */
  settleMs?: number;
}

/** Default {@link PoolOptions.settleMs}: a few round trips on a local network. */
export const REUSE_SETTLE_MS = 5;

/** A connection handed out by {@link UpstreamPool.borrow}. */
export interface Borrowed {
  /** The connection, leased to nobody yet. */
  conn: UpstreamConn;
  /** Whether it sat idle in the pool (a pool hit) rather than being dialled for this borrow. */
  fromPool: boolean;
}

/** Why {@link UpstreamPool.release} closed a connection instead of pooling it. */
export type ReleaseRefusal =
  | "pool closed"
  | "mode does not reuse"
  | "session not clean"
  | "unfit"
  | "max lifetime"
  | "pool full";

/** What {@link UpstreamPool.release} did. */
export type ReleaseOutcome = "pooled" | ReleaseRefusal;

/** Counters for logs, tests and the demo. */
export interface PoolStats {
  /** Dials started (by borrowers and by refills). */
  dials: number;
  /** Dials that failed. */
  dialFailures: number;
  /** Borrows served from the pool. */
  hits: number;
  /** Borrows served by a dial. */
  misses: number;
  /** Connections put back by release. */
  pooled: number;
  /** Connections release closed, by reason. */
  refused: Record<ReleaseRefusal, number>;
  /** Idle connections dropped by their watcher, the idle timeout or the lifetime. */
  idleDropped: number;
  /** Connections idle now, ready to be handed out. */
  idle: number;
  /** Released connections still waiting out the settle time. */
  settling: number;
}

/** Thrown by {@link UpstreamPool.borrow} after {@link UpstreamPool.close}. */
export class PoolClosedError extends Error {
  constructor() {
    super("the upstream pool is closed");
    this.name = "PoolClosedError";
  }
}

/** Whether `conn` is idle and nothing has made it unfit, so that it may be handed out. */
function isFit(conn: UpstreamConn): boolean {
  return conn.state === "idle" && conn.unfitReason === undefined;
}

const REFILL_BACKOFF_MIN_MS = 100;
const REFILL_BACKOFF_MAX_MS = 5_000;

/** A bounded pool of upstream connections. See the module documentation. */
export class UpstreamPool {
  readonly options: Readonly<PoolOptions>;
  readonly #idle: AsyncQueue<UpstreamConn>;
  readonly #log: Logger = getProxyLogger("pool");
  readonly #address: string;
  readonly #dialing = new Set<Promise<unknown>>();
  /** Aborts dials under way when the pool closes. */
  readonly #closeController = new AbortController();
  /** Released connections waiting out the settle time (one timer for all of them). */
  readonly #settling = new Set<UpstreamConn>();
  readonly #settleQueue: DelayQueue<UpstreamConn> | undefined;
  readonly #closing = new Set<Promise<void>>();
  #refillsInFlight = 0;
  #refillBackoffMs = 0;
  #refillTimer: ReturnType<typeof setTimeout> | undefined;
  #sweepTimer: ReturnType<typeof setTimeout> | undefined;
  #sweepAt = Infinity;
  #closed = false;
  #upstreamDown = false;
  readonly #stats: Omit<PoolStats, "idle" | "settling"> = {
    dials: 0,
    dialFailures: 0,
    hits: 0,
    misses: 0,
    pooled: 0,
    refused: {
      "pool closed": 0,
      "mode does not reuse": 0,
      "session not clean": 0,
      "unfit": 0,
      "max lifetime": 0,
      "pool full": 0,
    },
    idleDropped: 0,
  };

  /** Creates the pool and, in `warm` and `reuse`, starts dialling `minIdle` connections. */
  constructor(options: PoolOptions) {
    this.options = { ...options };
    const settleMs = options.settleMs ?? REUSE_SETTLE_MS;
    if (options.mode === "reuse" && settleMs > 0) {
      this.#settleQueue = new DelayQueue(settleMs, (conn) => this.#settled(conn));
    }
    this.#address = formatHostPort(options.upstream);
    const capacity = options.mode === "off" ? 0 : options.maxIdle;
    this.#idle = new AsyncQueue<UpstreamConn>({ capacity, order: "lifo" });
    this.#refill();
  }

  /** A copy of the counters. */
  get stats(): PoolStats {
    const refused = { ...this.#stats.refused };
    return { ...this.#stats, refused, idle: this.#idle.size, settling: this.#settling.size };
  }

  /**
   * Gets a connection: the most recently returned idle one, or a new dial. While a dial is under
   * way, a connection that becomes idle meanwhile is taken instead (the dial's connection then goes
   * to the pool), as Go's `net/http` Transport does.
   *
   * With `fresh`, always dials (a retry after a pooled connection failed uses that).
   *
   * @throws {UpstreamConnectError} when the dial fails or times out.
   * @throws {PoolClosedError} after {@link close}.
   */
  async borrow(signal?: AbortSignal, options: { fresh?: boolean } = {}): Promise<Borrowed> {
    while (true) {
      if (this.#closed) throw new PoolClosedError();
      const borrowed = this.options.mode === "off" || options.fresh === true
        ? { conn: await this.#dial(signal), fromPool: false }
        : await this.#takeOrDial(signal);
      if (borrowed.fromPool) this.#stats.hits++;
      else this.#stats.misses++;
      this.#refill();
      // A connection handed over by a waiter may have died in the tick since; try again.
      if (isFit(borrowed.conn)) return borrowed;
      this.#dispose(borrowed.conn);
    }
  }

  async #takeOrDial(signal?: AbortSignal): Promise<Borrowed> {
    const idle = this.#takeIdle();
    if (idle !== undefined) return { conn: idle, fromPool: true };
    const dialing = this.#dial(signal);
    const stopWaiting = new AbortController();
    const waiting = this.#idle.take(stopWaiting.signal);
    const dialed = () => dialing.then((conn) => ({ conn, fromPool: false }));
    let borrowed: Borrowed;
    try {
      borrowed = await Promise.race([
        dialed(),
        // A wait that ends without a connection (pool closed, wait stopped) defers to the dial.
        waiting.then((conn) => ({ conn, fromPool: true }), dialed),
      ]);
    } catch (error) {
      stopWaiting.abort();
      waiting.then((conn) => this.#putIdle(conn), () => {});
      throw error;
    }
    if (borrowed.fromPool) {
      // The dial goes on; its connection joins the pool.
      dialing.then((conn) => this.#putIdle(conn), () => {});
    } else {
      stopWaiting.abort();
      // A waiter served in the same tick as the dial finished gives its connection back.
      waiting.then((conn) => this.#putIdle(conn), () => {});
    }
    return borrowed;
  }

  /**
   * Gives back a connection whose lease has ended ({@link UpstreamConn.endLease} done). It goes
   * back to the pool only when the mode reuses, the session says it ended cleanly, the connection
   * saw no error, half-close or stray byte, is under the maximum lifetime, and the pool has room;
   * otherwise it is closed. Call once per borrow.
   */
  release(conn: UpstreamConn, sessionClean: boolean): ReleaseOutcome {
    const refusal = this.#refusal(conn, sessionClean);
    if (refusal !== undefined) {
      this.#stats.refused[refusal]++;
      this.#log.debug("closing upstream connection #{id}: {reason}", {
        id: conn.id,
        reason: refusal === "unfit" ? conn.unfitReason : refusal,
      });
      this.#dispose(conn);
      return refusal;
    }
    if (this.#idle.size >= this.options.maxIdle) {
      this.#stats.refused["pool full"]++;
      this.#dispose(conn);
      return "pool full";
    }
    this.#stats.pooled++;
    if (this.#settleQueue === undefined) {
      this.#putIdle(conn);
    } else {
      // Watched by its reader, not handed out: a late byte drops it (see #onIdleLoss).
      this.#settling.add(conn);
      this.#settleQueue.add(conn);
    }
    return "pooled";
  }

  #settled(conn: UpstreamConn): void {
    if (!this.#settling.delete(conn)) return; // dropped meanwhile
    if (isFit(conn)) this.#putIdle(conn);
    else this.#dispose(conn);
  }

  /**
   * Closes the pool: idle connections are closed, refills stop, later borrows fail. Connections
   * still leased are closed when released. Resolves when every dial and reader it started is done.
   */
  async close(): Promise<void> {
    this.#closed = true;
    this.#closeController.abort(new PoolClosedError());
    this.#settleQueue?.clear();
    for (const conn of this.#settling) this.#dispose(conn);
    this.#settling.clear();
    clearTimeout(this.#refillTimer);
    clearTimeout(this.#sweepTimer);
    this.#refillTimer = this.#sweepTimer = undefined;
    for (const conn of this.#idle.close()) this.#dispose(conn);
    while (this.#dialing.size > 0 || this.#closing.size > 0) {
      await Promise.allSettled([...this.#dialing, ...this.#closing]);
    }
  }

  #refusal(conn: UpstreamConn, sessionClean: boolean): ReleaseRefusal | undefined {
    if (this.#closed) return "pool closed";
    if (this.options.mode !== "reuse") return "mode does not reuse";
    if (!sessionClean) return "session not clean";
    if (!isFit(conn)) return "unfit";
    if (this.#pastLifetime(conn, performance.now())) return "max lifetime";
    return undefined;
  }

  #pastLifetime(conn: UpstreamConn, now: number): boolean {
    return this.options.maxLifetimeMs > 0 && conn.age(now) >= this.options.maxLifetimeMs;
  }

  #takeIdle(): UpstreamConn | undefined {
    const now = performance.now();
    for (let conn = this.#idle.tryTake(); conn !== undefined; conn = this.#idle.tryTake()) {
      if (isFit(conn) && !this.#pastLifetime(conn, now)) return conn;
      this.#stats.idleDropped++;
      this.#dispose(conn);
    }
    return undefined;
  }

  /** Adds a fresh or freed connection to the pool, or closes it when the pool cannot take it. */
  #putIdle(conn: UpstreamConn): void {
    if (!this.#idle.offer(conn)) {
      this.#dispose(conn);
      return;
    }
    this.#scheduleSweep(conn);
  }

  #dial(signal?: AbortSignal): Promise<UpstreamConn> {
    this.#stats.dials++;
    const closing = this.#closeController.signal;
    const dialing = dialUpstream(
      this.options.upstream,
      this.options.connectTimeoutMs,
      signal === undefined ? closing : AbortSignal.any([signal, closing]),
    )
      .then((socket) => {
        const conn = new UpstreamConn(socket);
        conn.watchWhileIdle((lost, reason) => this.#onIdleLoss(lost, reason));
        return conn;
      }, (error: unknown) => {
        this.#stats.dialFailures++;
        throw error;
      });
    const tracked = dialing.then(() => {}, () => {}).finally(() => this.#dialing.delete(tracked));
    this.#dialing.add(tracked);
    return dialing;
  }

  #onIdleLoss(conn: UpstreamConn, reason: IdleLossReason): void {
    if (this.#idle.remove(conn) || this.#settling.delete(conn)) this.#stats.idleDropped++;
    this.#log.debug("idle upstream connection #{id} dropped: {reason}", { id: conn.id, reason });
    this.#track(conn);
    this.#refill();
  }

  #dispose(conn: UpstreamConn): void {
    conn.close();
    this.#track(conn);
  }

  /** Keeps a closed connection's reader in sight until it has stopped, for {@link close}. */
  #track(conn: UpstreamConn): void {
    const done = conn.readerDone.finally(() => this.#closing.delete(done));
    this.#closing.add(done);
  }

  /** Dials in the background until `minIdle` connections are idle or on their way. */
  #refill(): void {
    if (this.#closed || this.options.mode === "off" || this.#refillTimer !== undefined) return;
    while (this.#idle.size + this.#refillsInFlight < this.options.minIdle) {
      this.#refillsInFlight++;
      this.#dial().then((conn) => {
        this.#refillsInFlight--;
        if (this.#upstreamDown) {
          this.#upstreamDown = false;
          this.#log.info("upstream {upstream} is reachable again", { upstream: this.#address });
        }
        this.#refillBackoffMs = 0;
        if (this.#closed) this.#dispose(conn);
        else this.#putIdle(conn);
      }, (error: unknown) => {
        this.#refillsInFlight--;
        this.#onRefillFailure(error);
      });
    }
  }

  #onRefillFailure(error: unknown): void {
    if (this.#closed) return;
    if (!this.#upstreamDown) {
      this.#upstreamDown = true;
      const reason = error instanceof UpstreamConnectError ? error.message : String(error);
      this.#log.warn("cannot keep idle connections ready: {reason}; retrying with backoff", {
        upstream: this.#address,
        reason,
      });
    }
    this.#refillBackoffMs = Math.min(
      Math.max(this.#refillBackoffMs * 2, REFILL_BACKOFF_MIN_MS),
      REFILL_BACKOFF_MAX_MS,
    );
    if (this.#refillTimer !== undefined) return;
    this.#refillTimer = setTimeout(() => {
      this.#refillTimer = undefined;
      this.#refill();
    }, this.#refillBackoffMs);
  }

  #deadline(conn: UpstreamConn): number {
    const idleDeadline = conn.idleSince + this.options.idleTimeoutMs;
    if (this.options.maxLifetimeMs <= 0) return idleDeadline;
    return Math.min(idleDeadline, conn.createdAt + this.options.maxLifetimeMs);
  }

  /** Makes sure the sweep timer fires by the time `conn` must leave the pool. */
  #scheduleSweep(conn: UpstreamConn): void {
    const at = this.#deadline(conn);
    if (at >= this.#sweepAt) return;
    clearTimeout(this.#sweepTimer);
    this.#sweepAt = at;
    this.#sweepTimer = setTimeout(() => this.#sweep(), Math.max(0, at - performance.now()));
  }

  /** Closes idle connections past their deadline and schedules the next sweep. */
  #sweep(): void {
    this.#sweepTimer = undefined;
    this.#sweepAt = Infinity;
    if (this.#closed) return;
    const now = performance.now();
    const expired = this.#idle.removeWhere((conn) => this.#deadline(conn) <= now);
    for (const conn of expired) {
      this.#stats.idleDropped++;
      this.#log.debug("idle upstream connection #{id} closed: idle timeout or max lifetime", {
        id: conn.id,
      });
      this.#dispose(conn);
    }
    for (const conn of this.#idle.snapshot()) this.#scheduleSweep(conn);
    if (expired.length > 0) this.#refill();
  }
}
