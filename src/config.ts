/**
 * The command line of tcp-pool-proxy: its flags, their defaults, and the
 * validated {@link ProxyConfig} they produce.
 *
 * Users script against this contract, so every flag, default and error
 * message here is part of the interface. `parseCli` never prints or exits; it
 * returns what to do, or throws a {@link ConfigError} whose message is one
 * line naming the flag, the bad value and what is accepted.
 *
 * @example
 * ```ts
 * import { parseCli } from "./config.ts";
 *
 * const command = parseCli(["--pool", "reuse", "--upstream", "db.internal:5432"]);
 * if (command.kind === "run") console.log(command.config.minIdle); // 0
 * ```
 *
 * @module
 */

import { parseArgs } from "@std/cli/parse-args";
import denoJson from "../deno.json" with { type: "json" };
import { DEFAULT_READ_AHEAD_MEMORY, READ_AHEAD_PER_DIRECTION } from "./_io.ts";
import { AddressError, formatHostPort, type HostPort, parseHostPort } from "./address.ts";
import { DurationError, formatDuration, parseDuration } from "./duration.ts";
import type { Protocol } from "./framing.ts";

export type { Protocol } from "./framing.ts";

/**
 * How upstream connections are pooled.
 * - `off`: dial the upstream for every client; nothing is pooled.
 * - `warm`: keep fresh connections dialed ahead of demand; each serves one client, then is closed.
 * - `reuse`: also put a connection back in the pool after a clean session (stateless protocols only).
 */
export type PoolMode = "off" | "warm" | "reuse";

/** The lowest level of log records written. */
export type LogLevel = "debug" | "info" | "warn" | "error";

/** How log records are written to stderr: one text line or one JSON object per record. */
export type LogFormat = "text" | "json";

/** The validated configuration of the proxy. Durations are whole milliseconds. */
export interface ProxyConfig {
  /** Where clients connect. Default `127.0.0.1:8848`; port 0 lets the system pick. */
  listen: HostPort;
  /** Where connections are forwarded. Default `127.0.0.1:8849`. */
  upstream: HostPort;
  /** The pooling mode. Default `warm`. */
  pool: PoolMode;
  /**
   * The most idle upstream connections kept; within it, the pool keeps what recent demand needs
   * (`src/demand.ts`). Default 1000.
   */
  poolSize: number;
  /** Connections kept ready ahead of demand. Default {@link defaultMinIdle} of the mode (4 in warm, 0 otherwise). */
  minIdle: number;
  /**
   * In `warm` and `reuse`, connections kept ready per session started within one dial time at the
   * recent peak (`src/demand.ts`); `--min-idle` is the floor, `--pool-size` the ceiling. 0 keeps
   * just `--min-idle`. Default 1.
   */
  preconnectRatio: number;
  /** An idle pooled connection older than this is closed. Default 60000 (60s). Always > 0. */
  idleTimeoutMs: number;
  /** A pooled connection is not reused past this age; 0 means no limit. Default 1800000 (30m). */
  maxLifetimeMs: number;
  /** How long a connect to the upstream may take. Default 5000 (5s). Always > 0. */
  connectTimeoutMs: number;
  /**
   * A session whose client has had no byte read from it or written to it for this long ends with
   * `client-timeout` (a blocked write counts as inactivity). Default 3600000 (1h); 0 means none.
   */
  clientTimeoutMs: number;
  /** The same for the upstream side; the session ends with `server-timeout`. Default 3600000 (1h); 0 means none. */
  serverTimeoutMs: number;
  /** How long a half-closed session may wait for the other side to close (`fin-timeout`). Default 60000 (60s); 0 means none. */
  finTimeoutMs: number;
  /**
   * The most client sessions at once; at the limit the proxy stops accepting (the kernel's listen
   * backlog holds the rest) and resumes below it. Default `auto`: derived at start from the
   * open-file limit (`src/limits.ts`). Otherwise 1 to {@link MAX_CLIENTS}.
   */
  maxClients: number | "auto";
  /** The most upstream connections at once (dialling, leased, idle, settling and checking together); 0 means no limit. Default 0. */
  maxUpstream: number;
  /** How long a session waits for a free upstream connection once `maxUpstream` is reached (`queue-timeout`). Default 5000 (5s). Always > 0. */
  queueTimeoutMs: number;
  /**
   * The protocol spoken, for exact reuse: `redis` and `memcached` let `reuse` pool a connection
   * only when its exchange is provably complete; `raw` relies on timing. Default `raw`.
   */
  protocol: Protocol;
  /** With a framed protocol, most bytes of owed responses read and discarded after a client left, before its connection is pooled. Default 262144 (256 KiB). */
  reuseDrainBytes: number;
  /**
   * Process-wide bytes for reading ahead: a busy direction reads its next chunk while the last is
   * written, in buffers of up to 256 KiB, only with a place on this budget (512 KiB each, rounded
   * down; see `setReadAheadMemory` in `src/_io.ts`, which `main.ts` calls with it); others read
   * 64 KiB at a time and wait for each write. Default 33554432 (32 MiB); 0 never reads ahead.
   */
  readAheadMemory: number;
  /** With a framed protocol, how long owed responses may take to arrive after a client left. Default 1000 (1s). Always > 0. */
  reuseDrainTimeoutMs: number;
  /** In `raw` reuse, how long a released connection is watched before it is handed out again. Default 5 (5ms); 0 hands it out at once, and is what a framed protocol has (no settle time). */
  reuseSettleMs: number;
  /** With `--protocol redis`, send `RESET` on a connection left with per-connection state and pool it after `+RESET`, instead of closing it. Default false. */
  redisReset: boolean;
  /** On SIGINT/SIGTERM, how long active sessions may finish. Default 30000 (30s); 0 closes them at once. */
  drainTimeoutMs: number;
  /**
   * Where the admin endpoint (`/metrics`, `/stats`, `/healthz`, `/readyz`) listens; `undefined`
   * (the default) serves none. Meant for loopback or a private network.
   */
  admin: HostPort | undefined;
  /** `--access-log`: one line per finished session at `info`. Default false. */
  accessLog: boolean;
  /** `--upstream-tls`: every upstream connection is TLS. Default false. */
  upstreamTls: boolean;
  /** `--upstream-sni`: the name the upstream's certificate must be valid for; default its host. */
  upstreamSni: string | undefined;
  /** `--upstream-ca`: a PEM file of certificates to trust instead of the runtime's root store. */
  upstreamCa: string | undefined;
  /** `--upstream-cert`: a PEM client certificate (chain) for mutual TLS; with `upstreamKey`. */
  upstreamCert: string | undefined;
  /** `--upstream-key`: the PEM private key of `upstreamCert`. */
  upstreamKey: string | undefined;
  /** `--tls-cert`: the listener accepts TLS with this PEM certificate (chain); with `tlsKey`. */
  tlsCert: string | undefined;
  /** `--tls-key`: the PEM private key of `tlsCert`. */
  tlsKey: string | undefined;
  /** `--tls-handshake-timeout`: bound on a client's TLS handshake, in ms. Default 10 s. */
  tlsHandshakeTimeoutMs: number;
  /**
   * `--tls-reload-interval`: how often certificate files are checked for changes, in ms; 0
   * never. Default 5 s.
   */
  tlsReloadIntervalMs: number;
  /** The lowest level logged. Default `info`. */
  logLevel: LogLevel;
  /** The log format. Default `text`. */
  logFormat: LogFormat;
  /**
   * Bytes of log lines queued for stderr while it does not take them; past it lines are dropped
   * and counted. Default 1048576 (1 MiB); 0 writes each line at once, holding the proxy up
   * while stderr is full.
   */
  logBuffer: number;
}

