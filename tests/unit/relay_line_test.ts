/**
 * A relay's transcript line is one thing at both ends: the server's (RecipientRelayGroup, from
 * records prepared once for every recipient; RecipientRelay for a stored record) and the
 * recipient's (receivedRelayLine / receivedStoredLine, made from the message as it arrived) must
 * be the same JSON and the same encoding — TRANSCRIPT §2.2, §3.1's, as encodeLine and
 * lineEncoding write them — or the two transcripts' hashes, and so each side's receipt for the
 * other, would differ.
 */
import assert from "node:assert/strict";
import { ByteBuilder, fromBase64, toBase64, toHex } from "../../lib/bytes.ts";
import {
  type AuthorCert,
  decodeLine,
  decodeRecord,
  encodeLine,
  encodeRecord,
  groupRoot,
  leafHash,
  lineEncoding,
  LineShape,
  LOBBY,
  merkleTree,
  type MessageRecord,
  type PreparedLine,
  prepareRelay,
  receivedRelayLine,
  receivedStoredLine,
  RecipientRelay,
  RecipientRelayGroup,
  RecordForms,
  type RelayMessage,
  sealContent,
  userRecipient,
} from "../../lib/message/record.ts";
import { readRelay } from "../../lib/message/relay_wire.ts";
import { E2eEnvelopeShape } from "../../lib/e2e/envelope.ts";
import { SENDER_ENVELOPE } from "../helpers/records.ts";

const der = crypto.getRandomValues(new Uint8Array(300));
const fingerprint = toHex(crypto.getRandomValues(new Uint8Array(32)));
const author = { fingerprint, cert: { base64: toBase64(der), der } };
const sid = toHex(crypto.getRandomValues(new Uint8Array(16)));

/**
 * `tos.length` records of one batch starting at seqno 5, with the batch's real paths (the
 * signature is random bytes: nothing here verifies it) and their content keys.
 */
function batch(tos: string[]): { record: MessageRecord; k: Uint8Array }[] {
  const made = tos.map((to, j) => {
    const { k, ct, c } = sealContent({ kind: "text", text: `line ${j}` });
    const record: MessageRecord = {
      sid,
      dir: "c2s",
      to,
      seqno: 5 + j,
      ts: 1_700_000_000_000 + j,
      ct,
      c,
    };
    return { record, k };
  });
  const { paths } = merkleTree(made.map(({ record }) => leafHash(record)));
  const sig = crypto.getRandomValues(new Uint8Array(256));
  made.forEach(({ record }, i) => {
    record.sig = sig;
    record.batch = { i, n: made.length, path: paths[i] };
  });
  return made;
}

/** A line's JSON text and its encoding, as the transcript writer takes them. */
function written(line: PreparedLine): { json: string; enc: string } {
  const json = new ByteBuilder();
  line.writeJson(json);
  const enc = new ByteBuilder();
  line.writeEncoding(enc);
  return { json: new TextDecoder().decode(json.done()), enc: toHex(enc.done()) };
}

/** A relay's wire as its recipient reads it (PROTOCOL §6.4 "A relay on the wire"). */
function wireOf(content: RecipientRelayGroup): RelayMessage {
  const out = new ByteBuilder();
  content.writeTo(out);
  const bytes = out.done();
  assert.equal(bytes.length, content.length, "length is the wire content's");
  return readRelay(bytes);
}

/** The server's relay of `chosen` records of `made` to one recipient, and what it received. */
function bothEnds(
  made: { record: MessageRecord; k: Uint8Array }[],
  chosen: number[],
  introduce: boolean,
  e2e = false,
) {
  const prepared = chosen.map((i) =>
    prepareRelay(
      author,
      new RecordForms(made[i].record, encodeRecord(made[i].record)),
      e2e ? undefined : made[i].k,
      e2e ? SENDER_ENVELOPE : undefined,
    )
  );
  const sent = new RecipientRelayGroup(prepared[0], 3, 1_700_000_000_500, introduce);
  for (const p of prepared.slice(1)) {
    assert.ok(sent.takes(p), "a later record of the same batch joins");
    sent.add(p);
  }
  const message = wireOf(sent);
  const records = message.records.map((item) => decodeRecord(item.record));
  const group = {
    sig: fromBase64(message.sig),
    first: message.first,
    n: message.n,
    proof: message.proof.map(fromBase64),
  };
  const received = receivedRelayLine(
    message,
    introduce ? author : { fingerprint },
    group,
    records,
    records.map((_, j) => e2e ? undefined : made[chosen[j]].k),
  );
  return { sent, received, message, records, group };
}

