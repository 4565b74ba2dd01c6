/**
 * A small HTTP/1.1 server for the admin endpoint, bounded where `Deno.serve` (2.9.6) is not.
 *
 * - **Connections:** at most {@link Http1Limits.maxConnections} at once. One more makes room by
 *   closing the oldest connection answered and waiting for its client to close, or else the
 *   oldest one still waiting for its request head, so that silent connections cannot lock out a
 *   health check; if every one is being answered, the new one is closed at once. Either is
 *   logged at most once a minute.
 * - **Time:** each connection lives at most {@link Http1Limits.deadlineMs} from its accept: the
 *   request head read, the answer written, and the wait for the client to close after it.
 * - **Memory:** a request head is at most {@link Http1Limits.maxHeadBytes} (a longer one gets
 *   `431`); a body is never read. An answer is one string.
 * - **Descriptors:** an accept that fails (out of descriptors) pauses, 50 ms doubling to 1 s, and
 *   tries again, so the server outlives the moment. `Deno.serve`'s accept loop ends for good on
 *   the first such error, and its promise rejects.
 *
 * One request per connection (`Connection: close`): a scrape every few seconds costs one
 * connect on loopback, which is nothing next to its answer. After the answer, the server stops
 * writing and reads (and drops) whatever the client still sends until it closes, within the
 * deadline: closing with unread bytes would reset the connection and could lose the answer.
 *
 * ```ts ignore
 * import { Http1Server } from "./http1.ts";
 * const server = new Http1Server(Deno.listen({ hostname: "127.0.0.1", port: 0 }), (request) => ({
 *   status: 200,
 *   headers: { "content-type": "text/plain" },
 *   body: `${request.method} ${request.path}\n`,
 * }));
 * await server.shutdown();
 * ```
 *
 * @module
 */

import {
  AcceptFailures,
  closeQuietly,
  describeError,
  isGoneBeforeAccept,
  isOutOfDescriptors,
  WakeablePause,
  writeAll,
} from "./_io.ts";
import { getProxyLogger, ThrottledWarning } from "./logging.ts";

/** What the handler is told of a request: its method and its path (the query string dropped). */
export interface Http1Request {
  method: string;
  path: string;
}

/** An answer; `content-length` and `connection: close` are added, and the body dropped for HEAD. */
export interface Http1Answer {
  status: number;
  headers: Readonly<Record<string, string>>;
  body: string;
}

/** Answers a request, synchronously. A throw is logged and answered `500`. */
export type Http1Handler = (request: Http1Request) => Http1Answer;

/** The bounds of an {@link Http1Server}. */
export interface Http1Limits {
  /** Connections open at once. Default {@link HTTP1_MAX_CONNECTIONS}. */
  maxConnections: number;
  /** How long a connection may live, from its accept. Default {@link HTTP1_DEADLINE_MS}. */
  deadlineMs: number;
  /** The longest request head, in bytes. Default {@link HTTP1_MAX_HEAD_BYTES}. */
  maxHeadBytes: number;
}

/** Admin connections open at once; a Prometheus server and a few people need far fewer. */
export const HTTP1_MAX_CONNECTIONS = 16;
/** How long one admin connection may live. */
export const HTTP1_DEADLINE_MS = 5_000;
/** The longest request head read (curl, Prometheus and browsers send well under 1 KiB). */
export const HTTP1_MAX_HEAD_BYTES = 8 * 1024;
/** At most one warning per this long about refused connections. */
const WARNING_INTERVAL_MS = 60_000;

const REASONS: Readonly<Record<number, string>> = {
  200: "OK",
  400: "Bad Request",
  404: "Not Found",
  405: "Method Not Allowed",
  431: "Request Header Fields Too Large",
  500: "Internal Server Error",
  503: "Service Unavailable",
};

