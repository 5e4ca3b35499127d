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
const B64_ALPHABET_RE = /^[A-Za-z0-9+/]*={0,2}$/;

/**
 * Strict canonical standard base64 (the same acceptance as lib/bytes fromBase64:
 * padding required, zero padding bits, no whitespace), using the engine's native
 * decoder when present: verify decodes two fields on every line.
 */
function decodeBase64Strict(text: string): Uint8Array {
  if (!nativeFromBase64) return fromBase64(text);
  if (text.length % 4 !== 0 || !B64_ALPHABET_RE.test(text)) throw new TypeError("invalid base64");
  return nativeFromBase64(text, { alphabet: "base64", lastChunkHandling: "strict" });
}

/** The 6-bit value of a base64 character (A-Z, a-z, 0-9, +, /). */
function sextet(code: number): number {
  if (code >= 0x61) return code - 0x61 + 26; // a-z
  if (code >= 0x41) return code - 0x41; // A-Z
  if (code >= 0x30) return code - 0x30 + 52; // 0-9
  return code === 0x2b ? 62 : 63; // + /
}

/**
 * How many bytes canonical standard base64 decodes to, without decoding it: the same
 * acceptance as {@link decodeBase64Strict} (padding required, unused bits zero), for
 * members that are checked here and decoded later (or never).
 * @throws {TypeError} for anything else
 */
export function canonicalBase64Length(text: string): number {
  // 4k characters of the alphabet with at most two trailing "=" is exactly the
  // quads-then-padding grammar; a flat character class costs half of that grammar's regex.
  const n = text.length;
  if (n % 4 !== 0 || !B64_ALPHABET_RE.test(text)) throw new TypeError("invalid base64");
  if (n > 0 && text.charCodeAt(n - 1) === 0x3d) {
    const doubled = text.charCodeAt(n - 2) === 0x3d;
    // The last data character carries 4 (==) or 2 (=) unused bits, which must be zero.
    const last = sextet(text.charCodeAt(n - (doubled ? 3 : 2)));
    if ((last & (doubled ? 0x0f : 0x03)) !== 0) throw new TypeError("non-canonical base64");
    return (n / 4) * 3 - (doubled ? 2 : 1);
  }
  return (n / 4) * 3;
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
