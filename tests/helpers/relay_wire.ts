/**
 * A relay's binary layout, written from PROTOCOL §6.4 "A relay on the wire" (and TRANSCRIPT §3.1's
 * record_enc) for the tests that forge one: a relay's JSON form in, its wire content out. It never
 * calls lib's writer (RecipientRelayGroup), so a test that compares the two, or that feeds a
 * client what this writes, checks lib against the text. It writes what it is given, valid or not:
 * a forger sets any field out of bounds, gives a record `sig` or `batch`, sends a `sender`
 * envelope as JSON (`json: true`), or hands a carrier's raw bytes (`carrier`).
 */
import { fromBase64, fromHex, utf8 } from "../../lib/bytes.ts";
import { readRelay } from "../../lib/message/relay_wire.ts";

/** A record as a relay's JSON form holds it; `sig` and `batch` only to forge a refused relay. */
export interface ForgedRecord {
  sid: string;
  /** `c2s` (0x01), `s2c` (0x02), or the raw byte */
  dir: string | number;
  /** as text (its UTF-8), or the raw bytes (invalid UTF-8, a byte-order mark) */
  to: string | Uint8Array;
  seqno: number | bigint;
  ts: number | bigint;
  ct: string;
  c: string;
  sig?: string;
  batch?: { i: number; n: number; path: string[] };
}

/**
 * One item: the record and its carrier, `k`, an `e2e` envelope (a `sender` one in its binary
 * carrier unless `json`), or `carrier`, the carrier's bytes as they are.
 */
export type ForgedItem =
  & { record: ForgedRecord; json?: boolean }
  & ({ k: string } | { e2e: Record<string, unknown> } | { carrier: Uint8Array });

/** A relay's JSON form (PROTOCOL §6.4), its integers as numbers or, above 2^53 − 1, bigints. */
export interface ForgedRelay {
  type?: string;
  seqno: number | bigint;
  ts: number | bigint;
  author_fp: string;
  cert?: string;
  sig: string;
  first: number | bigint;
  n: number;
  proof: string[];
  records: ForgedItem[];
}

/** A relay's first byte on the wire, and its carriers' tags (PROTOCOL §6.4). */
export const RELAY_BYTE = 0x02;
export const CARRIER = { k: 0x00, json: 0x01, sender: 0x02 } as const;

/** Big-endian bytes, appended. */
class Out {
  readonly parts: Uint8Array[] = [];
  u8(value: number): this {
    this.parts.push(Uint8Array.of(value));
    return this;
  }
  u32(value: number): this {
    const bytes = new Uint8Array(4);
    new DataView(bytes.buffer).setUint32(0, value);
    this.parts.push(bytes);
    return this;
  }
  u64(value: number | bigint): this {
    const bytes = new Uint8Array(8);
    new DataView(bytes.buffer).setBigUint64(0, BigInt(value));
    this.parts.push(bytes);
    return this;
  }
  raw(bytes: Uint8Array): this {
    this.parts.push(bytes);
    return this;
  }
  /** u32be(len) || bytes */
  sized(bytes: Uint8Array): this {
    return this.u32(bytes.length).raw(bytes);
  }
  done(): Uint8Array {
    const out = new Uint8Array(this.parts.reduce((sum, part) => sum + part.length, 0));
    let at = 0;
    for (const part of this.parts) {
      out.set(part, at);
      at += part.length;
    }
    return out;
  }
}

/** record_enc(R) (TRANSCRIPT §3.1): a relay's records end u32be(0) || u32be(0) || u32be(0) || u8(0). */
export function recordEnc(record: ForgedRecord): Uint8Array {
  const out = new Out().raw(fromHex(record.sid));
  out.u8(typeof record.dir === "number" ? record.dir : record.dir === "c2s" ? 0x01 : 0x02);
  out.sized(typeof record.to === "string" ? utf8(record.to) : record.to).u64(record.seqno).u64(
    record.ts,
  );
  out.sized(fromBase64(record.ct)).raw(fromBase64(record.c));
  out.sized(record.sig === undefined ? new Uint8Array(0) : fromBase64(record.sig));
  const batch = record.batch ?? { i: 0, n: 0, path: [] };
  out.u32(batch.i).u32(batch.n).u8(batch.path.length);
  for (const entry of batch.path) out.raw(fromBase64(entry));
  return out.done();
}

/** group_enc (TRANSCRIPT §3.1): the batch's `sig`, `first`, `n`, the proof, the records. */
export function groupEnc(relay: Omit<ForgedRelay, "seqno" | "ts" | "author_fp">): Uint8Array {
  const out = new Out().sized(fromBase64(relay.sig)).u64(relay.first).u32(relay.n);
  out.u8(relay.proof.length);
  for (const entry of relay.proof) out.raw(fromBase64(entry));
  out.u8(relay.records.length);
  for (const item of relay.records) out.raw(recordEnc(item.record));
  return out.done();
}

/** One carrier: 0x00 || k, 0x02 || a `sender` envelope's fields, or 0x01 || u32be(len) || JSON. */
export function carrierOf(item: ForgedItem): Uint8Array {
  if ("carrier" in item) return item.carrier;
  if ("k" in item) return new Out().u8(CARRIER.k).raw(fromBase64(item.k)).done();
  const e2e = item.e2e;
  if (e2e.kind === "sender" && !item.json) {
    return new Out().u8(CARRIER.sender).raw(fromHex(e2e.from as string)).u32(e2e.id as number)
      .u32(e2e.n as number).raw(fromBase64(e2e.w as string)).done();
  }
  return new Out().u8(CARRIER.json).sized(utf8(JSON.stringify(e2e))).done();
}

/**
 * A relay's wire content (PROTOCOL §6.4 "A relay on the wire"): 0x02, the hop's `seqno` and `ts`,
 * `author_fp`, the certificate behind its length (0: none), group_enc, one carrier per record.
 */
export function encodeRelay(relay: ForgedRelay): Uint8Array {
  const out = new Out().u8(RELAY_BYTE).u64(relay.seqno).u64(relay.ts).raw(fromHex(relay.author_fp));
  out.sized(relay.cert === undefined ? new Uint8Array(0) : fromBase64(relay.cert));
  out.raw(groupEnc(relay));
  for (const item of relay.records) out.raw(carrierOf(item));
  return out.done();
}

/** Whether a message's content is a relay in its binary layout (its first byte, PROTOCOL §3.3). */
export function isBinaryRelay(content: Uint8Array): boolean {
  return content.length > 0 && content[0] === RELAY_BYTE;
}

/**
 * A session message's content as whoever holds the keys reads it (an auditor with the key log, a
 * hostile server's proxy): a relay as its JSON form (readRelay, PROTOCOL §6.4), any other as its
 * JSON (typed as JSON.parse's is).
 */
// deno-lint-ignore no-explicit-any
export function messageOf(content: Uint8Array): any {
  if (isBinaryRelay(content)) return readRelay(content);
  return JSON.parse(new TextDecoder().decode(content));
}
