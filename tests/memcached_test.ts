/**
 * The memcached tracker on its own: a table of exchanges, each fed whole, split at every byte
 * position, byte by byte and in seeded random pieces, all of which must agree; then large values,
 * long lines, the outstanding bound, and a check that no chunk is kept.
 */

import { assert, assertEquals, assertStringIncludes, fail } from "./_assert.ts";
import { isComplete } from "../src/framing.ts";
import { MemcachedTracker } from "../src/memcached.ts";
import { seededRandom as random, type Snapshot, snapshot } from "./_tracker.ts";

/** Bytes of `text`, one per character (so `\x80` or `\xff` are single bytes). */
function latin1(text: string): Uint8Array {
  const bytes = new Uint8Array(text.length);
  for (let i = 0; i < text.length; i++) bytes[i] = text.charCodeAt(i) & 0xff;
  return bytes;
}

/** A `VALUE` item of a get reply. */
function value(key: string, data: string, flags = 0, cas?: number): string {
  const casText = cas === undefined ? "" : ` ${cas}`;
  return `VALUE ${key} ${flags} ${data.length}${casText}\r\n${data}\r\n`;
}

/** A classic storage request: `<cmd> <key> <flags> <exptime> <bytes>[ extra]` and its data. */
function store(cmd: string, key: string, data: string, extra = ""): string {
  return `${cmd} ${key} 0 0 ${data.length}${extra}\r\n${data}\r\n`;
}

/** One direction's bytes, in the order the relay sees them. */
type Step = readonly ["client" | "server", string];

interface Case {
  name: string;
  /** Client bytes then server bytes, unless `steps` is given. */
  client?: string;
  server?: string;
  steps?: Step[];
  owed?: number;
  partialRequest?: boolean;
  partialResponse?: boolean;
  /** Part of the reason when the case ends `broken`. */
  broken?: string;
}

function stepsOf(c: Case): Step[] {
  if (c.steps !== undefined) return c.steps;
  const steps: Step[] = [];
  if (c.client !== undefined) steps.push(["client", c.client]);
  if (c.server !== undefined) steps.push(["server", c.server]);
  return steps;
}

/** Feeds `steps`, each cut into pieces at the offsets `cuts(stepIndex, length)` returns. */
function feed(steps: Step[], cuts: (step: number, length: number) => number[]): Snapshot {
  const tracker = new MemcachedTracker();
  steps.forEach(([side, text], step) => {
    const bytes = latin1(text);
    let from = 0;
    for (const to of [...cuts(step, bytes.length), bytes.length]) {
      // A fresh copy per piece, so a tracker that kept a piece could not see later bytes.
      const piece = bytes.slice(from, to);
      if (side === "client") tracker.onClientBytes(piece);
      else tracker.onServerBytes(piece);
      from = to;
    }
  });
  return snapshot(tracker);
}

function randomCuts(next: () => number, length: number): number[] {
  const cuts: number[] = [];
  let at = 0;
  while (true) {
    at += 1 + Math.floor(next() * Math.max(1, length / 3));
    if (at >= length) return cuts;
    cuts.push(at);
  }
}

const RANDOM_SPLITS = 40;

/** Feeds `c` every way the table promises and checks that they all agree with `expected`. */
function checkEverySplit(c: Case, expected: Snapshot): number {
  const steps = stepsOf(c);
  let runs = 0;
  const agree = (got: Snapshot, how: string) => {
    runs++;
    assertEquals(got, expected, `${c.name}: ${how}`);
  };
  steps.forEach(([, text], step) => {
    for (let at = 1; at < text.length; at++) {
      agree(feed(steps, (s) => (s === step ? [at] : [])), `step ${step} split at ${at}`);
    }
  });
  agree(
    feed(steps, (_, length) => Array.from({ length: Math.max(0, length - 1) }, (_, i) => i + 1)),
    "byte by byte",
  );
  for (let seed = 1; seed <= RANDOM_SPLITS; seed++) {
    const next = random(seed);
    agree(feed(steps, (_, length) => randomCuts(next, length)), `random split, seed ${seed}`);
  }
  return runs;
}

function checkCase(c: Case): void {
  const whole = feed(stepsOf(c), () => []);
  if (c.broken !== undefined) {
    if (whole.unfit === undefined) fail(`${c.name}: expected broken, got ${JSON.stringify(whole)}`);
    assertEquals(whole.unfit.kind, "broken", c.name);
    assertStringIncludes(whole.unfit.reason, c.broken, c.name);
  } else {
    assertEquals(whole, {
      owed: c.owed ?? 0,
      partialRequest: c.partialRequest ?? false,
      partialResponse: c.partialResponse ?? false,
      unfit: undefined,
    }, c.name);
  }
  checkEverySplit(c, whole);
}

const TRICKY = "a\r\nEND\r\nSTORED\r\nVALUE x 0 1\r\nMN\r\n\r\n\x80\xff\x00END";

