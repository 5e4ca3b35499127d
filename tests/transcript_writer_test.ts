/** TranscriptWriter: file format, modes, ordering, refusals, receipts, crash behaviour. */
import { transcriptDirectory } from "../lib/transcript/file_storage.ts";
import assert from "node:assert/strict";
import { join } from "node:path";
import { randomBytes, toBase64, toHex } from "../lib/bytes.ts";
import { SecureChatError } from "../lib/errors.ts";
import {
  LOBBY,
  type MessageRecord,
  type PreparedLine,
  prepareMsg,
  sealContent,
  signBatch,
  userRecipient,
} from "../lib/message/record.ts";
import { type TranscriptHeader, TranscriptWriter } from "../lib/transcript/writer.ts";
import { makePki, msgLineOf, type Pki, writeSession } from "../testkit/transcript_fixtures.ts";

let pkiPromise: Promise<Pki> | undefined;
const pki = () => (pkiPromise ??= makePki({ alg: "ed25519" }));

async function header(role: "client" | "server" = "client"): Promise<TranscriptHeader> {
  const p = await pki();
  return {
    sessionId: toHex(randomBytes(16)),
    role,
    clientCertDer: p.client.certDer,
    serverCertDer: p.server.certDer,
    sessionTime: Date.now(),
    startedAt: Date.now(),
  };
}

/**
 * A c2s msg line of `count` records (one batch) signed by the client, from `seqno`, or an s2c
 * server notice, of session `h`.
 */
async function entry(
  h: TranscriptHeader,
  dir: "c2s" | "s2c",
  seqno: number,
  ts = Date.now(),
  count = 1,
): Promise<PreparedLine> {
  const p = await pki();
  if (dir === "s2c") {
    const { k, ct, c } = sealContent({ kind: "notice", text: "hi" });
    const to = userRecipient(p.client.name);
    return prepareMsg({ sid: h.sessionId, dir, to, seqno, ts, ct, c }, k).line;
  }
  const sealed = Array.from({ length: count }, (_, j) => {
    const { k, ct, c } = sealContent({ kind: "text", text: "hi" });
    const record: MessageRecord = { sid: h.sessionId, dir, to: LOBBY, seqno: seqno + j, ts, ct, c };
    return { record, k };
  });
  await signBatch(p.client.signer, sealed.map((s) => s.record));
  return msgLineOf(sealed.map((s) => s.record), sealed.map((s) => s.k));
}

const hasCode = (code: string) => (e: unknown) => e instanceof SecureChatError && e.code === code;

Deno.test("writer: modes 0700 / 0600, header line, one JSON line per message", async () => {
  const root = await Deno.makeTempDir();
  const dir = join(root, "transcripts");
  const h = await header();
  const w = await TranscriptWriter.create(transcriptDirectory(dir), { ...h, keepKeys: true });
  assert.ok(w.path.startsWith(dir + "/") && w.path.endsWith(`-${h.sessionId}-client.log`));
  w.append(await entry(h, "c2s", 1));
  w.append(await entry(h, "s2c", 1));
  const p = await pki();
  const own = await w.createReceipt(p.client.signer);
  const files = await w.finish(own);
  if (Deno.build.os !== "windows") {
    assert.equal((await Deno.stat(dir)).mode! & 0o777, 0o700);
    assert.equal((await Deno.stat(w.path)).mode! & 0o777, 0o600);
    assert.equal((await Deno.stat(files.receiptPath)).mode! & 0o777, 0o600);
    assert.equal((await Deno.stat(`${w.basePath}.keys`)).mode! & 0o777, 0o600);
  }
  // The content keys go to <base>.keys, one per line, never into the log.
  const keys = (await Deno.readTextFile(`${w.basePath}.keys`)).split("\n").slice(0, -1);
  assert.deepEqual(keys.map((l) => Object.keys(JSON.parse(l))), [
    ["dir", "seqno", "k"],
    ["dir", "seqno", "k"],
  ]);
  assert.equal(files.receiptPath, w.path.replace(/\.log$/, ".receipt.json"));
  assert.equal(files.peerReceiptPath, undefined);
  const text = await Deno.readTextFile(w.path);
  assert.ok(text.endsWith("\n"));
  const lines = text.split("\n").slice(0, -1).map((l) => JSON.parse(l));
  assert.equal(lines.length, 3);
  assert.deepEqual(Object.keys(lines[0]), [
    "type",
    "version",
    "protocol_version",
    "session_id",
    "role",
    "session_time",
    "started_at",
    "client_cert",
    "server_cert",
  ]);
  assert.equal(lines[0].session_id, h.sessionId);
  assert.deepEqual(Object.keys(lines[1]), ["dir", "type", "sig", "first", "n", "proof", "records"]);
  assert.deepEqual(Object.keys(lines[2]), ["dir", "type", "record"]);
  assert.ok(!text.includes('"k"'), "no content key in the log");
  const receipt = JSON.parse(await Deno.readTextFile(files.receiptPath));
  assert.deepEqual(receipt, own);
  assert.equal(receipt.signer_role, "client");
  assert.deepEqual([receipt.c2s_count, receipt.s2c_count], [1, 1]);
});