/** What the command line asks for: run the proxy, or print help or the version. */
export type CliCommand =
  | {
    kind: "run";
    config: ProxyConfig;
    /** The value flags given on the command line (names without dashes), defaults aside. */
    given: ReadonlySet<string>;
  }
  | { kind: "help"; text: string }
  | { kind: "version"; text: string };

/**
 * Thrown by {@link parseCli} for a command line that cannot be run. The
 * message is one line naming the flag, the bad value and what is accepted,
 * e.g. `--pool: "sometimes" is not a pool mode; use off, warm or reuse`.
 */
export class ConfigError extends Error {
  /** The flag at fault, with its dashes (e.g. `--pool`), when there is one. */
  readonly flag?: string;

  /**
   * Builds the error.
   *
   * @param message The whole one-line message.
   * @param flag The flag at fault, e.g. `--pool`.
   */
  constructor(message: string, flag?: string) {
    super(message);
    this.name = "ConfigError";
    if (flag !== undefined) this.flag = flag;
  }
}

/** The accepted pool modes, in the order help text lists them. */
export const POOL_MODES: readonly PoolMode[] = ["off", "warm", "reuse"];
/** The accepted log levels, lowest first. */
export const LOG_LEVELS: readonly LogLevel[] = ["debug", "info", "warn", "error"];
/** The accepted log formats. */
export const LOG_FORMATS: readonly LogFormat[] = ["text", "json"];
/** The largest accepted `--pool-size`. */
export const MAX_POOL_SIZE = 100_000;
/** The largest accepted `--max-clients`. */
export const MAX_CLIENTS = 1_000_000;
/** The largest accepted `--max-upstream`. */
export const MAX_UPSTREAM = 100_000;
/** The largest accepted `--preconnect-ratio`. */
export const MAX_PRECONNECT_RATIO = 100;
/** The accepted protocols. */
export const PROTOCOLS: readonly Protocol[] = ["raw", "redis", "memcached"];
/** The largest accepted size (`--reuse-drain-bytes`, `--read-ahead-memory`): 1 GiB. */
export const MAX_DRAIN_BYTES = 1024 * 1024 * 1024;

/**
 * The default `--min-idle` of a pool mode: 4 in `warm`, 0 in `reuse` and `off`.
 *
 * @param mode The pool mode.
 * @returns The number of connections kept ready when `--min-idle` is not given.
 */
export function defaultMinIdle(mode: PoolMode): number {
  return mode === "warm" ? 4 : 0;
}

/** The configuration when no flag is given (pool `warm`, so `minIdle` is 4). Frozen. */
export const DEFAULT_CONFIG: Readonly<ProxyConfig> = Object.freeze({
  listen: Object.freeze({ hostname: "127.0.0.1", port: 8848 }),
  upstream: Object.freeze({ hostname: "127.0.0.1", port: 8849 }),
  pool: "warm",
  poolSize: 1000,
  minIdle: defaultMinIdle("warm"),
  preconnectRatio: 1,
  idleTimeoutMs: 60_000,
  maxLifetimeMs: 1_800_000,
  connectTimeoutMs: 5_000,
  clientTimeoutMs: 3_600_000,
  serverTimeoutMs: 3_600_000,
  finTimeoutMs: 60_000,
  maxClients: "auto",
  maxUpstream: 0,
  queueTimeoutMs: 5_000,
  protocol: "raw",
  reuseDrainBytes: 256 * 1024,
  readAheadMemory: DEFAULT_READ_AHEAD_MEMORY,
  reuseDrainTimeoutMs: 1_000,
  reuseSettleMs: 5,
  redisReset: false,
  drainTimeoutMs: 30_000,
  admin: undefined,
  accessLog: false,
  upstreamTls: false,
  upstreamSni: undefined,
  upstreamCa: undefined,
  upstreamCert: undefined,
  upstreamKey: undefined,
  tlsCert: undefined,
  tlsKey: undefined,
  tlsHandshakeTimeoutMs: 10_000,
  tlsReloadIntervalMs: 5_000,
  logLevel: "info",
  logFormat: "text",
  logBuffer: 1024 * 1024,
});

/** The version of tcp-pool-proxy, from `deno.json`. */
export const VERSION: string = readVersion(denoJson);

