/**
 * The symmetric-key chain shared by the Double Ratchet and sender keys (PROTOCOL
 * §12.4): KDF_CK of Signal's Double Ratchet specification, with HMAC-SHA-256 and the
 * constant inputs 0x01 (message key) and 0x02 (next chain key). A chain key is
 * replaced at every step, so a key taken from a device later opens nothing earlier.
 */

import { hmacSha256Sync } from "../crypto/hkdf.ts";

const MESSAGE_KEY_INPUT = Uint8Array.of(0x01);
const CHAIN_KEY_INPUT = Uint8Array.of(0x02);

/** One step: the message key for this position and the chain key for the next. */
export function chainStep(ck: Uint8Array): { mk: Uint8Array; next: Uint8Array } {
  return { mk: hmacSha256Sync(ck, MESSAGE_KEY_INPUT), next: hmacSha256Sync(ck, CHAIN_KEY_INPUT) };
}

/** Most message keys a receiver derives ahead for one message (skipped or lost messages). */
export const MAX_SKIP = 1000;
/** Most skipped message keys one receiving state keeps; the oldest go first. */
export const MAX_STORED_SKIPPED = 2000;
