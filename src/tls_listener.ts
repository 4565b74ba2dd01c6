/**
 * The listener for `--tls-cert`/`--tls-key`: clients connect over TLS and the session sees a
 * plain byte stream ({@link SocketConn}), so the proxy bridges TLS to TCP, or TLS to TLS with
 * `--upstream-tls`. Built on `node:tls`'s server, because `Deno.listenTls` has no handshake
 * timeout and cannot change its certificate while it runs.
 *
 * A client's handshake is bounded by `--tls-handshake-timeout`; one that fails or times out costs
 * its own connection only (counted, logged at debug), never the listener. Connections, those in
 * their handshake included, are capped at `--max-clients` (past it the runtime closes new ones at
 * once), and handshaken clients wait here only until the proxy accepts them. A reload of the
 * certificate files ({@link TlsFiles}) applies to the next handshake.
 *
 * @module
 */

import type net from "node:net";
import tls from "node:tls";
import { formatHostPort, type HostPort } from "./address.ts";
import type { ClientConn, ClientListener } from "./_io.ts";
import { getProxyLogger } from "./logging.ts";
import { SocketConn } from "./socket_conn.ts";
import type { TlsFiles } from "./tls.ts";

/** How the TLS listener behaves. */
export interface TlsListenerOptions {
  /** The certificate and key, reloaded when they change. */
  files: TlsFiles;
  /** Bound on a client's handshake, in ms (`--tls-handshake-timeout`). */
  handshakeTimeoutMs: number;
  /** Most connections at once, handshakes included; 0 for no cap. */
  maxConnections: number;
}

/** Counts of client handshakes, for `/metrics` and `/stats`. */
export interface TlsHandshakeCounts {
  /** Clients whose handshake completed. */
  completed: number;
  /** Clients whose handshake failed or timed out. */
  failed: number;
}

/** A TLS listener that hands out handshaken clients, one `accept` at a time. */
export class TlsListener implements ClientListener {
  /** The address bound. */
  readonly addr: Deno.NetAddr;
  /** Handshakes completed and failed so far. */
  readonly handshakes: TlsHandshakeCounts = { completed: 0, failed: 0 };
  readonly #server: tls.Server;
  readonly #ready: SocketConn[] = [];
  #waiting: { resolve(conn: ClientConn): void; reject(error: unknown): void } | undefined;
  #closed = false;

  private constructor(server: tls.Server, addr: Deno.NetAddr, files: TlsFiles) {
    this.#server = server;
    this.addr = addr;
    // A reload applies to the next handshakes; clients already connected keep theirs.
    files.onReload(() => {
      if (!this.#closed) server.setSecureContext(files.material);
    });
  }

  /**
   * Binds `address` and starts accepting TLS clients.
   *
   * @throws the bind error (`EADDRINUSE`, ...) as `node:net` reports it.
   */
  static async open(address: HostPort, options: TlsListenerOptions): Promise<TlsListener> {
    const log = getProxyLogger("tls");
    // Not half-open until the handshake is done: a client that leaves during its handshake is
    // then closed at once instead of holding its place until the handshake timeout.
    const server = tls.createServer({ handshakeTimeout: options.handshakeTimeoutMs });
    server.setSecureContext(options.files.material);
    if (options.maxConnections > 0) server.maxConnections = options.maxConnections;
    await new Promise<void>((resolve, reject) => {
      server.once("error", reject);
      server.listen(address.port, address.hostname, () => {
        server.off("error", reject);
        resolve();
      });
    });
    const bound = server.address();
    const port = typeof bound === "object" && bound !== null ? bound.port : address.port;
    const listener = new TlsListener(
      server,
      { transport: "tcp", hostname: address.hostname, port },
      options.files,
    );
    server.on("error", (error: Error) => {
      log.warn("TLS listener error: {reason}", { reason: error.message });
    });
    // Each client's address, taken as its TCP connection arrives: once a handshake has failed,
    // the runtime has torn the socket down and the TLS socket no longer knows its peer.
    const peers = new WeakMap<object, string>();
    server.on("connection", (raw: net.Socket) => {
      if (raw.remoteAddress !== undefined && raw.remotePort !== undefined) {
        peers.set(raw, formatHostPort({ hostname: raw.remoteAddress, port: raw.remotePort }));
      }
    });
    server.on("tlsClientError", (error: Error & { code?: string }, socket: tls.TLSSocket) => {
      listener.handshakes.failed++;
      log.debug("client {client} failed its TLS handshake: {reason}", {
        client: peerOf(socket, peers),
        reason: error.message,
      });
      socket.on("error", () => {}); // destroyed: whatever it still reports has no reader
      socket.destroy(); // the runtime leaves a timed-out handshake's socket open otherwise
    });
    server.on("secureConnection", (socket: tls.TLSSocket) => listener.#arrived(socket));
    return listener;
  }

  /** The next handshaken client; rejects with `BadResource` once closed. One at a time. */
  accept(): Promise<ClientConn> {
    if (this.#closed) return Promise.reject(new Deno.errors.BadResource("listener closed"));
    const ready = this.#ready.shift();
    if (ready !== undefined) return Promise.resolve(ready);
    return new Promise((resolve, reject) => this.#waiting = { resolve, reject });
  }

  /** Stops listening; clients handshaken but not yet accepted are closed. Idempotent. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#server.close();
    for (const conn of this.#ready.splice(0)) conn.close();
    const waiting = this.#waiting;
    this.#waiting = undefined;
    waiting?.reject(new Deno.errors.BadResource("listener closed"));
  }

  #arrived(socket: tls.TLSSocket): void {
    this.handshakes.completed++;
    // From here a client's FIN ends its direction only, as over plain TCP (read when it comes).
    (socket as unknown as { allowHalfOpen: boolean }).allowHalfOpen = true;
    socket.setNoDelay(true);
    const conn = new SocketConn(socket);
    if (this.#closed) {
      conn.close();
      return;
    }
    const waiting = this.#waiting;
    if (waiting !== undefined) {
      this.#waiting = undefined;
      waiting.resolve(conn);
    } else {
      this.#ready.push(conn);
    }
  }
}

/**
 * The address of a TLS client whose handshake failed: the TLS socket's own while it has one, else
 * the one its TCP connection (`_parent` in the runtime's `node:tls`) arrived with, else `unknown`.
 */
function peerOf(socket: tls.TLSSocket, peers: WeakMap<object, string>): string {
  if (socket.remoteAddress !== undefined && socket.remotePort !== undefined) {
    return formatHostPort({ hostname: socket.remoteAddress, port: socket.remotePort });
  }
  const parent = (socket as unknown as { _parent?: unknown })._parent;
  return (typeof parent === "object" && parent !== null ? peers.get(parent) : undefined) ??
    "unknown";
}
