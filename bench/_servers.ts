/**
 * The processes a benchmark run drives: the echo upstream (plain, or plain and TLS), a
 * Redis-protocol upstream (a real `redis-server` when it is on the PATH, else `resp_server.ts`),
 * nginx serving a static page for the real HTTP client, the proxy under test (`main.ts`) in a
 * pool mode (to a plain or a TLS upstream), the minimal relay, and peer proxies (HAProxy, socat)
 * when they are on the PATH. Each is started as its own process and returned as a
 * {@linkcode Server} that must be stopped (by its process id, SIGTERM then SIGKILL).
 *
 * ```ts
 * import { startEchoProcess, startProxy } from "./_servers.ts";
 * const echo = await startEchoProcess();
 * try {
 *   const proxy = await startProxy({ mode: "reuse", upstream: echo.address });
 *   try {
 *     console.log(proxy.address);
 *   } finally {
 *     await proxy.stop();
 *   }
 * } finally {
 *   await echo.stop();
 * }
 * ```
 *
 * @module
 */

import { ChildError, ChildProc, denoScript, findOnPath, freePort, waitForPort } from "./_proc.ts";
import type { EchoStats } from "./_echo.ts";
import { respConnectionsReceived } from "./_resp.ts";
import { splitHostPort } from "./_job.ts";

/** The proxy entry point of this repository, found from this file (works in any clone). */
export const DEFAULT_PROXY_SCRIPT: URL = new URL("../main.ts", import.meta.url);
/**
 * The log level the proxy runs at while measured: its default, which is what users get (and the
 * level that prints the `listening on` start-up line; nothing per session is logged at it).
 */
export const PROXY_LOG_LEVEL = "info";
const START_TIMEOUT_MS = 15_000;

/** A started process that accepts TCP connections. */
export interface Server {
  /** Short name: `echo`, `proxy (reuse)`, `haproxy`, ... */
  readonly name: string;
  /** `HOST:PORT` to connect to. */
  readonly address: string;
  /** The process, for its PID and memory. */
  readonly proc: ChildProc;
  /** Stops the process and waits for it; returns its exit code. */
  stop(): Promise<number>;
}

/** The echo upstream process, which can also report its counters. */
export interface EchoProcess extends Server {
  /** `HOST:PORT` of its TLS listener, when it was started with one. */
  readonly tlsAddress?: string;
  /**
   * Asks the upstream for its counters (both listeners together).
   * @throws {ChildError} when it does not answer.
   */
  stats(): Promise<EchoStats>;
}

async function started<T>(proc: ChildProc, pending: Promise<T>): Promise<T> {
  try {
    return await pending;
  } catch (err) {
    await proc.stop(1000);
    throw err;
  }
}

function server(name: string, proc: ChildProc, address: string, cleanup?: () => void): Server {
  return {
    name,
    address,
    proc,
    async stop() {
      try {
        return (await proc.stop()).code;
      } finally {
        cleanup?.();
      }
    },
  };
}

/** The TLS listener of {@linkcode startEchoProcess}: the server's certificate and key files. */
export interface EchoTlsFiles {
  certFile: string;
  keyFile: string;
}

/**
 * Starts `bench/echo_server.ts` as its own process on 127.0.0.1 (a free port), and with `tls` a
 * TLS listener besides (another free port; the process may read only those two files).
 */
