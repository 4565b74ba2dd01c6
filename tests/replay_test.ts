/**
 * The replay buffer (src/replay.ts): its copies are its own, its cursor, its limit, and the shared
 * store that large chunks are kept in and that `drop` gives back.
 */

import { assert, assertEquals, assertFalse } from "./_assert.ts";
import {
  freeReplayStores,
  REPLAY_LIMIT,
  REPLAY_MAX_CHUNKS,
  ReplayBuffer,
  STORE_MIN_CHUNK,
} from "../src/replay.ts";

function filled(length: number, byte: number): Uint8Array {
  return new Uint8Array(length).fill(byte);
}

/** Every kept chunk from the cursor on, as `nextUnsent` and `advance` hand them out. */
function unsent(replay: ReplayBuffer): Uint8Array[] {
  const out: Uint8Array[] = [];
  for (let chunk = replay.nextUnsent(); chunk !== undefined; chunk = replay.nextUnsent()) {
    out.push(chunk.slice());
    replay.advance();
  }
  return out;
}

Deno.test("replay: small and large chunks are kept as copies, in order, and replayed from the start after restart", () => {
  const replay = new ReplayBuffer(true);
  const small = filled(10, 1);
  const large = filled(20_000, 2);
  const larger = filled(30_000, 3);
  assertEquals([replay.take(small), replay.take(large), replay.take(larger)], [1, 2, 3]);
  small.fill(9); // the caller's buffers are reused for the next reads
  large.fill(9);
  larger.fill(9);
  replay.markSent(2);
  assertEquals(unsent(replay), [filled(30_000, 3)]);
  replay.restart();
  assertEquals(unsent(replay), [filled(10, 1), filled(20_000, 2), filled(30_000, 3)]);
  replay.drop();
});

Deno.test("replay: past the limit nothing more is kept, and the replay is no longer whole", () => {
  const replay = new ReplayBuffer(true);
  replay.take(filled(REPLAY_LIMIT, 1));
  assert(replay.whole);
  replay.take(filled(1, 2));
  assertFalse(replay.whole);
  replay.restart();
  assertEquals(unsent(replay).length, 1, "what was kept stays for a replay under way");
  replay.drop();
  assertEquals(replay.nextUnsent(), undefined);
});

Deno.test("replay: a request in more chunks than the bound (a byte per segment) is not kept, and the replay is no longer whole", () => {
  const buffer = new ReplayBuffer(true);
  for (let i = 0; i < REPLAY_MAX_CHUNKS; i++) buffer.take(filled(1, 0x61));
  assert(buffer.whole, "256 one-byte chunks are kept");
  buffer.take(filled(1, 0x62));
  assertFalse(buffer.whole);
  // What was kept stays for a replay already under way; nothing more is kept.
  let kept = 0;
  for (let chunk = buffer.nextUnsent(); chunk !== undefined; chunk = buffer.nextUnsent()) {
    kept++;
    buffer.advance();
  }
  assertEquals(kept, REPLAY_MAX_CHUNKS);
  buffer.drop();
});

Deno.test("replay: a large chunk is kept in a store that drop gives back once, and the next buffer reuses it with only its own bytes", () => {
  const first = new ReplayBuffer(true);
  first.take(filled(STORE_MIN_CHUNK, 1));
  const firstStore = first.nextUnsent()!.buffer;
  first.advance(); // its write is done
  const free = freeReplayStores();
  first.drop();
  first.drop(); // idempotent: given back once
  assertEquals(freeReplayStores(), free + 1);

  const second = new ReplayBuffer(true);
  second.take(filled(STORE_MIN_CHUNK + 100, 2));
  const kept = second.nextUnsent()!.slice();
  assert(second.nextUnsent()!.buffer === firstStore, "no fresh ArrayBuffer for a large request");
  second.advance();
  assertEquals(freeReplayStores(), free);
  assertEquals(kept, filled(STORE_MIN_CHUNK + 100, 2));
  second.drop();
  assertEquals(freeReplayStores(), free + 1);
});

Deno.test("replay: small chunks and a buffer that keeps nothing take no store", () => {
  const before = freeReplayStores();
  const small = new ReplayBuffer(true);
  small.take(filled(STORE_MIN_CHUNK - 1, 1));
  assertEquals(freeReplayStores(), before);
  small.drop();
  assertEquals(freeReplayStores(), before, "nothing to give back");
  const none = new ReplayBuffer(false);
  none.take(filled(20_000, 1));
  assertEquals(none.nextUnsent(), undefined);
  none.drop();
  assertEquals(freeReplayStores(), before);
});

Deno.test("replay: a store whose chunk was handed out and not advanced past (a write may still use it) never goes back to the free list", () => {
  const first = new ReplayBuffer(true);
  first.take(filled(STORE_MIN_CHUNK, 1));
  first.restart();
  const inWrite = first.nextUnsent()!; // handed to a write that has not finished
  const free = freeReplayStores();
  first.drop(); // a caller that broke the contract
  assertEquals(freeReplayStores(), free, "not given back");
  const second = new ReplayBuffer(true);
  second.take(filled(STORE_MIN_CHUNK, 2));
  assertEquals(
    inWrite,
    filled(STORE_MIN_CHUNK, 1),
    "the bytes in the write stay the first client's",
  );
  second.drop();
});
