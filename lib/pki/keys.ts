/**
 * Key pairs for the CA and leaves, and PKCS#8 private key files, optionally encrypted
 * with PBES2 (RFC 8018: PBKDF2-HMAC-SHA256 + AES-256-CBC), the scheme
 * `openssl pkey -passin` reads.
 */
import { SecureChatError } from "../errors.ts";
import { randomBytes, utf8 } from "../bytes.ts";
import {
  children,
  encode,
  encodeOid,
  encodeSmallInt,
  malformed,
  parseDerAs,
  parseTlv,
  readOid,
  readSmallInt,
  SeqReader,
  TAG,
  type Tlv,
} from "../der.ts";
import { pemEncode } from "./pem.ts";

export const KEY_TYPES = ["rsa2048", "ed25519", "p256"] as const;
export type KeyType = typeof KEY_TYPES[number];

const GENERATE: Record<KeyType, RsaHashedKeyGenParams | EcKeyGenParams | Algorithm> = {
  rsa2048: {
    name: "RSASSA-PKCS1-v1_5",
    modulusLength: 2048,
    publicExponent: Uint8Array.of(1, 0, 1),
    hash: "SHA-256",
  } as RsaHashedKeyGenParams,
  ed25519: { name: "Ed25519" },
  p256: { name: "ECDSA", namedCurve: "P-256" },
};

/** The private key is extractable so it can be written out once, as PKCS#8. */
export async function generateKeyPair(type: KeyType): Promise<CryptoKeyPair> {
  return await crypto.subtle.generateKey(GENERATE[type], true, ["sign", "verify"]) as CryptoKeyPair;
}

/** The X.509 signature algorithm a key signs with: sha256WithRSA, ecdsa-with-SHA256 or Ed25519. */
export function signingAlgorithmOf(key: CryptoKey): Algorithm | EcdsaParams {
  return key.algorithm.name === "ECDSA" ? { name: "ECDSA", hash: "SHA-256" } : key.algorithm;
}

// OIDs of PKCS#5 v2.1 (RFC 8018 appendix C) and NIST AES.
const PBES2 = "1.2.840.113549.1.5.13";
const PBKDF2 = "1.2.840.113549.1.5.12";
const PRFS: Record<string, string> = {
  "1.2.840.113549.2.7": "SHA-1",
  "1.2.840.113549.2.9": "SHA-256",
  "1.2.840.113549.2.10": "SHA-384",
  "1.2.840.113549.2.11": "SHA-512",
};
const HMAC_SHA256 = "1.2.840.113549.2.9";
const CIPHERS: Record<string, number> = {
  "2.16.840.1.101.3.4.1.2": 128,
  "2.16.840.1.101.3.4.1.22": 192,
  "2.16.840.1.101.3.4.1.42": 256,
};
const AES256_CBC = "2.16.840.1.101.3.4.1.42";
/** OWASP's 2023 figure for PBKDF2-HMAC-SHA256; the CA key is unlocked rarely. */
const ITERATIONS = 600_000;
/** Refuse files that would make us spin for minutes (a hostile or corrupt key file). */
const MAX_ITERATIONS = 10_000_000;

async function pbkdf2Key(
  password: string,
  salt: Uint8Array,
  iterations: number,
  hash: string,
  bits: number,
  usage: KeyUsage,
): Promise<CryptoKey> {
  const base = await crypto.subtle.importKey(
    "raw",
    utf8(password) as BufferSource,
    "PBKDF2",
    false,
    [
      "deriveKey",
    ],
  );
  return await crypto.subtle.deriveKey(
    { name: "PBKDF2", hash, salt: salt as BufferSource, iterations },
    base,
    { name: "AES-CBC", length: bits },
    false,
    [usage],
  );
}

/** Wraps a PKCS#8 PrivateKeyInfo into an EncryptedPrivateKeyInfo (RFC 5958 §3). */
export async function encryptPkcs8(pkcs8: Uint8Array, password: string): Promise<Uint8Array> {
  const salt = randomBytes(16);
  const iv = randomBytes(16);
  const key = await pbkdf2Key(password, salt, ITERATIONS, "SHA-256", 256, "encrypt");
  const ciphertext = new Uint8Array(
    await crypto.subtle.encrypt(
      { name: "AES-CBC", iv: iv as BufferSource },
      key,
      pkcs8 as BufferSource,
    ),
  );
  const seq = (...parts: Uint8Array[]) => encode(TAG.SEQUENCE, ...parts);
  const kdf = seq(
    encodeOid(PBKDF2),
    seq(
      encode(TAG.OCTET_STRING, salt),
      encodeSmallInt(ITERATIONS),
      seq(encodeOid(HMAC_SHA256), encode(TAG.NULL)),
    ),
  );
  const scheme = seq(encodeOid(AES256_CBC), encode(TAG.OCTET_STRING, iv));
  return seq(seq(encodeOid(PBES2), seq(kdf, scheme)), encode(TAG.OCTET_STRING, ciphertext));
}

function wrongPassword(cause?: unknown): never {
  throw new SecureChatError("AUTH_FAIL", "wrong password for the private key", { cause });
}

