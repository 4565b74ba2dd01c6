import {
  type CliCommand,
  ConfigError,
  DEFAULT_CONFIG,
  defaultMinIdle,
  helpText,
  parseCli,
  type ProxyConfig,
  VERSION,
} from "../src/config.ts";
import denoJson from "../deno.json" with { type: "json" };
import {
  assert,
  assertEquals,
  assertMatch,
  assertNotEquals,
  assertStringIncludes,
  assertThrows,
  fail,
} from "./_assert.ts";

function run(...args: string[]): ProxyConfig {
  const command: CliCommand = parseCli(args);
  if (command.kind !== "run") fail(`expected a run command, got ${command.kind}`);
  return command.config;
}

function rejects(args: string[], message: string, flag?: string): ConfigError {
  const err = assertThrows(() => parseCli(args), ConfigError);
  assertEquals(err.message, message);
  assertEquals(err.flag, flag);
  assertOneLine(err.message);
  return err;
}

function assertOneLine(message: string): void {
  assert(!/[\n\r]/.test(message), `the message is one line: ${JSON.stringify(message)}`);
}

Deno.test("parseCli with no flags gives the documented defaults", () => {
  const config = run();
  assertEquals(config, {
    listen: { hostname: "127.0.0.1", port: 8848 },
    upstream: { hostname: "127.0.0.1", port: 8849 },
    pool: "warm",
    poolSize: 1000,
    minIdle: 4,
    preconnectRatio: 1,
    idleTimeoutMs: 60_000,
    maxLifetimeMs: 1_800_000,
    connectTimeoutMs: 5_000,
    clientTimeoutMs: 3_600_000,
    serverTimeoutMs: 3_600_000,
    finTimeoutMs: 60_000,
    maxClients: "auto",
    maxUpstream: 0,
    queueTimeoutMs: 5_000,
    protocol: "raw",
    reuseDrainBytes: 262_144,
    readAheadMemory: 33_554_432,
    reuseDrainTimeoutMs: 1_000,
    reuseSettleMs: 5,
    redisReset: false,
    drainTimeoutMs: 30_000,
    admin: undefined,
    accessLog: false,
    upstreamTls: false,
    upstreamSni: undefined,
    upstreamCa: undefined,
    upstreamCert: undefined,
    upstreamKey: undefined,
    tlsCert: undefined,
    tlsKey: undefined,
    tlsHandshakeTimeoutMs: 10_000,
    tlsReloadIntervalMs: 5_000,
    logLevel: "info",
    logFormat: "text",
    logBuffer: 1024 * 1024,
  });
  assertEquals(config, { ...DEFAULT_CONFIG });
});

Deno.test("parseCli returns a config the caller may change without touching the defaults", () => {
  const config = run();
  config.listen.port = 1;
  assertEquals(DEFAULT_CONFIG.listen.port, 8848);
  assert(Object.isFrozen(DEFAULT_CONFIG) && Object.isFrozen(DEFAULT_CONFIG.listen));
});

