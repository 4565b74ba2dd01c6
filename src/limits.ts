/**
 * The process's open-file limit, and the default of `--max-clients` derived from it.
 *
 * Every session holds two descriptors (its client and its upstream connection), so the number
 * of sessions the proxy can hold at once is bounded by the soft `RLIMIT_NOFILE`. Deno has no
 * `getrlimit`; the limit is read from `/proc/self/limits` where that is possible, else asked of
 * util-linux's `prlimit` where running it is allowed, and assumed to be
 * {@link ASSUMED_OPEN_FILE_LIMIT} (the usual Linux soft limit) everywhere else.
 *
 * Deno 2.9.6 reads files under `/proc` only with `--allow-all`; `--allow-read` of the file
 * itself is not enough (it answers `NotCapable`). So the `start` and `compile` tasks grant
 * `--allow-run=prlimit`, the narrowest permission that tells the limit; under `--allow-net` alone
 * the limit is assumed, and the start-up line says so.
 *
 * @example
 * ```ts
 * import { resolveMaxClients } from "./limits.ts";
 *
 * const choice = resolveMaxClients({ maxClients: "auto", pool: "off", poolSize: 100 });
 * console.log(choice.maxClients); // 496 when the limit is assumed to be 1024
 * ```
 *
 * @module
 */

import type { ProxyConfig } from "./config.ts";

/** The limit assumed when `/proc/self/limits` cannot be read: the usual Linux soft limit. */
export const ASSUMED_OPEN_FILE_LIMIT = 1024;
/** The limit used when the soft limit is `unlimited`: 2^20, the usual Linux `fs.nr_open`. */
export const UNLIMITED_OPEN_FILES = 1_048_576;
/** Descriptors kept back from sessions: the runtime's own (about 25 under `deno run`), stdio, logs. */
export const RESERVED_DESCRIPTORS = 32;
/**
 * Kept back with `--tls-cert`: Deno 2.9.6's `node:tls` server accepts up to about 128
 * connections at once before it closes those past `--max-clients`, and after one accept fails
 * for want of a descriptor it never accepts again (measured with strace: a burst of 400 left 128
 * accepted and not yet closed).
 */
export const TLS_ACCEPT_BURST = 128;

/**
 * The descriptors kept back from sessions and the pool for a configuration:
 * {@link RESERVED_DESCRIPTORS}, plus {@link TLS_ACCEPT_BURST} with `--tls-cert`, plus the admin
 * endpoint's connections (`HTTP1_MAX_CONNECTIONS`, 16) with `--admin`.
 */
export function descriptorReserve(config: Partial<Pick<ProxyConfig, "tlsCert" | "admin">>): number {
  return RESERVED_DESCRIPTORS + (config.tlsCert !== undefined ? TLS_ACCEPT_BURST : 0) +
    (config.admin !== undefined ? ADMIN_CONNECTIONS : 0);
}

/** The admin endpoint's most connections at once (`HTTP1_MAX_CONNECTIONS` of `src/http1.ts`). */
const ADMIN_CONNECTIONS = 16;

const LIMITS_PATH = "/proc/self/limits";

/** The soft open-file limit, and where it came from. */
export interface OpenFileLimit {
  /** The soft limit on open descriptors. */
  limit: number;
  /**
   * `proc`: read from `/proc/self/limits`; `prlimit`: told by `prlimit`; `assumed`: neither
   * could be had, so {@link ASSUMED_OPEN_FILE_LIMIT}.
   */
  source: "proc" | "prlimit" | "assumed";
}

/**
 * Reads the soft "Max open files" limit of this process from `/proc/self/limits`.
 *
 * The read permission is queried first, so no permission prompt can appear; when it is not
 * granted, or the read fails for any reason (not Linux, `NotCapable` without `--allow-all`,
 * text that does not parse), the limit is assumed.
 *
 * @returns The limit and its source; never throws.
 *
 * @example
 * ```ts
 * import { openFileLimit } from "./limits.ts";
 *
 * const { limit, source } = openFileLimit(); // e.g. { limit: 1024, source: "assumed" }
 * ```
 */
export function openFileLimit(): OpenFileLimit {
  const fromProc = readProcLimit();
  if (fromProc !== undefined) return { limit: fromProc, source: "proc" };
  const fromPrlimit = askPrlimit();
  if (fromPrlimit !== undefined) return { limit: fromPrlimit, source: "prlimit" };
  return { limit: ASSUMED_OPEN_FILE_LIMIT, source: "assumed" };
}

function readProcLimit(): number | undefined {
  try {
    const { state } = Deno.permissions.querySync({ name: "read", path: LIMITS_PATH });
    if (state !== "granted") return undefined;
    return parseOpenFileLimit(Deno.readTextFileSync(LIMITS_PATH));
  } catch {
    return undefined;
  }
}

