/**
 * fwd17: the server forwards what it received. A user's msg whose text is its canonical form
 * (receivedItems) gives each record's relayed JSON and its carrier as the bytes that came; any
 * other text is laid out afresh. Both paths must write the same bytes — every relay's wire
 * content, the author's and each recipient's transcript line and line_enc — and a text that is
 * not canonical must never be forwarded as it came.
 */
import assert from "node:assert/strict";
import { ByteBuilder, fromBase64Each, toBase64, utf8 } from "../../lib/bytes.ts";
import type { E2eEnvelope } from "../../lib/e2e/envelope.ts";
import {
  type C2sMsgMessage,
  C2sMsgShape,
  type GroupItem,
  leafHash,
  LOBBY,
  type MessageRecord,
  type PreparedLine,
  prepareRelay,
  ReceivedGroup,
  receivedItems,
  RecipientRelayGroup,
  sealContent,
  signBatch,
  UserMsg,
  userMsgRecords,
} from "../../lib/message/record.ts";
import { MAX_INNER_BYTES, unpadContents } from "../../lib/handshake/record.ts";
import { parseMessageAndText } from "../../lib/wire/messages.ts";
import { hasNoEscape, jsonAt } from "../../lib/wire/canonical_text.ts";
import {
  b64,
  type Carried,
  sentMsg,
  testAuthor as author,
  testSigner as signer,
} from "../helpers/user_msgs.ts";
import { fuzzSeed, Rng } from "../../testkit/fuzz.ts";

const SEED = fuzzSeed();

const SENDER: E2eEnvelope = { kind: "sender", from: "0a".repeat(8), id: 4, n: 17, w: b64(48) };
const RATCHET: E2eEnvelope = {
  kind: "ratchet",
  from: "0b".repeat(8),
  wraps: [
    { device: "0c".repeat(8), dh: b64(32, 1), pn: 0, n: 2, w: b64(48, 2) },
    {
      device: "0d".repeat(8),
      dh: b64(32, 3),
      pn: 1,
      n: 0,
      w: b64(48, 4),
      pre: {
        ik: b64(32, 5),
        ik_sig: b64(64, 6),
        ek: b64(32, 7),
        spk_id: 9,
        pq_id: 10,
        opk_id: 11,
        kem_ct: b64(1088, 8),
      },
    },
  ],
};

/** A signed batch of `n` records: lobby lines end to end, a private line, a text with `k`. */
async function batch(n: number): Promise<Carried[]> {
  const made = Array.from({ length: n }, (_, j): Carried => {
    const kind = j % 3;
    const { k, ct, c } = sealContent({ kind: "text", text: `line ${j}` });
    const record: MessageRecord = {
      sid: "0f".repeat(16),
      dir: "c2s",
      to: kind === 1 ? "@bob" : LOBBY,
      seqno: 3 + j,
      ts: 1_796_000_000_000 + j,
      ct,
      c,
    };
    return { record, k, e2e: kind === 0 ? SENDER : kind === 1 ? RATCHET : undefined };
  });
  await signBatch(signer, made.map((m) => m.record));
  return made;
}

function bytesOf(write: (out: ByteBuilder) => void): string {
  const out = new ByteBuilder();
  write(out);
  return toBase64(out.done());
}

/**
 * What the server makes of a msg's bytes (as #checkUserMsg and #acceptUserMsg do), taking
 * what it can from them (`fromSource`) or laying everything out afresh: the wire content of a
 * relay of all its records and of one of them, their transcript lines and line_enc, and the
 * author's line and line_enc.
 */
