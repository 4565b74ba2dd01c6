/**
 * The bounded pool of upstream connections, in three modes:
 *
 * - `off`: every {@link UpstreamPool.borrow} dials; every release closes.
 * - `warm`: fresh, never-used connections are dialled ahead of demand and refilled in the
 *   background ({@link Refiller}); a connection serves one session and is then closed.
 * - `reuse`: a connection that ended its session cleanly goes back to the pool for the next one.
 *
 * In `warm` and `reuse` the pool keeps ready what recent demand needs ({@link DemandTracker}):
 * `preconnectRatio` connections per session started within one dial time at the recent peak, at
 * least `minIdle`, at most `maxIdle`; `reuse` keeps released connections up to the recent peak of
 * connections in use at once (or that ready target), at most `maxIdle`.
 *
 * Idle connections sit in a LIFO {@link AsyncQueue} (the most recently returned is handed out
 * first). Each is watched by its own lifelong reader ({@link UpstreamConn}): one that closes,
 * errors or sends a byte while idle leaves the pool at once; in `reuse` a released connection is
 * watched for a few milliseconds before it can be handed out again, so that the late tail of an
 * answer drops it instead of reaching the next client. One timer closes idle connections
 * past the idle timeout or the maximum lifetime. {@link UpstreamPool.release} is the one place
 * that decides whether a connection may go back, and each refusal has a name.
 *
 * Taking a connection and leasing it to its session happen in one tick
 * ({@link UpstreamConn.tryLease}), so a connection its reader has just lost is never handed out:
 * a dead pooled one is skipped, and a fresh dial that the upstream closed before it could be used
 * is a failed connect. With `maxOpen` (`--max-upstream`), connections open or being dialled never
 * exceed it: a borrower that finds none free waits in a FIFO queue for one to be released or for
 * room to dial, up to `queueTimeoutMs`.
 *
 * When the upstream closes idle connections after a consistent time (its own idle limit), the
 * pool learns it and retires its idle connections a little before ({@link IdleLimitLearner}).
 *
 * @module
 */

import { type ByteConn, closeQuietly, readConn } from "./_io.ts";
import { formatHostPort, type HostPort } from "./address.ts";
import { AsyncQueue } from "./async_queue.ts";
import { DelayQueue } from "./delay_queue.ts";
import { DemandTracker, PEAK_PERIOD_MS } from "./demand.ts";
import type { PoolMode } from "./config.ts";
import {
  type ConnectFailure,
  dialUpstream,
  tlsAlertReason,
  UpstreamConnectError,
  type UpstreamTls,
} from "./dial.ts";
import { formatDuration } from "./duration.ts";
import { GreetingWatch, GREETS_REASON } from "./greeting.ts";
import { IdleLimitLearner } from "./idle_limit.ts";
import { getProxyLogger, type Logger } from "./logging.ts";
import { Histogram } from "./metrics.ts";
import { checkOpening, type OpeningCheck, type OpeningResult } from "./opening_check.ts";
import { Refiller } from "./refill.ts";
import {
  type ConnHooks,
  type IdleLossReason,
  type LeaseHandlers,
  UpstreamConn,
} from "./upstream_conn.ts";

/** Options for {@link UpstreamPool}. */
export interface PoolOptions {
  /** Where connections go. */
  upstream: HostPort;
  /** How connections are pooled; see the module documentation. */
  mode: PoolMode;
  /** Most idle and settling connections kept together (`--pool-size`). */
  maxIdle: number;
  /** Idle connections kept ready ahead of demand in `warm` and `reuse` (`--min-idle`). */
  minIdle: number;
  /**
   * Connections kept ready per session started within one dial time at the recent peak
   * (`--preconnect-ratio`); 0 keeps just `minIdle`. Default 0.
   */
  preconnectRatio?: number;
  /** An idle connection idle longer than this is closed (`--idle-timeout`). */
  idleTimeoutMs: number;
  /**
   * A connection older than this is not reused; 0 means no limit (`--max-lifetime`). Each
   * connection's own limit is shortened by a random 0-2.5% ({@link LIFETIME_JITTER}).
   */
  maxLifetimeMs: number;
  /** Bound on one dial, the TLS handshake included (`--connect-timeout`). */
  connectTimeoutMs: number;
  /** TLS to the upstream (`--upstream-tls`); `undefined`: plain TCP. */
  tls?: UpstreamTls;
  /**
   * Sent on every new connection before a client uses it (`src/opening_check.ts`): with
   * `--pool reuse --protocol memcached`, to find connections that ask for a login, which are
   * never pooled. Part of the dial, within the connect timeout.
   */
  openingCheck?: OpeningCheck;
  /**
   * In `reuse` with `--protocol raw`: how long a new connection stays silent, while the pool does
   * not know yet whether its upstream greets, before a client byte is written to it
   * (`src/greeting.ts`); `undefined` (framed protocols, other modes): greetings are not watched
   * for.
   */
  greetingWindowMs?: number;
  /**
   * Most connections open at once, dialling, leased, idle and settling together; 0 means no
   * limit (`--max-upstream`).
   */
  maxOpen?: number;
  /** How long a borrower waits for a connection when `maxOpen` is reached (`--queue-timeout`). Default 5000. */
  queueTimeoutMs?: number;
  /**
   * In `reuse`, how long a released connection is watched before it can be handed out again, so
   * that the late tail of an answer its client did not wait for discards the connection instead
   * of reaching the next client. 0 hands it out at once. Default {@link REUSE_SETTLE_MS}.
   */
  settleMs?: number;
  /** How long an unused refill connection must stay up to count as healthy (tests shorten it). */
  probationMs?: number;
  /**
   * When the first check of a learned upstream idle limit is due (tests shorten it). Default
   * `FIRST_CHECK_AFTER_MS` of `src/idle_limit.ts`.
   */
  idleLimitCheckMs?: number;
  /**
   * How often idle connections beyond recent demand are trimmed, and how long demand peaks are
   * remembered (tests shorten it). Default {@link TRIM_PERIOD_MS}, or half the idle timeout if
   * that is shorter.
   */
  trimPeriodMs?: number;
  /**
   * The shortest window over which session starts count as together (tests widen it, so that a
   * burst started in one tick stays together on a loaded machine that deschedules the proxy
   * mid-burst). Default 1 ms (`MIN_DIAL_WINDOW_MS` in `src/demand.ts`).
   */
  minDialWindowMs?: number;
}

/** The reason a borrower's wait for an idle connection is stopped (one object: no `DOMException` per borrow). */
const STOPPED_WAITING = new Error("the dial won");

/** The reason a served session's dial is aborted in `reuse`: the pool has what the load wants. */
const NOT_NEEDED = new Error("served from the pool, which holds as many as were wanted at once");

/** Default {@link PoolOptions.trimPeriodMs}: the demand tracker's peak period. */
export const TRIM_PERIOD_MS = PEAK_PERIOD_MS;

/** Default {@link PoolOptions.settleMs}: a few round trips on a local network. */
export const REUSE_SETTLE_MS = 5;
/**
 * How late the settle timer may run and still be taken as on time (see `#settled`): past it, the
 * event loop was held, and reads that became ready meanwhile go first. Deno's timers run 1.2-1.5
 * ms late on an idle loop (measured), so a smaller slack would wait the extra turn every time.
 */