const CLASSIC: Case[] = [
  { name: "get miss", client: "get k\r\n", server: "END\r\n" },
  { name: "get hit", client: "get k\r\n", server: value("k", "hello") + "END\r\n" },
  {
    name: "gets hit with cas",
    client: "gets k\r\n",
    server: value("k", "hello", 3, 42) + "END\r\n",
  },
  { name: "gat hit", client: "gat 100 a\r\n", server: value("a", "x") + "END\r\n" },
  { name: "gats miss", client: "gats 0 a b\r\n", server: "END\r\n" },
  { name: "get with a key of 250 bytes", client: `get ${"k".repeat(250)}\r\n`, server: "END\r\n" },
  {
    // an exptime of 251 digits is not a key: memcached answers the error and drops nothing
    name: "gat with a long exptime",
    client: `version\r\ngat ${"9".repeat(251)} k\r\n`,
    server: "VERSION 1.6.18\r\nCLIENT_ERROR invalid exptime argument\r\n",
  },
  {
    name: "multi-key get with hits and misses",
    client: "get a b c d\r\n",
    server: value("a", "1") + value("c", "abc", 5) + "END\r\n",
  },
  {
    name: "get value holding \\r\\n, END\\r\\n and other replies is skipped by length",
    client: "get k j\r\n",
    server: value("k", TRICKY) + value("j", "END\r\n") + "END\r\n",
  },
  {
    name: "get of an empty value",
    client: "get k\r\n",
    server: value("k", "") + "END\r\n",
  },
  { name: "get line not finished", client: "get k", partialRequest: true },
  { name: "get line without its \\n", client: "get k\r", partialRequest: true },
  { name: "get sent, no reply yet", client: "get k\r\n", owed: 1 },
  {
    name: "get reply stopped between items",
    client: "get a b\r\n",
    server: value("a", "1"),
    owed: 1,
    partialResponse: true,
  },
  {
    name: "get reply stopped in a data block",
    client: "get a\r\n",
    server: "VALUE a 0 10\r\n12345",
    owed: 1,
    partialResponse: true,
  },
  {
    name: "get reply stopped before the data block's \\r\\n",
    client: "get a\r\n",
    server: "VALUE a 0 1\r\nx\r",
    owed: 1,
    partialResponse: true,
  },
  {
    name: "get reply stopped in END",
    client: "get a\r\n",
    server: "EN",
    owed: 1,
    partialResponse: true,
  },
  { name: "set stored", client: store("set", "k", "hello"), server: "STORED\r\n" },
  { name: "add not stored", client: store("add", "k", "hello"), server: "NOT_STORED\r\n" },
  { name: "replace not stored", client: store("replace", "k", "v"), server: "NOT_STORED\r\n" },
  { name: "append stored", client: store("append", "k", "tail"), server: "STORED\r\n" },
  { name: "prepend not found", client: store("prepend", "k", "head"), server: "NOT_STORED\r\n" },
  { name: "cas exists", client: "cas k 0 0 1 99\r\nx\r\n", server: "EXISTS\r\n" },
  { name: "cas not found", client: "cas k 0 0 1 99\r\nx\r\n", server: "NOT_FOUND\r\n" },
  { name: "cas stored", client: "cas k 1 -1 2 18446744073\r\nxy\r\n", server: "STORED\r\n" },
  { name: "set of an empty value", client: "set k 0 0 0\r\n\r\n", server: "STORED\r\n" },
  {
    name: "set with flags and a negative exptime",
    client: "set k 65535 -1 1\r\nx\r\n",
    server: "STORED\r\n",
  },
  {
    name: "set data holding \\r\\n and replies is skipped by length",
    client: store("set", "k", TRICKY) + store("set", "j", "STORED\r\n"),
    server: "STORED\r\nSTORED\r\n",
  },
  { name: "set line sent, data not yet", client: "set k 0 0 5\r\n", partialRequest: true },
  {
    name: "set data in part",
    client: "set k 0 0 5\r\nhel",
    partialRequest: true,
  },
  {
    name: "set data without its final \\n",
    client: "set k 0 0 5\r\nhello\r",
    partialRequest: true,
  },
  { name: "set sent, no reply yet", client: store("set", "k", "v"), owed: 1 },
  {
    name: "set reply in part",
    client: store("set", "k", "v"),
    server: "STOR",
    owed: 1,
    partialResponse: true,
  },
  {
    name: "set reply without its \\n",
    client: store("set", "k", "v"),
    server: "STORED\r",
    owed: 1,
    partialResponse: true,
  },
  {
    name: "set answered early (too large) while its data is still being forwarded",
    client: "set k 0 0 10\r\nhello",
    server: "SERVER_ERROR object too large for cache\r\n",
    partialRequest: true,
  },
  {
    name: "set answered early, then its data ends",
    steps: [
      ["client", "set k 0 0 10\r\nhello"],
      ["server", "SERVER_ERROR object too large for cache\r\n"],
      ["client", "world\r\nget k\r\n"],
      ["server", "END\r\n"],
    ],
  },
  {
    name: "set noreply gets no reply: never settled",
    client: store("set", "k", "v", " noreply"),
    owed: 1,
  },
  {
    name: "set noreply settled by mn",
    client: store("set", "k", "v", " noreply") + "mn\r\n",
    server: "MN\r\n",
  },
  {
    name: "noreply then get: the END cannot settle anything",
    client: store("set", "k", "v", " noreply") + "get k\r\n",
    server: value("k", "v") + "END\r\n",
    owed: 2,
  },
  {
    name: "noreply answered by an error, then get, then mn",
    client: store("set", "k", "v", " noreply") + "get k\r\nmn\r\n",
    server: "CLIENT_ERROR bad data chunk\r\nEND\r\nMN\r\n",
  },
  {
    name: "noreply then get: a VALUE list is followed by shape, stopped in its data",
    client: store("set", "k", "v", " noreply") + "get k\r\n",
    server: "VALUE k 0 5\r\nab",
    owed: 2,
    partialResponse: true,
  },
  {
    name: "noreply then get: a VALUE list stopped before END is partial",
    client: store("set", "k", "v", " noreply") + "get k\r\n",
    server: value("k", "v"),
    owed: 2,
    partialResponse: true,
  },
  { name: "delete deleted", client: "delete k\r\n", server: "DELETED\r\n" },
  { name: "delete not found", client: "delete k\r\n", server: "NOT_FOUND\r\n" },
  { name: "delete noreply", client: "delete k noreply\r\n", owed: 1 },
  { name: "incr", client: "incr n 5\r\n", server: "15\r\n" },
  {
    name: "incr to the 64-bit maximum",
    client: "incr n 1\r\n",
    server: "18446744073709551615\r\n",
  },
  { name: "decr with a space-padded reply", client: "decr n 1\r\n", server: "9 \r\n" },
  { name: "decr not found", client: "decr n 1\r\n", server: "NOT_FOUND\r\n" },
  { name: "incr noreply", client: "incr n 1 noreply\r\n", owed: 1 },
  { name: "touch touched", client: "touch k 10\r\n", server: "TOUCHED\r\n" },
  { name: "touch not found", client: "touch k 10\r\n", server: "NOT_FOUND\r\n" },
  { name: "touch noreply and mn", client: "touch k 10 noreply\r\nmn\r\n", server: "MN\r\n" },
  { name: "flush_all", client: "flush_all\r\n", server: "OK\r\n" },
  { name: "flush_all with a delay", client: "flush_all 10\r\n", server: "OK\r\n" },
  { name: "flush_all noreply", client: "flush_all noreply\r\n", owed: 1 },
  { name: "version", client: "version\r\n", server: "VERSION 1.6.38\r\n" },
  { name: "verbosity", client: "verbosity 1\r\n", server: "OK\r\n" },
  { name: "verbosity noreply then mn", client: "verbosity 1 noreply\r\nmn\r\n", server: "MN\r\n" },
  {
    name: "stats",
    client: "stats\r\n",
    server: "STAT pid 1\r\nSTAT uptime 2\r\nSTAT version 1.6.38\r\nEND\r\n",
  },
  { name: "stats reset", client: "stats reset\r\n", server: "RESET\r\n" },
  { name: "stats detail on", client: "stats detail on\r\n", server: "OK\r\n" },
  {
    name: "stats detail dump",
    client: "stats detail dump\r\n",
    server: "PREFIX a get 1 hit 1 set 0 del 0\r\nEND\r\n",
  },
  { name: "stats items on an empty cache", client: "stats items\r\n", server: "END\r\n" },
  {
    name: "stats cachedump",
    client: "stats cachedump 1 2\r\n",
    server: "ITEM a [1 b; 0 s]\r\nITEM b [1 b; 0 s]\r\nEND\r\n",
  },
  { name: "stats with an unknown argument", client: "stats bogus\r\n", server: "ERROR\r\n" },
  {
    name: "stats detail without an argument",
    client: "stats detail\r\n",
    server: "CLIENT_ERROR usage: stats detail on|off|dump\r\n",
  },
  {
    name: "stats stopped in the middle",
    client: "stats\r\n",
    server: "STAT pid 1\r\nSTAT upt",
    owed: 1,
    partialResponse: true,
  },
  {
    name: "stats stopped between lines",
    client: "stats\r\n",
    server: "STAT pid 1\r\n",
    owed: 1,
    partialResponse: true,
  },
  { name: "an unknown command gets one line", client: "bogus x y\r\n", server: "ERROR\r\n" },
  { name: "lru_crawler crawl", client: "lru_crawler crawl all\r\n", server: "OK\r\n" },
  {
    name: "slabs reassign",
    client: "slabs reassign 1 2\r\n",
    server: "BUSY currently processing reassign request\r\n",
  },
  {
    name: "an unknown command with noreply may get nothing",
    client: "bogus noreply\r\n",
    owed: 1,
  },
  {
    name: "a line starting with a space is an unknown command",
    client: " get k\r\n",
    server: "ERROR\r\n",
  },
  {
    name: "an empty line gets an error",
    client: "\r\n",
    server: "CLIENT_ERROR bad command line format\r\n",
  },
  {
    name: "request lines may end in a bare \\n",
    client: "get a\nset k 0 0 1\nx\r\nget b\n",
    server: "END\r\nSTORED\r\nEND\r\n",
  },
  {
    name: "a \\r inside a request line is part of a word",
    client: "get a\rb\r\n",
    server: "END\r\n",
  },
  {
    name: "spaces around words",
    client: "set  k   0 0  1  \r\nx\r\n",
    server: "STORED\r\n",
  },
  {
    name: "a key named noreply is not noreply when another word follows",
    client: "get noreply k\r\n",
    server: "END\r\n",
  },
  {
    name: "get with noreply last is quiet (memcached checks the last word of every command)",
    client: "get k noreply\r\n",
    server: "END\r\n",
    owed: 1,
  },
  {
    name: "pipelining of 10 mixed commands",
    client: store("set", "a", "1") + "get a b\r\n" + "delete b\r\n" + "incr a 2\r\n" +
      "touch a 100\r\n" + "gets a\r\n" + store("add", "a", "9") + "mg a v f\r\n" +
      "ms c 2 T0\r\nhi\r\n" + "mn\r\n",
    server: "STORED\r\n" + value("a", "1") + "END\r\n" + "NOT_FOUND\r\n" + "3\r\n" +
      "TOUCHED\r\n" + value("a", "3", 0, 7) + "END\r\n" + "NOT_STORED\r\n" +
      "VA 1 f0\r\n3\r\n" + "HD\r\n" + "MN\r\n",
  },
  {
    name: "pipelining of 10 mixed commands, 6 replies in",
    client: store("set", "a", "1") + "get a b\r\n" + "delete b\r\n" + "incr a 2\r\n" +
      "touch a 100\r\n" + "gets a\r\n" + store("add", "a", "9") + "mg a v f\r\n" +
      "ms c 2 T0\r\nhi\r\n" + "mn\r\n",
    server: "STORED\r\n" + value("a", "1") + "END\r\n" + "NOT_FOUND\r\n" + "3\r\n" +
      "TOUCHED\r\n" + value("a", "3", 0, 7),
    owed: 5,
    partialResponse: true,
  },
  {
    name: "requests and replies interleaved",
    steps: [
      ["client", "get a\r\n"],
      ["server", "END\r\n"],
      ["client", store("set", "a", "xyz")],
      ["server", "STORED\r\n"],
      ["client", "get a\r\n"],
      ["server", value("a", "xyz") + "END\r\n"],
    ],
  },
];

