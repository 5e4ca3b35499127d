/**
 * ChaCha20-Poly1305 (RFC 8439 §2.8) in JavaScript, for the records (PROTOCOL §3.2) and message
 * contents (§6.1) that every party seals and opens several times per message. In Deno a
 * node:crypto AEAD call costs a cipher object and its stream machinery, about 10 µs per seal of
 * a short record and 5 per open, where the cipher's own work is well under one; here a seal or an
 * open allocates its output and nothing else, so below a crossover length it is several times
 * faster (./sync_node.ts picks; docs/PERFORMANCE.md, session 11).
 *
 * The state (the ChaCha20 input block, one keystream block, Poly1305's accumulator and key) lives
 * in module arrays reused by every call: the functions are synchronous and call nothing, so no two
 * computations ever share them at once, and they are zeroed after each call (best-effort in JS:
 * the engine may keep copies in registers or spilled values). Constant time: no branch and no
 * table index depends on the key, the nonce, the plaintext or the tag, only on lengths; the tag
 * is compared by accumulating the XOR of every byte. Checked against RFC 8439 §2.8.2, Appendix
 * A.5 and node:crypto on every length 0…300 and beyond (tests/unit/chacha20_poly1305_test.ts).
 */

/**
 * Where libcrypto does not load, the node backend (./sync_node.ts) seals and opens plaintexts of
 * at most this many bytes here, longer ones through node:crypto (where it loads, libcrypto takes
 * all past NATIVE_AEAD_MIN_BYTES there); the browser's uses this module at every length. Every
 * record (PROTOCOL §3.2) and every message's content (§6.1) is one AEAD call at each party that
 * seals or opens it, most of them a few hundred bytes. In Deno a node:crypto call costs a cipher object and
 * its stream ops whatever the length, about 6–13 µs of CPU per seal and 4–9 per open here, where
 * JavaScript spends about 2 µs plus 5 ns a byte and node:crypto's native code ~1.2 ns a byte: seals
 * cross over near 1,100–1,500 bytes, opens near 700 (docs/PERFORMANCE.md, session 11). One bound
 * between the two keeps a record's seal and its opens on one implementation.
 */
export const CHACHA20_POLY1305_JS_MAX_BYTES = 768;

/** The ChaCha20 input block (RFC 8439 §2.3): constants, key, block counter, nonce. */
const input = new Int32Array(16);
/** One block of keystream as sixteen words (each four bytes, little-endian). */
const keystream = new Int32Array(16);

/** "expand 32-byte k" as four little-endian words (RFC 8439 §2.3). */
const SIGMA = [0x61707865, 0x3320646e, 0x79622d32, 0x6b206574] as const;

function readLe32(bytes: Uint8Array, offset: number): number {
  return bytes[offset] | (bytes[offset + 1] << 8) | (bytes[offset + 2] << 16) |
    (bytes[offset + 3] << 24);
}

function setKeyAndNonce(key: Uint8Array, nonce: Uint8Array): void {
  for (let i = 0; i < 4; i++) input[i] = SIGMA[i];
  for (let i = 0; i < 8; i++) input[4 + i] = readLe32(key, 4 * i);
  for (let i = 0; i < 3; i++) input[13 + i] = readLe32(nonce, 4 * i);
}

function rotl(x: number, n: number): number {
  return (x << n) | (x >>> (32 - n));
}

