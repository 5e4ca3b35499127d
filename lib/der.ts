/**
 * The one strict DER reader (and a tiny writer), shared by certificate parsing and
 * signature-key import. Certificates, keys and signatures arrive from the network, so
 * only canonical DER is accepted (definite, minimal lengths; low tag numbers; minimal
 * integers): two encodings of one value are how signature malleability and parser
 * confusion start.
 *
 * Every parse failure leaves through `malformed()` as a DerError, never a TypeError from
 * deep inside. What a malformed input means is the caller's to say (a bad certificate,
 * a forged signature, bad user input), so callers turn it into their own code with
 * {@link parseDerAs}.
 */
import { type ErrorCode, SecureChatError } from "./errors.ts";
import { concat } from "./bytes.ts";

export const TAG = {
  BOOLEAN: 0x01,
  INTEGER: 0x02,
  BIT_STRING: 0x03,
  OCTET_STRING: 0x04,
  NULL: 0x05,
  OID: 0x06,
  UTF8_STRING: 0x0c,
  PRINTABLE_STRING: 0x13,
  T61_STRING: 0x14,
  IA5_STRING: 0x16,
  UTC_TIME: 0x17,
  GENERALIZED_TIME: 0x18,
  UNIVERSAL_STRING: 0x1c,
  BMP_STRING: 0x1e,
  SEQUENCE: 0x30,
  SET: 0x31,
} as const;

/** Context-specific tag number n, primitive or constructed. */
export const ctx = (n: number, constructed = false): number => 0x80 | (constructed ? 0x20 : 0) | n;

export interface Tlv {
  tag: number;
  /** The content octets. */
  value: Uint8Array;
  /** The whole encoding, header included (what a signature covers). */
  raw: Uint8Array;
}

/** Input that is not canonical DER, or not the structure the caller expects. */
export class DerError extends Error {
  override name = "DerError";
}

export function malformed(what: string): never {
  throw new DerError(`malformed DER: ${what}`);
}

/**
 * Runs `parse`, turning a DerError into a SecureChatError with `code` (and `message`,
 * when given); any other error passes through untouched.
 */
export function parseDerAs<T>(code: ErrorCode, parse: () => T, message?: string): T {
  try {
    return parse();
  } catch (cause) {
    if (!(cause instanceof DerError)) throw cause;
    throw new SecureChatError(code, message ?? cause.message, { cause });
  }
}

/** Reads the one TLV at `offset`; returns it and the offset after it. */
function readAt(buf: Uint8Array, offset: number): [Tlv, number] {
  if (offset + 2 > buf.length) malformed("truncated header");
  const tag = buf[offset];
  if ((tag & 0x1f) === 0x1f) malformed("high tag number");
  let length = buf[offset + 1];
  let header = 2;
  if (length & 0x80) {
    const octets = length & 0x7f;
    // Three length octets (16 MiB) cover anything we would accept; 0x80 is BER indefinite.
    if (octets === 0 || octets > 3) malformed("unsupported length form");
    if (offset + 2 + octets > buf.length) malformed("truncated length");
    length = 0;
    for (let i = 0; i < octets; i++) length = length * 256 + buf[offset + 2 + i];
    if (length < 0x80 || buf[offset + 2] === 0) malformed("non-minimal length");
    header += octets;
  }
  const end = offset + header + length;
  if (end > buf.length) malformed("truncated value");
  return [
    { tag, value: buf.subarray(offset + header, end), raw: buf.subarray(offset, end) },
    end,
  ];
}

/** Parses bytes that must hold exactly one TLV, optionally of a given tag. */
export function parseTlv(buf: Uint8Array, tag?: number): Tlv {
  const [tlv, end] = readAt(buf, 0);
  if (end !== buf.length) malformed("trailing data");
  if (tag !== undefined && tlv.tag !== tag) malformed(`expected tag 0x${tag.toString(16)}`);
  return tlv;
}

