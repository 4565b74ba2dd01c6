/**
 * The read policy (src/_io.ts ReadBuffers), on real loopback sockets: an answer of up to 64 KiB
 * already waiting is read in two reads (so relayed in two writes), a quiet direction holds only its
 * small buffer, and shared large buffers never carry one read's bytes into another's.
 */

import { assert, assertEquals } from "./_assert.ts";
import { BURST_READ_BUFFER, MIN_READ_BUFFER, ReadBuffers } from "../src/_io.ts";
import { closeQuietly, connect, delay, patternBytes, TestUpstream, writeAll } from "./_net.ts";

/**
 * Has the upstream write `size` bytes at once, waits until they are all in the client's kernel
 * buffer, then reads them with the policy; returns the sizes of the reads and what was read.
 */
async function readBurst(size: number, buffers = new ReadBuffers()): Promise<{
  reads: number[];
  bytes: Uint8Array;
}> {
  const sent = patternBytes(size, size);
  await using upstream = new TestUpstream(async (conn) => {
    await writeAll(conn, sent);
    await conn.read(new Uint8Array(1)); // holds the connection open until the client closes
  });
  const client = await connect(upstream.address);
  const reads: number[] = [];
  const bytes = new Uint8Array(size);
  try {
    await delay(50); // the whole answer is waiting in the kernel
    let got = 0;
    while (got < size) {
      const n = await client.read(buffers.current);
      if (n === null) break;
      bytes.set(buffers.current.subarray(0, n), got);
      got += n;
      reads.push(n);
      buffers.rotate(n); // the "write" of each chunk is done at once here
    }
  } finally {
    closeQuietly(client);
  }
  assert(bytes.every((b, i) => b === sent[i]), "the bytes arrive unchanged");
  return { reads, bytes };
}

for (const size of [1024, 5632, 20 * 1024, 64 * 1024]) {
  Deno.test(`an answer of ${size} bytes waiting to be read takes at most two reads`, async () => {
    const { reads } = await readBurst(size);
    assert(reads.length <= 2, `reads: ${reads.join(", ")}`);
    if (size > MIN_READ_BUFFER) assertEquals(reads[0], MIN_READ_BUFFER);
  });
}

Deno.test("after a burst, a quiet direction goes back to its small buffer", async () => {
  const buffers = new ReadBuffers();
  // 256 bytes fill the small buffer; the other 5,376 go into a 64 KiB one, under an eighth of
  // it: the burst is over, and the next read (an idle session's pending read) uses 256 bytes.
  const { reads } = await readBurst(5632, buffers);
  assertEquals(reads, [MIN_READ_BUFFER, 5632 - MIN_READ_BUFFER]);
  assertEquals(buffers.current.length, MIN_READ_BUFFER);
  // A stream that keeps filling its buffers grows to the large sizes and stays there.
  const busy = new ReadBuffers();
  assertEquals(busy.rotate(MIN_READ_BUFFER), false, "a full read does not wait for its write");
  assertEquals(busy.current.length, BURST_READ_BUFFER);
  assertEquals(busy.rotate(BURST_READ_BUFFER), false);
  assertEquals(busy.current.length, 256 * 1024);
  assertEquals(busy.rotate(100), true, "a small read ends the burst and waits for its write");
  assertEquals(busy.current.length, MIN_READ_BUFFER);
});

Deno.test("a large buffer given back is reused by another direction without carrying old bytes into its reads", async () => {
  const first = await readBurst(30_000);
  const second = await readBurst(12_345);
  // Each read only ever hands out the bytes it read (readBurst checks them against the source).
  assertEquals(first.bytes.length, 30_000);
  assertEquals(second.bytes.length, 12_345);
});
