/**
 * `deno task bench`: measures the proxy against a direct connection to an echo upstream, in
 * every pool mode, and against HAProxy and socat where they are installed; prints a table with
 * every proxy figure as a ratio to direct, judges the targets of issue 3, and writes
 * `latest.json` and `latest.svg` (default directory `bench/results/`).
 *
 * The echo upstream, the proxy and the load generator each run as their own process. Every
 * echoed byte is verified; errors and mismatches are counted and printed, and make the exit
 * code 1.
 *
 * ```sh
 * deno task bench                       # the full run, a few minutes
 * deno task bench --short               # a few seconds, tiny sizes (the test suite runs this)
 * deno task bench --workloads connect32,pingpong32 --modes reuse --duration 3s
 * ```
 *
 * @module
 */

import { parseDurationMs, parseFlags, parseIntFlag, UsageError } from "./_cli.ts";
import {
  computeFigures,
  evaluateGoals,
  type Measurement,
  WORKLOAD_IDS,
  WORKLOAD_TITLES,
  type WorkloadId,
} from "./_figures.ts";
import type { Job, JobResult } from "./_job.ts";
import { runLoadgen } from "./_loadgen.ts";
import { renderGoals, renderSvg, renderTable } from "./_report.ts";
import {
  availablePeers,
  DEFAULT_PROXY_SCRIPT,
  type EchoProcess,
  type PeerName,
  PEERS,
  type Server,
  startEchoProcess,
  startPeer,
  startProxy,
} from "./_servers.ts";
import { formatNumber } from "./_stats.ts";

const POOL_MODES = ["off", "warm", "reuse"] as const;
const MESSAGE_BYTES = 64;
const MIB = 1024 * 1024;

const USAGE = `Usage: deno task bench [options]

  --duration DURATION   measured time per latency/rate workload (default 5s; --short: 300ms)
  --workloads LIST      comma list of ${WORKLOAD_IDS.join(", ")}
                        or the groups connect, pingpong, bulk, all (default all)
  --modes LIST          comma list of off, warm, reuse, ${PEERS.join(", ")}
                        (default: the three pool modes and the peers found on the PATH);
                        direct is always included
  --bulk-mib N          bytes of the 1-stream bulk workload in MiB; the 8 streams carry N/4 MiB
                        each (default 1024; --short: 4)
  --hold N              sessions held open at once (default 5000; --short: 200)
  --short               a few seconds in all: tiny durations and sizes
  --out DIR             where latest.json and latest.svg go (default bench/results)
  --proxy FILE          the proxy entry point to run (default main.ts of this repository)
  --help                this text`;

/** The validated options of one run. */
interface Options {
  durationMs: number;
  warmupMs: number;
  workloads: WorkloadId[];
  columns: string[];
  bulkMib: number;
  holdSessions: number;
  short: boolean;
  outDir: string;
  proxyScript: URL;
  peersMissing: string[];
}

function parseList(flag: string, text: string, known: readonly string[]): string[] {
  const items = text.split(",").map((s) => s.trim()).filter((s) => s !== "");
  if (items.length === 0) throw new UsageError(`--${flag}: expected a comma list, got "${text}"`);
  for (const i of items) {
    if (!known.includes(i)) {
      throw new UsageError(`--${flag}: unknown "${i}"; expected some of ${known.join(", ")}`);
    }
  }
  return items;
}

