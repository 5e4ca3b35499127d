/**
 * Offline delivery (issue 13, PROTOCOL §6.6) through the real CLI: a private message to a
 * user who is not online is stored before its author is told so, survives `serve` being
 * SIGKILLed, reaches the recipient once at the next login, in order, and every transcript
 * involved verifies with only the CA; the queue's bounds refuse with a code the author sees.
 */
import assert from "node:assert/strict";
import { DatabaseSync } from "node:sqlite";
import { runCli } from "../testkit/cli.ts";
import { makePki } from "../testkit/pki.ts";
import { verifyAll } from "./helpers/verified.ts";
import {
  type ConnectOptions,
  LiveClient,
  pollUntil,
  registerUser,
  ServerProcess,
} from "../testkit/server_process.ts";

const PASSWORDS: Record<string, string> = {
  alice: "alice-password-1",
  bob: "bob-password-12",
  carol: "carol-password-3",
};

/** A stderr line of the client matching `test` (where `connect` reports on messages). */
const STORED = "stored: the recipient is not online";

/**
 * Waits until the client has said `count` of its messages are stored. Message numbers are
 * not assumed: a client may send records of its own to the server first (its keys, §12).
 */
function waitForStored(client: LiveClient, count: number) {
  return pollUntil(
    () => client.stderr.filter((l) => l.includes(STORED)).length >= count || undefined,
    10_000,
    () => `not ${count} stored lines:\n${client.stderr.join("\n")}`,
  );
}

/**
 * Registers `user` from the state its later logins use: one device, which is the one a line
 * stored while the user was away is wrapped for (PROTOCOL §12.6).
 */
function register(server: ServerProcess, pkiDir: string, user: string): Promise<void> {
  const { transcripts } = clientOptions(server, pkiDir, user);
  return registerUser(server, pkiDir, user, PASSWORDS[user], transcripts);
}

function clientOptions(server: ServerProcess, pkiDir: string, user: string): ConnectOptions {
  return {
    port: server.port,
    user,
    password: PASSWORDS[user],
    pkiDir,
    transcripts: `${server.workDir}/${user}-transcripts`,
  };
}

Deno.test("offline: a stored message survives serve's SIGKILL and is delivered once, in order, verified", async () => {
  const pki = await makePki(["alice", "bob"], "ed25519");
  const workDir = await Deno.makeTempDir({ prefix: "securechat-offline-" });
  let server = await ServerProcess.start({ pkiDir: pki.dir, workDir });
  try {
    for (const user of ["alice", "bob"]) await register(server, pki.dir, user);
    const alice = await LiveClient.login(clientOptions(server, pki.dir, "alice"));
    for (const n of [1, 2, 3]) {
      await alice.send(`/msg bob note ${n} while you were out`);
      await waitForStored(alice, n);
    }
    assert.equal((await alice.end()).code, 0);

    // Told "stored", so it must be on disk: a SIGKILL loses nothing.
    server.child.kill("SIGKILL");
    await server.stop();
    // What waits on disk is ciphertext: no text, and no content key beside the wraps.
    for (const file of ["t.db", "t.db-wal"]) {
      const bytes = await Deno.readFile(`${workDir}/${file}`).catch(() => new Uint8Array());
      assert.ok(!new TextDecoder().decode(bytes).includes("while you were out"), file);
    }
    const db = new DatabaseSync(`${workDir}/t.db`);
    const items = db.prepare("SELECT item FROM message_queue ORDER BY id").all()
      .map((row) => JSON.parse(String(row.item)).relay);
    db.close();
    assert.equal(items.length, 3);
    for (const item of items) assert.deepEqual(Object.keys(item), ["cert", "record", "e2e"]);
    server = await ServerProcess.start({ pkiDir: pki.dir, workDir });

    const bobOptions = clientOptions(server, pki.dir, "bob");
    const bob = await LiveClient.login(bobOptions);
    await bob.waitForLine((l) => l.includes("note 3 while you were out"));
    const shown = bob.lines((l) => l.includes("while you were out"));
    assert.deepEqual(
      shown.map((l) => l.replace(/^\[[0-9:]+\] /, "")),
      [1, 2, 3].map((n) => `alice (private, while you were away) ✓ note ${n} while you were out`),
    );
    await server.waitFor((e) => e.event === "STORED_ACKED" && e.user === "bob");
    assert.equal((await bob.end()).code, 0);

    // Once: the next login finds nothing waiting.
    const mark = server.mark();
    const again = await LiveClient.login(bobOptions);
    const from = again.stdout.length;
    await again.send("/who");
    await again.waitForLine((l) => l.includes("* online:"), 10_000, from);
    assert.equal((await again.end()).code, 0);
    assert.deepEqual(again.lines((l) => l.includes("while you were out")), []);
    assert.deepEqual(server.events((e) => e.event === "STORED_SENT", mark), []);

    // Every transcript verifies with only the CA, receipts from both sides.
    const ca = `${pki.dir}/ca.pem`;
    const bobReports = await verifyAll(bobOptions.transcripts, ca);
    const delivered = bobReports.find((r) => (r.stored as unknown[]).length > 0)!;
    assert.equal((delivered.stored as unknown[]).length, 3);
    assert.deepEqual(
      (delivered.authors as { commonName: string; messages: number }[])
        .find((a) => a.commonName === "alice")?.messages,
      3,
    );
    const aliceReports = await verifyAll(`${workDir}/alice-transcripts`, ca);
    const aliceReport = aliceReports.find((r) => (r.queued as unknown[]).length > 0)!;
    const queued = (aliceReport.queued as { of: number }[]).map((q) => q.of);
    assert.equal(queued.length, 3, JSON.stringify(queued));
    assert.deepEqual(queued, [...queued].sort((a, b) => a - b), "in the order they were sent");
    await verifyAll(server.transcripts, ca);
  } finally {
    await server.dispose();
    await Deno.remove(workDir, { recursive: true }).catch(() => {});
    await Deno.remove(pki.dir, { recursive: true });
  }
});