Deno.test("parseCli reads every flag, with a space or an equals sign", () => {
  const args = [
    "--listen",
    "[::1]:0",
    "--upstream=db.internal:5432",
    "--pool",
    "reuse",
    "--pool-size=10",
    "--min-idle",
    "3",
    "--preconnect-ratio",
    "1.5",
    "--idle-timeout",
    "1.5s",
    "--max-lifetime=0",
    "--connect-timeout",
    "250ms",
    "--client-timeout",
    "90s",
    "--server-timeout=2h",
    "--fin-timeout",
    "0",
    "--max-clients=5000",
    "--max-upstream",
    "50",
    "--queue-timeout",
    "1.5s",
    "--protocol=redis",
    "--reuse-drain-bytes",
    "1MiB",
    "--read-ahead-memory=8MiB",
    "--reuse-drain-timeout=250ms",
    "--redis-reset",
    "--drain-timeout",
    "0s",
    "--admin",
    "127.0.0.1:9090",
    "--access-log",
    "--upstream-tls",
    "--upstream-sni",
    "cache.internal",
    "--upstream-ca=/etc/ssl/internal-ca.pem",
    "--upstream-cert",
    "client.crt",
    "--upstream-key=client.key",
    "--tls-cert",
    "server.crt",
    "--tls-key",
    "server.key",
    "--tls-handshake-timeout=3s",
    "--tls-reload-interval",
    "0",
    "--log-level=debug",
    "--log-format",
    "json",
    "--log-buffer",
    "64KiB",
  ];
  assertEquals(run(...args), {
    listen: { hostname: "::1", port: 0 },
    upstream: { hostname: "db.internal", port: 5432 },
    pool: "reuse",
    poolSize: 10,
    minIdle: 3,
    preconnectRatio: 1.5,
    idleTimeoutMs: 1_500,
    maxLifetimeMs: 0,
    connectTimeoutMs: 250,
    clientTimeoutMs: 90_000,
    serverTimeoutMs: 7_200_000,
    finTimeoutMs: 0,
    maxClients: 5_000,
    maxUpstream: 50,
    queueTimeoutMs: 1_500,
    protocol: "redis",
    reuseDrainBytes: 1_048_576,
    readAheadMemory: 8_388_608,
    reuseDrainTimeoutMs: 250,
    reuseSettleMs: 0, // framing: no settle time in force
    redisReset: true,
    drainTimeoutMs: 0,
    admin: { hostname: "127.0.0.1", port: 9090 },
    accessLog: true,
    upstreamTls: true,
    upstreamSni: "cache.internal",
    upstreamCa: "/etc/ssl/internal-ca.pem",
    upstreamCert: "client.crt",
    upstreamKey: "client.key",
    tlsCert: "server.crt",
    tlsKey: "server.key",
    tlsHandshakeTimeoutMs: 3_000,
    tlsReloadIntervalMs: 0,
    logLevel: "debug",
    logFormat: "json",
    logBuffer: 64 * 1024,
  });
});

Deno.test("--min-idle defaults per mode: 4 in warm, 0 in reuse and off", () => {
  assertEquals(defaultMinIdle("warm"), 4);
  assertEquals(defaultMinIdle("reuse"), 0);
  assertEquals(defaultMinIdle("off"), 0);
  assertEquals(run("--pool", "warm").minIdle, 4);
  assertEquals(run("--pool", "reuse").minIdle, 0);
  assertEquals(run("--pool", "off").minIdle, 0);
});

Deno.test("--min-idle default is capped at a smaller --pool-size", () => {
  assertEquals(run("--pool-size", "2").minIdle, 2);
  assertEquals(run("--pool-size", "0").minIdle, 0);
});

Deno.test("--pool rejects an unknown mode naming the accepted ones", () => {
  rejects(
    ["--pool", "sometimes"],
    `--pool: "sometimes" is not a pool mode; use off, warm or reuse`,
    "--pool",
  );
  rejects(["--pool=WARM"], `--pool: "WARM" is not a pool mode; use off, warm or reuse`, "--pool");
});

Deno.test("--log-level and --log-format reject unknown values naming the accepted ones", () => {
  rejects(
    ["--log-level", "trace"],
    `--log-level: "trace" is not a log level; use debug, info, warn or error`,
    "--log-level",
  );
  rejects(
    ["--log-level", "warning"],
    `--log-level: "warning" is not a log level; use debug, info, warn or error`,
    "--log-level",
  );
  rejects(
    ["--log-format", "xml"],
    `--log-format: "xml" is not a log format; use text or json`,
    "--log-format",
  );
});

Deno.test("--listen and --upstream reject bad addresses, naming the flag", () => {
  rejects(
    ["--listen", "::1:8848"],
    `--listen: "::1:8848" looks like an IPv6 address without brackets; IPv6 addresses need brackets, e.g. [::1]:8848`,
    "--listen",
  );
  const err = rejects(
    ["--upstream", "127.0.0.1:0"],
    `--upstream: "127.0.0.1:0" has port 0, which is not allowed here; use 1 to 65535`,
    "--upstream",
  );
  assertNotEquals(err.message, "");
  assertEquals(run("--listen", "127.0.0.1:0").listen.port, 0);
  assertThrows(() => parseCli(["--upstream", "localhost"]), ConfigError, "has no port");
});

Deno.test("--pool-size and --min-idle accept integers only, within range", () => {
  rejects(
    ["--pool-size", "ten"],
    `--pool-size: "ten" is not an integer; give an integer from 0 to 100000`,
    "--pool-size",
  );
  rejects(
    ["--pool-size", "1.5"],
    `--pool-size: "1.5" is not an integer; give an integer from 0 to 100000`,
    "--pool-size",
  );
  rejects(
    ["--pool-size=-1"],
    `--pool-size: "-1" is negative; give an integer from 0 to 100000`,
    "--pool-size",
  );
  rejects(
    ["--pool-size", "100001"],
    `--pool-size: 100001 is too large; give an integer from 0 to 100000`,
    "--pool-size",
  );
  assertEquals(run("--pool-size", "100000").poolSize, 100_000);
  assertThrows(() => parseCli(["--min-idle", "1e2"]), ConfigError, "not an integer");
});

