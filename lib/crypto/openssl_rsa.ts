/**
 * RSA PKCS#1 v1.5 / SHA-256 signing and verification through the system's OpenSSL 3 libcrypto
 * (Deno FFI), for the node backend only (./sync_node.ts; the page keeps WebCrypto and
 * ./rsa_verify.ts's BigInt). Deno 2.9's own RSA private-key
 * operations (WebCrypto and node:crypto alike) run in RustCrypto's `rsa` crate, which is ~5×
 * slower than OpenSSL here and not constant time (RUSTSEC-2023-0071, the Marvin attack: timing
 * leaks the private key to anyone who can have it sign and time the answer — what a server does
 * for every peer that opens a handshake). OpenSSL's RSA blinds, runs in constant time and checks
 * its CRT result (docs/CRYPTO.md, docs/PERFORMANCE.md session 12). Its public operation takes
 * ~18 µs of CPU where ./rsa_verify.ts's BigInt takes ~36 and leaves its numbers as garbage: the
 * server verifies the author's signature of every line it relays (docs/PERFORMANCE.md session 20).
 *
 * The library is ./libcrypto.ts's (opened once, from the paths `--allow-ffi` names). Every call is
 * synchronous, on the calling thread; every return code is checked, and a failure is a
 * SecureChatError, never a signature that was not made; a verification says true only for
 * libcrypto's 1.
 */
import { SecureChatError } from "../errors.ts";
import { wipe } from "../bytes.ts";
import { byteLength, type Libcrypto, type LibcryptoSymbols } from "./libcrypto.ts";
import type { RsaPublicNumbers } from "./sync_types.ts";

/** OpenSSL's constants (openssl/evp.h, openssl/rsa.h): a stable ABI. */
const EVP_PKEY_RSA = 6;
const RSA_PKCS1_PADDING = 1;
const SHA256_BYTES = 32;
/**
 * Where OpenSSL's RSA public operation refuses a key (crypto/rsa/rsa_ossl.c, rsa_local.h: the
 * modulus at most OPENSSL_RSA_MAX_MODULUS_BITS, the exponent below it, and at most
 * OPENSSL_RSA_MAX_PUBEXP_BITS past OPENSSL_RSA_SMALL_MODULUS_BITS; Montgomery multiplication
 * needs an odd modulus): it would call every signature under such a key bad, valid or not.
 */
const MAX_MODULUS_BITS = 16384;
const SMALL_MODULUS_BITS = 3072;
const MAX_PUBEXP_BITS = 64;

/** Frees a key's native objects once its JS holder is collected (unless disposed before). */
const natives = new FinalizationRegistry<
  { lib: LibcryptoSymbols; pkey: Deno.PointerObject; ctx: Deno.PointerObject }
>(
  ({ lib, pkey, ctx }) => {
    lib.EVP_PKEY_CTX_free(ctx);
    lib.EVP_PKEY_free(pkey);
  },
);

/**
 * libcrypto's copy of an RSA private key, with a signing context set up for PKCS#1 v1.5 /
 * SHA-256. Its pointers never leave this module, and no error carries anything of the key.
 */
export class OpenSslRsaKey {
  #lib: LibcryptoSymbols;
  #pkey: Deno.PointerObject | null;
  #ctx: Deno.PointerObject | null;
  /** The signature length: the modulus in bytes. */
  readonly bytes: number;
  readonly #length = new BigUint64Array(1);

  constructor(
    lib: LibcryptoSymbols,
    pkey: Deno.PointerObject,
    ctx: Deno.PointerObject,
    bits: number,
  ) {
    this.#lib = lib;
    this.#pkey = pkey;
    this.#ctx = ctx;
    this.bytes = Math.ceil(bits / 8);
    natives.register(this, { lib, pkey, ctx }, this);
  }

