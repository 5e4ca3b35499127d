/**
 * rel21: a relay carrying all of a user's msg's records and carriers as received writes its wire
 * items as the msg's `records` came (ReceivedItems.bytes, one copy per recipient), not item by
 * item. The fast path must write exactly what the item-by-item path writes: this compares the two,
 * and JSON.stringify's text, on a seeded corpus of msgs and seeded mutations of them (respellings,
 * byte mutations that still parse, a carrier made afresh, a subset relayed), with the lines and
 * line_enc beside them. Replay a failure with SECURECHAT_FUZZ_SEED=<seed>.
 */
import assert from "node:assert/strict";
import { ByteBuilder, type Encodable, fromBase64Each, toBase64, utf8 } from "../../lib/bytes.ts";
import type { E2eEnvelope } from "../../lib/e2e/envelope.ts";
import {
  type C2sMsgMessage,
  C2sMsgShape,
  canonicalUserMsg,
  leafHash,
  LOBBY,
  type MessageRecord,
  type PreparedLine,
  type PreparedRelay,
  prepareRelay,
  ReceivedGroup,
  receivedItems,
  RecipientRelayGroup,
  sealContent,
  signBatch,
  UserMsg,
  type UserMsgRead,
  userMsgRecords,
} from "../../lib/message/record.ts";
import { parseMessageAndText } from "../../lib/wire/messages.ts";
import {
  b64,
  type Carried,
  sentMsg,
  testAuthor as author,
  testSigner as signer,
} from "../helpers/user_msgs.ts";
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

function written(write: (out: ByteBuilder) => void): string {
  const out = new ByteBuilder();
  write(out);
  return decoder.decode(out.done());
}

/** The wire content, checked against the length it announced (what a record's inner counts). */
function wire(content: Encodable): string {
  const text = written((out) => content.writeTo(out));
  assert.equal(utf8(text).length, content.length, `seed ${SEED}: the length announced`);
  return text;
}

/** A line's JSON, and its line_enc (binary) in base64. */
function line(l: PreparedLine): string[] {
  const encoding = new ByteBuilder();
  l.writeEncoding(encoding);
  return [written((out) => l.writeJson(out)), toBase64(encoding.done())];
}

/** How one msg is forwarded: which record's carrier is made afresh, which records a relay takes. */
interface Variation {
  freshCarrier?: number;
  subset: number[];
}

/**
 * How the msg's records as received are found: by canonicalUserMsg's one pass, as the server's
 * session reads a msg (the chokepoint, then receivedItems, when it declines); by receivedItems
 * after the chokepoint; or not at all (the records laid out afresh).
 */
type Reading = "canonicalUserMsg" | "receivedItems" | "laid out";
const AS_RECEIVED: readonly Reading[] = ["canonicalUserMsg", "receivedItems"];

function readMsg(content: Uint8Array, reading: Reading): UserMsgRead {
  const fast = reading === "canonicalUserMsg" ? canonicalUserMsg(content) : undefined;
  if (fast) return fast;
  const { message, text } = parseMessageAndText(content, C2sMsgShape);
  const msg = message as C2sMsgMessage;
  return {
    message: msg,
    records: userMsgRecords(msg),
    received: reading === "laid out" ? undefined : receivedItems(content, text, msg),
  };
}

/**
 * What the server makes of a msg's bytes (as #checkUserMsg and #acceptUserMsg do), read as
 * `reading` says: a relay of all its records, one of `subset`, their lines, and the author's line.
 */
function forwarded(content: Uint8Array, reading: Reading, variation: Variation) {
  const { message: msg, records, received: source } = readMsg(content, reading);
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
  const relayOf = (items: PreparedRelay[], seqno: number, introduce: boolean) => {
    const relay = new RecipientRelayGroup(items[0], seqno, 1_796_000_000_100 + seqno, introduce);
    for (const item of items.slice(1)) {
      assert.ok(relay.takes(item));
      relay.add(item);
    }
    return relay;
  };
  const all = relayOf(prepared, 9, true);
  const some = relayOf(variation.subset.map((j) => prepared[j]), 10, false);
  const authorLine = new UserMsg(prepared[0]);
  for (const item of prepared.slice(1)) authorLine.add(item);
  return {
    asReceived: group.itemsAsReceived(prepared),
    // Written twice: what the first made (the proof, whether the items are as received) is kept.
    wire: [wire(all), wire(some), wire(all)],
    lines: [...line(authorLine), ...line(all), ...line(some)],
  };
}

