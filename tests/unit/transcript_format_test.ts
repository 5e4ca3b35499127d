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
  msgLine,
  prepareLine,
  prepareRelay,
  RecipientRelay,
  recordEncoding,
} from "../../lib/message/record.ts";
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
  assert.equal(h.counts.c2s, lines.length);
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

Deno.test("transcript hash: a relay's records, sig, first, n and proof are hashed (none can move between lines)", () => {
  const relay = vector.lines.find((l) => l.type === "relay")!;
  if (relay.type !== "relay") throw new Error("no relay line in the vector");
  const line = (json: LineJson) => prepareLine(decodeLine(json), "");
  const hashOf = (json: LineJson) => {
    const h = new TranscriptHasher(ctx);
    h.add("s2c", line(json));
    return h.current().transcriptSha256;
  };
  const edits: ((l: typeof relay) => void)[] = [
    (l) => l.records[1].record.seqno++,
    (l) => (l.records = l.records.slice(0, 1)),
    (l) => l.first--,
    (l) => l.n++,
    (l) => (l.proof = []),
    (l) => (l.sig = l.sig.replace(/^./, (c) => (c === "A" ? "B" : "A"))),
  ];
  for (const edit of edits) {
    const edited = structuredClone(relay);
    edit(edited);
    assert.notEqual(hashOf(edited), hashOf(relay), edit.toString());
  }
});

Deno.test("a received msg's line, its record's text and encoding shared with its relays (RecordForms), is the line encodeLine and lineEncoding make", () => {
  // The server's line of an author's record and every relay of it use one JSON text and one
  // record_enc (TRANSCRIPT §3.1), made once; `verify` recomputes both from the line it reads.
  const der = fromBase64(vector.client_cert);
  for (const to of [LOBBY, "user:bob"]) {
    const m = checkedMessage({ kind: "text", text: "héllo, 😀" }, to, 5);
    if (m.type !== "msg") throw new Error("not a msg");
    assert.equal(new TextDecoder().decode(m.forms.bytes), JSON.stringify(m.forms.json));
    assert.equal(toHex(m.forms.encoding), toHex(recordEncoding(m.record)));
    const line = msgLine("c2s", m.record, m.forms.bytes, m.k, m.forms.encoding);
    const json = new ByteBuilder();
    line.writeJson(json);
    const text = new TextDecoder().decode(json.done());
    const parsed = lineOf(JSON.parse(text));
    assert.equal(text, encodeLine(decodeLine(parsed)));
    const enc = new ByteBuilder();
    line.writeEncoding(enc);
    assert.equal(toHex(enc.done()), toHex(lineEncoding(decodeLine(parsed))));
    // A stored message made from the same forms carries the same record and the same encoding
    // (a relay carries it without sig and batch: tests/unit/relay_line_test.ts).
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
  assert.deepEqual(report.authors.map((a) => [a.commonName, a.messages]), [["alice", 5], [
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
});

Deno.test("negative transcript vectors: each edit of the golden log's relay lines (author certificate, the group's proof, records, first, n) fails with its code at its line (TRANSCRIPT §2.2, §5)", async () => {
  const { TrustStore } = await import("../../lib/pki/validate.ts");
  const { verifyTranscript } = await import("../../lib/transcript/verify.ts");
  const dir = new URL("../vectors/transcript/", import.meta.url).pathname;
  const negative = JSON.parse(await Deno.readTextFile(`${dir}negative.json`));
  const trust = await TrustStore.fromPem(await Deno.readTextFile(`${dir}${negative.ca}`));
  assert.equal(negative.cases.length, 18);
  for (const c of negative.cases) {
    const report = await verifyTranscript(`${dir}${c.log}`, { trust });
    assert.equal(report.ok, false, c.name);
    assert.equal(report.code, c.code, `${c.name}: ${report.reason}`);
    assert.equal(report.firstBadLine, c.line, c.name);
  }
});
