import assert from "node:assert/strict";
import { ByteSlab, toHex } from "../../lib/bytes.ts";
import { sha256 } from "#sync-crypto";
import { libcrypto } from "../../lib/crypto/libcrypto.ts";
import { OpenSslSymmetric } from "../../lib/crypto/openssl_symmetric.ts";
import { sha256Short } from "../../lib/crypto/sha256_short.ts";

Deno.test("ByteSlab: fresh zeroed views that never overlap, a new slab when one is full", () => {
  const slab = new ByteSlab(64);
  const taken = Array.from({ length: 9 }, () => slab.take(8));
  for (const view of taken) {
    assert.equal(view.length, 8);
    assert.deepEqual([...view], new Array(8).fill(0));
    view.fill(0xff);
  }
  // Eight views of 8 bytes fill the first slab: the ninth is the start of the next one.
  assert.equal(taken[7].buffer, taken[0].buffer);
  assert.notEqual(taken[8].buffer, taken[0].buffer);
  assert.equal(taken[8].byteOffset, 0);
  const offsets = taken.slice(0, 8).map((view) => view.byteOffset);
  assert.deepEqual(offsets, [0, 8, 16, 24, 32, 40, 48, 56]);
});

Deno.test("ByteSlab: a length that is not a count of bytes is refused", () => {
  const slab = new ByteSlab(64);
  for (const length of [-1, 0.5, NaN, Infinity]) assert.throws(() => slab.take(length), RangeError);
  assert.equal(slab.take(8).byteOffset, 0);
});

Deno.test("ByteSlab: a length above an eighth of a slab gets an array of its own", () => {
  const slab = new ByteSlab(64);
  const large = slab.take(9);
  assert.equal(large.byteOffset, 0);
  assert.equal(large.buffer.byteLength, 9);
  assert.equal(slab.take(8).buffer.byteLength, 64);
});

Deno.test("sha256's digests stay as they were made, however many are made after them", () => {
  const first = sha256(new TextEncoder().encode("abc"));
  const want = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
  const later = Array.from({ length: 200 }, (_, i) => sha256(Uint8Array.of(i)));
  assert.equal(toHex(first), want);
  assert.equal(new Set(later.map(toHex)).size, 200);
  assert.equal(toHex(later[0]), toHex(sha256(Uint8Array.of(0))));
});

const ABC_DIGEST = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";

/** The two SHA-256s that write into a caller's array: libcrypto's (where it loads) and ours. */
function digestWriters(): [string, (data: Uint8Array, out: Uint8Array) => Uint8Array][] {
  const opened = libcrypto();
  const writers: [string, (data: Uint8Array, out: Uint8Array) => Uint8Array][] = [
    ["sha256Short", (data, out) => sha256Short([data], out)],
  ];
  if ("reason" in opened) {
    console.log(`libcrypto's SHA-256 not checked: ${opened.reason}`);
  } else {
    const native = new OpenSslSymmetric(opened);
    writers.push(["libcrypto", (data, out) => native.sha256([data], out)]);
  }
  return writers;
}

Deno.test("a SHA-256 into a view writes its 32 bytes there and not one byte beside them", () => {
  for (const [name, digest] of digestWriters()) {
    const buffer = new Uint8Array(96).fill(0xa5);
    digest(new TextEncoder().encode("abc"), buffer.subarray(32, 64));
    assert.equal(toHex(buffer.subarray(32, 64)), ABC_DIGEST, name);
    assert.ok(buffer.subarray(0, 32).every((b) => b === 0xa5), `${name}: before the view`);
    assert.ok(buffer.subarray(64).every((b) => b === 0xa5), `${name}: after the view`);
  }
});

Deno.test("a SHA-256 refuses an output that is not 32 bytes", () => {
  for (const [name, digest] of digestWriters()) {
    for (const length of [31, 33]) {
      assert.throws(() => digest(Uint8Array.of(1), new Uint8Array(length)), `${name}, ${length}`);
    }
  }
});
