/**
 * Helpers for tests that run the proxy as a child process (`main.ts` under `deno run`, or the
 * compiled binary): spawn it with stderr collected line by line, wait for a log line, stop it;
 * and a small echo upstream plus a client round trip, on real loopback sockets.
 *
 * Every helper finishes what it starts (child status awaited, stderr read to its end, sockets
 * closed, timers cleared), so tests stay quiet under the op and resource sanitizers.
 *
 * @example
 * ```ts ignore
 * import { EchoUpstream, MAIN_TS, ProxyProcess, relayOnce } from "./_proxy_process.ts";
 *
 * await using upstream = EchoUpstream.start();
 * await using proxy = ProxyProcess.spawnMain([
 *   "--listen", "127.0.0.1:0", "--upstream", upstream.address,
 * ]);
 * const port = await proxy.listeningPort();
 * console.log(await relayOnce(port, "hello")); // "hello"
 * proxy.kill("SIGTERM");
 * console.log((await proxy.exited()).code); // 0
 * ```
 *
 * @module
 */

import { formatHostPort } from "../src/address.ts";
import { closeQuietly, decoder, echo, encoder, TestUpstream, within, writeAll } from "./_net.ts";

/** The repository's root directory (with a trailing slash). */
export const ROOT_DIR: string = decodeURIComponent(new URL("../", import.meta.url).pathname);
/** The absolute path of `main.ts`. */
export const MAIN_TS: string = decodeURIComponent(new URL("../main.ts", import.meta.url).pathname);

/** Removes ANSI colour codes (Deno colours its own diagnostics even into a pipe). */
export function stripAnsi(text: string): string {
  // deno-lint-ignore no-control-regex
  return text.replace(/\x1b\[[0-9;]*m/g, "");
}

/** A line found by {@link ProxyProcess.waitForLine}. */
export interface FoundLine {
  /** The whole line. */
  line: string;
  /** Its index in {@link ProxyProcess.lines}. */
  index: number;
  /** The match of the pattern. */
  match: RegExpExecArray;
}

/**
 * A child process whose stderr is read line by line as it comes (`stdout` is discarded, `stdin`
 * closed). Dispose of it (`await using`, or {@link ProxyProcess.dispose}) in every case: that
 * kills it if it still runs, awaits its status and reads stderr to its end.
 */
export class ProxyProcess {
  /** The stderr lines so far, without their newlines. */
  readonly lines: string[] = [];
  readonly #child: Deno.ChildProcess;
  readonly #reading: Promise<void>;
  readonly #status: Promise<Deno.CommandStatus>;
  readonly #wakeups = new Set<() => void>();
  #eof = false;
  #exited = false;

  private constructor(command: string, args: string[], env?: Record<string, string>) {
    this.#child = new Deno.Command(command, {
      args,
      cwd: ROOT_DIR,
      env,
      stdin: "null",
      stdout: "null",
      stderr: "piped",
    }).spawn();
    this.#status = this.#child.status.then((status) => {
      this.#exited = true;
      return status;
    });
    this.#reading = this.#readLines();
  }

  /** Spawns `command` with `args`, from the repository root. */
  static spawn(command: string, args: string[], env?: Record<string, string>): ProxyProcess {
    return new ProxyProcess(command, args, env);
  }

  /** Spawns `deno run --quiet --allow-net main.ts ...args` with the running Deno. */
  static spawnMain(args: string[]): ProxyProcess {
    return new ProxyProcess(Deno.execPath(), ["run", "--quiet", "--allow-net", MAIN_TS, ...args]);
  }

  /** The child's process id. */
  get pid(): number {
    return this.#child.pid;
  }

  /** Whether the child has exited. */
  get hasExited(): boolean {
    return this.#exited;
  }

  /** Everything on stderr so far, for assertion messages. */
  get stderr(): string {
    return this.lines.join("\n");
  }

  /**
   * Waits for a stderr line, at index `from` or later, that matches `pattern`.
   *
   * @throws {Error} (with stderr so far) after `timeoutMs`, or when stderr ends without one.
   */
  async waitForLine(pattern: RegExp, timeoutMs = 10_000, from = 0): Promise<FoundLine> {
    let timedOut = false;
    let wake: () => void = () => {};
    const timer = setTimeout(() => {
      timedOut = true;
      wake();
    }, timeoutMs);
    try {
      for (let index = from;;) {
        for (; index < this.lines.length; index++) {
          const match = pattern.exec(this.lines[index]);
          if (match !== null) return { line: this.lines[index], index, match };
        }
        if (this.#eof || timedOut) {
          const why = this.#eof ? "stderr ended" : `${timeoutMs}ms passed`;
          throw new Error(`${why} without a line matching ${pattern}; stderr:\n${this.stderr}`);
        }
        await new Promise<void>((resolve) => {
          wake = resolve;
          this.#wakeups.add(resolve);
        });
        this.#wakeups.delete(wake);
      }
    } finally {
      clearTimeout(timer);
    }
  }

  /**
   * Waits for the `listening on HOST:PORT` start-up line (text or JSON log format) and returns
   * the port.
   */
  async listeningPort(timeoutMs = 10_000): Promise<number> {
    const { match } = await this.waitForLine(/listening on \\?"?(\S+?)\\?"? /, timeoutMs);
    const port = Number(/:(\d+)$/.exec(match[1])?.[1]);
    if (!Number.isInteger(port) || port <= 0) {
      throw new Error(`no port in the listening line; stderr:\n${this.stderr}`);
    }
    return port;
  }

  /** Sends `signal` to the child, unless it has exited. */
  kill(signal: Deno.Signal = "SIGTERM"): void {
    if (this.#exited) return;
    try {
      this.#child.kill(signal);
    } catch (error) {
      // It exited between the check and the kill.
      if (!(error instanceof TypeError)) throw error;
    }
  }

  /**
   * Resolves with the exit status once the child has exited and its stderr is read to the end.
   *
   * @throws {Error} when it has not exited within `timeoutMs` (it is then killed).
   */
  async exited(timeoutMs = 10_000): Promise<Deno.CommandStatus> {
    let timer: ReturnType<typeof setTimeout> | undefined;
    const status = await Promise.race([
      this.#status,
      new Promise<undefined>((resolve) => timer = setTimeout(() => resolve(undefined), timeoutMs)),
    ]);
    clearTimeout(timer);
    if (status === undefined) {
      this.kill("SIGKILL");
      await this.#status;
      await this.#reading;
      throw new Error(`the process did not exit within ${timeoutMs}ms; stderr:\n${this.stderr}`);
    }
    await this.#reading;
    return status;
  }

  /** Kills the child if it still runs, and waits for its status and the end of its stderr. */
  async dispose(): Promise<void> {
    this.kill("SIGKILL");
    await this.#status;
    await this.#reading;
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.dispose();
  }

  async #readLines(): Promise<void> {
    let partial = "";
    try {
      for await (const chunk of this.#child.stderr.pipeThrough(new TextDecoderStream())) {
        const parts = (partial + chunk).split("\n");
        partial = parts.pop() ?? "";
        if (parts.length > 0) {
          this.lines.push(...parts);
          this.#wakeAll();
        }
      }
    } finally {
      if (partial !== "") this.lines.push(partial);
      this.#eof = true;
      this.#wakeAll();
    }
  }

  #wakeAll(): void {
    for (const wake of this.#wakeups) wake();
    this.#wakeups.clear();
  }
}

