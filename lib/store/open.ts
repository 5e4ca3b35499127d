/**
 * Picks and opens the user store: `--db` URL first, then the DB_* keys (from the environment or
 * a `.env` file), else the default SQLite file.
 */
import { dirname, isAbsolute, join } from "node:path";
import { readEnvKeys } from "../env.ts";
import { ensurePrivateDir } from "../private_dir.ts";
import { codeOf, SecureChatError } from "../errors.ts";
import { migrate } from "./schema.ts";
import type { MysqlConfig } from "./mysql.ts";
import { openSqlite } from "./sqlite.ts";
import { SqlUserStore } from "./sql_user_store.ts";
import type { AccountAdmin, UserStore } from "./user_store.ts";

export const DEFAULT_DB_URL = "sqlite:data/securechat.db";
const DB_KEYS = ["DB_HOST", "DB_PORT", "DB_USER", "DB_PASSWORD", "DB_NAME"] as const;
const MYSQL_DEFAULT_PORT = 3306;
const URL_FORMS = "sqlite:PATH or mysql://user:password@host:port/database";

export interface OpenUserStoreOptions {
  /** `sqlite:PATH` (relative to baseDir; `sqlite::memory:` too) or `mysql://user:pass@host:port/db`. */
  url?: string;
  /** The store when neither `url` nor the DB_* keys name one; DEFAULT_DB_URL by default. */
  defaultUrl?: string;
  /** The DB_* keys; by default the process environment over `baseDir/.env`. */
  env?: Record<string, string | undefined>;
  /** Where relative SQLite paths and `.env` are found; the working directory by default. */
  baseDir?: string;
  /**
   * A server passes this to start even while its database is down: the store is returned
   * anyway, told with the DB_UNAVAILABLE error, and brings the schema up to date at the
   * first operation that reaches the database (until then each one fails DB_UNAVAILABLE).
   */
  onUnavailableAtOpen?: (error: SecureChatError) => void;
}

export type DatabaseTarget =
  | { engine: "sqlite"; path: string; description: string }
  | { engine: "mysql"; config: MysqlConfig };

/**
 * Opens the store and brings its schema up to date.
 * @throws INVALID_INPUT the URL or the DB_* keys are malformed (the message never echoes them)
 * @throws DB_UNAVAILABLE the database cannot be reached or opened now
 * @throws INTERNAL the database holds a schema newer than this build
 */
export async function openUserStore(
  options: OpenUserStoreOptions = {},
): Promise<UserStore & AccountAdmin> {
  const target = resolveDatabase(options);
  // mysql2 is loaded only when asked for: most runs use SQLite, and every command
  // would otherwise pay for parsing the driver at start-up.
  // The SQLite file holds password hashes: its directory is owner-only (issue 11 item 10).
  if (target.engine === "sqlite" && target.path !== ":memory:") {
    await ensurePrivateDir(dirname(target.path));
  }
  const db = target.engine === "sqlite"
    ? openSqlite(target.path, target.description)
    : (await import("./mysql.ts")).openMysql(target.config);
  try {
    await migrate(db);
  } catch (error) {
    if (options.onUnavailableAtOpen && codeOf(error) === "DB_UNAVAILABLE") {
      options.onUnavailableAtOpen(error as SecureChatError);
      return new SqlUserStore(db, () => migrate(db));
    }
    await db.close();
    throw error;
  }
  return new SqlUserStore(db);
}

/**
 * Decides which database the options name, without touching it.
 * @throws INVALID_INPUT the URL or the DB_* keys are malformed
 */
export function resolveDatabase(options: OpenUserStoreOptions = {}): DatabaseTarget {
  const baseDir = options.baseDir ?? Deno.cwd();
  if (options.url !== undefined) return parseDatabaseUrl(options.url, baseDir);
  const env = options.env ?? readEnvKeys(baseDir, DB_KEYS);
  if (env.DB_HOST) return { engine: "mysql", config: mysqlConfigFromEnv(env) };
  return parseDatabaseUrl(options.defaultUrl ?? DEFAULT_DB_URL, baseDir);
}

function parseDatabaseUrl(url: string, baseDir: string): DatabaseTarget {
  if (url.startsWith("sqlite:")) {
    const path = url.slice("sqlite:".length);
    if (path === "") throw invalid(`the database URL must be ${URL_FORMS}`);
    return {
      engine: "sqlite",
      path: path === ":memory:" || isAbsolute(path) ? path : join(baseDir, path),
      description: url,
    };
  }
  if (url.startsWith("mysql://")) {
    let parsed: URL;
    try {
      parsed = new URL(url);
    } catch {
      throw invalid(`the database URL must be ${URL_FORMS}`); // not echoed: it may hold a password
    }
    const database = decodeURIComponent(parsed.pathname.replace(/^\//, ""));
    if (!parsed.hostname || !parsed.username || !database || database.includes("/")) {
      throw invalid(`the database URL must be ${URL_FORMS}`);
    }
    return {
      engine: "mysql",
      config: {
        host: parsed.hostname,
        port: parsed.port ? Number(parsed.port) : MYSQL_DEFAULT_PORT,
        user: decodeURIComponent(parsed.username),
        password: decodeURIComponent(parsed.password),
        database,
      },
    };
  }
  throw invalid(`the database URL must be ${URL_FORMS}`);
}

function mysqlConfigFromEnv(env: Record<string, string | undefined>): MysqlConfig {
  const { DB_HOST, DB_PORT, DB_USER, DB_PASSWORD, DB_NAME } = env;
  if (!DB_HOST || !DB_USER || !DB_NAME) {
    throw invalid("DB_HOST, DB_USER and DB_NAME must all be set to use MySQL");
  }
  const portText = DB_PORT || String(MYSQL_DEFAULT_PORT);
  const port = Number(portText);
  if (!/^[0-9]{1,5}$/.test(portText) || port < 1 || port > 65535) {
    throw invalid("DB_PORT must be a port number from 1 to 65535");
  }
  return { host: DB_HOST, port, user: DB_USER, password: DB_PASSWORD ?? "", database: DB_NAME };
}

function invalid(message: string): SecureChatError {
  return new SecureChatError("INVALID_INPUT", message, {
    hint: `pass --db ${URL_FORMS}, or set DB_HOST, DB_USER, DB_PASSWORD, DB_NAME (and DB_PORT)`,
  });
}
