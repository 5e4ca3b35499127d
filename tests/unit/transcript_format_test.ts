/** The transcript hash against an independently computed vector (docs/TRANSCRIPT.md §3). */
import assert from "node:assert/strict";
import { ByteBuilder, fromHex, toBase64, toHex } from "../../lib/bytes.ts";
import {
  decodeLine,
  encodeLine,
  lineEncoding,
  type LineJson,
  LineShape,
  LOBBY,
  prepareLine,
  prepareRelay,
  prepareUserMsg,
  RecipientRelay,
  recordEncoding,
  sealContent,
  signBatch,
} from "../../lib/message/record.ts";
import { importSigningKeyPkcs8 } from "../../lib/crypto/signature.ts";
import { authorCertOf } from "../../lib/message/author_certs.ts";
import { checkedMessage, RATCHET_ENVELOPE, wireText } from "../helpers/records.ts";
import {
  baseNameOf,
  basePathOfLog,
  finalTranscriptHash,
  type HashContext,
  sha256Sync as sha256,
  TranscriptHasher,
} from "../../lib/transcript/format.ts";
import { fingerprintOf } from "../../lib/pki/describe.ts";
import { ReceiptSchema } from "../../lib/transcript/receipt.ts";
import { fromBase64 } from "../../lib/bytes.ts";

const vector = JSON.parse(
  await Deno.readTextFile(new URL("../vectors/transcript/hash_v2.json", import.meta.url)),
) as {
  protocol_version: number;
  session_id: string;
  session_time: number;
  client_cert: string;
  server_cert: string;
  lines: LineJson[];
  c2s_count: number;
  s2c_count: number;
  d_c2s: string;
  d_s2c: string;
  transcript_sha256: string;
  empty_transcript_sha256: string;
};

const ctx: HashContext = {
  protocolVersion: vector.protocol_version,
  sessionId: vector.session_id,
  sessionTime: vector.session_time,
  clientFingerprint: fingerprintOf(fromBase64(vector.client_cert)),
  serverFingerprint: fingerprintOf(fromBase64(vector.server_cert)),
};

function lineOf(json: unknown): LineJson {
  const parsed = LineShape.safeParse(json);
  if (!parsed.success) throw new Error(`vector line: ${parsed.error.issues[0].message}`);
  return parsed.data;
}

/** Each vector line as the writer and the verifier hash it. */
const prepared = vector.lines.map((json) =>
  prepareLine(decodeLine(lineOf(json)), JSON.stringify(json))
);

Deno.test("transcript hash: matches the vector computed from the spec in Python", () => {
  const h = new TranscriptHasher(ctx);
  for (const l of prepared) h.add(l.dir, l);
  const state = h.current();
  assert.equal(state.transcriptSha256, vector.transcript_sha256);
  assert.equal(state.c2s, vector.c2s_count);
  assert.equal(state.s2c, vector.s2c_count);
});

Deno.test("transcript hash: independent of how the directions interleave", () => {
  const h = new TranscriptHasher(ctx);
  for (const dir of ["s2c", "c2s"]) {
    for (const l of prepared.filter((p) => p.dir === dir)) h.add(l.dir, l);
  }
  assert.equal(h.current().transcriptSha256, vector.transcript_sha256);
});

Deno.test("transcript hash: D_dir is SHA-256 over the line encodings, however they are batched", () => {
  // Far more than one batch of encodings (the hasher hashes them in batches), with digests
  // asked for in between.
  const lines = Array.from({ length: 400 }, () => prepared).flat();
  const h = new TranscriptHasher(ctx);
  const all: Uint8Array[] = [];
  for (const [i, l] of lines.entries()) {
    h.add("c2s", l);
    const enc = new ByteBuilder();
    l.writeEncoding(enc);
    all.push(enc.done());
    if (i % 97 === 0) h.digest("c2s");
  }
  assert.equal(toHex(h.digest("c2s")), toHex(sha256(...all)));
  // The count is the last line's last seqno (TRANSCRIPT §3.2), not the number of lines.
  const last = lines[lines.length - 1];
  assert.equal(h.counts.c2s, last.lastSeqno ?? last.seqno);
});

