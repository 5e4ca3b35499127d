/**
 * HKDF (RFC 5869) over HMAC-SHA-256, built on WebCrypto HMAC rather than
 * WebCrypto HKDF so that Extract and Expand are separately usable, as the
 * key schedule needs (one PRK, many labelled Expands).
 */

import { wipe } from "../bytes.ts";

const HASH_BYTES = 32;
/** RFC 5869 §2.3: L ≤ 255·HashLen. */
const MAX_OUTPUT_BYTES = 255 * HASH_BYTES;

async function importHmacKey(key: Uint8Array): Promise<CryptoKey> {
  // WebCrypto refuses a zero-length HMAC key, but HMAC zero-pads every key to
  // the block size (RFC 2104 §2), so the empty key and a single zero byte are
  // the same key. RFC 5869 needs this: an absent salt is HashLen zero bytes.
  const material = key.length === 0 ? new Uint8Array(1) : key;
  return await crypto.subtle.importKey(
    "raw",
    material as BufferSource,
    { name: "HMAC", hash: "SHA-256" },
    false,
    ["sign"],
  );
}

/** HMAC-SHA-256(key, data); any key length, including empty. */
export async function hmacSha256(key: Uint8Array, data: Uint8Array): Promise<Uint8Array> {
  const hmacKey = await importHmacKey(key);
  return new Uint8Array(await crypto.subtle.sign("HMAC", hmacKey, data as BufferSource));
}

/** HKDF-Extract(salt, IKM) = HMAC-SHA-256(salt, IKM): the 32-byte PRK (RFC 5869 §2.2). */
export async function hkdfExtract(salt: Uint8Array, ikm: Uint8Array): Promise<Uint8Array> {
  return await hmacSha256(salt, ikm);
}

/**
 * HKDF-Expand(PRK, info, L) (RFC 5869 §2.3): T(i) = HMAC(PRK, T(i-1) || info || i).
 * @throws {RangeError} unless 0 ≤ length ≤ 8160 (255 · 32) and an integer
 */
export async function hkdfExpand(
  prk: Uint8Array,
  info: Uint8Array,
  length: number,
): Promise<Uint8Array> {
  if (!Number.isInteger(length) || length < 0 || length > MAX_OUTPUT_BYTES) {
    throw new RangeError(`HKDF-Expand length must be 0..${MAX_OUTPUT_BYTES}`);
  }
  const key = await importHmacKey(prk);
  const okm = new Uint8Array(length);
  const input = new Uint8Array(HASH_BYTES + info.length + 1);
  let previous = 0; // T(0) is empty
  for (let i = 1, offset = 0; offset < length; i++, offset += HASH_BYTES) {
    input.set(info, previous);
    input[previous + info.length] = i;
    const block = new Uint8Array(
      await crypto.subtle.sign("HMAC", key, input.subarray(0, previous + info.length + 1)),
    );
    okm.set(block.subarray(0, Math.min(HASH_BYTES, length - offset)), offset);
    input.set(block);
    previous = HASH_BYTES;
    wipe(block); // best-effort: the JS engine may hold other copies
  }
  wipe(input);
  return okm;
}