function forwarded(content: Uint8Array, fromSource: boolean) {
  const { message, text } = parseMessageAndText(content, C2sMsgShape);
  const msg = message as C2sMsgMessage;
  const source = fromSource ? receivedItems(content, text, msg) : undefined;
  const records = userMsgRecords(msg);
  const [sig, ...proof] = fromBase64Each([msg.sig, ...msg.proof]);
  const group = new ReceivedGroup(
    msg,
    { sig, first: msg.first, n: msg.n, proof },
    records,
    records.map(leafHash),
    source,
  );
  const prepared = msg.records.map((item, j) => {
    const forms = group.whole(j, item.record);
    return "e2e" in item
      ? prepareRelay(author, forms, undefined, item.e2e, "PROTOCOL_ERROR", group.carrier(j))
      : prepareRelay(
        author,
        forms,
        fromBase64Each([item.k])[0],
        undefined,
        "PROTOCOL_ERROR",
        group.carrier(j),
      );
  });
  const all = new RecipientRelayGroup(prepared[0], 9, 1_796_000_000_100, true);
  for (const item of prepared.slice(1)) all.add(item);
  const one = new RecipientRelayGroup(prepared[prepared.length - 1], 10, 1_796_000_000_101, false);
  const line = new UserMsg(prepared[0] as GroupItem);
  for (const item of prepared.slice(1)) line.add(item);
  const lines = (
    l: PreparedLine,
  ) => [bytesOf((o) => l.writeJson(o)), bytesOf((o) => l.writeEncoding(o))];
  return {
    source,
    wire: [bytesOf((o) => all.writeTo(o)), bytesOf((o) => one.writeTo(o))],
    lines: [...lines(all), ...lines(one), ...lines(line)],
    stored: prepared.map((p) => [toBase64(p.record), toBase64(p.keyTail)]),
  };
}

Deno.test("receivedItems(): a msg as ours writes it is forwarded from its own bytes, and every relay, line and line_enc equals the one laid out afresh", async () => {
  const content = sentMsg(await batch(7));
  const taken = forwarded(content, true);
  assert.ok(taken.source, "the msg as ours writes it is taken as it came");
  const laidOut = forwarded(content, false);
  assert.deepEqual(taken.wire, laidOut.wire);
  assert.deepEqual(taken.lines, laidOut.lines);
  assert.deepEqual(taken.stored, laidOut.stored);
  // Each record's JSON and carrier are its own bytes as they came, copied out of the msg in one
  // piece: the inside of its `records` array, exactly.
  const { source } = taken;
  assert.equal(source.items.length, 7);
  const wire = new TextDecoder().decode(content);
  const inside = new TextDecoder().decode(source.bytes);
  assert.ok(wire.endsWith(`,"records":[${inside}]}`), "the records array's inside");
  assert.equal(source.bytes.buffer.byteLength, source.bytes.length, "a copy of its own");
  let at = 0;
  for (const [j, { record, carrier }] of source.items.entries()) {
    const text = new TextDecoder().decode(record) + new TextDecoder().decode(carrier);
    const item = `${j === 0 ? "" : ","}{"record":${text}`;
    assert.equal(inside.slice(at, at + item.length), item, `record ${j}`);
    at += item.length;
    assert.ok(/^,"(k|e2e)":/.test(new TextDecoder().decode(carrier)), `carrier ${j}`);
    assert.equal(record.buffer, source.bytes.buffer, "views of the one copy");
    assert.equal(carrier.buffer, source.bytes.buffer, "views of the one copy");
  }
  assert.equal(at, inside.length);
});

/** Texts of one msg that JSON reads as the same value but that are not its canonical form. */
function respellings(text: string): string[] {
  const first = (from: string, to: string) => {
    assert.ok(text.includes(from), from);
    return text.replace(from, to);
  };
  return [
    ` ${text}`,
    `${text}\n`,
    first('{"record":', '{ "record":'),
    first('"seqno":', '"seqno" :'),
    first(',"e2e":', ', "e2e":'),
    first('"seqno":3,', '"seqno":3.0,'),
    first('"seqno":3,', '"seqno":3e0,'),
    first('"pn":0,', '"pn":-0,'),
    first('"n":17,', '"n":1.7e1,'),
    first('"dir":"c2s"', '"dir":"c2\\u0073"'),
    first('"to":"lobby"', '"to":"lob\\u0062y"'),
    first('"to":"@bob"', '"to":"\\u0040bob"'),
    first('"kind":"sender"', '"kind":"sende\\u0072"'),
    first('"type":"msg"', '"type":"ms\\u0067"'),
    // members in another order: the record's, the carrier's, the wrap's, the msg's
    text.replace(/"ct":("[^"]*"),"c":("[^"]*")/, '"c":$2,"ct":$1'),
    first(`"id":4,"n":17`, `"n":17,"id":4`),
    first('"pn":0,"n":2', '"n":2,"pn":0'),
    first('"first":3,"n":4', '"n":4,"first":3'),
  ];
}

