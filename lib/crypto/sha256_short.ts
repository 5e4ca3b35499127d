/**
 * SHA-256 (FIPS 180-4) and HMAC-SHA-256 (RFC 2104) of short inputs, in JavaScript with no
 * allocation but the digest. A relayed message makes about a dozen such computations per
 * party (leaf and path hashes, the content key and commitment, the statement's SHA-256(ct)),
 * each of one to a few blocks; @noble/hashes spends most of each on its hasher objects (a
 * hash object, its buffers and DataViews, two of them per HMAC), node:crypto on its ops
 * (docs/PERFORMANCE.md, sessions 6 and 8). Here one padded message buffer and one schedule
 * are reused by every call: the functions are synchronous and call nothing, so no two
 * computations ever share them at once, and what they held is zeroed after each call.
 * SHA-256 has no secret-dependent branch or table lookup. Checked against node:crypto on
 * every length up to {@link SHORT_HASH_MAX_BYTES} + 1 block and RFC 4231
 * (tests/unit/sha256_short_test.ts).
 */

/** The longest message (after HMAC's key block) these functions take. */
export const SHORT_HASH_MAX_BYTES = 1024;

const BLOCK = 64;

/** The first 32 bits of the fractional parts of the roots of the first primes (FIPS 180-4 §4.2.2, §5.3.3). */
function fractionalBits(count: number, root: (x: number) => number): Int32Array {
  const out = new Int32Array(count);
  let found = 0;
  for (let n = 2; found < count; n++) {
    let prime = true;
    for (let d = 2; d * d <= n; d++) if (n % d === 0) prime = false;
    if (!prime) continue;
    const r = root(n);
    out[found++] = Math.floor((r - Math.floor(r)) * 2 ** 32) | 0;
  }
  return out;
}

const K = fractionalBits(64, Math.cbrt);
const IV = fractionalBits(8, Math.sqrt);

/** The padded message: HMAC's key block, the longest message, its padding. */
const buffer = new Uint8Array(BLOCK + SHORT_HASH_MAX_BYTES + BLOCK + 8);
const W = new Int32Array(64);
const H = new Int32Array(8);

/** Compresses `blocks` 64-byte blocks of `buffer` into H. */
function compress(blocks: number): void {
  const w = W;
  const b = buffer;
  let h0 = IV[0],
    h1 = IV[1],
    h2 = IV[2],
    h3 = IV[3],
    h4 = IV[4],
    h5 = IV[5],
    h6 = IV[6],
    h7 = IV[7];
  for (let block = 0; block < blocks; block++) {
    const o = block * BLOCK;
    for (let t = 0; t < 16; t++) {
      const i = o + 4 * t;
      w[t] = (b[i] << 24) | (b[i + 1] << 16) | (b[i + 2] << 8) | b[i + 3];
    }
    for (let t = 16; t < 64; t++) {
      const x = w[t - 15];
      const y = w[t - 2];
      const s0 = ((x >>> 7) | (x << 25)) ^ ((x >>> 18) | (x << 14)) ^ (x >>> 3);
      const s1 = ((y >>> 17) | (y << 15)) ^ ((y >>> 19) | (y << 13)) ^ (y >>> 10);
      w[t] = (w[t - 16] + s0 + w[t - 7] + s1) | 0;
    }
    let a = h0, bb = h1, c = h2, d = h3, e = h4, f = h5, g = h6, h = h7;
    for (let t = 0; t < 64; t++) {
      const S1 = ((e >>> 6) | (e << 26)) ^ ((e >>> 11) | (e << 21)) ^ ((e >>> 25) | (e << 7));
      const ch = (e & f) ^ (~e & g);
      const t1 = (h + S1 + ch + K[t] + w[t]) | 0;
      const S0 = ((a >>> 2) | (a << 30)) ^ ((a >>> 13) | (a << 19)) ^ ((a >>> 22) | (a << 10));
      const maj = (a & bb) ^ (a & c) ^ (bb & c);
      const t2 = (S0 + maj) | 0;
      h = g;
      g = f;
      f = e;
      e = (d + t1) | 0;
      d = c;
      c = bb;
      bb = a;
      a = (t1 + t2) | 0;
    }
    h0 = (h0 + a) | 0;
    h1 = (h1 + bb) | 0;
    h2 = (h2 + c) | 0;
    h3 = (h3 + d) | 0;
    h4 = (h4 + e) | 0;
    h5 = (h5 + f) | 0;
    h6 = (h6 + g) | 0;
    h7 = (h7 + h) | 0;
  }
  H[0] = h0;
  H[1] = h1;
  H[2] = h2;
  H[3] = h3;
  H[4] = h4;
  H[5] = h5;
  H[6] = h6;
  H[7] = h7;
}

/** Pads the `length` bytes at the start of `buffer` and hashes them into H. */
function hashBuffer(length: number): void {
  buffer[length] = 0x80;
  const blocks = Math.ceil((length + 9) / BLOCK);
  const end = blocks * BLOCK;
  buffer.fill(0, length + 1, end - 4);
  const bits = length * 8; // < 2^32: the buffer is far shorter than 512 MiB
  buffer[end - 4] = bits >>> 24;
  buffer[end - 3] = bits >>> 16;
  buffer[end - 2] = bits >>> 8;
  buffer[end - 1] = bits;
  compress(blocks);
}

/** H as 32 bytes at `out[offset…]`. */
function writeDigest(out: Uint8Array, offset: number): void {
  for (let i = 0; i < 8; i++) {
    const v = H[i];
    out[offset + 4 * i] = v >>> 24;
    out[offset + 4 * i + 1] = v >>> 16;
    out[offset + 4 * i + 2] = v >>> 8;
    out[offset + 4 * i + 3] = v;
  }
}

/** Copies `parts` into `buffer` from `offset`; their total must fit (the caller checks). */
function place(parts: readonly Uint8Array[], offset: number): number {
  for (const part of parts) {
    buffer.set(part, offset);
    offset += part.length;
  }
  return offset;
}

/**
 * SHA-256 of the concatenation of `parts`, at most {@link SHORT_HASH_MAX_BYTES} in all, into
 * `out` (32 bytes; a fresh array when not given).
 */
export function sha256Short(
  parts: readonly Uint8Array[],
  out: Uint8Array = new Uint8Array(32),
): Uint8Array {
  if (out.length !== 32) throw new RangeError("a SHA-256 digest takes 32 bytes");
  const length = place(parts, 0);
  hashBuffer(length);
  buffer.fill(0, 0, length);
  writeDigest(out, 0);
  return out;
}

/**
 * HMAC-SHA-256(key, concatenation of `parts`): a key of at most one block, at most
 * {@link SHORT_HASH_MAX_BYTES} of message.
 */
export function hmacSha256Short(key: Uint8Array, parts: readonly Uint8Array[]): Uint8Array {
  buffer.fill(0x36, 0, BLOCK);
  for (let i = 0; i < key.length; i++) buffer[i] = key[i] ^ 0x36;
  const length = place(parts, BLOCK);
  hashBuffer(length);
  buffer.fill(0, BLOCK, length);
  // The outer hash: opad block, then the inner digest.
  buffer.fill(0x5c, 0, BLOCK);
  for (let i = 0; i < key.length; i++) buffer[i] = key[i] ^ 0x5c;
  writeDigest(buffer, BLOCK);
  hashBuffer(BLOCK + 32);
  buffer.fill(0, 0, BLOCK + 32); // the key and the inner digest
  const out = new Uint8Array(32);
  writeDigest(out, 0);
  return out;
}
