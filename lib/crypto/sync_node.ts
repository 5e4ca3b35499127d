/**
 * The synchronous primitives of the shared protocol code, for the CLI and the server. Where this
 * process can load OpenSSL 3's libcrypto (./libcrypto.ts: `--allow-ffi` for it, as the start task
 * grants), SHA-256 and HMAC-SHA-256 of every input and ChaCha20-Poly1305 of all but short ones go
 * through it (./openssl_symmetric.ts: one FFI call per step into OpenSSL's SIMD code), and so do
 * RSA signing and verification (./openssl_rsa.ts; verification by way of ./rsa_verify.ts). Short
 * AEAD inputs stay in JavaScript (./chacha20_poly1305.ts), cheaper than the calls out
 * ({@link NATIVE_AEAD_MIN_BYTES}). Without libcrypto, short inputs are
 * hashed in JavaScript (./sha256_short.ts) and longer ones go through node:crypto
 * ({@link portable}: the same bytes). AES-GCM, X25519, Ed25519 and
 * scrypt go through node:crypto (one call each, no key import and no thread-pool hop:
 * docs/PERFORMANCE.md). The specifier `#sync-crypto` names this module in deno.json; the browser
 * build maps it to ./sync_browser.ts instead (scripts/web_build.ts), so both run the same protocol
 * code over one interface. This is the only lib/ module that may import node:crypto
 * (tests/unit/layers_test.ts); tests/unit/crypto_aead_test.ts and others hold the two backends to the same
 * outputs, tests/unit/openssl_symmetric_test.ts libcrypto to the fallback.
 */
import { createCipheriv, createDecipheriv, createHash, type Hash, scryptSync } from "node:crypto";
import {
  createPrivateKey,
  createPublicKey,
  diffieHellman,
  generateKeyPairSync,
  type KeyObject,
  sign as nodeSign,
  verify as nodeVerify,
} from "node:crypto";
import { hmacSha256Short, sha256Short, SHORT_HASH_MAX_BYTES } from "./sha256_short.ts";
import {
  CHACHA20_POLY1305_JS_MAX_BYTES,
  chaCha20Poly1305OpenJs,
  chaCha20Poly1305SealJs,
} from "./chacha20_poly1305.ts";
import { ByteSlab, concat, fromHex, timingSafeEqual, wipe } from "../bytes.ts";
import type {
  RsaPublicNumbers,
  RsaSigner,
  Sha256Hasher,
  SyncEd25519Key,
  SyncRsaKey,
  SyncRsaPublicKey,
  SyncX25519Key,
} from "./sync_types.ts";
import { libcrypto } from "./libcrypto.ts";
import {
  importRsaKey,
  importRsaPublicKey,
  type OpenSslRsaKey,
  type OpenSslRsaPublicKey,
} from "./openssl_rsa.ts";
import { LibcryptoError, OpenSslSymmetric } from "./openssl_symmetric.ts";

export type {
  RsaSigner,
  Sha256Hasher,
  SyncEd25519Key,
  SyncRsaKey,
  SyncRsaPublicKey,
  SyncX25519Key,
};

class NodeSha256 implements Sha256Hasher {
  constructor(readonly hash: Hash = createHash("sha256")) {}
  update(data: Uint8Array): Sha256Hasher {
    this.hash.update(data);
    return this;
  }
  copy(): Sha256Hasher {
    return new NodeSha256(this.hash.copy());
  }
  digest(): Uint8Array {
    return new Uint8Array(this.hash.digest());
  }
}

export function sha256Hasher(): Sha256Hasher {
  return new NodeSha256();
}

/** scrypt (RFC 7914): the key of the encrypted end-to-end state (PROTOCOL §12.7). */
export function scrypt(
  password: string,
  salt: Uint8Array,
  params: { N: number; r: number; p: number; maxmem: number },
  length: number,
): Uint8Array {
  return new Uint8Array(scryptSync(password, salt, length, params));
}

/**
 * Without libcrypto, inputs of at most this many bytes are hashed in JavaScript
 * (./sha256_short.ts); longer ones by node:crypto. Every chat message hashes a few short inputs at every party (its content key
 * and commitment, its statement's SHA-256(ct), its batch leaf and path), and in Deno each
 * node:crypto hash costs a hash object, three ops and native allocations — in a running session
 * about 5 µs, where JavaScript compresses a 64-byte block in about 0.35 µs; node:crypto's native
 * code compresses one in 0.07 µs, so past about a kilobyte it wins (docs/PERFORMANCE.md,
 * sessions 6 and 8). SHA-256 has no secret-dependent branch or table lookup, so the JavaScript
 * path keeps HMAC keys as safe.
 */