const META: Case[] = [
  { name: "mg hit with value", client: "mg k v\r\n", server: "VA 5\r\nhello\r\n" },
  {
    name: "mg hit with value and flags",
    client: "mg k s v t f Oab k\r\n",
    server: "VA 2 s2 t-1 f0 Oab kk\r\nhi\r\n",
  },
  {
    name: "mg value holding replies",
    client: "mg k v\r\n",
    server: `VA ${TRICKY.length}\r\n${TRICKY}\r\n`,
  },
  { name: "mg hit without value", client: "mg k t\r\n", server: "HD t-1\r\n" },
  { name: "mg miss", client: "mg k v\r\n", server: "EN\r\n" },
  {
    name: "mg stopped in its data block",
    client: "mg k v\r\n",
    server: "VA 5\r\nhe",
    owed: 1,
    partialResponse: true,
  },
  { name: "mg q miss gets no reply: never settled", client: "mg k q v\r\n", owed: 1 },
  {
    name: "mg q hit without mn: still not settled",
    client: "mg k q v\r\n",
    server: "VA 2\r\nhi\r\n",
    owed: 1,
  },
  { name: "mg q miss ended by mn", client: "mg k q v\r\nmn\r\n", server: "MN\r\n" },
  { name: "mg q hit ended by mn", client: "mg k v q\r\nmn\r\n", server: "VA 2 q\r\nhi\r\nMN\r\n" },
  {
    name: "a key named q is not the q flag",
    client: "mg q v\r\n",
    server: "EN\r\n",
  },
  {
    name: "an opaque starting with q is not the q flag",
    client: "mg k Oq1 v\r\n",
    server: "EN Oq1\r\n",
  },
  { name: "ms stored", client: "ms k 5 T0\r\nhello\r\n", server: "HD\r\n" },
  { name: "ms not stored", client: "ms k 1 ME\r\nx\r\n", server: "NS\r\n" },
  { name: "ms exists", client: "ms k 1 C5\r\nx\r\n", server: "EX\r\n" },
  { name: "ms not found", client: "ms k 1 MR\r\nx\r\n", server: "NF\r\n" },
  { name: "ms with flags returned", client: "ms k 1 c k Oz\r\nx\r\n", server: "HD c9 kk Oz\r\n" },
  { name: "ms of a key named q", client: "ms q 1\r\nx\r\n", server: "HD\r\n" },
  {
    name: "ms data holding replies",
    client: `ms k ${TRICKY.length}\r\n${TRICKY}\r\n`,
    server: "HD\r\n",
  },
  { name: "ms line sent, data not yet", client: "ms k 5\r\n", partialRequest: true },
  { name: "ms q without mn", client: "ms k 1 q\r\nx\r\n", owed: 1 },
  { name: "ms q ended by mn", client: "ms k 1 q\r\nx\r\nmn\r\n", server: "MN\r\n" },
  {
    name: "ms q failing, ended by mn",
    client: "ms k 1 q ME\r\nx\r\nmn\r\n",
    server: "NS\r\nMN\r\n",
  },
  { name: "md deleted", client: "md k\r\n", server: "HD\r\n" },
  { name: "md not found", client: "md k\r\n", server: "NF\r\n" },
  { name: "md exists", client: "md k C1\r\n", server: "EX\r\n" },
  { name: "md q without mn", client: "md k q\r\n", owed: 1 },
  { name: "md q ended by mn", client: "md k q\r\nmn\r\n", server: "NF\r\nMN\r\n" },
  { name: "ma", client: "ma n\r\n", server: "HD\r\n" },
  { name: "ma with value", client: "ma n v\r\n", server: "VA 2\r\n11\r\n" },
  { name: "ma not found", client: "ma n\r\n", server: "NF\r\n" },
  { name: "ma not stored", client: "ma n N0\r\n", server: "NS\r\n" },
  { name: "ma exists", client: "ma n C3\r\n", server: "EX\r\n" },
  { name: "ma q without mn", client: "ma n q\r\n", owed: 1 },
  {
    name: "ma q with value, ended by mn",
    client: "ma n q v\r\nmn\r\n",
    server: "VA 1\r\n5\r\nMN\r\n",
  },
  { name: "mn", client: "mn\r\n", server: "MN\r\n" },
  { name: "mn sent, no reply yet", client: "mn\r\n", owed: 1 },
  {
    name: "me hit",
    client: "me k\r\n",
    server: "ME k exp=-1 la=3 cas=2 fetch=no cls=1 size=63\r\n",
  },
  { name: "me miss", client: "me k\r\n", server: "EN\r\n" },
  {
    name: "a quiet batch ended by mn is settled",
    client: "mg a q v\r\nmg b q v k\r\nms c 1 q\r\nx\r\nmd d q\r\nma e q\r\nmn\r\n",
    server: "VA 1\r\na\r\nVA 1 kb\r\nb\r\nNF\r\nMN\r\n",
  },
  {
    name: "a quiet batch without mn is not settled",
    client: "mg a q v\r\nmg b q v\r\nms c 1 q\r\nx\r\nmd d q\r\n",
    server: "VA 1\r\na\r\n",
    owed: 4,
  },
  {
    name: "a quiet batch whose mn has not been answered yet",
    client: "mg a q v\r\nmg b q v\r\nmn\r\n",
    server: "VA 1\r\na\r\n",
    owed: 3,
  },
  {
    name: "after a quiet batch's MN, replies are counted again",
    client: "mg a q v\r\nmn\r\nget b\r\nmg c v\r\n",
    server: "MN\r\nEND\r\nEN\r\n",
  },
  {
    name: "two quiet batches, both ended",
    client: "mg a q\r\nmn\r\nmg b q\r\nmn\r\n",
    server: "MN\r\nMN\r\n",
  },
  {
    name: "an MN settles up to the first mn only",
    client: "mg a q\r\nmn\r\nmg b q\r\n",
    server: "MN\r\n",
    owed: 1,
  },
  {
    name: "a quiet request behind an answered one",
    client: "get a\r\nmg b q v\r\nmn\r\n",
    server: "END\r\nMN\r\n",
  },
  {
    name: "a quiet request behind one still being answered",
    client: "get a\r\nmg b q v\r\nmn\r\n",
    server: value("a", "x"),
    owed: 3,
    partialResponse: true,
  },
  {
    name: "a quiet batch's VALUE and VA data holding MN\\r\\n are skipped by length",
    client: store("set", "k", "v", " noreply") + "get k\r\nmg k q v\r\nmn\r\n",
    server: value("k", "MN\r\n") + "END\r\n" + `VA ${TRICKY.length}\r\n${TRICKY}\r\n` + "MN\r\n",
  },
  {
    name: "a quiet batch and its replies interleaved",
    steps: [
      ["client", "mg a q v\r\n"],
      ["server", "VA 1\r\na\r\n"],
      ["client", "ms b 2 q\r\nbb\r\n"],
      ["client", "mn\r\n"],
      ["server", "MN\r\n"],
      ["client", "mg b v\r\n"],
      ["server", "VA 2\r\nbb\r\n"],
    ],
  },
];

