/**
 * Recent demand for upstream connections, so that `warm` and `reuse` keep ready what the load
 * needs (Envoy's preconnect ratio) instead of a fixed `--min-idle`.
 *
 * A ready connection hides one dial from one session. Connections taken from the pool are
 * replaced by refills, which take one dial time to arrive; so the pool needs, ready at once, as
 * many connections as sessions start within one dial time (Little's law: the start rate times the
 * dial time, or the size of a burst that arrives together). {@link DemandTracker} counts the
 * sessions started within the last dial time (a moving window over their start times, at least
 * {@link MIN_DIAL_WINDOW_MS} long) and keeps the peak of that count over the last one or two
 * periods of {@link PEAK_PERIOD_MS}; `warm` keeps `ratio x peak` ready, with `--min-idle` as the
 * floor and `--pool-size` as the ceiling. In `reuse` connections come back after their session, so
 * what counts is the peak of connections in use at once: the pool keeps `ratio x` that in all
 * (Envoy's preconnect ratio over active streams), and keeps released connections up to that peak,
 * never more than `--pool-size`.
 *
 * Everything is O(1) per event (the window is a ring of start times, capped at the pool size), and
 * nothing runs while nothing happens.
 *
 * ```ts
 * import { DemandTracker } from "./demand.ts";
 * const demand = new DemandTracker({ ratio: 1, capacity: 100 });
 * for (let i = 0; i < 10; i++) demand.started(1_000); // a burst of ten at t = 1 s
 * demand.readyTarget(1_000, 0); // 10 (warm)
 * ```
 *
 * @module
 */

/** How long a peak is remembered: between one and two of these periods. */
export const PEAK_PERIOD_MS = 10_000;
/**
 * The shortest window over which starts count as together: the event loop's timer granularity,
 * and about a dial on a local network.
 */
export const MIN_DIAL_WINDOW_MS = 1;
/** Weight of the newest dial time in the moving average. */
const DIAL_TIME_WEIGHT = 0.2;

/** Options of a {@link DemandTracker}. */
export interface DemandOptions {
  /** Connections kept ready per session started within one dial time (`--preconnect-ratio`). */
  ratio: number;
  /** The most connections the pool keeps (`--pool-size`): no target exceeds it. */
  capacity: number;
  /** How long a peak is remembered (tests shorten it). Default {@link PEAK_PERIOD_MS}. */
  peakPeriodMs?: number;
  /** The shortest window over which starts count as together. Default {@link MIN_DIAL_WINDOW_MS}. */
  minDialWindowMs?: number;
}

/** A maximum over the current period and the one before it. */
class RecentPeak {
  readonly #periodMs: number;
  #periodStart = -Infinity;
  #current = 0;
  #previous = 0;

  constructor(periodMs: number) {
    this.#periodMs = periodMs;
  }

