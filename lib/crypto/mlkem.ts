/**
 * ML-KEM-768 (FIPS 203), one wrapper over two backends: the runtime's
 * WebCrypto when it has ML-KEM (Deno and Chromium 156 do: fast, native), and
 * `@noble/post-quantum` (pinned in deno.json) for runtimes that lack it, such
 * as browsers without it yet. Both backends sit behind the same input checks, so a
 * peer's bytes are judged identically whichever one runs:
 *
 * - an encapsulation key must be 1184 bytes and pass the FIPS 203 §7.2
 *   modulus check (every 12-bit coefficient < q); the check is ours, before
 *   any backend, because Deno's WebCrypto imports an unreduced key and only
 *   fails at encapsulation with a bare "OperationError", and a browser's
 *   behaviour is not ours to rely on;
 * - a ciphertext must be 1088 bytes (FIPS 203 §7.3; decapsulation of a wrong
 *   but well-sized ciphertext yields the implicit-rejection secret, by design);
 * - a seed must be 64 bytes, d‖z (FIPS 203 §7.1 ML-KEM.KeyGen_internal).
 *
 * We never implement the lattice arithmetic ourselves; only the public-key
 * check is ours, and it reads bytes, it does not compute.
 */

import { ml_kem768 } from "@noble/post-quantum/ml-kem.js";
import { SecureChatError } from "../errors.ts";
import { wipe } from "../bytes.ts";

/** FIPS 203 Table 3, ML-KEM-768. */
export const MLKEM768_ENCAPSULATION_KEY_BYTES = 1184;
export const MLKEM768_CIPHERTEXT_BYTES = 1088;
export const MLKEM768_SHARED_SECRET_BYTES = 32;
/** d‖z, the private seed of ML-KEM.KeyGen_internal (FIPS 203 §6.1). */
export const MLKEM768_SEED_BYTES = 64;
/** m, the encapsulation randomness of ML-KEM.Encaps_internal (FIPS 203 §6.2). */
export const MLKEM768_MESSAGE_BYTES = 32;

const Q = 3329;
/** The ByteEncode12(t̂) part of ek: k = 3 polynomials × 256 coefficients × 12 bits; ρ follows. */
const EK_POLYNOMIAL_BYTES = 384 * 3;

export type MlKemBackendName = "webcrypto" | "noble";

/** A key pair whose decapsulation key stays inside the backend (WebCrypto: non-extractable). */
export interface MlKemKeyPair {
  readonly encapsulationKey: Uint8Array;
  /**
   * The 32-byte shared secret for `ciphertext`.
   * @throws {SecureChatError} BAD_KEY_SHARE for a ciphertext that is not 1088 bytes
   */
  decapsulate(ciphertext: Uint8Array): Promise<Uint8Array>;
}

export interface MlKemEncapsulation {
  readonly ciphertext: Uint8Array;
  readonly sharedSecret: Uint8Array;
}

export interface MlKem768 {
  readonly backend: MlKemBackendName;
  /** Whether `encapsulate` takes caller randomness m (WebCrypto offers no way to pass it). */
  readonly takesEncapsulationRandomness: boolean;
  /**
   * A fresh key pair, or the one of a fixed 64-byte seed d‖z (test vectors).
   * @throws {SecureChatError} BAD_KEY_SHARE for a seed that is not 64 bytes
   */
  generateKeyPair(seed?: Uint8Array): Promise<MlKemKeyPair>;
  /**
   * Encapsulates to a peer's key; `message` (32 bytes) fixes the randomness
   * for test vectors and is refused where `takesEncapsulationRandomness` is false.
   * @throws {SecureChatError} BAD_KEY_SHARE for a malformed encapsulation key;
   *   UNSUPPORTED for `message` on a backend that cannot take it
   */
  encapsulate(encapsulationKey: Uint8Array, message?: Uint8Array): Promise<MlKemEncapsulation>;
}

/**
 * FIPS 203 §7.2 "modulus check": ByteEncode12(ByteDecode12(ek)) = ek, i.e.
 * every 12-bit little-endian coefficient of the t̂ part is below q. The key is
 * public, so the early return leaks nothing.
 * @throws {SecureChatError} BAD_KEY_SHARE
 */