const JS_HASH_MAX_BYTES = SHORT_HASH_MAX_BYTES;

/**
 * Where libcrypto loads ({@link nativeSymmetric}), ChaCha20-Poly1305 of plaintexts longer than
 * this many bytes goes through it; shorter ones stay in JavaScript. Its seal and open (four or
 * five calls each) take ~2–2.5 µs of CPU, JavaScript ~1.3 µs plus ~4.5 ns a byte, so they cross
 * near this bound (bench/aead_bench.ts, 3 rounds at load 12; docs/PERFORMANCE.md session 14).
 * SHA-256 and HMAC go through libcrypto at every length: on its kept context a hash takes
 * ~0.4 µs up to a few blocks and an HMAC ~0.7, below JavaScript's ~0.5 µs plus ~0.3 per 64-byte
 * block even at one block (bench/aead_bench.ts; docs/PERFORMANCE.md session 18). Past
 * {@link JS_HASH_MAX_BYTES} and {@link CHACHA20_POLY1305_JS_MAX_BYTES}, node:crypto runs only
 * where libcrypto does not load.
 */
const NATIVE_AEAD_MIN_BYTES = 256;

function totalLength(parts: readonly Uint8Array[]): number {
  let total = 0;
  for (const part of parts) total += part.length;
  return total;
}

/**
 * Where {@link sha256}'s digests are made: views of a shared slab, not an array each (ByteSlab
 * says why; every party hashes each record two or three times). A digest is public; a secret is
 * made by {@link hmacSha256}, into an array of its own.
 */
const digests = new ByteSlab(1024);

/** SHA-256 over the concatenation of `parts`. */
export function sha256(...parts: Uint8Array[]): Uint8Array {
  const native = nativeSymmetric();
  return native ? native.sha256(parts, digests.take(32)) : portableSha256(parts);
}

function portableSha256(parts: readonly Uint8Array[]): Uint8Array {
  if (totalLength(parts) <= JS_HASH_MAX_BYTES) return sha256Short(parts, digests.take(32));
  const h = createHash("sha256");
  for (const part of parts) h.update(part);
  return new Uint8Array(h.digest());
}

const HMAC_BLOCK_BYTES = 64;

/**
 * HMAC-SHA-256(key, parts...), any key length including empty: through libcrypto where it loads
 * (RFC 2104 over its SHA-256, ./openssl_symmetric.ts). Otherwise short inputs (a key of at most one block, a message of at most
 * {@link JS_HASH_MAX_BYTES}) are computed in JavaScript, as {@link sha256} says why, and longer
 * ones through RFC 2104 over two node:crypto SHA-256 hashes, about half of `createHmac`'s cost in
 * Deno. Checked against RFC 4231, the Wycheproof HKDF vectors and `createHmac` itself on both
 * sides of the thresholds (tests/unit/crypto_hkdf_test.ts, tests/unit/openssl_symmetric_test.ts).
 */
export function hmacSha256(key: Uint8Array, ...parts: Uint8Array[]): Uint8Array {
  const native = nativeSymmetric();
  return native ? native.hmacSha256(key, parts) : portableHmacSha256(key, parts);
}

function portableHmacSha256(key: Uint8Array, parts: readonly Uint8Array[]): Uint8Array {
  if (key.length <= HMAC_BLOCK_BYTES && totalLength(parts) <= JS_HASH_MAX_BYTES) {
    return hmacSha256Short(key, parts);
  }
  const pad = new Uint8Array(HMAC_BLOCK_BYTES);
  pad.set(key.length > HMAC_BLOCK_BYTES ? createHash("sha256").update(key).digest() : key);
  for (let i = 0; i < HMAC_BLOCK_BYTES; i++) pad[i] ^= 0x36;
  const inner = createHash("sha256").update(pad);
  for (const part of parts) inner.update(part);
  const innerDigest = inner.digest();
  for (let i = 0; i < HMAC_BLOCK_BYTES; i++) pad[i] ^= 0x36 ^ 0x5c;
  const mac = new Uint8Array(createHash("sha256").update(pad).update(innerDigest).digest());
  wipe(pad); // best-effort: it held the key
  return mac;
}