const ERRORS: Case[] = [
  { name: "get answered by ERROR", client: "get k\r\n", server: "ERROR\r\n" },
  {
    name: "get answered by CLIENT_ERROR",
    client: "get k\r\n",
    server: "CLIENT_ERROR bad command line format\r\n",
  },
  {
    name: "set answered by SERVER_ERROR out of memory",
    client: store("set", "k", "v"),
    server: "SERVER_ERROR out of memory storing object\r\n",
  },
  {
    name: "set answered by CLIENT_ERROR bad data chunk",
    client: store("set", "k", "v"),
    server: "CLIENT_ERROR bad data chunk\r\n",
  },
  { name: "delete answered by ERROR", client: "delete k\r\n", server: "ERROR\r\n" },
  {
    name: "incr answered by CLIENT_ERROR",
    client: "incr k x\r\n",
    server: "CLIENT_ERROR invalid numeric delta argument\r\n",
  },
  {
    name: "touch answered by CLIENT_ERROR",
    client: "touch k x\r\n",
    server: "CLIENT_ERROR invalid exptime argument\r\n",
  },
  { name: "version answered by ERROR", client: "version\r\n", server: "ERROR\r\n" },
  {
    name: "stats answered by SERVER_ERROR",
    client: "stats\r\n",
    server: "SERVER_ERROR out of memory writing stats\r\n",
  },
  {
    name: "mg answered by SERVER_ERROR out of memory",
    client: "mg k v\r\n",
    server: "SERVER_ERROR out of memory\r\n",
  },
  {
    name: "ms answered by CLIENT_ERROR",
    client: "ms k 1 Zz\r\nx\r\n",
    server: "CLIENT_ERROR invalid flag\r\n",
  },
  {
    name: "md answered by CLIENT_ERROR",
    client: "md\r\n",
    server: "CLIENT_ERROR bad command line format\r\n",
  },
  { name: "ma answered by ERROR", client: "ma k\r\n", server: "ERROR\r\n" },
  {
    name: "me answered by CLIENT_ERROR",
    client: "me\r\n",
    server: "CLIENT_ERROR bad command line format\r\n",
  },
  {
    name: "mn answered by SERVER_ERROR",
    client: "mn\r\n",
    server: "SERVER_ERROR: shutdown not enabled\r\n",
  },
  {
    name: "an error answering a quiet request, then mn",
    client: "ms k 1 q\r\nx\r\nmn\r\n",
    server: "SERVER_ERROR out of memory storing object\r\nMN\r\n",
  },
];

