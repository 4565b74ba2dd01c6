/**
 * Real servers for end-to-end tests: `redis-server` and `memcached` started by a test on
 * 127.0.0.1 (a free port found by binding port 0), each with one persistent admin connection
 * that asks the server itself for its counters and contents, so that querying never adds to the
 * connection counts under test. Plus running a client binary (`redis-cli`, `memccp`, ...) with a
 * time bound, and finding binaries on `PATH` so that tests can be ignored where one is missing.
 *
 * Every helper finishes what it starts: server processes are stopped by their handle and their
 * status awaited, their output read to its end, admin sockets closed, timers cleared.
 *
 * @module
 */

import { closeQuietly, decoder, delay, encoder, within, writeAll } from "./_net.ts";

// ---- binaries and processes ----

/**
 * A TCP upstream in another Deno process, so that it sends while the test's own event loop is
 * stalled (a busy loop standing for a GC pause). `handler` is the source of an async function
 * body run per accepted connection, with `conn` (a `Deno.TcpConn`) and `index` (0 for the first)
 * in scope; its errors are dropped. Stop it with `await using` or {@link ProcessUpstream.stop}.
 */
export async function processUpstream(handler: string): Promise<ProcessUpstream> {
  const code = `
    const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    console.log(listener.addr.port);
    let next = 0;
    for await (const conn of listener) {
      const index = next++;
      (async () => {
        ${handler}
      })().catch(() => {}).finally(() => { try { conn.close(); } catch {} });
    }`;
  const child = new Deno.Command(Deno.execPath(), {
    args: ["eval", code],
    stdout: "piped",
    stderr: "null",
  }).spawn();
  const reader = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
  const { value } = await reader.read();
  const stop = async () => {
    child.kill();
    await reader.cancel().catch(() => {});
    await child.status;
  };
  return {
    address: { hostname: "127.0.0.1", port: Number(value?.trim()) },
    stop,
    [Symbol.asyncDispose]: stop,
  };
}

/** What {@link processUpstream} gives. */
export interface ProcessUpstream extends AsyncDisposable {
  /** Where it listens. */
  readonly address: { hostname: string; port: number };
  /** Kills the process and waits for it. */
  stop(): Promise<void>;
}

/** The path of executable `name` on `PATH`, or `undefined`. */
export function findBinary(name: string): string | undefined {
  for (const dir of (Deno.env.get("PATH") ?? "").split(":")) {
    if (dir === "") continue;
    const path = `${dir}/${name}`;
    try {
      const info = Deno.statSync(path);
      if (info.isFile && ((info.mode ?? 0o111) & 0o111) !== 0) return path;
    } catch {
      // not there
    }
  }
  return undefined;
}

/**
 * `""` when every binary is on `PATH`; otherwise ` (ignored: NAME not found)` naming the missing
 * ones, for a test's name (with `ignore: reason !== ""`).
 */
export function missingBinaries(...names: string[]): string {
  const missing = names.filter((name) => findBinary(name) === undefined);
  return missing.length === 0 ? "" : ` (ignored: ${missing.join(", ")} not found)`;
}

/** What {@link run} returns. */
export interface RunResult {
  code: number;
  stdout: string;
  stderr: string;
  /** Whether it was killed for running past its time bound. */
  timedOut: boolean;
}

/**
 * Runs `command` with `args` to its end (stdin: `stdin` if given, else none), killed with
 * SIGKILL after `timeoutMs`; its status is always awaited.
 */
