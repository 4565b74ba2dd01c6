/**
 * The Redis tracker on its own. Every case of the table is fed whole, split in two at every
 * byte, byte by byte and in seeded random pieces, in both directions, and must end the same.
 */

import { assert, assertEquals, assertFalse, assertStringIncludes } from "./_assert.ts";
import { isComplete, type Unfit } from "../src/framing.ts";
import { REDIS_RESET_COMMAND, REDIS_RESET_REPLY, RedisTracker } from "../src/resp.ts";
import { seededRandom as prng, type Snapshot, snapshot } from "./_tracker.ts";

const encoder = new TextEncoder();

type Bytes = string | Uint8Array;

function bytes(data: Bytes): Uint8Array {
  return typeof data === "string" ? encoder.encode(data) : data;
}

function concat(...parts: Bytes[]): Uint8Array {
  const arrays = parts.map(bytes);
  const out = new Uint8Array(arrays.reduce((sum, a) => sum + a.length, 0));
  let at = 0;
  for (const a of arrays) {
    out.set(a, at);
    at += a.length;
  }
  return out;
}

/** A request as a RESP array of bulk strings (ASCII arguments). */
function cmd(...args: string[]): string {
  return `*${args.length}\r\n` + args.map((a) => `$${a.length}\r\n${a}\r\n`).join("");
}

const GET = cmd("GET", "k");

/**
 * Feeds all request chunks, then all reply chunks, each a fresh copy; with `scribble`, each
 * copy is overwritten with garbage once fed, so a tracker that kept one would go wrong.
 */
function run(requests: Uint8Array[], replies: Uint8Array[], scribble = false): Snapshot {
  const tracker = new RedisTracker();
  for (const chunk of requests) {
    const copy = chunk.slice();
    tracker.onClientBytes(copy);
    if (scribble) copy.fill(0x2a);
  }
  for (const chunk of replies) {
    const copy = chunk.slice();
    tracker.onServerBytes(copy);
    if (scribble) copy.fill(0x3a);
  }
  return snapshot(tracker);
}

function randomPieces(data: Uint8Array, random: () => number): Uint8Array[] {
  const pieces: Uint8Array[] = [];
  let at = 0;
  while (at < data.length) {
    const size = 1 + Math.floor(random() * Math.min(16, data.length - at));
    pieces.push(data.subarray(at, at + size));
    at += size;
  }
  return pieces;
}

function byteByByte(data: Uint8Array): Uint8Array[] {
  return Array.from(data, (_, i) => data.subarray(i, i + 1));
}

/**
 * The ways every case is fed: whole, split in two at every byte (including the ends), byte by
 * byte, and in random pieces, each for one direction while the other comes whole.
 */
function* feedings(
  requests: Uint8Array,
  replies: Uint8Array,
  seed: number,
): Generator<[string, Uint8Array[], Uint8Array[]]> {
  yield ["whole", [requests], [replies]];
  for (let p = 0; p <= requests.length; p++) {
    yield [`requests split at ${p}`, [requests.subarray(0, p), requests.subarray(p)], [replies]];
  }
  for (let p = 0; p <= replies.length; p++) {
    yield [`replies split at ${p}`, [requests], [replies.subarray(0, p), replies.subarray(p)]];
  }
  yield ["byte by byte", byteByByte(requests), byteByByte(replies)];
  const random = prng(seed);
  for (let k = 0; k < 4; k++) {
    yield [
      `random pieces #${k}`,
      randomPieces(requests, random),
      randomPieces(replies, random),
    ];
  }
}

interface Case {
  name: string;
  requests?: Bytes;
  replies?: Bytes;
  /** Default 0. */
  owed?: number;
  /** Default false. */
  partialRequest?: boolean;
  /** Default false. */
  partialResponse?: boolean;
  /** Default fit. */
  unfit?: Unfit["kind"];
  /** A part of the reason. */
  reason?: string;
}

function check(c: Case, seed: number, scribble = false): void {
  const requests = bytes(c.requests ?? "");
  const replies = bytes(c.replies ?? "");
  const whole = run([requests], [replies]);
  assertEquals(whole.owed, c.owed ?? 0, "owed");
  assertEquals(whole.partialRequest, c.partialRequest ?? false, "partialRequest");
  assertEquals(whole.partialResponse, c.partialResponse ?? false, "partialResponse");
  assertEquals(whole.unfit?.kind, c.unfit, `unfit: ${JSON.stringify(whole.unfit)}`);
  if (c.reason !== undefined) assertStringIncludes(whole.unfit?.reason ?? "", c.reason);
  for (const [how, reqs, reps] of feedings(requests, replies, seed)) {
    assertEquals(run(reqs, reps, scribble), whole, how);
  }
}

const requests10 = GET.repeat(10);
const replies10 = Array.from({ length: 10 }, (_, i) => `$2\r\nv${i}\r\n`).join("");
const PUSH = ">3\r\n$10\r\ninvalidate\r\n*1\r\n$1\r\nk\r\n$5\r\nextra\r\n";
const ATTRIBUTE = "|1\r\n+key-popularity\r\n%2\r\n$1\r\na\r\n,0.1923\r\n$1\r\nb\r\n,0.0012\r\n";

