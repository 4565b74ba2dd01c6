/**
 * tcp-pool-proxy: a TCP proxy that keeps a bounded pool of upstream connections.
 *
 * The entry point, read as the table of contents: parse the command line, configure logging,
 * install the failsafe, size --max-clients and the read-ahead budget, start the proxy and the
 * admin endpoint (--admin), wait for SIGINT or SIGTERM (logging the state on each SIGHUP
 * meanwhile), drain, exit.
 *
 * ```sh
 * deno run --allow-net main.ts --listen 127.0.0.1:8848 --upstream 127.0.0.1:6379 --pool reuse
 * ```
 *
 * Exit codes: 0 after a drain (or for --help and --version), 1 when the proxy cannot start
 * (the listen or admin address is taken) or --help or --version cannot be written, 2 for a bad
 * command line, 70 for an internal error, and 128 + the signal's number when a second SIGINT
 * (130) or SIGTERM (143) cuts a drain short.
 *
 * @module
 */

import { setReadAheadMemory, writeAllSync } from "./src/_io.ts";
import { formatHostPort } from "./src/address.ts";
import { AdminListenError, type AdminServer, startAdmin } from "./src/admin.ts";
import { ConfigError, parseCli, type ProxyConfig } from "./src/config.ts";
import { formatDuration } from "./src/duration.ts";
import { installFailsafe, reportUnexpected } from "./src/failsafe.ts";
import {
  descriptorsNeeded,
  fitPoolToDescriptors,
  type MaxClientsChoice,
  resolveMaxClients,
} from "./src/limits.ts";
import { configureLogging, flushLogs, getProxyLogger, type Logger } from "./src/logging.ts";
import { configInForce, metricFamilies } from "./src/observe.ts";
import { ListenError, ProxyServer } from "./src/proxy.ts";
import { CertificateReloader, listenerTlsOf, upstreamTlsOf } from "./src/tls.ts";

const encoder = new TextEncoder();

function printLine(stream: typeof Deno.stdout | typeof Deno.stderr, line: string): void {
  writeAllSync(stream, encoder.encode(line.endsWith("\n") ? line : `${line}\n`));
}

/** How long queued log lines may take to reach stderr at exit (a stderr nobody reads). */
const EXIT_FLUSH_MS = 1_000;

/** The same when a second signal asks to exit at once. */
const EXIT_AT_ONCE_FLUSH_MS = 100;

/** The signals that start a drain, and their numbers (a second one exits 128 + the number). */
const STOP_SIGNALS: ReadonlyMap<Deno.Signal, number> = new Map<Deno.Signal, number>(
  Deno.build.os === "windows" ? [["SIGINT", 2]] : [["SIGINT", 2], ["SIGTERM", 15]],
);

/**
 * Resolves with the name of the first SIGINT or SIGTERM. A second one of either exits at once
 * with 128 + its number (130 for SIGINT, 143 for SIGTERM), as a shell reports a killed process.
 */
function firstStopSignal(log: Logger, server: ProxyServer): Promise<Deno.Signal> {
  return new Promise((resolve) => {
    let received = false;
    for (const [signal, number] of STOP_SIGNALS) {
      Deno.addSignalListener(signal, () => {
        if (received) {
          log.warn("{signal} during the drain: exiting at once with {sessions} sessions open", {
            signal,
            sessions: server.activeSessions,
          });
          // The log lines queued so far get a moment, not the drain's time.
          void flushLogs(EXIT_AT_ONCE_FLUSH_MS).then(() => Deno.exit(128 + number));
          return;
        }
        received = true;
        resolve(signal);
      });
    }
  });
}

/** On SIGHUP (where the OS has it), logs the state of the pool and the sessions; never exits. */
function logStateOnHangup(server: ProxyServer): void {
  if (Deno.build.os === "windows") return;
  Deno.addSignalListener("SIGHUP", () => {
    try {
      server.logState("SIGHUP");
    } catch (error) {
      reportUnexpected("SIGHUP", error);
    }
  });
}

/**
 * Logs the start-up line. It begins `listening on HOST:PORT ` (tests and scripts parse that),
 * and says where --max-clients came from, e.g. `max-clients 9934 (open-file limit 20000)`.
 */
function logListening(
  log: Logger,
  server: ProxyServer,
  config: ProxyConfig,
  limit: MaxClientsChoice,
): void {
  let template = "listening on {listen} upstream {upstream} pool {pool} size {size} " +
    "min-idle {minIdle} max-clients {maxClients}";
  if (limit.source === "proc" || limit.source === "prlimit") {
    template += " (open-file limit {openFileLimit})";
  }
  if (limit.source === "assumed") template += " (open-file limit assumed {openFileLimit})";
  if (config.maxUpstream > 0) template += " max-upstream {maxUpstream}";
  log.info(template, {
    listen: formatHostPort(server.address),
    upstream: formatHostPort(config.upstream),
    pool: config.pool,
    size: config.poolSize,
    minIdle: config.minIdle,
    maxClients: limit.maxClients,
    maxClientsSource: limit.source,
    openFileLimit: limit.source === "given" ? undefined : limit.fileLimit,
    maxUpstream: config.maxUpstream,
  });
}