Deno.test("--min-idle above --pool-size is rejected", () => {
  rejects(
    ["--pool-size", "4", "--min-idle", "5"],
    `--min-idle: 5 is more than --pool-size 4; use 0 to 4`,
    "--min-idle",
  );
  assertEquals(run("--pool-size", "4", "--min-idle", "4").minIdle, 4);
});

Deno.test("flags that keep connections are rejected with --pool off, and --queue-timeout without --max-upstream", () => {
  for (const [flag, value] of [["pool-size", "5"], ["idle-timeout", "1s"], ["max-lifetime", "0"]]) {
    rejects(
      ["--pool", "off", `--${flag}`, value],
      `--${flag}: has no effect with --pool off (no connection is kept); drop it, or use --pool warm or reuse`,
      `--${flag}`,
    );
    assertEquals(run("--pool", "warm", `--${flag}`, value).pool, "warm");
  }
  rejects(
    ["--queue-timeout", "1s"],
    "--queue-timeout: has no effect without --max-upstream (no session waits for a connection); add --max-upstream, or drop it",
    "--queue-timeout",
  );
  // A bad value is said first, before whether the flag does anything, its own or another's.
  rejects(
    ["--pool", "off", "--idle-timeout", "5"],
    '--idle-timeout: "5" has no unit; use a number with a unit ms, s, m or h, e.g. 250ms, 5s, 1.5s, 2m',
    "--idle-timeout",
  );
  for (
    const args of [
      ["--pool", "off", "--pool-size", "5", "--listen", "nowhere"],
      ["--queue-timeout", "1s", "--listen", "nowhere"],
      ["--pool", "reuse", "--protocol", "redis", "--reuse-settle", "1s", "--listen", "nowhere"],
    ]
  ) {
    const err = assertThrows(() => parseCli(args), ConfigError);
    assertEquals(err.flag, "--listen", args.join(" "));
  }
});

Deno.test("an upstream that is the proxy's own listen address is rejected; other ports and addresses are not", () => {
  const loops: [string, string][] = [
    ["127.0.0.1:7000", "127.0.0.1:7000"],
    ["0.0.0.0:7000", "127.0.0.1:7000"],
    ["0.0.0.0:7000", "localhost:7000"],
    ["[::]:7000", "127.0.0.5:7000"],
    ["[::]:7000", "[::1]:7000"],
    ["[::1]:7000", "[0:0::1]:7000"],
    ["127.0.0.1:7000", "LOCALHOST:7000"],
    ["127.0.0.1:7000", "0.0.0.0:7000"],
    ["127.0.0.1:7000", "[::ffff:127.0.0.1]:7000"],
    ["localhost:7000", "127.0.0.1:7000"],
    ["[::1]:7000", "localhost:7000"], // localhost counts as both loopback addresses
  ];
  for (const [listen, upstream] of loops) {
    const err = assertThrows(
      () => parseCli(["--listen", listen, "--upstream", upstream]),
      ConfigError,
    );
    assertEquals(err.flag, "--upstream", `${listen} <- ${upstream}`);
    assertStringIncludes(err.message, "is this proxy's own --listen address");
  }
  const fine: [string, string][] = [
    ["127.0.0.1:7000", "127.0.0.1:7001"],
    ["127.0.0.1:7000", "[::1]:7000"],
    ["127.0.0.1:7000", "10.0.0.5:7000"],
    ["0.0.0.0:7000", "10.0.0.5:7000"],
    ["0.0.0.0:7000", "[::1]:7000"], // an IPv4 wildcard does not take IPv6
    ["127.0.0.2:7000", "0.0.0.0:7000"], // a dial to 0.0.0.0 goes to 127.0.0.1
    ["127.0.0.1:0", "127.0.0.1:8849"],
  ];
  for (const [listen, upstream] of fine) {
    assertEquals(
      run("--listen", listen, "--upstream", upstream).listen.port,
      Number(listen.split(":").pop()),
    );
  }
});

