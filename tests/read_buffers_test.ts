/**
 * The read policy (src/_io.ts ReadBuffers), on real loopback sockets: an answer of up to 64 KiB
 * already waiting is read in two reads and handed on as one chunk (so relayed in one write), a quiet
 * direction holds only its small buffer, a read waiting for the rest of a burst counts on the parked
 * budget, and shared large buffers never carry one read's bytes into another's.
 */

import { assert, assertEquals } from "./_assert.ts";
import {
  BURST_READ_BUFFER,
  DEFAULT_READ_AHEAD_MEMORY,
  FIRST_READS_PARKED,
  FreeBuffers,
  keptBurstBuffers,
  MAX_READ_BUFFER,
  MIN_READ_BUFFER,
  PARKED_BURST_BUFFERS,
  parkedBurstBuffers,
  READ_AHEAD_PER_DIRECTION,
  readAheadInUse,
  ReadBuffers,
  readConn,
  setReadAheadMemory,
  usesRuntimeOps,
  writeConn,
} from "../src/_io.ts";
import {
  closeQuietly,
  connect,
  delay,
  echo,
  patternBytes,
  readExactly,
  startProxy,
  TestUpstream,
  within,
  writeAll,
} from "./_net.ts";

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
    buffers.dispose();
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

/**
 * Has the upstream write `parts` (waiting `pauseMs` between them), and reads them with
 * `ReadBuffers.read` as a relay does; returns the chunks, each of which a relay writes in one
 * write.
 */
async function readChunks(parts: Uint8Array[], pauseMs = 0): Promise<Uint8Array[]> {
  await using upstream = new TestUpstream(async (conn) => {
    for (const [i, part] of parts.entries()) {
      if (i > 0) await delay(pauseMs);
      await writeAll(conn, part);
    }
    conn.close();
  });
  const client = await connect(upstream.address);
  const buffers = new ReadBuffers();
  const chunks: Uint8Array[] = [];
  try {
    await delay(50); // the first part is waiting in the kernel
    while (true) {
      const chunk = await buffers.read(client);
      if (chunk === null) break;
      chunks.push(chunk.slice());
      buffers.rotate(chunk.length); // the "write" of each chunk is done at once here
    }
  } finally {
    closeQuietly(client);
    buffers.dispose();
  }
  return chunks;
}

function concat(parts: Uint8Array[]): Uint8Array {
  const all = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) all.set(p, (at += p.length) - p.length);
  return all;
}

for (const size of [1024, 5632, 20 * 1024, BURST_READ_BUFFER]) {
  Deno.test(`read(): an answer of ${size} bytes already waiting comes as one chunk, so one write`, async () => {
    const sent = patternBytes(size, 7);
    const chunks = await readChunks([sent]);
    assertEquals(chunks.map((c) => c.length), [size]);
    assertEquals(chunks[0], sent);
  });
}

Deno.test("read(): a burst of exactly the small buffer is handed on at once, without waiting for bytes that have not come", async () => {
  const first = patternBytes(MIN_READ_BUFFER, 1);
  const second = patternBytes(3000, 2);
  const started = performance.now();
  const chunks = await readChunks([first, second], 300);
  assertEquals(concat(chunks), concat([first, second]), "the bytes, in order");
  assertEquals(chunks[0].length, MIN_READ_BUFFER, "the first bytes went out alone");
  assertEquals(chunks.length, 2, "the rest, read behind them, is the next chunk");
  assert(performance.now() - started >= 300);
});

Deno.test("read(): a small buffer's worth then the end of the stream, or more than 64 KiB, keeps every byte in order", async () => {
  const exact = patternBytes(MIN_READ_BUFFER, 3);
  assertEquals(concat(await readChunks([exact])), exact);
  const large = patternBytes(300_000, 4);
  const chunks = await readChunks([large]);
  assertEquals(concat(chunks), large);
  assertEquals(chunks[0].length, BURST_READ_BUFFER, "the first chunk fills a 64 KiB buffer");
});

