/**
 * The benchmark's own Redis-protocol upstream, used when `redis-server` is not on the PATH.
 *
 * ```sh
 * deno run --allow-net bench/resp_server.ts --listen 127.0.0.1:0
 * ```
 *
 * Prints `listening on HOST:PORT`; exits 0 on SIGTERM or SIGINT. It reads commands as RESP
 * arrays of bulk strings, pipelined or split across reads (a bulk is read by its length, so a
 * `SET` of many MiB works), and answers: `PING` → `+PONG`; `SET k v` → `+OK` (kept in memory);
 * `GET k` → the value or `$-1`; `INFO` → `total_connections_received:N`; else `-ERR`. Bytes that
 * are not RESP get `-ERR Protocol error` and the connection is closed, as Redis does.
 *
 * @module
 */

import { parseFlags } from "./_cli.ts";
import { respBulk } from "./_resp.ts";

const enc = new TextEncoder();
const dec = new TextDecoder();
const PONG = enc.encode("+PONG\r\n");
const OK = enc.encode("+OK\r\n");
const store = new Map<string, Uint8Array>();
let accepted = 0;

/** One command at `at`, or how long the buffer must be (from 0) before it can be complete. */
function parse(b: Uint8Array, at: number, end: number): { args: Uint8Array[]; next: number } | {
  need: number;
} {
  const eol = (from: number) => {
    for (let i = from; i + 1 < end; i++) if (b[i] === 13 && b[i + 1] === 10) return i;
    return -1;
  };
  const header = (p: number, mark: number, min: number): number => {
    const n = Number(dec.decode(b.subarray(p + 1, eol(p))));
    if (b[p] !== mark || !Number.isInteger(n) || n < min) throw new Error("Protocol error");
    return n;
  };
  if (eol(at) < 0) return { need: end + 1 };
  const count = header(at, 42, /* * */ 1);
  const args: Uint8Array[] = [];
  let p = eol(at) + 2;
  for (let i = 0; i < count; i++) {
    if (eol(p) < 0) return { need: end + 1 };
    const len = header(p, 36, /* $ */ 0);
    const data = eol(p) + 2;
    if (data + len + 2 > end) return { need: data + len + 2 };
    args.push(b.subarray(data, data + len));
    p = data + len + 2;
  }
  return { args, next: p };
}

function answer(args: Uint8Array[]): Uint8Array {
  const name = dec.decode(args[0]).toUpperCase();
  if (name === "PING") return PONG;
  if (name === "GET" && args.length === 2) return respBulk(store.get(dec.decode(args[1])) ?? null);
  if (name === "SET" && args.length === 3) {
    store.set(dec.decode(args[1]), args[2].slice());
    return OK;
  }
  if (name === "INFO") {
    return respBulk(enc.encode(`# Stats\r\ntotal_connections_received:${accepted}\r\n`));
  }
  return enc.encode(`-ERR unknown command '${name.slice(0, 32)}'\r\n`);
}

async function writeAll(conn: Deno.Conn, data: Uint8Array): Promise<void> {
  for (let off = 0; off < data.length;) off += await conn.write(data.subarray(off));
}

async function serve(conn: Deno.TcpConn): Promise<void> {
  let buf = new Uint8Array(64 * 1024);
  let start = 0, end = 0;
  try {
    conn.setNoDelay(true);
    while (true) {
      const n = await conn.read(buf.subarray(end));
      if (n === null) break;
      end += n;
      const replies: Uint8Array[] = [];
      let need = 0;
      let bad = false;
      while (start < end) {
        let r;
        try {
          r = parse(buf, start, end);
        } catch {
          bad = true;
          break;
        }
        if ("need" in r) {
          need = r.need - start;
          break;
        }
        replies.push(answer(r.args));
        start = r.next;
      }
      if (bad) replies.push(enc.encode("-ERR Protocol error\r\n"));
      const out = new Uint8Array(replies.reduce((s, r) => s + r.length, 0));
      replies.reduce((at, r) => (out.set(r, at), at + r.length), 0);
      if (out.length > 0) await writeAll(conn, out);
      if (bad) break;
      if (start === end) start = end = 0;
      else if (start > 0 || need > buf.length) { // keep the partial command at the front
        const into = need > buf.length ? new Uint8Array(Math.max(need, buf.length * 2)) : buf;
        into.set(buf.subarray(start, end));
        end -= start;
        start = 0;
        buf = into;
      }
    }
  } catch {
    /* the client reset the connection */
  } finally {
    conn.close();
  }
}

const listen = parseFlags(Deno.args, { string: ["listen"], boolean: [] }).strings.get("listen") ??
  "127.0.0.1:0";
const m = /^(.+):(\d{1,5})$/.exec(listen);
if (!m) throw new Error(`--listen: expected HOST:PORT, got "${listen}"`);
const listener = Deno.listen({ hostname: m[1].replace(/^\[|\]$/g, ""), port: Number(m[2]) });
for (const sig of ["SIGTERM", "SIGINT"] as const) Deno.addSignalListener(sig, () => Deno.exit(0));
console.log(`listening on ${m[1]}:${(listener.addr as Deno.NetAddr).port}`);
for await (const conn of listener) {
  accepted++;
  serve(conn);
}
