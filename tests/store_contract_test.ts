/**
 * One contract, two engines: every case below runs against SQLite and against a real MariaDB
 * (started by testkit/mariadb.ts, or SECURECHAT_TEST_MYSQL_URL).
 */
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { codeOf } from "../lib/errors.ts";
import { fromHex, timingSafeEqual, toHex, utf8 } from "../lib/bytes.ts";
import { PBKDF2_ITERATIONS, verifyPassword } from "../lib/crypto/password.ts";
import { openUserStore, resolveDatabase } from "../lib/store/open.ts";
import { SCHEMA_VERSION } from "../lib/store/schema.ts";
import { openMysql } from "../lib/store/mysql.ts";
import { openSqlite } from "../lib/store/sqlite.ts";
import { query, type SqlDatabase, type SqlRow } from "../lib/store/sql.ts";
import type { AccountAdmin, UserStore } from "../lib/store/user_store.ts";
import { mysqlTestTarget, startMariaDb } from "../testkit/mariadb.ts";
import { skipMysql } from "./helpers/mariadb.ts";
import { makePki } from "../testkit/pki.ts";
import { parseCertificate } from "../lib/pki/certificate.ts";
import { serialHex } from "../lib/pki/crl.ts";

interface Context {
  url: string;
  /** The same database without the store around it, for reading and planting raw rows. */
  raw: SqlDatabase;
  /** A user name no other case uses (the MySQL database is shared by all cases). */
  name(label: string): string;
}

interface Backend {
  name: string;
  ignore: boolean;
  setup(): Promise<{ url: string; teardown(): Promise<void> }>;
}

const PASSWORD = "correct horse battery staple";

async function withStore<T>(ctx: Context, body: (store: UserStore) => Promise<T>): Promise<T> {
  const store = await openUserStore({ url: ctx.url, env: {} });
  try {
    return await body(store);
  } finally {
    await store.close();
  }
}

async function rejectsWith(promise: Promise<unknown>, code: string): Promise<Error> {
  const error = await promise.then(
    () => assert.fail(`expected ${code}, but it succeeded`),
    (e: unknown) => e,
  );
  assert.equal(codeOf(error), code, String(error));
  return error as Error;
}

async function rowOf(ctx: Context, username: string): Promise<SqlRow | undefined> {
  return (await query(ctx.raw, "SELECT * FROM users WHERE username = ?", [username]))[0];
}

function seedHash(salt: Uint8Array, password: string): Uint8Array {
  // Written independently of lib/: what the seed stored (as hex) was SHA-256(salt || password).
  return fromHex(createHash("sha256").update(salt).update(password, "utf8").digest("hex"));
}

async function plantRow(
  ctx: Context,
  username: string,
  hash: { scheme: string; iterations: number; salt: Uint8Array; hash: Uint8Array },
) {
  await query(
    ctx.raw,
    `INSERT INTO users (username, email, password_scheme, password_iterations, password_salt,
      password_hash, created_at) VALUES (?, ?, ?, ?, ?, ?, ?)`,
    [username, `${username}@example.org`, hash.scheme, hash.iterations, hash.salt, hash.hash, 1],
  );
}

/**
 * The PBKDF2 derivations `fn` makes (name, hash, iterations of each), seen by wrapping
 * crypto.subtle.deriveBits for its duration: work done, not time taken, which a busy
 * machine cannot blur.
 */
async function pbkdf2Calls(fn: () => Promise<unknown>): Promise<string[]> {
  const calls: string[] = [];
  const real = crypto.subtle.deriveBits;
  crypto.subtle.deriveBits = function (this: SubtleCrypto, ...args) {
    const params = args[0] as Pbkdf2Params;
    calls.push(`${params.name} ${params.hash} ${params.iterations}`);
    return real.apply(this, args);
  } as SubtleCrypto["deriveBits"];
  try {
    await fn().catch(() => {});
  } finally {
    crypto.subtle.deriveBits = real;
  }
  return calls;
}

