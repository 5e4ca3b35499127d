/**
 * Key bundles (PROTOCOL §12.2): a user's end-to-end public keys, signed by the
 * user's certificate key, as Signal's signed prekeys are signed by the identity key.
 * Identity is the CA-issued certificate: a recipient trusts an X25519 identity key or
 * prekey only because a certificate that validates now (chain, validity, EKU
 * clientAuth, not revoked) signed it for the certificate's own user name.
 * One-time prekeys are not signed (as in X3DH): a substituted one gives the server
 * nothing, since the secret still needs the signed keys' private halves.
 */

import { concat, fromBase64, toBase64, toHex, u32be, u64be, utf8 } from "../bytes.ts";
import { sha256 } from "#sync-crypto";
import { sign, type SigningKey, verify } from "../crypto/signature.ts";
import { checkEncapsulationKey } from "../crypto/mlkem.ts";
import { SecureChatError } from "../errors.ts";
import { canonicalName } from "../message/record.ts";
import { type TrustStore, type ValidatedPeer, validatePeerCertificate } from "../pki/validate.ts";
import { type BundleJson, BundleJsonSchema } from "./envelope.ts";

const LABEL = utf8("securechat/e2e bundle\0");
const IDENTITY_LABEL = utf8("securechat/e2e identity\0");
const DEVICE_LABEL = utf8("securechat/e2e device\0");

/**
 * A device's id (PROTOCOL §12.2): the first 8 bytes of SHA-256(label || IK), as 16 hex
 * digits. Derived, not chosen, so the server cannot file one device's keys under another's
 * id, and a device that makes a new identity key (lost state) is a new device.
 */
export function deviceOf(ik: Uint8Array): string {
  return toHex(sha256(DEVICE_LABEL, ik).subarray(0, 8));
}

/**
 * What a server requires of a `keys_publish` from `user` (canonical name) before it acts on
 * anything of the msg that carries it (PROTOCOL §12.6, §6.3 step 6): a bundle is its publisher's
 * own, filed under the device id its identity key gives.
 * @throws PROTOCOL_ERROR
 */
export function assertOwnPublish(
  publish: { device: string; bundle?: { user: string; ik: string } },
  user: string,
): void {
  const { bundle } = publish;
  if (!bundle) return;
  if (bundle.user !== user) {
    throw new SecureChatError("PROTOCOL_ERROR", "a bundle may be published by its user only");
  }
  if (deviceOf(fromBase64(bundle.ik)) !== publish.device) {
    throw new SecureChatError("PROTOCOL_ERROR", "the device id is not its identity key's");
  }
}

export interface KeyBundle {
  /** The canonical user name (certificate CN, lower case). */
  user: string;
  created: number;
  /** The X25519 identity key IK. */
  ik: Uint8Array;
  spkId: number;
  /** The X25519 signed prekey SPK. */
  spk: Uint8Array;
  pqId: number;
  /** The ML-KEM-768 signed prekey's encapsulation key PQSPK. */
  pq: Uint8Array;
  /** The certificate key's signature over the identity statement alone (it travels in first messages). */
  ikSig: Uint8Array;
  /** The certificate key's signature over the whole bundle statement. */
  sig: Uint8Array;
}

/**
 * The bytes that bind an identity key to a user (PROTOCOL §12.2). Signed on its own so
 * that a first message can prove its sender's identity key without the whole bundle.
 */
export function identityStatement(user: string, ik: Uint8Array): Uint8Array {
  const name = utf8(user);
  return concat(IDENTITY_LABEL, u32be(name.length), name, ik);
}

/**
 * Checks that `peer` (a certificate the caller validated) signed `ik` as its user's identity key.
 * @throws SIG_FAIL
 */
export async function verifyIdentityKey(
  peer: ValidatedPeer,
  ik: Uint8Array,
  ikSig: Uint8Array,
): Promise<void> {
  if (!await verify(peer.key, identityStatement(canonicalName(peer.commonName), ik), ikSig)) {
    throw new SecureChatError("SIG_FAIL", "identity key signature does not verify");
  }
}

/** The bytes the certificate key signs (PROTOCOL §12.2). */
export function bundleStatement(b: Omit<KeyBundle, "sig" | "ikSig">): Uint8Array {
  const user = utf8(b.user);
  return concat(
    LABEL,
    u32be(user.length),
    user,
    u64be(b.created),
    b.ik,
    u32be(b.spkId),
    b.spk,
    u32be(b.pqId),
    b.pq,
  );
}

/** Signs a bundle with the certificate key; the user name is canonicalised. */
export async function signBundle(
  key: SigningKey,
  unsigned: Omit<KeyBundle, "sig" | "ikSig">,
): Promise<KeyBundle> {
  const b = { ...unsigned, user: canonicalName(unsigned.user) };
  return {
    ...b,
    ikSig: await sign(key, identityStatement(b.user, b.ik)),
    sig: await sign(key, bundleStatement(b)),
  };
}

export function encodeBundle(b: KeyBundle): BundleJson {
  return {
    user: b.user,
    created: b.created,
    ik: toBase64(b.ik),
    spk_id: b.spkId,
    spk: toBase64(b.spk),
    pq_id: b.pqId,
    pq: toBase64(b.pq),
    ik_sig: toBase64(b.ikSig),
    sig: toBase64(b.sig),
  };
}

/**
 * Parses a bundle at the boundary.
 * @throws PROTOCOL_ERROR for anything that is not a strict bundle
 */
export function parseBundle(value: unknown): KeyBundle {
  const parsed = BundleJsonSchema.safeParse(value);
  if (!parsed.success) throw new SecureChatError("PROTOCOL_ERROR", "malformed key bundle");
  const j = parsed.data;
  return {
    user: j.user,
    created: j.created,
    ik: fromBase64(j.ik),
    spkId: j.spk_id,
    spk: fromBase64(j.spk),
    pqId: j.pq_id,
    pq: fromBase64(j.pq),
    ikSig: fromBase64(j.ik_sig),
    sig: fromBase64(j.sig),
  };
}

/**
 * Checks a bundle against its owner's certificate, which must validate now as a client
 * certificate of the CA (revoked: refused).
 * @throws BAD_CERT (certificate invalid or revoked, or issued to another user);
 *   SIG_FAIL (the certificate key did not sign this bundle); BAD_KEY_SHARE (the ML-KEM
 *   key fails the FIPS 203 modulus check)
 */
export async function verifyBundle(
  store: TrustStore,
  certDer: Uint8Array,
  bundle: KeyBundle,
  now: Date = new Date(),
): Promise<ValidatedPeer> {
  const peer = await validatePeerCertificate(store, certDer, { role: "client", now });
  if (canonicalName(peer.commonName) !== bundle.user) {
    throw new SecureChatError("BAD_CERT", "bundle is for another user than its certificate");
  }
  if (!await verify(peer.key, bundleStatement(bundle), bundle.sig)) {
    throw new SecureChatError("SIG_FAIL", "key bundle signature does not verify");
  }
  await verifyIdentityKey(peer, bundle.ik, bundle.ikSig);
  checkEncapsulationKey(bundle.pq);
  return peer;
}
