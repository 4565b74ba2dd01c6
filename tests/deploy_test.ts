/**
 * The deployment files — `Dockerfile`, `.dockerignore`, `deploy/tcp-pool-proxy.service`,
 * `deploy/kubernetes.yaml` and `.github/workflows/*.yml` — checked two ways.
 *
 * Structural checks need no tool: the YAML is read with a real parser (npm `yaml`; Kubernetes
 * manifests as YAML 1.1, as Kubernetes reads them), and the numbers that must agree across the
 * files do (stop timeouts longer than the drain, probes on the admin port, the compile flags of
 * the `compile` task). The shell snippets of the Dockerfile (entrypoint, healthcheck) are run
 * for real with `sh` and `bash` against a local HTTP server.
 *
 * Tool checks run each tool on the files: `systemd-analyze verify` and `security`, `yamllint`,
 * `shellcheck`, `actionlint`, `hadolint`, `kubeconform`, `kubectl`. A test whose tool is missing
 * is registered as ignored, with the reason in its name, never as passed.
 *
 * @module
 */

import { parse as parseYaml, parseAllDocuments } from "yaml";
import denoJson from "../deno.json" with { type: "json" };
import { parseHostPort } from "../src/address.ts";
import { ConfigError, parseCli } from "../src/config.ts";
import { parseDuration } from "../src/duration.ts";
import { assert, assertEquals, assertGreater, assertGreaterOrEqual, fail } from "./_assert.ts";
import { describeRun, findBinary, missingBinaries, run } from "./_servers.ts";

// ---- the files ----

const ROOT_DIR = decodeURIComponent(new URL("../", import.meta.url).pathname);
const DOCKERFILE = "Dockerfile";
const DOCKERIGNORE = ".dockerignore";
const UNIT = "deploy/tcp-pool-proxy.service";
const KUBERNETES = "deploy/kubernetes.yaml";
const RELEASE = ".github/workflows/release.yml";
const CI = ".github/workflows/ci.yml";
const WORKFLOWS = [RELEASE, CI];

function readRepoFile(path: string): string {
  return Deno.readTextFileSync(`${ROOT_DIR}${path}`);
}

/** The targets a release is built for. */
const RELEASE_TARGETS = [
  "x86_64-unknown-linux-gnu",
  "aarch64-unknown-linux-gnu",
  "x86_64-apple-darwin",
  "aarch64-apple-darwin",
  "x86_64-pc-windows-msvc",
];

/** How long `docker stop` waits for a container before SIGKILL, unless told otherwise. */
const DOCKER_STOP_DEFAULT_MS = 10_000;

// ---- typed access to parsed YAML and JSON ----

type Path = readonly (string | number)[];

function describePath(path: Path): string {
  return path.length === 0 ? "(root)" : path.join(".");
}

/** The value at `path` under `root`; throws naming the path when any step is missing. */
function at(root: unknown, ...path: Path): unknown {
  let value = root;
  for (const [i, key] of path.entries()) {
    const where = describePath(path.slice(0, i + 1));
    if (typeof key === "number") {
      if (!Array.isArray(value) || key >= value.length) throw new Error(`no ${where}`);
      value = value[key];
    } else {
      if (typeof value !== "object" || value === null || Array.isArray(value)) {
        throw new Error(`no ${where} (not a mapping above it)`);
      }
      if (!Object.hasOwn(value, key)) throw new Error(`no ${where}`);
      value = (value as Record<string, unknown>)[key];
    }
  }
  return value;
}

function str(root: unknown, ...path: Path): string {
  const value = at(root, ...path);
  if (typeof value !== "string") {
    throw new Error(`${describePath(path)} is ${JSON.stringify(value)}, not a string`);
  }
  return value;
}

function num(root: unknown, ...path: Path): number {
  const value = at(root, ...path);
  if (typeof value !== "number") {
    throw new Error(`${describePath(path)} is ${JSON.stringify(value)}, not a number`);
  }
  return value;
}

function list(root: unknown, ...path: Path): unknown[] {
  const value = at(root, ...path);
  if (!Array.isArray(value)) throw new Error(`${describePath(path)} is not a list`);
  return value;
}

function mapping(root: unknown, ...path: Path): Record<string, unknown> {
  const value = at(root, ...path);
  if (typeof value !== "object" || value === null || Array.isArray(value)) {
    throw new Error(`${describePath(path)} is not a mapping`);
  }
  return value as Record<string, unknown>;
}

function strings(root: unknown, ...path: Path): string[] {
  return list(root, ...path).map((_, i) => str(root, ...path, i));
}

// ---- command lines ----

/** The value of `flag` in `args` (`--flag value` or `--flag=value`), or undefined. */
function flagValue(args: readonly string[], flag: string): string | undefined {
  for (const [i, arg] of args.entries()) {
    if (arg === flag) return args[i + 1];
    if (arg.startsWith(`${flag}=`)) return arg.slice(flag.length + 1);
  }
  return undefined;
}

function requireFlag(args: readonly string[], flag: string, where: string): string {
  const value = flagValue(args, flag);
  if (value === undefined) throw new Error(`${where}: no ${flag} in ${args.join(" ")}`);
  return value;
}

/** The port of a `HOST:PORT` flag value. */
function portOf(args: readonly string[], flag: string, where: string): number {
  return parseHostPort(requireFlag(args, flag, where), { allowPortZero: false }).port;
}

function hostOf(args: readonly string[], flag: string, where: string): string {
  return parseHostPort(requireFlag(args, flag, where), { allowPortZero: false }).hostname;
}

function durationOf(args: readonly string[], flag: string, where: string): number {
  return parseDuration(requireFlag(args, flag, where));
}

