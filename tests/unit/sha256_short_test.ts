/**
 * The short-input SHA-256 and HMAC-SHA-256 (lib/crypto/sha256_short.ts) against node:crypto on
 * every message length they take, split into parts at varying places, and against the
 * published vectors (FIPS 180-2 appendix B, RFC 4231 §4).
 */
import assert from "node:assert/strict";
import { createHash, createHmac } from "node:crypto";
import {
  hmacSha256Short,
  sha256Short,
  SHORT_HASH_MAX_BYTES,
} from "../../lib/crypto/sha256_short.ts";
import { fromHex, toHex, utf8 } from "../../lib/bytes.ts";

/** `data` cut in three at places that move with its length (empty parts included). */
function split(data: Uint8Array): Uint8Array[] {
  const n = data.length;
  const a = (n * 7) % (n + 1);
  const b = a + ((n * 3) % (n - a + 1));
  return [data.subarray(0, a), data.subarray(a, b), data.subarray(b)];
}

Deno.test("sha256Short() agrees with node:crypto on every length up to its bound, in parts", () => {
  const data = crypto.getRandomValues(new Uint8Array(SHORT_HASH_MAX_BYTES));
  for (let n = 0; n <= SHORT_HASH_MAX_BYTES; n++) {
    const message = data.subarray(0, n);
    const want = createHash("sha256").update(message).digest("hex");
    assert.equal(toHex(sha256Short(split(message))), want, `${n} bytes`);
  }
});

Deno.test("hmacSha256Short() agrees with node:crypto for every key of 0..64 bytes and every length", () => {
  const data = crypto.getRandomValues(new Uint8Array(SHORT_HASH_MAX_BYTES));
  for (let n = 0; n <= SHORT_HASH_MAX_BYTES; n++) {
    const key = crypto.getRandomValues(new Uint8Array(n % 65));
    const message = data.subarray(0, n);
    const want = createHmac("sha256", key).update(message).digest("hex");
    assert.equal(
      toHex(hmacSha256Short(key, split(message))),
      want,
      `${key.length}-byte key, ${n} bytes`,
    );
  }
});

Deno.test("sha256Short() reproduces FIPS 180-2's examples, each after a longer message", () => {
  const before = () => sha256Short([new Uint8Array(SHORT_HASH_MAX_BYTES).fill(0xff)]);
  before();
  assert.equal(
    toHex(sha256Short([utf8("abc")])),
    "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
  );
  before();
  assert.equal(
    toHex(sha256Short([utf8("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq")])),
    "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1",
  );
  before();
  assert.equal(
    toHex(sha256Short([])),
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
  );
});

Deno.test("hmacSha256Short() reproduces RFC 4231 test cases 1, 2 and 4", () => {
  assert.equal(
    toHex(hmacSha256Short(fromHex("0b".repeat(20)), [utf8("Hi There")])),
    "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7",
  );
  assert.equal(
    toHex(hmacSha256Short(utf8("Jefe"), [utf8("what do ya want "), utf8("for nothing?")])),
    "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843",
  );
  assert.equal(
    toHex(
      hmacSha256Short(fromHex("0102030405060708090a0b0c0d0e0f10111213141516171819"), [
        fromHex("cd".repeat(50)),
      ]),
    ),
    "82558a389a443c0ea4cc819899f2083a85f0faa3e578f8077a2e3ff46729665b",
  );
});
