/**
 * The node backend's per-message primitives, both implementations explicitly: libcrypto over FFI
 * (lib/crypto/openssl_symmetric.ts, what runs where libcrypto loads) and the fallback
 * (sync_node.ts's `portable`: JavaScript and node:crypto, what runs where it does not). Each is
 * held to RFC 8439's AEAD vectors, FIPS 180-2's SHA-256 examples and RFC 4231's HMAC cases, and
 * refuses every tampering; libcrypto is cross-checked against the fallback on random inputs at
 * every length 0..300, around each bound between the paths and at large lengths; and its length
 * checks refuse what would make libcrypto read or write past a buffer. Without libcrypto (no
 * `--allow-ffi`, no OpenSSL 3) its cases are skipped, loudly, with the reason.
 */
import assert from "node:assert/strict";
import { portable } from "../../lib/crypto/sync_node.ts";
import * as nodeSync from "../../lib/crypto/sync_node.ts";
import { openLibcrypto } from "../../lib/crypto/libcrypto.ts";
import { LibcryptoError, OpenSslSymmetric } from "../../lib/crypto/openssl_symmetric.ts";
import { CHACHA20_POLY1305_JS_MAX_BYTES } from "../../lib/crypto/chacha20_poly1305.ts";
import { SHORT_HASH_MAX_BYTES } from "../../lib/crypto/sha256_short.ts";
import { concat, fromHex, randomBytes, toHex, utf8 } from "../../lib/bytes.ts";
import { libcryptoMissing } from "../helpers/openssl.ts";
import { skipUnless } from "../helpers/optional_suites.ts";
import { RFC8439_AEAD_VECTORS } from "../helpers/rfc8439_vectors.ts";

/** One implementation of the four primitives, as the tests call them. */
interface Primitives {
  seal(k: Uint8Array, n: Uint8Array, p: Uint8Array, a: Uint8Array, into?: Uint8Array): Uint8Array;
  open(k: Uint8Array, n: Uint8Array, s: Uint8Array, a: Uint8Array, into?: Uint8Array): Uint8Array;
  sha256(...parts: Uint8Array[]): Uint8Array;
  hmacSha256(key: Uint8Array, ...parts: Uint8Array[]): Uint8Array;
}

const missing = libcryptoMissing();
const ignoreLibcrypto = skipUnless(
  "openssl",
  missing,
  "ChaCha20-Poly1305, SHA-256 and HMAC through libcrypto (the fallback's cases still run)",
);

/** libcrypto's implementation, opened for this test (not the backend's shared one). */
function libcryptoPrimitives(): OpenSslSymmetric {
  const opened = openLibcrypto();
  if ("reason" in opened) throw new Error(opened.reason);
  return new OpenSslSymmetric(opened);
}

function viaLibcrypto(): Primitives {
  const native = libcryptoPrimitives();
  return {
    seal: (k, n, p, a, into) => native.seal(k, n, p, a, into),
    open: (k, n, s, a, into) => native.open(k, n, s, a, into),
    sha256: (...parts) => native.sha256(parts),
    hmacSha256: (key, ...parts) => native.hmacSha256(key, parts),
  };
}

/**
 * `seal` into a place `offset` bytes into a larger buffer (a frame's in a connection's batch),
 * the buffer whole: the sealed bytes there, 0xee around them where nothing may be written.
 */
function sealAt(
  seal: Primitives["seal"],
  offset: number,
  [k, n, p, a]: [Uint8Array, Uint8Array, Uint8Array, Uint8Array],
): Uint8Array {
  const batch = new Uint8Array(offset + p.length + 16 + 3).fill(0xee);
  const into = batch.subarray(offset, offset + p.length + 16);
  assert.equal(seal(k, n, p, a, into), into);
  return batch;
}

const fallback: Primitives = {
  seal: portable.chaCha20Poly1305Seal,
  open: portable.chaCha20Poly1305Open,
  sha256: portable.sha256,
  hmacSha256: portable.hmacSha256,
};