/**
 * AES-GCM with a 16-byte tag: ciphertext || tag. The caller checks key (16/24/32) and nonce
 * (12) lengths.
 */
export function aesGcmSeal(
  key: Uint8Array,
  nonce: Uint8Array,
  plaintext: Uint8Array,
  aad: Uint8Array,
): Uint8Array {
  return sealWith(createCipheriv(gcmName(key), key, nonce, TAG), plaintext, aad);
}

/**
 * Opens ciphertext || 16-byte tag (at least 16 bytes: the caller checks).
 * @throws {Error} when authentication fails; the caller turns it into its own code
 */
export function aesGcmOpen(
  key: Uint8Array,
  nonce: Uint8Array,
  sealed: Uint8Array,
  aad: Uint8Array,
): Uint8Array {
  return openWith(createDecipheriv(gcmName(key), key, nonce, TAG), sealed, aad);
}

/**
 * ChaCha20-Poly1305 (RFC 8439): ciphertext || 16-byte tag, new or written into `into` (exactly
 * the plaintext's length and the tag's: a frame's place in a connection's batch). The caller
 * checks key (32) and nonce (12) lengths (and libcrypto's path again: it reads them unsized).
 * Plaintexts longer than {@link NATIVE_AEAD_MIN_BYTES} through libcrypto where it loads; otherwise
 * short ones in JavaScript ({@link CHACHA20_POLY1305_JS_MAX_BYTES} says why) and longer ones
 * through node:crypto (its ChaCha20-Poly1305 ~1.2 ns/B, where its AES-GCM, which does not use the
 * CPU's AES instructions, takes ~6: docs/PERFORMANCE.md, session 7).
 */
export function chaCha20Poly1305Seal(
  key: Uint8Array,
  nonce: Uint8Array,
  plaintext: Uint8Array,
  aad: Uint8Array,
  into?: Uint8Array,
): Uint8Array {
  const native = nativeSymmetric();
  if (native && plaintext.length > NATIVE_AEAD_MIN_BYTES) {
    return native.seal(key, nonce, plaintext, aad, into);
  }
  return portableChaCha20Poly1305Seal(key, nonce, plaintext, aad, into);
}

function portableChaCha20Poly1305Seal(
  key: Uint8Array,
  nonce: Uint8Array,
  plaintext: Uint8Array,
  aad: Uint8Array,
  into?: Uint8Array,
): Uint8Array {
  if (plaintext.length <= CHACHA20_POLY1305_JS_MAX_BYTES) {
    return chaCha20Poly1305SealJs(key, nonce, plaintext, aad, into);
  }
  return sealWith(createCipheriv("chacha20-poly1305", key, nonce, TAG), plaintext, aad, into);
}

/**
 * Opens ChaCha20-Poly1305 ciphertext || 16-byte tag (at least 16 bytes: the caller checks), as
 * {@link chaCha20Poly1305Seal} picks its implementation: the plaintext new, or written into
 * `into` (the caller checks its length), which may be the ciphertext's own bytes (in place).
 * @throws {Error} when authentication fails; the caller turns it into its own code
 */
export function chaCha20Poly1305Open(
  key: Uint8Array,
  nonce: Uint8Array,
  sealed: Uint8Array,
  aad: Uint8Array,
  into?: Uint8Array,
): Uint8Array {
  const native = nativeSymmetric();
  if (native && sealed.length - 16 > NATIVE_AEAD_MIN_BYTES) {
    return native.open(key, nonce, sealed, aad, into);
  }
  return portableChaCha20Poly1305Open(key, nonce, sealed, aad, into);
}

function portableChaCha20Poly1305Open(
  key: Uint8Array,
  nonce: Uint8Array,
  sealed: Uint8Array,
  aad: Uint8Array,
  into?: Uint8Array,
): Uint8Array {
  if (sealed.length - 16 <= CHACHA20_POLY1305_JS_MAX_BYTES) {
    return chaCha20Poly1305OpenJs(key, nonce, sealed, aad, into);
  }
  if (into && into.length !== sealed.length - 16) {
    throw new RangeError("the output is not the opened length");
  }
  const opened = openWith(createDecipheriv("chacha20-poly1305", key, nonce, TAG), sealed, aad);
  if (!into) return opened;
  // node:crypto's decipher makes its own output: copied where the caller wants it.
  into.set(opened);
  return into;
}

/** Both AEADs here take a 16-byte tag. */
const TAG = { authTagLength: 16 } as const;