const CASES: { name: string; run(ctx: Context): Promise<void> }[] = [
  {
    name: "register() returns the account and login() accepts its password",
    run: (ctx) =>
      withStore(ctx, async (store) => {
        const username = ctx.name("Alice");
        const before = Date.now();
        const account = await store.register({
          email: `${username}@example.org`,
          username,
          password: PASSWORD,
        });
        assert.equal(account.username, username);
        assert.equal(account.email, `${username}@example.org`);
        assert.ok(account.createdAt.getTime() >= before);
        assert.equal(account.lastLoginAt, null);
        const login = await store.login(username, PASSWORD);
        assert.equal(login.username, username);
        assert.equal(login.createdAt.getTime(), account.createdAt.getTime());
        assert.ok(login.lastLoginAt && login.lastLoginAt.getTime() >= account.createdAt.getTime());
        assert.equal(
          Number((await rowOf(ctx, username))?.last_login_at),
          login.lastLoginAt.getTime(),
        );
      }),
  },
  {
    name: "login() finds the user name in any case and returns it as registered",
    run: (ctx) =>
      withStore(ctx, async (store) => {
        const username = ctx.name("MixedCase");
        await store.register({ email: `${username}@example.org`, username, password: PASSWORD });
        assert.equal((await store.login(username.toUpperCase(), PASSWORD)).username, username);
      }),
  },
  {
    name: "register() refuses a taken user name, in any case, with USER_EXISTS",
    run: (ctx) =>
      withStore(ctx, async (store) => {
        const username = ctx.name("bob");
        await store.register({ email: `${username}@example.org`, username, password: PASSWORD });
        const other = ctx.name("other");
        for (const name of [username, username.toUpperCase()]) {
          await rejectsWith(
            store.register({ email: `${other}@example.org`, username: name, password: PASSWORD }),
            "USER_EXISTS",
          );
        }
        assert.equal((await rowOf(ctx, username))?.email, `${username}@example.org`);
      }),
  },
  {
    name: "register() accepts an e-mail address another account gave, and tells that owner once",
    run: (ctx) =>
      withStore(ctx, async (store) => {
        const owner = ctx.name("owner");
        const email = `${owner}@example.org`;
        await store.register({ email, username: owner, password: PASSWORD });
        const second = ctx.name("second");
        // The same answer as for a fresh address: registration is no oracle for "is it taken?".
        const account = await store.register({
          email: email.toUpperCase(),
          username: second,
          password: PASSWORD,
        });
        assert.equal(account.username, second);
        assert.deepEqual((await store.login(second, PASSWORD)).notices, []);
        const notices = (await store.login(owner, PASSWORD)).notices ?? [];
        assert.equal(notices.length, 1);
        assert.match(notices[0], new RegExp(`e-mail address of your account .*"${second}"`));
        assert.deepEqual((await store.login(owner, PASSWORD)).notices, [], "told once");
      }),
  },
  {
    name: "register() lets exactly one of two simultaneous claims on a name win",
    run: (ctx) =>
      withStore(ctx, async (store) => {
        const username = ctx.name("race");
        const results = await Promise.allSettled([
          store.register({ email: `a.${username}@example.org`, username, password: PASSWORD }),
          store.register({
            email: `b.${username}@example.org`,
            username: username.toUpperCase(),
            password: PASSWORD,
          }),
        ]);
        assert.deepEqual(results.map((r) => r.status).sort(), ["fulfilled", "rejected"]);
        const rejected = results.find((r) => r.status === "rejected") as PromiseRejectedResult;
        assert.equal(codeOf(rejected.reason), "USER_EXISTS");
      }),
  },
  {
    name: "register() refuses invalid fields with INVALID_INPUT and stores nothing",
    run: (ctx) =>
      withStore(ctx, async (store) => {
        const ok = { email: "valid@example.org", username: ctx.name("valid"), password: PASSWORD };
        const cases = [
          { username: "ab" },
          { username: "a".repeat(33) },
          { username: "_leading" },
          { username: "alice'; DROP TABLE users;--" },
          { username: 'bob" OR 1=1 --' },
          { username: "name with space" },
          { username: "ünïcode" },
          { email: "not-an-email" },
          { email: "a@b" },
          { email: `${"a".repeat(250)}@example.org` },
          { password: "1234567" },
          { password: "x".repeat(1025) },
        ];
        for (const bad of cases) {
          await rejectsWith(store.register({ ...ok, ...bad }), "INVALID_INPUT");
        }
        assert.equal(await rowOf(ctx, ok.username), undefined);
        // The table survived the injection-shaped names.
        assert.ok(Array.isArray(await query(ctx.raw, "SELECT COUNT(*) AS n FROM users")));
      }),
  },
  {
    name: "register() stores quotes and SQL in fields as plain data",
    run: (ctx) =>
      withStore(ctx, async (store) => {
        const username = ctx.name("quote");
        const email = `o'brien--${username};DROP.TABLE@example.org`;
        await store.register({ email, username, password: `'); DROP TABLE users;--` });
        assert.equal((await rowOf(ctx, username))?.email, email);
        assert.equal((await store.login(username, `'); DROP TABLE users;--`)).email, email);
      }),
  },
  {
    name: "login() fails unknown user and wrong password alike with AUTH_FAIL",
    run: (ctx) =>
      withStore(ctx, async (store) => {
        const username = ctx.name("carol");
        await store.register({ email: `${username}@example.org`, username, password: PASSWORD });
        const attempts: [string, string][] = [
          [username, "wrong password"],
          [username, PASSWORD.toUpperCase()],
          [username, PASSWORD + " "],
          [username, ""],
          [ctx.name("nobody"), PASSWORD],
          ["alice'; DROP TABLE users;--", PASSWORD],
          ["' OR '1'='1", "' OR '1'='1"],
          ["", ""],
          [username, "x".repeat(5000)],
        ];
        const messages = new Set<string>();
        for (const [name, password] of attempts) {
          messages.add((await rejectsWith(store.login(name, password), "AUTH_FAIL")).message);
        }
        assert.equal(messages.size, 1, `messages differ: ${[...messages].join(" | ")}`);
        assert.ok((await rowOf(ctx, username))?.last_login_at === null);
      }),
  },
  {
    name: "login() does the same PBKDF2 work for an unknown user as for a wrong password",
    run: (ctx) =>
      withStore(ctx, async (store) => {
        const username = ctx.name("timing");
        await store.register({ email: `${username}@example.org`, username, password: PASSWORD });
        // Without the dummy hash an unknown name costs no PBKDF2 (~1 ms against ~100 ms),
        // which tells an attacker which names exist.
        const expected = [`PBKDF2 SHA-256 ${PBKDF2_ITERATIONS}`];
        assert.deepEqual(
          await pbkdf2Calls(() => store.login(username, "wrong password")),
          expected,
        );
        const unknown = () => store.login(ctx.name("ghost"), "wrong password");
        assert.deepEqual(await pbkdf2Calls(unknown), expected, "unknown user");
        const invalid = () => store.login("no such name!", "wrong password");
        assert.deepEqual(await pbkdf2Calls(invalid), expected, "invalid user name");
      }),
  },
  {
    name: "register() stores a salted PBKDF2 hash and nothing plaintext-equivalent",
    run: (ctx) =>
      withStore(ctx, async (store) => {
        const [first, second] = [ctx.name("dave"), ctx.name("erin")];
        for (const username of [first, second]) {
          await store.register({ email: `${username}@example.org`, username, password: PASSWORD });
        }
        const [a, b] = [await rowOf(ctx, first), await rowOf(ctx, second)];
        assert.ok(a && b);
        assert.equal(a.password_scheme, "pbkdf2-sha256");
        assert.equal(Number(a.password_iterations), PBKDF2_ITERATIONS);
        const salt = new Uint8Array(a.password_salt as Uint8Array);
        const hash = new Uint8Array(a.password_hash as Uint8Array);
        assert.equal(salt.length, 16);
        assert.equal(hash.length, 32);
        // Same password, different salt and hash: no precomputation shortcut across users.
        assert.notEqual(toHex(salt), toHex(new Uint8Array(b.password_salt as Uint8Array)));
        assert.notEqual(toHex(hash), toHex(new Uint8Array(b.password_hash as Uint8Array)));
        const plain = toHex(utf8(PASSWORD));
        for (const [column, value] of Object.entries(a)) {
          const text = value instanceof Uint8Array ? toHex(value) : String(value);
          assert.ok(
            !text.includes(plain) && !text.includes(PASSWORD),
            `${column} holds the password`,
          );
        }
        for (const fast of [seedHash(new Uint8Array(), PASSWORD), seedHash(salt, PASSWORD)]) {
          assert.notEqual(toHex(hash), toHex(fast));
        }
        assert.ok(
          await verifyPassword(PASSWORD, {
            scheme: "pbkdf2-sha256",
            iterations: PBKDF2_ITERATIONS,
            salt,
            hash,
          }),
        );
      }),
  },
  {
    name: "login() accepts a seed-scheme row and re-hashes it with PBKDF2",
    run: (ctx) =>
      withStore(ctx, async (store) => {
        const username = ctx.name("legacy");
        const salt = crypto.getRandomValues(new Uint8Array(16));
        await plantRow(ctx, username, {
          scheme: "seed-sha256",
          iterations: 1,
          salt,
          hash: seedHash(salt, "hunter2"),
        });
        await rejectsWith(store.login(username, "hunter3"), "AUTH_FAIL");
        assert.equal((await rowOf(ctx, username))?.password_scheme, "seed-sha256");
        // Shorter than today's minimum: an old password keeps working after the upgrade.
        await store.login(username, "hunter2");
        const row = await rowOf(ctx, username);
        assert.ok(row);
        assert.equal(row.password_scheme, "pbkdf2-sha256");
        assert.equal(Number(row.password_iterations), PBKDF2_ITERATIONS);
        const upgraded = {
          scheme: "pbkdf2-sha256" as const,
          iterations: PBKDF2_ITERATIONS,
          salt: new Uint8Array(row.password_salt as Uint8Array),
          hash: new Uint8Array(row.password_hash as Uint8Array),
        };
        assert.notEqual(toHex(upgraded.salt), toHex(salt));
        assert.ok(await verifyPassword("hunter2", upgraded));
        assert.ok(row.last_login_at !== null);
        assert.equal((await store.login(username, "hunter2")).username, username);
      }),
  },
  {
    name: "login() raises a PBKDF2 row with too few iterations to today's count",
    run: (ctx) =>
      withStore(ctx, async (store) => {
        const username = ctx.name("weak");
        const salt = crypto.getRandomValues(new Uint8Array(16));
        const key = await crypto.subtle.importKey(
          "raw",
          utf8(PASSWORD) as BufferSource,
          "PBKDF2",
          false,
          [
            "deriveBits",
          ],
        );
        const hash = new Uint8Array(
          await crypto.subtle.deriveBits(
            { name: "PBKDF2", hash: "SHA-256", salt, iterations: 1000 },
            key,
            256,
          ),
        );
        await plantRow(ctx, username, { scheme: "pbkdf2-sha256", iterations: 1000, salt, hash });
        await store.login(username, PASSWORD);
        assert.equal(Number((await rowOf(ctx, username))?.password_iterations), PBKDF2_ITERATIONS);
      }),
  },
  {
    name: "openUserStore() finds accounts again after close and reopen",
    run: async (ctx) => {
      const username = ctx.name("frank");
      await withStore(
        ctx,
        (store) =>
          store.register({ email: `${username}@example.org`, username, password: PASSWORD }),
      );
      await withStore(ctx, (store) => store.login(username, PASSWORD));
      const [row] = await query(ctx.raw, "SELECT MAX(version) AS v FROM schema_version");
      assert.equal(Number(row.v), SCHEMA_VERSION);
    },
  },
  {
    name: "keys: each device's bundle is handed out with each of its one-time prekeys exactly once",
    run: async (ctx) => {
      const user = ctx.name("kim");
      const [d1, d2] = ["00000000000000d1", "00000000000000d2"];
      await withStore(ctx, async (store) => {
        const keys = store.keys!;
        assert.deepEqual(await keys.fetch(user, new Set()), [], "no device yet");
        const cert = Uint8Array.of(1, 2, 3);
        const opks = [5, 3, 4].map((id) => ({ id, pub: new Uint8Array(32).fill(id) }));
        assert.equal(
          (await keys.publish(user, d1, cert, undefined, opks)).left,
          0,
          "no prekeys for a device without a bundle",
        );
        assert.equal((await keys.publish(user, d1, cert, '{"b":1}', opks)).left, 3);
        assert.equal(
          (await keys.publish(user, d1, cert, undefined, [opks[0]])).left,
          3,
          "ids are unique per device",
        );
        await new Promise((r) => setTimeout(r, 2)); // d2 is the more recent device
        assert.equal((await keys.publish(user, d2, cert, '{"b":2}', [opks[0]])).left, 1);
        const got = await Promise.all([1, 2, 3].map(() => keys.fetch(user, new Set([d2]))));
        for (const devices of got) {
          assert.deepEqual(devices.map((d) => d.device).sort(), [d1, d2]);
          assert.equal(devices.find((d) => d.device === d2)!.keys, undefined, "d2 was known");
        }
        const of1 = got.map((devices) => devices.find((d) => d.device === d1)!.keys!);
        assert.deepEqual(
          of1.map((k) => k.opk!.id).sort(),
          [3, 4, 5],
          "each prekey once, even when asked at once",
        );
        assert.equal(of1[0].bundle, '{"b":1}');
        assert.deepEqual([...of1[0].cert], [1, 2, 3]);
        const last = await keys.fetch(user.toUpperCase(), new Set());
        assert.equal(last.find((d) => d.device === d1)!.keys!.opk, undefined, "out of prekeys");
        assert.equal(last.find((d) => d.device === d2)!.keys!.opk!.id, 5, "names fold case");
        // A ninth device drops the least recently published one, with its prekeys.
        for (let i = 0; i < 6; i++) {
          await new Promise((r) => setTimeout(r, 2)); // distinct publication times
          const device = `00000000000000e${i}`;
          assert.deepEqual((await keys.publish(user, device, cert, "{}", [])).evicted, []);
        }
        await new Promise((r) => setTimeout(r, 2));
        const ninth = await keys.publish(user, "00000000000000f0", cert, "{}", []);
        assert.deepEqual(ninth.evicted, [d1], "the oldest device goes");
        const after = await keys.fetch(user, new Set());
        assert.equal(after.length, 8);
        assert.ok(!after.some((d) => d.device === d1));
        assert.equal((await keys.publish(user, d1, cert, undefined, opks)).left, 0);
      });
    },
  },
  {
    name:
      "keys: retireCertifiedBy() removes the devices last published under those serials, with their prekeys, by user",
    run: async (ctx) => {
      const [kim, lee] = [ctx.name("kim"), ctx.name("lee")];
      const [d1, d2, d3] = ["00000000000000a1", "00000000000000a2", "00000000000000a3"];
      const pki = await makePki([kim, `${kim}x`, lee]);
      try {
        const certOf = async (name: string) => (await pki.identity(name)).certDer;
        const [revoked, reissued, other] = [
          await certOf(kim),
          await certOf(`${kim}x`),
          await certOf(lee),
        ];
        const serialOf = (der: Uint8Array) => serialHex(parseCertificate(der).serial);
        await withStore(ctx, async (store) => {
          const keys = store.keys!;
          await keys.publish(kim, d1, revoked, "{}", []);
          await keys.publish(kim, d2, revoked, "{}", []);
          await keys.publish(lee, d1, other, "{}", []);
          // d3 published under the old certificate, then again under a re-issued one: the
          // newer certificate is the one that vouches for it now.
          await keys.publish(kim, d3, revoked, "{}", []);
          await keys.publish(kim, d3, reissued, "{}", []);
          // More rows than one page of the scan, sorted before kim's, none a certificate.
          const pad = Array.from(
            { length: 600 },
            (_, i) => [ctx.name("apad"), `${i}`.padStart(16, "0")],
          );
          await query(
            ctx.raw,
            `INSERT INTO e2e_devices (username, device, cert, bundle, lobby, updated_at) VALUES ${
              pad.map(() => "(?, ?, ?, '{}', 0, 1)").join(", ")
            }`,
            pad.flatMap(([user, device]) => [user, device, Uint8Array.of(1)]),
          );
          await keys.publish(kim, d1, revoked, undefined, [{ id: 1, pub: new Uint8Array(32) }]);
          const found = (await keys.retireCertifiedBy(new Set([serialOf(revoked)]))).removed;
          assert.deepEqual(
            [...found].map(([user, devices]) => [user, [...devices].sort()]),
            [[kim, [d1, d2]]],
          );
          // Gone from what askers are handed, and from the count toward MAX_DEVICES.
          assert.deepEqual((await keys.fetch(kim, new Set())).map((d) => d.device), [d3]);
          assert.deepEqual(await keys.retireCertifiedBy(new Set([serialOf(revoked)])), {
            removed: new Map(),
          });
          // Its prekeys went with it: a device published again under d1 starts with none.
          assert.equal((await keys.publish(kim, d1, reissued, "{}", [])).left, 0);
          const both = (await keys.retireCertifiedBy(new Set([serialOf(reissued), "00ff"])))
            .removed;
          assert.deepEqual(
            [...both].map(([user, devices]) => [user, [...devices].sort()]),
            [[kim, [d1, d3]]],
          );
          assert.deepEqual(await keys.fetch(kim, new Set()), []);
          assert.deepEqual((await keys.fetch(lee, new Set())).map((d) => d.device), [d1]);
          assert.deepEqual(await keys.retireCertifiedBy(new Set()), { removed: new Map() });
        });
      } finally {
        await Deno.remove(pki.dir, { recursive: true });
      }
    },
  },
  {
    name:
      "keys: fetch() removes and leaves out a device whose certificate the caller says is revoked, keeping its prekeys from askers",
    run: async (ctx) => {
      const [kim] = [ctx.name("kim")];
      const [d1, d2] = ["00000000000000b1", "00000000000000b2"];
      const pki = await makePki([kim, `${kim}x`]);
      try {
        const [revoked, valid] = [
          (await pki.identity(kim)).certDer,
          (await pki.identity(`${kim}x`)).certDer,
        ];
        const isRevoked = (cert: Uint8Array) => timingSafeEqual(cert, revoked);
        await withStore(ctx, async (store) => {
          const keys = store.keys!;
          const opk = (id: number) => ({ id, pub: new Uint8Array(32).fill(id) });
          await keys.publish(kim, d1, revoked, "{}", [opk(1)]);
          await keys.publish(kim, d2, valid, "{}", [opk(2)]);
          const got = await keys.fetch(kim.toUpperCase(), new Set(), isRevoked);
          assert.deepEqual(got.map((d) => [d.device, d.keys?.opk?.id]), [[d2, 2]]);
          // Removed, not only hidden: it no longer counts, and its prekey was never handed out.
          assert.deepEqual((await keys.fetch(kim, new Set())).map((d) => d.device), [d2]);
          assert.equal((await keys.publish(kim, d1, valid, "{}", [])).left, 0);
        });
      } finally {
        await Deno.remove(pki.dir, { recursive: true });
      }
    },
  },
  {
    name:
      "keys: publish() removes a device whose certificate the caller says is revoked before dropping the oldest valid one to make room",
    run: async (ctx) => {
      const [kim] = [ctx.name("kim")];
      const pki = await makePki([kim, `${kim}x`]);
      try {
        const [revoked, valid] = [
          (await pki.identity(kim)).certDer,
          (await pki.identity(`${kim}x`)).certDer,
        ];
        const isRevoked = (cert: Uint8Array) => timingSafeEqual(cert, revoked);
        const device = (i: number) => `00000000000000c${i}`;
        await withStore(ctx, async (store) => {
          const keys = store.keys!;
          // Eight devices, the second under a certificate revoked while no server adopted it.
          for (let i = 0; i < 8; i++) {
            await keys.publish(kim, device(i), i === 1 ? revoked : valid, "{}", []);
            await new Promise((r) => setTimeout(r, 2)); // distinct publication times
          }
          const ninth = await keys.publish(kim, device(8), valid, "{}", [], false, isRevoked);
          // On 8fda5f5 the oldest valid device went and the revoked one stayed.
          assert.deepEqual(ninth.evicted, [], "the revoked device made room");
          const listed = (await keys.fetch(kim, new Set())).map((d) => d.device).sort();
          assert.deepEqual(listed, [0, 2, 3, 4, 5, 6, 7, 8].map(device));
        });
      } finally {
        await Deno.remove(pki.dir, { recursive: true });
      }
    },
  },
  {
    name: "description names the database without its password",
    run: (ctx) =>
      withStore(ctx, (store) => {
        const password = new URL(ctx.url.replace(/^sqlite:/, "file:")).password;
        assert.equal(store.description, ctx.raw.description);
        if (password) assert.ok(!store.description.includes(password));
        assert.match(store.description, /^(sqlite:|mysql:\/\/[^:@]+@)/);
        return Promise.resolve();
      }),
  },
];

