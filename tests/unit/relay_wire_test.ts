/**
 * The parse chokepoint of a relay at a client (PROTOCOL §6.4 "A relay on the wire", §3.3 "JSON or
 * binary"): readRelay. Every refusal the section lists is PROTOCOL_ERROR — not a crash, not
 * another code — and what the server writes (RecipientRelayGroup) reads back as its JSON form, for
 * every carrier, with and without the author's certificate, of a whole msg and of some of its
 * records. The relays forged here are written by the tests' own encoder from the text
 * (tests/helpers/relay_wire.ts); a walk over the layout (fieldsOf, also from the text) finds each
 * field a refusal changes.
 */
import assert from "node:assert/strict";
import { fromBase64, fromBase64Each, toBase64, toHex, utf8 } from "../../lib/bytes.ts";
import type { E2eEnvelope } from "../../lib/e2e/envelope.ts";
import { SecureChatError } from "../../lib/errors.ts";
import {
  canonicalUserMsg,
  encodeRecord,
  groupRoot,
  leafHash,
  LOBBY,
  type MessageRecord,
  type PreparedRelay,
  prepareRelay,
  ReceivedGroup,
  RecipientRelayGroup,
  RecordForms,
  sealContent,
  signBatch,
} from "../../lib/message/record.ts";
import { authorCertOf } from "../../lib/message/author_certs.ts";
import { readRelay } from "../../lib/message/relay_wire.ts";
import { ChatSession } from "../../lib/session/session.ts";
import { transcriptDirectory } from "../../lib/transcript/file_storage.ts";
import { FrameConnection } from "../../lib/wire/connection.ts";
import { makePki } from "../../testkit/pki.ts";
import { loggedIn } from "../helpers/logged_in.ts";
import { MemoryPipeEnd } from "../helpers/memory_pipe.ts";
import { RATCHET_ENVELOPE, SENDER_ENVELOPE, wireBytes } from "../helpers/records.ts";
import {
  CARRIER,
  encodeRelay,
  type ForgedItem,
  type ForgedRecord,
  type ForgedRelay,
} from "../helpers/relay_wire.ts";
import {
  b64,
  type Carried,
  sentMsg,
  testAuthor as author,
  testSigner as signer,
} from "../helpers/user_msgs.ts";

const MAX_SAFE = Number.MAX_SAFE_INTEGER;

/** readRelay refuses `content` with PROTOCOL_ERROR, its own error (not a TypeError, a RangeError). */
function refused(content: Uint8Array, why: string): void {
  assert.throws(
    () => readRelay(content),
    (error) => {
      assert.ok(error instanceof SecureChatError, `${why}: ${error}`);
      assert.equal(error.code, "PROTOCOL_ERROR", `${why}: ${error.message}`);
      return true;
    },
    why,
  );
}

const filled = (n: number, fill: number) => toBase64(new Uint8Array(n).fill(fill));

/** A record of the base relay (a shape's record: sid, dir, to, seqno, ts, ct, c). */
function record(seqno: number, to: string, ctBytes: number): ForgedRecord {
  return {
    sid: "5a".repeat(16),
    dir: "c2s",
    to,
    seqno,
    ts: 1_796_000_000_000 + seqno,
    ct: filled(ctBytes, seqno),
    c: filled(32, 0x40 + seqno),
  };
}

/**
 * A relay that passes readRelay (its shape: nothing here checks a signature or a proof's root):
 * the author introduced, records 3, 4 and 6 of a batch of 4 from seqno 3, one with each carrier.
 */
function baseRelay(): ForgedRelay & { type: "relay" } {
  return {
    type: "relay",
    seqno: 5,
    ts: 1_796_000_000_500,
    author_fp: "ab".repeat(32),
    cert: filled(300, 0x30),
    sig: filled(64, 0x51),
    first: 3,
    n: 4,
    proof: [filled(32, 0x61)],
    records: [
      { record: record(3, "lobby", 40), k: filled(32, 0x71) },
      { record: record(4, "lobby", 17), e2e: { ...SENDER_ENVELOPE } },
      { record: record(6, "user:bob", 100), e2e: structuredClone(RATCHET_ENVELOPE) },
    ],
  };
}

