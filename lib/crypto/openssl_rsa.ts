/**
 * RSA PKCS#1 v1.5 / SHA-256 signing through the system's OpenSSL 3 libcrypto (Deno FFI), for the
 * node backend only (./sync_node.ts; the page keeps WebCrypto). Deno 2.9's own RSA private-key
 * operations (WebCrypto and node:crypto alike) run in RustCrypto's `rsa` crate, which is ~5×
 * slower than OpenSSL here and not constant time (RUSTSEC-2023-0071, the Marvin attack: timing
 * leaks the private key to anyone who can have it sign and time the answer — what a server does
 * for every peer that opens a handshake). OpenSSL's RSA blinds, runs in constant time and checks
 * its CRT result (docs/CRYPTO.md, docs/PERFORMANCE.md session 12).
 *
 * The library is ./libcrypto.ts's (opened once, from the paths `--allow-ffi` names). Every call is
 * synchronous, on the calling thread; every return code is checked, and a failure is a
 * SecureChatError, never a signature that was not made.
 */
import { SecureChatError } from "../errors.ts";
import { wipe } from "../bytes.ts";
import type { Libcrypto, LibcryptoSymbols } from "./libcrypto.ts";

/** OpenSSL's constants (openssl/evp.h, openssl/rsa.h): a stable ABI. */
const EVP_PKEY_RSA = 6;
const RSA_PKCS1_PADDING = 1;
const SHA256_BYTES = 32;

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
  const pkey = readKey(lib, pkcs8Der);
  if (lib.EVP_PKEY_get_base_id(pkey) !== EVP_PKEY_RSA || lib.EVP_PKEY_get_bits(pkey) !== bits) {
    lib.EVP_PKEY_free(pkey);
    throw new SecureChatError("INVALID_INPUT", "libcrypto reads this key as another RSA key");
  }
  const ctx = lib.EVP_PKEY_CTX_new(pkey, null);
  if (
    !ctx ||
    lib.EVP_PKEY_sign_init(ctx) !== 1 ||
    lib.EVP_PKEY_CTX_set_rsa_padding(ctx, RSA_PKCS1_PADDING) !== 1 ||
    lib.EVP_PKEY_CTX_set_signature_md(ctx, lib.EVP_sha256()) !== 1
  ) {
    lib.ERR_clear_error();
    if (ctx) lib.EVP_PKEY_CTX_free(ctx);
    lib.EVP_PKEY_free(pkey);
    throw new SecureChatError("INVALID_INPUT", "libcrypto cannot sign with this RSA key");
  }
  return new OpenSslRsaKey(lib, pkey, ctx, bits);
}

/** d2i_PrivateKey_bio over a memory BIO holding a copy of the DER (freed, and so cleared). */
function readKey(lib: LibcryptoSymbols, der: Uint8Array): Deno.PointerObject {
  const bio = lib.BIO_new(lib.BIO_s_mem());
  if (!bio) throw new SecureChatError("INTERNAL", "libcrypto could not allocate a BIO");
  const copy = new Uint8Array(der); // a buffer of our own for the call, wiped after
  try {
    const pkey = lib.BIO_write(bio, copy, copy.length) === copy.length
      ? lib.d2i_PrivateKey_bio(bio, null)
      : null;
    if (!pkey) {
      lib.ERR_clear_error();
      throw new SecureChatError("INVALID_INPUT", "libcrypto refused the PKCS#8 key");
    }
    return pkey;
  } finally {
    // BIO_free clears a memory BIO's buffer (BUF_MEM_free: OPENSSL_clear_free).
    lib.BIO_free(bio);
    wipe(copy); // best-effort: the JS engine may keep other copies
  }
}