/** The ChaCha20 block function (RFC 8439 §2.3) at `counter`, into {@link keystream}. */
function chachaBlock(counter: number): void {
  const s = input;
  s[12] = counter;
  let x0 = s[0], x1 = s[1], x2 = s[2], x3 = s[3], x4 = s[4], x5 = s[5], x6 = s[6], x7 = s[7];
  let x8 = s[8], x9 = s[9], x10 = s[10], x11 = s[11], x12 = s[12], x13 = s[13], x14 = s[14];
  let x15 = s[15];
  for (let round = 0; round < 10; round++) {
    // A column round, then a diagonal round: two of the 20 rounds (RFC 8439 §2.3).
    x0 = (x0 + x4) | 0, x12 = rotl(x12 ^ x0, 16), x8 = (x8 + x12) | 0, x4 = rotl(x4 ^ x8, 12);
    x0 = (x0 + x4) | 0, x12 = rotl(x12 ^ x0, 8), x8 = (x8 + x12) | 0, x4 = rotl(x4 ^ x8, 7);
    x1 = (x1 + x5) | 0, x13 = rotl(x13 ^ x1, 16), x9 = (x9 + x13) | 0, x5 = rotl(x5 ^ x9, 12);
    x1 = (x1 + x5) | 0, x13 = rotl(x13 ^ x1, 8), x9 = (x9 + x13) | 0, x5 = rotl(x5 ^ x9, 7);
    x2 = (x2 + x6) | 0, x14 = rotl(x14 ^ x2, 16), x10 = (x10 + x14) | 0, x6 = rotl(x6 ^ x10, 12);
    x2 = (x2 + x6) | 0, x14 = rotl(x14 ^ x2, 8), x10 = (x10 + x14) | 0, x6 = rotl(x6 ^ x10, 7);
    x3 = (x3 + x7) | 0, x15 = rotl(x15 ^ x3, 16), x11 = (x11 + x15) | 0, x7 = rotl(x7 ^ x11, 12);
    x3 = (x3 + x7) | 0, x15 = rotl(x15 ^ x3, 8), x11 = (x11 + x15) | 0, x7 = rotl(x7 ^ x11, 7);
    x0 = (x0 + x5) | 0, x15 = rotl(x15 ^ x0, 16), x10 = (x10 + x15) | 0, x5 = rotl(x5 ^ x10, 12);
    x0 = (x0 + x5) | 0, x15 = rotl(x15 ^ x0, 8), x10 = (x10 + x15) | 0, x5 = rotl(x5 ^ x10, 7);
    x1 = (x1 + x6) | 0, x12 = rotl(x12 ^ x1, 16), x11 = (x11 + x12) | 0, x6 = rotl(x6 ^ x11, 12);
    x1 = (x1 + x6) | 0, x12 = rotl(x12 ^ x1, 8), x11 = (x11 + x12) | 0, x6 = rotl(x6 ^ x11, 7);
    x2 = (x2 + x7) | 0, x13 = rotl(x13 ^ x2, 16), x8 = (x8 + x13) | 0, x7 = rotl(x7 ^ x8, 12);
    x2 = (x2 + x7) | 0, x13 = rotl(x13 ^ x2, 8), x8 = (x8 + x13) | 0, x7 = rotl(x7 ^ x8, 7);
    x3 = (x3 + x4) | 0, x14 = rotl(x14 ^ x3, 16), x9 = (x9 + x14) | 0, x4 = rotl(x4 ^ x9, 12);
    x3 = (x3 + x4) | 0, x14 = rotl(x14 ^ x3, 8), x9 = (x9 + x14) | 0, x4 = rotl(x4 ^ x9, 7);
  }
  const k = keystream;
  k[0] = x0 + s[0], k[1] = x1 + s[1], k[2] = x2 + s[2], k[3] = x3 + s[3];
  k[4] = x4 + s[4], k[5] = x5 + s[5], k[6] = x6 + s[6], k[7] = x7 + s[7];
  k[8] = x8 + s[8], k[9] = x9 + s[9], k[10] = x10 + s[10], k[11] = x11 + s[11];
  k[12] = x12 + s[12], k[13] = x13 + s[13], k[14] = x14 + s[14], k[15] = x15 + s[15];
}

/**
 * ChaCha20 encryption (RFC 8439 §2.4) of `length` bytes of `src` from `srcOffset` into `dst` from
 * `dstOffset`, with block counter 1 first (0 made the Poly1305 key, §2.8). A counter never wraps:
 * 2^32 blocks are 256 GiB, far past the largest typed array.
 */
function chachaXor(
  src: Uint8Array,
  srcOffset: number,
  dst: Uint8Array,
  dstOffset: number,
  length: number,
): void {
  const k = keystream;
  let done = 0;
  for (let counter = 1; done + 64 <= length; done += 64, counter++) {
    chachaBlock(counter);
    // A whole block a word at a time: one keystream read per four bytes.
    for (let i = 0, s = srcOffset + done, d = dstOffset + done; i < 16; i++, s += 4, d += 4) {
      const w = k[i];
      dst[d] = src[s] ^ w;
      dst[d + 1] = src[s + 1] ^ (w >>> 8);
      dst[d + 2] = src[s + 2] ^ (w >>> 16);
      dst[d + 3] = src[s + 3] ^ (w >>> 24);
    }
  }
  if (done === length) return;
  chachaBlock(1 + done / 64);
  for (let i = 0, s = srcOffset + done, d = dstOffset + done; i < length - done; i++) {
    dst[d + i] = src[s + i] ^ (k[i >>> 2] >>> (8 * (i & 3)));
  }
}

// ---- Poly1305 (RFC 8439 §2.5) ----
//
// The accumulator h and the key r are six limbs of 22 bits (132 bits; 2^132 = 4 · 2^130, which is
// 20 mod 2^130 - 5). A product of two limbs, times 20 where it passes 2^132, and six such products
// summed stay below 2^52 (the bounds are in polyBlocks), so every step is exact in JavaScript's
// doubles without 64-bit integers: 36 multiplications a block where 13-bit limbs take 100.

