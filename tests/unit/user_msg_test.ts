/**
 * A user's msg (PROTOCOL §6.3): how ours splits a batch into msgs, and what the server derives
 * from a msg it received — each record made whole with its own path (§6.6's `stored`), the
 * proof of a relay of some or all of its records (§6.4 "Making the proof").
 */
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { fromBase64Each, toHex } from "../../lib/bytes.ts";
import { importSigningKeyPkcs8 } from "../../lib/crypto/signature.ts";
import { authorCertOf } from "../../lib/message/author_certs.ts";
import {
  C2sMsgShape,
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
  ReceivedGroup,
  receivedItems,
  RecipientRelayGroup,
  sealContent,
  signBatch,
  UserMsg,
  userMsgItem,
  userMsgsOf,
} from "../../lib/message/record.ts";
import { MAX_CONTENT_BYTES } from "../../lib/handshake/record.ts";
import { readRelay } from "../../lib/message/relay_wire.ts";
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
  return sentWithText(made).map(({ msg }) => msg);
}

/** {@link sent}, each msg with its text as it went. */
function sentWithText(made: { record: MessageRecord; k: Uint8Array }[]) {
  return userMsgsOf(made.map(({ record, k }) => userMsgItem(record, k))).map((msg) => {
    const out = new ByteBuilder(msg.length);
    msg.writeTo(out);
    const content = out.done().slice();
    const text = new TextDecoder().decode(content);
    const parsed = C2sMsgShape.safeParse(JSON.parse(text));
    if (!parsed.success) throw new Error(JSON.stringify(parsed.error));
    return { msg: parsed.data, content, text };
  });
}

/**
 * What the server's session makes of a msg it received and checked (ReceivedGroup); with `as`,
 * the msg's text as it came, taken as it is when canonical (receivedItems).
 */
function received(
  msg: ReturnType<typeof sent>[number],
  as?: { content: Uint8Array; text: string },
) {
  const records = msg.records.map((item) => decodeRecord(item.record));
  const [sig, ...proof] = fromBase64Each([msg.sig, ...msg.proof]);
  const items = as && receivedItems(as.content, as.text, msg);
  if (as) assert.ok(items, "ours sends a msg in its canonical form");
  const group = new ReceivedGroup(
    msg,
    { sig, first: msg.first, n: msg.n, proof },
    records,
    records.map(leafHash),
    items,
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
    const wire = readRelay(out.done());
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

/** A line's line_enc as written, and as TRANSCRIPT §3.1 defines it for the line's JSON text. */
function encodings(line: PreparedLine): { written: string; defined: string } {
  const json = new ByteBuilder();
  line.writeJson(json);
  const text = new TextDecoder().decode(json.done());
  const parsed = LineShape.safeParse(JSON.parse(text));
  if (!parsed.success) throw new Error(JSON.stringify(parsed.error));
  // The text as written is the line's own canonical text, laid out piece by piece or not.
  assert.equal(text, encodeLine(decodeLine(parsed.data)));
  const enc = new ByteBuilder();
  line.writeEncoding(enc);
  return { written: toHex(enc.done()), defined: toHex(lineEncoding(decodeLine(parsed.data))) };
}

Deno.test("the server's lines of a received msg (its author's, relays of all or some of its records) write TRANSCRIPT §3.1's line_enc from the msg's group_enc laid out and digested once", async () => {
  for (const made of [await batch(7), await batch(32, 4000)]) {
    for (const canonical of [true, false]) {
      for (const { msg, content, text } of sentWithText(made)) {
        const { group, forms } = received(msg, canonical ? { content, text } : undefined);
        const prepared = forms.map((f) =>
          prepareRelay(author, f, made.find((m) => m.record.seqno === f.record.seqno)!.k)
        );
        const all = prepared.map((_, j) => j);
        // Some records first (their record_enc views of the msg's group_enc), then all of them.
        const picks = [all.filter((j) => j % 2 === 1), [all.length - 1], all];
        for (const picked of picks.filter((p) => p.length > 0)) {
          for (const introduce of [false, true]) {
            const relay = new RecipientRelayGroup(
              prepared[picked[0]],
              11,
              1_796_000_000_200,
              introduce,
            );
            for (const j of picked.slice(1)) relay.add(prepared[j]);
            const { written, defined } = encodings(relay);
            assert.equal(written, defined, `relay of ${picked}`);
            // The msg's digest only on a relay of all its records, and then made once: a second
            // such relay does not lay out or hash the records again.
            const whole = picked.length === all.length;
            assert.equal(written.endsWith(toHex(group.groupDigest)), whole, `relay of ${picked}`);
            if (whole) {
              const again = new RecipientRelayGroup(prepared[0], 12, 1_796_000_000_300, introduce);
              for (const p of prepared.slice(1)) again.add(p);
              // Bytes other than the msg's group_enc: were they hashed again, the line's digest
              // would not be the msg's (a relay's wire writes group_enc; its line only hashes it).
              const stale = new Uint8Array(group.groupEncoding.length);
              Object.defineProperty(group, "groupEncoding", {
                configurable: true,
                get: () => stale,
              });
              try {
                assert.equal(encodings(again).written.endsWith(toHex(group.groupDigest)), true);
              } finally {
                delete (group as { groupEncoding?: unknown }).groupEncoding;
              }
            }
          }
        }
        const line = new UserMsg(prepared[0]);
        for (const p of prepared.slice(1)) line.add(p);
        const { written, defined } = encodings(line);
        assert.equal(written, defined, "the author's line");
        // Format 7: the line ends in the digest of the msg's group_enc, made once for its lines.
        assert.equal(
          toHex(group.groupDigest),
          createHash("sha256").update(group.groupEncoding).digest("hex"),
        );
        assert.ok(defined.endsWith(toHex(group.groupDigest)));
      }
    }
  }
});
