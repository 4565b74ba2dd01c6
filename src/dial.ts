/**
 * Dialling the upstream with a bounded connect time, in plain TCP or TLS. A plain connect that
 * times out or is abandoned is aborted through `Deno.connect`'s signal, so no late socket is left
 * behind. A TLS dial goes through `node:tls` (see `socket_conn.ts` for why): TCP_NODELAY, the name
 * to verify and send as SNI (none for an IP address), the CA list and client certificate of the
 * current {@link UpstreamTls} context; the handshake completes before the connection is returned,
 * and a dial cut by its deadline or an abort is destroyed at once, socket and all.
 *
 * @module
 */

import tls from "node:tls";
import { isIP } from "node:net";
import { formatHostPort, type HostPort } from "./address.ts";
import { type ByteConn, describeError, isOutOfDescriptors } from "./_io.ts";
import { anyAborted, onAnyAbort } from "./abort.ts";
import { denoError, SocketConn } from "./socket_conn.ts";

/**
 * Why a dial failed; `tls`: the TLS handshake failed (the reason names what); `descriptors`:
 * this process is out of file descriptors, which is no fault of the upstream's.
 */
export type ConnectFailure =
  | "timeout"
  | "refused"
  | "aborted"
  | "closed"
  | "tls"
  | "descriptors"
  | "error";

/** TLS to the upstream (`--upstream-tls`). */
export interface UpstreamTls {
  /**
   * The name the upstream's certificate must be valid for, sent as SNI (`--upstream-sni`);
   * default its host (for an IP address: no SNI, and the certificate must name that address).
   */
  serverName?: string;
  /**
   * The CA list and client certificate for new connections (`--upstream-ca`,
   * `--upstream-cert`, `--upstream-key`); a reload replaces it, connections made before keep theirs.
   */
  secureContext(): tls.SecureContext;
  /** Calls `listener` after each reload of the files behind the context, if they can change. */
  onReload?(listener: () => void): void;
}

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
 * Connects to `address` with TCP_NODELAY set, and with `tls` completes a TLS handshake, giving up
 * after `timeoutMs` (connect and handshake together) or when any of `signals` aborts (without
 * `AbortSignal.any`, which would cost a signal per dial).
 *
 * @throws {UpstreamConnectError} with `failure` `"timeout"`, `"refused"`, `"aborted"`, `"tls"`
 * or `"error"` (the pool adds `"closed"`: connected, but closed by the upstream before first use).
 */
export function dialUpstream(
  address: HostPort,
  timeoutMs: number,
  upstreamTls: UpstreamTls | undefined,
  ...signals: AbortSignal[]
): Promise<ByteConn> {
  if (upstreamTls === undefined) return dialTcp(address, timeoutMs, signals);
  return dialTls(address, timeoutMs, upstreamTls, signals);
}

/** A TLS dial through `node:tls`; settles once, and leaves no socket behind when it fails. */
function dialTls(
  address: HostPort,
  timeoutMs: number,
  upstreamTls: UpstreamTls,
  signals: AbortSignal[],
): Promise<ByteConn> {
  const ip = isIP(address.hostname) !== 0;
  const serverName = upstreamTls.serverName ?? address.hostname;
  return new Promise<ByteConn>((resolve, reject) => {
    if (anyAborted(signals)) {
      reject(new UpstreamConnectError(address, "aborted", "aborted"));
      return;
    }
    let tcpConnected = false;
    let settled = false;
    const options: tls.ConnectionOptions & { allowHalfOpen: boolean } = {
      host: address.hostname,
      port: address.port,
      // Verified against the SNI name when there is one, else against the address.
      servername: upstreamTls.serverName ?? (ip ? undefined : address.hostname),
      secureContext: upstreamTls.secureContext(),
      rejectUnauthorized: true,
      allowHalfOpen: true, // the upstream's FIN ends its direction only, as over plain TCP
    };
    const socket = tls.connect(options);
    socket.setNoDelay(true);
    const finish = (error: UpstreamConnectError | undefined) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      stopWatching();
      socket.off("connect", onConnect);
      socket.off("secureConnect", onSecure);
      socket.off("error", onError);
      socket.off("close", onClose);
      if (error === undefined) {
        resolve(new SocketConn(socket)); // adds its own listeners, an error one among them
        return;
      }
      socket.on("error", () => {}); // destroyed: whatever it still reports has no reader
      socket.destroy();
      reject(error);
    };
    const onConnect = () => tcpConnected = true;
    const onSecure = () => finish(undefined);
    const onError = (error: Error & { code?: string }) => {
      if (!tcpConnected) {
        finish(connectError(address, denoError(error), error));
        return;
      }
      finish(
        new UpstreamConnectError(address, "tls", tlsReason(error, serverName), { cause: error }),
      );
    };
    const onClose = () =>
      finish(
        new UpstreamConnectError(
          address,
          "tls",
          "TLS: the upstream closed the connection during the handshake (not a TLS server?)",
        ),
      );
    const abort = () => finish(new UpstreamConnectError(address, "aborted", "aborted"));
    const timer = setTimeout(
      () =>
        finish(
          new UpstreamConnectError(
            address,
            "timeout",
            `timed out after ${timeoutMs}ms (${tcpConnected ? "TLS handshake" : "TCP connect"})`,
          ),
        ),
      timeoutMs,
    );
    socket.on("connect", onConnect);
    socket.on("secureConnect", onSecure);
    socket.on("error", onError);
    socket.on("close", onClose);
    const stopWatching = onAnyAbort(signals, abort);
  });
}

