/**
 * What the ladder's top rung costs on a binary layout: a sketch, for the bench only, of how a
 * server could check and forward a user's msg without reading it into objects (issue 18:
 * docs/PERFORMANCE.md "Session 21: the bound of a binary layout"). Not a protocol: nothing in
 * lib/ speaks it. It carries what PROTOCOL §6.3 and §6.4 carry and the server does what the
 * "transcript" rung does with it — every record's origin, seqno, ts, recipient and envelope kind
 * checked, its leaf hashed (the statement is the record's head as it came, plus SHA-256(ct)), the
 * batch's root made and its signature verified, a transcript line per msg and per relay (hashed
 * into a running SHA-256 per session and appended, as TranscriptWriter batches a turn's lines),
 * and one relay per recipient sealed at the turn's end — so the two rows differ only in layout.
 *
 * A msg (all integers big-endian):
 *
 *   u8 1 | u32 count | u32 sig length | sig | u64 first | u32 n | u32 proof count | proof (32 each)
 *   | count × (u32 head length | head | u32 ct length | ct | u32 carrier length | carrier)
 *   head = sid (16) | u8 dir | u32 length(to) | to | u64 seqno | u64 ts | c (32)
 *   carrier = u8 kind (1: sender) | from (8) | u32 id | u32 n | w (48)
 *
 * A relay: u8 2 | u32 count | u64 hop seqno | u64 hop ts | author fingerprint (32) | u32 cert
 * length | cert | the msg's bytes from its sig length on (sig, first, n, proof, items, as they
 * came). A transcript line is the bytes sent or received.
 */
import { ByteBuilder, type Encodable, fromHex, ScratchBytes, toHex, utf8 } from "../lib/bytes.ts";
import { verifyNow } from "../lib/crypto/signature.ts";
import { sha256, sha256Hasher } from "../lib/crypto/sync_node.ts";
import {
  batchStatement,
  groupRoot,
  LOBBY,
  type MessageRecord,
  type RecordAuthor,
} from "../lib/message/record.ts";

const MSG = 1;
const RELAY = 2;
const C2S = 1;
const SENDER_ENVELOPE = 1;
const SID_BYTES = 16;
const HASH_BYTES = 32;
/** 0x00 || the statement's label and version (PROTOCOL §6.1): what precedes a record's head. */
const LEAF_PREFIX = new ByteBuilder().u8(0x00).bytes(utf8("securechat/v2 message\0")).u32(2)
  .done();
const LOBBY_BYTES = utf8(LOBBY);

/** A signed batch's records and their sender envelopes as one msg (the sender's side). */
export function sketchMsg(
  records: readonly MessageRecord[],
  envelopes: readonly { from: string; id: number; n: number; w: Uint8Array }[],
): Uint8Array {
  const first = records[0];
  const out = new ByteBuilder(1024 + records.length * 256);
  out.u8(MSG).u32(records.length).u32(first.sig!.length).bytes(first.sig!).u64(first.seqno)
    .u32(first.batch!.n).u32(0);
  records.forEach((r, j) => {
    const to = utf8(r.to);
    out.u32(SID_BYTES + 1 + 4 + to.length + 16 + HASH_BYTES).hex(r.sid).u8(C2S).u32(to.length)
      .bytes(to).u64(r.seqno).u64(r.ts).bytes(r.c);
    out.u32(r.ct.length).bytes(r.ct);
    const e = envelopes[j];
    out.u32(1 + 8 + 4 + 4 + e.w.length).u8(SENDER_ENVELOPE).bytes(fromHex(e.from)).u32(e.id)
      .u32(e.n).bytes(e.w);
  });
  return out.done();
}

/** The records a msg or relay of this sketch carries (a recipient's count). */
export function sketchCount(content: Uint8Array): number {
  return new DataView(content.buffer, content.byteOffset, content.length).getUint32(1);
}

/** A msg checked: its bytes (its sender's transcript line), and what its relays forward. */
export class SketchChecked implements Encodable {
  /** The msg from its sig length on, as it came: every relay's tail. */
  readonly tail: Uint8Array;
  readonly length: number;

