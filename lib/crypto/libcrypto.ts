/**
 * The system's OpenSSL 3 libcrypto over Deno FFI, opened once per process, for the node backend
 * only (./sync_node.ts; the page keeps WebCrypto and JavaScript). Two reasons to call it rather
 * than Deno's own crypto: RSA signing (./openssl_rsa.ts: Deno's RustCrypto `rsa` is slower and not
 * constant time) and the per-message primitives (./openssl_symmetric.ts: ChaCha20-Poly1305,
 * SHA-256 and HMAC, where Deno's node:crypto runs unvectorised code behind several ops per call
 * and OpenSSL runs SIMD assembly behind one FFI call per step; docs/PERFORMANCE.md session 14).
 *
 * The library is opened by absolute path, from {@link LIBCRYPTO_PATHS} only: those are exactly
 * the paths the start task's `--allow-ffi` names, so the permission grants this one library
 * (docs/DEPLOY.md §1). Every call is synchronous, on the calling thread.
 */

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

/** Every libcrypto function securechat calls (OpenSSL 3's stable ABI). */
const SYMBOLS = {
  OpenSSL_version_num: { parameters: [], result: "u64" },
  ERR_clear_error: { parameters: [], result: "void" },
  // RSA signing and verification (./openssl_rsa.ts)
  BIO_s_mem: { parameters: [], result: "pointer" },
  BIO_new: { parameters: ["pointer"], result: "pointer" },
  BIO_write: { parameters: ["pointer", "buffer", "i32"], result: "i32" },
  BIO_free: { parameters: ["pointer"], result: "i32" },
  d2i_PrivateKey_bio: { parameters: ["pointer", "pointer"], result: "pointer" },
  d2i_PUBKEY_bio: { parameters: ["pointer", "pointer"], result: "pointer" },
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
  EVP_PKEY_verify_init: { parameters: ["pointer"], result: "i32" },
  EVP_PKEY_verify: {
    parameters: ["pointer", "buffer", "usize", "buffer", "usize"],
    result: "i32",
  },
  // ChaCha20-Poly1305, SHA-256, HMAC-SHA-256 (./openssl_symmetric.ts)
  EVP_chacha20_poly1305: { parameters: [], result: "pointer" },
  EVP_CIPHER_CTX_new: { parameters: [], result: "pointer" },
  EVP_EncryptInit_ex: {
    parameters: ["pointer", "pointer", "pointer", "buffer", "buffer"],
    result: "i32",
  },
  EVP_EncryptUpdate: {
    parameters: ["pointer", "buffer", "buffer", "buffer", "i32"],
    result: "i32",
  },
  EVP_EncryptFinal_ex: { parameters: ["pointer", "buffer", "buffer"], result: "i32" },
  EVP_DecryptInit_ex: {
    parameters: ["pointer", "pointer", "pointer", "buffer", "buffer"],
    result: "i32",
  },
  EVP_DecryptUpdate: {
    parameters: ["pointer", "buffer", "buffer", "buffer", "i32"],
    result: "i32",
  },
  EVP_DecryptFinal_ex: { parameters: ["pointer", "buffer", "buffer"], result: "i32" },
  EVP_CIPHER_CTX_ctrl: { parameters: ["pointer", "i32", "i32", "buffer"], result: "i32" },
  EVP_MD_fetch: { parameters: ["pointer", "buffer", "pointer"], result: "pointer" },
  EVP_MD_get_size: { parameters: ["pointer"], result: "i32" },
  EVP_MD_CTX_new: { parameters: [], result: "pointer" },
  EVP_DigestInit_ex2: { parameters: ["pointer", "pointer", "pointer"], result: "i32" },
  EVP_DigestUpdate: { parameters: ["pointer", "buffer", "usize"], result: "i32" },
  EVP_DigestFinal_ex: { parameters: ["pointer", "buffer", "pointer"], result: "i32" },
} as const satisfies Deno.ForeignLibraryInterface;

/**
 * A view's byte count from the engine's internal slot (%TypedArray%.prototype.byteLength's getter),
 * not from `.length`, which a subclass can override: the count passed to C must be the one the
 * pointer Deno passes is good for.
 */
export const byteLength: (view: Uint8Array) => number = Function.prototype.call.bind(
  Object.getOwnPropertyDescriptor(Object.getPrototypeOf(Uint8Array.prototype), "byteLength")!.get!,
);

/** libcrypto's functions, as Deno FFI calls them. */
export type LibcryptoSymbols = Deno.DynamicLibrary<typeof SYMBOLS>["symbols"];

/** OPENSSL_VERSION_NUMBER of 3.0.0 (openssl/opensslv.h). */
const OPENSSL_3 = 0x30000000n;

/** libcrypto, opened: where from, which version, and its functions. */
export class Libcrypto {
  constructor(
    readonly path: string,
    readonly version: string,
    readonly lib: LibcryptoSymbols,
  ) {}
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
 * loads as OpenSSL 3 or later, or says why none did (the caller falls back to Deno's own crypto
 * and reports the reason). Never prompts for the permission.
 */
export function openLibcrypto(
  paths: readonly string[] = LIBCRYPTO_PATHS,
): Libcrypto | { reason: string } {
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
    return new Libcrypto(path, versionName(lib.OpenSSL_version_num()), lib);
  }
  return {
    reason: failures.length > 0
      ? failures.join("; ")
      : `OpenSSL 3's libcrypto not loadable from ${
        allowed.join(", ")
      }: install libssl3 (Debian, Ubuntu), openssl-libs (Fedora, RHEL) or openssl (Arch, Alpine, Homebrew)`,
  };
}

let opened: Libcrypto | { reason: string } | undefined;

/**
 * This process's libcrypto, opened once (./sync_node.ts asks as it loads), or why it is not
 * loadable here: the one place that opens it.
 */
export function libcrypto(): Libcrypto | { reason: string } {
  return opened ??= openLibcrypto();
}
