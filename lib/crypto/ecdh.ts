/**
 * Elliptic-curve Diffie-Hellman, the primitive under the `x25519` and `p256` groups of
 * kex.ts (and the X25519 half of the hybrid): on WebCrypto, except fresh X25519 shares
 * where the `#sync-crypto` backend holds ephemeral keys (node:crypto in the CLI and server). A public key
 * travels as bare bytes with no curve label, the group having been negotiated,
 * so every check on the peer's bytes happens here: length, encoding, curve
 * membership, and the all-zero shared secret.
 */

import { x25519EphemeralAgree, x25519EphemeralKey } from "#sync-crypto";
import type { SyncX25519Key } from "./sync_types.ts";
import { SecureChatError } from "../errors.ts";
import { concat, fromBase64, fromHex, wipe } from "../bytes.ts";

export type EcdhCurve = "x25519" | "p256";

/**
 * `publicKey` is what goes on the wire: X25519 the 32-byte u-coordinate
 * (RFC 7748 §5), P-256 the 65-byte uncompressed point 0x04||X||Y (SEC 1 §2.3.3).
 */
export interface KeyShare {
  readonly curve: EcdhCurve;
  readonly publicKey: Uint8Array;
  /** A fresh X25519 share's key where the `#sync-crypto` backend holds one, else WebCrypto's. */
  readonly privateKey: CryptoKey | SyncX25519Key;
}

const SHARED_SECRET_BYTES = 32;
/** An X25519 public key on the wire: the bare u-coordinate. */
export const X25519_PUBLIC_KEY_BYTES = 32;
const X25519_BYTES = X25519_PUBLIC_KEY_BYTES;
const P256_COORDINATE_BYTES = 32;
const P256_POINT_BYTES = 1 + 2 * P256_COORDINATE_BYTES;
const SEC1_UNCOMPRESSED = 0x04;

const ALGORITHMS: Record<EcdhCurve, EcKeyImportParams | Algorithm> = {
  x25519: { name: "X25519" },
  p256: { name: "ECDH", namedCurve: "P-256" },
};

// P-256 domain parameters (SEC 2 §2.4.2): y² = x³ - 3x + b over GF(p).
const P256_P = 0xffffffff00000001000000000000000000000000ffffffffffffffffffffffffn;
const P256_B = 0x5ac635d8aa3a93e7b3ebbd55769886bc651d06b0cc53b0f63bce3c3e27d2604bn;

// Fixed DER prefixes that wrap a bare 32-byte private scalar as PKCS#8, the
// only private-key import WebCrypto offers that does not need the public key.
// X25519: PrivateKeyInfo { v0, id-X25519, OCTET STRING { OCTET STRING d } } (RFC 8410 §7).
const X25519_PKCS8_PREFIX = fromHex("302e020100300506032b656e04220420");
// P-256: PrivateKeyInfo { v0, id-ecPublicKey + prime256v1,
//   OCTET STRING { ECPrivateKey { v1, OCTET STRING d } } } (RFC 5915, public key omitted).
const P256_PKCS8_PREFIX = fromHex(
  "3041020100301306072a8648ce3d020106082a8648ce3d030107042730250201010420",
);
/** u = 9, little-endian (RFC 7748 §4.1). */
const X25519_BASE_POINT = concat(Uint8Array.of(9), new Uint8Array(X25519_BYTES - 1));

function requireCurve(curve: EcdhCurve): void {
  if (!Object.hasOwn(ALGORITHMS, curve)) {
    throw new SecureChatError("UNSUPPORTED", "unknown ECDH curve");
  }
}

/**
 * Generates a fresh ephemeral key share; the private key is non-extractable.
 * @throws {SecureChatError} UNSUPPORTED for an unknown curve
 */
