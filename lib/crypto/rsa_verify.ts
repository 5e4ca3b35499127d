/**
 * RSASSA-PKCS1-v1_5 verification with SHA-256 (RFC 8017 §8.2.2): the one place RSA signatures are
 * verified. Where the `#sync-crypto` backend has a native RSA (the node backend with libcrypto
 * loaded: ./openssl_rsa.ts, ~18 µs of CPU per 2048-bit verification and no JS garbage) a key is
 * also loaded there and verified by it; elsewhere (the page, a process without libcrypto, and a
 * key OpenSSL's public operation refuses) in BigInt arithmetic here, ~36 µs. Both give one
 * verdict for every signature: tests/unit/openssl_rsa_verify_test.ts holds them to each other and
 * to Wycheproof.
 *
 * Why not WebCrypto: Deno's RSA (the Rust code behind both WebCrypto and node:crypto) takes
 * 200–260 µs of CPU per 2048-bit verification, plus a hop through the thread pool; the server
 * verifies the author's signature of every line it relays (PROTOCOL §6.3), recipients every relay
 * (§6.4), and `verify` every line of a transcript. WebCrypto still imports every key (it decides
 * what a valid key is, and the modulus size check); this module only replaces the arithmetic.
 *
 * Only public data reaches this code (the key, the message, the signature), so
 * variable-time arithmetic leaks nothing. The padding is never parsed: EM' is built from
 * the message's hash and compared whole with s^e mod n (RFC 8017 §8.2.2 steps 3–4), so a
 * malformed padding or DigestInfo cannot be accepted (Bleichenbacher 2006 was a parser's bug);
 * OpenSSL checks the same way (its padding check is strict, its DigestInfo re-encoded and
 * compared).
 */
import { rsaPublicSyncKey, rsaVerify, sha256 } from "#sync-crypto";
import type { RsaPublicNumbers, SyncRsaPublicKey } from "./sync_types.ts";
import {
  malformed,
  parseDerAs,
  parseTlv,
  readBitString,
  readOid,
  readUnsignedIntegerBytes,
  SeqReader,
  TAG,
} from "../der.ts";

/** rsaEncryption (RFC 8017 A.1): the one algorithm of an RSA key securechat verifies with. */
export const OID_RSA_ENCRYPTION = "1.2.840.113549.1.1.1";

export interface RsaPublicKey extends RsaPublicNumbers {
  /** The same key in the backend's native RSA, where it has one that takes this key. */
  readonly native?: SyncRsaPublicKey;
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
 * n and e of an RSA SubjectPublicKeyInfo (RFC 8017 A.1.1 inside RFC 5280 §4.1), and the key in
 * the backend's native RSA where it has one. The caller has already had the key accepted by
 * WebCrypto; this reads the same DER strictly.
 * @throws {SecureChatError} INVALID_INPUT for anything but SEQUENCE { rsaEncryption, BIT STRING
 *   { n, e } }, or a key the native RSA refuses
 */
export function rsaPublicKeyOfSpki(spki: Uint8Array): RsaPublicKey {
  const numbers = parseDerAs("INVALID_INPUT", () => {
    const outer = new SeqReader(parseTlv(spki), "SubjectPublicKeyInfo");
    const algorithm = new SeqReader(
      outer.next(TAG.SEQUENCE, "AlgorithmIdentifier"),
      "AlgorithmIdentifier",
    );
    // libcrypto reads the key by this OID: an RSA-PSS or EC one would be another key to it.
    if (readOid(algorithm.next(TAG.OID, "algorithm")) !== OID_RSA_ENCRYPTION) {
      malformed("not an rsaEncryption key");
    }
    const { bytes, unused } = readBitString(outer.next(TAG.BIT_STRING, "subjectPublicKey"));
    outer.end("SubjectPublicKeyInfo");
    if (unused !== 0) malformed("RSAPublicKey is not a whole number of bytes");
    const key = new SeqReader(parseTlv(bytes), "RSAPublicKey");
    const n = readUnsignedIntegerBytes(key.next(TAG.INTEGER, "modulus"));
    const e = readUnsignedIntegerBytes(key.next(TAG.INTEGER, "publicExponent"));
    key.end("RSAPublicKey");
    return { n: bigintOf(n), e: bigintOf(e), k: n.length };
  }, "malformed RSA public key");
  return { ...numbers, native: rsaPublicSyncKey(spki, numbers) };
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
 * signature, of any length or value, is false. Natively where `key` has it, else in BigInt.
 */
export function rsaPkcs1Sha256Verify(
  key: RsaPublicKey,
  data: Uint8Array,
  signature: Uint8Array,
): boolean {
  const { n, e, k } = key;
  if (signature.length !== k || e < 3n || k < SHA256_DIGEST_INFO.length + 32 + 11) return false;
  if (key.native) return rsaVerify(key.native, data, signature);
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
