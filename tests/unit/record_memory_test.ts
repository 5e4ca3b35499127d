/**
 * review9 R9-5: a RecordSignatures lives as long as its session (the server's per client, a
 * recipient's per session, `verify`'s per run) and checks every record of it. Whatever it keeps
 * to save work on the next record must not keep the records it checked alive: a sender could
 * otherwise pin its whole recent traffic (ciphertexts of up to ~47 KB) in the server's memory.
 */
import assert from "node:assert/strict";
import { randomBytes, toHex } from "../../lib/bytes.ts";
import { importVerifyingKeySpki } from "../../lib/crypto/signature.ts";
import {
  decodeRecord,
  encodeRecord,
  LOBBY,
  type MessageRecord,
  RecordSignatures,
  sealPlaintext,
  signBatch,
} from "../../lib/message/record.ts";
import { fingerprintOf } from "../../lib/pki/describe.ts";
import { spkiOfCertificate } from "../../lib/transcript/receipt.ts";
import { fullGc } from "../../testkit/fuzz.ts";
import { makePki } from "../../testkit/pki.ts";

const BATCHES = 120;
const CT_BYTES = 8000;

Deno.test({
  name: "RecordSignatures.check(): what it keeps between records holds none of their bytes: " +
    "the records of 120 checked batches are all collectable (review9 R9-5)",
  // Decided before the run: without a way to force a full GC the count below means nothing.
  ignore: fullGc === undefined,
  async fn() {
    const pki = await makePki(["alice"], "ed25519");
    try {
      const alice = await pki.identity("alice");
      const author = {
        fingerprint: fingerprintOf(alice.certDer),
        key: await importVerifyingKeySpki(spkiOfCertificate(alice.certDer)),
      };
      const signatures = new RecordSignatures();
      const decodedBuffers: WeakRef<ArrayBufferLike>[] = [];
      for (let b = 0; b < BATCHES; b++) {
        // Batches of 3: records 0 and 1 meet after one hash, where a memo of paths could keep them.
        const sid = toHex(randomBytes(16));
        const made: MessageRecord[] = [1, 2, 3].map((seqno) => {
          const { ct, c } = sealPlaintext(randomBytes(CT_BYTES));
          return { sid, dir: "c2s", to: LOBBY, seqno, ts: Date.now(), ct, c };
        });
        await signBatch(alice.signingKey, made);
        for (const record of made) {
          // As a receiver holds it: decoded from its JSON, its bytes its own.
          const decoded = decodeRecord(encodeRecord(record));
          decodedBuffers.push(new WeakRef(decoded.ct.buffer));
          if (decoded.batch!.path.length > 0) {
            decodedBuffers.push(new WeakRef(decoded.batch!.path[0].buffer));
          }
          await signatures.check(author, decoded, `record ${b}.${record.seqno}`);
        }
      }
      for (let i = 0; i < 3; i++) {
        await new Promise((resolve) => setTimeout(resolve, 0)); // WeakRefs hold for a turn
        fullGc!();
      }
      const alive = decodedBuffers.filter((ref) => ref.deref() !== undefined).length;
      // The checker is still in use: what it keeps is still kept.
      const again = decodeRecord(encodeRecord(await lastRecordOf(alice.signingKey)));
      await signatures.check(author, again, "one more record");
      assert.ok(
        alive <= 2,
        `${alive} of ${decodedBuffers.length} decoded buffers still reachable after full GCs`,
      );
    } finally {
      await Deno.remove(pki.dir, { recursive: true });
    }
  },
});

async function lastRecordOf(
  key: Parameters<typeof signBatch>[0],
): Promise<MessageRecord> {
  const { ct, c } = sealPlaintext(randomBytes(16));
  const record: MessageRecord = {
    sid: toHex(randomBytes(16)),
    dir: "c2s",
    to: LOBBY,
    seqno: 1,
    ts: Date.now(),
    ct,
    c,
  };
  await signBatch(key, [record]);
  return record;
}