export async function startEchoProcess(tls?: EchoTlsFiles): Promise<EchoProcess> {
  const script = new URL("./echo_server.ts", import.meta.url);
  const permissions = tls
    ? ["--allow-net", `--allow-read=${tls.certFile},${tls.keyFile}`]
    : ["--allow-net"];
  const args = ["--listen", "127.0.0.1:0"];
  if (tls) {
    args.push("--tls-listen", "127.0.0.1:0", "--tls-cert", tls.certFile, "--tls-key", tls.keyFile);
  }
  const proc = ChildProc.spawn(
    tls ? "echo upstream (tls)" : "echo upstream",
    Deno.execPath(),
    denoScript(script, permissions, args),
    { stdin: true },
  );
  const address = await started(proc, proc.waitForListening(START_TIMEOUT_MS));
  let tlsAddress: string | undefined;
  if (tls) {
    const line = await started(proc, proc.nextLine(START_TIMEOUT_MS));
    const m = /^tls listening on (\S+)$/.exec(line);
    if (!m) {
      await proc.stop(1000);
      throw new ChildError(proc.name, `expected "tls listening on", got ${line}`, proc.tail());
    }
    tlsAddress = m[1];
  }
  return {
    ...server(proc.name, proc, address),
    tlsAddress,
    async stats() {
      await proc.writeLine("stats");
      const line = await proc.nextLine(5000);
      const v: unknown = JSON.parse(line);
      if (typeof v !== "object" || v === null) {
        throw new ChildError(proc.name, `bad stats ${line}`, "");
      }
      const o = v as Record<string, unknown>;
      const n = (k: string) => {
        const x = o[k];
        if (typeof x !== "number") throw new ChildError(proc.name, `bad stats ${line}`, "");
        return x;
      };
      return {
        accepted: n("accepted"),
        open: n("open"),
        errors: n("errors"),
        bytes: n("bytes"),
        handshakes: n("handshakes"),
      };
    },
  };
}

/**
 * The `deno run` flags of the `start` task in this repository's deno.json, so that the proxy is
 * measured as users run it (for example with V8 flags); `["--allow-net"]` when the task cannot
 * be read or is not a plain `deno run FLAGS... main.ts`.
 */
export function startTaskFlags(): string[] {
  const fallback = ["--allow-net"];
  try {
    const config: unknown = JSON.parse(
      Deno.readTextFileSync(new URL("../deno.json", import.meta.url)),
    );
    const tasks = typeof config === "object" && config !== null
      ? (config as Record<string, unknown>).tasks
      : undefined;
    const start = typeof tasks === "object" && tasks !== null
      ? (tasks as Record<string, unknown>).start
      : undefined;
    if (typeof start !== "string") return fallback;
    const words = start.trim().split(/\s+/);
    const script = words.findIndex((w, i) => i >= 2 && !w.startsWith("-"));
    if (words[0] !== "deno" || words[1] !== "run" || script < 0) return fallback;
    if (!/(^|\/)main\.ts$/.test(words[script])) return fallback;
    return words.slice(2, script);
  } catch {
    return fallback;
  }
}

/** Options of {@linkcode startProxy}. */
export interface ProxyOptions {
  /** `off`, `warm` or `reuse`. */
  mode: string;
  /** The upstream `HOST:PORT`. */
  upstream: string;
  /** The proxy entry point; default {@linkcode DEFAULT_PROXY_SCRIPT}. */
  script?: URL;
  /** Log level; default {@linkcode PROXY_LOG_LEVEL}. */
  logLevel?: string;
  /** `deno run` flags; default {@linkcode startTaskFlags}. */
  denoFlags?: string[];
  /** More flags for the proxy itself, after the ones the benchmark sets. */
  extraArgs?: string[];
  /** The server's name is `proxy (LABEL)`; default the mode. */
  label?: string;
  /**
   * TLS to the upstream: `--upstream-tls --upstream-ca caFile` (the `deno run` flags get
   * `--allow-read=caFile` when they do not allow reading it already).
   */
  upstreamTls?: { caFile: string };
}

/**
 * `flags` with reading `file` allowed: unchanged when they allow every read already, else with
 * the file added to (or given as) `--allow-read`.
 */
export function allowReading(flags: string[], file: string): string[] {
  if (flags.some((f) => f === "--allow-read" || f === "-R" || f === "--allow-all" || f === "-A")) {
    return flags;
  }
  const i = flags.findIndex((f) => f.startsWith("--allow-read="));
  if (i < 0) return [...flags, `--allow-read=${file}`];
  return flags.map((f, j) => j === i ? `${f},${file}` : f);
}

/**
 * Starts the proxy under test (`deno run FLAGS main.ts ...`, with the flags of the `start` task)
 * on 127.0.0.1, port chosen by the system, and learns its address from its
 * `listening on HOST:PORT` log line.
 *
 * @throws {ChildError} when the proxy exits or prints no such line in time.
 */