for (const introduce of [true, false]) {
  for (const chosen of [[0, 1, 2, 3, 4], [1], [0, 2, 3]]) {
    Deno.test(`a relay of records ${chosen} of 5 ${introduce ? "introducing" : "naming"} its author: the server's line and the recipient's are the same, and TRANSCRIPT §2.2/§3.1's`, () => {
      const made = batch([LOBBY, userRecipient("bob"), LOBBY, LOBBY, LOBBY]);
      const { sent, received, message, records, group } = bothEnds(made, chosen, introduce);
      assert.deepEqual(written(received), written(sent));
      assert.deepEqual([received.dir, received.seqno, received.ts], [sent.dir, 3, sent.ts]);
      assert.equal(received.k, undefined, "a relay line's keys are by item");
      assert.deepEqual(received.itemKeys, sent.itemKeys);
      assert.deepEqual(sent.itemKeys?.map((k) => toHex(k!)), chosen.map((i) => toHex(made[i].k)));
      // The proof the server made proves the records to the batch's root.
      const root = merkleTree(made.map(({ record }) => leafHash(record))).root;
      const indices = records.map((r) => r.seqno - group.first);
      assert.deepEqual(indices, chosen);
      assert.equal(
        toHex(groupRoot(records.map(leafHash), indices, group.n, group.proof)!),
        toHex(root),
      );
      assert.equal(message.cert !== undefined, introduce);
      // The line as TRANSCRIPT defines it: encodeLine / lineEncoding of the parsed line.
      const { json, enc } = written(sent);
      const line = LineShape.safeParse(JSON.parse(json));
      assert.ok(line.success, JSON.stringify(line));
      assert.equal(json, encodeLine(decodeLine(line.data)));
      assert.equal(enc, toHex(lineEncoding(decodeLine(line.data))));
      // The line is the message without its carriers, plus dir.
      const { records: items, ...hop } = message;
      const { records: lineItems, dir, ...lineHop } = JSON.parse(json);
      assert.equal(dir, "s2c");
      assert.deepEqual(lineHop, hop);
      assert.deepEqual(lineItems, items.map((item) => ({ record: item.record })));
    });
  }
}

Deno.test("an end-to-end relay carries each record's envelope beside it; its line holds none", () => {
  const made = batch([LOBBY, LOBBY, LOBBY]);
  const { sent, received, message } = bothEnds(made, [0, 2], true, true);
  for (const item of message.records) {
    assert.ok("e2e" in item);
    assert.ok(E2eEnvelopeShape.safeParse(item.e2e).success);
  }
  assert.deepEqual(written(received), written(sent));
  assert.doesNotMatch(written(sent).json, /"e2e"|"k"/);
});

Deno.test("a relay takes no record of another batch, author, or one at or before its last", () => {
  const made = batch([LOBBY, LOBBY, LOBBY]);
  const other = batch([LOBBY, LOBBY, LOBBY]); // same sid and seqnos, another signature
  const prep = (r: { record: MessageRecord; k: Uint8Array }, who: AuthorCert = author) =>
    prepareRelay(who, new RecordForms(r.record, encodeRecord(r.record)), r.k);
  const group = new RecipientRelayGroup(prep(made[1]), 1, 1, false);
  assert.equal(group.takes(prep(made[0])), false, "an earlier record");
  assert.equal(group.takes(prep(made[1])), false, "the same record again");
  assert.equal(group.takes(prep(other[2])), false, "another batch");
  const someoneElse = { fingerprint: "b".repeat(64) };
  assert.equal(group.takes(prep(made[2], someoneElse)), false, "another author");
  assert.equal(group.takes(prep(made[2])), true);
});

for (const introduce of [true, false]) {
  Deno.test(`a stored line ${introduce ? "introducing" : "naming"} its author: the server's and the recipient's are the same, the record whole`, () => {
    const [{ record, k }] = batch([userRecipient("bob"), LOBBY]);
    const sent = new RecipientRelay(
      prepareRelay(author, new RecordForms(record, encodeRecord(record)), k),
      3,
      1_700_000_000_500,
      "stored",
      introduce,
    );
    const received = receivedStoredLine(
      "stored",
      3,
      1_700_000_000_500,
      introduce ? author : { fingerprint },
      encodeRecord(record),
      record,
      k,
    );
    assert.deepEqual(written(received), written(sent));
    const json = JSON.parse(written(received).json);
    assert.equal(json.cert !== undefined, introduce);
    assert.equal(json.record.batch.n, 2);
  });
}

Deno.test("a received relay line is laid out as JSON.stringify writes its records, whatever they hold", () => {
  for (const to of ['user:a"b\\c\u0001\u2028é💥', LOBBY]) {
    const made = batch([to, LOBBY]);
    for (const introduce of [true, false]) {
      const { received, message } = bothEnds(made, [0, 1], introduce);
      const { json } = written(received);
      const { records, ...hop } = message;
      assert.equal(
        json,
        JSON.stringify({
          dir: "s2c",
          ...hop,
          records: records.map((item) => ({ record: item.record })),
        }),
        to,
      );
    }
  }
});
