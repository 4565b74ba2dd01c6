/**
 * The open-file limit and the default of `--max-clients`: parsing `/proc/self/limits`, the
 * derivation, the resolution of `auto`, and what a real process reads under each permission.
 */

import {
  ASSUMED_OPEN_FILE_LIMIT,
  defaultMaxClients,
  descriptorReserve,
  fitPoolToDescriptors,
  openFileLimit,
  parseOpenFileLimit,
  poolShare,
  RESERVED_DESCRIPTORS,
  resolveMaxClients,
  TLS_ACCEPT_BURST,
  UNLIMITED_OPEN_FILES,
} from "../src/limits.ts";
import { assert, assertEquals } from "./_assert.ts";

const LIMITS_TEXT = `Limit                     Soft Limit           Hard Limit           Units     
Max cpu time              unlimited            unlimited            seconds   
Max file size             unlimited            unlimited            bytes     
Max processes             63704                63704                processes 
Max open files            20000                40000                files     
Max locked memory         8388608              8388608              bytes     
`;

Deno.test("parseOpenFileLimit reads the soft limit of the Max open files row", () => {
  assertEquals(parseOpenFileLimit(LIMITS_TEXT), 20_000);
  assertEquals(
    parseOpenFileLimit(
      "Max open files            1024                 524288               files\n",
    ),
    1024,
  );
});

Deno.test("parseOpenFileLimit takes unlimited as 1048576", () => {
  const text = LIMITS_TEXT.replace(/20000 {16}40000/, "unlimited            unlimited");
  assertEquals(parseOpenFileLimit(text), UNLIMITED_OPEN_FILES);
  assertEquals(UNLIMITED_OPEN_FILES, 1_048_576);
});

Deno.test("parseOpenFileLimit gives undefined for text it cannot read", () => {
  assertEquals(parseOpenFileLimit(""), undefined);
  assertEquals(parseOpenFileLimit("Max processes  63704  63704  processes\n"), undefined);
  assertEquals(parseOpenFileLimit("Max open files  lots  lots  files\n"), undefined);
  assertEquals(parseOpenFileLimit("Max open files  0  0  files\n"), undefined);
  assertEquals(parseOpenFileLimit("Max open files  -1  -1  files\n"), undefined);
});

Deno.test("defaultMaxClients gives two descriptors per session after a reserve of 32 and the pool", () => {
  assertEquals(RESERVED_DESCRIPTORS, 32);
  assertEquals(defaultMaxClients(20_000, 100), 9_934);
  assertEquals(defaultMaxClients(20_000, 0), 9_984);
  assertEquals(defaultMaxClients(1024, 0), 496);
  assertEquals(defaultMaxClients(1024, 100), 446);
  assertEquals(defaultMaxClients(1025, 0), 496, "an odd descriptor is left over");
});

Deno.test("defaultMaxClients is at least 1, however small the limit", () => {
  assertEquals(defaultMaxClients(34, 0), 1);
  assertEquals(defaultMaxClients(33, 0), 1);
  assertEquals(defaultMaxClients(10, 0), 1);
});

Deno.test("defaultMaxClients reserves at most a third of the descriptors for idle pooled connections, however large --pool-size is", () => {
  assertEquals(defaultMaxClients(1024, 5_000), 331);
  assertEquals(defaultMaxClients(1024, 100), 446, "a pool under a third is reserved whole");
  assertEquals(defaultMaxClients(20_000, 1_000), 9_484);
  assertEquals(poolShare(1024), 330, "and --pool-size is capped there with auto");
  assertEquals(poolShare(20_000), 6_656);
});

Deno.test("the reserve grows by the TLS listener's accept burst with --tls-cert and by the admin endpoint's connections with --admin", () => {
  assertEquals(descriptorReserve({}), RESERVED_DESCRIPTORS);
  assertEquals(descriptorReserve({ tlsCert: "cert.pem" }), RESERVED_DESCRIPTORS + TLS_ACCEPT_BURST);
  assertEquals(descriptorReserve({ admin: { hostname: "127.0.0.1", port: 9000 } }), 32 + 16);
  const proc = () => ({ limit: 1024, source: "proc" as const });
  // (1024 - 160) / 2 in off; the pool's share is a third of what the reserve leaves.
  const tls = { maxClients: "auto" as const, pool: "off" as const, poolSize: 100, tlsCert: "c" };
  assertEquals(resolveMaxClients(tls, proc).maxClients, 432);
  assertEquals(poolShare(1024, descriptorReserve({ tlsCert: "c" })), 288);
  const given = { maxClients: 500, source: "given" as const };
  const fit = fitPoolToDescriptors(
    { pool: "off", poolSize: 0, minIdle: 0, tlsCert: "c" },
    given,
    proc,
  );
  assertEquals(fit.sessionsThatFit, 432);
});

