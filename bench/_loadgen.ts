/**
 * Runs one job in a fresh load generator process (`bench/loadgen.ts`) and returns its checked
 * result. For a hold job, the caller's hooks run while the sessions are warm and while they are
 * all held (that is when the orchestrator reads the proxy's memory).
 *
 * ```ts
 * import { runLoadgen } from "./_loadgen.ts";
 * const result = await runLoadgen({
 *   kind: "connect", target: "127.0.0.1:9000", clients: 8, durationMs: 2000, warmupMs: 200,
 *   messageBytes: 64,
 * });
 * ```
 *
 * @module
 */

import { type Job, type JobResult, parseLoadgenEvent } from "./_job.ts";
import { ChildError, ChildProc, denoScript } from "./_proc.ts";

const LOADGEN = new URL("./loadgen.ts", import.meta.url);

/** Callbacks for a hold job; each may take its time, the sessions wait. */
export interface HoldHooks {
  /** After the warm-up sessions, before the held sessions open. */
  warm?(): Promise<void> | void;
  /** With every session open and held. */
  ready?(opened: number): Promise<void> | void;
}

/** How long a job may take before the load generator is considered stuck. */
function jobTimeoutMs(job: Job): number {
  switch (job.kind) {
    case "connect":
    case "pingpong":
    case "resp-connect":
      return job.warmupMs + job.durationMs + 60_000;
    case "resp-bulk":
      return 60_000 + (job.values * job.valueBytes) / 5_000;
    case "bulk":
      // at least 5 MB/s, or it is stuck (its own watchdog fires after 10 s without progress)
      return 60_000 + (job.streams * job.bytesPerStream) / 5_000;
    case "hold":
      return 120_000 + job.sessions * 20;
  }
}

/**
 * Runs `job` in a new load generator process and returns its result.
 *
 * @throws {ChildError} when the process fails, prints something unexpected, or takes too long.
 */
export async function runLoadgen(job: Job, hooks: HoldHooks = {}): Promise<JobResult> {
  const proc = ChildProc.spawn(
    `loadgen (${job.kind})`,
    Deno.execPath(),
    denoScript(LOADGEN, ["--allow-net"], [JSON.stringify(job)]),
    { stdin: true },
  );
  const deadline = performance.now() + jobTimeoutMs(job);
  const left = () => Math.max(1, deadline - performance.now());
  try {
    while (true) {
      const line = await proc.nextLine(left());
      let event;
      try {
        event = parseLoadgenEvent(line);
      } catch (err) {
        throw new ChildError(
          proc.name,
          `unexpected output ${JSON.stringify(line)}: ${err}`,
          proc.tail(),
        );
      }
      switch (event.event) {
        case "warm":
          await hooks.warm?.();
          await proc.writeLine("go");
          break;
        case "ready":
          await hooks.ready?.(event.opened);
          await proc.writeLine("release");
          break;
        case "result": {
          const status = await proc.waitExit(10_000);
          if (status && status.code !== 0) {
            throw new ChildError(proc.name, `exit code ${status.code}`, proc.tail());
          }
          return event.result;
        }
      }
    }
  } finally {
    await proc.stop();
  }
}
