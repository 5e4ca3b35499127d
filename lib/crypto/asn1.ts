/**
 * A deliberately tiny, strict DER reader: just enough to find the
 * AlgorithmIdentifier of a PKCS#8 / SubjectPublicKeyInfo key and to unpack an
 * ECDSA-Sig-Value. Anything that is not canonical DER is refused, because two
 * encodings of one value are how signature malleability and parser confusion
 * start.
 */

const TAG_INTEGER = 0x02;
export const TAG_OID = 0x06;
const TAG_SEQUENCE = 0x30;

/** One TLV: its tag, its contents, and the offset just past it. */
export interface DerElement {
  readonly tag: number;
  readonly contents: Uint8Array;
  readonly end: number;
}

/**
 * Reads the TLV at `offset`. Only single-byte tags and definite lengths in
 * their shortest form are accepted (X.690 §10.1).
 * @throws {TypeError} on truncated or non-canonical DER
 */
export function readElement(der: Uint8Array, offset = 0): DerElement {
  if (offset + 2 > der.length) throw new TypeError("DER: truncated");
  const tag = der[offset];
  if ((tag & 0x1f) === 0x1f) throw new TypeError("DER: multi-byte tag");
  let length = der[offset + 1];
  let start = offset + 2;
  if (length & 0x80) {
    const count = length & 0x7f;
    // 0x80 is BER's indefinite length; more than 3 length bytes is never needed here.
    if (count === 0 || count > 3) throw new TypeError("DER: unsupported length form");
    if (start + count > der.length) throw new TypeError("DER: truncated length");
    if (der[start] === 0) throw new TypeError("DER: length has a leading zero");
    length = 0;
    for (let i = 0; i < count; i++) length = length * 256 + der[start + i];
    if (length < 0x80) throw new TypeError("DER: long form for a short length");
    start += count;
  }
  const end = start + length;
  if (end > der.length) throw new TypeError("DER: truncated contents");
  return { tag, contents: der.subarray(start, end), end };
}

/**
 * Reads `der` as exactly one SEQUENCE (no trailing bytes) and returns its children.
 * @throws {TypeError} on another tag, trailing bytes, or bad DER inside
 */
export function readSequence(der: Uint8Array): DerElement[] {
  const outer = readElement(der);
  if (outer.end !== der.length) throw new TypeError("DER: trailing data");
  return childrenOf(outer);
}

/**
 * The children of a SEQUENCE element, which must fill its contents exactly.
 * @throws {TypeError} on another tag or bad DER inside
 */
export function childrenOf(element: DerElement): DerElement[] {
  if (element.tag !== TAG_SEQUENCE) throw new TypeError("DER: not a SEQUENCE");
  const children: DerElement[] = [];
  for (let offset = 0; offset < element.contents.length;) {
    const child = readElement(element.contents, offset);
    children.push(child);
    offset = child.end;
  }
  return children;
}

/**
 * The magnitude of a non-negative DER INTEGER, minimal encoding enforced.
 * @throws {TypeError} for a negative or non-minimally encoded integer
 */
export function unsignedIntegerBytes(element: DerElement): Uint8Array {
  const c = element.contents;
  if (element.tag !== TAG_INTEGER || c.length === 0) throw new TypeError("DER: not an INTEGER");
  if (c[0] & 0x80) throw new TypeError("DER: negative INTEGER");
  if (c.length > 1 && c[0] === 0 && !(c[1] & 0x80)) {
    throw new TypeError("DER: INTEGER has a superfluous leading zero");
  }
  return c[0] === 0 && c.length > 1 ? c.subarray(1) : c;
}

/**
 * Dotted-decimal text of an OBJECT IDENTIFIER, e.g. "1.2.840.10045.2.1".
 * @throws {TypeError} for a non-OID or a non-minimal sub-identifier
 */
export function oidToString(element: DerElement): string {
  const c = element.contents;
  if (element.tag !== TAG_OID || c.length === 0) throw new TypeError("DER: not an OID");
  const arcs: number[] = [];
  let value = 0;
  for (let i = 0; i < c.length; i++) {
    if (value === 0 && c[i] === 0x80) throw new TypeError("DER: OID arc has a leading 0x80");
    value = value * 128 + (c[i] & 0x7f);
    if (value > Number.MAX_SAFE_INTEGER / 128) throw new TypeError("DER: OID arc too large");
    if (!(c[i] & 0x80)) {
      arcs.push(value);
      value = 0;
    } else if (i === c.length - 1) {
      throw new TypeError("DER: OID ends mid-arc");
    }
  }
  const first = Math.min(Math.floor(arcs[0] / 40), 2);
  return [first, arcs[0] - first * 40, ...arcs.slice(1)].join(".");
}