const REPLIES: Case[] = [
  { name: "simple string", requests: GET, replies: "+OK\r\n" },
  { name: "simple error", requests: GET, replies: "-ERR unknown command 'FOO'\r\n" },
  { name: "integer", requests: GET, replies: ":42\r\n" },
  { name: "negative integer", requests: GET, replies: ":-7\r\n" },
  { name: "integer with a plus sign", requests: GET, replies: ":+7\r\n" },
  { name: "bulk string", requests: GET, replies: "$5\r\nhello\r\n" },
  { name: "bulk string holding CRLFs", requests: GET, replies: "$6\r\n\r\n\r\n\r\n\r\n" },
  {
    name: "binary bulk string",
    requests: GET,
    replies: concat("$4\r\n", new Uint8Array([0, 0xff, 13, 10]), "\r\n"),
  },
  { name: "empty bulk string", requests: GET, replies: "$0\r\n\r\n" },
  { name: "null bulk string", requests: GET, replies: "$-1\r\n" },
  { name: "array", requests: GET, replies: "*3\r\n$1\r\na\r\n:1\r\n+b\r\n" },
  { name: "empty array", requests: GET, replies: "*0\r\n" },
  { name: "null array", requests: GET, replies: "*-1\r\n" },
  { name: "RESP3 null", requests: GET, replies: "_\r\n" },
  { name: "double", requests: GET, replies: ",3.14\r\n" },
  { name: "double inf", requests: GET, replies: ",-inf\r\n" },
  { name: "boolean true", requests: GET, replies: "#t\r\n" },
  { name: "boolean false", requests: GET, replies: "#f\r\n" },
  { name: "blob error", requests: GET, replies: "!21\r\nSYNTAX invalid syntax\r\n" },
  { name: "verbatim string", requests: GET, replies: "=15\r\ntxt:Some string\r\n" },
  {
    name: "big number",
    requests: GET,
    replies: "(3492890328409238509324850943850943825024385\r\n",
  },
  { name: "negative big number", requests: GET, replies: "(-3492890328409238509324850\r\n" },
  { name: "map", requests: GET, replies: "%2\r\n+first\r\n:1\r\n+second\r\n:2\r\n" },
  { name: "empty map", requests: GET, replies: "%0\r\n" },
  { name: "set", requests: GET, replies: "~5\r\n+orange\r\n+apple\r\n#t\r\n:100\r\n:999\r\n" },
  {
    name: "nested aggregates",
    requests: GET,
    replies: "*3\r\n*2\r\n:1\r\n:2\r\n%1\r\n+k\r\n~2\r\n*0\r\n$-1\r\n*1\r\n_\r\n",
  },
  {
    name: "aggregates nested 1024 deep",
    requests: GET,
    replies: "*1\r\n".repeat(1023) + "%1\r\n+k\r\n:1\r\n",
  },
  {
    name: "an attribute before a reply",
    requests: GET,
    replies: ATTRIBUTE + "*2\r\n:2039123\r\n:9543892\r\n",
  },
  {
    name: "an attribute alone is no reply",
    requests: GET,
    replies: ATTRIBUTE,
    owed: 1,
    partialResponse: true,
  },
  { name: "an empty attribute", requests: GET, replies: "|0\r\n+OK\r\n" },
  {
    name: "two attributes before a reply",
    requests: GET,
    replies: ATTRIBUTE + ATTRIBUTE + ":1\r\n",
  },
  {
    name: "an attribute on an element of an array",
    requests: GET,
    replies: "*2\r\n|1\r\n+ttl\r\n:3600\r\n+a\r\n+b\r\n",
  },
  {
    name: "an attribute on the last element does not end the array",
    requests: GET,
    replies: "*2\r\n+a\r\n|1\r\n+ttl\r\n:3600\r\n",
    owed: 1,
    partialResponse: true,
  },
  {
    name: "pushes before, between and after replies",
    requests: GET + GET,
    replies: PUSH + "$1\r\nv\r\n" + PUSH + PUSH + "$-1\r\n" + PUSH,
  },
  { name: "a push with nothing owed", replies: PUSH },
  { name: "a push settles no request", requests: GET, replies: PUSH, owed: 1 },
  { name: "an empty push", requests: GET, replies: ">0\r\n", owed: 1 },
  {
    name: "a partial push",
    requests: GET,
    replies: ">3\r\n$10\r\ninvalidate\r\n",
    owed: 1,
    partialResponse: true,
  },
  { name: "an attribute before a push", replies: "|1\r\n+a\r\n+b\r\n" + PUSH },
  {
    name: "streamed string",
    requests: GET,
    replies: "$?\r\n;4\r\nHell\r\n;5\r\no wor\r\n;2\r\nld\r\n;0\r\n",
  },
  { name: "empty streamed string", requests: GET, replies: "$?\r\n;0\r\n" },
  {
    name: "partial streamed string",
    requests: GET,
    replies: "$?\r\n;4\r\nHell\r\n",
    owed: 1,
    partialResponse: true,
  },
  { name: "streamed array", requests: GET, replies: "*?\r\n:1\r\n:2\r\n.\r\n" },
  { name: "empty streamed array", requests: GET, replies: "*?\r\n.\r\n" },
  { name: "streamed map", requests: GET, replies: "%?\r\n+a\r\n:1\r\n+b\r\n:2\r\n.\r\n" },
  { name: "streamed set", requests: GET, replies: "~?\r\n+a\r\n.\r\n" },
  {
    name: "nested streamed aggregates",
    requests: GET,
    replies:
      "*?\r\n*?\r\n:1\r\n.\r\n$?\r\n;1\r\nx\r\n;0\r\n%?\r\n*1\r\n:1\r\n~?\r\n.\r\n.\r\n.\r\n",
  },
  {
    name: "partial streamed array",
    requests: GET,
    replies: "*?\r\n:1\r\n",
    owed: 1,
    partialResponse: true,
  },
  {
    name: "a partial reply",
    requests: GET,
    replies: "*2\r\n$3\r\nab",
    owed: 1,
    partialResponse: true,
  },
  { name: "pipelined: 10 requests, 10 replies", requests: requests10, replies: replies10 },
  {
    name: "pipelined: 10 requests, 9 replies",
    requests: requests10,
    replies: replies10.slice(0, replies10.lastIndexOf("$")),
    owed: 1,
  },
  {
    name: "pipelined: 10 requests, 9 and a half replies",
    requests: requests10,
    replies: replies10.slice(0, -3),
    owed: 1,
    partialResponse: true,
  },
  {
    name: "the RESET reply",
    requests: REDIS_RESET_COMMAND,
    replies: REDIS_RESET_REPLY,
    unfit: "state",
  },
];