Deno.test("after a burst, a direction keeps its 64 KiB buffer for the next read, so a keep-alive client's next answer takes one read", () => {
  const buffers = new ReadBuffers();
  // A first full read is not a stream yet: it is written before the next read, into 64 KiB.
  assertEquals(buffers.rotate(MIN_READ_BUFFER), true);
  assertEquals(buffers.current.length, BURST_READ_BUFFER);
  // 5,376 bytes: the burst is over, but the buffer stays (parked) for the next answer.
  assertEquals(buffers.rotate(5632 - MIN_READ_BUFFER), true);
  assertEquals(buffers.current.length, BURST_READ_BUFFER);
  buffers.dispose();
  // A stream that keeps filling its buffers grows to 256 KiB; a small read there ends it.
  const busy = new ReadBuffers();
  busy.rotate(busy.current.length);
  assertEquals(busy.rotate(busy.current.length), false, "the second full read in a row");
  assertEquals(busy.current.length, 256 * 1024);
  assertEquals(busy.rotate(300), true, "a read that does not fill ends the burst, and waits");
  assertEquals(busy.current.length, BURST_READ_BUFFER, "a 256 KiB buffer steps down to 64 KiB");
  // A read the small buffer would have held: nothing to keep a large buffer for.
  assertEquals(busy.rotate(MIN_READ_BUFFER), true);
  assertEquals(busy.current.length, MIN_READ_BUFFER);
  busy.dispose();
});

Deno.test("idle directions park at most PARKED_BURST_BUFFERS burst buffers in all; past it they go back to 256 bytes", () => {
  // Reads of any size over the small buffer's that do not fill the large one count: 300 bytes,
  // or 20,000 (over an eighth).
  let n = 0;
  const parkOne = () => {
    const buffers = new ReadBuffers();
    buffers.rotate(MIN_READ_BUFFER);
    buffers.rotate(n++ % 2 === 0 ? 300 : 20_000);
    return buffers;
  };
  const all = Array.from({ length: PARKED_BURST_BUFFERS + 8 }, parkOne);
  const parked = all.filter((b) => b.current.length === BURST_READ_BUFFER).length;
  assert(parked <= PARKED_BURST_BUFFERS, `${parked} parked`);
  assert(all.some((b) => b.current.length === MIN_READ_BUFFER), "past the budget: small buffers");
  for (const buffers of all) buffers.dispose();
  // Disposed directions give their places back.
  const again = parkOne();
  assertEquals(again.current.length, BURST_READ_BUFFER);
  again.dispose();
});

/** Runs `body` with the read-ahead budget set to `directions` places besides those taken now. */
async function withReadAheadPlaces(directions: number, body: () => Promise<void> | void) {
  setReadAheadMemory(readAheadInUse() + directions * READ_AHEAD_PER_DIRECTION);
  try {
    await body();
  } finally {
    setReadAheadMemory(DEFAULT_READ_AHEAD_MEMORY);
  }
}

Deno.test("read-ahead: past the process-wide budget (--read-ahead-memory), a busy direction reads into one 64 KiB buffer and waits for each write", async () => {
  await withReadAheadPlaces(2, () => {
    const before = readAheadInUse();
    // Four directions whose reads all fill their buffers (a bulk transfer).
    const busy = Array.from({ length: 4 }, () => new ReadBuffers());
    const waits = busy.map((buffers) =>
      [1, 2, 3].map(() => buffers.rotate(buffers.current.length))
    );
    // The first full read is not a stream yet; from the second, two directions read ahead.
    assertEquals(waits.slice(0, 2), [[true, false, false], [true, false, false]], "read ahead");
    assertEquals(busy[0].current.length, MAX_READ_BUFFER);
    assertEquals(waits.slice(2), [[true, true, true], [true, true, true]], "write, then read");
    assertEquals(busy[2].current.length, BURST_READ_BUFFER, "one 64 KiB buffer, no growth");
    assertEquals(readAheadInUse(), before + 2 * READ_AHEAD_PER_DIRECTION);
    // A burst that ends gives its place back; the next burst of another direction takes it.
    assertEquals(busy[0].rotate(100), true);
    assertEquals(readAheadInUse(), before + READ_AHEAD_PER_DIRECTION);
    assertEquals(busy[2].rotate(busy[2].current.length), false, "now it reads ahead");
    for (const buffers of busy) buffers.dispose();
    assertEquals(readAheadInUse(), before, "disposed directions give their places back");
  });
});

