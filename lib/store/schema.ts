/**
 * The schema and its migrations, for both engines. `schema_version` records every migration
 * applied; opening a store applies the missing ones in order. Each statement is idempotent
 * (IF NOT EXISTS, INSERT IGNORE) because MySQL commits DDL as it goes: a migration cut short
 * is simply run again. schema.sql is the MySQL half written out for `mysql DB < schema.sql`;
 * tests/store_mysql_test.ts checks the two give identical tables.
 */
import { SecureChatError } from "../errors.ts";
import { type Dialect, query, type SqlDatabase } from "./sql.ts";

interface Migration {
  version: number;
  sqlite: string[];
  mysql: string[];
}

const VERSION_TABLE: Record<Dialect, string> = {
  sqlite: `CREATE TABLE IF NOT EXISTS schema_version (
  version INTEGER PRIMARY KEY,
  applied_at INTEGER NOT NULL
) STRICT`,
  mysql: `CREATE TABLE IF NOT EXISTS schema_version (
  version INT NOT NULL PRIMARY KEY,
  applied_at BIGINT NOT NULL
) ENGINE=InnoDB`,
};

const RECORD_VERSION: Record<Dialect, string> = {
  sqlite: "INSERT OR IGNORE INTO schema_version (version, applied_at) VALUES (?, ?)",
  mysql: "INSERT IGNORE INTO schema_version (version, applied_at) VALUES (?, ?)",
};

/*
 * Times are Unix milliseconds in a BIGINT: the same in both engines, and no time zone to get
 * wrong. Names compare case-insensitively through their collation, so the unique key itself
 * refuses "Alice" next to "alice" (SQLite's NOCASE folds ASCII only; user names are ASCII by
 * rule). Emails are looked up the same way but are not unique (migration 2).
 */
