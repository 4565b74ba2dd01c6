/**
 * tcp-pool-proxy: a TCP proxy that keeps a bounded pool of upstream connections.
 *
 * The entry point, read as the table of contents: parse the command line, configure logging,
 * start the proxy, wait for SIGINT or SIGTERM, drain, exit.
 *
 * ```sh
 * deno run --allow-net main.ts --listen 127.0.0.1:8848 --upstream 127.0.0.1:6379 --pool reuse
 * ```
 *
 * Exit codes: 0 after a drain (or for --help and --version), 1 when the proxy cannot start
 * (the listen address is taken), 2 for a bad command line, 70 for an internal error.
 *
 * @module
 */

import { writeAllSync } from "./src/_io.ts";
import { formatHostPort } from "./src/address.ts";
import { ConfigError, parseCli, type ProxyConfig } from "./src/config.ts";
import { formatDuration } from "./src/duration.ts";
import { configureLogging, getProxyLogger } from "./src/logging.ts";
import { ListenError, ProxyServer } from "./src/proxy.ts";

const encoder = new TextEncoder();

function printLine(stream: typeof Deno.stdout | typeof Deno.stderr, line: string): void {
  writeAllSync(stream, encoder.encode(line.endsWith("\n") ? line : `${line}\n`));
}

/** Resolves with the name of the first SIGINT or SIGTERM; a second one exits at once. */
function firstStopSignal(): Promise<Deno.Signal> {
  return new Promise((resolve) => {
    let received = false;
    for (const signal of ["SIGINT", "SIGTERM"] as const) {
      Deno.addSignalListener(signal, () => {
        if (received) Deno.exit(130);
        received = true;
        resolve(signal);
      });
    }
  });
}

async function serve(config: ProxyConfig): Promise<number> {
  configureLogging({ level: config.logLevel, format: config.logFormat });
  const log = getProxyLogger();
  let server: ProxyServer;
  try {
    server = ProxyServer.listen(config);
  } catch (error) {
    if (!(error instanceof ListenError)) throw error;
    printLine(Deno.stderr, `tcp-pool-proxy: --listen: ${error.message}`);
    return 1;
  }
  log.info("listening on {listen} upstream {upstream} pool {pool} size {size} min-idle {minIdle}", {
    listen: formatHostPort(server.address),
    upstream: formatHostPort(config.upstream),
    pool: config.pool,
    size: config.poolSize,
    minIdle: config.minIdle,
  });
  const signal = await firstStopSignal();
  log.info("{signal}: draining {sessions} sessions for up to {drain}", {
    signal,
    sessions: server.activeSessions,
    drain: formatDuration(config.drainTimeoutMs),
  });
  const report = await server.shutdown(config.drainTimeoutMs);
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
    printLine(Deno.stdout, command.text);
    return 0;
  }
  return await serve(command.config);
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
  Deno.exit(code);
}