Deno.test("read-ahead: two full reads with a pause between them (two answers, not a stream) take no place", async () => {
  const before = readAheadInUse();
  const buffers = new ReadBuffers();
  assertEquals(buffers.rotate(buffers.current.length), true);
  const size = buffers.current.length; // the read starts now...
  await delay(20); // ...and its bytes come later
  assertEquals(buffers.rotate(size), true, "a new burst: written before the next read");
  assertEquals(readAheadInUse(), before);
  // Straight on, the next full read continues the streak: a stream.
  assertEquals(buffers.rotate(buffers.current.length), false);
  assertEquals(readAheadInUse(), before + READ_AHEAD_PER_DIRECTION);
  buffers.dispose();
  assertEquals(readAheadInUse(), before);
});

Deno.test("read-ahead: one answer of exactly 64 KiB, then quiet, takes no place (its next read waits in that one buffer)", async () => {
  const before = readAheadInUse();
  const sent = patternBytes(BURST_READ_BUFFER, 5);
  const done = Promise.withResolvers<void>();
  await using upstream = new TestUpstream(async (conn) => {
    await writeAll(conn, sent);
    await done.promise;
  });
  const client = await connect(upstream.address);
  const buffers = new ReadBuffers();
  try {
    await delay(50); // the whole answer is waiting in the kernel
    const chunk = await buffers.read(client);
    assertEquals(chunk, sent, "one chunk");
    assertEquals(buffers.rotate(chunk!.length), true, "written before the next read");
    assertEquals(buffers.current.length, BURST_READ_BUFFER);
    const next = buffers.next(client); // waits: the upstream is quiet
    await delay(20);
    assertEquals(readAheadInUse(), before);
    done.resolve();
    assertEquals(await next, 0, "the end of the stream");
  } finally {
    closeQuietly(client);
    buffers.dispose();
  }
});

Deno.test("read-ahead: sessions whose upstream stops reading hold at most the budget in read-ahead, and every byte arrives in order once it reads again", async () => {
  const size = 8 * 1024 * 1024; // more than the kernel's buffers take while the upstream stalls
  const sent = patternBytes(size, 11);
  let reading = false;
  const resume = Promise.withResolvers<void>();
  const received: boolean[] = [];
  await using upstream = new TestUpstream(async (conn) => {
    await resume.promise; // stalled: the proxy's writes upstream block
    const got = await readExactly(conn, size);
    received.push(got.every((b, i) => b === sent[i]));
    await writeAll(conn, new Uint8Array([1]));
  });
  await withReadAheadPlaces(1, async () => {
    await using proxy = startProxy(upstream.address, { pool: "off" });
    const clients = await Promise.all(Array.from({ length: 4 }, () => connect(proxy.address)));
    try {
      const writes = clients.map((client) => writeAll(client, sent).catch(() => {}));
      let most = 0;
      for (let i = 0; i < 20; i++) {
        await delay(10);
        most = Math.max(most, readAheadInUse());
      }
      // Never past the budget; the directions without a place read 64 KiB at a time.
      assert(most <= READ_AHEAD_PER_DIRECTION, `read-ahead ${most} bytes`);
      reading = true;
      resume.resolve();
      await Promise.all(writes);
      for (const client of clients) {
        await within(client, 10_000, () => readExactly(client, 1));
      }
    } finally {
      for (const client of clients) closeQuietly(client);
      resume.resolve(); // never leave the upstream's handlers waiting
    }
    await proxy.sessionsEnded(4);
  });
  assert(reading);
  assertEquals(received, [true, true, true, true], "every byte, in order");
});

/** Puts a 64 KiB buffer in the shared free list (a burst read and given back). */
function keepOneBurstBuffer(): void {
  const burst = new ReadBuffers();
  burst.rotate(MIN_READ_BUFFER); // a full small read: the next read goes into 64 KiB
  burst.dispose(); // ...which is given back to the list
}

