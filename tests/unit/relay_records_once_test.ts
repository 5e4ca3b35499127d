/**
 * rel21, session 23: a relay is binary (PROTOCOL §6.4 "A relay on the wire"), and a relay carrying
 * all of a user's msg's records writes the msg's group_enc (ReceivedGroup.groupEncoding, TRANSCRIPT
 * §3.1), laid out once for every recipient, where a relay of some of them lays its group_enc out
 * item by item. The two must write the same bytes for the same records: this compares a relay of a
 * whole msg with relays of the same records made afresh (not from the msg: item by item), subset
 * relays with their afresh twins, both with the layout as the text gives it (the tests' own
 * encoder, tests/helpers/relay_wire.ts), and readRelay of each with the JSON form JSON.stringify
 * gives, on a seeded corpus of msgs and seeded mutations of them (respellings, a `ct` changed,
 * byte mutations that still parse), with the lines and line_enc beside them. Replay a failure with
 * SECURECHAT_FUZZ_SEED=<seed>.
 */
import assert from "node:assert/strict";
import {
  ByteBuilder,
  type Encodable,
  fromBase64Each,
  toBase64,
  toHex,
  utf8,
} from "../../lib/bytes.ts";
import type { E2eEnvelope } from "../../lib/e2e/envelope.ts";
import {
  type C2sMsgMessage,
  C2sMsgShape,
  canonicalUserMsg,
  encodeRecord,
  groupRoot,
  leafHash,
  LOBBY,
  type MessageRecord,
  type PreparedLine,
  type PreparedRelay,
  prepareRelay,
  ReceivedGroup,
  receivedItems,
  RecipientRelayGroup,
  RecordForms,
  sealContent,
  signBatch,
  UserMsg,
  type UserMsgRead,
  userMsgRecords,
} from "../../lib/message/record.ts";
import { readRelay } from "../../lib/message/relay_wire.ts";
import { parseMessageAndText } from "../../lib/wire/messages.ts";
import {
  b64,
  type Carried,
  sentMsg,
  testAuthor as author,
  testSigner as signer,
} from "../helpers/user_msgs.ts";
import { encodeRelay, type ForgedRelay, groupEnc } from "../helpers/relay_wire.ts";
import { fuzzSeed, mutateBytes, Rng } from "../../testkit/fuzz.ts";

const SEED = fuzzSeed();
const decoder = new TextDecoder();

function sender(rng: Rng): E2eEnvelope {
  return {
    kind: "sender",
    from: "0a".repeat(8),
    id: rng.int(1000),
    n: rng.int(100_000),
    w: b64(48, rng.int(256)),
  };
}

function ratchet(rng: Rng): E2eEnvelope {
  return {
    kind: "ratchet",
    from: "0b".repeat(8),
    wraps: [{ device: "0c".repeat(8), dh: b64(32, 1), pn: rng.int(9), n: rng.int(9), w: b64(48) }],
  };
}

/** A signed batch of `n` records of random kinds and lengths: lobby lines end to end mostly. */
async function batch(rng: Rng, n: number): Promise<Carried[]> {
  const made = Array.from({ length: n }, (_, j): Carried => {
    const kind = rng.pick([0, 0, 0, 1, 2]);
    const text = "x".repeat(rng.int(300)) + ` line ${j}`;
    const { k, ct, c } = sealContent({ kind: "text", text });
    const record: MessageRecord = {
      sid: "0f".repeat(16),
      dir: "c2s",
      to: kind === 1 ? "@bob" : LOBBY,
      seqno: 3 + j,
      ts: 1_796_000_000_000 + j,
      ct,
      c,
    };
    return { record, k, e2e: kind === 0 ? sender(rng) : kind === 1 ? ratchet(rng) : undefined };
  });
  await signBatch(signer, made.map((m) => m.record));
  return made;
}

/** The wire content, checked against the length it announced (what a record's inner counts). */
function wire(content: Encodable): Uint8Array {
  const out = new ByteBuilder();
  content.writeTo(out);
  const bytes = out.done();
  assert.equal(bytes.length, content.length, `seed ${SEED}: the length announced`);
  return bytes;
}

/** A line's JSON, and its line_enc (binary) in base64. */
function line(l: PreparedLine): string[] {
  const json = new ByteBuilder();
  l.writeJson(json);
  const encoding = new ByteBuilder();
  l.writeEncoding(encoding);
  return [decoder.decode(json.done()), toBase64(encoding.done())];
}

/** Where a relay's group_enc starts: after its tag, hop, author_fp and certificate (§6.4). */
const groupStart = (introduce: boolean) =>
  1 + 8 + 8 + 32 + 4 + (introduce ? author.cert!.der.length : 0);

