/**
 * The `deno task compile` smoke test: builds the single binary with the task's own flags (into a
 * temporary directory instead of `dist/`) and runs it as a proxy.
 *
 * `deno compile` needs a `denort` runtime: `DENORT_BIN` pointing at one, or a download. Whether
 * one is there is decided when this module loads; without one the test is registered as ignored,
 * with the reason in its name and on stdout, so it is never reported as passed when it did not run.
 */

import denoJson from "../deno.json" with { type: "json" };
import { assertEquals, assertStringIncludes } from "./_assert.ts";
import {
  EchoUpstream,
  MAIN_TS,
  ProxyProcess,
  relayOnce,
  ROOT_DIR,
  stripAnsi,
} from "./_proxy_process.ts";

/** How long a `deno compile` may take before it is killed (a download that hangs). */
const COMPILE_TIMEOUT_MS = 60_000;

/** The arguments of `deno task compile` after `deno`, with `--output` pointing at `output`. */
function compileArgs(output: string): string[] {
  const words = denoJson.tasks.compile.split(/\s+/);
  if (words[0] !== "deno" || words[1] !== "compile") {
    throw new Error(`the compile task is not a deno compile: ${denoJson.tasks.compile}`);
  }
  const args = words.slice(1);
  const at = args.indexOf("--output");
  if (at < 0 || at + 1 >= args.length) {
    throw new Error(`the compile task has no --output: ${denoJson.tasks.compile}`);
  }
  args[at + 1] = output;
  return args.map((arg) => arg === "main.ts" ? MAIN_TS : arg);
}

/** What a `deno compile` run gave. */
type CompileResult = { ok: true; binary: string } | { ok: false; reason: string };

/** Runs the compile task's `deno compile` into `dir`, killing it after the timeout. */
async function compileInto(dir: string): Promise<CompileResult> {
  const binary = `${dir}/tcp-pool-proxy`;
  const killer = new AbortController();
  const timer = setTimeout(() => killer.abort(), COMPILE_TIMEOUT_MS);
  try {
    const { success, stderr } = await new Deno.Command(Deno.execPath(), {
      args: compileArgs(binary),
      cwd: ROOT_DIR,
      stdin: "null",
      stdout: "null",
      stderr: "piped",
      signal: killer.signal,
    }).output();
    if (killer.signal.aborted) {
      return { ok: false, reason: `deno compile did not finish within ${COMPILE_TIMEOUT_MS}ms` };
    }
    if (success) return { ok: true, binary };
    return { ok: false, reason: firstErrorLine(stripAnsi(new TextDecoder().decode(stderr)), dir) };
  } finally {
    clearTimeout(timer);
  }
}

/**
 * The `error:` line of `deno compile`'s stderr, with the deepest line of its `Caused by:` list
 * when it has one; temporary paths are shortened to `$TMP` so the reason reads the same each run.
 */
function firstErrorLine(stderr: string, dir: string): string {
  const lines = stderr.split("\n").map((line) =>
    line.trim().replaceAll(dir, "$TMP").replace(/\.tmp-[0-9a-f]+/g, ".tmp-*")
  );
  const at = lines.findIndex((line) => line.startsWith("error:"));
  if (at < 0) return lines.find((line) => line !== "") ?? "deno compile failed without output";
  const first = lines[at].slice("error:".length).trim();
  const causedBy = lines.indexOf("Caused by:", at);
  const causes: string[] = [];
  for (let i = causedBy + 1; causedBy > 0 && /^\d+: /.test(lines[i] ?? ""); i++) {
    causes.push(lines[i].replace(/^\d+: /, ""));
  }
  const deepest = causes.at(-1);
  return deepest === undefined ? first : `${first} (cause: ${deepest})`;
}

/** Why the compiled binary cannot be built here, or undefined when it can. */
async function compileUnavailableReason(): Promise<string | undefined> {
  const denortBin = Deno.env.get("DENORT_BIN");
  let denortNote: string;
  if (denortBin === undefined || denortBin === "") {
    denortNote = "DENORT_BIN unset";
  } else {
    try {
      if (Deno.statSync(denortBin).isFile) return undefined;
      denortNote = `DENORT_BIN=${denortBin} is not a file`;
    } catch {
      denortNote = `DENORT_BIN=${denortBin} does not exist`;
    }
  }
  // No runtime given: see whether deno compile can download one.
  const dir = await Deno.makeTempDir({ prefix: "tcp-pool-proxy-compile-probe-" });
  try {
    const result = await compileInto(dir);
    if (result.ok) return undefined;
    return `no denort runtime: ${denortNote} and the download failed: ${result.reason}`;
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

const unavailable = await compileUnavailableReason();
const TEST_NAME = "compiled binary relays through the proxy and exits 0 on SIGTERM";

if (unavailable !== undefined) {
  console.log(`compile_test.ts: SKIPPED "${TEST_NAME}": ${unavailable}`);
}

Deno.test({
  name: unavailable === undefined ? TEST_NAME : `${TEST_NAME} (skipped: ${unavailable})`,
  ignore: unavailable !== undefined,
  fn: async () => {
    const dir = await Deno.makeTempDir({ prefix: "tcp-pool-proxy-compile-" });
    try {
      const result = await compileInto(dir);
      if (!result.ok) throw new Error(`deno compile failed: ${result.reason}`);

      await using upstream = EchoUpstream.start();
      const version = await new Deno.Command(result.binary, {
        args: ["--version"],
        stdin: "null",
        stdout: "piped",
        stderr: "piped",
      }).output();
      assertEquals(
        new TextDecoder().decode(version.stdout),
        `tcp-pool-proxy ${denoJson.version}\n`,
        new TextDecoder().decode(version.stderr),
      );

      await using proxy = ProxyProcess.spawn(result.binary, [
        "--listen",
        "127.0.0.1:0",
        "--upstream",
        upstream.address,
        "--pool",
        "reuse",
      ]);
      const port = await proxy.listeningPort();
      assertEquals(await relayOnce(port, "through the binary"), "through the binary");
      proxy.kill("SIGTERM");
      const status = await proxy.exited();
      assertEquals(status.code, 0, proxy.stderr);
      assertStringIncludes(proxy.stderr, "stopped:");
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});
