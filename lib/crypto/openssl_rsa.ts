/**
 * RSA PKCS#1 v1.5 / SHA-256 signing through the system's OpenSSL 3 libcrypto (Deno FFI), for the
 * node backend only (./sync_node.ts; the page keeps WebCrypto). Deno 2.9's own RSA private-key
 * operations (WebCrypto and node:crypto alike) run in RustCrypto's `rsa` crate, which is ~5×
 * slower than OpenSSL here and not constant time (RUSTSEC-2023-0071, the Marvin attack: timing
 * leaks the private key to anyone who can have it sign and time the answer — what a server does
 * for every peer that opens a handshake). OpenSSL's RSA blinds, runs in constant time and checks
 * its CRT result (docs/CRYPTO.md, docs/PERFORMANCE.md session 12).
 *
 * The library is opened by absolute path, from {@link LIBCRYPTO_PATHS} only: those are exactly
 * the paths the start task's `--allow-ffi` names, so the permission grants this one library
 * (docs/DEPLOY.md §1). Every call is synchronous, on the calling thread; every return code is
 * checked, and a failure is a SecureChatError, never a signature that was not made.
 */
import { SecureChatError } from "../errors.ts";
import { wipe } from "../bytes.ts";

/**
 * Where OpenSSL 3's libcrypto lives: Debian and Ubuntu (amd64, arm64), Fedora/RHEL/openSUSE,
 * Arch and Alpine, Homebrew on macOS (Apple silicon, Intel). deno.json's start and compile tasks
 * grant `--allow-ffi` to exactly this list (tests/unit/openssl_rsa_test.ts holds them equal).
 */
export const LIBCRYPTO_PATHS: readonly string[] = [
  "/usr/lib/x86_64-linux-gnu/libcrypto.so.3",
  "/usr/lib/aarch64-linux-gnu/libcrypto.so.3",
  "/usr/lib64/libcrypto.so.3",
  "/usr/lib/libcrypto.so.3",
  "/opt/homebrew/opt/openssl@3/lib/libcrypto.3.dylib",
  "/usr/local/opt/openssl@3/lib/libcrypto.3.dylib",
];

const SYMBOLS = {
  OpenSSL_version_num: { parameters: [], result: "u64" },
  ERR_clear_error: { parameters: [], result: "void" },
  BIO_s_mem: { parameters: [], result: "pointer" },
  BIO_new: { parameters: ["pointer"], result: "pointer" },
  BIO_write: { parameters: ["pointer", "buffer", "i32"], result: "i32" },
  BIO_free: { parameters: ["pointer"], result: "i32" },
  d2i_PrivateKey_bio: { parameters: ["pointer", "pointer"], result: "pointer" },
  EVP_PKEY_get_base_id: { parameters: ["pointer"], result: "i32" },
  EVP_PKEY_get_bits: { parameters: ["pointer"], result: "i32" },
  EVP_PKEY_free: { parameters: ["pointer"], result: "void" },
  EVP_PKEY_CTX_new: { parameters: ["pointer", "pointer"], result: "pointer" },
  EVP_PKEY_CTX_free: { parameters: ["pointer"], result: "void" },
  EVP_PKEY_sign_init: { parameters: ["pointer"], result: "i32" },
  EVP_PKEY_CTX_set_rsa_padding: { parameters: ["pointer", "i32"], result: "i32" },
  EVP_PKEY_CTX_set_signature_md: { parameters: ["pointer", "pointer"], result: "i32" },
  EVP_sha256: { parameters: [], result: "pointer" },
  EVP_PKEY_sign: {
    parameters: ["pointer", "buffer", "buffer", "buffer", "usize"],
    result: "i32",
  },
} as const satisfies Deno.ForeignLibraryInterface;

type Libcrypto = Deno.DynamicLibrary<typeof SYMBOLS>["symbols"];

/** OpenSSL's constants (openssl/evp.h, openssl/rsa.h, openssl/crypto.h): a stable ABI. */
const EVP_PKEY_RSA = 6;
const RSA_PKCS1_PADDING = 1;
const OPENSSL_3 = 0x30000000n;
const SHA256_BYTES = 32;

/** Frees a key's native objects once its JS holder is collected (unless disposed before). */
const natives = new FinalizationRegistry<
  { lib: Libcrypto; pkey: Deno.PointerObject; ctx: Deno.PointerObject }
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
  #lib: Libcrypto;
  #pkey: Deno.PointerObject | null;
  #ctx: Deno.PointerObject | null;
  /** The signature length: the modulus in bytes. */
  readonly bytes: number;
  readonly #length = new BigUint64Array(1);

  constructor(lib: Libcrypto, pkey: Deno.PointerObject, ctx: Deno.PointerObject, bits: number) {
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

/** libcrypto, opened: where from, which version, and its functions. */
export class OpenSslRsa {
  constructor(
    readonly path: string,
    readonly version: string,
    readonly lib: Libcrypto,
  ) {}

  /**
   * Loads an RSA PKCS#8 private key (already checked by WebCrypto's import: `bits` is the modulus
   * length it read) and prepares its signing context.
   * @throws {SecureChatError} INVALID_INPUT when libcrypto refuses the key or reads another
   *   algorithm or size than WebCrypto did
   */
  importKey(pkcs8Der: Uint8Array, bits: number): OpenSslRsaKey {
    const lib = this.lib;
    const pkey = this.#readKey(pkcs8Der);
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
  #readKey(der: Uint8Array): Deno.PointerObject {
    const lib = this.lib;
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
}

/**
 * "OpenSSL 3.0.22" from OPENSSL_VERSION_NUMBER's 0xMNN00PP0 (OpenSSL 3): the number, because
 * reading the version string would take a pointer view, which a path-scoped --allow-ffi does not
 * grant (and should not: it reads any memory).
 */
function versionName(number: bigint): string {
  const field = (shift: bigint, mask: bigint) => (number >> shift) & mask;
  return `OpenSSL ${field(28n, 0xfn)}.${field(20n, 0xffn)}.${field(4n, 0xffn)}`;
}

/**
 * Opens libcrypto from the first of `paths` that this process may open (`--allow-ffi`) and that
 * loads as OpenSSL 3 or later, or says why none did (the caller falls back to WebCrypto and
 * reports the reason). Never prompts for the permission.
 */
export function openLibcrypto(
  paths: readonly string[] = LIBCRYPTO_PATHS,
): OpenSslRsa | { reason: string } {
  const allowed = paths.filter((path) =>
    Deno.permissions.querySync({ name: "ffi", path }).state === "granted"
  );
  if (allowed.length === 0) {
    return { reason: "no --allow-ffi for libcrypto (run with the start task's permissions)" };
  }
  const failures: string[] = [];
  for (const path of allowed) {
    let library: Deno.DynamicLibrary<typeof SYMBOLS>;
    try {
      library = Deno.dlopen(path, SYMBOLS);
    } catch {
      continue; // absent here, or lacking a symbol: the next path, or the reason below
    }
    const lib = library.symbols;
    if (lib.OpenSSL_version_num() < OPENSSL_3) {
      failures.push(`${path} is older than OpenSSL 3`);
      library.close();
      continue;
    }
    return new OpenSslRsa(path, versionName(lib.OpenSSL_version_num()), lib);
  }
  return {
    reason: failures.length > 0
      ? failures.join("; ")
      : `OpenSSL 3's libcrypto not loadable from ${
        allowed.join(", ")
      }: install libssl3 (Debian, Ubuntu), openssl-libs (Fedora, RHEL) or openssl (Arch, Alpine, Homebrew)`,
  };
}