Deno.test("transcript hash: empty transcript, and the final block alone", () => {
  assert.equal(
    new TranscriptHasher(ctx).current().transcriptSha256,
    vector.empty_transcript_sha256,
  );
  const direct = finalTranscriptHash(
    ctx,
    vector.c2s_count,
    fromHex(vector.d_c2s),
    vector.s2c_count,
    fromHex(vector.d_s2c),
  );
  assert.equal(toHex(direct), vector.transcript_sha256);
});

Deno.test("transcript hash: the current() snapshot does not disturb later lines", () => {
  const h = new TranscriptHasher(ctx);
  for (const l of prepared) {
    h.current();
    h.add(l.dir, l);
  }
  assert.equal(h.current().transcriptSha256, vector.transcript_sha256);
});

Deno.test("transcript hash: every bound field changes it", () => {
  const base = new TranscriptHasher(ctx).current().transcriptSha256;
  const variants: HashContext[] = [
    { ...ctx, protocolVersion: 1 },
    { ...ctx, sessionId: "f".repeat(32) },
    { ...ctx, sessionTime: ctx.sessionTime + 1 },
    { ...ctx, clientFingerprint: ctx.serverFingerprint, serverFingerprint: ctx.clientFingerprint },
  ];
  for (const v of variants) {
    assert.notEqual(new TranscriptHasher(v).current().transcriptSha256, base);
  }
  // A line moved to the other direction changes it too.
  const a = new TranscriptHasher(ctx);
  const b = new TranscriptHasher(ctx);
  a.add("c2s", prepared[0]);
  b.add("s2c", prepared[0]);
  assert.notEqual(a.current().transcriptSha256, b.current().transcriptSha256);
});

Deno.test("transcript hash: a relay's and a user's msg's records, sig, first, n and proof are hashed (none can move between lines)", () => {
  const line = (json: LineJson) => prepareLine(decodeLine(json), "");
  const hashOf = (json: LineJson) => {
    const h = new TranscriptHasher(ctx);
    h.add(json.dir, line(json));
    return h.current().transcriptSha256;
  };
  type Group = Extract<LineJson, { records: unknown }>;
  const edits: ((l: Group) => void)[] = [
    (l) => l.records[1].record.seqno++,
    (l) => (l.records = l.records.slice(0, 1)),
    (l) => l.first--,
    (l) => l.n++,
    (l) => (l.proof = []),
    (l) => (l.sig = l.sig.replace(/^./, (c) => (c === "A" ? "B" : "A"))),
  ];
  // Lines of two records and a proof entry: every edit changes something.
  const groupOf = (type: string) =>
    vector.lines.find((l) =>
      l.type === type && "records" in l && l.records.length > 1 && l.proof.length > 0
    ) as Group;
  for (const group of [groupOf("relay"), groupOf("msg")]) {
    for (const edit of edits) {
      const edited = structuredClone(group);
      edit(edited);
      assert.notEqual(hashOf(edited), hashOf(group), `${group.type}: ${edit.toString()}`);
    }
  }
});

