/**
 * Test helpers with real sockets on loopback: upstream servers started by the test, a proxy
 * started in-process, and client reads bounded in time. No mocks of the network.
 *
 * @module
 */

import type { HostPort } from "../src/address.ts";
import { closeQuietly, writeAll } from "../src/_io.ts";
import { ProxyServer, type ProxyServerOptions } from "../src/proxy.ts";
import type { SessionSummary } from "../src/session.ts";
import type { LeaseHandlers } from "../src/upstream_conn.ts";

/** The product's own helpers, which the tests use too. */
export { closeQuietly, writeAll };

export const encoder = new TextEncoder();
export const decoder = new TextDecoder();

/** An upstream server run by a test; `handler` serves each accepted connection. */
export class TestUpstream {
  readonly address: HostPort;
  readonly conns: Deno.TcpConn[] = [];
  readonly #listener: Deno.TcpListener;
  readonly #handlers: Promise<void>[] = [];
  readonly #accepting: Promise<void>;

  constructor(
    handler: (conn: Deno.TcpConn, index: number) => Promise<void>,
    listen: HostPort = { hostname: "127.0.0.1", port: 0 },
  ) {
    const listener = Deno.listen({ ...listen, transport: "tcp" });
    this.#listener = listener;
    this.address = { hostname: listen.hostname, port: listener.addr.port };
    this.#accepting = (async () => {
      try {
        for await (const conn of listener) {
          const index = this.conns.length;
          this.conns.push(conn);
          this.#handlers.push(
            handler(conn, index).catch(() => {}).finally(() => closeQuietly(conn)),
          );
        }
      } catch {
        // listener closed
      }
    })();
  }

  /** Connections accepted so far. */
  get accepted(): number {
    return this.conns.length;
  }

  /** For `await using`: {@link close}. */
  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }

  /** Stops listening, closes every connection, waits for the handlers. */
  async close(): Promise<void> {
    closeQuietly(this.#listener);
    await this.#accepting;
    for (const conn of this.conns) closeQuietly(conn);
    await Promise.all(this.#handlers);
  }
}

/** Echoes every byte back until EOF, then closes. */
export async function echo(conn: Deno.TcpConn): Promise<void> {
  const buffer = new Uint8Array(64 * 1024);
  while (true) {
    const n = await conn.read(buffer);
    if (n === null) return;
    await writeAll(conn, buffer.subarray(0, n));
  }
}

/**
 * An upstream handler for tests of what happens after a first exchange: every connection echoes
 * its first read; then connection 0 runs `afterFirst` (the behaviour under test) and closes if it
 * returns `"close"`, and every connection keeps echoing otherwise.
 */
export function echoOnceThen(
  afterFirst: (conn: Deno.TcpConn, buffer: Uint8Array) => Promise<"close" | "echo">,
  bufferSize = 1024,
): (conn: Deno.TcpConn, index: number) => Promise<void> {
  return async (conn, index) => {
    const buffer = new Uint8Array(bufferSize);
    const n = await conn.read(buffer);
    if (n === null) return;
    await writeAll(conn, buffer.subarray(0, n));
    if (index === 0 && await afterFirst(conn, buffer) === "close") return;
    await echo(conn);
  };
}

/** Runs `fn`; if it takes longer than `ms`, closes `conn` so that a pending read ends. */
export async function within<T>(conn: Deno.Conn, ms: number, fn: () => Promise<T>): Promise<T> {
  let timedOut = false;
  const timer = setTimeout(() => {
    timedOut = true;
    closeQuietly(conn);
  }, ms);
  try {
    return await fn();
  } catch (error) {
    if (timedOut) throw new Error(`timed out after ${ms}ms`);
    throw error;
  } finally {
    clearTimeout(timer);
  }
}

/** Reads exactly `n` bytes; throws on EOF before that. */
export async function readExactly(conn: Deno.Conn, n: number): Promise<Uint8Array> {
  const out = new Uint8Array(n);
  let got = 0;
  while (got < n) {
    const r = await conn.read(out.subarray(got));
    if (r === null) throw new Error(`EOF after ${got} of ${n} bytes`);
    got += r;
  }
  return out;
}

/**
 * Sends `text` on `client`, shuts its write side (FIN), and reads the answer to the end, within
 * `ms`: a client that half-closes after its request and still waits for the answer.
 */
export function sendAndHalfClose(client: Deno.TcpConn, text: string, ms: number): Promise<string> {
  return within(client, ms, async () => {
    await writeAll(client, encoder.encode(text));
    await client.closeWrite();
    return decoder.decode(await readToEnd(client));
  });
}

/** Reads until EOF and returns everything read. */
export async function readToEnd(conn: Deno.Conn): Promise<Uint8Array> {
  const chunks: Uint8Array[] = [];
  const buffer = new Uint8Array(64 * 1024);
  let total = 0;
  while (true) {
    const n = await conn.read(buffer);
    if (n === null) break;
    chunks.push(buffer.slice(0, n));
    total += n;
  }
  const out = new Uint8Array(total);
  let offset = 0;
  for (const chunk of chunks) {
    out.set(chunk, offset);
    offset += chunk.length;
  }
  return out;
}

/** Connects to `address` (TCP_NODELAY on). */
export async function connect(address: HostPort): Promise<Deno.TcpConn> {
  const conn = await Deno.connect({ hostname: address.hostname, port: address.port });
  conn.setNoDelay(true);
  return conn;
}

/** Sends `text`, reads `text.length` bytes back, closes; returns what came back. */
export async function roundTrip(address: HostPort, text: string): Promise<string> {
  const conn = await connect(address);
  try {
    return await roundTripOn(conn, text);
  } finally {
    closeQuietly(conn);
  }
}

/** {@link roundTrip} on a connection already open, which stays open; within `ms`. */
export async function roundTripOn(conn: Deno.Conn, text: string, ms = 5_000): Promise<string> {
  return await within(conn, ms, async () => {
    const bytes = encoder.encode(text);
    await writeAll(conn, bytes);
    return decoder.decode(await readExactly(conn, bytes.length));
  });
}

/** Lease handlers that drop whatever the upstream sends: for tests that borrow from a pool directly. */
export const discardingLease: LeaseHandlers = {
  onLease() {},
  onUpstreamData: () => Promise.resolve(),
  onUpstreamEof() {},
  onUpstreamError() {},
};

/** Resolves after `ms`. */
export function delay(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** Polls `condition` every 5 ms until it holds; throws after `ms`. */
export async function eventually(
  condition: () => boolean,
  ms = 3_000,
  what = "condition",
): Promise<void> {
  const deadline = performance.now() + ms;
  while (!condition()) {
    if (performance.now() > deadline) throw new Error(`${what} did not hold within ${ms}ms`);
    await delay(5);
  }
}

/**
 * Runs two sessions through `address` that overlap: both connect and exchange "hi" with an echo
 * upstream before either closes, so two upstream connections are in use at once.
 */
export async function twoOverlappingSessions(address: HostPort): Promise<void> {
  const a = await connect(address);
  const b = await connect(address);
  try {
    for (const c of [a, b]) {
      await within(c, 2_000, async () => {
        await writeAll(c, encoder.encode("hi"));
        await readExactly(c, 2);
      });
    }
  } finally {
    closeQuietly(a);
    closeQuietly(b);
  }
}

/** A proxy started in-process for a test, with the summaries of finished sessions. */
export interface TestProxy {
  server: ProxyServer;
  address: HostPort;
  sessions: SessionSummary[];
  /** Waits until `n` sessions have finished. */
  sessionsEnded(n: number): Promise<void>;
  /** Shuts the proxy down (drain 1 s). */
  close(): Promise<void>;
  /** For `await using`: {@link close}. */
  [Symbol.asyncDispose](): Promise<void>;
}

/** The options of a test proxy: reuse, no min-idle, no settle time, `overrides` on top. */
function testProxyOptions(
  upstream: HostPort,
  overrides: Partial<ProxyServerOptions>,
  sessions: SessionSummary[],
): ProxyServerOptions {
  return {
    listen: { hostname: "127.0.0.1", port: 0 },
    upstream,
    pool: "reuse",
    poolSize: 100,
    minIdle: 0,
    idleTimeoutMs: 60_000,
    maxLifetimeMs: 0,
    connectTimeoutMs: 2_000,
    // Tests that reuse a connection right after a session; the settle time has tests of its own.
    reuseSettleMs: 0,
    ...overrides,
    onSessionEnd: (summary) => sessions.push(summary),
  };
}

function testProxy(server: ProxyServer, sessions: SessionSummary[]): TestProxy {
  return {
    server,
    address: server.address,
    sessions,
    sessionsEnded: (n) => eventually(() => sessions.length >= n, 5_000, `${n} sessions ended`),
    close: async () => {
      await server.shutdown(1_000);
    },
    [Symbol.asyncDispose]: async () => {
      await server.shutdown(1_000);
    },
  };
}

/**
 * Starts a proxy on 127.0.0.1:0 in front of `upstream`; defaults: reuse, no min-idle, no settle
 * time before a released connection is handed out again.
 */
export function startProxy(
  upstream: HostPort,
  overrides: Partial<ProxyServerOptions> = {},
): TestProxy {
  const sessions: SessionSummary[] = [];
  return testProxy(ProxyServer.listen(testProxyOptions(upstream, overrides, sessions)), sessions);
}

/** {@link startProxy} with a TLS listener (`--tls-cert`, `--tls-key`). */
export async function startTlsProxy(
  upstream: HostPort,
  tls: Parameters<typeof ProxyServer.listenTls>[1],
  overrides: Partial<ProxyServerOptions> = {},
): Promise<TestProxy> {
  const sessions: SessionSummary[] = [];
  const options = testProxyOptions(upstream, overrides, sessions);
  return testProxy(await ProxyServer.listenTls(options, tls), sessions);
}

export function patternBytes(length: number, seed = 1): Uint8Array {
  const out = new Uint8Array(length);
  let x = seed >>> 0 || 1;
  for (let i = 0; i < length; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    out[i] = x & 0xff;
  }
  return out;
}

/**
 * A listener with an accept backlog of 0: once one connection waits unaccepted in its queue, the
 * kernel drops further SYNs, so a connect hangs until the dialler gives up.
 */
export function listenWithoutBacklog(): { listener: Deno.TcpListener; address: HostPort } {
  const listener = Deno.listen({
    hostname: "127.0.0.1",
    port: 0,
    tcpBacklog: 0,
  } as Deno.TcpListenOptions);
  return { listener, address: { hostname: "127.0.0.1", port: listener.addr.port } };
}

/**
 * A listener that never accepts, with its backlog filled: a connect to it hangs (the kernel drops
 * the SYN) until the dialler gives up. For connect-timeout tests.
 */
export async function unresponsiveUpstream(): Promise<{ address: HostPort; close(): void }> {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const address = { hostname: "127.0.0.1", port: listener.addr.port };
  const fillers: Deno.TcpConn[] = [];
  const close = () => {
    for (const conn of fillers) closeQuietly(conn);
    closeQuietly(listener);
  };
  try {
    for (let i = 0; i < 5_000; i++) {
      const controller = new AbortController();
      const timer = setTimeout(() => controller.abort(), 200);
      try {
        fillers.push(await Deno.connect({ ...address, signal: controller.signal }));
      } catch {
        return { address, close }; // the backlog is full
      } finally {
        clearTimeout(timer);
      }
    }
  } catch (error) {
    close();
    throw error;
  }
  close();
  throw new Error("the backlog of a listener that never accepts did not fill");
}