/**
 * What sealWith needs of a node:crypto AEAD cipher (GCM's and ChaCha20-Poly1305's; the
 * plaintext length their setAAD may take matters to CCM only).
 */
interface AeadCipher {
  setAAD(aad: Uint8Array, options: { plaintextLength: number }): unknown;
  update(data: Uint8Array): Uint8Array;
  final(): Uint8Array;
  getAuthTag(): Uint8Array;
}

/** What openWith needs of a node:crypto AEAD decipher. */
interface AeadDecipher {
  setAAD(aad: Uint8Array, options: { plaintextLength: number }): unknown;
  setAuthTag(tag: Uint8Array): unknown;
  update(data: Uint8Array): Uint8Array;
  final(): Uint8Array;
}

/**
 * Ciphertext || tag, new or written into `into` (exactly that long).
 * @throws {RangeError} for an `into` of another length
 */
function sealWith(
  cipher: AeadCipher,
  plaintext: Uint8Array,
  aad: Uint8Array,
  into?: Uint8Array,
): Uint8Array {
  cipher.setAAD(aad, { plaintextLength: plaintext.length });
  const head = cipher.update(plaintext);
  const tail = cipher.final();
  const tag = cipher.getAuthTag();
  const out = into ?? new Uint8Array(head.length + tail.length + tag.length);
  if (out.length !== head.length + tail.length + tag.length) {
    throw new RangeError("the output is not the sealed length");
  }
  out.set(head);
  out.set(tail, head.length);
  out.set(tag, head.length + tail.length);
  return out;
}

function openWith(decipher: AeadDecipher, sealed: Uint8Array, aad: Uint8Array): Uint8Array {
  decipher.setAAD(aad, { plaintextLength: sealed.length - 16 });
  decipher.setAuthTag(sealed.subarray(sealed.length - 16));
  const head = decipher.update(sealed.subarray(0, sealed.length - 16));
  const tail = decipher.final();
  if (tail.length === 0) return new Uint8Array(head.buffer, head.byteOffset, head.length);
  return concat(head, tail);
}

function gcmName(key: Uint8Array): "aes-128-gcm" | "aes-192-gcm" | "aes-256-gcm" {
  return key.length === 16 ? "aes-128-gcm" : key.length === 24 ? "aes-192-gcm" : "aes-256-gcm";
}

/** PrivateKeyInfo { v0, id-X25519, OCTET STRING { OCTET STRING k } } (RFC 8410 §7). */
const X25519_PKCS8_PREFIX = fromHex("302e020100300506032b656e04220420");
/** SubjectPublicKeyInfo { id-X25519, BIT STRING u } (RFC 8410 §4). */
const X25519_SPKI_PREFIX = fromHex("302a300506032b656e032100");

function x25519PrivateKeyObject(privateKey: Uint8Array) {
  const der = concat(X25519_PKCS8_PREFIX, privateKey);
  try {
    return createPrivateKey({ key: Buffer.from(der), format: "der", type: "pkcs8" });
  } finally {
    wipe(der); // best-effort: the JS engine may keep other copies
  }
}

/** X25519(k, 9) of a 32-byte scalar (the caller checks the length). */
export function x25519PublicKey(privateKey: Uint8Array): Uint8Array {
  const spki = createPublicKey(x25519PrivateKeyObject(privateKey)).export({
    format: "der",
    type: "spki",
  });
  return new Uint8Array(spki.subarray(X25519_SPKI_PREFIX.length));
}

/**
 * X25519(k, u) of 32-byte inputs (the caller checks lengths and the all-zero output).
 * @throws {Error} when the backend refuses the key
 */
export function x25519SharedSecret(privateKey: Uint8Array, peerPublicKey: Uint8Array): Uint8Array {
  const publicKey = createPublicKey({
    key: Buffer.from(concat(X25519_SPKI_PREFIX, peerPublicKey)),
    format: "der",
    type: "spki",
  });
  return new Uint8Array(
    diffieHellman({ privateKey: x25519PrivateKeyObject(privateKey), publicKey }),
  );
}

/**
 * A fresh X25519 key pair whose private key stays a KeyObject (the handshake's ephemeral
 * shares, lib/crypto/ecdh.ts): one synchronous call, a quarter of WebCrypto's CPU with its
 * generate, export, import and derive ops (docs/PERFORMANCE.md, session 5).
 */