/** JSON.stringify's text of a relay of all of the msg `text`'s records, and its line's. */
function expected(text: string, introduce: boolean) {
  const msg = JSON.parse(text);
  const head = {
    seqno: 9,
    ts: 1_796_000_000_109,
    author_fp: author.fingerprint,
    ...(introduce ? { cert: author.cert!.base64 } : {}),
    sig: msg.sig,
    first: msg.first,
    n: msg.n,
    proof: msg.proof,
  };
  const records = msg.records as { record: unknown }[];
  return {
    wire: JSON.stringify({ type: "relay", ...head, records }),
    line: JSON.stringify({
      dir: "s2c",
      type: "relay",
      ...head,
      records: records.map(({ record }) => ({ record })),
    }),
    authorLine: JSON.stringify({
      dir: "c2s",
      type: "msg",
      sig: msg.sig,
      first: msg.first,
      n: msg.n,
      proof: msg.proof,
      records: records.map(({ record }) => ({ record })),
    }),
  };
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

Deno.test("a relay of a whole msg as received writes what the item-by-item path and JSON.stringify write: seeded corpus", async () => {
  const rng = new Rng(SEED ^ 0x5e21);
  let fast = 0;
  let carrierMade = 0;
  for (let round = 0; round < 40; round++) {
    const n = rng.pick([1, 2, 3, 7, 32, rng.range(1, 32)]);
    const content = sentMsg(await batch(rng, n));
    const text = decoder.decode(content);
    const variation = variationFor(rng, n);
    assert.ok(canonicalUserMsg(content), "our client's msg is read in one pass");
    const laidOut = forwarded(content, "laid out", variation);
    assert.equal(laidOut.asReceived, false);
    const oracle = expected(text, true);
    for (const reading of AS_RECEIVED) {
      const taken = forwarded(content, reading, variation);
      const why = `seed ${SEED}, round ${round}, ${n} records, ${reading}, ${
        JSON.stringify(variation)
      }`;
      // The canonical msg's records are forwarded as they came, unless a carrier was made afresh.
      assert.equal(taken.asReceived, variation.freshCarrier === undefined, why);
      assert.deepEqual(taken.wire, laidOut.wire, why);
      assert.deepEqual(taken.lines, laidOut.lines, why);
      if (variation.freshCarrier === undefined) assert.equal(taken.wire[0], oracle.wire, why);
      assert.equal(taken.lines[0], oracle.authorLine, why);
      assert.equal(taken.lines[2], oracle.line, why);
    }
    fast++;
    if (variation.freshCarrier !== undefined) carrierMade++;
  }
  assert.ok(fast === 40 && carrierMade > 3, `${carrierMade} rounds with a carrier made afresh`);
});

Deno.test("a relay of a mutated msg (respelt, a ct changed, or its bytes mutated and still parsed) writes what the item-by-item path writes, never the text as it came when it is not canonical: seeded mutations", async () => {
  const rng = new Rng(SEED ^ 0x5e22);
  let respelled = 0;
  let changed = 0;
  let mutated = 0;
  for (let round = 0; round < 300; round++) {
    const n = rng.pick([1, 2, 5, 32, rng.range(1, 32)]);
    const original = sentMsg(await batch(rng, n));
    const canonical = forwarded(original, "laid out", variationFor(new Rng(round), n));
    const how = rng.pick(["respelt", "ct changed", "bytes mutated"]);
    const content = how === "respelt"
      ? utf8(respelt(rng, decoder.decode(original)))
      : how === "ct changed"
      ? utf8(ctChanged(rng, decoder.decode(original)))
      : mutateBytes(rng, original, rng.range(1, 2));
    let laidOut;
    try {
      laidOut = forwarded(content, "laid out", variationFor(new Rng(round), n));
    } catch {
      continue; // refused by the shape (or not a relayable record): refused as today
    }
    for (const reading of AS_RECEIVED) {
      const why = `seed ${SEED}, round ${round}, ${n} records, ${reading}`;
      const taken = forwarded(content, reading, variationFor(new Rng(round), n));
      assert.deepEqual(taken.wire, laidOut.wire, why);
      assert.deepEqual(taken.lines, laidOut.lines, why);
      if (how === "respelt") {
        // The same value spelt otherwise: laid out as the canonical msg is, never as it came.
        assert.equal(taken.asReceived, false, why);
        assert.deepEqual(taken.wire, canonical.wire, why);
        assert.deepEqual(taken.lines, canonical.lines, why);
      } else if (how === "ct changed") {
        // Another msg, canonical: forwarded as it came, and not as the original.
        const fresh = variationFor(new Rng(round), n).freshCarrier;
        assert.equal(taken.asReceived, fresh === undefined, why);
        assert.notDeepEqual(taken.wire, canonical.wire, why);
      }
    }
    if (how === "respelt") respelled++;
    else if (how === "ct changed") changed++;
    else mutated++;
  }
  // Each kind is a third of the rounds (~100); few byte mutations parse.
  assert.ok(respelled > 60 && changed > 60, `${respelled} respelt, ${changed} with a ct changed`);
  assert.ok(respelled + changed + mutated < 300, `${mutated} mutated bytes parsed`);
});
