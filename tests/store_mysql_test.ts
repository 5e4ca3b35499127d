/**
 * What only a real MariaDB shows: the store outliving a server restart, and schema.sql loading
 * through the command-line client into the same tables the code creates.
 */
import assert from "node:assert/strict";
import { codeOf } from "../lib/errors.ts";
import { openUserStore } from "../lib/store/open.ts";
import { type MariaDb, mysqlTestTarget, startMariaDb } from "../testkit/mariadb.ts";
import { skipMysql } from "./helpers/mariadb.ts";

const skip = skipMysql(mysqlTestTarget(), "the restart and schema.sql tests", "local");

const PASSWORD = "correct horse battery staple";

async function codeOfRejection(promise: Promise<unknown>): Promise<string> {
  return await promise.then(() => "resolved", codeOf);
}

function urlFor(server: MariaDb, database: string): string {
  return server.url.replace(/\/[^/]+$/, `/${database}`);
}

Deno.test({
  name: "MariaDB user store",
  ignore: skip,
  async fn(t) {
    const server = await startMariaDb();
    try {
      await t.step(
        "login() gives DB_UNAVAILABLE promptly while the server is down and recovers after",
        async () => {
          const store = await openUserStore({ url: server.url, env: {} });
          try {
            await store.register({ email: "ann@example.org", username: "ann", password: PASSWORD });
            await server.stop();
            const start = performance.now();
            assert.equal(await codeOfRejection(store.login("ann", PASSWORD)), "DB_UNAVAILABLE");
            assert.equal(
              await codeOfRejection(
                store.register({ email: "ben@example.org", username: "ben", password: PASSWORD }),
              ),
              "DB_UNAVAILABLE",
            );
            assert.ok(performance.now() - start < 15_000, "DB_UNAVAILABLE took too long");
            await server.restart();
            // The same store, never re-opened: its pool dials the server afresh.
            assert.equal((await store.login("ann", PASSWORD)).username, "ann");
            // The registration refused while the server was down left nothing behind.
            assert.equal(await codeOfRejection(store.login("ben", PASSWORD)), "AUTH_FAIL");
            await store.register({ email: "ben@example.org", username: "ben", password: PASSWORD });
            assert.equal((await store.login("ben", PASSWORD)).username, "ben");
          } finally {
            await store.close();
          }
        },
      );

      await t.step(
        "schema.sql loads with the mariadb client and matches the code's schema",
        async () => {
          const schema = await Deno.readTextFile(new URL("../schema.sql", import.meta.url));
          await server.sql("CREATE DATABASE from_file; CREATE DATABASE from_code;");
          await server.sql(schema, "from_file");
          await (await openUserStore({ url: urlFor(server, "from_code"), env: {} })).close();
          const describe = async (database: string) =>
            [
              await server.sql("SHOW CREATE TABLE users", database),
              await server.sql("SHOW CREATE TABLE schema_version", database),
              await server.sql("SHOW CREATE TABLE account_notices", database),
              await server.sql("SHOW CREATE TABLE message_queue", database),
              await server.sql("SHOW CREATE TABLE login_failures", database),
              await server.sql("SELECT version FROM schema_version", database),
            ].join("\n");
          assert.equal(await describe("from_file"), await describe("from_code"));
          // A store opened on the schema.sql database works without migrating anything.
          const store = await openUserStore({ url: urlFor(server, "from_file"), env: {} });
          try {
            await store.register({ email: "cat@example.org", username: "cat", password: PASSWORD });
            assert.equal((await store.login("cat", PASSWORD)).username, "cat");
          } finally {
            await store.close();
          }
        },
      );
    } finally {
      await server.dispose();
    }
  },
});