/** `prlimit --pid PID --nofile --output=SOFT --noheadings`, where running `prlimit` is allowed. */
function askPrlimit(): number | undefined {
  try {
    const { state } = Deno.permissions.querySync({ name: "run", command: "prlimit" });
    if (state !== "granted") return undefined;
    const output = new Deno.Command("prlimit", {
      args: ["--pid", String(Deno.pid), "--nofile", "--output=SOFT", "--noheadings"],
      stdin: "null",
      stdout: "piped",
      stderr: "null",
    }).outputSync();
    if (!output.success) return undefined;
    const soft = new TextDecoder().decode(output.stdout).trim();
    if (soft === "unlimited") return UNLIMITED_OPEN_FILES;
    const limit = Number(soft);
    return /^\d+$/.test(soft) && limit > 0 && Number.isSafeInteger(limit) ? limit : undefined;
  } catch {
    return undefined;
  }
}

/**
 * Finds the soft limit in the text of `/proc/PID/limits` (the `Max open files` row).
 *
 * @param text The whole file.
 * @returns The soft limit ({@link UNLIMITED_OPEN_FILES} for `unlimited`), or `undefined` when
 * the row is missing or its soft value is not a positive integer.
 *
 * @example
 * ```ts
 * import { parseOpenFileLimit } from "./limits.ts";
 *
 * parseOpenFileLimit("Max open files            20000     20000     files\n"); // 20000
 * ```
 */
export function parseOpenFileLimit(text: string): number | undefined {
  const soft = /^Max open files[ \t]+(\S+)[ \t]+\S+[ \t]+files[ \t]*$/m.exec(text)?.[1];
  if (soft === "unlimited") return UNLIMITED_OPEN_FILES;
  if (soft === undefined || !/^\d+$/.test(soft)) return undefined;
  const limit = Number(soft);
  return limit > 0 && Number.isSafeInteger(limit) ? limit : undefined;
}

/**
 * The default `--max-clients` for an open-file limit: each session needs two descriptors
 * (client and upstream), after {@link RESERVED_DESCRIPTORS} and the idle pooled connections.
 *
 * @param fileLimit The soft open-file limit.
 * @param reservedForPool Descriptors held by idle pooled connections: `--pool-size` in `warm`
 * and `reuse`, 0 in `off`.
 * @param reserve Descriptors kept back ({@link descriptorReserve}); default 32.
 * @returns `max(1, floor((fileLimit - reserve - pool) / 2))`, where `pool` is `reservedForPool`
 * but at most a third of `fileLimit - reserve`.
 *
 * @example
 * ```ts
 * import { defaultMaxClients } from "./limits.ts";
 *
 * defaultMaxClients(20_000, 100); // 9934
 * ```
 */
export function defaultMaxClients(
  fileLimit: number,
  reservedForPool: number,
  reserve: number = RESERVED_DESCRIPTORS,
): number {
  const pool = Math.min(reservedForPool, poolShare(fileLimit, reserve));
  return Math.max(1, Math.floor((fileLimit - reserve - pool) / 2));
}

/**
 * The most idle pooled connections an open-file limit leaves room for next to `--max-clients
 * auto`: a third of it after {@link RESERVED_DESCRIPTORS}. With `auto`, `--pool-size` is capped
 * there, so the pool's ready connections and the sessions never need more descriptors than there
 * are.
 */
export function poolShare(fileLimit: number, reserve: number = RESERVED_DESCRIPTORS): number {
  return Math.max(0, Math.floor((fileLimit - reserve) / 3));
}

/** The `--max-clients` in force, and where it came from (for the start-up line). */
export type MaxClientsChoice =
  | { maxClients: number; source: "given" }
  | { maxClients: number; source: OpenFileLimit["source"]; fileLimit: number };

/**
 * Resolves `--max-clients`: a number given on the command line stands; `auto` becomes
 * {@link defaultMaxClients} of the open-file limit.
 *
 * @param config The limit asked for, the pool mode and the pool size.
 * @param readLimit Where the open-file limit comes from; default {@link openFileLimit}
 * (called only for `auto`).
 * @returns The number and its source.
 *
 * @example
 * ```ts
 * import { resolveMaxClients } from "./limits.ts";
 *
 * resolveMaxClients({ maxClients: 50, pool: "warm", poolSize: 100 }); // { maxClients: 50, source: "given" }
 * ```
 */
export function resolveMaxClients(
  config: ReserveConfig & Pick<ProxyConfig, "maxClients" | "pool" | "poolSize">,
  readLimit: () => OpenFileLimit = openFileLimit,
): MaxClientsChoice {
  if (config.maxClients !== "auto") return { maxClients: config.maxClients, source: "given" };
  const { limit, source } = readLimit();
  const reservedForPool = config.pool === "off" ? 0 : config.poolSize;
  const maxClients = defaultMaxClients(limit, reservedForPool, descriptorReserve(config));
  return { maxClients, source, fileLimit: limit };
}

