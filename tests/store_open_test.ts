import assert from "node:assert/strict";
import { join } from "node:path";
import { DatabaseSync } from "node:sqlite";
import { codeOf } from "../lib/errors.ts";
import { type DatabaseTarget, openUserStore, resolveDatabase } from "../lib/store/open.ts";

const BASE = "/srv/securechat";
const MYSQL_ENV = {
  DB_HOST: "db.internal",
  DB_USER: "chat",
  DB_PASSWORD: "s3cret",
  DB_NAME: "secure_chat",
};

Deno.test("resolveDatabase() picks --db first, then DB_* keys, then the default SQLite file", () => {
  const cases: [string, Parameters<typeof resolveDatabase>[0], DatabaseTarget][] = [
    ["default", { env: {}, baseDir: BASE }, {
      engine: "sqlite",
      path: `${BASE}/data/securechat.db`,
      description: "sqlite:data/securechat.db",
    }],
    ["relative sqlite", { url: "sqlite:x/y.db", env: MYSQL_ENV, baseDir: BASE }, {
      engine: "sqlite",
      path: `${BASE}/x/y.db`,
      description: "sqlite:x/y.db",
    }],
    ["absolute sqlite", { url: "sqlite:/var/lib/sc.db", baseDir: BASE }, {
      engine: "sqlite",
      path: "/var/lib/sc.db",
      description: "sqlite:/var/lib/sc.db",
    }],
    ["in-memory sqlite", { url: "sqlite::memory:", baseDir: BASE }, {
      engine: "sqlite",
      path: ":memory:",
      description: "sqlite::memory:",
    }],
    ["mysql url", { url: "mysql://u%40x:p%3Aw@h.example:3307/db1", env: {}, baseDir: BASE }, {
      engine: "mysql",
      config: { host: "h.example", port: 3307, user: "u@x", password: "p:w", database: "db1" },
    }],
    ["mysql url, default port", { url: "mysql://u:p@h/db1", baseDir: BASE }, {
      engine: "mysql",
      config: { host: "h", port: 3306, user: "u", password: "p", database: "db1" },
    }],
    ["env", { env: MYSQL_ENV, baseDir: BASE }, {
      engine: "mysql",
      config: {
        host: "db.internal",
        port: 3306,
        user: "chat",
        password: "s3cret",
        database: "secure_chat",
      },
    }],
    ["env with port", { env: { ...MYSQL_ENV, DB_PORT: "3310" }, baseDir: BASE }, {
      engine: "mysql",
      config: {
        host: "db.internal",
        port: 3310,
        user: "chat",
        password: "s3cret",
        database: "secure_chat",
      },
    }],
  ];
  for (const [label, options, expected] of cases) {
    assert.deepEqual(resolveDatabase(options), expected, label);
  }
});

Deno.test("resolveDatabase() refuses malformed settings with INVALID_INPUT, never echoing them", () => {
  const cases: [string, Parameters<typeof resolveDatabase>[0]][] = [
    ["unknown scheme", { url: "postgres://u:hunter2@h/db" }],
    ["empty sqlite path", { url: "sqlite:" }],
    ["mysql without database", { url: "mysql://u:hunter2@h:3306/" }],
    ["mysql without user", { url: "mysql://h:3306/db" }],
    ["mysql bad port", { url: "mysql://u:hunter2@h:99999/db" }],
    ["env without user", { env: { DB_HOST: "h", DB_NAME: "db", DB_PASSWORD: "hunter2" } }],
    ["env without name", { env: { DB_HOST: "h", DB_USER: "u", DB_PASSWORD: "hunter2" } }],
    ["env bad port", { env: { ...MYSQL_ENV, DB_PASSWORD: "hunter2", DB_PORT: "33o6" } }],
    ["env port zero", { env: { ...MYSQL_ENV, DB_PASSWORD: "hunter2", DB_PORT: "0" } }],
  ];
  for (const [label, options] of cases) {
    assert.throws(() => resolveDatabase(options), (error: Error) => {
      assert.equal(codeOf(error), "INVALID_INPUT", label);
      assert.ok(!error.message.includes("hunter2"), `${label}: message echoes the password`);
      return true;
    });
  }
});