Deno.test("writer: a relay line's content keys go to .keys by item, from 1, only those it has (TRANSCRIPT §6)", async () => {
  const h = await header();
  const w = await TranscriptWriter.create(transcriptDirectory(await Deno.makeTempDir()), {
    ...h,
    keepKeys: true,
  });
  const [k1, k3] = [randomBytes(32), randomBytes(32)];
  // A relay of three records, the second without a key here (a device that did not unwrap it).
  const relay: PreparedLine = {
    dir: "s2c",
    seqno: 1,
    ts: Date.now(),
    itemKeys: [k1, undefined, k3],
    writeJson: (out) => out.text('{"dir":"s2c","type":"relay"}'),
    writeEncoding: (out) => out.u8(0x02),
  };
  w.append(await entry(h, "c2s", 1));
  w.append(relay);
  await w.abort();
  const keys = (await Deno.readTextFile(`${w.basePath}.keys`)).split("\n").slice(0, -1)
    .map((l) => JSON.parse(l));
  assert.deepEqual(keys.slice(1), [
    { dir: "s2c", seqno: 1, item: 1, k: toBase64(k1) },
    { dir: "s2c", seqno: 1, item: 3, k: toBase64(k3) },
  ]);
  assert.deepEqual(Object.keys(keys[0]), ["dir", "seqno", "k"], "a msg line's key has no item");
  assert.ok(!(await Deno.readTextFile(w.path)).includes('"k"'), "no content key in the log");
});

Deno.test("writer: a user's msg of several records takes their seqnos, its keys go to .keys by each record's own seqno (TRANSCRIPT §2.2, §6)", async () => {
  const h = await header();
  const w = await TranscriptWriter.create(transcriptDirectory(await Deno.makeTempDir()), {
    ...h,
    keepKeys: true,
  });
  const now = Date.now();
  w.append(await entry(h, "c2s", 1, now, 3));
  assert.deepEqual(w.counts, { c2s: 3, s2c: 0 });
  // The next line starts after the msg's last record: neither inside it nor past it.
  for (const seqno of [2, 3, 5]) {
    const line = await entry(h, "c2s", seqno, now);
    assert.throws(() => w.append(line), hasCode("PROTOCOL_ERROR"), `seqno ${seqno}`);
  }
  w.append(await entry(h, "c2s", 4, now, 2));
  assert.deepEqual(w.counts, { c2s: 5, s2c: 0 });
  const own = await w.createReceipt((await pki()).client.signer);
  assert.deepEqual([own.c2s_count, own.s2c_count], [5, 0]);
  await w.finish(own);
  const keys = (await Deno.readTextFile(`${w.basePath}.keys`)).split("\n").slice(0, -1)
    .map((l) => JSON.parse(l));
  assert.deepEqual(keys.map((k) => [k.dir, k.seqno, "item" in k]), [
    ["c2s", 1, false],
    ["c2s", 2, false],
    ["c2s", 3, false],
    ["c2s", 4, false],
    ["c2s", 5, false],
  ]);
  const lines = (await Deno.readTextFile(w.path)).split("\n").slice(1, -1).map((l) =>
    JSON.parse(l)
  );
  assert.deepEqual(
    lines.map((l) => l.records.map((i: { record: { seqno: number } }) => i.record.seqno)),
    [[1, 2, 3], [4, 5]],
  );
});