const REQUESTS: Case[] = [
  { name: "one request, nothing answered", requests: GET, owed: 1 },
  { name: "a partial request", requests: "*2\r\n$3\r\nGET\r\n$1\r\n", partialRequest: true },
  { name: "a partial count line", requests: "*1", partialRequest: true },
  { name: "a partial bulk payload", requests: "*1\r\n$4\r\nPI", partialRequest: true },
  { name: "an empty argument", requests: "*2\r\n$4\r\nECHO\r\n$0\r\n\r\n", owed: 1 },
  { name: "an empty command name", requests: "*1\r\n$0\r\n\r\n", replies: "-ERR\r\n" },
  { name: "*0 and *-1 get no reply", requests: "*0\r\n*-1\r\n" },
  { name: "*0 then a request", requests: "*0\r\n" + GET, replies: "+OK\r\n" },
  { name: "inline PING with CRLF", requests: "PING\r\n", owed: 1 },
  { name: "inline PING with LF", requests: "PING\n", owed: 1 },
  { name: "inline PING answered", requests: "PING\r\n", replies: "+PONG\r\n" },
  { name: "blank inline lines get no reply", requests: "\r\n\n   \r\n\t \n" },
  { name: "a partial inline line", requests: "PIN", partialRequest: true },
  { name: "a partial blank line", requests: "\r", partialRequest: true },
  {
    name: "inline and RESP requests mixed",
    requests: "PING\r\n\r\n" + GET + "ECHO hi\n" + "*0\r\n",
    replies: "+PONG\r\n$-1\r\n$2\r\nhi\r\n",
  },
  {
    name: "an inline request with quotes",
    requests: "SET k \"a b \\x41\\\"\" 'c\\'d'\r\n",
    owed: 1,
  },
  { name: "an inline request with an empty quoted argument", requests: 'ECHO ""\r\n', owed: 1 },
  {
    name: "a binary argument",
    requests: concat("*2\r\n$4\r\nECHO\r\n$2\r\n", new Uint8Array([0, 0xff]), "\r\n"),
    owed: 1,
  },
  { name: "BLPOP is an ordinary request", requests: cmd("BLPOP", "q", "0"), owed: 1 },
  {
    name: "a 40-byte command name starting with SELECT",
    requests: cmd("SELECT" + "X".repeat(34), "1"),
    owed: 1,
  },
  { name: "SELECT as an argument", requests: cmd("GET", "SELECT"), owed: 1 },
  { name: "SELEC is not SELECT", requests: cmd("SELEC", "1"), owed: 1 },
  { name: "CLIENT ID", requests: cmd("CLIENT", "ID"), owed: 1 },
  { name: "CLIENT alone", requests: cmd("CLIENT"), owed: 1 },
  { name: "CLIENT SETINFO", requests: cmd("CLIENT", "SETINFO", "LIB-NAME", "x"), owed: 1 },
  { name: "SCRIPT LOAD", requests: cmd("SCRIPT", "LOAD", "return 1"), owed: 1 },
  { name: "SCRIPT with no subcommand", requests: cmd("SCRIPT"), owed: 1 },
  {
    name: "a request after a 1000-byte argument",
    requests: cmd("SET", "k", "v".repeat(1000)) + cmd("SELECT", "2"),
    owed: 2,
    unfit: "state",
    reason: "SELECT",
  },
];

const stateCase = (
  name: string,
  request: string,
  reason: string,
): Case => ({
  name: `${name} is state`,
  requests: request,
  replies: "+OK\r\n",
  unfit: "state",
  reason: `${reason} changes per-connection state`,
});