/** Poly1305's accumulator h, its clamped key r, and s (the tag's addend) as four 32-bit words. */
const acc = new Float64Array(6);
const rLimbs = new Int32Array(6);
const sWords = new Int32Array(4);
/** A zero-padded last block, or the lengths block (RFC 8439 §2.8). */
const pad = new Uint8Array(16);

/** A whole block's 2^128 bit, bit 128 - 110 of limb 5. */
const WHOLE_BLOCK = 1 << 18;
const LIMB_SIZE = 0x400000; // 2^22
const LIMB = LIMB_SIZE - 1;
const CARRY = 1 / LIMB_SIZE;

/**
 * Clamps r and keeps r and s from a 32-byte one-time key as eight little-endian words: the AEAD's
 * is the first 32 bytes of block 0's keystream (§2.6).
 */
function polyInit(k: Int32Array): void {
  // r &= 0x0ffffffc0ffffffc0ffffffc0fffffff, as four little-endian words.
  const w0 = k[0] & 0x0fffffff;
  const w1 = k[1] & 0x0ffffffc;
  const w2 = k[2] & 0x0ffffffc;
  const w3 = k[3] & 0x0ffffffc;
  const r = rLimbs;
  r[0] = w0 & LIMB;
  r[1] = ((w0 >>> 22) | (w1 << 10)) & LIMB;
  r[2] = ((w1 >>> 12) | (w2 << 20)) & LIMB;
  r[3] = (w2 >>> 2) & LIMB;
  r[4] = ((w2 >>> 24) | (w3 << 8)) & LIMB;
  r[5] = w3 >>> 14; // below 2^14: the clamp leaves r below 2^124
  for (let i = 0; i < 4; i++) sWords[i] = k[4 + i];
  acc.fill(0);
}

/**
 * For each of `blocks` 16-byte blocks of `data` from `offset`: adds it and `top` (its 2^128 bit
 * as limb 5 sees it: {@link WHOLE_BLOCK}, or 0 for the last partial block of a message, which
 * carries its 0x01 byte itself), then multiplies by r, mod 2^130 - 5. Every block of the AEAD's
 * MAC input is a whole one (§2.8 pads to 16).
 */
function polyBlocks(data: Uint8Array, offset: number, blocks: number, top: number): void {
  const r = rLimbs;
  const r0 = r[0], r1 = r[1], r2 = r[2], r3 = r[3], r4 = r[4], r5 = r[5];
  const t1 = 20 * r1, t2 = 20 * r2, t3 = 20 * r3, t4 = 20 * r4, t5 = 20 * r5;
  let h0 = acc[0], h1 = acc[1], h2 = acc[2], h3 = acc[3], h4 = acc[4], h5 = acc[5];
  for (let b = 0, o = offset; b < blocks; b++, o += 16) {
    const w0 = readLe32(data, o);
    const w1 = readLe32(data, o + 4);
    const w2 = readLe32(data, o + 8);
    const w3 = readLe32(data, o + 12);
    h0 += w0 & LIMB;
    h1 += ((w0 >>> 22) | (w1 << 10)) & LIMB;
    h2 += ((w1 >>> 12) | (w2 << 20)) & LIMB;
    h3 += (w2 >>> 2) & LIMB;
    h4 += ((w2 >>> 24) | (w3 << 8)) & LIMB;
    h5 += (w3 >>> 14) | top;
    // h * r: limb i collects h_j r_(i-j), and h_j 20 r_(6+i-j) for the products past 2^132.
    // Each h_j < 2^23 + 2^8 (22 bits, what the last carry left, a message limb), each
    // r_k < 2^22, r_5 < 2^14: every d_i < 2^51.4, exact.
    const d0 = h0 * r0 + h1 * t5 + h2 * t4 + h3 * t3 + h4 * t2 + h5 * t1;
    const d1 = h0 * r1 + h1 * r0 + h2 * t5 + h3 * t4 + h4 * t3 + h5 * t2;
    const d2 = h0 * r2 + h1 * r1 + h2 * r0 + h3 * t5 + h4 * t4 + h5 * t3;
    const d3 = h0 * r3 + h1 * r2 + h2 * r1 + h3 * r0 + h4 * t5 + h5 * t4;
    const d4 = h0 * r4 + h1 * r3 + h2 * r2 + h3 * r1 + h4 * r0 + h5 * t5;
    const d5 = h0 * r5 + h1 * r4 + h2 * r3 + h3 * r2 + h4 * r1 + h5 * r0;
    // Carry: each limb back to 22 bits, the carry out of limb 5 (a multiple of 2^132) times 20
    // into limb 0. Floating-point floor and subtraction, exact on these integers, cost less
    // than converting doubles above 2^31 to integers for `&` and `>>>`.
    let c = Math.floor(d0 * CARRY);
    h0 = d0 - c * LIMB_SIZE;
    let d = d1 + c;
    c = Math.floor(d * CARRY), h1 = d - c * LIMB_SIZE, d = d2 + c;
    c = Math.floor(d * CARRY), h2 = d - c * LIMB_SIZE, d = d3 + c;
    c = Math.floor(d * CARRY), h3 = d - c * LIMB_SIZE, d = d4 + c;
    c = Math.floor(d * CARRY), h4 = d - c * LIMB_SIZE, d = d5 + c;
    c = Math.floor(d * CARRY), h5 = d - c * LIMB_SIZE;
    d = h0 + 20 * c;
    c = Math.floor(d * CARRY);
    h0 = d - c * LIMB_SIZE;
    h1 += c;
  }
  acc[0] = h0, acc[1] = h1, acc[2] = h2, acc[3] = h3, acc[4] = h4, acc[5] = h5;
}