/** What the reserve depends on ({@link descriptorReserve}); absent: the plain reserve. */
type ReserveConfig = Partial<Pick<ProxyConfig, "tlsCert" | "admin">>;

/** The pool's bounds once fitted to the descriptors, and what was changed to fit. */
export interface PoolFit {
  poolSize: number;
  minIdle: number;
  /** One line per adjustment or problem, for a warning at start-up. */
  notes: string[];
  /** With a given `--max-clients` the limit cannot hold: the sessions it can. */
  sessionsThatFit?: number;
  /** The open-file limit, when it was read (not assumed) and is not unlimited. */
  fileLimit?: number;
}

/**
 * The descriptors `maxClients` sessions need with the pool and the reserve
 * ({@link descriptorReserve}): 2 per session, `poolSize` in `warm` and `reuse`.
 */
export function descriptorsNeeded(
  config: ReserveConfig & Pick<ProxyConfig, "pool">,
  maxClients: number,
  poolSize: number,
): number {
  return descriptorReserve(config) + 2 * maxClients + (config.pool === "off" ? 0 : poolSize);
}

/**
 * Fits `--pool-size` and `--min-idle` to the open-file limit, so that refills never take the
 * descriptors client sessions need. With `--max-clients auto` the pool keeps at most its share
 * ({@link poolShare}). With a given `--max-clients`, at most what its sessions (two descriptors
 * each) and {@link RESERVED_DESCRIPTORS} leave, but never less than that share: a `--max-clients`
 * beyond what the limit can hold is noted instead (sessions past it fail for want of
 * descriptors), rather than pooling turned off. `--min-idle` is kept within the pool size. A limit
 * that could not be read, or an unlimited one, changes nothing for a given `--max-clients`.
 */
export function fitPoolToDescriptors(
  config: ReserveConfig & Pick<ProxyConfig, "pool" | "poolSize" | "minIdle"> & {
    /** Whether `--pool-size` was given (then its cap under `auto` is warned about). */
    poolSizeGiven?: boolean;
  },
  choice: MaxClientsChoice,
  readLimit: () => OpenFileLimit = openFileLimit,
): PoolFit {
  const reserve = descriptorReserve(config);
  const notes: string[] = [];
  let poolSize = config.poolSize;
  let sessionsThatFit: number | undefined;
  let fileLimit: number | undefined;
  if (choice.source !== "given") {
    const share = poolShare(choice.fileLimit, reserve);
    // The default's cap is the documented rule; a size the operator chose is told about.
    if (config.pool !== "off" && poolSize > share && config.poolSizeGiven === true) {
      const limit = `${choice.source === "assumed" ? "assumed " : ""}${choice.fileLimit}`;
      notes.push(
        `--pool-size ${poolSize} lowered to ${share}: a third of the open-file limit ${limit} ` +
          `after the reserve (--max-clients auto); raise ulimit -n, or give --max-clients`,
      );
    }
    poolSize = Math.min(poolSize, share);
    if (choice.source !== "assumed" && choice.fileLimit < UNLIMITED_OPEN_FILES) {
      fileLimit = choice.fileLimit;
    }
  } else {
    const { limit, source } = readLimit();
    if (source !== "assumed" && limit < UNLIMITED_OPEN_FILES) {
      fileLimit = limit;
      const sessions = 2 * choice.maxClients;
      if (config.pool !== "off") {
        const left = limit - reserve - sessions;
        const share = poolShare(limit, reserve);
        if (poolSize > Math.max(left, share)) {
          notes.push(
            left >= share
              ? `--pool-size ${poolSize} lowered to ${left}: what the open-file limit ${limit} ` +
                `leaves after --max-clients ${choice.maxClients}`
              : `--pool-size ${poolSize} lowered to ${share}: a third of the open-file limit ` +
                `${limit} after the reserve (--max-clients ${choice.maxClients} leaves less)`,
          );
          poolSize = Math.max(left, share);
        }
      }
      const pool = config.pool === "off" ? 0 : poolSize;
      const needed = descriptorsNeeded(config, choice.maxClients, poolSize);
      if (needed > limit) {
        const fit = Math.max(1, Math.floor((limit - reserve - pool) / 2));
        sessionsThatFit = fit;
        notes.push(
          `--max-clients ${choice.maxClients} needs about ${needed} descriptors (2 per session, ` +
            `${pool} for the pool, ${reserve} kept) and the open-file limit is ` +
            `${limit}: sessions past about ${fit} will fail; raise ulimit -n or lower --max-clients`,
        );
      }
    }
  }
  let minIdle = config.minIdle;
  if (minIdle > poolSize) {
    notes.push(`min-idle ${minIdle} lowered to the pool size in force, ${poolSize}`);
    minIdle = poolSize;
  }
  return { poolSize, minIdle, notes, sessionsThatFit, fileLimit };
}
