/**
 * `securechat verify` through the real CLI (main.ts in a subprocess): reports,
 * exit statuses, and the tamper table (code AND line number on stderr).
 */
import assert from "node:assert/strict";
import { toBase64 } from "../lib/bytes.ts";
import {
  encodeRecord,
  LOBBY,
  type MessageRecord,
  sealContent,
  signBatch,
} from "../lib/message/record.ts";
import { runCli } from "../testkit/cli.ts";
import {
  TAMPER_CASES,
  type TamperBase,
  writeCase,
  writeSession,
} from "../testkit/transcript_fixtures.ts";
import { tamperBase } from "./helpers/tamper_base.ts";

Deno.test("cli verify: valid session, receipts found beside the log, human report", async () => {
  const b = await tamperBase();
  const r = await runCli(["verify", b.session.logPath, "--ca", b.pki.caPath]);
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stderr, /using .*\.receipt\.json \(found beside the log\)/);
  assert.match(r.stdout, /messages +8 checked: c2s 4 \(client→server\), s2c 4 \(server→client\)/);
  assert.match(r.stdout, new RegExp(`client +alice +sha256:${b.session.ownReceipt!.signer}`));
  assert.match(r.stdout, /server +localhost +sha256:[0-9a-f]{64}/);
  assert.match(
    r.stdout,
    /receipt .*receipt\.json \(found beside the log\): VALID, signed by the client alice/,
  );
  assert.match(
    r.stdout,
    /peer-receipt\.json \(found beside the log\): VALID, signed by the server/,
  );
  assert.match(r.stdout, /time span/);
  assert.match(r.stdout, /ciphertext and commitments only/);
  assert.match(r.stdout, /the client confirms c2s 1\.\.4, s2c 1\.\.4 \(every line\)/);
  assert.match(r.stdout, /result +VALID, confirmed by both/);
});

Deno.test("cli verify: the peer's receipt named explicitly, --json report", async () => {
  const b = await tamperBase();
  const r = await runCli([
    "verify",
    b.session.peerLogPath!,
    b.session.receiptPath!,
    "--ca",
    b.pki.caPath,
    "--json",
  ]);
  assert.equal(r.code, 0, r.stderr);
  const report = JSON.parse(r.stdout);
  assert.equal(report.ok, true);
  assert.equal(report.recordedBy, "server");
  assert.deepEqual(report.confirmedBy, ["client"]);
  assert.deepEqual(report.messages, { c2s: 4, s2c: 4 });
  assert.equal(report.receipts[0].signer, "client");
  assert.equal(report.receipts[0].autodetected, false);
  assert.equal(report.ciphertextOnly, true);
});

Deno.test("cli verify: no receipt says so plainly and still exits 0", async () => {
  const b = await tamperBase();
  const s = await writeSession(b.pki, { dir: await Deno.makeTempDir(), receipts: "none" });
  const r = await runCli(["verify", s.logPath, "--ca", b.pki.caPath]);
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, /receipt +NONE: no receipt confirms this record/);
  assert.match(r.stdout, /result +VALID \(lines only: unconfirmed, no receipt\)/);
});

/** `verify --reveal 4` of the base session: the opening's path, in `dir`. */
async function revealLine4(b: TamperBase, dir: string): Promise<string> {
  const opening = `${dir}/line4.json`;
  const made = await runCli([
    "verify",
    b.session.logPath,
    "--ca",
    b.pki.caPath,
    "--reveal",
    "4",
    "--out",
    opening,
  ]);
  assert.equal(made.code, 0, made.stderr);
  return opening;
}

