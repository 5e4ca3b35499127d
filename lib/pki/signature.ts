/**
 * Verifies the signature on a certificate or CRL with WebCrypto (sha256WithRSAEncryption by
 * lib/crypto/rsa_verify.ts, after WebCrypto imported the key). The issuer's key is
 * imported once per parsed certificate and cached, so a long-lived TrustStore pays the
 * import only at load time.
 */
import { SecureChatError } from "../errors.ts";
import { TAG } from "../der.ts";
import { ecdsaDerToP1363 } from "../crypto/signature.ts";
import {
  rsaPkcs1Sha256Verify,
  type RsaPublicKey,
  rsaPublicKeyOfSpki,
} from "../crypto/rsa_verify.ts";
import type { AlgorithmId, ParsedCertificate } from "./certificate.ts";

type Hash = "SHA-256" | "SHA-384" | "SHA-512";

const SIGNATURE_ALGORITHMS: Record<
  string,
  { key: "rsa" | "ec" | "ed25519"; hash?: Hash; name: string }
> = {
  "1.2.840.113549.1.1.11": { key: "rsa", hash: "SHA-256", name: "sha256WithRSAEncryption" },
  "1.2.840.113549.1.1.12": { key: "rsa", hash: "SHA-384", name: "sha384WithRSAEncryption" },
  "1.2.840.113549.1.1.13": { key: "rsa", hash: "SHA-512", name: "sha512WithRSAEncryption" },
  "1.2.840.10045.4.3.2": { key: "ec", hash: "SHA-256", name: "ecdsa-with-SHA256" },
  "1.2.840.10045.4.3.3": { key: "ec", hash: "SHA-384", name: "ecdsa-with-SHA384" },
  "1.2.840.10045.4.3.4": { key: "ec", hash: "SHA-512", name: "ecdsa-with-SHA512" },
  "1.3.101.112": { key: "ed25519", name: "Ed25519" },
};

/** A readable name for a signature algorithm OID (for `cert show`). */
export function signatureAlgorithmName(oid: string): string {
  return SIGNATURE_ALGORITHMS[oid]?.name ?? oid;
}

function badCert(reason: string): never {
  throw new SecureChatError("BAD_CERT", reason);
}

const keyCache = new WeakMap<ParsedCertificate, Map<string, Promise<CryptoKey>>>();

function importIssuerKey(issuer: ParsedCertificate, hash?: Hash): Promise<CryptoKey> {
  const key = issuer.publicKey;
  let params: RsaHashedImportParams | EcKeyImportParams | Algorithm;
  if (key.kind === "rsa") params = { name: "RSASSA-PKCS1-v1_5", hash: hash! };
  else if (key.kind === "ec") params = { name: "ECDSA", namedCurve: key.curve };
  else if (key.kind === "ed25519") params = { name: "Ed25519" };
  else return badCert(`unsupported issuer key: ${key.description}`);
  const cacheKey = `${key.kind}/${hash}`;
  let perCert = keyCache.get(issuer);
  if (!perCert) keyCache.set(issuer, perCert = new Map());
  let imported = perCert.get(cacheKey);
  if (!imported) {
    imported = crypto.subtle.importKey("spki", issuer.spki as BufferSource, params, false, [
      "verify",
    ]);
    perCert.set(cacheKey, imported);
  }
  return imported.catch((cause) => {
    throw new SecureChatError("BAD_CERT", "issuer public key cannot be imported", { cause });
  });
}

const rsaKeys = new WeakMap<ParsedCertificate, RsaPublicKey>();

/**
 * The issuer's key as lib/crypto/rsa_verify.ts verifies it (through libcrypto where the backend
 * has it, else in BigInt: each several times cheaper than Deno's RSA), read once per parsed
 * certificate; WebCrypto has imported the key first.
 */
function rsaKeyOf(issuer: ParsedCertificate): RsaPublicKey {
  let key = rsaKeys.get(issuer);
  if (!key) {
    try {
      key = rsaPublicKeyOfSpki(issuer.spki);
    } catch (cause) {
      throw new SecureChatError("BAD_CERT", "issuer public key cannot be imported", { cause });
    }
    rsaKeys.set(issuer, key);
  }
  return key;
}

/** X.509 carries ECDSA signatures as DER SEQUENCE{r, s}; WebCrypto wants fixed-size r||s. */
function ecdsaDerToRaw(signature: Uint8Array, size: number): Uint8Array {
  try {
    return ecdsaDerToP1363(signature, size);
  } catch (cause) {
    // An undecodable signature makes the certificate malformed, not merely unverified.
    throw new SecureChatError("BAD_CERT", "malformed DER: ECDSA signature", { cause });
  }
}

/**
 * Checks `signature` over `data` by `issuer`'s key under algorithm `alg`.
 * @throws BAD_CERT for an unsupported algorithm, a key/algorithm mismatch or an
 *   undecodable signature; returns false for a signature that simply does not verify
 */
export async function verifySignedData(
  issuer: ParsedCertificate,
  alg: AlgorithmId,
  data: Uint8Array,
  signature: Uint8Array,
): Promise<boolean> {
  const spec = SIGNATURE_ALGORITHMS[alg.oid];
  if (!spec) badCert(`unsupported signature algorithm ${alg.oid}`);
  const nullParams = alg.params?.tag === TAG.NULL && alg.params.value.length === 0;
  if (alg.params && !(spec.key === "rsa" && nullParams)) {
    badCert("unexpected signature algorithm parameters");
  }
  if (issuer.publicKey.kind !== spec.key) badCert("signature algorithm does not match issuer key");
  const key = await importIssuerKey(issuer, spec.hash);
  if (issuer.publicKey.kind === "rsa" && spec.hash === "SHA-256") {
    return rsaPkcs1Sha256Verify(rsaKeyOf(issuer), data, signature);
  }
  let sig = signature;
  let params: Algorithm | EcdsaParams = { name: key.algorithm.name };
  if (issuer.publicKey.kind === "ec") {
    sig = ecdsaDerToRaw(signature, issuer.publicKey.curve === "P-256" ? 32 : 48);
    params = { name: "ECDSA", hash: spec.hash! };
  }
  return await crypto.subtle.verify(params, key, sig as BufferSource, data as BufferSource);
}
