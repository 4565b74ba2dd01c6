/**
 * Learning the upstream's own idle limit. Many servers close a connection that has been idle (or
 * never used) for a fixed time: Redis `timeout`, MariaDB's `connect_timeout` for connections that
 * never logged in, a load balancer's idle timeout. A pool that keeps connections longer hands one
 * out in the instant the server closes it, or makes the server log an aborted connection for each.
 * So the pool watches when the upstream closes its idle connections; when the times agree, it
 * retires its idle connections a little before that (at {@link RETIRE_FRACTION} of it).
 *
 * ```ts
 * import { IdleLimitLearner } from "./idle_limit.ts";
 *
 * const learner = new IdleLimitLearner((closesAfter, retireAt) => console.log(closesAfter, retireAt));
 * for (const idleMs of [10_020, 10_003, 10_011]) learner.observe(idleMs);
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

/** Learns the idle time after which the upstream closes connections; see the module documentation. */
export class IdleLimitLearner {
  readonly #onLearned: (closesAfterMs: number, retireAfterMs: number) => void;
  readonly #recent: number[] = [];
  #retireAfterMs = Infinity;

  /** @param onLearned called when a limit is learned (again, if the upstream's limit drops). */
  constructor(onLearned: (closesAfterMs: number, retireAfterMs: number) => void) {
    this.#onLearned = onLearned;
  }

  /** How long a connection may stay idle before the pool retires it; `Infinity` until learned. */
  get retireAfterMs(): number {
    return this.#retireAfterMs;
  }

  /** The upstream closed a connection that had been idle (or unused) for `idleMs`. */
  observe(idleMs: number): void {
    if (!(idleMs >= SHORTEST_LIMIT_MS)) return;
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
