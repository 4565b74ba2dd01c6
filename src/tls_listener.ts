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
 * The listener watches itself. Deno 2.9.6's `node:net` server stops accepting for good, without a
 * word, after one accept fails for want of a descriptor. So while no client has arrived for
 * {@link LISTENER_CHECK_INTERVAL_MS}, the listener connects to itself ({@link SelfProbe}: a TLS
 * connection from loopback, never a session or a counted handshake; none while it is at
 * `--max-clients`, where the runtime would close it unseen); after {@link LISTENER_FAILED_PROBES}
 * probes in a row that it did not accept, it closes its socket and listens again on the same
 * address, and says so. From the first probe not accepted until it accepts again it is not
 * {@link TlsListener.accepting} (for `/readyz`).
 *
 * @module
 */

import type net from "node:net";
import tls from "node:tls";
import { formatHostPort, type HostPort } from "./address.ts";
import type { ClientConn, ClientListener } from "./_io.ts";
import { getProxyLogger } from "./logging.ts";
import { SelfProbe } from "./self_probe.ts";
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
  /**
   * How long without a client before the listener probes itself, in ms, and how long a probe may
   * wait to be accepted. Defaults: {@link LISTENER_CHECK_INTERVAL_MS},
   * {@link LISTENER_PROBE_TIMEOUT_MS} (shorter in tests).
   */
  checkIntervalMs?: number;
  probeTimeoutMs?: number;
}

/** How long without a new client before the TLS listener checks, with a probe, that it accepts. */
export const LISTENER_CHECK_INTERVAL_MS = 2_000;

/**
 * How much of the event loop's own time a probe may wait to be accepted before it counts as not
 * accepted (time the loop spent late, busy elsewhere, does not count).
 */
export const LISTENER_PROBE_TIMEOUT_MS = 1_000;

/** Probes in a row not accepted before the listener closes its socket and listens again. */
export const LISTENER_FAILED_PROBES = 2;

/** Probes in a row that could not connect before the listener warns that it cannot look. */
const PROBES_TO_WARN_BLIND = 5;

/** What the listener's self-checks found. */
export interface ListenerChecks {
  /** Probes made (connections to itself while no client arrived). */
  probes: number;
  /** Probes the listener accepted. */
  accepted: number;
  /** Times it found itself not accepting and listened again. */
  reopened: number;
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
  /** Probes made and reopenings so far. */
  readonly checks: ListenerChecks = { probes: 0, accepted: 0, reopened: 0 };
  readonly #server: tls.Server;
  readonly #ready: SocketConn[] = [];
  readonly #log = getProxyLogger("tls");
  readonly #checkIntervalMs: number;
  readonly #probe: SelfProbe;
  #waiting: { resolve(conn: ClientConn): void; reject(error: unknown): void } | undefined;
  #closed = false;
  /** When the last TCP connection arrived (`performance.now()`), probes included. */
  #lastArrivalAt = performance.now();
  /** Probes in a row that were not accepted. */
  #failedProbes = 0;
  /** Probes in a row that found nothing (could not connect, or the loop was held up). */
  #unknownProbes = 0;
  /** From the moment the socket is closed until it listens again; the listen under way. */
  #reopening: { listening: boolean; failureLogged: boolean } | undefined;
  #checkTimer: ReturnType<typeof setTimeout> | undefined;

  private constructor(
    server: tls.Server,
    addr: Deno.NetAddr,
    options: TlsListenerOptions,
  ) {
    this.#server = server;
    this.addr = addr;
    this.#checkIntervalMs = options.checkIntervalMs ?? LISTENER_CHECK_INTERVAL_MS;
    this.#probe = new SelfProbe(addr, options.probeTimeoutMs ?? LISTENER_PROBE_TIMEOUT_MS);
    const files = options.files;
    // A reload applies to the next handshakes; clients already connected keep theirs.
    files.onReload(() => {
      if (!this.#closed) server.setSecureContext(files.material);
    });
    this.#scheduleCheck();
  }

  /**
   * Binds `address` and starts accepting TLS clients.
   *
   * @throws the bind error (`EADDRINUSE`, ...) as `node:net` reports it.
   */
  static async open(address: HostPort, options: TlsListenerOptions): Promise<TlsListener> {
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
      options,
    );
    listener.#handleEvents();
    return listener;
  }