/** MACs `length` bytes of `data` from `offset`, zero-padded to a whole block (pad16, §2.8). */
function polyPadded(data: Uint8Array, offset: number, length: number): void {
  const whole = length >>> 4;
  polyBlocks(data, offset, whole, WHOLE_BLOCK);
  const rest = length & 15;
  if (rest === 0) return;
  pad.fill(0);
  // Byte by byte: a subarray to copy from would be an allocation per call.
  for (let i = 0, from = offset + 16 * whole; i < rest; i++) pad[i] = data[from + i];
  polyBlocks(pad, 0, 1, WHOLE_BLOCK);
}

/** The lengths block: u64le(aad length) || u64le(ciphertext length) (§2.8). */
function polyLengths(aadLength: number, ctLength: number): void {
  writeLe64(pad, 0, aadLength);
  writeLe64(pad, 8, ctLength);
  polyBlocks(pad, 0, 1, WHOLE_BLOCK);
}

function writeLe64(out: Uint8Array, offset: number, value: number): void {
  const high = Math.floor(value / 0x1_0000_0000);
  for (let i = 0; i < 4; i++) {
    out[offset + i] = value >>> (8 * i);
    out[offset + 4 + i] = high >>> (8 * i);
  }
}

/** The tag (h mod 2^130 - 5) + s mod 2^128 (§2.5) into `out` at `offset`. */
function polyFinish(out: Uint8Array, offset: number): void {
  const h = acc;
  // Two carry passes leave limbs 0–4 below 2^22 and limb 5 below 2^20: h < 2^130 < 2p.
  for (let pass = 0; pass < 2; pass++) {
    for (let i = 0; i < 5; i++) {
      const carry = h[i] >>> 22;
      h[i] &= LIMB;
      h[i + 1] += carry;
    }
    const carry = h[5] >>> 20;
    h[5] &= 0xfffff;
    h[0] += 5 * carry;
  }
  // g = h + 5 - 2^130: h ≥ p exactly when h + 5 reaches 2^130, and then h mod p = g. Selected by
  // a mask, not a branch.
  const g = gLimbs;
  let c = 5;
  for (let i = 0; i < 5; i++) {
    g[i] = h[i] + c;
    c = g[i] >>> 22;
    g[i] &= LIMB;
  }
  g[5] = h[5] + c;
  c = g[5] >>> 20;
  g[5] &= 0xfffff;
  const useG = -c; // all ones when h + 5 reached 2^130, else 0
  for (let i = 0; i < 6; i++) h[i] = (g[i] & useG) | (h[i] & ~useG);
  // h mod 2^128 as four 32-bit words, plus s.
  c = tagWord(out, offset, 0, h[0] | (h[1] << 22), 0);
  c = tagWord(out, offset, 1, (h[1] >>> 10) | (h[2] << 12), c);
  c = tagWord(out, offset, 2, (h[2] >>> 20) | (h[3] << 2) | (h[4] << 24), c);
  tagWord(out, offset, 3, (h[4] >>> 8) | (h[5] << 14), c);
}

/** Word `i` of the tag: h's word + s's + the carry in, little-endian; returns the carry out. */
function tagWord(out: Uint8Array, offset: number, i: number, word: number, carry: number): number {
  const f = (word >>> 0) + (sWords[i] >>> 0) + carry; // below 2^33
  const o = offset + 4 * i;
  out[o] = f;
  out[o + 1] = f >>> 8;
  out[o + 2] = f >>> 16;
  out[o + 3] = f >>> 24;
  return Math.floor(f / 0x1_0000_0000); // 0 or 1, without a branch
}