/** The flags of `deno task compile` (`--output` and its value left out), e.g. `--allow-net`. */
function compileTaskFlags(): string[] {
  const words = denoJson.tasks.compile.split(/\s+/);
  assertEquals(words.slice(0, 2), ["deno", "compile"], "the compile task is a deno compile");
  const flags: string[] = [];
  for (let i = 2; i < words.length; i++) {
    if (words[i] === "--output") i++;
    else if (words[i].startsWith("--")) flags.push(words[i]);
  }
  return flags;
}

/**
 * Checks that a shell command line (continuations joined) runs `deno compile` with every flag
 * of the compile task, a frozen lockfile, and main.ts as the program.
 */
function assertCompileCommand(commandLine: string, where: string): void {
  const words = commandLine.replace(/\\\n/g, " ").split(/\s+/).filter((word) => word !== "");
  const at = words.findIndex((word, i) => word === "deno" && words[i + 1] === "compile");
  assert(at >= 0, `${where}: no "deno compile" in ${commandLine}`);
  const rest = words.slice(at + 2);
  for (const flag of compileTaskFlags()) {
    assert(rest.includes(flag), `${where}: deno compile lacks the compile task's ${flag}`);
  }
  assert(
    rest.includes("--frozen-lockfile") || rest.includes("--frozen"),
    `${where}: deno compile does not freeze the lockfile`,
  );
  assert(rest.includes("main.ts"), `${where}: deno compile does not build main.ts`);
}

// ---- the Dockerfile ----

interface Instruction {
  /** Upper-case keyword, e.g. `RUN`. */
  keyword: string;
  /** The rest of the instruction, continuation lines joined with a space. */
  args: string;
  /** Which stage (0 = the first FROM) it belongs to. */
  stage: number;
}

/** The Dockerfile's instructions. Comment lines are dropped, also inside continuations. */
function dockerInstructions(text: string): Instruction[] {
  const instructions: Instruction[] = [];
  let stage = -1;
  let pending = "";
  for (const raw of text.split("\n")) {
    const line = raw.trimEnd();
    if (line.trimStart().startsWith("#") || line.trim() === "") continue;
    if (line.endsWith("\\")) {
      pending += `${line.slice(0, -1)} `;
      continue;
    }
    const whole = (pending + line).trim();
    pending = "";
    const space = whole.search(/\s/);
    const keyword = (space < 0 ? whole : whole.slice(0, space)).toUpperCase();
    if (keyword === "FROM") stage++;
    instructions.push({ keyword, args: space < 0 ? "" : whole.slice(space).trim(), stage });
  }
  assertEquals(pending, "", "the Dockerfile ends inside a continuation");
  return instructions;
}

/** A JSON (exec form) list of strings. */
function execForm(text: string, where: string): string[] {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    throw new Error(`${where} is not in exec (JSON) form: ${text}`);
  }
  return strings(value);
}

interface Dockerfile {
  instructions: Instruction[];
  /** The instructions of the last (runtime) stage. */
  runtime: Instruction[];
}

function readDockerfile(): Dockerfile {
  const instructions = dockerInstructions(readRepoFile(DOCKERFILE));
  const last = Math.max(...instructions.map((instruction) => instruction.stage));
  return {
    instructions,
    runtime: instructions.filter((instruction) => instruction.stage === last),
  };
}

/** The one instruction `keyword` of the runtime stage. */
function runtimeOne(dockerfile: Dockerfile, keyword: string): Instruction {
  const found = dockerfile.runtime.filter((instruction) => instruction.keyword === keyword);
  assertEquals(found.length, 1, `the runtime stage has one ${keyword}`);
  return found[0];
}

/** The healthcheck's command, in exec form. */
function healthcheckCommand(dockerfile: Dockerfile): string[] {
  const { args } = runtimeOne(dockerfile, "HEALTHCHECK");
  const at = args.search(/(^|\s)CMD\s/);
  assert(at >= 0, `HEALTHCHECK has no CMD: ${args}`);
  return execForm(args.slice(args.indexOf("CMD", at) + 3).trim(), "HEALTHCHECK CMD");
}

/** The ENTRYPOINT's `sh -c` script (its program and the `$0` it is given are checked too). */
function entrypointScript(dockerfile: Dockerfile): string {
  const entrypoint = execForm(runtimeOne(dockerfile, "ENTRYPOINT").args, "ENTRYPOINT");
  assertEquals(entrypoint.slice(0, 2), ["/bin/sh", "-c"], "ENTRYPOINT runs a sh -c script");
  assertEquals(entrypoint.length, 4, "ENTRYPOINT is sh -c SCRIPT NAME, then CMD follows as $@");
  return entrypoint[2];
}

const BINARY_PATH = "/usr/local/bin/tcp-pool-proxy";

// ---- .dockerignore ----

/** A `.dockerignore` pattern as a regular expression: `*` and `?` within a segment, `**` across. */
function globToRegExp(pattern: string): RegExp {
  let source = "";
  for (let i = 0; i < pattern.length; i++) {
    const c = pattern[i];
    if (c === "*" && pattern[i + 1] === "*") {
      source += ".*";
      i++;
    } else if (c === "*") source += "[^/]*";
    else if (c === "?") source += "[^/]";
    else source += c.replace(/[.+^${}()|[\]\\]/g, "\\$&");
  }
  return new RegExp(`^${source}$`);
}

/**
 * Whether Docker leaves `path` (relative, `/`-separated) out of the build context: the last
 * pattern that matches the path or one of its parent directories decides, `!` re-includes.
 */