Deno.test("offline: a full queue and an unknown recipient are refused with a code the author sees", async () => {
  // A full queue is the server's refusal (QUEUE_FULL); a name with no keys (no such account)
  // is the client's: nothing goes readable, so nothing is sent (NO_E2E_KEYS, PROTOCOL §12.6).
  const pki = await makePki(["alice", "bob"], "ed25519");
  const server = await ServerProcess.start({ pkiDir: pki.dir, args: ["--queue-max", "2"] });
  try {
    for (const user of ["alice", "bob"]) await register(server, pki.dir, user);
    const alice = await LiveClient.login(clientOptions(server, pki.dir, "alice"));
    await alice.send("/msg bob one");
    await alice.send("/msg bob two");
    await alice.send("/msg bob three");
    await alice.waitForInfo((l) => l.includes("refused by the server: QUEUE_FULL"));
    await alice.send("/msg nobody-here hello?");
    await alice.waitForLine((l) => l.includes("not sent to nobody-here: NO_E2E_KEYS"));
    assert.equal(alice.stderr.filter((l) => l.includes(STORED)).length, 2);
    assert.equal((await alice.end()).code, 0);

    // bob gets the two that fit, and only those.
    const bob = await LiveClient.login(clientOptions(server, pki.dir, "bob"));
    await bob.waitForLine((l) => l.includes("✓ two"));
    await server.waitFor((e) => e.event === "STORED_ACKED" && e.user === "bob");
    assert.equal((await bob.end()).code, 0);
    assert.deepEqual(
      bob.lines((l) => l.includes("while you were away")).map((l) => l.split("✓ ")[1]),
      ["one", "two"],
    );
    const aliceReport = (await verifyAll(
      `${server.workDir}/alice-transcripts`,
      `${pki.dir}/ca.pem`,
    )).find((r) => (r.refused as unknown[]).length > 0)!;
    // By code: the client's own key-directory messages take seqnos between the lines.
    assert.deepEqual(
      (aliceReport.refused as { of: number; code: string }[]).map((r) => r.code),
      ["QUEUE_FULL"],
    );
  } finally {
    await server.dispose();
    await Deno.remove(pki.dir, { recursive: true });
  }
});

Deno.test("offline: a record older than --queue-age is purged and never delivered", async () => {
  const pki = await makePki(["alice", "carol"], "ed25519");
  const workDir = await Deno.makeTempDir({ prefix: "securechat-offline-" });
  const args = ["--queue-age", "1s"];
  let server = await ServerProcess.start({ pkiDir: pki.dir, workDir, args });
  try {
    for (const user of ["alice", "carol"]) {
      await register(server, pki.dir, user);
    }
    const alice = await LiveClient.login(clientOptions(server, pki.dir, "alice"));
    await alice.send("/msg carol soon stale");
    await waitForStored(alice, 1);
    assert.equal((await alice.end()).code, 0);
    await new Promise((resolve) => setTimeout(resolve, 1500));
    // A restarted server purges at start: the expired record is deleted, unread.
    await server.stop();
    server = await ServerProcess.start({ pkiDir: pki.dir, workDir, args });
    const purged = await server.waitFor((e) => e.event === "QUEUE_PURGED");
    assert.match(String(purged.detail), /^1 expired/);
    const carol = await LiveClient.login(clientOptions(server, pki.dir, "carol"));
    const from = carol.stdout.length;
    await carol.send("/who");
    await carol.waitForLine((l) => l.includes("* online:"), 10_000, from);
    assert.equal((await carol.end()).code, 0);
    assert.deepEqual(carol.lines((l) => l.includes("soon stale")), []);
    assert.deepEqual(server.events((e) => e.event === "STORED_SENT"), []);
  } finally {
    await server.dispose();
    await Deno.remove(workDir, { recursive: true }).catch(() => {});
    await Deno.remove(pki.dir, { recursive: true });
  }
});

