/**
 * lib/crypto/rsa_verify.ts's two paths held to one verdict: libcrypto's (lib/crypto/openssl_rsa.ts,
 * the key's `native`) and the BigInt one (the same numbers without it, as in the page), over
 * valid, random and mutated signatures and over encoded messages made to differ from EM' in one
 * place each (signed here with the private exponent). The Wycheproof vectors run through both in
 * ./wycheproof_test.ts; WebCrypto's agreement with the BigInt path is ./crypto_rsa_verify_test.ts.
 */
import assert from "node:assert/strict";
import { concat, fromBase64 } from "../../lib/bytes.ts";
import { encode, encodeOid, encodeUnsigned, TAG } from "../../lib/der.ts";
import { sha256 } from "../../lib/crypto/sync_node.ts";
import {
  OID_RSA_ENCRYPTION,
  rsaPkcs1Sha256Verify,
  type RsaPublicKey,
  rsaPublicKeyOfSpki,
} from "../../lib/crypto/rsa_verify.ts";
import { libcryptoMissing } from "../helpers/openssl.ts";
import { skipUnless } from "../helpers/optional_suites.ts";

const ignore = skipUnless("openssl", libcryptoMissing(), "RSA verification through libcrypto");

const ALG = { name: "RSASSA-PKCS1-v1_5", hash: "SHA-256" } as const;
/** DigestInfo's prefix for SHA-256 (RFC 8017 §9.2 note 1). */
const SHA256_PREFIX = Uint8Array.fromHex("3031300d060960864801650304020105000420");

const bigintOf = (bytes: Uint8Array) => BigInt(`0x${bytes.toHex() || "0"}`);
const bytesOf = (value: bigint, length: number) =>
  Uint8Array.fromHex(value.toString(16).padStart(2 * length, "0"));
const fromBase64Url = (text: string) => {
  const base64 = text.replace(/-/g, "+").replace(/_/g, "/");
  return bigintOf(fromBase64(base64.padEnd(Math.ceil(base64.length / 4) * 4, "=")));
};

function modPow(base: bigint, exponent: bigint, modulus: bigint): bigint {
  let result = 1n;
  for (let b = base % modulus, x = exponent; x > 0n; x >>= 1n, b = (b * b) % modulus) {
    if (x & 1n) result = (result * b) % modulus;
  }
  return result;
}

/** a⁻¹ mod m, or undefined when they share a factor. */
function modInverse(a: bigint, m: bigint): bigint | undefined {
  let [r0, r1, s0, s1] = [a % m, m, 1n, 0n];
  while (r1 !== 0n) {
    const q = r0 / r1;
    [r0, r1, s0, s1] = [r1, r0 - q * r1, s1, s0 - q * s1];
  }
  return r0 === 1n ? ((s0 % m) + m) % m : undefined;
}

/** SubjectPublicKeyInfo { rsaEncryption NULL, BIT STRING { n, e } } (or another algorithm OID). */
function spkiOf(n: bigint, e: bigint, oid = OID_RSA_ENCRYPTION): Uint8Array {
  const unsigned = (x: bigint) => encodeUnsigned(bytesOf(x, Math.ceil(x.toString(16).length / 2)));
  const rsaKey = encode(TAG.SEQUENCE, unsigned(n), unsigned(e));
  return encode(
    TAG.SEQUENCE,
    encode(TAG.SEQUENCE, encodeOid(oid), encode(TAG.NULL)),
    encode(TAG.BIT_STRING, Uint8Array.of(0), rsaKey),
  );
}

interface TestKey {
  spki: Uint8Array;
  n: bigint;
  e: bigint;
  d: bigint;
  p: bigint;
  q: bigint;
  k: number;
  sign: (data: Uint8Array) => Promise<Uint8Array>;
}

async function testKey(bits: number, exponent: number[]): Promise<TestKey> {
  const pair = await crypto.subtle.generateKey(
    { ...ALG, modulusLength: bits, publicExponent: Uint8Array.from(exponent) },
    true,
    ["sign", "verify"],
  ) as CryptoKeyPair;
  const spki = new Uint8Array(await crypto.subtle.exportKey("spki", pair.publicKey));
  const jwk = await crypto.subtle.exportKey("jwk", pair.privateKey);
  const [n, e, d, p, q] = [jwk.n, jwk.e, jwk.d, jwk.p, jwk.q].map((x) => fromBase64Url(x!));
  const sign = async (data: Uint8Array) =>
    new Uint8Array(await crypto.subtle.sign(ALG, pair.privateKey, data as BufferSource));
  return { spki, n, e, d, p, q, k: Math.ceil(bits / 8), sign };
}