  /**
   * False from the first probe the listener did not accept until it accepts again (listening
   * again if need be): meanwhile clients may wait in its backlog for nothing.
   */
  get accepting(): boolean {
    return this.#reopening === undefined && this.#failedProbes === 0;
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
    clearTimeout(this.#checkTimer);
    this.#probe.stop();
    this.#server.close();
    for (const conn of this.#ready.splice(0)) conn.close();
    const waiting = this.#waiting;
    this.#waiting = undefined;
    waiting?.reject(new Deno.errors.BadResource("listener closed"));
  }

  #handleEvents(): void {
    const server = this.#server;
    const listen = formatHostPort(this.addr);
    server.on("error", (error: Error) => {
      const reopening = this.#reopening;
      if (reopening === undefined) {
        this.#log.warn("TLS listener on {listen} error: {reason}", {
          listen,
          reason: error.message,
        });
        return;
      }
      // A listen again that failed (the address taken, no descriptor): the next look retries.
      reopening.listening = false;
      if (reopening.failureLogged) return;
      reopening.failureLogged = true;
      this.#log.error("TLS listener on {listen} cannot listen again: {reason}; retrying", {
        listen,
        reason: error.message,
      });
    });
    server.on("listening", () => {
      if (this.#reopening === undefined || this.#closed) return;
      this.#reopening = undefined;
      this.#failedProbes = 0;
      this.#lastArrivalAt = performance.now();
      this.#log.info("TLS listener on {listen} accepting again", { listen });
    });
    // Each client's address, taken as its TCP connection arrives: once a handshake has failed,
    // the runtime has torn the socket down and the TLS socket no longer knows its peer.
    const peers = new WeakMap<object, string>();
    server.on("connection", (raw: net.Socket) => {
      this.#lastArrivalAt = performance.now();
      if (raw.remoteAddress === undefined || raw.remotePort === undefined) return;
      if (this.#probe.arrived(raw)) return;
      peers.set(raw, formatHostPort({ hostname: raw.remoteAddress, port: raw.remotePort }));
    });
    server.on("tlsClientError", (error: Error & { code?: string }, socket: tls.TLSSocket) => {
      socket.on("error", () => {}); // destroyed: whatever it still reports has no reader
      socket.destroy(); // the runtime leaves a timed-out handshake's socket open otherwise
      if (this.#probe.isProbe(parentOf(socket))) return;
      this.handshakes.failed++;
      this.#log.debug("client {client} failed its TLS handshake: {reason}", {
        client: peerOf(socket, peers),
        reason: error.message,
      });
    });
    server.on("secureConnection", (socket: tls.TLSSocket) => {
      if (this.#probe.isProbe(parentOf(socket))) {
        socket.on("error", () => {});
        socket.destroy();
        return;
      }
      this.#arrived(socket);
    });
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

  #scheduleCheck(): void {
    if (this.#closed) return;
    this.#checkTimer = setTimeout(() => {
      this.#checkTimer = undefined;
      this.#check().catch((error) => {
        this.#log.error("TLS listener check on {listen} failed: {reason}", {
          listen: formatHostPort(this.addr),
          reason: error instanceof Error ? error.message : String(error),
        });
      }).finally(() => this.#scheduleCheck());
    }, this.#checkIntervalMs);
  }

  /**
   * One look at the listener: nothing to do while clients arrive; otherwise a probe, and after
   * {@link LISTENER_FAILED_PROBES} probes in a row not accepted, the socket closed and opened
   * again. While reopening, each look tries to listen again until it works.
   */
  async #check(): Promise<void> {
    if (this.#closed) return;
    if (this.#reopening !== undefined) {
      this.#listenAgain();
      return;
    }
    if (performance.now() - this.#lastArrivalAt < this.#checkIntervalMs) {
      this.#failedProbes = 0;
      return;
    }
    if (this.#atCap()) return;
    this.checks.probes++;
    const result = await this.#probe.run();
    if (this.#closed) return;
    if (result === "unknown") {
      this.#unknownProbes++;
      if (this.#unknownProbes === PROBES_TO_WARN_BLIND && this.#probe.lastFailure !== undefined) {
        this.#log.warn(
          "TLS listener on {listen} cannot probe itself ({reason}): a listener the runtime stopped would not be found",
          { listen: formatHostPort(this.addr), reason: this.#probe.lastFailure },
        );
      }
      return;
    }
    this.#unknownProbes = 0;
    if (result === "accepted") {
      this.checks.accepted++;
      this.#failedProbes = 0;
      return;
    }
    this.#failedProbes++;
    this.#log.debug("TLS listener on {listen} did not accept a probe ({count} in a row)", {
      listen: formatHostPort(this.addr),
      count: this.#failedProbes,
    });
    if (this.#failedProbes < LISTENER_FAILED_PROBES) return;
    this.#log.warn(
      "TLS listener on {listen} stopped accepting (the runtime ends its accept loop after an accept fails, as when out of descriptors); listening again",
      { listen: formatHostPort(this.addr) },
    );
    this.#reopening = { listening: false, failureLogged: false };
    this.checks.reopened++;
    this.#server.close();
    this.#listenAgain();
  }

  /**
   * Whether the listener holds `--max-clients` connections: the runtime would close a probe at
   * once, unseen and before its handshake (which costs it memory), so none is made.
   */
  #atCap(): boolean {
    const cap = this.#server.maxConnections;
    if (!(cap > 0)) return false;
    // The count the runtime checks the cap against (`node:net`'s own field).
    const open = (this.#server as unknown as { _connections?: unknown })._connections;
    return typeof open === "number" && open >= cap;
  }

  /** Listens on the address again, unless a listen is under way; see the `listening` handler. */
  #listenAgain(): void {
    const reopening = this.#reopening;
    if (reopening === undefined || reopening.listening || this.#server.listening) return;
    reopening.listening = true;
    this.#server.listen(this.addr.port, this.addr.hostname);
  }
}

/** The TCP connection a TLS socket runs over (`_parent` in the runtime's `node:tls`). */
function parentOf(socket: tls.TLSSocket): object | undefined {
  const parent = (socket as unknown as { _parent?: unknown })._parent;
  return typeof parent === "object" && parent !== null ? parent : undefined;
}

/**
 * The address of a TLS client whose handshake failed: the TLS socket's own while it has one, else
 * the one its TCP connection (`_parent` in the runtime's `node:tls`) arrived with, else `unknown`.
 */
function peerOf(socket: tls.TLSSocket, peers: WeakMap<object, string>): string {
  if (socket.remoteAddress !== undefined && socket.remotePort !== undefined) {
    return formatHostPort({ hostname: socket.remoteAddress, port: socket.remotePort });
  }
  const parent = parentOf(socket);
  return (parent !== undefined ? peers.get(parent) : undefined) ?? "unknown";
}
