/** Byte helpers shared by the wire format, the key schedule and the transcript. */

const encoder = new TextEncoder();
const strictDecoder = new TextDecoder("utf-8", { fatal: true });

/**
 * Texts this short are encoded here when they are ASCII (a recipient set, a user name, a
 * label): the bytes fit V8's on-heap typed arrays (64 bytes), where the runtime's encoder is
 * an op that hands back a native allocation — per message, several of those cost more than
 * the loop.
 */
const SHORT_TEXT = 64;

export function utf8(text: string): Uint8Array {
  if (text.length <= SHORT_TEXT) {
    const out = new Uint8Array(text.length);
    for (let i = 0; i < text.length; i++) {
      const code = text.charCodeAt(i);
      if (code >= 0x80) return encoder.encode(text);
      out[i] = code;
    }
    return out;
  }
  return encoder.encode(text);
}

const lossyDecoder = new TextDecoder("utf-8");

/** Decodes UTF-8, throwing a TypeError on malformed input instead of substituting U+FFFD. */
export function fromUtf8(bytes: Uint8Array): string {
  // The lossy decoder is several times faster in Deno than the fatal one, and it puts a
  // U+FFFD wherever the input is malformed: an output without one came from valid input.
  // One with a U+FFFD (malformed, or a real U+FFFD) is decided by the fatal decoder.
  const text = lossyDecoder.decode(bytes);
  return text.includes("\uFFFD") ? strictDecoder.decode(bytes) : text;
}

export function concat(...parts: Uint8Array[]): Uint8Array {
  const total = parts.reduce((n, p) => n + p.length, 0);
  const out = new Uint8Array(total);
  let offset = 0;
  for (const part of parts) {
    out.set(part, offset);
    offset += part.length;
  }
  return out;
}

/** 8-byte big-endian unsigned integer (PROTOCOL §2: every integer in signed input). */
export function u64be(value: number | bigint): Uint8Array {
  if (typeof value === "number" && Number.isSafeInteger(value) && value >= 0) {
    // Every seqno, ts and counter: two u32 halves, no BigInt on the per-message path.
    const out = new Uint8Array(8);
    writeU32(out, 0, Math.floor(value / 0x1_0000_0000));
    writeU32(out, 4, value >>> 0);
    return out;
  }
  const big = BigInt(value);
  if (big < 0n || big > 0xffff_ffff_ffff_ffffn) throw new RangeError("u64 out of range");
  const out = new Uint8Array(8);
  new DataView(out.buffer).setBigUint64(0, big, false);
  return out;
}

export function u32be(value: number): Uint8Array {
  if (!Number.isInteger(value) || value < 0 || value > 0xffff_ffff) {
    throw new RangeError("u32 out of range");
  }
  const out = new Uint8Array(4);
  writeU32(out, 0, value);
  return out;
}

/**
 * Writes fields one after another into a buffer sized in advance: one allocation for an
 * encoding that runs on every message, instead of one per field and a final concat.
 */
export class FieldWriter {
  readonly bytes: Uint8Array;
  #at = 0;

  constructor(length: number) {
    this.bytes = new Uint8Array(length);
  }

