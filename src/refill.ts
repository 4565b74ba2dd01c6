/**
 * Keeping connections ready (`--min-idle`, or what demand asks: `src/demand.ts`) without ever
 * dialling in a hot loop.
 *
 * A successful TCP connect proves little: an upstream at its client limit, a load balancer with no
 * healthy backend or a crashing service accepts and closes at once (Redis first writes
 * `-ERR max number of clients reached`). So a refilled connection is on probation: it counts as
 * healthy only once it proved itself (a session got an answer on it, or it stayed idle for
 * {@link PROBATION_MS}); one lost before that is a failed dial.
 *
 * Refills run at most {@link REFILL_CONCURRENCY} dials at once. A round with a failure doubles the
 * backoff once (100 ms up to 5 s) and no refill starts until it has passed; while refills fail, a
 * round is at most {@link REFILL_CONCURRENCY} dials and the next one starts after the backoff
 * (only a healthy upstream is dialled on up to the ready target as its connects succeed). The
 * first proof ends the episode and refills up to the target at once. An episode is logged once at
 * `warn` with its reason, at most once per {@link EPISODE_WARNING_INTERVAL_MS} (one that starts
 * sooner is warned about once it outlasts that), and the first proof after a warned episode once
 * at `info`. Sessions never wait for refills: one that finds no idle connection dials for itself
 * (and takes a refill instead if one lands first that no earlier session waits for).
 *
 * @module
 */

import { UpstreamConnectError } from "./dial.ts";
import { DelayQueue } from "./delay_queue.ts";
import type { Logger } from "./logging.ts";
import { provesService, type UpstreamConn } from "./upstream_conn.ts";

/**
 * Most refill dials under way at once. More (up to the ready target) made sessions find a ready
 * connection more often but cost more CPU per session than it saved (measured: 32 clients on
 * loopback, 5,200 against 6,400 sessions/s), so refills stay a background trickle and a session
 * that finds none dials for itself.
 */
export const REFILL_CONCURRENCY = 4;
/** How long a refilled connection that no session used must stay up to count as healthy. */
export const PROBATION_MS = 1_000;
/** The first backoff after a failed round. */
export const REFILL_BACKOFF_MIN_MS = 100;
/** The longest backoff between rounds. */
export const REFILL_BACKOFF_MAX_MS = 5_000;
/**
 * Episodes of failing refills are warned about at most once per this long (the later ones at
 * `debug`), so an upstream that flaps between serving and failing cannot flood the log.
 */
export const EPISODE_WARNING_INTERVAL_MS = 60_000;

/** What a {@link Refiller} needs from its pool. */
export interface RefillTarget {
  /** The upstream's address, for log lines. */
  readonly address: string;
  /** How many connections to keep ready now (`--min-idle`, or more as demand asks). */
  readyTarget(): number;
  /** Connections ready now (idle, settling). */
  ready(): number;
  /** Whether a dial may start now (the pool is open and under `--max-upstream`). */
  canDial(): boolean;
  /** Dials one connection (counted by the pool). */
  dial(): Promise<UpstreamConn>;
  /** Puts a fresh connection into the pool. */
  deliver(conn: UpstreamConn): void;
  /**
   * The upstream ended a refill before it served anyone (closed it, reset it, greeted and
   * closed): as good as a failed dial, counted as one (`closed`; `tls` when its first read was a
   * fatal TLS alert, {@link UpstreamConn.handshakeRefused}), unless its session counted it already.
   * Not called for a dial that failed, which the pool counted already, nor for a refill the pool
   * itself retired.
   */
  lostToUpstream(conn: UpstreamConn, detail: string): void;
  /** A refill proved itself, or a session on a connection got an answer: the upstream serves. */
  proven(): void;
}

/** One refill connection's probation: `conn` is dropped when it ends early. */
interface Probation {
  conn: UpstreamConn | undefined;
  readonly round: number;
}

