/**
 * Run with --v8-flags=--expose-gc by tests/unit/path_memo_test.ts (review9 R9-5): checks batches
 * of records with a large ciphertext, decoded as a receiver decodes them (one buffer per record,
 * lib/bytes fromBase64Each), through one RecordSignatures, then prints how many of those buffers
 * a forced garbage collection left reachable.
 */
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
import { makePki } from "../../testkit/pki.ts";

const gc = (globalThis as unknown as { gc?: () => void }).gc;
if (!gc) throw new Error("run with --v8-flags=--expose-gc");
const pki = await makePki(["alice"], "ed25519");
try {
  const alice = await pki.identity("alice");
  const author = {
    fingerprint: fingerprintOf(alice.certDer),
    key: await importVerifyingKeySpki(spkiOfCertificate(alice.certDer)),
  };
  const signatures = new RecordSignatures();
  const buffers: WeakRef<ArrayBufferLike>[] = [];
  for (let b = 0; b < 200; b++) {
    const sid = toHex(randomBytes(16));
    // Batches of 3: records 0 and 1 meet after one hash, so each batch leaves a memo state.
    const made: MessageRecord[] = [1, 2, 3].map((seqno) => {
      const { ct, c } = sealPlaintext(randomBytes(20_000));
      return { sid, dir: "c2s", to: LOBBY, seqno, ts: Date.now(), ct, c };
    });
    await signBatch(alice.signingKey, made);
    for (const record of made) {
      const decoded = decodeRecord(encodeRecord(record));
      buffers.push(new WeakRef(decoded.ct.buffer));
      await signatures.check(author, decoded, "a record");
    }
  }
  gc();
  await new Promise((resolve) => setTimeout(resolve, 50));
  gc();
  const reachable = buffers.filter((ref) => ref.deref() !== undefined).length;
  console.log(JSON.stringify({ checked: buffers.length, reachable }));
} finally {
  Deno.removeSync(pki.dir, { recursive: true });
}