  bytesOf(part: Uint8Array): this {
    this.bytes.set(part, this.#at);
    this.#at += part.length;
    return this;
  }

  u8(value: number): this {
    this.bytes[this.#at++] = value;
    return this;
  }

  u32(value: number): this {
    if (!Number.isInteger(value) || value < 0 || value > 0xffff_ffff) {
      throw new RangeError("u32 out of range");
    }
    writeU32(this.bytes, this.#at, value);
    this.#at += 4;
    return this;
  }

  /** A non-negative safe integer as 8 bytes (every seqno and ts). */
  u64(value: number): this {
    if (!Number.isSafeInteger(value) || value < 0) throw new RangeError("u64 out of range");
    writeU32(this.bytes, this.#at, Math.floor(value / 0x1_0000_0000));
    writeU32(this.bytes, this.#at + 4, value >>> 0);
    this.#at += 8;
    return this;
  }

  /** Lowercase or uppercase hex text as its bytes (a session id). */
  hex(text: string): this {
    if (text.length % 2 !== 0) throw new TypeError("invalid hex");
    for (let i = 0; i < text.length; i += 2) {
      this.bytes[this.#at++] = (nibble(text.charCodeAt(i)) << 4) | nibble(text.charCodeAt(i + 1));
    }
    return this;
  }

  /** The written bytes; the buffer must be exactly full. */
  done(): Uint8Array {
    if (this.#at !== this.bytes.length) throw new RangeError("encoding length mismatch");
    return this.bytes;
  }
}

function nibble(code: number): number {
  if (code >= 0x30 && code <= 0x39) return code - 0x30;
  if (code >= 0x61 && code <= 0x66) return code - 0x61 + 10;
  if (code >= 0x41 && code <= 0x46) return code - 0x41 + 10;
  throw new TypeError("invalid hex");
}

/** u32be `value` into `out` at `at`: byte stores, not a DataView (several per message). */
export function writeU32(out: Uint8Array, at: number, value: number): void {
  out[at] = value >>> 24;
  out[at + 1] = (value >>> 16) & 0xff;
  out[at + 2] = (value >>> 8) & 0xff;
  out[at + 3] = value & 0xff;
}

/**
 * Base64 and hex through the runtime's own codec (TC39 `Uint8Array.prototype.toBase64` /
 * `Uint8Array.fromBase64`, in Deno and in current browsers): ten times faster than a
 * detour through binary strings, which counts for the 1.2 KB hybrid key shares.
 */
interface ByteCodec {
  fromBase64(text: string, options: { lastChunkHandling: "strict" }): Uint8Array;
  /** Even-length text of hex digits only (either case); anything else is a SyntaxError. */
  fromHex(text: string): Uint8Array;
}
const codec = Uint8Array as unknown as ByteCodec;

export function toBase64(bytes: Uint8Array): string {
  return (bytes as Uint8Array & { toBase64(): string }).toBase64();
}

/** ASCII whitespace (the codec's one leniency: it skips it anywhere, even in strict mode). */
const ASCII_WHITESPACE_RE = /[\t\n\f\r ]/;

/** Strict, canonical standard base64 (with padding); anything else is a TypeError. */
export function fromBase64(text: string): Uint8Array {
  // Every message decodes a few base64 members: one scan for whitespace here, and the codec's
  // "strict" mode refuses the rest — a character outside the standard alphabet, missing or
  // misplaced padding, non-zero unused bits in the last character (RFC 4648 §3.5). The
  // differential test in tests/unit/bytes_test.ts holds it to canonicalBase64Length().
  if (ASCII_WHITESPACE_RE.test(text)) throw new TypeError("invalid base64");
  try {
    return codec.fromBase64(text, { lastChunkHandling: "strict" });
  } catch {
    throw new TypeError("invalid base64");
  }
}

/** Lowercase hex. */
export function toHex(bytes: Uint8Array): string {
  return (bytes as Uint8Array & { toHex(): string }).toHex();
}

/**
 * Hex of either case, even length; anything else is a TypeError. Through the built-in codec:
 * every relay's line decodes its author's fingerprint, and a loop of slices and parseInt cost
 * a recipient more than the rest of the line (docs/PERFORMANCE.md, session 8).
 */
export function fromHex(text: string): Uint8Array {
  try {
    return codec.fromHex(text);
  } catch {
    throw new TypeError("invalid hex");
  }
}

/**
 * Compares two byte strings without an early exit on the first difference.
 * Best-effort under a JIT (as Deno std's timingSafeEqual documents), but it
 * removes the gross data-dependent timing of `===` on strings or a loop that
 * returns at the first mismatch. Length is not secret here.
 */
export function timingSafeEqual(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  let diff = 0;
  for (let i = 0; i < a.length; i++) diff |= a[i] ^ b[i];
  return diff === 0;
}

export function randomBytes(length: number): Uint8Array {
  return crypto.getRandomValues(new Uint8Array(length));
}

/** Best-effort wipe: the JS engine may hold other copies, but ours is gone. */
export function wipe(...buffers: (Uint8Array | undefined)[]): void {
  for (const buffer of buffers) buffer?.fill(0);
}

export async function sha256(...parts: Uint8Array[]): Promise<Uint8Array> {
  const data = parts.length === 1 ? parts[0] : concat(...parts);
  return new Uint8Array(await crypto.subtle.digest("SHA-256", data as BufferSource));
}