function openRaw(url: string): SqlDatabase {
  const target = resolveDatabase({ url });
  return target.engine === "sqlite"
    ? openSqlite(target.path, target.description)
    : openMysql(target.config);
}

const mysqlTarget = mysqlTestTarget();

/** The operator's side (`securechat user`, issue 17 item 5), on both engines alike. */
async function withAdmin<T>(
  ctx: Context,
  body: (store: UserStore & AccountAdmin) => Promise<T>,
): Promise<T> {
  const store = await openUserStore({ url: ctx.url, env: {} });
  try {
    return await body(store);
  } finally {
    await store.close();
  }
}

const ADMIN_CASES: { name: string; run(ctx: Context): Promise<void> }[] = [
  {
    name: "list() returns accounts by name with their times; lastLoginAt null before a login",
    run: (ctx) =>
      withAdmin(ctx, async (store) => {
        const [a, b] = [ctx.name("lista"), ctx.name("listb")];
        await store.register({ email: `${b}@example.org`, username: b, password: PASSWORD });
        await store.register({ email: `${a}@example.org`, username: a, password: PASSWORD });
        await store.login(a, PASSWORD);
        const mine = (await store.list()).filter((x) => x.username === a || x.username === b);
        assert.deepEqual(mine.map((x) => x.username), [a, b]);
        assert.ok(mine[0].lastLoginAt instanceof Date);
        assert.equal(mine[1].lastLoginAt, null);
        assert.ok(mine.every((x) => x.createdAt.getTime() > 0));
      }),
  },
  {
    name: "setPassword() replaces the password at once, keeps the length rule, refuses no account",
    run: (ctx) =>
      withAdmin(ctx, async (store) => {
        const username = ctx.name("reset");
        await store.register({ email: `${username}@example.org`, username, password: PASSWORD });
        await store.setPassword(username.toUpperCase(), "a brand new passphrase");
        await rejectsWith(store.login(username, PASSWORD), "AUTH_FAIL");
        await store.login(username, "a brand new passphrase");
        await rejectsWith(store.setPassword(username, "short"), "INVALID_INPUT");
        await rejectsWith(store.setPassword(ctx.name("nobody"), PASSWORD), "INVALID_INPUT");
      }),
  },
  {
    name: "changePassword() needs the old password, applies the rules and retires the old one",
    run: (ctx) =>
      withAdmin(ctx, async (store) => {
        const username = ctx.name("changer");
        const created = await store.register({
          email: `${username}@example.org`,
          username,
          password: PASSWORD,
        });
        const epoch = created.credentialEpoch;
        assert.equal(await store.credentialEpoch(username), epoch);
        assert.equal((await store.login(username, PASSWORD)).credentialEpoch, epoch);
        const next = "a brand new passphrase";
        await rejectsWith(store.changePassword(username, "not the password", next), "AUTH_FAIL");
        await rejectsWith(store.changePassword(ctx.name("nobody"), PASSWORD, next), "AUTH_FAIL");
        await rejectsWith(store.changePassword(username, PASSWORD, "short"), "INVALID_INPUT");
        await rejectsWith(store.changePassword(username, PASSWORD, PASSWORD), "INVALID_INPUT");
        assert.equal(await store.credentialEpoch(username), epoch, "refusals change nothing");
        await store.login(username, PASSWORD);
        await store.changePassword(username, PASSWORD, next);
        await rejectsWith(store.login(username, PASSWORD), "AUTH_FAIL");
        assert.ok((await store.login(username, next)).credentialEpoch > epoch);
      }),
  },
  {
    name: "changePassword() is atomic: of two changes proving the same old password, one wins",
    run: (ctx) =>
      withAdmin(ctx, async (store) => {
        const username = ctx.name("racer");
        await store.register({ email: `${username}@example.org`, username, password: PASSWORD });
        const outcomes = await Promise.all(
          ["first new password", "second new password"].map((next) =>
            store.changePassword(username, PASSWORD, next).then(() => next, codeOf)
          ),
        );
        const winners = outcomes.filter((o) => o.endsWith("new password"));
        assert.equal(winners.length, 1, `outcomes: ${outcomes.join(", ")}`);
        assert.ok(outcomes.includes("AUTH_FAIL"), `outcomes: ${outcomes.join(", ")}`);
        await store.login(username, winners[0]);
      }),
  },
  {
    name:
      "setPassword() and remove() retire the credential epoch; a name registered again never repeats one",
    run: (ctx) =>
      withAdmin(ctx, async (store) => {
        const username = ctx.name("epoch");
        const email = `${username}@example.org`;
        const seen = [
          (await store.register({ email, username, password: PASSWORD }))
            .credentialEpoch,
        ];
        await store.setPassword(username, "a brand new passphrase");
        seen.push((await store.credentialEpoch(username))!);
        await store.remove(username);
        assert.equal(await store.credentialEpoch(username), null);
        seen.push((await store.register({ email, username, password: PASSWORD })).credentialEpoch);
        assert.ok(seen[0] < seen[1] && seen[1] < seen[2], `epochs ${seen.join(", ")}`);
      }),
  },
  {
    name:
      "login failures: counted atomically per subject, forgotten after the window, unlocked per user",
    run: (ctx) =>
      withAdmin(ctx, async (store) => {
        const failures = store.failures!;
        const user = ctx.name("locked").toLowerCase();
        const cert = `cert:${toHex(crypto.getRandomValues(new Uint8Array(32)))}`;
        const other = `cert:${toHex(crypto.getRandomValues(new Uint8Array(32)))}`;
        const account = `account:${user}`;
        const window = 60_000;
        // 20 failures recorded at once (as 20 nodes might) all count: no lost update.
        await Promise.all(
          Array.from({ length: 20 }, () => failures.fail([cert, account], user, 1000, window)),
        );
        let counts = await failures.read([cert, account, other]);
        assert.deepEqual(counts.get(cert), { failures: 20, last: 1000 });
        assert.deepEqual(counts.get(account), { failures: 20, last: 1000 });
        assert.equal(counts.has(other), false);
        // A failure after the window starts the count again.
        await failures.fail([cert], user, 1000 + window, window);
        assert.equal((await failures.read([cert])).get(cert)?.failures, 1);
        await failures.fail([other], ctx.name("someone").toLowerCase(), 1000, window);
        await failures.clear([cert]);
        assert.equal((await failures.read([cert])).has(cert), false);
        await failures.fail([cert], user, 2000, window);
        // The operator's unlock finds the account and the certificates by the user, in any case.
        assert.equal(await store.unlock(user.toUpperCase()), 2);
        counts = await failures.read([cert, account, other]);
        assert.deepEqual([...counts.keys()], [other], "another user's count stays");
        await failures.prune(1001);
        assert.equal((await failures.read([other])).size, 0);
      }),
  },
  {
    name: "remove() deletes an account so its name and e-mail can be registered again",
    run: (ctx) =>
      withAdmin(ctx, async (store) => {
        const username = ctx.name("gone");
        const email = `${username}@example.org`;
        await store.register({ email, username, password: PASSWORD });
        assert.equal(await store.remove(username), true);
        assert.equal(await store.remove(username), false);
        await rejectsWith(store.login(username, PASSWORD), "AUTH_FAIL");
        await store.register({ email, username, password: PASSWORD });
      }),
  },
];

