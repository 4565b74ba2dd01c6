/**
 * The Prometheus text writer and its JSON twin (`src/metrics.ts`): number formatting, escaping,
 * one HELP and one TYPE line per family, `_total` on counters, cumulative histogram buckets whose
 * `+Inf` equals the count, the checks that refuse what Prometheus would, the JSON form agreeing
 * with the text, and the process's own figures under the permissions Deno gives.
 *
 * @module
 */

import {
  assert,
  assertEquals,
  assertFalse,
  assertGreater,
  assertLessOrEqual,
  assertThrows,
} from "./_assert.ts";
import {
  counterFamily,
  DEFAULT_BUCKETS_SECONDS,
  escapeHelp,
  escapeLabelValue,
  exponentialBuckets,
  exposition,
  formatValue,
  gaugeFamily,
  Histogram,
  histogramFamily,
  MetricDefinitionError,
  type MetricFamily,
  processMetrics,
  samplesByLabel,
  statsJson,
} from "../src/metrics.ts";

/** The sample lines of an exposition as `name{labels}` → value, comments left out. */
function parseSamples(text: string): Map<string, string> {
  const samples = new Map<string, string>();
  for (const line of text.split("\n")) {
    if (line === "" || line.startsWith("#")) continue;
    const space = line.lastIndexOf(" ");
    samples.set(line.slice(0, space), line.slice(space + 1));
  }
  return samples;
}

Deno.test("formatValue writes integers plain, fractions shortest, and +Inf, -Inf and NaN", () => {
  assertEquals(formatValue(0), "0");
  assertEquals(formatValue(-0), "0");
  assertEquals(formatValue(42), "42");
  assertEquals(formatValue(-7), "-7");
  assertEquals(formatValue(2 ** 53), "9007199254740992");
  assertEquals(formatValue(0.25), "0.25");
  assertEquals(formatValue(0.1 + 0.2), "0.30000000000000004");
  assertEquals(formatValue(1.5e-7), "1.5e-7");
  assertEquals(formatValue(1e21), "1e+21");
  assertEquals(formatValue(Infinity), "+Inf");
  assertEquals(formatValue(-Infinity), "-Inf");
  assertEquals(formatValue(NaN), "NaN");
  // Every finite form reads back as the same number (Go's ParseFloat reads the same forms).
  for (const value of [0.25, 1.5e-7, 1e21, 123456.789, 5e-324]) {
    assertEquals(Number(formatValue(value)), value);
  }
});

Deno.test("label values escape backslash, double quote and newline, and nothing else", () => {
  assertEquals(escapeLabelValue("plain value"), "plain value");
  assertEquals(escapeLabelValue(`a\\b`), `a\\\\b`);
  assertEquals(escapeLabelValue(`say "hi"`), `say \\"hi\\"`);
  assertEquals(escapeLabelValue("two\nlines"), "two\\nlines");
  assertEquals(escapeLabelValue("tab\tand {braces}, = 'quotes'"), "tab\tand {braces}, = 'quotes'");
  assertEquals(escapeLabelValue(`\\"\n`), `\\\\\\"\\n`);
});

Deno.test("help text escapes backslash and newline, but not a double quote", () => {
  assertEquals(escapeHelp("Dials started."), "Dials started.");
  assertEquals(escapeHelp(`C:\\path`), `C:\\\\path`);
  assertEquals(escapeHelp("first\nsecond"), "first\\nsecond");
  assertEquals(escapeHelp(`a "quoted" word`), `a "quoted" word`);
});

Deno.test("exposition writes one HELP and one TYPE line per family, then its samples, and ends with a newline", () => {
  const text = exposition([
    counterFamily("proxy_refused_total", "Connections not pooled, by reason.", [
      { labels: { reason: "pool full" }, value: 2 },
      { labels: { reason: "unfit" }, value: 1 },
    ]),
    gaugeFamily("proxy_idle_connections", "Idle upstream connections.", 4),
  ]);
  assertEquals(
    text,
    [
      "# HELP proxy_refused_total Connections not pooled, by reason.",
      "# TYPE proxy_refused_total counter",
      'proxy_refused_total{reason="pool full"} 2',
      'proxy_refused_total{reason="unfit"} 1',
      "# HELP proxy_idle_connections Idle upstream connections.",
      "# TYPE proxy_idle_connections gauge",
      "proxy_idle_connections 4",
      "",
    ].join("\n"),
  );
});

