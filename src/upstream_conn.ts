/**
 * One upstream connection and its lifelong reader, after Go's `net/http` `persistConn`: the
 * connection owns the only reader of its socket for its whole life. While a session holds it
 * (a lease), what the reader reads goes to that session; while it is idle, any byte, EOF or
 * error means the upstream gave up on it, and it is discarded at once. An in-flight `read` cannot
 * be cancelled in Deno, so this is also the only way a connection can outlive one session without
 * a stray read swallowing the next session's bytes.
 *
 * One exception: bytes that arrive before the connection's first lease are the upstream's
 * greeting (MySQL, SMTP and other server-speaks-first protocols send one on connect). They are
 * kept (up to {@link GREETING_LIMIT}) and delivered to the first session, so a pre-dialled
 * connection is as good as a fresh dial for every protocol.
 *
 * @module
 */

import {
  type ByteConn,
  closeOrCut,
  isLocalInterruption,
  ReadBuffers,
  writeAll,
  writeConn,
} from "./_io.ts";
import { tlsAlertReason } from "./dial.ts";
import { reportUnexpected } from "./failsafe.ts";

/**
 * What the reader does with what it reads while a session holds the connection. A session
 * implements it as methods, so a lease allocates nothing.
 */
export interface LeaseHandlers {
  /**
   * The lease begins: called by {@link UpstreamConn.tryLease} before anything is delivered, so
   * the session knows its connection before the reader can report on it.
   */
  onLease(conn: UpstreamConn, fromPool: boolean): void;
  /** The borrower waited `ms` in the `--max-upstream` queue (called once the wait is over). */
  onQueued?(ms: number): void;
  /**
   * Takes bytes read from the upstream. The reader may read the next chunk into another buffer
   * meanwhile, but waits for the returned promise before it delivers again (backpressure, order)
   * and reuses `chunk`'s memory only after it. Must not reject.
   */
  onUpstreamData(conn: UpstreamConn, chunk: Uint8Array): Promise<void>;
  /** The upstream sent FIN. */
  onUpstreamEof(conn: UpstreamConn): void;
  /** A read failed with a real error (never our own interruption). */
  onUpstreamError(conn: UpstreamConn, error: unknown): void;
}

/** Why an idle connection was dropped by its own reader. */
export type IdleLossReason =
  | "closed by upstream"
  | "error while idle"
  | "bytes while idle"
  | "greeting too large";

/** Most bytes kept from an upstream that speaks before its connection's first lease. */
export const GREETING_LIMIT = 64 * 1024;
/** Most chunks a greeting is kept in (a copy each): one sent a byte at a time is cut there. */
export const GREETING_MAX_CHUNKS = 256;

/** What the owner of a connection (the pool) hears from it. */
export interface ConnHooks {
  /** The connection closed, by whatever path; called once. */
  onClosed(conn: UpstreamConn): void;
  /** The idle reader noticed the connection died (it is closed already). */
  onIdleLoss(conn: UpstreamConn, reason: IdleLossReason): void;
}

/** Life-cycle state of an {@link UpstreamConn}. */
export type UpstreamConnState = "idle" | "leased" | "closed";

let nextId = 1;

