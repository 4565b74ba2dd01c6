/**
 * Logging for tcp-pool-proxy: LogTape, configured once, writing each record to
 * stderr as a text line or a JSON object.
 *
 * Every logger lives under the category `["tcp-pool-proxy"]`. With a buffer
 * (`--log-buffer`, as the proxy runs), records are queued and written by one
 * asynchronous write at a time ({@link LogBuffer}): a stderr that nobody reads
 * never stalls the proxy, and lines past the buffer are dropped, counted
 * ({@link logLinesDropped}) and said to be once stderr takes lines again.
 * Without one (tests, `--log-buffer 0`), the sink uses `Deno.stderr.writeSync`
 * only, so logging starts no async op (test sanitizers stay quiet), and a
 * record is on stderr before the logging call returns.
 *
 * For a log line that is costly to build, check the level first with
 * LogTape's `logger.isEnabledFor("debug")` (see {@link isDebugEnabled}).
 *
 * @example
 * ```ts
 * import { configureLogging, getProxyLogger, resetLogging } from "./logging.ts";
 *
 * configureLogging({ level: "info", format: "json" });
 * const log = getProxyLogger("pool");
 * log.info("pool ready with {idle} connections", { idle: 4 });
 * resetLogging();
 * ```
 *
 * @module
 */

import {
  configureSync,
  getJsonLinesFormatter,
  getLogger,
  getTextFormatter,
  type Logger,
  type LogLevel as LogTapeLevel,
  resetSync,
  type Sink,
  type TextFormatter,
} from "@logtape/logtape";
import { writeAllSync } from "./_io.ts";
import { formatSize, type LogFormat, type LogLevel } from "./config.ts";
import { LogBuffer } from "./log_buffer.ts";

export type { Logger } from "@logtape/logtape";

/** The category every logger of the proxy lives under. */
export const ROOT_CATEGORY = "tcp-pool-proxy";

/** Options for {@link configureLogging}. */
export interface LoggingOptions {
  /** The lowest level written; lower records are dropped before they are built. */
  level: LogLevel;
  /** `text`: one line per record (`2025-01-01T00:00:00.000Z [INF] tcp-pool-proxy.pool: message`); `json`: one JSON object per line. */
  format: LogFormat;
  /**
   * Bytes of records queued for stderr (`--log-buffer`); past it, records are dropped and
   * counted. Absent or 0: each record is written synchronously before the logging call returns.
   */
  bufferBytes?: number;
}

const LOGTAPE_LEVEL: Record<LogLevel, LogTapeLevel> = {
  debug: "debug",
  info: "info",
  warn: "warning",
  error: "error",
};

/**
 * Configures LogTape for the proxy: one sink writing to stderr, the
 * `tcp-pool-proxy` category at `opts.level`, and LogTape's own meta logger
 * (`["logtape", "meta"]`) at `warning` so its start-up notice stays quiet.
 *
 * Calling it again replaces the earlier configuration. If a write to stderr
 * fails, LogTape catches the error and the record is lost; the caller never
 * sees an exception.
 *
 * @param opts The level and the format; see {@link LoggingOptions}.
 *
 * @example
 * ```ts
 * import { configureLogging, resetLogging } from "./logging.ts";
 *
 * configureLogging({ level: "debug", format: "text" });
 * resetLogging();
 * ```
 */
export function configureLogging(opts: LoggingOptions): void {
  configuredFormat = opts.format;
  const bufferBytes = opts.bufferBytes ?? 0;
  const formatter = opts.format === "json" ? jsonFormatter() : textFormatter();
  logBuffer = bufferBytes > 0
    ? new LogBuffer(Deno.stderr, bufferBytes, (count) => {
      // Formatted here, as LogTape would: the buffer writes it itself, once stderr takes lines.
      const buffer = formatSize(bufferBytes);
      const message =
        `${count} log lines dropped: stderr did not take them (${buffer} queued at most; --log-buffer)`;
      return noticeEncoder.encode(formatter({
        category: [ROOT_CATEGORY, "log"],
        level: "warning",
        message: [message],
        rawMessage: message,
        timestamp: Date.now(),
        properties: { count, buffer },
      }));
    })
    : undefined;
  configureSync({
    reset: true,
    sinks: { stderr: stderrSink(formatter) },
    loggers: [
      { category: [ROOT_CATEGORY], sinks: ["stderr"], lowestLevel: LOGTAPE_LEVEL[opts.level] },
      { category: ["logtape", "meta"], sinks: ["stderr"], lowestLevel: "warning" },
    ],
  });
}

/**
 * Removes the configuration made by {@link configureLogging}; afterwards
 * records go nowhere. Meant for tests.
 */
export function resetLogging(): void {
  configuredFormat = undefined;
  logBuffer = undefined;
  resetSync();
}

/**
 * Waits until the records queued for stderr are written, for at most `timeoutMs` (a stderr that
 * nobody reads never drains). At once without a buffer.
 */
export function flushLogs(timeoutMs: number): Promise<void> {
  return logBuffer?.flush(timeoutMs) ?? Promise.resolve();
}

/** Records dropped because stderr did not take them (`--log-buffer`), since start. */
export function logLinesDropped(): number {
  return logBuffer?.dropped ?? 0;
}

const noticeEncoder = new TextEncoder();

/** The format {@link configureLogging} set; `undefined` while logging is not configured. */
let configuredFormat: LogFormat | undefined;