Deno.test("a counter's name ends in _total exactly once, whether or not it was given", () => {
  const text = exposition([
    counterFamily("proxy_dials", "Dials.", 3),
    counterFamily("proxy_hits_total", "Hits.", 5),
  ]);
  assertEquals(text.match(/^# TYPE \S+ counter$/gm), [
    "# TYPE proxy_dials_total counter",
    "# TYPE proxy_hits_total counter",
  ]);
  assertEquals([...parseSamples(text)], [["proxy_dials_total", "3"], ["proxy_hits_total", "5"]]);
  assertFalse(text.includes("_total_total"));
});

Deno.test("labels and help with special characters are escaped in the exposition", () => {
  const text = exposition([
    gaugeFamily("proxy_weird", `A help with a \\ backslash\nand a "second" line.`, [
      { labels: { path: `C:\\dir`, quote: `say "hi"`, text: "two\nlines" }, value: 1 },
    ]),
  ]);
  assertEquals(text.split("\n").slice(0, 3), [
    `# HELP proxy_weird A help with a \\\\ backslash\\nand a "second" line.`,
    "# TYPE proxy_weird gauge",
    `proxy_weird{path="C:\\\\dir",quote="say \\"hi\\"",text="two\\nlines"} 1`,
  ]);
  assertEquals(text.split("\n").length, 4, "each record is one line");
});

Deno.test("values are written as Prometheus reads them: +Inf, -Inf, NaN and fractions", () => {
  const text = exposition([
    gaugeFamily("proxy_values", "Assorted values.", [
      { labels: { v: "inf" }, value: Infinity },
      { labels: { v: "minus_inf" }, value: -Infinity },
      { labels: { v: "nan" }, value: NaN },
      { labels: { v: "fraction" }, value: 0.125 },
    ]),
  ]);
  assertEquals([...parseSamples(text).values()], ["+Inf", "-Inf", "NaN", "0.125"]);
});

Deno.test("histogram buckets are cumulative, include +Inf equal to _count, and le is inclusive", () => {
  const histogram = new Histogram([0.01, 0.1, 1]);
  for (const seconds of [0.005, 0.01, 0.05, 0.1, 0.5, 2, 3]) histogram.observe(seconds);
  const text = exposition([histogramFamily("proxy_wait_seconds", "Waits.", histogram)]);
  assertEquals(text.split("\n"), [
    "# HELP proxy_wait_seconds Waits.",
    "# TYPE proxy_wait_seconds histogram",
    'proxy_wait_seconds_bucket{le="0.01"} 2',
    'proxy_wait_seconds_bucket{le="0.1"} 4',
    'proxy_wait_seconds_bucket{le="1"} 5',
    'proxy_wait_seconds_bucket{le="+Inf"} 7',
    `proxy_wait_seconds_sum ${formatValue(0.005 + 0.01 + 0.05 + 0.1 + 0.5 + 2 + 3)}`,
    "proxy_wait_seconds_count 7",
    "",
  ]);
});

