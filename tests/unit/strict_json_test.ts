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
