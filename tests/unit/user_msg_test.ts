/**
 * A user's msg (PROTOCOL §6.3): how ours splits a batch into msgs, and what the server derives
 * from a msg it received — each record made whole with its own path (§6.6's `stored`), the
 * proof of a relay of some or all of its records (§6.4 "Making the proof").
 */
import assert from "node:assert/strict";
import { fromBase64Each } from "../../lib/bytes.ts";
import { importSigningKeyPkcs8 } from "../../lib/crypto/signature.ts";
import { authorCertOf } from "../../lib/message/author_certs.ts";
import {
  C2sMsgShape,
  decodeRecord,
  encodeRecord,
  groupRoot,
  leafHash,
  LOBBY,
  merkleTree,
  type MessageRecord,
  prepareRelay,
  ReceivedGroup,
  RecipientRelayGroup,
  sealContent,
  signBatch,
  userMsgItem,
  userMsgsOf,
} from "../../lib/message/record.ts";
import { MAX_CONTENT_BYTES } from "../../lib/handshake/record.ts";
import { ByteBuilder } from "../../lib/bytes.ts";

const pair = await crypto.subtle.generateKey("Ed25519", true, ["sign", "verify"]) as CryptoKeyPair;
const signer = await importSigningKeyPkcs8(
  new Uint8Array(await crypto.subtle.exportKey("pkcs8", pair.privateKey)),
);
const author = authorCertOf(new TextEncoder().encode("an author's certificate"));

/** A signed batch of `n` lobby lines of `chars` characters each. */
async function batch(n: number, chars = 20): Promise<{ record: MessageRecord; k: Uint8Array }[]> {
  const made = Array.from({ length: n }, (_, j) => {
    const { k, ct, c } = sealContent({ kind: "text", text: `${j}`.padEnd(chars, "x") });
    const record: MessageRecord = {
      sid: "0f".repeat(16),
      dir: "c2s",
      to: LOBBY,
      seqno: 3 + j,
      ts: 1_796_000_000_000 + j,
      ct,
      c,
    };
    return { record, k };
  });
  await signBatch(signer, made.map((m) => m.record));
  return made;
}

/** The msgs ours sends for `made`, as the server parses them. */
function sent(made: { record: MessageRecord; k: Uint8Array }[]) {
  return userMsgsOf(made.map(({ record, k }) => userMsgItem(record, k))).map((msg) => {
    const out = new ByteBuilder(msg.length);
    msg.writeTo(out);
    const parsed = C2sMsgShape.safeParse(JSON.parse(new TextDecoder().decode(out.done())));
    if (!parsed.success) throw new Error(JSON.stringify(parsed.error));
    return parsed.data;
  });
}

/** What the server's session makes of a msg it received and checked (ReceivedGroup). */
function received(msg: ReturnType<typeof sent>[number]) {
  const records = msg.records.map((item) => decodeRecord(item.record));
  const [sig, ...proof] = fromBase64Each([msg.sig, ...msg.proof]);
  const group = new ReceivedGroup(
    msg,
    { sig, first: msg.first, n: msg.n, proof },
    records,
    records.map(leafHash),
  );
  const forms = msg.records.map((item, j) => group.whole(j, item.record));
  return { group, forms, items: msg.records };
}

Deno.test("userMsgsOf(): a batch that fits one record is one msg with an empty proof; a larger one leaves in consecutive msgs, each within a record and with its own proof", async () => {
  const small = sent(await batch(5));
  assert.equal(small.length, 1);
  assert.deepEqual([small[0].first, small[0].n, small[0].proof, small[0].records.length], [
    3,
    5,
    [],
    5,
  ]);
  const made = await batch(32, 4000);
  const msgs = sent(made);
  assert.ok(msgs.length > 1, `${msgs.length} msgs`);
  let next = 3;
  for (const msg of msgs) {
    assert.ok(JSON.stringify(msg).length <= MAX_CONTENT_BYTES);
    assert.equal(msg.records[0].record.seqno, next, "consecutive, in order");
    next += msg.records.length;
    const records = msg.records.map((item) => decodeRecord(item.record));
    const root = groupRoot(
      records.map(leafHash),
      records.map((r) => r.seqno - msg.first),
      msg.n,
      fromBase64Each(msg.proof),
    );
    assert.deepEqual(root, merkleTree(made.map((m) => leafHash(m.record))).root);
  }
  assert.equal(next, 3 + 32);
});

Deno.test("ReceivedGroup.whole(): each record of a msg made whole is the record its author signed, path and all, and wholeLength is its length before it is laid out", async () => {
  for (const made of [await batch(5), await batch(32, 4000)]) {
    for (const msg of sent(made)) {
      const { forms } = received(msg);
      for (const f of forms) {
        const signed = made.find((m) => m.record.seqno === f.record.seqno)!.record;
        const length = f.wholeLength; // counted before anything laid the record out
        assert.equal(new TextDecoder().decode(f.bytes), JSON.stringify(encodeRecord(signed)));
        assert.equal(length, f.bytes.length);
      }
    }
  }
});

Deno.test("a relay of all of a msg's records carries the msg's proof; of some of them, the proof from their derived paths, which gives the batch's root", async () => {
  const made = await batch(7);
  const [msg] = sent(made);
  const root = merkleTree(made.map((m) => leafHash(m.record))).root;
  const { forms, items } = received(msg);
  const prepared = forms.map((f, j) => prepareRelay(author, f, made[j].k));
  for (const picked of [[0, 1, 2, 3, 4, 5, 6], [1, 4, 5], [6]]) {
    const relay = new RecipientRelayGroup(prepared[picked[0]], 9, 1_796_000_000_100, false);
    for (const j of picked.slice(1)) {
      assert.ok(relay.takes(prepared[j]));
      relay.add(prepared[j]);
    }
    const out = new ByteBuilder(relay.length);
    relay.writeTo(out);
    const wire = JSON.parse(new TextDecoder().decode(out.done()));
    if (picked.length === items.length) assert.deepEqual(wire.proof, msg.proof);
    const records = picked.map((j) => made[j].record);
    assert.deepEqual(
      groupRoot(
        records.map(leafHash),
        records.map((r) => r.seqno - msg.first),
        msg.n,
        fromBase64Each(wire.proof),
      ),
      root,
      `records ${picked}`,
    );
  }
  // Records of another msg of the same batch do not join (PROTOCOL §6.4: ours relays one msg's
  // records together).
  const [again] = sent(made);
  const other = received(again).forms.map((f, j) => prepareRelay(author, f, made[j].k));
  const relay = new RecipientRelayGroup(prepared[0], 9, 1_796_000_000_100, false);
  assert.equal(relay.takes(other[1]), false);
});
