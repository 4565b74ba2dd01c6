/**
 * A `node:tls` socket seen as the small part of a Deno socket that the relay uses ({@link ByteConn}:
 * `read` into the caller's buffer, `write`, `closeWrite`, `close`), so that a TLS connection is
 * pooled, read by its lifelong reader and relayed exactly as a TCP one is.
 *
 * Why `node:tls` and not `Deno.connectTls`/`Deno.startTls`: a Deno TLS connection whose handshake
 * is cut (a timeout, a shutdown) keeps its socket open until the peer closes it, because the
 * runtime's handshake task holds it; `destroy()` here closes it at once. It also takes a client
 * certificate, a server name apart from the address, TCP_NODELAY and a CA list that replaces the
 * root store, and its errors carry OpenSSL-style codes.
 *
 * What arrives is queued (the socket pushes it) until the next `read` takes it; past
 * {@link QUEUE_HIGH_WATER} bytes the socket is paused, so a slow reader holds at most that much
 * and the peer feels TCP backpressure. In Deno 2.9.6 `pause()` alone only stops the stream's
 * events: the runtime goes on reading the TCP socket and keeps the decrypted bytes, without bound.
 * So pausing also stops the reads of the TCP handle underneath (`readStop`, found by feature
 * detection); where a runtime has no such handle, nothing is paused and a peer that gets
 * {@link UNPAUSABLE_LIMIT} bytes ahead of its reader loses its connection instead.
 * Errors are mapped to the `Deno.errors` classes the relay already tells apart.
 *
 * @module
 */

import type { TLSSocket } from "node:tls";
import type { ClientConn } from "./_io.ts";
import { getProxyLogger } from "./logging.ts";

/** Queued bytes past which the socket is paused until `read` takes them. */
export const QUEUE_HIGH_WATER = 64 * 1024;

/** Queued bytes past which a socket that cannot be paused is closed with an error. */
export const UNPAUSABLE_LIMIT = 4 * 1024 * 1024;

/** Reads of the TCP handle under a `node:tls` socket, stopped and started (Deno's internals). */
interface TcpReads {
  readStop(): unknown;
  readStart(): unknown;
}

let warnedCannotPause = false;

/** Says once per process that TLS sockets cannot be paused here, and what that costs. */
function warnCannotPause(): void {
  if (warnedCannotPause) return;
  warnedCannotPause = true;
  getProxyLogger("tls").warn(
    "this runtime gives no way to stop a TLS socket's reads: a TLS peer more than {limit} bytes ahead of its reader loses its connection",
    { limit: UNPAUSABLE_LIMIT },
  );
}

/** The TCP handle under `socket`, when this runtime exposes one that can stop reading. */
function tcpReadsOf(socket: TLSSocket): TcpReads | undefined {
  const handle = (socket as unknown as { _handle?: { _nativeTcpHandle?: Partial<TcpReads> } })
    ._handle?._nativeTcpHandle;
  if (typeof handle?.readStop !== "function" || typeof handle.readStart !== "function") {
    return undefined;
  }
  return handle as TcpReads;
}

interface PendingRead {
  buffer: Uint8Array;
  resolve(n: number | null): void;
  reject(error: unknown): void;
}

/** A `node:tls` socket (connected, handshake done) with a Deno-style byte interface. */
export class SocketConn implements ClientConn {
  /** The peer's address, as it was when connected. */
  readonly remoteAddr: Deno.NetAddr;
  readonly #socket: TLSSocket;
  readonly #queue: Uint8Array[] = [];
  /** Bytes of `#queue[0]` already read. */
  #queueOffset = 0;
  #queued = 0;
  #paused = false;
  /** The TCP handle's reads, found at the first pause. */
  #tcpReads: TcpReads | undefined;
  #ended = false;
  #error: Error | undefined;
  #closed = false;
  /** Set while an end of stream (close_notify, FIN) is on its way out. */
  #ending = false;
  #pending: PendingRead | undefined;