const encoder = new TextEncoder();
const decoder = new TextDecoder();
const CR = 0x0d;
const LF = 0x0a;
const REQUEST_LINE = /^([!#$%&'*+.^_`|~0-9A-Za-z-]+) (\S+) HTTP\/1\.[01]$/;

/** Where an open connection stands: the order {@link Http1Server} makes room in. */
interface Connection {
  phase: "head" | "answering" | "lingering";
}

/** A request head as read: the request, or why there is none worth answering normally. */
type HeadResult = Http1Request | "malformed" | "too large" | "closed";

/** See the module documentation. */
export class Http1Server {
  readonly #listener: Deno.Listener;
  readonly #handler: Http1Handler;
  readonly #limits: Http1Limits;
  readonly #log = getProxyLogger("admin");
  /** Open connections in accept order, with their task and whether their head is still awaited. */
  readonly #open = new Map<Deno.Conn, Connection>();
  /** Every connection's task, closed ones included until they are done (awaited at shutdown). */
  readonly #tasks = new Set<Promise<void>>();
  readonly #refusals = new ThrottledWarning(WARNING_INTERVAL_MS);
  readonly #accepting: Promise<void>;
  #stopping = false;
  readonly #pause = new WakeablePause();
  #finished: Promise<void> | undefined;

  /**
   * Starts serving `listener` (which the server then owns and closes).
   *
   * @param listener A bound TCP listener.
   * @param handler Answers each request.
   * @param limits Bounds; each defaults to the constant of the same name.
   */
  constructor(listener: Deno.Listener, handler: Http1Handler, limits: Partial<Http1Limits> = {}) {
    this.#listener = listener;
    this.#handler = handler;
    this.#limits = {
      maxConnections: limits.maxConnections ?? HTTP1_MAX_CONNECTIONS,
      deadlineMs: limits.deadlineMs ?? HTTP1_DEADLINE_MS,
      maxHeadBytes: limits.maxHeadBytes ?? HTTP1_MAX_HEAD_BYTES,
    };
    this.#accepting = this.#acceptLoop();
  }

  /**
   * Stops listening and closes every connection at once (an answer not yet taken is dropped).
   * Resolves when every task of the server is done; calling it again returns the same promise.
   */
  shutdown(): Promise<void> {
    if (this.#finished !== undefined) return this.#finished;
    this.#stopping = true;
    closeQuietly(this.#listener);
    this.#pause.wake();
    for (const conn of this.#open.keys()) closeQuietly(conn);
    this.#finished = (async () => {
      await this.#accepting;
      await Promise.all(this.#tasks);
    })();
    return this.#finished;
  }

  async #acceptLoop(): Promise<void> {
    const failures = new AcceptFailures();
    while (!this.#stopping) {
      let conn: Deno.Conn;
      try {
        conn = await this.#listener.accept();
      } catch (error) {
        if (this.#stopping) return;
        if (isGoneBeforeAccept(error)) continue;
        const { first, pauseMs, endedEpisodeMs } = failures.failed();
        if (endedEpisodeMs !== undefined) this.#logAcceptingAgain(endedEpisodeMs);
        if (first) {
          this.#log.warn("admin accept failed: {reason}; pausing accepts until it works", {
            reason: describeError(error),
            descriptors: isOutOfDescriptors(error),
          });
        }
        await this.#pause.wait(pauseMs);
        continue;
      }
      if (this.#stopping) { // accepted as the listener closed: shutdown has passed the open ones
        closeQuietly(conn);
        return;
      }
      const episodeMs = failures.succeeded();
      if (episodeMs !== undefined) this.#logAcceptingAgain(episodeMs);
      if (this.#open.size >= this.#limits.maxConnections && !this.#makeRoom()) {
        closeQuietly(conn);
        this.#noteRefusal("closed a new connection: every open one is being answered");
        continue;
      }
      const entry: Connection = { phase: "head" };
      this.#open.set(conn, entry);
      const task: Promise<void> = this.#serve(conn, entry).finally(() => {
        this.#open.delete(conn);
        this.#tasks.delete(task);
      });
      this.#tasks.add(task);
    }
  }

  #logAcceptingAgain(episodeMs: number): void {
    this.#log.info("admin server accepting again after {ms}ms", { ms: Math.round(episodeMs) });
  }

  /**
   * Closes the oldest connection answered and waiting for its client to close (its answer is
   * out: closing it costs the client nothing), or else the oldest one still waiting for its
   * request head; false when every one is being answered. Answered ones go first: a request
   * that has arrived but not yet been read looks the same as a silent one.
   */
  #makeRoom(): boolean {
    for (const phase of ["lingering", "head"] as const) {
      for (const [conn, entry] of this.#open) {
        if (entry.phase !== phase) continue;
        closeQuietly(conn);
        this.#open.delete(conn);
        this.#noteRefusal(
          phase === "head"
            ? "closed the oldest one still waiting for its request"
            : "closed the oldest one answered and not yet closed by its client",
        );
        return true;
      }
    }
    return false;
  }

  #noteRefusal(what: string): void {
    const count = this.#refusals.note();
    if (count === undefined) return;
    this.#log.warn("admin connections at the limit ({limit}): {what} ({count} so far)", {
      limit: this.#limits.maxConnections,
      what,
      count,
    });
  }

  /** Serves one request on `conn`, then closes it; never throws. */
  async #serve(conn: Deno.Conn, entry: Connection): Promise<void> {
    const deadline = setTimeout(() => closeQuietly(conn), this.#limits.deadlineMs);
    try {
      const head = await readHead(conn, this.#limits.maxHeadBytes);
      entry.phase = "answering";
      if (head === "closed") return;
      const answer = this.#answer(head);
      await writeAll(conn, encoder.encode(render(answer, head)));
      await conn.closeWrite();
      entry.phase = "lingering";
      // Lingering close: the client reads the answer, then closes; what it still sends is dropped.
      const sink = new Uint8Array(1024);
      while (await conn.read(sink) !== null) { /* dropped */ }
    } catch {
      // A reset, or the deadline or the shutdown closed the connection: nothing to answer.
    } finally {
      clearTimeout(deadline);
      closeQuietly(conn);
    }
  }

  #answer(head: Exclude<HeadResult, "closed">): Http1Answer {
    const plain = { "content-type": "text/plain; charset=utf-8" };
    if (head === "malformed") return { status: 400, headers: plain, body: "bad request\n" };
    if (head === "too large") {
      return { status: 431, headers: plain, body: "request head too large\n" };
    }
    try {
      return this.#handler(head);
    } catch (error) {
      this.#log.error("answering {method} {path} failed: {reason}", {
        ...head,
        reason: describeError(error),
      });
      return { status: 500, headers: plain, body: "internal error\n" };
    }
  }
}

