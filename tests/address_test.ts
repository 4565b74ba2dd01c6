import { AddressError, formatHostPort, type HostPort, parseHostPort } from "../src/address.ts";
import { assertEquals, assertThrows } from "./_assert.ts";

const STRICT = { allowPortZero: false };
const LISTEN = { allowPortZero: true };

Deno.test("parseHostPort reads IPv4 addresses and host names", () => {
  assertEquals(parseHostPort("127.0.0.1:8848", STRICT), { hostname: "127.0.0.1", port: 8848 });
  assertEquals(parseHostPort("localhost:80", STRICT), { hostname: "localhost", port: 80 });
  assertEquals(parseHostPort("db.internal:5432", STRICT), { hostname: "db.internal", port: 5432 });
  assertEquals(parseHostPort("my-host_1.example.com.:65535", STRICT), {
    hostname: "my-host_1.example.com.",
    port: 65535,
  });
});

Deno.test("parseHostPort reads bracketed IPv6 and drops the brackets", () => {
  assertEquals(parseHostPort("[::1]:8848", STRICT), { hostname: "::1", port: 8848 });
  assertEquals(parseHostPort("[::]:0", LISTEN), { hostname: "::", port: 0 });
  assertEquals(parseHostPort("[2001:db8::42]:443", STRICT), {
    hostname: "2001:db8::42",
    port: 443,
  });
  assertEquals(parseHostPort("[::ffff:10.0.0.1]:1", STRICT), {
    hostname: "::ffff:10.0.0.1",
    port: 1,
  });
});

Deno.test("parseHostPort asks for brackets around a bare IPv6 address", () => {
  for (const text of ["::1:80", "::1", "2001:db8::1:443"]) {
    const err = assertThrows(() => parseHostPort(text, STRICT), AddressError);
    assertEquals(
      err.message,
      `"${text}" looks like an IPv6 address without brackets; IPv6 addresses need brackets, e.g. [::1]:8848`,
    );
    assertEquals(err.text, text);
  }
});

Deno.test("parseHostPort rejects a missing port", () => {
  assertThrows(() => parseHostPort("localhost", STRICT), AddressError, "has no port");
  assertThrows(() => parseHostPort("[::1]", STRICT), AddressError, "has no port");
  assertThrows(() => parseHostPort("localhost:", STRICT), AddressError, "empty port");
  assertThrows(() => parseHostPort("[::1]:", STRICT), AddressError, "empty port");
});

Deno.test("parseHostPort rejects a port that is not a decimal integer", () => {
  for (const port of ["http", "80.5", "-1", "+80", "0x50", "8o"]) {
    assertThrows(
      () => parseHostPort(`localhost:${port}`, STRICT),
      AddressError,
      "not an integer",
      port,
    );
  }
});

Deno.test("parseHostPort rejects ports above 65535 and 0 unless allowed", () => {
  assertThrows(
    () => parseHostPort("localhost:65536", LISTEN),
    AddressError,
    "out of range; use 0 to 65535",
  );
  assertThrows(
    () => parseHostPort("localhost:99999999999999999999", STRICT),
    AddressError,
    "out of range",
  );
  assertThrows(
    () => parseHostPort("localhost:0", STRICT),
    AddressError,
    "port 0, which is not allowed here; use 1 to 65535",
  );
  assertEquals(parseHostPort("localhost:0", LISTEN).port, 0);
  assertEquals(parseHostPort("localhost:00080", STRICT).port, 80);
});

Deno.test("parseHostPort rejects an empty host, suggesting 0.0.0.0 for every interface", () => {
  assertThrows(() => parseHostPort(":8848", STRICT), AddressError, "0.0.0.0:8848");
  assertThrows(() => parseHostPort("[]:8848", STRICT), AddressError, "not an IPv6 address");
});

Deno.test("parseHostPort rejects empty text and whitespace", () => {
  assertThrows(() => parseHostPort("", STRICT), AddressError, "is empty");
  for (
    const text of [
      " localhost:80",
      "localhost:80 ",
      "local host:80",
      "localhost: 80",
      "\tlocalhost:80",
    ]
  ) {
    assertThrows(() => parseHostPort(text, STRICT), AddressError, "whitespace");
  }
});

Deno.test("parseHostPort rejects hosts that are not addresses or names", () => {
  for (
    const text of [
      "a/b:80",
      "http://x:80",
      "-host:80",
      "a..b:80",
      "256.0.0.1:80",
      "1.2.3:80",
      "h@st:80",
      "é.com:80",
    ]
  ) {
    assertThrows(() => parseHostPort(text, STRICT), AddressError, undefined, text);
  }
});

Deno.test("parseHostPort rejects malformed brackets, IPv4 in brackets and zones", () => {
  assertThrows(() => parseHostPort("[::1:8848", STRICT), AddressError, "no closing bracket");
  assertThrows(() => parseHostPort("[::1]8848", STRICT), AddressError, 'after "]"');
  assertThrows(() => parseHostPort("[127.0.0.1]:80", STRICT), AddressError, "not an IPv6 address");
  assertThrows(() => parseHostPort("[localhost]:80", STRICT), AddressError, "not an IPv6 address");
  assertThrows(
    () => parseHostPort("[1:2:3:4:5:6:7:8:9]:80", STRICT),
    AddressError,
    "not an IPv6 address",
  );
  assertThrows(() => parseHostPort("[fe80::1%eth0]:1", STRICT), AddressError, "zone");
});

Deno.test("formatHostPort brackets IPv6 and round-trips with parseHostPort", () => {
  const cases: [HostPort, string][] = [
    [{ hostname: "127.0.0.1", port: 8848 }, "127.0.0.1:8848"],
    [{ hostname: "::1", port: 8848 }, "[::1]:8848"],
    [{ hostname: "db.internal", port: 5432 }, "db.internal:5432"],
    [{ hostname: "0.0.0.0", port: 0 }, "0.0.0.0:0"],
  ];
  for (const [hp, text] of cases) {
    assertEquals(formatHostPort(hp), text);
    assertEquals(parseHostPort(text, LISTEN), hp);
  }
});
