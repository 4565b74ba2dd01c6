/**
 * The admin HTTP server: `/metrics` (Prometheus text), `/stats` (the same figures as JSON, with
 * the configuration), `/healthz` and `/readyz`, served by `Deno.serve` in the proxy's own process.
 *
 * It knows nothing of the pool or the sessions: the caller gives functions that describe the
 * metric families ({@link AdminOptions.metrics}), the configuration and the readiness, and each
 * request calls them once. Handlers are synchronous: a request is parsed by Deno, answered with
 * one string built there and then, and never waits on anything, so the relay, which shares the
 * thread, loses only the time to build that string. A provider that throws gives a `500` with one
 * line and is logged (category `["tcp-pool-proxy", "admin"]`); the server keeps serving.
 *
 * What bounds the admin server, as measured with Deno 2.9.6 on Linux:
 *
 * - per connection: Deno reads a request head of at most about 64 KiB (a longer one gets `400`
 *   and the connection is closed); a request has no body worth reading (GET and HEAD only; others
 *   get `404`/`405` unread); an answer is one string of a few KiB; a client that pipelines
 *   requests without reading the answers stalls in the kernel's socket buffers, and Deno stops
 *   parsing its requests until it reads (backpressure), so it holds no more than that.
 * - NOT bounded by Deno 2.9.6: how many connections are open and for how long. `Deno.serve` has
 *   no connection limit, no header-read timeout and no keep-alive idle timeout (a silent or
 *   half-sent connection stayed open past 130 s), and ignores `Connection: close` in a response.
 *   Every open admin connection holds a file descriptor the proxy's sessions could use. So bind
 *   the admin address to loopback or a management network only (as one does with HAProxy's
 *   stats socket); {@link AdminServer.shutdown} closes every admin connection at once.
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

/** An answer before it becomes a `Response`. */
interface Answer {
  status: number;
  contentType: string;
  body: string;
  allow?: string;
}

function answer(status: number, contentType: string, body: string): Answer {
  return { status, contentType, body };
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

  const routes: Record<AdminPath, { what: string; build: () => Answer }> = {
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

  const respond = (request: Request): Answer => {
    const path = new URL(request.url).pathname;
    if (!Object.hasOwn(routes, path)) return answer(404, TEXT, "not found\n");
    if (request.method !== "GET" && request.method !== "HEAD") {
      return { ...answer(405, TEXT, "method not allowed; use GET or HEAD\n"), allow: "GET, HEAD" };
    }
    const route = routes[path as AdminPath];
    try {
      return route.build();
    } catch (error) {
      logFailure(route.what, error);
      return answer(500, TEXT, `${oneLine(`${route.what} failed: ${describeError(error)}`)}\n`);
    }
  };

  const handler = (request: Request): Response => {
    const { status, contentType, body, allow } = respond(request);
    const headers: Record<string, string> = {
      "content-type": contentType,
      "cache-control": "no-store",
    };
    if (allow !== undefined) headers.allow = allow;
    // For HEAD, Deno sends the headers (content-length included) and drops the body.
    return new Response(body, { status, headers });
  };

  const stop = new AbortController();
  let server: Deno.HttpServer<Deno.NetAddr>;
  try {
    server = Deno.serve({
      hostname: options.listen.hostname,
      port: options.listen.port,
      signal: stop.signal,
      onListen: () => {}, // no "Listening on ..." line on stdout
      onError: (error) => {
        // Not reached by the handler above, which catches its providers' errors; kept so that
        // a fault anywhere in answering is one logged line and a 500, never an uncaught error.
        logFailure("answering a request", error);
        return new Response("internal error\n", { status: 500, headers: { "content-type": TEXT } });
      },
    }, handler);
  } catch (error) {
    throw new AdminListenError(options.listen, describeListenError(error), { cause: error });
  }

  const address: HostPort = { hostname: server.addr.hostname, port: server.addr.port };
  log.info("admin server on {address}: /metrics, /stats, /healthz, /readyz", {
    address: formatHostPort(address),
  });

  let finished: Promise<void> | undefined;
  const shutdown = (): Promise<void> => {
    // Aborting, rather than server.shutdown(), closes every connection at once: a graceful
    // shutdown waits for a client that does not read its answer, for ever.
    if (finished === undefined) {
      stop.abort();
      finished = server.finished;
    }
    return finished;
  };
  return { address, shutdown, [Symbol.asyncDispose]: shutdown };
}
