/**
 * The browser's counterpart of ./sync_node.ts, selected by the web build's import map
 * (`#sync-crypto`, scripts/web_build.ts): the same interface over the audited, pinned
 * `@noble/*` packages, and ChaCha20-Poly1305 in JavaScript (./chacha20_poly1305.ts), because the
 * protocol code needs these primitives synchronously and WebCrypto offers them only as promises.
 * Asynchronous WebCrypto stays where the shared code already uses it (signatures, handshake key
 * agreement, ML-KEM).
 */
import { sha256 as nobleSha256 } from "@noble/hashes/sha2.js";
import { hmac } from "@noble/hashes/hmac.js";
import { scrypt as nobleScrypt } from "@noble/hashes/scrypt.js";
import { gcm } from "@noble/ciphers/aes.js";
import { x25519 } from "@noble/curves/ed25519.js";
import type {
  RsaPublicNumbers,
  RsaSigner,
  Sha256Hasher,
  SyncEd25519Key,
  SyncRsaKey,
  SyncRsaPublicKey,
  SyncX25519Key,
} from "./sync_types.ts";
import { chaCha20Poly1305OpenJs, chaCha20Poly1305SealJs } from "./chacha20_poly1305.ts";

export type {
  RsaSigner,
  Sha256Hasher,
  SyncEd25519Key,
  SyncRsaKey,
  SyncRsaPublicKey,
  SyncX25519Key,
};

type NobleSha256 = ReturnType<typeof nobleSha256.create>;

class NobleHasher implements Sha256Hasher {
  constructor(readonly hash: NobleSha256 = nobleSha256.create()) {}
  update(data: Uint8Array): Sha256Hasher {
    this.hash.update(data);
    return this;
  }
  copy(): Sha256Hasher {
    return new NobleHasher(this.hash.clone());
  }
  digest(): Uint8Array {
    return this.hash.digest();
  }
}

export function sha256Hasher(): Sha256Hasher {
  return new NobleHasher();
}

/** scrypt (RFC 7914), as the node backend's (the end-to-end state's key, PROTOCOL §12.7). */
export function scrypt(
  password: string,
  salt: Uint8Array,
  params: { N: number; r: number; p: number; maxmem: number },
  length: number,
): Uint8Array {
  return nobleScrypt(password, salt, { ...params, dkLen: length });
}

export function sha256(...parts: Uint8Array[]): Uint8Array {
  const h = nobleSha256.create();
  for (const part of parts) h.update(part);
  return h.digest();
}

export function hmacSha256(key: Uint8Array, ...parts: Uint8Array[]): Uint8Array {
  const mac = hmac.create(nobleSha256, key);
  for (const part of parts) mac.update(part);
  return mac.digest();
}

export function aesGcmSeal(
  key: Uint8Array,
  nonce: Uint8Array,
  plaintext: Uint8Array,
  aad: Uint8Array,
): Uint8Array {
  return gcm(key, nonce, aad).encrypt(plaintext);
}

/** @throws {Error} when authentication fails */
export function aesGcmOpen(
  key: Uint8Array,
  nonce: Uint8Array,
  sealed: Uint8Array,
  aad: Uint8Array,
): Uint8Array {
  return gcm(key, nonce, aad).decrypt(sealed);
}

/**
 * ChaCha20-Poly1305 in JavaScript at every length, as the node backend's short path: in the page
 * it beats @noble/ciphers' by several times (docs/PERFORMANCE.md, session 11), and the page's
 * records stay short.
 */
export const chaCha20Poly1305Seal = chaCha20Poly1305SealJs;

/** @throws {Error} when authentication fails */
export const chaCha20Poly1305Open = chaCha20Poly1305OpenJs;

export function x25519PublicKey(privateKey: Uint8Array): Uint8Array {
  return x25519.getPublicKey(privateKey);
}

/** @throws {Error} when the key is refused */
export function x25519SharedSecret(privateKey: Uint8Array, peerPublicKey: Uint8Array): Uint8Array {
  return x25519.getSharedSecret(privateKey, peerPublicKey);
}

/**
 * None: in the page, the handshake's X25519 stays on WebCrypto (native; noble's would be
 * slower and hold the private key as bytes).
 */
export function x25519EphemeralKey(): SyncX25519Key | undefined {
  return undefined;
}

export function x25519EphemeralAgree(_key: SyncX25519Key, _peerPublicKey: Uint8Array): Uint8Array {
  throw new Error("the browser backend holds no ephemeral X25519 key");
}

/**
 * None: in the page, Ed25519 stays on WebCrypto (native, and the page's own key is a
 * non-extractable CryptoKey that no JS implementation could use).
 */
export function ed25519SyncKey(
  _format: "pkcs8" | "spki",
  _der: Uint8Array,
): SyncEd25519Key | undefined {
  return undefined;
}

export function ed25519Sign(_key: SyncEd25519Key, _data: Uint8Array): Uint8Array {
  throw new Error("the browser backend holds no synchronous Ed25519 key");
}

export function ed25519Verify(
  _key: SyncEd25519Key,
  _data: Uint8Array,
  _signature: Uint8Array,
): boolean {
  throw new Error("the browser backend holds no synchronous Ed25519 key");
}

/** The page signs RSA with the browser's WebCrypto, which is fast and constant time there. */
export function rsaSigner(): RsaSigner {
  return { native: false, detail: "the browser's WebCrypto" };
}

/** No synchronous RSA key in the browser: signature.ts keeps the WebCrypto key. */
export function rsaSyncKey(_pkcs8Der: Uint8Array, _bits: number): SyncRsaKey | undefined {
  return undefined;
}

export function rsaSign(_key: SyncRsaKey, _data: Uint8Array): Uint8Array {
  throw new Error("the browser backend holds no synchronous RSA key");
}

/** No native RSA in the page: ./rsa_verify.ts verifies in BigInt arithmetic. */
export function rsaPublicSyncKey(
  _spkiDer: Uint8Array,
  _key: RsaPublicNumbers,
): SyncRsaPublicKey | undefined {
  return undefined;
}

export function rsaVerify(
  _key: SyncRsaPublicKey,
  _data: Uint8Array,
  _signature: Uint8Array,
): boolean {
  throw new Error("the browser backend holds no synchronous RSA public key");
}
