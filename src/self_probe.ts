/**
 * A TLS listener's probe of itself (see `src/tls_listener.ts`): a TLS connection from loopback to
 * the listener's own address, recognised by its address when it arrives, never a session. It is
 * accepted when the listener sees it arrive (or closes it at once, past its cap), not accepted
 * when a second of the event loop's own time goes by without that, and unknown when it cannot
 * tell (the connect failed for a reason of the proxy's own, or the loop lagged so much that no
 * second of its own time went by).
 *
 * The probe completes its handshake before it closes: Deno 2.9.6's `node:tls` server keeps about
 * 20 KiB of memory for good for every connection that closes before its handshake (measured:
 * 12,000 such connections, 43 to 289 MiB), and none for one that completed it.
 *
 * @module
 */

import type net from "node:net";
import tls from "node:tls";
import { formatHostPort } from "./address.ts";

/** What a probe found: accepted, not accepted, or nothing (it could not tell). */
export type ProbeResult = "accepted" | "not accepted" | "unknown";

/** How often the probe's clock looks at the event loop. */
const TICK_MS = 100;

/** A tick later than this counts no time: the loop was busy, and an accept may be waiting. */
const TICK_LATE_MS = 50;

/** A probe waiting this many times its timeout without enough on-time ticks finds nothing. */
const GIVE_UP_FACTOR = 10;

/** How long a probe that was accepted may take to finish its handshake before it is closed. */
const HANDSHAKE_WAIT_MS = 2_000;

/** The probe under way. */
interface UnderWay {
  /** Its connection's local address, once connected. */
  key?: string;
  /** Connections that arrived before that: one of them may be the probe. */
  early: Map<string, object>;
  end(result: ProbeResult): void;
  socket: tls.TLSSocket;
}

/** Probes of one listener by itself, one at a time. */
export class SelfProbe {
  /** Where to connect; for `::`, loopback over IPv4 when the host has no `::1`. */
  #hostnames: string[];
  readonly #port: number;
  readonly #timeoutMs: number;
  #underWay: UnderWay | undefined;
  /** The listener's side of each probe's connection. */
  readonly #sockets = new WeakSet<object>();
  /** Why the last probe that could not connect failed, for the log. */
  lastFailure: string | undefined;
  /** Probe connections being closed after their handshake (or its wait). */
  readonly #closing = new Set<tls.TLSSocket>();

  /**
   * @param listen Where the listener listens (a wildcard address is probed on loopback).
   * @param timeoutMs How much of the event loop's own time a probe may wait to be accepted.
   */
  constructor(listen: { hostname: string; port: number }, timeoutMs: number) {
    this.#hostnames = probeHostnames(listen.hostname);
    this.#port = listen.port;
    this.#timeoutMs = timeoutMs;
  }

  /**
   * Tells the probe that a connection arrived at the listener: whether it is the probe's (then
   * it is remembered as such, for {@link isProbe}).
   */
  arrived(raw: net.Socket): boolean {
    const underWay = this.#underWay;
    if (underWay === undefined || raw.remoteAddress === undefined) return false;
    const peer = probeKey(raw.remoteAddress, raw.remotePort);
    if (underWay.key === undefined) {
      // The accept may come before the probe's own connect has returned its address.
      underWay.early.set(peer, raw);
      return false;
    }
    if (underWay.key !== peer) return false;
    this.#sockets.add(raw);
    underWay.end("accepted");
    return true;
  }

  /** Whether `socket` (the TCP connection under a TLS socket) is the listener's side of a probe. */
  isProbe(socket: object | undefined): boolean {
    return socket !== undefined && this.#sockets.has(socket);
  }

