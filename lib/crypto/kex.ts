/**
 * The handshake's key-agreement groups, all in the shape of a KEM (PROTOCOL
 * §4): the client generates a share and keeps a handle; the server responds to
 * that share with its own share and the shared secret; the client's handle
 * turns the server's share into the same secret. A Diffie-Hellman group fits
 * (the server's response is its own ephemeral public key), and so do a KEM and
 * a hybrid of both, which is why the handshake speaks only this interface.
 * Every check on the peer's bytes happens inside; all fail as BAD_KEY_SHARE.
 */

import { concat, wipe } from "../bytes.ts";
import { SecureChatError } from "../errors.ts";
import {
  agree,
  checkPublicKey,
  type EcdhCurve,
  generateKeyShare,
  keyShareFromPrivate,
  X25519_PUBLIC_KEY_BYTES,
} from "./ecdh.ts";
import {
  mlKem768,
  MLKEM768_CIPHERTEXT_BYTES,
  MLKEM768_ENCAPSULATION_KEY_BYTES,
  MLKEM768_MESSAGE_BYTES,
  MLKEM768_SEED_BYTES,
  nobleMlKem768,
} from "./mlkem.ts";

export type KexGroup = "x25519mlkem768" | "x25519" | "p256";

/**
 * Preference order: the post-quantum hybrid first, so a session recorded today
 * stays secret against a future quantum computer; then X25519 (constant-time by
 * construction, no point validation to get wrong), then P-256.
 */
export const KEX_GROUPS: readonly KexGroup[] = Object.freeze(["x25519mlkem768", "x25519", "p256"]);

/** The client's half of one key agreement. */
export interface ClientKeyShare {
  readonly group: KexGroup;
  /** What goes on the wire (hello, dh_client). */
  readonly share: Uint8Array;
  /**
   * The shared secret from the server's share. One use only: an ephemeral key
   * serves one agreement.
   * @throws {SecureChatError} BAD_KEY_SHARE for a malformed or low-order share;
   *   INTERNAL on a second call
   */
  complete(serverShare: Uint8Array): Promise<Uint8Array>;
}

/** The server's answer: its share for the wire and the secret, both computed at once. */
export interface ServerKeyShare {
  readonly share: Uint8Array;
  readonly sharedSecret: Uint8Array;
}

export interface KeyAgreement {
  readonly group: KexGroup;
  /**
   * A fresh client share. `secret` fixes the private key material, for test
   * vectors only (DH groups: the 32-byte private scalar, see ecdh.ts; the
   * hybrid: the 64-byte ML-KEM seed d‖z, then the X25519 scalar).
   * @throws {SecureChatError} BAD_KEY_SHARE for an unusable `secret`
   */
  generate(secret?: Uint8Array): Promise<ClientKeyShare>;
  /**
   * The server's share and the shared secret for the client's share; the
   * client's share is checked before any key is made. `secret` is for test
   * vectors only (DH groups: the private scalar; the hybrid: the 32-byte
   * ML-KEM encapsulation randomness m, then the X25519 scalar).
   * @throws {SecureChatError} BAD_KEY_SHARE for a malformed or low-order share
   *   or an unusable `secret`
   */
  respond(clientShare: Uint8Array, secret?: Uint8Array): Promise<ServerKeyShare>;
}

/** A handle that refuses a second use, so one ephemeral key never serves two agreements. */
function oneShot(
  group: KexGroup,
  share: Uint8Array,
  complete: (serverShare: Uint8Array) => Promise<Uint8Array>,
): ClientKeyShare {
  let used = false;
  return {
    group,
    share,
    complete: (serverShare) => {
      if (used) {
        return Promise.reject(new SecureChatError("INTERNAL", "key share already used"));
      }
      used = true;
      return complete(serverShare);
    },
  };
}

/** Diffie-Hellman as a KEM: the "ciphertext" is the responder's ephemeral public key. */
function ecdhGroup(curve: EcdhCurve): KeyAgreement {
  const keyShare = (secret?: Uint8Array) =>
    secret === undefined ? generateKeyShare(curve) : keyShareFromPrivate(curve, secret);
  return Object.freeze({
    group: curve,
    async generate(secret?: Uint8Array) {
      const own = await keyShare(secret);
      return oneShot(curve, own.publicKey, (serverShare) => agree(own, serverShare));
    },
    async respond(clientShare: Uint8Array, secret?: Uint8Array) {
      checkPublicKey(curve, clientShare);
      const own = await keyShare(secret);
      return { share: own.publicKey, sharedSecret: await agree(own, clientShare) };
    },
  });
}

// X25519MLKEM768 as laid out by draft-ietf-tls-ecdhe-mlkem §3 (ML-KEM first everywhere).
const HYBRID_CLIENT_SHARE_BYTES = MLKEM768_ENCAPSULATION_KEY_BYTES + X25519_PUBLIC_KEY_BYTES; // 1216
const HYBRID_SERVER_SHARE_BYTES = MLKEM768_CIPHERTEXT_BYTES + X25519_PUBLIC_KEY_BYTES; // 1120
const X25519_SCALAR_BYTES = 32;

/** Splits fixed vector material into its two parts, or two undefineds for fresh keys. */
function splitSecret(
  secret: Uint8Array | undefined,
  first: number,
): [Uint8Array, Uint8Array] | [undefined, undefined] {
  if (secret === undefined) return [undefined, undefined];
  if (secret.length !== first + X25519_SCALAR_BYTES) {
    throw new SecureChatError("BAD_KEY_SHARE", "hybrid key material has the wrong length");
  }
  return [secret.subarray(0, first), secret.subarray(first)];
}

