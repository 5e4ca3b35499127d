/** parseStrictJson(): JSON.parse's answer for every input without a repeated member name. */
import assert from "node:assert/strict";
import { fromUtf8 } from "../../lib/bytes.ts";
import { parseStrictJson, StrictJsonError } from "../../lib/wire/strict_json.ts";
import { fuzzPayload, fuzzSeed, Rng } from "../../testkit/fuzz.ts";

const SEED = fuzzSeed();

/** What JSON.parse gives, or "error"; members named __proto__ kept as own members. */
function reference(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return "error";
  }
}

function strict(text: string): unknown {
  try {
    return parseStrictJson(text);
  } catch (error) {
    assert.ok(error instanceof StrictJsonError, `threw ${String(error)}`);
    return "error";
  }
}

Deno.test("parseStrictJson() agrees with JSON.parse on strings, escapes and numbers", () => {
  const cases = [
    '""',
    '"plain base64 AAAA+/=="',
    '"\\"\\\\\\/\\b\\f\\n\\r\\t"',
    '"\\u0041\\u00e9\\ud83d\\ude00 and a lone \\ud800"',
    '"é 💥 mixed\\nrun"',
    '"\\u004"',
    '"\\x"',
    '"tab\there"',
    '"unterminated',
    '"ends in a backslash\\',
    "-0",
    "1e308",
    "0.5e-3",
    "01",
    "1.",
    '{"a":[1,{"b":"c"}],"d":null,"e":true,"f":false}',
    ' { "spaced" : [ 1 , 2 ] } ',
    '{"a":1,}',
    "[1,]",
    '{"a" 1}',
  ];
  for (const text of cases) assert.deepEqual(strict(text), reference(text), text);
});

Deno.test("parseStrictJson() refuses a repeated member name at any depth, __proto__ included", () => {
  for (
    const text of [
      '{"a":1,"a":1}',
      '{"a":1,"b":2,"a":3}',
      '{"x":{"k":"v","k":"w"}}',
      '[{"a":1},{"a":1,"a":2}]',
      '{"__proto__":1,"__proto__":2}',
      '{"a":1,"\\u0061":2}', // the same name, escaped
    ]
  ) {
    assert.throws(() => parseStrictJson(text), /appears twice/, text);
  }
  const parsed = parseStrictJson('{"__proto__":{"polluted":true},"constructor":1}') as Record<
    string,
    unknown
  >;
  assert.deepEqual(Object.keys(parsed), ["__proto__", "constructor"]);
  assert.equal(Object.getPrototypeOf(parsed), Object.prototype);
  assert.equal(({} as Record<string, unknown>).polluted, undefined);
});

Deno.test("parseStrictJson(): the repeated-member check is not fooled by brackets, quotes, escapes or whitespace", () => {
  const allowed = [
    '{"a":"}{\\"a\\":1","b":1}', // a string holding what looks like a repeated member
    '{"a":"[","b":"]","c":"{"}',
    '{"a":{"a":1},"b":[{"a":1},{"a":2}]}', // one name in sibling and nested objects
    '{"k":"a","v":"k"}', // a value equal to a name
    '{"a\\\\":1,"a":2}', // a\\ and a are two names
    '["a","a",{"a":1}]',
    '{"a:":1,"a":2}', // a colon inside a name is no member of its own
    '{"a":"b:c:d","b":{"c":":"}}',
    '{"a\\\\\\"":1,"a\\\\":2}', // a\\\" and a\\: runs of backslashes before quotes
  ];
  for (const text of allowed) assert.deepEqual(parseStrictJson(text), JSON.parse(text), text);
  const repeated = [
    '{"x\\"y":1,"x\\u0022y":2}', // x"y both times
    '{"a":1,"b":{"c":1,"d":[1,{"e":2}]},"a":2}', // after nested containers closed
    '{"a" :1, "a"\n\t:2}', // whitespace before the colon
    '[1,[2,{"z":{}, "z":[]}]]',
    '{"a":"b:c","a":1}', // a colon in a value does not stand in for the lost member
    '{"a":{"x:":1},"a":2}',
    '{"q\\\\":1,"q\\\\":2}',
  ];
  for (const text of repeated) assert.throws(() => parseStrictJson(text), /appears twice/, text);
});

Deno.test("parseStrictJson() refuses nesting beyond 64 levels, and a hostile depth, as StrictJsonError", () => {
  const nested = (n: number) => "[".repeat(n) + "]".repeat(n);
  assert.deepEqual(parseStrictJson(nested(65)), JSON.parse(nested(65)));
  assert.throws(() => parseStrictJson(nested(66)), /nesting too deep/);
  // The edge with a value in the innermost container: 64 around it are allowed, 65 are not.
  const around = (n: number, v: string) => '{"a":'.repeat(n) + v + "}".repeat(n);
  assert.deepEqual(parseStrictJson(around(64, "1")), JSON.parse(around(64, "1")));
  assert.deepEqual(parseStrictJson(around(64, "[]")), JSON.parse(around(64, "[]")));
  assert.throws(() => parseStrictJson(around(65, "1")), /nesting too deep/);
  assert.throws(() => parseStrictJson(around(65, '{"b":2,"b":3}')), /nesting too deep/);
  assert.throws(
    () => parseStrictJson('{"a":'.repeat(70) + "1" + "}".repeat(70)),
    /nesting too deep/,
  );
  for (const n of [10_000, 200_000]) {
    assert.throws(() => parseStrictJson(nested(n)), StrictJsonError, `${n} levels`);
  }
});

