/**
 * The floor reference of the benchmark: the least a Deno TCP relay can do. For each client it
 * dials the upstream, then copies both ways with `conn.read`/`conn.write` over fixed 16 KiB
 * buffers, and closes both sides when either ends; no pool, no timeouts, no bookkeeping.
 *
 * ```sh
 * deno run --allow-net bench/minimal_relay.ts --listen 127.0.0.1:0 --upstream 127.0.0.1:9000
 * ```
 *
 * Prints `listening on HOST:PORT`; exits 0 on SIGTERM or SIGINT.
 *
 * @module
 */

import { parseFlags } from "./_cli.ts";
import { splitHostPort } from "./_job.ts";

const BUFFER_BYTES = 16 * 1024;

async function pump(from: Deno.Conn, to: Deno.Conn): Promise<void> {
  const buf = new Uint8Array(BUFFER_BYTES);
  while (true) {
    const n = await from.read(buf);
    if (n === null) return;
    for (let off = 0; off < n;) off += await to.write(buf.subarray(off, n));
  }
}

async function relay(client: Deno.TcpConn, upstream: { hostname: string; port: number }) {
  let server: Deno.TcpConn | undefined;
  try {
    client.setNoDelay(true);
    server = await Deno.connect(upstream);
    server.setNoDelay(true);
    const quiet = () => {}; // a reset, or the read cut short by the close below
    const pumps = [pump(client, server).catch(quiet), pump(server, client).catch(quiet)];
    await Promise.race(pumps);
    closeBoth(client, server);
    await Promise.all(pumps);
  } catch { /* the dial failed */ }
  closeBoth(client, server);
}

function closeBoth(a: Deno.Conn, b: Deno.Conn | undefined): void {
  for (const c of [a, b]) {
    try {
      c?.close();
    } catch { /* already closed */ }
  }
}

const flags = parseFlags(Deno.args, { string: ["listen", "upstream"], boolean: [] });
const listen = /^(.+):(\d{1,5})$/.exec(flags.strings.get("listen") ?? "127.0.0.1:0");
if (!listen) throw new Error("--listen: expected HOST:PORT");
const upstream = splitHostPort(flags.strings.get("upstream") ?? "");
const listener = Deno.listen({ hostname: listen[1], port: Number(listen[2]) });
for (const sig of ["SIGTERM", "SIGINT"] as const) Deno.addSignalListener(sig, () => Deno.exit(0));
const bound = listener.addr as Deno.NetAddr;
console.log(`listening on ${bound.hostname}:${bound.port}`);
for await (const client of listener) relay(client, upstream);