Deno.test("offline: what a revoked author left queued is deleted when the revocation reaches the server, not delivered; the recipient's session goes on", async () => {
  // Delivered, it ended the recipient's session with BAD_CERT (its author's certificate is
  // checked as it is introduced, PROTOCOL §6.4.1) at every login until the record expired.
  // It was then deleted only at the recipient's next login: a recipient away for weeks left a
  // revoked author's records (sender keys among them, §12.5) in the store until they expired.
  const pki = await makePki(["alice", "carol"], "ed25519");
  const server = await ServerProcess.start({ pkiDir: pki.dir });
  const queued = () => {
    const db = new DatabaseSync(`${server.workDir}/t.db`, { readOnly: true });
    try {
      return Number(db.prepare("SELECT COUNT(*) AS n FROM message_queue").get()!.n);
    } finally {
      db.close();
    }
  };
  try {
    for (const user of ["alice", "carol"]) await register(server, pki.dir, user);
    const alice = await LiveClient.login(clientOptions(server, pki.dir, "alice"));
    await alice.send("/msg carol written before the revocation");
    await waitForStored(alice, 1);
    assert.equal((await alice.end()).code, 0);
    assert.equal(queued(), 1);
    const mark = server.mark();
    const revoked = await runCli(["cert", "revoke", "alice", "--dir", pki.dir]);
    assert.equal(revoked.code, 0, revoked.stderr);
    await server.waitFor((e) => e.event === "CRL_LOADED", 15_000, mark);
    const dropped = await server.waitFor(
      (e) => e.event === "REVOKED" && e.user === "alice",
      10_000,
      mark,
    );
    assert.match(String(dropped.detail), /offline queue: 1 record.* from alice.*revoked.*deleted/);
    assert.equal(queued(), 0, "the record waits for carol's next login");

    const carol = await LiveClient.login(clientOptions(server, pki.dir, "carol"));
    const from = carol.stdout.length;
    await carol.send("/who");
    await carol.waitForLine((l) => l.includes("* online:"), 10_000, from);
    assert.equal((await carol.end()).code, 0, carol.stderr.join("\n"));
    assert.deepEqual(carol.lines((l) => l.includes("before the revocation")), []);
    assert.deepEqual(server.events((e) => e.event === "STORED_SENT", mark), []);
    assert.deepEqual(server.events((e) => e.event === "REVOKED" && e.user === "carol", mark), []);
  } finally {
    await server.dispose();
    await Deno.remove(pki.dir, { recursive: true });
  }
});

Deno.test("offline: what waits for a revoked recipient's devices is deleted when the revocation reaches the server; another recipient's stays", async () => {
  // Records queued for carol were wrapped for her device, whose keys her certificate signed.
  // Revoking it retires that device (senders refuse its keys, PROTOCOL §12.6), yet the records
  // stayed until they expired, holding places in carol's queue that her next device needs.
  const pki = await makePki(["alice", "bob", "carol"], "ed25519");
  const server = await ServerProcess.start({ pkiDir: pki.dir });
  const queuedFor = (user: string) => {
    const db = new DatabaseSync(`${server.workDir}/t.db`, { readOnly: true });
    try {
      return Number(
        db.prepare(
          `SELECT COUNT(*) AS n FROM message_queue
           WHERE user_id = (SELECT id FROM users WHERE username = ?)`,
        ).get(user)!.n,
      );
    } finally {
      db.close();
    }
  };
  try {
    for (const user of ["alice", "bob", "carol"]) await register(server, pki.dir, user);
    const alice = await LiveClient.login(clientOptions(server, pki.dir, "alice"));
    await alice.send("/msg carol for carol's laptop");
    await alice.send("/msg bob for bob");
    await waitForStored(alice, 2);
    assert.equal((await alice.end()).code, 0);
    assert.deepEqual([queuedFor("carol"), queuedFor("bob")], [1, 1]);
    const mark = server.mark();
    const revoked = await runCli(["cert", "revoke", "carol", "--dir", pki.dir]);
    assert.equal(revoked.code, 0, revoked.stderr);
    const dropped = await server.waitFor(
      (e) => e.event === "REVOKED" && e.user === "carol",
      20_000,
      mark,
    );
    assert.match(
      String(dropped.detail),
      /key directory: carol's device\(s\) [0-9a-f]{16}, certified/,
    );
    const deleted = await server.waitFor(
      (e) => e.event === "REVOKED" && e.user === "carol" && /offline queue/.test(String(e.detail)),
      20_000,
      mark,
    );
    assert.match(
      String(deleted.detail),
      /offline queue: 1 record\(s\) for carol, wrapped only for devices of a revoked certificate/,
    );
    assert.deepEqual([queuedFor("carol"), queuedFor("bob")], [0, 1]);
    // The device left the key directory: no asker is handed its keys again (PROTOCOL §12.6).
    assert.deepEqual([devicesOf(server, "carol"), devicesOf(server, "bob")], [0, 1]);
  } finally {
    await server.dispose();
    await Deno.remove(pki.dir, { recursive: true });
  }
});

