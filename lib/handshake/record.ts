/**
 * The sealed record layer (PROTOCOL §3.2): handshake messages after server_hello,
 * credentials and control messages travel as `{type:"sealed", ct}`, AES-128-GCM
 * with a per-direction key and a counter nonce. Counters start at 0 for every new
 * key and only go up, so a nonce can never repeat under one key; a reordered,
 * dropped or replayed frame fails to decrypt.
 */
import { utf8 } from "../bytes.ts";
import { counterNonce, importAesGcmKey, open, seal } from "../crypto/aead.ts";
import { SecureChatError } from "../errors.ts";
import type { DirectionKeys } from "./key_schedule.ts";

export const SEALED_AAD = utf8("securechat/v1 sealed");

/** Far below AES-GCM's limits; control traffic never comes near it. */
const MAX_RECORDS_PER_KEY = 2 ** 24;

class RecordKey {
  #counter = 0;
  constructor(readonly key: CryptoKey, readonly iv: Uint8Array) {}

  static async from(keys: DirectionKeys): Promise<RecordKey> {
    return new RecordKey(await importAesGcmKey(keys.key), keys.iv);
  }

  nextNonce(): Uint8Array {
    if (this.#counter >= MAX_RECORDS_PER_KEY) {
      throw new SecureChatError("PROTOCOL_ERROR", "record counter exhausted");
    }
    return counterNonce(this.iv, this.#counter++);
  }
}

export class SealedChannel {
  private constructor(readonly send: RecordKey, readonly receive: RecordKey) {}

  static async create(send: DirectionKeys, receive: DirectionKeys): Promise<SealedChannel> {
    return new SealedChannel(await RecordKey.from(send), await RecordKey.from(receive));
  }

  seal(plaintext: Uint8Array): Promise<Uint8Array> {
    return seal(this.send.key, this.send.nextNonce(), plaintext, SEALED_AAD);
  }

  /** @throws DECRYPT_FAIL */
  open(ciphertext: Uint8Array): Promise<Uint8Array> {
    return open(this.receive.key, this.receive.nextNonce(), ciphertext, SEALED_AAD);
  }
}