export async function startProxy(options: ProxyOptions): Promise<Server> {
  const script = options.script ?? DEFAULT_PROXY_SCRIPT;
  const name = `proxy (${options.label ?? options.mode})`;
  const tls = options.upstreamTls;
  let denoFlags = options.denoFlags ?? startTaskFlags();
  if (tls) denoFlags = allowReading(denoFlags, tls.caFile);
  const proc = ChildProc.spawn(
    name,
    Deno.execPath(),
    denoScript(script, denoFlags, [
      "--listen",
      "127.0.0.1:0",
      "--upstream",
      options.upstream,
      "--pool",
      options.mode,
      "--log-level",
      options.logLevel ?? PROXY_LOG_LEVEL,
      "--drain-timeout",
      "2s",
      ...(tls ? ["--upstream-tls", "--upstream-ca", tls.caFile] : []),
      ...(options.extraArgs ?? []),
    ]),
  );
  const address = await started(proc, proc.waitForListening(START_TIMEOUT_MS));
  return server(name, proc, address);
}

/**
 * Starts `bench/minimal_relay.ts`, the floor reference (a bare Deno relay: no pool, no
 * bookkeeping), in front of `upstream` on 127.0.0.1, port chosen by the system, with the same
 * `deno run` flags as the proxy under test.
 *
 * @throws {ChildError} when it exits or prints no `listening on` line in time.
 */
export async function startRelay(upstream: string, denoFlags?: string[]): Promise<Server> {
  const proc = ChildProc.spawn(
    "relay",
    Deno.execPath(),
    denoScript(new URL("./minimal_relay.ts", import.meta.url), denoFlags ?? startTaskFlags(), [
      "--listen",
      "127.0.0.1:0",
      "--upstream",
      upstream,
    ]),
  );
  const address = await started(proc, proc.waitForListening(START_TIMEOUT_MS));
  return server("relay", proc, address);
}

/** Peer proxies the benchmark compares with, when installed. */
export const PEERS = ["haproxy", "socat"] as const;

/** One peer name. */
export type PeerName = typeof PEERS[number];

/** Peers found on the PATH (never installs anything). */
export function availablePeers(): PeerName[] {
  return PEERS.filter((p) => findOnPath(p) !== undefined);
}

/**
 * Starts a peer proxy in front of `upstream` on a free 127.0.0.1 port and waits until it
 * accepts connections. HAProxy runs in the foreground, `mode tcp`, one thread, with a config
 * written to a temporary directory; socat forks a process per connection.
 *
 * @throws {Error} when the peer is not on the PATH or does not start.
 */
export async function startPeer(peer: PeerName, upstream: string): Promise<Server> {
  const exe = findOnPath(peer);
  if (!exe) throw new Error(`${peer} is not on the PATH`);
  const port = freePort();
  let proc: ChildProc;
  let cleanup: (() => void) | undefined;
  if (peer === "haproxy") {
    const dir = Deno.makeTempDirSync({ prefix: "bench-haproxy-" });
    cleanup = () => Deno.removeSync(dir, { recursive: true });
    const cfg = `${dir}/haproxy.cfg`;
    Deno.writeTextFileSync(cfg, haproxyConfig(port, upstream));
    proc = ChildProc.spawn("haproxy", exe, ["-f", cfg, "-db"]);
  } else {
    proc = ChildProc.spawn("socat", exe, [
      `TCP-LISTEN:${port},bind=127.0.0.1,fork,reuseaddr,backlog=4096,nodelay`,
      `TCP:${upstream},nodelay`,
    ]);
  }
  try {
    await waitForPort("127.0.0.1", port, START_TIMEOUT_MS);
  } catch (err) {
    await proc.stop(1000);
    cleanup?.();
    throw new ChildError(peer, err instanceof Error ? err.message : String(err), proc.tail());
  }
  return server(peer, proc, `127.0.0.1:${port}`, cleanup);
}

/** A minimal HAProxy configuration: one TCP frontend, one backend, sensible timeouts. */
export function haproxyConfig(port: number, upstream: string): string {
  return `global
    maxconn 8000
    nbthread 1

defaults
    mode tcp
    maxconn 8000
    timeout connect 5s
    timeout client 60s
    timeout server 60s

frontend bench
    bind 127.0.0.1:${port}
    default_backend upstream

backend upstream
    server echo ${upstream}
`;
}

