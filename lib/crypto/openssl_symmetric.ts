/**
 * ChaCha20-Poly1305 (RFC 8439), SHA-256 and HMAC-SHA-256 through the system's libcrypto
 * (./libcrypto.ts), for the node backend's per-message primitives (./sync_node.ts): one FFI call
 * per step into OpenSSL's SIMD assembly, where Deno's node:crypto pays a cipher or hash object and
 * several ops per call around unvectorised code (docs/PERFORMANCE.md session 14).
 *
 * Memory safety is this module's whole contract with C: every length passed to libcrypto is the
 * length of a JavaScript buffer handed over in the same call (checked against the fixed key and
 * nonce sizes first, since libcrypto reads those without a length), every output buffer is
 * sized to exactly what the call writes, allocated here or given by the caller (an open may write
 * in place: output and input exactly the same bytes, a partial overlap refused before any call;
 * ChaCha20 is a stream cipher: an Update writes as many bytes as it reads, a Final none, the tag
 * 16), and the counts libcrypto reports are
 * checked against that. Every return code is checked; a failure clears OpenSSL's error queue and
 * throws, never returns output. No call sees a dangling pointer: an empty AAD, plaintext or part
 * to hash skips its Update, and null goes only where OpenSSL's API gives it a meaning (the AAD
 * Update's output, a digest Final's size, the ENGINE, an Init's parameters). The contexts keep
 * the last call's key state until the next call re-keys them (the JS path zeroes its state; the
 * same keys sit in the session objects anyway).
 *
 * SHA-256 runs on one kept digest context with a SHA-256 fetched once: OpenSSL 3's one-shot
 * EVP_Digest makes and frees a context per call and, given the legacy `EVP_sha256()`, fetches
 * the provider's implementation again in every Init, which cost more than the hashing itself
 * (docs/PERFORMANCE.md session 18).
 */
import { wipe } from "../bytes.ts";
import { byteLength, type Libcrypto, type LibcryptoSymbols } from "./libcrypto.ts";

/** The name EVP_MD_fetch knows SHA-256 by, NUL-terminated. */
const SHA256_NAME = new TextEncoder().encode("SHA2-256\0");
/** OpenSSL's constants (openssl/evp.h, openssl/core_names.h): a stable ABI. */
const EVP_CTRL_AEAD_GET_TAG = 0x10;
const EVP_CTRL_AEAD_SET_TAG = 0x11;
const KEY_BYTES = 32;
const NONCE_BYTES = 12;
const TAG_BYTES = 16;
const SHA256_BYTES = 32;
const HMAC_BLOCK_BYTES = 64;
const IPAD = 0x36;
const OPAD = 0x5c;
/** EVP_EncryptUpdate and HMAC take an `int` length. */
const INT_MAX = 0x7fffffff;

const viewBuffer: (view: Uint8Array) => ArrayBufferLike = Function.prototype.call.bind(
  Object.getOwnPropertyDescriptor(Object.getPrototypeOf(Uint8Array.prototype), "buffer")!.get!,
);
const byteOffset: (view: Uint8Array) => number = Function.prototype.call.bind(
  Object.getOwnPropertyDescriptor(Object.getPrototypeOf(Uint8Array.prototype), "byteOffset")!.get!,
);

/** Thrown on every libcrypto failure; the caller turns it into its own code. */
export class LibcryptoError extends Error {}

/**
 * libcrypto's ChaCha20-Poly1305, SHA-256 and HMAC-SHA-256 for this process. It holds one cipher
 * context for sealing and one for opening, set up once and re-keyed by every call (Init with the
 * key and nonce resets the AEAD state): sharing them is safe only because every method runs to
 * completion synchronously on the one JS thread that owns this object, with no await and no
 * callback between the Init and the Final, so no two calls interleave on a context. The digest
 * context is shared the same way. The contexts and the fetched SHA-256 live as long as the
 * process (one object, made once by ./sync_node.ts), so nothing is freed.
 */
