/**
 * The admin HTTP server: `/metrics` (Prometheus text), `/stats` (the same figures as JSON, with
 * the configuration), `/healthz` and `/readyz`, served by {@link Http1Server} (`src/http1.ts`)
 * in the proxy's own process.
 *
 * It knows nothing of the pool or the sessions: the caller gives functions that describe the
 * metric families ({@link AdminOptions.metrics}), the configuration and the readiness, and each
 * request calls them once. Handlers are synchronous: a request is answered with one string built
 * there and then, and never waits on anything, so the relay, which shares the thread, loses only
 * the time to build that string. A provider that throws gives a `500` with one line and is logged
 * (category `["tcp-pool-proxy", "admin"]`); the server keeps serving.
 *
 * Everything about it is bounded (see `src/http1.ts`): 16 connections at once, 5 s per
 * connection, an 8 KiB request head, one request per connection, and an accept that fails for
 * want of descriptors pauses and retries. `Deno.serve` was used before: it bounds neither the
 * connections nor their time (a silent connection stayed open past 130 s), and its accept loop
 * ended for good on the first "too many open files", leaving the proxy without its admin
 * endpoint until a restart. Still, bind the admin address to loopback or a management network
 * only, as one does with HAProxy's stats socket.
 *
 * ```ts ignore
 * import { startAdmin } from "./admin.ts";
 * import { counterFamily, processMetrics } from "./metrics.ts";
 *
 * let dials = 0;
 * const admin = startAdmin({
 *   listen: { hostname: "127.0.0.1", port: 0 },
 *   metrics: () => [counterFamily("tcp_pool_proxy_dials_total", "Upstream dials.", dials)],
 *   config: () => ({ pool: "reuse" }),
 *   readiness: () => ({ ready: true }),
 * });
 * // curl http://127.0.0.1:${admin.address.port}/metrics
 * await admin.shutdown();
 * ```
 *
 * @module
 */

import { formatHostPort, type HostPort } from "./address.ts";
import { describeError, describeListenError } from "./_io.ts";
import { type Http1Answer, type Http1Limits, type Http1Request, Http1Server } from "./http1.ts";
import { getProxyLogger, ThrottledWarning } from "./logging.ts";
import {
  exposition,
  EXPOSITION_CONTENT_TYPE,
  type MetricFamily,
  processMetrics,
  statsJson,
} from "./metrics.ts";

/** What `/readyz` answers: ready, or not with the reason in one line. */
export type Readiness = { ready: true } | { ready: false; reason: string };

/** Options for {@link startAdmin}. */
export interface AdminOptions {
  /** Where to listen; port 0 lets the system pick (see {@link AdminServer.address}). */
  listen: HostPort;
  /**
   * The metric families now; called once per request to `/metrics` and `/stats`, so both answer
   * from one list. Must be synchronous and cheap: read counters, build no text.
   */
  metrics: () => readonly MetricFamily[];
  /** The configuration shown as `config` in `/stats`; must be JSON-serialisable. Default `{}`. */
  config?: () => object;
  /** Whether the proxy is ready for clients (`/readyz`). Default: always ready. */
  readiness?: () => Readiness;
  /** Whether {@link processMetrics} are added after the caller's families. Default `true`. */
  processMetrics?: boolean;
  /** Bounds of the server (tests shorten them); see {@link Http1Limits}. */
  limits?: Partial<Http1Limits>;
}

/** A running admin server. */
export interface AdminServer {
  /** The address actually bound (port 0 resolved). */
  readonly address: HostPort;
  /**
   * Stops the server: stops listening and closes every admin connection at once (an answer not
   * yet taken by its client is dropped: none is ever more than one string). Resolves when the
   * server is finished; calling it again returns the same promise.
   */
  shutdown(): Promise<void>;
  /** For `await using`: {@link shutdown}. */
  [Symbol.asyncDispose](): Promise<void>;
}

/** The admin address could not be bound. Carries the address and the reason. */
export class AdminListenError extends Error {
  /** The address that was asked for. */
  readonly address: HostPort;

  /**
   * @param address The address asked for.
   * @param reason Why it failed, e.g. `address already in use`.
   */
  constructor(address: HostPort, reason: string, options?: ErrorOptions) {
    super(`cannot listen on ${formatHostPort(address)}: ${reason}`, options);
    this.name = "AdminListenError";
    this.address = address;
  }
}