/**
 * How the msg's records are found: by canonicalUserMsg's one pass, as the server's session reads a
 * msg; by receivedItems after the parse chokepoint (the records as received); or not at all (the
 * chokepoint alone). Each is a ReceivedGroup, whose whole msg's group_enc a relay writes.
 */
type Reading = "canonicalUserMsg" | "receivedItems" | "parsed";
const READINGS: readonly Reading[] = ["canonicalUserMsg", "receivedItems", "parsed"];

function readMsg(content: Uint8Array, reading: Reading): UserMsgRead {
  const fast = reading === "canonicalUserMsg" ? canonicalUserMsg(content) : undefined;
  if (fast) return fast;
  const { message, text } = parseMessageAndText(content, C2sMsgShape);
  const msg = message as C2sMsgMessage;
  return {
    message: msg,
    records: userMsgRecords(msg),
    received: reading === "parsed" ? undefined : receivedItems(content, text, msg),
  };
}

/** Which records a subset relay takes, and which record's JSON carrier is made afresh. */
interface Variation {
  freshCarrier?: number;
  subset: number[];
}

/** A recipient's relay of `items` (all of them, in order). */
function relayOf(items: PreparedRelay[], seqno: number, introduce: boolean): RecipientRelayGroup {
  const relay = new RecipientRelayGroup(items[0], seqno, 1_796_000_000_100 + seqno, introduce);
  for (const item of items.slice(1)) {
    assert.ok(relay.takes(item));
    relay.add(item);
  }
  return relay;
}

/**
 * What the server makes of a msg's bytes (as #checkUserMsg and #acceptUserMsg do), read as
 * `reading` says: a relay of all its records (to two recipients), one of `subset`, their lines,
 * the author's line, and the msg's ReceivedGroup.
 */
function forwarded(content: Uint8Array, reading: Reading, variation: Variation) {
  const { message: msg, records, received: source } = readMsg(content, reading);
  // The msg as parsed, before group.whole gives its records' JSON `sig` and `batch` in place.
  const parsed: C2sMsgMessage = JSON.parse(JSON.stringify(msg));
  const [sig, ...proof] = fromBase64Each([msg.sig, ...msg.proof]);
  const group = new ReceivedGroup(
    msg,
    { sig, first: msg.first, n: msg.n, proof },
    records,
    records.map(leafHash),
    source,
  );
  const prepared: PreparedRelay[] = msg.records.map((item, j) => {
    const forms = group.whole(j, item.record);
    const carrier = j === variation.freshCarrier ? undefined : group.carrier(j);
    return "e2e" in item
      ? prepareRelay(author, forms, undefined, item.e2e, "PROTOCOL_ERROR", carrier)
      : prepareRelay(
        author,
        forms,
        fromBase64Each([item.k])[0],
        undefined,
        "PROTOCOL_ERROR",
        carrier,
      );
  });
  const all = relayOf(prepared, 9, true);
  const other = relayOf(prepared, 11, false);
  const some = relayOf(variation.subset.map((j) => prepared[j]), 10, false);
  const authorLine = new UserMsg(prepared[0]);
  for (const item of prepared.slice(1)) authorLine.add(item);
  // Written twice: what the first made (the proof, the whole msg's group_enc) is kept.
  const wires = [wire(all), wire(some), wire(all), wire(other)];
  return {
    msg: parsed,
    group,
    wires,
    lines: [...line(authorLine), ...line(all), ...line(some)],
  };
}

/**
 * The same records relayed with everything made afresh from the records themselves (RecordForms
 * of encodeRecord, no msg behind them): each relay lays its group_enc out item by item.
 */
function afresh(msg: C2sMsgMessage, made: Carried[], subset: number[]) {
  const prepared = msg.records.map((item) => {
    const carried = made.find((m) => m.record.seqno === item.record.seqno)!;
    const forms = new RecordForms(carried.record, encodeRecord(carried.record));
    return "e2e" in item
      ? prepareRelay(author, forms, undefined, item.e2e)
      : prepareRelay(author, forms, carried.k);
  });
  const all = relayOf(prepared, 9, true);
  const some = relayOf(subset.map((j) => prepared[j]), 10, false);
  return { wires: [wire(all), wire(some)], lines: [...line(all), ...line(some)] };
}

/** A relay's JSON form as JSON.stringify gives it, of the msg's records `subset` (all: undefined). */
function jsonForm(
  msg: C2sMsgMessage,
  hop: { seqno: number; introduce: boolean },
  proof: string[],
  subset?: number[],
): ForgedRelay & { type: "relay" } {
  const records = subset ? subset.map((j) => msg.records[j]) : msg.records;
  return JSON.parse(JSON.stringify({
    type: "relay",
    seqno: hop.seqno,
    ts: 1_796_000_000_100 + hop.seqno,
    author_fp: author.fingerprint,
    ...(hop.introduce ? { cert: author.cert!.base64 } : {}),
    sig: msg.sig,
    first: msg.first,
    n: msg.n,
    proof,
    records,
  }));
}