Deno.test("a labelled histogram puts le after its own labels, and each histogram gets its own +Inf, _sum and _count", () => {
  const fast = new Histogram([0.001]);
  const slow = new Histogram([0.001]);
  fast.observe(0.0005);
  slow.observe(0.5);
  slow.observe(0.25);
  const text = exposition([
    histogramFamily("proxy_dial_seconds", "Dial time.", [
      { labels: { upstream: "a" }, histogram: fast },
      { labels: { upstream: "b" }, histogram: slow },
    ]),
  ]);
  const samples = parseSamples(text);
  assertEquals([...samples], [
    ['proxy_dial_seconds_bucket{upstream="a",le="0.001"}', "1"],
    ['proxy_dial_seconds_bucket{upstream="a",le="+Inf"}', "1"],
    ['proxy_dial_seconds_sum{upstream="a"}', "0.0005"],
    ['proxy_dial_seconds_count{upstream="a"}', "1"],
    ['proxy_dial_seconds_bucket{upstream="b",le="0.001"}', "0"],
    ['proxy_dial_seconds_bucket{upstream="b",le="+Inf"}', "2"],
    ['proxy_dial_seconds_sum{upstream="b"}', "0.75"],
    ['proxy_dial_seconds_count{upstream="b"}', "2"],
  ]);
  assertEquals(text.match(/^# (HELP|TYPE) /gm)?.length, 2, "HELP and TYPE once for the family");
});

Deno.test("Histogram: many observations keep buckets cumulative and +Inf equal to the count", () => {
  const histogram = new Histogram();
  let sum = 0;
  for (let i = 0; i < 10_000; i++) {
    const seconds = ((i * 7919) % 20_011) / 1_000; // 0 to 20 s, spread over every bucket
    histogram.observe(seconds);
    sum += seconds;
  }
  const { bounds, cumulativeCounts, count } = histogram.snapshot();
  assertEquals(bounds, [...DEFAULT_BUCKETS_SECONDS]);
  assertEquals(cumulativeCounts.length, bounds.length + 1);
  for (let i = 1; i < cumulativeCounts.length; i++) {
    assertLessOrEqual(cumulativeCounts[i - 1], cumulativeCounts[i]);
  }
  assertEquals(cumulativeCounts.at(-1), count);
  assertEquals(count, 10_000);
  assertEquals(histogram.snapshot().sum, sum);
});

Deno.test("Histogram: NaN goes to +Inf, Infinity too, and a value below every bound to the first bucket", () => {
  const histogram = new Histogram([1, 2]);
  histogram.observe(NaN);
  histogram.observe(Infinity);
  histogram.observe(-5);
  const snapshot = histogram.snapshot();
  assertEquals(snapshot.cumulativeCounts, [1, 1, 3]);
  assert(Number.isNaN(snapshot.sum));
});

Deno.test("Histogram: bounds must be finite and strictly increasing; a last Infinity is dropped", () => {
  assertEquals(new Histogram([0.1, 1, Infinity]).bounds, [0.1, 1]);
  assertEquals(new Histogram([]).snapshot().cumulativeCounts, [0]);
  assertThrows(() => new Histogram([1, 1]), RangeError, "increase strictly");
  assertThrows(() => new Histogram([2, 1]), RangeError, "2, 1");
  assertThrows(() => new Histogram([NaN]), RangeError, "not a finite number");
  assertThrows(() => new Histogram([-Infinity, 1]), RangeError, "not a finite number");
});

Deno.test("exponentialBuckets multiplies by the factor and reads as decimal bounds", () => {
  assertEquals(exponentialBuckets(0.001, 10, 4), [0.001, 0.01, 0.1, 1]);
  assertEquals(exponentialBuckets(1, 2, 5), [1, 2, 4, 8, 16]);
  assertThrows(() => exponentialBuckets(0, 2, 3), RangeError, "start 0");
  assertThrows(() => exponentialBuckets(1, 1, 3), RangeError, "factor 1");
  assertThrows(() => exponentialBuckets(1, 2, 0), RangeError, "count 0");
});

Deno.test("exposition refuses what Prometheus would not read, naming the metric", () => {
  const cases: [MetricFamily[], string][] = [
    [[gaugeFamily("1bad", "Help.", 1)], "not a valid metric name"],
    [[gaugeFamily("bad-name", "Help.", 1)], "not a valid metric name"],
    [[gaugeFamily("ok", "", 1)], "no help text"],
    [[gaugeFamily("ok", "Help.", [{ labels: { "1x": "v" }, value: 1 }])], "label name"],
    [[gaugeFamily("ok", "Help.", [{ labels: { __x: "v" }, value: 1 }])], "label name"],
    [[gaugeFamily("ok", "Help.", 1), gaugeFamily("ok", "Again.", 2)], "written twice"],
    [[counterFamily("ok", "Help.", 1), counterFamily("ok_total", "Again.", 2)], "written twice"],
    [
      [histogramFamily("wait", "Help.", new Histogram()), gaugeFamily("wait_count", "Help.", 1)],
      "written twice",
    ],
    [
      [histogramFamily("wait", "Help.", [{ labels: { le: "x" }, histogram: new Histogram() }])],
      `"le" is reserved`,
    ],
    [
      [gaugeFamily("ok", "Help.", [{ labels: { a: "1" }, value: 1 }, { value: 2 }])],
      "same label names",
    ],
    [
      [gaugeFamily("ok", "Help.", [{ labels: { a: "1" }, value: 1 }, {
        labels: { b: "1" },
        value: 2,
      }])],
      "same label names",
    ],
    [
      [gaugeFamily("ok", "Help.", [{ labels: { a: "1" }, value: 1 }, {
        labels: { a: "1" },
        value: 2,
      }])],
      "appears twice",
    ],
  ];
  for (const [families, problem] of cases) {
    const error = assertThrows(() => exposition(families), MetricDefinitionError, problem);
    assertEquals(error.metric, families.at(-1)?.name);
    // The JSON form refuses exactly the same.
    assertThrows(() => statsJson(families), MetricDefinitionError, problem);
  }
});

Deno.test("a family with no samples keeps its HELP and TYPE lines, and is an empty object in JSON", () => {
  const families = [counterFamily("proxy_ends_total", "Session ends.", [])];
  assertEquals(
    exposition(families),
    [
      "# HELP proxy_ends_total Session ends.",
      "# TYPE proxy_ends_total counter",
      "",
    ].join("\n"),
  );
  assertEquals(statsJson(families), { proxy_ends_total: {} });
});

Deno.test("samplesByLabel makes one labelled sample per entry of a record or a map", () => {
  assertEquals(samplesByLabel("reason", { "pool full": 2, unfit: 0 }), [
    { labels: { reason: "pool full" }, value: 2 },
    { labels: { reason: "unfit" }, value: 0 },
  ]);
  assertEquals(samplesByLabel("end", new Map([["client-closed", 9]])), [
    { labels: { end: "client-closed" }, value: 9 },
  ]);
});

Deno.test("statsJson: a plain value per unlabelled family, nested objects by label value, histograms as count, sum and buckets", () => {
  const histogram = new Histogram([0.01, 0.1]);
  histogram.observe(0.05);
  histogram.observe(1);
  const json = statsJson([
    counterFamily("proxy_dials", "Dials.", 12),
    counterFamily("proxy_refused_total", "Refused.", samplesByLabel("reason", { unfit: 1 })),
    gaugeFamily("proxy_conns", "Connections by state and side.", [
      { labels: { side: "upstream", state: "idle" }, value: 4 },
      { labels: { side: "upstream", state: "leased" }, value: 2 },
      { labels: { side: "client", state: "open" }, value: 3 },
    ]),
    gaugeFamily("proxy_limit", "A limit.", Infinity),
    histogramFamily("proxy_wait_seconds", "Waits.", histogram),
  ]);
  assertEquals(json, {
    proxy_dials_total: 12,
    proxy_refused_total: { unfit: 1 },
    proxy_conns: { upstream: { idle: 4, leased: 2 }, client: { open: 3 } },
    proxy_limit: "+Inf",
    proxy_wait_seconds: { count: 2, sum: 1.05, buckets: { "0.01": 0, "0.1": 1, "+Inf": 2 } },
  });
  // It survives JSON as it is.
  assertEquals(JSON.parse(JSON.stringify(json)), json);
});

Deno.test("statsJson keeps a label value named __proto__ as an ordinary key", () => {
  const json = statsJson([
    gaugeFamily("proxy_odd", "Odd label values.", samplesByLabel("v", { ["__proto__"]: 1, x: 2 })),
  ]);
  assertEquals(JSON.parse(JSON.stringify(json)), JSON.parse('{"proxy_odd":{"__proto__":1,"x":2}}'));
});

Deno.test("/metrics text and /stats JSON built from one list give the same figures", () => {
  const waits = new Histogram([0.001, 0.01]);
  for (const seconds of [0.0002, 0.003, 0.02]) waits.observe(seconds);
  const families = [
    counterFamily("proxy_dials", "Dials.", 20),
    counterFamily("proxy_ends", "Ends.", samplesByLabel("end", { "client-closed": 7 })),
    gaugeFamily("proxy_ratio", "A fraction.", 0.375),
    histogramFamily("proxy_wait_seconds", "Waits.", waits),
  ];
  const text = parseSamples(exposition(families));
  const json = statsJson(families);
  assertEquals(text.get("proxy_dials_total"), String(json.proxy_dials_total));
  assertEquals(
    text.get('proxy_ends_total{end="client-closed"}'),
    String((json.proxy_ends_total as Record<string, number>)["client-closed"]),
  );
  assertEquals(text.get("proxy_ratio"), String(json.proxy_ratio));
  const wait = json.proxy_wait_seconds as {
    count: number;
    sum: number;
    buckets: Record<string, number>;
  };
  assertEquals(text.get("proxy_wait_seconds_count"), String(wait.count));
  assertEquals(text.get("proxy_wait_seconds_sum"), String(wait.sum));
  for (const [le, count] of Object.entries(wait.buckets)) {
    assertEquals(text.get(`proxy_wait_seconds_bucket{le="${le}"}`), String(count), le);
  }
});

Deno.test("processMetrics gives the start time and resident memory, and never throws", () => {
  const families = processMetrics();
  const byName = new Map(families.map((f) => [f.name, f]));
  const start = byName.get("process_start_time_seconds");
  const rss = byName.get("process_resident_memory_bytes");
  assert(start?.type === "gauge" && rss?.type === "gauge");
  const startSeconds = start.samples[0].value;
  const uptimeSeconds = performance.now() / 1000;
  assertLessOrEqual(Math.abs(startSeconds + uptimeSeconds - Date.now() / 1000), 1);
  assertGreater(rss.samples[0].value, 1024 * 1024);
  // Present only where descriptors can be counted (see the two tests below), then a count.
  const fds = byName.get("process_open_fds");
  if (fds !== undefined) assert(fds.type === "gauge" && fds.samples[0].value > 2);
  // It is valid text.
  assert(exposition(families).includes("# TYPE process_resident_memory_bytes gauge"));
});

/** Runs `code` (which may import metrics.ts) in a child Deno with `permissions`; returns stdout. */
async function runChild(permissions: string[], code: string): Promise<string> {
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "--quiet", "--no-prompt", ...permissions, "-"],
    stdin: "piped",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const writer = child.stdin.getWriter();
  await writer.write(new TextEncoder().encode(code));
  await writer.close();
  const { code: status, stdout, stderr } = await child.output();
  const errText = new TextDecoder().decode(stderr);
  assertEquals(status, 0, errText);
  return new TextDecoder().decode(stdout);
}

const PRINT_PROCESS_METRICS = `
import { exposition, processMetrics } from ${
  JSON.stringify(import.meta.resolve("../src/metrics.ts"))
};
console.log(exposition(processMetrics()));
console.log(exposition(processMetrics()));
`;

Deno.test("under --allow-net alone processMetrics leaves process_open_fds out and does not throw", async () => {
  const out = await runChild(["--allow-net"], PRINT_PROCESS_METRICS);
  assert(out.includes("process_resident_memory_bytes "), out);
  assertFalse(out.includes("process_open_fds"), out);
});

Deno.test("under --allow-all processMetrics counts open descriptors (Linux 6.2 and later)", async () => {
  const out = await runChild(
    ["--allow-all"],
    `${PRINT_PROCESS_METRICS}\nconsole.log("kernel " + Deno.osRelease());`,
  );
  const counts = [...out.matchAll(/^process_open_fds (\d+)$/gm)].map((m) => Number(m[1]));
  const kernel = (/^kernel (\d+)\.(\d+)/m.exec(out) ?? []).slice(1).map(Number);
  const countable = kernel[0] > 6 || (kernel[0] === 6 && kernel[1] >= 2);
  if (!countable) {
    assertEquals(counts, [], "an older kernel reports 0 for /proc/self/fd: left out");
    return;
  }
  assertEquals(counts.length, 2, out);
  for (const count of counts) {
    assertGreater(count, 2, "stdin, stdout and stderr at least");
    assertLessOrEqual(count, 1000);
  }
});