/**
 * The `node:tls` codes of the alerts by which a server refuses our certificate. Not
 * `..._ALERT_HANDSHAKE_FAILURE`: Deno 2.9.6's `node:tls` gives that code to every TLS error
 * without one of its own (a corrupt record, an alert it does not name), which is no refusal.
 */
const REFUSAL_ALERT =
  /^ERR_SSL_(?:SSLV3|TLSV1|TLSV13)_ALERT_(?:CERTIFICATE_|BAD_CERTIFICATE|UNSUPPORTED_CERTIFICATE|UNKNOWN_CA)/;

/**
 * The reason, as for a failed handshake, when `error` is a fatal TLS alert by which the upstream
 * refuses our certificate (`ERR_SSL_TLSV13_ALERT_CERTIFICATE_REQUIRED`,
 * `ERR_SSL_TLSV1_ALERT_UNKNOWN_CA`, ...); `undefined` for any other error. In TLS 1.3 the server
 * checks a client certificate after the handshake has completed on the client's side, so its
 * refusal arrives as the first read's error.
 */
export function tlsAlertReason(error: unknown): string | undefined {
  const code = (error as { code?: unknown } | null)?.code;
  if (typeof code !== "string" || !REFUSAL_ALERT.test(code)) return undefined;
  return tlsReason(error as Error & { code: string }, "");
}

/**
 * One line for a failed handshake, from the code `node:tls` gives it, e.g.
 * `TLS: certificate is not valid for "cache.internal"`.
 */
function tlsReason(error: Error & { code?: string }, serverName: string): string {
  switch (error.code) {
    case "ERR_TLS_CERT_ALTNAME_INVALID":
      return `TLS: certificate is not valid for ${JSON.stringify(serverName)} (${error.message})`;
    case "UNABLE_TO_VERIFY_LEAF_SIGNATURE":
    case "UNABLE_TO_GET_ISSUER_CERT_LOCALLY":
    case "SELF_SIGNED_CERT_IN_CHAIN":
    case "DEPTH_ZERO_SELF_SIGNED_CERT":
    case "CERT_HAS_EXPIRED":
    case "CERT_NOT_YET_VALID":
      // The runtime gives one code for an unknown issuer and for a certificate out of its dates.
      return `TLS: certificate not trusted: not issued by a trusted CA (--upstream-ca), or expired, or not yet valid (${error.code})`;
    case "ERR_SSL_WRONG_VERSION_NUMBER":
      return `TLS: the upstream does not speak TLS (a plaintext server?): ${error.message}`;
    case "ERR_SSL_TLSV13_ALERT_CERTIFICATE_REQUIRED":
      return "TLS: the upstream requires a client certificate (--upstream-cert, --upstream-key)";
    case "ECONNRESET":
      return "TLS: the upstream reset the connection during the handshake (not a TLS server?)";
  }
  return `TLS: ${error.message}${error.code === undefined ? "" : ` (${error.code})`}`;
}

async function dialTcp(
  address: HostPort,
  timeoutMs: number,
  signals: AbortSignal[],
): Promise<Deno.TcpConn> {
  const controller = new AbortController();
  const connectSignal = controller.signal;
  // Deno 2.9.6's connect checks its signal once more after the connect op completed, and throws
  // if it was aborted meanwhile, dropping the connected socket (never closed, counted nowhere).
  // The op's result can wait in the runtime for a later event-loop turn (a burst of completed
  // ops is handed to JS in parts), so no timing of the abort avoids that. This signal's own
  // check is a no-op: the abort still cancels a connect in progress (Interrupted), and a connect
  // that had completed returns its connection, which is used, since it did connect. The
  // controller must not be aborted before the call (Deno then registers no abort, and with this
  // no-op nothing would throw: the connect could not be cancelled); the loop below checks first.
  connectSignal.throwIfAborted = () => {};
  const abortConnect = (reason: unknown) => controller.abort(reason);
  const timer = setTimeout(() => abortConnect(CONNECT_TIMEOUT), timeoutMs);
  const stopWatching = onAnyAbort(signals, abortConnect);
  try {
    for (const signal of signals) signal.throwIfAborted();
    const conn = await Deno.connect({
      hostname: address.hostname,
      port: address.port,
      transport: "tcp",
      signal: connectSignal,
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
    if (controller.signal.aborted || anyAborted(signals)) {
      throw new UpstreamConnectError(address, "aborted", "aborted", { cause: error });
    }
    throw connectError(address, error, error);
  } finally {
    clearTimeout(timer);
    stopWatching();
  }
}

/** The error of a connect that failed before it connected: refused, out of descriptors, other. */
function connectError(address: HostPort, error: unknown, cause: unknown): UpstreamConnectError {
  if (isOutOfDescriptors(error) || isOutOfDescriptors(cause)) {
    return new UpstreamConnectError(
      address,
      "descriptors",
      `this process is out of file descriptors (${describeError(error)}); raise ulimit -n or ` +
        "lower --max-clients",
      { cause },
    );
  }
  const failure = error instanceof Deno.errors.ConnectionRefused ? "refused" : "error";
  return new UpstreamConnectError(address, failure, describeError(error), { cause });
}
