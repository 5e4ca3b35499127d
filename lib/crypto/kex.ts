/**
 * The handshake's key-agreement groups, all in the shape of a KEM (PROTOCOL
 * §4): the client generates a share and keeps a handle; the server responds to
 * that share with its own share and the shared secret; the client's handle
 * turns the server's share into the same secret. A Diffie-Hellman group fits
 * (the server's response is its own ephemeral public key), and so do a KEM and
 * a hybrid of both, which is why the handshake speaks only this interface.
 * Every check on the peer's bytes happens inside; all fail as BAD_KEY_SHARE.
 */

import { SecureChatError } from "../errors.ts";
import {
  agree,
  checkPublicKey,
  type EcdhCurve,
  generateKeyShare,
  keyShareFromPrivate,
} from "./ecdh.ts";

export type KexGroup = "x25519" | "p256";

/** Preference order: X25519 first (constant-time by construction, no point validation to get wrong). */
export const KEX_GROUPS: readonly KexGroup[] = Object.freeze(["x25519", "p256"]);

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
   * vectors only (DH groups: the 32-byte private scalar, see ecdh.ts).
   * @throws {SecureChatError} BAD_KEY_SHARE for an unusable `secret`
   */
  generate(secret?: Uint8Array): Promise<ClientKeyShare>;
  /**
   * The server's share and the shared secret for the client's share; the
   * client's share is checked before any key is made.
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

const GROUPS: Readonly<Record<KexGroup, KeyAgreement>> = Object.freeze({
  x25519: ecdhGroup("x25519"),
  p256: ecdhGroup("p256"),
});

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
