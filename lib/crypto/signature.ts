/**
 * Signatures made with certificate keys (PROTOCOL: sign/verify). The algorithm
 * is never chosen by the caller: it is read from the key's own
 * AlgorithmIdentifier, so a key cannot be used with a second algorithm.
 */

import {
  ed25519Sign,
  ed25519SyncKey,
  ed25519Verify,
  rsaSign,
  rsaSigner,
  rsaSyncKey,
} from "#sync-crypto";
import type { RsaSigner, SyncEd25519Key, SyncRsaKey } from "./sync_types.ts";
import {
  OID_RSA_ENCRYPTION,
  rsaPkcs1Sha256Verify,
  type RsaPublicKey,
  rsaPublicKeyOfSpki,
} from "./rsa_verify.ts";
import { SecureChatError } from "../errors.ts";
import {
  malformed,
  parseDerAs,
  parseTlv,
  readOid,
  readUnsignedIntegerBytes,
  SeqReader,
  TAG,
} from "../der.ts";

export type SignatureAlgorithm = "rsa-pkcs1-sha256" | "ecdsa-p256-sha256" | "ed25519";

/** A private key; imported non-extractable. */
export interface SigningKey {
  readonly algorithm: SignatureAlgorithm;
  readonly key: CryptoKey;
  /** Ed25519 only: the same key for the synchronous backend, see {@link nativeEd25519}. */
  readonly native?: SyncEd25519Key;
  /** RSA only: the same key in OpenSSL's libcrypto where the backend has it ({@link rsaSignerOf}). */
  readonly rsa?: SyncRsaKey;
}

export interface VerifyingKey {
  readonly algorithm: SignatureAlgorithm;
  readonly key: CryptoKey;
  /** Ed25519 only: the same key for the synchronous backend, see {@link nativeEd25519}. */
  readonly native?: SyncEd25519Key;
  /**
   * RSA only: the key as ./rsa_verify.ts verifies it (through libcrypto where the backend has it,
   * else in BigInt: each several times cheaper than Deno's WebCrypto).
   */
  readonly rsa?: RsaPublicKey;
}

/**
 * Ed25519 signs and verifies on every chat message, so it takes the `#sync-crypto`
 * backend's synchronous path where it has one (node:crypto in the CLI and the server):
 * WebCrypto's hop through the thread pool costs several times the operation. The WebCrypto
 * key stays the one that decided the import, and the browser's path (its backend has no
 * synchronous key: a page's key stays a non-extractable CryptoKey).
 */
function nativeEd25519(format: "pkcs8" | "spki", der: Uint8Array): SyncEd25519Key | undefined {
  return ed25519SyncKey(format, der);
}

const OID_EC_PUBLIC_KEY = "1.2.840.10045.2.1";
const OID_PRIME256V1 = "1.2.840.10045.3.1.7";
const OID_ED25519 = "1.3.101.112";

/** Below this an RSA key is refused: NIST SP 800-131A, and every modern TLS stack. */
const MIN_RSA_BITS = 2048;

/** P-256 scalars and field elements are 32 bytes; a P1363 signature is r||s. */
const P256_SCALAR_BYTES = 32;
const ED25519_SIGNATURE_BYTES = 64;

interface WebCryptoParams {
  readonly importParams: RsaHashedImportParams | EcKeyImportParams | Algorithm;
  readonly signParams: Algorithm | EcdsaParams;
}

const WEBCRYPTO: Record<SignatureAlgorithm, WebCryptoParams> = {
  "rsa-pkcs1-sha256": {
    importParams: { name: "RSASSA-PKCS1-v1_5", hash: "SHA-256" },
    signParams: { name: "RSASSA-PKCS1-v1_5" },
  },
  "ecdsa-p256-sha256": {
    importParams: { name: "ECDSA", namedCurve: "P-256" },
    signParams: { name: "ECDSA", hash: "SHA-256" },
  },
  "ed25519": {
    importParams: { name: "Ed25519" },
    signParams: { name: "Ed25519" },
  },
};

/**
 * The algorithm named by the AlgorithmIdentifier at `index` of the key's outer
 * SEQUENCE; for EC keys only the named curve P-256 is ours. Parsing stops
 * there: WebCrypto parses the key material itself.
 */
