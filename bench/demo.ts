/**
 * `deno task demo`: what the pool buys, in under a minute, with nothing else installed.
 *
 * Starts an echo upstream inside this process, then the proxy (`main.ts`) in front of it in
 * each pool mode in turn; a load generator process runs 8 clients that each connect, send 64
 * bytes, read the echo and close, over and over for a couple of seconds. Prints one row per mode:
 * sessions per second, median session latency, and how many upstream connections the proxy
 * opened for those sessions.
 *
 * Then the same over TLS: an echo upstream behind TLS on loopback (certificates made for the run
 * by `tests/make_test_certs.ts` in a temporary directory, removed at the end), the clients still
 * speaking plain TCP to the proxy, which runs with `--upstream-tls --upstream-ca`. Its table has
 * the TLS handshakes the upstream completed (counted by the upstream itself), and one line judges
 * the pool's targets over TLS: `reuse` at least 3x the sessions per second of `off`, and its
 * median latency at most 1.5x that of plaintext `reuse`.
 *
 * ```sh
 * deno task demo                 # 2 seconds per mode, about 30 s in all
 * deno task demo --seconds 5
 * ```
 *
 * @module
 */

import { optionsOrExitCode, parseFlags, UsageError } from "./_cli.ts";
import { type EchoServer, startEchoServer, startTlsEchoServer } from "./_echo.ts";
import { TLS_TARGETS } from "./_figures.ts";
import type { ClientTls, ConnectResult } from "./_job.ts";
import { runLoadgen } from "./_loadgen.ts";
import { fileUrl } from "./_proc.ts";
import { alignColumns } from "./_report.ts";
import { DEFAULT_PROXY_SCRIPT, type Server, startProxy } from "./_servers.ts";
import { formatNumber } from "./_stats.ts";
import { makeTempCerts, type TempCertsHandle } from "./temp_certs.ts";

const CLIENTS = 8;
const MODES = ["off", "warm", "reuse"] as const;

const USAGE = `Usage: deno task demo [--seconds N]

  --seconds N    load per mode, in seconds (default 2; decimals allowed, at most 60);
                 8 modes run (4 over plain TCP, 4 to a TLS upstream)
  --proxy FILE   the proxy entry point to run (default main.ts of this repository)
  --help         this text`;

interface Row {
  mode: string;
  result: ConnectResult;
  upstreamConnections: number;
  /** TLS handshakes the upstream completed while the mode ran (0 over plain TCP). */
  upstreamHandshakes: number;
}

interface Options {
  seconds: number;
  proxy: URL;
}

