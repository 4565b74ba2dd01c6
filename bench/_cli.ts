/**
 * Typed command-line parsing for the benchmark scripts, over `parseArgs` from `@std/cli` (the
 * npm `deno-std` build, which has no type declarations: its output is checked here at once).
 *
 * ```ts
 * import { parseFlags } from "./_cli.ts";
 * const flags = parseFlags(["--duration", "2s", "--short"], {
 *   string: ["duration"],
 *   boolean: ["short"],
 * });
 * flags.strings.get("duration"); // "2s"
 * ```
 *
 * @module
 */

import { parseArgs } from "@std/cli/parse-args";

/** A command-line problem; its message is the one line shown to the user. */
export class UsageError extends Error {
  /** Creates the error with the line to show. */
  constructor(message: string) {
    super(message);
    this.name = "UsageError";
  }
}

/** Flags after parsing: string flags by name, boolean flags by name, positional arguments. */
export interface ParsedFlags {
  strings: Map<string, string>;
  booleans: Map<string, boolean>;
  positional: string[];
}

/**
 * Parses `args` knowing only the listed flags.
 *
 * @throws {UsageError} for an unknown flag, a repeated string flag, or a string flag without a
 * value.
 */
export function parseFlags(
  args: string[],
  spec: { string: string[]; boolean: string[] },
): ParsedFlags {
  let unknown: string | undefined;
  const raw: unknown = parseArgs(args, {
    string: spec.string,
    boolean: spec.boolean,
    unknown: (arg: string, key?: string) => {
      if (key !== undefined && unknown === undefined) unknown = arg;
      return key === undefined; // keep positionals, drop unknown flags
    },
  });
  if (unknown !== undefined) {
    throw new UsageError(`unknown option ${unknown.split("=")[0]}`);
  }
  if (typeof raw !== "object" || raw === null) throw new UsageError("cannot parse options");
  const o = raw as Record<string, unknown>;
  const strings = new Map<string, string>();
  for (const name of spec.string) {
    const v = o[name];
    if (v === undefined) continue;
    if (Array.isArray(v)) throw new UsageError(`--${name} given more than once`);
    if (typeof v !== "string" || v === "") throw new UsageError(`--${name} needs a value`);
    strings.set(name, v);
  }
  const booleans = new Map<string, boolean>();
  for (const name of spec.boolean) booleans.set(name, o[name] === true);
  const rest = o["_"];
  const positional = Array.isArray(rest) ? rest.map((x) => String(x)) : [];
  return { strings, booleans, positional };
}

/**
 * Parses a duration with a unit: `250ms`, `5s`, `2m`. Returns milliseconds.
 *
 * @throws {UsageError} naming `flag` when the text is not such a duration or is not positive.
 */
export function parseDurationMs(flag: string, text: string): number {
  const m = /^(\d+(?:\.\d+)?)(ms|s|m)$/.exec(text);
  const ms = m ? Number(m[1]) * (m[2] === "ms" ? 1 : m[2] === "s" ? 1000 : 60_000) : NaN;
  if (!m || !(ms > 0)) {
    throw new UsageError(
      `--${flag}: expected a positive duration like 500ms, 5s or 1m, got "${text}"`,
    );
  }
  return ms;
}

/**
 * Parses a whole number within `min..max`.
 *
 * @throws {UsageError} naming `flag` otherwise.
 */
export function parseIntFlag(flag: string, text: string, min: number, max: number): number {
  const n = /^\d+$/.test(text) ? Number(text) : NaN;
  if (!(n >= min && n <= max)) {
    throw new UsageError(`--${flag}: expected a whole number from ${min} to ${max}, got "${text}"`);
  }
  return n;
}

/**
 * Parses a script's options with `parse`: `"help"` prints `usage` and gives exit code 0, a
 * {@link UsageError} prints one line `NAME: message` and gives exit code 2.
 *
 * @returns the options, or the exit code to end with.
 */
export function optionsOrExitCode<T>(
  name: string,
  usage: string,
  args: string[],
  parse: (args: string[]) => T | "help",
): T | number {
  try {
    const parsed = parse(args);
    if (parsed !== "help") return parsed;
    console.log(usage);
    return 0;
  } catch (err) {
    if (!(err instanceof UsageError)) throw err;
    console.error(`${name}: ${err.message}`);
    return 2;
  }
}
