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
/** The largest read buffer a busy stream grows to. */
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
 * Picks the buffer for the next read from the size of the last one: a read that filled the
 * buffer means the stream is busy, so the buffer grows fourfold (up to {@link MAX_READ_BUFFER});
 * a read that used under an eighth of a large buffer means it is quiet again, so it drops back to
 * {@link MIN_READ_BUFFER}. Otherwise the same buffer is reused.
 */
function nextReadBuffer(
  buffer: Uint8Array<ArrayBuffer>,
  bytesRead: number,
): Uint8Array<ArrayBuffer> {
  const size = buffer.length;
  if (bytesRead === size && size < MAX_READ_BUFFER) {
    return new Uint8Array(Math.min(size * 4, MAX_READ_BUFFER));
  }
  if (size > MIN_READ_BUFFER && bytesRead <= size / 8) {
    return new Uint8Array(MIN_READ_BUFFER);
  }
  return buffer;
}

/**
 * The read buffers of one direction of a relay. A quiet direction has one small buffer, and the
 * caller waits for each write before reading again. A busy one (its reads fill a buffer that grew
 * past {@link MIN_READ_BUFFER}) alternates two buffers: the next read goes into one while the write of
 * the other is still in flight, so the socket being read and the one being written both stay
 * busy. The caller still waits for the previous write before starting the next, so chunks stay
 * in order and at most two buffers (one read, one write) are in use.
 */
export class ReadBuffers {
  #current: Uint8Array<ArrayBuffer> = new Uint8Array(MIN_READ_BUFFER);
  #spare: Uint8Array<ArrayBuffer> | undefined;

  /** The buffer to read into next. */
  get current(): Uint8Array<ArrayBuffer> {
    return this.#current;
  }

  /**
   * Call after `bytesRead` bytes of {@link current} were handed to a write that may still be in
   * flight: picks the next read buffer.
   *
   * @returns true when the caller must wait for that write before reading again (the direction
   * is quiet and its one buffer is the one being written).
   */
  rotate(bytesRead: number): boolean {
    const next = nextReadBuffer(this.#current, bytesRead);
    if (next !== this.#current) {
      this.#current = next;
      this.#spare = undefined;
      return false;
    }
    // A read that did not fill the buffer: the stream is not pressing, one buffer will do (and
    // an idle connection then holds one buffer in its pending read, not two). A kept buffer that
    // was filled is already MAX_READ_BUFFER (a smaller one would have grown).
    if (bytesRead < next.length) {
      this.#spare = undefined;
      return true;
    }
    const spare = this.#spare ?? new Uint8Array(next.length);
    this.#spare = this.#current;
    this.#current = spare;
    return false;
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