const STATE: Case[] = [
  stateCase("SELECT", cmd("SELECT", "1"), "SELECT"),
  stateCase("select", cmd("select", "1"), "SELECT"),
  stateCase("Select", cmd("Select", "1"), "SELECT"),
  stateCase("inline select", "select 1\r\n", "SELECT"),
  stateCase("inline SELECT after blanks", "  \t SELECT\t1\n", "SELECT"),
  stateCase("a quoted inline SELECT", '"select" 1\r\n', "SELECT"),
  stateCase("an inline SELECT quoted in the middle", 'se"lect" 1\r\n', "SELECT"),
  stateCase("an inline SELECT with a hex escape", '"\\x53el\\x65ct" 1\r\n', "SELECT"),
  stateCase("AUTH", cmd("auth", "secret"), "AUTH"),
  stateCase("HELLO", cmd("Hello", "3"), "HELLO"),
  stateCase("CLIENT SETNAME", cmd("client", "setname", "app"), "CLIENT SETNAME"),
  stateCase("inline CLIENT SETNAME", "client SetName app\r\n", "CLIENT SETNAME"),
  stateCase("CLIENT TRACKING", cmd("CLIENT", "TRACKING", "on"), "CLIENT TRACKING"),
  {
    ...stateCase("CLIENT NO-EVICT", cmd("client", "no-evict", "on"), "CLIENT NO-EVICT"),
    reason: "CLIENT NO-EVICT changes per-connection state, which RESET clears only from Redis 7.2",
  },
  {
    ...stateCase("CLIENT NO-TOUCH", cmd("CLIENT", "NO-TOUCH", "on"), "CLIENT NO-TOUCH"),
    reason: "which RESET clears only from Redis 7.2",
  },
  stateCase("READONLY", cmd("READONLY"), "READONLY"),
  stateCase("READWRITE", cmd("readwrite"), "READWRITE"),
  stateCase("ASKING", cmd("ASKING"), "ASKING"),
  stateCase("RESET", cmd("reset"), "RESET"),
  {
    name: "the first state reason stays",
    requests: cmd("SELECT", "1") + cmd("AUTH", "pw"),
    replies: "+OK\r\n+OK\r\n",
    unfit: "state",
    reason: "SELECT",
  },
  {
    // Redis 7.0's RESET would clear the SELECT but leave NO-EVICT on.
    name: "state a reset may leave replaces state it clears",
    requests: cmd("SELECT", "1") + cmd("CLIENT", "NO-EVICT", "on") + cmd("AUTH", "pw"),
    replies: "+OK\r\n+OK\r\n+OK\r\n",
    unfit: "state",
    reason: "CLIENT NO-EVICT",
  },
  {
    name: "state before it is answered",
    requests: cmd("SELECT", "1"),
    owed: 1,
    unfit: "state",
    reason: "SELECT",
  },
  {
    name: "a partial SELECT is no state yet",
    requests: "*2\r\n$6\r\nSELECT\r\n$1\r\n",
    partialRequest: true,
  },
];