Deno.test("key directory: a device certified by a certificate revoked while no server ran is never handed out, and leaves the directory", async () => {
  // A CRL in force from the server's start newly revokes nothing, so nothing retired carol's
  // device: a keys_fetch handed out its bundle, and a sender whose CRL was older wrapped for a
  // key a thief may hold; the device counted toward carol's 8 until she published again.
  const pki = await makePki(["alice", "carol"], "ed25519");
  const workDir = await Deno.makeTempDir({ prefix: "securechat-retired-" });
  let server = await ServerProcess.start({ pkiDir: pki.dir, workDir });
  try {
    for (const user of ["alice", "carol"]) await register(server, pki.dir, user);
    assert.equal(devicesOf(server, "carol"), 1);
    await server.stop();
    const revoked = await runCli(["cert", "revoke", "carol", "--dir", pki.dir]);
    assert.equal(revoked.code, 0, revoked.stderr);
    server = await ServerProcess.start({ pkiDir: pki.dir, workDir });
    const alice = await LiveClient.login(clientOptions(server, pki.dir, "alice"));
    await alice.send("/msg carol are you there?");
    await alice.waitForLine((l) =>
      l.includes(
        "NO_E2E_KEYS: carol has no device with valid end-to-end keys (none published, or " +
          "their certificate was revoked)",
      )
    );
    assert.equal((await alice.end()).code, 0, alice.stderr.join("\n"));
    assert.equal(devicesOf(server, "carol"), 0);
    assert.deepEqual(server.events((e) => e.event === "STORED"), []);
  } finally {
    await server.dispose();
    await Deno.remove(workDir, { recursive: true });
    await Deno.remove(pki.dir, { recursive: true });
  }
});

/** How many devices `user` has in the server's key directory. */
function devicesOf(server: ServerProcess, user: string): number {
  const db = new DatabaseSync(`${server.workDir}/t.db`, { readOnly: true });
  try {
    return Number(
      db.prepare("SELECT COUNT(*) AS n FROM e2e_devices WHERE username = ?").get(user)!.n,
    );
  } finally {
    db.close();
  }
}

Deno.test("three users: lobby, private and an offline message; every transcript verifies with receipts", async () => {
  const users = ["alice", "bob", "carol"];
  const pki = await makePki(users, "ed25519");
  const server = await ServerProcess.start({ pkiDir: pki.dir, args: ["--message-rate", "100"] });
  try {
    for (const user of users) await register(server, pki.dir, user);
    const alice = await LiveClient.login(clientOptions(server, pki.dir, "alice"));
    const bob = await LiveClient.login(clientOptions(server, pki.dir, "bob"));
    await alice.send("hello lobby from alice");
    await bob.waitForLine((l) => l.includes("alice ✓ hello lobby from alice"));
    await bob.send("/msg alice just between us");
    await alice.waitForLine((l) => l.includes("bob (private) ✓ just between us"));
    await alice.send("/msg carol read this when you are back");
    await waitForStored(alice, 1);

    const carol = await LiveClient.login(clientOptions(server, pki.dir, "carol"));
    await carol.waitForLine((l) =>
      l.includes("alice (private, while you were away) ✓ read this when you are back")
    );
    await carol.send("carol is back");
    for (const c of [alice, bob]) await c.waitForLine((l) => l.includes("carol ✓ carol is back"));
    await server.waitFor((e) => e.event === "STORED_ACKED" && e.user === "carol");
    for (const c of [alice, bob, carol]) assert.equal((await c.end()).code, 0);

    const ca = `${pki.dir}/ca.pem`;
    for (const user of users) await verifyAll(`${server.workDir}/${user}-transcripts`, ca);
    await verifyAll(server.transcripts, ca);
  } finally {
    await server.dispose();
    await Deno.remove(pki.dir, { recursive: true });
  }
});
