/**
 * Metrics in the Prometheus text exposition format (version 0.0.4), written by hand, and the same
 * figures as JSON for `/stats`.
 *
 * The data path pays nothing for metrics: the proxy's counters are plain number fields it
 * increments, and a {@link Histogram} records an observation with a short loop over its bucket
 * bounds and two additions, allocating nothing. Text is built only when someone asks: the caller
 * describes its metric families at that moment ({@link counterFamily}, {@link gaugeFamily},
 * {@link histogramFamily}) and {@link exposition} or {@link statsJson} turns them into the answer.
 * Both read the same descriptions through the same checks, so `/metrics` and `/stats` built from
 * one list never disagree.
 *
 * @example
 * ```ts
 * import { counterFamily, exposition, gaugeFamily, Histogram, histogramFamily, samplesByLabel } from "./metrics.ts";
 *
 * const connectSeconds = new Histogram([0.001, 0.01, 0.1, 1]);
 * connectSeconds.observe(0.004);
 * const text = exposition([
 *   counterFamily("tcp_pool_proxy_dials_total", "Upstream dials started.", 12),
 *   counterFamily("tcp_pool_proxy_refused_total", "Connections not pooled, by reason.",
 *     samplesByLabel("reason", { "pool full": 2, "unfit": 1 })),
 *   gaugeFamily("tcp_pool_proxy_idle_connections", "Idle upstream connections.", 4),
 *   histogramFamily("tcp_pool_proxy_connect_seconds", "Upstream connect time.", connectSeconds),
 * ]);
 * console.log(text);
 * ```
 *
 * @module
 */

/** The `Content-Type` of {@link exposition}'s text, as Prometheus expects it. */
export const EXPOSITION_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8";

/**
 * Default bucket bounds of a {@link Histogram}, in seconds: 100 us to 10 s, for the times a proxy
 * measures (a dial, a wait for a connection, a loopback round trip).
 */
export const DEFAULT_BUCKETS_SECONDS: readonly number[] = Object.freeze([
  0.0001,
  0.00025,
  0.0005,
  0.001,
  0.0025,
  0.005,
  0.01,
  0.025,
  0.05,
  0.1,
  0.25,
  0.5,
  1,
  2.5,
  5,
  10,
]);

/** Label names and their values, for one sample. */
export type Labels = Readonly<Record<string, string>>;

/** One value of a counter or a gauge, with its labels (none: the family's only sample). */
export interface Sample {
  /** The labels that tell this sample from the family's others; omit for an unlabelled family. */
  readonly labels?: Labels;
  /** The value; `Infinity`, `-Infinity` and `NaN` are written as `+Inf`, `-Inf` and `NaN`. */
  readonly value: number;
}

/** One histogram of a histogram family, with its labels. */
export interface HistogramSample {
  /** The labels that tell this histogram from the family's others (never `le`). */
  readonly labels?: Labels;
  /** The histogram, read when the text is built. */
  readonly histogram: Histogram;
}

/** A counter family: values that only go up. Its name ends in `_total` in the output. */
export interface CounterFamily {
  readonly type: "counter";
  /**
   * The metric name (`[a-zA-Z_:][a-zA-Z0-9_:]*`); `_total` is added when it does not end in it,
   * so the written name always ends in `_total` exactly once.
   */
  readonly name: string;
  /** What it counts, one sentence; must not be empty. */
  readonly help: string;
  /** Its samples; every one carries the same label names. */
  readonly samples: readonly Sample[];
}

/** A gauge family: values that go up and down. */
export interface GaugeFamily {
  readonly type: "gauge";
  /** The metric name (`[a-zA-Z_:][a-zA-Z0-9_:]*`). */
  readonly name: string;
  /** What it measures, one sentence; must not be empty. */
  readonly help: string;
  /** Its samples; every one carries the same label names. */
  readonly samples: readonly Sample[];
}

/** A histogram family: `_bucket{le="..."}` (cumulative, up to `+Inf`), `_sum` and `_count`. */
export interface HistogramFamily {
  readonly type: "histogram";
  /** The metric name (`[a-zA-Z_:][a-zA-Z0-9_:]*`), with its unit, e.g. `..._seconds`. */
  readonly name: string;
  /** What it measures, one sentence; must not be empty. */
  readonly help: string;
  /** Its histograms; every one carries the same label names. */
  readonly samples: readonly HistogramSample[];
}