Deno.test("receivedItems(): a msg spelt otherwise than its canonical form (whitespace, numbers, escapes, member order) is never forwarded as it came: its relays and lines are the canonical ones", async () => {
  const content = sentMsg(await batch(4));
  const text = new TextDecoder().decode(content);
  const canonical = forwarded(content, false);
  let compared = 0;
  for (const other of respellings(text)) {
    assert.notEqual(other, text);
    const bytes = utf8(other);
    let taken;
    try {
      taken = forwarded(bytes, true);
    } catch {
      continue; // a spelling the shape refuses (the msg is refused as today)
    }
    assert.equal(taken.source, undefined, other.slice(0, 300));
    assert.deepEqual(taken.wire, canonical.wire, other.slice(0, 300));
    assert.deepEqual(taken.lines, canonical.lines);
    assert.deepEqual(taken.stored, canonical.stored);
    compared++;
  }
  assert.ok(compared >= 15, `${compared} respellings parsed`);
});

Deno.test("receivedItems(): a text beyond ASCII is laid out afresh (its offsets are not its bytes')", async () => {
  const made = await batch(2);
  const content = sentMsg(made);
  const text = new TextDecoder().decode(content).replace('"to":"@bob"', '"to":"@bøb"');
  const bytes = utf8(text);
  const { message } = parseMessageAndText(bytes, C2sMsgShape);
  assert.equal(receivedItems(bytes, text, message as C2sMsgMessage), undefined);
});

/** A random JSON value of the kinds a message holds. */
function randomValue(rng: Rng, depth = 0): unknown {
  const pick = rng.int(depth > 3 ? 4 : 6);
  if (pick === 0) return rng.pick(["", "a", "lobby", b64(rng.int(40)), "x:y", "é", "{}"]);
  if (pick === 1) {
    return rng.pick([
      0,
      -0,
      1,
      10,
      17,
      -3,
      -120,
      1_700_000_000_123,
      2 ** 53 - 1,
      -(2 ** 53 - 1),
      0.5,
      1e21,
      1e-7,
      -1.25e-9,
    ]);
  }
  if (pick === 2) return rng.pick([true, false]);
  if (pick === 3) return null;
  if (pick === 4) return Array.from({ length: rng.int(4) }, () => randomValue(rng, depth + 1));
  const o: Record<string, unknown> = {};
  for (let i = rng.int(5); i > 0; i--) {
    o[rng.pick(["a", "b", "kind", "n", "w"]) + i] = randomValue(rng, depth + 1);
  }
  return o;
}

/** `value` with its integers (at any depth) a little off now and then: one more, ten times. */
function nudged(rng: Rng, value: unknown): unknown {
  if (typeof value === "number" && Number.isSafeInteger(value)) {
    return rng.pick([value, value + 1, value - 1, value * 10, -value]);
  }
  if (Array.isArray(value)) return value.map((v) => nudged(rng, v));
  if (typeof value === "object" && value !== null) {
    return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, nudged(rng, v)]));
  }
  return value;
}