const TRANSACTIONS: Case[] = [
  {
    name: "MULTI, SET, EXEC answered is fit",
    requests: cmd("MULTI") + cmd("SET", "k", "v") + cmd("EXEC"),
    replies: "+OK\r\n+QUEUED\r\n*1\r\n+OK\r\n",
  },
  {
    name: "MULTI sent is open",
    requests: cmd("MULTI"),
    owed: 1,
    unfit: "state",
    reason: "MULTI without EXEC or DISCARD answered",
  },
  {
    name: "MULTI answered is open",
    requests: cmd("MULTI"),
    replies: "+OK\r\n",
    unfit: "state",
    reason: "MULTI",
  },
  {
    name: "MULTI with EXEC sent but not answered is open",
    requests: cmd("MULTI") + cmd("SET", "k", "v") + cmd("EXEC"),
    replies: "+OK\r\n+QUEUED\r\n",
    owed: 1,
    unfit: "state",
    reason: "MULTI",
  },
  {
    name: "MULTI with EXEC partly answered is open",
    requests: cmd("MULTI") + cmd("SET", "k", "v") + cmd("EXEC"),
    replies: "+OK\r\n+QUEUED\r\n*1\r\n",
    owed: 1,
    partialResponse: true,
    unfit: "state",
    reason: "MULTI",
  },
  {
    name: "MULTI, DISCARD answered is fit",
    requests: "multi\r\nincr n\r\ndiscard\r\n",
    replies: "+OK\r\n+QUEUED\r\n+OK\r\n",
  },
  {
    name: "a refused MULTI opens nothing",
    requests: cmd("MULTI"),
    replies: "-NOPERM no permission\r\n",
  },
  {
    name: "a nested MULTI refused keeps the first open",
    requests: cmd("MULTI") + cmd("MULTI"),
    replies: "+OK\r\n-ERR MULTI calls can not be nested\r\n",
    unfit: "state",
    reason: "MULTI",
  },
  {
    name: "an EXEC that fails leaves MULTI open (it may be EXECABORT or a refused EXEC)",
    requests: cmd("MULTI") + cmd("FOO") + cmd("EXEC"),
    replies: "+OK\r\n-ERR unknown command\r\n-EXECABORT Transaction discarded\r\n",
    unfit: "state",
    reason: "MULTI",
  },
  {
    name: "an EXEC aborted by WATCH closes MULTI",
    requests: cmd("WATCH", "k") + cmd("MULTI") + cmd("INCR", "k") + cmd("EXEC"),
    replies: "+OK\r\n+OK\r\n+QUEUED\r\n*-1\r\n",
  },
  {
    name: "an EXEC aborted by WATCH closes MULTI (RESP3)",
    requests: cmd("WATCH", "k") + cmd("MULTI") + cmd("INCR", "k") + cmd("EXEC"),
    replies: "+OK\r\n+OK\r\n+QUEUED\r\n_\r\n",
  },
  {
    name: "RESET closes MULTI but is state itself",
    requests: cmd("MULTI") + cmd("RESET"),
    replies: "+OK\r\n+RESET\r\n",
    unfit: "state",
    reason: "RESET changes per-connection state",
  },
  {
    name: "WATCH answered is open",
    requests: cmd("WATCH", "k"),
    replies: "+OK\r\n",
    unfit: "state",
    reason: "WATCH without EXEC, DISCARD or UNWATCH answered",
  },
  {
    name: "WATCH, UNWATCH answered is fit",
    requests: cmd("WATCH", "k") + cmd("UNWATCH"),
    replies: "+OK\r\n+OK\r\n",
  },
  {
    name: "WATCH, UNWATCH not answered is open",
    requests: cmd("WATCH", "k") + cmd("UNWATCH"),
    replies: "+OK\r\n",
    owed: 1,
    unfit: "state",
    reason: "WATCH",
  },
  {
    name: "WATCH, MULTI, EXEC answered is fit",
    requests: cmd("WATCH", "k") + cmd("MULTI") + cmd("SET", "k", "v") + cmd("EXEC"),
    replies: "+OK\r\n+OK\r\n+QUEUED\r\n*1\r\n+OK\r\n",
  },
  {
    name: "WATCH, MULTI, DISCARD answered is fit",
    requests: cmd("WATCH", "k") + cmd("MULTI") + cmd("DISCARD"),
    replies: "+OK\r\n+OK\r\n+OK\r\n",
  },
  {
    name: "WATCH then EXEC without MULTI keeps WATCH open",
    requests: cmd("WATCH", "k") + cmd("EXEC"),
    replies: "+OK\r\n-ERR EXEC without MULTI\r\n",
    unfit: "state",
    reason: "WATCH",
  },
  {
    name: "a refused WATCH opens nothing",
    requests: cmd("WATCH"),
    replies: "-ERR wrong number of arguments for 'watch' command\r\n",
  },
  {
    name: "UNWATCH queued inside MULTI, then EXEC, is fit",
    requests: cmd("WATCH", "k") + cmd("MULTI") + cmd("UNWATCH") + cmd("EXEC"),
    replies: "+OK\r\n+OK\r\n+QUEUED\r\n*1\r\n+OK\r\n",
  },
  {
    name: "a push before EXEC's reply settles nothing",
    requests: cmd("MULTI") + cmd("EXEC"),
    replies: "+OK\r\n" + PUSH + "*0\r\n",
  },
  {
    name: "a state command wins over an open MULTI",
    requests: cmd("MULTI") + cmd("SELECT", "1"),
    replies: "+OK\r\n+QUEUED\r\n",
    unfit: "state",
    reason: "SELECT",
  },
];

const brokenCase = (name: string, request: string, reason: string): Case => ({
  name: `${name} is broken`,
  requests: request,
  owed: 1,
  unfit: "broken",
  reason,
});

