/**
 * The proxy server: a listener, an accept loop that starts one {@link startSession} per client,
 * the upstream pool they share, and a graceful drain on shutdown.
 *
 * ```ts ignore
 * import { ProxyServer } from "./proxy.ts";
 *
 * const server = ProxyServer.listen({
 *   listen: { hostname: "127.0.0.1", port: 0 },
 *   upstream: { hostname: "127.0.0.1", port: 6379 },
 *   pool: "reuse", poolSize: 100, minIdle: 0,
 *   idleTimeoutMs: 60_000, maxLifetimeMs: 1_800_000, connectTimeoutMs: 5_000,
 * });
 * // ... later
 * await server.shutdown(30_000);
 * ```
 *
 * @module
 */

import { formatHostPort, type HostPort } from "./address.ts";
import { closeQuietly, describeError } from "./_io.ts";
import type { ProxyConfig } from "./config.ts";
import { getProxyLogger, isDebugEnabled } from "./logging.ts";
import { UpstreamPool } from "./pool.ts";
import {
  type SessionContext,
  type SessionHandle,
  type SessionSummary,
  startSession,
} from "./session.ts";

/** What {@link ProxyServer.listen} needs: the listening and pooling part of the configuration. */
export type ProxyServerOptions =
  & Pick<
    ProxyConfig,
    | "listen"
    | "upstream"
    | "pool"
    | "poolSize"
    | "minIdle"
    | "idleTimeoutMs"
    | "maxLifetimeMs"
    | "connectTimeoutMs"
  >
  & {
    /** `settleMs` of the pool (`src/pool.ts`); not a command-line flag. */
    reuseSettleMs?: number;
    /** Called with each finished session's summary (metrics, tests). */
    onSessionEnd?: (summary: SessionSummary) => void;
  };

/** The listen address could not be bound. Carries the address and the reason. */
export class ListenError extends Error {
  /** The address that was asked for. */
  readonly address: HostPort;

  constructor(address: HostPort, reason: string, options?: ErrorOptions) {
    super(`cannot listen on ${formatHostPort(address)}: ${reason}`, options);
    this.name = "ListenError";
    this.address = address;
  }
}

/** What {@link ProxyServer.shutdown} reports. */
export interface ShutdownReport {
  /** Sessions that finished on their own during the drain. */
  drained: number;
  /** Sessions cut when the drain timeout ran out. */
  cut: number;
}

const ACCEPT_RETRY_MS = 50;

/** A running proxy. Create it with {@link ProxyServer.listen}. */
export class ProxyServer {
  /** The address actually bound (port 0 resolved). */
  readonly address: HostPort;
  /** The upstream pool the sessions share. */
  readonly pool: UpstreamPool;
  readonly #listener: Deno.TcpListener;
  readonly #options: ProxyServerOptions;
  readonly #sessions = new Set<SessionHandle>();
  #allEnded: (() => void) | undefined;
  readonly #shutdown = new AbortController();
  readonly #log = getProxyLogger("proxy");
  readonly #sessionLog = getProxyLogger("session");
  readonly #accepting: Promise<void>;
  readonly #upstreamText: string;
  readonly #sessionContext: SessionContext;
  #nextSessionId = 1;
  #stopping = false;

  private constructor(listener: Deno.TcpListener, options: ProxyServerOptions) {
    this.#listener = listener;
    this.#options = options;
    const addr = listener.addr;
    this.address = { hostname: addr.hostname, port: addr.port };
    this.#upstreamText = formatHostPort(options.upstream);
    this.pool = new UpstreamPool({
      upstream: options.upstream,
      mode: options.pool,
      maxIdle: options.poolSize,
      minIdle: options.minIdle,
      idleTimeoutMs: options.idleTimeoutMs,
      maxLifetimeMs: options.maxLifetimeMs,
      connectTimeoutMs: options.connectTimeoutMs,
      settleMs: options.reuseSettleMs,
    });
    this.#sessionContext = {
      pool: this.pool,
      upstream: this.#upstreamText,
      reuse: options.pool === "reuse",
      signal: this.#shutdown.signal,
      onEnd: (session) => {
        this.#sessions.delete(session);
        this.#onSessionEnd(session);
        if (this.#sessions.size === 0) this.#allEnded?.();
      },
    };
    this.#accepting = this.#acceptLoop();
  }