const SETTLE_TIMER_SLACK_MS = 4;
/** Default {@link PoolOptions.queueTimeoutMs}. */
export const QUEUE_TIMEOUT_MS = 5_000;
/** Most of `--max-lifetime` taken off at random per connection (HikariCP's rule), so that connections dialled together retire apart. */
export const LIFETIME_JITTER = 0.025;
/** How long a readiness probe's connection is watched for the upstream closing it. */
export const PROBE_WATCH_MS = 100;
/** The shortest time between the end of one readiness probe and the start of the next. */
export const PROBE_INTERVAL_MS = 1_000;

/** A connection handed out by {@link UpstreamPool.borrow}, already leased to the borrower. */
export interface Borrowed {
  /** The connection, leased to the handlers given to `borrow`. */
  conn: UpstreamConn;
  /** Whether it sat idle in the pool (a pool hit) rather than being dialled for this borrow. */
  fromPool: boolean;
}

/**
 * Why an idle connection left the pool other than to a borrower: its reader's reasons
 * ({@link IdleLossReason}), `expired` (idle timeout, maximum lifetime or the upstream's learned
 * idle limit), `unfit` (found unfit when taken), `room for a dial` (closed for a queued borrower
 * that needs to dial).
 */
export type IdleDropReason = IdleLossReason | "expired" | "unfit" | "room for a dial";

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

/** Counters and gauges for logs, tests and the demo. */
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
  /** Idle connections closed as more than recent demand needed (see {@link DemandTracker}). */
  trimmed: number;
  /** Idle connections dropped, by why: {@link IdleDropReason}. Their sum is `idleDropped`. */
  idleDroppedBy: Record<IdleDropReason, number>;
  /** Dials that failed, by how ({@link ConnectFailure}); `aborted` ones are not failures. */
  dialFailuresBy: Record<Exclude<ConnectFailure, "aborted">, number>;
  /** How long successful dials took, in seconds. Shared, not a copy: read it, do not change it. */
  connectSeconds: Histogram;
  /**
   * `performance.now()` of the last sign the upstream serves (an answer on a connection the
   * upstream did not then end, a refill that proved itself, a probe), or -Infinity.
   */
  lastSuccessAt: number;
  /** `performance.now()` of the last failed dial (probes included), or -Infinity. */
  lastFailureAt: number;
  /** Borrowers that gave up waiting for a connection (`--queue-timeout`). */
  queueTimeouts: number;
  /** Connections idle now, ready to be handed out. */
  idle: number;
  /** Released connections still waiting out the settle time. */
  settling: number;
  /** Dials under way now (for borrowers and refills). */
  dialling: number;
  /** Connections held by sessions now. */
  leased: number;
  /**
   * The pool's own checks now, never lent: a readiness probe's connection (dialled and watched),
   * and one kept past the upstream's learned idle limit to check it (`src/idle_limit.ts`).
   */
  checking: number;
  /** Borrowers waiting for a connection now (`--max-upstream` reached). */
  queued: number;
  /** The last dial failure, if any, in one line. */
  lastDialError: string | undefined;
  /** Why refills are backing off now; `undefined` when they are not. */
  refillFailure: string | undefined;
}

/** Thrown by {@link UpstreamPool.borrow} after {@link UpstreamPool.close}. */
export class PoolClosedError extends Error {
  constructor() {
    super("the upstream pool is closed");
    this.name = "PoolClosedError";
  }
}

/** Thrown by {@link UpstreamPool.borrow} when no connection was free within the queue timeout. */
export class QueueTimeoutError extends Error {
  /** The upstream whose connections were all in use. */
  readonly address: HostPort;

  constructor(address: HostPort, maxOpen: number, waitedMs: number) {
    super(
      `no upstream connection to ${
        formatHostPort(address)
      } became free within ${waitedMs}ms (--max-upstream ${maxOpen} in use)`,
    );
    this.name = "QueueTimeoutError";
    this.address = address;
  }
}

/** Whether `conn` is idle and nothing has made it unfit, so that it may be handed out. */
function isFit(conn: UpstreamConn): boolean {
  return conn.state === "idle" && conn.unfitReason === undefined;
}

/**
 * A check of the learned idle limit: the connection kept past it (never lent, never counted as
 * ready), the timer at which the check ends, and whether that end comes sooner than the check's
 * own (at `--idle-timeout` or `--max-lifetime`).
 */
interface LimitCheck {
  conn: UpstreamConn;
  timer: ReturnType<typeof setTimeout>;
  cutShort: boolean;
}

/** A borrower waiting for an idle connection or for room to dial (`--max-upstream`). */
interface QueuedBorrower {
  /** Whether it may take a pooled connection (not in `off`, not a retry). */
  reusable: boolean;
  /** Hands it a connection, or `"slot"`: room to dial, already counted as open. */
  resolve(granted: UpstreamConn | "slot"): void;
  reject(reason: unknown): void;
}

/** Why a connection that asked for a login is never pooled (the debug log's closing reason). */
export const ASKS_LOGIN_REASON = "asked for a login (a logged-in connection serves one client)";
/** Why a connection that answered the opening check in an unknown way is never pooled. */
export const UNKNOWN_ANSWER_REASON = "answered the opening check in an unknown way";
/** Why a connection dialled without the opening check is never pooled. */
export const UNCHECKED_REASON = "dialled without the opening check (a binary client's own)";