Deno.test("resolveDatabase() reads DB_* keys from baseDir/.env when no env is given", async () => {
  const dir = await Deno.makeTempDir();
  try {
    await Deno.writeTextFile(
      join(dir, ".env"),
      "# comment\nDB_HOST=db.from.file\nDB_USER=chat\nDB_PASSWORD='p w'\nDB_NAME=sc\n",
    );
    const target = resolveDatabase({ baseDir: dir });
    // The process environment wins; only check the file's values where it sets none.
    if (!Deno.env.get("DB_HOST")) {
      assert.deepEqual(target, {
        engine: "mysql",
        config: { host: "db.from.file", port: 3306, user: "chat", password: "p w", database: "sc" },
      });
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("openUserStore() creates the SQLite directory 0700 and file 0600 on first use", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const store = await openUserStore({ url: "sqlite:data/sub/securechat.db", baseDir: dir });
    assert.equal(store.description, "sqlite:data/sub/securechat.db");
    await store.close();
    assert.equal((await Deno.stat(join(dir, "data", "sub"))).mode! & 0o777, 0o700);
    assert.equal((await Deno.stat(join(dir, "data/sub/securechat.db"))).mode! & 0o777, 0o600);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("openUserStore() gives DB_UNAVAILABLE within seconds when MySQL does not answer", async () => {
  // A port nobody listens on: refused at once, as a stopped server is.
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const { port } = listener.addr as Deno.NetAddr;
  listener.close();
  const start = performance.now();
  const code = await openUserStore({ url: `mysql://u:hunter2@127.0.0.1:${port}/db` }).then(
    () => "opened",
    codeOf,
  );
  assert.equal(code, "DB_UNAVAILABLE");
  assert.ok(performance.now() - start < 10_000);
});

Deno.test("openUserStore() refuses a database whose schema is newer than the code", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const url = "sqlite:sc.db";
    await (await openUserStore({ url, baseDir: dir })).close();
    const { DatabaseSync } = await import("node:sqlite");
    const db = new DatabaseSync(join(dir, "sc.db"));
    db.exec("INSERT INTO schema_version (version, applied_at) VALUES (99, 0)");
    db.close();
    assert.equal(
      await openUserStore({ url, baseDir: dir }).then(() => "opened", codeOf),
      "INTERNAL",
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("openUserStore() migrates a version 1 SQLite file: accounts kept, e-mails no longer unique", async () => {
  const dir = await Deno.makeTempDir({ prefix: "securechat-migrate-" });
  try {
    const path = join(dir, "v1.db");
    // The version 1 table as released, with one account in it (its password: "password-1").
    const v1 = new DatabaseSync(path);
    v1.exec(
      `CREATE TABLE schema_version (version INTEGER PRIMARY KEY, applied_at INTEGER NOT NULL) STRICT;
      CREATE TABLE users (id INTEGER PRIMARY KEY, username TEXT NOT NULL COLLATE NOCASE UNIQUE,
        email TEXT NOT NULL COLLATE NOCASE UNIQUE, password_scheme TEXT NOT NULL,
        password_iterations INTEGER NOT NULL, password_salt BLOB NOT NULL,
        password_hash BLOB NOT NULL, created_at INTEGER NOT NULL, last_login_at INTEGER) STRICT;
      INSERT INTO schema_version VALUES (1, 0);`,
    );
    const salt = new Uint8Array(16);
    const hash = new Uint8Array(
      await crypto.subtle.digest(
        "SHA-256",
        new Uint8Array([...salt, ...new TextEncoder().encode("password-1")]),
      ),
    );
    v1.prepare(`INSERT INTO users (username, email, password_scheme, password_iterations,
      password_salt, password_hash, created_at) VALUES ('olga', 'olga@example.org', 'seed-sha256', 1, ?, ?, 0)`)
      .run(salt, hash);
    v1.close();
    const store = await openUserStore({ url: `sqlite:${path}`, env: {} });
    try {
      const olga = await store.login("olga", "password-1");
      assert.equal(olga.email, "olga@example.org");
      assert.equal(olga.credentialEpoch, 0, "an old account's epoch starts at its creation time");
      await store.register({ email: "olga@example.org", username: "oleg", password: "password-2" });
      assert.equal((await store.login("olga", "password-1")).notices?.length, 1);
    } finally {
      await store.close();
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