/** One field of a relay's layout (PROTOCOL §6.4): where it is, its width, what it is. */
interface Field {
  name: string;
  at: number;
  width: 1 | 4 | 8;
  kind: "tag" | "int" | "length" | "count" | "dir" | "zero" | "carrier";
}

/** A walk over a relay's layout as PROTOCOL §6.4 gives it: every field a refusal may change. */
function fieldsOf(bytes: Uint8Array): Field[] {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const fields: Field[] = [];
  let at = 0;
  const field = (name: string, width: 1 | 4 | 8, kind: Field["kind"]): number => {
    fields.push({ name, at, width, kind });
    const value = width === 1
      ? bytes[at]
      : width === 4
      ? view.getUint32(at)
      : Number(view.getBigUint64(at));
    at += width;
    return value;
  };
  // `at += field(…)` would add to `at` as it was before field moved it.
  const skip = (bytes: number) => void (at += bytes);
  field("relay tag", 1, "tag");
  field("seqno", 8, "int");
  field("ts", 8, "int");
  at += 32; // author_fp
  skip(field("cert length", 4, "length"));
  skip(field("sig length", 4, "length"));
  field("first", 8, "int");
  field("n", 4, "int");
  skip(32 * field("proof entries", 1, "count"));
  const m = field("m", 1, "count");
  for (let j = 0; j < m; j++) {
    at += 16; // sid
    field(`record ${j} dir`, 1, "dir");
    skip(field(`record ${j} to length`, 4, "length"));
    field(`record ${j} seqno`, 8, "int");
    field(`record ${j} ts`, 8, "int");
    skip(field(`record ${j} ct length`, 4, "length"));
    at += 32; // c
    field(`record ${j} sig length`, 4, "zero");
    field(`record ${j} batch i`, 4, "zero");
    field(`record ${j} batch n`, 4, "zero");
    field(`record ${j} batch path entries`, 1, "zero");
  }
  for (let j = 0; j < m; j++) {
    const tag = field(`carrier ${j} tag`, 1, "carrier");
    if (tag === CARRIER.k) at += 32;
    else if (tag === CARRIER.sender) at += 8 + 4 + 4 + 48;
    else skip(field(`carrier ${j} envelope length`, 4, "length"));
  }
  assert.equal(at, bytes.length, "the walk ends at the relay's end");
  return fields;
}

/** `bytes` with the field set to `value` (a u64 as a bigint when above 2^53 − 1). */
function withField(bytes: Uint8Array, field: Field, value: number | bigint): Uint8Array {
  const out = bytes.slice();
  const view = new DataView(out.buffer);
  if (field.width === 1) out[field.at] = Number(value);
  else if (field.width === 4) view.setUint32(field.at, Number(value));
  else view.setBigUint64(field.at, BigInt(value));
  return out;
}

Deno.test("readRelay: the tests' base relay, as the text lays it out, reads back as its JSON form", () => {
  const base = baseRelay();
  const bytes = encodeRelay(base);
  assert.deepEqual(readRelay(bytes), base);
  assert.equal(JSON.stringify(readRelay(bytes)), JSON.stringify(base), "in its members' order");
  // Without the certificate (length 0): no `cert` member at all.
  const { cert: _cert, ...named } = base;
  assert.deepEqual(readRelay(encodeRelay(named)), named);
  assert.ok(!("cert" in readRelay(encodeRelay(named))));
  // The walk finds every field the refusals below change.
  const names = fieldsOf(bytes).map((f) => f.name);
  for (const name of ["cert length", "m", "record 2 to length", "carrier 2 envelope length"]) {
    assert.ok(names.includes(name), name);
  }
});