/** Each implementation, by name: the fallback always, libcrypto where it loads. */
const IMPLEMENTATIONS: { name: string; ignore: boolean; get: () => Primitives }[] = [
  { name: "libcrypto", ignore: ignoreLibcrypto, get: viaLibcrypto },
  { name: "the fallback", ignore: false, get: () => fallback },
];

/** FIPS 180-2 Appendix B (B.1, B.2) and the empty message; the last, 1,000 bytes of 'a'. */
const SHA256_VECTORS = [
  ["abc", "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"],
  [
    "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq",
    "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1",
  ],
  ["", "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"],
  ["a".repeat(1000), "41edece42d63e8d9bf515a9ba6932e1c20cbc9f5a5d134645adb5db1b9737ea3"],
] as const;

/** RFC 4231 §4.2–4.8 (case 5 is a truncated MAC: not ours), and the empty key and message. */
const HMAC_VECTORS = [
  [
    "0b".repeat(20),
    toHex(utf8("Hi There")),
    "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7",
  ],
  [
    toHex(utf8("Jefe")),
    toHex(utf8("what do ya want for nothing?")),
    "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843",
  ],
  [
    "aa".repeat(20),
    "dd".repeat(50),
    "773ea91e36800e46854db8ebd09181a72959098b3ef8c122d9635514ced565fe",
  ],
  [
    "0102030405060708090a0b0c0d0e0f10111213141516171819",
    "cd".repeat(50),
    "82558a389a443c0ea4cc819899f2083a85f0faa3e578f8077a2e3ff46729665b",
  ],
  [
    "aa".repeat(131),
    toHex(utf8("Test Using Larger Than Block-Size Key - Hash Key First")),
    "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54",
  ],
  [
    "aa".repeat(131),
    toHex(
      utf8(
        "This is a test using a larger than block-size key and a larger than block-size data. The key needs to be hashed before being used by the HMAC algorithm.",
      ),
    ),
    "9b09ffa71b942fcb27635fbcd5b0e944bfdc63644f0713938a7f51535c3a35e2",
  ],
  ["", "", "b613679a0814d9ec772f95d778c35fc5ff1697c493715653c6c712144292c5ad"],
] as const;

