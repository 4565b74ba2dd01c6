/**
 * The client bytes a session may have to send again: when a reused connection fails before any
 * answer came back, the session replaces it with a fresh dial and replays what the client sent.
 * The buffer owns its copies and its cursor (how many chunks the current connection was sent), so
 * the pump and the retry agree on what still has to go out.
 *
 * ```ts
 * import { ReplayBuffer } from "./replay.ts";
 *
 * const replay = new ReplayBuffer(true);
 * const seq = replay.take(new TextEncoder().encode("GET k\r\n")); // 1
 * replay.markSent(seq);
 * replay.restart(); // a fresh connection: nothing sent to it yet
 * console.log(replay.nextUnsent()?.length); // 7
 * ```
 *
 * @module
 */

/** Most client bytes kept for a replay; past it, the session gives up on replaying. */
export const REPLAY_LIMIT = 64 * 1024;

/** Client chunks kept for a replay, and the cursor of the current connection. */
export class ReplayBuffer {
  readonly #limit: number;
  /** The kept copies; `undefined` once nothing is (or can any longer be) kept whole. */
  #chunks: Uint8Array[] | undefined;
  #keeping: boolean;
  #bytes = 0;
  #taken = 0;
  #sent = 0;

  /**
   * @param keep whether to keep copies at all (only a connection that served an earlier session
   * may be retried after a client byte was written to it).
   * @param limit most bytes kept; default {@link REPLAY_LIMIT}.
   */
  constructor(keep: boolean, limit: number = REPLAY_LIMIT) {
    this.#limit = limit;
    this.#keeping = keep;
    this.#chunks = keep ? [] : undefined;
  }

  /** Client chunks taken so far. */
  get taken(): number {
    return this.#taken;
  }

  /** Whether every chunk taken so far is kept, so that a replay would be whole. */
  get whole(): boolean {
    return this.#keeping;
  }

  /**
   * Takes the next client chunk, keeping a copy while a replay is still possible.
   *
   * @returns its number: 1 for the first chunk, then 2, ...
   */
  take(chunk: Uint8Array): number {
    this.#taken++;
    if (this.#keeping) {
      this.#bytes += chunk.length;
      if (this.#bytes > this.#limit) this.stopKeeping();
      else this.#chunks?.push(chunk.slice());
    }
    return this.#taken;
  }

  /**
   * No replay can be whole from now on (an answer began, or the limit was passed): later chunks
   * are not kept. What is kept stays until {@link drop}, for a replay already under way.
   */
  stopKeeping(): void {
    this.#keeping = false;
  }

  /** Drops every copy; no replay will happen. */
  drop(): void {
    this.#keeping = false;
    this.#chunks = undefined;
  }

  /** Chunk `seq` has been written to the current connection. */
  markSent(seq: number): void {
    if (seq > this.#sent) this.#sent = seq;
  }

  /** Whether chunk `seq` has been written to the current connection. */
  isSent(seq: number): boolean {
    return this.#sent >= seq;
  }

  /** A fresh connection replaces the current one: nothing has been sent to it. */
  restart(): void {
    this.#sent = 0;
  }

  /** The next kept chunk the current connection has not been sent, if any. */
  nextUnsent(): Uint8Array | undefined {
    return this.#chunks?.[this.#sent];
  }

  /** The chunk {@link nextUnsent} gave has been written to the current connection. */
  advance(): void {
    this.#sent++;
  }
}
