/**
 * Synchronous X25519 with raw 32-byte private keys, for the end-to-end layer (lib/e2e), over
 * the `#sync-crypto` backend. ecdh.ts keeps handshake keys non-extractable inside WebCrypto;
 * ratchet and prekey private keys must instead be saved in the client's encrypted state and
 * used once per message, so here they are plain bytes and every operation is one synchronous
 * call with no thread-pool hop.
 */

import { x25519PublicKey, x25519SharedSecret } from "#sync-crypto";
import { randomBytes } from "../bytes.ts";
import { SecureChatError } from "../errors.ts";

export const X25519_KEY_BYTES = 32;

export interface X25519KeyPair {
  /** The scalar k (RFC 7748 §5), 32 bytes; secret. */
  readonly privateKey: Uint8Array;
  /** X25519(k, 9), 32 bytes. */
  readonly publicKey: Uint8Array;
}

function checkScalar(privateKey: Uint8Array): void {
  if (privateKey.length !== X25519_KEY_BYTES) {
    throw new SecureChatError("BAD_KEY_SHARE", "X25519 private key must be 32 bytes");
  }
}

/**
 * The key pair of a given scalar (test vectors, state files), or of a fresh random one.
 * @throws BAD_KEY_SHARE for a scalar that is not 32 bytes
 */
export function x25519KeyPair(
  privateKey: Uint8Array = randomBytes(X25519_KEY_BYTES),
): X25519KeyPair {
  checkScalar(privateKey);
  return { privateKey, publicKey: x25519PublicKey(privateKey) };
}

/**
 * X25519(k, u), refusing a peer key of the wrong length and the all-zero output of a
 * low-order point (checked in constant time over the whole output).
 * @throws BAD_KEY_SHARE
 */
export function x25519(privateKey: Uint8Array, peerPublicKey: Uint8Array): Uint8Array {
  checkScalar(privateKey);
  if (peerPublicKey.length !== X25519_KEY_BYTES) {
    throw new SecureChatError("BAD_KEY_SHARE", "X25519 public key must be 32 bytes");
  }
  let out: Uint8Array;
  try {
    out = x25519SharedSecret(privateKey, peerPublicKey);
  } catch (cause) {
    // The browser backend refuses an all-zero output itself; the node one returns it.
    throw new SecureChatError("BAD_KEY_SHARE", "X25519 refused the key", { cause });
  }
  let acc = 0;
  for (const byte of out) acc |= byte;
  if (acc === 0) throw new SecureChatError("BAD_KEY_SHARE", "X25519 shared secret is all zeros");
  return out;
}
