/**
 * The message record (PROTOCOL §6.1, TRANSCRIPT §2.2, §3.1, §6): the one home of
 * what an author says — its JSON form, the content key / ciphertext / commitment,
 * the signed statement, the signature check, the session messages that carry it
 * (`msg`, `relay`, `stored`, `queued`, `refused`), their transcript lines and hash encodings. session/,
 * server/ and transcript/ all import it; nothing else builds or checks a record.
 */
import { canonicalName, isCanonicalUserName } from "../pki/names.ts";
import { sha256 } from "#sync-crypto";
import {
  Base64Batch,
  ByteBuilder,
  concat,
  decodeBase64Into,
  type Encodable,
  fromBase64,
  fromBase64Each,
  fromUtf8,
  randomBytes,
  ScratchBytes,
  timingSafeEqual,
  toBase64,
  u32be,
  u64be,
  utf8,
  utf8Length,
} from "../bytes.ts";
import { openChaCha20Poly1305, sealChaCha20Poly1305 } from "../crypto/aead.ts";
import { hmacSha256Sync } from "../crypto/hkdf.ts";
import { sign, type SigningKey, type VerifyingKey, verifyNow } from "../crypto/signature.ts";
import { SecureChatError } from "../errors.ts";
import { MAX_CONTENT_BYTES } from "../handshake/record.ts";
import {
  base64Decoded,
  base64Text,
  byType,
  fail,
  isTrue,
  list,
  literal,
  lowerHex,
  members,
  nested,
  type Path,
  type Shape,
  shape,
  text as textMember,
  uint,
} from "../wire/shape.ts";
import { parseStrictJson } from "../wire/strict_json.ts";
import { hasNoEscape, jsonAt, literalAt } from "../wire/canonical_text.ts";
import { base64Text as zodBase64Text, canonicalBase64Length } from "../wire/schema.ts";
import { z } from "zod";
import {
  BundleJsonSchema,
  DeviceIdSchema,
  type E2eEnvelope,
  E2eEnvelopeShape,
  MAX_DEVICES,
  MAX_PREKEYS_PER_PUBLISH,
  OneTimePrekeyJsonSchema,
  SenderKeyDistributionJsonSchema,
  WRAPPED_KEY_BYTES,
} from "../e2e/envelope.ts";

/**
 * The version a record's statement and a batch statement carry (PROTOCOL §6.1): their layout's,
 * not the wire's (lib/wire/messages.ts PROTOCOL_VERSION), so a signature made under wire version 2
 * verifies as it always did.
 */
export const STATEMENT_VERSION = 2;

export type Direction = "c2s" | "s2c";
export const DIRECTION_BYTE: Record<Direction, number> = { c2s: 0x01, s2c: 0x02 };

export const CONTENT_KEY_BYTES = 32;
/**
 * The most bytes a `c2s` record's `ct` holds (PROTOCOL §6.1 "Bounds"): every honest body fits
 * (the largest, a `text` of MAX_TEXT_CHARS units each written `\uXXXX`, makes 24,041), and a
 * relay or `stored` of any one such record alone, its author's certificate introduced, fits one
 * record (§3.2) with a `k` or `sender` carrier; {@link loneRelayBytes} checks the rest.
 */
export const MAX_CT_BYTES = 24 * 1024;
/** A server's own record is never relayed or stored: only the frame bounds its `ct` (§6.1). */
export const MAX_S2C_CT_BYTES = 64 * 1024;
export const MAX_SIG_BYTES = 1024;
export const MAX_CERT_BYTES = 16 * 1024;
export const MAX_TEXT_CHARS = 4000;
export const MAX_TO_CHARS = 80;
/**
 * The oldest a `stored` record may be (PROTOCOL §6.6): a server keeps queued records at most
 * this long, and recipients keep their duplicate marks for private records as long.
 */
export const MAX_STORED_AGE_MS = 30 * 24 * 60 * 60 * 1000;

const LABEL = {
  contentKey: utf8("securechat/v2 content key\0"),
  contentAad: utf8("securechat/v2 content"),
  commitment: utf8("securechat/v2 commitment\0"),
  statement: utf8("securechat/v2 message\0"),
  batch: utf8("securechat/v2 message batch\0"),
} as const;

// ---- recipients (PROTOCOL §6.1) ----

export const LOBBY = "lobby";
export const TO_SERVER = "server";
const USER_PREFIX = "user:";

// One canonical form of a user name everywhere (PKI.md "Names"): its home is lib/pki/names.ts.
export { canonicalName };

/** `user:<canonical name>`: the recipient set of one user. */
export function userRecipient(name: string): string {
  return USER_PREFIX + canonicalName(name);
}

/** The canonical user a recipient set names, or null for `lobby` / `server` / anything else. */
export function recipientUser(to: string): string | null {
  if (!to.startsWith(USER_PREFIX)) return null;
  const name = to.slice(USER_PREFIX.length);
  return isCanonicalUserName(name) ? name : null;
}

/** Recipient sets a client may address. */
export function isClientRecipient(to: string): boolean {
  return to === LOBBY || to === TO_SERVER || recipientUser(to) !== null;
}

// ---- bodies (PROTOCOL §6.2) ----

/** Stored lines one `received` may name as unread: a batch of a full queue. */
export const MAX_UNREAD = 1000;

const userName = z.string().regex(/^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$/);
/** Names one `members` body lists at most (64 KiB frames; names are at most 32 characters). */
export const MAX_MEMBERS_PER_BODY = 1000;

// The end-to-end key directory (PROTOCOL §12.6), one entry per (user, device), and lobby
// membership for end-to-end clients (§12.5). Off the per-line hot path, so kept in zod.
const KeysPublishBodySchema = z.object({
  kind: z.literal("keys_publish"),
  device: DeviceIdSchema,
  bundle: BundleJsonSchema.optional(),
  opks: z.array(OneTimePrekeyJsonSchema).max(MAX_PREKEYS_PER_PUBLISH),
  /** With a bundle: the device takes lobby sender keys and `members` bodies (§12.5). */
  lobby: z.literal(true).optional(),
}).strict();
const KeysFetchBodySchema = z.object({
  kind: z.literal("keys_fetch"),
  user: userName,
  /** Devices the asker has sessions with: listed in the answer without keys. */
  known: z.array(DeviceIdSchema).max(MAX_DEVICES).optional(),
}).strict();
const KeysBodySchema = z.object({
  kind: z.literal("keys"),
  user: userName,
  /** To a fetch: the user's devices, each with its keys unless the asker knew it. */
  devices: z.array(
    z.object({
      device: DeviceIdSchema,
      cert: zodBase64Text(1, MAX_CERT_BYTES).optional(),
      bundle: BundleJsonSchema.optional(),
      opk: OneTimePrekeyJsonSchema.optional(),
      lobby: z.literal(true).optional(),
    }).strict(),
  ).max(MAX_DEVICES).optional(),
  /** The list goes on in the next `keys` body: it did not fit one record (§12.6). */
  more: z.literal(true).optional(),
  /** To a publish: the publishing device and its one-time prekeys left (to replenish). */
  device: DeviceIdSchema.optional(),
  opks_left: z.number().int().min(0).max(0xffff_ffff).optional(),
}).strict().refine(
  // Exactly one of PROTOCOL §12.6's three: `devices` (a fetch's answer), `device` with
  // `opks_left` (a publish's answer or a low-prekeys notice), or neither (the store failed).
  // Anything else would be read as one of them by one client and as another by the next
  // (interop finding 78).
  (b) =>
    b.devices !== undefined
      ? b.device === undefined && b.opks_left === undefined
      : (b.device === undefined) === (b.opks_left === undefined),
  { message: "a keys body is devices, or device with opks_left, or neither", path: ["device"] },
).refine(
  // A part of a list that goes on holds at least one device (PROTOCOL §12.6).
  (b) => b.more === undefined || (b.devices?.length ?? 0) > 0,
  { message: "more goes only with one or more devices", path: ["more"] },
);
const SenderKeyBodySchema = z.object({
  kind: z.literal("sender_key"),
  ...SenderKeyDistributionJsonSchema.shape,
}).strict();
// `online` lists who is there (the snapshot after a device publishes, in chunks, every one but
// the last marked `more`: a client waits for the whole list before its first lobby line);
// `joined` and `left` are changes.
const MembersBodySchema = z.object({
  kind: z.literal("members"),
  event: z.enum(["online", "joined", "left"]),
  users: z.array(userName).min(1).max(MAX_MEMBERS_PER_BODY),
  more: z.literal(true).optional(),
}).strict().refine((b) => b.more === undefined || b.event === "online", {
  message: "only an online list comes in chunks",
  path: ["more"],
});

/**
 * Who is in the lobby, as the `members` bodies that tell it (PROTOCOL §12.5): chunks of at
 * most {@link MAX_MEMBERS_PER_BODY} names, each but the last marked `more`, so the receiver
 * knows when it has the whole list.
 */
export function onlineBodies(names: readonly string[]): Extract<Body, { kind: "members" }>[] {
  const bodies: Extract<Body, { kind: "members" }>[] = [];
  for (let i = 0; i < names.length; i += MAX_MEMBERS_PER_BODY) {
    const users = names.slice(i, i + MAX_MEMBERS_PER_BODY);
    const more = i + MAX_MEMBERS_PER_BODY < names.length;
    bodies.push({ kind: "members", event: "online", users, ...(more ? { more } : {}) });
  }
  return bodies;
}

/** One device of a fetch's answer (PROTOCOL §12.6). */
export type ListedDevice = NonNullable<z.output<typeof KeysBodySchema>["devices"]>[number];

/**
 * A fetch's answer, `user`'s `devices`, as the `keys` bodies that carry it (PROTOCOL §12.6):
 * as many devices in each as fit one server record, each but the last marked `more`. With
 * our certificates one body is the rule; eight devices under 16 KiB certificates take eight.
 */
export function keysBodies(
  user: string,
  devices: readonly ListedDevice[],
): Extract<Body, { kind: "keys" }>[] {
  const bodies: Extract<Body, { kind: "keys" }>[] = [];
  let part: ListedDevice[] = [];
  // The JSON of {"kind":"keys","user":…,"devices":[…],"more":true}: its entries, commas
  // between them, and the rest.
  const head = JSON.stringify({ kind: "keys", user, devices: [], more: true }).length;
  let bytes = head;
  for (const device of devices) {
    const entry = JSON.stringify(device).length; // ASCII: base64, hex, names, numbers
    if (head + entry > MAX_SERVER_BODY_BYTES) {
      // The schema's bounds make every entry fit (about 27 KB at their largest).
      throw new SecureChatError("INTERNAL", `a device entry of ${entry} bytes fits no record`);
    }
    const joined = bytes + entry + (part.length ? 1 : 0);
    if (part.length && joined > MAX_SERVER_BODY_BYTES) {
      bodies.push({ kind: "keys", user, devices: part, more: true });
      part = [];
      bytes = head + entry;
    } else {
      bytes = joined;
    }
    part.push(device);
  }
  bodies.push({ kind: "keys", user, devices: part });
  return bodies;
}

export type Body =
  | { kind: "text"; text: string }
  | { kind: "who" }
  | { kind: "notice"; text: string }
  | { kind: "operator"; text: string; private?: true }
  // The recipient holds every `stored` line up to this s2c seqno, and could not open those
  // in `unread` (another of its devices may; PROTOCOL §6.6).
  | { kind: "received"; upto: number; unread?: number[] }
  | z.output<typeof KeysPublishBodySchema>
  | z.output<typeof KeysFetchBodySchema>
  | z.output<typeof KeysBodySchema>
  | z.output<typeof SenderKeyBodySchema>
  | z.output<typeof MembersBodySchema>;

/** A body (PROTOCOL §6.2), by its `kind`. */
export const BodyShape: Shape<Body> = byType<Body>({
  text: shape((v, p) => ({ kind: "text", text: bodyText(members(v, p, ["kind", "text"]), p) })),
  who: shape((v, p) => (members(v, p, ["kind"]), { kind: "who" })),
  notice: shape((v, p) => ({
    kind: "notice",
    text: bodyText(members(v, p, ["kind", "text"]), p),
  })),
  operator: shape((v, p) => {
    const o = members(v, p, ["kind", "text"], ["private"]);
    const body: Body = { kind: "operator", text: bodyText(o, p) };
    if (o.private !== undefined) body.private = isTrue(o.private, p, "private");
    return body;
  }),
  received: shape((v, p) => {
    const o = members(v, p, ["kind", "upto"], ["unread"]);
    const body: Body = { kind: "received", upto: uint(o.upto, p, "upto", 1) };
    if (o.unread !== undefined) {
      const unread = list(o.unread, p, "unread", MAX_UNREAD);
      body.unread = unread.map((seqno, i) => uint(seqno, [...p, "unread"], i, 1));
    }
    return body;
  }),
  keys_publish: KeysPublishBodySchema,
  keys_fetch: KeysFetchBodySchema,
  keys: KeysBodySchema,
  sender_key: SenderKeyBodySchema,
  members: MembersBodySchema,
}, "kind");

function bodyText(o: Record<string, unknown>, p: Path): string {
  return textMember(o.text, p, "text", 1, MAX_TEXT_CHARS);
}

/**
 * Which bodies each direction may carry, and to whom (PROTOCOL §6.2, §12.6). `e2e`: the
 * body travels end to end (the server never sees it; only its recipient checks this).
 */
export function bodyFits(body: Body, dir: Direction, to: string, e2e = false): boolean {
  if (dir === "s2c") {
    return body.kind === "notice" || body.kind === "operator" || body.kind === "keys" ||
      body.kind === "members";
  }
  if (e2e) {
    if (body.kind === "text") return to === LOBBY || recipientUser(to) !== null;
    return body.kind === "sender_key" && recipientUser(to) !== null;
  }
  const toServer = ["who", "received", "keys_publish", "keys_fetch"] as const;
  if ((toServer as readonly string[]).includes(body.kind)) return to === TO_SERVER;
  if (body.kind === "text") return to === LOBBY || recipientUser(to) !== null;
  return false;
}

/**
 * Which end-to-end envelope a user's record may carry (PROTOCOL §12.6): a private record's
 * `k` is wrapped per recipient device (`ratchet`), a lobby record's under the author's sender
 * chain (`sender`). Anything else — a lobby line only some devices can open, or a private line
 * under a key every lobby member holds — no honest client sends, so the server refuses it and
 * a recipient that is handed one anyway refuses it too (PROTOCOL_ERROR).
 */
export function envelopeFits(e2e: E2eEnvelope, to: string): boolean {
  return e2e.kind === "sender" ? to === LOBBY : recipientUser(to) !== null;
}

// ---- the record ----

const DIRECTIONS: readonly Direction[] = ["c2s", "s2c"];

/** A record as JSON (binary fields as base64 text), PROTOCOL §6.1. */
export interface RecordJson {
  sid: string;
  dir: Direction;
  to: string;
  seqno: number;
  ts: number;
  ct: string;
  c: string;
  sig?: string;
  batch?: BatchJson;
}

/** A record's place in the batch its signature covers, as JSON (PROTOCOL §6.1). */
export interface BatchJson {
  i: number;
  n: number;
  path: string[];
}

// A record is checked at every party for every line: its shapes allocate only what they return
// (member lists made once, paths spelled out for a message's own record, built only elsewhere).
const RECORD_MEMBERS = ["sid", "dir", "to", "seqno", "ts", "ct", "c"];
const RECORD_OPTIONAL = ["sig", "batch"];
const BATCH_MEMBERS = ["i", "n", "path"];
const RECORD_AT: Path = ["record"];
const BATCH_AT: Path = ["record", "batch"];
const PATH_AT: Path = ["record", "batch", "path"];

/** Checks a record's JSON form: exactly its members, each within its bounds. */
function recordJson(value: unknown, path: Path): RecordJson {
  const o = members(value, path, RECORD_MEMBERS, RECORD_OPTIONAL);
  const json = recordCore(o, path);
  if (o.sig !== undefined) json.sig = base64Text(o.sig, path, "sig", 1, MAX_SIG_BYTES);
  if (o.batch !== undefined) {
    json.batch = batchJson(o.batch, path === RECORD_AT ? BATCH_AT : [...path, "batch"], json.seqno);
  }
  if ((json.sig === undefined) !== (json.batch === undefined)) {
    fail(path, json.sig === undefined ? "batch" : "sig", "a record has sig and batch, or neither");
  }
  return json;
}

/**
 * A record in a relay's `records` (PROTOCOL §6.4): without `sig` and `batch`, which the relay
 * carries once for all its records (either here is an unrecognized member).
 */
function relayedRecordJson(value: unknown, path: Path, into?: Base64Batch): RecordJson {
  return recordCore(members(value, path, RECORD_MEMBERS), path, into);
}

/**
 * The members every record has; `ct` and `c` decoded into `into` as they are checked, when given
 * (a user's msg at the server, which uses them all as bytes).
 */
function recordCore(o: Record<string, unknown>, path: Path, into?: Base64Batch): RecordJson {
  const sid = lowerHex(o.sid, path, "sid", 32);
  const dir = literal(o.dir, path, "dir", DIRECTIONS);
  const to = textMember(o.to, path, "to", 1, MAX_TO_CHARS);
  const seqno = uint(o.seqno, path, "seqno", 1);
  const ts = uint(o.ts, path, "ts");
  const maxCt = dir === "c2s" ? MAX_CT_BYTES : MAX_S2C_CT_BYTES;
  if (into) {
    const ct = base64Decoded(o.ct, path, "ct", 16, maxCt, into);
    return { sid, dir, to, seqno, ts, ct, c: base64Decoded(o.c, path, "c", 32, 32, into) };
  }
  const ct = base64Text(o.ct, path, "ct", 16, maxCt);
  return { sid, dir, to, seqno, ts, ct, c: base64Text(o.c, path, "c", 32, 32) };
}

/** `batch`'s bounds (PROTOCOL §6.1): whether the path fits `i` and `n` is the signature check's. */
function batchJson(value: unknown, path: Path, seqno: number): BatchJson {
  const o = members(value, path, BATCH_MEMBERS);
  const n = uint(o.n, path, "n", 1);
  if (n > MAX_BATCH) fail(path, "n", `expected 1..${MAX_BATCH}`);
  const i = uint(o.i, path, "i");
  if (i >= n) fail(path, "i", "expected below n");
  if (i >= seqno) {
    fail(path, "i", "expected below the record's seqno (the batch starts at seqno 1 or later)");
  }
  const entries = list(o.path, path, "path", MAX_PATH);
  const at = path === BATCH_AT ? PATH_AT : [...path, "path"];
  const hashes = entries.map((entry, j) => base64Text(entry, at, j, HASH_BYTES, HASH_BYTES));
  return { i, n, path: hashes };
}
export const RecordJsonShape: Shape<RecordJson> = shape(recordJson);

/** A record with its binary fields decoded. */
export interface MessageRecord {
  sid: string;
  dir: Direction;
  to: string;
  seqno: number;
  ts: number;
  ct: Uint8Array;
  c: Uint8Array;
  sig?: Uint8Array;
  batch?: BatchPosition;
}

/** A record's place in its signed batch (PROTOCOL §6.1). */
export interface BatchPosition {
  /** Its index in the batch: the batch starts at seqno − i. */
  i: number;
  /** The batch's size, 1..MAX_BATCH. */
  n: number;
  /** The RFC 9162 inclusion path of leaf i among n, nearest the leaf first. */
  path: Uint8Array[];
}

/** The record with its binary members decoded, into one buffer (lib/bytes fromBase64Each). */
export function decodeRecord(json: RecordJson): MessageRecord {
  const texts = [json.ct, json.c];
  if (json.sig !== undefined) texts.push(json.sig);
  const pathAt = texts.length;
  if (json.batch !== undefined) texts.push(...json.batch.path);
  const bytes = fromBase64Each(texts);
  const r: MessageRecord = {
    sid: json.sid,
    dir: json.dir,
    to: json.to,
    seqno: json.seqno,
    ts: json.ts,
    ct: bytes[0],
    c: bytes[1],
  };
  if (json.sig !== undefined) r.sig = bytes[2];
  if (json.batch !== undefined) {
    r.batch = { i: json.batch.i, n: json.batch.n, path: bytes.slice(pathAt) };
  }
  return r;
}