Deno.test("a user's msg's line (UserMsg: the client's sent msg, the server's received one) is the line encodeLine and lineEncoding make, tag 0x06, and its wire is the line with its carriers", async () => {
  // The client's msg and the server's line of it are laid out from the records' shared JSON and
  // record_enc (TRANSCRIPT §3.1); `verify` recomputes both from the line it reads.
  const pair = await crypto.subtle.generateKey("Ed25519", true, [
    "sign",
    "verify",
  ]) as CryptoKeyPair;
  const pkcs8 = new Uint8Array(await crypto.subtle.exportKey("pkcs8", pair.privateKey));
  const signer = await importSigningKeyPkcs8(pkcs8);
  const sid = "0f".repeat(16);
  const sealed = [LOBBY, "user:bob", "server"].map((to, j) => {
    const { k, ct, c } = sealContent({ kind: "text", text: `héllo ${j}, 😀` });
    return {
      record: { sid, dir: "c2s" as const, to, seqno: 7 + j, ts: 1_796_001_047_145, ct, c },
      k,
    };
  });
  await signBatch(signer, sealed.map((s) => s.record));
  // The whole batch (an empty proof), and the batch in two msgs (records 1-2, then 3), each with
  // its proof; one item's key end to end.
  for (const items of [sealed, sealed.slice(0, 2), sealed.slice(2)]) {
    const { wire, line } = prepareUserMsg(
      items.map((item, j) => j === 1 ? { ...item, e2e: RATCHET_ENVELOPE } : item),
    );
    const json = new ByteBuilder();
    line.writeJson(json);
    const text = new TextDecoder().decode(json.done());
    const parsed = lineOf(JSON.parse(text));
    assert.equal(text, encodeLine(decodeLine(parsed)));
    const enc = new ByteBuilder();
    line.writeEncoding(enc);
    const encoding = enc.done();
    assert.equal(toHex(encoding), toHex(lineEncoding(decodeLine(parsed))));
    assert.equal(encoding[0], 0x06);
    assert.deepEqual(
      [line.dir, line.seqno, line.lastSeqno ?? line.seqno],
      ["c2s", items[0].record.seqno, items[items.length - 1].record.seqno],
    );
    // The wire: the line without `dir`, each item with its carrier beside its record.
    const { dir: _dir, ...members } = JSON.parse(text);
    const sent = JSON.parse(wire);
    assert.deepEqual(
      { ...sent, records: sent.records.map((i: { record: unknown }) => ({ record: i.record })) },
      members,
    );
    assert.deepEqual(
      sent.records.map((i: { k?: string; e2e?: unknown }) => i.e2e ?? i.k),
      items.map((item, j) => j === 1 ? RATCHET_ENVELOPE : toBase64(item.k)),
    );
  }
});

Deno.test("a stored message made from a received record's forms carries its record whole and its record_enc", () => {
  // A stored message made from the same forms carries the same record and the same encoding
  // (a relay carries it without sig and batch: tests/unit/relay_line_test.ts).
  const der = fromBase64(vector.client_cert);
  for (const to of [LOBBY, "user:bob"]) {
    const m = checkedMessage({ kind: "text", text: "héllo, 😀" }, to, 5);
    assert.equal(new TextDecoder().decode(m.forms.bytes), JSON.stringify(m.forms.json));
    assert.equal(toHex(m.forms.encoding), toHex(recordEncoding(m.record)));
    const hop = new RecipientRelay(
      prepareRelay(authorCertOf(der), m.forms, m.k),
      2,
      m.ts,
      "stored",
      true,
    );
    const hopEnc = new ByteBuilder();
    hop.writeEncoding(hopEnc);
    assert.equal(toHex(hopEnc.done()).endsWith(toHex(m.forms.encoding)), true);
    assert.deepEqual(JSON.parse(wireText(hop)).record, m.forms.json);
  }
});

Deno.test("a stored line as a recipient session writes it in place is the line encodeLine and lineEncoding make (a relay's: tests/unit/relay_line_test.ts)", () => {
  // The server writes each recipient's relay line from bytes shared by all recipients (JSON
  // text and line_enc, TRANSCRIPT §3.1); `verify` recomputes both from the line it reads.
  const der = fromBase64(vector.client_cert);
  const author = authorCertOf(der);
  for (const e2e of [undefined, RATCHET_ENVELOPE]) {
    const m = checkedMessage({ kind: "text", text: "héllo, 😀" }, LOBBY, 3);
    const prepared = prepareRelay(author, m.forms, m.k, e2e);
    for (const type of ["stored"] as const) {
      for (const introduce of [true, false]) {
        const hop = new RecipientRelay(prepared, 12, 1_796_001_047_145, type, introduce);
        const json = new ByteBuilder();
        hop.writeJson(json);
        const text = new TextDecoder().decode(json.done());
        const parsed = lineOf(JSON.parse(text));
        assert.equal(text, encodeLine(decodeLine(parsed)));
        const enc = new ByteBuilder();
        hop.writeEncoding(enc);
        assert.equal(toHex(enc.done()), toHex(lineEncoding(decodeLine(parsed))));
        const wire = JSON.parse(wireText(hop));
        assert.equal(new TextEncoder().encode(wireText(hop)).length, hop.length);
        assert.deepEqual(
          { type: wire.type, seqno: wire.seqno, ts: wire.ts, cert: wire.cert, record: wire.record },
          {
            type,
            seqno: 12,
            ts: 1_796_001_047_145,
            cert: introduce ? toBase64(der) : undefined,
            record: m.forms.json,
          },
        );
        assert.deepEqual(wire.e2e ?? wire.k, e2e ?? toBase64(m.k));
      }
    }
  }
});

