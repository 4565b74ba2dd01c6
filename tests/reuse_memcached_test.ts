/**
 * Exact reuse with `--protocol memcached`, through an in-process proxy in front of a real
 * memcached started by the test (ignored, with the reason, where memcached is not installed):
 * complete exchanges are pooled, quiet batches count only once settled by `mn`, answers a client
 * left are drained or the connection closed, and the binary protocol is relayed but never pooled.
 */

import { assertEquals, assertLess, assertNotEquals } from "./_assert.ts";
import {
  closeQuietly,
  connect,
  decoder,
  delay,
  encoder,
  readExactly,
  readToEnd,
  startProxy,
  type TestProxy,
  within,
  writeAll,
} from "./_net.ts";
import type { HostPort } from "../src/address.ts";
import { captureLog } from "./_log.ts";

function findMemcached(): string | undefined {
  try {
    const out = new Deno.Command("sh", { args: ["-c", "command -v memcached"], stderr: "null" })
      .outputSync();
    const path = decoder.decode(out.stdout).trim();
    return out.success && path !== "" ? path : undefined;
  } catch {
    return undefined;
  }
}

const MEMCACHED = findMemcached();
const ignored = MEMCACHED === undefined ? " (ignored: memcached not found)" : "";

/** A memcached on a free loopback port, with `extraArgs`, stopped by its handle. */
async function startMemcached(extraArgs: string[] = []): Promise<
  { address: HostPort; [Symbol.asyncDispose](): Promise<void> }
> {
  const probe = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = probe.addr.port;
  probe.close();
  const child = new Deno.Command(MEMCACHED!, {
    // -u: memcached refuses to run as root without it (and ignores it otherwise).
    args: [
      ...["-p", String(port), "-l", "127.0.0.1", "-U", "0", "-m", "64", "-t", "1", "-u", "nobody"],
      ...extraArgs,
    ],
    stdin: "null",
    stdout: "null",
    stderr: "null",
  }).spawn();
  const address = { hostname: "127.0.0.1", port };
  for (let i = 0; i < 100; i++) {
    try {
      closeQuietly(await Deno.connect(address));
      break;
    } catch {
      await delay(20);
    }
  }
  return {
    address,
    [Symbol.asyncDispose]: async () => {
      try {
        child.kill("SIGTERM");
      } catch {
        // it has exited already
      }
      await child.status;
    },
  };
}

/** memcached's own count of connections opened since it started (`stats` `total_connections`). */
async function totalConnections(address: HostPort): Promise<number> {
  const conn = await connect(address);
  try {
    return await within(conn, 3_000, async () => {
      await writeAll(conn, encoder.encode("stats\r\n"));
      let text = "";
      const buffer = new Uint8Array(16 * 1024);
      while (!text.includes("END\r\n")) {
        const n = await conn.read(buffer);
        if (n === null) break;
        text += decoder.decode(buffer.subarray(0, n));
      }
      return Number(/STAT total_connections (\d+)/.exec(text)?.[1]);
    });
  } finally {
    closeQuietly(conn);
  }
}

/** One client: sends `request`, reads `expected.length` bytes, closes; waits for its session. */
async function exchange(proxy: TestProxy, request: string, expected: string): Promise<string> {
  const ended = proxy.sessions.length;
  const client = await connect(proxy.address);
  try {
    return await within(client, 5_000, async () => {
      await writeAll(client, encoder.encode(request));
      return decoder.decode(await readExactly(client, encoder.encode(expected).length));
    });
  } finally {
    closeQuietly(client);
    await proxy.sessionsEnded(ended + 1);
  }
}

function test(name: string, fn: () => Promise<void>): void {
  Deno.test({ name: `${name}${ignored}`, ignore: MEMCACHED === undefined, fn });
}