Deno.test("firstReadLarge: only a kept buffer (never a new one), and at most FIRST_READS_PARKED first reads hold places", () => {
  const before = parkedBurstBuffers();
  // Drain the free list: then a first read goes into 256 bytes, with no place.
  const drained: ReadBuffers[] = [];
  while (keptBurstBuffers() > 0) drained.push(new ReadBuffers({ firstReadLarge: true }));
  const none = new ReadBuffers({ firstReadLarge: true });
  assertEquals(none.current.length, MIN_READ_BUFFER, "no new buffer when the list is empty");
  assertEquals(parkedBurstBuffers(), before + drained.length);
  none.dispose();
  for (const buffers of drained) buffers.dispose();
  // Silent clients: past FIRST_READS_PARKED, first reads take no place, whatever the list keeps.
  const silent: ReadBuffers[] = [];
  for (let i = 0; i < FIRST_READS_PARKED + 4; i++) {
    keepOneBurstBuffer();
    silent.push(new ReadBuffers({ firstReadLarge: true }));
  }
  const large = silent.filter((b) => b.current.length === BURST_READ_BUFFER).length;
  assertEquals(large, FIRST_READS_PARKED);
  assertEquals(parkedBurstBuffers(), before + FIRST_READS_PARKED);
  for (const buffers of silent) buffers.dispose();
  assertEquals(parkedBurstBuffers(), before, "places given back");
});

Deno.test("firstReadLarge: a new client's first request of 5.5 KiB, already waiting, is one read into 64 KiB; a small first request goes back to 256 bytes", async () => {
  for (const [size, after] of [[5632, BURST_READ_BUFFER], [64, MIN_READ_BUFFER]] as const) {
    const before = parkedBurstBuffers();
    const sent = patternBytes(size, size);
    await using upstream = new TestUpstream(async (conn) => {
      await writeAll(conn, sent);
      await conn.read(new Uint8Array(1)); // holds the connection open until the client closes
    });
    const client = await connect(upstream.address);
    keepOneBurstBuffer();
    const buffers = new ReadBuffers({ firstReadLarge: true });
    try {
      assertEquals(parkedBurstBuffers(), before + 1, "the pending first read is on the budget");
      await delay(50); // the request is waiting in the kernel
      const n = await buffers.next(client);
      const chunk = buffers.chunk(n!);
      assertEquals(chunk, sent, "one read, one chunk");
      assertEquals(buffers.rotate(chunk!.length), true);
      assertEquals(buffers.current.length, after);
    } finally {
      closeQuietly(client);
      buffers.dispose();
    }
    assertEquals(parkedBurstBuffers(), before, "places given back");
  }
});

Deno.test("a large buffer given back is reused by another direction without carrying old bytes into its reads", async () => {
  const first = await readBurst(30_000);
  const second = await readBurst(12_345);
  // Each read only ever hands out the bytes it read (readBurst checks them against the source).
  assertEquals(first.bytes.length, 30_000);
  assertEquals(second.bytes.length, 12_345);
});

Deno.test("sessions that read bursts give their parked places back when they end", async () => {
  const before = parkedBurstBuffers();
  await using upstream = new TestUpstream(echo);
  await using proxy = startProxy(upstream.address, { pool: "off" });
  const message = patternBytes(5632, 3);
  for (let i = 0; i < 10; i++) {
    const client = await connect(proxy.address);
    try {
      await within(client, 3_000, async () => {
        for (let j = 0; j < 3; j++) {
          await writeAll(client, message);
          await readExactly(client, message.length);
        }
      });
    } finally {
      closeQuietly(client);
    }
  }
  await proxy.sessionsEnded(10);
  await delay(50); // the upstream connections' readers see their close
  assertEquals(parkedBurstBuffers(), before);
});

