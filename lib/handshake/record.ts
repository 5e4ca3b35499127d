/**
 * The record layer (PROTOCOL §3.2): after server_hello every frame is
 * ChaCha20-Poly1305(key, iv XOR counter, inner), inner = one or more u32be(len) || content,
 * then zero padding. Each direction has its own key, iv and counter; a counter only goes
 * up under one key and restarts only with a new key (a phase switch or a key update), so
 * a nonce can never repeat under one key, and a dropped, replayed, reordered or injected
 * frame fails to open.
 */
import { ByteBuilder, type Encodable, ScratchBytes, utf8, wipe } from "../bytes.ts";
import {
  counterNonceInto,
  GCM_NONCE_BYTES,
  openChaCha20Poly1305,
  POLY1305_TAG_BYTES,
  sealChaCha20Poly1305,
} from "../crypto/aead.ts";
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
/** The frame payload an inner plaintext of `innerBytes` is sealed into: it and the AEAD's tag. */
export function sealedLength(innerBytes: number): number {
  return innerBytes + POLY1305_TAG_BYTES;
}
/** What a content adds to its record's inner plaintext besides its bytes: its length. */
export const CONTENT_OVERHEAD = 4;

/**
 * One message's content: its bytes, or bytes that write themselves into the record (a relay:
 * its own head and the bytes it shares with every recipient, never joined first).
 */
export type Content = Uint8Array | Encodable;

/** u32be(len) || content, written into a record's inner plaintext. */
function writeContent(inner: ByteBuilder, content: Content): void {
  const length = content.length;
  if (length === 0) throw new SecureChatError("INVALID_INPUT", "an empty record content");
  inner.u32(length);
  const start = inner.length;
  if (content instanceof Uint8Array) inner.bytes(content);
  else content.writeTo(inner);
  if (inner.length - start !== length) {
    throw new SecureChatError("INTERNAL", "a record content wrote other than its length");
  }
}

/**
 * Where each gathered record is laid out to be sealed: one buffer, reused. Its capacity grows
 * in powers of two and the largest inner plaintext needs 64 KiB: kept up to that, not regrown
 * from 1 KiB for every large record.
 */
const innerScratch = new ScratchBytes(64 * 1024);

/**
 * Messages gathered into records (PROTOCOL §3.2): kept as they were made (a relay: its own
 * numbers and the bytes it shares with every recipient) and laid out once, when sealed, into
 * one buffer reused for every record, in order, as few records as hold them.
 */
export class RecordOutbox {
  readonly #contents: Content[] = [];
  #bytes = 0;

  /** The contents gathered with their lengths: the records' inner bytes before padding. */
  get bytes(): number {
    return this.#bytes;
  }

  /** @throws INVALID_INPUT for an empty content, or one too large for any record */
  add(content: Content): void {
    const size = CONTENT_OVERHEAD + content.length;
    if (content.length === 0) throw new SecureChatError("INVALID_INPUT", "an empty record content");
    if (size > MAX_INNER_BYTES) {
      throw new SecureChatError("INVALID_INPUT", `record content of ${content.length} bytes`);
    }
    this.#contents.push(content);
    this.#bytes += size;
  }