export function x25519EphemeralKey(): SyncX25519Key | undefined {
  const { publicKey, privateKey } = generateKeyPairSync("x25519");
  const spki = publicKey.export({ format: "der", type: "spki" });
  return {
    publicKey: new Uint8Array(spki.subarray(X25519_SPKI_PREFIX.length)),
    backendKey: privateKey,
  };
}

/**
 * X25519 of an ephemeral key (x25519EphemeralKey) and a 32-byte peer key (the caller checks
 * its length and the all-zero output).
 * @throws {Error} when the backend refuses the key
 */
export function x25519EphemeralAgree(key: SyncX25519Key, peerPublicKey: Uint8Array): Uint8Array {
  const publicKey = createPublicKey({
    key: Buffer.from(concat(X25519_SPKI_PREFIX, peerPublicKey)),
    format: "der",
    type: "spki",
  });
  return new Uint8Array(diffieHellman({ privateKey: key.backendKey as KeyObject, publicKey }));
}

/**
 * node:crypto's KeyObject for an Ed25519 PKCS#8 or SPKI key (checked by the caller), or
 * undefined where node:crypto cannot take it.
 */
export function ed25519SyncKey(
  format: "pkcs8" | "spki",
  der: Uint8Array,
): SyncEd25519Key | undefined {
  const copy = Buffer.from(der);
  try {
    const backendKey = format === "pkcs8"
      ? createPrivateKey({ key: copy, format: "der", type: "pkcs8" })
      : createPublicKey({ key: copy, format: "der", type: "spki" });
    return { backendKey };
  } catch {
    return undefined;
  } finally {
    copy.fill(0); // the caller wipes its PKCS#8 bytes; this copy is ours to wipe
  }
}

export function ed25519Sign(key: SyncEd25519Key, data: Uint8Array): Uint8Array {
  // A view of node:crypto's fresh Buffer, not a copy: one native allocation fewer per signature.
  const signature = nodeSign(null, data, key.backendKey as KeyObject);
  return new Uint8Array(signature.buffer, signature.byteOffset, signature.length);
}

export function ed25519Verify(
  key: SyncEd25519Key,
  data: Uint8Array,
  signature: Uint8Array,
): boolean {
  return nodeVerify(null, data, key.backendKey as KeyObject, signature);
}

/**
 * The per-message primitives through libcrypto (./openssl_symmetric.ts) where this process can
 * load it, or null, and then {@link portable}'s node:crypto and JavaScript paths run: an Ed25519
 * deployment without OpenSSL (or without `--allow-ffi`) keeps working, with the same bytes. Set
 * up as this module loads (at its end, {@link symmetric}), so the library is open before any
 * caller's first message rather than in the middle of it (Deno's test sanitizer counts a library
 * opened during a test as a leak).
 */
function nativeSymmetric(): OpenSslSymmetric | null {
  return symmetric;
}

/**
 * Whether this process's ChaCha20-Poly1305, SHA-256 and HMAC go through libcrypto (it loaded and
 * passed its self-check), and which: for the operator's log and the tests.
 */
export function symmetricBackend(): { native: boolean; detail: string } {
  const opened = libcrypto();
  if (symmetric) {
    return {
      native: true,
      detail: "reason" in opened ? "libcrypto" : `${opened.version} libcrypto`,
    };
  }
  return {
    native: false,
    detail: "reason" in opened
      ? `JavaScript and node:crypto; ${opened.reason}`
      : "JavaScript and node:crypto; libcrypto failed its self-check",
  };
}

function loadSymmetric(): OpenSslSymmetric | null {
  const opened = libcrypto();
  try {
    return "reason" in opened ? null : agreesWithPortable(new OpenSslSymmetric(opened));
  } catch (error) {
    if (!(error instanceof LibcryptoError)) throw error;
    return null;
  }
}

/**
 * `native` if it gives {@link portable}'s bytes on one fixed input per primitive (past every
 * bound, with AAD, and into a caller's buffer), else null: a libcrypto that loads but cannot run these (a
 * provider configuration without ChaCha20-Poly1305, say) leaves the process on the portable
 * paths instead of failing every message. Once per process, ~50 µs.
 */