  constructor(
    readonly bytes: Uint8Array,
    tailAt: number,
    readonly count: number,
    readonly lastTs: number,
  ) {
    this.tail = bytes.subarray(tailAt);
    this.length = bytes.length;
  }

  writeTo(out: ByteBuilder): void {
    out.bytes(this.bytes);
  }
}

/** Where the first record's sid is in a msg whose sig is `sigLength` bytes and proof empty. */
export function sketchSidAt(content: Uint8Array): number {
  const view = new DataView(content.buffer, content.byteOffset, content.length);
  const proofAt = 1 + 4 + 4 + view.getUint32(5) + 8 + 4;
  return proofAt + 4 + view.getUint32(proofAt) * HASH_BYTES + 4;
}

/**
 * A msg read and checked as the "checks" rung checks a JSON one (PROTOCOL §6.3 steps 1–4 for
 * lobby lines with sender envelopes), in place. `next` is the session's next c2s seqno and
 * `lastTs` its last ts; the msg's `sid` must be `sid`. Throws on any failure (the bench's
 * sender never sends one).
 */
export function sketchCheck(
  content: Uint8Array,
  sid: Uint8Array,
  next: number,
  lastTs: number,
  author: RecordAuthor,
): SketchChecked | Promise<SketchChecked> {
  const view = new DataView(content.buffer, content.byteOffset, content.length);
  let at = 0;
  const fail = (why: string): never => {
    throw new Error(`binary sketch: ${why} at ${at}`);
  };
  if (view.getUint8(at++) !== MSG) fail("not a msg");
  const count = view.getUint32(at);
  at += 4;
  const tailAt = at;
  const sigLength = view.getUint32(at);
  at += 4;
  const sig = content.subarray(at, at += sigLength);
  const first = Number(view.getBigUint64(at));
  at += 8;
  const n = view.getUint32(at);
  at += 4;
  const proofCount = view.getUint32(at);
  at += 4;
  const proof: Uint8Array[] = [];
  for (let p = 0; p < proofCount; p++) proof.push(content.subarray(at, at += HASH_BYTES));
  if (count < 1 || count > n || n > 32 || first !== next) fail("counts");
  const leaves: Uint8Array[] = [];
  const indices: number[] = [];
  let ts = lastTs;
  for (let j = 0; j < count; j++) {
    const headLength = view.getUint32(at);
    at += 4;
    const head = content.subarray(at, at + headLength);
    for (let b = 0; b < SID_BYTES; b++) if (head[b] !== sid[b]) fail("sid");
    if (head[SID_BYTES] !== C2S) fail("dir");
    const toLength = view.getUint32(at + SID_BYTES + 1);
    const toAt = at + SID_BYTES + 5;
    if (toLength !== LOBBY_BYTES.length) fail("to");
    for (let b = 0; b < toLength; b++) if (content[toAt + b] !== LOBBY_BYTES[b]) fail("to");
    const seqno = Number(view.getBigUint64(toAt + toLength));
    const recordTs = Number(view.getBigUint64(toAt + toLength + 8));
    if (seqno !== first + j || recordTs < ts) fail("seqno or ts");
    ts = recordTs;
    if (toAt + toLength + 16 + HASH_BYTES !== at + headLength) fail("head length");
    at += headLength;
    const ctLength = view.getUint32(at);
    at += 4;
    if (ctLength < 16 || ctLength > 24576) fail("ct length");
    const ct = content.subarray(at, at += ctLength);
    const carrierLength = view.getUint32(at);
    at += 4;
    if (carrierLength !== 1 + 8 + 4 + 4 + 48 || content[at] !== SENDER_ENVELOPE) fail("carrier");
    at += carrierLength;
    leaves.push(sha256(LEAF_PREFIX, head, sha256(ct)));
    indices.push(j);
  }
  if (at !== content.length) fail("trailing bytes");
  const root = groupRoot(leaves, indices, n, proof) ?? fail("proof");
  const verdict = verifyNow(
    author.key,
    batchStatement(toHex(sid), first, n, root),
    sig,
  );
  const checked = new SketchChecked(content.slice(), tailAt, count, ts);
  if (verdict instanceof Promise) {
    return verdict.then((ok) => ok ? checked : fail("signature"));
  }
  return verdict ? checked : fail("signature");
}

