/**
 * Learning the upstream's own idle limit. Many servers close a connection that has been idle (or
 * never used) for a fixed time: Redis `timeout`, MariaDB's `connect_timeout` for connections that
 * never logged in, a load balancer's idle timeout. A pool that keeps connections longer hands one
 * out in the instant the server closes it, or makes the server log an aborted connection for each.
 * So the pool watches when the upstream closes its idle connections; when the idle times of three
 * closes at different moments agree, it retires its idle connections a little before that (at
 * {@link RETIRE_FRACTION} of it). Closes at one moment (a restart) count once.
 *
 * A learned limit is checked now and then, since it may be wrong (restarts at a steady pace, each
 * closing connections dialled together at the same age, look like one) or may have changed: one
 * connection that reaches the retirement age is kept, never lent, until well past the limit. If
 * the upstream closes it meanwhile, the limit holds and the next check comes twice as late
 * ({@link FIRST_CHECK_AFTER_MS} after learning, at most {@link LONGEST_CHECK_INTERVAL_MS} apart);
 * if it stays open, the limit is forgotten and learned anew.
 *
 * ```ts
 * import { IdleLimitLearner } from "./idle_limit.ts";
 *
 * const learner = new IdleLimitLearner((closesAfter, retireAt) => console.log(closesAfter, retireAt));
 * let at = 0;
 * for (const idleMs of [10_020, 10_003, 10_011]) learner.observe(idleMs, at += 1_000);
 * console.log(learner.retireAfterMs); // 9002
 * ```
 *
 * @module
 */

/** Closes this many, in a row, that agree make a limit. */
export const AGREEING_CLOSES = 3;
/** How far apart agreeing closes may be: the longest at most this much longer than the shortest. */
export const AGREEMENT = 0.1;
/** Connections are retired at this fraction of the learned limit. */
export const RETIRE_FRACTION = 0.9;
/** A close sooner than this after the last activity is no idle limit (a restart, a crash). */
export const SHORTEST_LIMIT_MS = 100;
/**
 * Closes within this long of the one before are one event, observed once: a restart or a crash
 * closes every idle connection at once, and connections left idle together by a burst of
 * sessions then have idle times that agree, which is no limit.
 */
export const SAME_EVENT_MS = 100;
/** The first check of a learned limit comes this long after it was learned. */
export const FIRST_CHECK_AFTER_MS = 60_000;
/** Checks that find the limit in place come twice as far apart each time, up to this. */
export const LONGEST_CHECK_INTERVAL_MS = 3_600_000;
/**
 * A check's connection is kept until idle for this fraction of the limit past it, plus
 * {@link CHECK_MARGIN_MS}: later than any close that agrees with the limit, and than a server
 * that checks its timeouts once a second (Redis) closes it.
 */
export const CHECK_PAST = 0.25;
/** See {@link CHECK_PAST}. */
export const CHECK_MARGIN_MS = 1_000;
/**
 * A lower limit is learned again only when it retires connections at least this fraction sooner:
 * a check's own close a few milliseconds early is no news (no second log line, no restart of the
 * checks), and a real drop still leaves at least 8% of margin before the new limit.
 */
export const RELEARN_BAND = 0.02;

/** Learns the idle time after which the upstream closes connections; see the module documentation. */
export class IdleLimitLearner {
  readonly #onLearned: (closesAfterMs: number, retireAfterMs: number) => void;
  readonly #firstCheckAfterMs: number;
  #recent: number[] = [];
  #closesAfterMs = Infinity;
  #retireAfterMs = Infinity;
  #lastCloseAt = -Infinity;
  #checkIntervalMs = 0;
  #nextCheckAt = Infinity;
  #checking = false;

  /**
   * @param onLearned called when a limit is learned (again, if the upstream's limit drops).
   * @param firstCheckAfterMs when the first check of a learned limit is due (tests shorten it).
   */
  constructor(
    onLearned: (closesAfterMs: number, retireAfterMs: number) => void,
    firstCheckAfterMs: number = FIRST_CHECK_AFTER_MS,
  ) {
    this.#onLearned = onLearned;
    this.#firstCheckAfterMs = firstCheckAfterMs;
  }

  /** How long a connection may stay idle before the pool retires it; `Infinity` until learned. */
  get retireAfterMs(): number {
    return this.#retireAfterMs;
  }

  /** The idle time after which the upstream closes connections; `Infinity` until learned. */
  get closesAfterMs(): number {
    return this.#closesAfterMs;
  }

  /** Whether a connection reaching its retirement age at `now` should check the limit instead. */
  checkDue(now: number = performance.now()): boolean {
    return !this.#checking && now >= this.#nextCheckAt;
  }

  /**
   * A check begins: its connection is kept, never lent. @returns the idle time (ms) it is kept
   * until; still open then, the limit is gone ({@link checkOutlived}).
   */
  startCheck(): number {
    this.#checking = true;
    return this.#closesAfterMs * (1 + CHECK_PAST) + CHECK_MARGIN_MS;
  }

  /**
   * The upstream closed the check's connection while it was kept, at `now`: the limit holds, and
   * the next check comes twice as late. (A server that checks its timeouts once a second closes
   * up to a second late, so any close before the check's end counts.)
   */
  checkClosed(now: number = performance.now()): void {
    this.#checking = false;
    this.#checkIntervalMs = Math.min(this.#checkIntervalMs * 2, LONGEST_CHECK_INTERVAL_MS);
    this.#nextCheckAt = now + this.#checkIntervalMs;
  }

  /**
   * The check's connection was still open when its time was up: the limit is gone, and forgotten.
   * (A check cut short by `--idle-timeout` or `--max-lifetime` says nothing: {@link checkAbandoned}.)
   */
  checkOutlived(): void {
    this.#checking = false;
    this.#forget();
  }

  /** The check ended with no answer (the pool closed its connection): the next one as planned. */
  checkAbandoned(now: number = performance.now()): void {
    this.#checking = false;
    this.#nextCheckAt = now + this.#checkIntervalMs;
  }

  #forget(): void {
    this.#recent = [];
    this.#closesAfterMs = Infinity;
    this.#retireAfterMs = Infinity;
    this.#nextCheckAt = Infinity;
  }

  /**
   * The upstream closed a connection that had been idle (or unused) for `idleMs`, at `at` (ms,
   * the clock of `performance.now()`; tests give their own).
   */
  observe(idleMs: number, at: number = performance.now()): void {
    const sameEvent = at - this.#lastCloseAt < SAME_EVENT_MS;
    this.#lastCloseAt = at;
    if (sameEvent || !(idleMs >= SHORTEST_LIMIT_MS)) return;
    this.#recent.push(idleMs);
    if (this.#recent.length > AGREEING_CLOSES) this.#recent.shift();
    if (this.#recent.length < AGREEING_CLOSES) return;
    const shortest = Math.min(...this.#recent);
    if (Math.max(...this.#recent) > shortest * (1 + AGREEMENT)) return;
    const retire = Math.floor(shortest * RETIRE_FRACTION);
    // Retiring earlier already, or about as early ({@link RELEARN_BAND}).
    if (retire >= this.#retireAfterMs * (1 - RELEARN_BAND)) return;
    this.#checking = false; // a check under way was of the old limit: the pool ends it
    this.#closesAfterMs = shortest;
    this.#retireAfterMs = retire;
    this.#checkIntervalMs = this.#firstCheckAfterMs;
    this.#nextCheckAt = at + this.#checkIntervalMs;
    this.#onLearned(shortest, retire);
  }
}