  /** Connects to the listener and finds out whether it accepts; see the module documentation. */
  async run(): Promise<ProbeResult> {
    const { promise, resolve } = Promise.withResolvers<ProbeResult>();
    this.lastFailure = undefined;
    const hostname = this.#hostnames[0];
    const socket = tls.connect({
      host: hostname,
      port: this.#port,
      rejectUnauthorized: false, // only the accept matters, not who answers
    });
    const underWay: UnderWay = { early: new Map(), end: resolve, socket };
    this.#underWay = underWay;
    let connected = false;
    let secure = false;
    socket.on("secureConnect", () => secure = true);
    socket.on("connect", () => {
      connected = true;
      if (socket.localAddress === undefined || socket.localPort === undefined) return;
      const key = probeKey(socket.localAddress, socket.localPort);
      underWay.key = key;
      const early = underWay.early.get(key);
      underWay.early.clear();
      if (early !== undefined) {
        this.#sockets.add(early);
        resolve("accepted");
      }
    });
    socket.on("error", (error: Error & { code?: string }) => {
      if (error.code === "ECONNREFUSED") resolve("not accepted"); // no socket listens there
      else resolve(connected ? "accepted" : "unknown"); // closed by the listener, or our own
      if (!connected) this.lastFailure = `${hostname}: ${error.message}`;
      // A host without `::1` (IPv6 off in a container): a wildcard `::` is reached over IPv4.
      if (!connected && UNREACHABLE.has(error.code ?? "") && this.#hostnames.length > 1) {
        this.#hostnames = this.#hostnames.slice(1);
      }
    });
    // Closed by the listener before it was seen: past its cap, the runtime closes at once.
    socket.on("close", () => resolve(connected ? "accepted" : "unknown"));
    const stopClock = onTimeClock(this.#timeoutMs, (onTime) => {
      resolve(onTime ? "not accepted" : "unknown");
    });
    const result = await promise;
    stopClock();
    if (this.#underWay === underWay) this.#underWay = undefined;
    this.#close(socket, secure);
    return result;
  }

  /** Ends the probe under way (it finds nothing) and closes every probe connection. */
  stop(): void {
    this.#underWay?.end("unknown");
    for (const socket of this.#closing) socket.destroy();
    this.#closing.clear();
  }

  /** Closes a probe's connection once its handshake is done, or after a bounded wait for it. */
  #close(socket: tls.TLSSocket, secure: boolean): void {
    if (socket.destroyed) return;
    if (secure) {
      socket.destroy();
      return;
    }
    this.#closing.add(socket);
    const done = () => {
      clearTimeout(timer);
      this.#closing.delete(socket);
      socket.destroy();
    };
    const timer = setTimeout(done, HANDSHAKE_WAIT_MS);
    socket.once("secureConnect", done);
    socket.once("close", done);
  }
}

/**
 * Counts the event loop's own time: calls `done(true)` once `ms` of ticks that ran on time have
 * gone by, then one more turn (for an accept that became ready meanwhile), or `done(false)`
 * after {@link GIVE_UP_FACTOR} times `ms` in all. A loop held up (a long task, a stall, a CPU
 * quota) counts nothing meanwhile, so that it is not taken for a listener that did not accept.
 *
 * @returns a function that stops it.
 */
export function onTimeClock(ms: number, done: (onTime: boolean) => void): () => void {
  const started = performance.now();
  let counted = 0;
  let expected = started + TICK_MS;
  let timer = setTimeout(tick, TICK_MS);
  function tick(): void {
    const now = performance.now();
    if (now - expected <= TICK_LATE_MS) counted += TICK_MS;
    if (counted >= ms) {
      timer = setTimeout(() => done(true), 0);
      return;
    }
    if (now - started >= GIVE_UP_FACTOR * ms) {
      done(false);
      return;
    }
    expected = now + Math.min(TICK_MS, ms - counted);
    timer = setTimeout(tick, expected - now);
  }
  return () => clearTimeout(timer);
}

/** Connect errors that say the address cannot be reached from here at all. */
const UNREACHABLE = new Set([
  "EADDRNOTAVAIL",
  "ENETUNREACH",
  "EAFNOSUPPORT",
  "EHOSTUNREACH",
  "EINVAL", // what Deno 2.9.6 reports for ::1 where the host has no ::1
]);

/**
 * Where to reach a listener bound to `hostname`, best first: loopback for a wildcard address
 * (for `::`, `::1`, then IPv4 loopback, which a dual-stack socket takes too).
 */
function probeHostnames(hostname: string): string[] {
  if (hostname === "0.0.0.0") return ["127.0.0.1"];
  if (hostname === "::" || hostname === "[::]") return ["::1", "127.0.0.1"];
  return [hostname];
}

/** A probe's address as both ends see it (an IPv4 address mapped to IPv6 taken as IPv4). */
function probeKey(address: string, port: number | undefined): string {
  const plain = address.startsWith("::ffff:") && address.includes(".") ? address.slice(7) : address;
  return formatHostPort({ hostname: plain, port: port ?? 0 });
}
