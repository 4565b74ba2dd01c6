/**
 * Misbehaving upstream servers for black-box fault tests, on real loopback sockets: one that
 * closes every connection at once, one that answers a single error line and closes, one whose
 * greeting is too large to keep, one that never reads, one that reads and never answers, and
 * echo servers that fail some of their connections. Each is a {@link TestUpstream} with a
 * per-connection behaviour, counts what it accepted, and is closed with `await using`.
 *
 * Also: the open descriptors of a process (from `/proc`), the accept rate of an upstream over a
 * window, and whether python3 (needed to send a reset) is there.
 *
 * @example
 * ```ts ignore
 * import { closeAtOnce, openDescriptors } from "./_faults.ts";
 *
 * await using upstream = closeAtOnce();
 * // ... run the proxy in front of upstream.address
 * console.log(upstream.accepted, openDescriptors(Deno.pid));
 * ```
 *
 * @module
 */

import { formatHostPort } from "../src/address.ts";
import { delay, echo, encoder, TestUpstream, writeAll } from "./_net.ts";

/**
 * What a {@link FaultyUpstream} does with one accepted connection. `closing` resolves when the
 * fixture is being closed (a behaviour that holds a connection open waits for it). The
 * connection is closed when the returned promise settles (a rejection is ignored).
 */
export type FaultBehaviour = (
  conn: Deno.TcpConn,
  index: number,
  closing: Promise<void>,
) => Promise<void>;

/**
 * An upstream on `127.0.0.1:0` that serves every accepted connection with a
 * {@link FaultBehaviour}, and counts connections: accepted so far, open now, most open at once
 * (a connection counts as open until its behaviour returns).
 */
export class FaultyUpstream {
  readonly #upstream: TestUpstream;
  readonly #closing: Promise<void>;
  #signalClosing: () => void = () => {};
  #open = 0;
  #maxOpen = 0;

  /** Starts listening on `127.0.0.1` on a port the system picks. */
  constructor(behaviour: FaultBehaviour) {
    this.#closing = new Promise((resolve) => this.#signalClosing = resolve);
    this.#upstream = new TestUpstream(async (conn, index) => {
      this.#open++;
      this.#maxOpen = Math.max(this.#maxOpen, this.#open);
      try {
        await behaviour(conn, index, this.#closing);
      } finally {
        this.#open--;
      }
    });
  }

  /** `127.0.0.1:PORT`, as the proxy's `--upstream` takes it. */
  get address(): string {
    return formatHostPort(this.#upstream.address);
  }

  /** The port it listens on. */
  get port(): number {
    return this.#upstream.address.port;
  }

  /** Connections accepted so far. */
  get accepted(): number {
    return this.#upstream.accepted;
  }

  /** Connections whose behaviour is still running. */
  get open(): number {
    return this.#open;
  }

  /** The most connections open at once so far. */
  get maxOpen(): number {
    return this.#maxOpen;
  }

  /** Stops listening, ends every behaviour, closes every connection and waits for all of it. */
  close(): Promise<void> {
    this.#signalClosing();
    return this.#upstream.close();
  }

  /** For `await using`: {@link close}. */
  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }
}

/** Reads and discards everything until EOF or an error (the peer went away). */
async function discardUntilClosed(conn: Deno.TcpConn): Promise<void> {
  const buffer = new Uint8Array(16 * 1024);
  while (await conn.read(buffer) !== null) {
    // discard
  }
}

/** Fixture 1: accepts and closes every connection at once, without reading or writing. */
export function closeAtOnce(): FaultyUpstream {
  return new FaultyUpstream(() => Promise.resolve());
}

/** The line {@link refuseWithError} sends: what Redis says when it has too many clients. */
export const MAX_CLIENTS_ERROR = "-ERR max number of clients reached\r\n";

/** Fixture 2: accepts, writes one error line (default {@link MAX_CLIENTS_ERROR}), closes. */
export function refuseWithError(line: string = MAX_CLIENTS_ERROR): FaultyUpstream {
  const bytes = encoder.encode(line);
  return new FaultyUpstream((conn) => writeAll(conn, bytes));
}

/**
 * Fixture 3: accepts and sends a greeting of `bytes` bytes (default 100 KiB, more than the
 * proxy keeps from an upstream that speaks first), then keeps the connection open: it reads and
 * discards until the peer goes away, and never closes first.
 */
export function bigGreeting(bytes: number = 100 * 1024): FaultyUpstream {
  const greeting = new Uint8Array(bytes).fill(0x47); // "G"
  return new FaultyUpstream(async (conn) => {
    await writeAll(conn, greeting);
    await discardUntilClosed(conn);
  });
}

/**
 * Fixture 4: accepts and never reads or writes; holds every connection open until the fixture
 * closes (so what is sent to it fills the socket buffers and then blocks the sender).
 */
export function neverReads(): FaultyUpstream {
  return new FaultyUpstream((_conn, _index, closing) => closing);
}

/** Fixture 5: accepts and reads everything, never writes a byte; closes after the peer's EOF. */
export function neverAnswers(): FaultyUpstream {
  return new FaultyUpstream(discardUntilClosed);
}

