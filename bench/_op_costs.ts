/**
 * CPU time per operation, this process, all threads (/proc/self/stat): the pieces a
 * relay delivery is made of, through lib/ as the server calls them (WebCrypto: each
 * call hops to a worker thread and back) and, beside them, the synchronous
 * node:crypto equivalents. `--breakdown` in peer_bench.ts prints them next to the
 * measured CPU per delivery, so the sum can be compared with the whole.
 */
import { authorCertOf } from "../lib/message/author_certs.ts";
import { transcriptDirectory } from "../lib/transcript/file_storage.ts";
import { createCipheriv, createHash, createPrivateKey, sign as nodeSign } from "node:crypto";
import { ByteBuilder, concat, randomBytes, sha256, toBase64, toHex } from "../lib/bytes.ts";
import { sealAesGcm } from "../lib/crypto/aead.ts";
import { importVerifyingKeySpki, sign, type SigningKey, verify } from "../lib/crypto/signature.ts";
import { expandLabel } from "../lib/handshake/key_schedule.ts";
import { round } from "./_util.ts";
import { sampleProcess } from "./_proc.ts";
import type { TestPki } from "./_pki.ts";
import { loadIdentity } from "../lib/identity.ts";
import { spkiOfCertificate } from "../lib/transcript/receipt.ts";
import { TranscriptWriter } from "../lib/transcript/writer.ts";
import { RecordLayer } from "../lib/handshake/record.ts";
import {
  decodeRecord,
  encodeRecord,
  type GroupItem,
  LOBBY,
  type MessageRecord,
  openContent,
  prepareRelay,
  RecipientRelayGroup,
  RecordForms,
  RecordSignatures,
  sealContent,
  signBatch,
  UserMsg,
  userMsgItem,
} from "../lib/message/record.ts";

const TEXT = "the quick brown fox jumps over the lazy dog, 64 bytes of chat..";

/** Calls of an op before its clock starts (cpuPerOp). */
const WARM_UP_OPS = 20;

/** CPU µs per call of `op`, `n` calls with `concurrency` in flight (as a busy server has). */
async function cpuPerOp(op: () => unknown, n: number, concurrency = 32): Promise<number> {
  for (let i = 0; i < WARM_UP_OPS; i++) await op();
  const self = Deno.pid;
  const before = await sampleProcess(self);
  let next = 0;
  await Promise.all(Array.from({ length: concurrency }, async () => {
    while (next++ < n) await op();
  }));
  const after = await sampleProcess(self);
  return round(((after.cpuSeconds - before.cpuSeconds) / n) * 1e6, 1);
}

export async function opCosts(pki: TestPki, quick: boolean): Promise<Record<string, number>> {
  const n = quick ? 300 : 3000;
  const id = await loadIdentity(`${pki.dir}/user1.pem`, `${pki.dir}/user1.key`);
  const signer: SigningKey = id.signingKey;
  const publicKey = await importVerifyingKeySpki(spkiOfCertificate(id.certDer));
  const pem = await Deno.readTextFile(`${pki.dir}/user1.key`);
  const nodeKey = createPrivateKey(pem);
  const digest = randomBytes(32);
  const sig = await sign(signer, digest);
  // A relay body is ~2.3 KB once the author's certificate and key ride along (base64).
  const body = randomBytes(2300);
  const key32 = randomBytes(32);
  const secret = randomBytes(32);
  const nonce = new Uint8Array(12);
  const costs: Record<string, number> = {
    "RSA-2048 sign (lib, WebCrypto)": await cpuPerOp(() => sign(signer, digest), n),
    "RSA-2048 sign (node:crypto, sync)": await cpuPerOp(
      () => nodeSign("sha256", digest, nodeKey),
      n,
      1,
    ),
    "RSA-2048 verify (lib, WebCrypto)": await cpuPerOp(
      () => verify(publicKey, digest, sig),
      n * 3,
    ),
    "AES-256-GCM seal 2.3 KB (lib sealAesGcm, #sync-crypto; the end-to-end AEAD)": await cpuPerOp(
      () => sealAesGcm(key32, nonce, body, digest),
      n * 3,
      1,
    ),
    "AES-256-GCM seal 2.3 KB (node:crypto, sync)": await cpuPerOp(
      () => {
        const c = createCipheriv("aes-256-gcm", key32, nonce);
        c.setAAD(digest);
        return concat(c.update(body), c.final(), c.getAuthTag());
      },
      n * 3,
      1,
    ),
    "ChaCha20-Poly1305 seal 2.3 KB (node:crypto, sync; the record AEAD)": await cpuPerOp(
      () => {
        const c = createCipheriv("chacha20-poly1305", key32, nonce, { authTagLength: 16 });
        c.setAAD(digest, { plaintextLength: body.length });
        return concat(c.update(body), c.final(), c.getAuthTag());
      },
      n * 3,
      1,
    ),
    "SHA-256 of 2.3 KB (lib, WebCrypto digest)": await cpuPerOp(() => sha256(body), n * 3),
    "SHA-256 of 2.3 KB (node:crypto, sync)": await cpuPerOp(
      () => createHash("sha256").update(body).digest(),
      n * 3,
      1,
    ),
    "HKDF-Expand message key (lib, node:crypto HMAC)": await cpuPerOp(
      () => expandLabel(secret, "msg key", digest.subarray(0, 8), 16),
      n * 3,
    ),
    "base64 of 2.3 KB + JSON.stringify (lib toBase64)": await cpuPerOp(
      () => JSON.stringify({ ct: toBase64(body), sig: toBase64(sig) }),
      n * 3,
      1,
    ),
  };
  return costs;
}