/** A bounded pool of upstream connections. See the module documentation. */
export class UpstreamPool {
  readonly options: Readonly<PoolOptions>;
  readonly #idle: AsyncQueue<UpstreamConn>;
  readonly #log: Logger = getProxyLogger("pool");
  readonly #address: string;
  /** Whether the warning that new connections serve one session each was logged. */
  #warnedOpening = false;
  readonly #dialing = new Set<Promise<unknown>>();
  /** Aborts dials under way when the pool closes. */
  readonly #closeController = new AbortController();
  /**
   * Released connections waiting out the settle time (one timer for all of them), each with
   * whether its settle timer already ran late once and was set again (see {@link #settled}).
   */
  readonly #settling = new Map<UpstreamConn, boolean>();
  readonly #settleQueue: DelayQueue<UpstreamConn> | undefined;
  /** Settled connections waiting one more turn of the event loop (see {@link #settled}). */
  readonly #settledDue: UpstreamConn[] = [];
  #settledTimer: ReturnType<typeof setTimeout> | undefined;
  /** With `raw` reuse: whether the upstream greets, learned once (`src/greeting.ts`). */
  readonly #greetingWatch: GreetingWatch | undefined;
  readonly #closing = new Set<Promise<void>>();
  /**
   * Dials whose borrower took an idle connection first: each will land in the pool, so it counts
   * as ready and refills do not dial for it again.
   */
  #orphanDials = 0;
  readonly #refiller: Refiller;
  readonly #demand: DemandTracker;
  /**
   * How often idle connections are trimmed and how long a demand peak is remembered: at most half
   * the idle timeout, so demand that old never redials connections the idle timeout closed.
   */
  readonly #trimPeriodMs: number;
  readonly #idleLimit: IdleLimitLearner;
  /** The check of the learned idle limit under way, if any. */
  #limitCheck: LimitCheck | undefined;
  /** What every connection tells the pool: one object for all of them. */
  readonly #connHooks: ConnHooks = {
    onClosed: (conn) => this.#onClosed(conn),
    onIdleLoss: (conn, reason) => this.#onIdleLoss(conn, reason),
  };
  readonly #maxOpen: number;
  /** Connections open or being dialled; at most {@link PoolOptions.maxOpen} when it is set. */
  #open = 0;
  readonly #queue: QueuedBorrower[] = [];
  #dialsInFlight = 0;
  #lastDialError: string | undefined;
  #sweepTimer: ReturnType<typeof setTimeout> | undefined;
  #sweepAt = Infinity;
  /** Runs every trim period while the pool holds more idle connections than `minIdle`. */
  #trimTimer: ReturnType<typeof setTimeout> | undefined;
  #closed = false;
  /** Connections whose dial started before this (`performance.now()`) are retired: see {@link renew}. */
  #renewedAt = -Infinity;
  readonly #stats = {
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
    } satisfies Record<ReleaseRefusal, number>,
    idleDropped: 0,
    trimmed: 0,
    idleDroppedBy: {
      "closed by upstream": 0,
      "error while idle": 0,
      "bytes while idle": 0,
      "greeting too large": 0,
      "expired": 0,
      "unfit": 0,
      "room for a dial": 0,
    } satisfies Record<IdleDropReason, number>,
    dialFailuresBy: { timeout: 0, refused: 0, closed: 0, tls: 0, descriptors: 0, error: 0 },
    queueTimeouts: 0,
  };
  readonly #connectSeconds = new Histogram();
  #lastSuccessAt = -Infinity;
  #lastFailureAt = -Infinity;
  #probing: Promise<void> | undefined;
  /** When the last readiness probe ended. */
  #probedAt = -Infinity;

  /** Creates the pool and, in `warm` and `reuse`, starts dialling `minIdle` connections. */
  constructor(options: PoolOptions) {
    this.options = { ...options };
    this.#maxOpen = options.maxOpen ?? 0;
    const settleMs = options.settleMs ?? REUSE_SETTLE_MS;
    if (options.mode === "reuse" && settleMs > 0) {
      this.#settleQueue = new DelayQueue(settleMs, (conn, lateMs) => this.#settled(conn, lateMs));
    }
    this.#address = formatHostPort(options.upstream);
    if (options.mode === "reuse" && options.greetingWindowMs !== undefined) {
      this.#greetingWatch = new GreetingWatch(options.greetingWindowMs, this.#address);
    }
    const capacity = options.mode === "off" ? 0 : options.maxIdle;
    this.#idle = new AsyncQueue<UpstreamConn>({ capacity, order: "lifo" });
    this.#trimPeriodMs = options.trimPeriodMs ??
      Math.min(TRIM_PERIOD_MS, Math.max(1, options.idleTimeoutMs / 2));
    this.#demand = new DemandTracker({
      ratio: options.preconnectRatio ?? 0,
      capacity,
      peakPeriodMs: this.#trimPeriodMs,
      minDialWindowMs: options.minDialWindowMs,
    });
    const floor = options.mode === "off" ? 0 : options.minIdle;
    this.#refiller = new Refiller(
      {
        address: this.#address,
        readyTarget: () => this.#readyTarget(floor),
        // (Never below zero, whatever a future path gets wrong: the refiller would overfill.)
        ready: () => this.#idle.size + this.#settling.size + Math.max(0, this.#orphanDials),
        canDial: () => !this.#closed && this.#queue.length === 0 && this.#hasRoom(),
        dial: () => {
          this.#open++;
          return this.#dial();
        },
        deliver: (conn) => this.#putIdle(conn),
        proven: () => this.#served(),
        lostToUpstream: (conn, detail) => {
          this.#closedBeforeUse(
            detail,
            conn.handshakeRefused !== undefined ? "tls" : "closed",
            conn,
          );
        },
      },
      this.#log,
      options.probationMs,
    );
    this.#idleLimit = new IdleLimitLearner((closesAfterMs, retireAfterMs) => {
      this.#log.info(
        "upstream {upstream} closes idle connections after about {closes}; retiring them at {retire}",
        {
          upstream: this.#address,
          closes: formatDuration(Math.round(closesAfterMs)),
          retire: formatDuration(retireAfterMs),
        },
      );
      // A check under way was of the old limit; idle connections past the new one go now, the
      // others by the sweep, in time.
      this.#endLimitCheck(false);
      clearTimeout(this.#sweepTimer);
      this.#sweep();
    }, options.idleLimitCheckMs);
    this.#refiller.request();
  }

  /** A copy of the counters and gauges. */
  get stats(): PoolStats {
    const idle = this.#idle.size;
    const settling = this.#settling.size;
    return {
      ...this.#stats,
      refused: { ...this.#stats.refused },
      idleDroppedBy: { ...this.#stats.idleDroppedBy },
      dialFailuresBy: { ...this.#stats.dialFailuresBy },
      connectSeconds: this.#connectSeconds,
      lastSuccessAt: this.#lastSuccessAt,
      lastFailureAt: this.#lastFailureAt,
      idle,
      settling,
      dialling: this.#dialsInFlight,
      leased: this.#leased,
      checking: this.#checks,
      queued: this.#queue.length,
      lastDialError: this.#lastDialError,
      refillFailure: this.#refiller.failure,
    };
  }

  /**
   * Leases a fit idle connection to `handlers` at once, if the pool has one: what {@link borrow}
   * does when it finds one, without a promise or a signal (Go's Transport also tries its idle
   * list before anything else). Unfit or expired idle connections met on the way are closed, as
   * `borrow` would. Returns undefined when there is none, the mode is `off` or the pool is closed;
   * then `borrow`, which counts the session's demand itself.
   */
  borrowIdle(handlers: LeaseHandlers): UpstreamConn | undefined {
    if (this.#closed || this.options.mode === "off") return undefined;
    const idle = this.#leaseIdle(handlers);
    if (idle === undefined) return undefined;
    this.#demand.started(performance.now());
    this.#hit(idle);
    this.#refiller.request();
    return idle;
  }

  /** Takes the first fit idle connection and leases it to `handlers`; closes any it cannot lease. */
  #leaseIdle(handlers: LeaseHandlers): UpstreamConn | undefined {
    for (let idle = this.#takeIdle(); idle !== undefined; idle = this.#takeIdle()) {
      if (idle.tryLease(handlers, true)) return idle;
      idle.close();
    }
    return undefined;
  }

  /**
   * Gets a connection and leases it to `handlers` in the same tick: the most recently returned
   * idle one, or a new dial. While a dial is under way, a connection that becomes idle meanwhile
   * is taken instead (the dial's connection then goes to the pool), as Go's `net/http` Transport
   * does; in `warm` only while a refill is on its way that no earlier session waits for. With
   * `maxOpen` reached, waits (first come, first served) for a released connection or for room to
   * dial, up to the queue timeout.
   *
   * With `fresh`, never takes an idle connection (a retry after a pooled connection failed).
   * With `unchecked` too, the new connection is not sent the opening check
   * ({@link PoolOptions.openingCheck}): for a memcached binary client, whose connection must not
   * have spoken; such a connection is never pooled.
   *
   * @throws {UpstreamConnectError} when the dial fails, times out, or the upstream closed the new
   * connection before it could be used.
   * @throws {QueueTimeoutError} when no connection became free within the queue timeout.
   * @throws {PoolClosedError} after {@link close}.
   */
  async borrow(
    handlers: LeaseHandlers,
    signal?: AbortSignal,
    options: { fresh?: boolean; unchecked?: boolean } = {},
  ): Promise<Borrowed> {
    const reusable = this.options.mode !== "off" && options.fresh !== true;
    const unchecked = options.fresh === true && options.unchecked === true;
    if (reusable) this.#demand.started(performance.now()); // a retry is not a new session
    try {
      while (true) {
        if (this.#closed) throw new PoolClosedError();
        const idle = reusable ? this.#leaseIdle(handlers) : undefined;
        if (idle !== undefined) return this.#hit(idle);
        const granted = this.#takeSlot() ? "slot" : await this.#queued(handlers, signal, reusable);
        if (granted !== "slot") {
          if (granted.tryLease(handlers, true)) return this.#hit(granted);
          granted.close();
          continue;
        }
        // Leased in the tick it lands, unless it may go to the pool instead (#takeOrDial).
        if (!reusable || !this.#worthWaiting()) {
          return this.#miss(await this.#dial(signal, handlers, unchecked));
        }
        const borrowed = await this.#takeOrDial(signal);
        if (borrowed.conn.tryLease(handlers, borrowed.fromPool)) {
          return borrowed.fromPool ? this.#hit(borrowed.conn) : this.#miss(borrowed.conn);
        }
        borrowed.conn.close();
        if (!borrowed.fromPool) throw this.#lostBeforeUse(borrowed.conn);
      }
    } finally {
      this.#refiller.request();
    }
  }

  #hit(conn: UpstreamConn): Borrowed {
    this.#stats.hits++;
    this.#noteLeased();
    return { conn, fromPool: true };
  }

  #miss(conn: UpstreamConn): Borrowed {
    this.#stats.misses++;
    this.#noteLeased();
    return { conn, fromPool: false };
  }

  /** How many connections to keep ready now (see {@link DemandTracker}). */
  #readyTarget(floor: number): number {
    const now = performance.now();
    if (this.options.mode === "warm") return this.#demand.readyTarget(now, floor);
    if (this.options.mode === "off") return 0;
    return this.#demand.reuseReadyTarget(now, floor, this.#leased);
  }

  /** Connections serving a session now: open ones that are not being dialled, idle or settling. */
  get #leased(): number {
    return this.#open - this.#dialsInFlight - this.#idle.size - this.#settling.size - this.#checks;
  }

  /** Slots held by the pool's own checks: a readiness probe, a check of the idle limit. */
  get #checks(): number {
    return (this.#probing === undefined ? 0 : 1) + this.#checkingLimit;
  }

  /** 1 while a check of the idle limit holds a connection open (not leased, not ready), else 0. */
  get #checkingLimit(): number {
    const conn = this.#limitCheck?.conn;
    return conn !== undefined && conn.state !== "closed" ? 1 : 0;
  }

  /**
   * Tells demand how many connections are taken now: leased, or settling after their session (not
   * yet available again, so as good as in use when sizing what to keep).
   */
  #noteLeased(): void {
    const now = performance.now();
    this.#demand.leased(this.#leased + this.#settling.size, now);
    this.#noteWanted(now);
  }

  /**
   * Tells demand how many connections are wanted now (a lease, or a session starts to wait):
   * taken (leased or settling, see {@link #noteLeased}), or waited for, in the pool or in the
   * --max-upstream queue. Settling ones count: a pool of only as many as the sessions at once
   * would have every session miss while the one it needs settles (a review: dialling and
   * aborting without end).
   */
  #noteWanted(now = performance.now()): void {
    const taken = this.#leased + this.#settling.size;
    this.#demand.wanted(taken + this.#idle.waiting + this.#queue.length, now);
  }

  #lostBeforeUse(conn: UpstreamConn): UpstreamConnectError {
    // A TLS 1.3 refusal read before the lease (counted then, while idle): its own reason.
    if (conn.handshakeRefused !== undefined) return this.refusedOnFirstUse(conn);
    const greeting = conn.greetingPreview();
    const detail = `the upstream closed the new connection before it could be used (${
      conn.unfitReason ?? "closed"
    }${greeting === "" ? "" : `; it said ${greeting}`})`;
    return this.#closedBeforeUse(detail, "closed", conn);
  }

  /**
   * The upstream closed a connection before it served anyone (a session's new connection, a
   * refill, a probe): counted as a failed dial, `closed` (or `tls`, for a handshake the upstream
   * refused after it completed on our side), with `detail` as its reason; once per `conn` (a
   * refill on probation is reported lost as well when its session releases it, and a dial's
   * connection refused before its borrower leased it is counted while idle).
   */
  #closedBeforeUse(
    detail: string,
    failure: "closed" | "tls" = "closed",
    conn?: UpstreamConn,
  ): UpstreamConnectError {
    const error = new UpstreamConnectError(this.options.upstream, failure, detail);
    if (conn?.dialFailureCounted === true) return error;
    if (conn !== undefined) conn.dialFailureCounted = true;
    this.#dialFailed(error);
    return error;
  }

  /**
   * A session's new connection whose first read was a fatal TLS alert
   * ({@link UpstreamConn.handshakeRefused}): counted as a failed dial, `tls`, as a handshake that
   * failed in the dial is. @returns the error the session ends with (`connect-failed`).
   */
  refusedOnFirstUse(conn: UpstreamConn): UpstreamConnectError {
    return this.#closedBeforeUse(conn.handshakeRefused ?? "TLS: refused", "tls", conn);
  }

  /**
   * Whether a session that found nothing ready should also wait for a connection while it dials
   * ({@link #takeOrDial}). In `reuse`, always: leased connections come back. In `warm` nothing
   * comes back, so only while more refills are on their way than sessions wait for them; a
   * session behind those is served by its own dial, as in `off`. Waiting as well cost such a
   * session CPU and nothing else: with 1,000 clients on loopback, every session missed and waited,
   * each landing connection went to the longest waiter, whose own dial then landed for the next,
   * and `warm` ran at 0.8x `off` (measured). The dial of a session that took a refill also lands
   * in the pool, but is not counted as on its way: each would let one more session wait, and
   * that one's dial the next, which is that chain again.
   */
  #worthWaiting(): boolean {
    if (this.options.mode !== "warm" || this.#idle.size > 0) return true;
    return this.#idle.waiting < this.#refiller.inFlight;
  }

  /**
   * With a slot held: dials, and takes an idle connection instead if one is returned first. Then
   * the dial goes on and its connection joins the pool, so the pool grows to what the load wants;
   * in `reuse`, only while connections open and being dialled are no more than the recent peak
   * of connections wanted at once (taken, leased or settling, or waited for), else it is
   * aborted. Without that bound, each session served by a returned connection left a dial
   * behind: 300 clients against an upstream slow to accept had about 2,300 dials in flight.
   */
  async #takeOrDial(signal?: AbortSignal): Promise<Borrowed> {
    const ownDial = this.options.mode === "reuse" ? new AbortController() : undefined;
    const dialing = this.#dial(signal, undefined, false, ownDial?.signal);
    const stopWaiting = new AbortController();
    // Served at once from a held idle connection (one pooled after this borrower left the
    // --max-upstream queue), not through #putIdle: this dial is then one to come, counted here.
    const held = this.#idle.size > 0;
    const waiting = this.#idle.take(stopWaiting.signal);
    if (held) this.#orphanDials++;
    this.#noteWanted();
    const dialed = () => dialing.then((conn) => ({ conn, fromPool: false }));
    let borrowed: Borrowed;
    try {
      borrowed = await Promise.race([
        dialed(),
        // A wait that ends without a connection (pool closed, wait stopped) defers to the dial.
        waiting.then((conn) => ({ conn, fromPool: true }), dialed),
      ]);
    } catch (error) {
      stopWaiting.abort(STOPPED_WAITING);
      // Served in the same tick as the dial failed: counted as a dial to come, which will not.
      waiting.then((conn) => this.#orphanLanded(conn), () => {});
      throw error;
    }
    if (borrowed.fromPool) {
      // The dial goes on; its connection joins the pool (counted as ready since it was served).
      // In reuse, not past the connections wanted at once (a connect that completed as it was
      // aborted lands all the same).
      if (ownDial !== undefined && this.#open > this.#demand.peakWanted(performance.now())) {
        ownDial.abort(NOT_NEEDED);
      }
      dialing.then((conn) => this.#orphanLanded(conn), () => this.#orphanLanded(undefined));
    } else {
      stopWaiting.abort(STOPPED_WAITING);
      // A waiter served in the same tick as the dial finished gives its connection back.
      waiting.then((conn) => this.#orphanLanded(conn), () => {});
    }
    return borrowed;
  }

  /**
   * A connection counted in {@link #orphanDials} is here (`conn`, which goes to the pool) or will
   * not come (`undefined`: the dial failed). Either way the refiller looks again: what was
   * counted as ready may not be.
   */
  #orphanLanded(conn: UpstreamConn | undefined): void {
    this.#orphanDials--;
    if (conn !== undefined) this.#putIdle(conn);
    this.#refiller.request();
  }

  /**
   * Gives back a connection whose lease has ended ({@link UpstreamConn.endLease} done). It goes
   * back to the pool only when the mode reuses, the session says it ended cleanly, the connection
   * saw no error, half-close or stray byte, is under its maximum lifetime, and idle and settling
   * connections together are fewer than `maxIdle`; otherwise it is closed. Call once per borrow.
   */
  release(conn: UpstreamConn, sessionClean: boolean): ReleaseOutcome {
    // A connection that proves the upstream serves is noted there (the refiller's `proven`).
    this.#refiller.released(conn);
    if (conn.oneSessionOnly !== undefined) conn.unfitReason ??= conn.oneSessionOnly;
    if (this.#greetingWatch !== undefined) {
      this.#greetingWatch.learnFrom(conn);
      conn.unfitReason ??= this.#greetingWatch.unfitReason;
    }
    const refusal = this.#refusal(conn, sessionClean);
    if (refusal !== undefined) {
      this.#stats.refused[refusal]++;
      this.#log.debug("closing upstream connection #{id}: {reason}", {
        id: conn.id,
        reason: refusal === "unfit" ? conn.unfitReason : refusal,
      });
      conn.close();
      return refusal;
    }
    this.#stats.pooled++;
    if (this.#settleQueue === undefined) {
      this.#putIdle(conn);
    } else {
      // Watched by its reader, not handed out: a late byte drops it (see #onIdleLoss).
      this.#settling.set(conn, false);
      this.#settleQueue.add(conn);
    }
    return "pooled";
  }

  /**
   * A connection's settle time is over: it goes to the pool, unless the timer ran late. After a
   * stall (a long GC pause, a throttled container, a busy loop) the settle timer runs before
   * reads that became ready meanwhile, and a late tail that came within the settle time would
   * reach whoever the connection went to first: then it settles once more, on the loop's own
   * time, and if that timer runs late too, it is handed out after one more turn of the event
   * loop, and only if no byte was read meanwhile. (One more turn alone let a tail through when
   * the connection's read was not yet under way; always waiting a turn cost every hand-out
   * about 2 ms, Deno's shortest timer inside a timer.)
   */
  #settled(conn: UpstreamConn, lateMs: number): void {
    if (!this.#settling.has(conn)) return; // dropped meanwhile
    if (lateMs <= SETTLE_TIMER_SLACK_MS && this.#settledDue.length === 0) {
      this.#handOutSettled(conn);
      return;
    }
    if (lateMs > SETTLE_TIMER_SLACK_MS && this.#settling.get(conn) === false) {
      // The loop was held: its settle time was not watched. Once more, on the loop's own time
      // (one more turn alone let a late tail through when the read was not yet under way).
      this.#settling.set(conn, true);
      this.#settleQueue?.add(conn);
      return;
    }
    this.#settledDue.push(conn);
    this.#settledTimer ??= setTimeout(() => this.#settledAfterReads(), 0);
  }

  #settledAfterReads(): void {
    this.#settledTimer = undefined;
    for (const conn of this.#settledDue.splice(0)) this.#handOutSettled(conn);
  }

  /** A settled connection goes to the pool if it is still settling and fit, else it is closed. */
  #handOutSettled(conn: UpstreamConn): void {
    if (!this.#settling.delete(conn)) return; // dropped meanwhile
    if (isFit(conn)) this.#putIdle(conn);
    else conn.close();
  }

  /**
   * Closes the pool: idle connections are closed, refills stop, waiting and later borrows fail.
   * Connections still leased are closed when released. Resolves when every dial and reader it
   * started is done.
   */
  async close(): Promise<void> {
    this.#closed = true;
    this.#closeController.abort(new PoolClosedError());
    this.#refiller.stop();
    for (const waiter of this.#queue.splice(0)) waiter.reject(new PoolClosedError());
    this.#settleQueue?.clear();
    clearTimeout(this.#settledTimer);
    this.#settledTimer = undefined;
    this.#settledDue.length = 0;
    for (const conn of this.#settling.keys()) conn.close();
    this.#settling.clear();
    clearTimeout(this.#sweepTimer);
    this.#sweepTimer = undefined;
    clearTimeout(this.#trimTimer);
    this.#trimTimer = undefined;
    for (const conn of this.#idle.close()) conn.close();
    this.#endLimitCheck();
    while (this.#dialing.size > 0 || this.#closing.size > 0) {
      await Promise.allSettled([...this.#dialing, ...this.#closing]);
    }
  }

  /**
   * Retires every connection open or being dialled now, as if its lifetime were over: idle ones
   * are closed at once (refills replace them as demand asks), leased ones when their session ends,
   * and one whose dial was under way goes to the session that asked for it, if any, and no one
   * else. Called when the TLS files change, so that no connection made with a CA or client
   * certificate that was replaced is handed out again. Counted as expired (idle) and max lifetime
   * (released).
   */
  renew(): void {
    if (this.#closed) return;
    this.#renewedAt = performance.now();
    this.#endLimitCheck();
    clearTimeout(this.#sweepTimer);
    this.#sweepAt = -Infinity;
    this.#sweepTimer = setTimeout(() => this.#sweep(), 0);
  }

  /**
   * Whether `conn` was dialled before the last {@link renew}: with TLS files since replaced. A
   * dial under way at the renew still serves the session that asked for it, and no one after.
   */
  #retired(conn: UpstreamConn): boolean {
    return conn.dialStartedAt < this.#renewedAt;
  }

  #refusal(conn: UpstreamConn, sessionClean: boolean): ReleaseRefusal | undefined {
    if (this.#closed) return "pool closed";
    if (this.options.mode !== "reuse") return "mode does not reuse";
    if (!sessionClean) return "session not clean";
    if (!isFit(conn)) return "unfit";
    if (performance.now() >= conn.retireAt || this.#retired(conn)) return "max lifetime";
    // The first borrower in line, waiting for a pooled connection, gets this one at once,
    // whatever the pool holds.
    if (this.#queue[0]?.reusable === true) return undefined;
    // As many as were in use at once recently (or the ready target), at most --pool-size.
    const keep = this.#demand.keepTarget(performance.now(), this.options.minIdle);
    if (this.#idle.size + this.#settling.size >= keep) return "pool full";
    return undefined;
  }

  #takeIdle(): UpstreamConn | undefined {
    const now = performance.now();
    for (let conn = this.#idle.tryTake(); conn !== undefined; conn = this.#idle.tryTake()) {
      if (isFit(conn) && now < this.#deadline(conn)) return conn;
      if (isFit(conn)) {
        this.#expired(conn, now);
        continue;
      }
      this.#dropped("unfit");
      conn.close();
    }
    return undefined;
  }

  /**
   * Adds a fresh or freed connection to the pool (the longest-waiting borrower gets it first),
   * or closes it when the pool cannot take it.
   */
  #putIdle(conn: UpstreamConn): void {
    if (!isFit(conn)) {
      // Lost before it got here (a dial's connection its reader lost at once): never pooled.
      this.#dropped("unfit");
      conn.close();
      return;
    }
    if (this.#deadline(conn) <= performance.now()) { // retired meanwhile (see renew)
      this.#dropped("expired");
      conn.close();
      return;
    }
    // First come, first served: the first in line takes it if a pooled connection serves it.
    const head = this.#queue[0];
    if (head?.reusable === true) {
      this.#queue.shift();
      head.resolve(conn);
      return;
    }
    // The first in line needs room to dial (a retry, mode off): closing this connection gives
    // it the slot; one behind it that would take a pooled connection does not jump the queue
    // (a retry starved so until its queue timeout, measured). Otherwise it joins the pool if
    // there is room.
    const full = this.#idle.size + this.#settling.size >= this.options.maxIdle;
    const racing = this.#idle.waiting;
    if (this.#queue.length > 0 || full || !this.#idle.offer(conn)) {
      conn.close();
      return;
    }
    // A borrower dialling for itself took it: that dial will land in the pool instead.
    if (this.#idle.waiting < racing) this.#orphanDials++;
    this.#scheduleSweep(conn);
    this.#scheduleTrim();
  }

  /** Makes sure idle connections beyond recent demand are trimmed in time. */
  #scheduleTrim(): void {
    if (this.#trimTimer !== undefined || this.#idle.size <= this.options.minIdle) return;
    this.#trimTimer = setTimeout(() => this.#trim(), this.#trimPeriodMs);
  }

  /**
   * Closes the oldest idle connections beyond what recent demand needs
   * ({@link DemandTracker.keepTarget}): after a burst, the pool shrinks back within one or two
   * peak periods instead of holding every connection until the idle timeout.
   */
  #trim(): void {
    this.#trimTimer = undefined;
    if (this.#closed) return;
    const now = performance.now();
    // warm keeps what its refills aim at; reuse what was in use at once recently.
    const keep = this.options.mode === "warm"
      ? this.#demand.readyTarget(now, this.options.minIdle)
      : this.#demand.keepTarget(now, this.options.minIdle);
    let excess = this.#idle.size + this.#settling.size - keep;
    for (const conn of this.#idle.snapshot()) { // oldest first
      if (excess <= 0) break;
      this.#idle.remove(conn);
      this.#stats.trimmed++;
      excess--;
      conn.close();
    }
    this.#scheduleTrim();
  }

  // ---- --max-upstream: slots and the queue ----

  #hasRoom(): boolean {
    return this.#maxOpen <= 0 || this.#open < this.#maxOpen;
  }

  /** Counts a connection about to be dialled, if there is room and nobody queued before. */
  #takeSlot(): boolean {
    if (this.#queue.length > 0 || !this.#hasRoom()) return false;
    this.#open++;
    return true;
  }

  /**
   * A connection closed or a dial failed: its slot goes to the first queued borrower, or else
   * to a refill if fewer are ready than wanted (at --max-upstream, refills waited for this).
   */
  #freeSlot(): void {
    this.#open--;
    if (this.#closed || !this.#hasRoom()) return;
    const waiter = this.#queue.shift();
    if (waiter === undefined) {
      this.#refiller.request();
      return;
    }
    this.#open++;
    waiter.resolve("slot");
  }

  /** {@link #waitInQueue}, telling `handlers` how long the wait took, however it ended. */
  async #queued(
    handlers: LeaseHandlers,
    signal: AbortSignal | undefined,
    reusable: boolean,
  ): Promise<UpstreamConn | "slot"> {
    const queuedAt = performance.now();
    try {
      return await this.#waitInQueue(signal, reusable);
    } finally {
      handlers.onQueued?.(performance.now() - queuedAt);
    }
  }

  /** Waits in the queue for an idle connection (when `reusable`) or room to dial. */
  #waitInQueue(signal: AbortSignal | undefined, reusable: boolean): Promise<UpstreamConn | "slot"> {
    const queueTimeoutMs = this.options.queueTimeoutMs ?? QUEUE_TIMEOUT_MS;
    const started = performance.now();
    return new Promise((resolve, reject) => {
      const leave = () => {
        clearTimeout(timer);
        signal?.removeEventListener("abort", onAbort);
        const index = this.#queue.indexOf(waiter);
        if (index >= 0) this.#queue.splice(index, 1);
      };
      const onAbort = () => {
        leave();
        reject(signal?.reason);
      };
      const timer = setTimeout(() => {
        leave();
        this.#stats.queueTimeouts++;
        reject(
          new QueueTimeoutError(
            this.options.upstream,
            this.#maxOpen,
            Math.round(performance.now() - started),
          ),
        );
      }, queueTimeoutMs);
      const waiter: QueuedBorrower = {
        reusable,
        resolve: (granted) => {
          leave();
          resolve(granted);
        },
        reject: (reason) => {
          leave();
          reject(reason);
        },
      };
      if (signal?.aborted) {
        onAbort();
        return;
      }
      signal?.addEventListener("abort", onAbort, { once: true });
      this.#queue.push(waiter);
      // Room to dial is what it needs: a check of the idle limit holding a slot gives way, or
      // else an idle connection.
      if (this.#checkingLimit > 0) this.#endLimitCheck();
      else if (!reusable) this.#closeOldestIdle();
    });
  }

  #closeOldestIdle(): void {
    const [oldest] = this.#idle.snapshot();
    if (oldest === undefined) return;
    this.#idle.remove(oldest);
    this.#dropped("room for a dial");
    oldest.close(); // its slot goes to the head of the queue
  }

  // ---- dialling and losing connections ----

  /**
   * Dials one connection; the caller holds a slot (counted in `#open`), which the connection
   * keeps until it closes, or which is freed when the dial fails. With `leaseTo`, the new
   * connection is leased in the tick it is created, before its reader can lose it. `notNeeded`
   * aborts it like the borrower's `signal` (a served session's dial, {@link #takeOrDial}).
   */
  #dial(
    signal?: AbortSignal,
    leaseTo?: LeaseHandlers,
    unchecked = false,
    notNeeded?: AbortSignal,
  ): Promise<UpstreamConn> {
    this.#stats.dials++;
    this.#dialsInFlight++;
    const started = performance.now();
    const signals = [this.#closeController.signal];
    if (signal !== undefined) signals.push(signal);
    if (notNeeded !== undefined) signals.push(notNeeded);
    const { upstream, connectTimeoutMs, openingCheck } = this.options;
    const check = unchecked ? undefined : openingCheck;
    const dialing = dialUpstream(upstream, connectTimeoutMs, this.options.tls, ...signals)
      .then(async (socket) => {
        if (check === undefined) return { socket, verdict: undefined };
        const left = connectTimeoutMs - (performance.now() - started);
        return { socket, verdict: await checkOpening(socket, check, upstream, left, signals) };
      })
      .then(({ socket, verdict }) => {
        this.#dialsInFlight--;
        const dialMs = this.#dialSucceeded(started) - started;
        this.#demand.dialed(dialMs);
        const conn = new UpstreamConn(socket, this.#connHooks);
        conn.dialStartedAt = started;
        conn.checked = verdict !== undefined;
        if (verdict !== undefined && verdict.verdict !== "serves") this.#servesOnce(conn, verdict);
        if (unchecked && openingCheck !== undefined) conn.oneSessionOnly = UNCHECKED_REASON;
        if (this.options.maxLifetimeMs > 0) {
          const lifetime = this.options.maxLifetimeMs * (1 - Math.random() * LIFETIME_JITTER);
          conn.retireAt = conn.createdAt + lifetime;
        }
        const watch = this.#greetingWatch;
        if (watch !== undefined && !watch.known) {
          // No client byte is written before a greeting could have come (`src/greeting.ts`).
          conn.holdWrites(watch.watch(conn, dialMs, ...signals));
        } else if (watch?.greets === true) {
          // Known from the start to serve one session: its session treats a client's FIN as in
          // `off` (a greeting that arrives after the first request is no answer to it).
          conn.oneSessionOnly = GREETS_REASON;
        }
        if (leaseTo !== undefined) conn.tryLease(leaseTo, false);
        return conn;
      }, (error: unknown) => {
        this.#dialsInFlight--;
        this.#dialFailed(error);
        this.#freeSlot();
        throw error;
      });
    const tracked = dialing.then(() => {}, () => {}).finally(() => this.#dialing.delete(tracked));
    this.#dialing.add(tracked);
    return dialing;
  }

  /**
   * A new connection asks for a login (memcached `-Y`), or answered the opening check in a way it
   * does not know: it serves one session and is closed after (a logged-in connection must serve
   * no one else; of the other, nothing is known). Warns once per pool.
   */
  #servesOnce(conn: UpstreamConn, { verdict, line }: OpeningResult): void {
    const login = verdict === "asks-login";
    conn.oneSessionOnly = login ? ASKS_LOGIN_REASON : UNKNOWN_ANSWER_REASON;
    if (this.#warnedOpening) return;
    this.#warnedOpening = true;
    const check = this.options.openingCheck?.name;
    const answer = line.slice(0, 80);
    this.#log.warn(
      login
        ? "upstream {upstream} asks each connection for a login ({check} was answered " +
          "{answer}: memcached -Y): a logged-in connection must not serve another client, so " +
          "each connection serves one session and is closed, as with --pool off"
        : "upstream {upstream} answered {check} with {answer}, not as memcached does: its " +
          "connections serve one session each and are closed, as with --pool off",
      { upstream: this.#address, check, answer },
    );
  }

  /**
   * Notes a dial started at `started` that connected (a connection or a probe): its time goes to
   * the histogram; returns now. A connect proves little about serving (see {@link #served}).
   */
  #dialSucceeded(started: number): number {
    const now = performance.now();
    this.#connectSeconds.observe((now - started) / 1000);
    return now;
  }

  /**
   * The upstream showed it serves (for readiness): a session's connection answered a request
   * and the upstream did not end it on its own (`provesService` of `src/upstream_conn.ts`, told
   * through the refiller), a refill stood idle through its probation, or a probe's connection
   * stayed open.
   */
  #served(): void {
    this.#lastSuccessAt = performance.now();
  }

  #dialFailed(error: unknown): void {
    // A dial its borrower gave up on says nothing about the upstream.
    if (error instanceof UpstreamConnectError && error.failure === "aborted") return;
    this.#stats.dialFailures++;
    const failure = error instanceof UpstreamConnectError ? error.failure : "error";
    this.#stats.dialFailuresBy[failure === "aborted" ? "error" : failure]++;
    this.#lastDialError = error instanceof Error ? error.message : String(error);
    this.#lastFailureAt = performance.now();
  }

  /**
   * Checks that the upstream serves (for readiness when no session proved it recently): one dial,
   * then {@link PROBE_WATCH_MS} for the upstream to close or reset it (a server at its client
   * limit, a load balancer with no backend accepts and closes at once), then closed. Counted as a
   * dial. At most one at a time, and none within {@link PROBE_INTERVAL_MS} of the last one's end,
   * so that a flood of `/readyz` requests against a refusing upstream does not become a flood of
   * dials. Never throws.
   */
  probe(): Promise<void> {
    if (this.#probing !== undefined) return this.#probing;
    // Never past --max-upstream: at the bound, sessions are proof enough either way.
    if (this.#closed || !this.#hasRoom()) return Promise.resolve();
    if (performance.now() - this.#probedAt < PROBE_INTERVAL_MS) return Promise.resolve();
    this.#open++; // its slot, held while #probing is set (#freeSlot below)
    this.#stats.dials++;
    const started = performance.now();
    const probing = dialUpstream(
      this.options.upstream,
      this.options.connectTimeoutMs,
      this.options.tls,
      this.#closeController.signal,
    ).then(async (socket) => {
      this.#dialSucceeded(started);
      const lost = await watchThenClose(socket, PROBE_WATCH_MS);
      if (lost === undefined) {
        this.#served();
        return;
      }
      if (typeof lost === "object") {
        this.#closedBeforeUse(lost.refused, "tls"); // a TLS 1.3 refusal of our certificate
        return;
      }
      const detail = `the upstream ${lost} the probe connection at once`;
      this.#closedBeforeUse(detail);
    }, (error: unknown) => this.#dialFailed(error)).finally(() => {
      this.#probing = undefined;
      this.#probedAt = performance.now();
      this.#dialing.delete(probing);
      this.#freeSlot();
    });
    this.#probing = probing;
    this.#dialing.add(probing);
    return probing;
  }

  /** Runs once per connection, whoever closed it: frees its slot, keeps its reader in sight. */
  #onClosed(conn: UpstreamConn): void {
    const done = conn.readerDone.finally(() => this.#closing.delete(done));
    this.#closing.add(done);
    this.#freeSlot();
  }

  #dropped(reason: IdleDropReason): void {
    this.#stats.idleDropped++;
    this.#stats.idleDroppedBy[reason]++;
  }

  #onIdleLoss(conn: UpstreamConn, reason: IdleLossReason): void {
    if (this.#idle.remove(conn) || this.#settling.delete(conn)) this.#dropped(reason);
    if (reason === "closed by upstream") {
      this.#idleLimit.observe(performance.now() - conn.idleSince);
    }
    if (this.#limitCheck?.conn === conn) this.#limitCheckClosed(conn, reason);
    this.#log.debug("idle upstream connection #{id} dropped: {reason}", { id: conn.id, reason });
    this.#refiller.lost(conn, conn.handshakeRefused ?? reason);
    // Refused while idle: a refill on probation the refiller counted just now, or a session's dial
    // that went to the pool, whose handshake failed all the same (counted once either way).
    if (conn.handshakeRefused !== undefined) this.refusedOnFirstUse(conn);
    this.#refiller.request();
  }

  // ---- idle timeout and lifetime ----

  /** When `conn` must leave the pool: idle timeout, lifetime, or the upstream's learned limit. */
  #deadline(conn: UpstreamConn): number {
    if (this.#retired(conn)) return 0;
    const idleFor = Math.min(this.options.idleTimeoutMs, this.#idleLimit.retireAfterMs);
    return Math.min(conn.idleSince + idleFor, conn.retireAt);
  }

  /**
   * Closes `conn`, taken out of the pool past its deadline. A refill retired for the upstream's
   * learned idle limit before it proved itself is a failed refill: an upstream that closes idle
   * connections sooner than the probation would otherwise have each ready connection redialled
   * at that pace for ever, with no backoff (one every 135 ms for a 150 ms limit).
   */
  #expired(conn: UpstreamConn, now: number): void {
    this.#dropped("expired");
    const limit = this.#idleLimit.retireAfterMs;
    const forLimit = limit < this.options.idleTimeoutMs && now >= conn.idleSince + limit;
    if (
      forLimit && now < conn.retireAt && !this.#retired(conn) && this.#idleLimit.checkDue(now)
    ) {
      this.#startLimitCheck(conn, now);
    } else {
      this.#log.debug(
        "idle upstream connection #{id} closed: idle timeout, max lifetime or the upstream's idle limit",
        { id: conn.id },
      );
      conn.close();
    }
    if (forLimit) {
      const reason = `closes idle connections sooner than a refill can prove itself (retired at ${
        Math.round(limit)
      }ms idle)`;
      this.#refiller.retiredUnproven(conn, reason);
    }
  }

  // ---- checking the learned idle limit ----

  /**
   * Keeps `conn`, which reached the learned limit's retirement age, out of the pool (never lent)
   * until well past the limit: the upstream closes it ({@link #limitCheckClosed}), or it outlives
   * the limit ({@link #limitCheckKeptOpen}). See `src/idle_limit.ts`.
   */
  #startLimitCheck(conn: UpstreamConn, now: number): void {
    const untilIdleMs = this.#idleLimit.startCheck();
    // Never kept past --idle-timeout or --max-lifetime: cut short there, it tells nothing (a
    // close it might still have seen would have meant the limit holds).
    const full = conn.idleSince + untilIdleMs;
    const until = Math.min(full, conn.idleSince + this.options.idleTimeoutMs, conn.retireAt);
    const timer = setTimeout(() => this.#limitCheckKeptOpen(conn), Math.max(0, until - now));
    this.#limitCheck = { conn, timer, cutShort: until < full };
    this.#log.debug(
      "idle upstream connection #{id} kept, never lent, until idle {until}: checking the upstream's idle limit",
      { id: conn.id, until: formatDuration(Math.round(until - conn.idleSince)) },
    );
  }

  /** The check's connection was lost while kept: closed by the upstream (the limit holds), or not. */
  #limitCheckClosed(conn: UpstreamConn, reason: IdleLossReason): void {
    if (this.#takeLimitCheck(conn) === undefined) return;
    if (reason !== "closed by upstream") {
      this.#idleLimit.checkAbandoned();
      return;
    }
    this.#idleLimit.checkClosed();
    this.#log.debug("the upstream's idle limit holds: it closed a connection idle {idle}", {
      idle: formatDuration(Math.round(performance.now() - conn.idleSince)),
    });
  }

  /** The check's connection was still open at the check's end: the limit is forgotten. */
  #limitCheckKeptOpen(conn: UpstreamConn): void {
    const check = this.#takeLimitCheck(conn);
    if (check === undefined) return;
    const closesAfterMs = this.#idleLimit.closesAfterMs;
    const idleMs = performance.now() - conn.idleSince;
    conn.close();
    if (check.cutShort) {
      this.#idleLimit.checkAbandoned(); // at --idle-timeout or --max-lifetime: no verdict
      return;
    }
    this.#idleLimit.checkOutlived();
    this.#log.info(
      "upstream {upstream} kept an idle connection open for {idle}, past its idle limit of about " +
        "{closes}; no longer retiring idle connections early",
      {
        upstream: this.#address,
        idle: formatDuration(Math.round(idleMs)),
        closes: formatDuration(Math.round(closesAfterMs)),
      },
    );
    // Idle connections now stay to --idle-timeout: the sweep finds their later deadlines.
    clearTimeout(this.#sweepTimer);
    this.#sweep();
  }

  /**
   * Ends a check under way without an answer (the pool closes or renews its connections, a
   * session needs its slot), or, with `abandoned` false, one a newly learned limit made moot.
   */
  #endLimitCheck(abandoned = true): void {
    const check = this.#takeLimitCheck();
    if (check === undefined) return;
    if (abandoned) this.#idleLimit.checkAbandoned();
    check.conn.close();
  }

  /** Takes the check under way (if of `conn`, when given) from the pool, its timer stopped. */
  #takeLimitCheck(conn?: UpstreamConn): LimitCheck | undefined {
    const check = this.#limitCheck;
    if (check === undefined || (conn !== undefined && check.conn !== conn)) return undefined;
    clearTimeout(check.timer);
    this.#limitCheck = undefined;
    return check;
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
    for (const conn of expired) this.#expired(conn, now);
    for (const conn of this.#idle.snapshot()) this.#scheduleSweep(conn);
    if (expired.length > 0) this.#refiller.request();
  }
}

/**
 * Reads `socket` for up to `ms`, then closes it: `"closed"` or `"reset"` if the upstream ended it
 * meanwhile, `{ refused }` if that was a TLS alert refusing our certificate (its reason), and
 * `undefined` if it was still open (bytes it sent, a greeting, are dropped).
 */
async function watchThenClose(
  socket: ByteConn,
  ms: number,
): Promise<"closed" | "reset" | { refused: string } | undefined> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const quiet = new Promise<undefined>((resolve) =>
    timer = setTimeout(() => resolve(undefined), ms)
  );
  const buffer = new Uint8Array(1024);
  const watching = (async (): Promise<"closed" | "reset" | { refused: string }> => {
    try {
      while (true) {
        const n = await readConn(socket, buffer); // a greeting is dropped
        if (n === null || n === 0) return "closed"; // the runtime's read op says EOF as 0
      }
    } catch (error) {
      const refused = tlsAlertReason(error);
      return refused === undefined ? "reset" : { refused };
    }
  })();
  try {
    return await Promise.race([watching, quiet]);
  } finally {
    clearTimeout(timer);
    closeQuietly(socket);
    await watching; // the read, ended by the close (it never rejects)
  }
}
