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
import {
  AcceptFailures,
  type ClientConn,
  type ClientListener,
  closeQuietly,
  describeError,
  describeListenError,
  isGoneBeforeAccept,
  isOutOfDescriptors,
  readAheadBudget,
  readAheadInUse,
  WakeablePause,
} from "./_io.ts";
import type { ProxyConfig } from "./config.ts";
import { type Deadline, DeadlineWheel } from "./deadline_wheel.ts";
import { unexpectedErrors } from "./failsafe.ts";
import type { Readiness } from "./admin.ts";
import type { UpstreamTls } from "./dial.ts";
import { TlsListener, type TlsListenerOptions } from "./tls_listener.ts";
import {
  getProxyLogger,
  isDebugEnabled,
  logLinesDropped,
  ThrottledWarning,
  writeAccessRecord,
} from "./logging.ts";
import { DEFAULT_BUCKETS_SECONDS, Histogram } from "./metrics.ts";
import { accessLogEntry, type ListenerState, type ProxyStats, readiness } from "./observe.ts";
import { QUEUE_TIMEOUT_MS, UpstreamPool } from "./pool.ts";
import type { Protocol } from "./framing.ts";
import { protocolSupport } from "./protocols.ts";
import {
  type SessionContext,
  type SessionEnd,
  type SessionHandle,
  type SessionSummary,
  type SessionTimeouts,
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
    /** `--client-timeout` in ms; 0 = none. Default 0 here (the command line's default is 1h). */
    clientTimeoutMs?: number;
    /** `--server-timeout` in ms; 0 = none. Default 0 here (the command line's default is 1h). */
    serverTimeoutMs?: number;
    /** `--fin-timeout` in ms; 0 = none. Default 0 here (the command line's default is 1m). */
    finTimeoutMs?: number;
    /** `--max-clients`: most sessions at once; the listener pauses at it. Default: no limit. */
    maxClients?: number;
    /** TLS to the upstream (`--upstream-tls`, `--upstream-sni`, `--upstream-ca`); default plain TCP. */
    tls?: UpstreamTls;
    /** `--preconnect-ratio`: see `src/demand.ts`. Default 0 here (the command line's default is 1). */
    preconnectRatio?: number;
    /** `--max-upstream`: most upstream connections at once; 0 (default) = no limit. */
    maxUpstream?: number;
    /** `--queue-timeout` in ms. Default {@link QUEUE_TIMEOUT_MS}. */
    queueTimeoutMs?: number;
    /** `--protocol`: with `redis` or `memcached`, `reuse` pools by framing. Default `raw`. */
    protocol?: Protocol;
    /** `--reuse-drain-bytes`. Default 256 KiB. */
    reuseDrainBytes?: number;
    /** `--reuse-drain-timeout` in ms. Default 1000. */
    reuseDrainTimeoutMs?: number;
    /** `--redis-reset`: RESET a connection left with state instead of closing it. Default false. */
    redisReset?: boolean;
    /** `--reuse-settle` in ms: `settleMs` of the pool (`src/pool.ts`), for `raw` only. */
    reuseSettleMs?: number;
    /** `probationMs` of the pool's refills (`src/refill.ts`); not a command-line flag. */
    refillProbationMs?: number;
    /** `idleLimitCheckMs` of the pool (`src/pool.ts`); not a command-line flag. */
    idleLimitCheckMs?: number;
    /** Called with each finished session's summary (metrics, tests). */
    onSessionEnd?: (summary: SessionSummary) => void;
    /** How recently the upstream must have served for `/readyz` to say ready without a probe (tests shorten it). Default 10 s (`READY_INTERVAL_MS` of `src/observe.ts`). */
    readyIntervalMs?: number;
    /** `--access-log`: one line per finished session at `info` (`accessLogEntry` of `src/observe.ts`). Default false. */
    accessLog?: boolean;
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

/** At most one warning per this long that `--max-clients` was reached. */
const LIMIT_WARNING_INTERVAL_MS = 60_000;

/**
 * The timer wheel's resolution for these timeouts: a tenth of the shortest (so a timeout fires
 * at most 10% late), between 10 ms and 1 s.
 */
export function wheelResolutionMs(timeouts: SessionTimeouts): number {
  const set = [timeouts.clientMs, timeouts.serverMs, timeouts.finMs].filter((ms) => ms > 0);
  if (set.length === 0) return 0;
  return Math.min(Math.max(Math.min(...set) / 10, 10), 1_000);
}

/**
 * Bounds of the session duration histogram: the default bounds from 1 ms, then out to an hour
 * (`--client-timeout`'s default).
 */
const SESSION_BUCKETS_SECONDS = [
  ...DEFAULT_BUCKETS_SECONDS.filter((bound) => bound >= 0.001),
  30,
  60,
  300,
  900,
  3600,
];

/** A running proxy. Create it with {@link ProxyServer.listen}. */
export class ProxyServer {
  /** The address actually bound (port 0 resolved). */
  readonly address: HostPort;
  /** The upstream pool the sessions share. */
  readonly pool: UpstreamPool;
  readonly #listener: ClientListener;
  readonly #options: ProxyServerOptions;
  readonly #sessions = new Set<SessionHandle>();
  #allEnded: (() => void) | undefined;
  readonly #shutdown = new AbortController();
  readonly #log = getProxyLogger("proxy");
  readonly #sessionLog = getProxyLogger("session");
  readonly #accepting: Promise<void>;
  readonly #upstreamText: string;
  readonly #sessionContext: SessionContext;
  readonly #wheel: DeadlineWheel<Deadline> | undefined;
  readonly #maxClients: number;
  /** Wakes the accept loop when a session ends below `--max-clients`, or at shutdown. */
  #wakeAcceptor: (() => void) | undefined;
  /** The pause after a failed accept, cut short at shutdown only. */
  readonly #pause = new WakeablePause();
  readonly #limitReached = new ThrottledWarning(LIMIT_WARNING_INTERVAL_MS);
  readonly #unavailable = new ThrottledWarning(LIMIT_WARNING_INTERVAL_MS);
  readonly #outOfDescriptors = new ThrottledWarning(LIMIT_WARNING_INTERVAL_MS);
  readonly #endCounts = new Map<SessionEnd, number>();
  readonly #sessionSeconds = new Histogram(SESSION_BUCKETS_SECONDS);
  #bytesFromClients = 0;
  #bytesFromUpstream = 0;
  #retries = 0;
  #listenerState: ListenerState = "accepting";
  #nextSessionId = 1;
  #stopping = false;

  private constructor(listener: ClientListener, options: ProxyServerOptions) {
    this.#listener = listener;
    this.#options = options;
    const addr = listener.addr;
    this.address = { hostname: addr.hostname, port: addr.port };
    this.#upstreamText = formatHostPort(options.upstream);
    const support = protocolSupport(options.protocol ?? "raw");
    this.pool = new UpstreamPool({
      upstream: options.upstream,
      mode: options.pool,
      maxIdle: options.poolSize,
      minIdle: options.minIdle,
      preconnectRatio: options.preconnectRatio ?? 0,
      idleTimeoutMs: options.idleTimeoutMs,
      maxLifetimeMs: options.maxLifetimeMs,
      connectTimeoutMs: options.connectTimeoutMs,
      tls: options.tls,
      // Only where connections are reused: one that serves one client may be logged in.
      openingCheck: options.pool === "reuse" ? support?.openingCheck : undefined,
      maxOpen: options.maxUpstream ?? 0,
      queueTimeoutMs: options.queueTimeoutMs ?? QUEUE_TIMEOUT_MS,
      // Framing knows where answers end: no timing guess.
      settleMs: (options.protocol ?? "raw") === "raw" ? options.reuseSettleMs : 0,
      // Raw reuse cannot see where a greeting's handshake ends: find out whether there is one.
      greetingWindowMs: (options.protocol ?? "raw") === "raw"
        ? options.reuseSettleMs ?? 0
        : undefined,
      probationMs: options.refillProbationMs,
      idleLimitCheckMs: options.idleLimitCheckMs,
    });
    // Connections made with TLS files a reload replaced are not handed out again.
    options.tls?.onReload?.(() => this.pool.renew());
    this.#maxClients = options.maxClients ?? 0;
    const timeouts: SessionTimeouts = {
      clientMs: options.clientTimeoutMs ?? 0,
      serverMs: options.serverTimeoutMs ?? 0,
      finMs: options.finTimeoutMs ?? 0,
    };
    const resolution = wheelResolutionMs(timeouts);
    this.#wheel = resolution > 0 ? new DeadlineWheel(resolution) : undefined;
    this.#sessionContext = {
      pool: this.pool,
      upstream: this.#upstreamText,
      reuse: options.pool === "reuse",
      signal: this.#shutdown.signal,
      timeouts,
      wheel: this.#wheel,
      newTracker: support?.newTracker,
      drain: {
        bytes: options.reuseDrainBytes ?? 256 * 1024,
        timeoutMs: options.reuseDrainTimeoutMs ?? 1_000,
      },
      reset: options.redisReset === true ? support?.reset : undefined,
      goodbye: support?.goodbye,
      needsFreshConnection: support?.needsFreshConnection,
      onEnd: (session) => {
        this.#sessions.delete(session);
        this.#onSessionEnd(session);
        if (this.#sessions.size < this.#maxClients) this.#wakeAcceptor?.();
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
      throw new ListenError(options.listen, describeListenError(error), { cause: error });
    }
    return new ProxyServer(listener, options);
  }

  /**
   * Binds the listen address for TLS clients (`--tls-cert`, `--tls-key`) and starts serving.
   *
   * @throws {ListenError} when the address cannot be bound.
   */
  static async listenTls(
    options: ProxyServerOptions,
    tls: Omit<TlsListenerOptions, "maxConnections">,
  ): Promise<ProxyServer> {
    let listener: TlsListener;
    try {
      listener = await TlsListener.open(options.listen, {
        ...tls,
        maxConnections: options.maxClients ?? 0,
      });
    } catch (error) {
      throw new ListenError(options.listen, describeListenError(error), { cause: error });
    }
    return new ProxyServer(listener, options);
  }

  /** Sessions running now. */
  get activeSessions(): number {
    return this.#sessions.size;
  }

  /** A snapshot of the counters, for `/metrics`, `/stats` and `/readyz` ({@link metricFamilies}). */
  get stats(): ProxyStats {
    return {
      mode: this.#options.pool,
      upstream: this.#upstreamText,
      sessionsStarted: this.#nextSessionId - 1,
      sessionsActive: this.#sessions.size,
      sessionsEnded: new Map(this.#endCounts),
      retries: this.#retries,
      bytesFromClients: this.#bytesFromClients,
      bytesFromUpstream: this.#bytesFromUpstream,
      ...(this.#listener instanceof TlsListener
        ? {
          clientTlsHandshakes: { ...this.#listener.handshakes },
          listenerChecks: { ...this.#listener.checks },
        }
        : {}),
      sessionSeconds: this.#sessionSeconds,
      listener: this.#stopping
        ? "stopped"
        : this.#listener instanceof TlsListener && !this.#listener.accepting
        ? "not accepting"
        : this.#listenerState,
      maxClients: this.#maxClients,
      draining: this.#stopping,
      unexpectedErrors: unexpectedErrors(),
      logLinesDropped: logLinesDropped(),
      readAheadBytes: readAheadInUse(),
      readAheadBudget: readAheadBudget(),
      pool: this.pool.stats,
    };
  }

  /**
   * Whether new clients should come here (`/readyz`): see {@link readiness}. When the upstream has
   * not shown it serves recently, starts one probe dial (at most one at a time), whose result the
   * next call sees.
   */
  readiness(): Readiness {
    const verdict = readiness(this.stats, performance.now(), this.#options.readyIntervalMs);
    if (verdict.probe) void this.pool.probe(); // never rejects; the pool's close awaits it
    return verdict.ready ? { ready: true } : { ready: false, reason: verdict.reason };
  }

  /**
   * Stops accepting at once, lets running sessions finish for up to `drainTimeoutMs`, then cuts
   * the rest (`shutdown`), and closes the pool. Resolves when everything is closed.
   */
  async shutdown(drainTimeoutMs: number): Promise<ShutdownReport> {
    if (!this.#stopping) {
      this.#stopping = true;
      closeQuietly(this.#listener);
      this.#wakeAcceptor?.();
      this.#pause.wake();
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
        await this.#closeRest();
        return { drained: running - cut, cut };
      }
    }
    await this.#closeRest();
    return { drained: running, cut: 0 };
  }

  async #closeRest(): Promise<void> {
    this.#wheel?.clear();
    await this.pool.close();
  }

  /**
   * Logs the state of the proxy at `info`, one line starting with `reason` (HAProxy's answer to
   * SIGHUP): sessions running and how finished ones ended, the pool by state, the upstream, the
   * last dial error, and unexpected errors caught.
   */
  logState(reason: string): void {
    const pool = this.pool.stats;
    const ends = [...this.#endCounts].map(([end, n]) => `${end}:${n}`).join(",");
    this.#log.info(
      "{reason}: sessions {active} max-clients {maxClients} started {started} ended {ends}; " +
        "pool {mode} upstream {upstream} idle {idle} settling {settling} leased {leased} " +
        "dialling {dialling} checking {checking} max-upstream {maxUpstream} queued {queued} hits {hits} " +
        "misses {misses} dials {dials} dial-failures {dialFailures} " +
        "last-dial-error {lastDialError} refills {refills}; unexpected-errors {unexpected}",
      {
        reason,
        active: this.#sessions.size,
        maxClients: this.#maxClients > 0 ? this.#maxClients : "none",
        started: this.#nextSessionId - 1,
        ends: ends === "" ? "none" : ends,
        mode: this.#options.pool,
        upstream: this.#upstreamText,
        idle: pool.idle,
        settling: pool.settling,
        leased: pool.leased,
        dialling: pool.dialling,
        checking: pool.checking,
        maxUpstream: (this.#options.maxUpstream ?? 0) > 0 ? this.#options.maxUpstream : "none",
        queued: pool.queued,
        hits: pool.hits,
        misses: pool.misses,
        dials: pool.dials,
        dialFailures: pool.dialFailures,
        lastDialError: pool.lastDialError ?? "none",
        refills: pool.refillFailure === undefined ? "ok" : `backing-off: ${pool.refillFailure}`,
        unexpected: unexpectedErrors(),
      },
    );
  }

  async #acceptLoop(): Promise<void> {
    // An accept failure (out of descriptors) starts an episode: one warning, then pauses that
    // double while accepts keep failing. It ends once accepts have worked for a quiet while.
    const failures = new AcceptFailures();
    while (!this.#stopping) {
      if (this.#maxClients > 0 && this.#sessions.size >= this.#maxClients) {
        // The kernel's backlog holds new clients until a session ends.
        this.#atClientLimit();
        this.#listenerState = "at max-clients";
        await new Promise<void>((resolve) => this.#wakeAcceptor = resolve);
        this.#wakeAcceptor = undefined;
        this.#listenerState = "accepting";
        continue;
      }
      let client: ClientConn;
      try {
        client = await this.#listener.accept();
      } catch (error) {
        if (this.#stopping) return;
        // A client that reset before we accepted it costs nothing but itself.
        if (isGoneBeforeAccept(error)) continue;
        const { first, pauseMs, endedEpisodeMs } = failures.failed();
        if (endedEpisodeMs !== undefined) this.#logAcceptingAgain(endedEpisodeMs);
        if (first) {
          this.#log.warn("accept on {listen} failed: {reason}; pausing accepts until it works", {
            listen: formatHostPort(this.address),
            reason: describeError(error),
            descriptors: isOutOfDescriptors(error),
          });
        }
        if (isOutOfDescriptors(error)) this.#listenerState = "out of descriptors";
        await this.#pause.wait(pauseMs);
        this.#listenerState = "accepting";
        continue;
      }
      const episodeMs = failures.succeeded();
      if (episodeMs !== undefined) this.#logAcceptingAgain(episodeMs);
      this.#startSession(client);
    }
  }

  #logAcceptingAgain(episodeMs: number): void {
    this.#log.info("accepting on {listen} again after {ms}ms", {
      listen: formatHostPort(this.address),
      ms: Math.round(episodeMs),
    });
  }

  /**
   * Warns that a session found the upstream unavailable: the first time, then at most once per
   * {@link LIMIT_WARNING_INTERVAL_MS} with the count since, so a down upstream and a stream of
   * clients cannot flood the log.
   */
  #warnUnavailable(summary: SessionSummary): void {
    if (summary.outOfDescriptors === true) {
      // Not the upstream's fault: say whose it is.
      const count = this.#outOfDescriptors.note();
      if (count === undefined) return;
      this.#log.warn(
        "session {id}: cannot dial upstream {upstream}: this process is out of file descriptors; raise ulimit -n or lower --max-clients (sessions so far: {count})",
        { id: summary.id, upstream: this.#upstreamText, client: summary.client, count },
      );
      return;
    }
    const count = this.#unavailable.note();
    if (count === undefined) return;
    this.#log.warn(
      "session {id}: upstream {upstream} unavailable ({end}): {reason} (sessions so far: {count})",
      {
        id: summary.id,
        upstream: this.#upstreamText,
        end: summary.end,
        reason: summary.error ?? "unknown",
        client: summary.client,
        count,
      },
    );
  }

  #atClientLimit(): void {
    const episodes = this.#limitReached.note();
    if (episodes === undefined) return;
    this.#log.warn(
      "max-clients {max} reached: not accepting until a session ends ({episodes} times so far)",
      { max: this.#maxClients, episodes },
    );
  }

  #startSession(client: ClientConn): void {
    this.#sessions.add(startSession(client, this.#nextSessionId++, this.#sessionContext));
  }

  #onSessionEnd(session: SessionHandle): void {
    const end = session.end;
    if (end !== undefined) this.#endCounts.set(end, (this.#endCounts.get(end) ?? 0) + 1);
    this.#bytesFromClients += session.bytesFromClient;
    this.#bytesFromUpstream += session.bytesFromServer;
    if (session.retried) this.#retries++;
    this.#sessionSeconds.observe(session.elapsedMs() / 1000);
    const unavailable = end === "connect-failed" || end === "connect-timeout" ||
      end === "queue-timeout";
    const debug = isDebugEnabled(this.#sessionLog);
    const accessLog = this.#options.accessLog === true;
    if (!unavailable && !debug && !accessLog && this.#options.onSessionEnd === undefined) return;
    const summary = session.summary();
    if (unavailable) this.#warnUnavailable(summary);
    if (accessLog) {
      const { line, fields } = accessLogEntry(summary);
      writeAccessRecord(line, fields);
    }
    if (debug) {
      this.#sessionLog.debug(
        "session {id} {client} -> {upstream} {source} {end} up {bytesFromClient}B down {bytesFromServer}B {durationMs}ms release {release}" +
          (summary.unfit === undefined ? "" : " unfit {unfit}"),
        { ...summary, durationMs: Math.round(summary.durationMs * 100) / 100 },
      );
    }
    this.#options.onSessionEnd?.(summary);
  }
}
