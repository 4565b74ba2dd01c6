/**
 * What a framed protocol tells the pool: where requests and responses begin and end, so that a
 * connection goes back only when its exchange is provably complete (`--protocol redis` or
 * `memcached`; `raw` has no framing and relies on timing).
 *
 * A {@link ExchangeTracker} watches both directions of one session as the relay forwards them. It
 * finds message boundaries only: it never buffers a whole message, never changes or copies a
 * relayed byte, and keeps only the few bytes of a header split across two reads. Bytes that are
 * not valid for the protocol never stop the relay: the tracker marks the connection unfit and the
 * bytes go on as they are.
 *
 * @module
 */

/** The protocols `--protocol` accepts. */
export type Protocol = "raw" | "redis" | "memcached";

/**
 * Why a connection may not go back to the pool as it is, by how bad it is:
 * - `state`: a command left per-connection state (Redis `SELECT`, `AUTH`, an open `MULTI`, ...).
 *   The exchange itself is framed, so a reset (Redis `RESET`) can clear it.
 * - `broken`: the exchange can no longer be followed (invalid bytes, the memcached binary
 *   protocol, `MONITOR`, `CLIENT REPLY OFF`, `QUIT`), so
 *   only closing the connection is safe.
 */
export interface Unfit {
  /** How bad it is; see the interface documentation. */
  kind: "state" | "broken";
  /** One line for the debug log, e.g. `SELECT changes per-connection state`. */
  reason: string;
  /**
   * With `state`: `false` when the protocol's reset may leave that state in place (Redis 7.0's
   * `RESET` keeps `CLIENT NO-EVICT`), so the connection is closed even where a reset is allowed.
   */
  resetClears?: boolean;
}

/**
 * Follows the exchange of one session in one protocol. The relay calls {@link onClientBytes}
 * with every chunk it forwards upstream and {@link onServerBytes} with every chunk it relays
 * back, in order; both are synchronous and cheap (a loop over header bytes, data blocks skipped
 * by their length).
 */
export interface ExchangeTracker {
  /** Client bytes, as forwarded upstream. Never keeps a reference to `chunk`. */
  onClientBytes(chunk: Uint8Array): void;
  /** Upstream bytes, as relayed to the client (or discarded while draining). Never keeps `chunk`. */
  onServerBytes(chunk: Uint8Array): void;
  /**
   * Responses still owed: complete requests forwarded whose complete response has not arrived
   * (a request that may rightly get no response, such as a memcached quiet or `noreply` one,
   * counts until a response that can only come after it, memcached's `MN`, settles it).
   */
  readonly owed: number;
  /**
   * Whether every owed response can be told apart when it arrives, so that waiting for them can
   * end; false while a request that may rightly get no response is owed with nothing after it to
   * settle it (a memcached quiet or `noreply` request with no `mn` after it). A session never
   * waits for, nor drains, answers that cannot settle: the connection is closed instead.
   */
  readonly settleable: boolean;
  /**
   * Whether owed responses may still be waited for once the client has half-closed or left (a
   * FIN kept back, a drain): false while a request is owed whose answer would take something
   * for nobody if it came after the client left, such as Redis's `BLPOP`, which pops the next
   * item pushed (the server ends such a command itself when its client closes). The client's
   * FIN is then passed on and a connection it leaves is closed, not drained.
   */
  readonly drainable: boolean;
  /** Whether a request was forwarded in part (its end not seen yet). */
  readonly partialRequest: boolean;
  /** Whether a response has arrived in part (its end not seen yet). */
  readonly partialResponse: boolean;
  /** Set once something makes the connection unfit; the worst reason wins. */
  readonly unfit: Unfit | undefined;
}

/**
 * Whether the exchange is provably complete and the connection could go back as it is: nothing
 * owed, nothing partial, nothing unfit.
 */
export function isComplete(tracker: ExchangeTracker): boolean {
  return tracker.owed === 0 && !tracker.partialRequest && !tracker.partialResponse &&
    tracker.unfit === undefined;
}

/**
 * Whether the owed answers can still be waited for without the client (its FIN kept back, or
 * drained after it left): the exchange can still be followed, no request was sent in part, and
 * every owed answer can settle and take nothing for nobody ({@link ExchangeTracker.settleable},
 * {@link ExchangeTracker.drainable}).
 */
export function canAwaitWithoutClient(tracker: ExchangeTracker): boolean {
  return tracker.unfit?.kind !== "broken" && !tracker.partialRequest && tracker.settleable &&
    tracker.drainable;
}
