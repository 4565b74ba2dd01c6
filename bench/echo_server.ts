/**
 * The benchmark's echo upstream as its own process.
 *
 * ```sh
 * deno run --allow-net bench/echo_server.ts --listen 127.0.0.1:0
 * ```
 *
 * Prints `listening on HOST:PORT` on stdout. Then reads commands from stdin, one per line:
 * `stats` prints the counters as one JSON line (`{"accepted":N,"open":N,"errors":N,"bytes":N}`).
 * At the end of stdin, or on SIGTERM/SIGINT, it closes every connection, prints the counters a
 * last time and exits 0.
 *
 * @module
 */

import { startEchoServer } from "./_echo.ts";
import { parseFlags, UsageError } from "./_cli.ts";
import { splitHostPort } from "./_job.ts";

async function main(): Promise<number> {
  let listen: { hostname: string; port: number };
  try {
    const flags = parseFlags(Deno.args, { string: ["listen"], boolean: [] });
    const text = flags.strings.get("listen") ?? "127.0.0.1:0";
    const m = /^(.+):(\d{1,5})$/.exec(text);
    if (!m || Number(m[2]) > 65535) {
      throw new UsageError(`--listen: expected HOST:PORT, got "${text}"`);
    }
    listen = m[2] === "0" ? { hostname: m[1], port: 0 } : splitHostPort(text);
  } catch (err) {
    console.error(`echo_server: ${err instanceof Error ? err.message : err}`);
    return 2;
  }
  const echo = startEchoServer(listen);
  console.log(`listening on ${echo.address}`);

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
        if (cmd === "stats") console.log(JSON.stringify(echo.stats()));
        else if (cmd !== "") console.error(`echo_server: unknown command "${cmd}"`);
      }
    }
    stopped.resolve();
  })();

  await stopped.promise;
  // the signal listeners stay: a SIGTERM that follows the end of stdin must not kill us mid-close
  await echo.close();
  console.log(JSON.stringify(echo.stats()));
  void commands; // stdin may still be open; the process exits anyway
  return 0;
}

Deno.exit(await main());