Deno.test("readRelay: a first byte other than 0x02 is PROTOCOL_ERROR (JSON's `{`, another line tag, none)", () => {
  const bytes = encodeRelay(baseRelay());
  for (const first of [0x00, 0x01, 0x03, 0x05, 0x7b, 0xff]) {
    refused(withField(bytes, fieldsOf(bytes)[0], first), `first byte 0x${first.toString(16)}`);
  }
  refused(new Uint8Array(0), "no bytes at all");
  refused(utf8(JSON.stringify(baseRelay())), "the relay's JSON form as its content");
});

Deno.test("readRelay: a relay cut at every byte offset is PROTOCOL_ERROR; one with a byte, or a carrier, after its last carrier too", () => {
  for (const relay of [baseRelay(), { ...baseRelay(), cert: undefined }]) {
    const bytes = encodeRelay(relay);
    readRelay(bytes);
    for (let length = 0; length < bytes.length; length++) {
      refused(bytes.subarray(0, length), `cut to ${length} of ${bytes.length} bytes`);
    }
    for (const extra of [[0x00], [0xff], [0x00, ...new Uint8Array(32)]]) {
      const longer = new Uint8Array([...bytes, ...extra]);
      refused(longer, `${extra.length} bytes after the last carrier`);
    }
  }
});

Deno.test("readRelay: each length or count field one past what is left, or at its largest, is PROTOCOL_ERROR", () => {
  const bytes = encodeRelay(baseRelay());
  const fields = fieldsOf(bytes).filter((f) => f.kind === "length" || f.kind === "count");
  assert.equal(
    fields.length,
    2 + 2 + 3 * 2 + 1,
    "cert, sig, proof, m, each to and ct, the envelope",
  );
  for (const field of fields) {
    const left = bytes.length - field.at - field.width;
    const largest = field.width === 1 ? 0xff : 0xffff_ffff;
    for (const value of field.kind === "count" ? [largest] : [left + 1, largest]) {
      refused(withField(bytes, field, value), `${field.name} ${value} (${left} bytes left)`);
    }
  }
});

Deno.test("readRelay: an integer above 2^53 − 1 is PROTOCOL_ERROR (the hop's seqno and ts, first, a record's seqno and ts); 2^53 − 1 is read", () => {
  const bytes = encodeRelay(baseRelay());
  const ints = fieldsOf(bytes).filter((f) => f.kind === "int" && f.width === 8);
  assert.equal(ints.length, 3 + 2 * 3, "seqno, ts, first and each record's seqno and ts");
  for (const field of ints) {
    for (const value of [2n ** 53n, 2n ** 63n, 2n ** 64n - 1n]) {
      refused(withField(bytes, field, value), `${field.name} ${value}`);
    }
  }
  // The largest integer JSON carries exactly: the hop's seqno and ts at it are read.
  const largest = readRelay(encodeRelay({ ...baseRelay(), seqno: MAX_SAFE, ts: MAX_SAFE }));
  assert.deepEqual([largest.seqno, largest.ts], [MAX_SAFE, MAX_SAFE]);
});

Deno.test("readRelay: a record's direction byte other than 0x01 or 0x02 is PROTOCOL_ERROR", () => {
  const bytes = encodeRelay(baseRelay());
  for (const field of fieldsOf(bytes).filter((f) => f.kind === "dir")) {
    for (const dir of [0x00, 0x03, 0x7b, 0xff]) refused(withField(bytes, field, dir), field.name);
  }
});