export async function run(
  command: string,
  args: string[],
  options: { stdin?: Uint8Array; timeoutMs?: number; cwd?: string } = {},
): Promise<RunResult> {
  const child = new Deno.Command(command, {
    args,
    cwd: options.cwd,
    stdin: options.stdin === undefined ? "null" : "piped",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  let timedOut = false;
  const timer = setTimeout(() => {
    timedOut = true;
    try {
      child.kill("SIGKILL");
    } catch {
      // it has exited
    }
  }, options.timeoutMs ?? 10_000);
  try {
    const output = child.output();
    if (options.stdin !== undefined) {
      const writer = child.stdin.getWriter();
      try {
        await writer.write(options.stdin);
        await writer.close();
      } catch {
        // the child exited without reading it all; its status and output say the rest
      }
    }
    const { code, stdout, stderr } = await output;
    return { code, stdout: decoder.decode(stdout), stderr: decoder.decode(stderr), timedOut };
  } finally {
    clearTimeout(timer);
  }
}

/** Everything a {@link run} printed, for assertion messages. */
export function describeRun(result: RunResult): string {
  return `exit ${result.code}${result.timedOut ? " (killed: time bound)" : ""}\n` +
    `stdout:\n${result.stdout}\nstderr:\n${result.stderr}`;
}

/** A port that was free a moment ago: bound on 127.0.0.1:0 and released. */
export function freePort(): number {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = listener.addr.port;
  listener.close();
  return port;
}

// ---- a line-and-bytes reader over a socket ----

/** Buffered reads of lines (CRLF) and exact byte counts from a connection. */
class SocketReader {
  #buffer = new Uint8Array(64 * 1024);
  #start = 0;
  #end = 0;

  constructor(readonly conn: Deno.Conn) {}

  /** Reads one line, without its CRLF. */
  async line(): Promise<string> {
    for (;;) {
      for (let i = this.#start; i + 1 < this.#end; i++) {
        if (this.#buffer[i] === 13 && this.#buffer[i + 1] === 10) {
          const text = decoder.decode(this.#buffer.subarray(this.#start, i));
          this.#start = i + 2;
          return text;
        }
      }
      await this.#fill();
    }
  }

  /** Reads exactly `n` bytes. */
  async bytes(n: number): Promise<Uint8Array> {
    while (this.#end - this.#start < n) await this.#fill();
    const out = this.#buffer.slice(this.#start, this.#start + n);
    this.#start += n;
    return out;
  }

  async #fill(): Promise<void> {
    if (this.#start > 0) {
      this.#buffer.copyWithin(0, this.#start, this.#end);
      this.#end -= this.#start;
      this.#start = 0;
    }
    if (this.#end === this.#buffer.length) {
      const bigger = new Uint8Array(this.#buffer.length * 2);
      bigger.set(this.#buffer);
      this.#buffer = bigger;
    }
    const n = await this.conn.read(this.#buffer.subarray(this.#end));
    if (n === null) throw new Error("the server closed the connection");
    this.#end += n;
  }
}

// ---- a server process ----

/** Waits until `ready` succeeds on a fresh connection to `port`, or the process exits. */
async function connectWhenUp(
  port: number,
  exited: () => boolean,
  ready: (reader: SocketReader) => Promise<void>,
  timeoutMs = 5_000,
): Promise<SocketReader> {
  const deadline = performance.now() + timeoutMs;
  for (;;) {
    if (exited()) throw new Error("the server exited while starting");
    try {
      const conn = await Deno.connect({ hostname: "127.0.0.1", port });
      conn.setNoDelay(true);
      const reader = new SocketReader(conn);
      try {
        await within(conn, 2_000, () => ready(reader));
        return reader;
      } catch (error) {
        closeQuietly(conn);
        throw error;
      }
    } catch (error) {
      if (performance.now() > deadline) {
        throw new Error(`the server did not answer on port ${port} within ${timeoutMs}ms`, {
          cause: error,
        });
      }
      await delay(20);
    }
  }
}

/**
 * Runs `start` with a free port, up to 3 tries (another process may take the port between our
 * probe and the server's bind); throws the last try's error.
 */
export async function onFreePort<T>(start: (port: number) => Promise<T>): Promise<T> {
  let lastError: unknown;
  for (let attempt = 0; attempt < 3; attempt++) {
    try {
      return await start(freePort());
    } catch (error) {
      lastError = error;
    }
  }
  throw lastError;
}

/** A server process started by a test, with one admin connection to it. */
class ServerProcess {
  #exited = false;

  private constructor(
    readonly port: number,
    readonly child: Deno.ChildProcess,
    readonly output: Promise<Deno.CommandOutput>,
    readonly admin: SocketReader,
  ) {
    output.then(() => this.#exited = true, () => this.#exited = true);
  }

  /**
   * Starts `binary` with `argsFor(port)` on a free port, up to 3 tries (another process may take
   * the port between our probe and the server's bind), and waits until `ready` succeeds.
   */
  static async start(
    binary: string,
    argsFor: (port: number) => string[],
    ready: (reader: SocketReader) => Promise<void>,
  ): Promise<ServerProcess> {
    return await onFreePort(async (port) => {
      const child = new Deno.Command(binary, {
        args: argsFor(port),
        stdin: "null",
        stdout: "piped",
        stderr: "piped",
      }).spawn();
      let exited = false;
      const output = child.output();
      output.then(() => exited = true, () => exited = true);
      try {
        const admin = await connectWhenUp(port, () => exited, ready);
        return new ServerProcess(port, child, output, admin);
      } catch (error) {
        try {
          child.kill("SIGKILL");
        } catch {
          // it has exited
        }
        const { stdout, stderr } = await output;
        throw new Error(
          `${binary} did not start: ${error}\n${decoder.decode(stdout)}${decoder.decode(stderr)}`,
          { cause: error },
        );
      }
    });
  }

  /**
   * Closes the admin connection, stops the server with `signal` (SIGKILL after 3 s), and awaits
   * its exit.
   */
  async stop(signal: Deno.Signal = "SIGTERM"): Promise<void> {
    closeQuietly(this.admin.conn);
    this.#kill(signal);
    let timer: ReturnType<typeof setTimeout> | undefined;
    const stopped = await Promise.race([
      this.output.then(() => true),
      new Promise<false>((resolve) => timer = setTimeout(() => resolve(false), 3_000)),
    ]);
    clearTimeout(timer);
    if (!stopped) {
      this.#kill("SIGKILL");
      await this.output;
    }
  }

  #kill(signal: Deno.Signal): void {
    if (this.#exited) return;
    try {
      this.child.kill(signal);
    } catch {
      // it has exited
    }
  }
}

// ---- Redis ----

/** A RESP reply: simple and bulk strings, integers, null, arrays, errors. */
export type RespReply = string | number | null | RespReply[] | RespErrorReply;

/** An error reply (`-ERR ...`). */
export class RespErrorReply {
  constructor(readonly message: string) {}
}

/** Encodes a command as a RESP array of bulk strings. */
export function respCommand(...args: string[]): Uint8Array {
  let text = `*${args.length}\r\n`;
  for (const arg of args) text += `$${encoder.encode(arg).length}\r\n${arg}\r\n`;
  return encoder.encode(text);
}

async function readReply(reader: SocketReader): Promise<RespReply> {
  const line = await reader.line();
  const rest = line.slice(1);
  switch (line[0]) {
    case "+":
      return rest;
    case "-":
      return new RespErrorReply(rest);
    case ":":
      return Number(rest);
    case "$": {
      const length = Number(rest);
      if (length < 0) return null;
      const bytes = await reader.bytes(length + 2);
      return decoder.decode(bytes.subarray(0, length));
    }
    case "*": {
      const count = Number(rest);
      if (count < 0) return null;
      const items: RespReply[] = [];
      for (let i = 0; i < count; i++) items.push(await readReply(reader));
      return items;
    }
    default:
      throw new Error(`not a RESP reply: ${JSON.stringify(line)}`);
  }
}

/** `redis-server` on 127.0.0.1, no persistence, with an admin connection. */
export class RedisServer {
  private constructor(readonly process: ServerProcess) {}

  /** Starts it and waits until it answers PING. */
  static async start(): Promise<RedisServer> {
    const process = await ServerProcess.start(
      "redis-server",
      (port) => [
        "--port",
        String(port),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "no",
        "--daemonize",
        "no",
        "--loglevel",
        "warning",
      ],
      async (reader) => {
        await writeAll(reader.conn, respCommand("PING"));
        const reply = await readReply(reader);
        if (reply !== "PONG") throw new Error(`PING answered ${JSON.stringify(reply)}`);
      },
    );
    return new RedisServer(process);
  }

  /** The server's port (ask it directly; clients of the proxy use the proxy's). */
  get port(): number {
    return this.process.port;
  }

  /** Runs one command on the admin connection (its own db, never through the proxy). */
  command(...args: string[]): Promise<RespReply> {
    const conn = this.process.admin.conn;
    return within(conn, 5_000, async () => {
      await writeAll(conn, respCommand(...args));
      return await readReply(this.process.admin);
    });
  }

  /** `INFO section` as a map of its fields. */
  async info(section = "stats"): Promise<Map<string, string>> {
    const reply = await this.command("INFO", section);
    if (typeof reply !== "string") throw new Error(`INFO answered ${JSON.stringify(reply)}`);
    const fields = new Map<string, string>();
    for (const line of reply.split("\r\n")) {
      const colon = line.indexOf(":");
      if (colon > 0 && !line.startsWith("#")) {
        fields.set(line.slice(0, colon), line.slice(colon + 1));
      }
    }
    return fields;
  }

  /**
   * `total_connections_received` from `INFO stats`: every connection the server ever accepted.
   * The admin connection was accepted before any test step, so asking adds nothing.
   */
  async connectionsReceived(): Promise<number> {
    return Number((await this.info("stats")).get("total_connections_received"));
  }

  /** `total_commands_processed` from `INFO stats`. */
  async commandsProcessed(): Promise<number> {
    return Number((await this.info("stats")).get("total_commands_processed"));
  }

  /**
   * The other clients connected now (`CLIENT LIST` without the admin connection), each as its
   * fields (`id`, `db`, `cmd`, ...).
   */
  async otherClients(): Promise<Map<string, string>[]> {
    const [self, list] = [await this.command("CLIENT", "ID"), await this.command("CLIENT", "LIST")];
    if (typeof list !== "string") throw new Error(`CLIENT LIST answered ${JSON.stringify(list)}`);
    return list.split("\n").filter((line) => line.trim() !== "").map((line) => {
      const fields = new Map<string, string>();
      for (const pair of line.trim().split(" ")) {
        const eq = pair.indexOf("=");
        if (eq > 0) fields.set(pair.slice(0, eq), pair.slice(eq + 1));
      }
      return fields;
    }).filter((fields) => fields.get("id") !== String(self));
  }

  /** Stops it and awaits its exit. */
  stop(): Promise<void> {
    return this.process.stop();
  }

  [Symbol.asyncDispose](): Promise<void> {
    return this.stop();
  }
}

// ---- memcached ----

/** `memcached` on 127.0.0.1 (TCP only), with an admin connection. */
export class MemcachedServer {
  private constructor(readonly process: ServerProcess) {}

  /** Starts it and waits until it answers `version`. */
  static async start(): Promise<MemcachedServer> {
    const process = await ServerProcess.start(
      "memcached",
      // `-u` only matters when run as root (CI containers), where memcached refuses to start
      // without it; as any other user it is ignored.
      (port) => ["-p", String(port), "-l", "127.0.0.1", "-U", "0", "-u", "root"],
      async (reader) => {
        await writeAll(reader.conn, encoder.encode("version\r\n"));
        const line = await reader.line();
        if (!line.startsWith("VERSION ")) throw new Error(`version answered ${line}`);
      },
    );
    return new MemcachedServer(process);
  }

  get port(): number {
    return this.process.port;
  }

  /** `stats` as a map, asked on the admin connection. */
  stats(): Promise<Map<string, string>> {
    const reader = this.process.admin;
    return within(reader.conn, 5_000, async () => {
      await writeAll(reader.conn, encoder.encode("stats\r\n"));
      const fields = new Map<string, string>();
      for (let i = 0; i < 1_000; i++) {
        const line = await reader.line();
        if (line === "END") return fields;
        const [, name, value] = /^STAT (\S+) (.*)$/.exec(line) ?? [];
        if (name === undefined) throw new Error(`unexpected stats line: ${line}`);
        fields.set(name, value);
      }
      throw new Error("stats did not end");
    });
  }

  /**
   * `total_connections` from `stats`: every connection the server ever accepted (the admin
   * connection was accepted before any test step, so asking adds nothing).
   */
  async connectionsReceived(): Promise<number> {
    return Number((await this.stats()).get("total_connections"));
  }

  /**
   * Stops it and awaits its exit: with SIGKILL, since it keeps nothing (SIGTERM and SIGINT take
   * it most of a second, waiting out its threads' timed waits).
   */
  stop(): Promise<void> {
    return this.process.stop("SIGKILL");
  }

  [Symbol.asyncDispose](): Promise<void> {
    return this.stop();
  }
}
