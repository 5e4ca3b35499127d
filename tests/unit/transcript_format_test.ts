/** The transcript hash against an independently computed vector (docs/TRANSCRIPT.md §3). */
import assert from "node:assert/strict";
import { fromBase64, toHex } from "../../lib/bytes.ts";
import {
  baseNameOf,
  basePathOfLog,
  finalTranscriptHash,
  type HashContext,
  messageDigest,
  TranscriptHasher,
} from "../../lib/transcript/format.ts";
import { ReceiptSchema } from "../../lib/transcript/receipt.ts";

const vector = JSON.parse(
  await Deno.readTextFile(new URL("../vectors/transcript/hash_v1.json", import.meta.url)),
) as {
  protocol_version: number;
  session_id: string;
  client_fingerprint: string;
  server_fingerprint: string;
  lines: { dir: "c2s" | "s2c"; seqno: number; ts: number; ct: string; sig: string }[];
  c2s_count: number;
  s2c_count: number;
  d_c2s: string;
  d_s2c: string;
  transcript_sha256: string;
  empty_transcript_sha256: string;
  first_line_message_digest: string;
};

const ctx: HashContext = {
  protocolVersion: vector.protocol_version,
  sessionId: vector.session_id,
  clientFingerprint: vector.client_fingerprint,
  serverFingerprint: vector.server_fingerprint,
};

Deno.test("transcript hash: matches the vector computed from the spec in Python", () => {
  const h = new TranscriptHasher(ctx);
  for (const l of vector.lines) h.add(l.dir, l.seqno, l.ts, fromBase64(l.ct), fromBase64(l.sig));
  const state = h.current();
  assert.equal(state.transcriptSha256, vector.transcript_sha256);
  assert.equal(state.c2s, vector.c2s_count);
  assert.equal(state.s2c, vector.s2c_count);
});

Deno.test("transcript hash: independent of how the directions interleave", () => {
  const c2s = vector.lines.filter((l) => l.dir === "c2s");
  const s2c = vector.lines.filter((l) => l.dir === "s2c");
  const h = new TranscriptHasher(ctx);
  for (const l of [...s2c, ...c2s]) {
    h.add(l.dir, l.seqno, l.ts, fromBase64(l.ct), fromBase64(l.sig));
  }
  assert.equal(h.current().transcriptSha256, vector.transcript_sha256);
});

Deno.test("transcript hash: empty transcript, and the final block alone", async () => {
  assert.equal(
    new TranscriptHasher(ctx).current().transcriptSha256,
    vector.empty_transcript_sha256,
  );
  const { fromHex } = await import("../../lib/bytes.ts");
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
  for (const l of vector.lines) {
    h.current();
    h.add(l.dir, l.seqno, l.ts, fromBase64(l.ct), fromBase64(l.sig));
  }
  assert.equal(h.current().transcriptSha256, vector.transcript_sha256);
});

Deno.test("transcript hash: every bound field changes it", () => {
  const base = new TranscriptHasher(ctx).current().transcriptSha256;
  const variants: HashContext[] = [
    { ...ctx, protocolVersion: 2 },
    { ...ctx, sessionId: "f".repeat(32) },
    { ...ctx, clientFingerprint: ctx.serverFingerprint, serverFingerprint: ctx.clientFingerprint },
  ];
  for (const v of variants) {
    assert.notEqual(new TranscriptHasher(v).current().transcriptSha256, base);
  }
  // A line moved to the other direction changes it too.
  const a = new TranscriptHasher(ctx);
  const b = new TranscriptHasher(ctx);
  a.add("c2s", 1, 5, new Uint8Array(16), new Uint8Array(64));
  b.add("s2c", 1, 5, new Uint8Array(16), new Uint8Array(64));
  assert.notEqual(a.current().transcriptSha256, b.current().transcriptSha256);
});