test("memcached: set and get through reuse use one upstream connection for many clients", async () => {
  await using server = await startMemcached();
  await using proxy = startProxy(server.address, { pool: "reuse", protocol: "memcached" });
  const before = await totalConnections(server.address);
  assertEquals(await exchange(proxy, "set k 0 0 5\r\nhello\r\n", "STORED\r\n"), "STORED\r\n");
  for (let i = 0; i < 10; i++) {
    const answer = "VALUE k 0 5\r\nhello\r\nEND\r\n";
    assertEquals(await exchange(proxy, "get k\r\n", answer), answer);
  }
  assertEquals(proxy.sessions.every((s) => s.release === "pooled"), true);
  // One for the proxy's connection, one for this stats call.
  assertEquals(await totalConnections(server.address) - before, 2);
});

test("memcached: a quiet batch ended by mn is settled and pooled; without mn it is not", async () => {
  await using server = await startMemcached();
  await using proxy = startProxy(server.address, { pool: "reuse", protocol: "memcached" });
  // Quiet sets answer nothing on success; mn answers MN after everything before it.
  const batch = "ms a 1 q\r\n1\r\nms b 1 q\r\n2\r\nmn\r\n";
  assertEquals(await exchange(proxy, batch, "MN\r\n"), "MN\r\n");
  assertEquals(proxy.sessions[0].release, "pooled");
  // A quiet get that misses answers nothing; with no mn after it, its answer may still come.
  const client = await connect(proxy.address);
  try {
    await writeAll(client, encoder.encode("mg missing v q\r\n"));
    await delay(50);
  } finally {
    closeQuietly(client);
  }
  await proxy.sessionsEnded(2);
  assertNotEquals(proxy.sessions[1].release, "pooled");
});

test("memcached: a watch hidden behind a NUL never reaches the next client: the connection is closed, and the next version is answered", async () => {
  await using server = await startMemcached();
  await using proxy = startProxy(server.address, { pool: "reuse", protocol: "memcached" });
  // memcached runs `watch` (the line is cut at the NUL) and answers OK: a log stream follows.
  assertEquals(await exchange(proxy, "watch\0\r\n", "OK\r\n"), "OK\r\n");
  assertNotEquals(proxy.sessions[0].release, "pooled");
  // Through the watching connection, version would get no answer.
  assertEquals(await exchange(proxy, "version\r\n", "VERSION "), "VERSION ");
});

test("memcached: a client that reads the start of a large value and leaves never passes its tail on", async () => {
  await using server = await startMemcached();
  await using proxy = startProxy(server.address, { pool: "reuse", protocol: "memcached" });
  const value = "v".repeat(512 * 1024);
  assertEquals(
    await exchange(proxy, `set big 0 0 ${value.length}\r\n${value}\r\n`, "STORED\r\n"),
    "STORED\r\n",
  );
  const client = await connect(proxy.address);
  try {
    await within(client, 3_000, async () => {
      await writeAll(client, encoder.encode("get big\r\n"));
      await readExactly(client, 100);
    });
  } finally {
    closeQuietly(client);
  }
  await proxy.sessionsEnded(2);
  for (let i = 0; i < 5; i++) {
    assertEquals(await exchange(proxy, "version\r\n", "VERSION "), "VERSION ");
  }
});

test("memcached: a client's quit is not passed on: the connection serves the next client (libmemcached sends quit)", async () => {
  await using server = await startMemcached();
  await using proxy = startProxy(server.address, { pool: "reuse", protocol: "memcached" });
  const before = await totalConnections(server.address);
  for (let i = 0; i < 10; i++) {
    const client = await connect(proxy.address);
    try {
      const got = await within(client, 3_000, async () => {
        await writeAll(client, encoder.encode(`set q${i} 0 0 1\r\n${i % 10}\r\n`));
        await readExactly(client, 8); // STORED
        await writeAll(client, encoder.encode("quit\r\n"));
        return await readToEnd(client); // memcached closes at once, answering nothing
      });
      assertEquals(got.length, 0);
    } finally {
      closeQuietly(client);
    }
    await proxy.sessionsEnded(i + 1);
    assertEquals(proxy.sessions[i].release, "pooled");
  }
  // One for the proxy's connection, one for this stats call.
  assertEquals(await totalConnections(server.address) - before, 2);
});