Deno.test("read(): a read waiting for the rest of a burst holds a place on the parked budget; past the budget the 256 bytes go on alone, with no large buffer held", async () => {
  const before = parkedBurstBuffers();
  // A source that fills the small buffer once, then keeps its next read pending until told.
  const pending: ((n: number | null) => void)[] = [];
  const source = () => {
    let first = true;
    return {
      read(p: Uint8Array): Promise<number | null> {
        if (first) {
          first = false;
          p.fill(7);
          return Promise.resolve(p.length);
        }
        return new Promise((resolve) => pending.push(resolve));
      },
    };
  };
  const waiting: ReadBuffers[] = [];
  for (let i = before; i < PARKED_BURST_BUFFERS; i++) {
    const buffers = new ReadBuffers();
    const chunk = await buffers.read(source());
    assertEquals(chunk?.length, MIN_READ_BUFFER);
    assertEquals(chunk?.buffer.byteLength, BURST_READ_BUFFER, "the rest is read behind it");
    buffers.rotate(MIN_READ_BUFFER);
    waiting.push(buffers);
  }
  assertEquals(parkedBurstBuffers(), PARKED_BURST_BUFFERS);
  const past = new ReadBuffers();
  const alone = await past.read(source());
  assertEquals(alone?.buffer.byteLength, MIN_READ_BUFFER, "no large buffer past the budget");
  past.dispose();
  // The rests arrive (or the streams end): the places go back.
  for (const [i, resolve] of pending.entries()) resolve(i % 2 === 0 ? 10 : null);
  for (const buffers of waiting) {
    const rest = await buffers.read({ read: () => Promise.resolve(null) });
    if (rest !== null) buffers.rotate(rest.length);
    buffers.dispose();
  }
  assertEquals(parkedBurstBuffers(), before);
});

Deno.test("on this Deno, reads and writes of TCP sockets call the runtime's ops directly (a fifth less allocated per session)", () => {
  // If this fails, a Deno upgrade removed Deno[Deno.internal].core.read/write: the proxy still works
  // (it uses Deno.Conn's methods), but each read and write allocates more; see src/_io.ts.
  assert(usesRuntimeOps());
});

Deno.test("readConn and writeConn carry bytes both ways and see the end of the stream, on a Deno socket and on any other ByteConn", async () => {
  await using upstream = new TestUpstream(echo);
  const client = await connect(upstream.address);
  try {
    await within(client, 3_000, async () => {
      const sent = patternBytes(3000, 11);
      let written = 0;
      while (written < sent.length) written += await writeConn(client, sent.subarray(written));
      const got = new Uint8Array(sent.length);
      for (let at = 0; at < got.length;) {
        const n = await readConn(client, got.subarray(at));
        assert(n !== null && n > 0, "bytes, not the end");
        at += n;
      }
      assertEquals(got, sent);
      await client.closeWrite(); // the echo closes after our FIN
      // The op says 0 at the end, Deno.Conn.read null: 0 proves the direct path was taken.
      assertEquals(await readConn(client, new Uint8Array(16)), usesRuntimeOps() ? 0 : null);
    });
  } finally {
    closeQuietly(client);
  }
  // A ByteConn that is not a Deno socket (a TLS SocketConn) is read and written through its methods.
  const calls: string[] = [];
  const other = {
    read: (p: Uint8Array) => (calls.push(`read ${p.length}`), Promise.resolve(null)),
    write: (p: Uint8Array) => (calls.push(`write ${p.length}`), Promise.resolve(p.length)),
    closeWrite: () => Promise.resolve(),
    close: () => {},
  };
  assertEquals(await readConn(other, new Uint8Array(8)), null);
  assertEquals(await writeConn(other, new Uint8Array(5)), 5);
  assertEquals(calls, ["read 8", "write 5"]);
});

Deno.test("FreeBuffers: a buffer given back is the next one taken; at most max are kept, of its size only", () => {
  const free = new FreeBuffers(16, 2);
  const [a, b, c] = [free.take(), free.take(), free.take()];
  assertEquals([a.length, free.kept], [16, 0]);
  free.give(a);
  free.give(b);
  free.give(c); // no room: left to the garbage collector
  free.give(new Uint8Array(8)); // another size: never kept
  assertEquals(free.kept, 2);
  assert(free.take() === b, "the last one given back");
  assert(free.take() === a);
  assert(free.take() !== c, "a new one once none is kept");
});
