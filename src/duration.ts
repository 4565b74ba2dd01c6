/**
 * Durations as the command line writes them: a number and a unit.
 *
 * `parseDuration` turns `250ms`, `5s`, `1.5s`, `2m`, `1h` or a bare `0` into
 * whole milliseconds; `formatDuration` goes the other way for help text and
 * logs.
 *
 * @example
 * ```ts
 * import { formatDuration, parseDuration } from "./duration.ts";
 *
 * const ms = parseDuration("1.5s"); // 1500
 * console.log(formatDuration(ms)); // "1500ms"
 * ```
 *
 * @module
 */

/** The largest duration accepted, in milliseconds: 2^31-1, the limit of `setTimeout` (about 24.8 days). */
export const MAX_DURATION_MS = 2 ** 31 - 1;

const UNIT_MS = { ms: 1, s: 1_000, m: 60_000, h: 3_600_000 } as const;
type Unit = keyof typeof UNIT_MS;

const DURATION_RE = /^(\d+)(?:\.(\d+))?(ms|s|m|h)$/;
const NUMBER_ONLY_RE = /^\d+(?:\.\d+)?$/;
const HINT = "use a number with a unit ms, s, m or h, e.g. 250ms, 5s, 1.5s, 2m";

/**
 * Thrown by {@link parseDuration} for text that is not an accepted duration.
 *
 * The message starts with the offending text in quotes and says what is
 * accepted, so a caller can prefix it with a flag name.
 */
export class DurationError extends Error {
  /** The text that was rejected, exactly as given. */
  readonly text: string;

  /**
   * Builds the error; the message is the quoted text followed by the problem.
   *
   * @param text The rejected text.
   * @param problem What is wrong with it, e.g. `has no unit`.
   */
  constructor(text: string, problem: string) {
    super(`${JSON.stringify(text)} ${problem}`);
    this.name = "DurationError";
    this.text = text;
  }
}

/**
 * Parses a duration such as `250ms`, `5s`, `1.5s`, `2m` or `1h` into whole
 * milliseconds. `0` alone (no unit) means 0; every other value needs a unit.
 *
 * Decimals are exact (`1.1s` is 1100, not 1100.0000000000002); a value that
 * would leave a fraction of a millisecond (`0.5ms`) is rejected.
 *
 * @param text The duration, without spaces.
 * @returns The duration in milliseconds, an integer from 0 to {@link MAX_DURATION_MS}.
 * @throws {DurationError} if the text is empty, negative, has no or an unknown
 * unit, leaves a fraction of a millisecond, or exceeds {@link MAX_DURATION_MS}.
 *
 * @example
 * ```ts
 * import { parseDuration } from "./duration.ts";
 *
 * parseDuration("2m"); // 120000
 * parseDuration("0"); // 0
 * ```
 */
export function parseDuration(text: string): number {
  if (text === "0") return 0;
  const match = DURATION_RE.exec(text);
  if (match === null) throw new DurationError(text, describeProblem(text));
  const [, whole, fraction = "", unit] = match;
  // Exact arithmetic: (whole.fraction * unit) as an integer over 10^digits.
  const scaled = BigInt(whole + fraction) * BigInt(UNIT_MS[unit as Unit]);
  const divisor = 10n ** BigInt(fraction.length);
  if (scaled % divisor !== 0n) {
    throw new DurationError(text, "is not a whole number of milliseconds");
  }
  const ms = scaled / divisor;
  if (ms > BigInt(MAX_DURATION_MS)) {
    throw new DurationError(
      text,
      `is too long; the most accepted is ${MAX_DURATION_MS}ms (~24.8 days)`,
    );
  }
  return Number(ms);
}

function describeProblem(text: string): string {
  if (text === "") return `is empty; ${HINT}`;
  if (text.startsWith("-")) return `is negative; ${HINT}`;
  if (NUMBER_ONLY_RE.test(text)) return `has no unit; ${HINT}`;
  return `is not a duration; ${HINT}`;
}

/**
 * Formats milliseconds for help text and logs, in the largest unit that keeps
 * the number whole, moving up a unit only while the count is above 60 (so
 * 60000 is `60s` and 90000 stays `90s`, but 1800000 is `30m`). Zero is `0`.
 * The result is always accepted by {@link parseDuration} when the input is an
 * integer within range.
 *
 * @param ms A non-negative, finite number of milliseconds.
 * @returns For example `250ms`, `5s`, `60s`, `30m`, `24h`.
 * @throws {RangeError} if `ms` is negative, NaN or infinite.
 *
 * @example
 * ```ts
 * import { formatDuration } from "./duration.ts";
 *
 * formatDuration(1_800_000); // "30m"
 * ```
 */
export function formatDuration(ms: number): string {
  if (!Number.isFinite(ms) || ms < 0) {
    throw new RangeError(
      `formatDuration: ${ms} is not a non-negative finite number of milliseconds`,
    );
  }
  if (ms === 0) return "0";
  const steps: ReadonlyArray<[Unit, number]> = [["s", 1_000], ["m", 60], ["h", 60]];
  let count = ms;
  let unit: Unit = "ms";
  for (const [next, factor] of steps) {
    if (count <= 60 || count % factor !== 0) break;
    count /= factor;
    unit = next;
  }
  return `${count}${unit}`;
}