const LONG_KEY = "k".repeat(251);

const BROKEN: Case[] = [
  {
    name: "binary protocol",
    client: "\x80\x00\x00\x05\x00\x00\x00\x00",
    broken: "binary protocol",
  },
  {
    name: "binary protocol after an empty chunk",
    steps: [["client", ""], ["client", "\x80\x01"]],
    broken: "binary",
  },
  // memcached 1.6.18 answers `version\r\nget <251 bytes>` with the error line alone: it drops
  // earlier answers it has not sent yet, so nothing says what is owed.
  {
    name: "get with a key over 250 bytes",
    client: `version\r\nget ${LONG_KEY}\r\n`,
    broken: "250",
  },
  { name: "gets with a second key over 250", client: `gets k ${LONG_KEY}\r\n`, broken: "250" },
  { name: "gat with a key over 250", client: `gat 1 ${LONG_KEY}\r\n`, broken: "250" },
  { name: "gats with a key over 250", client: `gats 1 k ${LONG_KEY}\r\n`, broken: "250" },
  { name: "quit", client: "quit\r\n", broken: "quit" },
  { name: "shutdown", client: "shutdown\r\n", broken: "shutdown" },
  { name: "watch", client: "watch fetchers\r\n", server: "OK\r\n", broken: "watch" },
  // memcached cuts a line at a NUL and runs what is before it (1.6.18: `watch\0` runs watch).
  { name: "a NUL hides watch", client: "watch\0\r\n", server: "OK\r\n", broken: "NUL" },
  { name: "a NUL after a command", client: "version\0junk\r\n", broken: "NUL" },
  {
    name: "a NUL hides an mn in a quiet batch",
    client: "mg x q\r\nmn\0\r\nmn\r\n",
    server: "MN\r\n",
    broken: "NUL",
  },
  // 1.6.18 answers `mn\n` with MN; a short line is an error otherwise. Never followed.
  { name: "mn ended by a bare \\n", client: "mn\n", server: "MN\r\n", broken: "bare" },
  {
    name: "mn ended by a bare \\n in a quiet batch",
    client: "mg x q\r\nmn\nget k\r\nmn\r\n",
    server: "MN\r\n",
    broken: "bare",
  },
  { name: "lru_crawler metadump", client: "lru_crawler metadump all\r\n", broken: "lru_crawler" },
  { name: "lru_crawler mgdump", client: "lru_crawler mgdump hash\r\n", broken: "lru_crawler" },
  {
    name: "a byte count that is not a number",
    client: "set k 0 0 abc\r\nabc\r\n",
    broken: "byte count",
  },
  { name: "a negative byte count", client: "set k 0 0 -1\r\n", broken: "byte count" },
  {
    name: "a byte count above INT_MAX - 2",
    client: "set k 0 0 2147483646\r\n",
    broken: "byte count",
  },
  {
    name: "a byte count with 11 digits",
    client: "set k 0 0 00000000001\r\nx\r\n",
    broken: "byte count",
  },
  { name: "flags that are not a number", client: "set k x 0 1\r\nx\r\n", broken: "flags" },
  { name: "flags above 32 bits", client: "set k 4294967296 0 1\r\nx\r\n", broken: "flags" },
  { name: "an exptime that is not a number", client: "set k 0 x 1\r\nx\r\n", broken: "exptime" },
  { name: "an exptime below 32 bits", client: "set k 0 -2147483649 1\r\nx\r\n", broken: "exptime" },
  {
    name: "a cas unique that is not a number",
    client: "cas k 0 0 1 x\r\nx\r\n",
    broken: "cas unique",
  },
  { name: "cas without its cas unique", client: "cas k 0 0 1\r\nx\r\n", broken: "words" },
  { name: "a storage line with too few words", client: "set k 0 0\r\n", broken: "words" },
  {
    name: "a storage line with too many words",
    client: "set k 0 0 1 noreply x\r\nx\r\n",
    broken: "words",
  },
  {
    name: "a storage key longer than 250 bytes",
    client: store("set", LONG_KEY, "x"),
    broken: "key",
  },
  {
    name: "ms with a data length that is not a number",
    client: "ms k abc\r\nabc\r\n",
    broken: "data length",
  },
  { name: "ms with a negative data length", client: "ms k -1\r\n", broken: "data length" },
  { name: "ms without a data length", client: "ms k\r\n", broken: "no data length" },
  {
    name: "ms with a key longer than 250 bytes",
    client: `ms ${LONG_KEY} 1\r\nx\r\n`,
    broken: "key",
  },
  {
    // memcached 1.6 answers `CLIENT_ERROR options flags too long` to an ms of 20 words or more
    // and reads its data block as commands (which may hide a `set ... noreply` of the next
    // client's bytes); 19 words are served.
    name: "ms of 20 words",
    client: `ms k 1${" T0".repeat(17)}\r\nx\r\n`,
    broken: "20 words",
  },
  {
    name: "ms of 19 words",
    client: `ms k 1${" T0".repeat(16)}\r\nx\r\n`,
    server: "HD\r\n",
  },
  {
    name: "a request data block not followed by \\r\\n",
    client: "set k 0 0 1\r\nxy\r\n",
    broken: "data block",
  },
  {
    name: "a request data block followed by \\n only",
    client: "set k 0 0 1\r\nx\nget k\r\n",
    broken: "data block",
  },
  {
    name: "an ms data block not followed by \\r\\n",
    client: "ms k 1\r\nxx\r\n",
    broken: "data block",
  },
  {
    name: "a long line that is not get",
    client: `bogus ${"x".repeat(3000)}\r\n`,
    broken: "longer than 2048",
  },
  { name: "a long gat line", client: `gat 0 ${"k ".repeat(1100)}\r\n`, broken: "longer than 2048" },
  { name: "a long first word", client: `${"g".repeat(2100)}\r\n`, broken: "longer than 2048" },
  { name: "a reply with nothing sent", server: "END\r\n", broken: "no request outstanding" },
  {
    name: "one reply too many",
    client: "get k\r\n",
    server: "END\r\nEND\r\n",
    broken: "no request outstanding",
  },
  {
    name: "a VALUE answering set",
    client: store("set", "k", "v"),
    server: value("k", "v") + "END\r\n",
    broken: "VALUE answering a storage command",
  },
  {
    name: "STORED answering get",
    client: "get k\r\n",
    server: "STORED\r\n",
    broken: "STORED answering a retrieval",
  },
  {
    name: "END answering delete",
    client: "delete k\r\n",
    server: "END\r\n",
    broken: "END answering delete",
  },
  {
    name: "a word answering incr",
    client: "incr k 1\r\n",
    server: "STORED\r\n",
    broken: "STORED answering incr",
  },
  { name: "HD answering get", client: "get k\r\n", server: "HD\r\n", broken: "HD answering" },
  {
    name: "VA answering md",
    client: "md k\r\n",
    server: "VA 1\r\nx\r\n",
    broken: "VA answering md",
  },
  {
    name: "EN answering ms",
    client: "ms k 1\r\nx\r\n",
    server: "EN\r\n",
    broken: "EN answering ms",
  },
  {
    name: "VALUE answering mg",
    client: "mg k v\r\n",
    server: value("k", "v"),
    broken: "VALUE answering mg",
  },
  {
    name: "STAT answering a one-line command",
    client: "flush_all\r\n",
    server: "STAT x 1\r\nEND\r\n",
    broken: "STAT answering a one-line command",
  },
  {
    name: "VALUE answering stats",
    client: "stats\r\n",
    server: value("k", "v"),
    broken: "VALUE answering stats",
  },
  {
    name: "MN answering get",
    client: "get k\r\nmn\r\n",
    server: "MN\r\n",
    broken: "MN answering a retrieval",
  },
  {
    name: "MN with no mn outstanding behind a quiet request",
    client: "mg k q\r\n",
    server: "MN\r\n",
    broken: "no mn outstanding",
  },
  {
    name: "an error in the middle of a VALUE list",
    client: "get a b\r\n",
    server: value("a", "x") + "SERVER_ERROR out of memory writing get response\r\n",
    broken: "an error line in the middle of a VALUE list",
  },
  {
    name: "an error in the middle of a STAT list",
    client: "stats\r\n",
    server: "STAT pid 1\r\nSERVER_ERROR out of memory\r\n",
    broken: "in the middle of a STAT list",
  },
  {
    name: "a reply data block not followed by \\r\\n",
    client: "get k\r\n",
    server: "VALUE k 0 1\r\nxy\r\nEND\r\n",
    broken: "data block",
  },
  {
    name: "a VA data block not followed by \\r\\n",
    client: "mg k v\r\n",
    server: "VA 1\r\nxyz\r\n",
    broken: "data block",
  },
  {
    name: "a reply line ending in \\n only",
    client: "get k\r\n",
    server: "END\n",
    broken: "without \\r",
  },
  {
    name: "a VALUE line without a length",
    client: "get k\r\n",
    server: "VALUE k 0\r\n",
    broken: "data length",
  },
  {
    name: "a VALUE line with a bad length",
    client: "get k\r\n",
    server: "VALUE k 0 1x\r\n",
    broken: "data length",
  },
  {
    name: "a VA line with a bad length",
    client: "mg k v\r\n",
    server: "VA s1\r\nx\r\n",
    broken: "data length",
  },
  {
    name: "an empty reply line answering get",
    client: "get k\r\n",
    server: "\r\n",
    broken: "an empty line answering",
  },
  {
    name: "once broken, later bytes are ignored",
    client: "quit\r\nget k\r\n",
    server: "garbage",
    broken: "quit",
  },
];