Deno.test("cli verify --reveal / --opening: one line proven to a third party with only the CA", async () => {
  const b = await tamperBase();
  const dir = await Deno.makeTempDir({ prefix: "sc-opening-" });
  const opening = await revealLine4(b, dir);
  const text = await Deno.readTextFile(opening);
  const o = JSON.parse(text);
  assert.deepEqual(Object.keys(o), ["type", "version", "cert", "record", "k"]);
  assert.equal(o.record.seqno, 2);
  assert.equal((text.match(/"k"/g) ?? []).length, 1, "one content key, no other line's");
  assert.equal((await Deno.stat(opening)).mode! & 0o777, 0o600);
  const checked = await runCli(["verify", "--opening", opening, "--ca", b.pki.caPath]);
  assert.equal(checked.code, 0, checked.stderr);
  assert.match(checked.stdout, /opening +VALID/);
  assert.match(checked.stdout, /said +message c2s 2/);
  assert.match(checked.stdout, new RegExp(`session ${b.session.sessionId}, c2s seqno 2, to lobby`));
  // A different key (claiming other content) or a readdressed record does not check.
  const forged = [
    [
      "another key",
      { ...o, k: btoa(String.fromCharCode(...new Uint8Array(32).fill(7))) },
      "DECRYPT_FAIL",
    ],
    ["readdressed", { ...o, record: { ...o.record, to: "user:carol" } }, "SIG_FAIL"],
    ["duplicate member", null, "TAMPERED"],
  ] as const;
  for (const [name, value, code] of forged) {
    const path = `${dir}/${name}.json`;
    await Deno.writeTextFile(
      path,
      value ? JSON.stringify(value) : text.replace('"version": 3,', '"version": 3, "version": 3,'),
    );
    const r = await runCli(["verify", "--opening", path, "--ca", b.pki.caPath]);
    assert.equal(r.code, 1, `${name}: ${r.stdout}${r.stderr}`);
    assert.match(r.stderr, new RegExp(`error: ${code}\\b`), name);
  }
  // The server's notices are not signed: they are proven by its receipt, not by an opening.
  const notice = await runCli(["verify", b.session.logPath, "--ca", b.pki.caPath, "--reveal", "3"]);
  assert.notEqual(notice.code, 0);
  assert.match(notice.stderr, /not a signed record/);
});

/** What must never reach a terminal raw: C0 (but LF), DEL, C1, a zero-width space, a bidi override. */
// deno-lint-ignore no-control-regex -- finding control characters is the point
const RAW_ON_TERMINAL = /[\u0000-\u0009\u000b-\u001f\u007f-\u009f\u200b\u202e]/u;

Deno.test("cli verify --opening --json: an author's control and bidi characters reach the terminal escaped", async () => {
  // An opening is a file anyone may hand you, its text the author's: the JSON report must be
  // as safe on a terminal as the human one (issue 11 item 1), and still parse to the same text.
  const b = await tamperBase();
  const dir = await Deno.makeTempDir({ prefix: "sc-opening-" });
  const text = "ok\u202e\u009b31mtxet\u200b\u001b]0;owned\u0007";
  const { k, ct, c } = sealContent({ kind: "text", text });
  const record: MessageRecord = {
    sid: b.session.sessionId,
    dir: "c2s",
    to: LOBBY,
    seqno: 1,
    ts: Date.now(),
    ct,
    c,
  };
  await signBatch(b.pki.client.signer, [record]);
  const path = `${dir}/hostile.json`;
  const opening = {
    type: "securechat-opening",
    version: 3,
    cert: toBase64(b.pki.client.certDer),
    record: encodeRecord(record),
    k: toBase64(k),
  };
  await Deno.writeTextFile(path, JSON.stringify(opening));
  for (const json of [false, true]) {
    const r = await runCli([
      "verify",
      "--opening",
      path,
      "--ca",
      b.pki.caPath,
      ...(json ? ["--json"] : []),
    ]);
    assert.equal(r.code, 0, r.stderr);
    assert.doesNotMatch(r.stdout, RAW_ON_TERMINAL, `--json ${json}`);
    if (json) assert.equal(JSON.parse(r.stdout).body.text, text);
  }
});

Deno.test("cli verify: usage and I/O errors exit 2", async () => {
  const b = await tamperBase();
  const missingLog = await runCli(["verify", "/nonexistent/s.log", "--ca", b.pki.caPath]);
  assert.equal(missingLog.code, 2);
  assert.match(missingLog.stderr, /IO_ERROR: cannot read transcript/);
  const missingCa = await runCli(["verify", b.session.logPath, "--ca", "/nonexistent/ca.pem"]);
  assert.equal(missingCa.code, 2, missingCa.stderr);
  const missingReceipt = await runCli([
    "verify",
    b.session.logPath,
    "/nonexistent/r.json",
    "--ca",
    b.pki.caPath,
  ]);
  assert.equal(missingReceipt.code, 2, missingReceipt.stderr);
  const noArgs = await runCli(["verify"]);
  assert.equal(noArgs.code, 2);
  const extra = await runCli(["verify", "a", "b", "c"]);
  assert.equal(extra.code, 2);
});