const MIGRATIONS: Migration[] = [{
  version: 1,
  sqlite: [`CREATE TABLE IF NOT EXISTS users (
  id INTEGER PRIMARY KEY,
  username TEXT NOT NULL COLLATE NOCASE UNIQUE,
  email TEXT NOT NULL COLLATE NOCASE UNIQUE,
  password_scheme TEXT NOT NULL,
  password_iterations INTEGER NOT NULL,
  password_salt BLOB NOT NULL,
  password_hash BLOB NOT NULL,
  created_at INTEGER NOT NULL,
  last_login_at INTEGER
) STRICT`],
  mysql: [`CREATE TABLE IF NOT EXISTS users (
  id BIGINT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,
  username VARCHAR(32) CHARACTER SET ascii COLLATE ascii_general_ci NOT NULL,
  email VARCHAR(254) CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci NOT NULL,
  password_scheme VARCHAR(32) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
  password_iterations INT UNSIGNED NOT NULL,
  password_salt VARBINARY(64) NOT NULL,
  password_hash VARBINARY(64) NOT NULL,
  created_at BIGINT NOT NULL,
  last_login_at BIGINT NULL,
  UNIQUE KEY users_username (username),
  UNIQUE KEY users_email (email)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci`],
}, {
  // Issue 11 item 9: a unique e-mail key made registration an oracle for "is this address
  // taken?". The address becomes contact data, not an identifier; its owner is told instead
  // (account_notices, delivered at the next login). SQLite cannot drop an inline UNIQUE, so
  // its table is rebuilt (inside the migration's transaction, see migrate()).
  version: 2,
  sqlite: [
    `CREATE TABLE users_v2 (
  id INTEGER PRIMARY KEY,
  username TEXT NOT NULL COLLATE NOCASE UNIQUE,
  email TEXT NOT NULL COLLATE NOCASE,
  password_scheme TEXT NOT NULL,
  password_iterations INTEGER NOT NULL,
  password_salt BLOB NOT NULL,
  password_hash BLOB NOT NULL,
  created_at INTEGER NOT NULL,
  last_login_at INTEGER
) STRICT`,
    `INSERT INTO users_v2 (id, username, email, password_scheme, password_iterations,
  password_salt, password_hash, created_at, last_login_at)
  SELECT id, username, email, password_scheme, password_iterations, password_salt,
  password_hash, created_at, last_login_at FROM users`,
    "DROP TABLE users",
    "ALTER TABLE users_v2 RENAME TO users",
    "CREATE INDEX users_email_lookup ON users (email)",
    `CREATE TABLE account_notices (
  id INTEGER PRIMARY KEY,
  user_id INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
  text TEXT NOT NULL,
  created_at INTEGER NOT NULL
) STRICT`,
    "CREATE INDEX account_notices_user ON account_notices (user_id)",
  ],
  mysql: [
    "ALTER TABLE users DROP INDEX IF EXISTS users_email",
    "CREATE INDEX IF NOT EXISTS users_email_lookup ON users (email)",
    `CREATE TABLE IF NOT EXISTS account_notices (
  id BIGINT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,
  user_id BIGINT UNSIGNED NOT NULL,
  text VARCHAR(512) CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci NOT NULL,
  created_at BIGINT NOT NULL,
  KEY account_notices_user (user_id),
  CONSTRAINT account_notices_user_fk FOREIGN KEY (user_id) REFERENCES users (id) ON DELETE CASCADE
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci`,
  ],
}, {
  // Offline delivery (PROTOCOL §6.6, lib/store/message_queue.ts): records waiting for a user
  // who was not online, in delivery order (id), until their client acknowledges them or they
  // expire. A deleted account takes its queue with it.
  version: 3,
  sqlite: [
    `CREATE TABLE IF NOT EXISTS message_queue (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  user_id INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
  author TEXT NOT NULL,
  item TEXT NOT NULL,
  stored_at INTEGER NOT NULL,
  expires_at INTEGER NOT NULL
) STRICT`,
    "CREATE INDEX IF NOT EXISTS message_queue_user ON message_queue (user_id, id)",
    "CREATE INDEX IF NOT EXISTS message_queue_expiry ON message_queue (expires_at)",
  ],
  mysql: [
    `CREATE TABLE IF NOT EXISTS message_queue (
  id BIGINT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,
  user_id BIGINT UNSIGNED NOT NULL,
  author VARCHAR(32) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
  item MEDIUMTEXT CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
  stored_at BIGINT NOT NULL,
  expires_at BIGINT NOT NULL,
  KEY message_queue_user (user_id, id),
  KEY message_queue_expiry (expires_at),
  CONSTRAINT message_queue_user_fk FOREIGN KEY (user_id) REFERENCES users (id) ON DELETE CASCADE
) ENGINE=InnoDB`,
  ],
}, {
  // Issue 17: credentials a cluster shares. `credential_epoch` changes with every credential
  // change (a password set or changed), and resumption tickets carry it, so a change retires
  // them on every node; it starts at the account's creation time (ms), so an account deleted
  // and registered again never repeats an epoch. `login_failures` holds the decided failed
  // logins of the throttle (PROTOCOL §8.2) by subject (`cert:<sha-256 hex>` or
  // `account:<canonical name>`), so every node, and `securechat user unlock`, sees one count.
  version: 4,
  sqlite: [
    "ALTER TABLE users ADD COLUMN credential_epoch INTEGER NOT NULL DEFAULT 0",
    "UPDATE users SET credential_epoch = created_at WHERE credential_epoch = 0",
    `CREATE TABLE login_failures (
  subject TEXT NOT NULL PRIMARY KEY,
  user_name TEXT COLLATE NOCASE,
  failures INTEGER NOT NULL,
  last_at INTEGER NOT NULL
) STRICT`,
    "CREATE INDEX login_failures_user ON login_failures (user_name)",
  ],
  mysql: [
    "ALTER TABLE users ADD COLUMN IF NOT EXISTS credential_epoch BIGINT NOT NULL DEFAULT 0",
    "UPDATE users SET credential_epoch = created_at WHERE credential_epoch = 0",
    `CREATE TABLE IF NOT EXISTS login_failures (
  subject VARCHAR(80) CHARACTER SET ascii COLLATE ascii_bin NOT NULL PRIMARY KEY,
  user_name VARCHAR(32) CHARACTER SET ascii COLLATE ascii_general_ci NULL,
  failures INT UNSIGNED NOT NULL,
  last_at BIGINT NOT NULL,
  KEY login_failures_user (user_name)
) ENGINE=InnoDB`,
  ],
}, {
  // The end-to-end key directory (PROTOCOL §12.6, lib/store/key_directory.ts): one signed
  // bundle and its one-time prekeys per (user, device).
  version: 5,
  sqlite: [
    `CREATE TABLE e2e_devices (
  username TEXT NOT NULL COLLATE NOCASE,
  device TEXT NOT NULL,
  cert BLOB NOT NULL,
  bundle TEXT NOT NULL,
  lobby INTEGER NOT NULL,
  updated_at INTEGER NOT NULL,
  PRIMARY KEY (username, device)
) STRICT`,
    `CREATE TABLE e2e_prekeys (
  username TEXT NOT NULL COLLATE NOCASE,
  device TEXT NOT NULL,
  id INTEGER NOT NULL,
  pub BLOB NOT NULL,
  PRIMARY KEY (username, device, id)
) STRICT`,
  ],
  mysql: [
    `CREATE TABLE IF NOT EXISTS e2e_devices (
  username VARCHAR(32) CHARACTER SET ascii COLLATE ascii_general_ci NOT NULL,
  device CHAR(16) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
  cert VARBINARY(16384) NOT NULL,
  bundle TEXT CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
  lobby TINYINT NOT NULL,
  updated_at BIGINT NOT NULL,
  PRIMARY KEY (username, device)
) ENGINE=InnoDB`,
    `CREATE TABLE IF NOT EXISTS e2e_prekeys (
  username VARCHAR(32) CHARACTER SET ascii COLLATE ascii_general_ci NOT NULL,
  device CHAR(16) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
  id INT UNSIGNED NOT NULL,
  pub VARBINARY(32) NOT NULL,
  PRIMARY KEY (username, device, id)
) ENGINE=InnoDB`,
  ],
}, {
  // The serial of the certificate each queued record was signed under: a revocation deletes
  // what its certificate left queued when it reaches the server (PROTOCOL §6.6), instead of at
  // each recipient's next login. Rows stored before have none; delivery drops those.
  version: 6,
  sqlite: [
    "ALTER TABLE message_queue ADD COLUMN author_serial TEXT",
    "CREATE INDEX message_queue_author_serial ON message_queue (author_serial)",
  ],
  mysql: [
    `ALTER TABLE message_queue ADD COLUMN IF NOT EXISTS
  author_serial VARCHAR(128) CHARACTER SET ascii COLLATE ascii_bin NULL`,
    "CREATE INDEX IF NOT EXISTS message_queue_author_serial ON message_queue (author_serial)",
  ],
}];

