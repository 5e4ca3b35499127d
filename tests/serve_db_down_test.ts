/**
 * Issue #4: `serve` starts even while its MySQL/MariaDB is down, logins fail with
 * DB_UNAVAILABLE, and they work once the database is back — without a restart.
 */
import assert from "node:assert/strict";
import { makePki } from "../testkit/pki.ts";
import { mysqlTestTarget, startMariaDb } from "../testkit/mariadb.ts";
import { skipMysql } from "./helpers/mariadb.ts";
import { errorCodeOf, runConnect, ServerProcess } from "../testkit/server_process.ts";

Deno.test({
  name: "serve: starts with the database down, logins DB_UNAVAILABLE, then recover by themselves",
  ignore: skipMysql(mysqlTestTarget(), "serve with its database down at start", "local"),
  fn: async () => {
    const pki = await makePki(["alice"], "ed25519");
    const db = await startMariaDb();
    await db.stop();
    const server = await ServerProcess.start({ pkiDir: pki.dir, args: ["--db", db.url] });
    try {
      const listen = await server.waitFor((e) => e.event === "LISTEN");
      assert.match(String(listen.db), /^mysql:\/\//);
      await server.waitFor((e) => e.event === "DB_UNAVAILABLE");
      const options = {
        port: server.port,
        user: "alice",
        password: "alice-password",
        pkiDir: pki.dir,
        transcripts: `${server.workDir}/alice`,
        registerEmail: "alice@example.com",
      };
      const refused = await runConnect(options);
      assert.notEqual(refused.code, 0);
      assert.equal(errorCodeOf(refused), "DB_UNAVAILABLE");

      await db.restart();
      const registered = await runConnect(options);
      assert.equal(registered.code, 0, registered.stderr);
      const login = await runConnect({ ...options, registerEmail: undefined }, ["hello"]);
      assert.equal(login.code, 0, login.stderr);
    } finally {
      await server.dispose();
      await db.dispose();
      await Deno.remove(pki.dir, { recursive: true });
    }
  },
});
