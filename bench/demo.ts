/**
 * `deno task demo`: what the pool buys, in under a minute, with nothing else installed.
 *
 * Starts an echo upstream inside this process, then the proxy (`main.ts`) in front of it in
 * each pool mode in turn; a load generator process runs 8 clients that each connect, send 64
 * bytes, read the echo and close, over and over for a couple of seconds. Prints one row per mode:
 * sessions per second, median session latency, and how many upstream connections the proxy
 * opened for those sessions.
 *
 * ```sh
 * deno task demo                 # 2 seconds per mode
 * deno task demo --seconds 5
 * ```
 *
 * @module
 */

import { optionsOrExitCode, parseFlags, UsageError } from "./_cli.ts";
import { startEchoServer } from "./_echo.ts";
import type { ConnectResult } from "./_job.ts";
import { runLoadgen } from "./_loadgen.ts";
import { fileUrl } from "./_proc.ts";
import { alignColumns } from "./_report.ts";
import { DEFAULT_PROXY_SCRIPT, type Server, startProxy } from "./_servers.ts";
import { formatNumber } from "./_stats.ts";

const CLIENTS = 8;
const MODES = ["off", "warm", "reuse"] as const;

const USAGE = `Usage: deno task demo [--seconds N]

  --seconds N    load per mode, in seconds (default 2; decimals allowed, at most 60)
  --proxy FILE   the proxy entry point to run (default main.ts of this repository)
  --help         this text`;

interface Row {
  mode: string;
  result: ConnectResult;
  upstreamConnections: number;
}

function parseOptions(args: string[]): { seconds: number; proxy: URL } | "help" {
  const flags = parseFlags(args, { string: ["seconds", "proxy"], boolean: ["help"] });
  if (flags.booleans.get("help")) return "help";
  if (flags.positional.length > 0) {
    throw new UsageError(`unexpected argument "${flags.positional[0]}" (see --help)`);
  }
  const text = flags.strings.get("seconds") ?? "2";
  const seconds = /^\d+(\.\d+)?$/.test(text) ? Number(text) : NaN;
  if (!(seconds > 0 && seconds <= 60)) {
    throw new UsageError(
      `--seconds: expected a number of seconds above 0 and at most 60, got "${text}"`,
    );
  }
  const p = flags.strings.get("proxy");
  const proxy = p ? fileUrl(p) : DEFAULT_PROXY_SCRIPT;
  return { seconds, proxy };
}

function summary(rows: Row[]): string {
  const by = (m: string) => rows.find((r) => r.mode === m);
  const off = by("off"), reuse = by("reuse"), warm = by("warm");
  const lines: string[] = [];
  if (off && reuse && off.result.perSecond > 0) {
    const shared = reuse.upstreamConnections * 10 < reuse.result.sessions;
    lines.push(
      `What the pool buys: in reuse mode ${formatNumber(reuse.result.sessions)} sessions used ` +
        `${formatNumber(reuse.upstreamConnections)} upstream connections` +
        (shared ? ", so almost no session waited for an upstream handshake," : "") +
        ` and it ran ${(reuse.result.perSecond / off.result.perSecond).toFixed(2)}x the sessions ` +
        `per second of off, which dials the upstream for every session.`,
    );
  }
  if (warm && off && off.result.perSecond > 0) {
    lines.push(
      `warm keeps fresh connections dialled ahead (${
        (warm.result.perSecond / off.result.perSecond)
          .toFixed(2)
      }x off here) and uses each for one session only, so it is safe for every ` +
        `protocol; reuse shares an upstream connection between clients, so it is only for ` +
        `stateless request/response protocols.`,
    );
  }
  return lines.join("\n");
}

async function main(): Promise<number> {
  const parsed = optionsOrExitCode("demo", USAGE, Deno.args, parseOptions);
  if (typeof parsed === "number") return parsed;
  const options = parsed;

  const echo = startEchoServer({ hostname: "127.0.0.1", port: 0 });
  const rows: Row[] = [];
  let failed = false;
  console.log(
    `Echo upstream on ${echo.address}. ${CLIENTS} clients each connect, send 64 bytes, read the ` +
      `echo and close, again and again for ${options.seconds} s: first straight to the upstream, ` +
      `then through the proxy in each pool mode.`,
  );
  try {
    for (const mode of ["direct", ...MODES]) {
      let proxy: Server | undefined;
      try {
        const before = echo.stats().accepted;
        if (mode !== "direct") {
          proxy = await startProxy({ mode, upstream: echo.address, script: options.proxy });
        }
        const result = await runLoadgen({
          kind: "connect",
          target: proxy?.address ?? echo.address,
          clients: CLIENTS,
          durationMs: options.seconds * 1000,
          warmupMs: 0,
          messageBytes: 64,
        });
        if (proxy) {
          const code = await proxy.stop();
          proxy = undefined;
          if (code !== 0) throw new Error(`the proxy exited with code ${code} on SIGTERM`);
        }
        if (result.kind !== "connect") throw new Error(`unexpected ${result.kind} result`);
        if (result.errors > 0 || result.mismatches > 0) {
          failed = true;
          console.log(
            `${mode}: ${result.errors} errors, ${result.mismatches} mismatches: ${
              result.errorSamples.join("; ")
            }`,
          );
        }
        rows.push({ mode, result, upstreamConnections: echo.stats().accepted - before });
        console.log(`  ${mode}: done`);
      } catch (err) {
        failed = true;
        console.log(`${mode}: FAILED: ${err instanceof Error ? err.message : err}`);
      } finally {
        await proxy?.stop();
      }
    }
  } finally {
    await echo.close();
  }

  const table: string[][] = [[
    "mode",
    "sessions/s",
    "median latency",
    "sessions",
    "upstream connections opened",
  ]];
  for (const r of rows) {
    table.push([
      r.mode === "direct" ? "direct (no proxy)" : r.mode,
      formatNumber(Math.round(r.result.perSecond)),
      `${formatNumber(r.result.latency.medianMs)} ms`,
      formatNumber(r.result.sessions),
      formatNumber(r.upstreamConnections),
    ]);
  }
  console.log("");
  console.log(alignColumns(table));
  console.log("");
  console.log(summary(rows));
  return failed ? 1 : 0;
}

Deno.exit(await main());