export function checkEncapsulationKey(encapsulationKey: Uint8Array): void {
  if (encapsulationKey.length !== MLKEM768_ENCAPSULATION_KEY_BYTES) {
    throw new SecureChatError(
      "BAD_KEY_SHARE",
      `ML-KEM-768 encapsulation key must be ${MLKEM768_ENCAPSULATION_KEY_BYTES} bytes`,
    );
  }
  for (let i = 0; i < EK_POLYNOMIAL_BYTES; i += 3) {
    const [b0, b1, b2] = [encapsulationKey[i], encapsulationKey[i + 1], encapsulationKey[i + 2]];
    if ((b0 | ((b1 & 0x0f) << 8)) >= Q || ((b1 >> 4) | (b2 << 4)) >= Q) {
      throw new SecureChatError(
        "BAD_KEY_SHARE",
        "ML-KEM-768 encapsulation key fails the modulus check (coefficient ≥ q)",
      );
    }
  }
}

/** @throws {SecureChatError} BAD_KEY_SHARE */
export function checkCiphertext(ciphertext: Uint8Array): void {
  if (ciphertext.length !== MLKEM768_CIPHERTEXT_BYTES) {
    throw new SecureChatError(
      "BAD_KEY_SHARE",
      `ML-KEM-768 ciphertext must be ${MLKEM768_CIPHERTEXT_BYTES} bytes`,
    );
  }
}

function checkSeed(seed: Uint8Array): void {
  if (seed.length !== MLKEM768_SEED_BYTES) {
    throw new SecureChatError(
      "BAD_KEY_SHARE",
      `ML-KEM-768 seed must be ${MLKEM768_SEED_BYTES} bytes`,
    );
  }
}

/** A backend's bare operations; `checked()` puts the shared input checks in front. */
interface RawBackend {
  readonly backend: MlKemBackendName;
  readonly takesEncapsulationRandomness: boolean;
  generateKeyPair(seed?: Uint8Array): Promise<MlKemKeyPair>;
  encapsulate(encapsulationKey: Uint8Array, message?: Uint8Array): Promise<MlKemEncapsulation>;
}

/** Backend failures after our checks passed are still the peer's bytes: BAD_KEY_SHARE. */
async function refusing<T>(what: string, run: () => Promise<T>): Promise<T> {
  try {
    return await run();
  } catch (cause) {
    if (cause instanceof SecureChatError) throw cause;
    throw new SecureChatError("BAD_KEY_SHARE", `ML-KEM-768 ${what} failed`, { cause });
  }
}

/** Every failure is a rejected promise, never a synchronous throw. */
function checked(raw: RawBackend): MlKem768 {
  const checkedPair = (pair: MlKemKeyPair): MlKemKeyPair => ({
    encapsulationKey: pair.encapsulationKey,
    decapsulate: async (ciphertext) => {
      checkCiphertext(ciphertext);
      return await refusing("decapsulation", () => pair.decapsulate(ciphertext));
    },
  });
  return {
    backend: raw.backend,
    takesEncapsulationRandomness: raw.takesEncapsulationRandomness,
    generateKeyPair: async (seed) => {
      if (seed !== undefined) checkSeed(seed);
      return checkedPair(await refusing("key generation", () => raw.generateKeyPair(seed)));
    },
    encapsulate: async (encapsulationKey, message) => {
      checkEncapsulationKey(encapsulationKey);
      if (message !== undefined && !raw.takesEncapsulationRandomness) {
        throw new SecureChatError(
          "UNSUPPORTED",
          `the ${raw.backend} ML-KEM backend takes no caller randomness`,
        );
      }
      if (message !== undefined && message.length !== MLKEM768_MESSAGE_BYTES) {
        throw new SecureChatError("INVALID_INPUT", "ML-KEM-768 message must be 32 bytes");
      }
      return await refusing("encapsulation", () => raw.encapsulate(encapsulationKey, message));
    },
  };
}

// ---- noble (pure JS, runs everywhere) ---------------------------------------

const NOBLE: RawBackend = {
  backend: "noble",
  takesEncapsulationRandomness: true,
  generateKeyPair(seed) {
    const { publicKey, secretKey } = ml_kem768.keygen(seed);
    return Promise.resolve({
      encapsulationKey: publicKey,
      decapsulate: (ciphertext) => Promise.resolve(ml_kem768.decapsulate(ciphertext, secretKey)),
    });
  },
  encapsulate(encapsulationKey, message) {
    const { cipherText, sharedSecret } = ml_kem768.encapsulate(encapsulationKey, message);
    return Promise.resolve({ ciphertext: cipherText, sharedSecret });
  },
};