function readVersion(json: unknown): string {
  const version = typeof json === "object" && json !== null
    ? (json as Record<string, unknown>).version
    : undefined;
  if (typeof version !== "string") throw new TypeError('deno.json has no string "version"');
  return version;
}

const VALUE_FLAGS = [
  "listen",
  "upstream",
  "pool",
  "pool-size",
  "min-idle",
  "preconnect-ratio",
  "idle-timeout",
  "max-lifetime",
  "connect-timeout",
  "client-timeout",
  "server-timeout",
  "fin-timeout",
  "max-clients",
  "max-upstream",
  "queue-timeout",
  "protocol",
  "reuse-drain-bytes",
  "read-ahead-memory",
  "reuse-drain-timeout",
  "reuse-settle",
  "drain-timeout",
  "admin",
  "upstream-sni",
  "upstream-ca",
  "upstream-cert",
  "upstream-key",
  "tls-cert",
  "tls-key",
  "tls-handshake-timeout",
  "tls-reload-interval",
  "log-level",
  "log-format",
  "log-buffer",
] as const;
type ValueFlag = typeof VALUE_FLAGS[number];

/** What each value flag accepts: the end of every message about that flag. */
const ACCEPTS: Record<ValueFlag, string> = {
  "listen": "give HOST:PORT, e.g. 127.0.0.1:8848 or [::1]:8848",
  "upstream": "give HOST:PORT, e.g. 127.0.0.1:8849",
  "pool": "use off, warm or reuse",
  "pool-size": `give an integer from 0 to ${MAX_POOL_SIZE}`,
  "min-idle": "give an integer from 0 to --pool-size",
  "preconnect-ratio": `give a number from 0 to ${MAX_PRECONNECT_RATIO}, e.g. 1 or 1.5`,
  "idle-timeout": "give a duration greater than 0, e.g. 60s",
  "max-lifetime": "give a duration, e.g. 30m, or 0 for no limit",
  "connect-timeout": "give a duration greater than 0, e.g. 5s",
  "client-timeout": "give a duration, e.g. 1h, or 0 for none",
  "server-timeout": "give a duration, e.g. 1h, or 0 for none",
  "fin-timeout": "give a duration, e.g. 60s, or 0 for none",
  "max-clients": `give an integer from 1 to ${MAX_CLIENTS}, or auto`,
  "max-upstream": `give an integer from 0 (no limit) to ${MAX_UPSTREAM}`,
  "queue-timeout": "give a duration greater than 0, e.g. 5s",
  "protocol": "use raw, redis or memcached",
  "reuse-drain-bytes": "give a size in bytes, KiB or MiB, e.g. 256KiB, up to 1GiB",
  "read-ahead-memory": "give a size in bytes, KiB or MiB, e.g. 32MiB, or 0, up to 1GiB",
  "reuse-drain-timeout": "give a duration greater than 0, e.g. 1s",
  "reuse-settle": "give a duration, e.g. 5ms, or 0",
  "drain-timeout": "give a duration, e.g. 30s, or 0",
  "admin": "give HOST:PORT, e.g. 127.0.0.1:9090",
  "upstream-sni": "give a host name, e.g. cache.internal",
  "upstream-ca": "give a PEM file, e.g. /etc/ssl/certs/internal-ca.pem",
  "upstream-cert": "give a PEM file, e.g. /etc/tcp-pool-proxy/client.crt",
  "upstream-key": "give a PEM file, e.g. /etc/tcp-pool-proxy/client.key",
  "tls-cert": "give a PEM file, e.g. /etc/tcp-pool-proxy/server.crt",
  "tls-key": "give a PEM file, e.g. /etc/tcp-pool-proxy/server.key",
  "tls-handshake-timeout": "give a duration greater than 0, e.g. 10s",
  "tls-reload-interval": "give a duration, e.g. 5s, or 0 for never",
  "log-level": "use debug, info, warn or error",
  "log-format": "use text or json",
  "log-buffer": "give a size in bytes, KiB or MiB, e.g. 1MiB, or 0, up to 1GiB",
};

/** Flags that take no value (besides `--help` and `--version`). */
const SWITCHES = ["redis-reset", "access-log", "upstream-tls"] as const;

/**
 * Parses the command line (without the program name, i.e. `Deno.args`).
 *
 * Flags take their value as `--flag value` or `--flag=value`; a separate value
 * may look like a negative number (`--pool-size -3` is rejected as negative, not
 * as missing), but not like any other flag. `--help` wins over `--version`, and
 * both win over invalid values (but not over unknown flags, stray arguments or
 * missing values). When `--min-idle` is not given, it defaults to
 * {@link defaultMinIdle} of the mode, capped at `--pool-size` and at a
 * `--max-upstream` above 0.
 *
 * @param args The arguments, e.g. `Deno.args`.
 * @returns `run` with a validated config, or `help` / `version` with the text to print.
 * @throws {ConfigError} for an unknown flag, a stray argument, a flag given
 * twice or without a value, or a value that is not accepted.
 *
 * @example
 * ```ts
 * import { parseCli } from "./config.ts";
 *
 * parseCli(["--version"]); // { kind: "version", text: "tcp-pool-proxy 0.1.0" }
 * ```
 */