Deno.test("readRelay: a record's `to` of 0 or 81 bytes or invalid UTF-8 is PROTOCOL_ERROR; 80 bytes are read, and a byte-order mark as the character it is", () => {
  const withTo = (to: string | Uint8Array) => {
    const relay = baseRelay();
    relay.records[1].record.to = to;
    return encodeRelay(relay);
  };
  const tos: [string, string | Uint8Array][] = [
    ["empty", ""],
    ["81 ASCII bytes", "x".repeat(81)],
    ["81 bytes of 27 three-byte characters", "€".repeat(27)],
    ["a lone 0xff", Uint8Array.of(0x6c, 0xff)],
    ["a cut two-byte sequence", Uint8Array.of(0x6c, 0xc3)],
    ["an overlong '/'", Uint8Array.of(0xc0, 0xaf)],
    ["an encoded surrogate", Uint8Array.of(0xed, 0xa0, 0x80)],
  ];
  for (const [what, to] of tos) refused(withTo(to), `to: ${what}`);
  // The layout's cap is 80 bytes (the JSON form's, 80 UTF-16 units): at it, read as it came.
  for (const to of ["x".repeat(80), "é".repeat(40)]) {
    assert.equal(readRelay(withTo(to)).records[1].record.to, to);
  }
  // Exact UTF-8: a leading byte-order mark is not dropped, so `to` is not "lobby" (§6.4 step 3
  // then refuses it, TAMPERED, as it refuses any `to` the recipient rule does not allow).
  const bom = Uint8Array.of(0xef, 0xbb, 0xbf, ...utf8("lobby"));
  assert.equal(readRelay(withTo(bom)).records[1].record.to, "\ufefflobby");
});

Deno.test("readRelay: a record in a relay with a non-zero `sig` or `batch` field is PROTOCOL_ERROR", () => {
  const bytes = encodeRelay(baseRelay());
  const zeros = fieldsOf(bytes).filter((f) => f.kind === "zero");
  assert.equal(zeros.length, 4 * 3);
  for (const field of zeros) refused(withField(bytes, field, 1), `${field.name} 1`);
  // As a forger would write them: the record's own `sig` and `batch`, laid out in full.
  for (const extra of [{ sig: filled(64, 9) }, { batch: { i: 1, n: 4, path: [filled(32, 8)] } }]) {
    const relay = baseRelay();
    Object.assign(relay.records[0].record, extra);
    refused(encodeRelay(relay), `a record with ${Object.keys(extra)[0]}`);
  }
});

Deno.test("readRelay: m = 0 and m > n are PROTOCOL_ERROR", () => {
  refused(encodeRelay({ ...baseRelay(), records: [] }), "no records");
  const bytes = encodeRelay(baseRelay());
  refused(withField(bytes, fieldsOf(bytes).find((f) => f.name === "m")!, 0), "m 0, bytes after");
  // Three records where the batch has two; and four of a batch of three.
  refused(encodeRelay({ ...baseRelay(), n: 2 }), "m 3 > n 2");
  const four = baseRelay();
  four.records.push({ record: record(5, "lobby", 16), k: filled(32, 1) });
  four.records.sort((a, b) => Number(a.record.seqno) - Number(b.record.seqno));
  four.proof = [];
  readRelay(encodeRelay(four));
  refused(encodeRelay({ ...four, n: 3 }), "m 4 > n 3");
});

Deno.test("readRelay: an unknown carrier tag is PROTOCOL_ERROR", () => {
  const bytes = encodeRelay(baseRelay());
  for (const field of fieldsOf(bytes).filter((f) => f.kind === "carrier")) {
    for (const tag of [0x03, 0x04, 0x7b, 0xff]) {
      refused(withField(bytes, field, tag), `${field.name} 0x${tag.toString(16)}`);
    }
  }
});

Deno.test("readRelay: a sender envelope sent as JSON (0x01) is PROTOCOL_ERROR: each envelope has one encoding", () => {
  const relay = baseRelay();
  (relay.records[1] as ForgedItem).json = true;
  refused(encodeRelay(relay), "a sender envelope in JSON");
  // The same carrier's bytes, to the byte as the text lays a JSON envelope out.
  const text = utf8(JSON.stringify(SENDER_ENVELOPE));
  const carrier = new Uint8Array(5 + text.length);
  carrier[0] = CARRIER.json;
  new DataView(carrier.buffer).setUint32(1, text.length);
  carrier.set(text, 5);
  const raw = baseRelay();
  raw.records[1] = { record: raw.records[1].record, carrier };
  refused(encodeRelay(raw), "a sender envelope in JSON, its bytes");
});