function dockerIgnores(patterns: readonly string[], path: string): boolean {
  const parts = path.split("/");
  let ignored = false;
  for (const raw of patterns) {
    const negated = raw.startsWith("!");
    const pattern = globToRegExp((negated ? raw.slice(1) : raw).replace(/^\/+|\/+$/g, ""));
    for (let n = 1; n <= parts.length; n++) {
      if (pattern.test(parts.slice(0, n).join("/"))) {
        ignored = !negated;
        break;
      }
    }
  }
  return ignored;
}

function dockerignorePatterns(): string[] {
  return readRepoFile(DOCKERIGNORE).split("\n").map((line) => line.trim())
    .filter((line) => line !== "" && !line.startsWith("#"));
}

// ---- the systemd unit ----

interface UnitEntry {
  section: string;
  key: string;
  value: string;
}

function unitEntries(text: string): UnitEntry[] {
  const entries: UnitEntry[] = [];
  let section = "";
  for (const raw of text.split("\n")) {
    const line = raw.trim();
    if (line === "" || line.startsWith("#") || line.startsWith(";")) continue;
    const header = /^\[(.+)\]$/.exec(line);
    if (header !== null) {
      section = header[1];
      continue;
    }
    const eq = line.indexOf("=");
    assert(eq > 0, `not KEY=VALUE in the unit: ${line}`);
    entries.push({ section, key: line.slice(0, eq).trim(), value: line.slice(eq + 1).trim() });
  }
  return entries;
}

/** The last value of `key` in `[section]`, as systemd takes the last assignment. */
function unitValue(entries: readonly UnitEntry[], section: string, key: string): string {
  const found = entries.filter((entry) => entry.section === section && entry.key === key);
  if (found.length === 0) throw new Error(`the unit has no ${key}= in [${section}]`);
  return found[found.length - 1].value;
}

/** A systemd time span (`45s`, `1min 30s`, `45`: seconds when no unit) in milliseconds. */
function systemdSpanMs(text: string): number {
  const units: Record<string, number> = {
    ms: 1,
    msec: 1,
    s: 1000,
    sec: 1000,
    "": 1000,
    m: 60_000,
    min: 60_000,
    h: 3_600_000,
    hr: 3_600_000,
  };
  let total = 0;
  const parts = text.trim().split(/\s+/);
  for (const part of parts) {
    const match = /^(\d+(?:\.\d+)?)([a-z]*)$/.exec(part);
    if (match === null || !(match[2] in units)) throw new Error(`not a time span: ${text}`);
    total += Number(match[1]) * units[match[2]];
  }
  return total;
}

/** The unit's `Environment=` assignments (space-separated, double quotes allowed). */
function unitEnvironment(entries: readonly UnitEntry[]): Map<string, string> {
  const env = new Map<string, string>();
  for (const entry of entries) {
    if (entry.section !== "Service" || entry.key !== "Environment") continue;
    for (const match of entry.value.matchAll(/"([^"]*)"|(\S+)/g)) {
      const assignment = match[1] ?? match[2];
      const eq = assignment.indexOf("=");
      assert(eq > 0, `Environment=: not NAME=value: ${assignment}`);
      env.set(assignment.slice(0, eq), assignment.slice(eq + 1));
    }
  }
  return env;
}

/**
 * ExecStart's words with the unit's defaults substituted as systemd does: `${NAME}` within a
 * word, `$NAME` alone as a word split at whitespace (an empty value gives no word). Every
 * variable must have a default, so the command runs without /etc/default/tcp-pool-proxy.
 */
function expandExecStart(execStart: string, env: ReadonlyMap<string, string>): string[] {
  const lookup = (name: string): string => {
    const value = env.get(name);
    if (value === undefined) throw new Error(`ExecStart uses $${name}, which has no default`);
    return value;
  };
  const words: string[] = [];
  for (const word of execStart.split(/\s+/).filter((w) => w !== "")) {
    const whole = /^\$([A-Za-z_][A-Za-z0-9_]*)$/.exec(word);
    if (whole !== null) {
      words.push(...lookup(whole[1]).split(/\s+/).filter((w) => w !== ""));
    } else {
      words.push(
        word.replace(/\$\{([A-Za-z_][A-Za-z0-9_]*)\}/g, (_, name: string) => lookup(name)),
      );
    }
  }
  return words;
}

interface Unit {
  entries: UnitEntry[];
  /** ExecStart's program. */
  program: string;
  /** ExecStart's arguments with the defaults substituted. */
  args: string[];
}

function readUnit(): Unit {
  const entries = unitEntries(readRepoFile(UNIT));
  const words = expandExecStart(
    unitValue(entries, "Service", "ExecStart"),
    unitEnvironment(entries),
  );
  return { entries, program: words[0], args: words.slice(1) };
}

// ---- Kubernetes ----

interface Manifests {
  deployment: unknown;
  service: unknown;
}

/** The manifests, read as YAML 1.1 (as Kubernetes does: `yes`, `on` and `1:30` are not strings). */
function readManifests(): Manifests {
  const documents = parseAllDocuments(readRepoFile(KUBERNETES), { version: "1.1" });
  assert(Array.isArray(documents), `${KUBERNETES} holds no YAML document`);
  const objects: unknown[] = [];
  for (const document of documents) {
    if (document.errors.length > 0) {
      fail(`${KUBERNETES}: ${document.errors.map((error) => error.message).join("; ")}`);
    }
    const value: unknown = document.toJS();
    if (value !== null) objects.push(value);
  }
  const ofKind = (kind: string): unknown => {
    const found = objects.filter((object) => str(object, "kind") === kind);
    assertEquals(found.length, 1, `${KUBERNETES} has one ${kind}`);
    return found[0];
  };
  return { deployment: ofKind("Deployment"), service: ofKind("Service") };
}

/** The proxy's container of the Deployment. */
function proxyContainer(deployment: unknown): unknown {
  const containers = list(deployment, "spec", "template", "spec", "containers");
  const found = containers.filter((container) => str(container, "name") === "tcp-pool-proxy");
  assertEquals(found.length, 1, "the Deployment has one container named tcp-pool-proxy");
  return found[0];
}