Deno.test("resolveMaxClients keeps a given number and never reads the limit for it", () => {
  const choice = resolveMaxClients({ maxClients: 50, pool: "warm", poolSize: 100 }, () => {
    throw new Error("the limit was read");
  });
  assertEquals(choice, { maxClients: 50, source: "given" });
});

Deno.test("resolveMaxClients derives auto from the limit, reserving the pool size unless the pool is off", () => {
  const proc = () => ({ limit: 20_000, source: "proc" as const });
  assertEquals(resolveMaxClients({ maxClients: "auto", pool: "warm", poolSize: 100 }, proc), {
    maxClients: 9_934,
    source: "proc",
    fileLimit: 20_000,
  });
  assertEquals(
    resolveMaxClients({ maxClients: "auto", pool: "reuse", poolSize: 1_000 }, proc).maxClients,
    9_484,
  );
  assertEquals(
    resolveMaxClients({ maxClients: "auto", pool: "off", poolSize: 100 }, proc).maxClients,
    9_984,
  );
  const assumed = () => ({ limit: ASSUMED_OPEN_FILE_LIMIT, source: "assumed" as const });
  assertEquals(resolveMaxClients({ maxClients: "auto", pool: "off", poolSize: 100 }, assumed), {
    maxClients: 496,
    source: "assumed",
    fileLimit: 1024,
  });
});

Deno.test("fitPoolToDescriptors: with auto, the pool keeps its share, and --min-idle follows the pool size", () => {
  const proc = () => ({ limit: 1_024, source: "proc" as const });
  const config = {
    pool: "warm" as const,
    poolSize: 1_000,
    minIdle: 500,
    maxClients: "auto" as const,
  };
  const fit = fitPoolToDescriptors(config, resolveMaxClients(config, proc));
  assertEquals([fit.poolSize, fit.minIdle], [330, 330]);
  assertEquals(fit.notes, ["min-idle 500 lowered to the pool size in force, 330"]);
  const roomy = fitPoolToDescriptors({ ...config, minIdle: 4 }, resolveMaxClients(config, proc));
  assertEquals([roomy.poolSize, roomy.minIdle, roomy.notes], [330, 4, []]);
});

Deno.test("fitPoolToDescriptors: with auto, a given --pool-size that is lowered is noted; the default, lowered, is not", () => {
  const proc = () => ({ limit: 1_024, source: "proc" as const });
  const config = {
    pool: "warm" as const,
    poolSize: 5_000,
    poolSizeGiven: true,
    minIdle: 4,
    maxClients: "auto" as const,
  };
  const fit = fitPoolToDescriptors(config, resolveMaxClients(config, proc));
  assertEquals(fit.poolSize, 330);
  assertEquals(fit.notes, [
    "--pool-size 5000 lowered to 330: a third of the open-file limit 1024 after the reserve " +
    "(--max-clients auto); raise ulimit -n, or give --max-clients",
  ]);
  const fits = fitPoolToDescriptors({ ...config, poolSize: 300 }, resolveMaxClients(config, proc));
  assertEquals([fits.poolSize, fits.notes], [300, []]);
  const givenAsDefault = fitPoolToDescriptors(
    { ...config, poolSize: 1_000 },
    resolveMaxClients(config, proc),
  );
  assertEquals(givenAsDefault.notes.length, 1, "--pool-size 1000 given: noted");
  const byDefault = fitPoolToDescriptors(
    { ...config, poolSize: 1_000, poolSizeGiven: false },
    resolveMaxClients(config, proc),
  );
  assertEquals([byDefault.poolSize, byDefault.notes], [330, []]);
});

Deno.test("fitPoolToDescriptors: with a given --max-clients, the pool keeps what the sessions leave, and a --max-clients past the limit is noted", () => {
  const given = { maxClients: 10, source: "given" as const };
  const limit256 = () => ({ limit: 256, source: "proc" as const });
  const fit = fitPoolToDescriptors(
    { pool: "warm", poolSize: 1_000, minIdle: 1_000 },
    given,
    limit256,
  );
  // 256 - 32 reserved - 2 x 10 sessions.
  assertEquals([fit.poolSize, fit.minIdle], [204, 204]);
  assertEquals(fit.notes.length, 2, fit.notes.join("\n"));
  const over = fitPoolToDescriptors(
    { pool: "reuse", poolSize: 100, minIdle: 0 },
    { maxClients: 200, source: "given" },
    () => ({ limit: 128, source: "proc" }),
  );
  // Past the limit: the pool keeps its third (32), pooling is not turned off; one note says so.
  assertEquals([over.poolSize, over.sessionsThatFit], [32, 32]);
  assertEquals(over.notes, [
    "--pool-size 100 lowered to 32: a third of the open-file limit 128 after the reserve (--max-clients 200 leaves less)",
    "--max-clients 200 needs about 464 descriptors (2 per session, 32 for the pool, 32 kept) and the open-file limit is 128: sessions past about 32 will fail; raise ulimit -n or lower --max-clients",
  ]);
  // A loose cap far below the limit changes nothing.
  const loose = fitPoolToDescriptors(
    { pool: "reuse", poolSize: 1_000, minIdle: 0 },
    { maxClients: 30_000, source: "given" },
    () => ({ limit: 65_536, source: "proc" }),
  );
  assertEquals([loose.poolSize, loose.notes], [1_000, []]);
  const unlimited = fitPoolToDescriptors(
    { pool: "reuse", poolSize: 1_000, minIdle: 0 },
    { maxClients: 1_000_000, source: "given" },
    () => ({ limit: UNLIMITED_OPEN_FILES, source: "proc" }),
  );
  assertEquals([unlimited.poolSize, unlimited.notes], [1_000, []]);
  // Nothing to fit: off keeps no pool; an assumed limit is not trusted against a given number.
  assertEquals(
    fitPoolToDescriptors({ pool: "off", poolSize: 1_000, minIdle: 0 }, given, limit256).notes,
    [],
  );
  const assumed = () => ({ limit: ASSUMED_OPEN_FILE_LIMIT, source: "assumed" as const });
  const trusted = fitPoolToDescriptors(
    { pool: "warm", poolSize: 1_000, minIdle: 4 },
    given,
    assumed,
  );
  assertEquals([trusted.poolSize, trusted.notes], [1_000, []]);
});