Deno.test("--min-idle above 0 with --pool off is rejected as having no effect", () => {
  rejects(
    ["--pool", "off", "--min-idle", "2"],
    `--min-idle: 2 has no effect with --pool off; drop it, or use --pool warm or reuse`,
    "--min-idle",
  );
  assertEquals(run("--pool", "off", "--min-idle", "0").minIdle, 0);
});

Deno.test("duration flags reject bad durations, naming the flag and the units", () => {
  rejects(
    ["--idle-timeout", "60"],
    `--idle-timeout: "60" has no unit; use a number with a unit ms, s, m or h, e.g. 250ms, 5s, 1.5s, 2m`,
    "--idle-timeout",
  );
  assertThrows(
    () => parseCli(["--drain-timeout", "forever"]),
    ConfigError,
    '--drain-timeout: "forever" is not a duration',
  );
  assertThrows(
    () => parseCli(["--max-lifetime", "1000h"]),
    ConfigError,
    '--max-lifetime: "1000h" is too long',
  );
  assertThrows(
    () => parseCli(["--connect-timeout=-5s"]),
    ConfigError,
    '--connect-timeout: "-5s" is negative',
  );
});

Deno.test("--idle-timeout and --connect-timeout must be greater than 0; the others may be 0", () => {
  rejects(
    ["--idle-timeout", "0"],
    `--idle-timeout: "0" must be greater than 0; give a duration greater than 0, e.g. 60s`,
    "--idle-timeout",
  );
  rejects(
    ["--connect-timeout", "0ms"],
    `--connect-timeout: "0ms" must be greater than 0; give a duration greater than 0, e.g. 5s`,
    "--connect-timeout",
  );
  assertEquals(run("--max-lifetime", "0").maxLifetimeMs, 0);
  assertEquals(run("--drain-timeout", "0").drainTimeoutMs, 0);
});

Deno.test("the session timeouts accept a duration or 0 for none", () => {
  for (const flag of ["client-timeout", "server-timeout", "fin-timeout"] as const) {
    const field = ({
      "client-timeout": "clientTimeoutMs",
      "server-timeout": "serverTimeoutMs",
      "fin-timeout": "finTimeoutMs",
    } as const)[flag];
    assertEquals(run(`--${flag}`, "0")[field], 0, flag);
    assertEquals(run(`--${flag}=250ms`)[field], 250, flag);
    assertEquals(run(`--${flag}`, "1.5s")[field], 1_500, flag);
    assertEquals(run(`--${flag}`, "1h")[field], 3_600_000, flag);
  }
  assertEquals(run("--max-upstream", "1", "--queue-timeout", "1ms").queueTimeoutMs, 1);
  assertEquals(run("--max-upstream", "1", "--queue-timeout=2m").queueTimeoutMs, 120_000);
});

Deno.test("the session timeouts reject bad durations, naming the flag", () => {
  const units = "use a number with a unit ms, s, m or h, e.g. 250ms, 5s, 1.5s, 2m";
  rejects(
    ["--client-timeout", "5"],
    `--client-timeout: "5" has no unit; ${units}`,
    "--client-timeout",
  );
  rejects(
    ["--server-timeout", "1000h"],
    `--server-timeout: "1000h" is too long; the most accepted is 2147483647ms (~24.8 days)`,
    "--server-timeout",
  );
  rejects(
    ["--fin-timeout", "forever"],
    `--fin-timeout: "forever" is not a duration; ${units}`,
    "--fin-timeout",
  );
  rejects(
    ["--queue-timeout", "0"],
    `--queue-timeout: "0" must be greater than 0; give a duration greater than 0, e.g. 5s`,
    "--queue-timeout",
  );
  rejects(
    ["--queue-timeout=0ms"],
    `--queue-timeout: "0ms" must be greater than 0; give a duration greater than 0, e.g. 5s`,
    "--queue-timeout",
  );
});

