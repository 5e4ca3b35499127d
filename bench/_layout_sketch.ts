/**
 * What the ladder's top rung ("transcript") costs when the server does not read a user's msg into
 * objects: two sketches, for the bench only (issue 18: docs/PERFORMANCE.md "Session 21: the bound
 * of a layout the server need not parse"). lib/ speaks the binary relay since session 23
 * (PROTOCOL §6.4 "A relay on the wire", whose carriers these use), not yet the binary msg. Each
 * does what the top rung does with a batch of lobby lines with sender envelopes — every record's
 * sid, dir, `to`, seqno, ts, ct and c bounds and envelope checked, its leaf hashed, the batch's
 * root made from the leaves and the proof, the signature verified (PROTOCOL §6.1, §6.3 steps 1–4), the author's line written
 * before anything is relayed, one relay per recipient, each relay's line hashed into its session's
 * running SHA-256 (TRANSCRIPT §3) and appended with the turn's others — on another layout:
 *
 * - `binary`: the wire msg is 0x06 || group_enc (TRANSCRIPT §3.1) followed by the carriers the
 *   transcript never holds; a relay is `line_enc(relay)`'s hop head, then the same group_enc as it
 *   came and the same carriers. The server writes the bytes it received, carriers left off, hashes
 *   group_enc once per msg (format 7's group_digest) and forwards them.
 * - `inplace`: our v2 JSON msg in the canonical form our client writes (what lib's receivedItems
 *   forwards as it came), its text scanned once and only the base64 the checks need decoded; per
 *   msg, its group_enc's digest (in every recipient's line_enc) and its text without the carriers
 *   (written in every relay's line) laid out once; each relay a JSON head and then the msg's text
 *   from `"sig"` on, as it came.
 *
 * Both assume the msg starts its batch (as every msg of the bench's sender does: a real reader
 * takes index = seqno − first) and refuse what lib refuses for such lines; the bench checks before
 * each burst that tampered lines are refused (selfCheck).
 */
import {
  ByteBuilder,
  type Encodable,
  fromBase64Each,
  fromHex,
  ScratchBytes,
  toHex,
  utf8,
} from "../lib/bytes.ts";
import { verifyNow } from "../lib/crypto/signature.ts";
import { sha256, sha256Hasher } from "../lib/crypto/sync_node.ts";
import {
  batchStatement,
  CARRIER_TAG,
  groupRoot,
  LOBBY,
  MAX_BATCH,
  MAX_CT_BYTES,
  type MessageRecord,
  type RecordAuthor,
} from "../lib/message/record.ts";

/** TRANSCRIPT §3.1's line tags. */
const MSG_LINE = 0x06;
const RELAY_LINE = 0x02;
const C2S = 0x01;
const SENDER_ENVELOPE = CARRIER_TAG.sender;
const SID_BYTES = 16;
const HASH_BYTES = 32;
const CARRIER_BYTES = 1 + 8 + 4 + 4 + 48;
const U32_MAX = 0xffff_ffff;
/** 0x00 || the statement's label and version (PROTOCOL §6.1): what precedes a record's sid. */
const LEAF_PREFIX = new ByteBuilder().u8(0x00).bytes(utf8("securechat/v2 message\0")).u32(2)
  .done();
const LOBBY_BYTES = utf8(LOBBY);
const ASCII = new TextDecoder();

/** What a transcript line of the sketches writes to its file and what it adds to the hash. */
export interface SketchLine {
  readonly written: Encodable;
  readonly hashed: Encodable;
}

/** A msg checked: its lines' shared parts, and what its relays forward. */
export interface SketchChecked {
  /** The records (lines) it carries, and the last one's ts. */
  readonly count: number;
  readonly lastTs: number;
  /** The author's line. */
  readonly line: SketchLine;
  /** What every relay carries after its head, as it came. */
  readonly tail: Uint8Array;
  /** Every relay's line after its head: written, hashed. */
  readonly lineTail: { written: Uint8Array; hashed: Uint8Array };
}

const bytesOf = (bytes: Uint8Array): Encodable => ({
  length: bytes.length,
  writeTo: (out) => void out.bytes(bytes),
});

// ---- binary ----