async function serve(config: ProxyConfig, given: ReadonlySet<string>): Promise<number> {
  let upstreamTls;
  let listenerTls;
  try {
    // Certificate files are read and checked before anything starts.
    upstreamTls = upstreamTlsOf(config);
    listenerTls = listenerTlsOf(config);
  } catch (error) {
    if (!(error instanceof ConfigError)) throw error;
    printLine(Deno.stderr, `tcp-pool-proxy: ${error.message}`);
    return 2;
  }
  configureLogging({
    level: config.logLevel,
    format: config.logFormat,
    bufferBytes: config.logBuffer,
  });
  installFailsafe();
  const log = getProxyLogger();
  let limit = resolveMaxClients(config);
  // The pool keeps no more than the descriptors the client sessions leave it.
  const { poolSize, minIdle, notes, sessionsThatFit, fileLimit } = fitPoolToDescriptors(
    { ...config, poolSizeGiven: given.has("pool-size") },
    limit,
  );
  for (const note of notes) log.warn(note);
  if (listenerTls !== undefined && sessionsThatFit !== undefined) {
    // Deno 2.9.6's node:tls server stops accepting after one failed accept (out of descriptors),
    // where the plain listener pauses and tries again; it finds that out and listens again
    // (src/tls_listener.ts), but clients in its backlog then are lost: never let it get there.
    log.warn(
      "--max-clients {given} lowered to {fit} with --tls-cert: the TLS listener stops accepting " +
        "when it runs out of descriptors",
      { given: limit.maxClients, fit: sessionsThatFit },
    );
    limit = { maxClients: sessionsThatFit, source: "given" };
  }
  const needed = descriptorsNeeded(config, limit.maxClients, poolSize);
  if (listenerTls !== undefined && fileLimit !== undefined && needed > fileLimit) {
    // Not even one session leaves room for the runtime's accept burst.
    log.warn(
      "the open-file limit {limit} is too low for --tls-cert: {maxClients} session(s), the pool " +
        "and the TLS listener's accept burst need about {needed} descriptors, and a burst of " +
        "connections could stop the TLS listener for seconds; raise ulimit -n to at least {needed}",
      { limit: fileLimit, maxClients: limit.maxClients, needed },
    );
  }
  const inForce: ProxyConfig = { ...config, poolSize, minIdle };
  // Process-wide, like the buffers it bounds.
  setReadAheadMemory(config.readAheadMemory);
  let server: ProxyServer;
  try {
    const options = { ...inForce, maxClients: limit.maxClients, tls: upstreamTls };
    server = listenerTls === undefined
      ? ProxyServer.listen(options)
      : await ProxyServer.listenTls(options, {
        files: listenerTls,
        handshakeTimeoutMs: config.tlsHandshakeTimeoutMs,
      });
  } catch (error) {
    if (!(error instanceof ListenError)) throw error;
    printLine(Deno.stderr, `tcp-pool-proxy: --listen: ${error.message}`);
    return 1;
  }
  let admin: AdminServer | undefined;
  if (config.admin !== undefined) {
    try {
      admin = startAdmin({
        listen: config.admin,
        metrics: () => metricFamilies(server.stats),
        // The addresses bound (a port 0 given is shown as the port the system chose).
        config: () =>
          configInForce(
            { ...inForce, listen: server.address, admin: admin?.address ?? config.admin },
            limit.maxClients,
          ),
        readiness: () => server.readiness(),
      });
    } catch (error) {
      if (!(error instanceof AdminListenError)) throw error;
      printLine(Deno.stderr, `tcp-pool-proxy: --admin: ${error.message}`);
      await server.shutdown(0);
      return 1;
    }
  }
  // Listen for signals before the start-up line, which tells the world that the proxy is up.
  const stopSignal = firstStopSignal(log, server);
  const reloader = new CertificateReloader([upstreamTls, listenerTls], config.tlsReloadIntervalMs);
  logStateOnHangup(server);
  logListening(log, server, inForce, limit);
  if (config.pool === "reuse" && config.protocol === "raw") {
    log.warn(
      "--pool reuse with --protocol raw guesses by timing where an answer ends: a client that " +
        "pipelines or leaves before its whole answer can leave bytes that reach the next client; " +
        "use --protocol redis or memcached for exact reuse (see README)",
    );
  }
  const signal = await stopSignal;
  log.info("{signal}: draining {sessions} sessions for up to {drain}", {
    signal,
    sessions: server.activeSessions,
    drain: formatDuration(config.drainTimeoutMs),
  });
  // The admin endpoint stays up through the drain: /readyz says 503 from its first moment.
  const report = await server.shutdown(config.drainTimeoutMs);
  reloader.stop();
  await admin?.shutdown();
  log.info("stopped: {drained} sessions drained, {cut} cut at the drain timeout", { ...report });
  return 0;
}

async function main(args: string[]): Promise<number> {
  let command;
  try {
    command = parseCli(args);
  } catch (error) {
    if (!(error instanceof ConfigError)) throw error;
    printLine(Deno.stderr, `tcp-pool-proxy: ${error.message}`);
    return 2;
  }
  if (command.kind !== "run") {
    try {
      printLine(Deno.stdout, command.text);
    } catch (error) {
      // A reader that left early (`--help | true`) is not a failure; anything else is one line.
      if (error instanceof Deno.errors.BrokenPipe) return 0;
      const reason = error instanceof Error ? error.message : String(error);
      printLine(
        Deno.stderr,
        `tcp-pool-proxy: --${command.kind}: cannot write to stdout: ${reason}`,
      );
      return 1;
    }
    return 0;
  }
  return await serve(command.config, command.given);
}

if (import.meta.main) {
  let code: number;
  try {
    code = await main(Deno.args);
  } catch (error) {
    const detail = error instanceof Error ? `${error.name}: ${error.message}` : String(error);
    printLine(Deno.stderr, `tcp-pool-proxy: internal error: ${detail}`);
    code = 70;
  }
  await flushLogs(EXIT_FLUSH_MS);
  Deno.exit(code);
}