  /**
   * The PKCS#1 v1.5 signature of a SHA-256 `digest` (RFC 8017 §8.2.1 over DigestInfo).
   * @throws {SecureChatError} INTERNAL if libcrypto fails or the key was disposed
   */
  signDigest(digest: Uint8Array): Uint8Array {
    if (!this.#ctx) throw new SecureChatError("INTERNAL", "RSA key used after dispose()");
    if (digest.length !== SHA256_BYTES) {
      throw new SecureChatError("INTERNAL", "RSA signing takes a 32-byte SHA-256 digest");
    }
    const signature = new Uint8Array(this.bytes);
    this.#length[0] = BigInt(signature.length);
    const ok = this.#lib.EVP_PKEY_sign(
      this.#ctx,
      signature,
      this.#length,
      digest,
      BigInt(SHA256_BYTES),
    );
    if (ok !== 1 || this.#length[0] !== BigInt(this.bytes)) {
      this.#lib.ERR_clear_error();
      throw new SecureChatError("INTERNAL", "libcrypto could not make the RSA signature");
    }
    return signature;
  }

  /** Frees the native key now; signing with it afterwards is an INTERNAL error. */
  dispose(): void {
    if (!this.#ctx || !this.#pkey) return;
    natives.unregister(this);
    this.#lib.EVP_PKEY_CTX_free(this.#ctx);
    this.#lib.EVP_PKEY_free(this.#pkey);
    this.#ctx = this.#pkey = null;
  }
}

/**
 * Loads an RSA PKCS#8 private key into `libcrypto` (already checked by WebCrypto's import: `bits`
 * is the modulus length it read) and prepares its signing context.
 * @throws {SecureChatError} INVALID_INPUT when libcrypto refuses the key or reads another
 *   algorithm or size than WebCrypto did
 */
export function importRsaKey(
  libcrypto: Libcrypto,
  pkcs8Der: Uint8Array,
  bits: number,
): OpenSslRsaKey {
  const lib = libcrypto.lib;
  const { pkey, ctx } = keyWithContext(lib, pkcs8Der, "private", bits);
  return new OpenSslRsaKey(lib, pkey, ctx, bits);
}

/**
 * libcrypto's copy of an RSA public key, with a verification context set up for PKCS#1 v1.5 /
 * SHA-256, kept for the key's life: EVP_DigestVerify would make a context per call (~3 µs more,
 * docs/PERFORMANCE.md session 20). Freed with its holder.
 */
export class OpenSslRsaPublicKey {
  readonly #lib: LibcryptoSymbols;
  readonly #ctx: Deno.PointerObject;
  /** The signature length: the modulus in bytes. */
  readonly bytes: number;
  /** {@link bytes} as the bigint a `usize` argument takes (a number takes Deno's slow path). */
  readonly #signatureBytes: bigint;

  constructor(
    lib: LibcryptoSymbols,
    pkey: Deno.PointerObject,
    ctx: Deno.PointerObject,
    bytes: number,
  ) {
    this.#lib = lib;
    this.#ctx = ctx;
    this.bytes = bytes;
    this.#signatureBytes = BigInt(bytes);
    natives.register(this, { lib, pkey, ctx });
  }

  /**
   * Whether `signature` is this key's PKCS#1 v1.5 signature of a SHA-256 `digest` (RFC 8017
   * §8.2.2): OpenSSL checks s < n, the padding byte for byte and the DigestInfo by re-encoding it
   * (crypto/rsa/rsa_sign.c), so any other signature, of any length, is false.
   * @throws {SecureChatError} INTERNAL for a digest that is not 32 bytes (the caller's own hash)
   */
  verifyDigest(digest: Uint8Array, signature: Uint8Array): boolean {
    if (byteLength(digest) !== SHA256_BYTES) {
      throw new SecureChatError("INTERNAL", "RSA verification takes a 32-byte SHA-256 digest");
    }
    // libcrypto reads exactly this many bytes of the signature.
    if (byteLength(signature) !== this.bytes) return false;
    const verdict = this.#lib.EVP_PKEY_verify(
      this.#ctx,
      signature,
      this.#signatureBytes,
      digest,
      BigInt(SHA256_BYTES),
    );
    // 0 is a bad signature, below 0 one libcrypto could not process: false either way, and the
    // reason it queued is dropped so the thread's error queue does not grow with every forgery.
    if (verdict === 1) return true;
    this.#lib.ERR_clear_error();
    return false;
  }
}