Deno.test("writer: appends keep call order, in one batch", async () => {
  const h = await header();
  const w = await TranscriptWriter.create(transcriptDirectory(await Deno.makeTempDir()), h);
  const entries = [];
  for (let i = 1; i <= 50; i++) {
    entries.push(await entry(h, i % 2 ? "c2s" : "s2c", Math.ceil(i / 2)));
  }
  for (const e of entries) w.append(e);
  assert.deepEqual(w.counts, { c2s: 25, s2c: 25 });
  await w.abort();
  const lines = (await Deno.readTextFile(w.path)).split("\n").slice(1, -1).map((l) =>
    JSON.parse(l)
  );
  assert.deepEqual(
    lines.map((l) => `${l.dir}${(l.record ?? l.records[0].record).seqno}`),
    entries.map((e) => `${e.dir}${e.seqno}`),
  );
});

Deno.test("writer: a seqno gap, a repeat or a backwards ts is PROTOCOL_ERROR and writes nothing", async () => {
  const h = await header();
  const w = await TranscriptWriter.create(transcriptDirectory(await Deno.makeTempDir()), h);
  const now = Date.now();
  w.append(await entry(h, "c2s", 1, now));
  for (const [seqno, ts] of [[3, now], [1, now], [2, now - 1]]) {
    const line = await entry(h, "c2s", seqno, ts);
    assert.throws(() => w.append(line), hasCode("PROTOCOL_ERROR"));
  }
  w.append(await entry(h, "c2s", 2, now)); // still usable: nothing was written
  await w.abort();
  assert.equal((await Deno.readTextFile(w.path)).split("\n").length, 4);
});

Deno.test("writer: an unusable directory is TRANSCRIPT_IO with a clear message", async () => {
  const root = await Deno.makeTempDir();
  await Deno.writeTextFile(join(root, "file"), "x");
  await assert.rejects(
    TranscriptWriter.create(transcriptDirectory(join(root, "file", "sub")), await header()),
    (e: unknown) =>
      hasCode("TRANSCRIPT_IO")(e) &&
      /cannot create transcript directory/.test((e as Error).message),
  );
});

Deno.test("writer: the same session cannot be opened twice (no silent overwrite)", async () => {
  const dir = await Deno.makeTempDir();
  const h = await header();
  const w = await TranscriptWriter.create(transcriptDirectory(dir), h);
  await assert.rejects(
    TranscriptWriter.create(transcriptDirectory(dir), h),
    hasCode("TRANSCRIPT_IO"),
  );
  await w.abort();
});

Deno.test("writer: after abort, append fails and abort is idempotent", async () => {
  const h = await header();
  const w = await TranscriptWriter.create(transcriptDirectory(await Deno.makeTempDir()), h);
  await w.abort();
  await w.abort();
  const line = await entry(h, "c2s", 1);
  assert.throws(() => w.append(line), hasCode("TRANSCRIPT_IO"));
});

Deno.test("writer: own receipt with a key that is not ours is refused", async () => {
  const w = await TranscriptWriter.create(
    transcriptDirectory(await Deno.makeTempDir()),
    await header("client"),
  );
  await assert.rejects(w.createReceipt((await pki()).server.signer), hasCode("INTERNAL"));
  await w.abort();
});