/** An upstream TCP connection with its lifelong reader. Created by the pool's dialer. */
export class UpstreamConn {
  /** Process-unique number, for logs. */
  readonly id: number = nextId++;
  /** The socket (TCP, or TLS over it). Only this class reads it. */
  readonly conn: ByteConn;
  /** `performance.now()` when it was connected. */
  readonly createdAt: number = performance.now();
  /** `performance.now()` when the dial that made it started (set by its pool). */
  dialStartedAt: number = this.createdAt;
  /** `performance.now()` when it last became idle. */
  idleSince: number = this.createdAt;
  /** Sessions that have held it. */
  leases = 0;
  /** Whether the last read filled its buffer, so more bytes were probably waiting ({@link ReadBuffers.lastReadFilled}). */
  lastReadFilled = false;
  /** Whether a session ever received a byte from it: the upstream served it. */
  answered = false;
  /**
   * Whether a byte came from the upstream after a client byte was written to it: it answered a
   * request (a greeting sent at accept, before anything was asked, is no answer).
   */
  answeredARequest = false;
  /**
   * Whether the upstream sent a byte before anything was written to the connection: a greeting
   * (MySQL, SMTP), or the start of something that is not an answer. (The session's own rule,
   * "spoke first", is before any client byte was read; this one is the connection's.)
   */
  spokeBeforeWrite = false;
  /** Set once anything made it unfit to reuse: a real error, a half-close, unread bytes. */
  unfitReason: string | undefined;
  /**
   * Whether the pool's opening check was sent on it before its first lease (memcached
   * `version`): it has spoken, so a client that needs a connection that never did (memcached's
   * binary protocol) must be given another.
   */
  checked = false;
  /**
   * Set when the connection may serve one session only, with the reason (it asked for a login,
   * or was dialled without the opening check): its release closes it.
   */
  oneSessionOnly: string | undefined;
  /**
   * Set once the upstream's side ended it (`closed by upstream`, `read failed`, `write failed`),
   * whatever made it unfit first: a server that greets and then closes is not serving. The
   * upstream's FIN after ours (a passed-on half-close) is its answer to us, not this.
   */
  lostToUpstream: string | undefined;
  /**
   * Set when the first thing read was a fatal TLS alert (a TLS 1.3 server refusing the client
   * certificate after the handshake): the reason, as a failed handshake's. The pool counts it as
   * a failed dial (`tls`), not as a session's server error.
   */
  handshakeRefused: string | undefined;
  /** Set once this connection's loss was counted as a failed dial, so that it is counted once. */
  dialFailureCounted = false;
  #finSent = false;
  #wrote = false;
  /**
   * `performance.now()` past which it is not reused (`--max-lifetime`, shortened by a little
   * jitter so that connections dialled together do not retire together); `Infinity` for none.
   */
  retireAt = Infinity;

  #state: UpstreamConnState = "idle";
  #lease: LeaseHandlers | undefined;
  #delivering: Promise<void> | undefined;
  #greeting: Uint8Array[] = [];
  #greetingBytes = 0;
  #greetingDelivery: Promise<void> | undefined;
  /** Set while writes are held ({@link holdWrites}), with what ends the hold early. */
  #writesHeld: Promise<void> | undefined;
  #releaseWrites: (() => void) | undefined;
  readonly #hooks: ConnHooks | undefined;
  #readLoopDone: Promise<void>;

  /**
   * Wraps a connected socket and starts its reader; the connection starts idle. `hooks` tell its
   * owner when it closes (once, by whatever path) and when its idle reader lost it.
   */
  constructor(conn: ByteConn, hooks?: ConnHooks) {
    this.conn = conn;
    this.#hooks = hooks;
    this.#readLoopDone = this.#readLoop();
  }

  /** Current state. */
  get state(): UpstreamConnState {
    return this.#state;
  }

  /** Resolves when the reader has stopped (after {@link close}, EOF or an error). */
  get readerDone(): Promise<void> {
    return this.#readLoopDone;
  }

  /** Milliseconds since connected. */
  age(now: number = performance.now()): number {
    return now - this.createdAt;
  }

  /**
   * The first line of the greeting the upstream sent before any lease (up to 80 characters,
   * control characters escaped), for log lines about connections the upstream refused
   * (`-ERR max number of clients reached`); empty when it sent none.
   */
  greetingPreview(): string {
    const first = this.#greeting[0];
    if (first === undefined) return "";
    const text = new TextDecoder().decode(first.subarray(0, 120)).split(/\r?\n/)[0];
    return JSON.stringify(text.length > 80 ? `${text.slice(0, 80)}...` : text);
  }