  /**
   * Hands each record's padded inner plaintext to `seal`, in order, which must keep no view
   * of it: the buffer is the next record's.
   */
  seal(seal: (inner: Uint8Array) => void): void {
    for (const run of recordRuns(this.#contents)) {
      innerScratch.use((inner) => {
        for (const content of run) writeContent(inner, content);
        seal(inner.done(RECORD_PADDING));
      });
    }
  }
}

/**
 * u32be(len) || content for each of `contents`, then zeros to the next multiple of
 * RECORD_PADDING: the padding is paid once per record, not per content (PROTOCOL §3.2).
 * @throws INVALID_INPUT for no content, an empty one, or more than one record holds
 */
export function padContents(contents: readonly Content[]): Uint8Array {
  if (contents.length === 0) throw new SecureChatError("INVALID_INPUT", "a record of no content");
  let used = 0;
  for (const content of contents) used += CONTENT_OVERHEAD + content.length;
  if (used > MAX_INNER_BYTES) {
    throw new SecureChatError("INVALID_INPUT", `record contents of ${used} bytes`);
  }
  const inner = new ByteBuilder(Math.ceil(used / RECORD_PADDING) * RECORD_PADDING);
  for (const content of contents) writeContent(inner, content);
  return inner.done(RECORD_PADDING);
}

/** One content alone in its record (the handshake's records, a client's messages). */
export function padContent(content: Uint8Array): Uint8Array {
  return padContents([content]);
}

/**
 * Splits `contents` in order into runs that each fit one record (PROTOCOL §3.2).
 * @throws INVALID_INPUT for a content too large for any record
 */
export function recordRuns(contents: readonly Content[]): Content[][] {
  const runs: Content[][] = [];
  let run: Content[] = [];
  let used = 0;
  for (const content of contents) {
    const size = CONTENT_OVERHEAD + content.length;
    if (size > MAX_INNER_BYTES) {
      throw new SecureChatError(
        "INVALID_INPUT",
        `record content of ${size - CONTENT_OVERHEAD} bytes`,
      );
    }
    if (used + size > MAX_INNER_BYTES) {
      runs.push(run);
      run = [];
      used = 0;
    }
    run.push(content);
    used += size;
  }
  if (run.length > 0) runs.push(run);
  return runs;
}

/**
 * The contents of an opened inner plaintext, in order (PROTOCOL §3.2): a length of zero,
 * or fewer than four bytes left, starts the padding.
 * @throws PROTOCOL_ERROR for a size that is not a multiple of the padding, no content, a
 *   length beyond the record, or a non-zero padding byte
 */
export function unpadContents(inner: Uint8Array): Uint8Array[] {
  if (inner.length === 0 || inner.length % RECORD_PADDING !== 0) {
    throw new SecureChatError("PROTOCOL_ERROR", `record of ${inner.length} bytes is not padded`);
  }
  const view = new DataView(inner.buffer, inner.byteOffset, inner.length);
  const contents: Uint8Array[] = [];
  let at = 0;
  while (at + CONTENT_OVERHEAD <= inner.length) {
    const length = view.getUint32(at);
    if (length === 0) break;
    if (length > inner.length - at - CONTENT_OVERHEAD) {
      throw new SecureChatError("PROTOCOL_ERROR", "record content length beyond its padding");
    }
    contents.push(inner.subarray(at + CONTENT_OVERHEAD, at + CONTENT_OVERHEAD + length));
    at += CONTENT_OVERHEAD + length;
  }
  if (contents.length === 0) {
    throw new SecureChatError("PROTOCOL_ERROR", "record with no content");
  }
  for (let i = at; i < inner.length; i++) {
    if (inner[i] !== 0) throw new SecureChatError("PROTOCOL_ERROR", "non-zero record padding");
  }
  return contents;
}

/**
 * The one content of an opened inner plaintext: handshake records carry one each.
 * @throws PROTOCOL_ERROR as unpadContents, and for a record of several contents
 */
export function unpadContent(inner: Uint8Array): Uint8Array {
  const contents = unpadContents(inner);
  if (contents.length !== 1) {
    throw new SecureChatError(
      "PROTOCOL_ERROR",
      `${contents.length} contents in a handshake record`,
    );
  }
  return contents[0];
}

/**
 * The nonce of the record being sealed or opened. The AEAD copies it when it starts, so one
 * buffer serves every record: a fresh 12 bytes per record would be a native allocation and its
 * free on a GC thread (Deno keeps no typed array on V8's heap), twice per record per party
 * (docs/PERFORMANCE.md, "Session 10: a line alone").
 */
const recordNonce = new Uint8Array(GCM_NONCE_BYTES);

/**
 * The record at counter `n` under `keys` (PROTOCOL §3.2): ChaCha20-Poly1305 with nonce
 * iv XOR n and the record label as associated data; in a new buffer, or written into `into`
 * (exactly {@link sealedLength} bytes).
 */
export function sealRecord(
  keys: DirectionKeys,
  n: number,
  inner: Uint8Array,
  into?: Uint8Array,
): Uint8Array {
  const nonce = counterNonceInto(recordNonce, keys.iv, n);
  return sealChaCha20Poly1305(keys.key, nonce, inner, RECORD_AAD, into);
}

/**
 * Opens the record at counter `n` under `keys` (PROTOCOL §3.2): the inner plaintext in a new
 * buffer, or in `payload`'s own first bytes when `inPlace` (the payload is then spent: its
 * ciphertext is gone, and zeroed if the record does not open).
 * @throws DECRYPT_FAIL
 */
export function openRecord(
  keys: DirectionKeys,
  n: number,
  payload: Uint8Array,
  inPlace = false,
): Uint8Array {
  return openChaCha20Poly1305(
    keys.key,
    counterNonceInto(recordNonce, keys.iv, n),
    payload,
    RECORD_AAD,
    inPlace && payload.length >= POLY1305_TAG_BYTES
      ? payload.subarray(0, payload.length - POLY1305_TAG_BYTES)
      : undefined,
  );
}

/** One direction's current key, iv and counter. */
class RecordKey {
  #counter = 0;
  constructor(readonly keys: DirectionKeys) {}

