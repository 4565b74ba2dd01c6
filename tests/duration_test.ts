import { DurationError, formatDuration, MAX_DURATION_MS, parseDuration } from "../src/duration.ts";
import { assertEquals, assertStringIncludes, assertThrows } from "./_assert.ts";

Deno.test("parseDuration reads each unit into milliseconds", () => {
  assertEquals(parseDuration("250ms"), 250);
  assertEquals(parseDuration("5s"), 5_000);
  assertEquals(parseDuration("2m"), 120_000);
  assertEquals(parseDuration("1h"), 3_600_000);
});

Deno.test("parseDuration reads decimals exactly", () => {
  assertEquals(parseDuration("1.5s"), 1_500);
  assertEquals(parseDuration("1.1s"), 1_100);
  assertEquals(parseDuration("0.25m"), 15_000);
  assertEquals(parseDuration("1.001s"), 1_001);
});

Deno.test("parseDuration accepts a bare 0 and zero with a unit", () => {
  assertEquals(parseDuration("0"), 0);
  assertEquals(parseDuration("0s"), 0);
  assertEquals(parseDuration("0ms"), 0);
  assertEquals(parseDuration("0.0h"), 0);
});

Deno.test("parseDuration accepts up to the setTimeout limit and rejects beyond it", () => {
  assertEquals(parseDuration(`${MAX_DURATION_MS}ms`), 2 ** 31 - 1);
  assertEquals(parseDuration("596h"), 596 * 3_600_000);
  const err = assertThrows(() => parseDuration(`${MAX_DURATION_MS + 1}ms`), DurationError);
  assertStringIncludes(err.message, "too long");
  assertThrows(() => parseDuration("25d"), DurationError);
  assertThrows(() => parseDuration("597h"), DurationError, "too long");
  assertThrows(() => parseDuration("99999999999999999999999h"), DurationError, "too long");
});

Deno.test("parseDuration rejects a number without a unit, naming the units", () => {
  const err = assertThrows(() => parseDuration("5"), DurationError);
  assertEquals(err.text, "5");
  assertEquals(
    err.message,
    `"5" has no unit; use a number with a unit ms, s, m or h, e.g. 250ms, 5s, 1.5s, 2m`,
  );
  assertThrows(() => parseDuration("1.5"), DurationError, "has no unit");
});

Deno.test("parseDuration rejects negative, empty and junk text", () => {
  assertThrows(() => parseDuration("-1s"), DurationError, "is negative");
  assertThrows(() => parseDuration(""), DurationError, "is empty");
  for (
    const junk of [
      "NaN",
      "s",
      "5 s",
      " 5s",
      "5s ",
      "5S",
      "5sec",
      "1d",
      ".5s",
      "5.s",
      "1e3ms",
      "+5s",
      "Infinity",
      "0x10s",
      "5s5s",
    ]
  ) {
    const err = assertThrows(() => parseDuration(junk), DurationError, undefined, junk);
    assertEquals(err.text, junk);
  }
});

Deno.test("parseDuration rejects a fraction of a millisecond", () => {
  assertThrows(() => parseDuration("0.5ms"), DurationError, "whole number of milliseconds");
  assertThrows(() => parseDuration("1.0001s"), DurationError, "whole number of milliseconds");
});

Deno.test("formatDuration picks the unit that reads naturally", () => {
  assertEquals(formatDuration(250), "250ms");
  assertEquals(formatDuration(1_000), "1s");
  assertEquals(formatDuration(1_500), "1500ms");
  assertEquals(formatDuration(5_000), "5s");
  assertEquals(formatDuration(30_000), "30s");
  assertEquals(formatDuration(60_000), "60s");
  assertEquals(formatDuration(90_000), "90s");
  assertEquals(formatDuration(120_000), "2m");
  assertEquals(formatDuration(1_800_000), "30m");
  assertEquals(formatDuration(3_600_000), "60m");
  assertEquals(formatDuration(7_200_000), "2h");
  assertEquals(formatDuration(0), "0");
});

Deno.test("formatDuration output parses back to the same milliseconds", () => {
  for (
    const ms of [
      0,
      1,
      59,
      60,
      61,
      999,
      1_000,
      1_001,
      60_000,
      61_000,
      3_600_000,
      86_400_000,
      MAX_DURATION_MS,
    ]
  ) {
    assertEquals(parseDuration(formatDuration(ms)), ms, `${ms}ms`);
  }
});

Deno.test("formatDuration rejects negative and non-finite numbers", () => {
  assertThrows(() => formatDuration(-1), RangeError);
  assertThrows(() => formatDuration(Number.NaN), RangeError);
  assertThrows(() => formatDuration(Number.POSITIVE_INFINITY), RangeError);
});
