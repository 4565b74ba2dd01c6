/**
 * Small I/O helpers shared by the relay, the pool and the stdio writers: writing a whole chunk
 * (async to a socket, or sync to stdout and stderr), read buffers that
 * grow while a stream is busy (and then alternate, so that one is read into while the other is
 * written out) and shrink back when it is quiet, and telling the interruption we caused (closing
 * a socket under a pending read) from a real network error.
 *
 * @module
 */

/** The smallest read buffer: what an idle session's pending read holds (measured: each KiB here costs
 * about 2 KiB of resident memory per idle connection). */
export const MIN_READ_BUFFER = 256;
/**
 * What a direction reads into after a read filled the small buffer: the rest of a burst of up to
 * this much (a Redis value, a memcached item, a web page) comes in one more read, so such an answer
 * costs two reads and two writes.
 */
export const BURST_READ_BUFFER = 64 * 1024;
/** The largest read buffer, for a stream that keeps filling its buffers. */
export const MAX_READ_BUFFER = 256 * 1024;

/**
 * Writes every byte of `chunk` to `conn`, looping over short writes.
 *
 * @throws whatever `conn.write` throws (for example `Deno.errors.BrokenPipe`).
 */
export async function writeAll(conn: Deno.Conn, chunk: Uint8Array): Promise<void> {
  let offset = 0;
  while (offset < chunk.length) {
    offset += await conn.write(offset === 0 ? chunk : chunk.subarray(offset));
  }
}

/**
 * Writes every byte of `bytes` to `writer` synchronously (stdout, stderr), looping over short
 * writes.
 */
export function writeAllSync(
  writer: { writeSync(p: Uint8Array): number },
  bytes: Uint8Array,
): void {
  let written = 0;
  while (written < bytes.length) written += writer.writeSync(bytes.subarray(written));
}

/**
 * Large read buffers shared by every direction of every session, so that a burst costs no
 * allocation: a direction takes one when its reads fill the small buffer and gives it back when
 * the burst is over and no read or write uses it. At most {@link POOLED_PER_SIZE} of each size
 * are kept.
 */
const POOLED_PER_SIZE = 16;
const freeBuffers = new Map<number, Uint8Array<ArrayBuffer>[]>();

function takeBuffer(size: number): Uint8Array<ArrayBuffer> {
  return freeBuffers.get(size)?.pop() ?? new Uint8Array(size);
}

function giveBuffer(buffer: Uint8Array<ArrayBuffer>): void {
  let free = freeBuffers.get(buffer.length);
  if (free === undefined) freeBuffers.set(buffer.length, free = []);
  if (free.length < POOLED_PER_SIZE) free.push(buffer);
}

/**
 * Most burst buffers parked in pending reads at once, process-wide: a direction that just read a
 * burst keeps its 64 KiB buffer for its next read (a keep-alive client's next answer then comes
 * in one read) while this budget lasts; past it, directions go back to their small buffers. So
 * idle sessions hold at most this many burst buffers in all (16 MiB), whatever their number.
 */
export const PARKED_BURST_BUFFERS = 256;
let parked = 0;

/** Burst buffers parked in pending reads now, process-wide (at most {@link PARKED_BURST_BUFFERS}). */
export function parkedBurstBuffers(): number {
  return parked;
}

/** The size of the next read buffer after a read that filled one of `size`. */
function nextSize(size: number): number {
  return size === MIN_READ_BUFFER ? BURST_READ_BUFFER : MAX_READ_BUFFER;
}

/**
 * The read buffers of one direction of a relay. A quiet direction reads into its own small
 * buffer ({@link MIN_READ_BUFFER}), so an idle session holds little; the caller waits for each
 * write before reading again. A read that fills the buffer means a burst: the next read goes into
 * a large buffer ({@link BURST_READ_BUFFER}, then {@link MAX_READ_BUFFER} while reads keep filling
 * them) taken from a shared free list, while the write of the previous chunk is in flight; so at
 * most two buffers are in use. A read that does not fill a large buffer ends the burst: the
 * direction keeps a 64 KiB buffer for its next read if the process-wide parked budget
 * ({@link PARKED_BURST_BUFFERS}) allows (a keep-alive client's next answer then takes one read),
 * or returns to its small buffer; so idle directions hold at most that many large buffers in all.
 * A large buffer goes back to the free list once no read or write uses it.
 *
 * The caller's contract, which makes sharing buffers safe: when it calls {@link rotate} for a
 * chunk, the write of the chunk before has finished; and when `rotate` returns true, it waits for
 * this chunk's write before it reads again.
 */
