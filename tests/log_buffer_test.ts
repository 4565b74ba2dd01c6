/**
 * The queue in front of stderr (`src/log_buffer.ts`), written to a real TCP socket whose peer
 * stops reading: writing never waits, the queue stays within its bound, what does not fit is
 * dropped and counted, and once the peer reads again everything queued arrives, followed by the
 * notice of the drops. The end-to-end case (a proxy whose stderr nobody reads) is in
 * `logging_test.ts`.
 */

import { assert, assertEquals } from "./_assert.ts";
import { closeQuietly, delay, readExactly } from "./_net.ts";
import { LogBuffer } from "../src/log_buffer.ts";

/** A connected pair on loopback: `writer` is what the buffer writes to, `reader` its peer. */
async function socketPair(): Promise<{ writer: Deno.Conn; reader: Deno.Conn } & Disposable> {
  using listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const [writer, reader] = await Promise.all([
    Deno.connect({ hostname: "127.0.0.1", port: listener.addr.port }),
    listener.accept(),
  ]);
  return {
    writer,
    reader,
    [Symbol.dispose]() {
      closeQuietly(writer);
      closeQuietly(reader);
    },
  };
}

Deno.test("LogBuffer: a target that takes nothing never holds the writer up; past the bound lines are dropped and counted, the rest arrive in order, then the notice", async () => {
  using pair = await socketPair();
  const notices: number[] = [];
  const buffer = new LogBuffer(pair.writer, 64 * 1024, (count) => {
    notices.push(count);
    return new TextEncoder().encode(`dropped ${count}\n`);
  });
  const line = (i: number) => new TextEncoder().encode(`${String(i).padStart(99, "0")}\n`);
  // 200,000 lines of 100 bytes (20 MB) in batches, with turns of the event loop between for the
  // writes: far more than the socket's buffers take, and the reader reads nothing.
  const total = 200_000;
  let longest = 0;
  for (let i = 0; i < total; i += 500) {
    const started = performance.now();
    for (let k = i; k < i + 500; k++) buffer.write(line(k));
    longest = Math.max(longest, performance.now() - started);
    assert(buffer.queuedBytes <= 64 * 1024, `queued ${buffer.queuedBytes}`);
    await delay(0);
  }
  assert(longest < 500, `a batch of writes waited ${Math.round(longest)} ms for the target`);
  const dropped = buffer.dropped;
  assert(dropped > total / 2, `dropped ${dropped}`);
  assertEquals(notices, []); // not while the target is stuck
  // The reader reads again: what was kept arrives whole, in order, then the notice.
  const flushed = buffer.flush(10_000);
  const kept = total - dropped;
  const text = new TextDecoder().decode(await readExactly(pair.reader, kept * 100));
  const numbers = text.trimEnd().split("\n").map(Number);
  assertEquals(numbers.length, kept);
  for (let i = 1; i < numbers.length; i++) assert(numbers[i] > numbers[i - 1], "in order");
  assertEquals(numbers[0], 0);
  const notice = `dropped ${dropped}\n`;
  assertEquals(new TextDecoder().decode(await readExactly(pair.reader, notice.length)), notice);
  await flushed;
  assertEquals(notices, [dropped]);
  assertEquals(buffer.queuedBytes, 0);
});

Deno.test("LogBuffer: flush gives up after its timeout while the target takes nothing", async () => {
  using pair = await socketPair();
  const buffer = new LogBuffer(pair.writer, 16 * 1024 * 1024);
  const chunk = new Uint8Array(1024 * 1024);
  for (let i = 0; i < 12; i++) buffer.write(chunk);
  const started = performance.now();
  await buffer.flush(300);
  const waited = performance.now() - started;
  assert(waited >= 250 && waited < 2_000, `waited ${Math.round(waited)} ms`);
  // Let the pending write end, for the sanitizers.
  closeQuietly(pair.reader);
  await buffer.flush(5_000);
});

