/**
 * The JavaScript ChaCha20-Poly1305 (lib/crypto/chacha20_poly1305.ts) against RFC 8439's AEAD
 * vectors (tests/vectors/crypto/chacha20_poly1305_rfc8439*.json) and against node:crypto
 * (OpenSSL) on every length 0..300, around the node backend's crossover and at a few large
 * lengths, with random keys, nonces and AADs; every tampering refused; and its Poly1305 against
 * RFC 8439 Appendix A.3 (whose vectors #5–#11 reach the final reduction's edges, which random
 * inputs almost never do) and a BigInt reference on adversarial inputs.
 */
import assert from "node:assert/strict";
import { createCipheriv } from "node:crypto";
import {
  CHACHA20_POLY1305_JS_MAX_BYTES,
  chaCha20Poly1305OpenJs,
  chaCha20Poly1305SealJs,
  poly1305,
} from "../../lib/crypto/chacha20_poly1305.ts";
import * as nodeSync from "../../lib/crypto/sync_node.ts";
import * as browserSync from "../../lib/crypto/sync_browser.ts";
import { openChaCha20Poly1305, sealChaCha20Poly1305 } from "../../lib/crypto/aead.ts";
import { SecureChatError } from "../../lib/errors.ts";
import { fromHex, randomBytes, toHex } from "../../lib/bytes.ts";
import { RFC8439_AEAD_VECTORS } from "../helpers/rfc8439_vectors.ts";

/** OpenSSL's seal, the reference: ciphertext || tag. */
function opensslSeal(
  key: Uint8Array,
  nonce: Uint8Array,
  plaintext: Uint8Array,
  aad: Uint8Array,
): string {
  const cipher = createCipheriv("chacha20-poly1305", key, nonce, { authTagLength: 16 });
  cipher.setAAD(aad, { plaintextLength: plaintext.length });
  const head = cipher.update(plaintext);
  const tail = cipher.final();
  return toHex(head) + toHex(tail) + toHex(cipher.getAuthTag());
}

Deno.test("chaCha20Poly1305SealJs() and OpenJs() reproduce RFC 8439 §2.8.2 and Appendix A.5", () => {
  assert.equal(RFC8439_AEAD_VECTORS.length, 2);
  for (const { source, key, nonce, aad, plaintext, sealed } of RFC8439_AEAD_VECTORS) {
    const [want, wantPlain] = [toHex(sealed), toHex(plaintext)];
    assert.equal(toHex(chaCha20Poly1305SealJs(key, nonce, plaintext, aad)), want, source);
    assert.equal(toHex(chaCha20Poly1305OpenJs(key, nonce, sealed, aad)), wantPlain, source);
    // And through each #sync-crypto backend and the checked wrapper, whichever path they take.
    for (const backend of [nodeSync, browserSync]) {
      assert.equal(toHex(backend.chaCha20Poly1305Seal(key, nonce, plaintext, aad)), want);
      assert.equal(toHex(backend.chaCha20Poly1305Open(key, nonce, sealed, aad)), wantPlain);
    }
    assert.equal(toHex(sealChaCha20Poly1305(key, nonce, plaintext, aad)), want);
    assert.equal(toHex(openChaCha20Poly1305(key, nonce, sealed, aad)), wantPlain);
  }
});

/** Lengths: every one to 300, both sides of the node backend's crossover, a few large ones. */
const LENGTHS = [
  ...Array.from({ length: 301 }, (_, n) => n),
  ...[-65, -64, -63, -17, -16, -15, -1, 0, 1, 15, 16, 17, 63, 64, 65].map((d) =>
    CHACHA20_POLY1305_JS_MAX_BYTES + d
  ),
  1000,
  4096,
  4097,
  65_280,
];

