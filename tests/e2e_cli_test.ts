/**
 * Issue 13 through the real CLI: private lines travel end to end. The server's own
 * writings (transcripts, database, logs) hold no plaintext of them, and an auditor who
 * decrypts every frame with `serve --keylog` finds them still ciphertext — while the
 * same decrypter does read what the server may read (a lobby line), so it is not blind.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { fromBase64 } from "../lib/bytes.ts";
import { decodeRecord, openContent } from "../lib/message/record.ts";
import { loadCaSigner } from "../lib/ca/ca.ts";
import { formatFingerprint } from "../lib/pki/describe.ts";
import { revokeCertificates } from "../lib/ca/revoke.ts";
import { fingerprintOf } from "../lib/pki/describe.ts";
import { makePki } from "../testkit/pki.ts";
import { runCli } from "../testkit/cli.ts";
import { LiveClient, liveLogins, registerUser, ServerProcess } from "../testkit/server_process.ts";
import { FrameProxy } from "./helpers/proxy.ts";
import { decryptWithKeylog } from "./helpers/keylog.ts";
import { assertNoCanaries } from "./helpers/canaries.ts";
import { verifiedReport } from "./helpers/verified.ts";

const PASSWORDS = { alice: "alice-password-1", bob: "bob-password-12", carol: "carol-password-1" };

Deno.test("e2e: private and lobby lines are ciphertext to the server, in its files, logs and every frame it sent", async () => {
  const pki = await makePki(["alice", "bob", "carol"], "ed25519");
  const workDir = await Deno.makeTempDir({ prefix: "securechat-e2e-" });
  const keylog = join(workDir, "keys.log");
  const server = await ServerProcess.start({
    pkiDir: pki.dir,
    workDir,
    args: ["--keylog", keylog],
  });
  const proxy = FrameProxy.start(server.port);
  const clients: LiveClient[] = [];
  const run = crypto.randomUUID().slice(0, 8);
  const privateCanaries = [`canary-one-${run}`, `canary-two-${run}`, `canary-three-${run}`];
  const lobbyCanaries = [`lobby-one-${run}`, `lobby-two-${run}`, `lobby-three-${run}`];
  const canaries = [...privateCanaries, ...lobbyCanaries];
  try {
    assert.ok(
      server.otherOutput.some((l) => l.includes("WARNING: --keylog is on")),
      "serve warns loudly when the key log is on",
    );
    for (const user of ["alice", "bob", "carol"] as const) {
      await registerUser(server, pki.dir, user, PASSWORDS[user]);
    }
    const logins = liveLogins({
      pkiDir: pki.dir,
      workDir: pki.dir,
      password: (user) => PASSWORDS[user as keyof typeof PASSWORDS],
    }, clients);
    const bob = await logins("bob", proxy.port);
    const alice = await logins("alice", proxy.port);
    const carol = await logins("carol", proxy.port);

    // A first contact (bob's stored prekeys), an answer (a ratchet step), and one more line.
    await alice.send(`/msg bob ${privateCanaries[0]}`);
    await bob.waitForLine((l) => l.includes(`alice (private) ✓ ${privateCanaries[0]}`));
    await bob.send(`/msg alice ${privateCanaries[1]}`);
    await alice.waitForLine((l) => l.includes(`bob (private) ✓ ${privateCanaries[1]}`));
    await alice.send(`/msg bob ${privateCanaries[2]}`);
    await bob.waitForLine((l) => l.includes(`alice (private) ✓ ${privateCanaries[2]}`));
    // The lobby under sender keys (PROTOCOL §12.5), each author in turn.
    const authors = [alice, bob, carol];
    const names = ["alice", "bob", "carol"];
    for (const [i, line] of lobbyCanaries.entries()) {
      await authors[i].send(line);
      for (const [j, reader] of authors.entries()) {
        if (j !== i) await reader.waitForLine((l) => l.includes(`${names[i]} ✓ ${line}`));
      }
    }
    for (const c of clients) {
      const end = await c.end();
      assert.equal(end.code, 0);
      assert.ok(!end.stderr.includes("readable by the server"), end.stderr);
    }
    await server.stop();

    // 1. Everything the server process wrote: its files (transcripts, the database and its
    //    journal, the key log) and its log output.
    const output = [...server.logs.map((e) => JSON.stringify(e)), ...server.otherOutput].join("\n");
    const written = await assertNoCanaries(workDir, output, canaries);
    assert.ok(written.some((p) => p.endsWith(".log") && p.includes("transcripts")));

    // 2. Every frame, both ways, decrypted with the key log.
    const opened = decryptWithKeylog(proxy.frames, await Deno.readTextFile(keylog));
    const readable: string[] = [];
    let endToEnd = 0;
    let lobbyEndToEnd = 0;
    for (const { message } of opened) {
      if (message.type !== "msg" && message.type !== "relay") continue;
      // A user's msg and a relay carry items of a record and its key's carrier (PROTOCOL §6.3,
      // §6.4); the server's msg one record and its key.
      const items = "records" in message ? message.records as Record<string, unknown>[] : [message];
      for (const item of items) {
        const record = decodeRecord(item.record as never);
        if (record.dir === "c2s" && record.to !== "server") {
          assert.ok(!("k" in item), `a ${record.to} record travels without its content key`);
          assert.ok("e2e" in item, `a ${record.to} record carries its end-to-end envelope`);
          const kind = (item.e2e as { kind: string }).kind;
          assert.equal(kind, record.to === "lobby" ? "sender" : "ratchet");
          if (record.to === "lobby") lobbyEndToEnd++;
          endToEnd++;
        }
        if (typeof item.k === "string") {
          const body = openContent(record, fromBase64(item.k));
          if ("text" in body) readable.push(body.text);
        }
      }
    }
    assert.ok(endToEnd >= 6 + 9, `each line in its author's msg and its relays (${endToEnd})`);
    assert.ok(lobbyEndToEnd >= 9, `each lobby line in its msg and two relays (${lobbyEndToEnd})`);
    assert.ok(
      readable.some((t) => t.startsWith("welcome alice; online:")),
      "the decrypter reads what the server may read (its own notices)",
    );
    // PROTOCOL §6.4.1: each author's certificate reaches a session once, on its first relay;
    // every later relay of that author in the session only names it.
    const relaysOf = new Map<string, number>();
    for (const { conn, dir, message } of opened) {
      if (dir !== "s2c" || (message.type !== "relay" && message.type !== "stored")) continue;
      const key = `${conn}/${message.author_fp}`;
      const before = relaysOf.get(key) ?? 0;
      assert.equal("cert" in message, before === 0, `relay ${before + 1} of ${key}`);
      relaysOf.set(key, before + 1);
    }
    assert.ok(Math.max(...relaysOf.values()) >= 3, "an author named in later relays");
    const everything = JSON.stringify(opened);
    for (const canary of canaries) {
      assert.ok(!readable.includes(canary) && !everything.includes(canary), `${canary} readable`);
    }

    // 3. bob's transcript still proves who wrote what, with receipts, offline.
    const bobDir = join(pki.dir, "bob-transcripts");
    const log = [...Deno.readDirSync(bobDir)].map((e) => e.name).find((n) => n.endsWith(".log"))!;
    await verifiedReport(join(bobDir, log), `${pki.dir}/ca.pem`);

    // 4. Non-repudiation survives end-to-end encryption (SECURITY.md): bob opens alice's third
    //    private line — whose relay only named her certificate, introduced with her first
    //    (TRANSCRIPT §2.2) — to a third party, who checks author and content with only the CA.
    const logLines = (await Deno.readTextFile(join(bobDir, log))).split("\n");
    // Each private record of a relay line, by line and place in it (TRANSCRIPT §6's N:J).
    const privateRelays = logLines.flatMap((l, i) => {
      const line = l ? JSON.parse(l) : {};
      if (line.type !== "relay") return [];
      return (line.records as { record: { to: string } }[]).flatMap((item, j) =>
        item.record.to === "user:bob" ? [{ i, j, line }] : []
      );
    });
    assert.ok(privateRelays.length >= 2, "alice's private lines are in bob's transcript");
    assert.equal(
      typeof privateRelays[0].line.cert,
      "string",
      "her first introduces her certificate",
    );
    assert.equal(privateRelays[1].line.cert, undefined, "her next only names it");
    const revealed = `${1 + privateRelays[1].i}:${1 + privateRelays[1].j}`;
    const opening = join(workDir, "opening.json");
    const made = await runCli([
      "verify",
      join(bobDir, log),
      "--ca",
      `${pki.dir}/ca.pem`,
      "--reveal",
      revealed,
      "--out",
      opening,
    ]);
    assert.equal(made.code, 0, made.stderr);
    const checked = await runCli([
      "verify",
      "--opening",
      opening,
      "--ca",
      `${pki.dir}/ca.pem`,
      "--json",
    ]);
    assert.equal(checked.code, 0, checked.stderr);
    const proven = JSON.parse(checked.stdout);
    assert.equal(proven.author, "alice");
    assert.equal(proven.to, "user:bob");
    assert.deepEqual(proven.body, { kind: "text", text: privateCanaries[2] });

    // 5. alice proves the same line from her own transcript: her msg line (TRANSCRIPT §2.2) holds
    //    it without its envelope, her .keys the key she made, by the record's own c2s seqno (§6).
    const aliceDir = join(pki.dir, "alice-transcripts");
    const aliceLog = join(
      aliceDir,
      [...Deno.readDirSync(aliceDir)].map((e) => e.name).find((n) => n.endsWith(".log"))!,
    );
    await verifiedReport(aliceLog, `${pki.dir}/ca.pem`);
    const own = (await Deno.readTextFile(aliceLog)).split("\n").flatMap((l, i) => {
      const line = l ? JSON.parse(l) : {};
      if (line.dir !== "c2s") return [];
      return (line.records as { record: { to: string; seqno: number } }[]).flatMap((item, j) =>
        item.record.to === "user:bob" ? [{ i, j, seqno: item.record.seqno }] : []
      );
    });
    // Her two lines, then (with her first lobby line) her sender key to bob (PROTOCOL §12.5).
    assert.equal(own.length, 3, "alice's private records to bob are in her msg lines");
    const mine = join(workDir, "own-opening.json");
    const ownMade = await runCli([
      "verify",
      aliceLog,
      "--ca",
      `${pki.dir}/ca.pem`,
      "--reveal",
      `${1 + own[1].i}:${1 + own[1].j}`,
      "--out",
      mine,
    ]);
    assert.equal(ownMade.code, 0, ownMade.stderr);
    const ownChecked = await runCli([
      "verify",
      "--opening",
      mine,
      "--ca",
      `${pki.dir}/ca.pem`,
      "--json",
    ]);
    assert.equal(ownChecked.code, 0, ownChecked.stderr);
    const ownProof = JSON.parse(ownChecked.stdout);
    assert.deepEqual([ownProof.author, ownProof.seqno], ["alice", own[1].seqno]);
    assert.deepEqual(ownProof.body, { kind: "text", text: privateCanaries[2] });
  } finally {
    for (const c of clients) await c.end().catch(() => {});
    await proxy.close();
    await server.dispose();
    await Deno.remove(workDir, { recursive: true }).catch(() => {});
    await Deno.remove(pki.dir, { recursive: true });
  }
});

Deno.test("e2e: /verify shows the certificate fingerprint behind each of bob's devices; keys under a revoked certificate are refused", async () => {
  const pki = await makePki(["alice", "bob"], "ed25519");
  const server = await ServerProcess.start({ pkiDir: pki.dir });
  const clients: LiveClient[] = [];
  try {
    for (const user of ["alice", "bob"] as const) {
      await registerUser(server, pki.dir, user, PASSWORDS[user]);
    }
    const logins = liveLogins({
      pkiDir: pki.dir,
      workDir: pki.dir,
      password: (user) => PASSWORDS[user as keyof typeof PASSWORDS],
    }, clients);
    const login = (user: "alice" | "bob") => logins(user, server.port);
    const bob = await login("bob");
    const alice = await login("alice");
    const bobFingerprint = formatFingerprint(
      fingerprintOf((await pki.identity("bob")).certDer),
    );
    await alice.send("/verify bob");
    // Two devices: the CLI state of bob's registration and the one of this login.
    await alice.waitForLine((l) => l.includes("compare the fingerprint with bob"));
    const shown = alice.stdout.filter((l) => /bob device [0-9a-f]{16}: end-to-end keys/.test(l));
    assert.equal(shown.length, 2, alice.stdout.join("\n"));
    for (const line of shown) assert.ok(line.endsWith(bobFingerprint), line);
    assert.equal((await bob.end()).code, 0);
    assert.equal((await alice.end()).code, 0);

    // bob's certificate is revoked; alice's next client reads the new CRL beside the CA. The
    // server, which adopts it too, no longer lists bob's devices (PROTOCOL §12.6): alice's client
    // had sessions with them, and says they are revoked, not that the server hides them.
    const mark = server.mark();
    await revokeCertificates(pki.dir, await loadCaSigner(pki.dir), "bob", 1);
    await server.waitFor(
      (e) => e.event === "REVOKED" && e.user === "bob" && /key directory/.test(String(e.detail)),
      20_000,
      mark,
    );
    const again = await login("alice");
    await again.send("/verify bob");
    const refused = await again.waitForLine((l) => l.includes("bob's end-to-end keys refused"));
    assert.match(refused, /revoked/);
    assert.doesNotMatch(refused, /WARNING/);
    assert.ok(!again.stdout.some((l) => l.includes("signed by certificate")));
    await again.send("/msg bob are you still there");
    await again.waitForLine((l) => l.includes("not sent to bob"));
    assert.equal((await again.end()).code, 0);
  } finally {
    for (const c of clients) await c.end().catch(() => {});
    await server.dispose();
    await Deno.remove(pki.dir, { recursive: true }).catch(() => {});
  }
});