/** A Redis-protocol upstream, which can also count the connections it accepted. */
export interface RespUpstream extends Server {
  /** What answers: `redis-server 7.0.15` or `bench/resp_server.ts`. */
  readonly kind: string;
  /**
   * Connections accepted since the start, those of this method's own queries not counted.
   * @throws {Error} when the upstream does not answer `INFO stats`.
   */
  accepted(): Promise<number>;
}

/** Which Redis-protocol upstream to start: `auto` takes `redis-server` when it is on the PATH. */
export type RespUpstreamChoice = "auto" | "redis-server" | "bench";

/**
 * Starts a Redis-protocol upstream on a free 127.0.0.1 port: `redis-server` (found on the PATH,
 * never installed; no persistence: `--save "" --appendonly no`, its directory a temporary one)
 * or, when there is none or `choice` is `bench`, the bench's own `resp_server.ts`.
 *
 * @throws {Error} when `redis-server` is asked for but not on the PATH, or nothing starts.
 */
export async function startRespUpstream(choice: RespUpstreamChoice): Promise<RespUpstream> {
  const exe = choice === "bench" ? undefined : findOnPath("redis-server");
  if (choice === "redis-server" && !exe) throw new Error("redis-server is not on the PATH");
  let base: Server;
  let kind: string;
  if (exe) {
    const version = await new Deno.Command(exe, { args: ["--version"], stdin: "null" }).output();
    const v = /v=(\S+)/.exec(new TextDecoder().decode(version.stdout));
    kind = `redis-server ${v ? v[1] : "(version unknown)"}`;
    const dir = Deno.makeTempDirSync({ prefix: "bench-redis-" });
    const cleanup = () => Deno.removeSync(dir, { recursive: true });
    const port = freePort();
    const proc = ChildProc.spawn("redis-server", exe, [
      "--bind",
      "127.0.0.1",
      "--port",
      String(port),
      "--save",
      "",
      "--appendonly",
      "no",
      "--dir",
      dir,
      "--daemonize",
      "no",
    ]);
    try {
      await waitForPort("127.0.0.1", port, START_TIMEOUT_MS);
    } catch (err) {
      await proc.stop(1000);
      cleanup();
      throw new ChildError(kind, err instanceof Error ? err.message : String(err), proc.tail());
    }
    base = server("redis-server", proc, `127.0.0.1:${port}`, cleanup);
  } else {
    kind = "bench/resp_server.ts";
    const proc = ChildProc.spawn(
      "resp upstream",
      Deno.execPath(),
      denoScript(new URL("./resp_server.ts", import.meta.url), ["--allow-net"], [
        "--listen",
        "127.0.0.1:0",
      ]),
    );
    base = server(
      "resp upstream",
      proc,
      await started(proc, proc.waitForListening(START_TIMEOUT_MS)),
    );
  }
  let queries = 0;
  return {
    ...base,
    kind,
    async accepted() {
      queries++;
      return (await respConnectionsReceived(base.address)) - queries;
    },
  };
}

/** The size of the static page nginx serves to `ab`: 5.5 KiB, the medium answer. */
export const PAGE_BYTES = 5632;
/** Its path. */
export const PAGE_PATH = "/page.html";

/** nginx serving {@linkcode PAGE_PATH}, which can also count what it accepted and served. */
export interface HttpUpstream extends Server {
  /** What answers: `nginx 1.22.1`. */
  readonly kind: string;
  /**
   * Connections accepted since the start, those of this method's and {@linkcode requests}'
   * own queries not counted.
   * @throws {Error} when nginx does not answer its status page.
   */
  accepted(): Promise<number>;
  /** Requests served since the start (the status queries' own included). */
  requests(): Promise<number>;
}

/**
 * The nginx configuration of the benchmark: one process (`master_process off`), in the
 * foreground, everything it writes (pid, error log, temporary files) under `dir`, no access log,
 * the page under `dir/www`, and the counters of `stub_status` at `/nginx_status`. Everything
 * else is nginx's default (keep-alive: 1000 requests per connection, 75 s).
 */
