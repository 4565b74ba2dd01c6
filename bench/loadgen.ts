/**
 * The load generator as its own process, so that it does not share a CPU thread with the proxy
 * or the upstream it measures.
 *
 * ```sh
 * deno run --allow-net bench/loadgen.ts '{"kind":"connect","target":"127.0.0.1:9000",
 *   "clients":32,"durationMs":5000,"warmupMs":500,"messageBytes":64}'
 * ```
 *
 * The job (see `_job.ts`: `connect`, `pingpong`, `bulk`, `hold`, and against a Redis-protocol
 * target `resp-connect` and `resp-bulk`; a `connect` job with `tls` does a TLS handshake of its
 * own in every session) is the first argument, or else the first line of stdin. The result is
 * printed on stdout as one JSON line: `{"event":"result","result":{...}}`. A hold job also
 * prints `{"event":"warm"}` and waits for a `go` line on stdin, then prints
 * `{"event":"ready",...}` and waits for a `release` line (or the end of stdin).
 *
 * Exit codes: 0 when the job ran (its errors are in the result), 2 for a bad job.
 *
 * @module
 */

import { type Job, type JobResult, type LoadgenEvent, parseJob } from "./_job.ts";
import {
  runBulk,
  runConnect,
  runHold,
  runPingPong,
  runRespBulk,
  runRespConnect,
} from "./_workloads.ts";

/** Reads stdin line by line. */
class StdinLines {
  readonly #reader = Deno.stdin.readable.getReader();
  readonly #decoder = new TextDecoder();
  #pending = "";

  /** The next line, or null at the end of stdin. */
  async next(): Promise<string | null> {
    while (true) {
      const nl = this.#pending.indexOf("\n");
      if (nl >= 0) {
        const line = this.#pending.slice(0, nl).trim();
        this.#pending = this.#pending.slice(nl + 1);
        return line;
      }
      const { value, done } = await this.#reader.read();
      if (done) {
        const rest = this.#pending.trim();
        this.#pending = "";
        return rest === "" ? null : rest;
      }
      this.#pending += this.#decoder.decode(value, { stream: true });
    }
  }

  /** Waits for the line `word` (other lines are ignored) or the end of stdin. */
  async waitFor(word: string): Promise<void> {
    while (true) {
      const line = await this.next();
      if (line === null || line === word) return;
    }
  }
}

function emit(event: LoadgenEvent): void {
  console.log(JSON.stringify(event));
}

async function run(job: Job, stdin: StdinLines): Promise<JobResult> {
  switch (job.kind) {
    case "connect":
      return await runConnect(job);
    case "pingpong":
      return await runPingPong(job);
    case "bulk":
      return await runBulk(job);
    case "resp-connect":
      return await runRespConnect(job);
    case "resp-bulk":
      return await runRespBulk(job);
    case "hold":
      return await runHold(job, {
        warm: async () => {
          emit({ event: "warm" });
          await stdin.waitFor("go");
        },
        ready: async (opened, errors) => {
          emit({ event: "ready", opened, errors });
          await stdin.waitFor("release");
        },
      });
  }
}

async function main(): Promise<number> {
  const stdin = new StdinLines();
  let job: Job;
  try {
    const text = Deno.args[0] ?? await stdin.next();
    if (text === null) throw new Error("no job given (argument or first line of stdin)");
    job = parseJob(JSON.parse(text));
  } catch (err) {
    console.error(`loadgen: bad job: ${err instanceof Error ? err.message : err}`);
    return 2;
  }
  const result = await run(job, stdin);
  emit({ event: "result", result });
  return 0;
}

Deno.exit(await main());
