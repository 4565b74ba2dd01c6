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
 * this much (a Redis value, a memcached item, a web page) comes in one more read, behind the first
 * bytes, so such an answer already waiting costs two reads and one write.
 */
export const BURST_READ_BUFFER = 64 * 1024;
/** The largest read buffer, for a stream that keeps filling its buffers. */
export const MAX_READ_BUFFER = 256 * 1024;

/**
 * The part of a socket that the relay uses, on either side: a `Deno.Conn` is one, and so is a
 * TLS connection made with `node:tls` (`SocketConn`).
 */
export interface ByteConn {
  /** Reads into `p`: the number of bytes, or `null` at the peer's end of stream. */
  read(p: Uint8Array): Promise<number | null>;
  /** Writes some of `p`, resolving with how many bytes were taken. */
  write(p: Uint8Array): Promise<number>;
  /** Ends the write side (FIN); reading goes on. */
  closeWrite(): Promise<void>;
  /** Closes the socket; a pending read or write fails. */
  close(): void;
  /**
   * Closes without the clean end of stream (over TLS, no close_notify), where the connection
   * can tell a cut stream from a complete one; absent where it cannot (plain TCP).
   */
  abort?(): void;
}

/** A client's socket as a session uses it: a `Deno.TcpConn`, or a TLS `SocketConn`. */
export interface ClientConn extends ByteConn {
  /** The client's address. */
  readonly remoteAddr: Deno.Addr;
  /** Turns Nagle's algorithm off (`true`) or on. */
  setNoDelay(noDelay?: boolean): void;
}

/** Where clients come from: a `Deno.TcpListener`, or a `TlsListener`. */
export interface ClientListener {
  /** The address bound. */
  readonly addr: Deno.NetAddr;
  /** The next client; rejects once the listener is closed. */
  accept(): Promise<ClientConn>;
  /** Stops listening. */
  close(): void;
}

/**
 * Writes every byte of `chunk` to `conn`, looping over short writes.
 *
 * @throws whatever `conn.write` throws (for example `Deno.errors.BrokenPipe`).
 */