export function parseCli(args: string[]): CliCommand {
  for (const flag of ["help", "version", ...SWITCHES].map((name) => `--${name}`)) {
    const valued = args.find((arg) => arg.startsWith(`${flag}=`));
    if (valued !== undefined) {
      throw new ConfigError(
        `${flag}: takes no value, got ${
          JSON.stringify(valued.slice(flag.length + 1))
        }; give ${flag} alone`,
        flag,
      );
    }
    if (args.filter((arg) => arg === flag).length > 1) {
      throw new ConfigError(`${flag}: given more than once; give it once`, flag);
    }
  }
  const parsed: unknown = parseArgs(joinSeparateValues(args), {
    string: [...VALUE_FLAGS],
    collect: [...VALUE_FLAGS],
    boolean: ["help", "version", ...SWITCHES],
    unknown: rejectUnknown,
  });
  const raw = toRecord(parsed);
  const stray = raw["_"];
  if (Array.isArray(stray) && stray.length > 0) {
    throw strayArgument(String(stray[0]));
  }
  if (raw["help"] === true) return { kind: "help", text: helpText() };
  if (raw["version"] === true) return { kind: "version", text: versionText() };
  const values = new Map<ValueFlag, string>();
  for (const flag of VALUE_FLAGS) {
    const value = singleValue(flag, raw[flag]);
    if (value !== undefined) values.set(flag, value);
  }
  return {
    kind: "run",
    given: new Set(values.keys()),
    config: buildConfig(values, {
      redisReset: raw["redis-reset"] === true,
      accessLog: raw["access-log"] === true,
      upstreamTls: raw["upstream-tls"] === true,
    }),
  };
}

/** The text printed by `--version`, e.g. `tcp-pool-proxy 0.1.0`. */
export function versionText(): string {
  return `tcp-pool-proxy ${VERSION}`;
}

/**
 * The text printed by `--help`: every flag with its default, and a line per pool mode.
 *
 * @returns Several lines, ending without a newline.
 */
export function helpText(): string {
  const d = DEFAULT_CONFIG;
  const [listen, upstream] = [formatHostPort(d.listen), formatHostPort(d.upstream)];
  const [idle, lifetime] = [formatDuration(d.idleTimeoutMs), formatDuration(d.maxLifetimeMs)];
  const [connect, drain] = [formatDuration(d.connectTimeoutMs), formatDuration(d.drainTimeoutMs)];
  const [client, server] = [formatDuration(d.clientTimeoutMs), formatDuration(d.serverTimeoutMs)];
  const [fin, queue] = [formatDuration(d.finTimeoutMs), formatDuration(d.queueTimeoutMs)];
  const [warmIdle, reuseIdle] = [defaultMinIdle("warm"), defaultMinIdle("reuse")];
  const rows: [string, string][] = [
    ["--listen HOST:PORT", `where clients connect (default ${listen});`],
    ["", "IPv6 as [::1]:8848; port 0 lets the system pick a free port"],
    ["--upstream HOST:PORT", `where connections go (default ${upstream})`],
    ["--pool off|warm|reuse", `how upstream connections are pooled (default ${d.pool}):`],
    ["", "  off    dial the upstream for every client; nothing is pooled"],
    ["", "  warm   keep fresh connections dialed ahead of demand;"],
    ["", "         each serves one client, then is closed"],
    ["", "  reuse  also put a connection back in the pool after a clean session;"],
    ["", "         only for stateless request/response protocols (see README)"],
    [
      "--pool-size N",
      `most idle upstream connections kept (default ${d.poolSize}; up to ${MAX_POOL_SIZE})`,
    ],
    ["--min-idle N", "connections kept ready ahead of demand, at most --pool-size"],
    ["", `(default ${warmIdle} with warm, ${reuseIdle} with reuse)`],
    ["--preconnect-ratio R", "warm, reuse: also keep ready R connections per session started"],
    ["", `within one dial time at the recent peak (default ${d.preconnectRatio}; 0 = none)`],
    [
      "--idle-timeout DURATION",
      `close an idle pooled connection older than this (default ${idle})`,
    ],
    [
      "--max-lifetime DURATION",
      `do not reuse a pooled connection past this age (default ${lifetime});`,
    ],
    ["", "0 = no limit"],
    [
      "--connect-timeout DURATION",
      `how long connecting to the upstream may take (default ${connect})`,
    ],
    [
      "--client-timeout DURATION",
      `end a session whose client has been idle this long (default ${client});`,
    ],
    ["", "a write the client does not take counts as idle; 0 = none"],
    [
      "--server-timeout DURATION",
      `end a session whose upstream has been idle this long (default ${server});`,
    ],
    ["", "a write the upstream does not take counts as idle; 0 = none"],
    [
      "--fin-timeout DURATION",
      `after a half-close, how long to wait for the other side (default ${fin});`,
    ],
    ["", "0 = none"],
    [
      "--max-clients N|auto",
      `most client sessions at once (default ${d.maxClients}, from the open-file limit);`,
    ],
    ["", "at the limit, new clients wait in the listen backlog"],
    [
      "--max-upstream N",
      `most upstream connections, idle ones included (default ${d.maxUpstream} = no limit);`,
    ],
    ["", `up to ${MAX_UPSTREAM}`],
    [
      "--queue-timeout DURATION",
      `how long a session waits for a free upstream connection (default ${queue})`,
    ],
    ["", "when --max-upstream is reached"],
    [
      "--protocol raw|redis|memcached",
      `the protocol spoken (default ${d.protocol}); with redis or`,
    ],
    ["", "memcached, reuse pools a connection only when every request was"],
    ["", "answered in full (exact reuse); raw relies on timing (see README)"],
    [
      "--reuse-drain-bytes SIZE",
      `redis, memcached: most bytes of owed answers read and dropped after`,
    ],
    ["", `a client left, to keep its connection (default ${formatSize(d.reuseDrainBytes)})`],
    [
      "--reuse-drain-timeout DURATION",
      `... and how long they may take (default ${formatDuration(d.reuseDrainTimeoutMs)})`,
    ],
    [
      "--reuse-settle DURATION",
      `raw reuse: watch a released connection this long before it is`,
    ],
    ["", `handed out again (default ${formatDuration(d.reuseSettleMs)}; 0 = at once)`],
    [
      "--redis-reset",
      "redis: send RESET on a connection left with state (SELECT, AUTH, ...)",
    ],
    ["", "and pool it after +RESET, instead of closing it (Redis 6.2 and later)"],
    [
      "--read-ahead-memory SIZE",
      `memory for busy directions to read their next chunk while the last`,
    ],
    [
      "",
      `is written, in places of ${formatSize(READ_AHEAD_PER_DIRECTION)} (default ${
        formatSize(d.readAheadMemory)
      }; 0 = never)`,
    ],
    [
      "--drain-timeout DURATION",
      `on SIGINT/SIGTERM, how long active sessions may finish (default ${drain})`,
    ],
    ["--admin HOST:PORT", "serve /metrics, /stats, /healthz and /readyz over HTTP there"],
    ["", "(default none; for loopback or a private network)"],
    ["--access-log", "log one line per finished session at info (default off)"],
    ["--upstream-tls", "connect to the upstream over TLS (default off)"],
    ["--upstream-sni NAME", "the name its certificate must be valid for (default its host)"],
    ["--upstream-ca FILE", "PEM certificates to trust instead of the system's roots"],
    ["--upstream-cert FILE", "a client certificate for mutual TLS (PEM; with --upstream-key)"],
    ["--upstream-key FILE", "its private key (PEM)"],
    ["--tls-cert FILE", "accept clients over TLS with this certificate (PEM; with --tls-key)"],
    ["--tls-key FILE", "its private key (PEM)"],
    [
      "--tls-handshake-timeout DURATION",
      `bound on a client's TLS handshake (default ${formatDuration(d.tlsHandshakeTimeoutMs)})`,
    ],
    [
      "--tls-reload-interval DURATION",
      `check certificate files for changes this often, 0 never (default ${
        formatDuration(d.tlsReloadIntervalMs)
      })`,
    ],
    ["", "(the files need --allow-read for them)"],
    ["--log-level LEVEL", `debug, info, warn or error (default ${d.logLevel})`],
    ["--log-format FORMAT", `text or json, written to stderr (default ${d.logFormat})`],
    ["--log-buffer SIZE", "log lines queued while stderr does not take them; past it they"],
    ["", `are dropped and counted (default ${formatSize(d.logBuffer)}; 0 = wait for stderr)`],
    ["--help", "print this help and exit"],
    ["--version", "print the version and exit"],
  ];
  // A flag wider than its column goes on a line of its own, its text under the others'.
  const flags = rows.flatMap(([flag, text]) =>
    flag.length > 26
      ? [`  ${flag}`, `  ${"".padEnd(26)}  ${text}`]
      : [`  ${flag.padEnd(26)}  ${text}`.trimEnd()]
  );
  return [
    `tcp-pool-proxy ${VERSION}: a TCP proxy that can keep upstream connections ready in a pool.`,
    "",
    "Usage:",
    "  tcp-pool-proxy [flags]",
    "  deno run --allow-net main.ts [flags]",
    "",
    "Flags:",
    ...flags,
    "",
    "A DURATION is a number with a unit ms, s, m or h, e.g. 250ms, 5s, 1.5s, 2m, 1h; 0 needs no unit.",
    "A value follows its flag after a space or an equals sign: --pool reuse, --pool=reuse.",
  ].join("\n");
}

