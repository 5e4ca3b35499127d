import assert from "node:assert/strict";
import { fromHex, toHex, utf8 } from "../../lib/bytes.ts";
import { createHash, createHmac } from "node:crypto";
import { hkdfExpand, hkdfExtract, hmacSha256, hmacSha256Sync } from "../../lib/crypto/hkdf.ts";
import { sha256 } from "../../lib/crypto/sync_node.ts";

// Known answers: RFC 4231 §4.2 (test case 1) and RFC 5869 A.3 (empty salt and info).
// The Wycheproof suite (tests/wycheproof_test.ts) carries the other 86 HKDF cases.
const HMAC_VECTORS = [
  {
    name: "RFC 4231 test case 1",
    key: "0b".repeat(20),
    data: toHex(utf8("Hi There")),
    mac: "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7",
  },
  {
    name: "RFC 4231 test case 2 (a key shorter than the output)",
    key: toHex(utf8("Jefe")),
    data: toHex(utf8("what do ya want for nothing?")),
    mac: "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843",
  },
  {
    name: "RFC 4231 test case 6 (a key longer than the block: hashed first)",
    key: "aa".repeat(131),
    data: toHex(utf8("Test Using Larger Than Block-Size Key - Hash Key First")),
    mac: "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54",
  },
  {
    name: "empty key and message",
    key: "",
    data: "",
    mac: "b613679a0814d9ec772f95d778c35fc5ff1697c493715653c6c712144292c5ad",
  },
];

Deno.test("hmacSha256() matches known answers, including the empty key", async () => {
  for (const v of HMAC_VECTORS) {
    assert.equal(toHex(await hmacSha256(fromHex(v.key), fromHex(v.data))), v.mac, v.name);
  }
});

Deno.test("hmacSha256Sync() agrees with node:crypto's HMAC for keys of 0..200 bytes, in parts", () => {
  for (let n = 0; n <= 200; n++) {
    const key = crypto.getRandomValues(new Uint8Array(n));
    const parts = [n % 7, n % 64, 100].map((len) => crypto.getRandomValues(new Uint8Array(len)));
    const want = createHmac("sha256", key);
    for (const part of parts) want.update(part);
    assert.equal(toHex(hmacSha256Sync(key, ...parts)), want.digest("hex"), `${n}-byte key`);
  }
});

/**
 * Message lengths around the node backend's switch from JavaScript to node:crypto hashing
 * (JS_HASH_MAX_BYTES, 1 KiB), and at SHA-256's block and padding edges.
 */
const AROUND_THE_SWITCH = [0, 1, 55, 56, 64, 119, 1023, 1024, 1025, 3 * 1024 + 17];

Deno.test("sha256() and hmacSha256Sync() agree with node:crypto on both sides of the JavaScript path's bound", () => {
  for (const n of AROUND_THE_SWITCH) {
    const data = crypto.getRandomValues(new Uint8Array(n));
    // In parts, split unevenly: the backend hashes the concatenation.
    const parts = [data.subarray(0, n >> 2), data.subarray(n >> 2, n - 3), data.subarray(n - 3)];
    const want = createHash("sha256").update(data).digest("hex");
    assert.equal(toHex(sha256(...parts)), want, `SHA-256 of ${n} bytes`);
    for (const keyBytes of [0, 32, 64, 65]) {
      const key = crypto.getRandomValues(new Uint8Array(keyBytes));
      const mac = createHmac("sha256", key).update(data).digest("hex");
      assert.equal(
        toHex(hmacSha256Sync(key, ...parts)),
        mac,
        `HMAC, ${keyBytes}-byte key, ${n} bytes`,
      );
    }
  }
});

Deno.test("hkdfExtract() and hkdfExpand() reproduce RFC 5869 A.3 (empty salt and info)", async () => {
  const prk = await hkdfExtract(new Uint8Array(), fromHex("0b".repeat(22)));
  assert.equal(toHex(prk), "19ef24a32c717b167f33a91d6f648bdf96596776afdb6377ac434c1c293ccb04");
  assert.deepEqual(prk, await hkdfExtract(new Uint8Array(32), fromHex("0b".repeat(22))));
  assert.equal(
    toHex(await hkdfExpand(prk, new Uint8Array(), 42)),
    "8da4e775a563c18f715f802a063c5a31b8a11f5c5ee1879ec3454e5f3c738d2d9d201395faa4b61a96c8",
  );
});

Deno.test("hkdfExpand() output of length L is the prefix of any longer output", async () => {
  const prk = await hkdfExtract(utf8("salt"), utf8("ikm"));
  const long = await hkdfExpand(prk, utf8("info"), 255 * 32);
  for (const length of [0, 1, 31, 32, 33, 64, 100, 8159]) {
    const okm = await hkdfExpand(prk, utf8("info"), length);
    assert.equal(okm.length, length);
    assert.deepEqual(okm, long.subarray(0, length), `length ${length}`);
  }
  assert.notDeepEqual(await hkdfExpand(prk, utf8("inf0"), 32), long.subarray(0, 32));
});

Deno.test("hkdfExpand() throws RangeError outside 0..8160 or for a non-integer length", async () => {
  const prk = new Uint8Array(32);
  for (const length of [-1, 8161, 1.5, NaN, Infinity]) {
    await assert.rejects(hkdfExpand(prk, new Uint8Array(), length), RangeError, `${length}`);
  }
});
