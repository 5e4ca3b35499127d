/**
 * The AEADs, synchronous, over the `#sync-crypto` backend (node:crypto for the CLI and server,
 * @noble/ciphers and our JavaScript ChaCha20-Poly1305 for the page): ChaCha20-Poly1305 for
 * sealed records (PROTOCOL §3.2) and message contents (§6.1), AES-256-GCM for the end-to-end
 * wraps and state (§12). Each wrapper checks key and nonce lengths and turns every failure to
 * open into the same DECRYPT_FAIL. Record nonces are never random: each direction derives them
 * from a static IV and a record counter exactly as TLS 1.3 does (RFC 8446 §5.3), so a nonce
 * repeats only if a counter does, and the counter is a 64-bit integer that must never wrap.
 * (Resumption tickets call the backend's AES-GCM themselves, lib/resumption/ticket.ts.)
 */

import { aesGcmOpen, aesGcmSeal, chaCha20Poly1305Open, chaCha20Poly1305Seal } from "#sync-crypto";
import { SecureChatError } from "../errors.ts";
import { u64be } from "../bytes.ts";

/** AES-256-GCM's key: the end-to-end layer's (PROTOCOL §12). */
export const AES_KEY_BYTES = 32;
export const GCM_NONCE_BYTES = 12;
export const GCM_TAG_BYTES = 16;
/** ChaCha20-Poly1305's key and tag (RFC 8439); its nonce is 12 bytes, as GCM's. */
export const CHACHA20_POLY1305_KEY_BYTES = 32;
export const POLY1305_TAG_BYTES = 16;

/**
 * The per-record nonce: `iv` XOR (0x00000000 || u64be(counter)) (RFC 8446 §5.3).
 * @throws {RangeError} if `iv` is not 12 bytes or `counter` is not an integer in 0..2^64-1
 */
export function counterNonce(iv: Uint8Array, counter: bigint | number): Uint8Array {
  if (iv.length !== GCM_NONCE_BYTES) throw new RangeError("GCM IV must be 12 bytes");
  const encoded = u64be(counter); // BigInt() and u64be reject non-integers and out-of-range values
  const nonce = iv.slice();
  for (let i = 0; i < encoded.length; i++) nonce[GCM_NONCE_BYTES - 8 + i] ^= encoded[i];
  return nonce;
}

/**
 * {@link counterNonce} written into `out` (12 bytes) for a counter that is a safe integer (a
 * record's): no allocation, for a caller that hands `out` to an AEAD that copies it at once.
 * @returns `out`
 * @throws {RangeError} as counterNonce, or for an `out` that is not 12 bytes
 */
export function counterNonceInto(out: Uint8Array, iv: Uint8Array, counter: number): Uint8Array {
  if (iv.length !== GCM_NONCE_BYTES || out.length !== GCM_NONCE_BYTES) {
    throw new RangeError("GCM IV and nonce must be 12 bytes");
  }
  if (!Number.isSafeInteger(counter) || counter < 0) throw new RangeError("u64 out of range");
  out.set(iv);
  const high = Math.floor(counter / 0x1_0000_0000);
  const low = counter >>> 0;
  for (let i = 0; i < 4; i++) {
    out[4 + i] ^= (high >>> (24 - 8 * i)) & 0xff;
    out[8 + i] ^= (low >>> (24 - 8 * i)) & 0xff;
  }
  return out;
}

/**
 * AES-256-GCM: ciphertext || 16-byte tag. No key import and no thread-pool hop per call, as
 * WebCrypto would need (docs/PERFORMANCE.md).
 * @throws {RangeError} for a key that is not 32 bytes or a nonce that is not 12 bytes
 */
export function sealAesGcm(
  key: Uint8Array,
  nonce: Uint8Array,
  plaintext: Uint8Array,
  aad: Uint8Array,
): Uint8Array {
  if (key.length !== AES_KEY_BYTES) throw new RangeError("AES key must be 32 bytes");
  if (nonce.length !== GCM_NONCE_BYTES) throw new RangeError("GCM nonce must be 12 bytes");
  return aesGcmSeal(key, nonce, plaintext, aad);
}