/**
 * Rewrites `--flag value` as `--flag=value` for every value flag, so that parseArgs takes a value
 * such as `-3` as the value rather than as a flag. Throws for `--flag` followed by nothing, by ""
 * or by something that looks like a flag (parseArgs would give ""). Stops at `--`.
 */
function joinSeparateValues(args: string[]): string[] {
  const joined: string[] = [];
  let i = 0;
  for (; i < args.length && args[i] !== "--"; i++) {
    const arg = args[i];
    const name = arg.slice(2);
    if (!arg.startsWith("--") || !isValueFlag(name)) {
      joined.push(arg);
      continue;
    }
    const next = args[i + 1];
    if (next === undefined || next === "" || (next.startsWith("-") && !/^-\d/.test(next))) {
      throw new ConfigError(`--${name}: missing value; ${ACCEPTS[name]}`, `--${name}`);
    }
    joined.push(`--${name}=${next}`);
    i++;
  }
  return joined.concat(args.slice(i));
}

/** Text shown bare in a message: printable ASCII without spaces or quotes; the rest is quoted. */
const BARE_TEXT = /^[\x21\x23-\x7e]+$/;

function rejectUnknown(arg: string, key?: string): never {
  if (key === undefined) throw strayArgument(arg);
  const flag = `${arg.startsWith("--") ? "--" : "-"}${key}`;
  // Quoted when it holds a space, a quote or a control character, so the message stays one line.
  const shown = BARE_TEXT.test(flag) ? flag : JSON.stringify(flag);
  throw new ConfigError(`unknown flag ${shown}; see --help`, flag);
}

function strayArgument(arg: string): ConfigError {
  return new ConfigError(
    `unexpected argument ${JSON.stringify(arg)}; every option is a --flag, see --help`,
  );
}

function isValueFlag(name: string): name is ValueFlag {
  return (VALUE_FLAGS as readonly string[]).includes(name);
}

function toRecord(value: unknown): Record<string, unknown> {
  if (typeof value !== "object" || value === null) {
    throw new TypeError("parseArgs returned something other than an object");
  }
  return value as Record<string, unknown>;
}

/** The one value given for a collected flag, or undefined when it is absent. */
function singleValue(flag: ValueFlag, collected: unknown): string | undefined {
  if (collected === undefined) return undefined;
  const values: unknown[] = Array.isArray(collected) ? collected : [collected];
  if (values.length === 0) return undefined;
  if (values.length > 1) {
    const given = values.map((v) => JSON.stringify(String(v))).join(", ");
    throw new ConfigError(`--${flag}: given more than once (${given}); give it once`, `--${flag}`);
  }
  const [value] = values;
  if (typeof value !== "string" || value === "") {
    throw new ConfigError(`--${flag}: missing value; ${ACCEPTS[flag]}`, `--${flag}`);
  }
  return value;
}

function buildConfig(
  values: Map<ValueFlag, string>,
  switches: { redisReset: boolean; accessLog: boolean; upstreamTls: boolean },
): ProxyConfig {
  // Every value is checked on its own first, so that a bad value is the first thing said; then
  // the combinations: what a flag cannot do with the others given.
  const config = parseValues(values, switches);
  checkCombinations(config, values);
  return config;
}

