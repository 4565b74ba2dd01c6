/**
 * Resets (RST) on either side close both sides of the session and discard the upstream
 * connection. Deno cannot send a reset, so the resetting peer is a small Python program
 * (`_rst_peer.py`); the test is skipped, with the reason, where python3 is missing.
 */

import { assert, assertEquals, assertNotEquals } from "./_assert.ts";
import {
  closeQuietly,
  connect,
  decoder,
  echo,
  encoder,
  eventually,
  readToEnd,
  startProxy,
  TestUpstream,
  within,
  writeAll,
} from "./_net.ts";
import { havePython, RST_PEER, startResettingUpstream } from "./_faults.ts";

const python = havePython();
const skipReason = python ? "" : " (skipped: python3 not found, needed to send a reset)";
if (!python) console.log(`reset_test: skipped: python3 not found, needed to send a reset`);

Deno.test({
  name: `a reset from the upstream closes the client and discards the connection${skipReason}`,
  ignore: !python,
  fn: async () => {
    await using peer = await startResettingUpstream();
    await using proxy = startProxy(peer.address, { pool: "reuse" });
    const client = await connect(proxy.address);
    try {
      const got = await within(client, 3_000, async () => {
        await writeAll(client, encoder.encode("hello"));
        return await readToEnd(client).catch(() => new Uint8Array());
      });
      assertEquals(got.length, 0);
    } finally {
      closeQuietly(client);
    }
    await proxy.sessionsEnded(1);
    assertEquals(proxy.sessions[0].end, "server-error");
    assert(proxy.sessions[0].error?.includes("reset"), proxy.sessions[0].error);
    assertNotEquals(proxy.sessions[0].release, "pooled");
    assertEquals(proxy.server.pool.stats.idle, 0);
  },
});

Deno.test({
  name: `a reset from the client closes the upstream connection instead of pooling it${skipReason}`,
  ignore: !python,
  fn: async () => {
    let upstreamEnded = false;
    const upstream = new TestUpstream(async (conn) => {
      await echo(conn).catch(() => {});
      upstreamEnded = true;
    });
    const proxy = startProxy(upstream.address, { pool: "reuse" });
    try {
      // The client's last bytes ("ping") are answered, then it resets instead of closing.
      const output = await new Deno.Command("python3", {
        args: [RST_PEER, "client", String(proxy.address.port)],
        stdout: "piped",
        stderr: "piped",
      }).output();
      assertEquals(decoder.decode(output.stdout).trim(), "ping", decoder.decode(output.stderr));
      await proxy.sessionsEnded(1);
      assertEquals(proxy.sessions[0].end, "client-error");
      assertNotEquals(proxy.sessions[0].release, "pooled");
      await eventually(() => upstreamEnded, 2_000, "the upstream connection was closed");
      assertEquals(proxy.server.pool.stats.idle, 0);
    } finally {
      await proxy.close();
      await upstream.close();
    }
  },
});
