/**
 * The key schedule (PROTOCOL §4). Every derived value is
 * ExpandLabel(secret, label, context, length) =
 *   HKDF-Expand(secret, "securechat/v1 " || label || 0x00 || context, length)
 * so that no two values can ever share an HKDF info string.
 */
import { createHash } from "node:crypto";
import { concat, u32be, utf8 } from "../bytes.ts";
import { hkdfExpand, hkdfExtract, hmacSha256 } from "../crypto/hkdf.ts";

export const LABEL_PREFIX = "securechat/v1 ";

/** Salt of the phase 1 extract: a constant, as in TLS 1.3's early secret without a PSK. */
export const PHASE1_SALT = utf8("securechat/v1");

export const LABELS = {
  hsKey: (dir: Direction) => `hs ${dir} key`,
  hsIv: (dir: Direction) => `hs ${dir} iv`,
  finished: (role: Role) => `${role} finished`,
  derived: "derived",
  sessionId: "session id",
  chat: (dir: Direction) => `chat ${dir}`,
  control: (dir: Direction) => `ctl ${dir}`,
  trafficKey: "key",
  trafficIv: "iv",
  trafficUpdate: "traffic upd",
  messageKey: "msg key",
  signature: (role: Role, phase: 1 | 2) => `${role} signature phase${phase}`,
} as const;

export type Role = "client" | "server";
export type Direction = "c2s" | "s2c";

export function expandLabel(
  secret: Uint8Array,
  label: string,
  context: Uint8Array,
  length: number,
): Promise<Uint8Array> {
  return hkdfExpand(
    secret,
    concat(utf8(LABEL_PREFIX + label), new Uint8Array([0]), context),
    length,
  );
}

/** The input a certificate key signs in the handshake: label || 0x00 || transcript hash. */
export function signatureInput(role: Role, phase: 1 | 2, transcriptHash: Uint8Array): Uint8Array {
  return concat(
    utf8(LABEL_PREFIX + LABELS.signature(role, phase)),
    new Uint8Array([0]),
    transcriptHash,
  );
}

/**
 * The handshake transcript: every handshake message as framed on the wire
 * (u32be length || JSON bytes), sealed ones by their inner plaintext. `login` and
 * `register` are never added: no value derived from a password is hashed or signed.
 */
export class HandshakeTranscript {
  // One running hash, copied for each snapshot: the handshake takes about sixteen
  // snapshots, and rehashing everything each time was a measurable share of it.
  readonly #running = createHash("sha256");

  add(payload: Uint8Array): void {
    this.#running.update(u32be(payload.length));
    this.#running.update(payload);
  }

  hash(): Promise<Uint8Array> {
    return Promise.resolve(new Uint8Array(this.#running.copy().digest()));
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
export async function derivePhase1(
  shared: Uint8Array,
  helloHash: Uint8Array,
): Promise<Phase1Secrets> {
  const handshakeSecret = await hkdfExtract(PHASE1_SALT, shared);
  const keys = async (dir: Direction): Promise<DirectionKeys> => ({
    key: await expandLabel(handshakeSecret, LABELS.hsKey(dir), helloHash, 16),
    iv: await expandLabel(handshakeSecret, LABELS.hsIv(dir), helloHash, 12),
  });
  return {
    handshakeSecret,
    c2s: await keys("c2s"),
    s2c: await keys("s2c"),
    clientFinishedKey: await expandLabel(handshakeSecret, LABELS.finished("client"), helloHash, 32),
    serverFinishedKey: await expandLabel(handshakeSecret, LABELS.finished("server"), helloHash, 32),
  };
}

export function finishedMac(
  finishedKey: Uint8Array,
  transcriptHash: Uint8Array,
): Promise<Uint8Array> {
  return hmacSha256(finishedKey, transcriptHash);
}

export interface SessionSecrets {
  sessionId: Uint8Array;
  chat: Record<Direction, Uint8Array>;
  control: Record<Direction, DirectionKeys>;
}

/**
 * PROTOCOL §4.2: phase 2 mixes the fresh shared secret into the phase 1 secret, so
 * the chat keys stay safe unless both exchanges are broken.
 */
export async function deriveSession(
  handshakeSecret: Uint8Array,
  shared: Uint8Array,
  finalHash: Uint8Array,
): Promise<SessionSecrets> {
  const salt = await expandLabel(handshakeSecret, LABELS.derived, new Uint8Array(0), 32);
  const master = await hkdfExtract(salt, shared);
  const control = async (dir: Direction): Promise<DirectionKeys> => {
    const secret = await expandLabel(master, LABELS.control(dir), finalHash, 32);
    return trafficKeys(secret);
  };
  return {
    sessionId: await expandLabel(master, LABELS.sessionId, finalHash, 16),
    chat: {
      c2s: await expandLabel(master, LABELS.chat("c2s"), finalHash, 32),
      s2c: await expandLabel(master, LABELS.chat("s2c"), finalHash, 32),
    },
    control: { c2s: await control("c2s"), s2c: await control("s2c") },
  };
}

/** Key and IV of a traffic secret (PROTOCOL §4.3). */
export async function trafficKeys(secret: Uint8Array): Promise<DirectionKeys> {
  return {
    key: await expandLabel(secret, LABELS.trafficKey, new Uint8Array(0), 16),
    iv: await expandLabel(secret, LABELS.trafficIv, new Uint8Array(0), 12),
  };
}

/** The next traffic secret after a key update (PROTOCOL §4.4). */
export function nextTrafficSecret(secret: Uint8Array): Promise<Uint8Array> {
  return expandLabel(secret, LABELS.trafficUpdate, new Uint8Array(0), 32);
}