Deno.test("writer: both sides compute the same hash whatever the interleaving", async () => {
  const s = await writeSession(await pki(), { dir: await Deno.makeTempDir(), messages: 11 });
  assert.equal(s.ownReceipt!.transcript_sha256, s.peerReceipt!.transcript_sha256);
  assert.equal(s.peerReceipt!.signer_role, "server");
  assert.deepEqual([s.peerReceipt!.c2s_count, s.peerReceipt!.s2c_count], [6, 5]);
  const own = (await Deno.readTextFile(s.logPath)).split("\n");
  const theirs = (await Deno.readTextFile(s.peerLogPath!)).split("\n");
  assert.notDeepEqual(own.slice(1), theirs.slice(1), "arrival order differs between the sides");
});

Deno.test("writer: acceptPeerReceipt refuses bad peer receipts with the right code", async () => {
  const p = await pki();
  const h = await header("client");
  const client = await TranscriptWriter.create(transcriptDirectory(await Deno.makeTempDir()), h);
  const server = await TranscriptWriter.create(transcriptDirectory(await Deno.makeTempDir()), {
    ...h,
    role: "server",
  });
  const other = await TranscriptWriter.create(transcriptDirectory(await Deno.makeTempDir()), {
    ...(await header("server")),
  });
  for (const e of [await entry(h, "c2s", 1), await entry(h, "s2c", 1)]) {
    client.append(e);
    server.append(e);
  }
  const good = await server.createReceipt(p.server.signer);
  const ownReceipt = await client.createReceipt(p.client.signer);
  const cases: [string, unknown, Uint8Array, string][] = [
    ["malformed", { type: "receipt" }, p.server.certDer, "TAMPERED"],
    ["other session", await other.createReceipt(p.server.signer), p.server.certDer, "TAMPERED"],
    ["own receipt echoed", ownReceipt, p.client.certDer, "BAD_CERT"],
    [
      "altered sig",
      { ...good, sig: (good.sig[0] === "A" ? "B" : "A") + good.sig.slice(1) },
      p.server.certDer,
      "SIG_FAIL",
    ],
    ["other hash", { ...good, transcript_sha256: "0".repeat(64) }, p.server.certDer, "TAMPERED"],
    ["more messages claimed", { ...good, c2s_count: 2 }, p.server.certDer, "TAMPERED"],
    ["fewer messages claimed", { ...good, c2s_count: 0 }, p.server.certDer, "TAMPERED"],
    ["the client's role claimed", { ...good, signer_role: "client" }, p.server.certDer, "TAMPERED"],
  ];
  for (const [name, receipt, cert, code] of cases) {
    await assert.rejects(client.acceptPeerReceipt(receipt, cert), hasCode(code), name);
  }
  const accepted = await client.acceptPeerReceipt(
    JSON.parse(JSON.stringify(good)),
    p.server.certDer,
  );
  const files = await client.finish(ownReceipt, accepted);
  assert.ok(files.peerReceiptPath?.endsWith(".peer-receipt.json"));
  await server.abort();
  await other.abort();
});

