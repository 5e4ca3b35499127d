/**
 * review9: the parse path made faster this session against the parse path as it was (main at
 * 124a7dd, copied verbatim into tests/helpers/reference_parser_124a7dd.ts). The same hostile
 * inputs go to both; each must get the same verdict — the same value, or a refusal with the same
 * code — at three levels: the strict JSON parser, the shape helpers a hot message is built of,
 * and parseMessage, the one chokepoint a frame's bytes go through. Speed work must not change
 * what is accepted.
 */
import assert from "node:assert/strict";
import { fromBase64, toBase64 } from "../../lib/bytes.ts";
import { codeOf } from "../../lib/errors.ts";
import { C2sMsgShape, RelayMessageShape } from "../../lib/message/record.ts";
import { parseMessage } from "../../lib/wire/messages.ts";
import * as shapes from "../../lib/wire/shape.ts";
import { parseStrictJson, StrictJsonError } from "../../lib/wire/strict_json.ts";
import * as reference from "../helpers/reference_parser_124a7dd.ts";
import { CORPUS, fuzzPayload, fuzzSeed, mutateJson, Rng, SCHEMAS } from "../../testkit/fuzz.ts";

const SEED = fuzzSeed();
const encoder = new TextEncoder();
/** lib's fromUtf8 at 124a7dd: strict, and a leading BOM skipped (PROTOCOL §2 says ours does). */
const fatalUtf8 = new TextDecoder("utf-8", { fatal: true });

type Verdict = { value: unknown } | { refused: string };

/** lib's parser: a value, or a refusal that must be a StrictJsonError (never a crash). */
function current(text: string): Verdict {
  try {
    return { value: parseStrictJson(text) };
  } catch (error) {
    assert.ok(error instanceof StrictJsonError, `threw ${String(error)} for ${preview(text)}`);
    return { refused: "StrictJsonError" };
  }
}

function old(text: string): Verdict {
  try {
    return { value: reference.referenceParseStrictJson(text) };
  } catch (error) {
    assert.ok(error instanceof reference.ReferenceStrictJsonError, String(error));
    return { refused: "StrictJsonError" };
  }
}

function preview(text: string): string {
  return JSON.stringify(text.length > 160 ? `${text.slice(0, 160)}…(${text.length})` : text);
}

/** Same verdict, same value (-0, __proto__ as an own member, prototypes included). */
function assertSame(text: string, what = "") {
  const want = old(text);
  const got = current(text);
  assert.deepStrictEqual(got, want, `${what}seed ${SEED}: ${preview(text)}`);
  if ("value" in got) assertPlainObjects(got.value, text);
}

/** Every object a parse returns is an ordinary one: Object.prototype, own members only. */
function assertPlainObjects(value: unknown, text: string, depth = 0): void {
  if (typeof value !== "object" || value === null || depth > 70) return;
  const proto = Object.getPrototypeOf(value);
  assert.ok(proto === Object.prototype || proto === Array.prototype, preview(text));
  for (const key of Object.keys(value)) {
    assertPlainObjects((value as Record<string, unknown>)[key], text, depth + 1);
  }
}

const nest = (n: number, open = "[", close = "]", inner = "") =>
  open.repeat(n) + inner + close.repeat(n);
const objects = (n: number, inner = "1") => '{"a":'.repeat(n) + inner + "}".repeat(n);

