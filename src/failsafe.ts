/**
 * The last line of defence: an error that escapes every owner (a rejected promise nobody awaits,
 * an exception thrown from a timer or an event listener) is logged at `error` with its stack and
 * counted, and the proxy keeps serving. One session's fault must never end the process.
 *
 * Every promise in the proxy has an owner that handles its failure; this exists so that a bug
 * that breaks that rule costs one line in the log instead of every client's connection.
 *
 * ```ts ignore
 * import { installFailsafe, unexpectedErrors } from "./failsafe.ts";
 *
 * const uninstall = installFailsafe();
 * // ... serve
 * console.log(unexpectedErrors()); // 0, one hopes
 * uninstall();
 * ```
 *
 * @module
 */

import { getProxyLogger } from "./logging.ts";

let count = 0;

/** How many unexpected errors the failsafe caught since the process started. */
export function unexpectedErrors(): number {
  return count;
}

/**
 * Records an error that escaped its owner: counts it and logs it at `error` with its stack.
 * Called by the global handlers, and directly by code that catches "cannot happen" failures.
 *
 * @param where What was running (e.g. `unhandled rejection`, `session 12`).
 * @param error What was thrown.
 */
export function reportUnexpected(where: string, error: unknown): void {
  count++;
  const stack = error instanceof Error
    ? (error.stack ?? `${error.name}: ${error.message}`)
    : String(
      error,
    );
  getProxyLogger().error("unexpected error in {where} (the proxy goes on serving): {stack}", {
    where,
    stack,
  });
}

/**
 * Installs global handlers for unhandled promise rejections and uncaught exceptions: each is
 * reported through {@link reportUnexpected} and prevented from ending the process.
 *
 * @returns A function that removes the handlers again (for tests).
 */
export function installFailsafe(): () => void {
  const onRejection = (event: PromiseRejectionEvent) => {
    event.preventDefault();
    reportUnexpected("unhandled rejection", event.reason);
  };
  const onError = (event: ErrorEvent) => {
    event.preventDefault();
    reportUnexpected("uncaught exception", event.error ?? event.message);
  };
  globalThis.addEventListener("unhandledrejection", onRejection);
  globalThis.addEventListener("error", onError);
  return () => {
    globalThis.removeEventListener("unhandledrejection", onRejection);
    globalThis.removeEventListener("error", onError);
  };
}