/** Each flag's value, checked alone (a bad one is a {@link ConfigError}), or its default. */
function parseValues(
  values: Map<ValueFlag, string>,
  switches: { redisReset: boolean; accessLog: boolean; upstreamTls: boolean },
): ProxyConfig {
  const { redisReset, accessLog, upstreamTls } = switches;
  const d = DEFAULT_CONFIG;
  const upstreamSni = values.get("upstream-sni");
  if (upstreamSni !== undefined && !isDnsName(upstreamSni)) {
    throw new ConfigError(
      `--upstream-sni: ${JSON.stringify(upstreamSni)} is not a host name; ${
        ACCEPTS["upstream-sni"]
      } (an IP address upstream is checked against the address without it)`,
      "--upstream-sni",
    );
  }
  const pool = oneOf("pool", values.get("pool"), POOL_MODES, "a pool mode") ?? d.pool;
  const poolSize = integer("pool-size", values.get("pool-size"), MAX_POOL_SIZE) ?? d.poolSize;
  const maxUpstream = integer("max-upstream", values.get("max-upstream"), MAX_UPSTREAM) ??
    d.maxUpstream;
  const minIdle = integer("min-idle", values.get("min-idle"), MAX_POOL_SIZE) ??
    Math.min(defaultMinIdle(pool), poolSize, maxUpstream > 0 ? maxUpstream : Infinity);
  const protocol = oneOf("protocol", values.get("protocol"), PROTOCOLS, "a protocol") ??
    d.protocol;
  const reuseSettleMs = duration("reuse-settle", values.get("reuse-settle"), 0) ??
    d.reuseSettleMs;
  return {
    listen: address("listen", values.get("listen"), true) ?? { ...d.listen },
    upstream: address("upstream", values.get("upstream"), false) ?? { ...d.upstream },
    pool,
    poolSize,
    minIdle,
    preconnectRatio: ratio("preconnect-ratio", values.get("preconnect-ratio")) ??
      d.preconnectRatio,
    idleTimeoutMs: duration("idle-timeout", values.get("idle-timeout"), 1) ?? d.idleTimeoutMs,
    maxLifetimeMs: duration("max-lifetime", values.get("max-lifetime"), 0) ?? d.maxLifetimeMs,
    connectTimeoutMs: duration("connect-timeout", values.get("connect-timeout"), 1) ??
      d.connectTimeoutMs,
    clientTimeoutMs: duration("client-timeout", values.get("client-timeout"), 0) ??
      d.clientTimeoutMs,
    serverTimeoutMs: duration("server-timeout", values.get("server-timeout"), 0) ??
      d.serverTimeoutMs,
    finTimeoutMs: duration("fin-timeout", values.get("fin-timeout"), 0) ?? d.finTimeoutMs,
    maxClients: maxClients(values.get("max-clients")) ?? d.maxClients,
    maxUpstream,
    queueTimeoutMs: duration("queue-timeout", values.get("queue-timeout"), 1) ?? d.queueTimeoutMs,
    protocol,
    reuseDrainBytes: size("reuse-drain-bytes", values.get("reuse-drain-bytes")) ??
      d.reuseDrainBytes,
    readAheadMemory: size("read-ahead-memory", values.get("read-ahead-memory")) ??
      d.readAheadMemory,
    reuseDrainTimeoutMs: duration("reuse-drain-timeout", values.get("reuse-drain-timeout"), 1) ??
      d.reuseDrainTimeoutMs,
    // Framing knows where answers end: no settle time is in force (and /stats says so).
    reuseSettleMs: protocol === "raw" ? reuseSettleMs : 0,
    redisReset,
    drainTimeoutMs: duration("drain-timeout", values.get("drain-timeout"), 0) ?? d.drainTimeoutMs,
    admin: address("admin", values.get("admin"), true),
    accessLog,
    upstreamTls,
    upstreamSni,
    upstreamCa: values.get("upstream-ca"),
    upstreamCert: values.get("upstream-cert"),
    upstreamKey: values.get("upstream-key"),
    tlsCert: values.get("tls-cert"),
    tlsKey: values.get("tls-key"),
    tlsHandshakeTimeoutMs:
      duration("tls-handshake-timeout", values.get("tls-handshake-timeout"), 1) ??
        d.tlsHandshakeTimeoutMs,
    tlsReloadIntervalMs: duration("tls-reload-interval", values.get("tls-reload-interval"), 0) ??
      d.tlsReloadIntervalMs,
    logLevel: oneOf("log-level", values.get("log-level"), LOG_LEVELS, "a log level") ??
      d.logLevel,
    logFormat: oneOf("log-format", values.get("log-format"), LOG_FORMATS, "a log format") ??
      d.logFormat,
    logBuffer: size("log-buffer", values.get("log-buffer")) ?? d.logBuffer,
  };
}

/**
 * What the flags given cannot do together: a flag that has no effect with the others (rejected,
 * not ignored), a bound beyond another, an upstream that is the proxy itself. Each is a
 * {@link ConfigError} naming the flag.
 */
