/**
 * Learning the upstream's own idle limit. Many servers close a connection that has been idle (or
 * never used) for a fixed time: Redis `timeout`, MariaDB's `connect_timeout` for connections that
 * never logged in, a load balancer's idle timeout. A pool that keeps connections longer hands one
 * out in the instant the server closes it, or makes the server log an aborted connection for each.
 * So the pool watches when the upstream closes its idle connections; when the idle times of three
 * closes at different moments agree, it retires its idle connections a little before that (at
 * {@link RETIRE_FRACTION} of it). Closes at one moment (a restart) count once.
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

/** Learns the idle time after which the upstream closes connections; see the module documentation. */
export class IdleLimitLearner {
  readonly #onLearned: (closesAfterMs: number, retireAfterMs: number) => void;
  readonly #recent: number[] = [];
  #retireAfterMs = Infinity;
  #lastCloseAt = -Infinity;

  /** @param onLearned called when a limit is learned (again, if the upstream's limit drops). */
  constructor(onLearned: (closesAfterMs: number, retireAfterMs: number) => void) {
    this.#onLearned = onLearned;
  }

  /** How long a connection may stay idle before the pool retires it; `Infinity` until learned. */
  get retireAfterMs(): number {
    return this.#retireAfterMs;
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
    if (retire >= this.#retireAfterMs) return; // retiring earlier already
    this.#retireAfterMs = retire;
    this.#onLearned(shortest, retire);
  }
}
