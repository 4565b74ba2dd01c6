/**
 * The benchmark's echo upstream as its own process: plain TCP, and with `--tls-listen` a TLS
 * listener besides (the same echo, in the same process, counted together).
 *
 * ```sh
 * deno run --allow-net bench/echo_server.ts --listen 127.0.0.1:0
 * deno run --allow-net --allow-read bench/echo_server.ts --listen 127.0.0.1:0 \
 *   --tls-listen 127.0.0.1:0 --tls-cert server.crt --tls-key server.key
 * ```
 *
 * Prints `listening on HOST:PORT` on stdout (the plain listener), then with `--tls-listen`
 * `tls listening on HOST:PORT`. Then reads commands from stdin, one per line: `stats` prints the
 * counters of both listeners together as one JSON line
 * (`{"accepted":N,"open":N,"errors":N,"bytes":N,"handshakes":N}`; `handshakes` counts the TLS
 * handshakes completed). At the end of stdin, or on SIGTERM/SIGINT, it closes every connection,
 * prints the counters a last time and exits 0. Exit code 2 for a bad command line or a
 * certificate or key that cannot be read.
 *
 * @module
 */

import { type EchoServer, type EchoStats, startEchoServer, startTlsEchoServer } from "./_echo.ts";
import { parseFlags, UsageError } from "./_cli.ts";
import { splitHostPort } from "./_job.ts";

/** `HOST:PORT` of a flag, port 0 allowed. @throws {UsageError} */
function listenAddress(flag: string, text: string): { hostname: string; port: number } {
  const m = /^(.+):(\d{1,5})$/.exec(text);
  if (!m || Number(m[2]) > 65535) {
    throw new UsageError(`--${flag}: expected HOST:PORT, got "${text}"`);
  }
  return m[2] === "0" ? { hostname: m[1], port: 0 } : splitHostPort(text);
}

/** The TLS listener asked for: its address, certificate and key (PEM, read from the files). */
interface TlsListen {
  hostname: string;
  port: number;
  cert: string;
  key: string;
}

function parseOptions(
  args: string[],
): { listen: { hostname: string; port: number }; tls?: TlsListen } {
  const flags = parseFlags(args, {
    string: ["listen", "tls-listen", "tls-cert", "tls-key"],
    boolean: [],
  });
  const listen = listenAddress("listen", flags.strings.get("listen") ?? "127.0.0.1:0");
  const tlsText = flags.strings.get("tls-listen");
  const certFile = flags.strings.get("tls-cert");
  const keyFile = flags.strings.get("tls-key");
  if (tlsText === undefined) {
    if (certFile !== undefined || keyFile !== undefined) {
      throw new UsageError("--tls-cert and --tls-key need --tls-listen");
    }
    return { listen };
  }
  if (certFile === undefined || keyFile === undefined) {
    throw new UsageError("--tls-listen needs --tls-cert FILE and --tls-key FILE");
  }
  const read = (flag: string, path: string) => {
    try {
      return Deno.readTextFileSync(path);
    } catch (err) {
      throw new UsageError(
        `--${flag}: cannot read "${path}": ${err instanceof Error ? err.message : err}`,
      );
    }
  };
  return {
    listen,
    tls: {
      ...listenAddress("tls-listen", tlsText),
      cert: read("tls-cert", certFile),
      key: read("tls-key", keyFile),
    },
  };
}

function sum(servers: EchoServer[]): EchoStats {
  const total: EchoStats = { accepted: 0, open: 0, errors: 0, bytes: 0, handshakes: 0 };
  for (const s of servers) {
    const x = s.stats();
    total.accepted += x.accepted;
    total.open += x.open;
    total.errors += x.errors;
    total.bytes += x.bytes;
    total.handshakes += x.handshakes;
  }
  return total;
}

async function main(): Promise<number> {
  let options: ReturnType<typeof parseOptions>;
  try {
    options = parseOptions(Deno.args);
  } catch (err) {
    console.error(`echo_server: ${err instanceof Error ? err.message : err}`);
    return 2;
  }
  const servers: EchoServer[] = [startEchoServer(options.listen)];
  console.log(`listening on ${servers[0].address}`);
  if (options.tls) {
    try {
      servers.push(await startTlsEchoServer(options.tls));
    } catch (err) {
      await servers[0].close();
      console.error(`echo_server: --tls-listen: ${err instanceof Error ? err.message : err}`);
      return 2;
    }
    console.log(`tls listening on ${servers[1].address}`);
  }

  const stopped = Promise.withResolvers<void>();
  const onSignal = () => stopped.resolve();
  Deno.addSignalListener("SIGTERM", onSignal);
  Deno.addSignalListener("SIGINT", onSignal);

  const commands = (async () => {
    const decoder = new TextDecoder();
    let pending = "";
    for await (const chunk of Deno.stdin.readable) {
      pending += decoder.decode(chunk, { stream: true });
      let nl: number;
      while ((nl = pending.indexOf("\n")) >= 0) {
        const cmd = pending.slice(0, nl).trim();
        pending = pending.slice(nl + 1);
        if (cmd === "stats") console.log(JSON.stringify(sum(servers)));
        else if (cmd !== "") console.error(`echo_server: unknown command "${cmd}"`);
      }
    }
    stopped.resolve();
  })();

  await stopped.promise;
  // the signal listeners stay: a SIGTERM that follows the end of stdin must not kill us mid-close
  await Promise.all(servers.map((s) => s.close()));
  console.log(JSON.stringify(sum(servers)));
  void commands; // stdin may still be open; the process exits anyway
  return 0;
}

Deno.exit(await main());