function checkCombinations(config: ProxyConfig, values: Map<ValueFlag, string>): void {
  const { pool, poolSize, minIdle, maxUpstream, protocol, redisReset, upstreamTls } = config;
  for (const flag of ["upstream-sni", "upstream-ca", "upstream-cert", "upstream-key"] as const) {
    if (values.has(flag) && !upstreamTls) {
      throw new ConfigError(
        `--${flag}: has no effect without --upstream-tls; add --upstream-tls, or drop it`,
        `--${flag}`,
      );
    }
  }
  for (
    const [flag, other] of [["upstream-cert", "upstream-key"], ["tls-cert", "tls-key"]] as const
  ) {
    if (values.has(flag) !== values.has(other)) {
      const [given, missing] = values.has(flag) ? [flag, other] : [other, flag];
      throw new ConfigError(
        `--${given}: needs --${missing} as well (a certificate and its private key go together)`,
        `--${given}`,
      );
    }
  }
  const watchesFiles = values.has("tls-cert") || values.has("upstream-ca") ||
    values.has("upstream-cert");
  if (values.has("tls-reload-interval") && !watchesFiles) {
    throw new ConfigError(
      "--tls-reload-interval: has no effect without a certificate file (--tls-cert, --upstream-ca or --upstream-cert); drop it",
      "--tls-reload-interval",
    );
  }
  if (values.has("tls-handshake-timeout") && !values.has("tls-cert")) {
    throw new ConfigError(
      "--tls-handshake-timeout: has no effect without --tls-cert; add --tls-cert and --tls-key, or drop it",
      "--tls-handshake-timeout",
    );
  }
  if (minIdle > poolSize) {
    throw new ConfigError(
      `--min-idle: ${minIdle} is more than --pool-size ${poolSize}; use 0 to ${poolSize}`,
      "--min-idle",
    );
  }
  if (maxUpstream > 0 && minIdle > maxUpstream) {
    throw new ConfigError(
      `--min-idle: ${minIdle} exceeds --max-upstream ${maxUpstream}; use 0 to ${maxUpstream}`,
      "--min-idle",
    );
  }
  if (redisReset && protocol !== "redis") {
    throw new ConfigError(
      `--redis-reset: has no effect with --protocol ${protocol}; drop it, or use --protocol redis`,
      "--redis-reset",
    );
  }
  for (const flag of ["reuse-drain-bytes", "reuse-drain-timeout"] as const) {
    if (values.has(flag) && protocol === "raw") {
      throw new ConfigError(
        `--${flag}: has no effect with --protocol raw (only framing knows what is owed); drop it, or use --protocol redis or memcached`,
        `--${flag}`,
      );
    }
  }
  const reuseOnly = [
    ...(["reuse-drain-bytes", "reuse-drain-timeout", "reuse-settle"] as const).filter((flag) =>
      values.has(flag)
    ),
    ...(redisReset ? ["redis-reset"] : []),
  ];
  if (pool !== "reuse" && reuseOnly.length > 0) {
    throw new ConfigError(
      `--${reuseOnly[0]}: has no effect with --pool ${pool}; drop it, or use --pool reuse`,
      `--${reuseOnly[0]}`,
    );
  }
  if (values.has("reuse-settle") && protocol !== "raw") {
    throw new ConfigError(
      `--reuse-settle: has no effect with --protocol ${protocol} (framing knows where answers end); drop it`,
      "--reuse-settle",
    );
  }
  if (pool === "off" && values.has("preconnect-ratio")) {
    throw new ConfigError(
      `--preconnect-ratio: has no effect with --pool off; drop it, or use --pool warm or reuse`,
      "--preconnect-ratio",
    );
  }
  if (config.accessLog && (config.logLevel === "warn" || config.logLevel === "error")) {
    throw new ConfigError(
      `--access-log: its lines are written at info, which --log-level ${config.logLevel} drops; use --log-level info or debug`,
      "--access-log",
    );
  }
  if (pool === "off" && minIdle > 0) {
    throw new ConfigError(
      `--min-idle: ${minIdle} has no effect with --pool off; drop it, or use --pool warm or reuse`,
      "--min-idle",
    );
  }
  if (protocol !== "raw" && pool !== "reuse") {
    throw new ConfigError(
      `--protocol: ${protocol} has no effect with --pool ${pool} (only reuse pools by framing); drop it, or use --pool reuse`,
      "--protocol",
    );
  }
  if (pool === "off") {
    const pooling = (["pool-size", "idle-timeout", "max-lifetime"] as const).find((flag) =>
      values.has(flag)
    );
    if (pooling !== undefined) {
      throw new ConfigError(
        `--${pooling}: has no effect with --pool off (no connection is kept); drop it, or use --pool warm or reuse`,
        `--${pooling}`,
      );
    }
  }
  if (values.has("queue-timeout") && maxUpstream === 0) {
    throw new ConfigError(
      "--queue-timeout: has no effect without --max-upstream (no session waits for a connection); add --max-upstream, or drop it",
      "--queue-timeout",
    );
  }
  if (reachesItself(config.listen, config.upstream)) {
    throw new ConfigError(
      `--upstream: ${formatHostPort(config.upstream)} is this proxy's own --listen address (${
        formatHostPort(config.listen)
      }): every session would connect back to the proxy; give the server's address`,
      "--upstream",
    );
  }
}

const SIZE_UNITS: Record<string, number> = {
  "": 1,
  "B": 1,
  "KiB": 1024,
  "MiB": 1024 * 1024,
  "GiB": 1024 ** 3,
};

/** A size: a whole number with an optional unit B, KiB, MiB or GiB, up to {@link MAX_DRAIN_BYTES}. */
function size(flag: ValueFlag, text: string | undefined): number | undefined {
  if (text === undefined) return undefined;
  const match = /^(\d+)(B|KiB|MiB|GiB)?$/.exec(text);
  const bytes = match === null ? NaN : Number(match[1]) * SIZE_UNITS[match[2] ?? ""];
  if (!Number.isSafeInteger(bytes) || bytes > MAX_DRAIN_BYTES) {
    const problem = match === null ? "is not a size" : "is too large";
    throw new ConfigError(
      `--${flag}: ${JSON.stringify(text)} ${problem}; ${ACCEPTS[flag]}`,
      `--${flag}`,
    );
  }
  return bytes;
}

/** A size as help text writes it: `256KiB`, `1MiB`, `100B`. */
export function formatSize(bytes: number): string {
  for (const unit of ["GiB", "MiB", "KiB"]) {
    if (bytes >= SIZE_UNITS[unit] && bytes % SIZE_UNITS[unit] === 0) {
      return `${bytes / SIZE_UNITS[unit]}${unit}`;
    }
  }
  return `${bytes}B`;
}

