/**
 * Chat messages (PROTOCOL §6): each `msg` is AES-128-GCM under the direction's
 * traffic key and signed with the sender's certificate key over
 * SHA-256(u64be(seqno) || u64be(ts) || ct).
 */
import { concat, sha256, toBase64, u64be, utf8 } from "../bytes.ts";
import { counterNonce, importAesGcmKey, open, seal } from "../crypto/aead.ts";
import { sign, type SigningKey, verify, type VerifyingKey } from "../crypto/signature.ts";
import { SecureChatError } from "../errors.ts";
import { nextTrafficSecret, trafficKeys } from "../handshake/key_schedule.ts";
import { type MsgBody, MsgBodySchema, parseMessage } from "../wire/messages.ts";
import { SequenceWindow } from "./replay.ts";

export const MSG_AAD_LABEL = utf8("securechat/v1 msg");

/** Update the key well before AES-GCM's 2^24-message-per-key bound for this use (issue #3). */
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

class TrafficKey {
  private constructor(
    readonly secret: Uint8Array,
    readonly key: CryptoKey,
    readonly iv: Uint8Array,
    readonly createdAt: number,
  ) {}

  static async from(secret: Uint8Array, now: number): Promise<TrafficKey> {
    const { key, iv } = await trafficKeys(secret);
    return new TrafficKey(secret, await importAesGcmKey(key), iv, now);
  }

  async next(now: number): Promise<TrafficKey> {
    const next = await TrafficKey.from(await nextTrafficSecret(this.secret), now);
    this.secret.fill(0); // best effort: the old secret must not outlive its key
    return next;
  }

  /** The seqno is unique per direction and the key changes only forward, so nonces never repeat. */
  nonce(seqno: number): Uint8Array {
    return counterNonce(this.iv, seqno);
  }
}

export interface SenderLimits {
  keyUpdateMessages?: number;
  keyUpdateMs?: number;
}

export class ChatSender {
  #seqno = 0;
  #traffic: TrafficKey;
  #underKey = 0;
  readonly #limits: Required<SenderLimits>;

  private constructor(traffic: TrafficKey, readonly signingKey: SigningKey, limits: SenderLimits) {
    this.#traffic = traffic;
    this.#limits = {
      keyUpdateMessages: limits.keyUpdateMessages ?? DEFAULT_KEY_UPDATE_MESSAGES,
      keyUpdateMs: limits.keyUpdateMs ?? DEFAULT_KEY_UPDATE_MS,
    };
  }

  static async create(secret: Uint8Array, signingKey: SigningKey, limits: SenderLimits = {}) {
    return new ChatSender(await TrafficKey.from(secret, Date.now()), signingKey, limits);
  }

  get lastSeqno(): number {
    return this.#seqno;
  }

  /**
   * Seals one body; when the key is due for an update, first seals a `key_update`
   * under the old key. Returns every message to send, in order. Callers must not
   * interleave calls (the session serialises them).
   */
  async seal(body: MsgBody, now = Date.now()): Promise<SealedMsg[]> {
    const out: SealedMsg[] = [];
    const due = this.#underKey >= this.#limits.keyUpdateMessages - 1 ||
      now - this.#traffic.createdAt >= this.#limits.keyUpdateMs;
    if (due && body.kind !== "key_update") {
      out.push(await this.#sealOne({ kind: "key_update" }, now));
    }
    out.push(await this.#sealOne(body, now));
    return out;
  }

  async #sealOne(body: MsgBody, ts: number): Promise<SealedMsg> {
    const seqno = ++this.#seqno;
    const ct = await seal(
      this.#traffic.key,
      this.#traffic.nonce(seqno),
      utf8(JSON.stringify(body)),
      msgAad(seqno, ts),
    );
    const sig = await sign(this.signingKey, await msgDigest(seqno, ts, ct));
    this.#underKey++;
    if (body.kind === "key_update") {
      this.#traffic = await this.#traffic.next(ts);
      this.#underKey = 0;
    }
    return { seqno, ts, ct, sig };
  }
}

export class ChatReceiver {
  readonly #window = new SequenceWindow();
  #traffic: TrafficKey;

  private constructor(
    traffic: TrafficKey,
    readonly peerKey: VerifyingKey,
    readonly maxSkewMs: number,
  ) {
    this.#traffic = traffic;
  }

  static async create(secret: Uint8Array, peerKey: VerifyingKey, maxSkewMs = DEFAULT_MAX_SKEW_MS) {
    return new ChatReceiver(await TrafficKey.from(secret, Date.now()), peerKey, maxSkewMs);
  }

  get lastSeqno(): number {
    return this.#window.last;
  }

  /**
   * Checks one received message in the order of PROTOCOL §6.3 and returns its body.
   * Nothing changes unless every check passed.
   * @throws REPLAY, PROTOCOL_ERROR (gap, bad body), STALE, SIG_FAIL, DECRYPT_FAIL
   */
  async open(m: SealedMsg, now = Date.now()): Promise<MsgBody> {
    this.#window.check(m.seqno);
    if (Math.abs(now - m.ts) > this.maxSkewMs) {
      throw new SecureChatError("STALE", `timestamp ${m.ts} is ${now - m.ts} ms from our clock`);
    }
    if (!await verify(this.peerKey, await msgDigest(m.seqno, m.ts, m.ct), m.sig)) {
      throw new SecureChatError("SIG_FAIL", `signature of message ${m.seqno} does not verify`);
    }
    const plaintext = await open(
      this.#traffic.key,
      this.#traffic.nonce(m.seqno),
      m.ct,
      msgAad(m.seqno, m.ts),
    );
    const body = parseMessage(plaintext, MsgBodySchema, "kind");
    this.#window.accept(m.seqno);
    if (body.kind === "key_update") this.#traffic = await this.#traffic.next(m.ts);
    return body;
  }
}