for (const implementation of IMPLEMENTATIONS) {
  const { name, ignore } = implementation;

  Deno.test({
    name: `ChaCha20-Poly1305 through ${name} reproduces RFC 8439 §2.8.2 and Appendix A.5`,
    ignore,
    fn: () => {
      const p = implementation.get();
      assert.equal(RFC8439_AEAD_VECTORS.length, 2);
      for (const { source, key, nonce, aad, plaintext, sealed } of RFC8439_AEAD_VECTORS) {
        const want = toHex(sealed);
        assert.equal(toHex(p.seal(key, nonce, plaintext, aad)), want, source);
        const batch = sealAt(p.seal, 3, [key, nonce, plaintext, aad]);
        assert.equal(toHex(batch), "eeeeee" + want + "eeeeee", source);
        assert.equal(toHex(p.open(key, nonce, sealed, aad)), toHex(plaintext), source);
      }
    },
  });

  Deno.test({
    name: `SHA-256 through ${name} reproduces FIPS 180-2's examples, whole and in parts`,
    ignore,
    fn: () => {
      const p = implementation.get();
      for (const [message, digest] of SHA256_VECTORS) {
        const bytes = utf8(message);
        assert.equal(toHex(p.sha256(bytes)), digest, message.slice(0, 10));
        const cut = bytes.length >> 1;
        assert.equal(toHex(p.sha256(bytes.subarray(0, cut), bytes.subarray(cut))), digest);
      }
    },
  });

  Deno.test({
    name: `HMAC-SHA-256 through ${name} reproduces RFC 4231's cases and the empty key`,
    ignore,
    fn: () => {
      const p = implementation.get();
      for (const [key, data, mac] of HMAC_VECTORS) {
        assert.equal(toHex(p.hmacSha256(fromHex(key), fromHex(data))), mac, `key ${key}`);
      }
    },
  });

  Deno.test({
    name:
      `ChaCha20-Poly1305 through ${name} refuses any flipped bit, a wrong key, nonce or AAD, and a truncation`,
    ignore,
    fn: () => {
      const p = implementation.get();
      // Both sides of every bound between paths: JavaScript, libcrypto, node:crypto.
      for (const length of [0, 1, 64, 255, 256, 257, 300, CHACHA20_POLY1305_JS_MAX_BYTES + 1]) {
        const key = randomBytes(32);
        const nonce = randomBytes(12);
        const aad = randomBytes(21);
        const sealed = p.seal(key, nonce, randomBytes(length), aad);
        for (let i = 0; i < sealed.length; i++) {
          const bad = sealed.slice();
          bad[i] ^= 1 << (i % 8);
          assert.throws(() => p.open(key, nonce, bad, aad), Error, `${length}: byte ${i}`);
        }
        const flip = (bytes: Uint8Array, i: number) => {
          const copy = bytes.slice();
          copy[i % copy.length] ^= 0x80;
          return copy;
        };
        for (let i = 0; i < 32; i++) {
          assert.throws(() => p.open(flip(key, i), nonce, sealed, aad), Error);
          assert.throws(() => p.open(key, flip(nonce, i), sealed, aad), Error);
          assert.throws(() => p.open(key, nonce, sealed, flip(aad, i)), Error);
        }
        const cases: [string, () => unknown][] = [
          ["no AAD", () => p.open(key, nonce, sealed, new Uint8Array(0))],
          ["longer AAD", () => p.open(key, nonce, sealed, new Uint8Array([...aad, 0]))],
          ["shorter AAD", () => p.open(key, nonce, sealed, aad.subarray(1))],
          ["truncated", () => p.open(key, nonce, sealed.subarray(1), aad)],
          ["cut short", () => p.open(key, nonce, sealed.subarray(0, sealed.length - 1), aad)],
          ["extended", () => p.open(key, nonce, new Uint8Array([...sealed, 0]), aad)],
        ];
        for (const [what, run] of cases) assert.throws(run, Error, `${length}: ${what}`);
        // A refusal leaves nothing behind: the genuine record opens next.
        assert.equal(p.open(key, nonce, sealed, aad).length, length);
      }
    },
  });
}

for (const implementation of IMPLEMENTATIONS) {
  const { name, ignore } = implementation;
  Deno.test({
    name:
      `ChaCha20-Poly1305 through ${name} opens in place (a received frame's own bytes) or into a given buffer, and zeroes it on a refusal`,
    ignore,
    fn: () => {
      const p = implementation.get();
      for (
        const length of [1, 64, 255, 256, 257, 300, CHACHA20_POLY1305_JS_MAX_BYTES + 1, 65_280]
      ) {
        const key = randomBytes(32);
        const nonce = randomBytes(12);
        const aad = randomBytes(21);
        const plaintext = randomBytes(length);
        const sealed = p.seal(key, nonce, plaintext, aad);
        // In place: the plaintext over the ciphertext, the tag's bytes left as they were.
        const frame = sealed.slice();
        const inPlace = frame.subarray(0, length);
        assert.equal(p.open(key, nonce, frame, aad, inPlace), inPlace, `${length}`);
        assert.equal(toHex(inPlace), toHex(plaintext), `${length}: in place`);
        assert.equal(toHex(frame.subarray(length)), toHex(sealed.subarray(length)));
        // Into a buffer of its own, at an offset; nothing around it touched.
        const around = new Uint8Array(length + 6).fill(0xee);
        p.open(key, nonce, sealed, aad, around.subarray(3, -3));
        assert.equal(toHex(around), "eeeeee" + toHex(plaintext) + "eeeeee", `${length}: into`);
        // A refused record leaves no unauthenticated plaintext where it was opened: libcrypto
        // decrypts before it checks the tag and wipes, JavaScript checks first and writes nothing.
        const bad = sealed.slice();
        bad[length - 1] ^= 1;
        const ciphertext = toHex(bad.subarray(0, length));
        assert.throws(() => p.open(key, nonce, bad, aad, bad.subarray(0, length)), Error);
        const left = toHex(bad.subarray(0, length));
        assert.ok(left === "00".repeat(length) || left === ciphertext, `${length}: ${left}`);
        assert.throws(() => p.open(key, nonce, sealed, aad, new Uint8Array(length + 1)), Error);
      }
    },
  });
}