export class OpenSslSymmetric {
  readonly #lib: LibcryptoSymbols;
  readonly #cipher: Deno.PointerObject;
  readonly #sealCtx: Deno.PointerObject;
  readonly #openCtx: Deno.PointerObject;
  /** SHA-256, fetched once from the default provider. */
  readonly #sha256: Deno.PointerObject;
  readonly #digestCtx: Deno.PointerObject;
  /** The int the Update and Final calls write their output count to. */
  readonly #count = new Int32Array(1);
  /** HMAC's padded key block (K0 XOR ipad, then XOR opad), zero between calls. */
  readonly #pad = new Uint8Array(new ArrayBuffer(HMAC_BLOCK_BYTES));
  /** HMAC's inner digest, zero between calls. */
  readonly #inner = new Uint8Array(new ArrayBuffer(SHA256_BYTES));
  readonly #innerParts = [this.#inner];
  /** Receives an AEAD Final's zero bytes (checked). */
  readonly #scratch = new Uint8Array(TAG_BYTES);
  /** The tag being checked, copied here: not a buffer of its own per open. */
  readonly #tag = new Uint8Array(TAG_BYTES);

  /** @throws {LibcryptoError} when libcrypto lacks ChaCha20-Poly1305 or SHA-256 or memory */
  constructor(libcrypto: Libcrypto) {
    const lib = this.#lib = libcrypto.lib;
    const cipher = lib.EVP_chacha20_poly1305();
    const sha256 = lib.EVP_MD_fetch(null, SHA256_NAME, null);
    const sealCtx = lib.EVP_CIPHER_CTX_new();
    const openCtx = lib.EVP_CIPHER_CTX_new();
    const digestCtx = lib.EVP_MD_CTX_new();
    // The Final writes the digest's size into a 32-byte output: it must be SHA-256's.
    if (
      !cipher || !sha256 || !sealCtx || !openCtx || !digestCtx ||
      lib.EVP_MD_get_size(sha256) !== SHA256_BYTES
    ) {
      lib.ERR_clear_error();
      throw new LibcryptoError("libcrypto has no ChaCha20-Poly1305 or SHA-256 here");
    }
    [this.#cipher, this.#sealCtx, this.#openCtx] = [cipher, sealCtx, openCtx];
    [this.#sha256, this.#digestCtx] = [sha256, digestCtx];
  }

  /**
   * ChaCha20-Poly1305: ciphertext || 16-byte tag, in a new buffer or written into `into`
   * (exactly the plaintext's length and the tag's: libcrypto writes that many bytes there).
   * @throws {LibcryptoError} on a wrong key, nonce or output length, or when libcrypto fails
   */
  seal(
    key: Uint8Array,
    nonce: Uint8Array,
    plaintext: Uint8Array,
    aad: Uint8Array,
    into?: Uint8Array,
  ): Uint8Array {
    checkKeyAndNonce(key, nonce);
    const length = checkLength(byteLength(plaintext));
    const aadLength = checkLength(byteLength(aad));
    if (into !== undefined && byteLength(into) !== length + TAG_BYTES) {
      throw new LibcryptoError("the output is not the sealed length");
    }
    const lib = this.#lib;
    const ctx = this.#sealCtx;
    const count = this.#count;
    const out = into ?? new Uint8Array(length + TAG_BYTES);
    const body = Uint8Array.prototype.subarray.call(out, 0, length);
    const tag = Uint8Array.prototype.subarray.call(out, length);
    const ok = lib.EVP_EncryptInit_ex(ctx, this.#cipher, null, key, nonce) === 1 &&
      // AAD: out is null, nothing is written, and the count is no output length.
      (aadLength === 0 || lib.EVP_EncryptUpdate(ctx, null, count, aad, aadLength) === 1) &&
      (length === 0 ||
        (lib.EVP_EncryptUpdate(ctx, body, count, plaintext, length) === 1 &&
          count[0] === length)) &&
      lib.EVP_EncryptFinal_ex(ctx, this.#scratch, count) === 1 && count[0] === 0 &&
      lib.EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_AEAD_GET_TAG, TAG_BYTES, tag) === 1;
    if (!ok) {
      lib.ERR_clear_error();
      wipe(out);
      throw new LibcryptoError("libcrypto could not seal with ChaCha20-Poly1305");
    }
    return out;
  }

  /**
   * Opens ChaCha20-Poly1305 ciphertext || 16-byte tag: the plaintext in a new buffer, or written
   * into `into` (exactly the ciphertext's length), which may be the ciphertext itself (OpenSSL's
   * EVP ciphers take an output equal to the input; a partial overlap they do not, nor does this).
   * OpenSSL compares the tag in constant time; on a mismatch the unauthenticated plaintext is
   * wiped and never returned.
   * @throws {LibcryptoError} when authentication fails (or libcrypto does, or the input is not
   *   at least a tag, or a length is wrong)
   */
  open(
    key: Uint8Array,
    nonce: Uint8Array,
    sealed: Uint8Array,
    aad: Uint8Array,
    into?: Uint8Array,
  ): Uint8Array {
    checkKeyAndNonce(key, nonce);
    const sealedLength = checkLength(byteLength(sealed));
    const aadLength = checkLength(byteLength(aad));
    if (sealedLength < TAG_BYTES) {
      throw new LibcryptoError("the sealed input is shorter than a tag");
    }
    const length = sealedLength - TAG_BYTES;
    if (into !== undefined && byteLength(into) !== length) {
      throw new LibcryptoError("the output is not the opened length");
    }
    if (into !== undefined && partlyOverlaps(into, sealed)) {
      throw new LibcryptoError("the output overlaps the input other than in place");
    }
    const lib = this.#lib;
    const ctx = this.#openCtx;
    const count = this.#count;
    const out = into ?? new Uint8Array(length);
    // Both views made before Init, so only FFI calls run between Init and Final. The tag a copy:
    // SET_TAG takes a non-const pointer, and the caller's bytes stay the caller's.
    const ciphertext = Uint8Array.prototype.subarray.call(sealed, 0, length);
    const tag = this.#tag;
    tag.set(Uint8Array.prototype.subarray.call(sealed, length));
    const ok = lib.EVP_DecryptInit_ex(ctx, this.#cipher, null, key, nonce) === 1 &&
      lib.EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_AEAD_SET_TAG, TAG_BYTES, tag) === 1 &&
      // AAD: out is null, nothing is written, and the count is no output length.
      (aadLength === 0 || lib.EVP_DecryptUpdate(ctx, null, count, aad, aadLength) === 1) &&
      (length === 0 ||
        (lib.EVP_DecryptUpdate(ctx, out, count, ciphertext, length) === 1 &&
          count[0] === length)) &&
      lib.EVP_DecryptFinal_ex(ctx, this.#scratch, count) === 1 && count[0] === 0;
    if (!ok) {
      lib.ERR_clear_error();
      wipe(out);
      throw new LibcryptoError("ChaCha20-Poly1305 authentication failed");
    }
    return out;
  }

  /**
   * SHA-256 of the concatenation of `parts`, each handed to libcrypto where it lies (no joined
   * copy), into `out` (32 bytes; a fresh array when not given).
   * @throws {LibcryptoError} when libcrypto fails
   */
  sha256(parts: readonly Uint8Array[], out: Uint8Array = new Uint8Array(SHA256_BYTES)): Uint8Array {
    if (byteLength(out) !== SHA256_BYTES) {
      throw new LibcryptoError("a SHA-256 digest takes 32 bytes");
    }
    if (!this.#digest(undefined, parts, out)) {
      this.#lib.ERR_clear_error();
      throw new LibcryptoError("libcrypto could not hash");
    }
    return out;
  }

  /**
   * HMAC-SHA-256(key, concatenation of `parts`), any key length including empty: RFC 2104 over
   * the kept SHA-256 context, two hashes of a padded key block and the rest. libcrypto's HMAC()
   * fetches an HMAC and a SHA-256 and makes and frees three contexts per call (OpenSSL 3's
   * EVP_Q_mac), twice this one's cost; an EVP_MAC context would need its digest named through an
   * OSSL_PARAM built of pointers. The padded key and the inner digest are wiped after, and the
   * context reset (best-effort: the key sits in the caller's memory anyway).
   * @throws {LibcryptoError} when libcrypto fails
   */
  hmacSha256(key: Uint8Array, parts: readonly Uint8Array[]): Uint8Array {
    const pad = this.#pad;
    const inner = this.#inner;
    const out = new Uint8Array(SHA256_BYTES);
    // K0 (RFC 2104 §2): the key, or its digest when longer than a block, zero-padded.
    let ok = true;
    if (byteLength(key) > HMAC_BLOCK_BYTES) {
      ok = this.#digest(undefined, [key], Uint8Array.prototype.subarray.call(pad, 0, SHA256_BYTES));
    } else {
      pad.set(key);
    }
    if (ok) {
      for (let i = 0; i < HMAC_BLOCK_BYTES; i++) pad[i] ^= IPAD;
      ok = this.#digest(pad, parts, inner);
    }
    if (ok) {
      for (let i = 0; i < HMAC_BLOCK_BYTES; i++) pad[i] ^= IPAD ^ OPAD;
      ok = this.#digest(pad, this.#innerParts, out);
    }
    wipe(pad);
    wipe(inner);
    ok = this.#lib.EVP_DigestInit_ex2(this.#digestCtx, this.#sha256, null) === 1 && ok;
    if (!ok) {
      this.#lib.ERR_clear_error();
      wipe(out);
      throw new LibcryptoError("libcrypto could not compute the HMAC");
    }
    return out;
  }

  /**
   * SHA-256 of `head` (when given) and `parts` into `out`, exactly 32 bytes (every caller's is),
   * on the kept context: whether libcrypto succeeded.
   */
  #digest(head: Uint8Array | undefined, parts: readonly Uint8Array[], out: Uint8Array): boolean {
    const lib = this.#lib;
    const ctx = this.#digestCtx;
    // Init with the same SHA-256 as the last call resets the provider's state in place.
    let ok = lib.EVP_DigestInit_ex2(ctx, this.#sha256, null) === 1 &&
      (head === undefined || lib.EVP_DigestUpdate(ctx, head, BigInt(byteLength(head))) === 1);
    for (let i = 0; ok && i < parts.length; i++) {
      const length = byteLength(parts[i]);
      // A bigint: a number would take Deno's slow call path (~0.13 µs more).
      if (length !== 0) ok = lib.EVP_DigestUpdate(ctx, parts[i], BigInt(length)) === 1;
    }
    return ok && lib.EVP_DigestFinal_ex(ctx, out, null) === 1;
  }
}

function checkKeyAndNonce(key: Uint8Array, nonce: Uint8Array): void {
  // libcrypto reads 32 and 12 bytes from these pointers whatever they hold.
  if (byteLength(key) !== KEY_BYTES || byteLength(nonce) !== NONCE_BYTES) {
    throw new LibcryptoError("ChaCha20-Poly1305 takes a 32-byte key and a 12-byte nonce");
  }
}

/**
 * `a` and `b` share some bytes without starting at the same one: an output there would overwrite
 * input the cipher has not read yet.
 */
function partlyOverlaps(a: Uint8Array, b: Uint8Array): boolean {
  if (viewBuffer(a) !== viewBuffer(b)) return false;
  const [aStart, bStart] = [byteOffset(a), byteOffset(b)];
  if (aStart === bStart) return false;
  return aStart < bStart + byteLength(b) && bStart < aStart + byteLength(a);
}

/** `length`, if libcrypto's `int` lengths can carry it (the callers route nothing near it here). */
function checkLength(length: number): number {
  if (length > INT_MAX) throw new LibcryptoError("an input longer than libcrypto's int length");
  return length;
}