Deno.test("--max-clients accepts auto or an integer from 1 to 1000000", () => {
  assertEquals(run("--max-clients", "auto").maxClients, "auto");
  assertEquals(run("--max-clients", "1").maxClients, 1);
  assertEquals(run("--max-clients=1000000").maxClients, 1_000_000);
  const accepts = "give an integer from 1 to 1000000, or auto";
  rejects(
    ["--max-clients", "0"],
    "--max-clients: 0 would let no client in; give at least 1, up to 1000000, or auto",
    "--max-clients",
  );
  rejects(
    ["--max-clients", "1000001"],
    `--max-clients: 1000001 is too large; ${accepts}`,
    "--max-clients",
  );
  rejects(
    ["--max-clients", "many"],
    `--max-clients: "many" is not an integer; ${accepts}`,
    "--max-clients",
  );
  rejects(
    ["--max-clients", "AUTO"],
    `--max-clients: "AUTO" is not an integer; ${accepts}`,
    "--max-clients",
  );
  rejects(["--max-clients"], `--max-clients: missing value; ${accepts}`, "--max-clients");
});

Deno.test("--max-upstream accepts an integer from 0 (no limit) to 100000", () => {
  assertEquals(run("--max-upstream", "0").maxUpstream, 0);
  assertEquals(run("--max-upstream=100000").maxUpstream, 100_000);
  const accepts = "give an integer from 0 (no limit) to 100000";
  rejects(
    ["--max-upstream", "100001"],
    `--max-upstream: 100001 is too large; ${accepts}`,
    "--max-upstream",
  );
  rejects(
    ["--max-upstream", "1e3"],
    `--max-upstream: "1e3" is not an integer; ${accepts}`,
    "--max-upstream",
  );
});

Deno.test("--min-idle above a --max-upstream over 0 is rejected; the default is capped by it", () => {
  rejects(
    ["--max-upstream", "4", "--min-idle", "5"],
    "--min-idle: 5 exceeds --max-upstream 4; use 0 to 4",
    "--min-idle",
  );
  assertEquals(run("--max-upstream", "4", "--min-idle", "4").minIdle, 4);
  assertEquals(run("--max-upstream", "0", "--min-idle", "50").minIdle, 50);
  assertEquals(run("--max-upstream", "2").minIdle, 2, "the warm default 4 is capped at 2");
  assertEquals(run("--max-upstream", "0").minIdle, 4);
});

Deno.test("a value that looks like a negative number is taken as the value and rejected as negative", () => {
  const integers: [string, string][] = [
    ["pool-size", "give an integer from 0 to 100000"],
    ["min-idle", "give an integer from 0 to --pool-size"],
    ["max-clients", "give an integer from 1 to 1000000, or auto"],
    ["max-upstream", "give an integer from 0 (no limit) to 100000"],
  ];
  for (const [flag, accepts] of integers) {
    const message = `--${flag}: "-3" is negative; ${accepts}`;
    rejects([`--${flag}`, "-3"], message, `--${flag}`);
    rejects([`--${flag}=-3`], message, `--${flag}`);
  }
  const units = "use a number with a unit ms, s, m or h, e.g. 250ms, 5s, 1.5s, 2m";
  const durations = [
    "idle-timeout",
    "max-lifetime",
    "connect-timeout",
    "client-timeout",
    "server-timeout",
    "fin-timeout",
    "queue-timeout",
    "drain-timeout",
  ];
  for (const flag of durations) {
    rejects([`--${flag}`, "-5s"], `--${flag}: "-5s" is negative; ${units}`, `--${flag}`);
    rejects([`--${flag}`, "-1.5"], `--${flag}: "-1.5" is negative; ${units}`, `--${flag}`);
  }
  rejects(
    ["--pool", "-3"],
    `--pool: "-3" is not a pool mode; use off, warm or reuse`,
    "--pool",
  );
  // Other things that start with a dash are still flags, so the value is missing.
  rejects(
    ["--pool-size", "-x"],
    "--pool-size: missing value; give an integer from 0 to 100000",
    "--pool-size",
  );
  // After "--" nothing is a flag value.
  rejects(
    ["--", "--pool-size", "-3"],
    `unexpected argument "--pool-size"; every option is a --flag, see --help`,
  );
});

Deno.test("an unknown flag with a space, a quote or a control character is quoted", () => {
  rejects(["--bo\ngus"], 'unknown flag "--bo\\ngus"; see --help', "--bo\ngus");
  rejects(["--bo\rgus=1"], 'unknown flag "--bo\\rgus"; see --help', "--bo\rgus");
  rejects(["--a b"], 'unknown flag "--a b"; see --help', "--a b");
  rejects(['--say"hi"'], 'unknown flag "--say\\"hi\\""; see --help', '--say"hi"');
  rejects(["--\x1b[31mred"], 'unknown flag "--\\u001b[31mred"; see --help', "--\x1b[31mred");
  rejects(["-\t"], 'unknown flag "-\\t"; see --help', "-\t");
});