Deno.test({
  name: "libcrypto's open refuses an output that overlaps its input other than in place",
  ignore: ignoreLibcrypto,
  fn: () => {
    const native = libcryptoPrimitives();
    const [key, nonce, aad] = [randomBytes(32), randomBytes(12), randomBytes(3)];
    const sealed = native.seal(key, nonce, randomBytes(1000), aad);
    const frame = new Uint8Array(sealed.length + 1);
    frame.set(sealed);
    for (const into of [frame.subarray(1, 1001), new Uint8Array(frame.buffer, 1, 1000)]) {
      assert.throws(() => native.open(key, nonce, frame.subarray(0, sealed.length), aad, into), {
        name: "Error",
        message: /overlaps/,
      });
    }
  },
});

/** Every length 0..300, both sides of each bound between the paths, and a few large ones. */
const LENGTHS = [
  ...Array.from({ length: 301 }, (_, n) => n),
  ...[CHACHA20_POLY1305_JS_MAX_BYTES, SHORT_HASH_MAX_BYTES].flatMap((bound) =>
    [-17, -16, -1, 0, 1, 15, 16, 17, 64].map((d) => bound + d)
  ),
  4096,
  4097,
  65_280,
  65_536,
];

Deno.test({
  name:
    "libcrypto's ChaCha20-Poly1305 gives the fallback's bytes at every length and AAD, into a place too",
  ignore: ignoreLibcrypto,
  fn: () => {
    const native = viaLibcrypto();
    for (const length of LENGTHS) {
      const key = randomBytes(32);
      const nonce = randomBytes(12);
      const plaintext = randomBytes(length);
      // 0..40 bytes: none, whole and partial Poly1305 blocks; calls with and without AAD alternate.
      const aad = randomBytes((length * 7) % 41);
      const want = fallback.seal(key, nonce, plaintext, aad);
      const sealed = native.seal(key, nonce, plaintext, aad);
      assert.equal(toHex(sealed), toHex(want), `${length} bytes, ${aad.length}-byte AAD`);
      const offset = length % 5;
      const batch = sealAt(native.seal, offset, [key, nonce, plaintext, aad]);
      assert.equal(
        toHex(batch),
        toHex(sealAt(fallback.seal, offset, [key, nonce, plaintext, aad])),
      );
      assert.deepEqual(native.open(key, nonce, want, aad), plaintext, `${length}: open`);
      assert.deepEqual(fallback.open(key, nonce, sealed, aad), plaintext);
    }
  },
});

Deno.test({
  name:
    "libcrypto's SHA-256 and HMAC give the fallback's bytes at every length, key length and split, one call after another",
  ignore: ignoreLibcrypto,
  fn: () => {
    const native = viaLibcrypto();
    for (const length of LENGTHS) {
      const data = randomBytes(length);
      const parts = [data.subarray(0, length >> 2), data.subarray(length >> 2)];
      assert.equal(toHex(native.sha256(...parts)), toHex(fallback.sha256(data)), `${length}`);
      // Parts that are empty (skipped, never passed to libcrypto) on either side of one that is not.
      const empty = new Uint8Array(0);
      assert.equal(toHex(native.sha256(empty, data, empty)), toHex(fallback.sha256(data)));
      for (const keyBytes of [0, 1, 32, 63, 64, 65, 131]) {
        const key = randomBytes(keyBytes);
        assert.equal(
          toHex(native.hmacSha256(key, ...parts)),
          toHex(fallback.hmacSha256(key, data)),
          `HMAC, ${keyBytes}-byte key, ${length} bytes`,
        );
      }
    }
  },
});