export async function generateKeyShare(curve: EcdhCurve): Promise<KeyShare> {
  requireCurve(curve);
  // Every handshake makes two: the synchronous backend's costs a quarter of WebCrypto's
  // CPU (generate, export, import, derive) and no thread-pool hops.
  const native = curve === "x25519" ? x25519EphemeralKey() : undefined;
  if (native) return { curve, publicKey: native.publicKey, privateKey: native };
  const pair = await crypto.subtle.generateKey(ALGORITHMS[curve], false, [
    "deriveBits",
  ]) as CryptoKeyPair;
  const publicKey = new Uint8Array(await crypto.subtle.exportKey("raw", pair.publicKey));
  return { curve, publicKey, privateKey: pair.privateKey };
}

/**
 * Builds a key share from a fixed private scalar, for deterministic test
 * vectors (X25519: the 32-byte scalar k of RFC 7748; P-256: the 32-byte
 * big-endian d). The resulting private key is non-extractable; the caller owns
 * and should wipe `privateKey`.
 * @throws {SecureChatError} UNSUPPORTED for an unknown curve; BAD_KEY_SHARE for
 *   a wrong-length scalar or one WebCrypto refuses (P-256: 0 or ≥ n)
 */
export async function keyShareFromPrivate(
  curve: EcdhCurve,
  privateKey: Uint8Array,
): Promise<KeyShare> {
  requireCurve(curve);
  if (privateKey.length !== 32) {
    throw new SecureChatError("BAD_KEY_SHARE", "private scalar must be 32 bytes");
  }
  const pkcs8 = concat(curve === "x25519" ? X25519_PKCS8_PREFIX : P256_PKCS8_PREFIX, privateKey);
  try {
    const key = await importPkcs8(curve, pkcs8, false);
    const publicKey = curve === "x25519"
      ? await x25519PublicKey(key)
      : await p256PublicKey(await importPkcs8(curve, pkcs8, true));
    return { curve, publicKey, privateKey: key };
  } catch (cause) {
    // Deno may accept a bad scalar at import and refuse it only on first use.
    throw new SecureChatError("BAD_KEY_SHARE", "private scalar refused", { cause });
  } finally {
    wipe(pkcs8); // best-effort: the JS engine may keep other copies
  }
}

async function importPkcs8(
  curve: EcdhCurve,
  pkcs8: Uint8Array,
  extractable: boolean,
): Promise<CryptoKey> {
  return await crypto.subtle.importKey(
    "pkcs8",
    pkcs8 as BufferSource,
    ALGORITHMS[curve],
    extractable,
    ["deriveBits"],
  );
}

/** X25519(k, 9): the public key is the shared secret with the base point (RFC 7748 §6.1). */
async function x25519PublicKey(privateKey: CryptoKey): Promise<Uint8Array> {
  const base = await crypto.subtle.importKey(
    "raw",
    X25519_BASE_POINT as BufferSource,
    ALGORITHMS.x25519,
    true,
    [],
  );
  return new Uint8Array(
    await crypto.subtle.deriveBits({ name: "X25519", public: base }, privateKey, 256),
  );
}

/**
 * d·G, read from WebCrypto's JWK export of a short-lived extractable copy:
 * ECDH only yields the x-coordinate of a product, and WebCrypto's own scalar
 * multiplication beats a hand-written one. The exported `d` is a JS string
 * that cannot be wiped (best-effort, as all wiping in JS).
 */
async function p256PublicKey(extractable: CryptoKey): Promise<Uint8Array> {
  const jwk = await crypto.subtle.exportKey("jwk", extractable);
  return concat(
    new Uint8Array([SEC1_UNCOMPRESSED]),
    fromBase64Url(jwk.x ?? ""),
    fromBase64Url(jwk.y ?? ""),
  );
}

function fromBase64Url(text: string): Uint8Array {
  const base64 = text.replace(/-/g, "+").replace(/_/g, "/");
  return fromBase64(base64.padEnd(Math.ceil(base64.length / 4) * 4, "="));
}

function bytesToBigInt(bytes: Uint8Array): bigint {
  return bytes.reduce((n, b) => (n << 8n) | BigInt(b), 0n);
}

/**
 * True when `point` is 0x04||X||Y with X, Y < p on y² = x³ - 3x + b.
 * WebCrypto in Deno imports off-curve points and only fails later, with an
 * unhelpful error, so the invalid-curve check is made explicit here. The
 * point is public, so variable-time BigInt arithmetic is fine.
 */
