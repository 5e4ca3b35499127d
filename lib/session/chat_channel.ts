/**
 * Chat messages (PROTOCOL §6): each `msg` is AES-128-GCM under the direction's
 * traffic key and signed with the sender's certificate key over
 * SHA-256(u64be(seqno) || u64be(ts) || ct).
 */
import { concat, sha256, toBase64, u64be, utf8 } from "../bytes.ts";
import { importAesGcmKey, open, seal } from "../crypto/aead.ts";
import { sign, type SigningKey, verify, type VerifyingKey } from "../crypto/signature.ts";
import { SecureChatError } from "../errors.ts";
import { expandLabel, LABELS, nextTrafficSecret } from "../handshake/key_schedule.ts";
import { type MsgBody, type MsgBodyJson, MsgBodySchema, parseMessage } from "../wire/messages.ts";
import { SequenceWindow } from "./replay.ts";

export const MSG_AAD_LABEL = utf8("securechat/v1 msg");

/** Bounds how much one traffic secret protects, for forward secrecy within a session (§4.4). */
export const DEFAULT_KEY_UPDATE_MESSAGES = 2 ** 20;
export const DEFAULT_KEY_UPDATE_MS = 60 * 60 * 1000;
export const DEFAULT_MAX_SKEW_MS = 5 * 60 * 1000;

/** A message as it travels and as the transcript records it. */
export interface SealedMsg {
  seqno: number;
  ts: number;
  ct: Uint8Array;
  sig: Uint8Array;
}

export function msgFrame(m: SealedMsg) {
  return { type: "msg", seqno: m.seqno, ts: m.ts, ct: toBase64(m.ct), sig: toBase64(m.sig) };
}

/** The 32 bytes a sender signs (PROTOCOL §6.1). */
export function msgDigest(seqno: number, ts: number, ct: Uint8Array): Promise<Uint8Array> {
  return sha256(u64be(seqno), u64be(ts), ct);
}

function msgAad(seqno: number, ts: number): Uint8Array {
  return concat(MSG_AAD_LABEL, u64be(seqno), u64be(ts));
}

/**
 * Every message gets its own key, K_n = ExpandLabel(S, "msg key", u64be(seqno), 16),
 * used for that one message with an all-zero nonce: a key that encrypts once cannot
 * repeat a nonce. One key per message is what lets the server disclose K_n to a relay
 * recipient, who can then check the author's own signed ciphertext (PROTOCOL §6.4)
 * while learning nothing about any other message.
 */
export function messageKeyFor(secret: Uint8Array, seqno: number): Promise<Uint8Array> {
  return expandLabel(secret, LABELS.messageKey, u64be(seqno), 16);
}

const ZERO_NONCE = new Uint8Array(12);

/** Encrypts a body under a message key (PROTOCOL §6.1). */
export async function sealBody(
  messageKey: Uint8Array,
  seqno: number,
  ts: number,
  body: MsgBodyJson,
): Promise<Uint8Array> {
  const key = await importAesGcmKey(messageKey);
  return await seal(key, ZERO_NONCE, utf8(JSON.stringify(body)), msgAad(seqno, ts));
}

/**
 * Decrypts and parses a body under a message key.
 * @throws DECRYPT_FAIL, PROTOCOL_ERROR
 */
export async function openBody(
  messageKey: Uint8Array,
  seqno: number,
  ts: number,
  ct: Uint8Array,
): Promise<MsgBody> {
  const key = await importAesGcmKey(messageKey);
  const plaintext = await open(key, ZERO_NONCE, ct, msgAad(seqno, ts));
  return parseMessage(plaintext, MsgBodySchema, "kind");
}

/** A message that passed every check, with its key (kept only as long as a relay needs it). */
export interface OpenedMsg {
  body: MsgBody;
  messageKey: Uint8Array;
}

export interface SenderLimits {
  keyUpdateMessages?: number;
  keyUpdateMs?: number;
}

/**
 * Numbers, encrypts and signs outgoing messages. Numbering (seqno, timestamp and
 * which traffic secret applies) happens synchronously in call order; encryption and
 * signing then run concurrently, so a burst of messages keeps both cores signing
 * while the session sends them in seqno order.
 */
export class ChatSender {
  #seqno = 0;
  #lastTs = 0;
  /** The secret for the next message numbered; a promise while a key update derives it. */
  #secret: Promise<Uint8Array>;
  #secretSince: number;
  #underKey = 0;
  readonly #limits: Required<SenderLimits>;