/** Both paths' verdicts on one signature, asserted equal; the verdict. */
function bothSay(key: RsaPublicKey, data: Uint8Array, signature: Uint8Array, what: string) {
  assert.ok(key.native, "libcrypto has the key");
  const native = rsaPkcs1Sha256Verify(key, data, signature);
  const bigint = rsaPkcs1Sha256Verify({ n: key.n, e: key.e, k: key.k }, data, signature);
  assert.equal(native, bigint, `${what}: libcrypto ${native}, BigInt ${bigint}`);
  return native;
}

/** 0x00 || 0x01 || PS (0xff…) || 0x00 || `tail`, k bytes: EM' when `tail` is DigestInfo || H. */
function encodedWith(k: number, tail: Uint8Array): Uint8Array {
  const em = new Uint8Array(k);
  em[1] = 0x01;
  em.fill(0xff, 2, k - tail.length - 1);
  em.set(tail, k - tail.length);
  return em;
}

/** Encoded messages that differ from EM' (RFC 8017 §9.2) in one place each; the first is EM'. */
function variants(k: number, data: Uint8Array): [string, Uint8Array][] {
  const hash = sha256(data);
  const good = encodedWith(k, concat(SHA256_PREFIX, hash));
  const edit = (at: number, value: number) => {
    const copy = good.slice();
    copy[at] = value;
    return copy;
  };
  const separator = k - SHA256_PREFIX.length - hash.length - 1;
  const shortPs = new Uint8Array(k); // PS of 7 bytes; DigestInfo and H; zeros after
  shortPs.set([0x00, 0x01, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x00]);
  shortPs.set(concat(SHA256_PREFIX, hash), 10);
  const digestInfo = (hex: string) => encodedWith(k, concat(Uint8Array.fromHex(hex), hash));
  return [
    ["EM' itself", good],
    ["block type 02", edit(1, 0x02)],
    ["leading 01", edit(0, 0x01)],
    ["a zero inside PS", edit(5, 0x00)],
    ["0xfe inside PS", edit(separator - 1, 0xfe)],
    ["no zero separator", edit(separator, 0xff)],
    ["PS of 7 bytes", shortPs],
    ["DigestInfo without NULL", digestInfo("302f300b06096086480165030402010420")],
    ["DigestInfo's length in long form", digestInfo("308131300d060960864801650304020105000420")],
    ["SHA-1's OID", digestInfo("302d300906052b0e03021a05000420")],
    ["a byte after the hash", encodedWith(k, concat(SHA256_PREFIX, hash, Uint8Array.of(0)))],
    ["the hash's last bit", edit(k - 1, good[k - 1] ^ 1)],
    ["another message's hash", encodedWith(k, concat(SHA256_PREFIX, sha256(Uint8Array.of(1))))],
  ];
}

for (const [bits, exponent] of [[2048, [1, 0, 1]], [2048, [3]], [3072, [1, 0, 1]]] as const) {
  const label = `${bits} bits, e = ${exponent.length === 1 ? 3 : 65537}`;
  Deno.test({
    name:
      `rsaPkcs1Sha256Verify(): libcrypto and BigInt agree on valid, random and mutated signatures (${label})`,
    ignore,
    fn: async () => {
      const key = await testKey(bits, [...exponent]);
      const verifying = rsaPublicKeyOfSpki(key.spki);
      const { k, n } = key;
      for (let i = 0; i < 6; i++) {
        const data = crypto.getRandomValues(new Uint8Array(i * 53));
        const sig = await key.sign(data);
        assert.equal(bothSay(verifying, data, sig, "valid"), true);
        const cases: [string, Uint8Array, Uint8Array][] = [
          ["other data", Uint8Array.of(...data, 1), sig],
          ["truncated", data, sig.subarray(1)],
          ["padded", data, Uint8Array.of(0, ...sig)],
          ["empty", data, new Uint8Array(0)],
          ["all zero", data, new Uint8Array(k)],
          ["one", data, bytesOf(1n, k)],
          ["n - 1", data, bytesOf(n - 1n, k)],
          ["n", data, bytesOf(n, k)],
          ["all ones", data, new Uint8Array(k).fill(0xff)],
        ];
        // s + n opens to the same EM, but is no representative (RFC 8017 §5.2.2) where it fits.
        if (bigintOf(sig) + n < 1n << BigInt(8 * k)) {
          cases.push(["s + n", data, bytesOf(bigintOf(sig) + n, k)]);
        }
        for (let j = 0; j < 24; j++) {
          const flipped = sig.slice();
          const bit = crypto.getRandomValues(new Uint32Array(1))[0] % (8 * k);
          flipped[bit >> 3] ^= 1 << (bit & 7);
          cases.push([`bit ${bit} flipped`, data, flipped]);
          const random = crypto.getRandomValues(new Uint8Array(k));
          cases.push([`random ${random.toHex().slice(0, 8)}…`, data, random]);
        }
        for (const [what, d, s] of cases) assert.equal(bothSay(verifying, d, s, what), false, what);
      }
      // Encoded messages one edit away from EM', signed with d: only EM' itself verifies.
      const data = crypto.getRandomValues(new Uint8Array(77));
      for (const [what, em] of variants(k, data)) {
        assert.ok(bigintOf(em) < n, what);
        const signature = bytesOf(modPow(bigintOf(em), key.d, n), k);
        assert.equal(bothSay(verifying, data, signature, what), what === "EM' itself", what);
      }
    },
  });
}