Deno.test("every error message is one line without control characters, whatever the input", () => {
  const nasty = ["a\nb", "a\rb", "a\r\nb", "a\tb", "\x1b[2J", "\n", "1\n", "-3\n", "5s\r"];
  const cases: string[][] = [];
  for (const text of nasty) {
    cases.push([`--${text}`], [`--x${text}=1`], [`-${text}`], [text]);
    for (const flag of ["listen", "upstream", "pool", "pool-size", "min-idle", "max-clients"]) {
      cases.push([`--${flag}`, text], [`--${flag}=${text}`]);
    }
    for (const flag of ["idle-timeout", "fin-timeout", "queue-timeout", "log-level"]) {
      cases.push([`--${flag}`, text], [`--${flag}=${text}`]);
    }
    cases.push(["--pool", text, "--pool", "warm"], ["--listen", `[${text}]:1`]);
    cases.push(["--upstream", `${text}:1`], ["--upstream", `host:${text}`]);
  }
  for (const args of cases) {
    const err = assertThrows(() => parseCli(args), ConfigError, undefined, JSON.stringify(args));
    // deno-lint-ignore no-control-regex
    const control = /[\x00-\x1f\x7f]/;
    assert(
      !control.test(err.message),
      `${JSON.stringify(args)} gave ${JSON.stringify(err.message)}`,
    );
  }
});

Deno.test("an unknown flag is rejected with a pointer to --help", () => {
  rejects(["--foo"], "unknown flag --foo; see --help", "--foo");
  rejects(["--foo=1"], "unknown flag --foo; see --help", "--foo");
  rejects(["-p", "warm"], "unknown flag -p; see --help", "-p");
  rejects(
    ["--pool-size", "1", "--poolsize", "2"],
    "unknown flag --poolsize; see --help",
    "--poolsize",
  );
  rejects(["--no-help"], "unknown flag --no-help; see --help", "--no-help");
  rejects(
    ["--listen.hostname=x"],
    "unknown flag --listen.hostname; see --help",
    "--listen.hostname",
  );
});

Deno.test("a positional argument is rejected", () => {
  rejects(["warm"], `unexpected argument "warm"; every option is a --flag, see --help`);
  rejects(
    ["--pool", "warm", "extra"],
    `unexpected argument "extra"; every option is a --flag, see --help`,
  );
  rejects(["--", "--pool"], `unexpected argument "--pool"; every option is a --flag, see --help`);
  rejects(["8848"], `unexpected argument "8848"; every option is a --flag, see --help`);
});

Deno.test("a value flag without a value is rejected, saying what it accepts", () => {
  rejects(["--pool"], "--pool: missing value; use off, warm or reuse", "--pool");
  rejects(
    ["--listen", "--pool", "warm"],
    "--listen: missing value; give HOST:PORT, e.g. 127.0.0.1:8848 or [::1]:8848",
    "--listen",
  );
  rejects(["--pool="], "--pool: missing value; use off, warm or reuse", "--pool");
  rejects(["--pool", ""], "--pool: missing value; use off, warm or reuse", "--pool");
  rejects(
    ["--pool-size", "-x"],
    "--pool-size: missing value; give an integer from 0 to 100000",
    "--pool-size",
  );
  rejects(
    ["--drain-timeout", "--help"],
    "--drain-timeout: missing value; give a duration, e.g. 30s, or 0",
    "--drain-timeout",
  );
});

Deno.test("a value flag given twice is rejected", () => {
  rejects(
    ["--pool", "warm", "--pool", "off"],
    `--pool: given more than once ("warm", "off"); give it once`,
    "--pool",
  );
  rejects(
    ["--listen=a:1", "--listen", "a:1"],
    `--listen: given more than once ("a:1", "a:1"); give it once`,
    "--listen",
  );
});

Deno.test("--help returns the help text, even alongside other flags", () => {
  assertEquals(parseCli(["--help"]), { kind: "help", text: helpText() });
  assertEquals(parseCli(["--pool", "sometimes", "--help"]).kind, "help");
  assertEquals(parseCli(["--version", "--help"]).kind, "help");
  assertThrows(() => parseCli(["--help", "--bogus"]), ConfigError, "unknown flag --bogus");
});