const gLimbs = new Int32Array(6);

/** Zeroes everything that held key material (best-effort, see the module comment). */
function wipeState(): void {
  input.fill(0);
  oneTimeKey.fill(0);
  keystream.fill(0);
  acc.fill(0);
  rLimbs.fill(0);
  sWords.fill(0);
  gLimbs.fill(0);
  pad.fill(0);
}

/** Block 0's keystream gives the Poly1305 key; the MAC then covers aad (padded). */
function start(key: Uint8Array, nonce: Uint8Array, aad: Uint8Array): void {
  setKeyAndNonce(key, nonce);
  chachaBlock(0);
  polyInit(keystream);
  polyPadded(aad, 0, aad.length);
}

/**
 * ChaCha20-Poly1305 seal (RFC 8439 §2.8): ciphertext || 16-byte tag, in a new buffer or written
 * into `into` (exactly the plaintext's length and 16: a frame's place in a connection's batch).
 * A 32-byte key and a 12-byte nonce (the caller checks).
 * @throws {RangeError} for an `into` of another length
 */
export function chaCha20Poly1305SealJs(
  key: Uint8Array,
  nonce: Uint8Array,
  plaintext: Uint8Array,
  aad: Uint8Array,
  into?: Uint8Array,
): Uint8Array {
  const length = plaintext.length;
  const out = into ?? new Uint8Array(length + 16);
  if (out.length !== length + 16) throw new RangeError("the output is not the sealed length");
  try {
    start(key, nonce, aad);
    chachaXor(plaintext, 0, out, 0, length);
    polyPadded(out, 0, length);
    polyLengths(aad.length, length);
    polyFinish(out, length);
    return out;
  } finally {
    wipeState();
  }
}

/**
 * Opens ciphertext || 16-byte tag (a 32-byte key and a 12-byte nonce: the caller checks). The
 * tag is checked before anything is decrypted.
 * @throws {Error} when authentication fails; the caller turns it into its own code
 */
export function chaCha20Poly1305OpenJs(
  key: Uint8Array,
  nonce: Uint8Array,
  sealed: Uint8Array,
  aad: Uint8Array,
  into?: Uint8Array,
): Uint8Array {
  const length = sealed.length - 16;
  if (length < 0) throw new Error("ChaCha20-Poly1305 input shorter than its tag");
  if (into && into.length !== length) throw new Error("the output is not the opened length");
  try {
    start(key, nonce, aad);
    polyPadded(sealed, 0, length);
    polyLengths(aad.length, length);
    polyFinish(pad, 0);
    let diff = 0;
    for (let i = 0; i < 16; i++) diff |= pad[i] ^ sealed[length + i];
    if (diff !== 0) throw new Error("ChaCha20-Poly1305 authentication failed");
    // The tag was checked over the ciphertext first: the XOR may then overwrite it (in place).
    const out = into ?? new Uint8Array(length);
    chachaXor(sealed, 0, out, 0, length);
    return out;
  } finally {
    wipeState();
  }
}

/** The key of {@link poly1305} as eight little-endian words. */
const oneTimeKey = new Int32Array(8);

/**
 * Poly1305 alone (RFC 8439 §2.5) of `message` under a 32-byte one-time key (the caller checks),
 * through the very functions the AEAD uses. Exported for tests only: securechat uses Poly1305
 * inside ChaCha20-Poly1305, never alone, but RFC 8439 Appendix A.3's vectors, which exist for the
 * final reduction's edge cases (h within a few units of 2^130 - 5, carries at their largest), need
 * a key and a message of their own, out of the AEAD's reach
 * (tests/unit/chacha20_poly1305_test.ts).
 */
export function poly1305(key: Uint8Array, message: Uint8Array): Uint8Array {
  const tag = new Uint8Array(16);
  try {
    for (let i = 0; i < 8; i++) oneTimeKey[i] = readLe32(key, 4 * i);
    polyInit(oneTimeKey);
    const whole = message.length >>> 4;
    polyBlocks(message, 0, whole, WHOLE_BLOCK);
    const rest = message.length & 15;
    if (rest !== 0) {
      // The last partial block: its bytes, then 0x01, then zeros (§2.5.1).
      pad.fill(0);
      pad.set(message.subarray(16 * whole));
      pad[rest] = 1;
      polyBlocks(pad, 0, 1, 0);
    }
    polyFinish(tag, 0);
    return tag;
  } finally {
    wipeState();
  }
}