function detectAlgorithm(der: Uint8Array, index: number, what: string): SignatureAlgorithm {
  const { oid, curve } = parseDerAs("INVALID_INPUT", () => {
    const key = new SeqReader(parseTlv(der), what);
    for (let i = 0; i < index; i++) key.any("field before the AlgorithmIdentifier");
    const id = new SeqReader(key.next(TAG.SEQUENCE, "AlgorithmIdentifier"), "AlgorithmIdentifier");
    const oid = readOid(id.next(TAG.OID, "algorithm"));
    const params = id.optional(TAG.OID);
    return { oid, curve: params && readOid(params) };
  }, `malformed ${what}`);
  switch (oid) {
    case OID_RSA_ENCRYPTION:
      return "rsa-pkcs1-sha256";
    case OID_ED25519:
      return "ed25519";
    case OID_EC_PUBLIC_KEY:
      if (curve === OID_PRIME256V1) return "ecdsa-p256-sha256";
      throw new SecureChatError("UNSUPPORTED", "EC key is not on the named curve P-256");
    default:
      throw new SecureChatError("UNSUPPORTED", "key algorithm is not RSA, ECDSA P-256 or Ed25519");
  }
}

async function importKey(
  format: "pkcs8" | "spki",
  der: Uint8Array,
  algorithm: SignatureAlgorithm,
  usage: KeyUsage,
): Promise<CryptoKey> {
  let key: CryptoKey;
  try {
    key = await crypto.subtle.importKey(
      format,
      der as BufferSource,
      WEBCRYPTO[algorithm].importParams,
      false,
      [usage],
    );
  } catch (cause) {
    throw new SecureChatError("INVALID_INPUT", `${format} key refused by WebCrypto`, { cause });
  }
  if (
    algorithm === "rsa-pkcs1-sha256" &&
    (key.algorithm as RsaHashedKeyAlgorithm).modulusLength < MIN_RSA_BITS
  ) {
    throw new SecureChatError("UNSUPPORTED", `RSA modulus below ${MIN_RSA_BITS} bits`);
  }
  return key;
}

/**
 * Imports a PKCS#8 private key, non-extractable. The algorithm comes from the
 * key's AlgorithmIdentifier: rsaEncryption → RSASSA-PKCS1-v1_5/SHA-256,
 * id-ecPublicKey + prime256v1 → ECDSA P-256/SHA-256, id-Ed25519 → Ed25519.
 * The caller owns `pkcs8Der` and should wipe it.
 * @throws {SecureChatError} UNSUPPORTED for any other algorithm or curve, or an
 *   RSA modulus under 2048 bits; INVALID_INPUT for malformed DER or a key WebCrypto refuses
 */
export async function importSigningKeyPkcs8(pkcs8Der: Uint8Array): Promise<SigningKey> {
  // PrivateKeyInfo ::= SEQUENCE { version, privateKeyAlgorithm, privateKey, ... } (RFC 5958)
  const algorithm = detectAlgorithm(pkcs8Der, 1, "PKCS#8 key");
  const key = await importKey("pkcs8", pkcs8Der, algorithm, "sign");
  if (algorithm === "rsa-pkcs1-sha256") {
    // WebCrypto's import checked the key first (and its modulus length); libcrypto signs with it.
    const bits = (key.algorithm as RsaHashedKeyAlgorithm).modulusLength;
    return { algorithm, key, rsa: rsaSyncKey(pkcs8Der, bits) };
  }
  if (algorithm !== "ed25519") return { algorithm, key };
  return { algorithm, key, native: nativeEd25519("pkcs8", pkcs8Der) };
}

/**
 * For an RSA key, which implementation signs with it and why (lib never prints: serve and
 * connect report it). On the CLI's backend that is OpenSSL's libcrypto where the process can load
 * it (constant time, ~5× faster), else Deno's WebCrypto, whose RSA is not constant time
 * (RUSTSEC-2023-0071; docs/CRYPTO.md). Undefined for other algorithms, which this does not concern.
 */
export function rsaSignerOf(key: SigningKey): RsaSigner | undefined {
  // Every RSA key of a process goes the same way: to libcrypto exactly when it is loadable.
  return key.algorithm === "rsa-pkcs1-sha256" ? rsaSigner() : undefined;
}

/**
 * Imports a SubjectPublicKeyInfo public key, detecting the algorithm as
 * {@link importSigningKeyPkcs8} does.
 * @throws {SecureChatError} UNSUPPORTED for any other algorithm or curve, or an
 *   RSA modulus under 2048 bits; INVALID_INPUT for malformed DER or a key WebCrypto refuses
 */