const TABLE = [...CLASSIC, ...META, ...ERRORS, ...BROKEN];

Deno.test("memcached tracker table: every case agrees whole, at every split, byte by byte and at random splits", () => {
  const names = new Set<string>();
  for (const c of TABLE) {
    assert(!names.has(c.name), `duplicate case name ${c.name}`);
    names.add(c.name);
    checkCase(c);
  }
  assert(TABLE.length > 150, `table has ${TABLE.length} cases`);
});

Deno.test("memcached tracker is complete only once every reply has arrived", () => {
  const tracker = new MemcachedTracker();
  const client = (text: string) => tracker.onClientBytes(latin1(text));
  const server = (text: string) => tracker.onServerBytes(latin1(text));
  assert(isComplete(tracker));
  client(store("set", "k", "v", " noreply"));
  assert(!isComplete(tracker));
  client("get k\r\n");
  server(value("k", "v") + "END\r\n");
  assert(!isComplete(tracker), "the END may belong to the get or answer nothing yet");
  client("mn\r\n");
  assert(!isComplete(tracker));
  server("MN\r\n");
  assert(isComplete(tracker));
  client("mg a q v\r\nmg b q v\r\n");
  server("VA 1\r\na\r\n");
  assert(!isComplete(tracker));
  client("mn\r\n");
  server("M");
  assertEquals(snapshot(tracker), {
    owed: 3,
    partialRequest: false,
    partialResponse: true,
    unfit: undefined,
  });
  server("N\r\n");
  assert(isComplete(tracker));
});

