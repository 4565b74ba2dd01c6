/**
 * The opening check: one command the proxy sends on a new upstream connection, before any
 * client's byte, to learn what the connection is before a client uses it; its one reply line is
 * read and dropped here, so no client ever sees it (bytes after it end the connection).
 *
 * memcached's ASCII authentication (`-Y`, 1.5.15 and later) is why: a login is a `set` whose
 * value is the user and password, indistinguishable from any other `set`, and it leaves the
 * connection logged in. Pooled, that connection would serve the next client as the first one's
 * user, and that client's own login would be stored as an item anyone can read. On a connection
 * that has not logged in, such a server answers every command but that `set` with
 * `CLIENT_ERROR unauthenticated`; so with `--pool reuse --protocol memcached` each new connection
 * is sent `version` first, and one that asks for a login serves one client and is closed, as does
 * one whose answer is not memcached's (nothing is known of its state).
 *
 * ```ts ignore
 * import { checkOpening } from "./opening_check.ts";
 *
 * const verdict = await checkOpening(socket, MEMCACHED_OPENING_CHECK, upstream, 5_000, []);
 * // { verdict: "serves" | "asks-login" | "unexpected", line }; a close or the timeout throws
 * ```
 *
 * @module
 */

import { formatHostPort, type HostPort } from "./address.ts";
import { type ByteConn, closeQuietly, describeError, writeAll } from "./_io.ts";
import { anyAborted, onAnyAbort } from "./abort.ts";
import { tlsAlertReason, UpstreamConnectError } from "./dial.ts";

/** What the reply to an opening check says about the connection. */
export type OpeningVerdict = "serves" | "asks-login" | "unexpected";

/** A protocol's opening check. */
export interface OpeningCheck {
  /** Names the check in messages, e.g. ``memcached `version` ``. */
  readonly name: string;
  /** Sent on a new connection before any client byte; answered by exactly one line. */
  readonly command: Uint8Array;
  /** What the reply line (without its `\r\n`) says. */
  judge(line: string): OpeningVerdict;
}

/** Longest reply line read (memcached's `VERSION 1.6.18` is 16 bytes). */
export const MAX_OPENING_REPLY = 512;

/** memcached's check: `version`, which every version answers, unless it asks for a login. */
export const MEMCACHED_OPENING_CHECK: OpeningCheck = {
  name: "memcached `version`",
  command: new TextEncoder().encode("version\r\n"),
  judge(line) {
    if (line.startsWith("VERSION ")) return "serves";
    if (line === "CLIENT_ERROR unauthenticated") return "asks-login";
    return "unexpected";
  },
};

/** What {@link checkOpening} learned: the verdict, and the reply line it came from. */
export interface OpeningResult {
  verdict: OpeningVerdict;
  /** The reply line without its line end, at most {@link MAX_OPENING_REPLY} bytes. */
  line: string;
}

/**
 * Sends `check.command` on `socket` and reads its one reply line, within `timeoutMs` or until
 * one of `signals` aborts. Nothing of the reply is left for the connection's reader.
 *
 * @returns the verdict on the reply line (an unexpected line too: the connection is still
 * usable, but nothing is known of its state).
 * @throws {UpstreamConnectError} (and closes `socket`) when the reply is more than one line or
 * longer than {@link MAX_OPENING_REPLY} (`error`), the upstream closed first (`closed`), the time
 * ran out (`timeout`), a signal aborted (`aborted`), or the socket failed (`error`).
 */
export async function checkOpening(
  socket: ByteConn,
  check: OpeningCheck,
  address: HostPort,
  timeoutMs: number,
  signals: readonly AbortSignal[],
): Promise<OpeningResult> {
  let cut: "timeout" | "aborted" | undefined;
  const cutShort = (why: "timeout" | "aborted") => {
    cut ??= why;
    closeQuietly(socket); // the pending read or write fails
  };
  const timer = setTimeout(() => cutShort("timeout"), Math.max(1, timeoutMs));
  const stopWatching = onAnyAbort(signals, () => cutShort("aborted"));
  try {
    if (anyAborted(signals)) cutShort("aborted");
    await writeAll(socket, check.command);
    const reply = new Uint8Array(MAX_OPENING_REPLY);
    let got = 0;
    while (true) {
      const n = await socket.read(reply.subarray(got));
      // Cut while this read's result was on its way: the socket is closed already.
      if (cut !== undefined) throw new Error(cut);
      if (n === null) {
        throw new UpstreamConnectError(
          address,
          "closed",
          `closed the connection before answering ${check.name}`,
        );
      }
      got += n;
      const lf = reply.subarray(0, got).indexOf(0x0a);
      if (lf === -1) {
        if (got === reply.length) throw unexpected(address, check, reply.subarray(0, got));
        continue;
      }
      const end = lf > 0 && reply[lf - 1] === 0x0d ? lf - 1 : lf;
      const line = new TextDecoder().decode(reply.subarray(0, end));
      // More than the one line: bytes that would reach the first client as a greeting (more
      // that come in a later read end the connection there: `UpstreamConn.checked`).
      if (lf !== got - 1) throw unexpected(address, check, reply.subarray(0, got));
      return { verdict: check.judge(line), line };
    }
  } catch (error) {
    closeQuietly(socket);
    if (cut === "timeout") {
      throw new UpstreamConnectError(
        address,
        "timeout",
        `timed out after ${Math.round(timeoutMs)}ms (waiting for the answer to ${check.name})`,
      );
    }
    if (cut === "aborted") throw new UpstreamConnectError(address, "aborted", "aborted");
    if (error instanceof UpstreamConnectError) throw error;
    // A TLS 1.3 server refuses our certificate after the handshake completed on our side.
    const refused = tlsAlertReason(error);
    if (refused !== undefined) {
      throw new UpstreamConnectError(address, "tls", refused, { cause: error });
    }
    throw new UpstreamConnectError(
      address,
      "error",
      `${check.name} on ${formatHostPort(address)} failed: ${describeError(error)}`,
      { cause: error },
    );
  } finally {
    clearTimeout(timer);
    stopWatching();
  }
}

function unexpected(address: HostPort, check: OpeningCheck, bytes: Uint8Array): Error {
  const text = JSON.stringify(new TextDecoder().decode(bytes.subarray(0, 80)));
  const more = bytes.length > 80 ? "..." : "";
  return new UpstreamConnectError(
    address,
    "error",
    `answered ${check.name} with ${text}${more}, not one line: not the protocol of --protocol?`,
  );
}
