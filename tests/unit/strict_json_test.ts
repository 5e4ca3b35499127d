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