/** Parses the PBES2 parameters; anything else (PBES1, scrypt) is unsupported. */
function readPbes2(algorithm: Tlv) {
  const alg = new SeqReader(algorithm, "encryptionAlgorithm");
  if (readOid(alg.next(TAG.OID, "encryption OID")) !== PBES2) malformed("not PBES2");
  const params = new SeqReader(alg.next(TAG.SEQUENCE, "PBES2 params"), "PBES2 params");
  const kdf = new SeqReader(params.next(TAG.SEQUENCE, "KDF"), "KDF");
  if (readOid(kdf.next(TAG.OID, "KDF OID")) !== PBKDF2) malformed("KDF is not PBKDF2");
  const p = new SeqReader(kdf.next(TAG.SEQUENCE, "PBKDF2 params"), "PBKDF2 params");
  const salt = p.next(TAG.OCTET_STRING, "salt").value;
  const iterations = readSmallInt(p.next(TAG.INTEGER, "iterations"));
  p.optional(TAG.INTEGER); // keyLength: implied by the cipher
  const prfTlv = p.optional(TAG.SEQUENCE);
  const hash = prfTlv ? PRFS[readOid(children(prfTlv)[0])] : "SHA-1";
  const scheme = new SeqReader(params.next(TAG.SEQUENCE, "cipher"), "cipher");
  const bits = CIPHERS[readOid(scheme.next(TAG.OID, "cipher OID"))];
  const iv = scheme.next(TAG.OCTET_STRING, "IV").value;
  if (!hash || !bits || iv.length !== 16) malformed("unsupported PBES2 algorithms");
  if (iterations < 1 || iterations > MAX_ITERATIONS) {
    malformed("PBKDF2 iteration count out of range");
  }
  return { salt, iterations, hash, bits, iv };
}

/**
 * Decrypts an EncryptedPrivateKeyInfo.
 * @throws AUTH_FAIL for a wrong password; BAD_CERT (malformed DER) for a corrupt structure
 */
export async function decryptPkcs8(encrypted: Uint8Array, password: string): Promise<Uint8Array> {
  const { params, ciphertext } = parseDerAs("BAD_CERT", () => {
    const info = new SeqReader(parseTlv(encrypted), "EncryptedPrivateKeyInfo");
    const params = readPbes2(info.next(TAG.SEQUENCE, "encryptionAlgorithm"));
    return { params, ciphertext: info.next(TAG.OCTET_STRING, "encryptedData").value };
  });
  const key = await pbkdf2Key(
    password,
    params.salt,
    params.iterations,
    params.hash,
    params.bits,
    "decrypt",
  );
  let plain: Uint8Array;
  try {
    plain = new Uint8Array(
      await crypto.subtle.decrypt(
        { name: "AES-CBC", iv: params.iv as BufferSource },
        key,
        ciphertext as BufferSource,
      ),
    );
  } catch (cause) {
    return wrongPassword(cause);
  }
  // CBC padding passes by chance about once in 256 wrong guesses; the DER check catches those.
  try {
    parseTlv(plain, TAG.SEQUENCE);
  } catch (cause) {
    return wrongPassword(cause);
  }
  return plain;
}

export function isEncryptedPrivateKeyPem(pem: string): boolean {
  return pem.includes("-----BEGIN ENCRYPTED PRIVATE KEY-----");
}

/** PEM text of a private key, PKCS#8, encrypted when a password is given. */
export async function privateKeyToPem(key: CryptoKey, password?: string): Promise<string> {
  const pkcs8 = new Uint8Array(await crypto.subtle.exportKey("pkcs8", key));
  try {
    return password === undefined
      ? pemEncode("PRIVATE KEY", pkcs8)
      : pemEncode("ENCRYPTED PRIVATE KEY", await encryptPkcs8(pkcs8, password));
  } finally {
    pkcs8.fill(0); // best-effort: the engine may hold other copies
  }
}

/**
 * Imports a PKCS#8 key for signing certificates and CRLs, telling its algorithm from
 * the PrivateKeyInfo.
 * @throws IO_ERROR for a key type securechat does not sign with
 */
export async function importSigningKey(pkcs8: Uint8Array): Promise<CryptoKey> {
  let algorithm: RsaHashedImportParams | EcKeyImportParams | Algorithm;
  try {
    const info = new SeqReader(parseTlv(pkcs8), "PrivateKeyInfo");
    info.next(TAG.INTEGER, "version");
    const [oidTlv, params] = children(info.next(TAG.SEQUENCE, "privateKeyAlgorithm"));
    const oid = readOid(oidTlv);
    if (oid === "1.2.840.113549.1.1.1") algorithm = { name: "RSASSA-PKCS1-v1_5", hash: "SHA-256" };
    else if (oid === "1.3.101.112") algorithm = { name: "Ed25519" };
    else if (oid === "1.2.840.10045.2.1" && params && readOid(params) === "1.2.840.10045.3.1.7") {
      algorithm = { name: "ECDSA", namedCurve: "P-256" };
    } else throw new SecureChatError("IO_ERROR", `unsupported private key algorithm ${oid}`);
    return await crypto.subtle.importKey("pkcs8", pkcs8 as BufferSource, algorithm, false, [
      "sign",
    ]);
  } catch (error) {
    if (error instanceof SecureChatError && error.code === "IO_ERROR") throw error;
    throw new SecureChatError("IO_ERROR", "private key is not a usable PKCS#8 key", {
      cause: error,
    });
  }
}