/** Where a refill connection stands. See the module documentation. */
export class Refiller {
  readonly #target: RefillTarget;
  readonly #log: Logger;
  /** Connections on probation, with the round that dialled them. */
  readonly #probation = new Map<UpstreamConn, Probation>();
  /**
   * Probations in the order they end. An entry forgets its connection as soon as the probation
   * ends early (the usual case under load), so a closed connection is not kept alive for the
   * rest of the probation time by this queue.
   */
  readonly #probationQueue: DelayQueue<Probation>;
  readonly #probationMs: number;
  #inFlight = 0;
  #round = 0;
  /** Dials started in the current round: while refills fail, at most {@link REFILL_CONCURRENCY}. */
  #roundDials = 0;
  /** When the last episode's warning was logged, and whether the current episode's was. */
  #warnedAt = -Infinity;
  #warned = false;
  readonly #warningIntervalMs: number;
  #penalizedRound = -1;
  #backoffMs = 0;
  #timer: ReturnType<typeof setTimeout> | undefined;
  #failure: string | undefined;
  /** Whether the last failure was this process's own shortage of descriptors, not the upstream. */
  #failureWasOwn = false;
  #stopped = false;

  /**
   * @param probationMs How long an unused refill must stay up to count as healthy.
   * @param warningIntervalMs At most one episode warning per this long (tests shorten both).
   */
  constructor(
    target: RefillTarget,
    log: Logger,
    probationMs: number = PROBATION_MS,
    warningIntervalMs: number = EPISODE_WARNING_INTERVAL_MS,
  ) {
    this.#target = target;
    this.#log = log;
    this.#warningIntervalMs = warningIntervalMs;
    this.#probationMs = probationMs;
    this.#probationQueue = new DelayQueue(probationMs, (entry) => this.#probationOver(entry));
  }

  /** Refill dials under way. */
  get inFlight(): number {
    return this.#inFlight;
  }

  /** Why refills are failing, while they are; `undefined` when they are not. */
  get failure(): string | undefined {
    return this.#failure;
  }

  /**
   * Starts refill dials if fewer than the ready target are ready or on their way, unless a
   * backoff is running. Cheap to call often (after every borrow and every loss).
   */
  request(): void {
    if (this.#stopped || this.#timer !== undefined || this.#inFlight >= REFILL_CONCURRENCY) return;
    const target = this.#target;
    const wanted = target.readyTarget();
    while (
      this.#inFlight < REFILL_CONCURRENCY && target.ready() + this.#inFlight < wanted &&
      target.canDial()
    ) {
      if (this.#failure !== undefined && this.#roundDials >= REFILL_CONCURRENCY) {
        // While refills fail, a round is its first dials only; the next one after the backoff
        // (also when this one's dials end neither failed nor proven).
        this.#nextRound();
        return;
      }
      this.#dialOne(this.#round);
    }
  }

  /** Starts the next round of refills after the backoff (at least the shortest), unless set. */
  #nextRound(): void {
    if (this.#timer !== undefined) return;
    this.#timer = setTimeout(() => {
      this.#timer = undefined;
      this.#round++;
      this.#roundDials = 0;
      this.request();
    }, Math.max(this.#backoffMs, REFILL_BACKOFF_MIN_MS));
  }

  /**
   * The upstream's side ended a connection (lost while idle: closed, reset, bytes or a greeting
   * too large; or released after a session, closed by the upstream): a refill still on probation
   * that no session got an answer on is a failed refill, and the pool counts it as a failed dial
   * (`closed`, for readiness and the dial-failure figures); one that was answered is proven.
   */
  lost(conn: UpstreamConn, reason: string): void {
    this.#lostUnproven(conn, reason, true);
  }

  /**
   * The pool retired `conn` itself (the upstream's learned idle limit) while it was on
   * probation: it never got to prove itself, a failed refill, but no failed dial.
   */
  retiredUnproven(conn: UpstreamConn, reason: string): void {
    this.#lostUnproven(conn, reason, false);
  }

  #lostUnproven(conn: UpstreamConn, reason: string, upstreamDid: boolean): void {
    const entry = this.#endProbation(conn);
    if (entry === undefined) return;
    const round = entry.round;
    if (conn.answered) return; // answered, then ended by the upstream: no proof either way
    if (conn.age() >= this.#probationMs) {
      // Its probation was over, only not yet handled (the queue handles due entries in batches,
      // up to half a probation late): it proved itself.
      this.#proven();
      return;
    }
    const age = Math.round(conn.age());
    const greeting = conn.greetingPreview();
    const detail = `${reason} ${age}ms after connect, before it served a client` +
      (greeting === "" ? "" : ` (it said ${greeting})`);
    if (upstreamDid) this.#target.lostToUpstream(conn, detail);
    this.#failed(round, `upstream ${this.#target.address} ${detail}`);
  }