function parseOptions(args: string[]): Options | "help" {
  const flags = parseFlags(args, {
    string: ["duration", "workloads", "modes", "bulk-mib", "hold", "out", "proxy"],
    boolean: ["short", "help"],
  });
  if (flags.booleans.get("help")) return "help";
  if (flags.positional.length > 0) {
    throw new UsageError(`unexpected argument "${flags.positional[0]}" (see --help)`);
  }
  const short = flags.booleans.get("short") ?? false;
  const s = (name: string) => flags.strings.get(name);

  const durationText = s("duration");
  const durationMs = durationText ? parseDurationMs("duration", durationText) : short ? 300 : 5000;
  const warmupMs = Math.min(1000, Math.max(50, Math.round(durationMs / 10)));

  const groups: Record<string, WorkloadId[]> = {
    all: [...WORKLOAD_IDS],
    connect: ["connect1", "connect32"],
    pingpong: ["pingpong1", "pingpong32"],
    bulk: ["bulk1", "bulk8"],
  };
  const wanted = parseList("workloads", s("workloads") ?? "all", [
    ...WORKLOAD_IDS,
    ...Object.keys(groups),
  ]);
  const chosen = new Set<string>(wanted.flatMap((w) => groups[w] ?? [w]));
  const workloads = WORKLOAD_IDS.filter((w) => chosen.has(w));

  const found = availablePeers();
  const peersMissing = PEERS.filter((p) => !found.includes(p));
  const modesText = s("modes");
  let modes: string[];
  if (modesText === undefined) {
    modes = [...POOL_MODES, ...found];
  } else {
    const listed = parseList("modes", modesText, ["direct", ...POOL_MODES, ...PEERS]);
    for (const p of PEERS) {
      if (listed.includes(p) && !found.includes(p)) {
        throw new UsageError(`--modes: ${p} is not on the PATH (this benchmark never installs it)`);
      }
    }
    modes = [...POOL_MODES, ...PEERS].filter((m) => listed.includes(m));
  }

  const bulkText = s("bulk-mib");
  const bulkMib = bulkText ? parseIntFlag("bulk-mib", bulkText, 1, 65536) : short ? 4 : 1024;
  const holdText = s("hold");
  // each held session costs the proxy two descriptors; the open-file limit here is 20000
  const holdSessions = holdText ? parseIntFlag("hold", holdText, 1, 9000) : short ? 200 : 5000;

  const outText = s("out");
  const outDir = outText ?? decodeURIComponent(new URL("./results", import.meta.url).pathname);
  const proxyText = s("proxy");
  let proxyScript = DEFAULT_PROXY_SCRIPT;
  if (proxyText) {
    const abs = proxyText.startsWith("/") ? proxyText : `${Deno.cwd()}/${proxyText}`;
    proxyScript = new URL(`file://${abs}`);
  }
  if (modes.some((m) => (POOL_MODES as readonly string[]).includes(m))) {
    try {
      Deno.statSync(proxyScript);
    } catch {
      throw new UsageError(
        `--proxy: cannot find the proxy at ${decodeURIComponent(proxyScript.pathname)}`,
      );
    }
  }
  return {
    durationMs,
    warmupMs,
    workloads,
    columns: ["direct", ...modes],
    bulkMib,
    holdSessions,
    short,
    outDir,
    proxyScript,
    peersMissing,
  };
}

function jobFor(w: Exclude<WorkloadId, "hold">, target: string, o: Options): Job {
  const timed = {
    target,
    durationMs: o.durationMs,
    warmupMs: o.warmupMs,
    messageBytes: MESSAGE_BYTES,
  };
  switch (w) {
    case "connect1":
      return { kind: "connect", clients: 1, ...timed };
    case "connect32":
      return { kind: "connect", clients: 32, ...timed };
    case "pingpong1":
      return { kind: "pingpong", clients: 1, ...timed };
    case "pingpong32":
      return { kind: "pingpong", clients: 32, ...timed };
    case "bulk1":
      return { kind: "bulk", target, streams: 1, bytesPerStream: o.bulkMib * MIB };
    case "bulk8":
      return {
        kind: "bulk",
        target,
        streams: 8,
        bytesPerStream: Math.max(4096, Math.floor((o.bulkMib * MIB) / 4 / 4) * 4),
      };
  }
}

function describe(r: JobResult): string {
  const failures = `errors ${r.errors}, mismatches ${r.mismatches}`;
  switch (r.kind) {
    case "connect":
      return `${formatNumber(r.perSecond)} sessions/s, median ${
        formatNumber(r.latency.medianMs)
      } ms, ` +
        `p99 ${formatNumber(r.latency.p99Ms)} ms; ${failures}`;
    case "pingpong":
      return `${formatNumber(r.perSecond)} messages/s, median ${
        formatNumber(r.latency.medianMs)
      } ms, ` +
        `p99 ${formatNumber(r.latency.p99Ms)} ms; ${failures}`;
    case "bulk":
      return `${formatNumber(r.mbPerSecond)} MB/s (${
        formatNumber(r.bytes / MIB)
      } MiB verified); ${failures}`;
    case "hold":
      return `${r.opened} sessions held; ${failures}`;
  }
}

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/** One benchmark run: starts the upstream, measures every column, collects the results. */
class Run {
  readonly measurements: Measurement[] = [];
  readonly failures: { column: string; workload: string | null; message: string }[] = [];
  #step = 0;
  readonly #steps: number;

