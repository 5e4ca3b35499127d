/**
 * A key directory failure partway through retiring a revoked certificate's devices (review13
 * finding 4): the devices already removed are still followed up (a REVOKED line, their offline
 * records looked for). On 8fda5f5 retireCertifiedBy threw, losing which ones it had removed, and
 * no other node's scan would find them again.
 */
import assert from "node:assert/strict";
import { codeOf } from "../lib/errors.ts";
import type { LogFields } from "../lib/log.ts";
import { parseCertificate } from "../lib/pki/certificate.ts";
import { serialHex } from "../lib/pki/crl.ts";
import { retireRevoked } from "../lib/server/queue_revocation.ts";
import { SqlKeyDirectory } from "../lib/store/key_directory.ts";
import type { MessageQueue } from "../lib/store/message_queue.ts";
import { openUserStore } from "../lib/store/open.ts";
import type { SqlDatabase } from "../lib/store/sql.ts";
import { openSqlite } from "../lib/store/sqlite.ts";
import type { UserStore } from "../lib/store/user_store.ts";
import { makePki } from "../testkit/pki.ts";

const [D1, D2] = ["00000000000000a1", "00000000000000a2"];

/** The database, except that removing device D2 fails as if the engine were unreachable. */
function failingOnD2(db: SqlDatabase): SqlDatabase {
  const unreachable = new Error("connection refused (planted)");
  return {
    dialect: db.dialect,
    description: db.description,
    execute: (sql, params) => db.execute(sql, params),
    change: (sql, params) =>
      sql.startsWith("DELETE FROM e2e_devices") && params?.[1] === D2
        ? Promise.reject(unreachable)
        : db.change(sql, params),
    classify: (error) => error === unreachable ? "unavailable" : db.classify(error),
    close: () => db.close(),
  };
}

Deno.test("key directory: a failure partway through retireCertifiedBy returns the devices already removed, and retireRevoked follows them up", async () => {
  const pki = await makePki(["kim"]);
  const dir = await Deno.makeTempDir({ prefix: "securechat-retire-" });
  const path = `${dir}/store.db`;
  try {
    const cert = (await pki.identity("kim")).certDer;
    const serials = new Set([serialHex(parseCertificate(cert).serial)]);
    const store = await openUserStore({ url: `sqlite:${path}`, env: {} });
    try {
      for (const device of [D1, D2]) await store.keys!.publish("kim", device, cert, "{}", []);
    } finally {
      await store.close();
    }
    const db = failingOnD2(openSqlite(path, "test"));
    try {
      const keys = new SqlKeyDirectory(db, () => Promise.resolve());
      const retirement = await keys.retireCertifiedBy(serials);
      assert.deepEqual(retirement.removed, new Map([["kim", new Set([D1])]]));
      assert.equal(codeOf(retirement.failure), "DB_UNAVAILABLE");

      // Through retireRevoked: ann's D1 (sorted first) goes, kim's D2 fails again.
      const logs: [string, LogFields | undefined][] = [];
      const asked: string[] = [];
      const queue = {
        removeSignedUnder: () => Promise.resolve(new Map()),
        pending: (user: string) => {
          asked.push(user);
          return Promise.resolve([]);
        },
        remove: () => Promise.resolve(),
      } as unknown as MessageQueue;
      await db.execute(
        "INSERT INTO e2e_devices SELECT 'ann', device, cert, bundle, lobby, updated_at " +
          "FROM e2e_devices WHERE device = ?",
        [D2],
      );
      await db.execute("UPDATE e2e_devices SET device = ? WHERE username = 'ann'", [D1]);
      await retireRevoked(
        { keys, queue } as unknown as UserStore,
        serials,
        (event, fields) => logs.push([event, fields]),
      );
      assert.deepEqual(asked, ["ann"], "the device removed has its offline records looked for");
      assert.ok(
        logs.some(([event, fields]) => event === "REVOKED" && fields?.user === "ann"),
        JSON.stringify(logs),
      );
      assert.ok(
        logs.some(([event, fields]) =>
          event === "DB_UNAVAILABLE" && /some devices .* not removed/.test(fields?.detail ?? "")
        ),
        JSON.stringify(logs),
      );
    } finally {
      await db.close();
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
    await Deno.remove(pki.dir, { recursive: true });
  }
});