Deno.test("writer: a process killed mid-session leaves only whole lines (or a torn last one)", async () => {
  const p = await pki();
  const dir = await Deno.makeTempDir();
  const keyFile = join(dir, "client.pk8");
  await Deno.writeFile(keyFile, p.client.pkcs8);
  const h = await header();
  const script = `
    import { importSigningKeyPkcs8 } from "./lib/crypto/signature.ts";
    import { MAX_CT_BYTES, prepareUserMsg, sealPlaintext, signBatch } from "./lib/message/record.ts";
    import { TranscriptWriter } from "./lib/transcript/writer.ts";
    import { endTurn, spendTurn } from "./lib/turn.ts";
    import { transcriptDirectory } from "./lib/transcript/file_storage.ts";
    const key = await importSigningKeyPkcs8(await Deno.readFile(${JSON.stringify(keyFile)}));
    const w = await TranscriptWriter.create(transcriptDirectory(${
    JSON.stringify(join(dir, "t"))
  }), {
      sessionId: "${h.sessionId}", role: "client", startedAt: ${h.startedAt},
      sessionTime: ${h.sessionTime},
      clientCertDer: Uint8Array.from(${JSON.stringify(Array.from(p.client.certDer))}),
      serverCertDer: Uint8Array.from(${JSON.stringify(Array.from(p.server.certDer))}),
    });
    console.log(w.path);
    // The largest body a user's record may carry (its ct is MAX_CT_BYTES with the AEAD's
    // 16-byte tag, PROTOCOL §6.1): long lines, so the kill likely lands mid-write.
    const body = crypto.getRandomValues(new Uint8Array(MAX_CT_BYTES - 16));
    for (let seq = 1; ; seq++) {
      const { k, ct, c } = sealPlaintext(body);
      const record = { sid: "${h.sessionId}", dir: "c2s", to: "lobby", seqno: seq, ts: Date.now(), ct, c };
      await signBatch(key, [record]);
      w.append(prepareUserMsg([{ record, k }]).line);
      // As ChatSession.send does: without a turn of the event loop now and then, a
      // synchronous signature (Ed25519) would never let the writer's file writes run.
      if (spendTurn()) await endTurn();
    }`;
  const child = new Deno.Command(Deno.execPath(), {
    args: ["eval", "--quiet", script],
    cwd: new URL("..", import.meta.url).pathname,
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const reader = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
  const first = await reader.read();
  const path = (first.value ?? "").trim();
  // Kill it once a few lines are on disk, whatever the machine's speed: mid-write, likely.
  const deadline = Date.now() + 20_000;
  while (countNewlines(await Deno.readFile(path)) < 3) {
    assert.ok(Date.now() < deadline, "the child wrote 3 lines within 20 s");
    await new Promise((r) => setTimeout(r, 10));
  }
  child.kill("SIGKILL");
  await child.status;
  await reader.cancel();
  await child.stderr.cancel();
  const bytes = await Deno.readFile(path);
  const text = new TextDecoder().decode(bytes);
  const parts = text.split("\n");
  const torn = parts.pop()!; // "" if the file ends with a newline
  assert.ok(parts.length >= 3, `the child wrote some lines (${parts.length})`);
  for (const [i, line] of parts.entries()) {
    JSON.parse(line), assert.ok(line.length > 0, `line ${i + 1}`);
  }
  if (torn !== "") assert.throws(() => JSON.parse(torn));
  // verify agrees: every whole line is valid, a torn tail is reported as such.
  const { TrustStore } = await import("../lib/pki/validate.ts");
  const { verifyTranscript } = await import("../lib/transcript/verify.ts");
  const report = await verifyTranscript(path, { trust: await TrustStore.fromPem(p.caPem) });
  if (torn === "") {
    assert.equal(report.ok, true, report.reason ?? "");
  } else {
    assert.equal(report.code, "TAMPERED");
    assert.equal(report.firstBadLine, parts.length + 1);
    assert.match(report.reason ?? "", /truncated final line/);
  }
  assert.equal(report.messages.c2s, parts.length - 1);
});

Deno.test({
  name: "writer: an idle transcript holds no file descriptor (closed after a second of quiet)",
  ignore: Deno.build.os !== "linux", // counts /proc/self/fd
  fn: async () => {
    const h = await header();
    const w = await TranscriptWriter.create(transcriptDirectory(await Deno.makeTempDir()), h);
    // Descriptors of this process open on this log (others may come and go meanwhile).
    const onLog = () =>
      [...Deno.readDirSync("/proc/self/fd")].filter((e) => {
        try {
          return Deno.readLinkSync(`/proc/self/fd/${e.name}`) === w.path;
        } catch {
          return false; // closed while we looked
        }
      }).length;
    w.append(await entry(h, "c2s", 1));
    await new Promise((r) => setTimeout(r, 50));
    assert.equal(onLog(), 1, "the log is open while lines flow");
    await new Promise((r) => setTimeout(r, 1200));
    assert.equal(onLog(), 0, "closed when idle");
    w.append(await entry(h, "c2s", 2)); // reopened on demand
    await w.abort();
    assert.equal((await Deno.readTextFile(w.path)).split("\n").length, 4);
    assert.equal(onLog(), 0);
  },
});

function countNewlines(bytes: Uint8Array): number {
  return bytes.reduce((n, b) => n + (b === 0x0a ? 1 : 0), 0);
}
