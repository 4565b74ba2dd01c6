/**
 * An echo server for the benchmark: every byte a client sends comes straight back. It counts
 * accepted connections so that a run can show how many upstream connections a proxy opened, and
 * over TLS the handshakes it completed, so that a run can show how many a proxy performed.
 * Used in-process by `demo.ts` and as its own process by `echo_server.ts`.
 *
 * Over plain TCP ({@linkcode startEchoServer}), each connection is served by a
 * `conn.read`/`conn.write` loop over one reused buffer that starts at 16 KiB (idle held sessions
 * stay cheap) and grows to 256 KiB while a stream keeps filling it (bulk transfers stay fast).
 *
 * Over TLS ({@linkcode startTlsEchoServer}) it is a `node:tls` server, because a socket of
 * `Deno.listenTls` cannot get TCP_NODELAY: the session tickets a TLS 1.3 server sends after the
 * handshake are still unacknowledged when the first echo is written, so Nagle's algorithm holds
 * that echo back until the client's delayed ACK, 40 ms later, in every session.
 *
 * ```ts
 * import { startEchoServer } from "./_echo.ts";
 * const echo = startEchoServer({ hostname: "127.0.0.1", port: 0 });
 * console.log(`listening on ${echo.address}`);
 * await echo.close();
 * ```
 *
 * @module
 */

import { createServer as createTlsServer, type TLSSocket } from "node:tls";
import type { Socket } from "node:net";

const START_BUFFER = 16 * 1024;
const MAX_BUFFER = 256 * 1024;

/** Counters of an echo server. */
export interface EchoStats {
  /** Connections accepted since the start. */
  accepted: number;
  /** Connections open now. */
  open: number;
  /** Connections that ended with an error (reset, broken pipe). */
  errors: number;
  /** Bytes echoed since the start. */
  bytes: number;
  /**
   * TLS handshakes completed since the start (each accepted connection whose handshake
   * succeeded; always 0 over plain TCP). A failed handshake counts under `errors`.
   */
  handshakes: number;
}

/** A running echo server. */
export interface EchoServer {
  /** The bound address as `HOST:PORT`. */
  readonly address: string;
  /** Current counters (a snapshot). */
  stats(): EchoStats;
  /** Stops accepting, closes every open connection, and waits for all of them to finish. */
  close(): Promise<void>;
}

/**
 * Starts an echo server on `hostname:port` (port 0 picks a free port).
 *
 * @throws {Deno.errors.AddrInUse} and the other errors of `Deno.listen`.
 */
export function startEchoServer(options: { hostname: string; port: number }): EchoServer {
  const listener = Deno.listen({ hostname: options.hostname, port: options.port });
  const conns = new Set<Deno.TcpConn>();
  const handlers = new Set<Promise<void>>();
  const stats: EchoStats = { accepted: 0, open: 0, errors: 0, bytes: 0, handshakes: 0 };
  let closing = false;

  async function serve(conn: Deno.TcpConn): Promise<void> {
    let buf = new Uint8Array(START_BUFFER);
    try {
      conn.setNoDelay(true);
      while (true) {
        const n = await conn.read(buf);
        if (n === null) break;
        let off = 0;
        while (off < n) off += await conn.write(buf.subarray(off, n));
        stats.bytes += n;
        if (n === buf.length && buf.length < MAX_BUFFER) buf = new Uint8Array(buf.length * 4);
      }
    } catch (_err) {
      if (!closing) stats.errors++;
    } finally {
      conns.delete(conn);
      stats.open--;
      try {
        conn.close();
      } catch { /* already closed */ }
    }
  }

  const accepting = (async () => {
    while (!closing) {
      let conn: Deno.TcpConn;
      try {
        conn = await listener.accept();
      } catch (_err) {
        if (closing) break;
        stats.errors++; // e.g. out of file descriptors: keep serving the open ones
        await new Promise((r) => setTimeout(r, 10));
        continue;
      }
      stats.accepted++;
      stats.open++;
      conns.add(conn);
      const h = serve(conn);
      handlers.add(h);
      h.finally(() => handlers.delete(h));
    }
  })();

  return {
    address: formatAddress(listener.addr as Deno.NetAddr),
    stats: () => ({ ...stats }),
    async close() {
      if (closing) return;
      closing = true;
      listener.close();
      await accepting;
      for (const c of conns) {
        try {
          c.close();
        } catch { /* already closed */ }
      }
      await Promise.all(handlers);
    },
  };
}

function formatAddress(addr: { hostname: string; port: number }): string {
  const host = addr.hostname.includes(":") ? `[${addr.hostname}]` : addr.hostname;
  return `${host}:${addr.port}`;
}

/** Options of {@linkcode startTlsEchoServer}. */
export interface TlsEchoOptions {
  hostname: string;
  /** 0 picks a free port. */
  port: number;
  /** The server's certificate chain, PEM. */
  cert: string;
  /** Its private key, PEM. */
  key: string;
}

/**
 * Starts an echo server over TLS on `hostname:port` (port 0 picks a free port), with TCP_NODELAY
 * on every connection. Its {@linkcode EchoStats} count TCP connections accepted (`accepted`) and
 * TLS handshakes completed (`handshakes`) apart, both from the server's side.
 *
 * ```ts ignore
 * import { startTlsEchoServer } from "./_echo.ts";
 * const echo = await startTlsEchoServer({ hostname: "127.0.0.1", port: 0, cert, key });
 * console.log(`listening on ${echo.address}`, echo.stats().handshakes);
 * await echo.close();
 * ```
 *
 * @throws {Error} when the address cannot be bound (its `code` is `EADDRINUSE`, ...).
 */
export async function startTlsEchoServer(options: TlsEchoOptions): Promise<EchoServer> {
  const stats: EchoStats = { accepted: 0, open: 0, errors: 0, bytes: 0, handshakes: 0 };
  const sockets = new Set<Socket>();
  const closed = new Set<Promise<void>>();
  let closing = false;
  const countError = () => {
    if (!closing) stats.errors++;
  };

  const server = createTlsServer({ cert: options.cert, key: options.key }, (tls: TLSSocket) => {
    stats.handshakes++;
    tls.on("error", countError);
    tls.on("data", (chunk: Uint8Array) => stats.bytes += chunk.length);
    tls.pipe(tls); // echoes with backpressure; the client's end ends it
  });
  server.on("connection", (socket: Socket) => {
    stats.accepted++;
    stats.open++;
    socket.setNoDelay(true);
    sockets.add(socket);
    const gone = new Promise<void>((resolve) =>
      socket.once("close", () => {
        stats.open--;
        sockets.delete(socket);
        closed.delete(gone);
        resolve();
      })
    );
    closed.add(gone);
  });
  // a handshake that failed (or a client gone before it ended): the socket is destroyed
  server.on("tlsClientError", (_err: Error, tls: TLSSocket) => {
    countError();
    tls.destroy();
  });

  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(options.port, options.hostname, () => {
      server.off("error", reject);
      resolve();
    });
  });
  server.on("error", countError);
  const addr = server.address();
  if (addr === null || typeof addr === "string") {
    server.close();
    throw new Error(`TLS echo server: no TCP address after listen (${addr})`);
  }
  return {
    address: formatAddress({ hostname: addr.address, port: addr.port }),
    stats: () => ({ ...stats }),
    async close() {
      if (closing) return;
      closing = true;
      const stopped = new Promise<void>((resolve) => server.close(() => resolve()));
      for (const s of sockets) s.destroy();
      await Promise.all([stopped, ...closed]);
    },
  };
}