/** One binary-protocol client through `proxy`: a "version" request, and a binary response. */
async function binaryVersion(proxy: TestProxy): Promise<void> {
  // Magic 0x80, opcode 0x0b, no key, no extras, no body.
  const request = new Uint8Array(24);
  request[0] = 0x80;
  request[1] = 0x0b;
  const client = await connect(proxy.address);
  try {
    const header = await within(client, 3_000, async () => {
      await writeAll(client, request);
      return await readExactly(client, 24);
    });
    assertEquals(header[0], 0x81, "a binary response came back");
  } finally {
    closeQuietly(client);
  }
}

test("memcached: the binary protocol is relayed byte for byte and never pooled", async () => {
  await using server = await startMemcached();
  await using proxy = startProxy(server.address, { pool: "reuse", protocol: "memcached" });
  await binaryVersion(proxy);
  await proxy.sessionsEnded(1);
  assertNotEquals(proxy.sessions[0].release, "pooled");
});

test("memcached: a binary client is given a fresh connection, and the text connection it was first given stays pooled", async () => {
  await using server = await startMemcached();
  await using proxy = startProxy(server.address, { pool: "reuse", protocol: "memcached" });
  const before = await totalConnections(server.address);
  const version = (await exchange(proxy, "version\r\n", "VERSION ")).length;
  assertEquals(version, 8);
  await binaryVersion(proxy);
  await proxy.sessionsEnded(2);
  assertEquals(proxy.sessions[1].retried, true, "swapped for a fresh connection");
  const answer = "VALUE k 0 1\r\nv\r\nEND\r\n";
  assertEquals(
    await exchange(proxy, "set k 0 0 1\r\nv\r\nget k\r\n", `STORED\r\n${answer}`),
    `STORED\r\n${answer}`,
  );
  assertEquals(proxy.sessions[2].source, "pool");
  // The text connection, the binary client's own, and this stats call.
  assertEquals(await totalConnections(server.address) - before, 3);
});

test("memcached: noreply without a later mn is never taken as settled", async () => {
  await using server = await startMemcached();
  await using proxy = startProxy(server.address, { pool: "reuse", protocol: "memcached" });
  const answer = "VALUE n 0 1\r\n1\r\nEND\r\n";
  assertEquals(await exchange(proxy, "set n 0 0 1 noreply\r\n1\r\nget n\r\n", answer), answer);
  assertNotEquals(proxy.sessions[0].release, "pooled");
  // With mn after it, the same is settled.
  assertEquals(await exchange(proxy, "set n 0 0 1 noreply\r\n2\r\nmn\r\n", "MN\r\n"), "MN\r\n");
  assertEquals(proxy.sessions[1].release, "pooled");
});