Deno.test("memcached tracker skips a 1 MiB value in 64 KiB chunks, both ways", () => {
  const size = 1 << 20;
  const chunkSize = 64 << 10;
  const data = new Uint8Array(size);
  const pattern = latin1("END\r\nSTORED\r\nMN\r\n\r\n");
  for (let i = 0; i < size; i++) data[i] = pattern[i % pattern.length];
  const join = (...parts: Uint8Array[]) => {
    const out = new Uint8Array(parts.reduce((sum, p) => sum + p.length, 0));
    let at = 0;
    for (const part of parts) {
      out.set(part, at);
      at += part.length;
    }
    return out;
  };
  const request = join(latin1(`set big 0 0 ${size}\r\n`), data, latin1("\r\nget big\r\n"));
  const reply = join(latin1("STORED\r\n" + `VALUE big 0 ${size}\r\n`), data, latin1("\r\nEND\r\n"));
  for (const offset of [0, 1, 7, 12345]) {
    const tracker = new MemcachedTracker();
    let at = 0;
    for (const end = request.length; at < end;) {
      const next = Math.min(end, at === 0 ? chunkSize + offset : at + chunkSize);
      tracker.onClientBytes(request.subarray(at, next));
      at = next;
      if (at < end - 11) assert(tracker.partialRequest, `request in part at ${at}`);
    }
    assertEquals(snapshot(tracker), {
      owed: 2,
      partialRequest: false,
      partialResponse: false,
      unfit: undefined,
    });
    at = 0;
    for (const end = reply.length; at < end;) {
      const next = Math.min(end, at === 0 ? chunkSize + offset : at + chunkSize);
      tracker.onServerBytes(reply.subarray(at, next));
      at = next;
      if (at < end) assert(tracker.partialResponse, `reply in part at ${at}`);
      if (at > 8 && at < end) assertEquals(tracker.owed, 1);
    }
    assert(isComplete(tracker), JSON.stringify(snapshot(tracker)));
  }
});