  observe(value: number, now: number): void {
    this.#roll(now);
    if (value > this.#current) this.#current = value;
  }

  value(now: number): number {
    this.#roll(now);
    return Math.max(this.#current, this.#previous);
  }

  #roll(now: number): void {
    if (now < this.#periodStart + this.#periodMs) return;
    // One period on: the current one becomes the previous; two or more: both are forgotten.
    this.#previous = now < this.#periodStart + 2 * this.#periodMs ? this.#current : 0;
    this.#current = 0;
    this.#periodStart = now;
  }
}

/** See the module documentation. */
export class DemandTracker {
  readonly #ratio: number;
  /** The ceiling of every target (may be 0: then nothing is kept). */
  readonly #capacity: number;
  /** Slots of the ring of start times (at least 1). */
  readonly #slots: number;
  /** Start times within the window, oldest first, in a ring of `capacity` slots. */
  readonly #starts: Float64Array;
  #head = 0;
  #count = 0;
  readonly #minDialWindowMs: number;
  #dialTimeMs: number;
  readonly #startsPeak: RecentPeak;
  readonly #leasedPeak: RecentPeak;
  readonly #wantedPeak: RecentPeak;

  constructor(options: DemandOptions) {
    this.#ratio = options.ratio;
    this.#capacity = Math.max(0, options.capacity);
    this.#slots = Math.max(1, this.#capacity);
    this.#starts = new Float64Array(this.#slots);
    this.#minDialWindowMs = options.minDialWindowMs ?? MIN_DIAL_WINDOW_MS;
    if (!(this.#minDialWindowMs >= 0 && Number.isFinite(this.#minDialWindowMs))) {
      throw new RangeError(
        `minDialWindowMs must be a finite number >= 0: ${options.minDialWindowMs}`,
      );
    }
    this.#dialTimeMs = this.#minDialWindowMs;
    const period = options.peakPeriodMs ?? PEAK_PERIOD_MS;
    this.#startsPeak = new RecentPeak(period);
    this.#leasedPeak = new RecentPeak(period);
    this.#wantedPeak = new RecentPeak(period);
  }

  /** The moving average of dial times, at least the shortest window (see {@link DemandOptions}). */
  get dialTimeMs(): number {
    return this.#dialTimeMs;
  }

  /** A session asked for a connection at `now` (`performance.now()`). */
  started(now: number): void {
    const windowStart = now - this.#dialTimeMs;
    while (this.#count > 0 && this.#starts[this.#head] < windowStart) {
      this.#head = (this.#head + 1) % this.#slots;
      this.#count--;
    }
    if (this.#count === this.#slots) {
      // The target is capped there anyway: drop the oldest.
      this.#head = (this.#head + 1) % this.#slots;
      this.#count--;
    }
    this.#starts[(this.#head + this.#count) % this.#slots] = now;
    this.#count++;
    this.#startsPeak.observe(this.#count, now);
  }

  /** A dial took `ms`. */
  dialed(ms: number): void {
    const averaged = this.#dialTimeMs + DIAL_TIME_WEIGHT * (ms - this.#dialTimeMs);
    this.#dialTimeMs = Math.max(this.#minDialWindowMs, averaged);
  }

  /** `leased` connections are in use at `now` (leased, or settling before they can be reused). */
  leased(leased: number, now: number): void {
    this.#leasedPeak.observe(leased, now);
  }

  /**
   * `wanted` connections are taken (leased or settling) or waited for at `now`: unlike
   * {@link leased}, not capped by the connections there are.
   */
  wanted(wanted: number, now: number): void {
    this.#wantedPeak.observe(wanted, now);
  }

  /** The recent peak of connections taken or waited for at once. */
  peakWanted(now: number): number {
    return this.#wantedPeak.value(now);
  }

  /** The recent peak of sessions started within one dial time. */
  peakStarts(now: number): number {
    return this.#startsPeak.value(now);
  }

  /** The recent peak of connections in use at once. */
  peakLeased(now: number): number {
    return this.#leasedPeak.value(now);
  }

  /**
   * `warm`: connections to keep ready, `ratio x` {@link peakStarts} (each session uses one up),
   * at least `floor`, at most the capacity.
   */
  readyTarget(now: number, floor: number): number {
    const wanted = Math.ceil(this.#ratio * this.#startsPeak.value(now));
    return Math.min(this.#capacity, Math.max(floor, wanted));
  }

  /**
   * `reuse`: connections to keep ready when `taken` are in use now. Connections come back after
   * their session, so the pool keeps `ratio x` {@link peakLeased} in all (Envoy's preconnect
   * ratio over active streams: 1 adds nothing, 1.5 keeps half again ready), less those taken; at
   * least `floor`, at most the capacity.
   */
  reuseReadyTarget(now: number, floor: number, taken: number): number {
    const wanted = Math.ceil(this.#ratio * this.#leasedPeak.value(now)) - taken;
    return Math.min(this.#capacity, Math.max(floor, wanted));
  }

  /**
   * `reuse`: most idle connections worth keeping: as many as were in use at once recently (times
   * the ratio, when above 1), at least `floor`, at most the capacity.
   */
  keepTarget(now: number, floor: number): number {
    const peak = this.#leasedPeak.value(now);
    const wanted = Math.max(peak, Math.ceil(this.#ratio * peak));
    return Math.min(this.#capacity, Math.max(floor, wanted));
  }
}
