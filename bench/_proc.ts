/**
 * Child processes for the benchmark: start one, read its stdout line by line, learn its address
 * from its `listening on HOST:PORT` line, read its resident memory from /proc, and always stop
 * it (SIGTERM, then SIGKILL if it lingers) and wait for its exit status.
 *
 * ```ts
 * import { ChildProc, denoScript } from "./_proc.ts";
 * const echo = ChildProc.spawn("echo", Deno.execPath(), [
 *   ...denoScript(new URL("./echo_server.ts", import.meta.url), ["--allow-net"]),
 * ]);
 * try {
 *   console.log(await echo.waitForListening(5000));
 * } finally {
 *   await echo.stop();
 * }
 * ```
 *
 * @module
 */

const LISTENING = /listening on (\S+)/;
const TAIL_LINES = 30;

/** A child process failed: it exited, timed out, or printed something unexpected. */
export class ChildError extends Error {
  /** Creates the error; `tail` is the child's last output lines, appended to the message. */
  constructor(name: string, problem: string, tail: string) {
    super(`${name}: ${problem}${tail ? `\n--- last output of ${name} ---\n${tail}` : ""}`);
    this.name = "ChildError";
  }
}

/** A `file:` URL for a path, absolute or relative to the working directory. */
export function fileUrl(path: string): URL {
  const url = new URL("file:///");
  url.pathname = path.startsWith("/") ? path : `${Deno.cwd()}/${path}`;
  return url;
}

/** Command-line arguments for `deno run` of a script given by URL, with permission flags. */
export function denoScript(script: URL, permissions: string[], args: string[] = []): string[] {
  return ["run", "--quiet", ...permissions, decodeURIComponent(script.pathname), ...args];
}

/** A started child process with line-oriented output. */
export class ChildProc {
  /** Short name for messages. */
  readonly name: string;
  /** Operating system process id. */
  readonly pid: number;
  readonly #child: Deno.ChildProcess;
  readonly #stdin: WritableStreamDefaultWriter<Uint8Array> | undefined;
  readonly #lines: string[] = [];
  readonly #tail: string[] = [];
  readonly #waiters = new Set<() => void>();
  #listening: string | undefined;
  #stdoutDone = false;
  #exitStatus: Deno.CommandStatus | undefined;
  readonly #status: Promise<Deno.CommandStatus>;
  readonly #readers: Promise<void>;