/** The containerPort of a port given by name or number, in `container`. */
function containerPort(container: unknown, port: unknown): number {
  if (typeof port === "number") return port;
  const ports = list(container, "ports");
  for (const [i] of ports.entries()) {
    if (str(container, "ports", i, "name") === port) {
      return num(container, "ports", i, "containerPort");
    }
  }
  throw new Error(`the container has no port named ${JSON.stringify(port)}`);
}

// ---- workflows ----

function readWorkflow(path: string): unknown {
  const value: unknown = parseYaml(readRepoFile(path));
  return value;
}

interface Step {
  job: string;
  index: number;
  uses?: string;
  run?: string;
  with: Record<string, unknown>;
}

function workflowSteps(workflow: unknown): Step[] {
  const steps: Step[] = [];
  for (const job of Object.keys(mapping(workflow, "jobs"))) {
    for (const [index, step] of list(workflow, "jobs", job, "steps").entries()) {
      const record = mapping(step);
      steps.push({
        job,
        index,
        uses: typeof record.uses === "string" ? record.uses : undefined,
        run: typeof record.run === "string" ? record.run : undefined,
        with: typeof record.with === "object" && record.with !== null
          ? record.with as Record<string, unknown>
          : {},
      });
    }
  }
  return steps;
}

/** The events a workflow runs on (`on:` as a name, a list or a mapping). */
function workflowEvents(workflow: unknown): string[] {
  const on = at(workflow, "on");
  if (typeof on === "string") return [on];
  if (Array.isArray(on)) return strings(on);
  return Object.keys(mapping(on));
}

// ---- structural checks ----

Deno.test("Dockerfile builds with the compile task's flags, from pinned images", () => {
  const dockerfile = readDockerfile();
  const froms = dockerfile.instructions.filter((instruction) => instruction.keyword === "FROM");
  assertGreaterOrEqual(froms.length, 2, "the Dockerfile is multi-stage");
  for (const { args } of froms) {
    const image = args.split(/\s+/)[0];
    assert(/[:@]/.test(image) && !image.endsWith(":latest"), `${image} is not pinned`);
  }
  assert(
    froms[0].args.startsWith("denoland/deno:2.9.6") ||
      froms[0].args.startsWith("denoland/deno:bin-2.9.6"),
    `the build stage is not Deno 2.9.6: FROM ${froms[0].args}`,
  );
  const compile = dockerfile.instructions.filter((instruction) =>
    instruction.keyword === "RUN" && instruction.args.includes("deno compile")
  );
  assertEquals(compile.length, 1, "one RUN deno compile");
  assertCompileCommand(compile[0].args, DOCKERFILE);
});

Deno.test("the start task runs V8 with the compile task's flags (the same memory and CPU as the binary)", () => {
  const v8Flags = (command: string) =>
    command.split(/\s+/).filter((w) => w.startsWith("--v8-flags="));
  const start = v8Flags(denoJson.tasks.start);
  assertEquals(start.length, 1, "the start task sets V8 flags once");
  assertEquals(start, v8Flags(denoJson.tasks.compile));
});

Deno.test("Dockerfile runtime: numeric non-root USER, EXPOSE of listen and admin, STOPSIGNAL", () => {
  const dockerfile = readDockerfile();
  const user = runtimeOne(dockerfile, "USER").args;
  assert(/^[1-9]\d*(:\d+)?$/.test(user), `USER ${user} is not a numeric non-root uid`);
  assertEquals(runtimeOne(dockerfile, "STOPSIGNAL").args, "SIGTERM");
  const cmd = execForm(runtimeOne(dockerfile, "CMD").args, "CMD");
  const exposed = dockerfile.runtime.filter((instruction) => instruction.keyword === "EXPOSE")
    .flatMap((instruction) => instruction.args.split(/\s+/))
    .map((port) => Number(port.replace(/\/tcp$/, "")));
  for (const flag of ["--listen", "--admin"]) {
    assertEquals(hostOf(cmd, flag, "CMD"), "0.0.0.0", `CMD ${flag} listens on every interface`);
    assert(exposed.includes(portOf(cmd, flag, "CMD")), `the ${flag} port is not EXPOSEd`);
  }
  assert(flagValue(cmd, "--max-clients") !== undefined, "CMD gives --max-clients");
  assert(
    durationOf(cmd, "--drain-timeout", "CMD") < DOCKER_STOP_DEFAULT_MS,
    "CMD's --drain-timeout must end before docker stop's default 10 s",
  );
  assertEquals(
    entrypointScript(dockerfile).match(/exec (\S+) "\$@"/)?.[1],
    BINARY_PATH,
    "the entrypoint execs the binary with the CMD",
  );
  const copied = dockerfile.runtime.filter((instruction) => instruction.keyword === "COPY")
    .map((instruction) => instruction.args.split(/\s+/).at(-1));
  assert(copied.includes(BINARY_PATH), `the runtime stage does not COPY ${BINARY_PATH}`);
});

Deno.test("Dockerfile HEALTHCHECK asks GET /healthz of the --admin port", () => {
  const dockerfile = readDockerfile();
  const cmd = execForm(runtimeOne(dockerfile, "CMD").args, "CMD");
  const check = healthcheckCommand(dockerfile).join(" ");
  assert(check.includes("GET /healthz "), `the healthcheck does not GET /healthz: ${check}`);
  assert(
    check.includes(`/dev/tcp/127.0.0.1/${portOf(cmd, "--admin", "CMD")} `),
    `the healthcheck does not connect to the --admin port: ${check}`,
  );
});

