/**
 * A relay's transcript line is one thing at both ends: the server's (RecipientRelay, from the
 * record prepared once for every recipient) and the recipient's (receivedRelayLine, made
 * from the relay as it arrived) must be the same JSON and the same encoding, or the two
 * transcripts' hashes — and so each side's receipt for the other — would differ.
 */
import assert from "node:assert/strict";
import { ByteBuilder, toBase64, toHex } from "../../lib/bytes.ts";
import {
  type AuthorCert,
  encodeRecord,
  LOBBY,
  type MessageRecord,
  type PreparedLine,
  prepareRelay,
  receivedRelayLine,
  RecipientRelay,
  RecordForms,
  type RelayType,
  sealContent,
} from "../../lib/message/record.ts";

const { k, ct, c } = sealContent({ kind: "text", text: "hello" });
const record: MessageRecord = {
  sid: toHex(crypto.getRandomValues(new Uint8Array(16))),
  dir: "c2s",
  to: LOBBY,
  seqno: 7,
  ts: 1_700_000_000_000,
  ct,
  c,
  sig: crypto.getRandomValues(new Uint8Array(64)),
  batch: { i: 2, n: 4, path: [1, 2].map(() => crypto.getRandomValues(new Uint8Array(32))) },
};
const der = crypto.getRandomValues(new Uint8Array(300));
const fingerprint = toHex(crypto.getRandomValues(new Uint8Array(32)));
const author = { fingerprint, cert: { base64: toBase64(der), der } };

/** A line's JSON text and its encoding, as the transcript writer takes them. */
function written(line: PreparedLine): { json: string; enc: string } {
  const json = new ByteBuilder();
  line.writeJson(json);
  const enc = new ByteBuilder();
  line.writeEncoding(enc);
  return { json: new TextDecoder().decode(json.done()), enc: toHex(enc.done()) };
}

for (const type of ["relay", "stored"] as RelayType[]) {
  for (const introduce of [true, false]) {
    Deno.test(`a ${type} line ${introduce ? "introducing" : "naming"} its author: the server's and the recipient's are the same`, () => {
      const sent = new RecipientRelay(
        prepareRelay(author, new RecordForms(record, encodeRecord(record)), k),
        3,
        1_700_000_000_500,
        type,
        introduce,
      );
      const received = receivedRelayLine(
        type,
        3,
        1_700_000_000_500,
        introduce ? author : { fingerprint },
        encodeRecord(record),
        record,
        k,
      );
      assert.deepEqual(written(received), written(sent));
      assert.deepEqual([received.dir, received.seqno, received.ts, received.k], [
        sent.dir,
        sent.seqno,
        sent.ts,
        sent.k,
      ]);
      const json = JSON.parse(written(received).json);
      assert.equal(json.cert !== undefined, introduce);
      assert.equal(json.record.batch.n, 4);
    });
  }
}

Deno.test("a received relay line is laid out as JSON.stringify writes its record, whatever the record holds", () => {
  const variants: MessageRecord[] = [
    { ...record, to: 'user:a"b\\c\u0001\u2028é💥' }, // what JSON escapes, and what it does not
    { ...record, sig: undefined, batch: undefined },
    { ...record, batch: { i: 0, n: 1, path: [] } },
    { ...record, seqno: Number.MAX_SAFE_INTEGER, ts: 0 },
    {
      ...record,
      batch: {
        i: 5,
        n: 32,
        path: [1, 2, 3, 4, 5].map(() => crypto.getRandomValues(new Uint8Array(32))),
      },
    },
  ].map((r) => {
    const { sig: _sig, batch: _batch, ...rest } = r;
    return { ...rest, ...(r.sig ? { sig: r.sig } : {}), ...(r.batch ? { batch: r.batch } : {}) };
  });
  for (const r of variants) {
    for (const who of [author, { fingerprint }] as AuthorCert[]) {
      const line = receivedRelayLine("relay", 9, 1_700_000_000_900, who, encodeRecord(r), r, k);
      const cert = who.cert ? `"cert":"${who.cert.base64}",` : "";
      assert.equal(
        written(line).json,
        `{"dir":"s2c","type":"relay","seqno":9,"ts":1700000000900,"author_fp":"${fingerprint}",` +
          `${cert}"record":${JSON.stringify(encodeRecord(r))}}`,
        r.to,
      );
    }
  }
});
