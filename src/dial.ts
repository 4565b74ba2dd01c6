/**
 * Dialling the upstream with a bounded connect time. A connect that times out or is abandoned is
 * aborted through `Deno.connect`'s signal, so no late socket is left behind.
 *
 * @module
 */

import { formatHostPort, type HostPort } from "./address.ts";
import { describeError } from "./_io.ts";

/** Why a dial failed. */
export type ConnectFailure = "timeout" | "refused" | "aborted" | "closed" | "error";

/** A dial to the upstream failed. Carries the address and the reason. */
export class UpstreamConnectError extends Error {
  /** The upstream that was dialled. */
  readonly address: HostPort;
  /** What went wrong, in one word. */
  readonly failure: ConnectFailure;

  constructor(address: HostPort, failure: ConnectFailure, detail: string, options?: ErrorOptions) {
    super(`connect to upstream ${formatHostPort(address)} failed: ${detail}`, options);
    this.name = "UpstreamConnectError";
    this.address = address;
    this.failure = failure;
  }
}

/**
 * The abort reason of a dial's own timeout, told apart from the caller's by identity. It never
 * leaves {@link dialUpstream}: a timeout is reported as an {@link UpstreamConnectError}.
 */
const CONNECT_TIMEOUT = new Error("connect timeout");

/**
 * Connects to `address` with TCP_NODELAY set, giving up after `timeoutMs` or when any of
 * `signals` aborts (without `AbortSignal.any`, which would cost a signal per dial).
 *
 * @throws {UpstreamConnectError} with `failure` `"timeout"`, `"refused"`, `"aborted"` or
 * `"error"` (the pool adds `"closed"`: connected, but closed by the upstream before first use).
 */
export async function dialUpstream(
  address: HostPort,
  timeoutMs: number,
  ...signals: AbortSignal[]
): Promise<Deno.TcpConn> {
  const controller = new AbortController();
  const timer = setTimeout(() => controller.abort(CONNECT_TIMEOUT), timeoutMs);
  const onOuterAbort = (event: Event) => controller.abort((event.target as AbortSignal).reason);
  for (const signal of signals) signal.addEventListener("abort", onOuterAbort, { once: true });
  try {
    for (const signal of signals) signal.throwIfAborted();
    const conn = await Deno.connect({
      hostname: address.hostname,
      port: address.port,
      transport: "tcp",
      signal: controller.signal,
    });
    try {
      conn.setNoDelay(true);
    } catch (error) {
      conn.close();
      throw error;
    }
    return conn;
  } catch (error) {
    if (controller.signal.aborted && controller.signal.reason === CONNECT_TIMEOUT) {
      throw new UpstreamConnectError(address, "timeout", `timed out after ${timeoutMs}ms`);
    }
    if (controller.signal.aborted || signals.some((signal) => signal.aborted)) {
      throw new UpstreamConnectError(address, "aborted", "aborted", { cause: error });
    }
    const failure = error instanceof Deno.errors.ConnectionRefused ? "refused" : "error";
    throw new UpstreamConnectError(address, failure, describeError(error), { cause: error });
  } finally {
    clearTimeout(timer);
    for (const signal of signals) signal.removeEventListener("abort", onOuterAbort);
  }
}
