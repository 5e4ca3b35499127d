/**
 * RSASSA-PKCS1-v1_5 verification with SHA-256 (RFC 8017 §8.2.2): the one place RSA signatures are
 * verified. Where the `#sync-crypto` backend has a native RSA (the node backend with libcrypto
 * loaded: ./openssl_rsa.ts, ~18 µs of CPU per 2048-bit verification and no JS garbage) a key checked
 * more than once is also loaded there and verified by it (NATIVE_FROM_CHECK); elsewhere (the page, a process without libcrypto, and a
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

/**
 * A key's checks in BigInt before it is loaded into the backend's native RSA: from its second on.
 * A native copy is ~2.7 KB of libcrypto's memory (an EVP_PKEY and its verification context), and
 * most keys are checked once: a client's, by the server, at its handshake. Loading every one
 * grew what an idle authenticated connection keeps from ~8.2 to ~10.9 KB of malloc'ed memory
 * (`bench/peer_bench.ts --idle 200,800`, session 20); one check in BigInt costs ~20 µs more. A
 * key checked again (an author's, once per batch of lines; an issuer's, at every handshake) is
 * checked natively from then on.
 */
const NATIVE_FROM_CHECK = 2;

/**
 * What rsaPublicKeyOfSpki reads: the numbers, and the key's native copy, loaded when first asked
 * for ({@link native}) or at its NATIVE_FROM_CHECK-th check ({@link nativeForCheck}).
 */
class SpkiRsaPublicKey implements RsaPublicKey {
  readonly n: bigint;
  readonly e: bigint;
  readonly k: number;
  /** A copy: the caller's may be a view of a buffer used again (a received frame's). */
  readonly #spki: Uint8Array;
  /** null: the backend has no native RSA that takes this key. */
  #native?: SyncRsaPublicKey | null;
  #checks = 0;

  constructor(numbers: RsaPublicNumbers, spki: Uint8Array) {
    this.n = numbers.n;
    this.e = numbers.e;
    this.k = numbers.k;
    this.#spki = spki.slice();
  }

  /**
   * The key in the backend's native RSA, loaded now if it was not.
   * @throws {SecureChatError} INVALID_INPUT when libcrypto reads the key otherwise than it was read
   *   here (./openssl_rsa.ts importRsaPublicKey)
   */
  get native(): SyncRsaPublicKey | undefined {
    if (this.#native === undefined) this.#native = rsaPublicSyncKey(this.#spki, this) ?? null;
    return this.#native ?? undefined;
  }

  /** Whether the native copy is loaded: what the key keeps of libcrypto's memory. */
  get nativeLoaded(): boolean {
    return this.#native !== undefined && this.#native !== null;
  }

  /** The native key for a check, from the key's NATIVE_FROM_CHECK-th on. */
  nativeForCheck(): SyncRsaPublicKey | undefined {
    if (this.#native === undefined && ++this.#checks < NATIVE_FROM_CHECK) return undefined;
    return this.native;
  }
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
 * the backend's native RSA where it has one, loaded from its second check (NATIVE_FROM_CHECK).
 * The caller has already had the key accepted by WebCrypto; this reads the same DER strictly.
 * @throws {SecureChatError} INVALID_INPUT for anything but SEQUENCE { rsaEncryption, BIT STRING
 *   { n, e } } (a key the native RSA then reads otherwise is refused when it is loaded)
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
  return new SpkiRsaPublicKey(numbers, spki);
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
  const native = key instanceof SpkiRsaPublicKey ? key.nativeForCheck() : key.native;
  if (native) return rsaVerify(native, data, signature);
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
