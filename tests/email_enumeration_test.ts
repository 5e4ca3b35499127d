/**
 * Issue 11 item 9: registration must not tell anyone whether an e-mail address is taken.
 * Through the real CLI: registering with another user's address gets the same answer as
 * with a fresh one, and the address's owner is told at their next login.
 */
import assert from "node:assert/strict";
import { makePki } from "../testkit/pki.ts";
import { LiveClient, registerUser, runConnect, ServerProcess } from "../testkit/server_process.ts";

const PASSWORD = "a-long-password";

Deno.test("registration answers the same whether the e-mail is taken or not, and tells its owner", async () => {
  const pki = await makePki(["alice", "bob", "carol"]);
  const server = await ServerProcess.start({ pkiDir: pki.dir });
  try {
    await registerUser(server, pki.dir, "alice", PASSWORD); // alice@example.com
    const register = (user: string, email: string) =>
      runConnect({
        port: server.port,
        user,
        password: PASSWORD,
        pkiDir: pki.dir,
        transcripts: `${server.workDir}/${user}`,
        registerEmail: email,
      });
    const taken = await register("bob", "ALICE@example.com");
    const fresh = await register("carol", "carol@example.com");
    // v1 answered the first with USER_EXISTS: any certificate holder could test addresses.
    assert.equal(taken.code, 0, taken.stderr);
    assert.equal(fresh.code, 0, fresh.stderr);
    // Presence notices (joins and leaves are coalesced per second, so alice's own leave may
    // reach one newcomer and not the other) are not part of the answer being compared.
    const shape = (out: string, user: string) =>
      out.split("\n").filter((line) => !/ (joined|left)$/.test(line)).join("\n")
        .replaceAll(user, "USER").replace(/[0-9a-f]{64}/g, "ID").replace(/\d+/g, "N");
    assert.equal(shape(taken.stdout, "bob"), shape(fresh.stdout, "carol"));
    assert.ok(!/alice|taken|exists/i.test(taken.stdout + taken.stderr));
    // The owner hears of it once, at the next login.
    const alice = await LiveClient.login({
      port: server.port,
      user: "alice",
      password: PASSWORD,
      pkiDir: pki.dir,
      transcripts: `${server.workDir}/alice`,
    });
    await alice.waitForLine((l) => /e-mail address of your account .*"bob"/.test(l));
    assert.equal((await alice.end()).code, 0);
  } finally {
    await server.dispose();
    await Deno.remove(pki.dir, { recursive: true });
  }
});