Deno.test("the node backend's sha256(), hmacSha256() and AEAD give the fallback's bytes on both sides of each bound", () => {
  // Whichever path each length takes here (libcrypto when this process may load it).
  for (const length of [0, 63, 64, 65, 127, 128, 129, 255, 256, 257, 769, 1025, 5000]) {
    const data = randomBytes(length);
    const key = randomBytes(32);
    const nonce = randomBytes(12);
    const aad = randomBytes(5);
    assert.equal(toHex(nodeSync.sha256(data)), toHex(fallback.sha256(data)), `${length}`);
    assert.equal(toHex(nodeSync.hmacSha256(key, data)), toHex(fallback.hmacSha256(key, data)));
    const sealed = nodeSync.chaCha20Poly1305Seal(key, nonce, data, aad);
    assert.equal(toHex(sealed), toHex(fallback.seal(key, nonce, data, aad)), `${length}`);
    const batch = sealAt(nodeSync.chaCha20Poly1305Seal, 2, [key, nonce, data, aad]);
    assert.equal(toHex(batch), "eeee" + toHex(sealed) + "eeeeee", `${length}: into`);
    assert.deepEqual(nodeSync.chaCha20Poly1305Open(key, nonce, sealed, aad), data);
  }
});

Deno.test({
  name: "OpenSslSymmetric refuses a key, nonce, input or output libcrypto would read or write past",
  ignore: ignoreLibcrypto,
  fn: () => {
    const native = libcryptoPrimitives();
    const [key, nonce, aad] = [randomBytes(32), randomBytes(12), randomBytes(3)];
    const sealed = native.seal(key, nonce, randomBytes(10), aad);
    const refusals: [string, () => unknown][] = [
      ["31-byte key", () => native.seal(key.subarray(1), nonce, sealed, aad)],
      ["33-byte key", () => native.seal(concat(key, key).subarray(0, 33), nonce, sealed, aad)],
      ["11-byte nonce", () => native.seal(key, nonce.subarray(1), sealed, aad)],
      ["16-byte nonce", () => native.open(key, randomBytes(16), sealed, aad)],
      ["31-byte key, open", () => native.open(key.subarray(1), nonce, sealed, aad)],
      ["an output a byte short", () => native.seal(key, nonce, sealed, aad, new Uint8Array(41))],
      ["an output a byte long", () => native.seal(key, nonce, sealed, aad, new Uint8Array(43))],
      ["no tag", () => native.open(key, nonce, sealed.subarray(0, 15), aad)],
      ["empty", () => native.open(key, nonce, new Uint8Array(0), aad)],
    ];
    for (const [what, run] of refusals) assert.throws(run, LibcryptoError, what);
    // And after every refusal the contexts still work.
    assert.equal(native.open(key, nonce, sealed, aad).length, 10);
  },
});

Deno.test("the node backend takes the libcrypto path exactly when libcrypto loads here, and says so", () => {
  const backend = nodeSync.symmetricBackend();
  assert.equal(backend.native, missing === undefined, backend.detail);
  assert.match(
    backend.detail,
    missing === undefined ? /libcrypto$/ : /^JavaScript and node:crypto; /,
  );
});

/** A view whose `length` lies (review14b finding 2): libcrypto must get the real byte count. */
class LyingLength extends Uint8Array {
  override get length(): number {
    return 512;
  }
}

Deno.test({
  name: "OpenSslSymmetric passes libcrypto each view's real byte count, not an overridden length",
  ignore: ignoreLibcrypto,
  fn: () => {
    const native = libcryptoPrimitives();
    const [key, nonce] = [randomBytes(32), randomBytes(12)];
    const plaintext = new LyingLength(16).fill(7);
    const sealed = native.seal(key, nonce, plaintext, new LyingLength(0));
    assert.equal(sealed.length, 32, "ciphertext covers exactly the 16 real bytes");
    const plain = new Uint8Array(16).fill(7);
    assert.equal(toHex(sealed), toHex(fallback.seal(key, nonce, plain, new Uint8Array(0))));
    assert.equal(
      toHex(native.sha256([new LyingLength(3)])),
      toHex(fallback.sha256(new Uint8Array(3))),
    );
    assert.equal(
      toHex(native.hmacSha256(new LyingLength(5), [new LyingLength(3)])),
      toHex(fallback.hmacSha256(new Uint8Array(5), new Uint8Array(3))),
    );
    assert.throws(() => native.seal(new LyingLength(31), nonce, plain, plain), LibcryptoError);
  },
});
