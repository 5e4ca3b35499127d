/**
 * Issue 17 item 5 through the real CLI: `securechat user list|passwd|delete|unlock` against the
 * store of a running server. A forgotten password is reset (the old one stops working at
 * once, the new one works), and a deleted account's name can be registered again instead
 * of meaning USER_EXISTS forever.
 */
import assert from "node:assert/strict";
import { runCli } from "../testkit/cli.ts";
import { makePki } from "../testkit/pki.ts";
import { errorCodeOf, registerUser, runConnect, ServerProcess } from "../testkit/server_process.ts";
import { ALICE_PASSWORD, lockedOutAlice } from "./helpers/lockout.ts";

Deno.test({
  name: "user list, passwd and delete work on a running server's store",
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async () => {
    const pki = await makePki(["alice", "bob"]);
    const server = await ServerProcess.start({ pkiDir: pki.dir });
    const db = ["--db", server.db];
    const login = (user: string, password: string, email?: string) =>
      runConnect({
        port: server.port,
        user,
        password,
        pkiDir: pki.dir,
        transcripts: `${server.workDir}/c`,
        registerEmail: email,
      });
    try {
      await registerUser(server, pki.dir, "alice", "alice-password-1");
      await registerUser(server, pki.dir, "bob", "bob-password-12");

      const table = await runCli(["user", "list", ...db]);
      assert.equal(table.code, 0, table.stderr);
      assert.match(table.stdout, /^NAME +EMAIL +CREATED +LAST LOGIN$/m);
      assert.match(table.stdout, /^alice +alice@example\.com +\d{4}-\d\d-\d\d \d\d:\d\d +never$/m);
      const listed = JSON.parse((await runCli(["user", "list", "--json", ...db])).stdout);
      assert.deepEqual(listed.map((a: { username: string }) => a.username), ["alice", "bob"]);

      // alice forgot her password: the operator sets a new one.
      const file = `${server.workDir}/new-password`;
      await Deno.writeTextFile(file, "alice-new-password-2\n");
      const passwd = await runCli(["user", "passwd", "alice", "--password-file", file, ...db]);
      assert.equal(passwd.code, 0, passwd.stderr);
      assert.equal(errorCodeOf(await login("alice", "alice-password-1")), "AUTH_FAIL");
      const fresh = await login("alice", "alice-new-password-2");
      assert.equal(fresh.code, 0, fresh.stderr);
      await Deno.writeTextFile(file, "short\n");
      const weak = await runCli(["user", "passwd", "alice", "--password-file", file, ...db]);
      assert.equal(errorCodeOf(weak), "INVALID_INPUT", weak.stderr);
      const nobody = await runCli(["user", "passwd", "nobody", "--password-file", file, ...db]);
      assert.notEqual(nobody.code, 0);

      // Deleting needs a confirmation; then bob can register afresh.
      const unconfirmed = await runCli(["user", "delete", "bob", ...db]);
      assert.equal(unconfirmed.code, 2, unconfirmed.stderr);
      const deleted = await runCli(["user", "delete", "bob", "--yes", ...db]);
      assert.equal(deleted.code, 0, deleted.stderr);
      assert.equal(errorCodeOf(await login("bob", "bob-password-12")), "AUTH_FAIL");
      const again = await login("bob", "bob-password-new-3", "bob@example.com");
      assert.equal(again.code, 0, again.stderr);
      assert.equal(
        errorCodeOf(await runCli(["user", "delete", "carol", "--yes", ...db])),
        "INVALID_INPUT",
      );
    } finally {
      await server.dispose();
      await Deno.remove(pki.dir, { recursive: true });
    }
  },
});

Deno.test({
  name: "user unlock ends a lockout through the store of a running server",
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async () => {
    const { server, login, dispose } = await lockedOutAlice();
    const db = ["--db", server.db];
    try {
      // The counts are in the store, so the operator's command reaches the running server.
      const unlock = await runCli(["user", "unlock", "alice", ...db]);
      assert.equal(unlock.code, 0, unlock.stderr);
      assert.match(unlock.stderr, /failed logins of alice forgiven/);
      const back = await login(ALICE_PASSWORD);
      assert.equal(back.code, 0, back.stderr);
      const again = await runCli(["user", "unlock", "alice", ...db]);
      assert.match(again.stderr, /alice had no failed logins to forgive/);
    } finally {
      await dispose();
    }
  },
});