Deno.test("readRelay: a ratchet envelope's JSON that is not one strict JSON ratchet envelope is PROTOCOL_ERROR", () => {
  const good = JSON.stringify(RATCHET_ENVELOPE);
  const texts: [string, Uint8Array][] = [
    ["not JSON", utf8("ratchet")],
    ["cut", utf8(good.slice(0, -1))],
    ["empty", new Uint8Array(0)],
    ["null", utf8("null")],
    ["an array", utf8(`[${good}]`)],
    ["a string", utf8(JSON.stringify(good))],
    ["trailing bytes", utf8(good + "x")],
    ["two objects", utf8(good + good)],
    [
      "a repeated member",
      utf8(good.replace('{"kind":"ratchet"', '{"kind":"ratchet","kind":"ratchet"')),
    ],
    ["an unknown member", utf8(good.replace('{"kind":"ratchet"', '{"kind":"ratchet","x":1'))],
    ["no wraps", utf8(JSON.stringify({ ...RATCHET_ENVELOPE, wraps: undefined }))],
    ["another kind", utf8(good.replace('"ratchet"', '"other"'))],
    ["invalid UTF-8", Uint8Array.of(...utf8(good.slice(0, -2)), 0xff, 0x7d)],
    // §6.4: `e` is UTF-8 exactly; a byte-order mark is not skipped, and JSON refuses it.
    ["a byte-order mark first", Uint8Array.of(0xef, 0xbb, 0xbf, ...utf8(good))],
    ["a bad wrap key", utf8(JSON.stringify({ ...RATCHET_ENVELOPE, wraps: [{ w: b64(47) }] }))],
  ];
  for (const [what, text] of texts) {
    const carrier = new Uint8Array(5 + text.length);
    carrier[0] = CARRIER.json;
    new DataView(carrier.buffer).setUint32(1, text.length);
    carrier.set(text, 5);
    const relay = baseRelay();
    relay.records[2] = { record: relay.records[2].record, carrier };
    refused(encodeRelay(relay), `a ratchet envelope: ${what}`);
  }
});

// ---- what the server writes reads back as its JSON form ----

type Kind = "k" | "sender" | "ratchet";

function envelope(kind: Kind, j: number): E2eEnvelope | undefined {
  if (kind === "sender") {
    return { kind: "sender", from: "0a".repeat(8), id: 7 + j, n: 100 + j, w: b64(48, j) };
  }
  if (kind === "ratchet") {
    return {
      kind: "ratchet",
      from: "0b".repeat(8),
      wraps: [
        { device: "0c".repeat(8), dh: b64(32, 1), pn: j, n: 2 * j, w: b64(48, j) },
        { device: "0d".repeat(8), dh: b64(32, 2), pn: 0, n: 0, w: b64(48, 3) },
      ],
    };
  }
  return undefined;
}

/** A signed batch of `kinds.length` records, record j carried as `kinds[j]` says. */
async function batch(kinds: Kind[]): Promise<Carried[]> {
  const made = kinds.map((kind, j): Carried => {
    const { k, ct, c } = sealContent({ kind: "text", text: `line ${j} ${"é".repeat(j * 9)}` });
    const record: MessageRecord = {
      sid: "0f".repeat(16),
      dir: "c2s",
      to: kind === "ratchet" ? "user:bob" : LOBBY,
      seqno: 3 + j,
      ts: 1_796_000_000_000 + j,
      ct,
      c,
    };
    return { record, k, e2e: envelope(kind, j) };
  });
  await signBatch(signer, made.map((m) => m.record));
  return made;
}