  constructor(readonly options: Options, readonly echo: EchoProcess) {
    const o = options;
    this.#steps = o.columns.reduce(
      (n, c) => n + o.workloads.filter((w) => w !== "hold" || holdApplies(c)).length,
      0,
    );
  }

  #progress(column: string, workload: string, text: string): void {
    this.#step++;
    const n = String(this.#steps).length;
    console.log(
      `[${String(this.#step).padStart(n)}/${this.#steps}] ${column.padEnd(8)} ${
        workload.padEnd(11)
      } ${text}`,
    );
  }

  #fail(column: string, workload: string | null, err: unknown): void {
    const message = err instanceof Error ? err.message : String(err);
    this.failures.push({ column, workload, message });
    console.log(`FAILED ${column}${workload ? ` ${workload}` : ""}: ${message}`);
  }

  async #start(column: string): Promise<Server | undefined> {
    if (column === "direct") return undefined;
    if ((PEERS as readonly string[]).includes(column)) {
      return await startPeer(column as PeerName, this.echo.address);
    }
    return await startProxy({
      mode: column,
      upstream: this.echo.address,
      script: this.options.proxyScript,
    });
  }

  async #stop(column: string, server: Server | undefined): Promise<void> {
    if (!server) return;
    const code = await server.stop();
    // our proxy must drain and exit 0 on SIGTERM; peers have their own conventions
    if (!(PEERS as readonly string[]).includes(column) && code !== 0) {
      this.#fail(
        column,
        null,
        `${server.name} exited with code ${code} after SIGTERM (expected 0)\n` +
          server.proc.tail(),
      );
    }
  }

  /** Runs every selected workload against one column. */
  async column(column: string): Promise<void> {
    const timed = this.options.workloads.filter((w): w is Exclude<WorkloadId, "hold"> =>
      w !== "hold"
    );
    if (timed.length > 0) {
      let server: Server | undefined;
      try {
        server = await this.#start(column);
        const target = server?.address ?? this.echo.address;
        for (const w of timed) {
          try {
            const before = (await this.echo.stats()).accepted;
            const result = await runLoadgen(jobFor(w, target, this.options));
            const upstreamConnections = (await this.echo.stats()).accepted - before;
            this.measurements.push({ workload: w, column, result, upstreamConnections });
            this.#progress(column, w, describe(result));
          } catch (err) {
            this.#progress(column, w, "failed");
            this.#fail(column, w, err);
          }
        }
      } catch (err) {
        this.#fail(column, null, err);
      } finally {
        await this.#stop(column, server);
      }
    }
    if (this.options.workloads.includes("hold") && holdApplies(column)) await this.#hold(column);
  }

  /** The hold workload, on a fresh proxy process so that earlier workloads do not blur it. */
  async #hold(column: string): Promise<void> {
    let server: Server | undefined;
    try {
      server = await this.#start(column);
      if (!server) return;
      const proc = server.proc;
      let beforeBytes = 0;
      let afterBytes = 0;
      const acceptedBefore = (await this.echo.stats()).accepted;
      const result = await runLoadgen({
        kind: "hold",
        target: server.address,
        sessions: this.options.holdSessions,
        warmupSessions: Math.min(100, this.options.holdSessions),
        messageBytes: MESSAGE_BYTES,
      }, {
        warm: async () => {
          await sleep(300);
          beforeBytes = await proc.rssBytes();
        },
        ready: async () => {
          await sleep(300);
          afterBytes = await proc.rssBytes();
        },
      });
      const upstreamConnections = (await this.echo.stats()).accepted - acceptedBefore;
      const opened = result.kind === "hold" ? result.opened : 0;
      const rss = {
        beforeBytes,
        afterBytes,
        bytesPerSession: opened > 0 ? (afterBytes - beforeBytes) / opened : 0,
      };
      this.measurements.push({ workload: "hold", column, result, upstreamConnections, rss });
      this.#progress(
        column,
        "hold",
        `${describe(result)}; RSS ${formatNumber(beforeBytes / MIB)} -> ${
          formatNumber(afterBytes / MIB)
        } MiB = ${formatNumber(rss.bytesPerSession / 1024)} KiB per session`,
      );
    } catch (err) {
      this.#progress(column, "hold", "failed");
      this.#fail(column, "hold", err);
    } finally {
      await this.#stop(column, server);
    }
  }
}

/** Memory per session is a proxy's figure; socat forks a process per session, so it is skipped. */
function holdApplies(column: string): boolean {
  return column !== "direct" && column !== "socat";
}