Deno.test("cli verify: a transcript or opening of a format this verifier cannot read is UNSUPPORTED_FORMAT, exit 2, naming the format (interop finding 72)", async () => {
  // An honest file of an older (or a newer) format is no evidence of tampering: a script that
  // acts on the exit status or the code must be able to tell "cannot judge" from "forged".
  const b = await tamperBase();
  const dir = await Deno.makeTempDir({ prefix: "sc-format-" });
  const lines = (await Deno.readTextFile(b.session.logPath)).split("\n");
  // The format number is not signed (review9 R9-6): of an earlier one, verify names the
  // securechat that judges it, so "not evidence of tampering" is all it claims; a later one may
  // be an edited format-7 header, and verify says only that.
  const earlier = /not evidence of tampering/;
  const later = /newer than this securechat, or a header edited to say so: .*not signed/;
  const cases = [
    [
      6,
      /transcript format 6 .*before a group's line hashed its digest.*sessions 16 to 21.*reads format 7/,
      earlier,
    ],
    [
      5,
      /transcript format 5 .*before a user's msg carried a group.*session 15.*reads format 7/,
      earlier,
    ],
    [
      4,
      /transcript format 4 .*before relays carried groups.*sessions 11 to 14.*reads format 7/,
      earlier,
    ],
    [
      3,
      /transcript format 3 .*before the ChaCha20-Poly1305 content cipher.*reads format 7/,
      earlier,
    ],
    [2, /transcript format 2 .*before signed batches.*reads format 7/, earlier],
    [1, /transcript format 1 .*protocol v1.*reads format 7/, earlier],
    [8, /transcript format 8 .*reads format 7/, later],
    [99, /transcript format 99 .*reads format 7/, later],
  ] as const;
  for (const [version, reason, claim] of cases) {
    const log = `${dir}/format${version}.log`;
    const header = { ...JSON.parse(lines[0]), version };
    await Deno.writeTextFile(log, [JSON.stringify(header), ...lines.slice(1)].join("\n"));
    const r = await runCli(["verify", log, "--ca", b.pki.caPath]);
    assert.equal(r.code, 2, `format ${version}: ${r.stdout}${r.stderr}`);
    assert.match(r.stderr, /securechat: error: UNSUPPORTED_FORMAT: format\d+\.log: line 1: /);
    assert.match(r.stderr, reason);
    assert.match(r.stderr, claim);
    if (claim === later) assert.doesNotMatch(r.stdout + r.stderr, /not evidence/);
    assert.match(r.stderr, /hint: check the file with a securechat that reads its format/);
    assert.doesNotMatch(r.stdout + r.stderr, /TAMPERED|INVALID/, `format ${version}`);
    assert.match(r.stdout, /result +NOT CHECKED UNSUPPORTED_FORMAT/);
    const json = await runCli(["verify", log, "--ca", b.pki.caPath, "--json"]);
    assert.equal(json.code, 2);
    const report = JSON.parse(json.stdout);
    assert.equal(report.ok, false);
    assert.equal(report.code, "UNSUPPORTED_FORMAT");
    assert.equal(report.firstBadLine, 1);
  }
  // A version that is no format at all is an edited header, as before.
  const bad = `${dir}/bad.log`;
  const badHeader = { ...JSON.parse(lines[0]), version: "4" };
  await Deno.writeTextFile(bad, [JSON.stringify(badHeader), ...lines.slice(1)].join("\n"));
  const rb = await runCli(["verify", bad, "--ca", b.pki.caPath]);
  assert.equal(rb.code, 1, rb.stdout + rb.stderr);
  assert.match(rb.stderr, /error: TAMPERED: bad\.log: line 1: /);

  // An opening of format 2 (before the ChaCha20-Poly1305 content cipher) or 1 (before signed
  // batches), or of a newer one.
  const o = JSON.parse(await Deno.readTextFile(await revealLine4(b, dir)));
  for (
    const [version, reason] of [
      [2, /opening format 2 .*before the ChaCha20-Poly1305 content cipher.*reads format 3/],
      [1, /opening format 1 .*before signed batches.*reads format 3/],
      [4, /opening format 4 \(newer than this securechat, or a header edited .*reads format 3/],
    ] as const
  ) {
    const path = `${dir}/opening${version}.json`;
    await Deno.writeTextFile(path, JSON.stringify({ ...o, version }));
    const r = await runCli(["verify", "--opening", path, "--ca", b.pki.caPath]);
    assert.equal(r.code, 2, `opening format ${version}: ${r.stdout}${r.stderr}`);
    assert.match(r.stderr, /securechat: error: UNSUPPORTED_FORMAT: /);
    assert.match(r.stderr, reason);
    if (version > 3) assert.doesNotMatch(r.stderr, /not evidence/);
  }
});

for (const c of TAMPER_CASES) {
  Deno.test(`cli verify rejects: ${c.name} → exit 1, ${c.code}`, async () => {
    const b = await tamperBase();
    const dir = await Deno.makeTempDir({ prefix: "sc-cli-case-" });
    const logPath = await writeCase(dir, await c.make(b));
    const r = await runCli(["verify", logPath, "--ca", b.pki.caPath]);
    assert.equal(r.code, 1, r.stdout + r.stderr);
    const where = c.line === null ? "receipt " : `line ${c.line}: `;
    assert.match(r.stderr, new RegExp(`securechat: error: ${c.code}: case\\.log: ${where}`));
    assert.match(r.stderr, c.reason);
    assert.match(r.stdout, /result +INVALID/);
    const json = await runCli(["verify", logPath, "--ca", b.pki.caPath, "--json"]);
    assert.equal(json.code, 1);
    const report = JSON.parse(json.stdout);
    assert.equal(report.code, c.code);
    assert.equal(report.firstBadLine, c.line);
    assert.equal(report.ok, false);
  });
}

Deno.test("cli verify --reveal N:J: one record of a relay line's group opens, made whole; N alone on a group, an item it lacks, or a .keys line naming no record of it do not (TRANSCRIPT §6)", async () => {
  const vectors = new URL("./vectors/transcript/", import.meta.url).pathname;
  const dir = await Deno.makeTempDir({ prefix: "sc-reveal-group-" });
  try {
    // The golden transcript without its receipts (verify finds none beside it) and its keys.
    await Deno.copyFile(`${vectors}golden.log`, `${dir}/golden.log`);
    await Deno.copyFile(`${vectors}golden.keys`, `${dir}/golden.keys`);
    const ca = `${vectors}golden_ca.pem`;
    const log = `${dir}/golden.log`;
    const lines = (await Deno.readTextFile(log)).split("\n");
    const group = lines.findIndex((l) => l.includes('"type":"relay"')) + 1;
    const relay = JSON.parse(lines[group - 1]);
    assert.equal(relay.records.length, 2, "the golden's first relay carries two records");
    const reveal = (target: string, ...more: string[]) =>
      runCli(["verify", log, "--ca", ca, "--reveal", target, ...more]);

    const opening = `${dir}/item2.json`;
    const made = await reveal(`${group}:2`, "--out", opening);
    assert.equal(made.code, 0, made.stderr);
    assert.match(made.stderr, new RegExp(`opening of line ${group}:2 written to`));
    const o = JSON.parse(await Deno.readTextFile(opening));
    // The record as bob signed it: the line's sig, its place and the path derived from the group.
    assert.equal(o.record.sig, relay.sig);
    assert.deepEqual([o.record.batch.i, o.record.batch.n], [1, 3]);
    assert.equal(o.record.batch.path.length, 2);
    assert.deepEqual(
      { ...o.record, sig: undefined, batch: undefined },
      { ...relay.records[1].record, sig: undefined, batch: undefined },
    );
    const checked = await runCli(["verify", "--opening", opening, "--ca", ca]);
    assert.equal(checked.code, 0, checked.stderr);
    assert.match(checked.stdout, /said +relayed 2/);

    const whole = await reveal(`${group}`);
    assert.equal(whole.code, 2, whole.stderr);
    assert.match(whole.stderr, /USAGE: .*is a relay of 2 records: name one with --reveal \d+:J/);
    const beyond = await reveal(`${group}:3`);
    assert.equal(beyond.code, 2, beyond.stderr);
    assert.match(beyond.stderr, /there is no record 3/);
    const malformed = await reveal(`${group}:1:1`);
    assert.equal(malformed.code, 2, malformed.stderr);
    assert.match(malformed.stderr, /--reveal takes LINE or LINE:ITEM/);

    // A key about that line naming an item it does not hold: the keys file was edited.
    const keys = await Deno.readTextFile(`${dir}/golden.keys`);
    const seqno = relay.seqno;
    await Deno.writeTextFile(
      `${dir}/golden.keys`,
      keys.replace(`"seqno":${seqno},"item":1,`, `"seqno":${seqno},"item":7,`),
    );
    const edited = await reveal(`${group}:2`);
    assert.equal(edited.code, 1, edited.stderr);
    assert.match(edited.stderr, /TAMPERED: .*names item 7, but that line holds a relay of 2/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("cli verify --reveal N:J: one record of the client's msg line opens, made whole, its key found by its own c2s seqno; N alone on a msg of several, or a c2s key naming an item, do not (TRANSCRIPT §6)", async () => {
  const vectors = new URL("./vectors/transcript/", import.meta.url).pathname;
  const dir = await Deno.makeTempDir({ prefix: "sc-reveal-msg-" });
  try {
    await Deno.copyFile(`${vectors}golden.log`, `${dir}/golden.log`);
    await Deno.copyFile(`${vectors}golden.keys`, `${dir}/golden.keys`);
    const ca = `${vectors}golden_ca.pem`;
    const log = `${dir}/golden.log`;
    const lines = (await Deno.readTextFile(log)).split("\n");
    // The golden's first msg line: alice's batch of 3 whole (c2s 1-3, an empty proof).
    const line = lines.findIndex((l) => l.startsWith('{"dir":"c2s","type":"msg"')) + 1;
    const msg = JSON.parse(lines[line - 1]);
    assert.deepEqual([msg.records.length, msg.proof.length], [3, 0]);
    const reveal = (target: string, ...more: string[]) =>
      runCli(["verify", log, "--ca", ca, "--reveal", target, ...more]);

    const opening = `${dir}/c2s2.json`;
    const made = await reveal(`${line}:2`, "--out", opening);
    assert.equal(made.code, 0, made.stderr);
    const o = JSON.parse(await Deno.readTextFile(opening));
    assert.equal(o.record.sig, msg.sig);
    assert.deepEqual([o.record.seqno, o.record.batch.i, o.record.batch.n], [2, 1, 3]);
    assert.equal(o.record.batch.path.length, 2);
    const checked = await runCli(["verify", "--opening", opening, "--ca", ca]);
    assert.equal(checked.code, 0, checked.stderr);
    assert.match(checked.stdout, /said +message c2s 2/);

    const whole = await reveal(`${line}`);
    assert.equal(whole.code, 2, whole.stderr);
    assert.match(whole.stderr, /USAGE: .*is a msg line of 3 records: name one with --reveal \d+:J/);
    // A c2s key names its record by its own seqno: one with an item was edited in.
    const keys = await Deno.readTextFile(`${dir}/golden.keys`);
    await Deno.writeTextFile(
      `${dir}/golden.keys`,
      keys.replace('{"dir":"c2s","seqno":2,', '{"dir":"c2s","seqno":2,"item":2,'),
    );
    const edited = await reveal(`${line}:2`);
    assert.equal(edited.code, 1, edited.stderr);
    assert.match(
      edited.stderr,
      /TAMPERED: .*names item 2, but that line holds a record of the client's/,
    );
    // A line of the keys file that is no key line, about any line: the file was edited.
    for (const junk of ["not json", '{"dir":"c2s","seqno":9,"k":"AAAA"}', "[]"]) {
      await Deno.writeTextFile(`${dir}/golden.keys`, `${keys}${junk}\n`);
      const broken = await reveal(`${line}:2`);
      assert.equal(broken.code, 1, broken.stderr);
      assert.match(broken.stderr, /TAMPERED: .*golden\.keys: line 17 is not a key line/, junk);
    }
    // A torn final line (a writer killed mid-write) is no key and no fault.
    await Deno.writeTextFile(`${dir}/golden.keys`, `${keys}{"dir":"c2s","se`);
    const torn = await reveal(`${line}:2`, "--out", `${dir}/again.json`);
    assert.equal(torn.code, 0, torn.stderr);
    // A line the server wrote is no signed record, nor is a record with no key here.
    const notice = lines.findIndex((l) => l.startsWith('{"dir":"s2c","type":"msg"')) + 1;
    const server = await reveal(`${notice}`);
    assert.equal(server.code, 1, server.stderr);
    assert.match(server.stderr, /INVALID_INPUT: .*is not a signed record/);
    await Deno.writeTextFile(
      `${dir}/golden.keys`,
      keys.split("\n").filter((l) => !l.startsWith('{"dir":"c2s","seqno":3,')).join("\n"),
    );
    const keyless = await reveal(`${line}:3`);
    assert.equal(keyless.code, 1, keyless.stderr);
    assert.match(keyless.stderr, /INVALID_INPUT: no key for c2s 3/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
