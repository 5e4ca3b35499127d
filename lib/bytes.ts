/** Byte helpers shared by the wire format, the key schedule and the transcript. */

const encoder = new TextEncoder();
const strictDecoder = new TextDecoder("utf-8", { fatal: true });

/**
 * Texts this short are encoded here when they are ASCII (a recipient set, a user name, a
 * label): the runtime's encoder is an op call on top of the array both make — per message,
 * several of those cost more than the loop. (Not because the array would live on V8's heap: in
 * Deno 2.9 none does, whatever its size; {@link ByteSlab}.)
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
  return join(parts);
}

/**
 * {@link concat} of a list of any length: a list spread into a call's arguments throws past
 * ~125,000 of them (RangeError, the stack), so a list a peer's traffic decides — frames queued
 * for a write, fragments of a WebSocket message — is joined with this (review10 R10-1, R10-2).
 */
export function join(parts: readonly Uint8Array[]): Uint8Array {
  let total = 0;
  for (const part of parts) total += part.length;
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
 * Bytes written one part after another into a buffer that grows as needed: a record's inner
 * plaintext, a batch of transcript lines or of their hash encodings, laid out once. The bytes
 * past `length` are always zero, so a record's padding (PROTOCOL §3.2) costs nothing to write.
 * A builder that `reset`s is reused: a fresh buffer of a few KiB is native memory that V8
 * allocates and zeroes, several microseconds each, more than the messages written into it.
 */
export class ByteBuilder {
  #bytes: Uint8Array;
  #at = 0;
  #done = false;

  constructor(capacity = 256) {
    this.#bytes = new Uint8Array(capacity);
  }

  /** Bytes written so far. */
  get length(): number {
    return this.#at;
  }

  /** The size of the buffer, written or not. */
  get capacity(): number {
    return this.#bytes.length;
  }

  /**
   * Makes room for `more` bytes past `length` (and past it, zeros). The buffer only doubles
   * (from a power of two, it stays one): a part larger than the buffer once made it exactly
   * that large, and its next doubling could pass a bound a reused builder is kept under
   * (ScratchBytes), so the largest records' builder was dropped and regrown every time.
   */
  reserve(more: number): this {
    if (this.#done) throw new RangeError("bytes written after done()");
    const needed = this.#at + more;
    if (needed <= this.#bytes.length) return this;
    let capacity = Math.max(1, 2 * this.#bytes.length);
    while (capacity < needed) capacity *= 2;
    const grown = new Uint8Array(capacity);
    grown.set(this.#bytes.subarray(0, this.#at));
    this.#bytes = grown;
    return this;
  }

  bytes(part: Uint8Array): this {
    this.reserve(part.length);
    this.#bytes.set(part, this.#at);
    this.#at += part.length;
    return this;
  }

  /** A string as UTF-8. */
  text(text: string): this {
    // A long string goes to the encoder, whose one call costs what the loop below takes for
    // about a hundred characters (a line's base64 members, a certificate).
    if (text.length > SHORT_TEXT) {
      // Room for ASCII first (what nearly every long text here is: base64, hex, JSON of
      // those); only text that did not fit asks for its worst case. Reserving 3 bytes per
      // character up front outgrew buffers sized exactly for their contents (a record's inner
      // plaintext, its JSON), and each growth is a native allocation and a copy.
      this.reserve(text.length);
      const { read, written } = encoder.encodeInto(text, this.#bytes.subarray(this.#at));
      this.#at += written;
      if (read < text.length) {
        const rest = text.slice(read);
        this.reserve(3 * rest.length);
        this.#at += encoder.encodeInto(rest, this.#bytes.subarray(this.#at)).written;
      }
      return this;
    }
    // Most of what is written is ASCII: one byte per character, written here; else the encoder.
    this.reserve(text.length);
    const bytes = this.#bytes;
    let at = this.#at;
    for (let i = 0; i < text.length; i++) {
      const code = text.charCodeAt(i);
      if (code >= 0x80) {
        this.#at = at;
        this.reserve(3 * (text.length - i));
        const { written } = encoder.encodeInto(text.slice(i), this.#bytes.subarray(at));
        this.#at = at + written;
        return this;
      }
      bytes[at++] = code;
    }
    this.#at = at;
    return this;
  }

  /**
   * u32be(len(utf8(text))) || utf8(text): a length-prefixed string (a record's `to` in its
   * statement and record_enc): its length counted, then the text written in place.
   */
  textWithLength(text: string): this {
    return this.u32(utf8Length(text)).text(text);
  }

  u8(value: number): this {
    this.reserve(1);
    this.#bytes[this.#at++] = value;
    return this;
  }

  u32(value: number): this {
    if (!Number.isInteger(value) || value < 0 || value > 0xffff_ffff) {
      throw new RangeError("u32 out of range");
    }
    this.reserve(4);
    writeU32(this.#bytes, this.#at, value);
    this.#at += 4;
    return this;
  }

  /** A non-negative safe integer as 8 bytes (every seqno and ts). */
  u64(value: number): this {
    if (!Number.isSafeInteger(value) || value < 0) throw new RangeError("u64 out of range");
    this.reserve(8);
    writeU32(this.#bytes, this.#at, Math.floor(value / 0x1_0000_0000));
    writeU32(this.#bytes, this.#at + 4, value >>> 0);
    this.#at += 8;
    return this;
  }

  /** Hex text (either case, even length) as its bytes. @throws TypeError for anything else */
  hex(text: string): this {
    if (text.length % 2 !== 0) throw new TypeError("invalid hex");
    this.reserve(text.length / 2);
    const bytes = this.#bytes;
    let at = this.#at;
    for (let i = 0; i < text.length; i += 2) {
      bytes[at++] = (nibble(text.charCodeAt(i)) << 4) | nibble(text.charCodeAt(i + 1));
    }
    this.#at = at;
    return this;
  }

  /**
   * What was written, followed by zeros up to a multiple of `multiple` (1: none). The builder
   * takes no more writes until `reset`: the bytes are its buffer's, not a copy.
   */
  done(multiple = 1): Uint8Array {
    const padded = Math.ceil(this.#at / multiple) * multiple;
    this.reserve(padded - this.#at);
    this.#done = true;
    return this.#bytes.subarray(0, padded);
  }

  /**
   * What was written, which must be exactly `length` bytes: a fixed-size encoding (a signed
   * statement) whose size a wrong field would change. Like `done`, the builder's own bytes.
   * @throws RangeError for any other length
   */
  exactly(length: number): Uint8Array {
    if (this.#at !== length) throw new RangeError("encoding length mismatch");
    return this.done();
  }

  /**
   * The next `length` bytes, counted as written, for the caller to write in place (a decoder's
   * output): a view of the builder's buffer, valid until its next write.
   */
  next(length: number): Uint8Array {
    this.reserve(length);
    const view = this.#bytes.subarray(this.#at, this.#at + length);
    this.#at += length;
    return view;
  }

  /**
   * Empties the builder for reuse, zeroing what was written: whoever had `done`'s bytes must
   * be done with them (sealed, hashed, written), and nothing written outlives that use.
   */
  reset(): void {
    this.#bytes.fill(0, 0, this.#at);
    this.#at = 0;
    this.#done = false;
  }
}

/**
 * One ByteBuilder lent out for synchronous work again and again (a record laid out and sealed,
 * a batch of lines written): one buffer for all of it, kept while it is at most `keepBytes`.
 */
export class ScratchBytes {
  #builder?: ByteBuilder;
  #lent = false;

  constructor(readonly keepBytes: number) {}

  /** Runs `work` with an empty builder; a fresh one when the reused one is lent already. */
  use<T>(work: (out: ByteBuilder) => T): T {
    if (this.#lent) return work(new ByteBuilder());
    const out = this.#builder ??= new ByteBuilder(1024);
    this.#lent = true;
    try {
      return work(out);
    } finally {
      this.#lent = false;
      if (out.capacity > this.keepBytes) this.#builder = undefined;
      else out.reset();
    }
  }
}

/**
 * Small arrays of public bytes (digests) carved one after another out of a shared slab. In Deno
 * (2.9) no typed array lives on V8's heap, whatever its size: each `new Uint8Array(32)` is a
 * native backing store that V8 allocates, zeroes, counts as external and sweeps, 1.1–2.1 µs of CPU
 * on this machine against 0.1–0.3 µs for a view of a slab (bench/digest_bench.ts; docs/
 * PERFORMANCE.md, session 24); the server made ~95 of them per `msg` of 32 records. A view keeps its whole slab alive, so a slab is
 * small, and what it holds is never secret: a view's `buffer` is its neighbours' too.
 */
export class ByteSlab {
  #slab = new Uint8Array(0);
  #at = 0;

  constructor(readonly slabBytes: number) {}

  /** A fresh zeroed array of `length` bytes, a view of the current slab when it fits one. */
  take(length: number): Uint8Array<ArrayBuffer> {
    // A length that is no count of bytes would move the cursor back, or off a byte: views overlap.
    if (!Number.isSafeInteger(length) || length < 0) throw new RangeError(`${length} bytes`);
    if (length > this.slabBytes >> 3) return new Uint8Array(length);
    if (this.#at + length > this.#slab.length) {
      this.#slab = new Uint8Array(this.slabBytes);
      this.#at = 0;
    }
    const out = this.#slab.subarray(this.#at, this.#at + length);
    this.#at += length;
    return out;
  }
}

/** Bytes of a known length that write themselves in place (a relay: its head, then shared bytes). */
export interface Encodable {
  readonly length: number;
  writeTo(out: ByteBuilder): void;
}

/**
 * A string that writes itself as UTF-8 where it goes (a record's inner plaintext): no buffer of
 * its own first. Lone surrogates count as the U+FFFD the encoder writes for them.
 */
export class Utf8Text implements Encodable {
  readonly length: number;

  constructor(readonly text: string) {
    this.length = utf8Length(text);
  }

  writeTo(out: ByteBuilder): void {
    out.text(this.text);
  }
}

/**
 * How many bytes `text` takes as UTF-8, without encoding it. Lone surrogates count as the U+FFFD
 * the encoder writes for them.
 */
export function utf8Length(text: string): number {
  let length = 0;
  for (let i = 0; i < text.length; i++) {
    const code = text.charCodeAt(i);
    if (code < 0x80) length += 1;
    else if (code < 0x800) length += 2;
    else if (code >= 0xd800 && code <= 0xdbff && isLowSurrogate(text.charCodeAt(i + 1))) {
      length += 4;
      i++;
    } else length += 3;
  }
  return length;
}

function isLowSurrogate(code: number): boolean {
  return code >= 0xdc00 && code <= 0xdfff;
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
 * `setFromBase64`, in Deno and in current browsers): ten times faster than a
 * detour through binary strings, which counts for the 1.2 KB hybrid key shares.
 */
interface ByteCodec {
  /** Even-length text of hex digits only (either case); anything else is a SyntaxError. */
  fromHex(text: string): Uint8Array;
}
const codec = Uint8Array as unknown as ByteCodec;
type Base64Target = Uint8Array & {
  setFromBase64(
    text: string,
    options: { lastChunkHandling: "strict" },
  ): { read: number; written: number };
};
const STRICT = { lastChunkHandling: "strict" } as const;

export function toBase64(bytes: Uint8Array): string {
  return (bytes as Uint8Array & { toBase64(): string }).toBase64();
}

/** Strict, canonical standard base64 (with padding); anything else is a TypeError. */
export function fromBase64(text: string): Uint8Array {
  const out = new Uint8Array(base64Length(text));
  decodeBase64Into(text, out);
  return out;
}

/**
 * Several texts as {@link fromBase64} decodes each, into views of one buffer: a record's `ct`,
 * `c`, `sig` and path entries are one allocation instead of seven, and a fresh buffer is
 * native memory V8 allocates and zeroes, which cost more than the decoding (PERFORMANCE,
 * session 9).
 */
export function fromBase64Each(texts: readonly string[]): Uint8Array[] {
  let total = 0;
  const lengths = texts.map((text) => {
    const length = base64Length(text);
    total += length;
    return length;
  });
  const block = new Uint8Array(total);
  let at = 0;
  return texts.map((text, j) => {
    const out = block.subarray(at, at += lengths[j]);
    decodeBase64Into(text, out);
    return out;
  });
}

/**
 * Base64 texts decoded one after another, each checked as it is decoded ({@link fromBase64}'s
 * acceptance, in the runtime's codec: one pass, where a check and a decode were two), into one
 * scratch kept for the process, then copied out into one buffer of exactly their bytes: for a
 * message whose members are checked and then all used as bytes (a user's msg at the server,
 * lib/message/record.ts). Synchronous: one batch at a time, from {@link start} to {@link take}.
 */
export class Base64Batch {
  readonly #decoded = new ByteBuilder(4096);
  readonly #ends: number[] = [];

  /** Starts a batch: what an unfinished one added (a message refused midway) is forgotten. */
  start(): void {
    this.#decoded.reset();
    this.#ends.length = 0;
  }

  /**
   * Decodes `text` after what this batch holds.
   * @returns its length in bytes
   * @throws TypeError as {@link fromBase64}
   */
  add(text: string): number {
    const length = base64Length(text);
    decodeBase64Into(text, this.#decoded.next(length));
    this.#ends.push(this.#decoded.length);
    return length;
  }

  /** What was added since {@link start}, copied into one buffer: one view of it per text, in order. */
  take(): Uint8Array[] {
    const block = this.#decoded.done().slice();
    const views: Uint8Array[] = [];
    let from = 0;
    for (const end of this.#ends) views.push(block.subarray(from, from = end));
    this.start();
    return views;
  }
}

/** What padded base64 of this length and padding decodes to; its characters are checked after. */
function base64Length(text: string): number {
  const n = text.length;
  if (n % 4 !== 0) throw new TypeError("invalid base64");
  if (n === 0) return 0;
  const padding = text.charCodeAt(n - 1) !== 0x3d ? 0 : text.charCodeAt(n - 2) === 0x3d ? 2 : 1;
  return (n / 4) * 3 - padding;
}

/**
 * Decodes `text` into `out`, which must be exactly what it decodes to. The runtime's codec
 * (TC39 `setFromBase64`) in "strict" mode refuses a character outside the standard alphabet,
 * missing or misplaced padding and non-zero unused bits (RFC 4648 §3.5). Its one leniency, ASCII
 * whitespace skipped anywhere, shows in the count: a text with any has fewer data characters than
 * its length, and strict mode takes them only in whole quads, so it writes at least three bytes
 * fewer than the length promised.
 * The differential test in tests/unit/bytes_test.ts holds it to canonicalBase64Length().
 */
export function decodeBase64Into(text: string, out: Uint8Array): void {
  let result: { read: number; written: number };
  try {
    result = (out as Base64Target).setFromBase64(text, STRICT);
  } catch {
    throw new TypeError("invalid base64");
  }
  if (result.read !== text.length || result.written !== out.length) {
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
