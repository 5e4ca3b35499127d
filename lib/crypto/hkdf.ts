/**
 * HKDF (RFC 5869) over HMAC-SHA-256, built on HMAC rather than WebCrypto HKDF so
 * that Extract and Expand are separately usable, as the key schedule needs (one PRK,
 * many labelled Expands). HMAC is the synchronous `#sync-crypto` backend's: no key import per
 * call, which matters on the per-message path (one Expand per chat message).
 */

import { hmacSha256 as hmac } from "#sync-crypto";
import { wipe } from "../bytes.ts";

const HASH_BYTES = 32;
/** RFC 5869 §2.3: L ≤ 255·HashLen. */
const MAX_OUTPUT_BYTES = 255 * HASH_BYTES;

/** HMAC-SHA-256(key, data); any key length, including empty. */
export function hmacSha256(key: Uint8Array, data: Uint8Array): Promise<Uint8Array> {
  return Promise.resolve(hmac(key, data));
}

/** HMAC-SHA-256(key, parts...) synchronously, for the per-record path. */
export function hmacSha256Sync(key: Uint8Array, ...parts: Uint8Array[]): Uint8Array {
  return hmac(key, ...parts);
}

/** HKDF-Extract(salt, IKM) = HMAC-SHA-256(salt, IKM): the 32-byte PRK (RFC 5869 §2.2). */
export function hkdfExtract(salt: Uint8Array, ikm: Uint8Array): Promise<Uint8Array> {
  return hmacSha256(salt, ikm);
}

/**
 * HKDF-Expand(PRK, info, L) (RFC 5869 §2.3): T(i) = HMAC(PRK, T(i-1) || info || i).
 * @throws {RangeError} unless 0 ≤ length ≤ 8160 (255 · 32) and an integer
 */
export function hkdfExpand(
  prk: Uint8Array,
  info: Uint8Array,
  length: number,
): Promise<Uint8Array> {
  try {
    return Promise.resolve(hkdfExpandSync(prk, info, length));
  } catch (error) {
    return Promise.reject(error);
  }
}

/** {@link hkdfExpand} without the promise: the key schedule runs on every handshake. */
export function hkdfExpandSync(prk: Uint8Array, info: Uint8Array, length: number): Uint8Array {
  if (!Number.isInteger(length) || length < 0 || length > MAX_OUTPUT_BYTES) {
    throw new RangeError(`HKDF-Expand length must be 0..${MAX_OUTPUT_BYTES}`);
  }
  const okm = new Uint8Array(length);
  let previous: Uint8Array = new Uint8Array(0); // T(0) is empty
  for (let i = 1, offset = 0; offset < length; i++, offset += HASH_BYTES) {
    const block = hmac(prk, previous, info, Uint8Array.of(i));
    okm.set(block.subarray(0, Math.min(HASH_BYTES, length - offset)), offset);
    wipe(previous); // best-effort: the JS engine may hold other copies
    previous = block;
  }
  wipe(previous);
  return okm;
}
