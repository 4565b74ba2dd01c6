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

import { FreeBuffers } from "./_io.ts";

/** Most client bytes kept for a replay; past it, the session gives up on replaying. */
export const REPLAY_LIMIT = 64 * 1024;
/**
 * Most chunks kept for a replay: a request sent a byte per segment would otherwise cost a copy
 * (and an array) per byte, 4 MB for 64 KiB (measured). Past it no replay can be whole.
 */
export const REPLAY_MAX_CHUNKS = 256;

/**
 * Chunks from this size up are copied into a store of {@link REPLAY_LIMIT} bytes shared through a
 * free list, not into a fresh `ArrayBuffer` each. A fresh one per request is memory outside V8's
 * heap, which V8 answers with full collections: with 20 KB Redis values through `reuse`
 * (`redis-benchmark -k 0 -d 20000`), 104 mark-compacts per 70,000 requests against 33 for 3-byte
 * values, and 33 again without the copy (measured with `--trace-gc`). Smaller chunks are copied as
 * before: a store per session would cost more than their copies when thousands of sessions keep
 * one at once.
 */
export const STORE_MIN_CHUNK = 4 * 1024;

/**
 * Stores given back by {@link ReplayBuffer.drop}, at most {@link FREE_STORES} (4 MiB): enough for
 * the large requests of 64 sessions at once; beyond that, stores are made and left to the
 * garbage collector.
 */
export const FREE_STORES = 64;
const freeStores = new FreeBuffers(REPLAY_LIMIT, FREE_STORES);

/** Stores on the free list now (for tests). */
export function freeReplayStores(): number {
  return freeStores.kept;
}

/**
 * Client chunks kept for a replay, and the cursor of the current connection.
 *
 * Large chunks are kept in a store shared through a free list ({@link STORE_MIN_CHUNK}), which
 * {@link drop} gives back. The caller's contract, which makes that safe: it calls `drop` only when
 * no write of a chunk {@link nextUnsent} gave is under way (the session drops when an answer
 * began and no retry runs, when a retry has written, or failed to write, every chunk, and when it
 * ends with no retry running). The buffer also checks for itself: a chunk handed out and not yet
 * {@link advance}d past keeps its store off the free list for good.
 */
export class ReplayBuffer {
  readonly #limit: number;
  /** The kept copies; `undefined` once nothing is (or can any longer be) kept whole. */
  #chunks: Uint8Array[] | undefined;
  /** Where large chunks are copied, from the free list; `undefined` until the first. */
  #store: Uint8Array<ArrayBuffer> | undefined;
  #stored = 0;
  /**
   * Whether a chunk {@link nextUnsent} gave may still be in a write ({@link advance} not called
   * yet): then {@link drop} leaves the store to the garbage collector, never to the free list.
   */
  #lent = false;
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
      const kept = this.#chunks?.length ?? 0;
      if (this.#bytes > this.#limit || kept >= REPLAY_MAX_CHUNKS) this.stopKeeping();
      else this.#chunks?.push(this.#copy(chunk));
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

  /**
   * Drops every copy; no replay will happen. The store goes back to the free list: see the class
   * documentation for when this may be called.
   */
  drop(): void {
    this.#keeping = false;
    this.#chunks = undefined;
    const store = this.#store;
    this.#store = undefined;
    if (store !== undefined && !this.#lent) freeStores.give(store);
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

  /** A copy of `chunk` that this buffer owns: in the store if large, else its own. */
  #copy(chunk: Uint8Array): Uint8Array {
    if (chunk.length < STORE_MIN_CHUNK || this.#limit !== REPLAY_LIMIT) return chunk.slice();
    // Kept bytes never pass the limit, so every large chunk fits in one store.
    this.#store ??= freeStores.take();
    const copy = this.#store.subarray(this.#stored, this.#stored + chunk.length);
    copy.set(chunk);
    this.#stored += chunk.length;
    return copy;
  }

  /** The next kept chunk the current connection has not been sent, if any. */
  nextUnsent(): Uint8Array | undefined {
    const chunk = this.#chunks?.[this.#sent];
    this.#lent = chunk !== undefined;
    return chunk;
  }

  /** The chunk {@link nextUnsent} gave has been written to the current connection. */
  advance(): void {
    this.#sent++;
    this.#lent = false;
  }
}