const BROKEN: Case[] = [
  brokenCase("SUBSCRIBE", cmd("SUBSCRIBE", "ch"), "SUBSCRIBE: pub/sub"),
  brokenCase("PSUBSCRIBE", cmd("psubscribe", "ch*"), "PSUBSCRIBE: pub/sub"),
  brokenCase("SSUBSCRIBE", cmd("SSUBSCRIBE", "ch"), "SSUBSCRIBE: pub/sub"),
  brokenCase("UNSUBSCRIBE", cmd("UNSUBSCRIBE", "a", "b"), "UNSUBSCRIBE: pub/sub"),
  brokenCase("PUNSUBSCRIBE", cmd("PUNSUBSCRIBE"), "PUNSUBSCRIBE: pub/sub"),
  brokenCase("SUNSUBSCRIBE", cmd("SUNSUBSCRIBE"), "SUNSUBSCRIBE: pub/sub"),
  brokenCase("inline subscribe", "subscribe news\r\n", "SUBSCRIBE"),
  brokenCase("MONITOR", cmd("MONITOR"), "MONITOR"),
  brokenCase("CLIENT REPLY OFF", cmd("CLIENT", "REPLY", "OFF"), "CLIENT REPLY"),
  brokenCase("CLIENT REPLY SKIP", cmd("client", "reply", "skip"), "CLIENT REPLY"),
  brokenCase("CLIENT REPLY ON", cmd("Client", "Reply", "On"), "CLIENT REPLY"),
  brokenCase("SCRIPT DEBUG YES", cmd("SCRIPT", "DEBUG", "YES"), "SCRIPT DEBUG"),
  brokenCase("SCRIPT DEBUG SYNC", cmd("script", "debug", "sync"), "SCRIPT DEBUG"),
  brokenCase("inline script debug", "script debug yes\r\n", "SCRIPT DEBUG"),
  brokenCase("QUIT", cmd("QUIT"), "QUIT"),
  brokenCase("SYNC", cmd("SYNC"), "SYNC"),
  brokenCase("PSYNC", cmd("PSYNC", "?", "-1"), "PSYNC"),
  brokenCase("REPLCONF", cmd("REPLCONF", "ACK", "0"), "REPLCONF"),
  {
    name: "broken wins over an earlier state",
    requests: cmd("SELECT", "1") + cmd("MONITOR"),
    owed: 2,
    unfit: "broken",
    reason: "MONITOR",
  },
  {
    name: "a later state does not replace broken",
    requests: cmd("QUIT") + cmd("SELECT", "1"),
    owed: 1,
    unfit: "broken",
    reason: "QUIT",
  },
  {
    name: "a reply with no request",
    replies: "+OK\r\n",
    partialResponse: true,
    unfit: "broken",
    reason: "reply with no request",
  },
  {
    name: "one reply too many",
    requests: GET + GET,
    replies: "+OK\r\n+OK\r\n:1\r\n",
    partialResponse: true,
    unfit: "broken",
    reason: "reply with no request",
  },
  {
    name: "a reply to a partial request",
    requests: "*2\r\n$3\r\nGET\r\n",
    replies: "-ERR Protocol error\r\n",
    partialResponse: true,
    partialRequest: true,
    unfit: "broken",
    reason: "reply with no request",
  },
  {
    name: "a reply with no request after an attribute",
    replies: "|1\r\n+a\r\n+b\r\n+OK\r\n",
    partialResponse: true,
    unfit: "broken",
    reason: "reply with no request",
  },
];

const invalidReply = (name: string, replies: Bytes, reason = "invalid reply"): Case => ({
  name: `invalid reply: ${name}`,
  requests: GET,
  replies,
  owed: 1,
  partialResponse: true,
  unfit: "broken",
  reason,
});

const invalidRequest = (name: string, requests: Bytes, reason = "invalid request"): Case => ({
  name: `invalid request: ${name}`,
  requests,
  partialRequest: true,
  unfit: "broken",
  reason,
});