/** A recipient account planted without a password hash: the queue only needs the row. */
async function plantUser(ctx: Context, label: string): Promise<string> {
  const username = ctx.name(label);
  await plantRow(ctx, username, {
    scheme: "pbkdf2-sha256",
    iterations: 1,
    salt: new Uint8Array(16),
    hash: new Uint8Array(32),
  });
  return username;
}

const LIMITS = { maxRecords: 5, maxAgeMs: 60_000 };
const item = (n: number) => JSON.stringify({ relay: { n } });
/**
 * An author whose certificate serial no other test's rows share (MariaDB tests share one
 * database): removeSignedUnder() deletes by serial across every recipient.
 */
const author = (name = "alice") => ({
  name,
  serial: toHex(crypto.getRandomValues(new Uint8Array(16))),
});
const ALICE = author();

/** Offline delivery (PROTOCOL §6.6): the queue in the same store, on both engines alike. */
const QUEUE_CASES: { name: string; run(ctx: Context): Promise<void> }[] = [
  {
    name: "queue: enqueue() keeps records in order per recipient; remove() deletes only those ids",
    run: (ctx) =>
      withStore(ctx, async (store) => {
        const queue = store.queue!;
        const [bob, carol] = [await plantUser(ctx, "qbob"), await plantUser(ctx, "qcarol")];
        const ids = [];
        for (let n = 0; n < 3; n++) ids.push(await queue.enqueue(bob, ALICE, item(n), LIMITS));
        const other = await queue.enqueue(carol, ALICE, item(9), LIMITS);
        assert.deepEqual([...ids].sort((a, b) => a - b), ids, "ids follow insertion");
        // Names are found in any case, as accounts are.
        const waiting = await queue.pending(bob.toUpperCase(), 100);
        assert.deepEqual(waiting.map((r) => [r.id, r.author, r.item]), [
          [ids[0], "alice", item(0)],
          [ids[1], "alice", item(1)],
          [ids[2], "alice", item(2)],
        ]);
        assert.deepEqual((await queue.pending(bob, 2)).map((r) => r.id), ids.slice(0, 2));
        assert.deepEqual((await queue.pending(bob, 100, ids[0])).map((r) => r.id), ids.slice(1));
        // Another user's id in the list is not bob's to delete.
        await queue.remove(bob, [ids[0], ids[1], other]);
        assert.deepEqual((await queue.pending(bob, 100)).map((r) => r.id), [ids[2]]);
        assert.deepEqual((await queue.pending(carol, 100)).map((r) => r.id), [other]);
      }),
  },
  {
    name: "queue: enqueue() refuses a name no account has with UNKNOWN_USER",
    run: (ctx) =>
      withStore(ctx, async (store) => {
        await rejectsWith(
          store.queue!.enqueue(ctx.name("nobody"), ALICE, item(0), LIMITS),
          "UNKNOWN_USER",
        );
        await rejectsWith(store.queue!.enqueue("../x", ALICE, item(0), LIMITS), "UNKNOWN_USER");
      }),
  },
  {
    name: "queue: a full queue refuses QUEUE_FULL; expired and removed records free their place",
    run: (ctx) =>
      withStore(ctx, async (store) => {
        const queue = store.queue!;
        const bob = await plantUser(ctx, "qfull");
        const t0 = Date.now();
        const first = await queue.enqueue(bob, ALICE, item(0), { ...LIMITS, maxAgeMs: 1000 }, t0);
        for (let n = 1; n < 5; n++) await queue.enqueue(bob, ALICE, item(n), LIMITS, t0);
        await rejectsWith(queue.enqueue(bob, ALICE, item(5), LIMITS, t0), "QUEUE_FULL");
        // Once the first has expired it neither counts nor is handed out.
        const later = t0 + 1000;
        assert.equal((await queue.pending(bob, 100, 0, later)).length, 4);
        assert.ok(!(await queue.pending(bob, 100, 0, later)).some((r) => r.id === first));
        const sixth = await queue.enqueue(bob, ALICE, item(5), LIMITS, later);
        await rejectsWith(queue.enqueue(bob, ALICE, item(6), LIMITS, later), "QUEUE_FULL");
        await queue.remove(bob, [sixth]);
        await queue.enqueue(bob, ALICE, item(6), LIMITS, later);
      }),
  },
  {
    name: "queue: purgeExpired() deletes expired records only",
    run: (ctx) =>
      withStore(ctx, async (store) => {
        const queue = store.queue!;
        const bob = await plantUser(ctx, "qpurge");
        const t0 = Date.now();
        await queue.enqueue(bob, ALICE, item(0), { ...LIMITS, maxAgeMs: 10 }, t0);
        const kept = await queue.enqueue(bob, ALICE, item(1), LIMITS, t0);
        assert.ok(await queue.purgeExpired(t0 + 10) >= 1);
        const rows = await query(
          ctx.raw,
          "SELECT id FROM message_queue WHERE user_id = (SELECT id FROM users WHERE username = ?)",
          [bob],
        );
        assert.deepEqual(rows.map((r) => Number(r.id)), [kept], "only the expired row is gone");
      }),
  },
  {
    name:
      "queue: removeSignedUnder() deletes every recipient's records signed under those serials, and says whose",
    run: (ctx) =>
      withStore(ctx, async (store) => {
        const queue = store.queue!;
        const [bob, carol] = [await plantUser(ctx, "qrbob"), await plantUser(ctx, "qrcarol")];
        const [revoked, reissued, other] = [author("dan"), author("dan"), author("erin")];
        await queue.enqueue(bob, revoked, item(0), LIMITS);
        const kept = await queue.enqueue(bob, reissued, item(1), LIMITS);
        await queue.enqueue(carol, revoked, item(2), LIMITS);
        const carols = await queue.enqueue(carol, other, item(3), LIMITS);
        const deleted = await queue.removeSignedUnder([revoked.serial, author().serial]);
        assert.deepEqual([...deleted], [["dan", 2]]);
        assert.deepEqual((await queue.pending(bob, 100)).map((r) => r.id), [kept]);
        assert.deepEqual((await queue.pending(carol, 100)).map((r) => r.id), [carols]);
        assert.deepEqual([...await queue.removeSignedUnder([revoked.serial])], []);
      }),
  },
  {
    name: "queue: a committed record outlives the store being closed and reopened",
    run: async (ctx) => {
      const bob = await plantUser(ctx, "qdurable");
      const id = await withStore(
        ctx,
        (store) => store.queue!.enqueue(bob, ALICE, item(7), LIMITS),
      );
      const again = await withStore(ctx, (store) => store.queue!.pending(bob, 100));
      assert.deepEqual(again.map((r) => [r.id, r.item]), [[id, item(7)]]);
    },
  },
  {
    name: "queue: deleting an account deletes what waits for it",
    run: (ctx) =>
      withAdmin(ctx, async (store) => {
        const bob = await plantUser(ctx, "qgone");
        await store.queue!.enqueue(bob, ALICE, item(0), LIMITS);
        const userId = Number((await rowOf(ctx, bob))!.id);
        assert.equal(await store.remove(bob), true);
        const left = await query(ctx.raw, "SELECT id FROM message_queue WHERE user_id = ?", [
          userId,
        ]);
        assert.deepEqual(left, []);
        assert.deepEqual(await store.queue!.pending(bob, 100), [], "nothing waits for no account");
      }),
  },
  {
    name: "queue: concurrent enqueues for one recipient never pass the bound",
    run: (ctx) =>
      withStore(ctx, async (store) => {
        const bob = await plantUser(ctx, "qrace");
        const outcomes = await Promise.all(
          Array.from(
            { length: 12 },
            (_, n) => store.queue!.enqueue(bob, ALICE, item(n), LIMITS).then(() => "ok", codeOf),
          ),
        );
        const stored = (await store.queue!.pending(bob, 100)).length;
        assert.ok(stored <= LIMITS.maxRecords, `${stored} stored, bound ${LIMITS.maxRecords}`);
        assert.equal(outcomes.filter((o) => o === "ok").length, stored, outcomes.join());
        assert.ok(
          outcomes.every((o) => ["ok", "QUEUE_FULL", "DB_UNAVAILABLE"].includes(o)),
          outcomes.join(),
        );
        assert.ok(outcomes.includes("QUEUE_FULL"), outcomes.join());
      }),
  },
];