export class ReadBuffers {
  readonly #small: Uint8Array<ArrayBuffer> = new Uint8Array(MIN_READ_BUFFER);
  #current: Uint8Array<ArrayBuffer> = this.#small;
  /** Handed to a write by the last {@link rotate}, which did not wait for it. */
  #writing: Uint8Array<ArrayBuffer> | undefined;
  /** A large buffer whose write the caller is waiting for: free once the next read starts. */
  #freeOnNextRead: Uint8Array<ArrayBuffer> | undefined;
  /** Whether {@link current} is a burst buffer kept past its burst, on the parked budget. */
  #parked = false;

  /** The buffer to read into next. */
  get current(): Uint8Array<ArrayBuffer> {
    if (this.#freeOnNextRead !== undefined) {
      this.#give(this.#freeOnNextRead);
      this.#freeOnNextRead = undefined;
    }
    return this.#current;
  }

  /**
   * Call after `bytesRead` bytes of {@link current} were handed to a write that may still be in
   * flight: picks the next read buffer.
   *
   * @returns true when the caller must wait for that write before reading again.
   */
  rotate(bytesRead: number): boolean {
    const filled = this.#current;
    const written = this.#writing; // its write has finished: the caller's contract
    this.#writing = undefined;
    this.#unpark();
    if (bytesRead < filled.length) {
      // Not pressing: one buffer will do, read again once this write is done.
      if (written !== undefined) this.#give(written);
      if (filled === this.#small) return true;
      // The next read may wait long (an idle keep-alive client), and a large buffer in a
      // pending read is held all that time: only on the parked budget. A 64 KiB buffer stays (the
      // next answer may come soon, in one read); a 256 KiB one steps down to a 64 KiB one; past
      // the budget, back to the small buffer. The large one is free after this write.
      if (parked < PARKED_BURST_BUFFERS) {
        parked++;
        this.#parked = true;
        if (filled.length === BURST_READ_BUFFER) return true;
        this.#current = takeBuffer(BURST_READ_BUFFER);
      } else {
        this.#current = this.#small;
      }
      this.#freeOnNextRead = filled;
      return true;
    }
    const size = nextSize(filled.length);
    // Full: a burst. The next read goes into another buffer while this one is written.
    this.#writing = filled;
    if (written !== undefined && written !== this.#small && written.length === size) {
      this.#current = written;
      return false;
    }
    if (written !== undefined) this.#give(written);
    this.#current = takeBuffer(size);
    return false;
  }

  /**
   * The direction is done (its socket closed): gives back its place on the parked budget. Its
   * buffers are left to the garbage collector, as a read or write may still hold them.
   */
  dispose(): void {
    this.#unpark();
  }

  #unpark(): void {
    if (!this.#parked) return;
    this.#parked = false;
    parked--;
  }

  #give(buffer: Uint8Array<ArrayBuffer>): void {
    if (buffer !== this.#small) giveBuffer(buffer);
  }
}

/**
 * Whether `error` is what a pending read or write reports when we closed its socket ourselves
 * (`Interrupted` or `BadResource`), as opposed to a failure that the network reported.
 */
export function isLocalInterruption(error: unknown): boolean {
  return error instanceof Deno.errors.Interrupted || error instanceof Deno.errors.BadResource;
}

/** A short, stable name for a network error, for logs and session summaries. */
export function describeError(error: unknown): string {
  if (error instanceof Deno.errors.ConnectionReset) return "connection reset";
  if (error instanceof Deno.errors.BrokenPipe) return "broken pipe";
  if (error instanceof Deno.errors.ConnectionRefused) return "connection refused";
  if (error instanceof Deno.errors.ConnectionAborted) return "connection aborted";
  if (error instanceof Deno.errors.TimedOut) return "timed out";
  if (error instanceof Deno.errors.NotConnected) return "not connected";
  if (error instanceof Error) return error.message;
  return String(error);
}

/**
 * Closes `resource` (a socket, a listener), ignoring the error Deno throws when it is closed
 * already.
 */
export function closeQuietly(resource: { close(): void }): void {
  try {
    resource.close();
  } catch {
    // already closed
  }
}