Deno.test("file names: <UTC start>-<session_id>-<role>", () => {
  const name = baseNameOf(vector.session_id, "server", Date.UTC(2024, 0, 2, 3, 4, 5, 678));
  assert.equal(name, `20240102T030405Z-${vector.session_id}-server`);
  assert.equal(basePathOfLog(`/t/${name}.log`), `/t/${name}`);
});

Deno.test("receipt schema: strict, versioned, canonical encodings", () => {
  const good = {
    type: "receipt",
    version: 2,
    session_id: vector.session_id,
    signer_role: "client",
    signer: ctx.clientFingerprint,
    c2s_count: 2,
    s2c_count: 2,
    transcript_sha256: vector.transcript_sha256,
    sig: "AAAA",
  };
  assert.equal(ReceiptSchema.safeParse(good).success, true);
  for (
    const bad of [
      { ...good, extra: 1 },
      { ...good, version: 1 },
      { ...good, signer_role: "mallory" },
      { ...good, session_id: vector.session_id.toUpperCase() },
      { ...good, transcript_sha256: vector.transcript_sha256.slice(2) },
      { ...good, sig: "AAB=" }, // non-canonical: nonzero padding bits
      { ...good, sig: "" },
      { ...good, c2s_count: -1 },
      { ...good, s2c_count: 1.5 },
    ]
  ) {
    assert.equal(ReceiptSchema.safeParse(bad).success, false, JSON.stringify(bad));
  }
});