  /**
   * Hands the connection to a session, if it is idle and fit; otherwise (the upstream closed it
   * or sent something since it was taken) leaves it alone and returns false. Taking and leasing
   * happen in the same tick, so a connection the reader has just lost is never handed out.
   * `fromPool` tells the session whether it sat idle in the pool (passed on to `onLease`).
   */
  tryLease(handlers: LeaseHandlers, fromPool: boolean): boolean {
    if (this.#state !== "idle" || this.unfitReason !== undefined) return false;
    this.#state = "leased";
    this.#lease = handlers;
    this.leases++;
    handlers.onLease(this, fromPool);
    if (this.#greeting.length > 0) {
      const greeting = this.#greeting;
      this.#greeting = [];
      this.#greetingDelivery = (async () => {
        for (const part of greeting) await handlers.onUpstreamData(this, part);
        this.#greetingDelivery = undefined;
      })();
    }
    return true;
  }

  /**
   * Ends the lease: waits until a delivery to the session in flight has finished, then the
   * connection is idle again (a byte read from now on makes it unfit) unless it is closed.
   * Whether it goes back to the pool is the pool's decision.
   */
  async endLease(): Promise<void> {
    this.#lease = undefined;
    // A delivery that failed was reported by the reader, which also told the session.
    if (this.#greetingDelivery !== undefined) await this.#greetingDelivery.catch(() => {});
    if (this.#delivering !== undefined) await this.#delivering.catch(() => {});
    if (this.#state === "leased") {
      this.#state = "idle";
      this.idleSince = performance.now();
    }
  }

  /**
   * Holds every write until `until` settles (the pool's greeting watch, `src/greeting.ts`): the
   * connection is leased and relays what the upstream sends meanwhile, but no client byte goes
   * to it yet. `until` must not reject.
   */
  holdWrites(until: Promise<void>): void {
    const { promise, resolve } = Promise.withResolvers<void>();
    // Closing the connection lets a held write go at once (to fail): its session is not kept.
    this.#releaseWrites = resolve;
    until.catch((error) => reportUnexpected("a held write's watch", error)).finally(resolve);
    const held: Promise<void> = promise.then(() => {
      if (this.#writesHeld === held) {
        this.#writesHeld = undefined;
        this.#releaseWrites = undefined;
      }
    });
    this.#writesHeld = held;
  }

  /** Writes all of `chunk` upstream. A failure marks the connection unfit and is rethrown. */
  async write(chunk: Uint8Array): Promise<void> {
    // Bytes that come while the first write is held are no answer: the upstream spoke first.
    if (this.#writesHeld !== undefined) await this.#writesHeld;
    this.#wrote = true;
    try {
      // One write nearly always takes the whole chunk; writeAll (an async frame more) is for the
      // rest of a short one.
      const written = await writeConn(this.conn, chunk);
      if (written < chunk.length) await writeAll(this.conn, chunk.subarray(written));
    } catch (error) {
      // Our own close cutting a write says nothing about the upstream.
      if (!(this.#state === "closed" && isLocalInterruption(error))) {
        this.unfitReason ??= "write failed";
        this.lostToUpstream ??= "write failed";
      }
      throw error;
    }
  }

  /** Sends FIN upstream (half-close); the connection can no longer be reused. */
  async closeWrite(): Promise<void> {
    this.unfitReason ??= "half-closed";
    this.#finSent = true;
    await this.conn.closeWrite();
  }

  /** Closes the socket; the reader stops. Safe to call more than once. */
  close(): void {
    this.#shut(false);
  }

  /**
   * Closes the socket without the clean end of stream where the socket can tell (over TLS, no
   * close_notify), after a session that may have cut its request short: the upstream then sees
   * a cut stream, not a complete request. Plain TCP has only its FIN, as {@link close}. Safe to
   * call more than once, and after {@link close} (then it does nothing).
   */
  abort(): void {
    this.#shut(true);
  }

  #shut(cut: boolean): void {
    if (this.#state === "closed") return;
    this.#state = "closed";
    this.#lease = undefined;
    closeOrCut(this.conn, cut);
    this.#releaseWrites?.();
    this.#hooks?.onClosed(this); // once: the state is closed from here on
  }

  /**
   * The one reader of the socket, for the connection's whole life. A bug in it costs this
   * connection, never the process: it has no owner to throw to.
   */
  async #readLoop(): Promise<void> {
    const buffers = new ReadBuffers();
    try {
      while (true) {
        let chunk: Uint8Array | null;
        let readError: unknown;
        try {
          // next() is the socket's own read: an idle connection's pending read holds nothing more.
          const n = await buffers.next(this.conn);
          chunk = n === null || n === 0
            ? null // the end of the stream
            : buffers.chunk(n) ?? await buffers.readRest(this.conn);
        } catch (error) {
          chunk = null;
          readError = error ?? new Error("read failed");
        }
        // As things stood when the read returned, not once the deliveries below are done.
        const afterWrite = this.#wrote;
        const afterFin = this.#finSent;
        // Whatever comes next follows the greeting and the chunk still being delivered.
        if (this.#greetingDelivery !== undefined) await this.#greetingDelivery;
        if (this.#delivering !== undefined) {
          await this.#delivering;
          this.#delivering = undefined;
        }
        if (readError !== undefined) {
          if (this.#state === "closed" && isLocalInterruption(readError)) return;
          // A TLS alert before the upstream sent a byte: the handshake was refused after all.
          const refused = this.spokeBeforeWrite || this.answered || this.checked
            ? undefined // the upstream spoke: the handshake had been accepted
            : tlsAlertReason(readError);
          if (refused !== undefined) this.handshakeRefused = refused;
          this.unfitReason ??= "read failed";
          this.lostToUpstream ??= refused ?? "read failed";
          this.#readEnded("error while idle", (lease) => lease.onUpstreamError(this, readError));
          return;
        }
        if (chunk === null) {
          this.unfitReason ??= "closed by upstream";
          if (!afterFin) this.lostToUpstream ??= "closed by upstream";
          this.#readEnded("closed by upstream", (lease) => lease.onUpstreamEof(this));
          return;
        }
        if (this.checked && !afterWrite) {
          // More than the opening check's one reply line, before any request: it must reach no
          // client (no greeting follows a reply), and the upstream is not what the check took.
          const error = new Error("bytes after the answer to the opening check");
          this.unfitReason ??= "bytes after the opening check";
          this.lostToUpstream ??= "bytes after the opening check";
          this.#readEnded("bytes while idle", (lease) => lease.onUpstreamError(this, error));
          return;
        }
        if (!afterWrite) this.spokeBeforeWrite = true;
        if (this.#lease === undefined && this.leases === 0 && this.#state === "idle") {
          this.#greetingBytes += chunk.length;
          if (
            this.#greetingBytes <= GREETING_LIMIT && this.#greeting.length < GREETING_MAX_CHUNKS
          ) {
            this.#greeting.push(chunk.slice());
            buffers.rotate(chunk.length); // copied: nothing writes it
            continue;
          }
          this.unfitReason ??= "greeting too large";
          this.#readEnded("greeting too large", undefined);
          return;
        }
        const lease = this.#lease;
        if (lease === undefined) {
          // Between sessions, or after the session's client left: never deliver these bytes.
          this.unfitReason ??= "bytes while idle";
          this.#readEnded("bytes while idle", undefined);
          return;
        }
        this.lastReadFilled = buffers.lastReadFilled;
        this.answered = true;
        if (afterWrite) this.answeredARequest = true;
        this.#delivering = lease.onUpstreamData(this, chunk);
        if (buffers.rotate(chunk.length)) {
          await this.#delivering;
          this.#delivering = undefined;
        }
      }
    } catch (error) {
      // A bug, not the network: the connection is dropped, and its session told, so that it
      // ends now instead of waiting for an answer that cannot come.
      reportUnexpected(`the reader of upstream connection #${this.id}`, error);
      this.unfitReason ??= "internal error";
      const lease = this.#lease;
      this.abort(); // a request may be cut short: no clean end of stream
      try {
        lease?.onUpstreamError(this, error);
      } catch (handlerError) {
        reportUnexpected(`the lease of upstream connection #${this.id}`, handlerError);
      }
    } finally {
      buffers.dispose();
    }
  }

  #readEnded(idleReason: IdleLossReason, toLease: ((lease: LeaseHandlers) => void) | undefined) {
    const lease = this.#lease;
    if (lease !== undefined && toLease !== undefined) {
      toLease(lease);
      return;
    }
    if (this.#state === "idle") {
      this.close();
      this.#hooks?.onIdleLoss(this, idleReason);
    }
  }
}

/**
 * Whether a session's connection shows the upstream serves: it answered a request (bytes after a
 * client byte was written), and the upstream did not end it on its own (its FIN in reply to ours
 * is fine). A greeting sent at accept and a close, as a server at its client limit does, is not
 * proof; neither is a reset, which such a server sends when a request was already on its way.
 */
export function provesService(conn: UpstreamConn): boolean {
  return conn.answeredARequest && conn.lostToUpstream === undefined;
}
