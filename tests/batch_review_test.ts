/**
 * review8 (session 8): signed batches (PROTOCOL §6.1) against an independent reading of RFC
 * 9162 §2.1 — the path check alone does not fix a record's position, the signed `n` and
 * `first` do — and the verified-batch cache against the forgery it could let in (R8-1): a
 * record passing on a neighbour's check under another author's certificate.
 */
import assert from "node:assert/strict";
import { sha256 } from "#sync-crypto";
import { concat, randomBytes, toBase64, toHex } from "../lib/bytes.ts";
import { codeOf } from "../lib/errors.ts";
import type { Identity } from "../lib/handshake/common.ts";
import {
  batchStatement,
  encodeRecord,
  groupProof,
  LOBBY,
  MAX_BATCH,
  type MessageRecord,
  type RelayMessage,
  rootFromPath,
  sealContent,
  signBatch,
} from "../lib/message/record.ts";
import { fingerprintOf } from "../lib/pki/describe.ts";
import { TrustStore } from "../lib/pki/validate.ts";
import { RelayVerifier, SeenStore } from "../lib/session/relay.ts";
import { transcriptDirectory } from "../lib/transcript/file_storage.ts";
import { verifyTranscript } from "../lib/transcript/verify.ts";
import { TranscriptWriter } from "../lib/transcript/writer.ts";
import { makePki } from "../testkit/pki.ts";
import { makePki as makeFilePki, relayLineOf } from "../testkit/transcript_fixtures.ts";

// ---- RFC 9162 §2.1.1 and §2.1.3.1, written from the RFC, not from lib ----

const equal = (a: Uint8Array, b: Uint8Array) => toHex(a) === toHex(b);
const largestPowerOfTwoBelow = (n: number) => {
  let k = 1;
  while (k * 2 < n) k *= 2;
  return k;
};
/** MTH(D[n]) over leaf hashes. */
function mth(leaves: Uint8Array[]): Uint8Array {
  if (leaves.length === 1) return leaves[0];
  const k = largestPowerOfTwoBelow(leaves.length);
  return sha256(concat(Uint8Array.of(1), mth(leaves.slice(0, k)), mth(leaves.slice(k))));
}
/** PATH(m, D[n]). */
function rfcPath(m: number, leaves: Uint8Array[]): Uint8Array[] {
  if (leaves.length === 1) return [];
  const k = largestPowerOfTwoBelow(leaves.length);
  return m < k
    ? [...rfcPath(m, leaves.slice(0, k)), mth(leaves.slice(k))]
    : [...rfcPath(m - k, leaves.slice(k)), mth(leaves.slice(0, k))];
}

const LEAVES = Array.from({ length: MAX_BATCH }, (_, j) => sha256(Uint8Array.of(0, j)));
/** len(PATH(m, D[n])), from the tree's shape alone. */
function pathLength(m: number, n: number): number {
  if (n === 1) return 0;
  const k = largestPowerOfTwoBelow(n);
  return 1 + (m < k ? pathLength(m, k) : pathLength(m - k, n - k));
}

Deno.test("a batch path read at another position (i, n) never gives the signed batch statement, though the root alone can repeat: why n and first are signed", () => {
  const sid = toHex(randomBytes(16));
  const seqno = 40; // every first = seqno − i is ≥ 1
  let rootRepeats = 0;
  for (let n = 1; n <= MAX_BATCH; n++) {
    const leaves = LEAVES.slice(0, n);
    const root = mth(leaves);
    for (let i = 0; i < n; i++) {
      const path = rfcPath(i, leaves);
      const signed = toHex(batchStatement(sid, seqno - i, n, root));
      for (let n2 = 1; n2 <= MAX_BATCH; n2++) {
        for (let i2 = 0; i2 < n2; i2++) {
          // A path of another length is refused outright (batch8's own test covers that).
          if ((i2 === i && n2 === n) || pathLength(i2, n2) !== path.length) continue;
          const root2 = rootFromPath(leaves[i], i2, n2, path);
          // Another root is another statement; only a repeated root needs n and first.
          if (!root2 || !equal(root2, root)) continue;
          rootRepeats++;
          assert.notEqual(
            toHex(batchStatement(sid, seqno - i2, n2, root2)),
            signed,
            `leaf ${i} of ${n} read as leaf ${i2} of ${n2}`,
          );
        }
      }
    }
  }
  // Leaf 1 of 2 and leaf 2 of 3 have one-entry paths hashed on the same side, and so on: a
  // verifier that signed the root alone (without n and first) would take either for the other.
  assert.ok(rootRepeats > 0, "no root repeats: this test no longer shows why n is signed");
});

