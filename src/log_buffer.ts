/**
 * Log lines on their way to stderr without ever holding up the proxy: a bounded queue written by
 * one asynchronous write at a time (the runtime writes stdio on a thread of its own, so a stderr
 * that nobody reads stalls that write, not the event loop). Past the bound (`--log-buffer`),
 * lines are dropped and counted; once the queue has drained after a write that worked, a notice
 * line says how many (counted from the last notice written). A write that would block (a full
 * non-blocking pipe) is tried again after {@link WRITE_RETRY_MS}, nothing lost; one that fails
 * otherwise (a full disk) drops the lines it carried, counted the same way, and a line it cut is
 * ended before the next; once stderr is gone for good (a closed pipe), every line is dropped.
 *
 * @example
 * ```ts
 * import { LogBuffer } from "./log_buffer.ts";
 *
 * const buffer = new LogBuffer(Deno.stderr, 1024 * 1024, (n) => new TextEncoder().encode(`${n} dropped\n`));
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

/** A newline, to end a line that a failed write cut short. */
const NEWLINE = new Uint8Array([0x0a]);

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
  /** Lines dropped since the last notice written. */
  #droppedSinceNotice = 0;
  /** Whether the last write worked (a notice is written only then). */
  #lastWriteWorked = true;
  /** Whether a failed write cut a line short: the next write ends it first. */
  #cutLine = false;
  #droppedTotal = 0;
  #flushed: (() => void)[] = [];

  readonly #notice: ((count: number) => Uint8Array) | undefined;

  /**
   * @param target Where lines go (`Deno.stderr`).
   * @param limitBytes The most bytes queued at once; a line that does not fit is dropped.
   * @param notice The line that says how many lines were dropped, written once the queue has
   * drained after a write that worked.
   */
  constructor(
    target: LineTarget,
    limitBytes: number,
    notice?: (count: number) => Uint8Array,
  ) {
    this.#target = target;
    this.#limitBytes = limitBytes;
    this.#notice = notice;
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
   * Writes the queue out, one write at a time, then the notice of dropped lines if a write has
   * just worked; owns every error of its writes.
   */
  async #writeQueued(): Promise<void> {
    this.#writing = true;
    try {
      while (!this.#broken) {
        if (this.#queue.length > 0) {
          await this.#writeChunk();
          continue;
        }
        const count = this.#droppedSinceNotice;
        if (this.#notice === undefined || count === 0 || !this.#lastWriteWorked) break;
        const { kind, written } = await this.#write(this.#notice(count));
        // Lines dropped while the notice was written are told in the next one.
        if (kind === "done") this.#droppedSinceNotice -= count;
        else if (kind === "gone") this.#gone(0);
        else if (written > 0) this.#cutLine = true;
      }
    } finally {
      this.#writing = false;
      for (const done of this.#flushed.splice(0)) done();
    }
  }

  /** Writes the next lines; see the class documentation for what a failure does. */
  async #writeChunk(): Promise<void> {
    const { bytes, lines } = this.#takeChunk();
    const { kind, written } = await this.#write(bytes);
    switch (kind) {
      case "done":
        this.#queuedBytes -= bytes.length;
        return;
      case "blocked":
        // Nothing lost: the rest goes first, after a pause.
        this.#queuedBytes -= written;
        this.#queue.unshift(bytes.subarray(written));
        break;
      case "failed":
        this.#queuedBytes -= bytes.length;
        this.#drop(lines);
        if (written > 0) this.#cutLine = true;
        break;
      case "gone":
        this.#gone(lines);
        return;
    }
    await new Promise((resolve) => setTimeout(resolve, WRITE_RETRY_MS));
  }

  /** Writes all of `bytes`, ending first a line a failed write cut short. */
  async #write(
    bytes: Uint8Array,
  ): Promise<{ kind: "done" | "blocked" | "failed" | "gone"; written: number }> {
    let written = 0;
    try {
      if (this.#cutLine) {
        while (await this.#target.write(NEWLINE) === 0) { /* one byte */ }
        this.#cutLine = false;
      }
      while (written < bytes.length) written += await this.#target.write(bytes.subarray(written));
      this.#lastWriteWorked = true;
      return { kind: "done", written };
    } catch (error) {
      this.#lastWriteWorked = false;
      if (
        error instanceof Deno.errors.BrokenPipe || error instanceof Deno.errors.BadResource ||
        error instanceof Deno.errors.ConnectionReset
      ) {
        return { kind: "gone", written };
      }
      return { kind: error instanceof Deno.errors.WouldBlock ? "blocked" : "failed", written };
    }
  }

  /** The target is gone for good: the lines being written and every queued one are dropped. */
  #gone(lines: number): void {
    this.#broken = true;
    this.#drop(lines + this.#queue.length); // one line each
    this.#queue.length = 0;
    this.#queuedBytes = 0;
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