/** One metric family: its name, help text, type and samples. */
export type MetricFamily = CounterFamily | GaugeFamily | HistogramFamily;

/**
 * A family or a sample that cannot be written: a bad name, an empty help text, a name used
 * twice, a label set repeated, or samples of one family with different label names. Its message
 * names the metric and the problem; nothing is written when it is thrown.
 */
export class MetricDefinitionError extends Error {
  /** The metric name as the caller gave it. */
  readonly metric: string;

  /**
   * @param metric The metric name as given.
   * @param problem What is wrong, e.g. `label name "1x" is not valid`.
   */
  constructor(metric: string, problem: string) {
    super(`metric ${JSON.stringify(metric)}: ${problem}`);
    this.name = "MetricDefinitionError";
    this.metric = metric;
  }
}

/** What {@link Histogram.snapshot} returns: the histogram's figures at one moment. */
export interface HistogramSnapshot {
  /** The finite upper bounds of the buckets, increasing (the `+Inf` bucket is implied). */
  readonly bounds: readonly number[];
  /**
   * For each bound, then for `+Inf`, how many observations were at most that bound: one more
   * entry than {@link bounds}, never decreasing, the last equal to {@link count}.
   */
  readonly cumulativeCounts: readonly number[];
  /** The sum of all observations. */
  readonly sum: number;
  /** How many observations were made. */
  readonly count: number;
}

/**
 * A histogram with fixed bucket bounds, in seconds by convention. {@link observe} is cheap enough
 * for the data path: it finds the bucket with a loop over the bounds and adds to two numbers.
 * Figures are read, and made cumulative, only by {@link snapshot}.
 *
 * @example
 * ```ts
 * import { Histogram } from "./metrics.ts";
 *
 * const waits = new Histogram([0.001, 0.01, 0.1]);
 * const started = performance.now();
 * // ... wait for something
 * waits.observe((performance.now() - started) / 1000);
 * console.log(waits.snapshot().count); // 1
 * ```
 */
export class Histogram {
  readonly #bounds: Float64Array;
  /** Observations per bucket (not cumulative); the last entry is the `+Inf` bucket. */
  readonly #counts: Float64Array;
  #sum = 0;

  /**
   * @param bounds The buckets' upper bounds: finite and strictly increasing (a last `Infinity` is
   * allowed and dropped, since the `+Inf` bucket is always there). Default
   * {@link DEFAULT_BUCKETS_SECONDS}.
   * @throws {RangeError} for a bound that is not a number, not finite, or not above the one before.
   */
  constructor(bounds: readonly number[] = DEFAULT_BUCKETS_SECONDS) {
    const finite = bounds.at(-1) === Infinity ? bounds.slice(0, -1) : bounds;
    for (let i = 0; i < finite.length; i++) {
      const bound = finite[i];
      if (typeof bound !== "number" || !Number.isFinite(bound)) {
        throw new RangeError(
          `histogram bucket bound ${String(bound)} at index ${i} is not a finite number (bounds: ${
            formatBounds(bounds)
          })`,
        );
      }
      if (i > 0 && !(bound > finite[i - 1])) {
        throw new RangeError(
          `histogram bucket bounds must increase strictly: ${bound} at index ${i} follows ${
            finite[i - 1]
          } (bounds: ${formatBounds(bounds)})`,
        );
      }
    }
    this.#bounds = Float64Array.from(finite);
    this.#counts = new Float64Array(finite.length + 1);
  }

  /**
   * Records one observation: counted in the first bucket whose bound is at least `value` (a bound
   * is inclusive, as `le` says), or in `+Inf`; `NaN` is counted in `+Inf` and makes the sum `NaN`,
   * as in Prometheus's own clients. Allocates nothing.
   *
   * @param value The observation, in the histogram's unit (seconds by convention).
   */
  observe(value: number): void {
    const bounds = this.#bounds;
    let i = 0;
    // `!(value <= bound)` rather than `value > bound`, so that NaN runs through to +Inf.
    while (i < bounds.length && !(value <= bounds[i])) i++;
    this.#counts[i]++;
    this.#sum += value;
  }