/** Inputs chosen to split a fast path from a careful one. */
const HOSTILE: string[] = [
  // duplicate names: plain, nested, escaped to the same name, __proto__, after containers closed
  '{"a":1,"a":1}',
  '{"a":1,"b":2,"a":3}',
  '{"x":{"k":"v","k":"w"}}',
  '[{"a":1},{"a":1,"a":2}]',
  '{"__proto__":1,"__proto__":2}',
  '{"__proto__":{"polluted":1}}',
  '{"__proto__":[],"constructor":{},"toString":1,"hasOwnProperty":2}',
  '{"a":1,"\\u0061":2}',
  '{"\\u005f_proto__":1,"__proto__":2}',
  '{"x\\"y":1,"x\\u0022y":2}',
  '{"a":1,"b":{"c":1,"d":[1,{"e":2}]},"a":2}',
  '{"a" :1, "a"\n\t:2}',
  '{"":1,"":2}',
  '{"":1,"\\u0000":2}',
  '{"\\ud800":1,"\\ud800":2}',
  '{"\\ud800":1,"\\udc00":2}',
  '{"1":1,"01":2,"1.0":3}',
  '{"1":1,"1":2}',
  '{"4294967295":1,"4294967295":2}',
  '{"-0":1,"0":2}',
  // a duplicate hidden by an extra member elsewhere, colons and brackets inside strings
  '{"a":1,"a":2,"b:":3}',
  '{"a":"x:y","a":1}',
  '{"a":"}{\\"a\\":1","b":1}',
  '{"a\\\\":1,"a":2}',
  '{"a\\\\\\"":1,"a\\\\\\"":2}',
  '{"k":":::","v":"{[:]}"}',
  '["a:b",{"c":"d:e"},"f"]',
  '{"a":{"b":1},"c":{"b":1,"b":1},"d":0}',
  '{"a":1,"a":2}'.replace("}", ',"b":{"c":3}}'),
  '[{"a":1,"a":1},{"b":1},{"c":1,"d":2}]',
  // bad escapes, lone surrogates, control characters
  '"\\x41"',
  '"\\u12"',
  '"\\u12G4"',
  '"\\U0041"',
  '"\\\'"',
  '"\\0"',
  '"\\"',
  '"ends in a backslash\\',
  '"\\ud800"',
  '"\\udc00\\ud800"',
  '"\\ud83d\\ude00"',
  '"\\uD83D\\uDE00"',
  '"\ud800 raw lone surrogate"',
  '"\udc00"',
  '{"\ud800":1}',
  '"tab\there"',
  '"nul\u0000"',
  '"del\u007f ok"',
  '"\u2028\u2029 are fine in JSON strings"',
  '"\\/\\b\\f\\n\\r\\t"',
  // numbers out of range and out of grammar
  "1e400",
  "-1e400",
  "1e-400",
  "9007199254740993",
  "9007199254740992",
  "-0",
  "-0.0",
  "0e0",
  "1E+2",
  "1.0",
  "01",
  "-01",
  "+1",
  ".5",
  "1.",
  "1.e5",
  "1e",
  "0x10",
  "NaN",
  "Infinity",
  "-Infinity",
  "1_000",
  "1".repeat(400),
  "0." + "0".repeat(400) + "1",
  '{"seqno":1e400}',
  '{"seqno":-0}',
  '{"seqno":9007199254740993}',
  // literals and whitespace JSON does not have
  "tru",
  "True",
  "nul",
  "null ",
  " \t\n\rnull\r\n\t ",
  "\u00a0null",
  "\ufeffnull",
  "null\u00a0",
  "\u000bnull",
  "\u000cnull",
  "null\u2028",
  // trailing bytes and empty input
  "",
  " ",
  "{}x",
  "{}{}",
  "{} {}",
  "{}\u0000",
  "{}\n",
  "{} /*c*/",
  "[1,]",
  '{"a":1,}',
  "[,1]",
  '{"a" 1}',
  '{"a":}',
  "{a:1}",
  "{'a':1}",
  '{"a":1 "b":2}',
  "[1 2]",
  // depth: the edge and a hostile depth, arrays, objects, mixed, with a duplicate at the bottom
  nest(63),
  nest(64),
  nest(65),
  nest(66),
  nest(64, "[", "]", "1"),
  nest(65, "[", "]", "1"),
  nest(64, "[", "]", '{"a":1}'),
  nest(63, "[", "]", '{"a":1,"a":2}'),
  nest(64, "[", "]", '{"a":1,"a":2}'),
  nest(65, "[", "]", '{"a":1,"a":2}'),
  objects(63),
  objects(64),
  objects(65),
  objects(66),
  objects(64, '{"b":1,"b":2}'),
  objects(63, "[]"),
  objects(64, "[]"),
  objects(64, "{}"),
  '{"a":' + nest(63) + "}",
  '{"a":' + nest(64) + "}",
  '{"a":' + nest(65) + "}",
  nest(1000),
  nest(100_000),
  "[".repeat(100_000),
  nest(32_000, '{"a":[', "]}"),
  '{"a":'.repeat(20_000) + "1",
  // long strings of escapes (a backward scan for escaped quotes)
  '"' + "\\\\".repeat(20_000) + '"',
  '"' + '\\"'.repeat(20_000) + '"',
  '{"' + "\\\\".repeat(5000) + '":1,"' + "\\\\".repeat(5000) + '":2}',
  '{"' + '\\"'.repeat(5000) + '":1,"' + "\\u0022".repeat(5000) + '":2}',
  '"' + "\\".repeat(20_001) + '"',
];