/** A relay's transcript line as JSON.stringify gives it (TRANSCRIPT §2.2: no carriers). */
function lineJson(form: ForgedRelay): string {
  const { type: _type, records, ...rest } = form;
  return JSON.stringify({
    dir: "s2c",
    type: "relay",
    ...rest,
    records: records.map((item) => ({ record: item.record })),
  });
}

/** The msg's text spelt otherwise, JSON reading the same value: a space between two tokens. */
function respelt(rng: Rng, text: string): string {
  const at: number[] = [];
  for (let i = 0; i < text.length; i++) if (text[i] === "," || text[i] === ":") at.push(i + 1);
  const i = rng.pick(at);
  return text.slice(0, i) + " " + text.slice(i);
}

/** The msg's text with one character of a record's `ct` changed: still canonical, another msg. */
function ctChanged(rng: Rng, text: string): string {
  const at: number[] = [];
  for (let i = text.indexOf('"ct":"'); i >= 0; i = text.indexOf('"ct":"', i + 1)) at.push(i + 6);
  const i = rng.pick(at) + rng.int(8);
  const other = rng.pick([..."ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"]
    .filter((c) => c !== text[i]));
  return text.slice(0, i) + other + text.slice(i + 1);
}

function variationFor(rng: Rng, n: number): Variation {
  const subset = Array.from({ length: n }, (_, j) => j).filter(() => rng.chance(0.5));
  return {
    freshCarrier: rng.chance(0.3) ? rng.int(n) : undefined,
    subset: subset.length > 0 ? subset : [n - 1],
  };
}

/**
 * Everything a relay of `content`'s msg must be, read every way: the same bytes whichever way the
 * msg was read and whatever carrier was made afresh; the whole msg's group_enc in a whole relay;
 * readRelay giving JSON.stringify's JSON form; the layout as the text gives it. Returns the wires.
 */
function checkMsg(
  content: Uint8Array,
  variation: Variation,
  why: string,
  mutated = false,
): Uint8Array[] {
  const base = forwarded(content, "parsed", variation);
  const { msg } = base;
  const all = jsonForm(msg, { seqno: 9, introduce: true }, msg.proof);
  const some = readRelay(base.wires[1]);
  assert.deepEqual(
    some,
    jsonForm(msg, { seqno: 10, introduce: false }, some.proof, variation.subset),
    `${why}: a subset relay's JSON form`,
  );
  // The subset's proof (derived) gives the batch's root, as the msg's own proof does.
  const root = (records: typeof msg.records, proof: string[]) =>
    groupRoot(
      records.map((item) => leafHash(userMsgRecordOf(item.record))),
      records.map((item) => item.record.seqno - msg.first),
      msg.n,
      fromBase64Each(proof),
    );
  const msgRoot = root(msg.records, msg.proof);
  // A mutated msg's proof may not fit (the server refuses it when it checks the signature).
  if (!mutated) assert.ok(msgRoot, `${why}: the msg's proof gives a root`);
  if (msgRoot) {
    assert.deepEqual(root(some.records, some.proof), msgRoot, `${why}: the subset's root`);
  }
  const forms = [all, jsonForm(msg, { seqno: 10, introduce: false }, some.proof, variation.subset)];
  for (const reading of READINGS) {
    const taken = reading === "parsed" ? base : forwarded(content, reading, variation);
    const at = `${why}, ${reading}`;
    assert.deepEqual(taken.wires, base.wires, `${at}: the same bytes whichever way it was read`);
    assert.deepEqual(taken.lines, base.lines, `${at}: the same lines`);
    // A whole msg's relay writes the msg's group_enc, the one buffer every recipient's shares.
    const encoding = taken.group.groupEncoding;
    const start = groupStart(true);
    assert.equal(
      toHex(taken.wires[0].subarray(start, start + encoding.length)),
      toHex(encoding),
      `${at}: the msg's group_enc`,
    );
    assert.strictEqual(taken.group.groupEncoding, encoding, `${at}: laid out once`);
    assert.equal(toHex(encoding), toHex(groupEnc(all)), `${at}: group_enc as TRANSCRIPT §3.1`);
    const otherStart = groupStart(false);
    assert.equal(
      toHex(taken.wires[3].subarray(otherStart, otherStart + encoding.length)),
      toHex(encoding),
      `${at}: another recipient's relay, the same group_enc`,
    );
  }
  // readRelay gives the JSON form JSON.stringify gives, in its member order too.
  assert.equal(JSON.stringify(readRelay(base.wires[0])), JSON.stringify(all), `${why}: whole`);
  assert.equal(JSON.stringify(some), JSON.stringify(forms[1]), `${why}: subset`);
  // The bytes are the layout PROTOCOL §6.4 gives (the tests' encoder, not lib's writer).
  assert.equal(toHex(base.wires[0]), toHex(encodeRelay(all)), `${why}: whole, as the text`);
  assert.equal(toHex(base.wires[1]), toHex(encodeRelay(forms[1])), `${why}: subset, as the text`);
  // The lines: a relay's is its JSON form without carriers (TRANSCRIPT §2.2).
  assert.equal(base.lines[2], lineJson(all), `${why}: the whole relay's line`);
  assert.equal(base.lines[4], lineJson(forms[1]), `${why}: the subset relay's line`);
  return base.wires;
}

