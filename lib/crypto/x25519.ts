/**
 * Synchronous X25519 over node:crypto with raw 32-byte private keys, for the
 * end-to-end layer (lib/e2e). ecdh.ts keeps handshake keys non-extractable inside
 * WebCrypto; ratchet and prekey private keys must instead be saved in the client's
 * encrypted state file and used once per message, so here they are plain bytes
 * and every operation is one synchronous call with no thread-pool hop.
 */

import { createPrivateKey, createPublicKey, diffieHellman, randomFillSync } from "node:crypto";
import { concat, fromHex, wipe } from "../bytes.ts";
import { SecureChatError } from "../errors.ts";

export const X25519_KEY_BYTES = 32;

/** PrivateKeyInfo { v0, id-X25519, OCTET STRING { OCTET STRING k } } (RFC 8410 §7). */
const PKCS8_PREFIX = fromHex("302e020100300506032b656e04220420");
/** SubjectPublicKeyInfo { id-X25519, BIT STRING u } (RFC 8410 §4). */
const SPKI_PREFIX = fromHex("302a300506032b656e032100");

export interface X25519KeyPair {
  /** The scalar k (RFC 7748 §5), 32 bytes; secret. */
  readonly privateKey: Uint8Array;
  /** X25519(k, 9), 32 bytes. */
  readonly publicKey: Uint8Array;
}

function privateKeyObject(privateKey: Uint8Array) {
  if (privateKey.length !== X25519_KEY_BYTES) {
    throw new SecureChatError("BAD_KEY_SHARE", "X25519 private key must be 32 bytes");
  }
  const der = concat(PKCS8_PREFIX, privateKey);
  try {
    return createPrivateKey({ key: Buffer.from(der), format: "der", type: "pkcs8" });
  } finally {
    wipe(der); // best-effort: the JS engine may keep other copies
  }
}

/**
 * The key pair of a given scalar (test vectors, state files), or of a fresh random one.
 * @throws BAD_KEY_SHARE for a scalar that is not 32 bytes
 */
export function x25519KeyPair(
  privateKey: Uint8Array = randomFillSync(new Uint8Array(X25519_KEY_BYTES)),
): X25519KeyPair {
  const spki = createPublicKey(privateKeyObject(privateKey)).export({
    format: "der",
    type: "spki",
  });
  return { privateKey, publicKey: new Uint8Array(spki.subarray(SPKI_PREFIX.length)) };
}

/**
 * X25519(k, u), refusing a peer key of the wrong length and the all-zero output of a
 * low-order point (checked in constant time over the whole output).
 * @throws BAD_KEY_SHARE
 */
export function x25519(privateKey: Uint8Array, peerPublicKey: Uint8Array): Uint8Array {
  if (peerPublicKey.length !== X25519_KEY_BYTES) {
    throw new SecureChatError("BAD_KEY_SHARE", "X25519 public key must be 32 bytes");
  }
  let out: Uint8Array;
  try {
    const publicKey = createPublicKey({
      key: Buffer.from(concat(SPKI_PREFIX, peerPublicKey)),
      format: "der",
      type: "spki",
    });
    out = new Uint8Array(diffieHellman({ privateKey: privateKeyObject(privateKey), publicKey }));
  } catch (cause) {
    if (cause instanceof SecureChatError) throw cause;
    throw new SecureChatError("BAD_KEY_SHARE", "X25519 refused the key", { cause });
  }
  let acc = 0;
  for (const byte of out) acc |= byte;
  if (acc === 0) throw new SecureChatError("BAD_KEY_SHARE", "X25519 shared secret is all zeros");
  return out;
}
