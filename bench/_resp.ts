/**
 * The Redis protocol (RESP) as far as the benchmark needs it: commands encoded as arrays of bulk
 * strings, the exact replies the load generator expects, and a one-shot client for the bench's
 * own setup and counters (`SET`, `INFO stats`) that reads one reply of any simple type.
 *
 * ```ts
 * import { respCommand, respQuery } from "./_resp.ts";
 * const reply = await respQuery("127.0.0.1:6379", respCommand("PING")); // "+PONG"
 * ```
 *
 * @module
 */

import { splitHostPort } from "./_job.ts";

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** Encodes a command as a RESP array of bulk strings (strings are sent as UTF-8). */
export function respCommand(...args: (string | Uint8Array)[]): Uint8Array {
  const parts = args.map((a) => typeof a === "string" ? encoder.encode(a) : a);
  const heads = parts.map((p) => encoder.encode(`$${p.length}\r\n`));
  const total = parts.reduce((n, p, i) => n + heads[i].length + p.length + 2, 0);
  const top = encoder.encode(`*${parts.length}\r\n`);
  const out = new Uint8Array(top.length + total);
  out.set(top);
  let at = top.length;
  parts.forEach((p, i) => {
    out.set(heads[i], at);
    at += heads[i].length;
    out.set(p, at);
    at += p.length;
    out.set([13, 10], at);
    at += 2;
  });
  return out;
}

/** A bulk string reply for `value`; `null` gives the nil reply `$-1\r\n`. */
export function respBulk(value: Uint8Array | null): Uint8Array {
  if (value === null) return encoder.encode("$-1\r\n");
  const head = encoder.encode(`$${value.length}\r\n`);
  const out = new Uint8Array(head.length + value.length + 2);
  out.set(head);
  out.set(value, head.length);
  out.set([13, 10], head.length + value.length);
  return out;
}

/** Index of `\r\n` in `buf[from..end)`, or -1. */
function findCrlf(buf: Uint8Array, from: number, end: number): number {
  for (let i = from; i + 1 < end; i++) if (buf[i] === 13 && buf[i + 1] === 10) return i;
  return -1;
}

/** Bytes that are not a RESP reply of the types the benchmark knows. */
export class RespFormatError extends Error {
  /** Creates the error; `head` is the start of the offending bytes. */
  constructor(head: Uint8Array) {
    super(`not a RESP reply: ${JSON.stringify(decoder.decode(head.subarray(0, 40)))}`);
    this.name = "RespFormatError";
  }
}

/**
 * The length in bytes of the RESP reply at the start of `buf[0..end)` (a status `+`, an error
 * `-`, an integer `:` or a bulk string `$`, nil included), once its first line is there; -1 before
 * that. The reply is complete when the result is at least 0 and at most `end`.
 *
 * @throws {RespFormatError} for another type (arrays are not needed here) or a bad length.
 */
export function respReplyLength(buf: Uint8Array, end: number): number {
  const eol = findCrlf(buf, 0, end);
  if (eol < 0) {
    if (end > 0 && !"+-:$".includes(String.fromCharCode(buf[0]))) {
      throw new RespFormatError(buf.subarray(0, end));
    }
    return -1;
  }
  switch (buf[0]) {
    case 43: // +
    case 45: // -
    case 58: // :
      return eol + 2;
    case 36: { // $
      const len = Number(decoder.decode(buf.subarray(1, eol)));
      if (!Number.isInteger(len) || len < -1) throw new RespFormatError(buf.subarray(0, end));
      return len < 0 ? eol + 2 : eol + 2 + len + 2;
    }
    default:
      throw new RespFormatError(buf.subarray(0, end));
  }
}

/**
 * Sends `command` on a new connection to `address`, reads one reply and closes. Returns a status
 * line (`+OK`), an integer (`:5`) or an error (`-ERR ...`) as its text, a bulk string as its
 * text, and `null` for the nil bulk.
 *
 * @throws {Error} when the connection ends before a whole reply, the reply is of another type
 * (arrays are not needed here), or nothing comes within `timeoutMs`.
 */
export async function respQuery(
  address: string,
  command: Uint8Array,
  timeoutMs = 5000,
): Promise<string | null> {
  const conn = await Deno.connect({
    ...splitHostPort(address),
    signal: AbortSignal.timeout(timeoutMs),
  });
  let timedOut = false;
  const timer = setTimeout(() => {
    timedOut = true;
    conn.close();
  }, timeoutMs);
  try {
    for (let off = 0; off < command.length;) off += await conn.write(command.subarray(off));
    let buf = new Uint8Array(16 * 1024);
    let end = 0;
    while (true) {
      const len = respReplyLength(buf, end);
      if (len >= 0 && len <= end) {
        const eol = findCrlf(buf, 0, end);
        if (buf[0] !== 36) return decoder.decode(buf.subarray(0, eol));
        return len === eol + 2 ? null : decoder.decode(buf.subarray(eol + 2, len - 2));
      }
      if (len > buf.length || end === buf.length) {
        const bigger = new Uint8Array(Math.max(len, buf.length * 2));
        bigger.set(buf.subarray(0, end));
        buf = bigger;
      }
      const n = await conn.read(buf.subarray(end));
      if (n === null) throw new Error(`${address} closed before a whole RESP reply`);
      end += n;
    }
  } catch (err) {
    if (timedOut) throw new Error(`no RESP reply from ${address} within ${timeoutMs} ms`);
    throw err;
  } finally {
    clearTimeout(timer);
    try {
      conn.close();
    } catch { /* closed by the timer */ }
  }
}

/**
 * Connections a Redis-protocol server has accepted since it started: `total_connections_received`
 * of `INFO stats` (the connection that asks counts too).
 *
 * @throws {Error} when the server does not answer with that field.
 */
export async function respConnectionsReceived(address: string): Promise<number> {
  const info = await respQuery(address, respCommand("INFO", "stats"));
  const m = info === null ? null : /^total_connections_received:(\d+)\r?$/m.exec(info);
  if (!m) throw new Error(`${address}: no total_connections_received in INFO stats`);
  return Number(m[1]);
}

/**
 * The numeric fields of a Redis server's `INFO stats` section (`total_connections_received`,
 * `total_commands_processed`, `total_error_replies`, ...), by name.
 *
 * @throws {Error} when the server does not answer `INFO stats` with a bulk string.
 */
export async function respInfoStats(address: string): Promise<Map<string, number>> {
  const info = await respQuery(address, respCommand("INFO", "stats"));
  if (info === null || info.startsWith("-")) {
    throw new Error(`${address}: INFO stats answered ${info}`);
  }
  const stats = new Map<string, number>();
  for (const m of info.matchAll(/^(\w+):(\d+)\r?$/gm)) stats.set(m[1], Number(m[2]));
  return stats;
}