/** A signed batch's records and their sender envelopes as one binary msg (the sender's side). */
export function sketchMsg(
  records: readonly MessageRecord[],
  envelopes: readonly { from: string; id: number; n: number; w: Uint8Array }[],
): Uint8Array {
  const first = records[0];
  const out = new ByteBuilder(1024 + records.length * 256);
  out.u8(MSG_LINE).u32(first.sig!.length).bytes(first.sig!).u64(first.seqno).u32(first.batch!.n)
    .u8(0).u8(records.length);
  for (const r of records) {
    const to = utf8(r.to);
    out.hex(r.sid).u8(C2S).u32(to.length).bytes(to).u64(r.seqno).u64(r.ts).u32(r.ct.length)
      .bytes(r.ct).bytes(r.c).u32(0).u32(0).u32(0).u8(0);
  }
  for (const e of envelopes) {
    out.u8(SENDER_ENVELOPE).bytes(fromHex(e.from)).u32(e.id).u32(e.n).bytes(e.w);
  }
  return out.done();
}

/** A reader of big-endian fields that fails past the end. */
class Fields {
  readonly view: DataView;
  at: number;
  constructor(readonly bytes: Uint8Array, at = 0) {
    this.view = new DataView(bytes.buffer, bytes.byteOffset, bytes.length);
    this.at = at;
  }
  fail(why: string): never {
    throw new Error(`binary sketch: ${why} at ${this.at}`);
  }
  #need(length: number): number {
    if (this.at + length > this.bytes.length) this.fail("past the end");
    const at = this.at;
    this.at += length;
    return at;
  }
  u8(): number {
    return this.view.getUint8(this.#need(1));
  }
  u32(): number {
    return this.view.getUint32(this.#need(4));
  }
  u64(): number {
    return Number(this.view.getBigUint64(this.#need(8)));
  }
  take(length: number): Uint8Array {
    const at = this.#need(length);
    return this.bytes.subarray(at, at + length);
  }
}

/** The records a binary relay carries (a recipient's count): group_enc's count, after the head. */
export function sketchCount(content: Uint8Array): number {
  const f = new Fields(content, 1 + 8 + 8 + HASH_BYTES);
  f.take(f.u32()); // cert
  f.take(f.u32()); // sig
  f.at += 8 + 4;
  f.take(f.u8() * HASH_BYTES); // proof
  return f.u8();
}

/** The sid of a binary msg's first record: a session's, as its handshake would have fixed it. */
export function sketchSid(content: Uint8Array): Uint8Array {
  const f = new Fields(content, 1);
  f.take(f.u32());
  f.at += 8 + 4;
  f.take(f.u8() * HASH_BYTES);
  f.u8();
  return f.take(SID_BYTES).slice();
}

/**
 * A binary msg read and checked in place. `next` is the session's next c2s seqno, `lastTs` its
 * last ts, `sid` its id. Throws on any failure.
 */
export function sketchCheck(
  content: Uint8Array,
  sid: Uint8Array,
  next: number,
  lastTs: number,
  author: RecordAuthor,
): SketchChecked | Promise<SketchChecked> {
  const f = new Fields(content);
  if (f.u8() !== MSG_LINE) f.fail("not a msg");
  const tailAt = f.at;
  const sig = f.take(f.u32());
  const first = f.u64();
  const n = f.u32();
  const proofCount = f.u8();
  if (proofCount >= MAX_BATCH) f.fail("a proof too long");
  const proof: Uint8Array[] = [];
  for (let p = 0; p < proofCount; p++) proof.push(f.take(HASH_BYTES));
  const count = f.u8();
  if (count < 1 || count > n || n > MAX_BATCH || first !== next) f.fail("counts");
  const leaves: Uint8Array[] = [];
  const indices: number[] = [];
  let ts = lastTs;
  for (let j = 0; j < count; j++) {
    const headAt = f.at;
    const recordSid = f.take(SID_BYTES);
    for (let b = 0; b < SID_BYTES; b++) if (recordSid[b] !== sid[b]) f.fail("sid");
    if (f.u8() !== C2S) f.fail("dir");
    const to = f.take(f.u32());
    if (to.length !== LOBBY_BYTES.length || to.some((b, i) => b !== LOBBY_BYTES[i])) f.fail("to");
    const seqno = f.u64();
    const recordTs = f.u64();
    if (seqno !== first + j || recordTs < ts) f.fail("seqno or ts");
    ts = recordTs;
    const head = content.subarray(headAt, f.at);
    const ctLength = f.u32();
    if (ctLength < 16 || ctLength > MAX_CT_BYTES) f.fail("ct length");
    const ct = f.take(ctLength);
    const c = f.take(HASH_BYTES);
    if (f.u32() !== 0 || f.u32() !== 0 || f.u32() !== 0 || f.u8() !== 0) f.fail("sig or batch");
    leaves.push(sha256(LEAF_PREFIX, head, c, sha256(ct)));
    indices.push(j);
  }
  const recordsEnd = f.at;
  for (let j = 0; j < count; j++) {
    if (f.u8() !== SENDER_ENVELOPE) f.fail("carrier");
    f.take(CARRIER_BYTES - 1);
  }
  if (f.at !== content.length) f.fail("trailing bytes");
  const root = groupRoot(leaves, indices, n, proof) ?? f.fail("proof");
  const verdict = verifyNow(author.key, batchStatement(toHex(sid), first, n, root), sig);
  const bytes = content.slice();
  const lineBytes = bytes.subarray(0, recordsEnd);
  const group = bytes.subarray(tailAt, recordsEnd);
  // TRANSCRIPT §3.1 (format 7): the lines hash the group's digest, made once per msg.
  const digest = sha256(group);
  const checked: SketchChecked = {
    count,
    lastTs: ts,
    line: { written: bytesOf(lineBytes), hashed: headThen(Uint8Array.of(MSG_LINE), digest) },
    tail: bytes.subarray(tailAt),
    lineTail: { written: group, hashed: digest },
  };
  if (verdict instanceof Promise) return verdict.then((ok) => ok ? checked : f.fail("signature"));
  return verdict ? checked : f.fail("signature");
}

/** One recipient's binary relay: `line_enc(relay)`'s head, then the msg's bytes as they came. */
export function sketchRelay(
  msg: SketchChecked,
  seqno: number,
  ts: number,
  authorFingerprint: Uint8Array,
  cert: Uint8Array | undefined,
): { content: Encodable; line: SketchLine } {
  const head = new ByteBuilder(64 + (cert?.length ?? 0)).u8(RELAY_LINE).u64(seqno).u64(ts)
    .bytes(authorFingerprint).u32(cert?.length ?? 0).bytes(cert ?? new Uint8Array()).done();
  const line = headThen(head, msg.lineTail.written);
  return { content: headThen(head, msg.tail), line: { written: line, hashed: line } };
}

function headThen(head: Uint8Array, tail: Uint8Array): Encodable {
  return { length: head.length + tail.length, writeTo: (out) => void out.bytes(head).bytes(tail) };
}

// ---- our v2 JSON msg, read in place ----

/**
 * A v2 msg of lobby lines with sender envelopes, in the canonical form our client writes, checked
 * without reading it into objects. `sid` is the session's id. Throws on any failure, and on any
 * text lib would take but not forward as it came (a BOM, an escape, another member order).
 */
export function inPlaceCheck(
  content: Uint8Array,
  sid: string,
  next: number,
  lastTs: number,
  author: RecordAuthor,
): SketchChecked | Promise<SketchChecked> {
  const text = ASCII.decode(content);
  const scan = new Scan(text);
  // A BOM decoded away, or a character beyond ASCII, would set text and bytes apart.
  if (text.length !== content.length) scan.fail("not ASCII");
  scan.literal('{"type":"msg",');
  const tailAt = scan.at;
  const b64 = [scan.after('"sig":').base64()];
  const first = scan.after(',"first":').integer();
  const n = scan.after(',"n":').integer();
  scan.literal(',"proof":[');
  const proofCount = scan.list(() => b64.push(scan.base64()));
  scan.literal(',"records":[');
  if (n > MAX_BATCH || proofCount >= MAX_BATCH || first !== next) scan.fail("counts");
  const seqnos: number[] = [];
  const stamps: number[] = [];
  /** Each carrier's span in the text: what the lines leave out. */
  const carriers: number[] = [];
  let ts = lastTs;
  const count = scan.list(() => {
    scan.literal('{"record":{"sid":"');
    scan.literal(sid);
    const seqno = scan.after('","dir":"c2s","to":"lobby","seqno":').integer();
    const recordTs = scan.after(',"ts":').integer();
    if (seqno !== first + seqnos.length || recordTs < ts) scan.fail("seqno or ts");
    ts = recordTs;
    seqnos.push(seqno);
    stamps.push(recordTs);
    b64.push(scan.after(',"ct":').base64(), scan.after(',"c":').base64());
    scan.literal("}");
    carriers.push(scan.at);
    scan.literal(',"e2e":{"kind":"sender","from":"');
    scan.hex(16);
    if (scan.after('","id":').integer() > U32_MAX || scan.after(',"n":').integer() > U32_MAX) {
      scan.fail("an envelope's id or n");
    }
    b64.push(scan.after(',"w":').base64());
    scan.literal("}");
    carriers.push(scan.at);
    scan.literal("}");
  });
  scan.literal("}");
  if (scan.at !== text.length || count > n) scan.fail("trailing text or counts");
  let decoded: Uint8Array[] = [];
  try {
    decoded = fromBase64Each(b64); // lib's acceptance: canonical, padded, no whitespace
  } catch {
    scan.fail("base64");
  }
  const [sig, ...rest] = decoded;
  const proof = rest.slice(0, proofCount);
  const leaves: Uint8Array[] = [];
  const indices: number[] = [];
  const group = new ByteBuilder(content.length).u32(sig.length).bytes(sig).u64(first).u32(n)
    .u8(proofCount);
  for (const entry of proof) group.bytes(entry);
  group.u8(count);
  for (let j = 0; j < count; j++) {
    const [ct, c, w] = rest.slice(proofCount + 3 * j, proofCount + 3 * j + 3);
    if (ct.length < 16 || ct.length > MAX_CT_BYTES || c.length !== HASH_BYTES) scan.fail("ct, c");
    if (w.length !== 48) scan.fail("w");
    leaves.push(leafScratch.use((out) =>
      sha256(
        out.bytes(LEAF_PREFIX).hex(sid).u8(C2S).u32(LOBBY_BYTES.length).bytes(LOBBY_BYTES)
          .u64(seqnos[j]).u64(stamps[j]).bytes(c).bytes(sha256(ct)).done(),
      )
    ));
    indices.push(j);
    group.hex(sid).u8(C2S).u32(LOBBY_BYTES.length).bytes(LOBBY_BYTES).u64(seqnos[j])
      .u64(stamps[j]).u32(ct.length).bytes(ct).bytes(c).u32(0).u32(0).u32(0).u8(0);
  }
  const root = groupRoot(leaves, indices, n, proof) ?? scan.fail("proof");
  const verdict = verifyNow(author.key, batchStatement(sid, first, n, root), sig);
  // The lines' text: the msg's from `"sig"` on, its carriers left out (TRANSCRIPT §1).
  const written = new ByteBuilder(content.length);
  let from = tailAt;
  for (let j = 0; j < carriers.length; j += 2) {
    written.bytes(content.subarray(from, carriers[j]));
    from = carriers[j + 1];
  }
  const lineText = written.bytes(content.subarray(from)).done();
  // TRANSCRIPT §3.1 (format 7): the lines hash the group's digest, made once per msg.
  const digest = sha256(group.done());
  const checked: SketchChecked = {
    count,
    lastTs: ts,
    line: {
      written: headThen(utf8('{"dir":"c2s","type":"msg",'), lineText),
      hashed: headThen(Uint8Array.of(MSG_LINE), digest),
    },
    tail: content.slice(tailAt),
    lineTail: { written: lineText, hashed: digest },
  };
  if (verdict instanceof Promise) {
    return verdict.then((ok) => ok ? checked : scan.fail("signature"));
  }
  return verdict ? checked : scan.fail("signature");
}

const leafScratch = new ScratchBytes(1024);

/** One recipient's v2 relay of a msg read in place: its JSON head, then the msg's text. */
export function inPlaceRelay(
  msg: SketchChecked,
  seqno: number,
  ts: number,
  authorFingerprint: string,
  certBase64: string | undefined,
): { content: Encodable; line: SketchLine } {
  const cert = certBase64 === undefined ? "" : `"cert":"${certBase64}",`;
  const head = `"seqno":${seqno},"ts":${ts},"author_fp":"${authorFingerprint}",${cert}`;
  const certDer = certBase64 === undefined ? new Uint8Array() : Uint8Array.fromBase64(certBase64);
  const hashedHead = new ByteBuilder(64 + certDer.length).u8(RELAY_LINE).u64(seqno).u64(ts)
    .hex(authorFingerprint).u32(certDer.length).bytes(certDer).done();
  return {
    content: headThen(utf8(`{"type":"relay",${head}`), msg.tail),
    line: {
      written: headThen(utf8(`{"dir":"s2c","type":"relay",${head}`), msg.lineTail.written),
      hashed: headThen(hashedHead, msg.lineTail.hashed),
    },
  };
}

/** A cursor over canonical JSON text (ASCII, no whitespace, no escape). */
class Scan {
  at = 0;
  constructor(readonly text: string) {}

  fail(why: string): never {
    throw new Error(`in-place sketch: ${why} at ${this.at}`);
  }

  literal(part: string): void {
    if (!this.text.startsWith(part, this.at)) this.fail(`not ${part.slice(0, 40)}`);
    this.at += part.length;
  }

  after(part: string): this {
    this.literal(part);
    return this;
  }

  /** Items separated by commas up to `]` (which it takes): how many. */
  list(item: () => void): number {
    let count = 0;
    while (this.text.charCodeAt(this.at) !== 0x5d) {
      if (count > 0) this.literal(",");
      item();
      count++;
    }
    this.at++;
    return count;
  }

  /** Decimal digits without a leading zero, at most 2^53 − 1. */
  integer(): number {
    const start = this.at;
    while (this.at < this.text.length) {
      const code = this.text.charCodeAt(this.at);
      if (code < 0x30 || code > 0x39) break;
      this.at++;
    }
    const digits = this.at - start;
    if (digits === 0 || digits > 16 || (digits > 1 && this.text.charCodeAt(start) === 0x30)) {
      this.fail("an integer");
    }
    const value = Number(this.text.slice(start, this.at));
    if (!Number.isSafeInteger(value)) this.fail("an integer");
    return value;
  }

  /** A quoted string's characters (base64, decoded strictly by the caller). */
  base64(): string {
    this.literal('"');
    const end = this.text.indexOf('"', this.at);
    if (end < 0) this.fail("an unterminated string");
    const value = this.text.slice(this.at, end);
    this.at = end + 1;
    return value;
  }

  hex(length: number): void {
    for (let i = 0; i < length; i++) {
      const code = this.text.charCodeAt(this.at + i);
      if (!((code >= 0x30 && code <= 0x39) || (code >= 0x61 && code <= 0x66))) this.fail("hex");
    }
    this.at += length;
  }
}

// ---- the transcript ----

/**
 * A session's transcript in the sketches: lines gathered in a turn, hashed into one running
 * SHA-256 and appended with one write, length-prefixed (as TranscriptWriter batches a turn's).
 */
export class SketchTranscript {
  readonly #hash = sha256Hasher();
  #pending: SketchLine[] = [];
  readonly #out = new ByteBuilder(64 * 1024);
  readonly #hashed = new ByteBuilder(64 * 1024);

  constructor(readonly file: Deno.FsFile) {}

  append(line: SketchLine): void {
    this.#pending.push(line);
  }

  flush(): void {
    if (this.#pending.length === 0) return;
    const out = this.#out;
    const hashed = this.#hashed;
    out.reset();
    hashed.reset();
    for (const line of this.#pending) {
      out.u32(line.written.length);
      line.written.writeTo(out);
      line.hashed.writeTo(hashed);
    }
    this.#pending = [];
    this.#hash.update(hashed.done());
    const bytes = out.done();
    for (let w = 0; w < bytes.length;) w += this.file.writeSync(bytes.subarray(w));
  }
}

// ---- the bench's own check of both ----

/**
 * Throws unless `check` takes `msg` and refuses it with any byte of its signed parts changed (a
 * record's ct or c, the signature), as lib refuses it: run before each sketch burst, so that a
 * sketch that stopped checking cannot be measured.
 */
export async function selfCheck(
  msg: Uint8Array,
  check: (content: Uint8Array) => SketchChecked | Promise<SketchChecked>,
  signedOffsets: readonly number[],
): Promise<void> {
  await check(msg);
  for (const at of signedOffsets) {
    const tampered = msg.slice();
    tampered[at] = tampered[at] === 0x41 ? 0x42 : 0x41;
    const refused = await Promise.resolve().then(() => check(tampered)).then(
      () => false,
      () => true,
    );
    if (!refused) throw new Error(`layout sketch: a msg tampered at byte ${at} was accepted`);
  }
}