/** The elements of a constructed value, which must be consumed exactly. */
export function children(tlv: Tlv): Tlv[] {
  if (!(tlv.tag & 0x20)) malformed("expected a constructed value");
  const out: Tlv[] = [];
  for (let offset = 0; offset < tlv.value.length;) {
    const [child, next] = readAt(tlv.value, offset);
    out.push(child);
    offset = next;
  }
  return out;
}

/** A cursor over the elements of a SEQUENCE, for fields with OPTIONAL parts. */
export class SeqReader {
  #items: Tlv[];
  #i = 0;
  constructor(tlv: Tlv, what: string) {
    if (tlv.tag !== TAG.SEQUENCE) malformed(`${what} is not a SEQUENCE`);
    this.#items = children(tlv);
  }
  next(tag: number, what: string): Tlv {
    const item = this.#items[this.#i++];
    if (!item || item.tag !== tag) malformed(`bad or missing ${what}`);
    return item;
  }
  /** The next element whatever its tag (for a CHOICE). */
  any(what: string): Tlv {
    const item = this.#items[this.#i++];
    if (!item) malformed(`missing ${what}`);
    return item;
  }
  optional(tag: number): Tlv | undefined {
    const item = this.#items[this.#i];
    if (item?.tag !== tag) return undefined;
    this.#i++;
    return item;
  }
  end(what: string): void {
    if (this.#i !== this.#items.length) malformed(`unexpected field in ${what}`);
  }
}

export function readOid(tlv: Tlv): string {
  if (tlv.tag !== TAG.OID || tlv.value.length === 0) malformed("bad OID");
  const parts: number[] = [];
  let n = 0;
  for (let i = 0; i < tlv.value.length; i++) {
    const b = tlv.value[i];
    if (n === 0 && b === 0x80) malformed("non-minimal OID arc");
    n = n * 128 + (b & 0x7f);
    if (n > Number.MAX_SAFE_INTEGER / 128) malformed("OID arc too large");
    if (!(b & 0x80)) {
      parts.push(n);
      n = 0;
    } else if (i === tlv.value.length - 1) malformed("truncated OID");
  }
  const first = parts[0] < 40 ? 0 : parts[0] < 80 ? 1 : 2;
  return [first, parts[0] - first * 40, ...parts.slice(1)].join(".");
}

/** INTEGER content octets, checked for minimal encoding. */
export function readIntegerBytes(tlv: Tlv): Uint8Array {
  const v = tlv.value;
  if (tlv.tag !== TAG.INTEGER || v.length === 0) malformed("bad INTEGER");
  if (v.length > 1 && ((v[0] === 0 && !(v[1] & 0x80)) || (v[0] === 0xff && v[1] & 0x80))) {
    malformed("non-minimal INTEGER");
  }
  return v;
}

/** The magnitude of a non-negative INTEGER, without the sign octet. */
export function readUnsignedIntegerBytes(tlv: Tlv): Uint8Array {
  const v = readIntegerBytes(tlv);
  if (v[0] & 0x80) malformed("negative INTEGER");
  return v[0] === 0 && v.length > 1 ? v.subarray(1) : v;
}

/** A small non-negative INTEGER (versions, path lengths, iteration counts). */
export function readSmallInt(tlv: Tlv): number {
  const v = readIntegerBytes(tlv);
  if (v[0] & 0x80 || v.length > 6) malformed("INTEGER out of range");
  return v.reduce((n, b) => n * 256 + b, 0);
}

export function readBoolean(tlv: Tlv): boolean {
  if (tlv.tag !== TAG.BOOLEAN || tlv.value.length !== 1) malformed("bad BOOLEAN");
  if (tlv.value[0] !== 0 && tlv.value[0] !== 0xff) malformed("non-DER BOOLEAN");
  return tlv.value[0] === 0xff;
}

/** BIT STRING content without the unused-bits octet; `unused` says how many trailing bits are padding. */
export function readBitString(tlv: Tlv): { bytes: Uint8Array; unused: number } {
  if (tlv.tag !== TAG.BIT_STRING || tlv.value.length === 0) malformed("bad BIT STRING");
  const unused = tlv.value[0];
  const bytes = tlv.value.subarray(1);
  if (unused > 7 || (bytes.length === 0 && unused !== 0)) malformed("bad BIT STRING padding");
  if (unused && bytes[bytes.length - 1] & ((1 << unused) - 1)) malformed("non-zero padding bits");
  return { bytes, unused };
}

const TIME_RE = {
  [TAG.UTC_TIME]: /^(\d{2})(\d{2})(\d{2})(\d{2})(\d{2})(\d{2})Z$/,
  [TAG.GENERALIZED_TIME]: /^(\d{4})(\d{2})(\d{2})(\d{2})(\d{2})(\d{2})Z$/,
};

/** UTCTime or GeneralizedTime in the one form RFC 5280 §4.1.2.5 allows (Z, whole seconds). */
export function readTime(tlv: Tlv): Date {
  const re = TIME_RE[tlv.tag as keyof typeof TIME_RE];
  if (!re) malformed("bad time tag");
  // Both forms are at most 15 octets; a longer value must not reach the decoder whole.
  if (tlv.value.length > 15) malformed("bad time format");
  const m = re.exec(String.fromCharCode(...tlv.value));
  if (!m) malformed("bad time format");
  let year = Number(m[1]);
  if (tlv.tag === TAG.UTC_TIME) year += year < 50 ? 2000 : 1900;
  const [mo, d, h, mi, s] = m.slice(2).map(Number);
  const date = new Date(Date.UTC(2000, mo - 1, d, h, mi, s));
  // Date.UTC reads years 0-99 as 1900-1999; GeneralizedTime means the year as written.
  date.setUTCFullYear(year, mo - 1, d);
  if (date.getUTCMonth() !== mo - 1 || date.getUTCDate() !== d || h > 23 || mi > 59 || s > 59) {
    malformed("invalid date");
  }
  return date;
}

// --- writer: just enough for PKCS#8 encryption and CRL extensions ---

function encodeLength(n: number): Uint8Array {
  if (n < 0x80) return Uint8Array.of(n);
  const octets: number[] = [];
  for (let v = n; v > 0; v = Math.floor(v / 256)) octets.unshift(v & 0xff);
  return Uint8Array.of(0x80 | octets.length, ...octets);
}

export function encode(tag: number, ...content: Uint8Array[]): Uint8Array {
  const body = concat(...content);
  return concat(Uint8Array.of(tag), encodeLength(body.length), body);
}

/** A non-negative INTEGER from unsigned big-endian bytes. */
export function encodeUnsigned(bytes: Uint8Array): Uint8Array {
  let i = 0;
  while (i < bytes.length - 1 && bytes[i] === 0) i++;
  const trimmed = bytes.subarray(i);
  const body = trimmed.length && trimmed[0] & 0x80 ? concat(Uint8Array.of(0), trimmed) : trimmed;
  return encode(TAG.INTEGER, body.length ? body : Uint8Array.of(0));
}

export function encodeSmallInt(n: number): Uint8Array {
  const bytes: number[] = [];
  for (let v = n; v > 0; v = Math.floor(v / 256)) bytes.unshift(v & 0xff);
  return encodeUnsigned(Uint8Array.from(bytes));
}

export function encodeOid(oid: string): Uint8Array {
  const arcs = oid.split(".").map(Number);
  const out: number[] = [];
  for (const arc of [arcs[0] * 40 + arcs[1], ...arcs.slice(2)]) {
    const septets: number[] = [arc & 0x7f];
    for (let v = Math.floor(arc / 128); v > 0; v = Math.floor(v / 128)) {
      septets.unshift(0x80 | (v & 0x7f));
    }
    out.push(...septets);
  }
  return encode(TAG.OID, Uint8Array.from(out));
}