Deno.test({
  name:
    "rsaPublicKeyOfSpki(): a key OpenSSL's public operation refuses keeps the BigInt path and its verdict",
  ignore,
  fn: async () => {
    const { n, p, q } = await testKey(2048, [1, 0, 1]);
    const phi = (p - 1n) * (q - 1n);
    const data = new TextEncoder().encode("a key OpenSSL calls bad");
    const signed = (modulus: bigint, e: bigint, order: bigint) => {
      const key = rsaPublicKeyOfSpki(spkiOf(modulus, e));
      const em = encodedWith(key.k, concat(SHA256_PREFIX, sha256(data)));
      const signature = bytesOf(modPow(bigintOf(em), modInverse(e, order)!, modulus), key.k);
      return { key, signature };
    };
    // e ≥ n (OpenSSL: "bad e value"), with a valid signature made with e's inverse mod φ(n).
    let e = n + 2n;
    while (modInverse(e, phi) === undefined) e += 2n;
    const large = signed(n, e, phi);
    assert.equal(large.key.native, undefined, "e ≥ n stays in BigInt");
    assert.equal(rsaPkcs1Sha256Verify(large.key, data, large.signature), true);
    // An even modulus, 2p (Montgomery multiplication needs an odd one): φ(2p) = p − 1.
    const even = signed(2n * p, 65537n, p - 1n);
    assert.equal(even.key.native, undefined, "an even modulus stays in BigInt");
    assert.equal(rsaPkcs1Sha256Verify(even.key, data, even.signature), true);
    // At most 16384 bits; past 3072 bits a public exponent of at most 64, up to there any below n.
    assert.equal(rsaPublicKeyOfSpki(spkiOf(2n ** 16384n + 1n, 3n)).native, undefined);
    assert.ok(rsaPublicKeyOfSpki(spkiOf(2n ** 16383n + 1n, 3n)).native);
    const wide = 2n ** 3100n + 1n;
    assert.equal(rsaPublicKeyOfSpki(spkiOf(wide, 2n ** 64n + 1n)).native, undefined);
    assert.ok(rsaPublicKeyOfSpki(spkiOf(wide, 2n ** 64n - 1n)).native);
    assert.ok(rsaPublicKeyOfSpki(spkiOf(n, 2n ** 64n + 1n)).native);
  },
});

Deno.test({
  name:
    "rsaPublicKeyOfSpki(): a key is checked in BigInt at its first check and loaded into libcrypto at its second, from a copy of its SPKI",
  ignore,
  fn: async () => {
    const key = await testKey(2048, [1, 0, 1]);
    const spki = key.spki.slice();
    const read = rsaPublicKeyOfSpki(spki) as RsaPublicKey & { readonly nativeLoaded: boolean };
    // The caller's buffer used again (a received frame's) must not change the key loaded later.
    spki.fill(0);
    const data = new TextEncoder().encode("checked twice");
    const signature = await key.sign(data);
    assert.equal(read.nativeLoaded, false, "nothing in libcrypto before a check");
    assert.equal(rsaPkcs1Sha256Verify(read, data, signature), true);
    assert.equal(read.nativeLoaded, false, "one check: BigInt, nothing kept in libcrypto");
    assert.equal(rsaPkcs1Sha256Verify(read, data, signature), true);
    assert.equal(read.nativeLoaded, true, "checked again: loaded");
    assert.equal(rsaPkcs1Sha256Verify(read, data, Uint8Array.from(signature).reverse()), false);
  },
});
