/**
 * A small Redis-protocol upstream for tests, on real loopback sockets: it reads RESP commands
 * (arrays of bulk strings) and answers a few, some with test controls (answers in timed pieces,
 * answers held back until asked), so the framed relay can be tested without a Redis server.
 *
 * Commands: `PING` → `+PONG`; `ECHO x` → bulk x; `SELECT n`, `SET k v`, `AUTH ...` → `+OK`;
 * `RESET` → `+RESET`; `BIG n gapMs` → a bulk of n bytes (`x`), sent in 16 KiB pieces `gapMs`
 * apart; `SLOW ms x` → bulk x after `ms`; `QUIT` → `+OK`, then close; anything else → `-ERR`.
 *
 * @module
 */

import { decoder, encoder, TestUpstream, writeAll } from "./_net.ts";

/** Encodes a command as a RESP array of bulk strings. */
export function resp(...args: string[]): string {
  return `*${args.length}\r\n` +
    args.map((arg) => `$${encoder.encode(arg).length}\r\n${arg}\r\n`).join("");
}

/** A bulk string reply. */
export function bulk(text: string): string {
  return `$${encoder.encode(text).length}\r\n${text}\r\n`;
}

/** Parses every complete RESP command at the start of `text`; returns them and the rest. */
function parseCommands(text: string): { commands: string[][]; rest: string } {
  const commands: string[][] = [];
  let at = 0;
  outer: while (at < text.length) {
    if (text[at] !== "*") throw new Error(`not RESP: ${JSON.stringify(text.slice(at, at + 20))}`);
    const headerEnd = text.indexOf("\r\n", at);
    if (headerEnd < 0) break;
    const count = Number(text.slice(at + 1, headerEnd));
    let cursor = headerEnd + 2;
    const args: string[] = [];
    for (let i = 0; i < count; i++) {
      const lengthEnd = text.indexOf("\r\n", cursor);
      if (lengthEnd < 0) break outer;
      const length = Number(text.slice(cursor + 1, lengthEnd));
      if (text.length < lengthEnd + 2 + length + 2) break outer;
      args.push(text.slice(lengthEnd + 2, lengthEnd + 2 + length));
      cursor = lengthEnd + 2 + length + 2;
    }
    commands.push(args);
    at = cursor;
  }
  return { commands, rest: text.slice(at) };
}

const PIECE = 16 * 1024;

async function answer(conn: Deno.TcpConn, args: string[]): Promise<"close" | "go on"> {
  const [name, ...rest] = args;
  switch (name.toUpperCase()) {
    case "PING":
      await writeAll(conn, encoder.encode("+PONG\r\n"));
      break;
    case "ECHO":
      await writeAll(conn, encoder.encode(bulk(rest[0] ?? "")));
      break;
    case "SELECT":
    case "SET":
    case "AUTH":
      await writeAll(conn, encoder.encode("+OK\r\n"));
      break;
    case "RESET":
      await writeAll(conn, encoder.encode("+RESET\r\n"));
      break;
    case "SLOW":
      await new Promise((resolve) => setTimeout(resolve, Number(rest[0])));
      await writeAll(conn, encoder.encode(bulk(rest[1] ?? "")));
      break;
    case "BIG": {
      const size = Number(rest[0]);
      const gapMs = Number(rest[1] ?? 0);
      const body = encoder.encode(`$${size}\r\n${"x".repeat(size)}\r\n`);
      for (let at = 0; at < body.length; at += PIECE) {
        if (at > 0 && gapMs > 0) await new Promise((resolve) => setTimeout(resolve, gapMs));
        await writeAll(conn, body.subarray(at, Math.min(at + PIECE, body.length)));
      }
      break;
    }
    case "QUIT":
      await writeAll(conn, encoder.encode("+OK\r\n"));
      return "close";
    default:
      await writeAll(conn, encoder.encode(`-ERR unknown command '${name}'\r\n`));
  }
  return "go on";
}

/** Serves one connection: commands answered in order, until EOF or QUIT. */
async function serve(conn: Deno.TcpConn): Promise<void> {
  const buffer = new Uint8Array(64 * 1024);
  let pending = "";
  while (true) {
    const n = await conn.read(buffer);
    if (n === null) return;
    const { commands, rest } = parseCommands(pending + decoder.decode(buffer.subarray(0, n)));
    pending = rest;
    for (const command of commands) {
      if (await answer(conn, command) === "close") return;
    }
  }
}

/** A {@link TestUpstream} that speaks enough RESP for the framed relay's tests. */
export function respUpstream(): TestUpstream {
  return new TestUpstream((conn) => serve(conn));
}

/**
 * A RESP upstream whose first connection answers one command, then closes (without answering)
 * when the next command arrives; later connections serve normally.
 */
export function respUpstreamClosingFirstOnReuse(): TestUpstream {
  return new TestUpstream(async (conn, index) => {
    if (index > 0) return await serve(conn);
    const buffer = new Uint8Array(64 * 1024);
    const n = await conn.read(buffer);
    if (n === null) return;
    for (const command of parseCommands(decoder.decode(buffer.subarray(0, n))).commands) {
      await answer(conn, command);
    }
    await conn.read(buffer); // the next client's command arrives: closed without answering
  });
}