/** The paths served; every other path is `404`. */
export const ADMIN_PATHS = ["/metrics", "/stats", "/healthz", "/readyz"] as const;

/** One of {@link ADMIN_PATHS}. */
export type AdminPath = typeof ADMIN_PATHS[number];

const TEXT = "text/plain; charset=utf-8";
const JSON_TYPE = "application/json";
/** At most one log line per this long for each failing provider, each with the count so far. */
const ERROR_LOG_INTERVAL_MS = 60_000;

function answer(status: number, contentType: string, body: string): Http1Answer {
  return { status, headers: { "content-type": contentType, "cache-control": "no-store" }, body };
}

/** `text` with every line break (and other control character) as a space: one line. */
function oneLine(text: string): string {
  // deno-lint-ignore no-control-regex
  return text.replace(/[\x00-\x1f\x7f]+/g, " ").trim();
}

/**
 * Starts the admin server on `options.listen`. Deno's "Listening on" line is not printed; one
 * `info` record says where it listens.
 *
 * @param options Where to listen and what to answer with; see {@link AdminOptions}.
 * @returns The running server, already accepting.
 * @throws {AdminListenError} when the address cannot be bound (in use, not local, no permission).
 */
export function startAdmin(options: AdminOptions): AdminServer {
  const log = getProxyLogger("admin");
  const withProcess = options.processMetrics ?? true;
  const failures = new Map<string, ThrottledWarning>();

  /** Logs a provider's failure: the first, then at most one per interval with the count. */
  const logFailure = (what: string, error: unknown) => {
    let throttle = failures.get(what);
    if (throttle === undefined) {
      failures.set(what, throttle = new ThrottledWarning(ERROR_LOG_INTERVAL_MS));
    }
    const count = throttle.note();
    if (count === undefined) return;
    log.error("{what} failed ({count} times so far), answered 500: {stack}", {
      what,
      count,
      stack: error instanceof Error ? (error.stack ?? `${error.name}: ${error.message}`) : error,
    });
  };

  const families = (): readonly MetricFamily[] => {
    const own = options.metrics();
    return withProcess ? [...own, ...processMetrics()] : own;
  };

  const routes: Record<AdminPath, { what: string; build: () => Http1Answer }> = {
    "/metrics": {
      what: "the metrics for /metrics",
      build: () => answer(200, EXPOSITION_CONTENT_TYPE, exposition(families())),
    },
    "/stats": {
      what: "the figures for /stats",
      build: () => {
        const metrics = statsJson(families());
        const config = options.config?.() ?? {};
        return answer(200, JSON_TYPE, `${JSON.stringify({ metrics, config }, null, 2)}\n`);
      },
    },
    "/healthz": { what: "/healthz", build: () => answer(200, TEXT, "ok\n") },
    "/readyz": {
      what: "the readiness for /readyz",
      build: () => {
        const readiness = options.readiness?.() ?? { ready: true };
        if (readiness.ready) return answer(200, TEXT, "ready\n");
        return answer(503, TEXT, `${oneLine(String(readiness.reason)) || "not ready"}\n`);
      },
    },
  };

  const respond = (request: Http1Request): Http1Answer => {
    if (!Object.hasOwn(routes, request.path)) return answer(404, TEXT, "not found\n");
    if (request.method !== "GET" && request.method !== "HEAD") {
      const refused = answer(405, TEXT, "method not allowed; use GET or HEAD\n");
      return { ...refused, headers: { ...refused.headers, allow: "GET, HEAD" } };
    }
    const route = routes[request.path as AdminPath];
    try {
      return route.build();
    } catch (error) {
      logFailure(route.what, error);
      return answer(500, TEXT, `${oneLine(`${route.what} failed: ${describeError(error)}`)}\n`);
    }
  };

  let listener: Deno.Listener;
  try {
    listener = Deno.listen({ hostname: options.listen.hostname, port: options.listen.port });
  } catch (error) {
    throw new AdminListenError(options.listen, describeListenError(error), { cause: error });
  }
  const server = new Http1Server(listener, respond, options.limits);
  const bound = listener.addr as Deno.NetAddr;
  const address: HostPort = { hostname: bound.hostname, port: bound.port };
  log.info("admin server on {address}: /metrics, /stats, /healthz, /readyz", {
    address: formatHostPort(address),
  });
  const shutdown = () => server.shutdown();
  return { address, shutdown, [Symbol.asyncDispose]: shutdown };
}
