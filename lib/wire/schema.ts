/**
 * The zod building blocks the wire messages, the transcript format and receipts share,
 * so all three accept exactly the same base64.
 */
import { z } from "zod";
import { fromBase64 } from "../bytes.ts";

type NativeFromBase64 = (
  text: string,
  options: { alphabet: "base64"; lastChunkHandling: "strict" },
) => Uint8Array;
const nativeFromBase64 = (Uint8Array as unknown as { fromBase64?: NativeFromBase64 }).fromBase64;

/**
 * Strict canonical standard base64 (the same acceptance as lib/bytes fromBase64:
 * padding required, zero padding bits, no whitespace), using the engine's native
 * decoder when present: verify decodes two fields on every line.
 */
function decodeBase64Strict(text: string): Uint8Array {
  if (!nativeFromBase64) return fromBase64(text);
  canonicalBase64Length(text); // the codec's one leniency, whitespace, never reaches it
  return nativeFromBase64(text, { alphabet: "base64", lastChunkHandling: "strict" });
}

/** Each ASCII code's 6-bit value in the standard base64 alphabet (A-Z, a-z, 0-9, +, /), or -1. */
const SEXTETS = (() => {
  const table = new Int8Array(128).fill(-1);
  const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  for (let i = 0; i < alphabet.length; i++) table[alphabet.charCodeAt(i)] = i;
  return table;
})();

/**
 * How many bytes canonical standard base64 decodes to, without decoding it: the same
 * acceptance as {@link decodeBase64Strict} (padding required, unused bits zero), for
 * members that are checked here and decoded later (or never).
 * @throws {TypeError} for anything else
 */
export function canonicalBase64Length(text: string): number {
  // 4k characters: data characters of the alphabet, then at most two "=". One pass over a
  // table: every relay checks eight such members at every party, and the regex this replaces
  // (/^[A-Za-z0-9+/]*={0,2}$/, same acceptance) took about as long as the rest of its shape.
  const n = text.length;
  if (n % 4 !== 0) throw new TypeError("invalid base64");
  const padding = n === 0 || text.charCodeAt(n - 1) !== 0x3d
    ? 0
    : text.charCodeAt(n - 2) === 0x3d
    ? 2
    : 1;
  const data = n - padding;
  let last = 0;
  for (let i = 0; i < data; i++) {
    const code = text.charCodeAt(i);
    last = code < 128 ? SEXTETS[code] : -1;
    if (last < 0) throw new TypeError("invalid base64");
  }
  // The last data character carries 4 (==) or 2 (=) unused bits, which must be zero.
  if (padding > 0 && (last & (padding === 2 ? 0x0f : 0x03)) !== 0) {
    throw new TypeError("non-canonical base64");
  }
  return (n / 4) * 3 - padding;
}

/** The decoded bytes, or a zod issue and undefined. */
function decodeInRange(
  text: string,
  ctx: z.RefinementCtx,
  minBytes: number,
  maxBytes: number,
): Uint8Array | undefined {
  try {
    const bytes = decodeBase64Strict(text);
    if (bytes.length >= minBytes && bytes.length <= maxBytes) return bytes;
    ctx.addIssue({ code: "custom", message: `expected ${minBytes}..${maxBytes} bytes` });
  } catch {
    ctx.addIssue({ code: "custom", message: "not canonical standard base64" });
  }
  return undefined;
}

// The length cap comes first so an oversized field is refused before it is decoded.
const maxChars = (maxBytes: number) => z.string().max(Math.ceil(maxBytes / 3) * 4);

/** Standard padded base64 of `min..max` bytes, decoded. */
export function base64Bytes(minBytes: number, maxBytes: number) {
  return maxChars(maxBytes).transform((text, ctx) =>
    decodeInRange(text, ctx, minBytes, maxBytes) ?? z.NEVER
  );
}

/** As {@link base64Bytes}, but the field stays text: for objects kept exactly as sent. */
export function base64Text(minBytes: number, maxBytes: number) {
  return maxChars(maxBytes).superRefine((text, ctx) => {
    decodeInRange(text, ctx, minBytes, maxBytes);
  });
}