/** A ratio: a decimal number from 0 to {@link MAX_PRECONNECT_RATIO}. */
function ratio(flag: ValueFlag, text: string | undefined): number | undefined {
  if (text === undefined) return undefined;
  const value = /^\d+(\.\d+)?$/.test(text) ? Number(text) : NaN;
  if (!(value <= MAX_PRECONNECT_RATIO)) {
    const problem = text.startsWith("-") ? "is negative" : "is not a number in range";
    throw new ConfigError(
      `--${flag}: ${JSON.stringify(text)} ${problem}; ${ACCEPTS[flag]}`,
      `--${flag}`,
    );
  }
  return value;
}

/** `--max-clients`: `auto`, or an integer from 1 to {@link MAX_CLIENTS}. */
function maxClients(text: string | undefined): number | "auto" | undefined {
  if (text === undefined || text === "auto") return text;
  const value = integer("max-clients", text, MAX_CLIENTS);
  if (value === 0) {
    throw new ConfigError(
      `--max-clients: 0 would let no client in; give at least 1, up to ${MAX_CLIENTS}, or auto`,
      "--max-clients",
    );
  }
  return value;
}

function oneOf<T extends string>(
  flag: ValueFlag,
  text: string | undefined,
  accepted: readonly T[],
  what: string,
): T | undefined {
  if (text === undefined) return undefined;
  const found = accepted.find((a) => a === text);
  if (found === undefined) {
    throw new ConfigError(
      `--${flag}: ${JSON.stringify(text)} is not ${what}; ${ACCEPTS[flag]}`,
      `--${flag}`,
    );
  }
  return found;
}

function integer(flag: ValueFlag, text: string | undefined, max: number): number | undefined {
  if (text === undefined) return undefined;
  if (!/^\d+$/.test(text)) {
    const problem = /^-\d+$/.test(text) ? "is negative" : "is not an integer";
    throw new ConfigError(
      `--${flag}: ${JSON.stringify(text)} ${problem}; ${ACCEPTS[flag]}`,
      `--${flag}`,
    );
  }
  const value = Number(text);
  if (value > max) {
    throw new ConfigError(`--${flag}: ${text} is too large; ${ACCEPTS[flag]}`, `--${flag}`);
  }
  return value;
}

function duration(flag: ValueFlag, text: string | undefined, min: 0 | 1): number | undefined {
  if (text === undefined) return undefined;
  let ms: number;
  try {
    ms = parseDuration(text);
  } catch (err) {
    if (err instanceof DurationError) {
      throw new ConfigError(`--${flag}: ${err.message}`, `--${flag}`);
    }
    throw err;
  }
  if (ms < min) {
    throw new ConfigError(
      `--${flag}: ${JSON.stringify(text)} must be greater than 0; ${ACCEPTS[flag]}`,
      `--${flag}`,
    );
  }
  return ms;
}

function address(
  flag: ValueFlag,
  text: string | undefined,
  allowPortZero: boolean,
): HostPort | undefined {
  if (text === undefined) return undefined;
  try {
    return parseHostPort(text, { allowPortZero });
  } catch (err) {
    if (err instanceof AddressError) {
      throw new ConfigError(`--${flag}: ${err.message}`, `--${flag}`);
    }
    throw err;
  }
}

/** `host` in one spelling: lower case, IPv6 compressed (`0:0::1` is `::1`), IPv4 dotted-quad,
 * an IPv4-mapped IPv6 address as its IPv4 address. */
function canonicalHost(host: string): string {
  let canonical: string;
  try {
    canonical = new URL(`http://${host.includes(":") ? `[${host}]` : host}/`).hostname
      .replace(/^\[(.*)\]$/, "$1");
  } catch {
    return host.toLowerCase();
  }
  const mapped = /^::ffff:([0-9a-f]{1,4}):([0-9a-f]{1,4})$/.exec(canonical);
  if (mapped === null) return canonical;
  const [high, low] = [parseInt(mapped[1], 16), parseInt(mapped[2], 16)];
  return [high >> 8, high & 255, low >> 8, low & 255].join(".");
}

/**
 * The addresses a dial to `host` (canonical) may reach on this machine's loopback: a wildcard
 * is connected to as the loopback of its family, and `localhost` as either family's (it is
 * resolved at each dial). Any other host: itself.
 */
function dialledAs(host: string): string[] {
  if (host === "localhost") return ["127.0.0.1", "::1"];
  if (host === "0.0.0.0") return ["127.0.0.1"];
  if (host === "::") return ["::1"];
  return [host];
}

/** Whether a listener on `listen` (canonical) accepts a connection to `target` (canonical). */
function accepts(listen: string, target: string): boolean {
  const v4Loopback = /^127\./.test(target);
  if (listen === "::") return v4Loopback || target === "::1"; // dual-stack, as Linux binds it
  if (listen === "0.0.0.0") return v4Loopback;
  if (listen === "localhost") return target === "127.0.0.1" || target === "::1";
  return listen === target;
}

/**
 * Whether dialling `upstream` may reach this proxy's own listener at `listen`: the same port,
 * and an address the listener accepts (the same one; loopback for a wildcard listener, as far
 * as a loopback or wildcard upstream goes; `localhost` counted as both loopback addresses). A
 * name that resolves to this machine is not caught here (names are resolved at each dial).
 */
function reachesItself(listen: HostPort, upstream: HostPort): boolean {
  if (listen.port !== upstream.port) return false;
  const l = canonicalHost(listen.hostname);
  return dialledAs(canonicalHost(upstream.hostname)).some((target) => accepts(l, target));
}

/**
 * Whether `name` is a DNS host name a certificate can be checked against: dot-separated labels
 * of 1 to 63 letters, digits and inner hyphens, 253 characters at most, not all digits and dots
 * (an IP address is checked without SNI).
 */
function isDnsName(name: string): boolean {
  if (name.length > 253 || /^[0-9.]+$/.test(name)) return false;
  return name.split(".").every((label) =>
    /^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?$/.test(label)
  );
}