/**
 * Fixture 6 (for a soak): echoes every byte, but closes every `every`-th accepted connection
 * (default the fifth: indexes 4, 9, 14, ...) at once, without reading.
 */
export function echoClosingEvery(every = 5): FaultyUpstream {
  return new FaultyUpstream(async (conn, index) => {
    if (index % every === every - 1) return;
    await echo(conn);
  });
}

/** Closes its first `failures` connections at once (as {@link closeAtOnce}), echoes after that. */
export function failFirstThenEcho(failures: number): FaultyUpstream {
  return new FaultyUpstream(async (conn, index) => {
    if (index < failures) return;
    await echo(conn);
  });
}

/**
 * Echoes every byte; after the peer's EOF keeps its own side open (sends no FIN) until the
 * fixture closes, like a server that ignores a half-close.
 */
export function echoIgnoringEof(): FaultyUpstream {
  return new FaultyUpstream(async (conn, _index, closing) => {
    await echo(conn);
    await closing;
  });
}

/** A well-behaved echo server that also counts the connections open at once. */
export function countingEcho(): FaultyUpstream {
  return new FaultyUpstream(echo);
}

/**
 * The entries of `/proc/PID/fd`, listed by `ls` in a child process: Deno asks for `--allow-all`
 * to read `/proc` itself, and the tests run with `--allow-run`. `undefined` when it cannot be
 * listed (no such process, no `/proc`, no `ls`).
 */
function listDescriptors(pid: number): string[] | undefined {
  try {
    const { success, stdout } = new Deno.Command("ls", {
      args: ["-1", `/proc/${pid}/fd`],
      stdin: "null",
      stdout: "piped",
      stderr: "null",
    }).outputSync();
    if (!success) return undefined;
    return new TextDecoder().decode(stdout).split("\n").filter((name) => name !== "");
  } catch {
    return undefined;
  }
}

/** Whether the open descriptors of a process can be counted here (Linux `/proc`, and `ls`). */
export function procAvailable(): boolean {
  return listDescriptors(Deno.pid) !== undefined;
}

/**
 * The number of open file descriptors of process `pid`: the entries of `/proc/PID/fd`.
 *
 * @throws {Error} when they cannot be listed (the process is gone, or there is no `/proc`).
 */
export function openDescriptors(pid: number): number {
  const entries = listDescriptors(pid);
  if (entries === undefined) {
    throw new Error(`cannot list /proc/${pid}/fd: the process is gone or there is no /proc`);
  }
  return entries.length;
}

/**
 * Measures how many connections `upstream` accepts per second over the next `windowMs`
 * (polled every 50 ms). With `giveUpAbove`, returns early once more than that many were
 * accepted in the window (a dial storm: no need to let it run on), with the rate so far.
 *
 * @returns Accepts in the window divided by the time waited, in seconds.
 */
export async function acceptsPerSecond(
  upstream: { readonly accepted: number },
  windowMs: number,
  giveUpAbove = Infinity,
): Promise<number> {
  const before = upstream.accepted;
  const started = performance.now();
  const deadline = started + windowMs;
  for (let now = started; now < deadline; now = performance.now()) {
    await delay(Math.min(50, deadline - now));
    if (upstream.accepted - before > giveUpAbove) break;
  }
  const seconds = Math.max(performance.now() - started, 1) / 1000;
  return (upstream.accepted - before) / seconds;
}

/** Whether `python3` runs here (the resetting clients in `_rst_client.py` need it). */
export function havePython(): boolean {
  try {
    return new Deno.Command("python3", { args: ["--version"], stdout: "null", stderr: "null" })
      .outputSync().success;
  } catch {
    return false;
  }
}

/** The path of `_rst_client.py`, the clients that end their connection with a reset. */
export const RST_CLIENT: string = decodeURIComponent(
  new URL("./_rst_client.py", import.meta.url).pathname,
);

/** `_rst_peer.py`: a TCP peer that ends its connection with a reset, which Deno cannot do. */
export const RST_PEER: string = new URL("./_rst_peer.py", import.meta.url).pathname;

/** A running `_rst_peer.py server`: its port; disposing of it stops it. */
export interface ResettingUpstream extends AsyncDisposable {
  readonly address: { hostname: string; port: number };
}

/**
 * Starts `_rst_peer.py server`: it accepts one connection, reads a little, sends `answer` if
 * given, then resets the connection. Needs python3 ({@link havePython}).
 */
export async function startResettingUpstream(answer?: string): Promise<ResettingUpstream> {
  const child = new Deno.Command("python3", {
    args: [RST_PEER, "server", ...(answer === undefined ? [] : [answer])],
    stdout: "piped",
    stderr: "null",
  }).spawn();
  const lines = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
  const stop = async () => {
    await lines.cancel();
    try {
      child.kill();
    } catch {
      // exited
    }
    await child.status;
  };
  try {
    let text = "";
    while (!text.includes("\n")) {
      const { value, done } = await lines.read();
      if (done) throw new Error(`_rst_peer.py exited before saying its port: ${text}`);
      text += value;
    }
    return {
      address: { hostname: "127.0.0.1", port: Number(text.trim()) },
      [Symbol.asyncDispose]: stop,
    };
  } catch (error) {
    await stop();
    throw error;
  }
}