function parseOptions(args: string[]): Options | "help" {
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

/** The verdict on the TLS table: the pool's targets over TLS, and what a handshake cost. */
function tlsSummary(tls: Row[], plain: Row[]): string {
  const by = (rows: Row[], m: string) => rows.find((r) => r.mode === m);
  const off = by(tls, "off"), reuse = by(tls, "reuse");
  const plainOff = by(plain, "off"), plainReuse = by(plain, "reuse");
  if (!off || !reuse || off.result.perSecond <= 0) return "";
  const verdict = (met: boolean) => met ? "met" : "NOT met";
  const rate = reuse.result.perSecond / off.result.perSecond;
  const lines = [
    `Over TLS, reuse ran ${rate.toFixed(2)}x the sessions per second of off ` +
    `(target: at least ${TLS_TARGETS.reuseVsOffRate}x, ${
      verdict(rate >= TLS_TARGETS.reuseVsOffRate)
    })` +
    (plainReuse && plainReuse.result.latency.medianMs > 0
      ? (() => {
        const ratio = reuse.result.latency.medianMs / plainReuse.result.latency.medianMs;
        return `, and its median latency was ${ratio.toFixed(2)}x that of reuse over plain ` +
          `TCP (target: at most ${TLS_TARGETS.reuseVsPlainLatency}x, ${
            verdict(ratio <= TLS_TARGETS.reuseVsPlainLatency)
          }).`;
      })()
      : "."),
    `The upstream counted ${formatNumber(off.upstreamHandshakes)} TLS handshakes for off's ` +
    `${formatNumber(off.result.completed)} sessions and ${
      formatNumber(reuse.upstreamHandshakes)
    } for reuse's ${formatNumber(reuse.result.completed)}` +
    (plainOff
      ? `; off's median session took ${
        formatNumber(off.result.latency.medianMs - plainOff.result.latency.medianMs)
      } ms longer than over plain TCP: what a handshake per session costs, at this load on ` +
        `this machine.`
      : "."),
  ];
  return lines.join("\n");
}

/** What one pass (plain or TLS) runs against. */
interface Pass {
  echo: EchoServer;
  /** TLS for the direct row's clients and the proxy's upstream; absent over plain TCP. */
  tls?: { client: ClientTls; caFile: string };
}

/**
 * Runs the direct row and one row per pool mode against `pass.echo`; a mode that fails is
 * reported and left out. Returns the rows and whether anything failed.
 */
async function runPass(pass: Pass, options: Options): Promise<{ rows: Row[]; failed: boolean }> {
  const { echo, tls } = pass;
  const rows: Row[] = [];
  let failed = false;
  for (const mode of ["direct", ...MODES]) {
    let proxy: Server | undefined;
    try {
      const before = echo.stats();
      if (mode !== "direct") {
        proxy = await startProxy({
          mode,
          upstream: echo.address,
          script: options.proxy,
          upstreamTls: tls ? { caFile: tls.caFile } : undefined,
        });
      }
      const result = await runLoadgen({
        kind: "connect",
        target: proxy?.address ?? echo.address,
        clients: CLIENTS,
        durationMs: options.seconds * 1000,
        warmupMs: 0,
        messageBytes: 64,
        ...(tls && !proxy ? { tls: tls.client } : {}),
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
      const after = echo.stats();
      rows.push({
        mode,
        result,
        upstreamConnections: after.accepted - before.accepted,
        upstreamHandshakes: after.handshakes - before.handshakes,
      });
      console.log(`  ${tls ? "TLS " : ""}${mode}: done`);
    } catch (err) {
      failed = true;
      console.log(`${mode}: FAILED: ${err instanceof Error ? err.message : err}`);
    } finally {
      await proxy?.stop();
    }
  }
  return { rows, failed };
}

function table(rows: Row[], tls: boolean): string {
  const out: string[][] = [[
    "mode",
    "sessions/s",
    "median latency",
    "sessions",
    tls ? "upstream TLS handshakes" : "upstream connections opened",
  ]];
  for (const r of rows) {
    out.push([
      r.mode === "direct" ? `direct (no proxy${tls ? ", client does TLS" : ""})` : r.mode,
      formatNumber(Math.round(r.result.perSecond)),
      `${formatNumber(r.result.latency.medianMs)} ms`,
      formatNumber(r.result.sessions),
      formatNumber(tls ? r.upstreamHandshakes : r.upstreamConnections),
    ]);
  }
  return alignColumns(out);
}

async function main(): Promise<number> {
  const parsed = optionsOrExitCode("demo", USAGE, Deno.args, parseOptions);
  if (typeof parsed === "number") return parsed;
  const options = parsed;

  const echo = startEchoServer({ hostname: "127.0.0.1", port: 0 });
  console.log(
    `Echo upstream on ${echo.address}. ${CLIENTS} clients each connect, send 64 bytes, read the ` +
      `echo and close, again and again for ${options.seconds} s: first straight to the upstream, ` +
      `then through the proxy in each pool mode.`,
  );
  let plain: { rows: Row[]; failed: boolean };
  try {
    plain = await runPass({ echo }, options);
  } finally {
    await echo.close();
  }
  console.log("");
  console.log(table(plain.rows, false));
  console.log("");
  console.log(summary(plain.rows));

  let tls: { rows: Row[]; failed: boolean } = { rows: [], failed: true };
  let certs: TempCertsHandle | undefined;
  let tlsEcho: EchoServer | undefined;
  console.log("");
  try {
    certs = await makeTempCerts();
    tlsEcho = await startTlsEchoServer({
      hostname: "127.0.0.1",
      port: 0,
      cert: certs.serverCert,
      key: certs.serverKey,
    });
    console.log(
      `TLS echo upstream on ${tlsEcho.address} (a throwaway CA and certificate in ` +
        `${certs.dir}). The same clients, in plain TCP to the proxy, which runs with ` +
        `--upstream-tls --upstream-ca ${certs.caFile}; direct: the clients do TLS themselves.`,
    );
    tls = await runPass({
      echo: tlsEcho,
      tls: { client: { caCerts: [certs.ca] }, caFile: certs.caFile },
    }, options);
  } catch (err) {
    console.log(`TLS upstream: FAILED: ${err instanceof Error ? err.message : err}`);
  } finally {
    await tlsEcho?.close();
    await certs?.remove();
  }
  if (tls.rows.length > 0) {
    console.log("");
    console.log("TLS upstream (loopback):");
    console.log(table(tls.rows, true));
    console.log("");
    console.log(tlsSummary(tls.rows, plain.rows));
  }
  return plain.failed || tls.failed ? 1 : 0;
}

Deno.exit(await main());
