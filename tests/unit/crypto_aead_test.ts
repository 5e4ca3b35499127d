import assert from "node:assert/strict";
import { SecureChatError } from "../../lib/errors.ts";
import { concat, randomBytes, toHex, u64be } from "../../lib/bytes.ts";
import * as nodeSync from "../../lib/crypto/sync_node.ts";
import * as browserSync from "../../lib/crypto/sync_browser.ts";
import {
  AES_KEY_BYTES,
  CHACHA20_POLY1305_KEY_BYTES,
  counterNonce,
  counterNonceInto,
  GCM_NONCE_BYTES,
  GCM_TAG_BYTES,
  openAesGcm,
  openChaCha20Poly1305,
  POLY1305_TAG_BYTES,
  sealAesGcm,
  sealChaCha20Poly1305,
} from "../../lib/crypto/aead.ts";
import { RFC8439_AEAD_VECTORS } from "../helpers/rfc8439_vectors.ts";

function assertDecryptFail(run: () => unknown, what: string): void {
  assert.throws(run, (e) => e instanceof SecureChatError && e.code === "DECRYPT_FAIL", what);
}

Deno.test("counterNonce() XORs u64be(counter) into the last 8 bytes of the IV", () => {
  const iv = Uint8Array.from({ length: 12 }, (_, i) => 0xa0 + i);
  for (const counter of [0n, 1n, 255n, 256n, 0x0102030405060708n, 0xffff_ffff_ffff_ffffn]) {
    const expected = iv.slice();
    u64be(counter).forEach((b, i) => expected[4 + i] ^= b);
    assert.deepEqual(counterNonce(iv, counter), expected, `counter ${counter}`);
  }
  assert.deepEqual(counterNonce(iv, 0), iv, "counter 0 is the IV itself");
  assert.deepEqual(counterNonce(iv, 7), counterNonce(iv, 7n), "number and bigint agree");
});

Deno.test("counterNonceInto() writes counterNonce()'s nonce over what its buffer held", () => {
  const iv = randomBytes(GCM_NONCE_BYTES);
  const out = new Uint8Array(GCM_NONCE_BYTES).fill(0xee);
  for (const counter of [0, 1, 255, 2 ** 32 - 1, 2 ** 32, 2 ** 40 + 3, Number.MAX_SAFE_INTEGER]) {
    assert.equal(counterNonceInto(out, iv, counter), out);
    assert.deepEqual(out, counterNonce(iv, counter), `counter ${counter}`);
  }
  for (const bad of [-1, 0.5, 2 ** 53]) {
    assert.throws(() => counterNonceInto(out, iv, bad), RangeError, String(bad));
  }
  assert.throws(() => counterNonceInto(new Uint8Array(8), iv, 1), RangeError);
});

Deno.test("counterNonce() leaves the first 4 IV bytes and the IV argument untouched", () => {
  const iv = randomBytes(GCM_NONCE_BYTES);
  const copy = iv.slice();
  const nonce = counterNonce(iv, 0xffff_ffff_ffff_ffffn);
  assert.deepEqual(nonce.subarray(0, 4), iv.subarray(0, 4));
  assert.deepEqual(iv, copy);
});

Deno.test("counterNonce() gives distinct nonces for distinct counters", () => {
  const iv = randomBytes(GCM_NONCE_BYTES);
  const counters = [0n, 1n, 2n, 255n, 256n, 2n ** 32n, 2n ** 63n, 2n ** 64n - 1n];
  const seen = new Set(counters.map((c) => toHex(counterNonce(iv, c))));
  assert.equal(seen.size, counters.length);
});

Deno.test("counterNonce() throws RangeError for bad counters and IV lengths", () => {
  const iv = new Uint8Array(GCM_NONCE_BYTES);
  const cases: [string, () => unknown][] = [
    ["counter -1", () => counterNonce(iv, -1)],
    ["counter -1n", () => counterNonce(iv, -1n)],
    ["counter 2^64", () => counterNonce(iv, 2n ** 64n)],
    ["counter 1.5", () => counterNonce(iv, 1.5)],
    ["counter NaN", () => counterNonce(iv, NaN)],
    ["11-byte IV", () => counterNonce(new Uint8Array(11), 0)],
    ["13-byte IV", () => counterNonce(new Uint8Array(13), 0)],
  ];
  for (const [name, fn] of cases) assert.throws(fn, RangeError, name);
});

Deno.test("sealAesGcm() then openAesGcm() round-trips and appends a 16-byte tag", () => {
  assert.equal(AES_KEY_BYTES, 32);
  const key = randomBytes(AES_KEY_BYTES);
  const nonce = counterNonce(randomBytes(GCM_NONCE_BYTES), 1);
  for (const size of [0, 1, 15, 16, 17, 1000]) {
    const plaintext = randomBytes(size);
    const aad = randomBytes(size % 7);
    const sealed = sealAesGcm(key, nonce, plaintext, aad);
    assert.equal(sealed.length, size + GCM_TAG_BYTES);
    assert.deepEqual(openAesGcm(key, nonce, sealed, aad), plaintext);
    // The page's backend makes the same bytes (the wrapper is the same in both builds).
    assert.equal(toHex(browserSync.aesGcmSeal(key, nonce, plaintext, aad)), toHex(sealed));
  }
});