Deno.test("parseStrictJson() agrees with JSON.parse on fuzzed protocol messages", () => {
  const rng = new Rng(SEED ^ 0x150a);
  let accepted = 0;
  for (let i = 0; i < 5000; i++) {
    let text: string;
    try {
      text = fromUtf8(fuzzPayload(rng));
    } catch {
      continue; // not UTF-8: parseMessage refuses it before any JSON parser runs
    }
    const expected = reference(text);
    const got = strict(text);
    // Only a duplicate member or nesting beyond 64 levels may make the strict parser
    // refuse what JSON.parse takes.
    if (got === "error" && expected !== "error") {
      assert.throws(
        () => parseStrictJson(text),
        /appears twice|nesting too deep/,
        `seed ${SEED}: ${text.slice(0, 200)}`,
      );
      continue;
    }
    assert.deepEqual(got, expected, `seed ${SEED}: ${text.slice(0, 200)}`);
    if (got !== "error") accepted++;
  }
  assert.ok(accepted > 1000, `${accepted} of 5000 payloads were JSON`);
});

Deno.test("parseStrictJson() reads escaped member names itself: V8's JSON.parse can misread one by an earlier parse's object shape (review9 R9-4)", () => {
  // After a parse of {"x","a\"}, V8 (Deno 2.9) reads the name a" of the same shape as a\, so
  // a text naming a" twice would count two names and two members.
  parseStrictJson(String.raw`{"x":1,"a\\":2}`);
  assert.throws(() => parseStrictJson(String.raw`{"x":1,"a\"":2,"a\"":3}`), /appears twice/);
  assert.deepEqual(Object.keys(parseStrictJson(String.raw`{"x":1,"a\"":2}`) as object), [
    "x",
    'a"',
  ]);
  parseStrictJson(String.raw`{"x":1,"a\\":2,"b":{"c\\":1}}`);
  assert.deepEqual(
    parseStrictJson(String.raw`{"x":1,"a\"":2,"b":{"c\"" :1}}`),
    { x: 1, 'a"': 2, b: { 'c"': 1 } },
  );
});

/**
 * A message shaped as a user's msg of a lobby batch (PROTOCOL §6.3), end to end: base64, hex
 * and numbers, no backslash and no colon inside a string — the text whose names
 * parseStrictJson counts by its colons.
 */
function lobbyMsg(rng: Rng, records: number): Record<string, unknown> {
  const text = (n: number, alphabet: string) =>
    Array.from({ length: n }, () => alphabet[rng.int(alphabet.length)]).join("");
  const b64 = (n: number) =>
    text(n, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/");
  const sid = text(32, "0123456789abcdef");
  return {
    type: "msg",
    sig: b64(344),
    first: 7,
    n: records,
    proof: [b64(44)],
    records: Array.from({ length: records }, (_, j) => ({
      record: {
        sid,
        dir: "c2s",
        to: "lobby",
        seqno: 7 + j,
        ts: 1_796_000_000_000 + j,
        ct: b64(96),
        c: b64(44),
      },
      e2e: { kind: "sender", from: text(16, "0123456789abcdef"), id: 3, n: j, w: b64(64) },
    })),
  };
}

/** JSON.stringify(value), with the first member of the object `target` (by visit order) written twice. */
function withRepeatedMember(value: unknown, target: number, spell: (name: string) => string) {
  let visited = 0;
  const write = (v: unknown): string => {
    if (Array.isArray(v)) return `[${v.map(write).join(",")}]`;
    if (typeof v !== "object" || v === null) return JSON.stringify(v);
    const entries = Object.entries(v);
    const members = entries.map(([name, item]) => `${JSON.stringify(name)}:${write(item)}`);
    if (visited++ === target && entries.length > 0) {
      const [name, item] = entries[0];
      members.splice(1 + (target % entries.length), 0, `${spell(name)}:${write(item)}`);
    }
    return `{${members.join(",")}}`;
  };
  return write(value);
}

Deno.test("parseStrictJson() refuses a repeated member anywhere in a msg, whether its names are counted by colons or by a scan", () => {
  const rng = new Rng(SEED ^ 0x17f0);
  const msg = lobbyMsg(rng, 4);
  const plain = JSON.stringify(msg);
  assert.ok(!plain.includes("\\"), "the msg has no backslash");
  assert.deepEqual(parseStrictJson(plain), msg);
  // Each object's first name again, as written (the colon count sees it), escaped (the scan,
  // and the careful parser, must), and beside a colon inside a string (the colon count cannot
  // decide: the scan must).
  const objects = 1 + 4 * 3; // the msg, and each item, its record and its envelope
  const spellings = [
    (name: string) => JSON.stringify(name),
    (name: string) => `"\\u${name.charCodeAt(0).toString(16).padStart(4, "0")}${name.slice(1)}"`,
  ];
  for (let target = 0; target < objects; target++) {
    for (const spell of spellings) {
      const text = withRepeatedMember(msg, target, spell);
      assert.throws(() => parseStrictJson(text), /appears twice/, `object ${target}: ${text}`);
      const colon = text.replace('"lobby"', '"lob:by"');
      assert.throws(() => parseStrictJson(colon), /appears twice/, `object ${target}: ${colon}`);
    }
  }
  // Colons inside strings and escapes without a repeated name: the value JSON.parse gives.
  for (
    const text of [plain.replaceAll('"lobby"', '"a:b"'), plain.replace('"lobby"', '"lo\\u0062by"')]
  ) {
    assert.deepEqual(parseStrictJson(text), JSON.parse(text));
  }
});
