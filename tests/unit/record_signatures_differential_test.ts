/**
 * review10: RecordSignatures (PROTOCOL §6.1 "Checking a record's signature") became a fast path
 * in session 9 — a PathMemo of loop states shared by every record it checks, verdicts answered
 * at once (verifyNow), a cache of verified batch statements — and one instance serves a whole
 * session or `verify` run, every author in it. Its verdict must be the definition's, record by
 * record, whatever it checked before: the loop of RFC 9162 run in full, then the signature
 * verified over the batch statement. Two authors' batches of every size, genuine records and
 * records with one thing changed (a path entry, the entries' order or number, i, n, seqno, the
 * signature or batch of another record, the other author), in an order that revisits batches.
 */
import assert from "node:assert/strict";
import { randomBytes, toHex } from "../../lib/bytes.ts";
import { importVerifyingKeySpki, verify } from "../../lib/crypto/signature.ts";
import { codeOf } from "../../lib/errors.ts";
import {
  batchStatement,
  decodeRecord,
  encodeRecord,
  leafHash,
  LOBBY,
  MAX_BATCH,
  type MessageRecord,
  type RecordAuthor,
  RecordSignatures,
  rootFromPath,
  sealPlaintext,
  signBatch,
} from "../../lib/message/record.ts";
import { fingerprintOf } from "../../lib/pki/describe.ts";
import { spkiOfCertificate } from "../../lib/transcript/receipt.ts";
import { fuzzSeed, Rng } from "../../testkit/fuzz.ts";
import { makePki } from "../../testkit/pki.ts";

const SEED = fuzzSeed();

/** The definition: the whole loop, then the signature; the codes RecordSignatures("TAMPERED") uses. */
async function defined(author: RecordAuthor, r: MessageRecord): Promise<string> {
  const { i, n, path } = r.batch!;
  const root = rootFromPath(leafHash(r), i, n, path);
  if (!root) return "TAMPERED";
  const ok = await verify(author.key, batchStatement(r.sid, r.seqno - i, n, root), r.sig!);
  return ok ? "ok" : "SIG_FAIL";
}

Deno.test(`RecordSignatures answers each record as the definition does, whatever it checked before: two authors, batches 1..32, genuine and altered records (seed ${SEED})`, async () => {
  const rng = new Rng(SEED);
  const pki = await makePki(["alice", "bob"], "ed25519");
  try {
    const ids = [await pki.identity("alice"), await pki.identity("bob")];
    const authors: RecordAuthor[] = await Promise.all(ids.map(async (id) => ({
      fingerprint: fingerprintOf(id.certDer),
      key: await importVerifyingKeySpki(spkiOfCertificate(id.certDer)),
    })));
    const sids = [toHex(randomBytes(16)), toHex(randomBytes(16))];
    const next = [1, 1];
    const batches: { who: number; records: MessageRecord[] }[] = [];
    for (let b = 0; b < 40; b++) {
      const who = rng.int(2);
      const n = b < MAX_BATCH ? b + 1 : 1 + rng.int(MAX_BATCH);
      const records: MessageRecord[] = Array.from({ length: n }, () => {
        const { ct, c } = sealPlaintext(randomBytes(16 + rng.int(48)));
        return { sid: sids[who], dir: "c2s", to: LOBBY, seqno: next[who]++, ts: 1_000 + b, ct, c };
      });
      await signBatch(ids[who].signingKey, records);
      batches.push({ who, records });
    }
    const pick = () => batches[rng.int(batches.length)];
    /** One record as a receiver gets it, perhaps with one thing changed; and whose it claims to be. */
    const received = (who: number, record: MessageRecord): [number, MessageRecord, string] => {
      const json = encodeRecord(record);
      const batch = json.batch!;
      const other = pick().records;
      const stranger = encodeRecord(other[rng.int(other.length)]);
      switch (rng.int(12)) {
        case 0: {
          if (batch.path.length === 0) break;
          const j = rng.int(batch.path.length);
          const entry = decodeRecord(json).batch!.path[j];
          entry[rng.int(32)] ^= 1 << rng.int(8);
          batch.path[j] = encodeRecord({ ...record, batch: { i: 0, n: 1, path: [entry] } })
            .batch!.path[0];
          return [who, decodeRecord(json), "a path entry"];
        }
        case 1:
          if (batch.path.length < 2) break;
          batch.path.reverse();
          return [who, decodeRecord(json), "the entries' order"];
        case 2:
          if (batch.path.length === 0) break;
          batch.path.pop();
          return [who, decodeRecord(json), "an entry fewer"];
        case 3:
          if (batch.path.length === 5) break;
          batch.path.push(stranger.c);
          return [who, decodeRecord(json), "an entry more"];
        case 4:
          if (batch.i + 1 >= batch.n) break;
          batch.i++;
          return [who, decodeRecord(json), "i"];
        case 5:
          if (batch.n === MAX_BATCH) break;
          batch.n++;
          return [who, decodeRecord(json), "n"];
        case 6:
          json.sig = stranger.sig;
          return [who, decodeRecord(json), "another record's sig"];
        case 7:
          if (stranger.batch!.i >= json.seqno) break;
          json.batch = stranger.batch;
          return [who, decodeRecord(json), "another record's batch"];
        case 8:
          return [1 - who, decodeRecord(json), "the other author"];
        case 9:
          json.seqno++;
          return [who, decodeRecord(json), "seqno"];
      }
      return [who, decodeRecord(json), "genuine"];
    };
    const signatures = new RecordSignatures("TAMPERED");
    const seen = new Map<string, number>();
    for (let t = 0; t < 1500; t++) {
      // A run of a batch's records in order, as they arrive, from anywhere in it.
      const { who, records } = pick();
      const from = rng.int(records.length);
      for (let j = from; j < Math.min(records.length, from + 1 + rng.int(8)); j++) {
        const [claimed, record, what] = received(who, records[j]);
        const want = await defined(authors[claimed], record);
        let got = "ok";
        try {
          await signatures.check(authors[claimed], record, "record");
        } catch (error) {
          got = codeOf(error);
        }
        assert.equal(
          got,
          want,
          `seed ${SEED}, check ${t}: ${what}, record ${j} of ${records.length}`,
        );
        seen.set(`${what}: ${got}`, (seen.get(`${what}: ${got}`) ?? 0) + 1);
      }
    }
    // The stream held every kind of verdict, so the comparison above decided something.
    for (const verdict of ["genuine: ok", "a path entry: SIG_FAIL", "an entry fewer: TAMPERED"]) {
      assert.ok((seen.get(verdict) ?? 0) > 10, `${verdict}: ${seen.get(verdict)}`);
    }
  } finally {
    await Deno.remove(pki.dir, { recursive: true }).catch(() => {});
  }
});
