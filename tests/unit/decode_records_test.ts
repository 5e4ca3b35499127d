/**
 * in18 (session 18): the server decodes a user's msg's records into one buffer (decodeRecords)
 * where each used to get its own (decodeRecord). Both must read every record alike, refuse alike,
 * and the one buffer must hold the records' bytes and nothing else.
 */
import assert from "node:assert/strict";
import { toBase64, toHex } from "../../lib/bytes.ts";
import { decodeRecord, decodeRecords, LOBBY, type RecordJson } from "../../lib/message/record.ts";
import { fuzzSeed, Rng } from "../../testkit/fuzz.ts";

const SEED = fuzzSeed();

/** A random record's JSON: with or without `sig` and `batch`, paths of 0 … 5 hashes. */
function randomJson(rng: Rng): RecordJson {
  const json: RecordJson = {
    sid: toHex(rng.bytes(16)),
    dir: rng.pick(["c2s", "s2c"] as const),
    to: rng.pick([LOBBY, "user:bob", "server"]),
    seqno: rng.range(1, 1000),
    ts: rng.range(0, 2 ** 40),
    ct: toBase64(rng.bytes(rng.range(16, 400))),
    c: toBase64(rng.bytes(32)),
  };
  if (rng.chance(0.5)) {
    json.sig = toBase64(rng.bytes(rng.range(1, 512)));
    const path = Array.from({ length: rng.int(6) }, () => toBase64(rng.bytes(32)));
    json.batch = { i: 0, n: 1 + rng.int(32), path };
  }
  return json;
}

Deno.test(`decodeRecords(): each record as decodeRecord reads it, all in one buffer of exactly their bytes (seed ${SEED})`, () => {
  const rng = new Rng(SEED);
  for (let round = 0; round < 200; round++) {
    const jsons = Array.from({ length: rng.range(1, 32) }, () => randomJson(rng));
    const records = decodeRecords(jsons);
    assert.deepEqual(records, jsons.map(decodeRecord), `seed ${SEED} round ${round}`);
    const buffer = records[0].ct.buffer;
    let bytes = 0;
    for (const r of records) {
      for (const part of [r.ct, r.c, ...(r.sig ? [r.sig] : []), ...(r.batch?.path ?? [])]) {
        assert.equal(part.buffer, buffer, "one buffer");
        bytes += part.length;
      }
    }
    assert.equal(buffer.byteLength, bytes, "the records' bytes and nothing else");
  }
});

Deno.test(`decodeRecords(): a member that is not canonical base64, in any record, is refused as decodeRecord refuses it (seed ${SEED})`, () => {
  const rng = new Rng(SEED ^ 0x5a5a);
  const spoilt = ["QQ=", "QR==", "QUI=\n", "Q Q==", "QUJD-A==", "====", "QUJDRA=A"];
  for (let round = 0; round < 100; round++) {
    const jsons = Array.from({ length: rng.range(1, 8) }, () => randomJson(rng));
    const victim = jsons[rng.int(jsons.length)];
    const member = rng.pick(["ct", "c", "sig", "path"] as const);
    const bad = rng.pick(spoilt);
    if (member === "ct" || member === "c") victim[member] = bad;
    else if (member === "sig" && victim.sig !== undefined) victim.sig = bad;
    else if (member === "path" && victim.batch && victim.batch.path.length > 0) {
      victim.batch.path[rng.int(victim.batch.path.length)] = bad;
    } else victim.ct = bad;
    assert.throws(() => decodeRecord(victim), TypeError);
    assert.throws(() => decodeRecords(jsons), TypeError, `seed ${SEED} round ${round}`);
  }
});