  /**
   * Binds the listen address and starts serving.
   *
   * @throws {ListenError} when the address cannot be bound (in use, not local, no permission).
   */
  static listen(options: ProxyServerOptions): ProxyServer {
    let listener: Deno.TcpListener;
    try {
      listener = Deno.listen({
        hostname: options.listen.hostname,
        port: options.listen.port,
        transport: "tcp",
      });
    } catch (error) {
      const reason = error instanceof Deno.errors.AddrInUse
        ? "address already in use"
        : error instanceof Deno.errors.AddrNotAvailable
        ? "address not available on this host"
        : error instanceof Deno.errors.PermissionDenied || error instanceof Deno.errors.NotCapable
        ? "permission denied"
        : describeError(error);
      throw new ListenError(options.listen, reason, { cause: error });
    }
    return new ProxyServer(listener, options);
  }

  /** Sessions running now. */
  get activeSessions(): number {
    return this.#sessions.size;
  }

  /**
   * Stops accepting at once, lets running sessions finish for up to `drainTimeoutMs`, then cuts
   * the rest (`shutdown`), and closes the pool. Resolves when everything is closed.
   */
  async shutdown(drainTimeoutMs: number): Promise<ShutdownReport> {
    if (!this.#stopping) {
      this.#stopping = true;
      closeQuietly(this.#listener);
    }
    await this.#accepting;
    const running = this.#sessions.size;
    if (running > 0) {
      const allEnded = new Promise<void>((resolve) => this.#allEnded = resolve);
      let timer: ReturnType<typeof setTimeout> | undefined;
      const drained = await Promise.race([
        allEnded.then(() => true),
        new Promise<boolean>((resolve) => timer = setTimeout(() => resolve(false), drainTimeoutMs)),
      ]);
      clearTimeout(timer);
      if (!drained) {
        const cut = this.#sessions.size;
        this.#shutdown.abort();
        for (const session of this.#sessions) session.abort();
        await allEnded;
        await this.pool.close();
        return { drained: running - cut, cut };
      }
    }
    await this.pool.close();
    return { drained: running, cut: 0 };
  }

  async #acceptLoop(): Promise<void> {
    while (!this.#stopping) {
      let client: Deno.TcpConn;
      try {
        client = await this.#listener.accept();
      } catch (error) {
        if (this.#stopping) return;
        // Out of file descriptors and the like: say so, breathe, go on.
        this.#log.warn("accept on {listen} failed: {reason}", {
          listen: formatHostPort(this.address),
          reason: describeError(error),
        });
        await new Promise((resolve) => setTimeout(resolve, ACCEPT_RETRY_MS));
        continue;
      }
      this.#startSession(client);
    }
  }

  #startSession(client: Deno.TcpConn): void {
    this.#sessions.add(startSession(client, this.#nextSessionId++, this.#sessionContext));
  }

  #onSessionEnd(session: SessionHandle): void {
    const end = session.end;
    const unavailable = end === "connect-failed" || end === "connect-timeout";
    const debug = isDebugEnabled(this.#sessionLog);
    if (!unavailable && !debug && this.#options.onSessionEnd === undefined) return;
    const summary = session.summary();
    if (unavailable) {
      this.#log.warn("session {id}: upstream {upstream} unavailable ({end}): {reason}", {
        id: summary.id,
        upstream: this.#upstreamText,
        end: summary.end,
        reason: summary.error ?? "unknown",
        client: summary.client,
      });
    }
    if (debug) {
      this.#sessionLog.debug(
        "session {id} {client} -> {upstream} {source} {end} up {bytesFromClient}B down {bytesFromServer}B {durationMs}ms release {release}",
        { ...summary, durationMs: Math.round(summary.durationMs * 100) / 100 },
      );
    }
    this.#options.onSessionEnd?.(summary);
  }
}