/**
 * Reads a request head, up to the empty line that ends it, at most `maxBytes`; returns what its
 * request line asks. Lines end in CRLF or a bare LF, and empty lines before the request line are
 * ignored (RFC 9112, 2.2).
 */
async function readHead(conn: Deno.Conn, maxBytes: number): Promise<HeadResult> {
  const buffer = new Uint8Array(maxBytes);
  let length = 0;
  let scanned = 0;
  let lineStart = 0;
  let requestLine: string | undefined;
  while (true) {
    if (length === maxBytes) return "too large";
    const n = await conn.read(buffer.subarray(length));
    if (n === null) return "closed";
    length += n;
    for (; scanned < length; scanned++) {
      if (buffer[scanned] !== LF) continue;
      const end = scanned > lineStart && buffer[scanned - 1] === CR ? scanned - 1 : scanned;
      if (requestLine === undefined) {
        if (end > lineStart) requestLine = decoder.decode(buffer.subarray(lineStart, end));
      } else if (end === lineStart) {
        return parseRequestLine(requestLine);
      }
      lineStart = scanned + 1;
    }
  }
}

/** The method and path of a request line; a query string or an absolute form is reduced. */
function parseRequestLine(line: string): HeadResult {
  const match = REQUEST_LINE.exec(line);
  if (match === null) return "malformed";
  const [, method, target] = match;
  if (target.startsWith("/")) return { method, path: target.replace(/[?#].*$/s, "") };
  try {
    return { method, path: new URL(target).pathname };
  } catch {
    return "malformed";
  }
}

/** The whole answer as text: status line, headers, and the body unless the method was HEAD. */
function render(answer: Http1Answer, head: Exclude<HeadResult, "closed">): string {
  const reason = REASONS[answer.status] ?? "Status";
  let text = `HTTP/1.1 ${answer.status} ${reason}\r\n`;
  for (const [name, value] of Object.entries(answer.headers)) text += `${name}: ${value}\r\n`;
  text += `content-length: ${encoder.encode(answer.body).length}\r\nconnection: close\r\n\r\n`;
  const isHead = typeof head === "object" && head.method === "HEAD";
  return isHead ? text : text + answer.body;
}