Deno.test("transcript hash: length prefixes keep ct/sig boundaries unambiguous", () => {
  const a = new TranscriptHasher(ctx);
  const b = new TranscriptHasher(ctx);
  a.add("c2s", 1, 5, new Uint8Array(17), new Uint8Array(64));
  b.add("c2s", 1, 5, new Uint8Array(16), new Uint8Array(65));
  assert.notEqual(a.current().transcriptSha256, b.current().transcriptSha256);
});

Deno.test("message digest: SHA-256(u64be(seqno) || u64be(ts) || ct)", () => {
  const l = vector.lines[0];
  assert.equal(
    toHex(messageDigest(l.seqno, l.ts, fromBase64(l.ct))),
    vector.first_line_message_digest,
  );
});

Deno.test("file names: <UTC start>-<session_id>-<role>", () => {
  const name = baseNameOf(vector.session_id, "server", Date.UTC(2024, 0, 2, 3, 4, 5, 678));
  assert.equal(name, `20240102T030405Z-${vector.session_id}-server`);
  assert.equal(basePathOfLog(`/t/${name}.log`), `/t/${name}`);
});

Deno.test("receipt schema: strict, versioned, canonical encodings", () => {
  const good = {
    type: "receipt",
    version: 1,
    session_id: vector.session_id,
    peer: "client",
    signer: vector.client_fingerprint,
    first_seq: 1,
    last_seq: 2,
    c2s_count: 2,
    s2c_count: 2,
    transcript_sha256: vector.transcript_sha256,
    sig: "AAAA",
  };
  assert.equal(ReceiptSchema.safeParse(good).success, true);
  for (
    const bad of [
      { ...good, extra: 1 },
      { ...good, version: 2 },
      { ...good, peer: "mallory" },
      { ...good, session_id: vector.session_id.toUpperCase() },
      { ...good, transcript_sha256: vector.transcript_sha256.slice(2) },
      { ...good, sig: "AAB=" }, // non-canonical: nonzero padding bits
      { ...good, sig: "" },
      { ...good, first_seq: -1 },
      { ...good, last_seq: 1.5 },
    ]
  ) {
    assert.equal(ReceiptSchema.safeParse(bad).success, false, JSON.stringify(bad));
  }
});

Deno.test("golden transcript: a stored 2020 session still verifies (expired certs) with both receipts", async () => {
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
  assert.ok(report.signers.client!.notAfter < new Date().toISOString(), "certificate expired");
});

Deno.test("transcript hash: a relayed line's author record is not hashed", async () => {
  const { TranscriptWriter } = await import("../../lib/transcript/writer.ts");
  const { makePki } = await import("../../testkit/pki.ts");
  const pki = await makePki(["alice"], "ed25519");
  const dir = await Deno.makeTempDir();
  try {
    const alice = await pki.identity("alice");
    const server = await pki.identity("server");
    const header = {
      sessionId: vector.session_id,
      clientCertDer: alice.certDer,
      serverCertDer: server.certDer,
      startedAt: 1_700_000_000_000,
    };
    // The recipient records an author record only when it verified (PROTOCOL §6.4); the
    // server always does. Their hashes must agree, or the receipts would not.
    const withAuthor = await TranscriptWriter.create(`${dir}/a`, { ...header, role: "server" });
    const without = await TranscriptWriter.create(`${dir}/b`, { ...header, role: "client" });
    const line = {
      dir: "s2c" as const,
      seqno: 1,
      ts: 1_700_000_000_500,
      ct: new Uint8Array(40),
      sig: new Uint8Array(64),
    };
    const author = {
      cert: alice.certDer,
      seqno: 5,
      ts: 1_700_000_000_400,
      ct: new Uint8Array(33),
      sig: new Uint8Array(64),
    };
    await withAuthor.append({ ...line, author });
    await without.append(line);
    assert.equal(withAuthor.currentHash().transcriptSha256, without.currentHash().transcriptSha256);
    assert.match(await Deno.readTextFile(withAuthor.path), /"author":/);
    await withAuthor.abort();
    await without.abort();
  } finally {
    await Deno.remove(dir, { recursive: true });
    await Deno.remove(pki.dir, { recursive: true });
  }
});
