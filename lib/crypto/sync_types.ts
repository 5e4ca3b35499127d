/** What the two `#sync-crypto` backends (./sync_node.ts, ./sync_browser.ts) share besides functions. */

/** An incremental SHA-256. */
export interface Sha256Hasher {
  update(data: Uint8Array): Sha256Hasher;
  /** An independent hasher in the same state: digest a prefix and go on. */
  copy(): Sha256Hasher;
  /** The 32-byte digest; the hasher is spent after it. */
  digest(): Uint8Array;
}

/** An Ed25519 key held by a backend for synchronous use; opaque to everyone else. */
export interface SyncEd25519Key {
  readonly backendKey: unknown;
}

/**
 * An ephemeral X25519 private key held by a backend (never as bytes in JS), with its public
 * key; opaque to everyone else.
 */
export interface SyncX25519Key {
  readonly publicKey: Uint8Array;
  readonly backendKey: unknown;
}

/** An RSA private key held by a backend for synchronous signing; opaque to everyone else. */
export interface SyncRsaKey {
  readonly backendKey: unknown;
}

/** An RSA public key's numbers, as ./rsa_verify.ts reads them from its SubjectPublicKeyInfo. */
export interface RsaPublicNumbers {
  readonly n: bigint;
  readonly e: bigint;
  /** Bytes of the modulus: every signature and EM is this long. */
  readonly k: number;
}

/**
 * An RSA public key held by a backend for synchronous verification (./rsa_verify.ts's native
 * path); opaque to everyone else.
 */
export interface SyncRsaPublicKey {
  readonly backendKey: unknown;
}

/** Which implementation makes this process's RSA signatures, and why: for the operator's log. */
export interface RsaSigner {
  /** True for OpenSSL's libcrypto (constant time); false for Deno's or the browser's WebCrypto. */
  readonly native: boolean;
  readonly detail: string;
}