/**
 * Counterpart of {@link sealAesGcm}. Every failure, including a wrong key or nonce length or
 * input shorter than the tag, is the same DECRYPT_FAIL, so the reason never leaks to a peer.
 * @throws {SecureChatError} DECRYPT_FAIL
 */
export function openAesGcm(
  key: Uint8Array,
  nonce: Uint8Array,
  ciphertext: Uint8Array,
  aad: Uint8Array,
): Uint8Array {
  return openChecked(aesGcmOpen, AES_KEY_BYTES, GCM_TAG_BYTES, key, nonce, ciphertext, aad);
}

/**
 * ChaCha20-Poly1305 (RFC 8439), synchronous: ciphertext || 16-byte tag, in a new buffer or
 * written into `into` (exactly that long: a frame's place in a connection's batch, no buffer of
 * its own and no copy to send it). The record layer's AEAD (PROTOCOL §3.2): fast in software,
 * where Deno's node:crypto AES-GCM is not.
 * @throws {RangeError} for a key that is not 32 bytes, a nonce that is not 12 bytes or an `into`
 *   of another length
 */
export function sealChaCha20Poly1305(
  key: Uint8Array,
  nonce: Uint8Array,
  plaintext: Uint8Array,
  aad: Uint8Array,
  into?: Uint8Array,
): Uint8Array {
  if (key.length !== CHACHA20_POLY1305_KEY_BYTES) {
    throw new RangeError("ChaCha20-Poly1305 key must be 32 bytes");
  }
  if (nonce.length !== GCM_NONCE_BYTES) throw new RangeError("nonce must be 12 bytes");
  if (into && into.length !== plaintext.length + POLY1305_TAG_BYTES) {
    throw new RangeError("the output is not the sealed length");
  }
  return chaCha20Poly1305Seal(key, nonce, plaintext, aad, into);
}

/**
 * Counterpart of {@link sealChaCha20Poly1305}: the plaintext in a new buffer, or written into
 * `into` (exactly the ciphertext's length without the tag), which may be the sealed input's own
 * first bytes (opened in place: a received record's frame, no buffer of its own). Every failure
 * is the same DECRYPT_FAIL, and leaves `into` zeroed: no unauthenticated plaintext stays there.
 * @throws {SecureChatError} DECRYPT_FAIL
 * @throws {RangeError} for an `into` of another length
 */
export function openChaCha20Poly1305(
  key: Uint8Array,
  nonce: Uint8Array,
  ciphertext: Uint8Array,
  aad: Uint8Array,
  into?: Uint8Array,
): Uint8Array {
  if (into && into.length !== ciphertext.length - POLY1305_TAG_BYTES) {
    throw new RangeError("the output is not the opened length");
  }
  return openChecked(
    chaCha20Poly1305Open,
    CHACHA20_POLY1305_KEY_BYTES,
    POLY1305_TAG_BYTES,
    key,
    nonce,
    ciphertext,
    aad,
    into,
  );
}

/**
 * Both AEADs' open, after their length checks (12-byte nonces both): every failure, a length
 * included, is the same DECRYPT_FAIL, so the reason never leaks to a peer.
 */
function openChecked(
  backendOpen: typeof chaCha20Poly1305Open,
  keyBytes: number,
  tagBytes: number,
  key: Uint8Array,
  nonce: Uint8Array,
  ciphertext: Uint8Array,
  aad: Uint8Array,
  into?: Uint8Array,
): Uint8Array {
  if (
    key.length !== keyBytes || nonce.length !== GCM_NONCE_BYTES || ciphertext.length < tagBytes
  ) {
    throw new SecureChatError("DECRYPT_FAIL", "record too short or bad key/nonce");
  }
  try {
    return backendOpen(key, nonce, ciphertext, aad, into);
  } catch (cause) {
    into?.fill(0);
    throw new SecureChatError("DECRYPT_FAIL", "AEAD authentication failed", { cause });
  }
}