Deno.test("--version returns the name and the version from deno.json", () => {
  assertEquals(parseCli(["--version"]), {
    kind: "version",
    text: `tcp-pool-proxy ${denoJson.version}`,
  });
  assertEquals(VERSION, denoJson.version);
  assertMatch(VERSION, /^\d+\.\d+\.\d+/);
});

Deno.test("help text lists every flag with its default and a line per pool mode", () => {
  const text = helpText();
  for (
    const [flag, fragment] of [
      ["--listen HOST:PORT", "default 127.0.0.1:8848"],
      ["--upstream HOST:PORT", "default 127.0.0.1:8849"],
      ["--pool off|warm|reuse", "default warm"],
      ["--pool-size N", "default 100"],
      ["--min-idle N", ""],
      ["--idle-timeout DURATION", "default 60s"],
      ["--max-lifetime DURATION", "default 30m"],
      ["--connect-timeout DURATION", "default 5s"],
      ["--client-timeout DURATION", "default 60m"],
      ["--server-timeout DURATION", "default 60m"],
      ["--fin-timeout DURATION", "default 60s"],
      ["--max-clients N|auto", "default auto"],
      ["--max-upstream N", "default 0 = no limit"],
      ["--queue-timeout DURATION", "default 5s"],
      ["--drain-timeout DURATION", "default 30s"],
      ["--log-level LEVEL", "default info"],
      ["--log-format FORMAT", "default text"],
      ["--log-buffer SIZE", ""],
      ["--help", ""],
      ["--version", ""],
    ]
  ) {
    const line = text.split("\n").find((l) => l.trimStart().startsWith(flag));
    if (line === undefined) fail(`help has no line for ${flag}`);
    assertStringIncludes(line, fragment, flag);
  }
  assertStringIncludes(text, "default 4 with warm, 0 with reuse");
  for (const mode of ["off", "warm", "reuse"]) {
    assertMatch(text, new RegExp(`^ +${mode} +\\S`, "m"));
  }
  for (const line of text.split("\n")) assert(line.length <= 100, `help line too long: ${line}`);
});

Deno.test("--read-ahead-memory: a size up to 1GiB, 0 included; anything else is one line", () => {
  assertEquals(run("--read-ahead-memory", "0").readAheadMemory, 0);
  assertEquals(run("--read-ahead-memory", "512KiB").readAheadMemory, 524_288);
  assertEquals(run("--read-ahead-memory", "1GiB").readAheadMemory, 1024 ** 3);
  rejects(
    ["--read-ahead-memory", "-1"],
    '--read-ahead-memory: "-1" is not a size; give a size in bytes, KiB or MiB, e.g. 32MiB, or 0, up to 1GiB',
    "--read-ahead-memory",
  );
  rejects(
    ["--read-ahead-memory", "2GiB"],
    '--read-ahead-memory: "2GiB" is too large; give a size in bytes, KiB or MiB, e.g. 32MiB, or 0, up to 1GiB',
    "--read-ahead-memory",
  );
});