// ---- the verified-batch cache (R8-1) ----

const pki = await makePki(["alice", "bob", "mallory"], "ed25519");
const alice = await pki.identity("alice");
const mallory = await pki.identity("mallory");
globalThis.addEventListener("unload", () => Deno.removeSync(pki.dir, { recursive: true }));

/** Two lobby records of `author`'s session, signed as one batch. */
async function batchOfTwo(author: Identity): Promise<{ record: MessageRecord; k: Uint8Array }[]> {
  const sid = toHex(randomBytes(16));
  const made = [1, 2].map((seqno) => {
    const { k, ct, c } = sealContent({ kind: "text", text: `line ${seqno}` });
    const record: MessageRecord = { sid, dir: "c2s", to: LOBBY, seqno, ts: Date.now(), ct, c };
    return { record, k };
  });
  await signBatch(author.signingKey, made.map((m) => m.record));
  return made;
}

/** `record` relayed alone (PROTOCOL §6.4): its batch's sig, first and n, its path as the proof. */
function relayOf(record: MessageRecord, k: Uint8Array, author: Identity): RelayMessage {
  const { sig: _sig, batch: _batch, ...bare } = encodeRecord(record);
  const { i, n, path } = record.batch!;
  return {
    type: "relay",
    seqno: record.seqno,
    ts: Date.now(),
    author_fp: fingerprintOf(author.certDer),
    cert: toBase64(author.certDer),
    sig: toBase64(record.sig!),
    first: record.seqno - i,
    n,
    proof: groupProof([i], n, [path]).map(toBase64),
    records: [{ record: bare, k: toBase64(k) }],
  };
}

Deno.test("RelayVerifier.check(): a sibling of a batch bob already verified, relayed naming mallory's certificate, is SIG_FAIL: the cache keys on the certificate", async () => {
  const [first, second] = await batchOfTwo(alice);
  const verifier = new RelayVerifier({
    trust: pki.trust,
    seen: SeenStore.memory(),
    username: "bob",
    sessionTime: Date.now(),
    maxSkewMs: 5 * 60 * 1000,
  });
  const accepted = await verifier.check(relayOf(first.record, first.k, alice));
  assert.equal(accepted.texts[0].author, "alice");
  // Same batch statement, same signature bytes: only the certificate differs.
  const swapped = await verifier.check(relayOf(second.record, second.k, mallory)).then(
    (r) => `accepted as ${r.texts[0].author}'s`,
    codeOf,
  );
  assert.equal(swapped, "SIG_FAIL");
});

Deno.test("verifyTranscript(): a relay line naming another author for a record whose batch an earlier line verified is SIG_FAIL at that line", async () => {
  const files = await makeFilePki({ others: ["carol", "mallory"] });
  const [carol, rogue] = files.others;
  const dir = await Deno.makeTempDir();
  try {
    const sessionId = toHex(randomBytes(16));
    const start = Date.now();
    const writer = await TranscriptWriter.create(transcriptDirectory(dir), {
      sessionId,
      clientCertDer: files.client.certDer,
      serverCertDer: files.server.certDer,
      sessionTime: start,
      startedAt: start,
      role: "client",
      keepKeys: true,
    });
    const sid = toHex(randomBytes(16));
    const made = [1, 2].map((seqno) => {
      const { k, ct, c } = sealContent({ kind: "text", text: `carol ${seqno}` });
      const record: MessageRecord = { sid, dir: "c2s", to: LOBBY, seqno, ts: start + seqno, ct, c };
      return { record, k };
    });
    await signBatch(carol.signer, made.map((m) => m.record));
    made.forEach(({ record, k }, j) => {
      const author = j === 0 ? carol : rogue; // the second line names mallory
      writer.append(relayLineOf({
        authorDer: author.certDer,
        seqno: j + 1,
        ts: start + 10 + j,
        introduce: true,
        records: [record],
        keys: [k],
      }));
    });
    await writer.abort();
    const report = await verifyTranscript(writer.path, {
      trust: await TrustStore.fromPem(files.caPem),
    });
    assert.equal(report.ok, false, "a record of carol's batch attributed to mallory");
    assert.equal(report.code, "SIG_FAIL", report.reason ?? "");
    assert.equal(report.firstBadLine, 3, report.reason ?? "");
  } finally {
    await Deno.remove(dir, { recursive: true });
    await Deno.remove(files.dir, { recursive: true }).catch(() => {});
  }
});
