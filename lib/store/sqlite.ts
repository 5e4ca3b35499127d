/** SQLite through the runtime's built-in node:sqlite: the default store, one local file. */
import { DatabaseSync } from "node:sqlite";
import { dirname } from "node:path";
import { SecureChatError } from "../errors.ts";
import type { Failure, SqlDatabase, SqlRow, SqlValue } from "./sql.ts";

/** Primary result codes (the low byte of the extended code) that mean "not now", not "wrong". */
const UNAVAILABLE_CODES = new Set([
  5, // SQLITE_BUSY: another process holds the lock past busy_timeout
  6, // SQLITE_LOCKED
  8, // SQLITE_READONLY
  10, // SQLITE_IOERR
  13, // SQLITE_FULL
  14, // SQLITE_CANTOPEN
]);
const SQLITE_CONSTRAINT_UNIQUE = 2067;

/**
 * Opens (creating on first use) the database at `path`, an absolute path or ":memory:".
 * The directory is created 0700 and the file 0600: it holds password hashes.
 * @throws DB_UNAVAILABLE the file cannot be created or opened
 */
export function openSqlite(path: string, description: string): SqlDatabase {
  let db: DatabaseSync;
  try {
    if (path !== ":memory:") {
      Deno.mkdirSync(dirname(path), { recursive: true, mode: 0o700 });
      // SQLite would create the file with the umask's 0644; make it first, owner-only.
      Deno.openSync(path, { create: true, write: true, mode: 0o600 }).close();
    }
    db = new DatabaseSync(path);
    // WAL lets a reader and a writer in other processes proceed together; busy_timeout makes
    // a briefly held lock a short wait rather than an error; foreign keys make a deleted
    // account take its notices and waiting messages with it, as InnoDB does. synchronous =
    // FULL syncs the WAL at every commit: a message the sender was told is queued survives a
    // power cut, not just a crash (PROTOCOL §6.6; NORMAL would only survive the crash).
    db.exec(
      "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; PRAGMA busy_timeout = 5000; " +
        "PRAGMA foreign_keys = ON;",
    );
  } catch (error) {
    throw new SecureChatError("DB_UNAVAILABLE", `cannot open the user database ${description}`, {
      cause: error,
      hint: "check that the directory is writable by this user",
    });
  }
  return new SqliteDatabase(db, description);
}

class SqliteDatabase implements SqlDatabase {
  readonly dialect = "sqlite";
  #db: DatabaseSync;
  #open = true;

  constructor(db: DatabaseSync, readonly description: string) {
    this.#db = db;
  }

  // deno-lint-ignore require-await -- node:sqlite is synchronous; the interface is not
  async execute(sql: string, params: readonly SqlValue[] = []): Promise<SqlRow[]> {
    return this.#db.prepare(sql).all(...params) as SqlRow[];
  }

  // deno-lint-ignore require-await -- see execute()
  async change(sql: string, params: readonly SqlValue[] = []): Promise<number> {
    return Number(this.#db.prepare(sql).run(...params).changes);
  }

  classify(error: unknown): Failure {
    const errcode = (error as { errcode?: unknown })?.errcode;
    if (typeof errcode !== "number") return "other";
    if (errcode === SQLITE_CONSTRAINT_UNIQUE) return "duplicate";
    return UNAVAILABLE_CODES.has(errcode & 0xff) ? "unavailable" : "other";
  }

  // deno-lint-ignore require-await -- see execute()
  async close(): Promise<void> {
    if (!this.#open) return;
    this.#open = false;
    this.#db.close();
  }
}