/** The JSON form, members in the order of PROTOCOL §6.1. */
export function encodeRecord(r: MessageRecord): RecordJson {
  const json: RecordJson = {
    sid: r.sid,
    dir: r.dir,
    to: r.to,
    seqno: r.seqno,
    ts: r.ts,
    ct: toBase64(r.ct),
    c: toBase64(r.c),
  };
  if (r.sig) json.sig = toBase64(r.sig);
  if (r.batch) json.batch = { i: r.batch.i, n: r.batch.n, path: r.batch.path.map(toBase64) };
  return json;
}

const SID_BYTES = 16;

/** The bytes that bind a record: the leaf of its batch (PROTOCOL §6.1), hashed by §12.6's binding. */
export function statement(r: MessageRecord): Uint8Array {
  const out = new ByteBuilder(256);
  writeStatement(out, r, sha256(r.ct));
  return out.done();
}

/** statement(r) written in place, with SHA-256(ct) already computed. */
function writeStatement(out: ByteBuilder, r: MessageRecord, ctDigest: Uint8Array): void {
  out.bytes(LABEL.statement).u32(STATEMENT_VERSION);
  const sidAt = out.length;
  out.hex(r.sid);
  // Every other field has its size by construction; a sid of another length would shift what
  // is signed.
  if (out.length - sidAt !== SID_BYTES) throw new RangeError("encoding length mismatch");
  out.u8(DIRECTION_BYTE[r.dir]).textWithLength(r.to).u64(r.seqno).u64(r.ts).bytes(r.c)
    .bytes(ctDigest);
}

/**
 * A record as it was received, with the two serialisations of it that its holder's own
 * transcript line and every relay of it share (TRANSCRIPT §3.1): its JSON text as UTF-8, and
 * record_enc. Both are laid out once, into one buffer, when first needed, however many lines
 * and relays use them: no JSON string of the record is made, and a relay's wire content and
 * line copy these bytes (RecipientRelay).
 */
export class RecordForms {
  #bytes?: Uint8Array;
  #encoding?: Uint8Array;

  /**
   * @param group the user's msg the record came in, when the server received it so: the record
   *   and its JSON are whole (ReceivedGroup.whole), its path derived from the msg when read
   */
  constructor(
    readonly record: MessageRecord,
    readonly json: RecordJson,
    readonly group?: ReceivedGroup,
    /**
     * The relayed form, when the record came in a msg (ReceivedGroup.whole): its JSON text as
     * received or laid out when first read, its record_enc a view of its msg's group_enc.
     */
    relayed?: { readonly bytes: Uint8Array; readonly encoding: Uint8Array },
  ) {
    this.#relayed = relayed;
  }

