/**
 * verifyTranscript (library): valid transcripts in their variants, and the tamper
 * table — each case must be rejected with the right code AND line number.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { TrustStore } from "../lib/pki/validate.ts";
import { verifyTranscript } from "../lib/transcript/verify.ts";
import { makePki, TAMPER_CASES, writeCase, writeSession } from "../testkit/transcript_fixtures.ts";
import { tamperBase } from "./helpers/tamper_base.ts";

Deno.test("verify: a valid session with both receipts is confirmed", async () => {
  const b = await tamperBase();
  const trust = await TrustStore.fromPem(b.pki.caPem);
  const report = await verifyTranscript(b.session.logPath, { trust });
  assert.equal(report.ok, true, report.reason ?? "");
  assert.equal(report.code, null);
  assert.equal(report.confirmed, true);
  assert.deepEqual(report.messages, { c2s: 4, s2c: 4 });
  assert.equal(report.receipts.length, 2, "own and peer receipt found beside the log");
  assert.ok(report.receipts.every((r) => r.status === "valid" && r.autodetected));
  assert.deepEqual(report.receipts.map((r) => r.signer).sort(), ["client", "server"]);
  assert.equal(report.signers.client?.commonName, "alice");
  assert.equal(report.signers.server?.commonName, "localhost");
  assert.equal(report.sessionId, b.session.sessionId);
  assert.equal(report.transcriptSha256, b.session.ownReceipt?.transcript_sha256);
  assert.ok(report.span.first !== null && report.span.last! >= report.span.first);
  assert.equal(report.ciphertextOnly, true);
});

Deno.test("verify: the peer's receipt verifies against my transcript and vice versa", async () => {
  const b = await tamperBase();
  const trust = await TrustStore.fromPem(b.pki.caPem);
  // The server's own transcript (different arrival interleaving) with the client's receipt.
  const report = await verifyTranscript(b.session.peerLogPath!, {
    trust,
    receiptPath: b.session.receiptPath,
  });
  assert.equal(report.ok, true, report.reason ?? "");
  assert.equal(report.recordedBy, "server");
  assert.equal(report.receipts.length, 1);
  assert.equal(report.receipts[0].signer, "client");
  assert.equal(report.receipts[0].autodetected, false);
  const mine = await verifyTranscript(b.session.logPath, {
    trust,
    receiptPath: b.session.peerReceiptPath,
  });
  assert.equal(mine.ok, true, mine.reason ?? "");
  assert.equal(mine.receipts[0].signer, "server");
});

Deno.test("verify: a cut-off session without receipts verifies line by line, unconfirmed", async () => {
  const b = await tamperBase();
  const dir = await Deno.makeTempDir();
  const s = await writeSession(b.pki, { dir, messages: 5, receipts: "none" });
  const report = await verifyTranscript(s.logPath, {
    trust: await TrustStore.fromPem(b.pki.caPem),
  });
  assert.equal(report.ok, true, report.reason ?? "");
  assert.equal(report.confirmed, false);
  assert.deepEqual(report.receipts, []);
  assert.deepEqual(report.messages, { c2s: 3, s2c: 2 });
});

Deno.test("verify: a session with no messages still has receipts that verify", async () => {
  const b = await tamperBase();
  const dir = await Deno.makeTempDir();
  const s = await writeSession(b.pki, { dir, messages: 0, role: "server" });
  assert.equal(s.ownReceipt?.first_seq, 0);
  assert.equal(s.ownReceipt?.last_seq, 0);
  const report = await verifyTranscript(s.logPath, {
    trust: await TrustStore.fromPem(b.pki.caPem),
  });
  assert.equal(report.ok, true, report.reason ?? "");
  assert.equal(report.confirmed, true);
  assert.deepEqual(report.messages, { c2s: 0, s2c: 0 });
  assert.equal(report.span.first, null);
});

for (const alg of ["rsa", "p256"] as const) {
  Deno.test(`verify: ${alg} certificates`, async () => {
    const pki = await makePki({ alg });
    const dir = await Deno.makeTempDir();
    const s = await writeSession(pki, { dir, messages: 9, role: "server" });
    const report = await verifyTranscript(s.logPath, {
      trust: await TrustStore.fromPem(pki.caPem),
    });
    assert.equal(report.ok, true, report.reason ?? "");
    assert.equal(report.confirmed, true);
    assert.deepEqual(report.messages, { c2s: 5, s2c: 4 });
  });
}

Deno.test("verify: certificates are validated at the session's start, not now", async () => {
  // Certificates valid only during 2020: long expired today.
  const pki = await makePki({
    alg: "ed25519",
    notBefore: "20200101000000Z",
    notAfter: "20210101000000Z",
  });
  const dir = await Deno.makeTempDir();
  const s = await writeSession(pki, {
    dir,
    messages: 4,
    startedAt: Date.UTC(2020, 5, 1),
  });
  const trust = await TrustStore.fromPem(pki.caPem);
  const ok = await verifyTranscript(s.logPath, { trust });
  assert.equal(ok.ok, true, ok.reason ?? "");
  // The same transcript claiming to start now is rejected: the certificates had expired.
  const lines = (await Deno.readTextFile(s.logPath)).split("\n");
  const header = JSON.parse(lines[0]);
  header.started_at = Date.now();
  lines[0] = JSON.stringify(header);
  const moved = join(dir, "moved.log");
  await Deno.writeTextFile(moved, lines.join("\n"));
  const bad = await verifyTranscript(moved, { trust });
  assert.equal(bad.ok, false);
  assert.equal(bad.code, "BAD_CERT");
  assert.equal(bad.firstBadLine, 1);
});

Deno.test("verify: concurrency 1 and 64 agree on the first bad line", async () => {
  const b = await tamperBase();
  const lines = [...b.lines];
  // Two bad signatures: line 7 and line 4; the report must name line 4.
  for (const i of [6, 3]) {
    const o = JSON.parse(lines[i]);
    o.sig = (o.sig[0] === "A" ? "B" : "A") + o.sig.slice(1);
    lines[i] = JSON.stringify(o);
  }
  const logPath = await writeCase(await Deno.makeTempDir(), { lines });
  const trust = await TrustStore.fromPem(b.pki.caPem);
  for (const concurrency of [1, 2, 64]) {
    const report = await verifyTranscript(logPath, { trust, concurrency });
    assert.equal(report.code, "SIG_FAIL");
    assert.equal(report.firstBadLine, 4, `concurrency ${concurrency}`);
    assert.deepEqual(report.messages, { c2s: 1, s2c: 1 }, "counts stop before the bad line");
  }
});

Deno.test("verify: an unreadable log is IO_ERROR (thrown), an empty one is TAMPERED", async () => {
  const b = await tamperBase();
  const trust = await TrustStore.fromPem(b.pki.caPem);
  await assert.rejects(
    verifyTranscript("/nonexistent/x.log", { trust }),
    (e: Error & { code?: string }) => e.code === "IO_ERROR",
  );
  const dir = await Deno.makeTempDir();
  await Deno.writeTextFile(join(dir, "empty.log"), "");
  const report = await verifyTranscript(join(dir, "empty.log"), { trust });
  assert.equal(report.code, "TAMPERED");
  assert.equal(report.firstBadLine, 1);
});

for (const c of TAMPER_CASES) {
  Deno.test(`verify rejects: ${c.name} → ${c.code} at line ${c.line ?? "(receipt)"}`, async () => {
    const b = await tamperBase();
    const made = await c.make(b);
    const logPath = await writeCase(await Deno.makeTempDir({ prefix: "sc-case-" }), made);
    const report = await verifyTranscript(logPath, {
      trust: await TrustStore.fromPem(b.pki.caPem),
    });
    assert.equal(report.ok, false);
    assert.equal(report.code, c.code, report.reason ?? "");
    assert.equal(report.firstBadLine, c.line, report.reason ?? "");
    assert.match(report.reason ?? "", c.reason);
    if (c.line !== null) assert.equal(report.transcriptSha256, null);
    else assert.equal(report.receipts.find((r) => r.status === "invalid")?.code, c.code);
  });
}