/**
 * Loads an RSA SubjectPublicKeyInfo into `libcrypto` and prepares its verification context, or
 * undefined for a key whose signatures OpenSSL's public operation would refuse whatever they are
 * ({@link MAX_MODULUS_BITS}): ./rsa_verify.ts, which has read `key` from the same DER strictly,
 * then keeps its BigInt path for it, so the verdict never depends on which path ran.
 * @throws {SecureChatError} INVALID_INPUT when libcrypto refuses the key or reads another
 *   algorithm or size than ./rsa_verify.ts did
 */
export function importRsaPublicKey(
  libcrypto: Libcrypto,
  spkiDer: Uint8Array,
  key: RsaPublicNumbers,
): OpenSslRsaPublicKey | undefined {
  const bits = key.n.toString(2).length;
  const eBits = key.e.toString(2).length;
  if (
    (key.n & 1n) === 0n || key.e >= key.n || bits > MAX_MODULUS_BITS ||
    (bits > SMALL_MODULUS_BITS && eBits > MAX_PUBEXP_BITS)
  ) return undefined;
  const lib = libcrypto.lib;
  const { pkey, ctx } = keyWithContext(lib, spkiDer, "public", bits);
  return new OpenSslRsaPublicKey(lib, pkey, ctx, key.k);
}

/**
 * A key read into libcrypto (readKey) and its context for PKCS#1 v1.5 / SHA-256: signing for a
 * private key, verification for a public one.
 * @throws {SecureChatError} INVALID_INPUT when libcrypto refuses the key, reads another algorithm
 *   or size than `bits`, or cannot set the context up
 */
function keyWithContext(
  lib: LibcryptoSymbols,
  der: Uint8Array,
  kind: "private" | "public",
  bits: number,
): { pkey: Deno.PointerObject; ctx: Deno.PointerObject } {
  const pkey = readKey(lib, der, kind);
  if (lib.EVP_PKEY_get_base_id(pkey) !== EVP_PKEY_RSA || lib.EVP_PKEY_get_bits(pkey) !== bits) {
    lib.EVP_PKEY_free(pkey);
    throw new SecureChatError("INVALID_INPUT", "libcrypto reads this key as another RSA key");
  }
  const ctx = lib.EVP_PKEY_CTX_new(pkey, null);
  const init = kind === "private" ? lib.EVP_PKEY_sign_init : lib.EVP_PKEY_verify_init;
  if (
    !ctx ||
    init(ctx) !== 1 ||
    lib.EVP_PKEY_CTX_set_rsa_padding(ctx, RSA_PKCS1_PADDING) !== 1 ||
    lib.EVP_PKEY_CTX_set_signature_md(ctx, lib.EVP_sha256()) !== 1
  ) {
    lib.ERR_clear_error();
    if (ctx) lib.EVP_PKEY_CTX_free(ctx);
    lib.EVP_PKEY_free(pkey);
    const use = kind === "private" ? "sign" : "verify";
    throw new SecureChatError("INVALID_INPUT", `libcrypto cannot ${use} with this RSA key`);
  }
  return { pkey, ctx };
}

/**
 * A PKCS#8 private key (d2i_PrivateKey_bio) or a SubjectPublicKeyInfo (d2i_PUBKEY_bio) read over
 * a memory BIO holding a copy of the DER (freed, and so cleared).
 */
function readKey(
  lib: LibcryptoSymbols,
  der: Uint8Array,
  kind: "private" | "public",
): Deno.PointerObject {
  const bio = lib.BIO_new(lib.BIO_s_mem());
  if (!bio) throw new SecureChatError("INTERNAL", "libcrypto could not allocate a BIO");
  const copy = new Uint8Array(der); // a buffer of our own for the call, wiped after
  try {
    const pkey = lib.BIO_write(bio, copy, copy.length) !== copy.length
      ? null
      : kind === "private"
      ? lib.d2i_PrivateKey_bio(bio, null)
      : lib.d2i_PUBKEY_bio(bio, null);
    if (!pkey) {
      lib.ERR_clear_error();
      throw new SecureChatError(
        "INVALID_INPUT",
        kind === "private" ? "libcrypto refused the PKCS#8 key" : "libcrypto refused the RSA key",
      );
    }
    return pkey;
  } finally {
    // BIO_free clears a memory BIO's buffer (BUF_MEM_free: OPENSSL_clear_free).
    lib.BIO_free(bio);
    wipe(copy); // best-effort: the JS engine may keep other copies
  }
}