  /** The buckets' finite upper bounds, in increasing order. */
  get bounds(): readonly number[] {
    return Array.from(this.#bounds);
  }

  /** The figures now, buckets cumulative as the exposition format wants them. */
  snapshot(): HistogramSnapshot {
    const cumulativeCounts = new Array<number>(this.#counts.length);
    let running = 0;
    for (let i = 0; i < this.#counts.length; i++) {
      running += this.#counts[i];
      cumulativeCounts[i] = running;
    }
    return { bounds: this.bounds, cumulativeCounts, sum: this.#sum, count: running };
  }
}

function formatBounds(bounds: readonly unknown[]): string {
  return `[${bounds.map((b) => String(b)).join(", ")}]`;
}

/**
 * Bucket bounds that grow by a factor: `start`, `start * factor`, ... (`count` of them), as
 * Prometheus's clients' `ExponentialBuckets`.
 *
 * @param start The first bound, above 0.
 * @param factor What each bound is multiplied by to give the next, above 1.
 * @param count How many bounds, at least 1.
 * @throws {RangeError} when an argument is out of its range.
 *
 * @example
 * ```ts
 * import { exponentialBuckets } from "./metrics.ts";
 *
 * console.log(exponentialBuckets(0.001, 10, 4)); // [0.001, 0.01, 0.1, 1]
 * ```
 */
export function exponentialBuckets(start: number, factor: number, count: number): number[] {
  if (!(start > 0) || !Number.isFinite(start)) {
    throw new RangeError(`exponential buckets: start ${start} must be a finite number above 0`);
  }
  if (!(factor > 1) || !Number.isFinite(factor)) {
    throw new RangeError(`exponential buckets: factor ${factor} must be a finite number above 1`);
  }
  if (!Number.isInteger(count) || count < 1) {
    throw new RangeError(`exponential buckets: count ${count} must be an integer of at least 1`);
  }
  const bounds: number[] = [];
  for (let i = 0, bound = start; i < count; i++, bound *= factor) {
    // Rounded to 12 significant digits, so that 0.001 * 10 reads 0.01, not 0.010000000000000002.
    bounds.push(Number(bound.toPrecision(12)));
  }
  return bounds;
}

// ---- describing families ----

function samplesOf(value: number | readonly Sample[]): readonly Sample[] {
  return typeof value === "number" ? [{ value }] : value;
}

/**
 * A counter family.
 *
 * @param name The metric name; `_total` is added when it does not end in it.
 * @param help What it counts, one sentence.
 * @param value One unlabelled value, or the samples (see {@link samplesByLabel}).
 */
export function counterFamily(
  name: string,
  help: string,
  value: number | readonly Sample[],
): CounterFamily {
  return { type: "counter", name, help, samples: samplesOf(value) };
}

/**
 * A gauge family.
 *
 * @param name The metric name.
 * @param help What it measures, one sentence.
 * @param value One unlabelled value, or the samples (see {@link samplesByLabel}).
 */
export function gaugeFamily(
  name: string,
  help: string,
  value: number | readonly Sample[],
): GaugeFamily {
  return { type: "gauge", name, help, samples: samplesOf(value) };
}

/**
 * A histogram family.
 *
 * @param name The metric name, with its unit (`..._seconds`).
 * @param help What it measures, one sentence.
 * @param value One unlabelled histogram, or labelled ones.
 */
export function histogramFamily(
  name: string,
  help: string,
  value: Histogram | readonly HistogramSample[],
): HistogramFamily {
  return {
    type: "histogram",
    name,
    help,
    samples: value instanceof Histogram ? [{ histogram: value }] : value,
  };
}

/**
 * One sample per entry of `values`, labelled `label="key"`: for counts kept by reason, such as
 * the pool's refusals or the sessions' end codes.
 *
 * @param label The label name, e.g. `reason`.
 * @param values Counts by label value: a record or a map.
 *
 * @example
 * ```ts
 * import { samplesByLabel } from "./metrics.ts";
 *
 * samplesByLabel("end", new Map([["client-closed", 1190], ["connect-failed", 7]]));
 * // [{ labels: { end: "client-closed" }, value: 1190 }, { labels: { end: "connect-failed" }, value: 7 }]
 * ```
 */
export function samplesByLabel(
  label: string,
  values: Readonly<Record<string, number>> | ReadonlyMap<string, number>,
): Sample[] {
  const entries = values instanceof Map ? [...values] : Object.entries(values);
  return entries.map(([key, value]) => ({ labels: { [label]: key }, value }));
}

// ---- checking ----

const METRIC_NAME = /^[a-zA-Z_:][a-zA-Z0-9_:]*$/;
const LABEL_NAME = /^[a-zA-Z_][a-zA-Z0-9_]*$/;

/** A family that passed the checks, with the name it is written under. */
interface CheckedFamily {
  readonly family: MetricFamily;
  /** The written name: a counter's ends in `_total`. */
  readonly name: string;
  /** The label names every sample carries, in the order of the first sample's labels. */
  readonly labelNames: readonly string[];
}

/**
 * Checks every family and returns them with their written names; the one gate that
 * {@link exposition} and {@link statsJson} both pass through.
 */
function checkFamilies(families: readonly MetricFamily[]): CheckedFamily[] {
  const written = new Set<string>();
  const claim = (family: MetricFamily, name: string) => {
    if (written.has(name)) {
      throw new MetricDefinitionError(family.name, `the name ${name} is written twice`);
    }
    written.add(name);
  };
  return families.map((family) => {
    if (!METRIC_NAME.test(family.name)) {
      throw new MetricDefinitionError(
        family.name,
        "is not a valid metric name; use letters, digits, _ and :, not starting with a digit",
      );
    }
    if (typeof family.help !== "string" || family.help.trim() === "") {
      throw new MetricDefinitionError(family.name, "has no help text");
    }
    const name = family.type === "counter" && !family.name.endsWith("_total")
      ? `${family.name}_total`
      : family.name;
    claim(family, name);
    if (family.type === "histogram") {
      for (const suffix of ["_bucket", "_sum", "_count"]) claim(family, name + suffix);
    }
    const labelNames = checkLabels(family);
    return { family, name, labelNames };
  });
}

/** Checks a family's label names and label sets; returns the label names. */
function checkLabels(family: MetricFamily): string[] {
  const first = family.samples[0]?.labels;
  const labelNames = first === undefined ? [] : Object.keys(first);
  for (const label of labelNames) {
    if (!LABEL_NAME.test(label) || label.startsWith("__")) {
      throw new MetricDefinitionError(
        family.name,
        `label name ${
          JSON.stringify(label)
        } is not valid; use letters, digits and _, not starting with a digit or __`,
      );
    }
    if (family.type === "histogram" && label === "le") {
      throw new MetricDefinitionError(family.name, `a histogram's own label "le" is reserved`);
    }
  }
  const seen = new Set<string>();
  for (const sample of family.samples) {
    const labels = sample.labels ?? {};
    const names = Object.keys(labels);
    if (names.length !== labelNames.length || names.some((name) => !labelNames.includes(name))) {
      throw new MetricDefinitionError(
        family.name,
        `every sample needs the same label names: {${names.join(",")}} differs from {${
          labelNames.join(",")
        }}`,
      );
    }
    for (const name of names) {
      if (typeof labels[name] !== "string") {
        throw new MetricDefinitionError(
          family.name,
          `label ${name} has a ${typeof labels[name]} value; label values are strings`,
        );
      }
    }
    const key = labelPairs(labelNames, labels);
    if (seen.has(key)) {
      throw new MetricDefinitionError(family.name, `the label set {${key}} appears twice`);
    }
    seen.add(key);
  }
  return labelNames;
}

// ---- the text exposition format ----

/**
 * A number as the exposition format writes it: integers plain (`42`), other numbers in
 * JavaScript's shortest round-trip form (`0.25`, `1.5e-7`, which Prometheus's parser reads),
 * `+Inf`, `-Inf` and `NaN`.
 *
 * @example
 * ```ts
 * import { formatValue } from "./metrics.ts";
 *
 * console.log(formatValue(3), formatValue(0.5), formatValue(Infinity)); // 3 0.5 +Inf
 * ```
 */
export function formatValue(value: number): string {
  if (value === Infinity) return "+Inf";
  if (value === -Infinity) return "-Inf";
  if (Number.isNaN(value)) return "NaN";
  return String(value); // -0 gives "0"
}

const LABEL_VALUE_SPECIALS = /[\\"\n]/;
const HELP_SPECIALS = /[\\\n]/;

/** A label value escaped for the exposition format: `\` as `\\`, `"` as `\"`, newline as `\n`. */
export function escapeLabelValue(value: string): string {
  if (!LABEL_VALUE_SPECIALS.test(value)) return value;
  return value.replace(/[\\"\n]/g, (c) => c === "\n" ? "\\n" : `\\${c}`);
}

/** A HELP text escaped for the exposition format: `\` as `\\`, newline as `\n`. */
export function escapeHelp(text: string): string {
  if (!HELP_SPECIALS.test(text)) return text;
  return text.replace(/[\\\n]/g, (c) => c === "\n" ? "\\n" : "\\\\");
}

/** `a="x",b="y"` for the label names in order; `""` for none. */
function labelPairs(labelNames: readonly string[], labels: Labels | undefined): string {
  if (labels === undefined || labelNames.length === 0) return "";
  let pairs = "";
  for (const name of labelNames) {
    if (pairs !== "") pairs += ",";
    pairs += `${name}="${escapeLabelValue(labels[name])}"`;
  }
  return pairs;
}

function sampleLine(name: string, pairs: string, value: number): string {
  return pairs === "" ? `${name} ${formatValue(value)}` : `${name}{${pairs}} ${formatValue(value)}`;
}

/**
 * The families as Prometheus text (format 0.0.4): per family one `# HELP` and one `# TYPE`
 * line, then its samples; a histogram's buckets are cumulative and end with `le="+Inf"`, equal
 * to its `_count`. Ends with a newline. Serve it as {@link EXPOSITION_CONTENT_TYPE}.
 *
 * @param families The families, written in this order.
 * @returns The text.
 * @throws {MetricDefinitionError} for a family that cannot be written (then nothing is).
 */
export function exposition(families: readonly MetricFamily[]): string {
  const lines: string[] = [];
  for (const { family, name, labelNames } of checkFamilies(families)) {
    lines.push(`# HELP ${name} ${escapeHelp(family.help)}`, `# TYPE ${name} ${family.type}`);
    if (family.type !== "histogram") {
      for (const sample of family.samples) {
        lines.push(sampleLine(name, labelPairs(labelNames, sample.labels), sample.value));
      }
      continue;
    }
    for (const sample of family.samples) {
      const pairs = labelPairs(labelNames, sample.labels);
      const prefix = pairs === "" ? "" : `${pairs},`;
      const { bounds, cumulativeCounts, sum, count } = sample.histogram.snapshot();
      for (let i = 0; i < cumulativeCounts.length; i++) {
        const le = i < bounds.length ? formatValue(bounds[i]) : "+Inf";
        lines.push(sampleLine(`${name}_bucket`, `${prefix}le="${le}"`, cumulativeCounts[i]));
      }
      lines.push(sampleLine(`${name}_sum`, pairs, sum), sampleLine(`${name}_count`, pairs, count));
    }
  }
  lines.push("");
  return lines.join("\n");
}

// ---- the same figures as JSON ----

/** A number in {@link statsJson}: JSON has no infinities or NaN, so those are strings. */
export type StatsNumber = number | "+Inf" | "-Inf" | "NaN";

/** A histogram in {@link statsJson}. */
export interface HistogramStats {
  /** How many observations were made. */
  readonly count: number;
  /** The sum of all observations. */
  readonly sum: StatsNumber;
  /** Cumulative counts by upper bound, as the `le` label writes it (`"0.005"`, ..., `"+Inf"`). */
  readonly buckets: Readonly<Record<string, number>>;
}

/**
 * A family's figures in {@link statsJson}: a number or a histogram for an unlabelled family with
 * one sample, else an object keyed by the first label's values, nested once per further label.
 */
export type StatsValue = StatsNumber | HistogramStats | {
  readonly [labelValue: string]: StatsValue;
};

function statsNumber(value: number): StatsNumber {
  return Number.isFinite(value) ? value : formatValue(value) as StatsNumber;
}

function histogramStats(histogram: Histogram): HistogramStats {
  const { bounds, cumulativeCounts, sum, count } = histogram.snapshot();
  const buckets: Record<string, number> = {};
  for (let i = 0; i < cumulativeCounts.length; i++) {
    setOwn(buckets, i < bounds.length ? formatValue(bounds[i]) : "+Inf", cumulativeCounts[i]);
  }
  return { count, sum: statsNumber(sum), buckets };
}

/** Sets an own, enumerable property, even one named `__proto__`. */
function setOwn<T>(target: Record<string, T>, key: string, value: T): void {
  Object.defineProperty(target, key, {
    value,
    enumerable: true,
    writable: true,
    configurable: true,
  });
}

/**
 * The families' figures as a JSON-ready object, `{ name: value }` under the names
 * {@link exposition} writes (a counter's with `_total`): an unlabelled family's value is its
 * number (or, for a histogram, `{count, sum, buckets}`), a labelled family's an object keyed by
 * label value, one level per label in the order of the first sample's labels, e.g.
 * `{ "tcp_pool_proxy_refused_total": { "pool full": 2, "unfit": 1 } }`. Infinities and NaN are
 * the strings `"+Inf"`, `"-Inf"` and `"NaN"`.
 *
 * @param families The families, the same list given to {@link exposition}.
 * @returns A plain object for `JSON.stringify`.
 * @throws {MetricDefinitionError} exactly when {@link exposition} would.
 */
export function statsJson(families: readonly MetricFamily[]): Record<string, StatsValue> {
  const out: Record<string, StatsValue> = {};
  for (const { family, name, labelNames } of checkFamilies(families)) {
    const valueOf = (sample: Sample | HistogramSample): StatsValue =>
      "histogram" in sample ? histogramStats(sample.histogram) : statsNumber(sample.value);
    const [only] = family.samples;
    if (labelNames.length === 0 && family.samples.length === 1 && only !== undefined) {
      setOwn(out, name, valueOf(only));
      continue;
    }
    const root: Record<string, StatsValue> = {};
    for (const sample of family.samples) {
      let node = root;
      labelNames.forEach((label, depth) => {
        const key = sample.labels?.[label] ?? "";
        if (depth === labelNames.length - 1) {
          setOwn(node, key, valueOf(sample));
          return;
        }
        let child = Object.hasOwn(node, key) ? node[key] : undefined;
        if (typeof child !== "object") {
          child = {};
          setOwn(node, key, child);
        }
        node = child as Record<string, StatsValue>;
      });
    }
    setOwn(out, name, root);
  }
  return out;
}

// ---- the process ----

/** When the process started, in seconds since the Unix epoch (the runtime's time origin). */
const PROCESS_START_SECONDS = performance.timeOrigin / 1000;

/** Whether the open descriptors cannot be counted here (no permission, or an old kernel). */
let openFdsUnavailable = false;

/**
 * How many file descriptors the process has open, or `undefined` when that cannot be learnt
 * without asking for more: it is the size Linux 6.2 and later report for `/proc/self/fd` (one
 * `stat`, whatever the count), which Deno lets a program read only under `--allow-all`. Never
 * prompts, never throws; once found unavailable it is not tried again.
 */
export function openFileDescriptors(): number | undefined {
  if (openFdsUnavailable) return undefined;
  try {
    // Asked first, so that a terminal never sees a permission prompt.
    if (Deno.permissions.querySync({ name: "read", path: "/proc/self/fd" }).state !== "granted") {
      openFdsUnavailable = true;
      return undefined;
    }
    const size = Deno.statSync("/proc/self/fd").size;
    if (size > 0) return size;
    openFdsUnavailable = true; // a kernel before 6.2 reports 0; counting entries would block
  } catch (error) {
    // Read access alone is not enough for /proc/self (Deno wants --allow-all): NotCapable.
    if (
      error instanceof Deno.errors.NotCapable || error instanceof Deno.errors.PermissionDenied ||
      error instanceof Deno.errors.NotFound
    ) openFdsUnavailable = true;
    // Anything else (out of descriptors) leaves it out of this answer only.
  }
  return undefined;
}

/**
 * The process's own figures, under the names Prometheus's clients use: `process_start_time_seconds`,
 * `process_resident_memory_bytes` (`Deno.memoryUsage().rss`), `deno_heap_used_bytes` and
 * `deno_heap_total_bytes` (V8's heap), and `process_open_fds` only where
 * {@link openFileDescriptors} can count them (under `--allow-all` on Linux 6.2 or later; not
 * under `--allow-net` alone). Needs no permission and never throws.
 *
 * @returns Gauge families, to add to the proxy's own.
 */
export function processMetrics(): MetricFamily[] {
  const families: MetricFamily[] = [
    gaugeFamily(
      "process_start_time_seconds",
      "Start time of the process since the Unix epoch in seconds.",
      PROCESS_START_SECONDS,
    ),
  ];
  try {
    const memory = Deno.memoryUsage();
    families.push(
      gaugeFamily("process_resident_memory_bytes", "Resident memory size in bytes.", memory.rss),
      gaugeFamily("deno_heap_used_bytes", "V8 heap in use, in bytes.", memory.heapUsed),
      gaugeFamily("deno_heap_total_bytes", "V8 heap reserved, in bytes.", memory.heapTotal),
    );
  } catch {
    // Not expected; the other figures are still worth answering with.
  }
  const openFds = openFileDescriptors();
  if (openFds !== undefined) {
    families.push(gaugeFamily("process_open_fds", "Number of open file descriptors.", openFds));
  }
  return families;
}