  private constructor(
    secret: Uint8Array,
    now: number,
    readonly signingKey: SigningKey,
    limits: SenderLimits,
  ) {
    this.#secret = Promise.resolve(secret.slice());
    this.#secretSince = now;
    this.#limits = {
      keyUpdateMessages: limits.keyUpdateMessages ?? DEFAULT_KEY_UPDATE_MESSAGES,
      keyUpdateMs: limits.keyUpdateMs ?? DEFAULT_KEY_UPDATE_MS,
    };
  }

  /** `now` starts the key-update clock (§4.4); tests with a fixed clock pass theirs. */
  static create(
    secret: Uint8Array,
    signingKey: SigningKey,
    limits: SenderLimits = {},
    now = Date.now(),
  ): ChatSender {
    return new ChatSender(secret, now, signingKey, limits);
  }

  get lastSeqno(): number {
    return this.#seqno;
  }

  /**
   * Seals one body; when the secret is due for an update, first a `key_update` under
   * the old one. Returns every message to send, in seqno order. Calls may overlap:
   * each is numbered when it is made.
   */
  seal(body: MsgBodyJson, clock = Date.now()): Promise<SealedMsg[]> {
    // Timestamps never go backwards within a direction (§6.3), even if the clock does.
    const now = Math.max(clock, this.#lastTs);
    this.#lastTs = now;
    const jobs: Promise<SealedMsg>[] = [];
    const due = this.#underKey >= this.#limits.keyUpdateMessages - 1 ||
      now - this.#secretSince >= this.#limits.keyUpdateMs;
    if (due && body.kind !== "key_update") jobs.push(this.#number({ kind: "key_update" }, now));
    jobs.push(this.#number(body, now));
    return Promise.all(jobs);
  }

  /** Synchronous bookkeeping first, so the order of calls is the order of seqnos. */
  #number(body: MsgBodyJson, ts: number): Promise<SealedMsg> {
    const seqno = ++this.#seqno;
    const secret = this.#secret;
    this.#underKey++;
    if (body.kind === "key_update") {
      this.#secret = secret.then(nextTrafficSecret);
      this.#secretSince = ts;
      this.#underKey = 0;
    }
    return this.#encryptAndSign(body, seqno, ts, secret);
  }

  async #encryptAndSign(
    body: MsgBodyJson,
    seqno: number,
    ts: number,
    secret: Promise<Uint8Array>,
  ): Promise<SealedMsg> {
    const messageKey = await messageKeyFor(await secret, seqno);
    const ct = await sealBody(messageKey, seqno, ts, body);
    messageKey.fill(0);
    const sig = await sign(this.signingKey, await msgDigest(seqno, ts, ct));
    return { seqno, ts, ct, sig };
  }
}

export class ChatReceiver {
  readonly #window = new SequenceWindow();
  #lastTs = 0;
  #secret: Uint8Array;

  private constructor(
    secret: Uint8Array,
    readonly peerKey: VerifyingKey,
    readonly maxSkewMs: number,
  ) {
    this.#secret = secret.slice();
  }

  static create(
    secret: Uint8Array,
    peerKey: VerifyingKey,
    maxSkewMs = DEFAULT_MAX_SKEW_MS,
  ): ChatReceiver {
    return new ChatReceiver(secret, peerKey, maxSkewMs);
  }

  get lastSeqno(): number {
    return this.#window.last;
  }

  /**
   * Checks one received message in the order of PROTOCOL §6.3 and returns its body.
   * Nothing changes unless every check passed.
   * @throws REPLAY, PROTOCOL_ERROR (gap, bad body), STALE, SIG_FAIL, DECRYPT_FAIL
   */
  async open(m: SealedMsg, now = Date.now()): Promise<OpenedMsg> {
    this.#window.check(m.seqno);
    if (Math.abs(now - m.ts) > this.maxSkewMs) {
      throw new SecureChatError("STALE", `timestamp ${m.ts} is ${now - m.ts} ms from our clock`);
    }
    if (m.ts < this.#lastTs) {
      throw new SecureChatError("STALE", `timestamp ${m.ts} is before the previous message's`);
    }
    if (!await verify(this.peerKey, await msgDigest(m.seqno, m.ts, m.ct), m.sig)) {
      throw new SecureChatError("SIG_FAIL", `signature of message ${m.seqno} does not verify`);
    }
    const messageKey = await messageKeyFor(this.#secret, m.seqno);
    const body = await openBody(messageKey, m.seqno, m.ts, m.ct);
    this.#window.accept(m.seqno);
    this.#lastTs = m.ts;
    if (body.kind === "key_update") {
      const next = await nextTrafficSecret(this.#secret);
      this.#secret.fill(0); // best effort: the old secret must not outlive its use
      this.#secret = next;
    }
    return { body, messageKey };
  }
}