Deno.test("sealAesGcm() throws RangeError for a key that is not 32 bytes or a nonce that is not 12", () => {
  const [key, nonce] = [randomBytes(AES_KEY_BYTES), randomBytes(GCM_NONCE_BYTES)];
  for (const size of [0, 16, 24, 31, 33]) {
    assert.throws(
      () => sealAesGcm(new Uint8Array(size), nonce, new Uint8Array(1), new Uint8Array()),
      RangeError,
      `${size}-byte key`,
    );
  }
  for (const size of [0, 8, 11, 13, 16]) {
    assert.throws(
      () => sealAesGcm(key, new Uint8Array(size), new Uint8Array(1), new Uint8Array()),
      RangeError,
      `${size}-byte nonce`,
    );
  }
});

Deno.test("openAesGcm() throws DECRYPT_FAIL when any byte of ciphertext, tag, AAD or nonce flips", () => {
  const key = randomBytes(AES_KEY_BYTES);
  const nonce = randomBytes(GCM_NONCE_BYTES);
  const aad = randomBytes(13);
  const sealed = sealAesGcm(key, nonce, randomBytes(20), aad);
  const inputs = { sealed, aad, nonce };
  for (const [field, bytes] of Object.entries(inputs)) {
    for (let i = 0; i < bytes.length; i++) {
      const tampered = { ...inputs, [field]: bytes.slice() };
      tampered[field as keyof typeof inputs][i] ^= 0x01;
      assertDecryptFail(
        () => openAesGcm(key, tampered.nonce, tampered.sealed, tampered.aad),
        `${field}[${i}]`,
      );
    }
  }
});

Deno.test("openAesGcm() throws DECRYPT_FAIL for truncated, extended or mis-sized input", () => {
  const key = randomBytes(AES_KEY_BYTES);
  const nonce = randomBytes(GCM_NONCE_BYTES);
  const sealed = sealAesGcm(key, nonce, randomBytes(5), new Uint8Array());
  const none = new Uint8Array();
  const cases: [string, () => unknown][] = [
    ["wrong key", () => openAesGcm(randomBytes(AES_KEY_BYTES), nonce, sealed, none)],
    ["16-byte key", () => openAesGcm(key.subarray(0, 16), nonce, sealed, none)],
    ["drop last byte", () => openAesGcm(key, nonce, sealed.subarray(0, sealed.length - 1), none)],
    ["drop first byte", () => openAesGcm(key, nonce, sealed.subarray(1), none)],
    ["append a byte", () => openAesGcm(key, nonce, concat(sealed, new Uint8Array(1)), none)],
    ["empty input", () => openAesGcm(key, nonce, none, none)],
    ["15 bytes", () => openAesGcm(key, nonce, sealed.subarray(0, 15), none)],
    ["11-byte nonce", () => openAesGcm(key, nonce.subarray(0, 11), sealed, none)],
    ["13-byte nonce", () => openAesGcm(key, concat(nonce, new Uint8Array(1)), sealed, none)],
    ["added AAD", () => openAesGcm(key, nonce, sealed, new Uint8Array(1))],
  ];
  for (const [name, run] of cases) assertDecryptFail(run, name);
});

/** RFC 8439 §2.8.2's AEAD example (the helper's first vector): the record layer's AEAD, PROTOCOL §3.2. */
const rfc = RFC8439_AEAD_VECTORS[0];

Deno.test("sealChaCha20Poly1305() gives RFC 8439's ciphertext and tag on both #sync-crypto backends", () => {
  assert.equal(
    toHex(sealChaCha20Poly1305(rfc.key, rfc.nonce, rfc.plaintext, rfc.aad)),
    toHex(rfc.sealed),
  );
  assert.deepEqual(openChaCha20Poly1305(rfc.key, rfc.nonce, rfc.sealed, rfc.aad), rfc.plaintext);
  for (const backend of [nodeSync, browserSync]) {
    const sealed = backend.chaCha20Poly1305Seal(rfc.key, rfc.nonce, rfc.plaintext, rfc.aad);
    assert.equal(toHex(sealed), toHex(rfc.sealed));
    assert.deepEqual(
      backend.chaCha20Poly1305Open(rfc.key, rfc.nonce, sealed, rfc.aad),
      rfc.plaintext,
    );
  }
});