Deno.test(".dockerignore lets in every file that deno compile reads, and COPY copies them", async () => {
  const patterns = dockerignorePatterns();
  const dockerfile = readDockerfile();
  const sources = dockerfile.instructions
    .filter((instruction) => instruction.keyword === "COPY" && !instruction.args.includes("--from"))
    .flatMap((instruction) => instruction.args.split(/\s+/).slice(0, -1))
    .map((source) => source.replace(/^\.\//, "").replace(/\/$/, ""));
  const info = await run(Deno.execPath(), ["info", "--json", "main.ts"], {
    cwd: ROOT_DIR,
    timeoutMs: 60_000,
  });
  assertEquals(info.code, 0, `deno info: ${describeRun(info)}`);
  const modules = list(JSON.parse(info.stdout), "modules");
  const localFiles = modules.map((_, i) => str(modules, i, "specifier"))
    .filter((specifier) => specifier.startsWith("file://"))
    .map((specifier) => decodeURIComponent(new URL(specifier).pathname))
    .map((path) => path.slice(ROOT_DIR.length));
  assert(
    localFiles.includes("main.ts") && localFiles.includes("deno.json"),
    "deno info lists main",
  );
  for (const file of [...localFiles, "deno.lock"]) {
    assert(!dockerIgnores(patterns, file), `.dockerignore leaves out ${file}`);
    assert(
      sources.some((source) => file === source || file.startsWith(`${source}/`)),
      `the Dockerfile does not COPY ${file}`,
    );
  }
  for (
    const file of [".git/HEAD", "dist/tcp-pool-proxy", "tests/deploy_test.ts", "bench/bench.ts"]
  ) {
    assert(dockerIgnores(patterns, file), `.dockerignore lets in ${file}`);
  }
});

Deno.test("unit: TimeoutStopSec outlasts --drain-timeout; exec, dynamic user, sandbox", () => {
  const { entries, program, args } = readUnit();
  const value = (key: string): string => unitValue(entries, "Service", key);
  assertEquals(program, BINARY_PATH);
  const drainMs = durationOf(args, "--drain-timeout", "ExecStart");
  assertGreater(systemdSpanMs(value("TimeoutStopSec")), drainMs, "TimeoutStopSec > drain");
  const expected: Record<string, string> = {
    Type: "exec",
    DynamicUser: "yes",
    LimitNOFILE: "65536",
    Restart: "on-failure",
    KillSignal: "SIGTERM",
    NoNewPrivileges: "yes",
    ProtectSystem: "strict",
    ProtectHome: "yes",
    PrivateTmp: "yes",
    RestrictAddressFamilies: "AF_INET AF_INET6 AF_UNIX",
    PrivateDevices: "yes",
    ProtectKernelTunables: "yes",
    ProtectKernelModules: "yes",
    ProtectKernelLogs: "yes",
    ProtectControlGroups: "yes",
    ProtectClock: "yes",
    ProtectHostname: "yes",
    RestrictNamespaces: "yes",
    RestrictRealtime: "yes",
    RestrictSUIDSGID: "yes",
    LockPersonality: "yes",
    SystemCallArchitectures: "native",
  };
  for (const [key, want] of Object.entries(expected)) assertEquals(value(key), want, key);
  assert(systemdSpanMs(value("RestartSec")) > 0, "RestartSec is set");
  assertEquals(unitValue(entries, "Install", "WantedBy"), "multi-user.target");
  const lowPort = portOf(args, "--listen", "ExecStart") < 1024 ||
    portOf(args, "--admin", "ExecStart") < 1024;
  const caps = lowPort ? "CAP_NET_BIND_SERVICE" : "";
  assertEquals(value("CapabilityBoundingSet"), caps, "CapabilityBoundingSet");
  assertEquals(value("AmbientCapabilities"), caps, "AmbientCapabilities");
  assert(
    entries.some((entry) => entry.key === "EnvironmentFile" && entry.value.startsWith("-")),
    "EnvironmentFile= is optional (-)",
  );
});

Deno.test("kubernetes: grace period outlasts preStop + drain; probes on the admin port", () => {
  const { deployment } = readManifests();
  const container = proxyContainer(deployment);
  const args = strings(container, "args");
  const podSpec = mapping(deployment, "spec", "template", "spec");
  const graceMs = num(podSpec, "terminationGracePeriodSeconds") * 1000;
  const preStopMs = num(container, "lifecycle", "preStop", "sleep", "seconds") * 1000;
  const drainMs = durationOf(args, "--drain-timeout", "args");
  assertGreater(graceMs, preStopMs + drainMs, "terminationGracePeriodSeconds > preStop + drain");
  assertGreater(preStopMs, 0, "preStop sleeps");
  assertGreaterOrEqual(
    num(deployment, "spec", "minReadySeconds") * 1000,
    graceMs,
    "minReadySeconds >= the grace period, so at most one old pod drains at a time",
  );
  assertEquals(num(deployment, "spec", "replicas"), 2);
  const adminPort = portOf(args, "--admin", "args");
  for (
    const [probe, path] of [["livenessProbe", "/healthz"], ["readinessProbe", "/readyz"]] as const
  ) {
    assertEquals(str(container, probe, "httpGet", "path"), path, `${probe} path`);
    assertEquals(
      containerPort(container, at(container, probe, "httpGet", "port")),
      adminPort,
      `${probe} port is the --admin port`,
    );
  }
  for (const flag of ["--listen", "--admin"]) {
    // The kubelet probes the pod's IP and the Service forwards to it: not 127.0.0.1.
    assertEquals(hostOf(args, flag, "args"), "0.0.0.0", `${flag} listens on every interface`);
  }
  assert(flagValue(args, "--max-upstream") !== undefined, "args give --max-upstream");
  assert(flagValue(args, "--max-clients") !== undefined, "args give --max-clients");
});

Deno.test("kubernetes: the Service reaches --listen; security context; resources; /tmp", () => {
  const { deployment, service } = readManifests();
  const container = proxyContainer(deployment);
  const args = strings(container, "args");
  assertEquals(str(service, "spec", "type"), "ClusterIP");
  const selector = mapping(service, "spec", "selector");
  const labels = mapping(deployment, "spec", "template", "metadata", "labels");
  for (const [key, value] of Object.entries(selector)) {
    assertEquals(labels[key], value, `the Service's selector ${key} matches the pods`);
  }
  assertEquals(
    containerPort(container, at(service, "spec", "ports", 0, "targetPort")),
    portOf(args, "--listen", "args"),
    "the Service's targetPort is the --listen port",
  );
  const podSecurity = mapping(deployment, "spec", "template", "spec", "securityContext");
  assertEquals(podSecurity.runAsNonRoot, true, "runAsNonRoot");
  const dockerUser = runtimeOne(readDockerfile(), "USER").args.split(":")[0];
  assertEquals(String(podSecurity.runAsUser), dockerUser, "runAsUser is the image's USER");
  assertEquals(at(container, "securityContext", "allowPrivilegeEscalation"), false);
  assertEquals(at(container, "securityContext", "readOnlyRootFilesystem"), true);
  assertEquals(strings(container, "securityContext", "capabilities", "drop"), ["ALL"]);
  for (const kind of ["requests", "limits"]) {
    for (const resource of ["cpu", "memory"]) str(container, "resources", kind, resource);
  }
  // The compiled binary writes its V8 code cache to /tmp: it must be writable.
  const mounts = list(container, "volumeMounts");
  const tmp = mounts.findIndex((_, i) => str(mounts, i, "mountPath") === "/tmp");
  assert(tmp >= 0, "/tmp is mounted");
  const volumes = list(deployment, "spec", "template", "spec", "volumes");
  const name = str(mounts, tmp, "name");
  const volume = volumes.find((_, i) => str(volumes, i, "name") === name);
  mapping(volume, "emptyDir");
});

Deno.test("kubernetes: args, labels and annotations are strings (as Kubernetes requires)", () => {
  const { deployment } = readManifests();
  strings(proxyContainer(deployment), "args");
  for (const field of ["labels", "annotations"]) {
    const values = mapping(deployment, "spec", "template", "metadata", field);
    for (const key of Object.keys(values)) str(values, key);
  }
});

Deno.test("release workflow: tags v*, five targets, Deno v2.9.6, checksums, contents: write", () => {
  const workflow = readWorkflow(RELEASE);
  assert(strings(workflow, "on", "push", "tags").includes("v*"), "runs on tags v*");
  const steps = workflowSteps(workflow);
  const jobs = mapping(workflow, "jobs");
  const matrixJobs = Object.keys(jobs).filter((job) =>
    typeof mapping(jobs, job).strategy === "object"
  );
  assertEquals(matrixJobs.length, 1, "one matrix job");
  assertEquals(
    strings(jobs, matrixJobs[0], "strategy", "matrix", "target").toSorted(),
    RELEASE_TARGETS.toSorted(),
  );
  const setupDeno = steps.filter((step) => step.uses?.startsWith("denoland/setup-deno@"));
  assert(setupDeno.length > 0, "uses denoland/setup-deno");
  for (const step of setupDeno) assertEquals(step.with["deno-version"], "v2.9.6");
  const compiles = steps.filter((step) => step.run?.includes("deno compile"));
  assertEquals(compiles.length, 1, "one deno compile step");
  assertCompileCommand(compiles[0].run ?? "", RELEASE);
  assert(compiles[0].run?.includes("--target"), "deno compile --target");
  assert(steps.some((step) => step.run?.includes("sha256sum")), "writes sha256 checksums");
  const writers = Object.keys(jobs).filter((job) => {
    const permissions = mapping(jobs, job).permissions;
    return typeof permissions === "object" && permissions !== null &&
      (permissions as Record<string, unknown>).contents === "write";
  });
  assertEquals(writers.length, 1, "one job may write contents (the release)");
  assert(
    steps.some((step) => step.job === writers[0] && step.run?.includes("gh release create")),
    "the writing job creates the release",
  );
});

Deno.test("ci workflow: push and pull_request run .ci/run with Node set up", () => {
  const workflow = readWorkflow(CI);
  const events = workflowEvents(workflow);
  assert(events.includes("push") && events.includes("pull_request"), `on: ${events}`);
  const steps = workflowSteps(workflow);
  assert(steps.some((step) => step.run?.includes(".ci/run")), "a step runs .ci/run");
  assert(steps.some((step) => step.uses?.startsWith("actions/setup-node@")), "sets up Node");
});

Deno.test("workflows pin every action to a version", () => {
  for (const path of WORKFLOWS) {
    for (const step of workflowSteps(readWorkflow(path))) {
      if (step.uses === undefined) continue;
      const version = /@(v\d[\w.-]*|[0-9a-f]{40})$/.exec(step.uses);
      assert(version !== null, `${path}: ${step.job} step ${step.index}: ${step.uses} is unpinned`);
    }
  }
});

// ---- the command lines, through the proxy's own parser ----

/** Why the command lines cannot be parsed yet, or "" when they can. */
function adminFlagMissing(): string {
  try {
    parseCli(["--admin", "127.0.0.1:9090"]);
    return "";
  } catch (error) {
    if (error instanceof ConfigError && error.flag === "--admin") {
      return " (ignored: --admin is not a flag of src/config.ts yet)";
    }
    throw error;
  }
}

const noAdmin = adminFlagMissing();

Deno.test({
  name: `the Dockerfile CMD, the unit's ExecStart and the Kubernetes args parse${noAdmin}`,
  ignore: noAdmin !== "",
  fn() {
    const lines: [string, string[]][] = [
      ["Dockerfile CMD", execForm(runtimeOne(readDockerfile(), "CMD").args, "CMD")],
      ["unit ExecStart", readUnit().args],
      ["kubernetes args", strings(proxyContainer(readManifests().deployment), "args")],
    ];
    for (const [where, args] of lines) {
      let kind: string;
      try {
        kind = parseCli(args).kind;
      } catch (error) {
        throw new Error(`${where}: ${error instanceof Error ? error.message : String(error)}`);
      }
      assertEquals(kind, "run", `${where} runs the proxy`);
    }
  },
});

// ---- the Dockerfile's shell snippets, run ----

const noBash = missingBinaries("bash");

/** Serves GET /healthz with `status` on a free port until the returned function is called. */
function healthServer(status: number): { port: number; close(): Promise<void> } {
  const server = Deno.serve(
    { hostname: "127.0.0.1", port: 0, onListen() {} },
    (request) =>
      new URL(request.url).pathname === "/healthz"
        ? new Response("ok\n", { status })
        : new Response("not found\n", { status: 404 }),
  );
  return { port: server.addr.port, close: () => server.shutdown() };
}

/** Runs the healthcheck command with its admin port replaced by `port`. */
async function runHealthcheck(port: number): Promise<number> {
  const dockerfile = readDockerfile();
  const adminPort = portOf(execForm(runtimeOne(dockerfile, "CMD").args, "CMD"), "--admin", "CMD");
  const [program, ...args] = healthcheckCommand(dockerfile).map((word) =>
    word.replace(`/dev/tcp/127.0.0.1/${adminPort} `, `/dev/tcp/127.0.0.1/${port} `)
  );
  const result = await run(program, args, { timeoutMs: 5_000 });
  assert(!result.timedOut, `the healthcheck hung: ${describeRun(result)}`);
  return result.code;
}

Deno.test({
  name: `HEALTHCHECK's command: 0 on 200, non-zero on 503 and when nothing listens${noBash}`,
  ignore: noBash !== "",
  async fn() {
    for (const [status, healthy] of [[200, true], [503, false]] as const) {
      const server = healthServer(status);
      try {
        const code = await runHealthcheck(server.port);
        assertEquals(code === 0, healthy, `status ${status} gave exit ${code}`);
      } finally {
        await server.close();
      }
    }
    const closed = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    const port = closed.addr.port;
    closed.close();
    assert((await runHealthcheck(port)) !== 0, "healthy with nothing listening");
  },
});

const noSh = missingBinaries("sh");

Deno.test({
  name: `ENTRYPOINT raises the soft open-file limit to the hard one and passes CMD intact${noSh}`,
  ignore: noSh !== "" || Deno.build.os !== "linux",
  async fn() {
    const dir = await Deno.makeTempDir({ prefix: "tcp-pool-proxy-entrypoint-" });
    try {
      const stub = `${dir}/tcp-pool-proxy`;
      await Deno.writeTextFile(stub, '#!/bin/sh\nulimit -Sn\nprintf "[%s]\\n" "$@"\n');
      await Deno.chmod(stub, 0o755);
      const script = entrypointScript(readDockerfile()).replace(BINARY_PATH, stub);
      // Start from a soft limit of 256 (or the hard one, if lower), as a runtime might.
      const result = await run("sh", [
        "-c",
        'h=$(ulimit -Hn); if [ "$h" -gt 256 ]; then ulimit -Sn 256; fi; exec sh -c "$@"',
        "sh",
        script,
        "tcp-pool-proxy",
        "--upstream",
        "a b:1",
        "--pool",
      ]);
      assertEquals(result.code, 0, describeRun(result));
      const hard = (await run("sh", ["-c", "ulimit -Hn"])).stdout.trim();
      assertEquals(result.stdout.split("\n"), [hard, "[--upstream]", "[a b:1]", "[--pool]", ""]);
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});

// ---- tools ----

/** The unit in a temporary directory, ExecStart pointing at an executable stub there. */
async function withStubbedUnit<T>(fn: (unitPath: string) => Promise<T>): Promise<T> {
  const dir = await Deno.makeTempDir({ prefix: "tcp-pool-proxy-unit-" });
  try {
    const stub = `${dir}/tcp-pool-proxy`;
    await Deno.writeTextFile(stub, "#!/bin/sh\n");
    await Deno.chmod(stub, 0o755);
    const unitPath = `${dir}/tcp-pool-proxy.service`;
    const text = readRepoFile(UNIT);
    assert(text.includes(`ExecStart=${BINARY_PATH} `), "ExecStart starts with the binary");
    await Deno.writeTextFile(
      unitPath,
      text.replace(`ExecStart=${BINARY_PATH} `, `ExecStart=${stub} `),
    );
    return await fn(unitPath);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

const noSystemdAnalyze = missingBinaries("systemd-analyze");

Deno.test({
  // systemd-analyze verify reports a missing ExecStart binary, and the binary is not installed
  // here: the unit is verified as a copy whose ExecStart points at a stub.
  name: `systemd-analyze verify: the unit has no unknown key or bad value${noSystemdAnalyze}`,
  ignore: noSystemdAnalyze !== "",
  async fn() {
    await withStubbedUnit(async (unitPath) => {
      const result = await run("systemd-analyze", ["verify", unitPath], { timeoutMs: 30_000 });
      // verify exits 0 on unknown keys and bad values and only prints them, so any line about
      // this unit fails the test; lines about the system's own units are not ours to judge.
      const ours = `${result.stdout}\n${result.stderr}`.split("\n")
        .filter((line) => line.includes("tcp-pool-proxy"));
      assertEquals(result.code, 0, describeRun(result));
      assertEquals(ours, [], describeRun(result));
    });
  },
});

Deno.test({
  name: `systemd-analyze security: the unit's exposure is 4.0 or less${noSystemdAnalyze}`,
  ignore: noSystemdAnalyze !== "",
  async fn() {
    await withStubbedUnit(async (unitPath) => {
      const result = await run(
        "systemd-analyze",
        ["security", "--offline=yes", "--threshold=40", "--no-pager", unitPath],
        { timeoutMs: 30_000 },
      );
      assertEquals(result.code, 0, describeRun(result));
    });
  },
});

const YAML_FILES = [KUBERNETES, ...WORKFLOWS];
/** yamllint's defaults, with the project's line width, and `on:` allowed as a key. */
const YAMLLINT_CONFIG = "{extends: default, rules: {line-length: {max: 100}, " +
  "document-start: disable, truthy: {check-keys: false}}}";
const noYamllint = missingBinaries("yamllint");

Deno.test({
  name: `yamllint: the manifests and workflows${noYamllint}`,
  ignore: noYamllint !== "",
  async fn() {
    const result = await run("yamllint", [
      "--strict",
      "-f",
      "parsable",
      "-d",
      YAMLLINT_CONFIG,
      ...YAML_FILES,
    ], {
      cwd: ROOT_DIR,
    });
    assertEquals(result.code, 0, describeRun(result));
  },
});

const noShellcheck = missingBinaries("shellcheck");

/** Every shell script in the deployment files, with the shell it runs in. */
function shellScripts(): { where: string; shell: "dash" | "bash"; script: string }[] {
  const scripts: { where: string; shell: "dash" | "bash"; script: string }[] = [];
  const dockerfile = readDockerfile();
  // The image's /bin/sh is Debian's dash, whose ulimit has -n and -H (POSIX's need not).
  scripts.push({ where: "ENTRYPOINT", shell: "dash", script: entrypointScript(dockerfile) });
  const check = healthcheckCommand(dockerfile);
  assertEquals(check.slice(0, 2), ["bash", "-c"], "HEALTHCHECK runs a bash -c script");
  scripts.push({ where: "HEALTHCHECK", shell: "bash", script: check[2] });
  for (const path of WORKFLOWS) {
    for (const step of workflowSteps(readWorkflow(path))) {
      if (step.run === undefined) continue;
      // GitHub runs `run:` with bash on Linux runners; ${{ }} is replaced before, as actionlint does.
      const script = step.run.replace(/\$\{\{[^}]*\}\}/g, "GITHUB_EXPRESSION");
      scripts.push({ where: `${path}: ${step.job} step ${step.index}`, shell: "bash", script });
    }
  }
  return scripts;
}

Deno.test({
  name: `shellcheck: the entrypoint, the healthcheck and every workflow run: script${noShellcheck}`,
  ignore: noShellcheck !== "",
  async fn() {
    for (const { where, shell, script } of shellScripts()) {
      const result = await run("shellcheck", ["-s", shell, "-"], {
        stdin: new TextEncoder().encode(script),
      });
      assertEquals(result.code, 0, `${where}:\n${script}\n${describeRun(result)}`);
    }
  },
});

const noActionlint = missingBinaries("actionlint");

Deno.test({
  name: `actionlint: the workflows${noActionlint}`,
  ignore: noActionlint !== "",
  async fn() {
    const result = await run("actionlint", ["-no-color", ...WORKFLOWS], { cwd: ROOT_DIR });
    assertEquals(result.code, 0, describeRun(result));
  },
});

const noHadolint = missingBinaries("hadolint");

Deno.test({
  name: `hadolint: the Dockerfile${noHadolint}`,
  ignore: noHadolint !== "",
  async fn() {
    const result = await run("hadolint", [DOCKERFILE], { cwd: ROOT_DIR });
    assertEquals(result.code, 0, describeRun(result));
  },
});

const noKubeconform = missingBinaries("kubeconform");

Deno.test({
  // kubeconform downloads the schemas of Kubernetes 1.30 (the first with the preStop sleep
  // handler on by default); offline it fails rather than passing unchecked.
  name: `kubeconform -strict: the manifests against Kubernetes 1.30${noKubeconform}`,
  ignore: noKubeconform !== "",
  async fn() {
    const result = await run(
      "kubeconform",
      ["-strict", "-summary", "-kubernetes-version", "1.30.0", KUBERNETES],
      { cwd: ROOT_DIR, timeoutMs: 60_000 },
    );
    assertEquals(result.code, 0, describeRun(result));
  },
});

/**
 * Why `kubectl --dry-run=client` cannot check the manifests here, or "" when it can. Even a
 * client dry run asks an API server for its resource types and schema, so a cluster must answer.
 */
async function kubectlUnavailable(): Promise<string> {
  if (findBinary("kubectl") === undefined) return " (ignored: kubectl not found)";
  const probe = await run("kubectl", ["version", "--request-timeout=5s"], { timeoutMs: 15_000 });
  if (probe.code === 0) return "";
  return " (ignored: kubectl is installed but no API server answers; even --dry-run=client " +
    "needs one for the resource types)";
}

const noKubectl = await kubectlUnavailable();

Deno.test({
  name: `kubectl apply --dry-run=client --validate=strict: the manifests${noKubectl}`,
  ignore: noKubectl !== "",
  async fn() {
    const result = await run(
      "kubectl",
      ["apply", "--dry-run=client", "--validate=strict", "-f", KUBERNETES],
      { cwd: ROOT_DIR, timeoutMs: 60_000 },
    );
    assertEquals(result.code, 0, describeRun(result));
  },
});