/** A record of a msg's JSON as its leaf hashes it: decoded, without `sig` and `batch`. */
function userMsgRecordOf(json: C2sMsgMessage["records"][number]["record"]): MessageRecord {
  const [ct, c] = fromBase64Each([json.ct, json.c]);
  return { sid: json.sid, dir: json.dir, to: json.to, seqno: json.seqno, ts: json.ts, ct, c };
}

Deno.test("a relay of a whole msg writes the msg's group_enc, laid out once: the bytes of the same records relayed item by item, the text's layout, and readRelay gives JSON.stringify's JSON form: seeded corpus", async () => {
  const rng = new Rng(SEED ^ 0x5e21);
  let carrierMade = 0;
  let subsets = 0;
  for (let round = 0; round < 40; round++) {
    const n = rng.pick([1, 2, 3, 7, 32, rng.range(1, 32)]);
    const made = await batch(rng, n);
    const content = sentMsg(made);
    const variation = variationFor(rng, n);
    const why = `seed ${SEED}, round ${round}, ${n} records, ${JSON.stringify(variation)}`;
    assert.ok(canonicalUserMsg(content), "our client's msg is read in one pass");
    const wires = checkMsg(content, variation, why);
    // The same records made afresh, item by item: the same relays, the same lines.
    const { msg } = forwarded(content, "parsed", variation);
    const fresh = afresh(msg, made, variation.subset);
    assert.deepEqual(fresh.wires.map(toHex), [wires[0], wires[1]].map(toHex), `${why}: afresh`);
    const lines = forwarded(content, "parsed", variation).lines;
    assert.deepEqual(fresh.lines, lines.slice(2), `${why}: afresh, the lines`);
    if (variation.freshCarrier !== undefined) carrierMade++;
    if (variation.subset.length < n) subsets++;
  }
  assert.ok(carrierMade > 3, `${carrierMade} rounds with a carrier made afresh`);
  assert.ok(subsets > 10, `${subsets} rounds with a relay of some of the records`);
});

Deno.test("a relay of a mutated msg (respelt, a ct changed, or its bytes mutated and still parsed) writes the same bytes however it was read, the respelt msg's those of the msg as ours spells it: seeded mutations", async () => {
  const rng = new Rng(SEED ^ 0x5e22);
  let respelled = 0;
  let changed = 0;
  let mutated = 0;
  for (let round = 0; round < 300; round++) {
    const n = rng.pick([1, 2, 5, 32, rng.range(1, 32)]);
    const original = sentMsg(await batch(rng, n));
    const variation = variationFor(new Rng(round), n);
    const canonical = forwarded(original, "parsed", variation);
    const how = rng.pick(["respelt", "ct changed", "bytes mutated"]);
    const content = how === "respelt"
      ? utf8(respelt(rng, decoder.decode(original)))
      : how === "ct changed"
      ? utf8(ctChanged(rng, decoder.decode(original)))
      : mutateBytes(rng, original, rng.range(1, 2));
    try {
      forwarded(content, "parsed", variation);
    } catch {
      continue; // refused by the shape (or not a relayable record): refused as today
    }
    const why = `seed ${SEED}, round ${round}, ${n} records, ${how}`;
    const wires = checkMsg(content, variation, why, true);
    if (how === "respelt") {
      // The same value spelt otherwise: the same relays and lines as the msg ours spells.
      assert.deepEqual(wires, canonical.wires, why);
      assert.deepEqual(forwarded(content, "parsed", variation).lines, canonical.lines, why);
      respelled++;
    } else if (how === "ct changed") {
      // Another msg: not relayed as the original.
      assert.notDeepEqual(wires[0], canonical.wires[0], why);
      changed++;
    } else mutated++;
  }
  // Each kind is a third of the rounds (~100); few byte mutations parse.
  assert.ok(respelled > 60 && changed > 60, `${respelled} respelt, ${changed} with a ct changed`);
  assert.ok(respelled + changed + mutated < 300, `${mutated} mutated bytes parsed`);
});