/** One recipient's relay of a checked msg: its hop head, then the msg's bytes as they came. */
export class SketchRelay implements Encodable {
  readonly length: number;
  readonly #head: Uint8Array;

  constructor(
    readonly msg: SketchChecked,
    seqno: number,
    ts: number,
    authorFingerprint: Uint8Array,
    cert: Uint8Array | undefined,
  ) {
    const head = new ByteBuilder(64 + (cert?.length ?? 0));
    head.u8(RELAY).u32(msg.count).u64(seqno).u64(ts).bytes(authorFingerprint).u32(
      cert?.length ?? 0,
    );
    if (cert) head.bytes(cert);
    this.#head = head.done();
    this.length = this.#head.length + msg.tail.length;
  }

  writeTo(out: ByteBuilder): void {
    out.bytes(this.#head).bytes(this.msg.tail);
  }
}

/**
 * A session's transcript in this sketch: lines gathered in a turn, then hashed into one running
 * SHA-256 and appended with one write (as TranscriptWriter's batches), length-prefixed.
 */
export class SketchTranscript {
  readonly #hash = sha256Hasher();
  #pending: Encodable[] = [];
  readonly #out = new ByteBuilder(64 * 1024);

  constructor(readonly file: Deno.FsFile) {}

  append(line: Encodable): void {
    this.#pending.push(line);
  }

  flush(): void {
    if (this.#pending.length === 0) return;
    const out = this.#out;
    out.reset();
    const ends: number[] = [];
    for (const line of this.#pending) {
      out.u32(line.length);
      line.writeTo(out);
      ends.push(out.length);
    }
    this.#pending = [];
    const bytes = out.done();
    let start = 0;
    for (const end of ends) {
      this.#hash.update(bytes.subarray(start + 4, end));
      start = end;
    }
    for (let w = 0; w < bytes.length;) w += this.file.writeSync(bytes.subarray(w));
  }
}

// ---- the same work on PROTOCOL v2's JSON msg, read in place ----

/**
 * A msg of PROTOCOL v2 in the canonical form our client writes (members in §6.3, §6.1 and §12.6's
 * order, no whitespace or escape: what lib's receivedItems forwards as it came), checked as
 * {@link sketchCheck} checks a binary one — lobby lines with sender envelopes — without reading it
 * into objects: its text scanned once, the base64 members the checks need decoded (sig, each
 * record's c and ct), the rest matched in place. The ladder's `inplace` rung: how near the JSON
 * layout itself comes to the binary one's cost. Throws on anything else (the bench's sender never
 * sends it).
 */
export function inPlaceCheck(
  content: Uint8Array,
  sid: string,
  next: number,
  lastTs: number,
  author: RecordAuthor,
): SketchChecked | Promise<SketchChecked> {
  const text = new TextDecoder().decode(content);
  const scan = new Scan(text);
  scan.literal('{"type":"msg",');
  const tailAt = scan.at;
  scan.literal('"sig":');
  const sig = Uint8Array.fromBase64(scan.base64(), STRICT);
  const first = scan.after(',"first":').integer();
  const n = scan.after(',"n":').integer();
  scan.literal(',"proof":[');
  const proof: Uint8Array[] = [];
  while (scan.peek() !== "]".charCodeAt(0)) {
    if (proof.length > 0) scan.literal(",");
    proof.push(Uint8Array.fromBase64(scan.base64(), STRICT));
  }
  scan.literal('],"records":[');
  if (n > 32 || first !== next) scan.fail("counts");
  const leaves: Uint8Array[] = [];
  const indices: number[] = [];
  let ts = lastTs;
  for (let j = 0; j === 0 || scan.peek() === ",".charCodeAt(0); j++) {
    if (j > 0) scan.literal(",");
    scan.literal('{"record":{"sid":"');
    if (!scan.holds(sid)) scan.fail("sid");
    scan.literal('","dir":"c2s","to":"lobby","seqno":');
    const seqno = scan.integer();
    const recordTs = scan.after(',"ts":').integer();
    if (seqno !== first + j || recordTs < ts) scan.fail("seqno or ts");
    ts = recordTs;
    const ct = Uint8Array.fromBase64(scan.after(',"ct":').base64(), STRICT);
    const c = Uint8Array.fromBase64(scan.after(',"c":').base64(), STRICT);
    if (ct.length < 16 || ct.length > 24576 || c.length !== HASH_BYTES) scan.fail("ct or c");
    scan.literal('},"e2e":{"kind":"sender","from":"');
    scan.hex(16);
    scan.after('","id":').integer();
    scan.after(',"n":').integer();
    const w = Uint8Array.fromBase64(scan.after(',"w":').base64(), STRICT);
    if (w.length !== 48) scan.fail("w");
    scan.literal("}}");
    leaves.push(leafScratch.use((out) =>
      sha256(
        out.bytes(LEAF_PREFIX).hex(sid).u8(C2S).u32(LOBBY_BYTES.length).bytes(LOBBY_BYTES)
          .u64(seqno).u64(recordTs).bytes(c).bytes(sha256(ct)).done(),
      )
    ));
    indices.push(j);
  }
  scan.literal("]}");
  if (scan.at !== text.length || leaves.length > n) scan.fail("trailing text");
  const root = groupRoot(leaves, indices, n, proof) ?? scan.fail("proof");
  const verdict = verifyNow(author.key, batchStatement(sid, first, n, root), sig);
  const checked = new SketchChecked(content.slice(), tailAt, leaves.length, ts);
  if (verdict instanceof Promise) {
    return verdict.then((ok) => ok ? checked : scan.fail("signature"));
  }
  return verdict ? checked : scan.fail("signature");
}

const leafScratch = new ScratchBytes(1024);
/** lib's acceptance of base64: canonical, padded (lib/bytes.ts fromBase64). */
const STRICT = { lastChunkHandling: "strict" } as const;

/** A cursor over canonical JSON text (ASCII, no escape). */
class Scan {
  at = 0;
  constructor(readonly text: string) {}

