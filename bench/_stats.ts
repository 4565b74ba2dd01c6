/**
 * Sample recording and summary statistics for the benchmark and the demo.
 *
 * ```ts
 * import { SampleRecorder } from "./_stats.ts";
 * const rec = new SampleRecorder();
 * rec.add(0.12);
 * rec.add(0.30);
 * console.log(rec.summary().medianMs);
 * ```
 *
 * @module
 */

/** Latency figures in milliseconds, from one set of samples. */
export interface LatencySummary {
  /** Number of samples. */
  count: number;
  /** Arithmetic mean. */
  meanMs: number;
  /** 50th percentile (nearest rank). */
  medianMs: number;
  /** 99th percentile (nearest rank). */
  p99Ms: number;
  /** Smallest sample. */
  minMs: number;
  /** Largest sample. */
  maxMs: number;
}

/**
 * Collects millisecond samples into a growable `Float64Array`, so that a hot loop that records
 * hundreds of thousands of samples makes no garbage per sample.
 */
export class SampleRecorder {
  #data: Float64Array;
  #length = 0;

  /** Creates a recorder; `initialCapacity` (default 4096) only sizes the first buffer. */
  constructor(initialCapacity = 4096) {
    this.#data = new Float64Array(Math.max(16, initialCapacity));
  }

  /** Number of samples recorded so far. */
  get length(): number {
    return this.#length;
  }

  /** Records one sample (milliseconds). */
  add(ms: number): void {
    if (this.#length === this.#data.length) {
      const bigger = new Float64Array(this.#data.length * 2);
      bigger.set(this.#data);
      this.#data = bigger;
    }
    this.#data[this.#length++] = ms;
  }

  /** Appends every sample of `other`. */
  merge(other: SampleRecorder): void {
    for (const v of other.values()) this.add(v);
  }

  /** A view of the recorded samples (not a copy; do not keep it across `add`). */
  values(): Float64Array {
    return this.#data.subarray(0, this.#length);
  }

  /** Summarises the samples; every figure is 0 when there are none. */
  summary(): LatencySummary {
    return summarize(this.values());
  }
}

/**
 * Summarises millisecond samples: mean, median, p99, min, max. Returns zeros for no samples.
 *
 * @example
 * ```ts
 * import { summarize } from "./_stats.ts";
 * summarize(new Float64Array([1, 2, 3])).medianMs; // 2
 * ```
 */
export function summarize(samples: Float64Array): LatencySummary {
  const n = samples.length;
  if (n === 0) return { count: 0, meanMs: 0, medianMs: 0, p99Ms: 0, minMs: 0, maxMs: 0 };
  const sorted = Float64Array.from(samples).sort();
  let sum = 0;
  for (let i = 0; i < n; i++) sum += sorted[i];
  return {
    count: n,
    meanMs: sum / n,
    medianMs: percentile(sorted, 50),
    p99Ms: percentile(sorted, 99),
    minMs: sorted[0],
    maxMs: sorted[n - 1],
  };
}

/**
 * Nearest-rank percentile of samples that are already sorted ascending.
 *
 * @throws {RangeError} when `p` is outside 0..100.
 */
export function percentile(sorted: Float64Array, p: number): number {
  if (!(p >= 0 && p <= 100)) throw new RangeError(`percentile must be within 0..100, got ${p}`);
  if (sorted.length === 0) return 0;
  const rank = Math.ceil((p / 100) * sorted.length);
  return sorted[Math.min(sorted.length - 1, Math.max(0, rank - 1))];
}

/** Formats a number with a precision that suits its size (3 significant digits, at least). */
export function formatNumber(v: number): string {
  if (!Number.isFinite(v)) return String(v);
  if (Number.isInteger(v)) return v.toLocaleString("en-US");
  const a = Math.abs(v);
  if (a >= 1000) return Math.round(v).toLocaleString("en-US");
  if (a >= 100) return v.toFixed(0);
  if (a >= 10) return v.toFixed(1);
  if (a >= 1) return v.toFixed(2);
  return v.toFixed(3);
}

/** Formats a ratio as `1.23x`. */
export function formatRatio(r: number): string {
  return `${r.toFixed(2)}x`;
}

/**
 * The order in which round `round` (from 0) visits `columns`: each round starts one column later
 * than the one before, so that no column always runs right after the same one.
 */
export function roundOrder<T>(columns: readonly T[], round: number): T[] {
  const start = columns.length === 0 ? 0 : round % columns.length;
  return [...columns.slice(start), ...columns.slice(0, start)];
}