Deno.test("memcached tracker follows a get line far longer than 2048 bytes without keeping it", () => {
  const keys = Array.from({ length: 2000 }, (_, i) => `key:${i}`);
  const c: Case = {
    name: "a 16 KB multi-key get",
    client: `get ${keys.join(" ")}\r\n`,
    server: value("key:1", "x") + value("key:1999", "y") + "END\r\n",
  };
  const whole = feed(stepsOf(c), () => []);
  assertEquals(whole, { owed: 0, partialRequest: false, partialResponse: false, unfit: undefined });
  for (let seed = 1; seed <= 5; seed++) {
    const next = random(seed);
    assertEquals(feed(stepsOf(c), (_, length) => randomCuts(next, length)), whole);
  }
  assertEquals(
    feed(stepsOf(c), (_, length) => Array.from({ length: length - 1 }, (_, i) => i + 1)),
    whole,
  );
  const quiet = feed([["client", `gets ${keys.join(" ")} noreply\r\n`]], () => []);
  assertEquals(quiet.owed, 1);
  assertEquals(quiet.unfit, undefined);
});

Deno.test("memcached tracker allows 4096 outstanding requests and breaks at 4097", () => {
  const tracker = new MemcachedTracker();
  tracker.onClientBytes(latin1("mn\r\n".repeat(4096)));
  assertEquals(tracker.owed, 4096);
  assertEquals(tracker.unfit, undefined);
  tracker.onServerBytes(latin1("MN\r\n".repeat(4096)));
  assert(isComplete(tracker));
  tracker.onClientBytes(latin1("mg k q\r\n".repeat(4096)));
  assertEquals(tracker.unfit, undefined);
  tracker.onClientBytes(latin1("mn\r\n"));
  assertEquals(tracker.unfit?.kind, "broken");
  assertStringIncludes(tracker.unfit?.reason ?? "", "more than 4096 requests outstanding");
});

Deno.test("memcached tracker settles thousands of quiet requests with one mn, through the ring", () => {
  const tracker = new MemcachedTracker();
  for (let round = 0; round < 5; round++) {
    tracker.onClientBytes(latin1("mg k q v\r\n".repeat(3000) + "mn\r\n"));
    tracker.onServerBytes(latin1("VA 1\r\nx\r\n".repeat(1000)));
    assertEquals(tracker.owed, 3001);
    tracker.onServerBytes(latin1("MN\r\n"));
    assert(isComplete(tracker), `round ${round}`);
  }
});

Deno.test("memcached tracker keeps no chunk: bytes overwritten after a call change nothing", () => {
  for (const c of [...CLASSIC, ...META, ...ERRORS]) {
    const steps = stepsOf(c);
    const expected = feed(steps, () => []);
    for (const garbage of [0x00, 0x0a, 0x20, 0x80]) {
      const tracker = new MemcachedTracker();
      for (const [side, text] of steps) {
        const bytes = latin1(text);
        const half = bytes.length >> 1;
        for (const [from, to] of [[0, half], [half, bytes.length]]) {
          const piece = bytes.slice(from, to);
          if (side === "client") tracker.onClientBytes(piece);
          else tracker.onServerBytes(piece);
          piece.fill(garbage);
        }
      }
      assertEquals(snapshot(tracker), expected, `${c.name}, overwritten with ${garbage}`);
    }
  }
});

Deno.test("memcached tracker never changes a chunk", () => {
  const text = store("set", "k", TRICKY) + "get k\r\nmg k q v\r\nmn\r\n";
  const reply = "STORED\r\n" + value("k", TRICKY) + "END\r\nMN\r\n";
  const client = latin1(text);
  const server = latin1(reply);
  const tracker = new MemcachedTracker();
  tracker.onClientBytes(client);
  tracker.onServerBytes(server);
  assert(isComplete(tracker));
  assertEquals(client, latin1(text));
  assertEquals(server, latin1(reply));
});

Deno.test("settleable: a quiet or noreply request with no mn after it cannot settle; an mn after it can", () => {
  const feed = (text: string) => {
    const tracker = new MemcachedTracker();
    tracker.onClientBytes(new TextEncoder().encode(text));
    return tracker;
  };
  assertEquals(feed("get k\r\n").settleable, true);
  assertEquals(feed("mg k v q\r\n").settleable, false);
  assertEquals(feed("mg k v q\r\nmn\r\n").settleable, true);
  assertEquals(feed("mg k v q\r\nmn\r\nmg j v q\r\n").settleable, false);
  assertEquals(feed("set k 0 0 1 noreply\r\n1\r\n").settleable, false);
  assertEquals(feed("set k 0 0 1 noreply\r\n1\r\nget k\r\n").settleable, false);
  assertEquals(feed("set k 0 0 1 noreply\r\n1\r\nmn\r\n").settleable, true);
  const settled = feed("mg k v q\r\nmn\r\n");
  settled.onServerBytes(new TextEncoder().encode("MN\r\n"));
  assertEquals([settled.owed, settled.settleable], [0, true]);
});

Deno.test("memcached tracker: rings that start small and grow keep thousands of mn in line", () => {
  const tracker = new MemcachedTracker();
  tracker.onClientBytes(latin1("mg a q\r\nmn\r\n".repeat(2_000))); // 4,000 outstanding
  assertEquals(tracker.owed, 4_000);
  // The quiet gets miss (nothing sent); each MN settles its mn and the mg before it.
  for (let i = 0; i < 2_000; i++) {
    tracker.onServerBytes(latin1("MN\r\n"));
    assertEquals(tracker.owed, 4_000 - 2 * (i + 1));
  }
  assert(isComplete(tracker));
});
