/**
 * Log lines on their way to stderr without ever holding up the proxy: a bounded queue written by
 * one asynchronous write at a time (the runtime writes stdio on a thread of its own, so a stderr
 * that nobody reads stalls that write, not the event loop). Past the bound (`--log-buffer`),
 * lines are dropped and counted; once the queue has drained, the owner is told how many were
 * dropped, so that it can say so in the log. A write that fails drops the lines it carried
 * (counted the same way) and the next is tried after {@link WRITE_RETRY_MS} (a full disk, a full
 * non-blocking pipe); once stderr is gone for good (a closed pipe), every line is dropped.
 *
 * @example
 * ```ts
 * import { LogBuffer } from "./log_buffer.ts";
 *
 * const buffer = new LogBuffer(Deno.stderr, 1024 * 1024);
 * buffer.write(new TextEncoder().encode("hello\n"));
 * await buffer.flush(1_000);
 * ```
 *
 * @module
 */

/** Where the lines go: a writer that may write part of what it is given. */
export interface LineTarget {
  write(bytes: Uint8Array): Promise<number>;
}

/** The most bytes given to one write: several queued lines go out together. */
const WRITE_CHUNK_BYTES = 64 * 1024;

/** The pause after a write that failed, before the next is tried. */
export const WRITE_RETRY_MS = 100;

/** A bounded queue of log lines in front of a {@link LineTarget}. */
export class LogBuffer {
  readonly #target: LineTarget;
  readonly #limitBytes: number;
  readonly #queue: Uint8Array[] = [];
  /** Bytes queued, the ones being written included. */
  #queuedBytes = 0;
  #writing = false;
  /** Set once the target is gone for good (a closed pipe): it takes nothing more. */
  #broken = false;
  /** Lines dropped since the owner was last told. */
  #droppedSinceNotice = 0;
  #droppedTotal = 0;
  #flushed: (() => void)[] = [];

  /**
   * @param target Where lines go (`Deno.stderr`).
   * @param limitBytes The most bytes queued at once; a line that does not fit is dropped.
   * @param onDropsEnded Called when the queue has drained after lines were dropped, with their
   * count; whatever it writes is queued as usual.
   */
  constructor(
    target: LineTarget,
    limitBytes: number,
    readonly onDropsEnded?: (count: number) => void,
  ) {
    this.#target = target;
    this.#limitBytes = limitBytes;
  }

  /** Lines dropped since start: the queue was full, or the target failed. */
  get dropped(): number {
    return this.#droppedTotal;
  }

  /** Bytes queued now, those being written included. */
  get queuedBytes(): number {
    return this.#queuedBytes;
  }

  /**
   * Queues `line` (the caller gives up `line`), or drops it when it does not fit; a line longer
   * than the bound is taken when nothing is queued.
   */
  write(line: Uint8Array): void {
    const fits = this.#queuedBytes === 0 || this.#queuedBytes + line.length <= this.#limitBytes;
    if (this.#broken || !fits) {
      this.#drop(1);
      return;
    }
    this.#queue.push(line);
    this.#queuedBytes += line.length;
    if (!this.#writing) void this.#writeQueued();
  }

  /**
   * Resolves once everything queued is written, or after `timeoutMs` (a stderr nobody reads
   * never drains), whichever is first.
   */
  flush(timeoutMs: number): Promise<void> {
    if (!this.#writing) return Promise.resolve();
    return new Promise((resolve) => {
      const timer = setTimeout(done, timeoutMs);
      function done(): void {
        clearTimeout(timer);
        resolve();
      }
      this.#flushed.push(done);
    });
  }

  /**
   * Writes the queue out, one write at a time, and says how many lines were dropped once it has
   * drained (that notice is written too); owns every error of its writes.
   */
  async #writeQueued(): Promise<void> {
    this.#writing = true;
    try {
      for (;;) {
        while (this.#queue.length > 0 && !this.#broken) await this.#writeChunk();
        if (this.#broken || this.#droppedSinceNotice === 0) break;
        const count = this.#droppedSinceNotice;
        this.#droppedSinceNotice = 0;
        this.onDropsEnded?.(count);
        if (this.#queue.length === 0) break;
      }
    } finally {
      this.#writing = false;
      for (const done of this.#flushed.splice(0)) done();
    }
  }

  /** Writes the next lines; a failure drops them, and pauses or, when stderr is gone, stops. */
  async #writeChunk(): Promise<void> {
    const { bytes, lines } = this.#takeChunk();
    try {
      let written = 0;
      while (written < bytes.length) written += await this.#target.write(bytes.subarray(written));
    } catch (error) {
      this.#drop(lines);
      if (
        error instanceof Deno.errors.BrokenPipe || error instanceof Deno.errors.BadResource ||
        error instanceof Deno.errors.ConnectionReset
      ) {
        this.#broken = true;
        this.#drop(this.#queue.length); // one line each
        this.#queue.length = 0;
        this.#queuedBytes = bytes.length; // nothing else is queued: `finally` takes it off
      } else {
        await new Promise((resolve) => setTimeout(resolve, WRITE_RETRY_MS));
      }
    } finally {
      this.#queuedBytes -= bytes.length;
    }
  }

  #drop(lines: number): void {
    this.#droppedSinceNotice += lines;
    this.#droppedTotal += lines;
  }

  /** The next lines to write, joined up to {@link WRITE_CHUNK_BYTES} (at least one line). */
  #takeChunk(): { bytes: Uint8Array; lines: number } {
    const first = this.#queue.shift() as Uint8Array;
    let length = first.length;
    let count = 0;
    while (
      count < this.#queue.length && length + this.#queue[count].length <= WRITE_CHUNK_BYTES
    ) {
      length += this.#queue[count].length;
      count++;
    }
    if (count === 0) return { bytes: first, lines: 1 };
    const bytes = new Uint8Array(length);
    bytes.set(first, 0);
    let offset = first.length;
    for (const line of this.#queue.splice(0, count)) {
      bytes.set(line, offset);
      offset += line.length;
    }
    return { bytes, lines: count + 1 };
  }
}