Deno.test("sealChaCha20Poly1305(): both backends agree from an empty plaintext to the largest record", () => {
  const key = randomBytes(CHACHA20_POLY1305_KEY_BYTES);
  for (const size of [0, 1, 63, 64, 65, 1000, 65_280]) {
    const nonce = randomBytes(GCM_NONCE_BYTES);
    const plaintext = randomBytes(size);
    const aad = randomBytes(size % 21);
    const sealed = nodeSync.chaCha20Poly1305Seal(key, nonce, plaintext, aad);
    assert.equal(sealed.length, size + POLY1305_TAG_BYTES);
    assert.equal(
      toHex(browserSync.chaCha20Poly1305Seal(key, nonce, plaintext, aad)),
      toHex(sealed),
    );
    assert.deepEqual(browserSync.chaCha20Poly1305Open(key, nonce, sealed, aad), plaintext);
    // Into a frame's place in a batch: the same bytes there, nothing around them touched.
    assert.throws(
      () => sealChaCha20Poly1305(key, nonce, plaintext, aad, new Uint8Array(sealed.length + 1)),
      RangeError,
    );
    for (const backend of [nodeSync, browserSync]) {
      const batch = new Uint8Array(4 + sealed.length + 2).fill(0xee);
      backend.chaCha20Poly1305Seal(key, nonce, plaintext, aad, batch.subarray(4, -2));
      assert.equal(toHex(batch), "ee".repeat(4) + toHex(sealed) + "eeee");
      assert.throws(
        () => backend.chaCha20Poly1305Seal(key, nonce, plaintext, aad, batch.subarray(4, -1)),
        Error, // RangeError, or libcrypto's own (past NATIVE_AEAD_MIN_BYTES)
      );
    }
  }
});

Deno.test("openChaCha20Poly1305() throws DECRYPT_FAIL when any byte of ciphertext, tag, AAD or nonce flips", () => {
  const decryptFail = (e: unknown) => e instanceof SecureChatError && e.code === "DECRYPT_FAIL";
  for (let i = 0; i < rfc.sealed.length; i++) {
    const bad = rfc.sealed.slice();
    bad[i] ^= 0x01;
    assert.throws(
      () => openChaCha20Poly1305(rfc.key, rfc.nonce, bad, rfc.aad),
      decryptFail,
      `byte ${i}`,
    );
  }
  const flipped = (bytes: Uint8Array) => Uint8Array.from(bytes, (b, i) => i === 0 ? b ^ 0x80 : b);
  const cases: [string, () => unknown][] = [
    ["aad", () => openChaCha20Poly1305(rfc.key, rfc.nonce, rfc.sealed, flipped(rfc.aad))],
    ["nonce", () => openChaCha20Poly1305(rfc.key, flipped(rfc.nonce), rfc.sealed, rfc.aad)],
    ["key", () => openChaCha20Poly1305(flipped(rfc.key), rfc.nonce, rfc.sealed, rfc.aad)],
    ["truncated", () => openChaCha20Poly1305(rfc.key, rfc.nonce, rfc.sealed.subarray(1), rfc.aad)],
    [
      "shorter than a tag",
      () => openChaCha20Poly1305(rfc.key, rfc.nonce, new Uint8Array(15), rfc.aad),
    ],
    [
      "16-byte key",
      () => openChaCha20Poly1305(rfc.key.subarray(16), rfc.nonce, rfc.sealed, rfc.aad),
    ],
  ];
  for (const [name, fn] of cases) assert.throws(fn, decryptFail, name);
});

Deno.test("openChaCha20Poly1305(into): in place or into a buffer of the opened length; a refusal zeroes it", () => {
  const key = randomBytes(CHACHA20_POLY1305_KEY_BYTES);
  const decryptFail = (e: unknown) => e instanceof SecureChatError && e.code === "DECRYPT_FAIL";
  for (const size of [1, 200, 1000, 65_280]) {
    const nonce = randomBytes(GCM_NONCE_BYTES);
    const plaintext = randomBytes(size);
    const sealed = sealChaCha20Poly1305(key, nonce, plaintext, rfc.aad);
    const frame = sealed.slice();
    const opened = openChaCha20Poly1305(key, nonce, frame, rfc.aad, frame.subarray(0, size));
    assert.equal(opened.buffer, frame.buffer);
    assert.deepEqual(opened, plaintext);
    assert.throws(
      () => openChaCha20Poly1305(key, nonce, sealed, rfc.aad, new Uint8Array(size - 1)),
      RangeError,
    );
    const bad = sealed.slice();
    bad[size] ^= 1; // the tag's first byte
    assert.throws(
      () => openChaCha20Poly1305(key, nonce, bad, rfc.aad, bad.subarray(0, size)),
      decryptFail,
    );
    assert.ok(bad.subarray(0, size).every((b) => b === 0), `${size}: zeroed`);
  }
});

Deno.test("sealChaCha20Poly1305() throws RangeError for a key that is not 32 bytes or a nonce that is not 12", () => {
  for (const size of [0, 16, 31, 33]) {
    assert.throws(
      () => sealChaCha20Poly1305(new Uint8Array(size), rfc.nonce, rfc.plaintext, rfc.aad),
      RangeError,
      `${size}-byte key`,
    );
  }
  for (const size of [0, 8, 11, 13, 24]) {
    assert.throws(
      () => sealChaCha20Poly1305(rfc.key, new Uint8Array(size), rfc.plaintext, rfc.aad),
      RangeError,
      `${size}-byte nonce`,
    );
  }
});
