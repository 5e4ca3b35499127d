/**
 * Issue #6 through the real CLI on loopback: three users in the lobby, private
 * messages, /who, and bob's transcript proving who wrote what with only the CA.
 */
import assert from "node:assert/strict";
import { makePki } from "../testkit/pki.ts";
import { runCli } from "../testkit/cli.ts";
import { LiveClient, registerUser, ServerProcess } from "../testkit/server_process.ts";
import { verifiedReport } from "./helpers/verified.ts";

const USERS = ["alice", "bob", "carol"] as const;
const PASSWORDS = { alice: "alice-password-1", bob: "bob-password-12", carol: "carol-password-3" };

Deno.test("lobby: three users, lobby lines once each in order, /msg private, /who, attributed transcripts", async () => {
  const pki = await makePki([...USERS], "ed25519");
  const server = await ServerProcess.start({ pkiDir: pki.dir, args: ["--message-rate", "100"] });
  const clientTranscripts: Record<string, string> = {};
  const clients: Partial<Record<(typeof USERS)[number], LiveClient>> = {};
  try {
    for (const user of USERS) await registerUser(server, pki.dir, user, PASSWORDS[user]);
    for (const user of USERS) {
      clientTranscripts[user] = `${server.workDir}/${user}-transcripts`;
      clients[user] = await LiveClient.login({
        port: server.port,
        user,
        password: PASSWORDS[user],
        pkiDir: pki.dir,
        transcripts: clientTranscripts[user],
      });
    }
    const { alice, bob, carol } = clients as Record<(typeof USERS)[number], LiveClient>;

    for (let i = 1; i <= 5; i++) await alice.send(`alice says ${i}`);
    for (let i = 1; i <= 3; i++) await carol.send(`carol says ${i}`);
    await alice.send("/msg bob only for bob");
    await bob.waitForLine((l) => l.includes("only for bob"));
    for (const reader of [bob, carol]) {
      await reader.waitForLine((l) => l.includes("alice ✓ alice says 5"));
    }
    await bob.waitForLine((l) => l.includes("carol ✓ carol says 3"));
    await alice.waitForLine((l) => l.includes("carol ✓ carol says 3"));

    // Exactly once each, in order per author, at every other user.
    for (
      const [reader, author, count] of [
        [bob, "alice", 5],
        [carol, "alice", 5],
        [alice, "carol", 3],
        [bob, "carol", 3],
      ] as const
    ) {
      const seen = reader.lines((l) => l.includes(`${author} ✓ ${author} says`))
        .map((l) => l.slice(l.indexOf(`${author} says`)));
      assert.deepEqual(seen, Array.from({ length: count }, (_, i) => `${author} says ${i + 1}`));
    }
    // Nobody hears their own lines back; the private line reaches bob only.
    assert.equal(alice.lines((l) => l.includes("alice says")).length, 0);
    assert.ok(bob.lines((l) => l.includes("alice (private) ✓ only for bob")).length === 1);
    assert.equal(carol.lines((l) => l.includes("only for bob")).length, 0);

    const mark = bob.stdout.length;
    await bob.send("/who");
    const who = await bob.waitForLine((l) => l.includes("* online:"), 10_000, mark);
    assert.match(who, /online: alice, bob, carol$/);

    for (const user of USERS) {
      const result = await clients[user]!.end();
      assert.equal(result.code, 0, result.stderr);
    }

    // bob's transcript verifies with only the CA and names each message's real author.
    const logs = [...Deno.readDirSync(clientTranscripts.bob)].map((e) => e.name)
      .filter((n) => n.endsWith(".log"));
    assert.equal(logs.length, 1);
    const report = await verifiedReport(`${clientTranscripts.bob}/${logs[0]}`, `${pki.dir}/ca.pem`);
    const authors = Object.fromEntries(
      report.authors.map((
        a: { commonName: string; messages: number },
      ) => [a.commonName, a.messages]),
    );
    // bob's own signed lines (his key bundle at login, /who) are his; every relayed one its
    // author's: alice's 6 lines and carol's 3, each with the sender key that opened her lobby
    // lines for bob (one per membership she spoke to, PROTOCOL §12.5).
    assert.deepEqual(Object.keys(authors).sort(), ["alice", "bob", "carol"]);
    assert.ok(authors.bob >= 2 && authors.bob <= 3, `bob: his bundle, /who (${authors.bob})`);
    assert.ok(authors.alice >= 6 + 1, `alice: 6 lines and a sender key (${authors.alice})`);
    assert.ok(authors.carol >= 3 + 1, `carol: 3 lines and a sender key (${authors.carol})`);

    // The server's side of every session verifies too, confirmed by both receipts.
    for (const entry of Deno.readDirSync(server.transcripts)) {
      if (!entry.name.endsWith(".log")) continue;
      const path = `${server.transcripts}/${entry.name}`;
      const result = await runCli(["verify", path, "--ca", `${pki.dir}/ca.pem`, "--json"]);
      assert.equal(result.code, 0, result.stdout + result.stderr);
      const receipts = JSON.parse(result.stdout).receipts;
      assert.deepEqual(receipts.map((r: { status: string }) => r.status), ["valid", "valid"]);
    }
  } finally {
    for (const c of Object.values(clients)) await c?.end().catch(() => {});
    await server.dispose();
    await Deno.remove(pki.dir, { recursive: true });
  }
});

Deno.test("lobby: a second login of the same user takes over: the first closes cleanly on the close's SESSION_TAKEN_OVER and does not reconnect", async () => {
  const pki = await makePki(["alice"], "ed25519");
  const server = await ServerProcess.start({ pkiDir: pki.dir });
  try {
    await registerUser(server, pki.dir, "alice", PASSWORDS.alice);
    const options = {
      port: server.port,
      user: "alice",
      password: PASSWORDS.alice,
      pkiDir: pki.dir,
      transcripts: `${server.workDir}/alice-transcripts`,
    };
    const loginsBefore = server.events((e) => e.event === "LOGIN" && e.user === "alice").length;
    // --reconnect: a client that logs in again after a drop must not take the session back.
    const first = await LiveClient.login({ ...options, args: ["--reconnect"] });
    const second = await LiveClient.login(options);
    await server.waitFor((e) => e.event === "SESSION_REPLACED" && e.user === "alice");
    // The client knows the takeover by the close's code (PROTOCOL §7.1), not by a notice's
    // words (§6.2), and exits by itself, its input still open.
    await first.waitForInfo((l) => l.includes("session taken over: SESSION_TAKEN_OVER"), 15_000);
    const exited = await Promise.race([
      first.child.status.then(() => true),
      new Promise<false>((resolve) => setTimeout(() => resolve(false), 15_000)),
    ]);
    const firstEnd = await first.end();
    assert.ok(exited, `the taken-over client did not exit:\n${firstEnd.stderr}`);
    assert.equal(firstEnd.code, 0, firstEnd.stderr);
    assert.match(firstEnd.stderr, /server's receipt: /);
    assert.doesNotMatch(firstEnd.stderr, /lost \(.*\); reconnecting|reconnected/);
    assert.equal(
      server.events((e) => e.event === "LOGIN" && e.user === "alice").length - loginsBefore,
      2,
      "alice logged in twice, not again after the takeover",
    );
    const mark = second.stdout.length;
    await second.send("/who");
    assert.match(
      await second.waitForLine((l) => l.includes("* online:"), 10_000, mark),
      /online: alice$/,
    );
    assert.equal((await second.end()).code, 0);
  } finally {
    await server.dispose();
    await Deno.remove(pki.dir, { recursive: true });
  }
});