Deno.test("LogBuffer: a target that fails (its peer gone) loses what is queued and every later line, counted; nothing throws", async () => {
  using pair = await socketPair();
  const buffer = new LogBuffer(pair.writer, 16 * 1024 * 1024);
  pair.reader.close();
  const chunk = new Uint8Array(256 * 1024);
  // The first writes may land in the kernel before the reset is seen; later ones fail.
  for (let i = 0; i < 20 && buffer.dropped === 0; i++) {
    buffer.write(chunk);
    await buffer.flush(2_000);
  }
  assert(buffer.dropped > 0, "a failed write counts what it lost");
  const before = buffer.dropped;
  buffer.write(new Uint8Array(10));
  assertEquals(buffer.dropped, before + 1);
  assertEquals(buffer.queuedBytes, 0);
});

/** A target that fails its first writes as `errors` says, then takes everything. */
function failingTarget(errors: Error[], written: string[], partial = 0) {
  return {
    write(bytes: Uint8Array): Promise<number> {
      const error = errors.shift();
      if (error !== undefined) {
        // A partial write first, as a full disk takes what fits.
        if (partial > 0 && bytes.length > partial) {
          written.push(new TextDecoder().decode(bytes.subarray(0, partial)));
          const taken = partial;
          partial = 0;
          errors.unshift(error); // the rest of it fails
          return Promise.resolve(taken);
        }
        return Promise.reject(error);
      }
      written.push(new TextDecoder().decode(bytes));
      return Promise.resolve(bytes.length);
    },
  };
}

Deno.test("LogBuffer: a write that fails for a while (a full disk) drops its lines and writing goes on; one notice, after a write that worked, counts them all", async () => {
  // Found by review: any failed write turned logging off for good; then each notice, itself
  // dropped while the disk was full, set off another (ten a second), and the one that got
  // through said "1".
  const written: string[] = [];
  const full = () => new Error("No space left on device (os error 28)");
  const target = failingTarget([full(), full(), full()], written);
  const buffer = new LogBuffer(
    target,
    1024,
    (count) => new TextEncoder().encode(`dropped ${count}\n`),
  );
  for (let i = 0; i < 5; i++) {
    buffer.write(new TextEncoder().encode(`line ${i}\n`));
    await buffer.flush(2_000);
  }
  assertEquals(buffer.dropped, 3);
  assertEquals(written.join(""), "line 3\ndropped 3\nline 4\n");
});

Deno.test("LogBuffer: a write that would block (a full non-blocking pipe) loses nothing: the rest goes after a pause", async () => {
  // Found by review: EAGAIN dropped whole chunks of up to 64 KiB while the queue had room.
  const written: string[] = [];
  const blocked = () => new Deno.errors.WouldBlock("Resource temporarily unavailable");
  const target = failingTarget([blocked(), blocked()], written);
  const buffer = new LogBuffer(target, 1024);
  buffer.write(new TextEncoder().encode("one\n"));
  buffer.write(new TextEncoder().encode("two\n"));
  await buffer.flush(2_000);
  assertEquals(buffer.dropped, 0);
  assertEquals(written.join(""), "one\ntwo\n");
});

Deno.test("LogBuffer: a line cut short by a failed write is ended before the next, never glued to it", async () => {
  // Found by review: "... up 9B 2026-11-26T15:45:16.622Z [DBG] ..." after a partial write.
  const written: string[] = [];
  const full = new Error("No space left on device (os error 28)");
  const target = failingTarget([full], written, 3);
  const buffer = new LogBuffer(target, 1024);
  buffer.write(new TextEncoder().encode("first line\n"));
  await buffer.flush(2_000);
  buffer.write(new TextEncoder().encode("second line\n"));
  await buffer.flush(2_000);
  assertEquals(written.join("").split("\n"), ["fir", "second line", ""]);
});

Deno.test("LogBuffer: a line longer than the bound goes out when nothing is queued", async () => {
  // Found by review: --log-buffer 100 dropped the start-up line, and 1 dropped every line.
  using pair = await socketPair();
  const buffer = new LogBuffer(pair.writer, 10);
  const line = new TextEncoder().encode(`${"x".repeat(99)}\n`);
  buffer.write(line);
  buffer.write(line); // queued behind the first: over the bound, dropped
  assertEquals(buffer.dropped, 1);
  assertEquals((await readExactly(pair.reader, 100)).length, 100);
  await buffer.flush(2_000);
});