const BACKENDS: Backend[] = [
  {
    name: "sqlite",
    ignore: false,
    async setup() {
      const dir = await Deno.makeTempDir({ prefix: "securechat-store-" });
      return {
        url: `sqlite:${dir}/nested/securechat.db`,
        teardown: () => Deno.remove(dir, { recursive: true }),
      };
    },
  },
  {
    name: "mysql",
    ignore: skipMysql(mysqlTarget, "the UserStore contract suite", "any"),
    async setup() {
      if (mysqlTarget.kind === "url") return { url: mysqlTarget.url, teardown: async () => {} };
      const server = await startMariaDb();
      return { url: server.url, teardown: server.dispose };
    },
  },
];

for (const backend of BACKENDS) {
  Deno.test({
    name: `UserStore contract (${backend.name})`,
    ignore: backend.ignore,
    async fn(t) {
      const { url, teardown } = await backend.setup();
      // The schema comes from the first store opened; the raw handle only reads and plants rows.
      await withStore({ url } as Context, () => Promise.resolve());
      const raw = openRaw(url);
      const run = toHex(crypto.getRandomValues(new Uint8Array(3)));
      let n = 0;
      const ctx: Context = { url, raw, name: (label) => `${label}_${run}_${n++}` };
      try {
        for (const c of [...CASES, ...ADMIN_CASES, ...QUEUE_CASES]) {
          await t.step(c.name, () => c.run(ctx));
        }
      } finally {
        await raw.close();
        await teardown();
      }
    },
  });
}
