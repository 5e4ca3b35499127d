/**
 * verifyTranscript (library): valid transcripts in their variants, and the tamper
 * table — each case must be rejected with the right code AND line number.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { TrustStore } from "../lib/pki/validate.ts";
import { verifyTranscript } from "../lib/transcript/verify.ts";
import { fromHex } from "../lib/bytes.ts";
import { fingerprintOf } from "../lib/pki/describe.ts";
import { encodeReceiptFile, signReceipt } from "../lib/transcript/receipt.ts";
import { formatReport } from "../commands/verify.ts";
import { decodeLine, LineShape, wholeRecordOfGroup } from "../lib/message/record.ts";
import {
  makePki,
  msgLineJson,
  revoke,
  storedLineOf,
  TAMPER_CASES,
  writeCase,
  writeSession,
} from "../testkit/transcript_fixtures.ts";
import { tamperBase } from "./helpers/tamper_base.ts";

Deno.test("verify: a valid session with both receipts is confirmed", async () => {
  const b = await tamperBase();
  const trust = await TrustStore.fromPem(b.pki.caPem);
  const report = await verifyTranscript(b.session.logPath, { trust });
  assert.equal(report.ok, true, report.reason ?? "");
  assert.equal(report.code, null);
  assert.deepEqual(report.confirmedBy, ["client", "server"]);
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
  assert.deepEqual(report.confirmedBy, []);
  assert.deepEqual(report.receipts, []);
  assert.deepEqual(report.messages, { c2s: 3, s2c: 2 });
});

Deno.test("verify: a session with no messages still has receipts that verify", async () => {
  const b = await tamperBase();
  const dir = await Deno.makeTempDir();
  const s = await writeSession(b.pki, { dir, messages: 0, role: "server" });
  assert.equal(s.ownReceipt?.c2s_count, 0);
  assert.equal(s.ownReceipt?.s2c_count, 0);
  const report = await verifyTranscript(s.logPath, {
    trust: await TrustStore.fromPem(b.pki.caPem),
  });
  assert.equal(report.ok, true, report.reason ?? "");
  assert.deepEqual(report.confirmedBy, ["client", "server"]);
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
    assert.deepEqual(report.confirmedBy, ["client", "server"]);
    assert.deepEqual(report.messages, { c2s: 5, s2c: 4 });
  });
}

Deno.test("verify: certificates are judged at the session time, not now", async () => {
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
  header.session_time = Date.now();
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
  // Two bad signatures: line 8 and line 4; the report must name line 4.
  for (const i of [7, 3]) {
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

Deno.test("verify: a party that drops the peer's last line and re-signs only its own receipt gets 'confirmed by the client only' (issue 11 item 14)", async () => {
  const b = await tamperBase();
  const trust = await TrustStore.fromPem(b.pki.caPem);
  const dir = await Deno.makeTempDir({ prefix: "sc-drop-" });
  const logPath = await writeCase(dir, { lines: b.lines.slice(0, -1) });
  const unconfirmed = await verifyTranscript(logPath, { trust });
  assert.equal(unconfirmed.ok, true, unconfirmed.reason ?? "");
  const own = await signReceipt(b.pki.client.signer, {
    sessionId: b.session.sessionId,
    role: "client",
    signerFingerprint: fingerprintOf(b.pki.client.certDer),
    state: {
      transcriptHash: fromHex(unconfirmed.transcriptSha256!),
      transcriptSha256: unconfirmed.transcriptSha256!,
      c2s: 4,
      s2c: 3,
    },
  });
  await Deno.writeTextFile(join(dir, "case.receipt.json"), encodeReceiptFile(own));
  const report = await verifyTranscript(logPath, { trust });
  assert.equal(report.ok, true, report.reason ?? "");
  assert.deepEqual(report.confirmedBy, ["client"], "never 'both' from one party's receipt");
  assert.match(formatReport(report), /VALID, confirmed by the client only/);
  // The server's genuine receipt, which covers the dropped line, gives it away.
  await Deno.writeTextFile(
    join(dir, "case.peer-receipt.json"),
    b.session.peerReceipt ? encodeReceiptFile(b.session.peerReceipt) : "",
  );
  const caught = await verifyTranscript(logPath, { trust });
  assert.equal(caught.ok, false);
  assert.equal(caught.code, "TAMPERED");
  assert.match(
    caught.reason ?? "",
    /case\.peer-receipt\.json: receipt covers c2s 1\.\.4 and s2c 1\.\.4/,
  );
});

Deno.test("verify: a receipt over a prefix says which lines it confirms, and is not 'both'", async () => {
  const b = await tamperBase();
  const trust = await TrustStore.fromPem(b.pki.caPem);
  // The server's receipt covers c2s 1..4, s2c 1..4; the file gains a later s2c line.
  const extra = JSON.parse(b.lines[8]);
  extra.record.seqno = 5;
  const dir = await Deno.makeTempDir({ prefix: "sc-prefix-" });
  const logPath = await writeCase(dir, { lines: [...b.lines, JSON.stringify(extra)] });
  await Deno.writeTextFile(
    join(dir, "case.receipt.json"),
    encodeReceiptFile(b.session.peerReceipt!),
  );
  const report = await verifyTranscript(logPath, { trust });
  assert.equal(report.ok, true, report.reason ?? "");
  assert.equal(report.receipts[0].status, "valid");
  assert.equal(report.receipts[0].complete, false);
  assert.deepEqual([report.receipts[0].c2sCount, report.receipts[0].s2cCount], [4, 4]);
  assert.deepEqual(report.confirmedBy, []);
  assert.match(
    formatReport(report),
    /the server confirms c2s 1\.\.4, s2c 1\.\.4 \(NOT every line\)/,
  );
});

Deno.test("verify: relayed records are attributed to their author; one moved to another recipient fails", async () => {
  const pki = await makePki({ alg: "ed25519", others: ["bob"] });
  const trust = await TrustStore.fromPem(pki.caPem);
  const dir = await Deno.makeTempDir({ prefix: "sc-relay-" });
  const s = await writeSession(pki, { dir, messages: 8, relayAuthor: pki.others[0] });
  const report = await verifyTranscript(s.logPath, { trust });
  assert.equal(report.ok, true, report.reason ?? "");
  assert.deepEqual(report.authors.map((a) => [a.commonName, a.messages]), [["alice", 4], [
    "bob",
    2,
  ]]);
  assert.deepEqual(report.confirmedBy, ["client", "server"]);
  const lines = (await Deno.readTextFile(s.logPath)).split("\n").slice(0, -1);
  const at = lines.findIndex((l) => l.includes('"type":"relay"'));
  const moved = [...lines];
  moved[at] = moved[at].replace('"to":"lobby"', '"to":"user:carol"');
  const bad = await verifyTranscript(await writeCase(join(dir, "moved"), { lines: moved }), {
    trust,
  });
  assert.equal(bad.code, "TAMPERED");
  assert.equal(bad.firstBadLine, at + 1);
  assert.match(
    bad.reason ?? "",
    /relayed record addressed to user:carol, not to user:alice or the lobby/,
  );
});

Deno.test("verify: an author certificate is in the transcript once, then named; a name without an introduction, other bytes under a name, or another user's certificate fail (TRANSCRIPT §2.2)", async () => {
  const pki = await makePki({ alg: "ed25519", others: ["bob"] });
  const trust = await TrustStore.fromPem(pki.caPem);
  const dir = await Deno.makeTempDir({ prefix: "sc-certonce-" });
  const s = await writeSession(pki, { dir, messages: 8, relayAuthor: pki.others[0] });
  const lines = (await Deno.readTextFile(s.logPath)).split("\n").slice(0, -1);
  const relays = lines.flatMap((l, i) => l.includes('"type":"relay"') ? [i] : []);
  assert.equal(relays.length, 2);
  const [first, second] = relays.map((i) => JSON.parse(lines[i]));
  const bobFp = fingerprintOf(pki.others[0].certDer);
  assert.equal(first.author_fp, bobFp);
  assert.equal(typeof first.cert, "string"); // introduced on the first line that needs it
  assert.equal(second.author_fp, bobFp);
  assert.equal(second.cert, undefined); // then only named
  assert.equal((await verifyTranscript(s.logPath, { trust })).ok, true);

  const header = JSON.parse(lines[0]);
  const edits: [string, (l: Record<string, unknown>[]) => void, string, number, RegExp][] = [
    [
      "named before any line introduced it",
      ([a]) => delete a.cert,
      "TAMPERED",
      relays[0],
      /named but was not introduced earlier/,
    ],
    [
      "introduced again with other bytes under its name",
      ([, b]) => (b.cert = header.client_cert),
      "TAMPERED",
      relays[1],
      /not the one its author_fp .* names/,
    ],
    [
      "introduced twice",
      ([a, b]) => (b.cert = a.cert),
      "TAMPERED",
      relays[1],
      /introduced again in this session/,
    ],
    [
      "bob's record under alice's certificate",
      ([a]) => {
        a.cert = header.client_cert;
        a.author_fp = fingerprintOf(pki.client.certDer);
      },
      "SIG_FAIL",
      relays[0],
      /does not carry alice's signature/,
    ],
  ];
  for (const [name, edit, code, at, reason] of edits) {
    const edited = relays.map((i) => JSON.parse(lines[i]));
    edit(edited);
    const changed = [...lines];
    relays.forEach((i, j) => (changed[i] = JSON.stringify(edited[j])));
    const caseDir = join(dir, name.replaceAll(/[^a-z]+/g, "-"));
    const bad = await verifyTranscript(await writeCase(caseDir, { lines: changed }), { trust });
    assert.equal(bad.code, code, name);
    assert.equal(bad.firstBadLine, at + 1, name);
    assert.match(bad.reason ?? "", reason, name);
  }
});

Deno.test("verify: a lobby relay relabelled as a stored line (PROTOCOL §6.6) is TAMPERED", async () => {
  const pki = await makePki({ alg: "ed25519", others: ["bob"] });
  const trust = await TrustStore.fromPem(pki.caPem);
  const dir = await Deno.makeTempDir({ prefix: "sc-stored-" });
  const s = await writeSession(pki, { dir, messages: 8, relayAuthor: pki.others[0] });
  const lines = (await Deno.readTextFile(s.logPath)).split("\n").slice(0, -1);
  const at = lines.findIndex((l) => l.includes('"type":"relay"'));
  const relabelled = [...lines];
  // Only private records are ever stored: an old lobby line cannot pass as one, even whole (its
  // signature and path good).
  relabelled[at] = JSON.stringify(storedLineOf(lines[at]));
  const bad = await verifyTranscript(
    await writeCase(join(dir, "stored"), { lines: relabelled }),
    { trust },
  );
  assert.equal(bad.code, "TAMPERED");
  assert.equal(bad.firstBadLine, at + 1);
  assert.match(bad.reason ?? "", /stored record addressed to lobby, not to user:alice/);
  // A stored record travels whole (TRANSCRIPT §5 step 4): one without its sig and batch, as a
  // relay's records travel, is TAMPERED whatever else it says.
  const stripped = storedLineOf(lines[at]);
  const record = stripped.record as Record<string, unknown>;
  record.to = "user:alice";
  delete record.sig;
  delete record.batch;
  relabelled[at] = JSON.stringify(stripped);
  const bare = await verifyTranscript(
    await writeCase(join(dir, "bare"), { lines: relabelled }),
    { trust },
  );
  assert.equal(bare.code, "TAMPERED");
  assert.equal(bare.firstBadLine, at + 1);
  assert.match(bare.reason ?? "", /a stored record without its own sig and batch/);
});

Deno.test("verify: revocation is judged by date (issue 11 item 12)", async (t) => {
  const pki = await makePki({
    alg: "ed25519",
    others: ["bob"],
    notBefore: "20200101000000Z",
    notAfter: "20360101000000Z",
  });
  const dir = await Deno.makeTempDir({ prefix: "sc-revoked-" });
  const hourAgo = Date.now() - 60 * 60 * 1000;
  // A session an hour ago in which bob's records were relayed to alice.
  const before = await writeSession(pki, {
    dir: join(dir, "before"),
    messages: 8,
    startedAt: hourAgo,
    relayAuthor: pki.others[0],
  });
  const crl = await revoke(pki, pki.others[0]);
  const trust = await TrustStore.fromPem(pki.caPem, crl);
  await t.step(
    "bob revoked now: alice's older transcript stays VALID, bob's lines still his",
    async () => {
      const report = await verifyTranscript(before.logPath, { trust });
      assert.equal(report.ok, true, report.reason ?? "");
      assert.deepEqual(report.authors.map((a) => a.commonName), ["alice", "bob"]);
      assert.deepEqual(report.unattributed, []);
      assert.ok(report.crl && !report.crl.stale);
    },
  );
  await t.step(
    "records bob signed after his revocation are not attributed; the record stays VALID",
    async () => {
      const after = await writeSession(pki, {
        dir: join(dir, "after"),
        messages: 8,
        startedAt: Date.now() + 5_000,
        relayAuthor: pki.others[0],
      });
      const report = await verifyTranscript(after.logPath, { trust });
      assert.equal(report.ok, true, report.reason ?? "");
      assert.deepEqual(report.authors.map((a) => a.commonName), ["alice"]);
      assert.equal(report.unattributed.length, 2);
      assert.match(
        report.unattributed[0].reason,
        /bob's certificate is distrusted from .* before this record was signed/,
      );
    },
  );
  await t.step("a party revoked before the session time: BAD_CERT at line 1", async () => {
    const crl2 = await revoke(pki, pki.client);
    const trust2 = await TrustStore.fromPem(pki.caPem, crl2);
    const later = await writeSession(pki, {
      dir: join(dir, "later"),
      messages: 2,
      startedAt: Date.now() + 5_000,
    });
    const report = await verifyTranscript(later.logPath, { trust: trust2 });
    assert.equal(report.code, "BAD_CERT");
    assert.equal(report.firstBadLine, 1);
    const earlier = await verifyTranscript(before.logPath, { trust: trust2 });
    assert.equal(earlier.ok, true, earlier.reason ?? "");
    assert.ok(earlier.signers.client?.revokedFrom, "the report says the client was revoked later");
  });
});

Deno.test("verify: a relayed or stored record dated after its hop is STALE, the live code (TRANSCRIPT §5 step 4, interop finding 46)", async () => {
  const pki = await makePki({ alg: "ed25519", others: ["bob"] });
  const trust = await TrustStore.fromPem(pki.caPem);
  const dir = await Deno.makeTempDir({ prefix: "sc-stale-" });
  try {
    const s = await writeSession(pki, { dir, messages: 8, relayAuthor: pki.others[0] });
    const lines = (await Deno.readTextFile(s.logPath)).split("\n").slice(0, -1);
    const at = lines.findIndex((l) => l.includes('"type":"relay"'));
    for (const type of ["relay", "stored"] as const) {
      const line = type === "relay" ? JSON.parse(lines[at]) : storedLineOf(lines[at]);
      const record = type === "relay" ? line.records[0].record : line.record;
      // Ten minutes after the hop that carried it, twice the skew: the dates are checked
      // before the signature, so the edit that breaks it is not what is reported.
      record.ts = line.ts + 10 * 60 * 1000;
      if (type === "stored") record.to = "user:alice";
      const edited = [...lines];
      edited[at] = JSON.stringify(line);
      const report = await verifyTranscript(
        await writeCase(join(dir, type), { lines: edited }),
        { trust },
      );
      assert.equal(report.code, "STALE", `${type}: ${report.reason}`);
      assert.equal(report.firstBadLine, at + 1);
      assert.match(report.reason ?? "", /dated after/);
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("verify: a receipt covering a line dated after its signer's certificate expired is BAD_CERT: it was signed with a lapsed certificate (TRANSCRIPT §4.2 step 7, PROTOCOL §5.2)", async () => {
  // Every certificate valid for one hour of 2020; a session that began a minute before the end.
  const pki = await makePki({
    alg: "ed25519",
    notBefore: "20200101000000Z",
    notAfter: "20200101010000Z",
  });
  const trust = await TrustStore.fromPem(pki.caPem);
  const end = Date.UTC(2020, 0, 1, 1);
  const dir = await Deno.makeTempDir({ prefix: "sc-lapsed-" });
  try {
    // Within the skew of the expiry: still taken (the signers' clocks may differ that much).
    const inTime = await writeSession(pki, {
      dir: join(dir, "in-time"),
      messages: 4,
      startedAt: end - 60_000,
      lineGapMs: 60_000,
    });
    const ok = await verifyTranscript(inTime.logPath, { trust });
    assert.equal(ok.ok, true, ok.reason ?? "");
    assert.deepEqual(ok.confirmedBy, ["client", "server"]);
    // The last line six minutes after the expiry: both receipts were signed after it.
    const late = await writeSession(pki, {
      dir: join(dir, "late"),
      messages: 8,
      startedAt: end - 60_000,
      lineGapMs: 60_000,
    });
    const bad = await verifyTranscript(late.logPath, { trust });
    assert.equal(bad.ok, false);
    assert.equal(bad.code, "BAD_CERT", bad.reason ?? "");
    assert.equal(bad.firstBadLine, null, "the lines themselves are valid");
    assert.match(
      bad.reason ?? "",
      /receipt .*: the client's receipt covers a line dated .*: it was signed with a lapsed certificate/,
    );
    assert.deepEqual(bad.receipts.map((r) => r.code), ["BAD_CERT", "BAD_CERT"]);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("verify: a second queued or refused for one c2s line, or queued for a line not to a user, is TAMPERED (PROTOCOL §6.5, interop finding 55)", async () => {
  const pki = await makePki({ alg: "ed25519" });
  const trust = await TrustStore.fromPem(pki.caPem);
  const dir = await Deno.makeTempDir({ prefix: "sc-answers-" });
  try {
    // c2s and s2c alternate; every c2s line is a lobby line. Server notices are replaced by
    // answers with the same seqno and ts, so the order of each direction still holds.
    const s = await writeSession(pki, { dir, messages: 8 });
    const lines = (await Deno.readTextFile(s.logPath)).split("\n").slice(0, -1);
    const notices = lines.flatMap((l, i) => JSON.parse(l).dir === "s2c" ? [i] : []);
    const answer = (at: number, fields: Record<string, unknown>) => {
      const { record } = JSON.parse(lines[at]); // a notice: its seqno and ts are its record's
      return JSON.stringify({ dir: "s2c", seqno: record.seqno, ts: record.ts, ...fields });
    };
    const refused = { type: "refused", of: 1, code: "RATE_LIMITED" };
    const cases: [string, [number, Record<string, unknown>][], number | null, RegExp?][] = [
      ["one refusal", [[notices[0], refused]], null],
      ["a refusal twice", [[notices[0], refused], [notices[1], refused]], notices[1], /already/],
      ["queued for a lobby line", [[notices[0], { type: "queued", of: 1 }]], notices[0], /user/],
      [
        "refused, then queued",
        [[notices[0], refused], [notices[2], { type: "queued", of: 1 }]],
        notices[2],
      ],
      [
        "a refusal of a line not in the file",
        [[notices[0], { ...refused, of: 9 }]],
        notices[0],
        /never sent/,
      ],
    ];
    for (const [name, edits, badAt, reason] of cases) {
      const edited = [...lines];
      for (const [at, fields] of edits) edited[at] = answer(at, fields);
      const report = await verifyTranscript(
        await writeCase(join(dir, name.replaceAll(" ", "-")), { lines: edited }),
        { trust },
      );
      if (badAt === null) {
        assert.equal(report.code, null, `${name}: ${report.reason}`);
        continue;
      }
      assert.equal(report.code, "TAMPERED", name);
      assert.equal(report.firstBadLine, badAt + 1, `${name}: ${report.reason}`);
      if (reason) assert.match(report.reason ?? "", reason, name);
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("verify: relay lines carrying groups of a batch's records verify once per line and count every record (TRANSCRIPT §5, PROTOCOL §6.4)", async () => {
  const pki = await makePki({ alg: "ed25519", others: ["bob"] });
  const trust = await TrustStore.fromPem(pki.caPem);
  const dir = await Deno.makeTempDir({ prefix: "sc-groups-" });
  try {
    // bob's batches of 4 relayed as groups of 3 then 1: 4 relay lines, 8 records.
    const s = await writeSession(pki, {
      dir,
      messages: 16,
      relayAuthor: pki.others[0],
      relayGroups: { n: 4, perRelay: 3 },
    });
    const lines = (await Deno.readTextFile(s.logPath)).split("\n").slice(0, -1);
    const relays = lines.filter((l) => l.includes('"type":"relay"')).map((l) => JSON.parse(l));
    assert.deepEqual(relays.map((r) => [r.first, r.n, r.records.length, r.proof.length]), [
      [1, 4, 3, 1],
      [1, 4, 1, 2],
      [5, 4, 3, 1],
      [5, 4, 1, 2],
    ]);
    const report = await verifyTranscript(s.logPath, { trust });
    assert.equal(report.ok, true, report.reason ?? "");
    assert.deepEqual(report.messages, { c2s: 8, s2c: 8 });
    assert.deepEqual(report.authors.map((a) => [a.commonName, a.messages]), [["alice", 8], [
      "bob",
      8,
    ]]);
    assert.match(formatReport(report), /author +bob .*: 8 signed record\(s\)/);
    // The group's third record dated before the session: REPLAY names it, at its line.
    const at = lines.findIndex((l) => l.includes('"type":"relay"'));
    const old = JSON.parse(lines[at]);
    old.records[2].record.ts = JSON.parse(lines[0]).session_time - 10 * 60 * 1000;
    const edited = [...lines];
    edited[at] = JSON.stringify(old);
    const bad = await verifyTranscript(await writeCase(join(dir, "old"), { lines: edited }), {
      trust,
    });
    assert.equal(bad.code, "REPLAY");
    assert.equal(bad.firstBadLine, at + 1);
    assert.match(bad.reason ?? "", /before this session began.*\(record 3 of 3\)/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("verify: a group's records signed after their author's revocation are not attributed, each named N:J", async () => {
  const pki = await makePki({
    alg: "ed25519",
    others: ["bob"],
    notBefore: "20200101000000Z",
    notAfter: "20360101000000Z",
  });
  const dir = await Deno.makeTempDir({ prefix: "sc-groups-revoked-" });
  try {
    const crl = await revoke(pki, pki.others[0]);
    const trust = await TrustStore.fromPem(pki.caPem, crl);
    const s = await writeSession(pki, {
      dir,
      messages: 4,
      startedAt: Date.now() + 5_000,
      relayAuthor: pki.others[0],
      relayGroups: { n: 2, perRelay: 2 },
    });
    const report = await verifyTranscript(s.logPath, { trust });
    assert.equal(report.ok, true, report.reason ?? "");
    assert.deepEqual(report.authors.map((a) => a.commonName), ["alice"]);
    const line = (await Deno.readTextFile(s.logPath)).split("\n")
      .findIndex((l) => l.includes('"type":"relay"')) + 1;
    assert.deepEqual(report.unattributed.map((u) => [u.line, u.item]), [[line, 1], [line, 2]]);
    assert.match(
      formatReport(report),
      new RegExp(`unattributed line ${line}:2: bob's certificate`),
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("verify: the client's msg lines carrying groups of its batches verify once per line, count every record, and receipts end at a line boundary (TRANSCRIPT §2.2, §3.2, §4.2)", async () => {
  const pki = await makePki({ alg: "ed25519" });
  const trust = await TrustStore.fromPem(pki.caPem);
  const dir = await Deno.makeTempDir({ prefix: "sc-msg-groups-" });
  try {
    // alice's batches: 4 whole, 4 in lines of 3 and 1, then one alone: c2s 1-4, 5-7, 8, 9, 10-13,
    // 14-16 on 6 lines.
    const s = await writeSession(pki, { dir, messages: 12, c2sGroups: [[4], [3, 1], [1]] });
    const lines = (await Deno.readTextFile(s.logPath)).split("\n").slice(0, -1);
    const msgs = lines.filter((l) => l.startsWith('{"dir":"c2s"')).map((l) => JSON.parse(l));
    assert.deepEqual(msgs.map((m) => [m.first, m.n, m.records.length, m.proof.length]), [
      [1, 4, 4, 0],
      [5, 4, 3, 1],
      [5, 4, 1, 2],
      [9, 1, 1, 0],
      [10, 4, 4, 0],
      [14, 4, 3, 1],
    ]);
    const report = await verifyTranscript(s.logPath, { trust });
    assert.equal(report.ok, true, report.reason ?? "");
    assert.deepEqual(report.messages, { c2s: 16, s2c: 6 });
    assert.deepEqual(report.confirmedBy, ["client", "server"]);
    assert.deepEqual([s.ownReceipt!.c2s_count, s.peerReceipt!.c2s_count], [16, 16]);
    assert.deepEqual(report.authors.map((a) => [a.commonName, a.messages]), [["alice", 16]]);
    // A receipt over the prefix that ends with the line of c2s 5-7 (and s2c 1) confirms it.
    const prefix = await verifyTranscript(
      await writeCase(join(dir, "prefix"), { lines: lines.slice(0, 4) }),
      { trust },
    );
    assert.deepEqual(prefix.messages, { c2s: 7, s2c: 1 });
    const partial = await signReceipt(pki.client.signer, {
      sessionId: s.sessionId,
      role: "client",
      signerFingerprint: fingerprintOf(pki.client.certDer),
      state: {
        transcriptHash: fromHex(prefix.transcriptSha256!),
        transcriptSha256: prefix.transcriptSha256!,
        c2s: 7,
        s2c: 1,
      },
    });
    const upTo = join(dir, "up-to");
    await writeCase(upTo, { lines, receipt: encodeReceiptFile(partial) });
    const confirmed = await verifyTranscript(join(upTo, "case.log"), { trust });
    assert.equal(confirmed.ok, true, confirmed.reason ?? "");
    assert.deepEqual(
      [confirmed.receipts[0].status, confirmed.receipts[0].complete],
      ["valid", false],
    );
    // A receipt whose c2s_count ends inside a line (c2s 5-7) confirms no transcript.
    const inside = { ...s.ownReceipt!, c2s_count: 6 };
    const cut = join(dir, "cut");
    await writeCase(cut, { lines, receipt: encodeReceiptFile(inside) });
    const bad = await verifyTranscript(join(cut, "case.log"), { trust });
    assert.equal(bad.code, "TAMPERED");
    assert.equal(bad.firstBadLine, null);
    assert.match(bad.reason ?? "", /c2s 1\.\.6 and s2c 1\.\.6, which ends inside a line/);
    // A line's third record dated before its second: TAMPERED at that line, naming the ts.
    const at = lines.findIndex((l) => l.startsWith('{"dir":"c2s"'));
    const back = JSON.parse(lines[at]);
    back.records[2].record.ts = back.records[1].record.ts - 1;
    const edited = [...lines];
    edited[at] = JSON.stringify(back);
    const order = await verifyTranscript(await writeCase(join(dir, "ts"), { lines: edited }), {
      trust,
    });
    assert.equal(order.code, "TAMPERED");
    assert.equal(order.firstBadLine, at + 1);
    assert.match(order.reason ?? "", /c2s ts \d+ is before the previous c2s ts/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("verify: the client's records signed after its revocation are not attributed, each named N:J", async () => {
  const pki = await makePki({
    alg: "ed25519",
    notBefore: "20200101000000Z",
    notAfter: "20360101000000Z",
  });
  const dir = await Deno.makeTempDir({ prefix: "sc-msg-revoked-" });
  try {
    const crl = await revoke(pki, pki.client);
    const trust = await TrustStore.fromPem(pki.caPem, crl);
    // The session began before the revocation (second resolution: 25 s); its third c2s line,
    // two records of one batch, is dated 15 s after it.
    const s = await writeSession(pki, {
      dir,
      messages: 6,
      startedAt: Date.now() - 25_000,
      lineGapMs: 10_000,
      c2sGroups: [[2]],
    });
    const report = await verifyTranscript(s.logPath, { trust });
    assert.equal(report.ok, true, report.reason ?? "");
    assert.deepEqual(report.authors.map((a) => [a.commonName, a.messages]), [["alice", 4]]);
    const line = (await Deno.readTextFile(s.logPath)).split("\n")
      .findLastIndex((l) => l.startsWith('{"dir":"c2s"')) + 1;
    assert.deepEqual(report.unattributed.map((u) => [u.line, u.item]), [[line, 1], [line, 2]]);
    assert.match(
      formatReport(report),
      new RegExp(`unattributed line ${line}:2: alice's certificate`),
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("verify: a batch's msg line regrouped into two lines (each with the proof that fits) passes line by line; the receipts refuse it (TRANSCRIPT §5.1)", async () => {
  const pki = await makePki({ alg: "ed25519" });
  const trust = await TrustStore.fromPem(pki.caPem);
  const dir = await Deno.makeTempDir({ prefix: "sc-regroup-" });
  try {
    const s = await writeSession(pki, { dir, messages: 4, c2sGroups: [[3]] });
    const lines = (await Deno.readTextFile(s.logPath)).split("\n").slice(0, -1);
    const at = lines.findIndex((l) => l.startsWith('{"dir":"c2s"'));
    const parsed = LineShape.safeParse(JSON.parse(lines[at]));
    if (!parsed.success) throw new Error("not a line");
    const line = decodeLine(parsed.data);
    if (line.type !== "msg" || !("records" in line)) throw new Error("not a user's msg line");
    const whole = line.records.map((_, j) => wholeRecordOfGroup(line.records, line, j)!);
    const regrouped = [
      ...lines.slice(0, at),
      msgLineJson(whole.slice(0, 2)),
      msgLineJson(whole.slice(2)),
      ...lines.slice(at + 1),
    ];
    const bare = await verifyTranscript(await writeCase(join(dir, "bare"), { lines: regrouped }), {
      trust,
    });
    assert.equal(bare.ok, true, bare.reason ?? "");
    assert.deepEqual(bare.messages, { c2s: 6, s2c: 2 });
    const withReceipt = await verifyTranscript(
      await writeCase(join(dir, "receipt"), {
        lines: regrouped,
        receipt: encodeReceiptFile(s.ownReceipt!),
      }),
      { trust },
    );
    assert.equal(withReceipt.code, "TAMPERED");
    assert.match(withReceipt.reason ?? "", /does not match the recomputed/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