export const SCHEMA_VERSION = MIGRATIONS[MIGRATIONS.length - 1].version;

/**
 * Brings the schema up to `SCHEMA_VERSION`.
 * @throws DB_UNAVAILABLE the database cannot be reached
 * @throws INTERNAL the database has a newer schema than this build knows, or DDL failed
 */
export async function migrate(db: SqlDatabase): Promise<void> {
  await query(db, VERSION_TABLE[db.dialect]);
  const [row] = await query(db, "SELECT MAX(version) AS version FROM schema_version");
  const current = Number(row?.version ?? 0);
  if (current > SCHEMA_VERSION) {
    throw new SecureChatError(
      "INTERNAL",
      `user database schema is version ${current}, newer than this securechat (${SCHEMA_VERSION})`,
      { hint: "upgrade securechat before pointing it at this database" },
    );
  }
  for (const migration of MIGRATIONS) {
    if (migration.version <= current) continue;
    // SQLite's DDL is transactional: a migration applies whole or not at all (and a second
    // process opening the file waits for it). MySQL's is not; its statements are idempotent.
    const atomic = db.dialect === "sqlite";
    if (atomic) await query(db, "BEGIN IMMEDIATE");
    try {
      for (const statement of migration[db.dialect]) await query(db, statement);
      await query(db, RECORD_VERSION[db.dialect], [migration.version, Date.now()]);
      if (atomic) await query(db, "COMMIT");
    } catch (error) {
      if (atomic) await query(db, "ROLLBACK").catch(() => {});
      throw error;
    }
  }
}
