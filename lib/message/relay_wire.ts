/**
 * A relay on the wire (PROTOCOL §6.4 "A relay on the wire"): binary, its first byte RELAY_TAG,
 * then the hop, the author, the group the transcript hashes (group_enc, TRANSCRIPT §3.1) and one
 * carrier per record. The server writes it in place (record.ts, RecipientRelayGroup); a client
 * reads it here, into its JSON form, which RelayMessageShape then checks with every bound of
 * §6.4's table and §6.1, exactly as it checked a relay in JSON: this reader adds only what the
 * layout itself must hold (lengths within the content, the carriers' tags, zero `sig` and
 * `batch` fields, nothing left over).
 */
import { toBase64, toHex } from "../bytes.ts";
import { SecureChatError } from "../errors.ts";
import { type E2eEnvelope, type SenderEnvelope, WRAPPED_KEY_BYTES } from "../e2e/envelope.ts";
import { checkShape } from "../wire/messages.ts";
import { parseStrictJson } from "../wire/strict_json.ts";
import {
  CARRIER_TAG,
  CONTENT_KEY_BYTES,
  type Direction,
  DIRECTION_BYTE,
  MAX_TO_CHARS,
  type RecordJson,
  RELAY_TAG,
  type RelayItem,
  type RelayMessage,
  RelayMessageShape,
} from "./record.ts";

const HASH_BYTES = 32;
const SID_BYTES = 16;
/** A device id's 16 hex characters (PROTOCOL §12.2) as bytes. */
const DEVICE_ID_BYTES = 8;
const DIRECTIONS = new Map<number, Direction>(
  Object.entries(DIRECTION_BYTE).map(([dir, byte]) => [byte, dir as Direction]),
);
/**
 * Exact UTF-8: a malformed byte is refused, and a leading byte-order mark is a character of the
 * text, as the bytes say, not dropped (a `to` starting with one then fails §6.4 step 3).
 */
const exactUtf8 = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true });

/**
 * A relay's content read into its JSON form and checked (PROTOCOL §6.4): the one parse of a
 * relay a client makes.
 * @throws PROTOCOL_ERROR for anything §6.4 refuses
 */
export function readRelay(content: Uint8Array): RelayMessage {
  let json: unknown;
  try {
    json = new RelayReader(content).read();
  } catch (error) {
    if (!(error instanceof LayoutFault)) throw error;
    throw new SecureChatError("PROTOCOL_ERROR", `malformed relay: ${error.message}`);
  }
  return checkShape(json, "relay", RelayMessageShape);
}

/** Thrown inside RelayReader; readRelay makes it a PROTOCOL_ERROR. */
class LayoutFault extends Error {}

/** One pass over a relay's bytes, each field taken where the layout puts it. */
class RelayReader {
  #at = 0;
  readonly #view: DataView;

  constructor(readonly content: Uint8Array) {
    this.#view = new DataView(content.buffer, content.byteOffset, content.byteLength);
  }

  read(): Record<string, unknown> {
    if (this.u8() !== RELAY_TAG) throw new LayoutFault("not a relay");
    const seqno = this.u64();
    const ts = this.u64();
    const author_fp = toHex(this.take(HASH_BYTES));
    const certLength = this.u32();
    const cert = certLength === 0 ? undefined : toBase64(this.take(certLength));
    const sig = toBase64(this.take(this.u32()));
    const first = this.u64();
    const n = this.u32();
    const proof: string[] = [];
    for (let count = this.u8(); count > 0; count--) proof.push(toBase64(this.take(HASH_BYTES)));
    const records: RecordJson[] = [];
    for (let count = this.u8(); count > 0; count--) records.push(this.record());
    if (records.length === 0) throw new LayoutFault("no records");
    const items: RelayItem[] = records.map((record) => this.carrier(record));
    if (this.#at !== this.content.length) throw new LayoutFault("bytes after the last carrier");
    return {
      type: "relay",
      seqno,
      ts,
      author_fp,
      ...(cert === undefined ? {} : { cert }),
      sig,
      first,
      n,
      proof,
      records: items,
    };
  }

  /** record_enc without `sig` and `batch` (TRANSCRIPT §3.1). */
  record(): RecordJson {
    const sid = toHex(this.take(SID_BYTES));
    const dirByte = this.u8();
    const dir = DIRECTIONS.get(dirByte);
    if (dir === undefined) throw new LayoutFault(`a record's direction byte ${dirByte}`);
    const toLength = this.u32();
    if (toLength > MAX_TO_CHARS) throw new LayoutFault(`a record's \`to\` of ${toLength} bytes`);
    const to = this.text(toLength, "a record's `to`");
    const seqno = this.u64();
    const ts = this.u64();
    const ct = toBase64(this.take(this.u32()));
    const c = toBase64(this.take(HASH_BYTES));
    if (this.u32() !== 0 || this.u32() !== 0 || this.u32() !== 0 || this.u8() !== 0) {
      throw new LayoutFault("a record in a relay carries `sig` or `batch`");
    }
    return { sid, dir, to, seqno, ts, ct, c };
  }

  carrier(record: RecordJson): RelayItem {
    const tag = this.u8();
    if (tag === CARRIER_TAG.k) return { record, k: toBase64(this.take(CONTENT_KEY_BYTES)) };
    if (tag === CARRIER_TAG.sender) {
      const e2e: SenderEnvelope = {
        kind: "sender",
        from: toHex(this.take(DEVICE_ID_BYTES)),
        id: this.u32(),
        n: this.u32(),
        w: toBase64(this.take(WRAPPED_KEY_BYTES)),
      };
      return { record, e2e };
    }
    if (tag !== CARRIER_TAG.json) throw new LayoutFault(`a carrier's tag ${tag}`);
    const text = this.text(this.u32(), "an envelope");
    let e2e: unknown;
    try {
      e2e = parseStrictJson(text);
    } catch {
      throw new LayoutFault("an envelope is not strict JSON");
    }
    // A sender envelope has one encoding, the binary one; the shape checks the rest.
    if ((e2e as { kind?: unknown } | null)?.kind !== "ratchet") {
      throw new LayoutFault("an envelope in JSON that is not a ratchet envelope");
    }
    return { record, e2e: e2e as E2eEnvelope };
  }

  u8(): number {
    this.#need(1);
    return this.content[this.#at++];
  }

  u32(): number {
    this.#need(4);
    const value = this.#view.getUint32(this.#at);
    this.#at += 4;
    return value;
  }

  /** A u64be as a number: above 2^53 − 1 it is refused here (PROTOCOL §2's integers). */
  u64(): number {
    this.#need(8);
    const high = this.#view.getUint32(this.#at);
    const low = this.#view.getUint32(this.#at + 4);
    this.#at += 8;
    if (high > 0x1f_ffff) throw new LayoutFault("an integer above 2^53 − 1");
    return high * 2 ** 32 + low;
  }

  /** `length` bytes of exact UTF-8 (exactUtf8), `what` naming them in a refusal. */
  text(length: number, what: string): string {
    const bytes = this.take(length);
    try {
      return exactUtf8.decode(bytes);
    } catch {
      throw new LayoutFault(`${what} is not UTF-8`);
    }
  }

  take(length: number): Uint8Array {
    this.#need(length);
    const bytes = this.content.subarray(this.#at, this.#at + length);
    this.#at += length;
    return bytes;
  }

  #need(length: number): void {
    if (length > this.content.length - this.#at) {
      throw new LayoutFault("a length past the relay's end");
    }
  }
}