/** Each record prepared for relaying as the server's session does: from the msg it came in. */
function fromMsg(made: Carried[]): PreparedRelay[] {
  const read = canonicalUserMsg(sentMsg(made));
  assert.ok(read, "ours sends a msg in its canonical form");
  const { message: msg, records, received } = read;
  const [sig, ...proof] = fromBase64Each([msg.sig, ...msg.proof]);
  const group = new ReceivedGroup(
    msg,
    { sig, first: msg.first, n: msg.n, proof },
    records,
    records.map(leafHash),
    received,
  );
  return msg.records.map((item, j) =>
    "e2e" in item
      ? prepareRelay(author, group.whole(j, item.record), undefined, item.e2e)
      : prepareRelay(author, group.whole(j, item.record), fromBase64(item.k))
  );
}

/** Each record prepared afresh, from the record alone (as the cluster's form or a test has it). */
function afresh(made: Carried[]): PreparedRelay[] {
  return made.map(({ record, k, e2e }) => {
    const forms = new RecordForms(record, encodeRecord(record));
    return e2e ? prepareRelay(author, forms, undefined, e2e) : prepareRelay(author, forms, k);
  });
}

/** A relay's JSON form from the records themselves (PROTOCOL §6.4), the proof as given. */
function jsonFormOf(made: Carried[], picked: number[], introduce: boolean, proof: string[]) {
  const sig = made[0].record.sig!;
  return {
    type: "relay",
    seqno: 21,
    ts: 1_796_000_000_021,
    author_fp: author.fingerprint,
    ...(introduce ? { cert: author.cert!.base64 } : {}),
    sig: toBase64(sig),
    first: 3,
    n: made.length,
    proof,
    records: picked.map((j) => {
      const { record, k, e2e } = made[j];
      const { sig: _sig, batch: _batch, ...bare } = encodeRecord(record);
      return e2e ? { record: bare, e2e } : { record: bare, k: toBase64(k) };
    }),
  };
}

Deno.test("readRelay of RecipientRelayGroup's wire is its JSON form, the text's layout to the byte: k, sender and ratchet carriers, with and without the certificate, a whole msg and some of its records", async () => {
  const mixes: Kind[][] = [
    ["k"],
    ["sender"],
    ["ratchet"],
    ["k", "sender", "ratchet", "sender", "k"],
    Array.from({ length: 9 }, (_, j) => (["sender", "k", "ratchet"] as const)[j % 3]),
  ];
  let checked = 0;
  for (const kinds of mixes) {
    const made = await batch(kinds);
    const n = made.length;
    const all = made.map((_, j) => j);
    const picks = [all, all.filter((j) => j % 2 === 1), [n - 1], all.slice(0, -1)];
    for (const [source, prepared] of [["msg", fromMsg(made)], ["afresh", afresh(made)]] as const) {
      for (const picked of picks.filter((p) => p.length > 0)) {
        for (const introduce of [true, false]) {
          const why = `${kinds}, ${source}, records ${picked}, introduce ${introduce}`;
          const relay = new RecipientRelayGroup(
            prepared[picked[0]],
            21,
            1_796_000_000_021,
            introduce,
          );
          for (const j of picked.slice(1)) {
            assert.ok(relay.takes(prepared[j]), why);
            relay.add(prepared[j]);
          }
          const bytes = wireBytes(relay);
          assert.equal(bytes.length, relay.length, `${why}: the length announced`);
          const read = readRelay(bytes);
          // The proof: none for all of a batch's records; else one that gives the batch's root.
          if (picked.length === n) assert.deepEqual(read.proof, [], why);
          const root = (ids: number[], proof: string[]) =>
            groupRoot(
              ids.map((j) => leafHash(made[j].record)),
              ids.map((j) => made[j].record.seqno - 3),
              n,
              fromBase64Each(proof),
            );
          assert.deepEqual(root(picked, read.proof), root(all, []), `${why}: the root`);
          const expected = jsonFormOf(made, picked, introduce, read.proof);
          assert.deepEqual(read, expected, why);
          assert.equal(JSON.stringify(read), JSON.stringify(expected), `${why}: member order`);
          assert.equal(
            toHex(bytes),
            toHex(encodeRelay(expected as ForgedRelay)),
            `${why}: the layout`,
          );
          checked++;
        }
      }
    }
  }
  // 3 mixes of one record (2 picks) and 2 larger (4 picks), from 2 sources, with and without cert.
  assert.equal(checked, (3 * 2 + 2 * 4) * 2 * 2, "every case ran");
});