  fail(why: string): never {
    throw new Error(`in-place sketch: ${why} at ${this.at}`);
  }

  peek(): number {
    return this.text.charCodeAt(this.at);
  }

  holds(part: string): boolean {
    if (this.text.slice(this.at, this.at + part.length) !== part) return false;
    this.at += part.length;
    return true;
  }

  literal(part: string): void {
    if (!this.holds(part)) this.fail(`not ${part}`);
  }

  after(part: string): this {
    this.literal(part);
    return this;
  }

  integer(): number {
    const start = this.at;
    while (this.at < this.text.length) {
      const code = this.text.charCodeAt(this.at);
      if (code < 0x30 || code > 0x39) break;
      this.at++;
    }
    if (this.at === start || this.at - start > 15) this.fail("an integer");
    return Number(this.text.slice(start, this.at));
  }

  /** A quoted base64 member's text (decoded, strictly, by the caller). */
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

/** One recipient's relay of a msg read in place: its JSON head, then the msg's text from `"sig"`. */
export class InPlaceRelay implements Encodable {
  readonly length: number;
  readonly #head: Uint8Array;

  constructor(
    readonly msg: SketchChecked,
    seqno: number,
    ts: number,
    authorFingerprint: string,
    certBase64: string | undefined,
  ) {
    const cert = certBase64 === undefined ? "" : `"cert":"${certBase64}",`;
    this.#head = utf8(
      `{"type":"relay","seqno":${seqno},"ts":${ts},"author_fp":"${authorFingerprint}",${cert}`,
    );
    this.length = this.#head.length + msg.tail.length;
  }

  writeTo(out: ByteBuilder): void {
    out.bytes(this.#head).bytes(this.msg.tail);
  }
}
