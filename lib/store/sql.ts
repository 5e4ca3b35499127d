/**
 * The little that the user store needs from a SQL engine, so that one store implementation
 * (sql_user_store.ts) and one migration list (schema.ts) serve SQLite and MySQL alike.
 */
import { SecureChatError } from "../errors.ts";

export type Dialect = "sqlite" | "mysql";
/** Bound parameters only: statements never have values spliced into their text. */
export type SqlValue = string | number | Uint8Array | null;
export type SqlRow = Record<string, unknown>;

/** How a failed statement failed, as far as callers need to know. */
/**
 * `conflict`: the statement lost a race with a concurrent one (a deadlock, MariaDB's
 * auto-increment read under concurrent INSERT … SELECT) and was rolled back whole.
 */
export type Failure = "duplicate" | "unavailable" | "conflict" | "other";

export interface SqlDatabase {
  readonly dialect: Dialect;
  /** Where the data lives, without any password. */
  readonly description: string;
  /** Runs one statement with `?` placeholders; returns its rows (none for a write). */
  execute(sql: string, params?: readonly SqlValue[]): Promise<SqlRow[]>;
  /** Runs one write with `?` placeholders; returns how many rows it changed. */
  change(sql: string, params?: readonly SqlValue[]): Promise<number>;
  /** Sorts an error thrown by `execute` into what the engine says it was. */
  classify(error: unknown): Failure;
  close(): Promise<void>;
}

/**
 * Runs a statement and turns engine errors into securechat's codes. The store's only unique
 * key is the user name, so a duplicate always means the account exists.
 * @throws USER_EXISTS a unique key was violated
 * @throws DB_UNAVAILABLE the engine cannot be reached or is busy; retrying later may work
 * @throws INTERNAL any other failure (a bug, or a schema that is not ours)
 */
export async function query(
  db: SqlDatabase,
  sql: string,
  params: readonly SqlValue[] = [],
): Promise<SqlRow[]> {
  try {
    return await db.execute(sql, params);
  } catch (error) {
    throw codedFailure(db, error);
  }
}

/** Tries of one autocommit statement that keeps losing races, before DB_UNAVAILABLE. */
const CONFLICT_TRIES = 5;

/**
 * `query()` for one autocommit statement, run again (after a short random pause) when it
 * lost a race with a concurrent one: such a statement was rolled back whole, so running it
 * again cannot apply it twice. Never for a statement inside a transaction.
 * @throws USER_EXISTS, DB_UNAVAILABLE, INTERNAL as `query()`
 */
export async function queryRetryingConflicts(
  db: SqlDatabase,
  sql: string,
  params: readonly SqlValue[] = [],
): Promise<SqlRow[]> {
  for (let attempt = 1;; attempt++) {
    try {
      return await db.execute(sql, params);
    } catch (error) {
      if (attempt >= CONFLICT_TRIES || db.classify(error) !== "conflict") {
        throw codedFailure(db, error);
      }
      await new Promise((resolve) => setTimeout(resolve, Math.random() * 10 * attempt));
    }
  }
}

/**
 * Runs a write as `query()` does and returns how many rows it changed: what a compare-and-set
 * (`UPDATE … WHERE` the value read) tells its caller.
 * @throws USER_EXISTS, DB_UNAVAILABLE, INTERNAL as `query()`
 */
export async function change(
  db: SqlDatabase,
  sql: string,
  params: readonly SqlValue[] = [],
): Promise<number> {
  try {
    return await db.change(sql, params);
  } catch (error) {
    throw codedFailure(db, error);
  }
}

function codedFailure(db: SqlDatabase, error: unknown): SecureChatError {
  switch (db.classify(error)) {
    case "duplicate":
      return new SecureChatError("USER_EXISTS", "that user name is already registered", {
        cause: error,
      });
    case "unavailable":
    case "conflict":
      return new SecureChatError(
        "DB_UNAVAILABLE",
        `the user database (${db.description}) is unavailable`,
        { cause: error, hint: "try again in a moment; the server reconnects by itself" },
      );
    default:
      return new SecureChatError("INTERNAL", "user database query failed", { cause: error });
  }
}