Deno.test("openFileLimit never throws and gives a positive limit", () => {
  const { limit, source } = openFileLimit();
  assert(Number.isSafeInteger(limit) && limit > 0, String(limit));
  assert(source === "proc" || source === "prlimit" || source === "assumed", source);
  if (source === "assumed") assertEquals(limit, ASSUMED_OPEN_FILE_LIMIT);
});

/** Runs `openFileLimit()` in a child `deno run` with `permissions`; returns what it printed. */
async function childOpenFileLimit(permissions: string[]): Promise<unknown> {
  const script = await Deno.makeTempFile({ suffix: ".ts" });
  try {
    const limitsUrl = new URL("../src/limits.ts", import.meta.url).href;
    await Deno.writeTextFile(
      script,
      `import { openFileLimit } from ${JSON.stringify(limitsUrl)};\n` +
        "console.log(JSON.stringify(openFileLimit()));\n",
    );
    const { code, stdout, stderr } = await new Deno.Command(Deno.execPath(), {
      args: ["run", "--quiet", "--no-prompt", ...permissions, script],
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    }).output();
    const decoder = new TextDecoder();
    assertEquals(code, 0, decoder.decode(stderr));
    assertEquals(decoder.decode(stderr), "", "no prompt and no warning");
    return JSON.parse(decoder.decode(stdout));
  } finally {
    await Deno.remove(script);
  }
}

/** The soft open-file limit as the shell reports it. */
async function shellOpenFileLimit(): Promise<number> {
  const { stdout } = await new Deno.Command("sh", { args: ["-c", "ulimit -n"] }).output();
  return Number(new TextDecoder().decode(stdout).trim());
}

Deno.test({
  name: "openFileLimit without read permission assumes 1024, without a prompt",
  ignore: Deno.build.os === "windows",
  fn: async () => {
    assertEquals(await childOpenFileLimit(["--allow-net"]), { limit: 1024, source: "assumed" });
  },
});

Deno.test({
  name: "openFileLimit with --allow-read of the file alone is refused by Deno 2.9 and assumes",
  ignore: Deno.build.os !== "linux",
  fn: async () => {
    // Deno reads under /proc only with --allow-all (NotCapable otherwise); should that change,
    // the real limit is read instead.
    const result = await childOpenFileLimit(["--allow-read=/proc/self/limits"]);
    const real = { limit: await shellOpenFileLimit(), source: "proc" };
    assert(
      JSON.stringify(result) === JSON.stringify({ limit: 1024, source: "assumed" }) ||
        JSON.stringify(result) === JSON.stringify(real),
      JSON.stringify(result),
    );
  },
});

Deno.test({
  name:
    "openFileLimit with --allow-run=prlimit (the start task's grant) asks prlimit for the soft limit",
  ignore: Deno.build.os !== "linux",
  fn: async () => {
    const hasPrlimit = await new Deno.Command("sh", { args: ["-c", "command -v prlimit"] })
      .output().then((out) => out.success);
    const result = await childOpenFileLimit(["--allow-run=prlimit"]);
    if (!hasPrlimit) {
      assertEquals(result, { limit: 1024, source: "assumed" });
      return;
    }
    assertEquals(result, { limit: await shellOpenFileLimit(), source: "prlimit" });
  },
});

Deno.test({
  name: "openFileLimit with --allow-all reads the soft limit the shell reports",
  ignore: Deno.build.os !== "linux",
  fn: async () => {
    const real = await shellOpenFileLimit();
    assertEquals(await childOpenFileLimit(["--allow-all"]), { limit: real, source: "proc" });
  },
});