Deno.test("--protocol, --reuse-drain-*, --reuse-settle and --redis-reset: accepted forms and one-line rejections", () => {
  assertEquals(run("--pool", "reuse", "--protocol", "memcached").protocol, "memcached");
  assertEquals(run("--pool", "off", "--protocol", "raw").protocol, "raw");
  assertEquals(run("--pool", "reuse", "--protocol", "redis").reuseSettleMs, 0);
  assertEquals(run("--pool", "reuse").reuseSettleMs, 5);
  for (const pool of ["off", "warm"]) {
    rejects(
      ["--pool", pool, "--protocol", "redis"],
      `--protocol: redis has no effect with --pool ${pool} (only reuse pools by framing); drop it, or use --pool reuse`,
      "--protocol",
    );
  }
  const framed = ["--pool", "reuse", "--protocol", "redis"];
  assertEquals(run(...framed, "--reuse-drain-bytes", "4096").reuseDrainBytes, 4096);
  assertEquals(run(...framed, "--reuse-drain-bytes", "64KiB").reuseDrainBytes, 65_536);
  assertEquals(run(...framed, "--reuse-drain-bytes", "1GiB").reuseDrainBytes, 1024 ** 3);
  assertEquals(run("--pool", "reuse", "--reuse-settle", "0").reuseSettleMs, 0);
  assertEquals(run("--pool", "reuse", "--reuse-settle", "20ms").reuseSettleMs, 20);
  rejects(
    ["--protocol", "mysql"],
    '--protocol: "mysql" is not a protocol; use raw, redis or memcached',
    "--protocol",
  );
  rejects(
    ["--pool", "reuse", "--protocol", "redis", "--reuse-drain-bytes", "lots"],
    '--reuse-drain-bytes: "lots" is not a size; give a size in bytes, KiB or MiB, e.g. 256KiB, up to 1GiB',
    "--reuse-drain-bytes",
  );
  rejects(
    ["--pool", "reuse", "--protocol", "redis", "--reuse-drain-bytes", "2GiB"],
    '--reuse-drain-bytes: "2GiB" is too large; give a size in bytes, KiB or MiB, e.g. 256KiB, up to 1GiB',
    "--reuse-drain-bytes",
  );
  rejects(
    ["--pool", "reuse", "--protocol", "redis", "--reuse-drain-timeout", "0"],
    '--reuse-drain-timeout: "0" must be greater than 0; give a duration greater than 0, e.g. 1s',
    "--reuse-drain-timeout",
  );
  rejects(
    ["--redis-reset"],
    "--redis-reset: has no effect with --protocol raw; drop it, or use --protocol redis",
    "--redis-reset",
  );
  rejects(
    ["--reuse-drain-timeout", "1s"],
    "--reuse-drain-timeout: has no effect with --protocol raw (only framing knows what is owed); drop it, or use --protocol redis or memcached",
    "--reuse-drain-timeout",
  );
  rejects(
    ["--protocol", "redis", "--redis-reset"],
    "--redis-reset: has no effect with --pool warm; drop it, or use --pool reuse",
    "--redis-reset",
  );
  rejects(
    ["--pool", "off", "--reuse-settle", "5ms"],
    "--reuse-settle: has no effect with --pool off; drop it, or use --pool reuse",
    "--reuse-settle",
  );
  rejects(
    ["--pool", "reuse", "--protocol", "redis", "--redis-reset=yes"],
    '--redis-reset: takes no value, got "yes"; give --redis-reset alone',
    "--redis-reset",
  );
  rejects(
    ["--pool", "reuse", "--protocol", "redis", "--redis-reset", "--redis-reset"],
    "--redis-reset: given more than once; give it once",
    "--redis-reset",
  );
  rejects(
    ["--access-log", "--access-log"],
    "--access-log: given more than once; give it once",
    "--access-log",
  );
  rejects(["--help=1"], '--help: takes no value, got "1"; give --help alone', "--help");
  rejects(
    ["--version=yes"],
    '--version: takes no value, got "yes"; give --version alone',
    "--version",
  );
  rejects(
    ["--pool", "reuse", "--protocol", "memcached", "--reuse-settle", "5ms"],
    "--reuse-settle: has no effect with --protocol memcached (framing knows where answers end); drop it",
    "--reuse-settle",
  );
});

Deno.test("--preconnect-ratio takes a number from 0 to 100, and only with warm or reuse", () => {
  assertEquals(run("--preconnect-ratio", "0").preconnectRatio, 0);
  assertEquals(run("--preconnect-ratio=2.5").preconnectRatio, 2.5);
  rejects(
    ["--preconnect-ratio", "-1"],
    '--preconnect-ratio: "-1" is negative; give a number from 0 to 100, e.g. 1 or 1.5',
    "--preconnect-ratio",
  );
  rejects(
    ["--preconnect-ratio", "lots"],
    '--preconnect-ratio: "lots" is not a number in range; give a number from 0 to 100, e.g. 1 or 1.5',
    "--preconnect-ratio",
  );
  rejects(
    ["--preconnect-ratio", "101"],
    '--preconnect-ratio: "101" is not a number in range; give a number from 0 to 100, e.g. 1 or 1.5',
    "--preconnect-ratio",
  );
  rejects(
    ["--pool", "off", "--preconnect-ratio", "1"],
    "--preconnect-ratio: has no effect with --pool off; drop it, or use --pool warm or reuse",
    "--preconnect-ratio",
  );
});

Deno.test("--access-log with --log-level warn or error is refused: its lines would be dropped", () => {
  for (const level of ["warn", "error"]) {
    rejects(
      ["--access-log", "--log-level", level],
      `--access-log: its lines are written at info, which --log-level ${level} drops; use --log-level info or debug`,
      "--access-log",
    );
  }
  assertEquals(run("--access-log", "--log-level", "debug").accessLog, true);
});
