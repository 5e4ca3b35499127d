/**
 * First contact (PROTOCOL §12.3): PQXDH in the shape of Signal's published design
 * (X3DH's three or four X25519 agreements plus an ML-KEM-768 encapsulation to the
 * recipient's signed PQ prekey), so the first shared secret stays unknown unless both
 * X25519 and ML-KEM-768 are broken. Differences from Signal: identity keys are
 * X25519 keys signed by the CA-issued certificate (bundle.ts), not XEdDSA keys, and
 * the associated data names both certificates, so the secret is bound to the two
 * certified identities and not only to their X25519 keys.
 */

import { concat, fromBase64, toBase64, utf8, wipe } from "../bytes.ts";
import { sha256 } from "../bytes.ts";
import { hkdfExpandSync, hmacSha256Sync } from "../crypto/hkdf.ts";
import { mlKem768, type MlKemKeyPair } from "../crypto/mlkem.ts";
import { x25519, type X25519KeyPair, x25519KeyPair } from "../crypto/x25519.ts";
import { SecureChatError } from "../errors.ts";
import type { KeyBundle } from "./bundle.ts";
import { E2E_KEY_BYTES } from "./wrap.ts";
import type { PrekeyHeaderJson } from "./envelope.ts";

const INFO = utf8("securechat/e2e pqxdh\0");
/** 32 0xFF bytes in front of the IKM, as X3DH §2.2 prescribes for X25519. */
const F = new Uint8Array(32).fill(0xff);
const ZERO_SALT = new Uint8Array(32);

/** What a first message carries so the recipient can compute the same secret. */
export interface PrekeyHeader {
  /** The initiator's identity key and its certificate signature (bundle.ts identity statement). */
  ik: Uint8Array;
  ikSig: Uint8Array;
  /** The initiator's ephemeral X25519 key EK. */
  ek: Uint8Array;
  spkId: number;
  pqId: number;
  /** The one-time prekey used, if the server had one. */
  opkId?: number;
  /** ML-KEM-768 ciphertext to PQSPK. */
  kemCt: Uint8Array;
}

export function encodePrekeyHeader(h: PrekeyHeader): PrekeyHeaderJson {
  const json: PrekeyHeaderJson = {
    ik: toBase64(h.ik),
    ik_sig: toBase64(h.ikSig),
    ek: toBase64(h.ek),
    spk_id: h.spkId,
    pq_id: h.pqId,
    kem_ct: toBase64(h.kemCt),
  };
  if (h.opkId !== undefined) json.opk_id = h.opkId;
  return json;
}

export function decodePrekeyHeader(j: PrekeyHeaderJson): PrekeyHeader {
  const h: PrekeyHeader = {
    ik: fromBase64(j.ik),
    ikSig: fromBase64(j.ik_sig),
    ek: fromBase64(j.ek),
    spkId: j.spk_id,
    pqId: j.pq_id,
    kemCt: fromBase64(j.kem_ct),
  };
  if (j.opk_id !== undefined) h.opkId = j.opk_id;
  return h;
}

/** The result of first contact: the shared secret SK and the associated data AD. */
export interface FirstContact {
  sk: Uint8Array;
  ad: Uint8Array;
}

/**
 * AD = SHA-256(initiator cert) || SHA-256(responder cert) || IK_initiator || IK_responder
 * (128 bytes): every ratchet message of the conversation authenticates it.
 */
export async function associatedData(
  initiatorCert: Uint8Array,
  responderCert: Uint8Array,
  initiatorIk: Uint8Array,
  responderIk: Uint8Array,
): Promise<Uint8Array> {
  return concat(
    await sha256(initiatorCert),
    await sha256(responderCert),
    initiatorIk,
    responderIk,
  );
}

function deriveSk(dhs: Uint8Array[], ss: Uint8Array, ad: Uint8Array): Uint8Array {
  const ikm = concat(F, ...dhs, ss);
  const prk = hmacSha256Sync(ZERO_SALT, ikm);
  try {
    return hkdfExpandSync(prk, concat(INFO, ad), E2E_KEY_BYTES);
  } finally {
    wipe(ikm, prk, ...dhs, ss); // best-effort in JS
  }
}

