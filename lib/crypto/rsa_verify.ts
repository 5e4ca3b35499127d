/**
 * RSASSA-PKCS1-v1_5 verification with SHA-256 (RFC 8017 §8.2.2) in BigInt arithmetic.
 *
 * Why not WebCrypto: Deno's RSA (the Rust code behind both WebCrypto and node:crypto) takes
 * 200–260 µs of CPU per 2048-bit verification, plus a hop through the thread pool, where
 * s^65537 mod n by BigInt squaring takes about 50 µs; the server verifies the author's
 * signature of every line it relays (PROTOCOL §6.3), recipients every relay (§6.4), and
 * `verify` every line of a transcript. WebCrypto still imports every key (it decides what
 * a valid key is, and the modulus size check); this module only replaces the arithmetic.
 *
 * Only public data reaches this code (the key, the message, the signature), so
 * variable-time arithmetic leaks nothing. The padding is never parsed: EM' is built from
 * the message's hash and compared whole with s^e mod n (RFC 8017 §8.2.2 steps 3–4), so a
 * malformed padding or DigestInfo cannot be accepted (Bleichenbacher 2006 was a parser's bug).
 */
import { sha256 } from "#sync-crypto";
import {
  malformed,
  parseDerAs,
  parseTlv,
  readBitString,
  readUnsignedIntegerBytes,
  SeqReader,
  TAG,
} from "../der.ts";

export interface RsaPublicKey {
  readonly n: bigint;
  readonly e: bigint;
  /** Bytes of the modulus: every signature and EM is this long. */
  readonly k: number;
}

/** DigestInfo { AlgorithmIdentifier { id-sha256, NULL }, OCTET STRING (32) } (RFC 8017 §9.2 note 1). */
const SHA256_DIGEST_INFO = Uint8Array.of(
  0x30,
  0x31,
  0x30,
  0x0d,
  0x06,
  0x09,
  0x60,
  0x86,
  0x48,
  0x01,
  0x65,
  0x03,
  0x04,
  0x02,
  0x01,
  0x05,
  0x00,
  0x04,
  0x20,
);

const bigintOf = (bytes: Uint8Array): bigint =>
  bytes.length === 0 ? 0n : BigInt(`0x${bytes.toHex()}`);

/**
 * n and e of an RSA SubjectPublicKeyInfo (RFC 8017 A.1.1 inside RFC 5280 §4.1). The caller has
 * already had the key accepted by WebCrypto; this reads the same DER strictly.
 * @throws {SecureChatError} INVALID_INPUT for anything but SEQUENCE { alg, BIT STRING { n, e } }
 */
export function rsaPublicKeyOfSpki(spki: Uint8Array): RsaPublicKey {
  return parseDerAs("INVALID_INPUT", () => {
    const outer = new SeqReader(parseTlv(spki), "SubjectPublicKeyInfo");
    outer.next(TAG.SEQUENCE, "AlgorithmIdentifier");
    const { bytes, unused } = readBitString(outer.next(TAG.BIT_STRING, "subjectPublicKey"));
    outer.end("SubjectPublicKeyInfo");
    if (unused !== 0) malformed("RSAPublicKey is not a whole number of bytes");
    const key = new SeqReader(parseTlv(bytes), "RSAPublicKey");
    const n = readUnsignedIntegerBytes(key.next(TAG.INTEGER, "modulus"));
    const e = readUnsignedIntegerBytes(key.next(TAG.INTEGER, "publicExponent"));
    key.end("RSAPublicKey");
    return { n: bigintOf(n), e: bigintOf(e), k: n.length };
  }, "malformed RSA public key");
}

/** base^exponent mod modulus, square and multiply from the top bit (public values only). */
function modPow(base: bigint, exponent: bigint, modulus: bigint): bigint {
  let result = base;
  for (let bit = exponent.toString(2).length - 2; bit >= 0; bit--) {
    result = (result * result) % modulus;
    if ((exponent >> BigInt(bit)) & 1n) result = (result * base) % modulus;
  }
  return result;
}

/**
 * True when `signature` is key's RSASSA-PKCS1-v1_5 signature of SHA-256(`data`); any other
 * signature, of any length or value, is false.
 */
export function rsaPkcs1Sha256Verify(
  key: RsaPublicKey,
  data: Uint8Array,
  signature: Uint8Array,
): boolean {
  const { n, e, k } = key;
  if (signature.length !== k || e < 3n || k < SHA256_DIGEST_INFO.length + 32 + 11) return false;
  const s = bigintOf(signature);
  if (s >= n) return false; // RFC 8017 §5.2.2: the representative must be below n
  const hex = modPow(s, e, n).toString(16).padStart(2 * k, "0");
  // EM' = 0x00 || 0x01 || PS (0xff…, at least 8) || 0x00 || DigestInfo || H (§9.2)
  const expected = new Uint8Array(k);
  const tail = k - SHA256_DIGEST_INFO.length - 32;
  expected[1] = 0x01;
  expected.fill(0xff, 2, tail - 1);
  expected.set(SHA256_DIGEST_INFO, tail);
  expected.set(sha256(data), tail + SHA256_DIGEST_INFO.length);
  return hex === expected.toHex();
}