function isP256Point(point: Uint8Array): boolean {
  if (point.length !== P256_POINT_BYTES || point[0] !== SEC1_UNCOMPRESSED) return false;
  const x = bytesToBigInt(point.subarray(1, 1 + P256_COORDINATE_BYTES));
  const y = bytesToBigInt(point.subarray(1 + P256_COORDINATE_BYTES));
  if (x >= P256_P || y >= P256_P) return false;
  const rhs = (((x * x % P256_P) * x - 3n * x + P256_B) % P256_P + P256_P) % P256_P;
  return (y * y) % P256_P === rhs;
}

/** Constant-time all-zero test (wireguard-go's isZero): no early exit on a secret. */
function isAllZero(bytes: Uint8Array): boolean {
  let acc = 0;
  for (const b of bytes) acc |= b;
  return acc === 0;
}

/**
 * The checks on a peer's public key that need no private key (agree() adds the
 * all-zero one), so a responder can refuse a bad key before generating its own.
 * @throws {SecureChatError} BAD_KEY_SHARE
 */
export function checkPublicKey(curve: EcdhCurve, publicKey: Uint8Array): void {
  const valid = curve === "x25519" ? publicKey.length === X25519_BYTES : isP256Point(publicKey);
  if (!valid) throw new SecureChatError("BAD_KEY_SHARE", `invalid ${curve} public key`);
}

/**
 * The 32-byte shared secret of our share and the peer's public key.
 *
 * X25519: any 32 bytes are a u-coordinate (RFC 7748 §5: non-canonical values
 * are reduced mod p, points on the twist are fine); low-order points are caught
 * by the all-zero check, which every low-order input produces with a clamped
 * scalar (RFC 7748 §6.1). P-256: only the 65-byte uncompressed encoding of a
 * point on the curve is accepted; compressed points are refused.
 * @throws {SecureChatError} BAD_KEY_SHARE for a wrong length, bad encoding,
 *   off-curve point, or (X25519) a low-order point / all-zero shared secret
 */
export async function agree(share: KeyShare, peerPublicKey: Uint8Array): Promise<Uint8Array> {
  checkPublicKey(share.curve, peerPublicKey);
  let secret: Uint8Array;
  try {
    const own = share.privateKey;
    secret = own instanceof CryptoKey
      ? await webCryptoAgree(share.curve, own, peerPublicKey)
      : x25519EphemeralAgree(own, peerPublicKey);
  } catch (cause) {
    // Deno's WebCrypto itself refuses an all-zero X25519 result here (node:crypto returns
    // it); the check below is ours so the guarantee does not hang on one runtime's choice.
    throw new SecureChatError("BAD_KEY_SHARE", `${share.curve} key agreement failed`, { cause });
  }
  // Only X25519 needs this: there a low-order point yields zero. On P-256 a
  // validated point has prime order, and x = 0 is a genuine (if astronomically
  // unlikely) shared x-coordinate that Wycheproof marks valid.
  return share.curve === "x25519" ? checkedX25519(secret) : secret;
}

async function webCryptoAgree(
  curve: EcdhCurve,
  own: CryptoKey,
  peerPublicKey: Uint8Array,
): Promise<Uint8Array> {
  const peer = await crypto.subtle.importKey(
    "raw",
    peerPublicKey as BufferSource,
    ALGORITHMS[curve],
    true,
    [],
  );
  const params = { name: ALGORITHMS[curve].name, public: peer };
  return new Uint8Array(await crypto.subtle.deriveBits(params, own, 8 * SHARED_SECRET_BYTES));
}

/** @throws {SecureChatError} BAD_KEY_SHARE for the all-zero output of a low-order point */
function checkedX25519(secret: Uint8Array): Uint8Array {
  if (isAllZero(secret)) {
    throw new SecureChatError("BAD_KEY_SHARE", "all-zero shared secret (low-order point)");
  }
  return secret;
}