function x25519Share(scalar: Uint8Array | undefined) {
  return scalar ? keyShareFromPrivate("x25519", scalar) : generateKeyShare("x25519");
}

/** The two 32-byte secrets, ML-KEM's first; the parts are wiped (best-effort in JS). */
function combine(mlkemSecret: Uint8Array, x25519Secret: Uint8Array): Uint8Array {
  const secret = concat(mlkemSecret, x25519Secret);
  wipe(mlkemSecret, x25519Secret);
  return secret;
}

/**
 * `x25519mlkem768`: X25519 and ML-KEM-768 side by side, secret = ss_ML-KEM ‖
 * ss_X25519 (64 bytes), which the key schedule feeds to HKDF-Extract like any
 * other group's secret. It stays secret while either part holds: X25519 if
 * ML-KEM falls to cryptanalysis, ML-KEM if a quantum computer breaks X25519.
 * Concatenation is a sound combiner here because both shares are in the
 * signed, hashed transcript the keys are derived with (PROTOCOL §4.1).
 *
 * client share = ek (1184) ‖ X25519 public key (32)
 * server share = ML-KEM ciphertext (1088) ‖ X25519 public key (32)
 */
const HYBRID: KeyAgreement = Object.freeze({
  group: "x25519mlkem768",
  async generate(secret?: Uint8Array) {
    const [seed, scalar] = splitSecret(secret, MLKEM768_SEED_BYTES);
    // The halves are independent: run them side by side (WebCrypto works off the JS thread).
    const [kem, dh] = await Promise.all([mlKem768.generateKeyPair(seed), x25519Share(scalar)]);
    const share = concat(kem.encapsulationKey, dh.publicKey);
    return oneShot("x25519mlkem768", share, async (serverShare) => {
      if (serverShare.length !== HYBRID_SERVER_SHARE_BYTES) {
        throw new SecureChatError(
          "BAD_KEY_SHARE",
          `x25519mlkem768 server share must be ${HYBRID_SERVER_SHARE_BYTES} bytes`,
        );
      }
      const [mlkemSecret, x25519Secret] = await Promise.all([
        kem.decapsulate(serverShare.subarray(0, MLKEM768_CIPHERTEXT_BYTES)),
        agree(dh, serverShare.subarray(MLKEM768_CIPHERTEXT_BYTES)),
      ]);
      return combine(mlkemSecret, x25519Secret);
    });
  },
  async respond(clientShare: Uint8Array, secret?: Uint8Array) {
    if (clientShare.length !== HYBRID_CLIENT_SHARE_BYTES) {
      throw new SecureChatError(
        "BAD_KEY_SHARE",
        `x25519mlkem768 client share must be ${HYBRID_CLIENT_SHARE_BYTES} bytes`,
      );
    }
    const encapsulationKey = clientShare.subarray(0, MLKEM768_ENCAPSULATION_KEY_BYTES);
    const peerX25519 = clientShare.subarray(MLKEM768_ENCAPSULATION_KEY_BYTES);
    checkPublicKey("x25519", peerX25519);
    const [message, scalar] = splitSecret(secret, MLKEM768_MESSAGE_BYTES);
    // Fixed randomness m needs the noble backend: WebCrypto cannot take it.
    const kem = message ? nobleMlKem768 : mlKem768;
    // encapsulate() makes the FIPS 203 §7.2 check of ek before anything else (checking it here
    // too was a second pass over 1,152 bytes); only then is our X25519 key made. Running the two
    // halves side by side would gain nothing: a fresh X25519 share is synchronous (node:crypto).
    const { ciphertext, sharedSecret } = await kem.encapsulate(encapsulationKey, message);
    const dh = await x25519Share(scalar);
    const x25519Secret = await agree(dh, peerX25519).catch((cause) => {
      wipe(sharedSecret); // best-effort, as all wiping in JS
      throw cause;
    });
    return {
      share: concat(ciphertext, dh.publicKey),
      sharedSecret: combine(sharedSecret, x25519Secret),
    };
  },
});

const GROUPS: Readonly<Record<KexGroup, KeyAgreement>> = Object.freeze({
  x25519mlkem768: HYBRID,
  x25519: ecdhGroup("x25519"),
  p256: ecdhGroup("p256"),
});

/**
 * The group of the post-login exchange (phase 2, PROTOCOL §4.2) when phase 1 negotiated `group`:
 * the hybrid's X25519 half, every other group itself. Phase 2 needs no second ML-KEM: its
 * secret is extracted with the phase 1 handshake secret as salt, and that secret already holds
 * phase 1's ML-KEM secret, so a recording stays closed to a quantum attacker who breaks both
 * X25519 exchanges; a second ML-KEM-768 would cost every handshake another key generation,
 * encapsulation, decapsulation and 3 KB on the wire for a property the first one already gives.
 */
export function phase2Group(group: KexGroup): KexGroup {
  return group === "x25519mlkem768" ? "x25519" : group;
}

/**
 * The implementation of a negotiated group.
 * @throws {SecureChatError} UNSUPPORTED for a group we do not implement
 */
export function keyAgreement(group: KexGroup): KeyAgreement {
  if (!Object.hasOwn(GROUPS, group)) {
    throw new SecureChatError("UNSUPPORTED", "unknown key-agreement group");
  }
  return GROUPS[group];
}