  /** The next record's counter. */
  next(): number {
    if (this.#counter >= MAX_RECORDS_PER_KEY) {
      throw new SecureChatError("PROTOCOL_ERROR", "record counter exhausted under one key");
    }
    return this.#counter++;
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
    return this.sealContents([content]);
  }

  /** Seals several messages' contents, in order, into one frame payload (PROTOCOL §3.2). */
  sealContents(contents: readonly Content[]): Uint8Array {
    return this.sealInner(padContents(contents));
  }

  /**
   * Seals a padded inner plaintext (a RecordOutbox's) into one frame payload: a new buffer, or
   * `into` (exactly {@link sealedLength} bytes: the frame's place in FrameConnection.sendSealed's
   * batch).
   * @throws INVALID_INPUT for one not padded, or too large, or an `into` of another length (no
   *   counter spent)
   */
  sealInner(inner: Uint8Array, into?: Uint8Array): Uint8Array {
    if (
      inner.length === 0 || inner.length % RECORD_PADDING !== 0 || inner.length > MAX_INNER_BYTES
    ) {
      throw new SecureChatError("INVALID_INPUT", `inner plaintext of ${inner.length} bytes`);
    }
    if (into && into.length !== sealedLength(inner.length)) {
      throw new SecureChatError("INVALID_INPUT", `${into.length} bytes for a sealed record`);
    }
    return sealRecord(this.#send.keys, this.#send.next(), inner, into);
  }

  /**
   * Opens a record of exactly one content (the handshake's).
   * @throws DECRYPT_FAIL, PROTOCOL_ERROR (padding, several contents)
   */
  open(payload: Uint8Array): Uint8Array {
    return unpadContent(this.#openInner(payload, false));
  }

  /**
   * Opens a session record: its contents in order, each a message (PROTOCOL §3.2).
   * @throws DECRYPT_FAIL, PROTOCOL_ERROR (padding)
   */
  openContents(payload: Uint8Array): Uint8Array[] {
    return unpadContents(this.#openInner(payload, false));
  }

  /**
   * {@link openContents} in `payload`'s own bytes, for a caller whose frame is its own
   * (FrameConnection.read gives each frame a buffer of its own): no buffer per record for its
   * plaintext. The contents are views of `payload`, whose ciphertext is gone.
   * @throws as openContents
   */
  openContentsInPlace(payload: Uint8Array): Uint8Array[] {
    return unpadContents(this.#openInner(payload, true));
  }

  #openInner(payload: Uint8Array, inPlace: boolean): Uint8Array {
    return openRecord(this.#receive.keys, this.#receive.next(), payload, inPlace);
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