Deno.test("golden transcript: a stored 2020 session still verifies (expired certs), confirmed by both, and opens", async () => {
  const { TrustStore } = await import("../../lib/pki/validate.ts");
  const { verifyTranscript } = await import("../../lib/transcript/verify.ts");
  const dir = new URL("../vectors/transcript/", import.meta.url).pathname;
  const golden = JSON.parse(await Deno.readTextFile(`${dir}golden.json`));
  const report = await verifyTranscript(`${dir}${golden.log}`, {
    trust: await TrustStore.fromPem(await Deno.readTextFile(`${dir}${golden.ca}`)),
  });
  assert.equal(report.ok, true, report.reason ?? "");
  // Written under wire version 2 (before session 24): still verified, its header hashed as it is.
  assert.equal(report.protocolVersion, 2);
  assert.equal(report.transcriptSha256, golden.transcript_sha256);
  assert.deepEqual(report.messages, { c2s: golden.c2s, s2c: golden.s2c });
  assert.deepEqual(report.receipts.map((r) => r.status), ["valid", "valid"]);
  assert.deepEqual(report.confirmedBy, ["client", "server"]);
  assert.deepEqual(report.authors.map((a) => a.commonName), ["alice", "bob"]);
  assert.ok(report.signers.client!.notAfter < new Date().toISOString(), "certificate expired");
  // bob's relayed records open to what bob said, with only the CA (TRANSCRIPT §6): the first
  // relay carries records 1 and 2 of his batch of 3 and introduces his certificate, the second
  // carries record 3 and only names it (PROTOCOL §6.4.1), and its opening carries it. Each
  // opening's record is whole: the line's sig, and the path derived from the group and its proof.
  const { checkOpening, makeOpening } = await import("../../lib/transcript/opening.ts");
  const lines = (await Deno.readTextFile(`${dir}${golden.log}`)).split("\n");
  const relayLines = lines.flatMap((l, i) => l.includes('"type":"relay"') ? [i + 1] : []);
  assert.equal(relayLines.length, 2);
  assert.ok(lines[relayLines[0] - 1].includes('"cert":'));
  assert.ok(!lines[relayLines[1] - 1].includes('"cert":'));
  assert.deepEqual(report.authors.map((a) => [a.commonName, a.messages]), [["alice", 10], [
    "bob",
    3,
  ]]);
  const trust = await TrustStore.fromPem(await Deno.readTextFile(`${dir}${golden.ca}`));
  const keys = `${dir}${golden.keys}`;
  for (
    const [target, text, i, path] of [
      [{ line: relayLines[0], item: 1 }, "relayed 1", 0, 2],
      [{ line: relayLines[0], item: 2 }, "relayed 2", 1, 2],
      [{ line: relayLines[1] }, "relayed 3", 2, 1],
    ] as const
  ) {
    const opening = await makeOpening(`${dir}${golden.log}`, target, keys);
    assert.deepEqual(
      [opening.record.batch?.i, opening.record.batch?.n, opening.record.batch?.path.length],
      [i, 3, path],
    );
    const opened = await checkOpening(opening, trust);
    assert.equal(opened.author, "bob");
    assert.deepEqual(opened.body, { kind: "text", text });
  }
  // A relay of two records needs its item named; a record it does not hold is no record.
  await assert.rejects(
    makeOpening(`${dir}${golden.log}`, { line: relayLines[0] }, keys),
    /is a relay of 2 records: name one with --reveal \d+:J, J from 1 to 2/,
  );
  await assert.rejects(
    makeOpening(`${dir}${golden.log}`, { line: relayLines[0], item: 3 }, keys),
    /there is no record 3/,
  );
  // alice's own msg lines (TRANSCRIPT §2.2): c2s 1-3 whole, c2s 4-5 and 6 one batch in two lines,
  // c2s 7 alone, c2s 8-10 whole. Each record opens whole (the line's sig, its path derived), its
  // key found by its own c2s seqno.
  const msgLines = lines.flatMap((l, i) => l.startsWith('{"dir":"c2s"') ? [i + 1] : []);
  assert.equal(msgLines.length, 5);
  for (
    const [target, seqno, i, n, path] of [
      [{ line: msgLines[0], item: 2 }, 2, 1, 3, 2],
      [{ line: msgLines[1], item: 2 }, 5, 1, 3, 2],
      [{ line: msgLines[2] }, 6, 2, 3, 1],
      [{ line: msgLines[3] }, 7, 0, 1, 0],
      [{ line: msgLines[4], item: 3 }, 10, 2, 3, 1],
    ] as const
  ) {
    const opening = await makeOpening(`${dir}${golden.log}`, target, keys);
    assert.deepEqual(
      [
        opening.record.seqno,
        opening.record.batch?.i,
        opening.record.batch?.n,
        opening.record.batch?.path.length,
      ],
      [seqno, i, n, path],
    );
    const opened = await checkOpening(opening, trust);
    assert.equal(opened.author, "alice");
    assert.deepEqual(opened.body, { kind: "text", text: `message c2s ${seqno}` });
  }
  await assert.rejects(
    makeOpening(`${dir}${golden.log}`, { line: msgLines[0] }, keys),
    /is a msg line of 3 records: name one with --reveal \d+:J, J from 1 to 3/,
  );
});

Deno.test("negative transcript vectors: each edit of the golden log's relay lines (author certificate, the group's proof, records, first, n) and msg lines (a record with sig, a seqno gap, records reordered, a proof entry flipped, missing or extra, first or n changed, a line moved to s2c) fails with its code at its line (TRANSCRIPT §2.2, §5)", async () => {
  const { TrustStore } = await import("../../lib/pki/validate.ts");
  const { verifyTranscript } = await import("../../lib/transcript/verify.ts");
  const dir = new URL("../vectors/transcript/", import.meta.url).pathname;
  const negative = JSON.parse(await Deno.readTextFile(`${dir}negative.json`));
  const trust = await TrustStore.fromPem(await Deno.readTextFile(`${dir}${negative.ca}`));
  assert.equal(negative.cases.length, 37);
  for (const c of negative.cases) {
    const report = await verifyTranscript(`${dir}${c.log}`, { trust });
    assert.equal(report.ok, false, c.name);
    assert.equal(report.code, c.code, `${c.name}: ${report.reason}`);
    assert.equal(report.firstBadLine, c.line, c.name);
  }
});
