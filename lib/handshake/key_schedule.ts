/**
 * The key schedule (PROTOCOL §4). Every derived value is
 * ExpandLabel(secret, label, context, length) =
 *   HKDF-Expand(secret, "securechat/v2 " || label || 0x00 || context, length)
 * so that no two values can ever share an HKDF info string. Everything here is
 * synchronous (the `#sync-crypto` backend): a handshake derives about twenty values.
 */
import { sha256Hasher } from "#sync-crypto";
import { concat, u32be, utf8 } from "../bytes.ts";
import { hkdfExpandSync, hmacSha256Sync } from "../crypto/hkdf.ts";
import { CHACHA20_POLY1305_KEY_BYTES } from "../crypto/aead.ts";

export const LABEL_PREFIX = "securechat/v2 ";

/** Salt of the phase 1 extract: a constant, as in TLS 1.3's early secret without a PSK. */
export const PHASE1_SALT = utf8("securechat/v2");

export const LABELS = {
  hsKey: (dir: Direction) => `hs ${dir} key`,
  hsIv: (dir: Direction) => `hs ${dir} iv`,
  finished1: (role: Role) => `${role} finished`,
  finished2: (role: Role) => `${role} finished 2`,
  derived: "derived",
  sessionId: "session id",
  app: (dir: Direction) => `app ${dir}`,
  trafficKey: "key",
  trafficIv: "iv",
  trafficUpdate: "traffic upd",
  signature: (role: Role) => `${role} signature`,
} as const;

export type Role = "client" | "server";
export type Direction = "c2s" | "s2c";

const EMPTY = new Uint8Array(0);
/** A record key: ChaCha20-Poly1305's (PROTOCOL §3.2, §4.1, §4.3). */
export const RECORD_KEY_BYTES = CHACHA20_POLY1305_KEY_BYTES;

export function expandLabel(
  secret: Uint8Array,
  label: string,
  context: Uint8Array,
  length: number,
): Uint8Array {
  return hkdfExpandSync(
    secret,
    concat(utf8(LABEL_PREFIX + label), new Uint8Array([0]), context),
    length,
  );
}

/** The input a certificate key signs in the handshake: label || 0x00 || transcript hash (§4.6). */
export function signatureInput(role: Role, transcriptHash: Uint8Array): Uint8Array {
  return concat(utf8(LABEL_PREFIX + LABELS.signature(role)), new Uint8Array([0]), transcriptHash);
}

/**
 * The handshake transcript: every hashed handshake message (u32be length || JSON
 * bytes), sealed ones by their content. `login` and `register` are never added: no
 * value derived from a password is hashed or signed.
 */
export class HandshakeTranscript {
  // One running hash, copied for each snapshot instead of rehashing everything.
  readonly #running = sha256Hasher();

  add(payload: Uint8Array): void {
    this.#running.update(u32be(payload.length));
    this.#running.update(payload);
  }

  hash(): Uint8Array {
    return this.#running.copy().digest();
  }
}

export interface DirectionKeys {
  key: Uint8Array;
  iv: Uint8Array;
}

export interface Phase1Secrets {
  handshakeSecret: Uint8Array;
  c2s: DirectionKeys;
  s2c: DirectionKeys;
  clientFinishedKey: Uint8Array;
  serverFinishedKey: Uint8Array;
}

/** PROTOCOL §4.1: from the phase 1 shared secret and H(hello, server_hello). */
export function derivePhase1(shared: Uint8Array, helloHash: Uint8Array): Phase1Secrets {
  const handshakeSecret = hmacSha256Sync(PHASE1_SALT, shared);
  const keys = (dir: Direction): DirectionKeys => ({
    key: expandLabel(handshakeSecret, LABELS.hsKey(dir), helloHash, RECORD_KEY_BYTES),
    iv: expandLabel(handshakeSecret, LABELS.hsIv(dir), helloHash, 12),
  });
  return {
    handshakeSecret,
    c2s: keys("c2s"),
    s2c: keys("s2c"),
    clientFinishedKey: expandLabel(handshakeSecret, LABELS.finished1("client"), helloHash, 32),
    serverFinishedKey: expandLabel(handshakeSecret, LABELS.finished1("server"), helloHash, 32),
  };
}

export function finishedMac(finishedKey: Uint8Array, transcriptHash: Uint8Array): Uint8Array {
  return hmacSha256Sync(finishedKey, transcriptHash);
}

/** PROTOCOL §4.2, first half: the phase 2 master secret and its Finished keys. */
export interface MasterSecrets {
  master: Uint8Array;
  clientFinishedKey: Uint8Array;
  serverFinishedKey: Uint8Array;
}

/**
 * Phase 2 mixes the fresh shared secret into the handshake secret, so the
 * application keys stay safe unless both exchanges are broken.
 */
export function deriveMaster(handshakeSecret: Uint8Array, shared: Uint8Array): MasterSecrets {
  const salt = expandLabel(handshakeSecret, LABELS.derived, EMPTY, 32);
  const master = hmacSha256Sync(salt, shared);
  return {
    master,
    clientFinishedKey: expandLabel(master, LABELS.finished2("client"), EMPTY, 32),
    serverFinishedKey: expandLabel(master, LABELS.finished2("server"), EMPTY, 32),
  };
}

export interface SessionSecrets {
  sessionId: Uint8Array;
  /** The first application traffic secret of each direction (PROTOCOL §4.2). */
  app: Record<Direction, Uint8Array>;
}

/** PROTOCOL §4.2, second half: from the master secret and Hfinal. */
export function deriveSession(master: Uint8Array, finalHash: Uint8Array): SessionSecrets {
  return {
    sessionId: expandLabel(master, LABELS.sessionId, finalHash, 16),
    app: {
      c2s: expandLabel(master, LABELS.app("c2s"), finalHash, 32),
      s2c: expandLabel(master, LABELS.app("s2c"), finalHash, 32),
    },
  };
}

/** Key and IV of a traffic secret (PROTOCOL §4.3). */
export function trafficKeys(secret: Uint8Array): DirectionKeys {
  return {
    key: expandLabel(secret, LABELS.trafficKey, EMPTY, RECORD_KEY_BYTES),
    iv: expandLabel(secret, LABELS.trafficIv, EMPTY, 12),
  };
}

/** The next traffic secret after a key update (PROTOCOL §4.4). */
export function nextTrafficSecret(secret: Uint8Array): Uint8Array {
  return expandLabel(secret, LABELS.trafficUpdate, EMPTY, 32);
}
