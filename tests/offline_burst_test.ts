/**
 * review8 R8-9: the offline queue (PROTOCOL §6.6) holds up to 1000 records per recipient, but
 * the server hands a member its whole queue in one turn, and a session's send queue is 1 MiB
 * (§8.2). A queue of long lines — well within `--queue-max` — must still reach its recipient
 * at login, and the recipient's session must go on.
 */
import assert from "node:assert/strict";
import { makePki } from "../testkit/pki.ts";
import { LiveClient, registerUser, ServerProcess, userOn } from "../testkit/server_process.ts";

const PASSWORDS: Record<string, string> = { alice: "alice-password-1", bob: "bob-password-12" };
const LINES = 240;
/** Each line near the 4000-character limit of a `text` body (§6.2): ~5.5 KB on the wire. */
const line = (n: number) => `${String(n).padStart(4, "0")} ${"x".repeat(3900)}`;

Deno.test("offline: a queue of long lines larger than the send queue reaches its recipient whole at login, and the session goes on", async () => {
  const pki = await makePki(["alice", "bob"], "ed25519");
  // The sender's rate is raised only so that filling the queue is quick.
  const server = await ServerProcess.start({ pkiDir: pki.dir, args: ["--message-rate", "1000"] });
  try {
    for (const user of ["alice", "bob"]) {
      await registerUser(
        server,
        pki.dir,
        user,
        PASSWORDS[user],
        userOn(server, pki.dir, user, PASSWORDS[user]).transcripts,
      );
    }
    const alice = await LiveClient.login(userOn(server, pki.dir, "alice", PASSWORDS.alice));
    for (let n = 1; n <= LINES; n++) await alice.send(`/msg bob ${line(n)}`);
    await alice.waitForStored(LINES);
    assert.equal((await alice.end()).code, 0);

    const mark = server.mark();
    const bob = await LiveClient.login(userOn(server, pki.dir, "bob", PASSWORDS.bob));
    const last = await Promise.race([
      bob.waitForLine((l) => l.includes(line(LINES).slice(0, 40)), 30_000).then(() => "delivered"),
      server.waitFor(
        (e) =>
          e.user === "bob" && e.event !== "LOGIN" && /SLOW_CONSUMER|PROTOCOL_ERROR/.test(e.event),
        30_000,
        mark,
      )
        .then((e) => `bob's session: ${JSON.stringify(e)}`),
    ]);
    assert.equal(last, "delivered");
    const shown = bob.lines((l) => l.includes("xxxxxxxxxx")).length;
    assert.equal(shown, LINES, "every stored line shown once");
    // The session goes on: bob is still served.
    const from = bob.stdout.length;
    await bob.send("/who");
    await bob.waitForLine((l) => l.includes("* online:"), 10_000, from);
    assert.equal((await bob.end()).code, 0);
  } finally {
    await server.dispose();
    await Deno.remove(pki.dir, { recursive: true }).catch(() => {});
  }
});