function agreesWithPortable(native: OpenSslSymmetric): OpenSslSymmetric | null {
  const input = new Uint8Array(1500).map((_, i) => i * 7);
  const [key, nonce, aad] = [input.subarray(0, 32), input.subarray(32, 44), input.subarray(44, 57)];
  const sealed = native.seal(key, nonce, input, aad, new Uint8Array(input.length + 16));
  const tampered = sealed.slice();
  tampered[7] ^= 1;
  try {
    native.open(key, nonce, tampered, aad);
    return null; // a forgery opened: never use this library
  } catch (error) {
    if (!(error instanceof LibcryptoError)) throw error;
  }
  return timingSafeEqual(sealed, portableChaCha20Poly1305Seal(key, nonce, input, aad)) &&
      timingSafeEqual(native.open(key, nonce, sealed, aad), input) &&
      timingSafeEqual(native.sha256([aad, input]), portableSha256([aad, input])) &&
      timingSafeEqual(
        native.hmacSha256(input.subarray(0, 100), [aad, input]),
        portableHmacSha256(input.subarray(0, 100), [aad, input]),
      )
    ? native
    : null;
}

/**
 * What {@link sha256}, {@link hmacSha256} and the ChaCha20-Poly1305 seal and open compute
 * without libcrypto (node:crypto and JavaScript): exported so the tests hold both
 * implementations to the same vectors whichever this process loads.
 */
export const portable = {
  sha256: (...parts: Uint8Array[]): Uint8Array => portableSha256(parts),
  hmacSha256: (key: Uint8Array, ...parts: Uint8Array[]): Uint8Array =>
    portableHmacSha256(key, parts),
  chaCha20Poly1305Seal: portableChaCha20Poly1305Seal,
  chaCha20Poly1305Open: portableChaCha20Poly1305Open,
};

/**
 * RSA signing goes through OpenSSL's libcrypto where this process can load it
 * (./openssl_rsa.ts says why); elsewhere it stays on WebCrypto, Deno's RustCrypto `rsa`, and
 * this says so and why.
 */
export function rsaSigner(): RsaSigner {
  const openssl = libcrypto();
  return "reason" in openssl
    ? {
      native: false,
      detail:
        `Deno's built-in (~5x slower, not constant time: RUSTSEC-2023-0071); ${openssl.reason}`,
    }
    : { native: true, detail: `${openssl.version} libcrypto (${openssl.path})` };
}

/**
 * libcrypto's copy of an RSA PKCS#8 key that WebCrypto imported with a `bits`-bit modulus, or
 * undefined where libcrypto is not loadable ({@link rsaSigner} says why).
 * @throws {SecureChatError} INVALID_INPUT when libcrypto refuses the key
 */
export function rsaSyncKey(pkcs8Der: Uint8Array, bits: number): SyncRsaKey | undefined {
  const openssl = libcrypto();
  return "reason" in openssl ? undefined : { backendKey: importRsaKey(openssl, pkcs8Der, bits) };
}

/**
 * RSASSA-PKCS1-v1_5 with SHA-256 (RFC 8017 §8.2.1), synchronously.
 * @throws {SecureChatError} INTERNAL when libcrypto fails (no signature is returned then)
 */
export function rsaSign(key: SyncRsaKey, data: Uint8Array): Uint8Array {
  return (key.backendKey as OpenSslRsaKey).signDigest(sha256(data));
}

/**
 * libcrypto's copy of an RSA public key that ./rsa_verify.ts has read as `key` from `spkiDer`, for
 * its native path, or undefined where libcrypto is not loadable or OpenSSL's public operation
 * would refuse the key (./openssl_rsa.ts's importRsaPublicKey): the BigInt path verifies then.
 * @throws {SecureChatError} INVALID_INPUT when libcrypto refuses the key
 */
export function rsaPublicSyncKey(
  spkiDer: Uint8Array,
  key: RsaPublicNumbers,
): SyncRsaPublicKey | undefined {
  const openssl = libcrypto();
  if ("reason" in openssl) return undefined;
  const backendKey = importRsaPublicKey(openssl, spkiDer, key);
  return backendKey && { backendKey };
}

/**
 * RSASSA-PKCS1-v1_5 with SHA-256 (RFC 8017 §8.2.2): whether `signature` is `key`'s signature of
 * `data`; any other signature is false.
 */
export function rsaVerify(key: SyncRsaPublicKey, data: Uint8Array, signature: Uint8Array): boolean {
  return (key.backendKey as OpenSslRsaPublicKey).verifyDigest(sha256(data), signature);
}

/** Last: {@link loadSymmetric}'s self-test runs the portable paths, which need the constants above. */
const symmetric: OpenSslSymmetric | null = loadSymmetric();