// ---- at a client: a relay in JSON, through a real session ----

/**
 * A client's session after a real handshake; the test speaks for the server. With `relays`, the
 * session checks relays as `connect` does (their authors under the test CA).
 */
async function clientSession(relays = false) {
  const pki = await makePki(["alice"]);
  const transcripts = await Deno.makeTempDir({ prefix: "securechat-relay-wire-" });
  const [serverSide, clientSide] = MemoryPipeEnd.pair();
  const serverConn = new FrameConnection(serverSide);
  const clientConn = new FrameConnection(clientSide);
  const [server, client] = await loggedIn(pki, serverConn, clientConn);
  const session = await ChatSession.start(client, {
    transcripts: transcriptDirectory(transcripts),
    serverName: "localhost",
    ...(relays ? { relayTrust: pki.trust } : {}),
  });
  const received: unknown[] = [];
  return {
    pki,
    server,
    serverConn,
    received,
    running: session.run({ onMessage: (m) => void received.push(m) }),
    async dispose() {
      serverConn.close();
      clientConn.close();
      await Deno.remove(transcripts, { recursive: true });
      await Deno.remove(pki.dir, { recursive: true });
    },
  };
}

Deno.test("ChatSession (client): a relay in JSON, a relay cut short, a content whose first byte is neither `{` nor 0x02: PROTOCOL_ERROR, nothing handed on", async () => {
  const contents: [string, Uint8Array][] = [
    ["a relay in JSON", utf8(JSON.stringify(baseRelay()))],
    ["a relay cut short", encodeRelay(baseRelay()).subarray(0, 60)],
    ["a relay with a byte after its last carrier", Uint8Array.of(...encodeRelay(baseRelay()), 0)],
    ["first byte 0x03", Uint8Array.of(0x03, ...encodeRelay(baseRelay()).subarray(1))],
  ];
  for (const [what, content] of contents) {
    const pair = await clientSession();
    try {
      pair.serverConn.send(pair.server.records.seal(content));
      await pair.serverConn.flush();
      const end = await pair.running;
      assert.equal(end.outcome, "error", what);
      assert.equal(end.code, "PROTOCOL_ERROR", `${what}: ${end.message}`);
      assert.equal(end.fromPeer, undefined, `${what}: the client's own refusal`);
      assert.deepEqual(pair.received, [], what);
    } finally {
      await pair.dispose();
    }
  }
});

Deno.test("ChatSession (client): a relay whose record's `to` starts with a byte-order mark is TAMPERED at §6.4 step 3, not read as `lobby` (exact UTF-8: review23)", async () => {
  const pair = await clientSession(true);
  try {
    const alice = await pair.pki.identity("alice");
    const relay = {
      ...baseRelay(),
      seqno: 1,
      ts: Date.now(),
      author_fp: authorCertOf(alice.certDer).fingerprint,
      cert: toBase64(alice.certDer),
    };
    relay.records[0].record.to = Uint8Array.of(0xef, 0xbb, 0xbf, ...utf8("lobby"));
    pair.serverConn.send(pair.server.records.seal(encodeRelay(relay)));
    await pair.serverConn.flush();
    const end = await pair.running;
    assert.equal(end.outcome, "error");
    assert.equal(end.code, "TAMPERED", end.message);
    assert.match(end.message ?? "", /lobby/);
    assert.deepEqual(pair.received, []);
  } finally {
    await pair.dispose();
  }
});