function machine(): Record<string, string | number> {
  let kernel = "unknown";
  try {
    kernel = Deno.readTextFileSync("/proc/sys/kernel/osrelease").trim();
  } catch { /* not Linux */ }
  return {
    cpus: navigator.hardwareConcurrency,
    os: Deno.build.os,
    arch: Deno.build.arch,
    kernel,
    deno: Deno.version.deno,
    v8: Deno.version.v8,
  };
}

async function main(): Promise<number> {
  let options: Options;
  try {
    const parsed = parseOptions(Deno.args);
    if (parsed === "help") {
      console.log(USAGE);
      return 0;
    }
    options = parsed;
  } catch (err) {
    if (err instanceof UsageError) {
      console.error(`bench: ${err.message}`);
      return 2;
    }
    throw err;
  }
  const o = options;
  const startedAt = new Date();
  console.log(
    `tcp-pool-proxy benchmark: ${o.columns.join(", ")}; workloads ${o.workloads.join(", ")}; ` +
      `${o.durationMs} ms per timed workload (+${o.warmupMs} ms warm-up), bulk ${o.bulkMib} MiB, ` +
      `hold ${o.holdSessions} sessions`,
  );
  if (o.peersMissing.length > 0) {
    console.log(`peers not on the PATH, so not compared: ${o.peersMissing.join(", ")}`);
  }

  const echo = await startEchoProcess();
  const run = new Run(o, echo);
  try {
    for (const c of o.columns) await run.column(c);
  } finally {
    const code = await echo.stop();
    if (code !== 0) {
      run.failures.push({ column: "direct", workload: null, message: `echo exit ${code}` });
    }
  }

  const figures = computeFigures(run.measurements, o.columns);
  const goals = evaluateGoals(figures);
  const totals = run.measurements.reduce(
    (t, m) => ({
      errors: t.errors + m.result.errors,
      mismatches: t.mismatches + m.result.mismatches,
    }),
    { errors: 0, mismatches: 0 },
  );
  const finishedAt = new Date();

  console.log("");
  console.log(renderTable(figures, goals, o.columns));
  console.log("");
  console.log("Targets (issue 3; reuse mode unless said; ratio to direct in the same run):");
  console.log(renderGoals(goals));
  console.log("");
  console.log(
    `Ratios are proxy / direct. Memory per session = (proxy VmRSS with ${o.holdSessions} ` +
      `sessions held - VmRSS before) / ${o.holdSessions}.`,
  );
  for (const m of run.measurements) {
    const r = m.result;
    if (r.errors === 0 && r.mismatches === 0) continue;
    console.log(
      `${m.column} ${m.workload}: ${r.errors} errors, ${r.mismatches} mismatches: ${
        r.errorSamples.join("; ")
      }`,
    );
  }
  console.log(
    `errors: ${totals.errors}, mismatches: ${totals.mismatches}, failures: ${run.failures.length}`,
  );

  const report = {
    benchmark: "tcp-pool-proxy",
    version: 1,
    startedAt: startedAt.toISOString(),
    finishedAt: finishedAt.toISOString(),
    seconds: (finishedAt.getTime() - startedAt.getTime()) / 1000,
    machine: machine(),
    options: {
      durationMs: o.durationMs,
      warmupMs: o.warmupMs,
      workloads: o.workloads,
      bulkMib: o.bulkMib,
      holdSessions: o.holdSessions,
      short: o.short,
      proxy: decodeURIComponent(o.proxyScript.pathname),
    },
    columns: o.columns,
    peersMissing: o.peersMissing,
    workloadTitles: WORKLOAD_TITLES,
    figures,
    goals,
    totals,
    failures: run.failures,
    measurements: run.measurements,
  };
  await Deno.mkdir(o.outDir, { recursive: true });
  const jsonPath = `${o.outDir}/latest.json`;
  const svgPath = `${o.outDir}/latest.svg`;
  await Deno.writeTextFile(jsonPath, JSON.stringify(report, null, 2) + "\n");
  const subtitle = `${startedAt.toISOString().slice(0, 16).replace("T", " ")} UTC, ` +
    `${navigator.hardwareConcurrency} CPUs, Deno ${Deno.version.deno}; ${o.durationMs} ms per timed ` +
    `workload, bulk ${o.bulkMib} MiB, ${o.holdSessions} held sessions`;
  await Deno.writeTextFile(svgPath, renderSvg(figures, goals, o.columns, subtitle));
  console.log(`wrote ${jsonPath} and ${svgPath} (${report.seconds.toFixed(0)} s)`);

  return totals.errors > 0 || totals.mismatches > 0 || run.failures.length > 0 ? 1 : 0;
}

Deno.exit(await main());
