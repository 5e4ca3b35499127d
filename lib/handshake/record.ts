/**
 * The record layer (PROTOCOL §3.2): after server_hello every frame is
 * AES-128-GCM(key, iv XOR counter, u32be(len) || content || zero padding). Each
 * direction has its own key, iv and counter; a counter only goes up under one key
 * and restarts only with a new key (a phase switch or a key update), so a nonce can
 * never repeat under one key, and a dropped, replayed, reordered or injected frame
 * fails to open.
 */
import { utf8, wipe } from "../bytes.ts";
import { counterNonce, openSync, sealSync } from "../crypto/aead.ts";
import { SecureChatError } from "../errors.ts";
import { type DirectionKeys, nextTrafficSecret, trafficKeys } from "./key_schedule.ts";

export const RECORD_AAD = utf8("securechat/v2 record");
/** Inner plaintexts are padded to a multiple of this (PROTOCOL §3.2). */
export const RECORD_PADDING = 256;
/** The largest inner plaintext: a multiple of the padding that fits a 64 KiB frame with the tag. */
export const MAX_INNER_BYTES = Math.floor((64 * 1024 - 16) / RECORD_PADDING) * RECORD_PADDING;
export const MAX_CONTENT_BYTES = MAX_INNER_BYTES - 4;
/** A sender must update its key before this many records under one key (PROTOCOL §3.2). */
export const MAX_RECORDS_PER_KEY = 2 ** 24;

/** u32be(len) || content || zeros, to the next multiple of RECORD_PADDING. */
export function padContent(content: Uint8Array): Uint8Array {
  if (content.length > MAX_CONTENT_BYTES) {
    throw new SecureChatError("INVALID_INPUT", `record content of ${content.length} bytes`);
  }
  const size = Math.ceil((content.length + 4) / RECORD_PADDING) * RECORD_PADDING;
  const inner = new Uint8Array(size);
  new DataView(inner.buffer).setUint32(0, content.length);
  inner.set(content, 4);
  return inner;
}

/**
 * The content of an opened inner plaintext.
 * @throws PROTOCOL_ERROR for a size that is not a multiple of the padding, a length
 *   beyond it, or a non-zero padding byte
 */
export function unpadContent(inner: Uint8Array): Uint8Array {
  if (inner.length === 0 || inner.length % RECORD_PADDING !== 0) {
    throw new SecureChatError("PROTOCOL_ERROR", `record of ${inner.length} bytes is not padded`);
  }
  const length = new DataView(inner.buffer, inner.byteOffset, 4).getUint32(0);
  if (length > inner.length - 4) {
    throw new SecureChatError("PROTOCOL_ERROR", "record content length beyond its padding");
  }
  for (let i = 4 + length; i < inner.length; i++) {
    if (inner[i] !== 0) throw new SecureChatError("PROTOCOL_ERROR", "non-zero record padding");
  }
  return inner.subarray(4, 4 + length);
}

/** One direction's current key, iv and counter. */
class RecordKey {
  #counter = 0;
  constructor(readonly keys: DirectionKeys) {}

  nextNonce(): Uint8Array {
    if (this.#counter >= MAX_RECORDS_PER_KEY) {
      throw new SecureChatError("PROTOCOL_ERROR", "record counter exhausted under one key");
    }
    return counterNonce(this.keys.iv, this.#counter++);
  }

  get used(): number {
    return this.#counter;
  }

  wipe(): void {
    wipe(this.keys.key, this.keys.iv);
  }
}

/**
 * Both directions of one connection's record protection. The handshake switches
 * each direction at its own point (PROTOCOL §5); the session updates keys (§4.4).
 */
export class RecordLayer {
  #send: RecordKey;
  #receive: RecordKey;
  /** Application traffic secrets, once set: what a key update advances. */
  #sendSecret?: Uint8Array;
  #receiveSecret?: Uint8Array;

  constructor(send: DirectionKeys, receive: DirectionKeys) {
    this.#send = new RecordKey(send);
    this.#receive = new RecordKey(receive);
  }

  /** Records sent under the current sending key. */
  get sentUnderKey(): number {
    return this.#send.used;
  }

  /** Seals one message's content into a frame payload. */
  seal(content: Uint8Array): Uint8Array {
    return sealSync(this.#send.keys.key, this.#send.nextNonce(), padContent(content), RECORD_AAD);
  }

  /** @throws DECRYPT_FAIL, PROTOCOL_ERROR (padding) */
  open(payload: Uint8Array): Uint8Array {
    const nonce = this.#receive.nextNonce();
    return unpadContent(openSync(this.#receive.keys.key, nonce, payload, RECORD_AAD));
  }

  /** From now on we send under the application secret `secret` (counter 0). */
  switchSend(secret: Uint8Array): void {
    this.#send.wipe();
    this.#sendSecret = secret;
    this.#send = new RecordKey(trafficKeys(secret));
  }

  /** From now on we read under the application secret `secret` (counter 0). */
  switchReceive(secret: Uint8Array): void {
    this.#receive.wipe();
    this.#receiveSecret = secret;
    this.#receive = new RecordKey(trafficKeys(secret));
  }

  /** After we sent a key_update: the next sending secret (§4.4). */
  updateSend(): void {
    const old = this.#requireSecret(this.#sendSecret);
    this.switchSend(nextTrafficSecret(old));
    wipe(old);
  }

  /** After we opened the peer's key_update (§4.4). */
  updateReceive(): void {
    const old = this.#requireSecret(this.#receiveSecret);
    this.switchReceive(nextTrafficSecret(old));
    wipe(old);
  }

  #requireSecret(secret: Uint8Array | undefined): Uint8Array {
    if (!secret) throw new SecureChatError("PROTOCOL_ERROR", "key update before the session");
    return secret;
  }
}
