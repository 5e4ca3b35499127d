/**
 * RFC 8439's ChaCha20-Poly1305 AEAD vectors (tests/vectors/crypto/chacha20_poly1305_rfc8439*.json:
 * §2.8.2's example and Appendix A.5's), read and decoded in one place for every test that holds an
 * implementation to them. A file missing a field, or with a field that is not hex, fails the
 * importing test at load, naming the file: no vector is silently dropped.
 */
import { concat, fromHex } from "../../lib/bytes.ts";

/** One AEAD vector, decoded: seal(key, nonce, plaintext, aad) = sealed (ciphertext || tag). */
export interface AeadVector {
  /** Where it comes from, for assertion messages. */
  source: string;
  key: Uint8Array;
  nonce: Uint8Array;
  aad: Uint8Array;
  plaintext: Uint8Array;
  sealed: Uint8Array;
}

/** The files, in this order: RFC 8439 §2.8.2, then Appendix A.5. */
const FILES = ["chacha20_poly1305_rfc8439.json", "chacha20_poly1305_rfc8439_a5.json"] as const;

function parseVector(name: string, text: string): AeadVector {
  const raw = JSON.parse(text) as Record<string, unknown>;
  const field = (key: string): string => {
    const value = raw[key];
    if (typeof value !== "string") throw new Error(`${name}: "${key}" is not a string`);
    return value;
  };
  const hex = (key: string): Uint8Array => {
    try {
      return fromHex(field(key));
    } catch (cause) {
      throw new Error(`${name}: "${key}" is not hex`, { cause });
    }
  };
  return {
    source: field("source"),
    key: hex("key"),
    nonce: hex("nonce"),
    aad: hex("aad"),
    plaintext: hex("plaintext"),
    sealed: concat(hex("ciphertext"), hex("tag")),
  };
}

/** RFC 8439 §2.8.2's vector, then Appendix A.5's. */
export const RFC8439_AEAD_VECTORS: readonly AeadVector[] = await Promise.all(
  FILES.map(async (name) =>
    parseVector(
      name,
      await Deno.readTextFile(new URL(`../vectors/crypto/${name}`, import.meta.url)),
    )
  ),
);