const INVALID: Case[] = [
  invalidReply("unknown type byte", "?\r\n", "type byte 0x3f"),
  invalidReply("lower-case type byte", "ok\r\n", "type byte 0x6f"),
  invalidReply("length that is not a number", "$abc\r\n", "not a number"),
  invalidReply("empty length", "$\r\n", "not a number"),
  invalidReply("length with a leading zero", "$01\r\na\r\n", "not a number"),
  invalidReply("length -0", "$-0\r\n", "not a number"),
  invalidReply("length with a plus sign", "$+1\r\na\r\n", "not a number"),
  invalidReply("length with a space", "$ 1\r\na\r\n", "not a number"),
  invalidReply("negative bulk length other than -1", "$-2\r\n", "negative length"),
  invalidReply("negative array length other than -1", "*-2\r\n", "negative length"),
  invalidReply("null map", "%-1\r\n", "negative length"),
  invalidReply("null blob error", "!-1\r\n", "negative length"),
  invalidReply("length of 2^53", "$9007199254740992\r\n", "over 2^53"),
  invalidReply("a 70-digit length", "*" + "1".repeat(70) + "\r\n", "over 2^53"),
  invalidReply("map of 2^52 pairs", "%4503599627370496\r\n", "over 2^53"),
  invalidReply("missing CRLF after bulk data", "$3\r\nabcXY", "CRLF"),
  invalidReply("CR without LF after bulk data", "$1\r\nx\r\r", "CRLF"),
  invalidReply("LF alone after bulk data", "$1\r\nx\n", "CRLF"),
  invalidReply("header line ended by LF alone", "$1\na\r\n", "not a number"),
  invalidReply("header line with CR then garbage", "*1\rX", "CRLF"),
  invalidReply("simple string with CR then garbage", "+OK\rX\r\n", "CRLF"),
  invalidReply("integer that is not a number", ":abc\r\n", "a number"),
  invalidReply("integer with no digits", ":\r\n", "a number"),
  invalidReply("integer with a sign only", ":-\r\n", "a number"),
  invalidReply("integer with a letter", ":1a\r\n", "a number"),
  invalidReply("big number that is not a number", "(12x\r\n", "a number"),
  invalidReply("boolean x", "#x\r\n", "boolean"),
  invalidReply("boolean tt", "#tt\r\n", "CRLF"),
  invalidReply("null with content", "_x\r\n", "CRLF"),
  invalidReply("'.' outside a streamed aggregate", ".\r\n", "'.'"),
  invalidReply("'.' in a fixed array", "*2\r\n:1\r\n.\r\n", "'.'"),
  invalidReply("'.' after a key of a streamed map", "%?\r\n+k\r\n.\r\n", "'.'"),
  invalidReply("';' outside a streamed string", ";1\r\nx\r\n", "type byte 0x3b"),
  invalidReply("streamed verbatim string", "=?\r\n", "not a number"),
  invalidReply("streamed attribute", "|?\r\n", "not a number"),
  invalidReply("streamed push", ">?\r\n", "not a number"),
  invalidReply("negative streamed part", "$?\r\n;-1\r\n", "negative length"),
  invalidReply("streamed string without ';'", "$?\r\n+OK\r\n", "expected ';'"),
  invalidReply("aggregates nested 1025 deep", "*1\r\n".repeat(1025) + ":1\r\n", "deeper than 1024"),
  invalidRequest("not '$' in an array", "*1\r\nX", "expected '$', got 0x58"),
  invalidRequest("inline argument in an array", "*1\r\nPING\r\n", "expected '$'"),
  invalidRequest("null bulk string", "*1\r\n$-1\r\n", "negative bulk length"),
  invalidRequest("count that is not a number", "*x\r\n", "not a number"),
  invalidRequest("count with a leading zero", "*01\r\n", "not a number"),
  invalidRequest("negative count other than -1", "*-2\r\n", "negative array length"),
  invalidRequest("length of 2^53", "*1\r\n$9007199254740992\r\n", "over 2^53"),
  invalidRequest("missing CRLF after bulk data", "*1\r\n$3\r\nabcd", "CRLF"),
  invalidRequest("LF alone after bulk data", "*1\r\n$1\r\na\n", "CRLF"),
  invalidRequest("NUL byte in an inline request", "PI\0NG\r\n", "NUL"),
  invalidRequest("unbalanced double quote", '"PING\r\n', "unbalanced quotes"),
  invalidRequest("unbalanced single quote", "ECHO 'a\n", "unbalanced quotes"),
  invalidRequest("escaped closing quote", 'ECHO "a\\"\r\n', "unbalanced quotes"),
  invalidRequest("closing quote followed by a letter", "'sel'ect 1\r\n", "closing quote"),
  {
    name: "bytes after broken are ignored",
    requests: "*1\r\nX" + GET,
    replies: "garbage",
    partialRequest: true,
    unfit: "broken",
    reason: "expected '$'",
  },
  {
    name: "a request after broken replies is ignored",
    requests: GET,
    replies: "?" + "+OK\r\n",
    owed: 1,
    partialResponse: true,
    unfit: "broken",
    reason: "type byte",
  },
];

const TABLES: [string, Case[]][] = [
  ["replies", REPLIES],
  ["requests", REQUESTS],
  ["state", STATE],
  ["transactions", TRANSACTIONS],
  ["broken", BROKEN],
  ["invalid bytes", INVALID],
];

let seed = 1;
for (const [table, cases] of TABLES) {
  for (const c of cases) {
    const caseSeed = seed++;
    Deno.test(`redis tracker (${table}): ${c.name}, fed whole, split anywhere or byte by byte`, () => {
      check(c, caseSeed);
    });
  }
}

Deno.test("redis tracker never keeps a chunk: each is overwritten once fed, for every case and split", () => {
  let caseSeed = 1000;
  for (const [, cases] of TABLES) {
    for (const c of cases) check(c, caseSeed++, true);
  }
});

Deno.test("redis tracker reads a chunk it was given again after the caller changed it", () => {
  // The same buffer is reused by the caller for the next read, as a relay does.
  const stream = bytes(cmd("SET", "k", "v".repeat(100)) + cmd("SELECT", "1") + GET);
  const buffer = new Uint8Array(7);
  const tracker = new RedisTracker();
  for (let at = 0; at < stream.length; at += buffer.length) {
    const piece = stream.subarray(at, at + buffer.length);
    buffer.fill(0xff);
    buffer.set(piece);
    tracker.onClientBytes(buffer.subarray(0, piece.length));
  }
  assertEquals(snapshot(tracker), {
    owed: 3,
    partialRequest: false,
    partialResponse: false,
    unfit: { kind: "state", reason: "SELECT changes per-connection state" },
  });
});

Deno.test("redis tracker skips 1 MiB payloads fed in 64 KiB chunks, 64 MiB in all", () => {
  const MiB = 1024 * 1024;
  const chunk = new Uint8Array(64 * 1024).fill(0x61);
  const tracker = new RedisTracker();
  tracker.onClientBytes(bytes(`*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$${MiB}\r\n`));
  for (let k = 0; k < 16; k++) {
    tracker.onClientBytes(chunk);
    assert(tracker.partialRequest);
  }
  tracker.onClientBytes(bytes("\r\n"));
  assertEquals(tracker.owed, 1);
  assertFalse(tracker.partialRequest);
  tracker.onServerBytes(bytes("+OK\r\n"));
  tracker.onClientBytes(bytes(GET.repeat(63)));
  assertEquals(tracker.owed, 63);
  for (let reply = 0; reply < 63; reply++) {
    tracker.onServerBytes(bytes(`$${MiB}\r\n`));
    for (let k = 0; k < 16; k++) tracker.onServerBytes(chunk);
    assert(tracker.partialResponse);
    tracker.onServerBytes(bytes("\r\n"));
    assertFalse(tracker.partialResponse);
  }
  assertEquals(tracker.owed, 0);
  assert(isComplete(tracker));
});