  /** The record's JSON text as UTF-8: exactly `JSON.stringify(json)` (writeRecordJson). */
  get bytes(): Uint8Array {
    if (!this.#bytes) this.#layOut();
    return this.#bytes!;
  }

  /** record_enc(record) */
  get encoding(): Uint8Array {
    if (!this.#encoding) this.#layOut();
    return this.#encoding!;
  }

  #layOut(): void {
    const { record, json } = this;
    const out = new ByteBuilder(recordEncodingBound(record) + recordJsonBound(json));
    writeRecordEncoding(out, record);
    const split = out.length;
    writeRecordJson(out, json);
    const both = out.done();
    this.#encoding = both.subarray(0, split);
    this.#bytes = both.subarray(split);
  }

  /**
   * The length of {@link bytes}: for a record of a received msg, counted from its relayed form
   * and its batch's members without laying it out (its path is derived only when it is).
   */
  get wholeLength(): number {
    const { group, record, json } = this;
    if (!group || this.#bytes) return this.bytes.length;
    const { i, n } = record.batch!;
    const entries = pathLength(i, n);
    // `","sig":"<sig>` after `c`, then `,"batch":{"i":I,"n":N,"path":["<hash>",…]}`.
    return this.relayed.bytes.length + WHOLE_SIG_MEMBER.length + json.sig!.length +
      WHOLE_BATCH_MEMBERS.length + `${i}`.length + `${n}`.length +
      hashListJsonBytes(entries);
  }

  /**
   * The record as a relay carries it (PROTOCOL §6.4), without `sig` and `batch`: its JSON text
   * and record_enc, laid out once, into one buffer, at its first relay.
   */
  get relayed(): { readonly bytes: Uint8Array; readonly encoding: Uint8Array } {
    return this.#relayed ??= layOutRelayed(this.record, this.json);
  }

  #relayed?: { readonly bytes: Uint8Array; readonly encoding: Uint8Array };
}

/**
 * The relayed form of record `j` of a received msg: its JSON text as received when the msg's
 * text was canonical (receivedItems), else laid out when first read; its record_enc a view of
 * the msg's group_enc (ReceivedGroup.groupEncoding), not a buffer of its own.
 */
class ReceivedRelayedForm {
  #bytes?: Uint8Array;

  constructor(
    readonly group: ReceivedGroup,
    readonly j: number,
    readonly json: RecordJson,
    received?: Uint8Array,
  ) {
    this.#bytes = received;
  }

  get bytes(): Uint8Array {
    if (this.#bytes) return this.#bytes;
    const { sig: _sig, batch: _batch, ...bare } = this.json;
    const out = new ByteBuilder(recordJsonBound(bare));
    writeRecordJson(out, bare);
    return this.#bytes = out.done();
  }

  get encoding(): Uint8Array {
    return this.#encoding ??= this.group.relayedEncodingOf(this.j);
  }

  #encoding?: Uint8Array;
}

/** What writeRecordJson adds for `sig` and `batch` around their values (RecordForms.wholeLength). */
const WHOLE_SIG_MEMBER = '","sig":"';
const WHOLE_BATCH_MEMBERS = ',"batch":{"i":,"n":,"path":[]}';

/**
 * A user's msg as the server received and checked it (PROTOCOL §6.3): the batch's members once,
 * its records. Each record is made whole as its author signed it (`sig`, `batch` `{i, n, path}`),
 * for what keeps one record alone — a `stored` (§6.6), the cluster's stream — but its path is
 * derived from the msg's records and proof (groupPaths: the hashing of one root, for all of
 * them) only when something reads it: a relay carrying all the msg's records takes the msg's
 * proof as it is, so a delivery pays for no path nobody needs.
 */
export class ReceivedGroup {
  readonly batchParts: BatchParts;
  #paths?: Uint8Array[][];
  #pathTexts: (string[] | undefined)[] = [];
  #proofParts?: { json: Uint8Array; enc: Uint8Array };

  /**
   * @param message the msg's batch members as received (JSON)
   * @param group the same, decoded
   * @param records the msg's records as decoded (without `sig` and `batch`), in order
   * @param leaves their leaf hashes
   * @param received the msg's records as received, when its text is its canonical form
   *   (receivedItems): each record's JSON and carrier taken as they came, never written again
   */
  constructor(
    readonly message: { sig: string; first: number; n: number; proof: readonly string[] },
    readonly group: GroupParts,
    readonly records: readonly MessageRecord[],
    readonly leaves: readonly Uint8Array[],
    readonly received?: ReceivedItems,
  ) {
    const { sig, first, n } = group;
    this.batchParts = makeBatchParts(records[0].sid, message.sig, sig, first, n);
  }

  /**
   * Record `j`'s carrier as received, `,"k":…}` or `,"e2e":…}` (what ends a `stored` after its
   * record), when the msg came in its canonical form.
   */
  carrier(j: number): Uint8Array | undefined {
    return this.received?.items[j].carrier;
  }

  /**
   * Record `j` and its JSON (`json`, as received) made whole, in place: `sig` and `batch`, whose
   * `path` is derived when first read. The forms a relay, a `stored` and the cluster share; the
   * relayed form's JSON taken as received when the msg came in its canonical form.
   */
  whole(j: number, json: RecordJson): RecordForms {
    const record = this.records[j];
    const { sig, first, n } = this.group;
    const i = record.seqno - first;
    record.sig = sig;
    record.batch = new DerivedPosition(this, j, i, n);
    json.sig = this.message.sig;
    json.batch = new DerivedBatchJson(this, j, i, n);
    return new RecordForms(
      record,
      json,
      this,
      new ReceivedRelayedForm(this, j, json, this.received?.items[j].record),
    );
  }

  /**
   * About what this group keeps alive, in bytes: every record of its msg, as parsed (the JSON's
   * text, an envelope's too), as decoded (`ct` as bytes), when its text was canonical as received
   * (its records' bytes copied out: receivedItems), and its carrier as a relay writes it
   * (binaryCarrierOf). A relay made from one of them keeps it all (its RecordForms keep the
   * group), which a bound on what is held must count (review17 R17-5: a short lobby line in a msg
   * of large records to `server`).
   */
  get retainedBytes(): number {
    if (this.#retained === undefined) {
      let bytes = this.received?.bytes.length ?? 0;
      for (let j = 0; j < this.records.length; j++) {
        const ct = this.records[j].ct.length;
        const item = (this.message as { records?: RelayItem[] }).records?.[j];
        const envelope = item && "e2e" in item ? JSON.stringify(item.e2e).length : 0;
        bytes += ct + base64Length(ct) + RETAINED_RECORD_BYTES + envelope +
          (item ? binaryCarrierLength(item) : 0);
      }
      this.#retained = bytes;
    }
    return this.#retained;
  }
  #retained?: number;

  /**
   * Whether a group message's items are exactly this msg's records, in order: then its line_enc
   * ends in this msg's groupDigest, so nothing less than this may pass.
   */
  carriesAll(items: readonly GroupItem[]): boolean {
    if (items.length !== this.records.length) return false;
    for (let j = 0; j < items.length; j++) {
      const { forms } = items[j];
      if (forms.group !== this || forms.record !== this.records[j]) return false;
    }
    return true;
  }

  /** The msg's proof as a group message writes it. */
  get proofParts(): { json: Uint8Array; enc: Uint8Array } {
    return this.#proofParts ??= proofParts(this.group.proof);
  }

  /**
   * group_enc of the whole msg (TRANSCRIPT §3.1: the batch's members, the proof, every record
   * without `sig` and `batch`), laid out once, into one buffer, when first needed: its digest is
   * what the author's line and every relay carrying the whole msg hash (groupDigest), and each
   * record's relayed record_enc is a view of it — not a buffer per record per msg, each fresh
   * native memory (docs/PERFORMANCE.md, "Session 18: a msg's group_enc once").
   */
  get groupEncoding(): Uint8Array {
    if (!this.#encoding) this.#layOutEncoding();
    return this.#encoding!;
  }

  /**
   * SHA-256 of groupEncoding, once per msg: what the author's line and every relay of the whole msg
   * put in their line_enc (TRANSCRIPT §3.1 group_digest), so no recipient's line hashes the records
   * again.
   */
  get groupDigest(): Uint8Array {
    return this.#digest ??= sha256(this.groupEncoding);
  }

  #digest?: Uint8Array;

  /**
   * Record `j`'s carrier in a relay's binary layout (PROTOCOL §6.4 "A relay on the wire"), `items`
   * the msg's records with their keys (the same on every call: the first lays them all out): a
   * view of one buffer of all the msg's carriers, exactly their size (retainedBytes counts it),
   * which a relay of the whole msg writes in one piece (carriersWhole).
   */
  binaryCarrierOf(j: number, items: readonly RelayItem[]): Uint8Array {
    if (!this.#carriers) {
      let length = 0;
      for (const item of items) length += binaryCarrierLength(item);
      const out = new ByteBuilder(length);
      const starts = [0];
      for (const item of items) {
        writeBinaryCarrier(out, "e2e" in item ? { e2e: item.e2e } : { k: fromBase64(item.k) });
        starts.push(out.length);
      }
      const block = out.done();
      this.#carriers = block;
      this.#carrierViews = items.map((_, i) => block.subarray(starts[i], starts[i + 1]));
    }
    return this.#carrierViews[j];
  }

  /** Whether each item's carrier is this msg's view for its place: then they are #carriers whole. */
  carriersWhole(items: readonly { readonly carrier: Uint8Array }[]): Uint8Array | undefined {
    const views = this.#carrierViews;
    if (!this.#carriers || items.length !== views.length) return undefined;
    for (let j = 0; j < items.length; j++) if (items[j].carrier !== views[j]) return undefined;
    return this.#carriers;
  }

  #carriers?: Uint8Array;
  #carrierViews: Uint8Array[] = [];

  /** Record `j`'s record_enc as relayed (without `sig` and `batch`): a view of groupEncoding. */
  relayedEncodingOf(j: number): Uint8Array {
    const whole = this.groupEncoding;
    return whole.subarray(this.#recordStarts[j], this.#recordStarts[j + 1]);
  }

  #encoding?: Uint8Array;
  /** Where each record's record_enc starts in #encoding, and where the last one ends. */
  #recordStarts: number[] = [];

  #layOutEncoding(): void {
    const { records } = this;
    const batch = this.batchParts.enc;
    const proof = this.proofParts.enc;
    let bound = batch.length + proof.length + 1;
    for (const r of records) bound += recordEncodingBound(r, true);
    const out = new ByteBuilder(bound).bytes(batch).bytes(proof).u8(records.length);
    const starts: number[] = [];
    for (const r of records) {
      starts.push(out.length);
      writeRecordEncoding(out, r, true);
    }
    starts.push(out.length);
    this.#recordStarts = starts;
    this.#encoding = out.done();
  }

  /** Record `j`'s path in its batch as base64 text, derived when first read. */
  pathTextOf(j: number): string[] {
    return this.#pathTexts[j] ??= this.pathOf(j).map(toBase64);
  }

  /** Record `j`'s path in its batch, derived (for all the msg's records) when first read. */
  pathOf(j: number): Uint8Array[] {
    const { first, n, proof } = this.group;
    this.#paths ??= groupPaths(this.leaves, this.records.map((r) => r.seqno - first), n, proof) ??
      undefined;
    if (!this.#paths) {
      // Its root was checked from these: a caller's bug.
      throw new SecureChatError("INTERNAL", "a received msg's proof does not fit its records");
    }
    return this.#paths[j];
  }
}

/**
 * A received record's `batch` member as JSON (BatchJson), its `path` derived from its msg when
 * first read (ReceivedGroup.pathTextOf) and written by JSON.stringify (toJSON: the cluster's
 * stream and the offline queue carry this JSON) as `{"i":…,"n":…,"path":[…]}`. Not an own
 * member: a spread or structuredClone of it has no `path` (encodeClusterRecord says so).
 *
 * A class, not an object literal with a getter. V8 gives each such literal an AccessorPair (and
 * a property dictionary) of its own, since its getter is a new closure each time, and makes
 * AccessorPairs in the old generation: each record's dead pair there still pointed at the young
 * getter and through it at the record's whole msg, so a scavenge kept every msg in flight alive
 * and promoted it (docs/PERFORMANCE.md, session 20: ~2.6 MB promoted per scavenge of the goal row,
 * the old generation growing until a mark-compact, the server's RSS by ~45 MiB).
 * tests/die_young_test.ts holds what a msg's records make to dying young.
 */
class DerivedBatchJson implements BatchJson {
  readonly #group: ReceivedGroup;
  readonly #j: number;

  constructor(group: ReceivedGroup, j: number, readonly i: number, readonly n: number) {
    this.#group = group;
    this.#j = j;
  }

  get path(): string[] {
    return this.#group.pathTextOf(this.#j);
  }

  toJSON(): { i: number; n: number; path: string[] } {
    return { i: this.i, n: this.n, path: this.path };
  }
}

/**
 * A received record's place in its batch (ReceivedGroup.whole): its path derived from its msg
 * when first read. A class, not an object literal with a getter: one is made per record, and a
 * literal with a getter costs an AccessorPair in V8's old generation each time (see
 * DerivedBatchJson).
 */
class DerivedPosition implements BatchPosition {
  readonly #group: ReceivedGroup;
  readonly #j: number;

  constructor(group: ReceivedGroup, j: number, readonly i: number, readonly n: number) {
    this.#group = group;
    this.#j = j;
  }

  get path(): Uint8Array[] {
    return this.#group.pathOf(this.#j);
  }
}

/**
 * One record of a user's msg as received, its text being its canonical form (receivedItems):
 * its JSON (the relayed form, PROTOCOL §6.4) and its carrier's tail, `,"k":…}` or `,"e2e":…}`.
 */
export interface ReceivedItem {
  readonly record: Uint8Array;
  readonly carrier: Uint8Array;
}

/**
 * A user's msg's records as received (receivedItems): `bytes`, the inside of its `records` array
 * exactly as it came — from the first item's `{"record":` to the last item's `}`, the commas
 * between them included — and each item's record and carrier, views of it.
 */
export interface ReceivedItems {
  readonly bytes: Uint8Array;
  readonly items: readonly ReceivedItem[];
}

/**
 * The records of a user's msg and their carriers as received in `content` (`text` its UTF-8
 * reading), when that text is exactly the msg's canonical form — what UserMsg writes of it:
 * PROTOCOL §6.3's members in order, no whitespace, each value as JSON.stringify writes it, ASCII
 * throughout (so that the text's offsets are the bytes'). Undefined for any other text
 * (whitespace, another member order, a number or string spelt otherwise, an escape, a character
 * beyond ASCII): such a msg is laid out afresh, never forwarded as it came.
 *
 * The records are copied out, in one piece: never the msg's other members, nor the opened record
 * around it, which may be padded to 64 KiB (review17 R17-3) or reused for the next one. A relay
 * held for a recipient keeps its msg's ReceivedGroup, and so this copy whole, which
 * ReceivedGroup.retainedBytes counts (R17-5): one buffer for all the records holds what one each
 * held, without a backing store per record to allocate, zero and sweep (session 18).
 */
export function receivedItems(
  content: Uint8Array,
  text: string,
  message: C2sMsgMessage,
): ReceivedItems | undefined {
  if (text.length !== content.length || !hasNoEscape(text)) return undefined;
  let at = literalAt(text, 0, '{"type":"msg","sig":');
  at = jsonAt(text, at, message.sig);
  at = jsonAt(text, literalAt(text, at, ',"first":'), message.first);
  at = jsonAt(text, literalAt(text, at, ',"n":'), message.n);
  at = jsonAt(text, literalAt(text, at, ',"proof":'), message.proof);
  at = literalAt(text, at, ',"records":[');
  const start = at;
  // For record j: where its JSON starts, where it ends and its carrier starts, where that ends.
  const spans: number[] = [];
  for (let j = 0; j < message.records.length && at >= 0; j++) {
    const item = message.records[j];
    at = literalAt(text, j === 0 ? at : literalAt(text, at, ","), '{"record":');
    spans.push(at);
    at = jsonAt(text, at, item.record);
    spans.push(at);
    at = "e2e" in item
      ? jsonAt(text, literalAt(text, at, ',"e2e":'), item.e2e)
      : jsonAt(text, literalAt(text, at, ',"k":'), item.k);
    at = literalAt(text, at, "}");
    spans.push(at);
  }
  if (literalAt(text, at, "]}") !== text.length) return undefined;
  const bytes = content.slice(start, at);
  const items: ReceivedItem[] = [];
  for (let j = 0; j < spans.length; j += 3) {
    items.push({
      record: bytes.subarray(spans[j] - start, spans[j + 1] - start),
      carrier: bytes.subarray(spans[j + 1] - start, spans[j + 2] - start),
    });
  }
  return { bytes, items };
}

function layOutRelayed(record: MessageRecord, json: RecordJson) {
  const { sig: _jsonSig, batch: _jsonBatch, ...bareJson } = json;
  const out = new ByteBuilder(recordEncodingBound(record, true) + recordJsonBound(bareJson));
  writeRecordEncoding(out, record, true);
  const split = out.length;
  writeRecordJson(out, bareJson);
  const both = out.done();
  return { encoding: both.subarray(0, split), bytes: both.subarray(split) };
}

/** record_enc of TRANSCRIPT §3.1: what the transcript hash covers of a record. */
export function recordEncoding(r: MessageRecord): Uint8Array {
  const out = new ByteBuilder(recordEncodingBound(r));
  writeRecordEncoding(out, r);
  return out.done();
}

/** The most bytes record_enc takes: `to` at most 3 UTF-8 bytes per UTF-16 unit. */
function recordEncodingBound(r: MessageRecord, relayed = false): number {
  const bare = SID_BYTES + 1 + 4 + 3 * r.to.length + 8 + 8 + 4 + r.ct.length + r.c.length + 4 +
    4 + 4 + 1;
  // A received record's path is derived when read: not for a relayed form, which has none.
  return relayed ? bare : bare + (r.sig?.length ?? 0) + (r.batch?.path.length ?? 0) * HASH_BYTES;
}

/**
 * The most bytes writeRecordJson can write for `json`: its members are ASCII but `to`, whose
 * JSON form takes at most 6 bytes per UTF-16 unit (`\uXXXX`); the rest is names, punctuation
 * and two numbers.
 */
function recordJsonBound(json: RecordJson): number {
  let length = 160 + json.sid.length + 6 * json.to.length + json.ct.length + json.c.length +
    (json.sig?.length ?? 0);
  for (const hash of json.batch?.path ?? []) length += hash.length + 3;
  return length;
}

/**
 * record_enc written in place (a line's encoding laid out at the batch's write); `relayed`: of
 * the record as a relay carries it, without its `sig` and `batch` (PROTOCOL §6.4).
 */
function writeRecordEncoding(out: ByteBuilder, r: MessageRecord, relayed = false): void {
  out.hex(r.sid).u8(DIRECTION_BYTE[r.dir]).textWithLength(r.to).u64(r.seqno).u64(r.ts)
    .u32(r.ct.length).bytes(r.ct).bytes(r.c);
  const sig = relayed ? undefined : r.sig;
  const batch = relayed ? undefined : r.batch;
  if (sig) out.u32(sig.length).bytes(sig);
  else out.u32(0);
  const path = batch?.path ?? [];
  out.u32(batch?.i ?? 0).u32(batch?.n ?? 0).u8(path.length);
  for (const hash of path) out.bytes(hash);
}

/**
 * A record's JSON text written in place: exactly `JSON.stringify(json)` (members in the order of
 * §6.1), from members its shape checked — hex, base64, a direction and integers, which JSON
 * writes as they are; only `to` can hold what JSON escapes.
 */
function writeRecordJson(out: ByteBuilder, json: RecordJson): void {
  out.text('{"sid":"').text(json.sid).text('","dir":"').text(json.dir).text('","to":')
    .text(JSON.stringify(json.to)).text(',"seqno":').text(`${json.seqno}`).text(',"ts":')
    .text(`${json.ts}`).text(',"ct":"').text(json.ct).text('","c":"').text(json.c);
  if (json.sig !== undefined) out.text('","sig":"').text(json.sig);
  out.text('"');
  if (json.batch !== undefined) {
    const { i, n, path } = json.batch;
    out.text(',"batch":{"i":').text(`${i}`).text(',"n":').text(`${n}`).text(',"path":[');
    for (let j = 0; j < path.length; j++) out.text(j === 0 ? '"' : ',"').text(path[j]).text('"');
    out.text("]}");
  }
  out.text("}");
}

// ---- content: k, ct, c (PROTOCOL §6.1) ----

export interface SealedContent {
  k: Uint8Array;
  ct: Uint8Array;
  c: Uint8Array;
}

/** `ek`: all 32 bytes of the HMAC, the ChaCha20-Poly1305 key of `ct` (PROTOCOL §6.1). */
function contentKey(k: Uint8Array): Uint8Array {
  return hmacSha256Sync(k, LABEL.contentKey);
}

function commitment(k: Uint8Array, body: Uint8Array): Uint8Array {
  return hmacSha256Sync(k, LABEL.commitment, body);
}

const ZERO_NONCE = new Uint8Array(12);

/**
 * Encrypts a body under a fresh random content key. Every call draws a new key, so
 * no key ever encrypts twice and the fixed nonce cannot repeat under it.
 */
export function sealContent(body: Body): SealedContent {
  // Laid out in a reused buffer: the seal and the commitment read it at once, and it is
  // zeroed after (a fresh buffer per message is a native allocation and its free).
  return plaintextScratch.use((out) => sealPlaintext(out.text(JSON.stringify(body)).done()));
}

const plaintextScratch = new ScratchBytes(4096);

/**
 * {@link sealContent} over given plaintext bytes; `k` only for test vectors (a
 * caller that passes a key must never pass it twice).
 */
export function sealPlaintext(
  plaintext: Uint8Array,
  k: Uint8Array = randomBytes(CONTENT_KEY_BYTES),
): SealedContent {
  return {
    k,
    ct: sealChaCha20Poly1305(contentKey(k), ZERO_NONCE, plaintext, LABEL.contentAad),
    c: commitment(k, plaintext),
  };
}

/**
 * Opens a record's content with its key and checks the commitment.
 * @throws DECRYPT_FAIL (ct does not open), TAMPERED (commitment mismatch), PROTOCOL_ERROR (body)
 */
export function openContent(r: MessageRecord, k: Uint8Array): Body {
  if (k.length !== CONTENT_KEY_BYTES) {
    throw new SecureChatError("PROTOCOL_ERROR", "content key is not 32 bytes");
  }
  const plaintext = openChaCha20Poly1305(contentKey(k), ZERO_NONCE, r.ct, LABEL.contentAad);
  if (!timingSafeEqual(commitment(k, plaintext), r.c)) {
    throw new SecureChatError("TAMPERED", "content does not match the record's commitment");
  }
  return parseBody(plaintext);
}

/** @throws PROTOCOL_ERROR */
export function parseBody(plaintext: Uint8Array): Body {
  let value: unknown;
  try {
    value = parseStrictJson(fromUtf8(plaintext));
  } catch (cause) {
    throw new SecureChatError("PROTOCOL_ERROR", "record body is not strict UTF-8 JSON", { cause });
  }
  const parsed = BodyShape.safeParse(value);
  if (!parsed.success) {
    throw new SecureChatError("PROTOCOL_ERROR", "record body does not fit any body kind");
  }
  return parsed.data;
}

// ---- signed batches (PROTOCOL §6.1) ----

/** The most records one signature covers. */
export const MAX_BATCH = 32;
/** The longest RFC 9162 inclusion path in a tree of at most MAX_BATCH leaves. */
const MAX_PATH = 5;
const HASH_BYTES = 32;
const BATCH_STATEMENT_BYTES = LABEL.batch.length + 4 + SID_BYTES + 1 + 8 + 4 + HASH_BYTES;

/**
 * Where a record's leaf is laid out to be hashed: every party hashes every record's leaf, and a
 * statement of its own (its buffer, its `to` encoded) per record cost more than its hashing.
 */
const leafScratch = new ScratchBytes(1024);

/** RFC 9162 §2.1.1: SHA-256(0x00 || statement). */
export function leafHash(r: MessageRecord): Uint8Array {
  const ctDigest = sha256(r.ct);
  return leafScratch.use((out) => {
    writeStatement(out.u8(0x00), r, ctDigest);
    return sha256(out.done());
  });
}

const NODE_PREFIX = Uint8Array.of(0x01);

/** 0x01 || left || right, rewritten for each node hash (sha256 is synchronous). */
const NODE_INPUT = Uint8Array.of(0x01, ...new Uint8Array(2 * HASH_BYTES));

function nodeHash(left: Uint8Array, right: Uint8Array): Uint8Array {
  if (left.length !== HASH_BYTES || right.length !== HASH_BYTES) {
    return sha256(NODE_PREFIX, left, right);
  }
  NODE_INPUT.set(left, 1);
  NODE_INPUT.set(right, 1 + HASH_BYTES);
  return sha256(NODE_INPUT);
}

/**
 * The RFC 9162 Merkle Tree Hash of `leaves[lo..hi)` (leaf hashes), appending to `paths[j]`
 * the sibling of each subtree leaf j is in, nearest the leaf first (§2.1.3.1's PATH).
 */
function subtreeHash(
  leaves: readonly Uint8Array[],
  lo: number,
  hi: number,
  paths: Uint8Array[][],
): Uint8Array {
  if (hi - lo === 1) return leaves[lo];
  let k = 1;
  while (k * 2 < hi - lo) k *= 2; // the largest power of two below the size
  const left = subtreeHash(leaves, lo, lo + k, paths);
  const right = subtreeHash(leaves, lo + k, hi, paths);
  for (let j = lo; j < lo + k; j++) paths[j].push(right);
  for (let j = lo + k; j < hi; j++) paths[j].push(left);
  return nodeHash(left, right);
}

/** The root over leaf hashes and every leaf's inclusion path (RFC 9162 §2.1.1, §2.1.3.1). */
export function merkleTree(
  leaves: readonly Uint8Array[],
): { root: Uint8Array; paths: Uint8Array[][] } {
  if (leaves.length === 0) throw new SecureChatError("INTERNAL", "an empty batch");
  const paths = leaves.map(() => [] as Uint8Array[]);
  return { root: subtreeHash(leaves, 0, leaves.length, paths), paths };
}

/**
 * The root leaf `i` of `n` proves with `path`, by RFC 9162 §2.1.3.2 exactly; null when the
 * path does not fit `i` and `n` (too long or too short). With `memo`, a loop that reaches a
 * state some earlier call went through takes that call's root instead of hashing on
 * ({@link PathMemo}): the same answer, since the rest of the loop is a function of that state.
 */
export function rootFromPath(
  leaf: Uint8Array,
  i: number,
  n: number,
  path: readonly Uint8Array[],
  memo?: PathMemo,
): Uint8Array | null {
  if (i >= n) return null;
  let fn = i;
  let sn = n - 1;
  let r = leaf;
  // The states this call passes (none at the leaf: no other record has its leaf).
  const passed: PathState[] | undefined = memo && path.length > 1 ? [] : undefined;
  for (let step = 0; step < path.length; step++) {
    if (sn === 0) return null;
    if (passed && step > 0) {
      const state = { fn, sn, node: r, path, step };
      const known = memo!.rootFrom(state);
      if (known) {
        memo!.remember(passed, known);
        return known;
      }
      passed.push(state);
    }
    const p = path[step];
    if (fn % 2 === 1 || fn === sn) {
      r = nodeHash(p, r);
      while (fn !== 0 && fn % 2 === 0) {
        fn >>>= 1;
        sn >>>= 1;
      }
    } else {
      r = nodeHash(r, p);
    }
    fn >>>= 1;
    sn >>>= 1;
  }
  if (sn !== 0) return null;
  if (passed) memo!.remember(passed, r);
  return r;
}

// ---- a relay's group of one batch's records (PROTOCOL §6.4) ----

/**
 * `ROOT(0, n)` of PROTOCOL §6.4 "A batch's root from some of its records": the root of a batch
 * of `n` from the leaf hashes of the records a relay carries, at `indices` (their
 * `seqno − first`, strictly increasing, each below `n`), and `proof`, the hashes of the largest
 * subtrees holding none of them, left to right. Null when the proof does not fit: an entry
 * missing or left over, or indices that are not strictly increasing below `n`.
 */
export function groupRoot(
  leaves: readonly Uint8Array[],
  indices: readonly number[],
  n: number,
  proof: readonly Uint8Array[],
): Uint8Array | null {
  return new GroupTree(leaves, indices, n, proof).root(undefined);
}

/**
 * The RFC 9162 inclusion path (PROTOCOL §6.1, nearest the leaf first) of the record at
 * `indices[at]`, from a relay's records and proof as {@link groupRoot} takes them (TRANSCRIPT §6:
 * an opening's record made whole): each entry is the hash of a sibling subtree on the leaf's way
 * to the root, taken from `proof` or computed from the records. Null when the proof does not fit.
 */
export function groupPath(
  leaves: readonly Uint8Array[],
  indices: readonly number[],
  n: number,
  proof: readonly Uint8Array[],
  at: number,
): Uint8Array[] | null {
  if (at < 0 || at >= indices.length) return null;
  return groupPaths(leaves, indices, n, proof)?.[at] ?? null;
}

/**
 * Every record's inclusion path at once ({@link groupPath} of each, in one pass over the tree:
 * the hashing of one root), `paths[j]` the path of the record at `indices[j]`. Null when the
 * proof does not fit.
 */
export function groupPaths(
  leaves: readonly Uint8Array[],
  indices: readonly number[],
  n: number,
  proof: readonly Uint8Array[],
): Uint8Array[][] | null {
  const paths = indices.map(() => [] as Uint8Array[]);
  return new GroupTree(leaves, indices, n, proof).root(paths) ? paths : null;
}

/**
 * The `proof` of a relay carrying the records at `indices` (strictly increasing, below `n`) of
 * one batch, from those records' own paths (`paths[j]` the path of the record at `indices[j]`):
 * every subtree `ROOT` takes from the proof is the sibling of a subtree holding one of the
 * records, so its hash is the entry of that record's path at the level where the two meet
 * (PROTOCOL §6.4 "Making the proof"). The paths are the ones their signatures were checked with.
 * @throws INTERNAL when the indices or a path do not fit the batch (a caller's bug)
 */
export function groupProof(
  indices: readonly number[],
  n: number,
  paths: readonly (readonly Uint8Array[])[],
): Uint8Array[] {
  if (!increasingBelow(indices, n) || paths.length !== indices.length) {
    throw new SecureChatError("INTERNAL", "a relay's records do not fit their batch");
  }
  const proof: Uint8Array[] = [];
  let next = 0; // the first of `indices` not yet passed (ROOT goes left to right)
  /** `witness`: a record in the sibling of [lo, hi), whose path holds that sibling's hash. */
  const walk = (lo: number, hi: number, depth: number, witness: number): void => {
    if (next >= indices.length || indices[next] >= hi) {
      const path = paths[witness];
      const entry = path[path.length - depth];
      if (depth === 0 || !entry) {
        throw new SecureChatError("INTERNAL", "a relayed record's path does not fit its batch");
      }
      proof.push(entry);
      return;
    }
    if (hi - lo === 1) {
      next++;
      return;
    }
    const k = largestPowerOfTwoBelow(hi - lo);
    const first = next;
    walk(lo, lo + k, depth + 1, first);
    walk(lo + k, hi, depth + 1, first);
  };
  walk(0, n, 0, 0);
  return proof;
}

/**
 * The record at `at` of a relay made whole, as its author signed it (TRANSCRIPT §6: an opening's
 * record): the relay's `sig`, and `batch` `{i: seqno − first, n, path}` with the path derived by
 * {@link groupPath}. Null when the proof does not fit.
 */
export function wholeRecordOfGroup(
  records: readonly MessageRecord[],
  group: { sig: Uint8Array; first: number; n: number; proof: readonly Uint8Array[] },
  at: number,
): MessageRecord | null {
  const { sig, first, n, proof } = group;
  const indices = records.map((r) => r.seqno - first);
  const path = groupPath(records.map(leafHash), indices, n, proof, at);
  if (!path) return null;
  return { ...records[at], sig, batch: { i: indices[at], n, path } };
}

/** How many hashes leaf `i`'s inclusion path in a tree of `n` leaves has (RFC 9162 §2.1.3.1). */
function pathLength(i: number, n: number): number {
  let length = 0;
  for (let lo = 0, hi = n; hi - lo > 1; length++) {
    const k = largestPowerOfTwoBelow(hi - lo);
    if (i < lo + k) hi = lo + k;
    else lo += k;
  }
  return length;
}

function largestPowerOfTwoBelow(size: number): number {
  let k = 1;
  while (k * 2 < size) k *= 2;
  return k;
}

function increasingBelow(indices: readonly number[], n: number): boolean {
  if (indices.length === 0 || n > MAX_BATCH) return false;
  for (let j = 0; j < indices.length; j++) {
    const i = indices[j];
    if (!Number.isInteger(i) || i < 0 || i >= n || (j > 0 && i <= indices[j - 1])) return false;
  }
  return true;
}

/** ROOT's recursion over one relay's records and proof, consuming both left to right. */
class GroupTree {
  #next = 0;
  #used = 0;

  constructor(
    readonly leaves: readonly Uint8Array[],
    readonly indices: readonly number[],
    readonly n: number,
    readonly proof: readonly Uint8Array[],
  ) {}

  /**
   * ROOT(0, n), appending to `paths[j]` (when given) the siblings on the way up of the record
   * at `indices[j]`, nearest the leaf first.
   */
  root(paths: Uint8Array[][] | undefined): Uint8Array | null {
    const { leaves, indices, n, proof } = this;
    if (leaves.length !== indices.length || !increasingBelow(indices, n)) return null;
    const root = this.#subtree(0, n, paths);
    if (!root || this.#used !== proof.length) return null;
    return root;
  }

  #subtree(lo: number, hi: number, paths: Uint8Array[][] | undefined): Uint8Array | null {
    const { indices } = this;
    if (this.#next >= indices.length || indices[this.#next] >= hi) {
      const entry = this.proof[this.#used++];
      return entry && entry.length === HASH_BYTES ? entry : null;
    }
    if (hi - lo === 1) return this.leaves[this.#next++];
    const k = largestPowerOfTwoBelow(hi - lo);
    const from = this.#next;
    const left = this.#subtree(lo, lo + k, paths);
    if (!left) return null;
    const middle = this.#next;
    const right = this.#subtree(lo + k, hi, paths);
    if (!right) return null;
    if (paths) {
      for (let j = from; j < middle; j++) paths[j].push(right);
      for (let j = middle; j < this.#next; j++) paths[j].push(left);
    }
    return nodeHash(left, right);
  }
}

/** Where RFC 9162 §2.1.3.2's loop stands before hashing `path[step]`: all the rest depends on. */
interface PathState {
  fn: number;
  sn: number;
  node: Uint8Array;
  path: readonly Uint8Array[];
  step: number;
}

/**
 * The roots that states of rootFromPath's loop led to (PROTOCOL §6.1 step 1, "Recomputing a
 * root"). The records of one batch meet where their paths join: record 7 of 32 reaches record
 * 6's node after one hash, and the rest of its path is the rest of record 6's. The loop from
 * there is a function of the node, `fn`, `sn` and the path entries left, so a state equal in
 * all four has the same root, byte for byte, as a full hash would give: this is not a cache of
 * what verified (that is RecordSignatures' own, keyed as §6.1 says), and what goes in needs no
 * trust. Records arriving in order meet the one before (its states are all the next one
 * needs), so a few batches' worth is enough: {@link PATH_STATES}, the oldest going first. Each
 * state keeps its own copy of the entries left, never a view of a record's buffer, which holds
 * its ciphertext (review9 R9-5).
 */
export class PathMemo {
  readonly #roots = new Map<number, KnownState>();
  /**
   * Room for the node and entries of states to come: slots of {@link STATE_SLOT} bytes carved
   * from chunks of this memo's own, handed back when their state goes (a state's copy costs no
   * buffer of its own; at most `capacity` slots are ever made).
   */
  readonly #free: Uint8Array[] = [];

  constructor(readonly capacity = PATH_STATES) {}

  /** The root an earlier loop reached from this state, or undefined. */
  rootFrom(state: PathState): Uint8Array | undefined {
    const known = this.#roots.get(memoKey(state));
    if (!known) return undefined;
    const left = state.path.length - state.step;
    if (known.fn !== state.fn || known.sn !== state.sn) return undefined;
    if (known.left !== left) return undefined;
    if (state.node.length !== HASH_BYTES || !bytesEqual(state.node, known.slot, 0)) {
      return undefined;
    }
    for (let j = 0; j < left; j++) {
      // A whole entry against a whole remembered one: a shorter entry must not match a prefix.
      const entry = state.path[state.step + j];
      if (
        entry.length !== HASH_BYTES || !bytesEqual(entry, known.slot, (1 + j) * HASH_BYTES)
      ) {
        return undefined;
      }
    }
    return known.root;
  }

  remember(states: readonly PathState[], root: Uint8Array): void {
    for (const state of states) {
      const left = state.path.length - state.step;
      // Longer than any path the record's schema lets through (a caller's own), or an entry not
      // a hash's length: not kept.
      if (left > MAX_PATH - 1) continue;
      if (state.node.length !== HASH_BYTES || !entriesAreHashes(state.path, state.step)) continue;
      const key = memoKey(state);
      const replaced = this.#roots.get(key);
      if (replaced) {
        this.#roots.delete(key);
        this.#free.push(replaced.slot);
      } else if (this.#roots.size >= this.capacity) {
        const oldest = this.#roots.keys().next().value!;
        this.#free.push(this.#roots.get(oldest)!.slot);
        this.#roots.delete(oldest);
      }
      // The node copied too: a hash output is a view of a shared slab (lib/bytes.ts ByteSlab),
      // which a remembered view would keep alive. `root` is the caller's, one for every state of
      // its batch: a memo of PATH_STATES keeps a few batches' roots, so a few slabs.
      const slot = this.#slot();
      slot.set(state.node);
      for (let j = 0; j < left; j++) slot.set(state.path[state.step + j], (1 + j) * HASH_BYTES);
      this.#roots.set(key, { fn: state.fn, sn: state.sn, left, slot, root });
    }
  }

  #slot(): Uint8Array {
    if (this.#free.length === 0) {
      const chunk = new Uint8Array(STATE_SLOTS_PER_CHUNK * STATE_SLOT);
      for (let j = 0; j < STATE_SLOTS_PER_CHUNK; j++) {
        this.#free.push(chunk.subarray(j * STATE_SLOT, (j + 1) * STATE_SLOT));
      }
    }
    return this.#free.pop()!;
  }
}

function entriesAreHashes(path: readonly Uint8Array[], from: number): boolean {
  for (let j = from; j < path.length; j++) if (path[j].length !== HASH_BYTES) return false;
  return true;
}

/** A state's node, then at most every entry of a path but the first (the entries it has left). */
const STATE_SLOT = MAX_PATH * HASH_BYTES;
const STATE_SLOTS_PER_CHUNK = 8;

/**
 * A state remembered: the loop's numbers, a copy of its node and of the `left` entries left (in
 * a slot of the memo's own: the node, then the entries), its root.
 */
interface KnownState {
  fn: number;
  sn: number;
  left: number;
  slot: Uint8Array;
  root: Uint8Array;
}

/**
 * How many loop states a PathMemo keeps: the states of a record's loop (at most MAX_PATH − 1
 * past the leaf) for a dozen authors' batches arriving interleaved.
 */
const PATH_STATES = 64;

/**
 * Where a state is looked for: 30 bits of its node (a hash) beside `fn`. Two states may share
 * one (the later is kept); a state found is compared in full, so the key decides nothing.
 */
function memoKey(state: PathState): number {
  const node = state.node;
  return ((node[0] | (node[1] << 8) | (node[2] << 16) | ((node[3] & 0x3f) << 24)) ^ state.fn) >>> 0;
}

/**
 * Byte equality of public values (path entries, batch statements, signatures: nothing secret,
 * so no constant time needed): `a` against `b` whole, or against `a.length` bytes of `b` from
 * `at`.
 */
function bytesEqual(a: Uint8Array, b: Uint8Array, at?: number): boolean {
  if (at === undefined ? a.length !== b.length : at + a.length > b.length) return false;
  const from = at ?? 0;
  for (let j = 0; j < a.length; j++) if (a[j] !== b[from + j]) return false;
  return true;
}

/**
 * What one signature covers: a batch's session, first seqno, size and root (PROTOCOL §6.1).
 * Only users sign records, so the direction byte is always c2s's.
 */
export function batchStatement(
  sid: string,
  first: number,
  n: number,
  root: Uint8Array,
): Uint8Array {
  return writeBatchStatement(new ByteBuilder(BATCH_STATEMENT_BYTES), sid, first, n, root);
}

/** batchStatement written into `out` (empty), as a view of its bytes. */
function writeBatchStatement(
  out: ByteBuilder,
  sid: string,
  first: number,
  n: number,
  root: Uint8Array,
): Uint8Array {
  return out.bytes(LABEL.batch).u32(STATEMENT_VERSION).hex(sid).u8(DIRECTION_BYTE.c2s).u64(first)
    .u32(n).bytes(root).exactly(BATCH_STATEMENT_BYTES);
}

/**
 * Where a received record's batch statement is laid out to be looked up: most records' batch
 * was verified already (their siblings'), and only a statement that is verified gets a buffer of
 * its own.
 */
const batchScratch = new ScratchBytes(1024);

/**
 * Signs records as one batch (PROTOCOL §6.1): sets every record's `sig` (the same bytes) and
 * its `batch`. The records are one session's and direction's, consecutive seqnos in order.
 * @throws INTERNAL when they are not (a caller's bug), or more than MAX_BATCH
 */
export async function signBatch(key: SigningKey, records: readonly MessageRecord[]): Promise<void> {
  const first = records[0];
  if (!first || records.length > MAX_BATCH) {
    throw new SecureChatError("INTERNAL", `a batch of ${records.length} records`);
  }
  records.forEach((r, j) => {
    if (r.sid !== first.sid || r.dir !== first.dir || r.seqno !== first.seqno + j) {
      throw new SecureChatError("INTERNAL", "a batch of records that do not follow each other");
    }
  });
  const { root, paths } = merkleTree(records.map(leafHash));
  const n = records.length;
  const sig = await sign(key, batchStatement(first.sid, first.seqno, n, root));
  records.forEach((r, i) => {
    r.sig = sig;
    r.batch = { i, n, path: paths[i] };
  });
}

/** The batches a check remembers (PROTOCOL §6.1 "Ours keeps one such cache… of at most 64"). */
const VERIFIED_BATCHES = 64;

/** An author's certificate as a signature check needs it: its fingerprint and key. */
export interface RecordAuthor {
  /** hex(SHA-256(DER)): the cache's key, with the batch statement and the signature */
  readonly fingerprint: string;
  readonly key: VerifyingKey;
}

/**
 * Checks records' signatures (PROTOCOL §6.1 "Checking a record's signature"), verifying each
 * batch's signature once: it remembers (in flight too, so concurrent checks of one batch
 * share one verification) the outcome per certificate fingerprint, batch statement and
 * signature bytes together — never fewer, so a record with another signature, or claiming
 * another author, is checked on its own. One per session, or per `verify` run.
 */
export class RecordSignatures {
  /**
   * What verified (or is being verified: WebCrypto's ECDSA), by where its batch statement's
   * root points ({@link batchKey}); a hit is compared in full, so the key decides nothing.
   */
  readonly #verified = new Map<number, VerifiedBatch>();
  /** Where the paths of a batch's records join, so each record hashes only up to there. */
  readonly #paths = new PathMemo();

  /**
   * @param pathFault the code of a path that does not fit its batch: the record's schema,
   *   PROTOCOL_ERROR live, TAMPERED in a file (TRANSCRIPT §5, §6)
   */
  constructor(readonly pathFault: "PROTOCOL_ERROR" | "TAMPERED" = "PROTOCOL_ERROR") {}

  /**
   * @param whose names the record in the error ("message 7", "alice's relayed record")
   * @throws {@link pathFault} when the batch path does not fit `i` and `n`; SIG_FAIL when the
   *   record has no signature or it does not verify over its batch statement
   */
  async check(author: RecordAuthor, r: MessageRecord, whose: string): Promise<void> {
    await this.checkNow(author, r, whose);
  }

  /**
   * {@link check}, done at once where it can be — a batch verified before, or a key that
   * verifies synchronously (verifyNow) — with a promise only when a verification must be waited
   * for, so that a receiver's steady state awaits nothing. Its faults are thrown, or the promise
   * rejects with them.
   */
  checkNow(author: RecordAuthor, r: MessageRecord, whose: string): Promise<void> | undefined {
    if (!r.sig || !r.batch) throw new SecureChatError("SIG_FAIL", `${whose} is not signed`);
    // Only a user's (c2s) record is ever signed: a signature on any other proves nothing.
    if (r.dir !== "c2s") throw new SecureChatError("SIG_FAIL", `${whose} is not a user's record`);
    const { i, n, path } = r.batch;
    const root = rootFromPath(leafHash(r), i, n, path, this.#paths);
    if (!root) {
      throw new SecureChatError(
        this.pathFault,
        `${whose}: a batch path of ${path.length} hashes does not fit leaf ${i} of ${n}`,
      );
    }
    return this.#verifyRoot(author, r.sid, r.seqno - i, n, root, r.sig, whose);
  }

  /**
   * The check of a relay's or a user's msg's records (PROTOCOL §6.4 "A batch's root from some of
   * its records", §6.3 step 4):
   * the root from their leaves, their places `seqno − first` and `proof` (groupRoot), then `sig`
   * over the batch statement with their `sid`, `first`, `n` and that root, remembered as
   * {@link checkNow} remembers a record's. The records are the relay's, as its schema passed
   * them (one sid, seqnos strictly increasing within the batch), without `sig` and `batch`.
   * @param whose names the relay in the error ("alice's relay", "line 7")
   * @param leaves the records' leaf hashes, when the caller has them (it keeps them: ReceivedGroup)
   * @throws {@link pathFault} when the proof does not fit the records and `n`; SIG_FAIL when a
   *   record is not a user's or the signature does not verify
   */
  checkGroupNow(
    author: RecordAuthor,
    records: readonly MessageRecord[],
    group: { sig: Uint8Array; first: number; n: number; proof: readonly Uint8Array[] },
    whose: string,
    leaves: readonly Uint8Array[] = records.map(leafHash),
  ): Promise<void> | undefined {
    const { sig, first, n, proof } = group;
    for (const r of records) {
      if (r.dir !== "c2s") throw new SecureChatError("SIG_FAIL", `${whose}: not a user's record`);
    }
    const root = groupRoot(leaves, records.map((r) => r.seqno - first), n, proof);
    if (!root) {
      throw new SecureChatError(
        this.pathFault,
        `${whose}: a proof of ${proof.length} hashes does not fit ${records.length} records of ${n}`,
      );
    }
    return this.#verifyRoot(author, records[0].sid, first, n, root, sig, whose);
  }

  /** `sig` over a batch statement, verified once per certificate, statement and signature. */
  #verifyRoot(
    author: RecordAuthor,
    sid: string,
    first: number,
    n: number,
    root: Uint8Array,
    sig: Uint8Array,
    whose: string,
  ): Promise<void> | undefined {
    const failed = () => new SecureChatError("SIG_FAIL", `${whose}: the signature does not verify`);
    if (n === 1) {
      // A batch of one has no other record to share its check with: nothing to remember.
      const verdict = verifyNow(author.key, batchStatement(sid, first, 1, root), sig);
      if (verdict === true) return undefined;
      if (verdict === false) throw failed();
      return verdict.then((ok) => {
        if (!ok) throw failed();
      });
    }
    // The statement this batch needs, looked up where it is laid out; copied only when it must
    // be verified (its entry keeps it).
    const signed = batchScratch.use((out) => {
      const laidOut = writeBatchStatement(out, sid, first, n, root);
      const known = this.#verified.get(batchKey(laidOut));
      const same = known !== undefined && known.fingerprint === author.fingerprint &&
        bytesEqual(known.statement, laidOut) && bytesEqual(known.sig, sig);
      return same ? known : laidOut.slice();
    });
    if (!(signed instanceof Uint8Array)) {
      if (signed.verdict === true) return undefined;
      return this.#settled(signed, signed.verdict, failed);
    }
    const key = batchKey(signed);
    const verdict = verifyNow(author.key, signed, sig);
    if (verdict === false) throw failed(); // only a signature that verified is remembered
    // The signature's own copy: a view would keep the record's ciphertext alive (review9 R9-5).
    const entry = {
      fingerprint: author.fingerprint,
      statement: signed,
      sig: sig.slice(),
      verdict,
    };
    this.#verified.delete(key);
    this.#verified.set(key, entry);
    if (this.#verified.size > VERIFIED_BATCHES) {
      this.#verified.delete(this.#verified.keys().next().value!);
    }
    if (verdict === true) return undefined;
    return this.#settled(entry, verdict, failed);
  }

  /** The outcome of a verification under way: remembered if it verified, forgotten if not. */
  #settled(
    entry: VerifiedBatch,
    verdict: Promise<boolean>,
    failed: () => SecureChatError,
  ): Promise<void> {
    return verdict.then((ok) => {
      if (ok) {
        if (entry.verdict === verdict) entry.verdict = true;
        return;
      }
      const key = batchKey(entry.statement);
      if (this.#verified.get(key) === entry) this.#verified.delete(key);
      throw failed();
    });
  }
}

/**
 * A batch signature remembered (PROTOCOL §6.1): the certificate's fingerprint, the batch
 * statement's bytes and the signature's, all three compared before it is trusted.
 */
interface VerifiedBatch {
  fingerprint: string;
  statement: Uint8Array;
  sig: Uint8Array;
  /** true: verified; a promise: being verified. */
  verdict: true | Promise<boolean>;
}

/** Where a batch statement is looked for: 30 bits of its root (a hash), beside `n`'s low bits. */
function batchKey(statement: Uint8Array): number {
  const at = BATCH_STATEMENT_BYTES - HASH_BYTES;
  return ((statement[at] | (statement[at + 1] << 8) | (statement[at + 2] << 16) |
    ((statement[at + 3] & 0x3f) << 24)) ^ statement[at - 1]) >>> 0;
}

// ---- session messages that carry records (PROTOCOL §3.3, §6) and their transcript lines ----

export const REFUSAL_CODES = [
  "RATE_LIMITED",
  "NOT_ONLINE",
  "QUEUE_FULL",
  "DB_UNAVAILABLE",
  "CLUSTER_UNAVAILABLE",
] as const;
export type RefusalCode = typeof REFUSAL_CODES[number];

/**
 * The server's own `msg` (PROTOCOL §6.3): one unsigned record, its content key readable by
 * its one recipient.
 */
export type S2cMsgMessage = { type: "msg"; record: RecordJson; k: string };

/**
 * A user's `msg` (PROTOCOL §6.3): records of one of its own batches, each without `sig` and
 * `batch`, and once for all of them the batch's signature, first seqno, size and the proof of
 * the records' root (a relay's group members, §6.4, without the hop and the author). Each
 * record's content key travels readable by the server (`k`) or end to end (`e2e`, §12.6).
 */
export type C2sMsgMessage = {
  type: "msg";
  sig: string;
  first: number;
  n: number;
  proof: string[];
  records: RelayItem[];
};

/** What a message that forwards users' records says of the hop and the author (§6.4, §6.4.1). */
type AuthorHop = {
  seqno: number;
  ts: number;
  /** The author certificate's fingerprint (PROTOCOL §6.4.1). */
  author_fp: string;
  /** The certificate itself, on the message that introduces it to the session only. */
  cert?: string;
};

/**
 * One user's record from the recipient's offline queue (§6.6): whole, with its own `sig` and
 * `batch`. The content key travels readable (`k`) or end to end (`e2e`, §12.6).
 */
type StoredHop = AuthorHop & { type: "stored"; record: RecordJson };
export type StoredMessage = (StoredHop & { k: string }) | (StoredHop & { e2e: E2eEnvelope });

/** A record of a relay with its content key's carrier (§6.4, §12.6). */
export type RelayItem = { record: RecordJson; k: string } | {
  record: RecordJson;
  e2e: E2eEnvelope;
};

/**
 * Records of one author batch relayed live (§6.4): each without `sig` and `batch`, and once for
 * all of them the batch's signature, first seqno, size and the proof from which the recipient
 * recomputes the batch's root (groupRoot).
 */
export type RelayMessage = AuthorHop & {
  type: "relay";
  sig: string;
  first: number;
  n: number;
  proof: string[];
  records: RelayItem[];
};

/** How a record's content key travels: readable by the server, or end to end. */
type ContentKey = { k: Uint8Array } | { e2e: E2eEnvelope };

/** The JSON member that carries a content key: `"k":"…"` or `"e2e":{…}`. */
function contentKeyMember(key: ContentKey): string {
  return "k" in key ? `"k":"${toBase64(key.k)}"` : `"e2e":${JSON.stringify(key.e2e)}`;
}

export interface RefusedMessage {
  type: "refused";
  seqno: number;
  ts: number;
  of: number;
  code: RefusalCode;
}

/** The author's private record `of` is stored for its offline recipient (§6.6). */
export interface QueuedMessage {
  type: "queued";
  seqno: number;
  ts: number;
  of: number;
}

const STORED_TYPES: readonly "stored"[] = ["stored"];
const RELAY_TYPES: readonly "relay"[] = ["relay"];

const contentKeyText = (o: Record<string, unknown>, p: Path) =>
  base64Text(o.k, p, "k", CONTENT_KEY_BYTES, CONTENT_KEY_BYTES);
/** `author_fp` and, when the certificate is introduced, `cert` (PROTOCOL §6.4.1). */
const authorMembers = (o: Record<string, unknown>, p: Path) => ({
  author_fp: lowerHex(o.author_fp, p, "author_fp", 64),
  ...(Object.hasOwn(o, "cert") ? { cert: base64Text(o.cert, p, "cert", 1, MAX_CERT_BYTES) } : {}),
});
const recordMember = (o: Record<string, unknown>, p: Path) =>
  recordJson(o.record, p.length === 0 ? RECORD_AT : [...p, "record"]);

/** Which member carries the content key: `e2e` when present, else `k` (one, never both). */
const keyMemberOf = (v: unknown): "k" | "e2e" =>
  typeof v === "object" && v !== null && Object.hasOwn(v, "e2e") ? "e2e" : "k";
const MSG_TYPES: readonly "msg"[] = ["msg"];
const S2C_MSG_MEMBERS = ["type", "record", "k"];

export const S2cMsgShape: Shape<S2cMsgMessage> = shape((v, p) => {
  const o = members(v, p, S2C_MSG_MEMBERS);
  literal(o.type, p, "type", MSG_TYPES);
  return { type: "msg", record: recordMember(o, p), k: contentKeyText(o, p) };
});

const STORED_MEMBERS = {
  k: ["type", "seqno", "ts", "author_fp", "record", "k"],
  e2e: ["type", "seqno", "ts", "author_fp", "record", "e2e"],
};
const CERT_OPTIONAL = ["cert"];

/**
 * A stored message: its members checked in the order of their JSON (type, seqno, ts, author_fp,
 * cert, record, then the content key), which decides the fault a malformed one is refused with;
 * written out member by member, as every recipient checks every one.
 */
export const StoredMessageShape: Shape<StoredMessage> = shape((v, p) => {
  const key = keyMemberOf(v);
  const o = members(v, p, STORED_MEMBERS[key], CERT_OPTIONAL);
  const type = literal(o.type, p, "type", STORED_TYPES);
  const seqno = uint(o.seqno, p, "seqno", 1);
  const ts = uint(o.ts, p, "ts");
  const author = authorMembers(o, p);
  const record = recordMember(o, p);
  if (key === "k") return { type, seqno, ts, ...author, record, k: contentKeyText(o, p) };
  return { type, seqno, ts, ...author, record, e2e: nested(E2eEnvelopeShape, o.e2e, p, "e2e") };
});

const RELAY_MEMBERS = [
  "type",
  "seqno",
  "ts",
  "author_fp",
  "sig",
  "first",
  "n",
  "proof",
  "records",
];
const ITEM_MEMBERS = { k: ["record", "k"], e2e: ["record", "e2e"] };

/**
 * A relay (PROTOCOL §6.4): the hop, the author, the batch's `sig`, `first`, `n` and `proof`,
 * then its records, each with its content key's carrier; every rule of §6.4's table and the
 * paragraph after it (one `sid`, seqnos strictly increasing within `first` … `first + n − 1`,
 * no record with `sig` or `batch`). Whether the proof fits is groupRoot's.
 */
export const RelayMessageShape: Shape<RelayMessage> = shape((v, p) => {
  const o = members(v, p, RELAY_MEMBERS, CERT_OPTIONAL);
  literal(o.type, p, "type", RELAY_TYPES);
  const seqno = uint(o.seqno, p, "seqno", 1);
  const ts = uint(o.ts, p, "ts");
  const author = authorMembers(o, p);
  const { sig, first, n, proof, records } = groupWithCarriers(o, p, false);
  return { type: "relay", seqno, ts, ...author, sig, first, n, proof, records };
});

const C2S_MSG_MEMBERS = ["type", "sig", "first", "n", "proof", "records"];

/**
 * A user's `msg` (PROTOCOL §6.3): a group of one batch of its own records, exactly a relay's
 * group members (groupMembers) without the hop and the author (the session's client), its
 * records' seqnos consecutive.
 */
export const C2sMsgShape: Shape<C2sMsgMessage> = shape((v, p) => {
  const o = members(v, p, C2S_MSG_MEMBERS);
  literal(o.type, p, "type", MSG_TYPES);
  userMsgBytes.start();
  const { sig, first, n, proof, records } = groupWithCarriers(o, p, true, userMsgBytes);
  const bytes = userMsgBytes.take();
  const message: C2sMsgMessage = { type: "msg", sig, first, n, proof, records };
  lastDecoded = {
    message,
    records: records.map(({ record: json }, j): MessageRecord => ({
      sid: json.sid,
      dir: json.dir,
      to: json.to,
      seqno: json.seqno,
      ts: json.ts,
      ct: bytes[2 * j],
      c: bytes[2 * j + 1],
    })),
  };
  return message;
});

/**
 * The records of the user's msg C2sMsgShape made last, as it decoded them, until they are taken
 * (userMsgRecords): beside the msg rather than in it, so that the msg stays exactly its members
 * (what the shape's zod reference parses). The server takes them as soon as the msg is parsed.
 */
let lastDecoded: { message: C2sMsgMessage; records: MessageRecord[] } | undefined;

/**
 * A user's msg's records with their binary members decoded (decodeRecord's, without `sig` and
 * `batch`): as C2sMsgShape decoded them while it checked them, into one buffer for the msg, when
 * it is the msg that shape made last and they were not taken yet; else decoded now.
 */
export function userMsgRecords(message: C2sMsgMessage): MessageRecord[] {
  const last = lastDecoded;
  lastDecoded = undefined;
  if (last?.message === message) return last.records;
  return message.records.map((item) => decodeRecord(item.record));
}

/**
 * Where a user's msg's records' `ct` and `c` are decoded as they are checked, then copied into one
 * buffer for the msg (Base64Batch): one pass over each, and one backing store per msg, not one per
 * record — native memory V8 allocates, zeroes, counts as external and sweeps on its helper
 * threads, which cost the server more than the decoding (docs/PERFORMANCE.md, session 18). The
 * records share their lifetime already: a relay held for a recipient keeps its msg's
 * ReceivedGroup, so all of the msg's records.
 */
const userMsgBytes = new Base64Batch();

// ---- a user's msg as the server reads it (PROTOCOL §6.3; docs/PERFORMANCE.md, session 21) ----

/**
 * A user's msg as the server's session reads it (#checkUserMsg): the message as C2sMsgShape
 * makes it, its records with `ct` and `c` decoded into one buffer (userMsgRecords), and its
 * records and carriers as received when its text is its canonical form (receivedItems).
 */
export interface UserMsgRead {
  readonly message: C2sMsgMessage;
  readonly records: MessageRecord[];
  readonly received: ReceivedItems | undefined;
}

/**
 * A user's msg the parse chokepoint read (parseMessageAndText: its `text`, through C2sMsgShape),
 * read on: its records as that shape decoded them, its items as received.
 */
export function userMsgRead(
  message: C2sMsgMessage,
  content: Uint8Array,
  text: string,
): UserMsgRead {
  return {
    message,
    records: userMsgRecords(message),
    received: receivedItems(content, text, message),
  };
}

/**
 * A user's msg read in one pass over its text, when `content` is exactly the canonical form our
 * client writes (UserMsg): PROTOCOL §6.3's members in order, then §6.1's in each record and §12.6's
 * in a `sender` envelope, no whitespace, integers in plain decimal, strings without escapes, ASCII
 * throughout — what receivedItems asks of a text to forward its bytes as they came. Every bound
 * C2sMsgShape checks is checked here; the result is what parseMessageAndText, C2sMsgShape and
 * {@link userMsgRead} make of the same bytes (tests/unit/user_msg_scan_test.ts holds the two to
 * each other). Undefined for anything else — another spelling, another member order, any value
 * out of bounds — which the parse chokepoint then reads, accepting or refusing it as always: this
 * refuses nothing itself (a check that fails declines, NOT_CANONICAL), so it cannot refuse
 * otherwise; any other error (a fault of its own, never the msg's) is rethrown as it is. Three
 * passes over ~10 KB (strict JSON into objects, the shape, the canonical match) were a fifth of
 * the server's busy main thread per msg.
 *
 * Every string it reads in place (`sig`, `proof`, each record's members, a `k`, a `sender`
 * envelope's) is a slice of the msg's whole text — V8 makes one of 13 characters or more a view of
 * it — which stays alive as long as any of them does: what keeps one beyond the msg's handling (a
 * cache, a queue, a session's state) must copy it first, or it keeps the whole msg's text.
 */
export function canonicalUserMsg(content: Uint8Array): UserMsgRead | undefined {
  if (!startsWithBytes(content, CANONICAL_MSG_HEAD)) return undefined;
  // Decoded once, at the codec's speed; a byte beyond ASCII becomes a character no check below
  // takes (or several bytes one character: the lengths differ), so the text's offsets are the bytes'.
  const text = lossyUtf8Decoder.decode(content);
  if (text.length !== content.length) return undefined;
  try {
    return new CanonicalMsgReader(text, content).read();
  } catch (error) {
    if (error !== NOT_CANONICAL) throw error;
    return undefined;
  }
}

const CANONICAL_MSG_HEAD = utf8('{"type":"msg","sig":"');
/** Not `fatal`: a byte that is not UTF-8 becomes U+FFFD, which the canonical form never holds. */
const lossyUtf8Decoder = new TextDecoder("utf-8");

function startsWithBytes(content: Uint8Array, head: Uint8Array): boolean {
  if (content.length < head.length) return false;
  for (let i = 0; i < head.length; i++) if (content[i] !== head[i]) return false;
  return true;
}

/** Thrown inside CanonicalMsgReader at the first character that is not the canonical form's. */
const NOT_CANONICAL = new Error("not the canonical form");

/**
 * A record's end and a lobby line's carrier up to its envelope's `from` (PROTOCOL §12.6): the one
 * envelope read in place; any other is parsed on its own slice and matched (envelope()).
 */
const SENDER_ITEM_HEAD = '},"e2e":{"kind":"sender","from":"';

/**
 * canonicalUserMsg's one pass: `at` moves forward through `text`, each step taking exactly the
 * characters the canonical form has there and checking the value as C2sMsgShape does.
 */
class CanonicalMsgReader {
  at = 0;
  constructor(readonly text: string, readonly content: Uint8Array) {}

  read(): UserMsgRead {
    userMsgBytes.start();
    this.at = CANONICAL_MSG_HEAD.length;
    const sig = this.base64(1, MAX_SIG_BYTES);
    this.literal(',"first":');
    const first = this.uint(1);
    this.literal(',"n":');
    const n = this.uint(1);
    if (n > MAX_BATCH) throw NOT_CANONICAL;
    this.literal(',"proof":[');
    const proof: string[] = [];
    if (this.text.charCodeAt(this.at) !== CLOSE_BRACKET) {
      do {
        if (proof.length === MAX_BATCH - 1) throw NOT_CANONICAL;
        this.literal('"');
        proof.push(this.base64(HASH_BYTES, HASH_BYTES));
      } while (this.comma());
    }
    this.literal('],"records":[');
    const start = this.at;
    const items: RelayItem[] = [];
    const spans: number[] = [];
    // The first record's head, `{"record":{"sid":"<sid>","dir":"c2s","to":"`: every other
    // record of the msg has the same (one sid), so it is matched as one piece.
    let head = "";
    let seqno = 0;
    do {
      if (items.length === n) throw NOT_CANONICAL;
      const itemStart = this.at;
      let sid: string;
      if (items.length === 0) {
        this.literal('{"record":{"sid":"');
        sid = this.hex(32);
        this.literal('","dir":"c2s","to":"');
        head = this.text.slice(itemStart, this.at);
      } else {
        this.literal(head);
        sid = items[0].record.sid;
      }
      spans.push(itemStart + '{"record":'.length);
      const record = this.record(sid, items.length === 0 ? undefined : seqno);
      if (record.seqno < first || record.seqno > first + n - 1) throw NOT_CANONICAL;
      seqno = record.seqno;
      spans.push(this.at + 1); // after the record's `}`, matched with what follows it (carrier)
      items.push(this.carrier(record));
      spans.push(this.at);
    } while (this.comma());
    const end = this.at;
    this.literal("]}");
    if (this.at !== this.text.length) throw NOT_CANONICAL;
    const decoded = userMsgBytes.take();
    // The records and items as received are made as C2sMsgShape's and receivedItems' are, in
    // copies of their code: one helper shared by both paths cost the goal row's server ~0.7 µs
    // per delivery of TurboFan work (docs/PERFORMANCE.md, "Session 21 closing run").
    const records = items.map(({ record: json }, j): MessageRecord => ({
      sid: json.sid,
      dir: json.dir,
      to: json.to,
      seqno: json.seqno,
      ts: json.ts,
      ct: decoded[2 * j],
      c: decoded[2 * j + 1],
    }));
    const bytes = this.content.slice(start, end);
    const received: ReceivedItem[] = [];
    for (let j = 0; j < spans.length; j += 3) {
      received.push({
        record: bytes.subarray(spans[j] - start, spans[j + 1] - start),
        carrier: bytes.subarray(spans[j + 1] - start, spans[j + 2] - start),
      });
    }
    const message: C2sMsgMessage = { type: "msg", sig, first, n, proof, records: items };
    return { message, records, received: { bytes, items: received } };
  }

  /**
   * A record of `sid` from after its `"to":"` (relayedRecordJson's members and bounds, a user's
   * own `c2s`): the next after `previous`, the seqno before it in the msg, if any.
   */
  record(sid: string, previous: number | undefined): RecordJson {
    let to = this.#to;
    if (this.#toTail === "" || !this.maybe(this.#toTail)) {
      const start = this.at;
      to = this.printable(MAX_TO_CHARS);
      this.literal(',"seqno":');
      this.#to = to;
      this.#toTail = this.text.slice(start, this.at);
    }
    const seqno = this.uint(1);
    if (previous !== undefined && seqno !== previous + 1) throw NOT_CANONICAL;
    this.literal(',"ts":');
    const ts = this.uint(0);
    this.literal(',"ct":"');
    const ct = this.decoded(16, MAX_CT_BYTES);
    this.literal(',"c":"');
    const c = this.decoded(32, 32);
    return { sid, dir: "c2s", to, seqno, ts, ct, c };
  }

  /** The last record's `to`, and its text up to `seqno`'s value: the next one's, mostly. */
  #to = "";
  #toTail = "";

  /**
   * The record's closing `}`, then the item's carrier, `,"k":…}` or `,"e2e":…}`: with the record,
   * the item. A lobby line's (a `sender` envelope) is the common case, matched first and in one.
   */
  carrier(record: RecordJson): RelayItem {
    if (this.maybe(SENDER_ITEM_HEAD)) {
      const e2e = this.senderEnvelope();
      this.literal("}}");
      return { record, e2e };
    }
    if (this.maybe('},"k":"')) {
      const k = this.base64(CONTENT_KEY_BYTES, CONTENT_KEY_BYTES);
      this.literal("}");
      return { record, k };
    }
    this.literal('},"e2e":');
    const e2e = this.envelope();
    this.literal("}");
    return { record, e2e };
  }

  /** The last `sender` envelope's `from`, and its text up to `id`'s value: the next one's, mostly. */
  #senderFrom = "";
  #senderHead = "";

  /**
   * A `sender` envelope after its `"from":"` to its `w`'s closing quote (lib/e2e/envelope.ts
   * SenderEnvelopeShape).
   */
  senderEnvelope(): E2eEnvelope {
    let from = this.#senderFrom;
    if (this.#senderHead === "" || !this.maybe(this.#senderHead)) {
      const start = this.at;
      from = this.hex(16);
      this.literal('","id":');
      this.#senderFrom = from;
      this.#senderHead = this.text.slice(start, this.at);
    }
    const id = this.uint(0, UINT32_MAX);
    this.literal(',"n":');
    const n = this.uint(0, UINT32_MAX);
    this.literal(',"w":"');
    const w = this.base64(WRAPPED_KEY_BYTES, WRAPPED_KEY_BYTES);
    return { kind: "sender", from, id, n, w };
  }

  /**
   * Any other envelope (a private line's `ratchet`, rarer and larger): the object's text parsed
   * on its own and checked by its shape, then taken only when the text is exactly its canonical
   * form (JSON.stringify of what the shape made: so no member twice, nothing escaped).
   */
  envelope(): E2eEnvelope {
    const { text } = this;
    const start = this.at;
    let depth = 0;
    let at = start;
    do {
      const code = text.charCodeAt(at);
      if (code === QUOTE_CODE) {
        at = text.indexOf('"', at + 1);
        if (at < 0) throw NOT_CANONICAL;
      } else if (code === OPEN_BRACE || code === OPEN_BRACKET) {
        if (++depth > MAX_ENVELOPE_DEPTH) throw NOT_CANONICAL;
      } else if (code === CLOSE_BRACE || code === CLOSE_BRACKET) depth--;
      else if (Number.isNaN(code)) throw NOT_CANONICAL;
      at++;
    } while (depth > 0);
    let value: unknown;
    try {
      value = JSON.parse(text.slice(start, at));
    } catch {
      throw NOT_CANONICAL;
    }
    const parsed = E2eEnvelopeShape.safeParse(value);
    if (!parsed.success || jsonAt(text, start, parsed.data) !== at) throw NOT_CANONICAL;
    this.at = at;
    return parsed.data;
  }

  /** Whether `part` is next; taken if so (canonical_text.ts holds(), copied: see read()). */
  maybe(part: string): boolean {
    const { text, at } = this;
    const length = part.length;
    if (at + length > text.length) return false;
    if (length > SHORT_PART) {
      if (text.slice(at, at + length) !== part) return false;
      this.at = at + length;
      return true;
    }
    for (let i = 0; i < length; i++) {
      if (text.charCodeAt(at + i) !== part.charCodeAt(i)) return false;
    }
    this.at = at + length;
    return true;
  }

  literal(part: string): void {
    if (!this.maybe(part)) throw NOT_CANONICAL;
  }

  /** Whether a `,` is next (another item follows); taken if so. */
  comma(): boolean {
    if (this.text.charCodeAt(this.at) !== COMMA) return false;
    this.at++;
    return true;
  }

  /** The string's characters up to its closing quote, which is taken: none of them escaped. */
  #stringTo(maxChars: number): string {
    const { text, at } = this;
    const end = text.indexOf('"', at);
    if (end < 0 || end - at > maxChars) throw NOT_CANONICAL;
    this.at = end + 1;
    return text.slice(at, end);
  }

  /** Canonical base64 of `min..max` bytes, to its closing quote (shape.ts base64Text). */
  base64(minBytes: number, maxBytes: number): string {
    const value = this.#stringTo(Math.ceil(maxBytes / 3) * 4);
    let length: number;
    try {
      length = canonicalBase64Length(value);
    } catch {
      throw NOT_CANONICAL;
    }
    if (length < minBytes || length > maxBytes) throw NOT_CANONICAL;
    return value;
  }

  /** {@link base64}, decoded into the msg's one buffer (shape.ts base64Decoded). */
  decoded(minBytes: number, maxBytes: number): string {
    const value = this.#stringTo(Math.ceil(maxBytes / 3) * 4);
    let length: number;
    try {
      length = userMsgBytes.add(value);
    } catch {
      throw NOT_CANONICAL;
    }
    if (length < minBytes || length > maxBytes) throw NOT_CANONICAL;
    return value;
  }

  /** Exactly `chars` lowercase hex digits (shape.ts lowerHex); the quote after them not taken. */
  hex(chars: number): string {
    const { text, at } = this;
    for (let i = at; i < at + chars; i++) {
      const code = text.charCodeAt(i);
      if (!((code >= 0x30 && code <= 0x39) || (code >= 0x61 && code <= 0x66))) {
        throw NOT_CANONICAL;
      }
    }
    this.at = at + chars;
    return text.slice(at, at + chars);
  }

  /**
   * A string of 1..`maxChars` printable ASCII characters, to its closing quote: what JSON writes
   * as it is (no quote, no backslash, no control character), as receivedItems asks of a `to`.
   */
  printable(maxChars: number): string {
    const { text, at } = this;
    let i = at;
    for (let code = text.charCodeAt(i); code !== QUOTE_CODE; code = text.charCodeAt(++i)) {
      if (!(code >= 0x20 && code < 0x7f) || code === BACKSLASH_CODE || i - at >= maxChars) {
        throw NOT_CANONICAL;
      }
    }
    if (i === at) throw NOT_CANONICAL;
    this.at = i + 1;
    return text.slice(at, i);
  }

  /**
   * An integer `min..max` in plain decimal, as JSON.stringify writes it (no sign, no leading zero,
   * no fraction or exponent): at most 16 digits, each step exact below 2^53.
   */
  uint(min: number, max = Number.MAX_SAFE_INTEGER): number {
    const { text } = this;
    const start = this.at;
    let code = text.charCodeAt(start);
    if (!(code >= ZERO_CODE && code <= NINE_CODE)) throw NOT_CANONICAL;
    let value = code - ZERO_CODE;
    let at = start + 1;
    if (value !== 0) {
      for (
        code = text.charCodeAt(at);
        code >= ZERO_CODE && code <= NINE_CODE;
        code = text.charCodeAt(++at)
      ) {
        if (at - start === 16) throw NOT_CANONICAL;
        value = value * 10 + (code - ZERO_CODE);
      }
    }
    // A fraction or an exponent, or a digit after a leading zero: another spelling.
    code = text.charCodeAt(at);
    if (
      code === 0x2e || code === 0x65 || code === 0x45 || (code >= ZERO_CODE && code <= NINE_CODE)
    ) {
      throw NOT_CANONICAL;
    }
    if (value < min || value > max) throw NOT_CANONICAL;
    this.at = at;
    return value;
  }
}

const QUOTE_CODE = 0x22;
const BACKSLASH_CODE = 0x5c;
const ZERO_CODE = 0x30;
const NINE_CODE = 0x39;
const OPEN_BRACE = 0x7b;
const OPEN_BRACKET = 0x5b;
const CLOSE_BRACKET = 0x5d;
const UINT32_MAX = 0xffff_ffff;
/**
 * Parts longer are compared as a slice of the text, which V8 makes a view of it and compares at
 * memcmp's speed (canonical_text.ts holds()); shorter ones character by character.
 */
const SHORT_PART = 16;
/** Deeper than any envelope (ratchet, wraps, a wrap, its `pre`): a text that nests more is not one. */
const MAX_ENVELOPE_DEPTH = 4;

/**
 * Where item `j` of a message's `records` is, and its record: made once for a message's own items
 * (`p` empty: a relay, a user's msg; `j` below MAX_BATCH, as `records` holds at most `n`), as every
 * party checks every item of every one.
 */
const ITEM_AT: readonly Path[] = Array.from({ length: MAX_BATCH }, (_, j) => ["records", j]);
const ITEM_RECORD_AT: readonly Path[] = ITEM_AT.map((at) => [...at, "record"]);
const itemAt = (p: Path, j: number): Path => p.length === 0 ? ITEM_AT[j] : [...p, "records", j];

/**
 * groupMembers, each item with its content key's carrier (a relay's, a user's msg's); the
 * records' `ct` and `c` decoded into `into` as they are checked, when given.
 */
function groupWithCarriers(
  o: Record<string, unknown>,
  p: Path,
  consecutive: boolean,
  into?: Base64Batch,
) {
  const group = groupMembers(o, p, consecutive, into);
  const items = o.records as unknown[];
  const records: RelayItem[] = [];
  for (let j = 0; j < items.length; j++) {
    const item = items[j];
    const at = itemAt(p, j);
    const key = keyMemberOf(item);
    const io = members(item, at, ITEM_MEMBERS[key]);
    const record = group.records[j];
    records.push(
      key === "k"
        ? { record, k: contentKeyText(io, at) }
        : { record, e2e: nested(E2eEnvelopeShape, io.e2e, at, "e2e") },
    );
  }
  return { ...group, records };
}

/**
 * What a relay, a user's msg and their transcript lines share of the batch (PROTOCOL §6.3,
 * §6.4): `sig`, `first`, `n`, `proof` and the records (each item's `record`; its carrier is the
 * caller's), checked against each other; a msg's records' seqnos are `consecutive` (§6.3).
 */
function groupMembers(
  o: Record<string, unknown>,
  p: Path,
  consecutive: boolean,
  into?: Base64Batch,
) {
  const sig = base64Text(o.sig, p, "sig", 1, MAX_SIG_BYTES);
  const first = uint(o.first, p, "first", 1);
  const n = uint(o.n, p, "n", 1);
  if (n > MAX_BATCH) fail(p, "n", `expected 1..${MAX_BATCH}`);
  const proofAt = [...p, "proof"];
  const proof = list(o.proof, p, "proof", MAX_BATCH - 1)
    .map((entry, j) => base64Text(entry, proofAt, j, HASH_BYTES, HASH_BYTES));
  const items = list(o.records, p, "records", n);
  if (items.length === 0) fail(p, "records", "expected at least one record");
  const records: RecordJson[] = [];
  for (let j = 0; j < items.length; j++) {
    const at = itemAt(p, j);
    const item = items[j];
    if (typeof item !== "object" || item === null || Array.isArray(item)) {
      fail(at, undefined, "expected an object");
    }
    const record = relayedRecordJson(
      (item as Record<string, unknown>).record,
      p.length === 0 ? ITEM_RECORD_AT[j] : [...at, "record"],
      into,
    );
    const before = records[j - 1];
    if (before && record.sid !== before.sid) {
      fail(at, "record", "a group's records are one author session's (one sid)");
    }
    if (before && record.seqno <= before.seqno) {
      fail(at, "record", "a group's records' seqnos strictly increase");
    }
    if (consecutive && before && record.seqno !== before.seqno + 1) {
      fail(at, "record", "a msg's records' seqnos are consecutive");
    }
    if (record.seqno < first || record.seqno > first + n - 1) {
      fail(at, "record", "a group's record's seqno is within first … first + n − 1");
    }
    records.push(record);
  }
  return { sig, first, n, proof, records };
}

export const RefusedMessageShape: Shape<RefusedMessage> = shape((v, p) => {
  const o = members(v, p, ["type", "seqno", "ts", "of", "code"]);
  literal(o.type, p, "type", ["refused"]);
  return refusal(o, p, "refused");
});

export const QueuedMessageShape: Shape<QueuedMessage> = shape((v, p) => {
  const o = members(v, p, ["type", "seqno", "ts", "of"]);
  literal(o.type, p, "type", ["queued"]);
  return queued(o, p);
});

/** The members a refusal shares with its transcript line. */
function refusal<T extends string>(o: Record<string, unknown>, p: Path, type: T) {
  return {
    type,
    seqno: uint(o.seqno, p, "seqno", 1),
    ts: uint(o.ts, p, "ts"),
    of: uint(o.of, p, "of", 1),
    code: literal(o.code, p, "code", REFUSAL_CODES),
  };
}

/** The members a `queued` shares with its transcript line. */
function queued(o: Record<string, unknown>, p: Path) {
  return {
    type: "queued" as const,
    seqno: uint(o.seqno, p, "seqno", 1),
    ts: uint(o.ts, p, "ts"),
    of: uint(o.of, p, "of", 1),
  };
}

/**
 * A transcript line (TRANSCRIPT §2.2): the session message without its content keys' carriers
 * (`k`, `e2e`; a relay's items keep only their `record`), plus `dir`.
 */
export type LineJson =
  | { dir: "s2c"; type: "msg"; record: RecordJson }
  | {
    dir: "c2s";
    type: "msg";
    sig: string;
    first: number;
    n: number;
    proof: string[];
    records: { record: RecordJson }[];
  }
  | {
    dir: "s2c";
    type: "relay";
    seqno: number;
    ts: number;
    author_fp: string;
    cert?: string;
    sig: string;
    first: number;
    n: number;
    proof: string[];
    records: { record: RecordJson }[];
  }
  | {
    dir: "s2c";
    type: "stored";
    seqno: number;
    ts: number;
    author_fp: string;
    cert?: string;
    record: RecordJson;
  }
  | { dir: "s2c"; type: "refused"; seqno: number; ts: number; of: number; code: RefusalCode }
  | { dir: "s2c"; type: "queued"; seqno: number; ts: number; of: number };

const S2C: readonly "s2c"[] = ["s2c"];

const storedLine = shape((v, p): LineJson => {
  const o = members(v, p, ["dir", "type", "seqno", "ts", "author_fp", "record"], CERT_OPTIONAL);
  return {
    dir: literal(o.dir, p, "dir", S2C),
    type: literal(o.type, p, "type", STORED_TYPES),
    seqno: uint(o.seqno, p, "seqno", 1),
    ts: uint(o.ts, p, "ts"),
    ...authorMembers(o, p),
    record: recordMember(o, p),
  };
});

const RELAY_LINE_MEMBERS = ["dir", ...RELAY_MEMBERS];

/** A relay's line: the relay's members and rules (groupMembers), each item only its `record`. */
const relayLine = shape((v, p): LineJson => {
  const o = members(v, p, RELAY_LINE_MEMBERS, CERT_OPTIONAL);
  const dir = literal(o.dir, p, "dir", S2C);
  literal(o.type, p, "type", RELAY_TYPES);
  const seqno = uint(o.seqno, p, "seqno", 1);
  const ts = uint(o.ts, p, "ts");
  const author = authorMembers(o, p);
  const { sig, first, n, proof, records } = groupLineMembers(o, p, false);
  return {
    dir,
    type: "relay",
    seqno,
    ts,
    ...author,
    sig,
    first,
    n,
    proof,
    records: records.map((record) => ({ record })),
  };
});

/** A group line's members (groupMembers), each item only its `record`. */
function groupLineMembers(o: Record<string, unknown>, p: Path, consecutive: boolean) {
  const group = groupMembers(o, p, consecutive);
  const items = o.records as unknown[];
  for (let j = 0; j < items.length; j++) members(items[j], [...p, "records", j], ["record"]);
  return group;
}

const C2S_MSG_LINE_MEMBERS = ["dir", ...C2S_MSG_MEMBERS];
const C2S: readonly "c2s"[] = ["c2s"];

/** A user's msg's line (TRANSCRIPT §2.2): the msg's group members, each item only its `record`. */
function c2sMsgLine(v: unknown, p: Path): LineJson {
  const o = members(v, p, C2S_MSG_LINE_MEMBERS);
  const dir = literal(o.dir, p, "dir", C2S);
  literal(o.type, p, "type", MSG_TYPES);
  const { sig, first, n, proof, records } = groupLineMembers(o, p, true);
  return { dir, type: "msg", sig, first, n, proof, records: records.map((record) => ({ record })) };
}

function s2cMsgLine(v: unknown, p: Path): LineJson {
  const o = members(v, p, ["dir", "type", "record"]);
  return { dir: literal(o.dir, p, "dir", S2C), type: "msg", record: recordMember(o, p) };
}

export const LineShape: Shape<LineJson> = byType<LineJson>({
  // A user's msg line is a group (the `dir` decides its members), the server's one record.
  msg: shape((v, p) =>
    typeof v === "object" && v !== null && (v as Record<string, unknown>).dir === "c2s"
      ? c2sMsgLine(v, p)
      : s2cMsgLine(v, p)
  ),
  relay: relayLine,
  stored: storedLine,
  refused: shape((v, p) => {
    const o = members(v, p, ["dir", "type", "seqno", "ts", "of", "code"]);
    return { dir: literal(o.dir, p, "dir", S2C), ...refusal(o, p, "refused") };
  }),
  queued: shape((v, p) => {
    const o = members(v, p, ["dir", "type", "seqno", "ts", "of"]);
    return { dir: literal(o.dir, p, "dir", S2C), ...queued(o, p) };
  }),
});

/** A transcript line as the session hands it to the writer. */
export type Line =
  | { dir: "s2c"; type: "msg"; record: MessageRecord }
  | {
    dir: "c2s";
    type: "msg";
    /** The batch's signature, first seqno, size and proof (PROTOCOL §6.3). */
    sig: Uint8Array;
    first: number;
    n: number;
    proof: Uint8Array[];
    /** The msg's records, without `sig` and `batch`, consecutive seqnos in order. */
    records: MessageRecord[];
  }
  | {
    dir: "s2c";
    type: "relay";
    seqno: number;
    ts: number;
    /** The author certificate's fingerprint (hex; PROTOCOL §6.4.1). */
    author_fp: string;
    /** The certificate, on the line that introduced it to the session only. */
    cert?: Uint8Array;
    /** The batch's signature, first seqno, size and proof (PROTOCOL §6.4). */
    sig: Uint8Array;
    first: number;
    n: number;
    proof: Uint8Array[];
    /** The relay's records, without `sig` and `batch`, in order. */
    records: MessageRecord[];
  }
  | {
    dir: "s2c";
    type: "stored";
    seqno: number;
    ts: number;
    /** The author certificate's fingerprint (hex; PROTOCOL §6.4.1). */
    author_fp: string;
    /** The certificate, on the line that introduced it to the session only. */
    cert?: Uint8Array;
    record: MessageRecord;
  }
  | { dir: "s2c"; type: "refused"; seqno: number; ts: number; of: number; code: RefusalCode }
  | { dir: "s2c"; type: "queued"; seqno: number; ts: number; of: number };

/** How a user's record reached this session: live, or from the offline queue (§6.6). */
export type RelayType = "relay" | "stored";

/** line_enc's first byte per line type (TRANSCRIPT §3.1); `c2sMsg` a user's msg's (a group). */
const LINE_TAG = {
  msg: 0x01,
  /** Also a relay's first byte on the wire (PROTOCOL §6.4 "A relay on the wire"). */
  relay: 0x02,
  refused: 0x03,
  queued: 0x04,
  stored: 0x05,
  c2sMsg: 0x06,
} as const;

/** A relay's first byte on the wire (PROTOCOL §3.3 "JSON or binary"); a JSON message's is `{`. */
export const RELAY_TAG = LINE_TAG.relay;

/** A line's seqno: a user's msg's first record's (its line covers lineSeqno … lineLastSeqno). */
export function lineSeqno(line: Line | LineJson): number {
  if (line.type !== "msg") return line.seqno;
  return "record" in line ? line.record.seqno : msgRecordAt(line, 0).seqno;
}

/** The last seqno a line covers: a user's msg's last record's, else lineSeqno. */
export function lineLastSeqno(line: Line | LineJson): number {
  if (line.type !== "msg" || "record" in line) return lineSeqno(line);
  return msgRecordAt(line, line.records.length - 1).seqno;
}

/** A line's ts: a user's msg's first record's (its records' ts do not decrease). */
export function lineTs(line: Line | LineJson): number {
  if (line.type !== "msg") return line.ts;
  return "record" in line ? line.record.ts : msgRecordAt(line, 0).ts;
}

/** The last ts a line holds: a user's msg's last record's, else lineTs. */
export function lineLastTs(line: Line | LineJson): number {
  if (line.type !== "msg" || "record" in line) return lineTs(line);
  return msgRecordAt(line, line.records.length - 1).ts;
}

/** Record `j` of a user's msg line, as a line or its JSON holds it. */
function msgRecordAt(
  line: Extract<Line | LineJson, { records: unknown }>,
  j: number,
): { seqno: number; ts: number } {
  const item = line.records[j];
  return "record" in item ? item.record : item;
}

export function decodeLine(json: LineJson): Line {
  switch (json.type) {
    case "msg":
      if (json.dir === "s2c") {
        return { dir: json.dir, type: "msg", record: decodeRecord(json.record) };
      }
      return {
        dir: json.dir,
        type: "msg",
        sig: fromBase64(json.sig),
        first: json.first,
        n: json.n,
        proof: json.proof.map(fromBase64),
        records: json.records.map((item) => decodeRecord(item.record)),
      };
    case "relay":
      return {
        dir: json.dir,
        type: json.type,
        seqno: json.seqno,
        ts: json.ts,
        author_fp: json.author_fp,
        ...(json.cert === undefined ? {} : { cert: fromBase64(json.cert) }),
        sig: fromBase64(json.sig),
        first: json.first,
        n: json.n,
        proof: json.proof.map(fromBase64),
        records: json.records.map((item) => decodeRecord(item.record)),
      };
    case "stored":
      return {
        dir: json.dir,
        type: json.type,
        seqno: json.seqno,
        ts: json.ts,
        author_fp: json.author_fp,
        ...(json.cert === undefined ? {} : { cert: fromBase64(json.cert) }),
        record: decodeRecord(json.record),
      };
    case "refused":
    case "queued":
      return json;
  }
}

/** The JSON text of a line (without newline); members in a fixed order. */
export function encodeLine(line: Line): string {
  switch (line.type) {
    case "msg":
      if (line.dir === "s2c") {
        return JSON.stringify({ dir: line.dir, type: "msg", record: encodeRecord(line.record) });
      }
      return JSON.stringify({
        dir: line.dir,
        type: "msg",
        sig: toBase64(line.sig),
        first: line.first,
        n: line.n,
        proof: line.proof.map(toBase64),
        records: line.records.map((r) => ({ record: encodeRecord(r) })),
      });
    case "relay":
      return JSON.stringify({
        dir: line.dir,
        type: line.type,
        seqno: line.seqno,
        ts: line.ts,
        author_fp: line.author_fp,
        ...(line.cert ? { cert: toBase64(line.cert) } : {}),
        sig: toBase64(line.sig),
        first: line.first,
        n: line.n,
        proof: line.proof.map(toBase64),
        records: line.records.map((r) => ({ record: encodeRecord(r) })),
      });
    case "stored":
      return JSON.stringify({
        dir: line.dir,
        type: line.type,
        seqno: line.seqno,
        ts: line.ts,
        author_fp: line.author_fp,
        ...(line.cert ? { cert: toBase64(line.cert) } : {}),
        record: encodeRecord(line.record),
      });
    case "refused":
    case "queued":
      return JSON.stringify(line);
  }
}

/**
 * line_enc of TRANSCRIPT §3.1. `recordBytes` lets a msg or stored line reuse its record's
 * encoding, computed once.
 */
export function lineEncoding(line: Line, recordBytes?: Uint8Array): Uint8Array {
  switch (line.type) {
    case "msg": {
      if (line.dir === "s2c") {
        return concat(Uint8Array.of(LINE_TAG.msg), recordBytes ?? recordEncoding(line.record));
      }
      const out = new ByteBuilder(1 + HASH_BYTES);
      writeGroupDigest(out.u8(LINE_TAG.c2sMsg), line, line.records);
      return out.done();
    }
    case "relay": {
      const out = new ByteBuilder(
        1 + 8 + 8 + HASH_BYTES + 4 + (line.cert?.length ?? 0) + HASH_BYTES,
      );
      out.u8(LINE_TAG.relay).u64(line.seqno).u64(line.ts);
      writeAuthorEncoding(out, line.author_fp, line.cert);
      writeGroupDigest(out, line, line.records);
      return out.done();
    }
    case "stored":
      return concat(
        Uint8Array.of(LINE_TAG[line.type]),
        u64be(line.seqno),
        u64be(line.ts),
        authorEncoding(line.author_fp, line.cert),
        recordBytes ?? recordEncoding(line.record),
      );
    case "refused": {
      const code = utf8(line.code);
      return concat(
        Uint8Array.of(LINE_TAG.refused),
        u64be(line.seqno),
        u64be(line.ts),
        u64be(line.of),
        u32be(code.length),
        code,
      );
    }
    case "queued":
      return concat(
        Uint8Array.of(LINE_TAG.queued),
        u64be(line.seqno),
        u64be(line.ts),
        u64be(line.of),
      );
  }
}

/**
 * The group part of line_enc (TRANSCRIPT §3.1), the one encoder of a relay's and a user's msg's:
 * group_digest = SHA-256(group_enc), group_enc = u32be(len(sig)) || sig || u64be(first) ||
 * u32be(n) || u8(len(proof)) || proof… || u8(len(records)) || record_enc(R_1) || … (the records
 * without `sig` and `batch`).
 */
function writeGroupDigest(
  out: ByteBuilder,
  group: GroupParts,
  records: readonly MessageRecord[],
): void {
  out.bytes(groupScratch.use((enc) => {
    const { sig, first, n, proof } = group;
    enc.u32(sig.length).bytes(sig).u64(first).u32(n).u8(proof.length);
    for (const entry of proof) enc.bytes(entry);
    enc.u8(records.length);
    for (const r of records) writeRecordEncoding(enc, r);
    return sha256(enc.done());
  }));
}

/** Where a group's group_enc is laid out to be digested (writeGroupDigest). */
const groupScratch = new ScratchBytes(64 * 1024);

// ---- building session messages once (PROTOCOL §6.4: serialise once, seal per recipient) ----

/**
 * A line ready for the transcript writer: it writes its JSON text and its hash encoding
 * (line_enc, TRANSCRIPT §3.1) into the writer's batch, so that a relay's line is one
 * recipient's few bytes in front of bytes every recipient shares, never a string of its own.
 */
export interface PreparedLine {
  readonly dir: Direction;
  readonly seqno: number;
  readonly ts: number;
  /** The content key, for the client's `.keys` file (TRANSCRIPT §6); never in the log. */
  readonly k?: Uint8Array;
  /**
   * A relay line's content keys by its records' places (`itemKeys[J − 1]` the key of item J,
   * undefined where the holder has none), for the `.keys` file's `item` lines (TRANSCRIPT §6);
   * a relay line has these instead of `k`.
   */
  readonly itemKeys?: readonly (Uint8Array | undefined)[];
  /**
   * A user's msg's line covers its records' seqnos, `seqno` … `lastSeqno` (TRANSCRIPT §2.2),
   * and their ts, `ts` … `lastTs`; every other line one seqno (these absent).
   */
  readonly lastSeqno?: number;
  readonly lastTs?: number;
  /** The line's JSON text, without the newline. */
  writeJson(out: ByteBuilder): void;
  /** line_enc. */
  writeEncoding(out: ByteBuilder): void;
}

/** A line whose JSON text and encoding are at hand (every line but a relay's). */
class TextLine implements PreparedLine {
  readonly lastSeqno?: number;
  readonly lastTs?: number;

  constructor(
    readonly dir: Direction,
    readonly seqno: number,
    readonly ts: number,
    readonly json: string,
    readonly enc: readonly Uint8Array[],
    readonly k?: Uint8Array,
    /** A user's msg line's last record's seqno and ts (it takes several seqnos). */
    last?: { seqno: number; ts: number },
  ) {
    if (last) {
      this.lastSeqno = last.seqno;
      this.lastTs = last.ts;
    }
  }

  writeJson(out: ByteBuilder): void {
    out.text(this.json);
  }

  writeEncoding(out: ByteBuilder): void {
    for (const part of this.enc) out.bytes(part);
  }
}

/**
 * The server's own `msg` (PROTOCOL §6.3: one unsigned record): the wire content and the
 * transcript line. `k` is the content key (it goes to the client's `.keys` file).
 */
export function prepareMsg(
  record: MessageRecord,
  k: Uint8Array,
): { wire: string; line: PreparedLine } {
  const json = JSON.stringify(encodeRecord(record));
  return {
    wire: `{"type":"msg","record":${json},${contentKeyMember({ k })}}`,
    line: msgLine(record, json, k),
  };
}

/**
 * The transcript line of the server's own `msg`, its record serialised as `recordJson` (a
 * received record's own JSON as UTF-8: RecordForms; or a JSON text made for a record of ours)
 * and encoded as `encoding` (likewise).
 */
export function msgLine(
  record: MessageRecord,
  recordJson: string | Uint8Array,
  k: Uint8Array | undefined,
  encoding?: Uint8Array,
): PreparedLine {
  return new MsgLine(record, recordJson, encoding, k);
}

/**
 * A user's records of one signed batch (consecutive seqnos, in order) as the msgs that carry
 * them (PROTOCOL §6.3): as many of them in one msg as fit one record (§3.2), the rest in the
 * next, each with its own proof — as the server's relays split a batch (§6.4).
 */
export function userMsgsOf(items: readonly GroupItem[]): UserMsg[] {
  const msgs: UserMsg[] = [];
  for (const item of items) {
    const open = msgs[msgs.length - 1];
    if (open?.takes(item) && open.lengthWith(item) <= MAX_CONTENT_BYTES) open.add(item);
    else msgs.push(new UserMsg(item));
  }
  return msgs;
}

/**
 * A signed record of ours as a user's msg carries it: its content key readable by the server
 * (`k`), or end to end (`e2e`, PROTOCOL §12.6) with `k` kept for the `.keys` file.
 */
export function userMsgItem(
  record: MessageRecord,
  k: Uint8Array | undefined,
  e2e?: E2eEnvelope,
): GroupItem {
  return {
    fingerprint: "",
    forms: new RecordForms(record, encodeRecord(record)),
    keyTail: utf8(`,${contentKeyMember(e2e ? { e2e } : { k: k! })}}`),
    k,
  };
}

/**
 * One user's msg of `records` (one batch's, signed, consecutive, fitting one record): its wire
 * content as text and its transcript line (tests, vectors and fixtures).
 * @throws INTERNAL when they do not make one msg
 */
export function prepareUserMsg(
  records: readonly { record: MessageRecord; k: Uint8Array | undefined; e2e?: E2eEnvelope }[],
): { wire: string; line: PreparedLine } {
  const msgs = userMsgsOf(records.map(({ record, k, e2e }) => userMsgItem(record, k, e2e)));
  if (msgs.length !== 1) {
    throw new SecureChatError("INTERNAL", `${records.length} records make ${msgs.length} msgs`);
  }
  const out = new ByteBuilder(msgs[0].length);
  msgs[0].writeTo(out);
  return { wire: new TextDecoder().decode(out.done()), line: msgs[0] };
}

/** What starts the server's msg's line, up to its record (as bytes, once). */
const MSG_LINE_HEAD = utf8('{"dir":"s2c","type":"msg","record":');
const MSG_LINE_TAG = Uint8Array.of(LINE_TAG.msg);
const CLOSE_BRACE = 0x7d;

/**
 * The server's msg's line: its head, the record's JSON, `}`; line_enc: the tag, then
 * record_enc — a received record's shared one (RecordForms), or, for a record of ours, written
 * from the record where the transcript lays out its batch (no buffer of its own:
 * docs/PERFORMANCE.md, "Session 10: a line alone"). The record is complete and does not change.
 */
class MsgLine implements PreparedLine {
  readonly dir = "s2c";
  readonly seqno: number;
  readonly ts: number;

  constructor(
    readonly record: MessageRecord,
    readonly recordJson: string | Uint8Array,
    readonly encoding: Uint8Array | undefined,
    readonly k?: Uint8Array,
  ) {
    this.seqno = record.seqno;
    this.ts = record.ts;
  }

  writeJson(out: ByteBuilder): void {
    out.bytes(MSG_LINE_HEAD);
    if (typeof this.recordJson === "string") out.text(this.recordJson);
    else out.bytes(this.recordJson);
    out.u8(CLOSE_BRACE);
  }

  writeEncoding(out: ByteBuilder): void {
    out.bytes(MSG_LINE_TAG);
    if (this.encoding) out.bytes(this.encoding);
    else writeRecordEncoding(out, this.record);
  }
}

/** author_fp (32 bytes) || u32be(len(cert)) || cert, the cert empty when only named (TRANSCRIPT §3.1). */
function authorEncoding(fingerprint: string, cert: Uint8Array | undefined): Uint8Array {
  const out = new ByteBuilder(HASH_BYTES + 4 + (cert?.length ?? 0));
  writeAuthorEncoding(out, fingerprint, cert);
  return out.done();
}

function writeAuthorEncoding(out: ByteBuilder, fingerprint: string, cert: Uint8Array | undefined) {
  out.hex(fingerprint).u32(cert?.length ?? 0);
  if (cert) out.bytes(cert);
}

/**
 * An author's certificate as relays name it (PROTOCOL §6.4.1): its fingerprint always, its
 * bytes for the relay that introduces it. The server makes one per author and shares it
 * between every relay and recipient session; a client makes one per received relay.
 */
export interface AuthorCert {
  /** hex(SHA-256(DER)) */
  readonly fingerprint: string;
  /** The certificate (base64 as on the wire, and DER); absent when a relay only named it. */
  readonly cert?: { readonly base64: string; readonly der: Uint8Array };
}

/**
 * The parts of a relay shared by every recipient, as bytes, made once per relayed record (the
 * record's own from its RecordForms, the author's once per AuthorCert): every recipient
 * session's relay copies them behind a few bytes of its own (RecipientRelay), for its wire
 * content and its transcript line, introducing the author's certificate or only naming it
 * (§6.4.1). With `e2e` the envelope travels instead of `k`, and `k` (if the holder knows it)
 * only reaches the `.keys` file.
 */
export interface PreparedRelay {
  /** The author certificate's fingerprint: the key of a session's certificate list. */
  readonly fingerprint: string;
  /** The record and its forms: a relay carries it without `sig` and `batch` (RecordForms.relayed). */
  readonly forms: RecordForms;
  readonly author: AuthorParts;
  /** The record's JSON text (RecordForms.bytes). */
  readonly record: Uint8Array;
  /** `,"k":…}` or `,"e2e":…}`: what ends a `stored`'s wire content after the record. */
  readonly keyTail: Uint8Array;
  /** The same key in a relay's binary layout (PROTOCOL §6.4 "A relay on the wire"): its carrier. */
  readonly carrier: Uint8Array;
  /** record_enc(record) */
  readonly encRecord: Uint8Array;
  /** The content key, when the holder knows it (never the server for an end-to-end record). */
  readonly k?: Uint8Array;
}

/** What every relay of one author shares: its name and certificate, in JSON and encoded. */
interface AuthorParts {
  /** `"author_fp":"…",` */
  readonly named: Uint8Array;
  /** `"cert":"…",` (absent when the holder has only the name) */
  readonly cert?: Uint8Array;
  /** author_fp || u32be(len(cert)) || cert, with the cert and without (TRANSCRIPT §3.1) */
  readonly encIntroduced?: Uint8Array;
  readonly encNamed: Uint8Array;
}

/**
 * Each AuthorCert's parts, made at its first relay: the server's member holds one AuthorCert
 * for all its relays (lib/server/lobby.ts), whose certificate need not be copied per message.
 */
const authorParts = new WeakMap<AuthorCert, AuthorParts>();

function authorPartsOf(author: AuthorCert): AuthorParts {
  let parts = authorParts.get(author);
  if (!parts) {
    parts = {
      named: utf8(`"author_fp":"${author.fingerprint}",`),
      cert: author.cert && utf8(`"cert":"${author.cert.base64}",`),
      encIntroduced: author.cert && authorEncoding(author.fingerprint, author.cert.der),
      encNamed: authorEncoding(author.fingerprint, undefined),
    };
    authorParts.set(author, parts);
  }
  return parts;
}

/**
 * What every recipient's relay or `stored` of one record shares, made once per record before
 * any recipient's session is touched. Checks that a relay and a `stored` of the record alone,
 * introducing its author's certificate, fit one record (PROTOCOL §6.3 step 7, §6.4): a record
 * that would not is refused with `fault` (the server's acceptance: its author's
 * PROTOCOL_ERROR), never left to end each recipient's session at its outbox.
 * @param carrier `,"k":…}` or `,"e2e":…}` for `k` or `e2e` as received, when that was their
 *   canonical form (ReceivedGroup.carrier): taken as it is, not written again
 * @param binary the same key as a relay's binary carrier, when its msg laid it out
 *   (ReceivedGroup.binaryCarrierOf); else written here
 * @throws `fault` (INTERNAL by default: a record past the acceptance that does not fit)
 */
export function prepareRelay(
  author: AuthorCert,
  forms: RecordForms,
  k: Uint8Array | undefined,
  e2e?: E2eEnvelope,
  fault: "PROTOCOL_ERROR" | "INTERNAL" = "INTERNAL",
  carrier?: Uint8Array,
  binary?: Uint8Array,
): PreparedRelay {
  const prepared = prepareParts(author, forms, k, e2e, carrier, binary);
  const bytes = loneRelayBytes(prepared);
  if (bytes > MAX_CONTENT_BYTES) {
    throw new SecureChatError(
      fault,
      `message ${forms.record.seqno}: a relay of it alone would take ${bytes} bytes, ` +
        `above one record's ${MAX_CONTENT_BYTES}`,
    );
  }
  return prepared;
}

/**
 * The most bytes a relay or `stored` alone (PROTOCOL §6.3 step 7) of a record of `ctBytes` to
 * `to` can take, made by `author` (its certificate, signatures of `sigBytes`) with the largest
 * carrier §12.6 lets such a record have: a client's check before the record takes a seqno
 * (its envelope is made only after), so that the server never refuses a line it let us make.
 */
export function largestLoneRelayBytes(
  author: AuthorCert,
  sigBytes: number,
  to: string,
  ctBytes: number,
): number {
  const kind = to === LOBBY ? LOBBY : to === TO_SERVER ? TO_SERVER : USER_PREFIX;
  const key = `${author.fingerprint} ${sigBytes} ${kind}`;
  let base = largestLoneBase.get(key);
  if (base === undefined) {
    const u32 = 2 ** 32 - 1;
    const bytes = (n: number) => toBase64(new Uint8Array(n));
    const pre = {
      ik: bytes(32),
      ik_sig: bytes(sigBytes),
      ek: bytes(32),
      spk_id: u32,
      pq_id: u32,
      opk_id: u32,
      kem_ct: bytes(1088),
    };
    const wrap = { device: "0".repeat(16), dh: bytes(32), pn: u32, n: u32, w: bytes(48), pre };
    const e2e: E2eEnvelope | undefined = kind === LOBBY
      ? { kind: "sender", from: "0".repeat(16), id: u32, n: u32, w: bytes(48) }
      : kind === USER_PREFIX
      ? { kind: "ratchet", from: "0".repeat(16), wraps: Array(MAX_DEVICES).fill(wrap) }
      : undefined;
    const record: MessageRecord = {
      sid: "0".repeat(32),
      dir: "c2s",
      to: kind === USER_PREFIX ? USER_PREFIX + "x".repeat(MAX_USER_NAME_CHARS) : kind,
      seqno: Number.MAX_SAFE_INTEGER,
      ts: Number.MAX_SAFE_INTEGER,
      ct: new Uint8Array(AEAD_TAG_BYTES),
      c: new Uint8Array(HASH_BYTES),
      sig: new Uint8Array(sigBytes),
      batch: {
        i: MAX_BATCH - 1,
        n: MAX_BATCH,
        path: Array.from({ length: MAX_PATH }, () => new Uint8Array(HASH_BYTES)),
      },
    };
    const forms = new RecordForms(record, encodeRecord(record));
    const k = e2e ? undefined : new Uint8Array(CONTENT_KEY_BYTES);
    base = loneRelayBytes(prepareParts(author, forms, k, e2e));
    if (largestLoneBase.size >= 16) largestLoneBase.clear();
    largestLoneBase.set(key, base);
  }
  return base + base64Length(ctBytes) - base64Length(AEAD_TAG_BYTES);
}

/** largestLoneRelayBytes for a `ct` of the tag alone, by author, signature length and `to`. */
const largestLoneBase = new Map<string, number>();
const AEAD_TAG_BYTES = 16;
/** A canonical user name is at most 32 characters (PROTOCOL §6.1 "Recipient rule"). */
const MAX_USER_NAME_CHARS = 32;

/**
 * The largest body (UTF-8 bytes of its JSON) whose server `msg` (PROTOCOL §6.3: one record,
 * its `ct` and `k`) fits one record's content (§3.2) at the longest `to`, `seqno` and `ts`.
 */
export const MAX_SERVER_BODY_BYTES = (() => {
  const msg = prepareMsg({
    sid: "0".repeat(32),
    dir: "s2c",
    to: USER_PREFIX + "x".repeat(MAX_USER_NAME_CHARS),
    seqno: Number.MAX_SAFE_INTEGER,
    ts: Number.MAX_SAFE_INTEGER,
    ct: new Uint8Array(0),
    c: new Uint8Array(HASH_BYTES),
  }, new Uint8Array(CONTENT_KEY_BYTES)).wire;
  return Math.floor((MAX_CONTENT_BYTES - msg.length) / 4) * 3 - AEAD_TAG_BYTES;
})();

function base64Length(bytes: number): number {
  return 4 * Math.ceil(bytes / 3);
}

function prepareParts(
  author: AuthorCert,
  forms: RecordForms,
  k: Uint8Array | undefined,
  e2e: E2eEnvelope | undefined,
  carrier?: Uint8Array,
  binary?: Uint8Array,
): PreparedRelay {
  return new RelayParts(
    author.fingerprint,
    forms,
    authorPartsOf(author),
    carrier ?? utf8(`,${contentKeyMember(e2e ? { e2e } : { k: k! })}}`),
    binary ?? binaryCarrier(e2e ? { e2e } : { k: k! }),
    k,
  );
}

/**
 * A record's carrier in a relay's binary layout (PROTOCOL §6.4 "A relay on the wire"): `k`, a
 * `sender` envelope in 65 bytes, or any other envelope's JSON behind its length.
 */
function binaryCarrier(key: ContentKey): Uint8Array {
  const out = new ByteBuilder(SENDER_CARRIER_BYTES);
  writeBinaryCarrier(out, key);
  return out.done();
}

/** The length of an item's binary carrier (writeBinaryCarrier's). */
function binaryCarrierLength(item: RelayItem): number {
  if (!("e2e" in item)) return 1 + CONTENT_KEY_BYTES;
  if (item.e2e.kind === "sender") return SENDER_CARRIER_BYTES;
  return 5 + utf8Length(JSON.stringify(item.e2e));
}

function writeBinaryCarrier(out: ByteBuilder, key: ContentKey): void {
  if ("k" in key) {
    out.u8(CARRIER_TAG.k).bytes(key.k);
    return;
  }
  const e2e = key.e2e;
  if (e2e.kind === "sender") {
    out.u8(CARRIER_TAG.sender).hex(e2e.from).u32(e2e.id).u32(e2e.n);
    decodeBase64Into(e2e.w, out.next(WRAPPED_KEY_BYTES));
    return;
  }
  out.u8(CARRIER_TAG.json).textWithLength(JSON.stringify(e2e));
}

/** A relay's carrier tags (PROTOCOL §6.4 "A relay on the wire"). */
export const CARRIER_TAG = { k: 0x00, json: 0x01, sender: 0x02 } as const;
/** A `sender` envelope's carrier: the tag, `from` (8 bytes), `id`, `n`, `w` (48 bytes). */
const SENDER_CARRIER_BYTES = 1 + 8 + 4 + 4 + WRAPPED_KEY_BYTES;

/**
 * A PreparedRelay made once per record relayed (a class: an object literal with getters costs
 * several closures per record).
 */
class RelayParts implements PreparedRelay {
  constructor(
    readonly fingerprint: string,
    readonly forms: RecordForms,
    readonly author: AuthorParts,
    readonly keyTail: Uint8Array,
    readonly carrier: Uint8Array,
    readonly k: Uint8Array | undefined,
  ) {}

  // The record whole is laid out only for what carries it so (a `stored`): a relay carries
  // RecordForms.relayed, and a record from a msg would have its path derived for nothing.
  get record(): Uint8Array {
    return this.forms.bytes;
  }

  get encRecord(): Uint8Array {
    return this.forms.encoding;
  }
}

/** The hop's `<seqno>,"ts":<ts>,` at its longest (integers up to 2^53 − 1, PROTOCOL §2). */
const MAX_HOP_NUMBERS_BYTES = `${Number.MAX_SAFE_INTEGER},"ts":${Number.MAX_SAFE_INTEGER},`.length;

/**
 * The most bytes a relay of this record alone (its proof as long as its path) or a `stored` of
 * it takes as a message's content, introducing its author's certificate, whatever the hop's
 * seqno and ts (PROTOCOL §6.3 step 7).
 */
export function loneRelayBytes(prepared: PreparedRelay): number {
  const { author, keyTail, forms } = prepared;
  const { i, n } = forms.record.batch!;
  const relay = RELAY_HEAD_BYTES + (author.encIntroduced ?? author.encNamed).length +
    BINARY_GROUP.fixed(batchPartsOf(forms)) + pathLength(i, n) * HASH_BYTES +
    BINARY_GROUP.item(prepared);
  const stored = STORED_WIRE_HEAD.length + MAX_HOP_NUMBERS_BYTES + author.named.length +
    (author.cert?.length ?? 0) + RECORD_MEMBER.length + forms.wholeLength + keyTail.length;
  return Math.max(relay, stored);
}

/**
 * The most bytes a relay's shared part adds to a recipient's wire content (with the certificate):
 * a `stored`'s measure, which bounds a relay's too (binary, it is the smaller).
 */
export function relaySharedBytes(prepared: PreparedRelay): number {
  const { author, forms, keyTail } = prepared;
  return author.named.length + (author.cert?.length ?? 0) + RECORD_MEMBER.length +
    forms.wholeLength + keyTail.length;
}

/** What starts a `stored`'s wire content, up to the hop's seqno (a relay's is binary). */
const STORED_WIRE_HEAD = utf8('{"type":"stored","seqno":');
/** What starts a relay's or a `stored`'s line, up to the hop's seqno, per type (as bytes, once). */
const RELAY_LINE_HEAD: Record<RelayType, Uint8Array> = {
  relay: utf8('{"dir":"s2c","type":"relay","seqno":'),
  stored: utf8('{"dir":"s2c","type":"stored","seqno":'),
};
const RECORD_MEMBER = utf8('"record":');

/**
 * One recipient's `stored` message (§6.6; a live relay is a RecipientRelayGroup): the hop's
 * seqno and ts in front of the shared parts, the record whole; `introduce` whether it carries
 * the author's certificate (the session's certificate list decides, §6.4.1). Its wire content and
 * its transcript line are both written in place: this hop's head, then the bytes every
 * recipient shares (PROTOCOL §3.2), with nothing made per recipient but this object and the
 * few characters of its numbers.
 */
export class RecipientRelay implements Encodable, PreparedLine {
  readonly dir = "s2c";
  readonly k?: Uint8Array;
  /** `<seqno>,"ts":<ts>,`: what the wire and the line have of this hop after their heads. */
  readonly #numbers: string;

  constructor(
    readonly prepared: PreparedRelay,
    readonly seqno: number,
    readonly ts: number,
    readonly type: "stored",
    readonly introduce: boolean,
  ) {
    if (introduce && !prepared.author.cert) {
      throw new SecureChatError("INTERNAL", "a relay cannot introduce a certificate it lacks");
    }
    this.k = prepared.k;
    this.#numbers = `${seqno},"ts":${ts},`;
  }

  /** The wire content's length in bytes. */
  get length(): number {
    const { author, record, keyTail } = this.prepared;
    return STORED_WIRE_HEAD.length + this.#numbers.length + author.named.length +
      (this.introduce ? author.cert!.length : 0) + RECORD_MEMBER.length + record.length +
      keyTail.length;
  }

  /** The wire content: `{"type":…,"seqno":…,"ts":…,` then the shared parts. */
  writeTo(out: ByteBuilder): void {
    out.bytes(STORED_WIRE_HEAD);
    this.#writeShared(out);
    out.bytes(this.prepared.keyTail);
  }

  writeJson(out: ByteBuilder): void {
    out.bytes(RELAY_LINE_HEAD[this.type]);
    this.#writeShared(out);
    out.u8(CLOSE_BRACE);
  }

  /** line_enc: the hop's own 17 bytes, then the two parts every recipient shares. */
  writeEncoding(out: ByteBuilder): void {
    const p = this.prepared;
    out.u8(LINE_TAG[this.type]).u64(this.seqno).u64(this.ts)
      .bytes(this.introduce ? p.author.encIntroduced! : p.author.encNamed).bytes(p.encRecord);
  }

  /** `<seqno>,"ts":<ts>,"author_fp":…,["cert":…,]"record":<record>` */
  #writeShared(out: ByteBuilder): void {
    const { author, record } = this.prepared;
    out.text(this.#numbers).bytes(author.named);
    if (this.introduce) out.bytes(author.cert!);
    out.bytes(RECORD_MEMBER).bytes(record);
  }
}

/**
 * What a group message says of its batch once for all its records, made once per msg the server
 * received (ReceivedGroup), else at the first message that starts with this record (every
 * recipient's relay of one batch's burst starts with the same one): `"sig":"…","first":F,"n":N,`
 * and line_enc's u32be(len(sig)) || sig || u64be(first) || u32be(n).
 */
interface BatchParts {
  readonly json: Uint8Array;
  readonly enc: Uint8Array;
  readonly sid: string;
  readonly first: number;
  readonly n: number;
  readonly sig: string;
}

const batchParts = new WeakMap<RecordForms, BatchParts>();

function batchPartsOf(forms: RecordForms): BatchParts {
  if (forms.group) return forms.group.batchParts;
  let parts = batchParts.get(forms);
  if (!parts) {
    const { record, json } = forms;
    if (!record.sig || !record.batch || json.sig === undefined) {
      throw new SecureChatError("INTERNAL", "a relayed record without its signature");
    }
    const first = record.seqno - record.batch.i;
    parts = makeBatchParts(record.sid, json.sig, record.sig, first, record.batch.n);
    batchParts.set(forms, parts);
  }
  return parts;
}

function makeBatchParts(
  sid: string,
  sigText: string,
  sig: Uint8Array,
  first: number,
  n: number,
): BatchParts {
  const enc = new ByteBuilder(4 + sig.length + 12);
  enc.u32(sig.length).bytes(sig).u64(first).u32(n);
  return {
    json: utf8(`"sig":"${sigText}","first":${first},"n":${n},`),
    enc: enc.done(),
    sid,
    first,
    n,
    sig: sigText,
  };
}

/** A group's members in JSON, around its proof and records (a user's msg; a group's line). */
const PROOF_MEMBER = utf8('"proof":[');
const RECORDS_MEMBER = utf8('],"records":[');
const ITEM_HEAD = utf8('{"record":');
const GROUP_END = utf8("]}");
/**
 * What a received record keeps beside its `ct` (ReceivedGroup.retainedBytes), at most: its other
 * members as text and as bytes, a content key, the objects that hold them.
 */
const RETAINED_RECORD_BYTES = 1024;

/** A proof entry in JSON, `"<44 base64>",` at most: what a relay's proof adds per entry. */
const PROOF_ENTRY_JSON_BYTES = 47;

/** A JSON array's inside of `entries` hashes (a path or a proof): quoted, commas between. */
function hashListJsonBytes(entries: number): number {
  return entries * (base64Length(HASH_BYTES) + 2) + Math.max(0, entries - 1);
}

/**
 * How a group message's wire content is sized: a user's msg in JSON (PROTOCOL §6.3), a relay in
 * its binary layout (§6.4 "A relay on the wire"). `fixed` is the group's part without proof
 * entries and records; `item` what one record and its carrier add (a separator included when
 * not the first); `proofEntry` the most one proof entry adds before the proof is made.
 */
interface GroupLayout<Item extends GroupItem> {
  fixed(batch: BatchParts): number;
  item(item: Item, first?: boolean): number;
  readonly proofEntry: number;
  proofBytes(proof: { json: Uint8Array; enc: Uint8Array }): number;
}

/** `"sig":…,"first":…,"n":…,"proof":[…],"records":[{"record":…,"k":…},…]}` */
const JSON_GROUP: GroupLayout<GroupItem> = {
  fixed: (batch) =>
    batch.json.length + PROOF_MEMBER.length + RECORDS_MEMBER.length + GROUP_END.length,
  item: (item, first = false) => (first ? 0 : 1) + itemBytes(item),
  proofEntry: PROOF_ENTRY_JSON_BYTES,
  proofBytes: (proof) => proof.json.length,
};

/** group_enc (u32 len(sig) || sig || u64 first || u32 n || u8 proof… || u8 m || record_enc…), carriers. */
const BINARY_GROUP: GroupLayout<PreparedRelay> = {
  fixed: (batch) => batch.enc.length + 2,
  item: (item) => item.forms.relayed.encoding.length + item.carrier.length,
  proofEntry: HASH_BYTES,
  proofBytes: (proof) => proof.enc.length - 1,
};

/**
 * Records of one author batch in one message, in seqno order, with the batch's `sig`, `first`,
 * `n` once and the `proof` of their root (PROTOCOL §6.3, §6.4): what a relay and a user's msg
 * share, wire and transcript line, written in place from the bytes every holder shares (each
 * record's RecordForms.relayed, its key's carrier, the batch's parts) behind a head of the
 * message's own ({@link RecipientRelayGroup}, {@link UserMsg}). Records join ({@link takes},
 * {@link add}) while it is open; its proof is made when it is first written, from the group
 * the records came in when it carries all of them (no hashing), else from the records' paths
 * (groupProof). The wire content is laid out as `layout` says: JSON for a user's msg, binary
 * for a relay; the transcript line is JSON for both.
 */
abstract class GroupMessage<Item extends GroupItem = GroupItem> implements Encodable, PreparedLine {
  abstract readonly dir: Direction;
  abstract readonly seqno: number;
  abstract readonly ts: number;
  readonly items: Item[];
  readonly #batch: BatchParts;
  readonly #layout: GroupLayout<Item>;
  /** The wire content's bytes without the proof's entries. */
  #bytes: number;
  #proof?: { json: Uint8Array; enc: Uint8Array };
  /** The msg whose records it carries, all of them (set with the proof): its group_enc is ours. */
  #wholeMsg?: ReceivedGroup;

  /** @param headBytes the wire content's bytes before the group's (its head's) */
  constructor(first: Item, headBytes: number, layout: GroupLayout<Item>) {
    this.items = [first];
    this.#batch = batchPartsOf(first.forms);
    this.#layout = layout;
    this.#bytes = headBytes + layout.fixed(this.#batch) + layout.item(first, true);
  }

  /**
   * Whether `next` may join: a record of the same author and batch, after the last one (a
   * record relayed again, or of another batch, starts a message of its own).
   */
  takes(next: Item): boolean {
    const last = this.items[this.items.length - 1];
    if (this.#proof || next.fingerprint !== last.fingerprint) return false;
    // Ours relays records of one msg together (PROTOCOL §6.4 "Which records a relay carries").
    if (next.forms.group !== last.forms.group) return false;
    const { record } = next.forms;
    if (record.seqno <= last.forms.record.seqno || !record.batch) return false;
    const b = this.#batch;
    return record.sid === b.sid && record.seqno - record.batch.i === b.first &&
      record.batch.n === b.n && next.forms.json.sig === b.sig;
  }

  /** The wire content's length at most, before its proof is made. */
  get boundLength(): number {
    return this.#bytes + (this.#batch.n - 1) * this.#layout.proofEntry;
  }

  /** {@link boundLength} with `next` added. */
  lengthWith(next: Item): number {
    return this.boundLength + this.#layout.item(next);
  }

  /** Adds a record {@link takes} took. */
  add(next: Item): void {
    this.items.push(next);
    this.#bytes += this.#layout.item(next);
  }

  /** The content keys by item, for the `.keys` file (TRANSCRIPT §6). */
  get itemKeys(): readonly (Uint8Array | undefined)[] {
    return this.items.map((item) => item.k);
  }

  /** The wire content's length in bytes; the message is complete from here on. */
  get length(): number {
    return this.#bytes + this.#layout.proofBytes(this.#proofParts());
  }

  /** The wire content: laid out as the message's layout says (its subclass writes it). */
  abstract writeTo(out: ByteBuilder): void;

  /** The JSON wire content (a user's msg): `head`, the group's members, its items. */
  protected writeJsonWire(out: ByteBuilder, head: Uint8Array): void {
    out.bytes(head);
    this.#writeGroup(out);
    for (let j = 0; j < this.items.length; j++) {
      const item = this.items[j];
      if (j > 0) out.u8(COMMA);
      out.bytes(ITEM_HEAD).bytes(item.forms.relayed.bytes).bytes(item.keyTail);
    }
    out.bytes(GROUP_END);
  }

  /**
   * group_enc (TRANSCRIPT §3.1) as the parts that lie in memory: the received msg's, laid out once
   * for all its relays, when this carries all its records; else the batch's, the proof's, the
   * count and each record's shared record_enc.
   */
  protected groupEncodingParts(): Uint8Array[] {
    const proof = this.#proofParts();
    if (this.#wholeMsg) return [this.#wholeMsg.groupEncoding];
    const parts = [this.#batch.enc, proof.enc, Uint8Array.of(this.items.length)];
    for (const item of this.items) parts.push(item.forms.relayed.encoding);
    return parts;
  }

  writeJson(out: ByteBuilder): void {
    this.writeLineHead(out);
    this.#writeGroup(out);
    for (let j = 0; j < this.items.length; j++) {
      if (j > 0) out.u8(COMMA);
      out.bytes(ITEM_HEAD).bytes(this.items[j].forms.relayed.bytes).u8(CLOSE_BRACE);
    }
    out.bytes(GROUP_END);
  }

  /**
   * line_enc: the head's part, then the group's digest (TRANSCRIPT §3.1 group_digest): the received
   * msg's, made once for all its lines, when this carries all its records; else its own, of its
   * group_enc hashed where its parts lie.
   */
  writeEncoding(out: ByteBuilder): void {
    this.writeEncodingHead(out);
    // First: it makes the proof, which finds whether this carries the whole msg (#wholeMsg).
    const parts = this.groupEncodingParts();
    out.bytes(this.#wholeMsg ? this.#wholeMsg.groupDigest : sha256(...parts));
  }

  /** The line up to the batch's members: `{"dir":…,"type":…,` and the message's own. */
  protected abstract writeLineHead(out: ByteBuilder): void;
  /** line_enc up to its group part: the tag and the message's own. */
  protected abstract writeEncodingHead(out: ByteBuilder): void;

  /** `"sig":…,"first":…,"n":…,"proof":[…],"records":[` */
  #writeGroup(out: ByteBuilder): void {
    out.bytes(this.#batch.json).bytes(PROOF_MEMBER).bytes(this.#proofParts().json)
      .bytes(RECORDS_MEMBER);
  }

  /** The proof, made once the message is complete: its JSON entries, and u8(len) || entries. */
  #proofParts(): { json: Uint8Array; enc: Uint8Array } {
    if (this.#proof) return this.#proof;
    const received = this.items[0].forms.group;
    if (received && received.carriesAll(this.items)) {
      this.#wholeMsg = received;
      return this.#proof = received.proofParts;
    }
    const { first, n } = this.#batch;
    return this.#proof = proofParts(groupProof(
      this.items.map((item) => item.forms.record.seqno - first),
      n,
      this.items.map((item) => item.forms.record.batch!.path),
    ));
  }
}

/** A proof's JSON entries, and u8(len) || entries (TRANSCRIPT §3.1). */
function proofParts(proof: readonly Uint8Array[]): { json: Uint8Array; enc: Uint8Array } {
  const enc = new ByteBuilder(1 + proof.length * HASH_BYTES).u8(proof.length);
  for (const entry of proof) enc.bytes(entry);
  return {
    json: utf8(proof.map((entry) => `"${toBase64(entry)}"`).join(",")),
    enc: enc.done(),
  };
}

/**
 * What a group message holds of one record: its forms (RecordForms.relayed is what it
 * carries), `,"k":…}` or `,"e2e":…}` after it in a user's msg, its content key when the holder
 * knows it, and its author's fingerprint (a PreparedRelay is one, with the binary carrier a relay
 * writes instead).
 */
export type GroupItem = Pick<PreparedRelay, "fingerprint" | "forms" | "keyTail" | "k">;

/** A relay's head on the wire before its author: RELAY_TAG, the hop's `seqno` and `ts` (u64be). */
const RELAY_HEAD_BYTES = 1 + 8 + 8;

/**
 * One recipient's relay (PROTOCOL §6.4): a group message behind the hop's `seqno` and `ts` and
 * the author's name, introducing its certificate when `introduce` (the session's certificate
 * list decides, §6.4.1). The session adds the records one turn relays to this recipient while
 * it is the last message it made, then closes it. On the wire it is binary (§6.4 "A relay on the
 * wire"): its line_enc's head, the group_enc that line hashes (a whole msg's laid out once for
 * every recipient), its carriers; its transcript line is its JSON form.
 */
export class RecipientRelayGroup extends GroupMessage<PreparedRelay> {
  readonly dir = "s2c";
  readonly #author: AuthorParts;
  /** `<seqno>,"ts":<ts>,` */
  readonly #numbers: string;

  constructor(
    first: PreparedRelay,
    readonly seqno: number,
    readonly ts: number,
    readonly introduce: boolean,
  ) {
    if (introduce && !first.author.cert) {
      throw new SecureChatError("INTERNAL", "a relay cannot introduce a certificate it lacks");
    }
    super(
      first,
      RELAY_HEAD_BYTES + (introduce ? first.author.encIntroduced! : first.author.encNamed).length,
      BINARY_GROUP,
    );
    this.#author = first.author;
    this.#numbers = `${seqno},"ts":${ts},`;
  }

  /** The binary wire content: line_enc's head, group_enc, one carrier per record. */
  writeTo(out: ByteBuilder): void {
    this.writeEncodingHead(out);
    for (const part of this.groupEncodingParts()) out.bytes(part);
    const whole = this.items[0].forms.group?.carriersWhole(this.items);
    if (whole) out.bytes(whole);
    else for (const item of this.items) out.bytes(item.carrier);
  }

  protected writeLineHead(out: ByteBuilder): void {
    out.bytes(RELAY_LINE_HEAD.relay);
    this.#writeHop(out);
  }

  protected writeEncodingHead(out: ByteBuilder): void {
    const author = this.#author;
    out.u8(LINE_TAG.relay).u64(this.seqno).u64(this.ts)
      .bytes(this.introduce ? author.encIntroduced! : author.encNamed);
  }

  /** `<seqno>,"ts":<ts>,"author_fp":…,["cert":…,]` */
  #writeHop(out: ByteBuilder): void {
    out.text(this.#numbers).bytes(this.#author.named);
    if (this.introduce) out.bytes(this.#author.cert!);
  }
}

const MSG_WIRE_HEAD = utf8('{"type":"msg",');
const MSG_GROUP_LINE_HEAD = utf8('{"dir":"c2s","type":"msg",');

/**
 * A user's msg (PROTOCOL §6.3): its records, of one batch of its own, consecutive seqnos, as a
 * group message without hop or author; its line covers its records' seqnos, `seqno` …
 * `lastSeqno` (TRANSCRIPT §2.2). The client makes one per group of a batch it sends (wire and
 * line), the server one per msg it received (its line; the items' `keyTail` unused).
 */
export class UserMsg extends GroupMessage {
  readonly dir = "c2s";
  readonly seqno: number;
  readonly ts: number;

  constructor(first: GroupItem) {
    super(first, MSG_WIRE_HEAD.length, JSON_GROUP);
    this.seqno = first.forms.record.seqno;
    this.ts = first.forms.record.ts;
  }

  writeTo(out: ByteBuilder): void {
    this.writeJsonWire(out, MSG_WIRE_HEAD);
  }

  /** Joins only the next seqno: a msg's records are consecutive. */
  override takes(next: GroupItem): boolean {
    return next.forms.record.seqno === this.lastSeqno + 1 && super.takes(next);
  }

  get lastSeqno(): number {
    return this.items[this.items.length - 1].forms.record.seqno;
  }

  get lastTs(): number {
    return this.items[this.items.length - 1].forms.record.ts;
  }

  protected writeLineHead(out: ByteBuilder): void {
    out.bytes(MSG_GROUP_LINE_HEAD);
  }

  protected writeEncodingHead(out: ByteBuilder): void {
    out.u8(LINE_TAG.c2sMsg);
  }
}

const COMMA = 0x2c;

/** `{"record":<record without sig and batch>,"k":…}`: one item of a user's msg's records. */
function itemBytes(prepared: GroupItem): number {
  return ITEM_HEAD.length + prepared.forms.relayed.bytes.length + prepared.keyTail.length;
}

/**
 * The transcript line of a stored message a client received: a RecipientRelay's line, laid out
 * at the batch's write from the message as it was parsed and decoded (no string or encoding of
 * its own made per message), without the parts only a sender needs.
 */
export function receivedStoredLine(
  type: "stored",
  seqno: number,
  ts: number,
  author: AuthorCert,
  recordJson: RecordJson,
  record: MessageRecord,
  k: Uint8Array | undefined,
): PreparedLine {
  return new ReceivedRelayLine(type, seqno, ts, author, recordJson, record, k);
}

class ReceivedRelayLine implements PreparedLine {
  readonly dir = "s2c";

  constructor(
    readonly type: "stored",
    readonly seqno: number,
    readonly ts: number,
    readonly author: AuthorCert,
    readonly recordJson: RecordJson,
    readonly record: MessageRecord,
    readonly k: Uint8Array | undefined,
  ) {}

  writeJson(out: ByteBuilder): void {
    out.bytes(RELAY_LINE_HEAD[this.type]).text(`${this.seqno},"ts":${this.ts},"author_fp":"`)
      .text(this.author.fingerprint);
    if (this.author.cert) out.text('","cert":"').text(this.author.cert.base64);
    out.text('","record":');
    writeRecordJson(out, this.recordJson);
    out.text("}");
  }

  writeEncoding(out: ByteBuilder): void {
    out.u8(LINE_TAG[this.type]).u64(this.seqno).u64(this.ts);
    writeAuthorEncoding(out, this.author.fingerprint, this.author.cert?.der);
    writeRecordEncoding(out, this.record);
  }
}

/** A relay's batch members, decoded (PROTOCOL §6.4). */
export interface GroupParts {
  readonly sig: Uint8Array;
  readonly first: number;
  readonly n: number;
  readonly proof: readonly Uint8Array[];
}

/**
 * The transcript line of a relay a client received (TRANSCRIPT §2.2, §3.1), laid out at the
 * batch's write from the relay as it was parsed (`message`: its JSON members) and decoded
 * (`group`, `records`); `itemKeys` the content keys by item for the `.keys` file.
 */
export function receivedRelayLine(
  message: RelayMessage,
  author: AuthorCert,
  group: GroupParts,
  records: readonly MessageRecord[],
  itemKeys: readonly (Uint8Array | undefined)[],
): PreparedLine {
  return new ReceivedGroupLine(message, author, group, records, itemKeys);
}

class ReceivedGroupLine implements PreparedLine {
  readonly dir = "s2c";
  readonly seqno: number;
  readonly ts: number;

  constructor(
    readonly message: RelayMessage,
    readonly author: AuthorCert,
    readonly group: GroupParts,
    readonly records: readonly MessageRecord[],
    readonly itemKeys: readonly (Uint8Array | undefined)[],
  ) {
    this.seqno = message.seqno;
    this.ts = message.ts;
  }

  writeJson(out: ByteBuilder): void {
    const m = this.message;
    out.bytes(RELAY_LINE_HEAD.relay).text(`${m.seqno},"ts":${m.ts},"author_fp":"`)
      .text(this.author.fingerprint);
    if (this.author.cert) out.text('","cert":"').text(this.author.cert.base64);
    out.text('","sig":"').text(m.sig).text(`","first":${m.first},"n":${m.n},"proof":[`);
    for (let j = 0; j < m.proof.length; j++) {
      out.text(j === 0 ? '"' : ',"').text(m.proof[j]).text('"');
    }
    out.text('],"records":[');
    for (let j = 0; j < m.records.length; j++) {
      out.text(j === 0 ? '{"record":' : ',{"record":');
      writeRecordJson(out, m.records[j].record);
      out.text("}");
    }
    out.text("]}");
  }

  writeEncoding(out: ByteBuilder): void {
    out.u8(LINE_TAG.relay).u64(this.seqno).u64(this.ts);
    writeAuthorEncoding(out, this.author.fingerprint, this.author.cert?.der);
    writeGroupDigest(out, this.group, this.records);
  }
}

/** A refusal (PROTOCOL §6.5). */
export function prepareRefused(
  seqno: number,
  ts: number,
  of: number,
  code: RefusalCode,
): { wire: string; line: PreparedLine } {
  const line: Line = { dir: "s2c", type: "refused", seqno, ts, of, code };
  return {
    wire: JSON.stringify({ type: "refused", seqno, ts, of, code }),
    line: new TextLine("s2c", seqno, ts, encodeLine(line), [lineEncoding(line)]),
  };
}

/** The server tells an author their private record is stored for later (§6.6). */
export function prepareQueued(
  seqno: number,
  ts: number,
  of: number,
): { wire: string; line: PreparedLine } {
  const line: Line = { dir: "s2c", type: "queued", seqno, ts, of };
  return {
    wire: JSON.stringify({ type: "queued", seqno, ts, of }),
    line: new TextLine("s2c", seqno, ts, encodeLine(line), [lineEncoding(line)]),
  };
}

/** A line read back from a transcript, as the writer and the verifier hash it. */
export function prepareLine(line: Line, json: string): PreparedLine {
  const seqno = lineSeqno(line);
  const last = lineLastSeqno(line);
  return new TextLine(
    line.dir,
    seqno,
    lineTs(line),
    json,
    [lineEncoding(line)],
    undefined,
    last === seqno ? undefined : { seqno: last, ts: lineLastTs(line) },
  );
}
