/**
 * The one way the end-to-end layer protects a record's content key `k` (PROTOCOL
 * §12.4): a one-use message key `mk` (from a ratchet chain or a sender-key chain)
 * becomes an AES-256-GCM key and nonce, and `k` is sealed with associated data that
 * names the chain position and the record it belongs to. Each `mk` is used for
 * exactly one wrap and then deleted by its chain, so the derived nonce never repeats
 * under its key.
 */

import { openAesGcm, sealAesGcm } from "../crypto/aead.ts";
import { hkdfExpandSync } from "../crypto/hkdf.ts";
import { utf8, wipe } from "../bytes.ts";
import { SecureChatError } from "../errors.ts";

export const E2E_KEY_BYTES = 32;
/** A wrapped 32-byte content key: ciphertext and GCM tag. */
export const WRAPPED_KEY_BYTES = 32 + 16;

const LABEL_KEY = utf8("securechat/e2e wrap key");
const LABEL_IV = utf8("securechat/e2e wrap iv");

/** Seals the content key `k` under a one-use message key. */
export function wrapContentKey(mk: Uint8Array, aad: Uint8Array, k: Uint8Array): Uint8Array {
  if (mk.length !== E2E_KEY_BYTES || k.length !== E2E_KEY_BYTES) {
    throw new RangeError("message and content keys are 32 bytes");
  }
  const key = hkdfExpandSync(mk, LABEL_KEY, 32);
  const iv = hkdfExpandSync(mk, LABEL_IV, 12);
  try {
    return sealAesGcm(key, iv, k, aad);
  } finally {
    wipe(key, iv); // best-effort in JS
  }
}

/**
 * Opens a wrapped content key.
 * @throws DECRYPT_FAIL for a wrong key, associated data or length
 */
export function unwrapContentKey(mk: Uint8Array, aad: Uint8Array, wrapped: Uint8Array): Uint8Array {
  if (wrapped.length !== WRAPPED_KEY_BYTES) {
    throw new SecureChatError("DECRYPT_FAIL", "wrapped content key is not 48 bytes");
  }
  const key = hkdfExpandSync(mk, LABEL_KEY, 32);
  const iv = hkdfExpandSync(mk, LABEL_IV, 12);
  try {
    return openAesGcm(key, iv, wrapped, aad);
  } finally {
    wipe(key, iv);
  }
}