  /**
   * A session is done with `conn`. Answered a request, and not closed or reset by the upstream on
   * its own ({@link provesService}), it shows the upstream serves: the pool is told
   * ({@link RefillTarget.proven}), a refill on probation proved itself, and a failure episode is
   * over. A refill closed or reset by the upstream without an answer counts as a failed dial.
   * Anything else says nothing about the upstream: the client left without asking anything, or
   * the upstream answered and closed, which is how a server at its client limit greets
   * (`-ERR max number of clients reached`), so it must not end a backoff.
   */
  released(conn: UpstreamConn): void {
    const lostTo = conn.lostToUpstream;
    if (provesService(conn)) {
      this.#endProbation(conn);
      this.#proven();
      return;
    }
    if (!this.#probation.has(conn)) return;
    if (lostTo !== undefined && !conn.answered) {
      this.lost(conn, lostTo);
      return;
    }
    this.#endProbation(conn);
  }

  /** Ends `conn`'s probation, if it is on one; its queue entry forgets it. */
  #endProbation(conn: UpstreamConn): Probation | undefined {
    const entry = this.#probation.get(conn);
    if (entry === undefined) return undefined;
    this.#probation.delete(conn);
    entry.conn = undefined;
    return entry;
  }

  /** Stops refilling for good (the pool is closing). */
  stop(): void {
    this.#stopped = true;
    clearTimeout(this.#timer);
    this.#timer = undefined;
    this.#probationQueue.clear();
    this.#probation.clear();
  }

  #dialOne(round: number): void {
    this.#inFlight++;
    this.#roundDials++;
    this.#target.dial().then((conn) => {
      this.#inFlight--;
      if (this.#stopped) {
        conn.close();
        return;
      }
      const entry: Probation = { conn, round };
      this.#probation.set(conn, entry);
      this.#probationQueue.add(entry);
      if (conn.state === "closed") {
        // Its reader lost it before this ran (an upstream that closes at once or floods a
        // greeting; that loss found it on no probation): a failed refill like any other.
        this.lost(conn, conn.handshakeRefused ?? conn.unfitReason ?? "closed");
        return;
      }
      this.#target.deliver(conn);
      // More may be wanted than one round dials (a target above the concurrency).
      this.request();
    }, (error: unknown) => {
      this.#inFlight--;
      if (this.#stopped) return;
      const reason = error instanceof UpstreamConnectError ? error.message : String(error);
      const own = error instanceof UpstreamConnectError && error.failure === "descriptors";
      this.#failed(round, reason, own);
    });
  }

  #probationOver(entry: Probation): void {
    const conn = entry.conn;
    if (conn === undefined) return; // ended early
    this.#endProbation(conn);
    if (conn.state !== "closed") this.#proven();
  }

  #proven(): void {
    this.#target.proven();
    this.#backoffMs = 0;
    if (this.#failure === undefined) return;
    this.#failure = undefined;
    // The episode is over: refill up to the target now, not after a backoff or a borrow.
    clearTimeout(this.#timer);
    this.#timer = undefined;
    this.#round++;
    this.#roundDials = 0;
    if (this.#warned) {
      this.#warned = false;
      // After a shortage of this process's own, the upstream was never at fault: say so.
      const message = this.#failureWasOwn
        ? "descriptors are available again; keeping idle connections to {upstream} ready"
        : "upstream {upstream} is serving again; keeping idle connections ready";
      this.#log.info(message, { upstream: this.#target.address });
    }
    if (!this.#stopped) this.request();
  }

  #failed(round: number, reason: string, own = false): void {
    if (this.#stopped) return;
    this.#failureWasOwn = own;
    // Warned once per episode, and at most once per interval: an episode that starts within it
    // of the last warning is warned about once it outlasts it.
    const now = performance.now();
    const message = "cannot keep idle connections ready: {reason}; retrying with backoff";
    if (!this.#warned && now - this.#warnedAt >= this.#warningIntervalMs) {
      this.#warnedAt = now;
      this.#warned = true;
      this.#log.warn(message, { upstream: this.#target.address, reason });
    } else if (this.#failure === undefined) {
      this.#log.debug(message, { upstream: this.#target.address, reason });
    }
    this.#failure = reason;
    // One doubling per round, however many of its dials fail.
    if (round > this.#penalizedRound) {
      this.#penalizedRound = round;
      this.#backoffMs = Math.min(
        Math.max(this.#backoffMs * 2, REFILL_BACKOFF_MIN_MS),
        REFILL_BACKOFF_MAX_MS,
      );
    }
    this.#nextRound();
  }
}