  private constructor(name: string, child: Deno.ChildProcess, stdin: boolean) {
    this.name = name;
    this.#child = child;
    this.pid = child.pid;
    this.#stdin = stdin ? child.stdin.getWriter() : undefined;
    this.#status = child.status.then((s) => {
      this.#exitStatus = s;
      this.#wake();
      return s;
    });
    this.#readers = Promise.all([
      this.#read(child.stdout, true),
      this.#read(child.stderr, false),
    ]).then(() => {});
  }

  /**
   * Starts `command args`; stdout and stderr are read by this object, stdin is piped only when
   * `options.stdin` is true (default false).
   *
   * @throws {Deno.errors.NotFound} when the command does not exist.
   */
  static spawn(
    name: string,
    command: string,
    args: string[],
    options: { stdin?: boolean; cwd?: string } = {},
  ): ChildProc {
    const child = new Deno.Command(command, {
      args,
      cwd: options.cwd,
      stdin: options.stdin ? "piped" : "null",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    return new ChildProc(name, child, options.stdin ?? false);
  }

  async #read(stream: ReadableStream<Uint8Array>, isStdout: boolean): Promise<void> {
    const decoder = new TextDecoder();
    let pending = "";
    const take = (line: string) => {
      this.#tail.push(line);
      if (this.#tail.length > TAIL_LINES) this.#tail.shift();
      if (this.#listening === undefined) {
        const m = LISTENING.exec(line);
        if (m) {
          this.#listening = m[1];
          this.#wake();
          return; // the start-up line is not part of the child's answers
        }
      }
      if (isStdout) this.#lines.push(line);
      this.#wake();
    };
    try {
      for await (const chunk of stream) {
        pending += decoder.decode(chunk, { stream: true });
        let nl: number;
        while ((nl = pending.indexOf("\n")) >= 0) {
          take(pending.slice(0, nl).replace(/\r$/, ""));
          pending = pending.slice(nl + 1);
        }
      }
    } catch { /* the process went away */ }
    pending += decoder.decode();
    if (pending) take(pending);
    if (isStdout) this.#stdoutDone = true;
    this.#wake();
  }

  #wake(): void {
    const ws = [...this.#waiters];
    this.#waiters.clear();
    for (const w of ws) w();
  }

  /** The last lines the child printed (stdout and stderr), for error messages. */
  tail(): string {
    return this.#tail.join("\n");
  }

  /** The exit status, once the child has exited. */
  get exitStatus(): Deno.CommandStatus | undefined {
    return this.#exitStatus;
  }

  async #waitFor<T>(
    what: string,
    timeoutMs: number,
    ready: () => T | undefined,
    endedTooSoon: () => boolean,
  ): Promise<T> {
    const deadline = performance.now() + timeoutMs;
    while (true) {
      const v = ready();
      if (v !== undefined) return v;
      if (endedTooSoon()) {
        const how = this.#exitStatus ? ` (exit code ${this.#exitStatus.code})` : "";
        throw new ChildError(this.name, `ended before ${what}${how}`, this.tail());
      }
      const left = deadline - performance.now();
      if (left <= 0) {
        throw new ChildError(this.name, `no ${what} within ${timeoutMs} ms`, this.tail());
      }
      let timer: ReturnType<typeof setTimeout> | undefined;
      let wake: (() => void) | undefined;
      await new Promise<void>((resolve) => {
        wake = resolve;
        this.#waiters.add(resolve);
        timer = setTimeout(resolve, left);
      });
      clearTimeout(timer);
      if (wake) this.#waiters.delete(wake);
    }
  }

  /**
   * Waits for a `listening on HOST:PORT` line on stdout or stderr; returns `HOST:PORT`.
   *
   * @throws {ChildError} when the child exits first or the time runs out.
   */
  waitForListening(timeoutMs: number): Promise<string> {
    return this.#waitFor(
      "'listening on' line",
      timeoutMs,
      () => this.#listening,
      () => this.#exitStatus !== undefined || this.#stdoutDone,
    );
  }

  /**
   * Returns the next stdout line (the `listening on` start-up line is not among them).
   *
   * @throws {ChildError} when stdout ends first or the time runs out.
   */
  nextLine(timeoutMs: number): Promise<string> {
    return this.#waitFor(
      "output line",
      timeoutMs,
      () => this.#lines.shift(),
      () => this.#stdoutDone && this.#lines.length === 0,
    );
  }

  /** Writes one line to the child's stdin. @throws {ChildError} when stdin is not piped. */
  async writeLine(line: string): Promise<void> {
    if (!this.#stdin) throw new ChildError(this.name, "stdin is not piped", "");
    await this.#stdin.write(new TextEncoder().encode(line + "\n"));
  }

  /** Closes the child's stdin (end of input); harmless when it is already closed. */
  async closeStdin(): Promise<void> {
    if (!this.#stdin) return;
    try {
      await this.#stdin.close();
    } catch { /* the child is gone */ }
  }

  /** Waits for the child to exit on its own, at most `timeoutMs`; undefined if it has not. */
  async waitExit(timeoutMs: number): Promise<Deno.CommandStatus | undefined> {
    let timer: ReturnType<typeof setTimeout> | undefined;
    const timeout = new Promise<undefined>((r) =>
      timer = setTimeout(() => r(undefined), timeoutMs)
    );
    try {
      return await Promise.race([this.#status, timeout]);
    } finally {
      clearTimeout(timer);
    }
  }

  /**
   * Stops the child: closes stdin, sends SIGTERM, and after `graceMs` (default 5000) SIGKILL;
   * waits for the exit status and for its output to be read to the end. Safe to call twice.
   */
  async stop(graceMs = 5000): Promise<Deno.CommandStatus> {
    await this.closeStdin();
    if (this.#exitStatus === undefined) {
      this.#signal("SIGTERM");
      if ((await this.waitExit(graceMs)) === undefined) this.#signal("SIGKILL");
    }
    const status = await this.#status;
    // a forked grandchild (socat) may hold the pipes a little longer; do not wait forever
    let timer: ReturnType<typeof setTimeout> | undefined;
    await Promise.race([this.#readers, new Promise((r) => timer = setTimeout(r, graceMs))]);
    clearTimeout(timer);
    return status;
  }

  #signal(sig: Deno.Signal): void {
    try {
      this.#child.kill(sig);
    } catch { /* already exited */ }
  }

  /** CPU time the child has used so far, in microseconds; see {@linkcode readCpuMicros}. */
  cpuMicros(): Promise<number | undefined> {
    return readCpuMicros(this.pid);
  }

  /** The child's resident memory in bytes, from /proc/PID/status. */
  rssBytes(): Promise<number> {
    return readRssBytes(this.pid);
  }
}

/**
 * Reads `VmRSS` of process `pid` from /proc, in bytes. Deno lets a script read another
 * process's /proc entry only with `--allow-all`; without it, `cat` reads it (which
 * `--allow-run` allows).
 *
 * @throws {Error} when the process does not exist or has no VmRSS line.
 */
export async function readRssBytes(pid: number): Promise<number> {
  const file = `/proc/${pid}/status`;
  const text = await readProcFile(file);
  const m = /^VmRSS:\s+(\d+)\s+kB$/m.exec(text);
  if (!m) throw new Error(`no VmRSS line in ${file}`);
  return Number(m[1]) * 1024;
}

/** Reads a file of another process's /proc entry (directly, or with `cat`; see below). */
async function readProcFile(file: string): Promise<string> {
  try {
    return await Deno.readTextFile(file);
  } catch (err) {
    if (!(err instanceof Deno.errors.NotCapable || err instanceof Deno.errors.PermissionDenied)) {
      throw err;
    }
    const out = await new Deno.Command("cat", { args: [file], stdin: "null", stderr: "null" })
      .output();
    if (!out.success) throw new Error(`cannot read ${file}`);
    return new TextDecoder().decode(out.stdout);
  }
}

let clockTicks: number | undefined;

/** Clock ticks per second of /proc/PID/stat (`getconf CLK_TCK`, read once; 100 if unknown). */
async function clockTicksPerSecond(): Promise<number> {
  if (clockTicks === undefined) {
    clockTicks = 100;
    try {
      const out = await new Deno.Command("getconf", {
        args: ["CLK_TCK"],
        stdin: "null",
        stderr: "null",
      }).output();
      const n = Number(new TextDecoder().decode(out.stdout).trim());
      if (out.success && Number.isInteger(n) && n > 0) clockTicks = n;
    } catch { /* no getconf: Linux's 100 */ }
  }
  return clockTicks;
}

/**
 * CPU time process `pid` has used so far, user + system, of its reaped children too (socat forks
 * one per session), from /proc/PID/stat, in microseconds (with the tick's resolution, 10 ms at
 * 100 ticks per second); undefined where /proc cannot be read.
 */
export async function readCpuMicros(pid: number): Promise<number | undefined> {
  try {
    const text = await readProcFile(`/proc/${pid}/stat`);
    // after "PID (comm) ": state ppid pgrp session tty tpgid flags minflt cminflt majflt
    // cmajflt utime stime cutime cstime ...
    const fields = text.slice(text.lastIndexOf(")") + 2).trim().split(/\s+/);
    const ticks = fields.slice(11, 15).map(Number);
    if (ticks.length !== 4 || ticks.some((t) => !Number.isFinite(t))) return undefined;
    return (ticks.reduce((a, b) => a + b, 0) * 1e6) / await clockTicksPerSecond();
  } catch {
    return undefined;
  }
}

/** The full path of an executable named `name` on PATH, or undefined. Never installs anything. */
export function findOnPath(name: string): string | undefined {
  const path = Deno.env.get("PATH") ?? "";
  for (const dir of path.split(":")) {
    if (!dir) continue;
    const file = `${dir}/${name}`;
    try {
      const st = Deno.statSync(file);
      if (st.isFile && st.mode !== null && (st.mode & 0o111) !== 0) return file;
    } catch { /* not here */ }
  }
  return undefined;
}

/** A TCP port on 127.0.0.1 that was free a moment ago (for programs that need a fixed port). */
export function freePort(): number {
  const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (l.addr as Deno.NetAddr).port;
  l.close();
  return port;
}

/**
 * Waits until `hostname:port` accepts a TCP connection.
 *
 * @throws {Error} when it does not within `timeoutMs`.
 */
export async function waitForPort(hostname: string, port: number, timeoutMs: number) {
  const deadline = performance.now() + timeoutMs;
  while (true) {
    try {
      const c = await Deno.connect({ hostname, port, signal: AbortSignal.timeout(500) });
      c.close();
      return;
    } catch (err) {
      if (performance.now() > deadline) {
        throw new Error(
          `${hostname}:${port} not accepting connections after ${timeoutMs} ms: ${err}`,
        );
      }
      await new Promise((r) => setTimeout(r, 50));
    }
  }
}

/**
 * The soft open-file limit this process runs under (its children inherit it), from the shell's
 * `ulimit -n` (Deno has no `getrlimit`); undefined when it cannot be learnt or is unlimited.
 */
export async function openFileLimit(): Promise<number | undefined> {
  try {
    const out = await new Deno.Command("sh", {
      args: ["-c", "ulimit -n"],
      stdin: "null",
      stderr: "null",
    }).output();
    const n = Number(new TextDecoder().decode(out.stdout).trim());
    return out.success && Number.isInteger(n) && n > 0 ? n : undefined;
  } catch {
    return undefined;
  }
}