/** A text of `value` spelt another way now and then: spaces, an escape, a number's exponent. */
function respell(rng: Rng, text: string): string {
  const at = rng.int(text.length + 1);
  const cut = (s: string) => text.slice(0, at) + s + text.slice(at);
  switch (rng.int(6)) {
    case 0:
      return cut(" ");
    case 5: // -0, which JSON.stringify writes as 0
      return text.replace(/([:,[])0([,\]}])/, "$1-0$2");
    case 1:
      return text.replace(/"a/, '"\\u0061');
    case 2:
      return text.replace(/(\d)([,\]}])/, "$1.0$2");
    case 3:
      return text.replace(/(\d)([,\]}])/, "$1e0$2");
    default:
      return text;
  }
}

Deno.test("jsonAt() matches a text exactly when it is JSON.stringify of what it parses to", () => {
  const rng = new Rng(SEED ^ 0x17fd);
  let matched = 0;
  let refused = 0;
  for (let i = 0; i < 4000; i++) {
    const text = respell(rng, JSON.stringify(randomValue(rng)));
    let value: unknown;
    try {
      value = JSON.parse(text);
    } catch {
      continue;
    }
    if (!hasNoEscape(text)) continue; // the matchers judge only such text
    const canonical = JSON.stringify(value) === text;
    assert.equal(jsonAt(text, 0, value) === text.length, canonical, `seed ${SEED}: ${text}`);
    // Inside a longer text, it ends where the value does.
    assert.equal(jsonAt(`[${text},1]`, 1, value) === text.length + 1, canonical);
    // Another value matches only a text that is its own canonical form (a number a digit off).
    const other = rng.int(2) === 0 ? randomValue(rng) : nudged(rng, value);
    assert.equal(
      jsonAt(text, 0, other) === text.length,
      JSON.stringify(other) === text,
      `seed ${SEED}: ${text} against ${JSON.stringify(other)}`,
    );
    if (canonical) matched++;
    else refused++;
  }
  assert.ok(matched > 1000 && refused > 200, `${matched} matched, ${refused} refused`);
});

Deno.test("receivedItems(): a relay of a msg that came in a padded record keeps its msg's records' bytes alone, copied in one piece, not the msg's other members or the record's (review17 R17-3, R17-5)", async () => {
  const wire = sentMsg(await batch(3));
  // A record's inner may be padded to its largest (PROTOCOL §3.2): one content, then zeros.
  const inner = new Uint8Array(MAX_INNER_BYTES);
  new DataView(inner.buffer).setUint32(0, wire.length);
  inner.set(wire, 4);
  const [content] = unpadContents(inner);
  const { message, text } = parseMessageAndText(content, C2sMsgShape);
  const received = receivedItems(content, text, message as C2sMsgMessage);
  assert.ok(received, "the msg is canonical");
  const records = received.items.reduce(
    (n, { record, carrier }) => n + record.length + carrier.length + '{"record":'.length,
    0,
  );
  // The records' bytes, with the commas between them: nothing of the msg's head, nor the record's.
  assert.equal(received.bytes.buffer.byteLength, records + received.items.length - 1);
  assert.ok(received.bytes.buffer.byteLength < content.length);
  for (const { record, carrier } of received.items) {
    assert.equal(record.buffer, received.bytes.buffer);
    assert.equal(carrier.buffer, received.bytes.buffer);
  }
});

Deno.test("ReceivedGroup.retainedBytes counts the msg's records as received too, when the msg came canonical (review17 R17-5)", async () => {
  const content = sentMsg(await batch(4));
  const { message, text } = parseMessageAndText(content, C2sMsgShape);
  const msg = message as C2sMsgMessage;
  const items = receivedItems(content, text, msg);
  assert.ok(items);
  const records = userMsgRecords(msg);
  const [sig, ...proof] = fromBase64Each([msg.sig, ...msg.proof]);
  const group = (received?: typeof items) =>
    new ReceivedGroup(
      msg,
      { sig, first: msg.first, n: msg.n, proof },
      records,
      records.map(leafHash),
      received,
    );
  assert.equal(group(items).retainedBytes - group().retainedBytes, items.bytes.length);
});