export function nginxConfig(dir: string, port: number): string {
  return `daemon off;
master_process off;
worker_processes 1;
pid ${dir}/nginx.pid;
error_log ${dir}/error.log warn;

events {
    worker_connections 10000;
}

http {
    access_log off;
    client_body_temp_path ${dir}/client_body;
    proxy_temp_path ${dir}/proxy;
    fastcgi_temp_path ${dir}/fastcgi;
    uwsgi_temp_path ${dir}/uwsgi;
    scgi_temp_path ${dir}/scgi;

    server {
        listen 127.0.0.1:${port};
        root ${dir}/www;
        location = /nginx_status {
            stub_status;
        }
    }
}
`;
}

/** The page: printable lines, exactly {@linkcode PAGE_BYTES} bytes. */
function pageText(): string {
  const line = "tcp-pool-proxy benchmark page, 5632 bytes, served by nginx to ab.\n";
  return line.repeat(Math.ceil(PAGE_BYTES / line.length)).slice(0, PAGE_BYTES - 1) + "\n";
}

/** `server accepts handled requests` of nginx's stub_status page at `address`. */
async function nginxStatus(address: string): Promise<{ accepts: number; requests: number }> {
  const conn = await Deno.connect({ ...splitHostPort(address), signal: AbortSignal.timeout(5000) });
  const timer = setTimeout(() => conn.close(), 5000);
  let text = "";
  try {
    const req = new TextEncoder().encode(
      "GET /nginx_status HTTP/1.0\r\nHost: bench\r\nConnection: close\r\n\r\n",
    );
    for (let off = 0; off < req.length;) off += await conn.write(req.subarray(off));
    const dec = new TextDecoder();
    const buf = new Uint8Array(4096);
    while (true) {
      const n = await conn.read(buf);
      if (n === null) break;
      text += dec.decode(buf.subarray(0, n), { stream: true });
    }
  } finally {
    clearTimeout(timer);
    try {
      conn.close();
    } catch { /* closed by the timer */ }
  }
  const m = /server accepts handled requests\s+(\d+)\s+(\d+)\s+(\d+)/.exec(text);
  if (!m) throw new Error(`${address}: no counters on /nginx_status: ${text.slice(0, 200)}`);
  return { accepts: Number(m[1]), requests: Number(m[3]) };
}

/**
 * Starts nginx (found on the PATH, never installed) on a free 127.0.0.1 port with the
 * configuration of {@linkcode nginxConfig} in a temporary directory, serving a page of
 * {@linkcode PAGE_BYTES} bytes at {@linkcode PAGE_PATH}.
 *
 * @throws {Error} when nginx is not on the PATH or does not start.
 */
export async function startNginx(): Promise<HttpUpstream> {
  const exe = findOnPath("nginx");
  if (!exe) throw new Error("nginx is not on the PATH");
  const version = await new Deno.Command(exe, { args: ["-v"], stdin: "null" }).output();
  const v = /nginx\/(\S+)/.exec(new TextDecoder().decode(version.stderr));
  const kind = `nginx ${v ? v[1] : "(version unknown)"}`;
  const dir = Deno.makeTempDirSync({ prefix: "bench-nginx-" });
  const cleanup = () => Deno.removeSync(dir, { recursive: true });
  const port = freePort();
  Deno.mkdirSync(`${dir}/www`);
  Deno.writeTextFileSync(`${dir}/www${PAGE_PATH}`, pageText());
  Deno.writeTextFileSync(`${dir}/nginx.conf`, nginxConfig(dir, port));
  const proc = ChildProc.spawn("nginx", exe, [
    "-p",
    dir,
    "-c",
    `${dir}/nginx.conf`,
    "-e",
    `${dir}/error.log`,
  ]);
  try {
    await waitForPort("127.0.0.1", port, START_TIMEOUT_MS);
  } catch (err) {
    await proc.stop(1000);
    let log = "";
    try {
      log = Deno.readTextFileSync(`${dir}/error.log`);
    } catch { /* none written */ }
    cleanup();
    throw new ChildError(kind, err instanceof Error ? err.message : String(err), proc.tail() + log);
  }
  const base = server("nginx", proc, `127.0.0.1:${port}`, cleanup);
  let queries = 1; // waitForPort's connection
  return {
    ...base,
    kind,
    async accepted() {
      queries++;
      return (await nginxStatus(base.address)).accepts - queries;
    },
    async requests() {
      queries++;
      return (await nginxStatus(base.address)).requests;
    },
  };
}