test("memcached -Y: a connection a client logged in on is never pooled; the next client must log in itself", async () => {
  // memcached's ASCII authentication: a login is a `set` whose value is "user password".
  const dir = await Deno.makeTempDir();
  const authFile = `${dir}/auth`;
  await Deno.writeTextFile(authFile, "alice:s3cret\n");
  await Deno.chmod(dir, 0o755);
  await Deno.chmod(authFile, 0o644); // memcached reads it as nobody
  try {
    await using server = await startMemcached(["-Y", authFile]);
    const lines = await captureLog(() => clientsOfLoggedInServer(server.address));
    const warnings = lines.filter((l) => l.includes("asks each connection for a login"));
    assertEquals(warnings.length, 1, lines.join("\n"));
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

test("memcached -Y: a client that leaves with answers owed on a connection that asks for a login is not drained: it is closed at once", async () => {
  const dir = await Deno.makeTempDir();
  const authFile = `${dir}/auth`;
  await Deno.writeTextFile(authFile, "alice:s3cret\n");
  await Deno.chmod(dir, 0o755);
  await Deno.chmod(authFile, 0o644);
  try {
    await using server = await startMemcached(["-Y", authFile]);
    await using proxy = startProxy(server.address, {
      pool: "reuse",
      protocol: "memcached",
      reuseDrainTimeoutMs: 5_000,
    });
    // Not logged in, memcached answers the first of these and never the second.
    const refused = "CLIENT_ERROR unauthenticated\r\n";
    assertEquals(await exchange(proxy, "version\r\nversion\r\n", refused), refused);
    assertNotEquals(proxy.sessions[0].release, "pooled");
    // Drained, it would have waited the 5 s of --reuse-drain-timeout for the second answer.
    assertLess(proxy.sessions[0].durationMs, 2_000);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

/** Three clients through reuse in front of a memcached -Y (user alice), for the test above. */
async function clientsOfLoggedInServer(address: HostPort): Promise<void> {
  {
    await using proxy = startProxy(address, { pool: "reuse", protocol: "memcached" });
    const login = "set login 0 0 12\r\nalice s3cret\r\n";
    const stored = "STORED\r\nSTORED\r\n";
    assertEquals(
      await exchange(proxy, `${login}set data 0 0 6\r\nsecret\r\n`, stored),
      stored,
    );
    assertNotEquals(proxy.sessions[0].release, "pooled");
    // The next client did not log in: it must not be served as alice.
    const refused = "CLIENT_ERROR unauthenticated\r\n";
    assertEquals(await exchange(proxy, "get data\r\n", refused), refused);
    // And one that logs in is served (its login is a login, not an item).
    const answer = "STORED\r\nVALUE data 0 6\r\nsecret\r\nEND\r\n";
    assertEquals(await exchange(proxy, `${login}get data\r\n`, answer), answer);
    assertNotEquals(proxy.sessions[2].release, "pooled");
  }
}

/** A binary-protocol request: the 24-byte header, then extras, key and value. */
function binaryRequest(
  opcode: number,
  key: string,
  extras: Uint8Array,
  value: Uint8Array,
): Uint8Array {
  const keyBytes = encoder.encode(key);
  const body = extras.length + keyBytes.length + value.length;
  const out = new Uint8Array(24 + body);
  const view = new DataView(out.buffer);
  out[0] = 0x80;
  out[1] = opcode;
  view.setUint16(2, keyBytes.length);
  out[4] = extras.length;
  view.setUint32(8, body);
  out.set(extras, 24);
  out.set(keyBytes, 24 + extras.length);
  out.set(value, 24 + extras.length + keyBytes.length);
  return out;
}

test("memcached: a binary client that half-closes gets its whole answer (the tracker gave up; the session does not end early)", async () => {
  await using server = await startMemcached();
  await using proxy = startProxy(server.address, { pool: "reuse", protocol: "memcached" });
  const value = "b".repeat(1024);
  assertEquals(
    await exchange(proxy, `set bin 0 0 ${value.length}\r\n${value}\r\n`, "STORED\r\n"),
    "STORED\r\n",
  );
  const client = await connect(proxy.address);
  try {
    const got = await within(client, 3_000, async () => {
      await writeAll(client, binaryRequest(0x00, "bin", new Uint8Array(), new Uint8Array()));
      await client.closeWrite();
      return await readToEnd(client);
    });
    // 24-byte header, 4 bytes of flags, then the value.
    assertEquals(got.length, 24 + 4 + 1024);
  } finally {
    closeQuietly(client);
  }
});

test("memcached: bytes that look like quit inside a binary request are passed on, not taken for a goodbye", async () => {
  await using server = await startMemcached();
  await using proxy = startProxy(server.address, { pool: "reuse", protocol: "memcached" });
  // A binary SET whose value, "quit\r\n", arrives as a chunk of its own.
  const request = binaryRequest(0x01, "k", new Uint8Array(8), encoder.encode("quit\r\n"));
  const client = await connect(proxy.address);
  try {
    const status = await within(client, 3_000, async () => {
      await writeAll(client, request.subarray(0, request.length - 6));
      await delay(50);
      await writeAll(client, request.subarray(request.length - 6));
      const header = await readExactly(client, 24);
      return new DataView(header.buffer).getUint16(6);
    });
    assertEquals(status, 0, "the SET succeeded");
  } finally {
    closeQuietly(client);
  }
});