Deno.test("redis tracker takes an inline line of 64 KiB and breaks on a longer one", () => {
  const ok = bytes("ECHO " + "a".repeat(64 * 1024 - 5) + "\n");
  const tooLong = bytes("ECHO " + "a".repeat(64 * 1024 - 4) + "\n");
  for (const pieces of [(b: Uint8Array) => [b], byteByByte]) {
    assertEquals(run(pieces(ok), []), {
      owed: 1,
      partialRequest: false,
      partialResponse: false,
      unfit: undefined,
    });
    const broken = run(pieces(tooLong), []);
    assertEquals(broken.unfit?.kind, "broken");
    assertStringIncludes(broken.unfit?.reason ?? "", "over 65536 bytes");
  }
});

Deno.test("redis tracker marks more than 1024 transaction commands in flight as state", () => {
  const tracker = new RedisTracker();
  tracker.onClientBytes(bytes(cmd("WATCH", "k").repeat(1025)));
  assertEquals(tracker.unfit?.kind, "state");
  assertStringIncludes(tracker.unfit?.reason ?? "", "more than 1024");
  tracker.onServerBytes(bytes("+OK\r\n".repeat(1025)));
  assertEquals(tracker.owed, 0);
  assertEquals(tracker.unfit?.kind, "state");
});

Deno.test("redis tracker follows interleaved requests and replies, complete only between exchanges", () => {
  const tracker = new RedisTracker();
  assert(isComplete(tracker));
  tracker.onClientBytes(bytes("*2\r\n$3\r\nGET"));
  assertFalse(isComplete(tracker));
  tracker.onClientBytes(bytes("\r\n$1\r\nk\r\n"));
  assertEquals(tracker.owed, 1);
  tracker.onServerBytes(bytes(PUSH));
  assertEquals(tracker.owed, 1);
  tracker.onServerBytes(bytes("$1\r\nv"));
  assert(tracker.partialResponse);
  tracker.onServerBytes(bytes("\r\n"));
  assert(isComplete(tracker));
  tracker.onClientBytes(bytes("MULTI\r\n"));
  tracker.onServerBytes(bytes("+OK\r\n"));
  assertEquals(tracker.owed, 0);
  assertFalse(isComplete(tracker));
  tracker.onClientBytes(bytes("EXEC\r\n"));
  tracker.onServerBytes(bytes("*0\r\n"));
  assert(isComplete(tracker));
});

Deno.test("redis tracker: a blocking command that takes what it waits for is not drainable until its own reply, pipelined or inline, in any case", () => {
  const blocking = [
    cmd("BLPOP", "q", "0"),
    "brpop q 0\r\n",
    cmd("bzPopMin", "z", "0"),
    cmd("BLMOVE", "a", "b", "LEFT", "LEFT", "0"),
    cmd("XREADGROUP", "GROUP", "g", "c", "BLOCK", "0", "STREAMS", "s", ">"),
  ];
  for (const request of blocking) {
    const tracker = new RedisTracker();
    tracker.onClientBytes(bytes(cmd("GET", "a") + request + cmd("GET", "b")));
    assertFalse(tracker.drainable, request);
    tracker.onServerBytes(bytes("$-1\r\n"));
    assertFalse(tracker.drainable, request);
    tracker.onServerBytes(bytes("*-1\r\n"));
    assert(tracker.drainable, request); // only GET b is owed now
    assertEquals(tracker.owed, 1);
  }
  // Commands that wait without taking, or only look like it, are drained as before.
  const tracker = new RedisTracker();
  tracker.onClientBytes(bytes(cmd("XREAD", "BLOCK", "0", "STREAMS", "s", "$") + cmd("BLPOPX")));
  assert(tracker.drainable);
});

Deno.test("redis tracker's RESET request and reply are the documented bytes", () => {
  assertEquals(new TextDecoder().decode(REDIS_RESET_COMMAND), "*1\r\n$5\r\nRESET\r\n");
  assertEquals(new TextDecoder().decode(REDIS_RESET_REPLY), "+RESET\r\n");
});

Deno.test("redis tracker: a session that always has UNWATCHes awaiting replies holds a bounded list of them", () => {
  const tracker = new RedisTracker();
  const request = encoder.encode("*1\r\n$7\r\nUNWATCH\r\n");
  const reply = encoder.encode("+OK\r\n");
  for (let i = 0; i < 100; i++) tracker.onClientBytes(request);
  let most = 0;
  for (let i = 0; i < 200_000; i++) {
    tracker.onClientBytes(request); // 100 always awaited
    tracker.onServerBytes(reply);
    most = Math.max(most, tracker.pendingEntries);
  }
  assertEquals(tracker.owed, 100);
  assert(most <= 2_100, `${most} entries held`);
  assertEquals(tracker.unfit, undefined);
});