Deno.test("parseStrictJson() gives 124a7dd's verdict on hostile inputs: duplicates, escapes, surrogates, numbers, depth, trailing bytes", () => {
  for (const text of HOSTILE) assertSame(text);
});

Deno.test("parseStrictJson() gives 124a7dd's verdict on fuzzed protocol messages and on mutated JSON with repeated names", () => {
  const rng = new Rng(SEED ^ 0x9d1f);
  let accepted = 0;
  let refused = 0;
  for (let i = 0; i < 6000; i++) {
    let text: string;
    try {
      text = fatalUtf8.decode(fuzzPayload(rng));
    } catch {
      continue; // not UTF-8: the chokepoint test below covers bytes
    }
    const verdict = old(text);
    assertSame(text);
    if ("value" in verdict) accepted++;
    else refused++;
  }
  // Repeated names spliced into valid messages at every depth: the case a fast path can miss.
  for (let i = 0; i < 3000; i++) {
    const base = JSON.stringify(mutateJson(rng, structuredClone(rng.pick(Object.values(CORPUS)))));
    const opens = [...base.matchAll(/\{"([^"\\]*)":/g)];
    if (opens.length === 0) continue;
    const at = rng.pick(opens);
    const name = rng.chance(0.5) ? at[1] : rng.pick(["__proto__", "type", "a", ""]);
    const spliced = base.slice(0, at.index! + 1) + `"${name}":${rng.pick(["1", '"x"', "[]"])},` +
      base.slice(at.index! + 1);
    assertSame(spliced);
    if ("value" in old(spliced)) accepted++;
    else refused++;
  }
  assert.ok(accepted > 1000 && refused > 1000, `${accepted} accepted, ${refused} refused`);
});

/** Names and strings made of what a scan for string ends and colons must get right. */
const TRICKY = [
  "a",
  "a\\",
  "\\",
  '"',
  'a"',
  '\\"',
  ":",
  '":',
  "{",
  "}",
  "[",
  "]",
  ",",
  "__proto__",
  "",
  "a:b",
];

/**
 * JSON text written by hand (JSON.stringify would drop a repeated name): objects whose names
 * are drawn with replacement from TRICKY, so some repeat, nested in objects and arrays.
 */
function trickyText(rng: Rng, depth = 0): string {
  const r = rng.int(depth > 4 ? 3 : 6);
  if (r === 0) return JSON.stringify(rng.pick(TRICKY));
  if (r === 1) return rng.pick(["1", "-0", "1e400", "true", "null", '"\\u0022"']);
  if (r === 2) return '"' + rng.pick(TRICKY).replaceAll("\\", "\\\\").replaceAll('"', '\\"') + '"';
  if (r === 3) {
    const items = Array.from({ length: rng.int(4) }, () => trickyText(rng, depth + 1));
    return `[${items.join(",")}]`;
  }
  const names = Array.from({ length: rng.range(1, 4) }, () => rng.pick(TRICKY));
  const escape = (name: string) =>
    rng.chance(0.3) ? JSON.stringify(name).replace("a", "\\u0061") : JSON.stringify(name);
  return `{${names.map((name) => `${escape(name)}:${trickyText(rng, depth + 1)}`).join(",")}}`;
}

Deno.test("parseStrictJson() gives 124a7dd's verdict on objects whose names hold quotes, backslashes, colons and brackets, some repeated", () => {
  const rng = new Rng(SEED ^ 0x7a11);
  let accepted = 0;
  let refused = 0;
  for (let i = 0; i < 20_000; i++) {
    const text = trickyText(rng);
    assertSame(text);
    if ("value" in old(text)) accepted++;
    else refused++;
  }
  assert.ok(accepted > 2000 && refused > 2000, `${accepted} accepted, ${refused} refused`);
});

/**
 * Pairs parsed one after the other in one process: V8's JSON.parse (Deno 2.9.6, V8 15.0) reads
 * a member name with an escape by the object shape an earlier parse made — after
 * `{"x":1,"a\\":2}` it reads `{"x":1,"a\"":2}` as the name `a\` — so a parser that trusts
 * JSON.parse's names can read a name the text does not hold, and miss a repeated one (review9
 * R9-4). Each second text must get the verdict it gets alone.
 */
const AFTER: [string, string][] = [
  [String.raw`{"x":1,"a\\":2}`, String.raw`{"x":1,"a\"":2}`],
  [String.raw`{"x":1,"a\\":2,"a\"":3}`, String.raw`{"x":1,"a\"":2,"a\"":3}`],
  [String.raw`{"type":"msg","k\\":1,"k\"":2}`, String.raw`{"type":"msg","k\"":1,"k\"":2}`],
  [String.raw`{"\\":1,"\"":2}`, String.raw`{"\"":1,"\"":2}`],
  [String.raw`{"y":{},"\\":null,"\"":1}`, String.raw`{"y":{},"\"":null,"\"":1}`],
  [String.raw`{"x":1,"a\\":2}`, String.raw`{"x":1,"a\u005c":2,"a\u0022":3}`],
];

Deno.test("parseStrictJson() gives 124a7dd's verdict on a text parsed after another of the same object shape: no name misread, no repeated name missed (R9-4)", () => {
  for (const [first, second] of AFTER) {
    assertSame(first, "first: ");
    assertSame(second, `after ${first}: `);
  }
});

// ---- the shape helpers ----

const SHAPE_VALUES: unknown[] = [
  undefined,
  null,
  true,
  false,
  0,
  -0,
  1,
  -1,
  0.5,
  1e400,
  -1e400,
  NaN,
  2 ** 53 - 1,
  2 ** 53,
  2 ** 53 + 2,
  "",
  "a",
  "x".repeat(81),
  "1",
  "AAAA",
  "AA==",
  "AB==",
  "AAA=",
  "AAB=",
  "A===",
  "====",
  "AA=A",
  "AA",
  "AAAAA",
  " AAAA",
  "AAAA\n",
  "AA AA==",
  "-_-_",
  "AAAA".repeat(11),
  "A".repeat(43) + "=",
  "A".repeat(43) + "E",
  "\ud800AAA",
  "09af",
  "09aF",
  "09ag",
  "0a9/",
  "0a9:",
  "0a9`",
  "0a9g",
  "0a9",
  "0a9f0",
  "０a9f",
  [],
  [1],
  new Array(6).fill("A".repeat(43) + "="),
  {},
  { a: 1 },
  JSON.parse('{"__proto__":1,"a":1}'),
  JSON.parse('{"__proto__":1}'),
  Object.create({ a: 1 }),
  Object.assign(Object.create(null), { a: 1, b: 2 }),
  { a: 1, b: 2, c: 3 },
  { a: 1, b: undefined },
  { b: 1 },
  { a: 1, constructor: 2 },
];

function describe(value: unknown): string {
  if (typeof value === "string") return JSON.stringify(value);
  if (typeof value !== "object" || value === null) return String(value);
  return `${Object.getPrototypeOf(value) === null ? "null-prototype " : ""}${
    JSON.stringify(value)
  }`;
}

type Helper = [string, (m: typeof shapes | typeof reference, v: unknown) => unknown];
const HELPERS: Helper[] = [
  ["members(a; b)", (m, v) => m.members(v, ["x"], ["a"], ["b"])],
  ["members(a, b)", (m, v) => m.members(v, [], ["a", "b"])],
  ["members(; a, b, c)", (m, v) => m.members(v, [], [], ["a", "b", "c"])],
  ["text(1..80)", (m, v) => m.text(v, [], "t", 1, 80)],
  ["literal", (m, v) => m.literal(v, [], "l", ["a", "1", "AAAA"])],
  // lowerHex replaced matching() with a lowercase hex regex (a relay's sid and author_fp).
  [
    "lowerHex(4)",
    (m, v) =>
      m === shapes
        ? shapes.lowerHex(v, [], "r", 4)
        : reference.matching(v, [], "r", /^[0-9a-f]{4}$/, "4 lowercase hex characters"),
  ],
  ["uint", (m, v) => m.uint(v, [], "u")],
  ["uint(1)", (m, v) => m.uint(v, [], "u", 1)],
  ["list(5)", (m, v) => m.list(v, [], "l", 5)],
  ["isTrue", (m, v) => m.isTrue(v, [], "f")],
  ["base64Text(0..3)", (m, v) => m.base64Text(v, [], "b", 0, 3)],
  ["base64Text(32..32)", (m, v) => m.base64Text(v, [], "b", 32, 32)],
  ["base64Text(1..33)", (m, v) => m.base64Text(v, [], "b", 1, 33)],
];

Deno.test("the shape helpers give 124a7dd's verdicts and paths: members, text, uint, list, base64 (canonical only)", () => {
  for (const [name, helper] of HELPERS) {
    const run = (m: typeof shapes | typeof reference) =>
      m.shape((v) => helper(m, v)) as { safeParse(v: unknown): unknown };
    const now = run(shapes);
    const then = run(reference);
    for (const value of SHAPE_VALUES) {
      assert.deepStrictEqual(
        now.safeParse(value),
        then.safeParse(value),
        `${name}(${describe(value)})`,
      );
    }
  }
});

/** Base64 a fast decoder could take that 124a7dd's refused, or the reverse. */
const BASE64_TEXTS: string[] = [
  "",
  "AAAA",
  "AA==",
  "AAA=",
  "AB==",
  "AAB=",
  "A===",
  "====",
  "=AAA",
  "AA=A",
  "AA",
  "AAA",
  "AAAAA",
  " AAAA",
  "AAAA ",
  "AA AA=",
  "AAA AAA=",
  "AAAA    ",
  "AA==    ",
  "AA\n==",
  "AAAA\tAAAA",
  "AAAA\fAAA",
  "AAAA\rAA==",
  "AAAA\u00a0AA=",
  "-_-_",
  "AA+/",
  "AAAAAA==",
  "AAAAAAA=",
  "AAAAAAAA",
  "AAAA====",
  "AAAA=AAA",
  "\u0000AAA",
  "ＡＡＡＡ",
  "AAAA".repeat(1000),
  "AAAA".repeat(999) + "AA==",
  "AAAA".repeat(999) + "A A=",
];

Deno.test("fromBase64() gives 124a7dd's verdict and bytes on canonical, non-canonical, padded and whitespace base64", () => {
  const verdict = (decode: (text: string) => Uint8Array, text: string) => {
    try {
      return { bytes: [...decode(text)] };
    } catch (error) {
      assert.ok(error instanceof TypeError, String(error));
      return { refused: "TypeError" };
    }
  };
  const rng = new Rng(SEED ^ 0xb64);
  const texts = [...BASE64_TEXTS];
  for (let i = 0; i < 3000; i++) {
    // Canonical text with one character changed, inserted or dropped.
    const raw = rng.bytes(rng.int(12));
    const text = [...toBase64(raw)];
    const at = rng.int(text.length + 1);
    const char = rng.pick(["A", "B", "=", " ", "\n", "+", "/", "-", "_", "Q", "g"]);
    const edit = rng.int(3);
    if (edit === 0) text.splice(at, 1, char);
    else if (edit === 1) text.splice(at, 0, char);
    else text.splice(at, 1);
    texts.push(text.join(""));
  }
  for (const text of texts) {
    const want = verdict(reference.fromBase64, text);
    assert.deepStrictEqual(verdict(fromBase64, text), want, JSON.stringify(text));
  }
});

// ---- the chokepoint: a frame's bytes to a typed message ----

/** 124a7dd's parseMessage, from the copied parser: a value, or the code it refused with. */
function oldMessage(
  bytes: Uint8Array,
  schema: shapes.Shape<unknown>,
  discriminator: "type" | "kind",
): Verdict {
  let value: unknown;
  try {
    value = reference.referenceParseStrictJson(fatalUtf8.decode(bytes));
  } catch {
    return { refused: "PROTOCOL_ERROR" };
  }
  const type = typeof value === "object" && value !== null && !Array.isArray(value)
    ? (value as Record<string, unknown>)[discriminator]
    : undefined;
  if (typeof type !== "string") return { refused: "PROTOCOL_ERROR" };
  const parsed = schema.safeParse(value);
  return parsed.success ? { value: parsed.data } : { refused: "PROTOCOL_ERROR" };
}

function newMessage(
  bytes: Uint8Array,
  schema: shapes.Shape<unknown>,
  discriminator: "type" | "kind",
): Verdict {
  try {
    return { value: parseMessage(bytes, schema, discriminator) };
  } catch (error) {
    return { refused: codeOf(error) };
  }
}

const RELAY = CORPUS.relay as Record<string, unknown>;
const MSG = CORPUS.msg as Record<string, unknown>;

/** Byte-level inputs a text-level test cannot make: UTF-8 a parser working on bytes could miss. */
function hostileFrames(): Uint8Array[] {
  const msg = JSON.stringify(MSG);
  const frames: Uint8Array[] = [];
  const withBytes = (text: string, marker: string, bytes: number[]) => {
    const [head, tail] = text.split(marker);
    frames.push(new Uint8Array([...encoder.encode(head), ...bytes, ...encoder.encode(tail)]));
  };
  const textBody = '{"type":"msg","record":{"to":"@MARK"}}';
  for (
    const bytes of [
      [0xed, 0xa0, 0x80], // a surrogate encoded (CESU-8)
      [0xed, 0xbf, 0xbf],
      [0xc0, 0xa2], // an overlong quote
      [0xc0, 0xaf],
      [0xe0, 0x80, 0xa2],
      [0xf5, 0x80, 0x80, 0x80],
      [0xf4, 0x90, 0x80, 0x80], // past U+10FFFF
      [0xff],
      [0x80],
      [0xe2, 0x82], // truncated
      [0xef, 0xbf, 0xbd], // a real U+FFFD: valid
      [0xf0, 0x9f, 0x92, 0xa5], // 💥: valid
      [0x00],
      [0x22], // a raw quote inside a name
      [0x5c], // a raw backslash
    ]
  ) {
    withBytes(textBody, "MARK", bytes);
    withBytes(msg, '"to":"', [0x22, 0x74, 0x6f, 0x22, 0x3a, 0x22, ...bytes]);
  }
  frames.push(new Uint8Array([0xef, 0xbb, 0xbf, ...encoder.encode(msg)])); // a BOM first
  frames.push(new Uint8Array([...encoder.encode(msg), 0x00]));
  frames.push(new Uint8Array([...encoder.encode(msg), 0x0a]));
  frames.push(new Uint8Array(0));
  // Repeated members of a real message: at the top, in the record and among the batch's.
  frames.push(encoder.encode(msg.replace('{"type":"msg",', '{"type":"msg","type":"msg",')));
  frames.push(encoder.encode(msg.replace('"to":', '"to":"@x","to":')));
  frames.push(encoder.encode(msg.replace('"proof":[', '"n":2,"proof":[')));
  frames.push(encoder.encode(msg.replace('"k":', '"__proto__":{},"k":')));
  frames.push(encoder.encode(msg.replace('"seqno":1', '"seqno":1e400')));
  frames.push(encoder.encode(msg.replace('"seqno":1', '"seqno":1.0')));
  frames.push(encoder.encode(msg.replace('"seqno":1', '"seqno":9007199254740993')));
  frames.push(encoder.encode(msg.replace('"seqno":1', '"seqno":-0')));
  frames.push(encoder.encode(msg.replace('"path":[]', '"path":[' + nest(64) + "]")));
  frames.push(encoder.encode(msg.replace('"path":[]', '"path":' + nest(70))));
  frames.push(encoder.encode(msg.replace('"c":"', '"c":"\\u0041')));
  for (const [member, bad] of [["c", "AB=="], ["k", "AAB="], ["ct", " AAAA"], ["c", "-_-_"]]) {
    frames.push(
      encoder.encode(msg.replace(new RegExp(`"${member}":"[^"]*"`), `"${member}":"${bad}"`)),
    );
  }
  return frames;
}

Deno.test("parseMessage() gives 124a7dd's verdict and code on hostile frames: bad UTF-8, BOM, repeated members, numbers, depth, non-canonical base64", () => {
  for (const bytes of hostileFrames()) {
    for (const [name, schema, discriminator] of SCHEMAS) {
      assert.deepStrictEqual(
        newMessage(bytes, schema, discriminator),
        oldMessage(bytes, schema, discriminator),
        `${name}: ${JSON.stringify(new TextDecoder().decode(bytes).slice(0, 200))}`,
      );
    }
  }
});

Deno.test("parseMessage() gives 124a7dd's verdict and code on fuzzed frames of every message", () => {
  const rng = new Rng(SEED ^ 0x51c3);
  const hot: [string, shapes.Shape<unknown>, "type" | "kind"][] = [
    ["msg", C2sMsgShape, "type"],
    ["relay", RelayMessageShape, "type"],
  ];
  let accepted = 0;
  for (let i = 0; i < 4000; i++) {
    // Half near-honest (most get past the parser, so the shapes judge), half noise.
    const bytes = rng.chance(0.5)
      ? encoder.encode(JSON.stringify(mutateJson(rng, structuredClone(rng.pick([MSG, RELAY])), 1)))
      : fuzzPayload(rng);
    for (const [name, schema, discriminator] of rng.chance(0.2) ? SCHEMAS : hot) {
      const want = oldMessage(bytes, schema, discriminator);
      assert.deepStrictEqual(
        newMessage(bytes, schema, discriminator),
        want,
        `seed ${SEED}, ${name}: ${JSON.stringify(new TextDecoder().decode(bytes).slice(0, 200))}`,
      );
      if ("value" in want) accepted++;
    }
  }
  // Not vacuous: enough frames reach the shapes to compare them. Since a user's msg carries a
  // group (PROTOCOL §6.3) fewer mutants stay valid: 290–380 of 4,000 over seeds 1–12 and CI's, so
  // 300 failed on some seeds (CI at 0fd96d1: 294); half the usual count still proves the point.
  assert.ok(accepted > 150, `${accepted} accepted`);
});