// ---- WebCrypto (native; Deno and Chromium have it, other browsers may not) ---

/**
 * The KEM part of WebCrypto ("Modern Algorithms in the Web Cryptography
 * API"), which Deno implements but its bundled type definitions do not declare.
 */
interface KemSubtle {
  generateKey(
    algorithm: string,
    extractable: boolean,
    usages: string[],
  ): Promise<CryptoKeyPair>;
  importKey(
    format: "raw-seed" | "raw-public",
    keyData: BufferSource,
    algorithm: string,
    extractable: boolean,
    usages: string[],
  ): Promise<CryptoKey>;
  exportKey(format: "raw-public", key: CryptoKey): Promise<ArrayBuffer>;
  getPublicKey(privateKey: CryptoKey, usages: string[]): Promise<CryptoKey>;
  encapsulateBits(
    algorithm: string,
    publicKey: CryptoKey,
  ): Promise<{ ciphertext: ArrayBuffer; sharedKey: ArrayBuffer }>;
  decapsulateBits(
    algorithm: string,
    privateKey: CryptoKey,
    ciphertext: BufferSource,
  ): Promise<ArrayBuffer>;
}

const ALGORITHM = "ML-KEM-768";
const subtle = crypto.subtle as unknown as KemSubtle;

function webCryptoPair(encapsulationKey: Uint8Array, privateKey: CryptoKey): MlKemKeyPair {
  return {
    encapsulationKey,
    decapsulate: async (ciphertext) =>
      new Uint8Array(
        await subtle.decapsulateBits(ALGORITHM, privateKey, ciphertext as BufferSource),
      ),
  };
}

const WEBCRYPTO: RawBackend = {
  backend: "webcrypto",
  takesEncapsulationRandomness: false,
  async generateKeyPair(seed) {
    if (seed === undefined) {
      const pair = await subtle.generateKey(ALGORITHM, false, [
        "encapsulateBits",
        "decapsulateBits",
      ]);
      const ek = new Uint8Array(await subtle.exportKey("raw-public", pair.publicKey));
      return webCryptoPair(ek, pair.privateKey);
    }
    const copy = seed.slice();
    try {
      const privateKey = await subtle.importKey("raw-seed", copy, ALGORITHM, false, [
        "decapsulateBits",
      ]);
      const publicKey = await subtle.getPublicKey(privateKey, ["encapsulateBits"]);
      return webCryptoPair(
        new Uint8Array(await subtle.exportKey("raw-public", publicKey)),
        privateKey,
      );
    } finally {
      wipe(copy); // best-effort: the JS engine may keep other copies
    }
  },
  async encapsulate(encapsulationKey) {
    const publicKey = await subtle.importKey(
      "raw-public",
      encapsulationKey as BufferSource,
      ALGORITHM,
      true,
      ["encapsulateBits"],
    );
    const { ciphertext, sharedKey } = await subtle.encapsulateBits(ALGORITHM, publicKey);
    return { ciphertext: new Uint8Array(ciphertext), sharedSecret: new Uint8Array(sharedKey) };
  },
};

/**
 * Whether this runtime's WebCrypto does ML-KEM-768 as we use it, once: a key generation, and a
 * key from a seed with its public half (a saved end-to-end state keeps its PQ prekey as a
 * seed, PROTOCOL §12.7: a runtime that generates but cannot import seeds takes noble).
 */
async function webCryptoHasMlKem(): Promise<boolean> {
  if (typeof subtle.encapsulateBits !== "function") return false;
  try {
    await subtle.generateKey(ALGORITHM, false, ["encapsulateBits", "decapsulateBits"]);
    const fromSeed = await subtle.importKey(
      "raw-seed",
      new Uint8Array(MLKEM768_SEED_BYTES),
      ALGORITHM,
      false,
      ["decapsulateBits"],
    );
    await subtle.getPublicKey(fromSeed, ["encapsulateBits"]);
    return true;
  } catch {
    return false;
  }
}

/** The pure-JS backend; always available. */
export const nobleMlKem768: MlKem768 = checked(NOBLE);

/** The native backend, or undefined where this runtime's WebCrypto has no ML-KEM-768. */
export const webCryptoMlKem768: MlKem768 | undefined = await webCryptoHasMlKem()
  ? checked(WEBCRYPTO)
  : undefined;

/** The backend the protocol uses: native when present (≈5× faster), noble otherwise. */
export const mlKem768: MlKem768 = webCryptoMlKem768 ?? nobleMlKem768;
