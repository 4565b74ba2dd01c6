/**
 * An echo server for the benchmark: every byte a client sends comes straight back. It counts
 * accepted connections so that a run can show how many upstream connections a proxy opened.
 * Used in-process by `demo.ts` and as its own process by `echo_server.ts`.
 *
 * Each connection is served by a `conn.read`/`conn.write` loop over one reused buffer that
 * starts at 16 KiB (idle held sessions stay cheap) and grows to 256 KiB while a stream keeps
 * filling it (bulk transfers stay fast).
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
  const stats: EchoStats = { accepted: 0, open: 0, errors: 0, bytes: 0 };
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

  const addr = listener.addr as Deno.NetAddr;
  const host = addr.hostname.includes(":") ? `[${addr.hostname}]` : addr.hostname;
  return {
    address: `${host}:${addr.port}`,
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