/** The initiator's own keys and the fixed randomness test vectors may pass. */
export interface InitiatorInput {
  ik: X25519KeyPair;
  ikSig: Uint8Array;
  cert: Uint8Array;
  /** Fixed ephemeral scalar (vectors only). */
  ekPrivate?: Uint8Array;
  /** Fixed ML-KEM encapsulation randomness (vectors only; the noble backend takes it). */
  kemMessage?: Uint8Array;
}

/**
 * Initiates first contact with a peer whose bundle the caller verified (bundle.ts
 * verifyBundle) and, if the server had one, one of its one-time prekeys.
 * @throws BAD_KEY_SHARE for a key that yields an all-zero X25519 secret or an
 *   encapsulation key that fails the modulus check
 */
export async function initiateFirstContact(
  own: InitiatorInput,
  peer: { bundle: KeyBundle; cert: Uint8Array; opk?: { id: number; pub: Uint8Array } },
  kem = mlKem768,
): Promise<FirstContact & { header: PrekeyHeader; ek: X25519KeyPair }> {
  const ek = x25519KeyPair(own.ekPrivate);
  const dhs = [
    x25519(own.ik.privateKey, peer.bundle.spk),
    x25519(ek.privateKey, peer.bundle.ik),
    x25519(ek.privateKey, peer.bundle.spk),
  ];
  if (peer.opk) dhs.push(x25519(ek.privateKey, peer.opk.pub));
  const { ciphertext, sharedSecret } = await kem.encapsulate(peer.bundle.pq, own.kemMessage);
  const ad = await associatedData(own.cert, peer.cert, own.ik.publicKey, peer.bundle.ik);
  const header: PrekeyHeader = {
    ik: own.ik.publicKey,
    ikSig: own.ikSig,
    ek: ek.publicKey,
    spkId: peer.bundle.spkId,
    pqId: peer.bundle.pqId,
    kemCt: ciphertext,
  };
  if (peer.opk) header.opkId = peer.opk.id;
  return { sk: deriveSk(dhs, sharedSecret, ad), ad, header, ek };
}

/** The responder's private prekeys, as its client state keeps them. */
export interface ResponderPrekeys {
  ik: X25519KeyPair;
  cert: Uint8Array;
  spkId: number;
  spk: X25519KeyPair;
  pqId: number;
  pq: MlKemKeyPair;
  /** The one-time prekey the header names, looked up by the caller (then deleted by it). */
  opk?: X25519KeyPair;
}

/**
 * Answers a first message. The caller has checked the header's identity key against the
 * initiator's certificate (bundle.ts verifyIdentityKey) and looked up the prekeys by id.
 * @throws PROTOCOL_ERROR (the header names prekeys other than these, or a missing one-time
 *   prekey); BAD_KEY_SHARE (all-zero X25519 secret; ciphertext of the wrong size)
 */
export async function respondFirstContact(
  own: ResponderPrekeys,
  initiatorCert: Uint8Array,
  header: PrekeyHeader,
): Promise<FirstContact> {
  if (header.spkId !== own.spkId || header.pqId !== own.pqId) {
    throw new SecureChatError("PROTOCOL_ERROR", "first message names unknown prekeys");
  }
  if ((header.opkId === undefined) !== (own.opk === undefined)) {
    throw new SecureChatError("PROTOCOL_ERROR", "first message names an unknown one-time prekey");
  }
  const dhs = [
    x25519(own.spk.privateKey, header.ik),
    x25519(own.ik.privateKey, header.ek),
    x25519(own.spk.privateKey, header.ek),
  ];
  if (own.opk) dhs.push(x25519(own.opk.privateKey, header.ek));
  const ss = await own.pq.decapsulate(header.kemCt);
  const ad = await associatedData(initiatorCert, own.cert, header.ik, own.ik.publicKey);
  return { sk: deriveSk(dhs, ss, ad), ad };
}