/** The queue in front of stderr, with `--log-buffer`; `undefined` writes synchronously. */
let logBuffer: LogBuffer | undefined;

/** Writes one encoded record to stderr, through the buffer if there is one. Never throws. */
function writeRecord(bytes: Uint8Array): void {
  if (logBuffer !== undefined) {
    logBuffer.write(bytes);
    return;
  }
  try {
    writeAllSync(Deno.stderr, bytes);
  } catch {
    // A failed write to stderr loses the record, never the session.
  }
}

/** The category of the access log, as its lines name it. */
export const ACCESS_CATEGORY = `${ROOT_CATEGORY}.access`;

/**
 * Writes one access log record at `info` to stderr, in the configured format, the same shape as
 * LogTape's records (`2026-01-01T00:00:00.000Z [INF] tcp-pool-proxy.access: message`, or a JSON
 * line with `@timestamp`, `level`, `message`, `logger` and `properties`), but formatted here: the
 * message comes ready-made, and LogTape's template formatter cost about 20 µs a line, a third of
 * a short session. Nothing is written while logging is not configured.
 *
 * @param message The line, already formatted.
 * @param properties Its fields, for the JSON form.
 */
export function writeAccessRecord(message: string, properties: Record<string, unknown>): void {
  if (configuredFormat === undefined) return;
  const timestamp = new Date().toISOString();
  const line = configuredFormat === "json"
    ? JSON.stringify({
      "@timestamp": timestamp,
      level: "INFO",
      message,
      logger: ACCESS_CATEGORY,
      properties,
    })
    : `${timestamp} [INF] ${ACCESS_CATEGORY}: ${message}`;
  writeRecord(accessEncoder.encode(`${line}\n`));
}

const accessEncoder = new TextEncoder();

/**
 * Returns the logger for a part of the proxy, under `tcp-pool-proxy`.
 *
 * @param sub Sub-categories, e.g. `"pool"` gives `["tcp-pool-proxy", "pool"]`; none gives the root.
 * @returns A LogTape logger; its methods are `debug`, `info`, `warn`, `error`
 * (and `isEnabledFor(level)` taking LogTape's level names: `"debug"`,
 * `"info"`, `"warning"`, `"error"`).
 *
 * @example
 * ```ts
 * import { getProxyLogger } from "./logging.ts";
 *
 * getProxyLogger("session").debug("session {id} ended: {end}", { id: 7, end: "client-closed" });
 * ```
 */
export function getProxyLogger(...sub: string[]): Logger {
  return getLogger([ROOT_CATEGORY, ...sub]);
}

/**
 * Whether `debug` records of `logger` would be written, so that a per-session
 * debug line costs one check at `info` level. The same as
 * `logger.isEnabledFor("debug")`.
 *
 * @param logger The logger to ask; default the root `tcp-pool-proxy` logger.
 * @returns `true` when logging is configured at `debug`.
 *
 * @example
 * ```ts
 * import { getProxyLogger, isDebugEnabled } from "./logging.ts";
 *
 * const log = getProxyLogger("session");
 * if (isDebugEnabled(log)) log.debug("bytes {n}", { n: 42 });
 * ```
 */
export function isDebugEnabled(logger: Logger = getProxyLogger()): boolean {
  return logger.isEnabledFor("debug");
}

/**
 * Counts events that deserve a warning, and says when one is due: the first, then at most one
 * per interval, so a stream of the same event cannot flood the log.
 */
export class ThrottledWarning {
  readonly #intervalMs: number;
  #count = 0;
  #lastWarningAt = -Infinity;

  /** @param intervalMs The shortest time between two warnings, in milliseconds. */
  constructor(intervalMs: number) {
    this.#intervalMs = intervalMs;
  }

  /** Counts one event. @returns the count so far when a warning is due, else `undefined`. */
  note(): number | undefined {
    this.#count++;
    const now = performance.now();
    if (now - this.#lastWarningAt < this.#intervalMs) return undefined;
    this.#lastWarningAt = now;
    return this.#count;
  }
}

const BARE_STRING = /^[\x21\x23-\x7e]+$/;

/**
 * A value as a message shows it: addresses and words read best bare; a string with spaces,
 * quotes or control characters is quoted as JSON (a stack's newlines become \n), so that one
 * record stays one line.
 */
function messageValue(value: unknown, inspect: (value: unknown) => string): string {
  return typeof value === "string"
    ? (BARE_STRING.test(value) ? value : JSON.stringify(value))
    : inspect(value);
}

function textFormatter(): TextFormatter {
  return getTextFormatter({
    timestamp: "rfc3339",
    level: "ABBR",
    category: ".",
    value: messageValue,
  });
}

/**
 * LogTape's JSON Lines, with the message rendered as the text format renders it: LogTape's own
 * rendering quotes every string value (`"\"SIGHUP\": ... pool \"warm\""`).
 */
function jsonFormatter(): TextFormatter {
  const lines = getJsonLinesFormatter();
  const inspect = (value: unknown) => Deno.inspect(value);
  return (record) => {
    let message = "";
    for (let i = 0; i < record.message.length; i++) {
      message += i % 2 === 0 ? String(record.message[i]) : messageValue(record.message[i], inspect);
    }
    return lines({ ...record, message: [message] });
  };
}

function stderrSink(format: TextFormatter): Sink {
  const encoder = new TextEncoder();
  return (record) => writeRecord(encoder.encode(format(record)));
}