Deno.test("chaCha20Poly1305SealJs() agrees with node:crypto on every length 0..300, around the crossover and beyond", () => {
  assert.ok(CHACHA20_POLY1305_JS_MAX_BYTES > 300, "the crossover is past 0..300");
  for (const length of LENGTHS) {
    const key = randomBytes(32);
    const nonce = randomBytes(12);
    const plaintext = randomBytes(length);
    const aad = randomBytes((length * 7) % 41); // 0..40 bytes: whole and partial blocks
    const want = opensslSeal(key, nonce, plaintext, aad);
    const sealed = chaCha20Poly1305SealJs(key, nonce, plaintext, aad);
    assert.equal(toHex(sealed), want, `${length} bytes, ${aad.length}-byte AAD`);
    assert.deepEqual(chaCha20Poly1305OpenJs(key, nonce, fromHex(want), aad), plaintext);
    // The node backend (JavaScript below the crossover, node:crypto above) and the browser's.
    for (const backend of [nodeSync, browserSync]) {
      assert.equal(toHex(backend.chaCha20Poly1305Seal(key, nonce, plaintext, aad)), want);
      assert.deepEqual(backend.chaCha20Poly1305Open(key, nonce, fromHex(want), aad), plaintext);
    }
    // Into a caller's place (a frame's in a batch): the same bytes there, nothing around touched.
    const batch = new Uint8Array(5 + want.length / 2 + 3).fill(0xee);
    const into = batch.subarray(5, 5 + want.length / 2);
    assert.equal(chaCha20Poly1305SealJs(key, nonce, plaintext, aad, into), into);
    assert.equal(toHex(batch), "ee".repeat(5) + want + "ee".repeat(3), `${length} bytes, into`);
    assert.throws(() => chaCha20Poly1305SealJs(key, nonce, plaintext, aad, batch), RangeError);
  }
});

/** What chaCha20Poly1305OpenJs() throws: the wrapper (lib/crypto/aead.ts) makes it DECRYPT_FAIL. */
const REFUSED = /ChaCha20-Poly1305 (authentication failed|input shorter than its tag)$/;

Deno.test("chaCha20Poly1305OpenJs() refuses any flipped bit of ciphertext, tag, AAD, nonce or key, and a truncation", () => {
  for (const length of [0, 1, 64, 100, 300]) {
    const key = randomBytes(32);
    const nonce = randomBytes(12);
    const aad = randomBytes(21);
    const sealed = chaCha20Poly1305SealJs(key, nonce, randomBytes(length), aad);
    for (let i = 0; i < sealed.length; i++) {
      const bad = sealed.slice();
      bad[i] ^= 1 << (i % 8);
      assert.throws(() => chaCha20Poly1305OpenJs(key, nonce, bad, aad), REFUSED, `${i}`);
    }
    const flip = (bytes: Uint8Array, i: number) => {
      const copy = bytes.slice();
      copy[i % copy.length] ^= 0x80;
      return copy;
    };
    for (let i = 0; i < 32; i++) {
      assert.throws(() => chaCha20Poly1305OpenJs(flip(key, i), nonce, sealed, aad), REFUSED);
      assert.throws(() => chaCha20Poly1305OpenJs(key, flip(nonce, i), sealed, aad), REFUSED);
      assert.throws(() => chaCha20Poly1305OpenJs(key, nonce, sealed, flip(aad, i)), REFUSED);
    }
    const cases: [string, () => unknown][] = [
      ["longer AAD", () => chaCha20Poly1305OpenJs(key, nonce, sealed, new Uint8Array([...aad, 0]))],
      ["shorter AAD", () => chaCha20Poly1305OpenJs(key, nonce, sealed, aad.subarray(1))],
      ["truncated", () => chaCha20Poly1305OpenJs(key, nonce, sealed.subarray(1), aad)],
      ["extended", () => chaCha20Poly1305OpenJs(key, nonce, new Uint8Array([...sealed, 0]), aad)],
    ];
    for (const [name, run] of cases) assert.throws(run, REFUSED, `${length}: ${name}`);
    for (const short of [0, 1, 15]) {
      assert.throws(
        () => chaCha20Poly1305OpenJs(key, nonce, sealed.subarray(0, short), aad),
        REFUSED,
      );
    }
    // A refusal leaves nothing behind: the next open of the genuine record succeeds.
    assert.equal(chaCha20Poly1305OpenJs(key, nonce, sealed, aad).length, length);
  }
});