/**
 * One relay delivery as the v2 server makes it, piece by piece, CPU µs each: what the
 * recipient's hop costs (the relay's JSON around the once-serialised record, the record
 * seal, the transcript line — no signature, PROTOCOL §6.4; the author certificate only named, as
 * after its first relay in a session, §6.4.1) and what receiving the author's
 * record costs once (signature verify, content open and commitment check, transcript line),
 * shared by the recipients of a relay.
 */
export async function deliveryCosts(pki: TestPki, quick: boolean): Promise<Record<string, number>> {
  const n = quick ? 200 : 2000;
  const server = await pki.identity("server");
  const author = await pki.identity("user1");
  const authorKey = await importVerifyingKeySpki(spkiOfCertificate(author.certDer));
  const authorFingerprint = authorCertOf(author.certDer).fingerprint;
  const dir = await Deno.makeTempDir({ prefix: "sc-bench-costs-" });
  try {
    const sid = toHex(randomBytes(16));
    const { k, ct, c } = sealContent({ kind: "text", text: TEXT });
    const record: MessageRecord = { sid, dir: "c2s", to: LOBBY, seqno: 1, ts: Date.now(), ct, c };
    await signBatch(author.signingKey, [record]);
    const json = encodeRecord(record);
    const prepared = prepareRelay(authorCertOf(author.certDer), new RecordForms(record, json), k);
    const keys = { key: randomBytes(32), iv: randomBytes(12) };
    const layer = new RecordLayer(keys, keys);

    const open = await cpuPerOp(async () => {
      const r = decodeRecord(json);
      // A batch of one, checked as a recipient checks it: a fresh cache, so a full verify.
      await new RecordSignatures().check(
        { fingerprint: authorFingerprint, key: authorKey },
        r,
        "bench",
      );
      openContent(r, k);
    }, n);
    let hopSeq = 0;
    const frame = await cpuPerOp(
      () =>
        new RecipientRelayGroup(prepared, ++hopSeq, Date.now(), false).writeTo(
          new ByteBuilder(),
        ),
      n * 3,
      1,
    );
    const wire = new RecipientRelayGroup(prepared, 1, Date.now(), false);
    const seal = await cpuPerOp(() => layer.sealContents([wire]), n * 3, 1);

    const writer = await TranscriptWriter.create(transcriptDirectory(dir), {
      sessionId: sid,
      role: "server",
      clientCertDer: author.certDer,
      serverCertDer: server.certDer,
      sessionTime: Date.now(),
      startedAt: Date.now(),
    });
    // The writer hashes and writes a turn's lines together (commit, or its flush at the turn's
    // end): a line's cost is a batch's divided by its lines.
    const BATCH = 32;
    let s2c = 0;
    const appendRelay = await cpuPerOp(
      () => {
        for (let i = 0; i < BATCH; i++) {
          writer.append(new RecipientRelayGroup(prepared, ++s2c, Date.now(), false));
        }
        writer.commit();
      },
      n / BATCH,
      1,
    ) / BATCH;
    // A user's msg carries its batch's records in one line (PROTOCOL §6.3, TRANSCRIPT §2.2): the
    // line of a msg of BATCH records as the server makes it, each batch signed before the clock.
    const msgs: GroupItem[][] = [];
    for (let i = 0; i < WARM_UP_OPS + n / BATCH + 1; i++) {
      const batch = Array.from({ length: BATCH }, (_, j) => ({
        ...record,
        seqno: i * BATCH + j + 1,
        sig: undefined,
        batch: undefined,
      }));
      await signBatch(author.signingKey, batch);
      msgs.push(batch.map((r) => userMsgItem(r, k)));
    }
    let next = 0;
    const appendReceived = await cpuPerOp(
      () => {
        const items = msgs[next++];
        const line = new UserMsg(items[0]);
        for (let j = 1; j < items.length; j++) line.add(items[j]);
        writer.append(line);
        writer.commit();
      },
      n / BATCH,
      1,
    ) / BATCH;
    await writer.abort();
    return {
      "per hop: relay JSON around the once-serialised record": frame,
      "per hop: seal the record (ChaCha20-Poly1305, node:crypto)": seal,
      "per hop: transcript line (encode, hash, batched write)": appendRelay,
      "per received record: verify the author's signature, open and check the content": open,
      "per received record: its share of its msg's transcript line (32 records a line: encode, hash, batched write)":
        appendReceived,
      relay_content_bytes: wire.length,
    };
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}