  /** Takes over `socket`: from here on only this object reads it or listens to it. */
  constructor(socket: TLSSocket) {
    this.#socket = socket;
    this.remoteAddr = {
      transport: "tcp",
      hostname: socket.remoteAddress ?? "",
      port: socket.remotePort ?? 0,
    };
    socket.on("data", (chunk: Uint8Array) => {
      this.#queue.push(chunk);
      this.#queued += chunk.length;
      if (this.#queued >= QUEUE_HIGH_WATER && !this.#paused) this.#pause();
      this.#settle();
    });
    socket.on("end", () => {
      this.#ended = true;
      this.#settle();
    });
    socket.on("error", (error: Error) => {
      this.#error ??= denoError(error);
      this.#settle();
    });
    socket.on("close", () => {
      this.#ended = true;
      this.#settle();
    });
  }

  /** Turns Nagle's algorithm off (`true`, the default) or on. */
  setNoDelay(noDelay = true): void {
    this.#socket.setNoDelay(noDelay);
  }

  /**
   * Reads into `buffer` what has arrived, waiting for something if nothing has: the number of
   * bytes, or `null` at the peer's close. One read at a time.
   *
   * @throws {Deno.errors.Interrupted} when {@link close} was called; the socket's error otherwise.
   */
  read(buffer: Uint8Array): Promise<number | null> {
    if (this.#pending !== undefined) {
      return Promise.reject(new Deno.errors.Busy("a read is already pending on this connection"));
    }
    if (this.#closed) return Promise.reject(new Deno.errors.Interrupted("connection closed"));
    if (this.#queued > 0) return Promise.resolve(this.#take(buffer));
    if (this.#error !== undefined) return Promise.reject(this.#error);
    if (this.#ended) return Promise.resolve(null);
    return new Promise((resolve, reject) => {
      this.#pending = { buffer, resolve, reject };
    });
  }

  /**
   * Writes all of `bytes`; resolves once the socket has taken them (the caller may then reuse
   * `bytes`).
   */
  write(bytes: Uint8Array): Promise<number> {
    if (this.#closed) return Promise.reject(new Deno.errors.BadResource("connection closed"));
    return new Promise((resolve, reject) => {
      this.#socket.write(bytes, (error?: Error | null) => {
        if (error) reject(this.#closed ? new Deno.errors.Interrupted("closed") : denoError(error));
        else resolve(bytes.length);
      });
    });
  }

  /** Sends the end of the stream (close_notify, then FIN); reading goes on. */
  closeWrite(): Promise<void> {
    if (this.#closed) return Promise.reject(new Deno.errors.BadResource("connection closed"));
    this.#ending = true;
    return new Promise((resolve) => {
      this.#socket.end(() => {
        this.#ending = false;
        resolve();
      });
    });
  }

  /**
   * Closes the socket, as closing a TCP socket sends FIN: the end of stream (close_notify, FIN)
   * is sent if it was not, and the socket is destroyed right after (not waiting for a peer that
   * stopped reading). A pending read
   * rejects with `Interrupted`. Idempotent.
   */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    const socket = this.#socket;
    if (!socket.destroyed && (socket.writable || this.#ending)) {
      if (!this.#ending) socket.end();
      // end() hands the record to the socket at once; destroying in the same turn would drop it.
      queueMicrotask(() => socket.destroy());
    } else {
      socket.destroy();
    }
    this.#dropReads();
  }

  /**
   * Closes the socket without the end of stream a clean close sends (no close_notify, no FIN
   * first): the peer sees the stream cut, so an answer cut short is not taken for a complete one.
   * A pending read rejects with `Interrupted`. Idempotent.
   */
  abort(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#socket.destroy();
    this.#dropReads();
  }

  /** Once closed: what was read and not taken is dropped, and a pending read rejects. */
  #dropReads(): void {
    this.#queue.length = 0;
    this.#queued = 0;
    const pending = this.#pending;
    this.#pending = undefined;
    pending?.reject(new Deno.errors.Interrupted("connection closed"));
  }

  /** Stops reading the socket until `read` takes the queue down (see the module's comment). */
  #pause(): void {
    this.#tcpReads ??= tcpReadsOf(this.#socket);
    if (this.#tcpReads === undefined) {
      warnCannotPause();
      if (this.#queued > UNPAUSABLE_LIMIT && this.#error === undefined) {
        this.#error = new Deno.errors.InvalidData(
          `the peer sent more than ${UNPAUSABLE_LIMIT} bytes ahead of its reader (this runtime cannot pause a TLS socket)`,
        );
        this.#socket.destroy();
      }
      return;
    }
    this.#paused = true;
    this.#socket.pause();
    this.#tcpReads.readStop();
  }

  /** Answers the pending read, if any, from what has arrived or ended. */
  #settle(): void {
    const pending = this.#pending;
    if (pending === undefined) return;
    if (this.#queued > 0) {
      this.#pending = undefined;
      pending.resolve(this.#take(pending.buffer));
    } else if (this.#error !== undefined) {
      this.#pending = undefined;
      pending.reject(this.#error);
    } else if (this.#ended) {
      this.#pending = undefined;
      pending.resolve(null);
    }
  }

  /** Copies queued bytes into `buffer`, as many as fit. */
  #take(buffer: Uint8Array): number {
    let n = 0;
    while (n < buffer.length && this.#queue.length > 0) {
      const head = this.#queue[0];
      const part = head.subarray(this.#queueOffset, this.#queueOffset + buffer.length - n);
      buffer.set(part, n);
      n += part.length;
      this.#queueOffset += part.length;
      if (this.#queueOffset === head.length) {
        this.#queue.shift();
        this.#queueOffset = 0;
      }
    }
    this.#queued -= n;
    if (this.#paused && this.#queued < QUEUE_HIGH_WATER / 2) {
      this.#paused = false;
      this.#tcpReads?.readStart();
      this.#socket.resume();
    }
    return n;
  }
}

/** A `node:net`/`node:tls` error as the `Deno.errors` class the relay tells apart. */
export function denoError(error: Error & { code?: string }): Error {
  const make = ERROR_CLASSES[error.code ?? ""];
  if (make === undefined) return error;
  return new make(error.message, { cause: error });
}

const ERROR_CLASSES: Record<string, new (message: string, options?: ErrorOptions) => Error> = {
  ECONNRESET: Deno.errors.ConnectionReset,
  EPIPE: Deno.errors.BrokenPipe,
  ECONNREFUSED: Deno.errors.ConnectionRefused,
  ECONNABORTED: Deno.errors.ConnectionAborted,
  ETIMEDOUT: Deno.errors.TimedOut,
  ENOTCONN: Deno.errors.NotConnected,
};