Deno.test("openChaCha20Poly1305() turns every refusal into DECRYPT_FAIL on both sides of the crossover", () => {
  const decryptFail = (e: unknown) => e instanceof SecureChatError && e.code === "DECRYPT_FAIL";
  for (const length of [100, CHACHA20_POLY1305_JS_MAX_BYTES + 100]) {
    const key = randomBytes(32);
    const nonce = randomBytes(12);
    const aad = randomBytes(21);
    const sealed = sealChaCha20Poly1305(key, nonce, randomBytes(length), aad);
    for (const i of [0, length - 1, length, sealed.length - 1]) {
      const bad = sealed.slice();
      bad[i] ^= 0x01;
      assert.throws(() => openChaCha20Poly1305(key, nonce, bad, aad), decryptFail, `byte ${i}`);
    }
  }
});

const POLY1305_A3 = JSON.parse(
  await Deno.readTextFile(new URL("../vectors/crypto/poly1305_rfc8439_a3.json", import.meta.url)),
) as { vectors: { number: number; case: string; key: string; message: string; tag: string }[] };

Deno.test("poly1305() reproduces all eleven vectors of RFC 8439 Appendix A.3", () => {
  assert.deepEqual(POLY1305_A3.vectors.map((v) => v.number), [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11]);
  for (const v of POLY1305_A3.vectors) {
    assert.equal(
      toHex(poly1305(fromHex(v.key), fromHex(v.message))),
      v.tag,
      `#${v.number} ${v.case}`,
    );
  }
});

/** Little-endian bytes as a BigInt. */
function le(bytes: Uint8Array): bigint {
  let n = 0n;
  for (let i = bytes.length - 1; i >= 0; i--) n = (n << 8n) | BigInt(bytes[i]);
  return n;
}

/** Poly1305 by RFC 8439 §2.5.1's own arithmetic, in BigInt: the reference. */
function poly1305Reference(key: Uint8Array, message: Uint8Array): string {
  const p = (1n << 130n) - 5n;
  const r = le(key.subarray(0, 16)) & 0x0ffffffc0ffffffc0ffffffc0fffffffn;
  let acc = 0n;
  for (let i = 0; i < message.length; i += 16) {
    const block = message.subarray(i, i + 16);
    acc = ((acc + le(block) + (1n << BigInt(8 * block.length))) * r) % p;
  }
  let tag = (acc + le(key.subarray(16))) & ((1n << 128n) - 1n);
  const out = new Uint8Array(16);
  for (let i = 0; i < 16; i++, tag >>= 8n) out[i] = Number(tag & 0xffn);
  return toHex(out);
}

Deno.test("poly1305() agrees with a BigInt reference on every length 0..300 with adversarial keys and messages", () => {
  const ff = (n: number) => new Uint8Array(n).fill(0xff);
  // r at its clamp maxima and s all ones (the tag's addition wraps), or random; messages of all
  // ones (every limb full, carries at their largest) or random.
  const keys = [ff(32), new Uint8Array([...ff(16), ...randomBytes(16)]), randomBytes(32)];
  for (let length = 0; length <= 300; length++) {
    for (const [k, key] of keys.entries()) {
      for (const message of [ff(length), randomBytes(length)]) {
        assert.equal(
          toHex(poly1305(key, message)),
          poly1305Reference(key, message),
          `${length} bytes, key ${k}`,
        );
      }
    }
  }
  // The reference itself reproduces A.3 (it is no echo of the code under test).
  for (const v of POLY1305_A3.vectors) {
    assert.equal(poly1305Reference(fromHex(v.key), fromHex(v.message)), v.tag, `#${v.number}`);
  }
});