/**
 * An echo server on `127.0.0.1` (port 0 by default: the system picks one), as `main.ts` takes
 * its `--upstream`: a {@link TestUpstream} serving {@link echo}.
 */
export class EchoUpstream {
  readonly #upstream: TestUpstream;

  private constructor(upstream: TestUpstream) {
    this.#upstream = upstream;
  }

  /** Starts listening on `127.0.0.1:port`. */
  static start(port = 0): EchoUpstream {
    return new EchoUpstream(new TestUpstream(echo, { hostname: "127.0.0.1", port }));
  }

  /** `127.0.0.1:PORT`, as the proxy's `--upstream` takes it. */
  get address(): string {
    return formatHostPort(this.#upstream.address);
  }

  /** Connections accepted so far. */
  get accepted(): number {
    return this.#upstream.accepted;
  }

  /** Stops listening, closes every connection, and waits until all of it has finished. */
  close(): Promise<void> {
    return this.#upstream.close();
  }

  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }
}

/**
 * Sends `text` on `conn` and reads until as many bytes came back (or EOF), within `timeoutMs`.
 *
 * @returns What came back, decoded.
 */
export function exchange(conn: Deno.Conn, text: string, timeoutMs = 5_000): Promise<string> {
  return within(conn, timeoutMs, async () => {
    const bytes = encoder.encode(text);
    await writeAll(conn, bytes);
    const received = new Uint8Array(bytes.length);
    let got = 0;
    while (got < bytes.length) {
      const n = await conn.read(received.subarray(got));
      if (n === null) break;
      got += n;
    }
    return decoder.decode(received.subarray(0, got));
  });
}

/** Connects to `127.0.0.1:port`, exchanges `text` once (see {@link exchange}), and closes. */
export async function relayOnce(port: number, text: string, timeoutMs = 5_000): Promise<string> {
  const conn = await Deno.connect({ hostname: "127.0.0.1", port, transport: "tcp" });
  try {
    return await exchange(conn, text, timeoutMs);
  } finally {
    closeQuietly(conn);
  }
}

/**
 * Reads from `conn` until EOF or an error (a reset, or a close by {@link within}) and
 * returns how it ended and how long it took. Use it to see that a connection gets closed.
 */
export async function awaitClosed(
  conn: Deno.Conn,
  timeoutMs: number,
): Promise<{ ended: "eof" | "error" | "deadline"; ms: number; bytes: number }> {
  const started = performance.now();
  const buffer = new Uint8Array(4096);
  let bytes = 0;
  let expired = false;
  const timer = setTimeout(() => {
    expired = true;
    closeQuietly(conn);
  }, timeoutMs);
  try {
    for (;;) {
      const n = await conn.read(buffer);
      if (n === null) return { ended: "eof", ms: performance.now() - started, bytes };
      bytes += n;
    }
  } catch {
    return { ended: expired ? "deadline" : "error", ms: performance.now() - started, bytes };
  } finally {
    clearTimeout(timer);
  }
}
