/**
 * in18 (session 18): the server's shape of a user's msg (C2sMsgShape) decodes each record's `ct`
 * and `c` as it checks them (Base64Batch: one pass, one buffer for the msg; userMsgRecords gives
 * them), where a relay's shape
 * checks them as text (base64Text) and decodeRecord decodes them after. Both must accept and
 * refuse alike — the same first fault, at the same place, in the same words — and decode alike,
 * and the msg's one buffer must hold its records' bytes and nothing else.
 */
import assert from "node:assert/strict";
import { ByteBuilder, toBase64 } from "../../lib/bytes.ts";
import { testSigner as signer } from "../helpers/user_msgs.ts";
import type { E2eEnvelope } from "../../lib/e2e/envelope.ts";
import {
  type C2sMsgMessage,
  C2sMsgShape,
  decodeRecord,
  LOBBY,
  type MessageRecord,
  RelayMessageShape,
  sealContent,
  signBatch,
  userMsgItem,
  userMsgRecords,
  userMsgsOf,
} from "../../lib/message/record.ts";
import type { ShapeResult } from "../../lib/wire/shape.ts";
import { fuzzSeed, Rng } from "../../testkit/fuzz.ts";

const SEED = fuzzSeed();
const SENDER: E2eEnvelope = {
  kind: "sender",
  from: "0a".repeat(8),
  id: 4,
  n: 17,
  w: toBase64(new Uint8Array(48).fill(7)),
};

/** A user's msg of `n` records as ours sends it, parsed as JSON: lobby lines, end to end or not. */
async function msgOf(rng: Rng, n: number): Promise<Record<string, unknown>> {
  const made = Array.from({ length: n }, (_, j) => {
    const { k, ct, c } = sealContent({ kind: "text", text: "x".repeat(rng.int(300)) });
    const record: MessageRecord = {
      sid: "0f".repeat(16),
      dir: "c2s",
      to: LOBBY,
      seqno: 3 + j,
      ts: 1_796_000_000_000 + j,
      ct,
      c,
    };
    return { record, k, e2e: rng.chance(0.5) ? SENDER : undefined };
  });
  await signBatch(signer, made.map((m) => m.record));
  const [msg] = userMsgsOf(made.map(({ record, k, e2e }) => userMsgItem(record, k, e2e)));
  const out = new ByteBuilder(msg.length);
  msg.writeTo(out);
  return JSON.parse(new TextDecoder().decode(out.done()));
}

/** The same group members as a relay (PROTOCOL §6.4), whose shape checks `ct` and `c` as text. */
function asRelay(msg: Record<string, unknown>): Record<string, unknown> {
  return { ...msg, type: "relay", seqno: 1, ts: 1, author_fp: "ab".repeat(32) };
}

/** A shape's outcome as the two are compared: its first fault, or that it passed. */
function verdict(result: ShapeResult<unknown>): string {
  if (result.success) return "ok";
  const [issue] = result.error.issues;
  return `${issue.path.join(".")}: ${issue.message}`;
}

/** Values of `ct` or `c` a shape refuses, and a few it takes. */
const SPOILT: unknown[] = [
  "QQ=",
  "QR==",
  "QUI=\n",
  "QUJD\nQUJD",
  " QUJD",
  "QUJD-A==",
  "QUJD_A==",
  "====",
  "QUJDRA=A",
  "QUJDRB==",
  "",
  toBase64(new Uint8Array(15)),
  toBase64(new Uint8Array(16)),
  toBase64(new Uint8Array(31)),
  toBase64(new Uint8Array(33)),
  toBase64(new Uint8Array(24 * 1024 + 1)),
  "A".repeat(32 * 1024 + 4),
  42,
  null,
  ["QUJD"],
];

Deno.test(`C2sMsgShape: each record decoded as decodeRecord decodes it, the msg's in one buffer of exactly their bytes (seed ${SEED})`, async () => {
  const rng = new Rng(SEED);
  for (let round = 0; round < 40; round++) {
    const msg = await msgOf(rng, rng.range(1, 32));
    const result = C2sMsgShape.safeParse(msg);
    assert.ok(result.success, `seed ${SEED} round ${round}`);
    const { records } = result.data;
    const decoded = userMsgRecords(result.data);
    assert.equal(decoded.length, records.length);
    const buffer = decoded[0].ct.buffer;
    let bytes = 0;
    for (const [j, record] of decoded.entries()) {
      assert.deepEqual(record, decodeRecord(records[j].record), `record ${j}`);
      assert.equal(record.ct.buffer, buffer, "one buffer");
      assert.equal(record.c.buffer, buffer, "one buffer");
      bytes += record.ct.length + record.c.length;
    }
    assert.equal(buffer.byteLength, bytes, "the records' bytes and nothing else");
  }
});

Deno.test(`C2sMsgShape: a spoilt ct or c is refused as a relay's shape refuses it, the first fault first, and the next msg decodes whole (seed ${SEED})`, async () => {
  const rng = new Rng(SEED ^ 0x5a5a);
  let refused = 0;
  for (let round = 0; round < 300; round++) {
    const msg = await msgOf(rng, rng.range(1, 6));
    const items = msg.records as { record: Record<string, unknown> }[];
    for (let spoils = rng.range(1, 3); spoils > 0; spoils--) {
      items[rng.int(items.length)].record[rng.pick(["ct", "c"])] = rng.pick(SPOILT);
    }
    const seen = verdict(C2sMsgShape.safeParse(msg));
    assert.equal(seen, verdict(RelayMessageShape.safeParse(asRelay(msg))), `seed ${SEED} ${round}`);
    if (seen !== "ok") refused++;
    // A msg refused midway leaves nothing behind for the next.
    const honest = await msgOf(rng, 2);
    const next = C2sMsgShape.safeParse(honest);
    assert.ok(next.success);
    for (const [j, record] of userMsgRecords(next.data).entries()) {
      assert.deepEqual(record, decodeRecord(next.data.records[j].record));
    }
  }
  assert.ok(refused > 200, `${refused} of 300 refused`);
});

Deno.test(`userMsgRecords(): the shape's records for the msg it made last, taken once; any other msg's decoded afresh, alike (seed ${SEED})`, async () => {
  const rng = new Rng(SEED ^ 0x3c3c);
  const parse = async () => {
    const result = C2sMsgShape.safeParse(await msgOf(rng, rng.range(1, 8)));
    assert.ok(result.success);
    return result.data;
  };
  const expected = (message: C2sMsgMessage) =>
    message.records.map((item) => decodeRecord(item.record));
  const a = await parse();
  const b = await parse();
  const fromShape = userMsgRecords(b);
  assert.deepEqual(fromShape, expected(b));
  assert.equal(fromShape[0].ct.buffer, fromShape[fromShape.length - 1].c.buffer, "the shape's");
  const again = userMsgRecords(b);
  assert.deepEqual(again, expected(b));
  assert.notEqual(again[0], fromShape[0], "taken once: decoded afresh");
  assert.deepEqual(userMsgRecords(a), expected(a), "not the last msg: decoded afresh");
});
