/**
 * Abort callbacks on signals that many operations share (the pool's closing signal, the proxy's
 * shutdown signal), in constant time. `addEventListener` on an `AbortSignal` scans the signal's
 * listener list both to add a listener and to remove one (Deno's `EventTarget`), so with a
 * thousand dials in flight on the pool's one closing signal, every dial cost a thousand steps
 * twice: a quarter of the proxy's CPU with 1,000 connection-per-request clients through `warm`.
 * Here each signal gets one listener, and the callbacks live in a `Set`.
 *
 * ```ts
 * import { onAbort } from "./abort.ts";
 *
 * const controller = new AbortController();
 * const stop = onAbort(controller.signal, (reason) => console.log("aborted:", reason));
 * controller.abort("shutdown"); // aborted: shutdown
 * stop(); // nothing to remove any more; harmless
 * ```
 *
 * @module
 */

import { reportUnexpected } from "./failsafe.ts";

type AbortCallback = (reason: unknown) => void;

const callbacksBySignal = new WeakMap<AbortSignal, Set<AbortCallback>>();

/**
 * Calls `callback` with the signal's reason when `signal` aborts (never if it already has: check
 * `signal.aborted` as with `addEventListener`). @returns a function that removes the callback;
 * calling it more than once, or after the abort, does nothing.
 */
export function onAbort(signal: AbortSignal, callback: AbortCallback): () => void {
  let callbacks = callbacksBySignal.get(signal);
  if (callbacks === undefined) {
    const created = new Set<AbortCallback>();
    callbacks = created;
    callbacksBySignal.set(signal, created);
    signal.addEventListener("abort", () => {
      const due = [...created];
      created.clear();
      for (const call of due) {
        try {
          call(signal.reason);
        } catch (error) {
          // One callback's fault must not keep the others from running, nor reach the process.
          reportUnexpected("an abort callback", error);
        }
      }
    }, { once: true });
  }
  const registered = callbacks;
  registered.add(callback);
  return () => void registered.delete(callback);
}

/**
 * {@link onAbort} on each of `signals`: `callback` runs when one aborts (once per signal that
 * does, so it should not mind a second call). @returns one function that removes it from all.
 */
export function onAnyAbort(signals: readonly AbortSignal[], callback: AbortCallback): () => void {
  const stops = signals.map((signal) => onAbort(signal, callback));
  return () => {
    for (const stop of stops) stop();
  };
}

/** Whether any of `signals` has aborted. */
export function anyAborted(signals: readonly AbortSignal[]): boolean {
  return signals.some((signal) => signal.aborted);
}