export async function importVerifyingKeySpki(spkiDer: Uint8Array): Promise<VerifyingKey> {
  // SubjectPublicKeyInfo ::= SEQUENCE { algorithm, subjectPublicKey } (RFC 5280 §4.1)
  const algorithm = detectAlgorithm(spkiDer, 0, "SubjectPublicKeyInfo");
  const key = await importKey("spki", spkiDer, algorithm, "verify");
  if (algorithm === "rsa-pkcs1-sha256") {
    return { algorithm, key, rsa: rsaPublicKeyOfSpki(spkiDer) };
  }
  if (algorithm !== "ed25519") return { algorithm, key };
  return { algorithm, key, native: nativeEd25519("spki", spkiDer) };
}

/**
 * Signs `data`. ECDSA output is raw r||s (IEEE P1363, 64 bytes), not DER.
 * RSA PKCS#1 v1.5 and Ed25519 are deterministic. RSA goes through libcrypto where the key has it
 * ({@link rsaSignerOf}). ECDSA may be either (Deno
 * uses RFC 6979 deterministic nonces); nothing in the protocol relies on which.
 */
export async function sign(key: SigningKey, data: Uint8Array): Promise<Uint8Array> {
  if (key.native) return ed25519Sign(key.native, data);
  if (key.rsa) return rsaSign(key.rsa, data);
  const params = WEBCRYPTO[key.algorithm].signParams;
  return new Uint8Array(await crypto.subtle.sign(params, key.key, data as BufferSource));
}

/** The exact length every valid signature under `key` (or made with it) has. */
export function signatureLength(key: Pick<VerifyingKey | SigningKey, "algorithm" | "key">): number {
  switch (key.algorithm) {
    case "rsa-pkcs1-sha256":
      return Math.ceil((key.key.algorithm as RsaHashedKeyAlgorithm).modulusLength / 8);
    case "ecdsa-p256-sha256":
      return 2 * P256_SCALAR_BYTES;
    case "ed25519":
      return ED25519_SIGNATURE_BYTES;
  }
}

/**
 * Verifies a signature. A wrong-length, malformed or forged signature is
 * `false`, never an exception, so callers have exactly one failure path.
 */
export async function verify(
  key: VerifyingKey,
  data: Uint8Array,
  signature: Uint8Array,
): Promise<boolean> {
  return await verifyNow(key, data, signature);
}

/**
 * {@link verify}, answered at once where the key allows: Ed25519 (node:crypto) and RSA (our
 * own check) verify synchronously, and only ECDSA waits for WebCrypto. A receiver checking
 * record after record then has nothing to wait for (PERFORMANCE, session 9).
 */
export function verifyNow(
  key: VerifyingKey,
  data: Uint8Array,
  signature: Uint8Array,
): boolean | Promise<boolean> {
  // Checked first so no parser below ever sees a truncated or padded signature.
  if (signature.length !== signatureLength(key)) return false;
  try {
    if (key.native) return ed25519Verify(key.native, data, signature);
    if (key.rsa) return rsaPkcs1Sha256Verify(key.rsa, data, signature);
    return crypto.subtle.verify(
      WEBCRYPTO[key.algorithm].signParams,
      key.key,
      signature as BufferSource,
      data as BufferSource,
    ).catch(() => false);
  } catch {
    return false;
  }
}

/**
 * Converts a DER ECDSA-Sig-Value (X.509, RFC 3279 §2.2.3) to raw r||s, each
 * left-padded to `size` bytes. Only canonical DER is accepted: BER lengths,
 * superfluous or missing leading zeros, negative integers and trailing bytes
 * are all refused, so one signature has exactly one accepted encoding.
 * @throws {SecureChatError} SIG_FAIL for anything but canonical DER with r, s < 2^(8·size)
 */
export function ecdsaDerToP1363(der: Uint8Array, size = P256_SCALAR_BYTES): Uint8Array {
  return parseDerAs("SIG_FAIL", () => {
    const parts = new SeqReader(parseTlv(der), "ECDSA-Sig-Value");
    const out = new Uint8Array(2 * size);
    for (const [i, name] of ["r", "s"].entries()) {
      const magnitude = readUnsignedIntegerBytes(parts.next(TAG.INTEGER, name));
      if (magnitude.length > size) malformed(`ECDSA ${name} too large`);
      out.set(magnitude, (i + 1) * size - magnitude.length);
    }
    parts.end("ECDSA-Sig-Value");
    return out;
  }, "malformed DER ECDSA signature");
}