export async function writeAll(conn: ByteConn, chunk: Uint8Array): Promise<void> {
  let offset = 0;
  while (offset < chunk.length) {
    offset += await writeConn(conn, offset === 0 ? chunk : chunk.subarray(offset));
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
 * the burst is over and no read or write uses it. At most {@link FREE_BUFFERS_PER_SIZE} of each
 * size are kept (4 MiB of each size), enough for the bursts of a few dozen sessions at once.
 */
export const FREE_BUFFERS_PER_SIZE: Readonly<Record<number, number>> = {
  [64 * 1024]: 64,
  [256 * 1024]: 16,
};

/**
 * A bounded free list of buffers of one size: {@link take} reuses a kept buffer or makes one,
 * {@link give} keeps one for the next `take` while fewer than `max` are kept; the rest are left to
 * the garbage collector. The caller gives a buffer back only when nothing uses it any longer.
 */
export class FreeBuffers {
  readonly #size: number;
  readonly #max: number;
  readonly #free: Uint8Array<ArrayBuffer>[] = [];

  constructor(size: number, max: number) {
    this.#size = size;
    this.#max = max;
  }

  /** Buffers kept now. */
  get kept(): number {
    return this.#free.length;
  }

  /** A buffer of this list's size: a kept one, or a new one. */
  take(): Uint8Array<ArrayBuffer> {
    return this.#free.pop() ?? new Uint8Array(this.#size);
  }

  /** A kept buffer, if there is one; never a new one. */
  takeKept(): Uint8Array<ArrayBuffer> | undefined {
    return this.#free.pop();
  }

  /** Keeps `buffer` (of this list's size) for the next {@link take}, if there is room. */
  give(buffer: Uint8Array<ArrayBuffer>): void {
    if (buffer.length === this.#size && this.#free.length < this.#max) this.#free.push(buffer);
  }
}

const freeBuffers = new Map(
  Object.entries(FREE_BUFFERS_PER_SIZE).map(([size, max]) => {
    const bytes = Number(size);
    return [bytes, new FreeBuffers(bytes, max)] as const;
  }),
);

function takeBuffer(size: number): Uint8Array<ArrayBuffer> {
  return freeBuffers.get(size)?.take() ?? new Uint8Array(size);
}

function giveBuffer(buffer: Uint8Array<ArrayBuffer>): void {
  freeBuffers.get(buffer.length)?.give(buffer);
}

/**
 * Most burst buffers parked in pending reads at once, process-wide: a direction that just read a
 * burst keeps its 64 KiB buffer for its next read (a keep-alive client's next answer then comes
 * in one read) while this budget lasts; past it, directions go back to their small buffers. So
 * idle sessions hold at most this many burst buffers in all (16 MiB), whatever their number,
 * besides one for each direction whose last read exactly filled its 64 KiB buffer (its next read
 * waits in that buffer, as a stream's does).
 */
export const PARKED_BURST_BUFFERS = 256;
let parked = 0;

/**
 * Most of the parked places that new clients' first reads may hold at once (see the
 * `firstReadLarge` option of {@link ReadBuffers}): clients that connect and send nothing (a
 * client-side pool, a scanner) hold one each until they send, and must not take the places of
 * keep-alive directions between their bursts.
 */
export const FIRST_READS_PARKED = 64;
let firstReadsParked = 0;

/** Kept 64 KiB buffers in the shared free list now (tests). */
export function keptBurstBuffers(): number {
  return freeBuffers.get(BURST_READ_BUFFER)?.kept ?? 0;
}

/** Burst buffers parked in pending reads now, process-wide (at most {@link PARKED_BURST_BUFFERS}). */
export function parkedBurstBuffers(): number {
  return parked;
}

/**
 * What one direction that reads ahead holds at most: the 256 KiB chunk being written and the
 * 256 KiB being read behind it. {@link setReadAheadMemory} counts this much per direction.
 */
export const READ_AHEAD_PER_DIRECTION = 2 * MAX_READ_BUFFER;
/** The default of `--read-ahead-memory`: 32 MiB, room for 64 directions reading ahead at once. */
export const DEFAULT_READ_AHEAD_MEMORY = 32 * 1024 * 1024;
let readAheadMemory = DEFAULT_READ_AHEAD_MEMORY;
let readingAhead = 0;

/**
 * Sets the process-wide budget for reading ahead (`--read-ahead-memory`), in bytes, counted in
 * places of {@link READ_AHEAD_PER_DIRECTION} (rounded down): once two reads in a row have filled
 * their buffers, the second without waiting ({@link STREAM_GAP_MS}; a stream), a direction reads
 * its next chunk into a second buffer while the last one is written, and grows its buffers to
 * 256 KiB, only with a place on this budget, which it keeps until a read does not fill its buffer.
 * A direction without one reads into a single 64 KiB buffer and waits for each write before
 * reading again. So a direction whose writes are blocked (a client or an upstream that stopped
 * reading) holds at most 64 KiB of chunks besides the budget, whatever the number of such
 * sessions. 0 never reads ahead. Directions reading ahead now keep their places. The command line
 * sets it in `main.ts`; a `ProxyServer` does not (it is the process's, not the server's).
 */
export function setReadAheadMemory(bytes: number): void {
  readAheadMemory = bytes;
}

/** The read-ahead budget in force, in bytes ({@link setReadAheadMemory}). */
export function readAheadBudget(): number {
  return readAheadMemory;
}

/** Bytes of the read-ahead budget taken now, process-wide ({@link READ_AHEAD_PER_DIRECTION} per direction). */
export function readAheadInUse(): number {
  return readingAhead;
}

/**
 * A full read that waited longer than this for its bytes does not continue a stream: two answers
 * of 64 KiB to two clients of a pooled connection, seconds apart, take no read-ahead place. Bytes
 * already in the socket come within an event-loop turn; under a load whose turns take longer (or
 * in a long garbage collection) a stream may lose its place: it then reads 64 KiB at a time,
 * slower but never wrong.
 */
const STREAM_GAP_MS = 5;

/** The size of the next read buffer after a read that filled one of `size`. */
function nextSize(size: number): number {
  return size === MIN_READ_BUFFER ? BURST_READ_BUFFER : MAX_READ_BUFFER;
}

/**
 * How many microtasks a read of bytes already in the socket takes to settle: Deno polls a read
 * once when it starts, so such a read settles at once (measured: two microtasks). Waiting this long
 * for the read behind a full small buffer tells "the rest of the burst is here" from "the client
 * sent exactly that much" without a timer. If a later Deno took longer, chunks would only be
 * written in two writes again, never lost or reordered.
 */
const READY_READ_MICROTASKS = 4;

/**
 * The runtime's own read and write ops, behind `Deno.Conn.read` and `write`. `read` wraps the op
 * in an async function that also files each pending read in a `Set` (for `unref()`, which the
 * proxy never calls), and `write` in another async function: with a connection per request, that
 * was a fifth of what a session allocated (V8's sampling heap profiler: 13.5 KB a request through
 * `reuse --protocol redis`, 10.9 KB with the ops called directly), and so of the garbage
 * collector's work. Found by feature detection on `Deno[Deno.internal].core` (Deno 2.x); a runtime
 * without it, and sockets without a resource id (TLS), use the public methods.
 * `tests/read_buffers_test.ts` fails if this runtime has lost it.
 */
interface RuntimeOps {
  /** Resolves with the bytes read, 0 at the end of the stream. */
  read(rid: number, p: Uint8Array): Promise<number>;
  write(rid: number, p: Uint8Array): Promise<number>;
  /** Where a `Deno.Conn` keeps its resource id. */
  internalRidSymbol: symbol;
}

function findRuntimeOps(): RuntimeOps | undefined {
  const internal = Object.getOwnPropertySymbols(Deno).find((s) =>
    s.description === "Deno.internal"
  );
  if (internal === undefined) return undefined;
  const core = (Deno as unknown as Record<symbol, { core?: Partial<RuntimeOps> } | undefined>)[
    internal
  ]?.core;
  const { read, write, internalRidSymbol } = core ?? {};
  if (
    typeof read !== "function" || typeof write !== "function" ||
    typeof internalRidSymbol !== "symbol"
  ) return undefined;
  return { read, write, internalRidSymbol };
}

const runtimeOps = findRuntimeOps();

/** Whether reads and writes of `Deno.Conn`s call the runtime's ops directly (see above). */
export function usesRuntimeOps(): boolean {
  return runtimeOps !== undefined;
}

function ridOf(conn: object): number | undefined {
  if (runtimeOps === undefined) return undefined;
  const rid = (conn as Record<symbol, unknown>)[runtimeOps.internalRidSymbol];
  return typeof rid === "number" ? rid : undefined;
}

/**
 * Reads into `p`, like `conn.read(p)`: resolves with the number of bytes, or with 0 or `null` at
 * the end of the stream (the runtime's op says 0, `Deno.Conn.read` and `SocketConn` say `null`).
 */
export function readConn(conn: ByteSource, p: Uint8Array): Promise<number | null> {
  const rid = ridOf(conn);
  return rid === undefined ? conn.read(p) : runtimeOps!.read(rid, p);
}

/** Writes some of `p`, like `conn.write(p)`: resolves with how many bytes were taken. */
export function writeConn(conn: ByteConn, p: Uint8Array): Promise<number> {
  const rid = ridOf(conn);
  return rid === undefined ? conn.write(p) : runtimeOps!.write(rid, p);
}

/** What {@link ReadBuffers.read} reads from: a socket. */
export interface ByteSource {
  read(p: Uint8Array): Promise<number | null>;
}

/**
 * The read buffers of one direction of a relay. A quiet direction reads into its own small
 * buffer ({@link MIN_READ_BUFFER}), so an idle session holds little; the caller waits for each
 * write before reading again. A read that fills the small buffer means a burst: {@link read} copies
 * those bytes into the start of a large buffer ({@link BURST_READ_BUFFER}) taken from a shared free
 * list and reads the rest behind them; when the rest was already in the socket (a request or an
 * answer of up to 64 KiB sent at once), the whole burst is one chunk, so one write. While reads
 * keep filling their buffers (two in a row), the next read goes into another large buffer
 * ({@link MAX_READ_BUFFER}) while the write of the previous chunk is in flight, if the
 * process-wide read-ahead budget has a place ({@link setReadAheadMemory}); so at most two buffers
 * are in use. Before that, or without a place, the direction reads into one 64 KiB buffer and
 * waits for each write. A read that does not fill a large buffer ends the burst: the direction
 * keeps a 64 KiB buffer for its next read if the process-wide parked budget
 * ({@link PARKED_BURST_BUFFERS}) allows (a keep-alive client's next answer then takes one read),
 * or returns to its small buffer (always, after a read the small buffer would have held); so idle
 * directions hold at most that many large buffers in all (besides those whose last read exactly
 * filled a 64 KiB buffer, one each).
 * A large buffer goes back to the free list once no read or write uses it.
 *
 * The caller's contract, which makes sharing buffers safe: when it calls {@link rotate} for a
 * chunk, the write of the chunk before has finished; and when `rotate` returns true, it waits for
 * this chunk's write before it reads again.
 */
export class ReadBuffers {
  readonly #small: Uint8Array<ArrayBuffer> = new Uint8Array(MIN_READ_BUFFER);
  #current: Uint8Array<ArrayBuffer> = this.#small;
  /** Where the last chunk starts in {@link current} (after a full small buffer's copy). */
  #chunkStart = 0;
  /**
   * The read of the rest of a burst into {@link current} behind a full small buffer's bytes,
   * still under way when that chunk was handed out; the next {@link read} returns its chunk.
   */
  #rest: Promise<number | null> | undefined;
  /** Handed to a write by the last {@link rotate}, which did not wait for it. */
  #writing: Uint8Array<ArrayBuffer> | undefined;
  /** A large buffer whose write the caller is waiting for: free once the next read starts. */
  #freeOnNextRead: Uint8Array<ArrayBuffer> | undefined;
  /** Whether {@link current} is a burst buffer kept past its burst, on the parked budget. */
  #parked = false;
  /** Whether this direction holds a place on the read-ahead budget ({@link setReadAheadMemory}). */
  #readsAhead = false;
  /**
   * Reads in a row that filled their buffers: a place on the read-ahead budget is taken at the
   * second (a stream), not at the first (one answer of exactly a buffer's size, then quiet).
   */
  #fullReadsInARow = 0;
  /** When the last read started, taken only while a streak of full reads runs. */
  #readStartedAt = 0;
  /** Whether this direction's parked place is one of the {@link FIRST_READS_PARKED}. */
  #firstRead = false;
  #lastFilled = false;

  /**
   * @param options.firstReadLarge The first read goes into a 64 KiB buffer, if the free list keeps
   * one and a place is left among the {@link FIRST_READS_PARKED} on the parked budget: for a new
   * client, whose first request is usually in the socket already, so that a request of more than
   * 256 bytes takes one read, not two (and no copy). After it the direction goes on as any other;
   * one whose first read was small goes back to 256 bytes.
   */
  constructor(options: { firstReadLarge?: boolean } = {}) {
    if (
      options.firstReadLarge !== true || parked >= PARKED_BURST_BUFFERS ||
      firstReadsParked >= FIRST_READS_PARKED
    ) return;
    // Only a kept buffer: a new one per session would be garbage by the thousand when most
    // first requests are small (measured: 3 KiB more resident memory per held session).
    const kept = freeBuffers.get(BURST_READ_BUFFER)?.takeKept();
    if (kept === undefined) return;
    parked++;
    firstReadsParked++;
    this.#parked = true; // given back by the first rotate(), or dispose()
    this.#firstRead = true;
    this.#current = kept;
  }

  /**
   * Whether the last chunk {@link read} returned filled its buffer, or the rest of its burst is
   * still being read: more bytes were probably waiting.
   */
  get lastReadFilled(): boolean {
    return this.#lastFilled;
  }

  /** The buffer to read into next, for a caller that reads by itself (not with {@link read}). */
  get current(): Uint8Array<ArrayBuffer> {
    if (this.#fullReadsInARow > 0 && !this.#readsAhead) this.#readStartedAt = performance.now();
    if (this.#freeOnNextRead !== undefined) {
      this.#give(this.#freeOnNextRead);
      this.#freeOnNextRead = undefined;
    }
    return this.#current;
  }

  /**
   * Reads the next chunk from `source`: a view into these buffers, valid until {@link rotate}
   * says otherwise; `null` at the end of the stream. A read that fills the small buffer is
   * followed at once by a read of the rest of the burst behind it, see the class documentation.
   * The relay's pumps use {@link next}, {@link chunk} and {@link readRest} instead, which hold no
   * async frame of their own in a pending read (a quiet session's memory).
   *
   * @throws whatever `source.read` throws.
   */
  async read(source: ByteSource): Promise<Uint8Array<ArrayBuffer> | null> {
    const n = await this.next(source);
    if (n === null || n === 0) return null;
    return this.chunk(n) ?? await this.readRest(source);
  }

  /**
   * Starts the next read from `source` (or hands back the read of the rest of a burst still
   * under way): the op's own promise, so that a pending read costs nothing more. Follow it with
   * {@link chunk}.
   */
  next(source: ByteSource): Promise<number | null> {
    const rest = this.#rest;
    if (rest !== undefined) {
      // The rest of a burst whose first bytes went out alone: it lands behind them.
      this.#rest = undefined;
      this.#chunkStart = MIN_READ_BUFFER;
      return rest;
    }
    this.#chunkStart = 0;
    return readConn(source, this.current);
  }

  /**
   * The chunk that the read started by {@link next} brought, `n` bytes; `undefined` when they
   * filled the small buffer, and the caller goes on with {@link readRest}.
   */
  chunk(n: number): Uint8Array<ArrayBuffer> | undefined {
    const buffer = this.#current;
    const end = this.#chunkStart + n;
    this.#lastFilled = end === buffer.length;
    if (buffer === this.#small && end === buffer.length) return undefined;
    return buffer.subarray(this.#chunkStart, end);
  }

  /**
   * The small buffer is full: reads the rest of the burst behind a copy of it. That read may wait
   * (the client sent exactly 256 bytes and went quiet), holding its 64 KiB buffer all that time, so
   * it takes a place on the parked budget first; past the budget, the 256 bytes go on alone and the
   * next read goes into a burst buffer only after them, as a plain burst.
   */
  async readRest(source: ByteSource): Promise<Uint8Array<ArrayBuffer>> {
    if (parked >= PARKED_BURST_BUFFERS) return this.#small;
    parked++;
    this.#parked = true; // given back by the rotate() of the chunk this read brings, or dispose()
    const large = takeBuffer(BURST_READ_BUFFER);
    large.set(this.#small);
    this.#current = large;
    let settled = false;
    let restLength: number | null = null;
    const rest = readConn(source, large.subarray(MIN_READ_BUFFER));
    rest.then((n) => {
      settled = true;
      restLength = n;
    }, () => {
      settled = true;
    });
    for (let i = 0; i < READY_READ_MICROTASKS && !settled; i++) await null;
    if (settled && restLength !== null && restLength !== 0) {
      this.#lastFilled = MIN_READ_BUFFER + restLength === large.length;
      return large.subarray(0, MIN_READ_BUFFER + restLength);
    }
    // Not there yet, or the end of the stream, or an error: the first bytes go out alone, and
    // the next read() returns what this read brings.
    this.#rest = rest;
    return large.subarray(0, MIN_READ_BUFFER);
  }

  /**
   * Call after the chunk of the last read, `bytesRead` bytes, was handed to a write that may
   * still be in flight: picks the next read buffer.
   *
   * @returns true when the caller must wait for that write before reading again.
   */
  rotate(bytesRead: number): boolean {
    const filled = this.#current;
    const end = this.#chunkStart + bytesRead;
    this.#chunkStart = 0;
    // The rest of this burst is being read into the same buffer, behind this chunk.
    if (this.#rest !== undefined) return true;
    const written = this.#writing; // its write has finished: the caller's contract
    this.#writing = undefined;
    this.#unpark();
    if (end < filled.length) {
      this.#fullReadsInARow = 0;
      this.#stopReadingAhead();
      // Not pressing: one buffer will do, read again once this write is done.
      if (written !== undefined) this.#give(written);
      if (filled === this.#small) return true;
      if (end <= MIN_READ_BUFFER) {
        // What the small buffer would have held: not a burst, nothing to keep a large buffer for.
        this.#current = this.#small;
        this.#freeOnNextRead = filled;
        return true;
      }
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
    if (
      this.#fullReadsInARow > 0 && !this.#readsAhead &&
      performance.now() - this.#readStartedAt > STREAM_GAP_MS
    ) {
      this.#fullReadsInARow = 0; // it waited for its bytes: a new burst, not the same stream
    }
    this.#fullReadsInARow++;
    if (!this.#readsAhead && (this.#fullReadsInARow < 2 || !this.#startReadingAhead())) {
      // A burst, but not a stream yet, or the read-ahead budget is spent: one 64 KiB buffer, each
      // chunk written before the next read. (No write is in flight: only a direction reading
      // ahead has one.) Its next read may wait, holding 64 KiB, like a write that is blocked.
      if (filled.length === BURST_READ_BUFFER) return true;
      this.#current = takeBuffer(BURST_READ_BUFFER);
      if (filled !== this.#small) this.#freeOnNextRead = filled;
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
   * The direction is done: its reads have ended (the caller reads no more) and it waited for the
   * writes that {@link rotate} asked it to. Gives back its place on the parked budget and the large
   * buffers no read or write can still hold; one whose write may be in flight is left to the
   * garbage collector.
   */
  dispose(): void {
    this.#unpark();
    this.#stopReadingAhead();
    if (this.#freeOnNextRead !== undefined) this.#give(this.#freeOnNextRead);
    this.#freeOnNextRead = undefined;
    // A read of the rest of a burst may still be under way into the current buffer.
    if (this.#rest === undefined && this.#current !== this.#writing) this.#give(this.#current);
    this.#current = this.#small;
  }

  /** Takes a place on the read-ahead budget, if there is one left. */
  #startReadingAhead(): boolean {
    if (readingAhead + READ_AHEAD_PER_DIRECTION > readAheadMemory) return false;
    readingAhead += READ_AHEAD_PER_DIRECTION;
    this.#readsAhead = true;
    return true;
  }

  #stopReadingAhead(): void {
    if (!this.#readsAhead) return;
    this.#readsAhead = false;
    readingAhead -= READ_AHEAD_PER_DIRECTION;
  }

  #unpark(): void {
    if (!this.#parked) return;
    this.#parked = false;
    parked--;
    if (this.#firstRead) {
      this.#firstRead = false;
      firstReadsParked--;
    }
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

/** Whether `error` says the process or the system is out of file descriptors. */
export function isOutOfDescriptors(error: unknown): boolean {
  const code = (error as { code?: unknown } | null)?.code;
  return code === "EMFILE" || code === "ENFILE" ||
    (error instanceof Error && /os error 2[34]\b/.test(error.message));
}

/** The first pause after a failed accept; it doubles while accepts keep failing. */
export const ACCEPT_RETRY_MS = 50;
/** The longest pause between accepts that fail (out of file descriptors). */
export const ACCEPT_RETRY_MAX_MS = 1_000;
/** How long accepts must have worked before an episode of failures counts as over. */
export const ACCEPT_RECOVERED_MS = 1_000;

/**
 * Whether a failed accept was only a client that reset before it was accepted (skip it). Deno
 * reports one whose reset came while it waited in the backlog as `NotConnected` (ENOTCONN, from
 * the `getpeername` after `accept4`), not as an aborted connection.
 */
export function isGoneBeforeAccept(error: unknown): boolean {
  return error instanceof Deno.errors.ConnectionAborted ||
    error instanceof Deno.errors.ConnectionReset || error instanceof Deno.errors.NotConnected;
}

/**
 * Episodes of failing accepts (out of descriptors), for a listener's accept loop: one warning
 * per episode, pauses of {@link ACCEPT_RETRY_MS} doubling to {@link ACCEPT_RETRY_MAX_MS} while
 * accepts fail, and the episode over once accepts have worked for {@link ACCEPT_RECOVERED_MS}:
 * from the first accept that worked after the last failure, with no failure since. (One accept
 * that works after a full pause is not enough: under a flood the next one fails at once.)
 */
export class AcceptFailures {
  readonly #now: () => number;
  #pauseMs = ACCEPT_RETRY_MS;
  #failedSince: number | undefined;
  #lastFailureAt = 0;
  /** The first accept that worked since the last failure, if any did. */
  #workingSince: number | undefined;

  /** @param now The clock, in milliseconds (tests give their own). */
  constructor(now: () => number = () => performance.now()) {
    this.#now = now;
  }

  /**
   * A failed accept: whether it starts an episode (warn then), how long to pause, and, when
   * accepts had worked for a while since the last failure, how long that earlier episode lasted
   * (it was over: say so before the warning of the new one).
   */
  failed(): { first: boolean; pauseMs: number; endedEpisodeMs?: number } {
    const now = this.#now();
    let endedEpisodeMs: number | undefined;
    if (this.#failedSince !== undefined && this.#recovered(now)) {
      endedEpisodeMs = this.#lastFailureAt - this.#failedSince;
      this.#failedSince = undefined;
      this.#pauseMs = ACCEPT_RETRY_MS;
    }
    this.#lastFailureAt = now;
    this.#workingSince = undefined;
    const first = this.#failedSince === undefined;
    if (first) this.#failedSince = this.#lastFailureAt;
    const pauseMs = this.#pauseMs;
    this.#pauseMs = Math.min(this.#pauseMs * 2, ACCEPT_RETRY_MAX_MS);
    return { first, pauseMs, endedEpisodeMs };
  }

  /** An accept worked: how long the episode lasted, when this ends one; else `undefined`. */
  succeeded(): number | undefined {
    const now = this.#now();
    this.#workingSince ??= now;
    const since = this.#failedSince;
    if (since === undefined || !this.#recovered(now)) return undefined;
    this.#failedSince = undefined;
    this.#pauseMs = ACCEPT_RETRY_MS;
    return this.#lastFailureAt - since;
  }

  /** Whether accepts have worked for {@link ACCEPT_RECOVERED_MS} by `now`. */
  #recovered(now: number): boolean {
    return this.#workingSince !== undefined && now - this.#workingSince >= ACCEPT_RECOVERED_MS;
  }
}

/**
 * A wait that can be cut short, for an accept loop's pause: {@link wait} resolves after `ms`, or
 * at once when {@link wake} is called (the listener is closing). One wait at a time.
 */
export class WakeablePause {
  #wake: (() => void) | undefined;

  /** Waits `ms`, or less if {@link wake} is called meanwhile. */
  async wait(ms: number): Promise<void> {
    let timer: ReturnType<typeof setTimeout> | undefined;
    await new Promise<void>((resolve) => {
      this.#wake = resolve;
      timer = setTimeout(resolve, ms);
    });
    clearTimeout(timer);
    this.#wake = undefined;
  }

  /** Ends the wait under way, if any. */
  wake(): void {
    this.#wake?.();
  }
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

/** Why binding a listen address failed, in a few words (`address already in use`, ...). */
export function describeListenError(error: unknown): string {
  // node:net reports the same as codes (the TLS listener is node:tls's).
  const code = (error as { code?: unknown } | undefined)?.code;
  if (error instanceof Deno.errors.AddrInUse || code === "EADDRINUSE") {
    return "address already in use";
  }
  if (error instanceof Deno.errors.AddrNotAvailable || code === "EADDRNOTAVAIL") {
    return "address not available on this host";
  }
  if (
    error instanceof Deno.errors.PermissionDenied || error instanceof Deno.errors.NotCapable ||
    code === "EACCES"
  ) {
    return "permission denied";
  }
  return describeError(error);
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

/**
 * Closes `conn`: cleanly, or with `cut`, without the clean end of stream where the socket can
 * tell (over TLS, no close_notify; {@link ByteConn.abort}), so that its peer sees a stream cut
 * short, not a complete one. Plain TCP has only its FIN either way. Never throws.
 */
export function closeOrCut(conn: ByteConn, cut: boolean): void {
  if (!cut || conn.abort === undefined) {
    closeQuietly(conn);
    return;
  }
  try {
    conn.abort();
  } catch {
    // already closed
  }
}
