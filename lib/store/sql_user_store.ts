/** The UserStore over any SqlDatabase: validation, hashing and the queries, once for both. */
import { SecureChatError } from "../errors.ts";
import {
  checkNewPassword,
  checkPasswordChange,
  hashPassword,
  needsRehash,
  PASSWORD_MAX_BYTES,
  type PasswordHash,
  PBKDF2_ITERATIONS,
  SALT_BYTES,
  verifyPassword,
} from "../crypto/password.ts";
import { canonicalName, isValidUserName } from "../pki/names.ts";
import { checkAccountFields } from "./account_rules.ts";
import { type LoginFailureStore, SqlLoginFailures } from "./login_failures.ts";
import { change, query, type SqlDatabase, type SqlRow } from "./sql.ts";
import type { Account, AccountAdmin, RegisterInput, UserStore } from "./user_store.ts";
import { type MessageQueue, SqlMessageQueue } from "./message_queue.ts";

/**
 * What an unknown user's password is checked against, so that "no such user" costs one full
 * PBKDF2 like a real one. No password derives to all zeros in practice, so it never matches.
 */
const DUMMY_HASH: PasswordHash = {
  scheme: "pbkdf2-sha256",
  iterations: PBKDF2_ITERATIONS,
  salt: new Uint8Array(SALT_BYTES),
  hash: new Uint8Array(32),
};

/**
 * The next credential epoch (user_store.ts `credentialEpoch`): above the last one, and at
 * least the time, so that a name registered again after a deletion (whose epoch starts at its
 * creation time) never meets an epoch of the deleted account. `?` is the time in ms.
 */
const NEXT_EPOCH = "CASE WHEN credential_epoch + 1 > ? THEN credential_epoch + 1 ELSE ? END";

const SCHEMES: readonly string[] = ["pbkdf2-sha256", "seed-sha256"] satisfies PasswordHash[
  "scheme"
][];

export class SqlUserStore implements UserStore, AccountAdmin {
  #db: SqlDatabase;
  /** A schema migration still owed because the database was down at open (open.ts). */
  #migrate?: () => Promise<void>;
  readonly queue: MessageQueue;
  readonly failures: LoginFailureStore;

  constructor(db: SqlDatabase, migrate?: () => Promise<void>) {
    this.#db = db;
    this.#migrate = migrate;
    this.queue = new SqlMessageQueue(db, () => this.#ready());
    this.failures = new SqlLoginFailures(db, () => this.#ready());
  }

  /** @throws DB_UNAVAILABLE while the owed migration cannot run; it is retried next time */
  async #ready(): Promise<void> {
    if (!this.#migrate) return;
    await this.#migrate();
    this.#migrate = undefined;
  }

  get description(): string {
    return this.#db.description;
  }

  async register(input: RegisterInput): Promise<Account> {
    await this.#ready();
    checkAccountFields(input);
    checkNewPassword(input.password);
    // No PBKDF2 for a name that is taken (issue 11 item 6); a race past this check is still
    // refused by the unique key.
    const taken = await query(this.#db, "SELECT id FROM users WHERE username = ?", [
      input.username,
    ]);
    if (taken.length > 0) {
      throw new SecureChatError("USER_EXISTS", "that user name is already registered");
    }
    const stored = await hashPassword(input.password);
    const createdAt = Date.now();
    await query(
      this.#db,
      `INSERT INTO users (username, email, password_scheme, password_iterations, password_salt,
        password_hash, created_at, credential_epoch) VALUES (?, ?, ?, ?, ?, ?, ?, ?)`,
      [
        input.username,
        input.email,
        stored.scheme,
        stored.iterations,
        stored.salt,
        stored.hash,
        createdAt,
        createdAt,
      ],
    );
    await this.#tellOtherOwnersOf(input.email, input.username, createdAt);
    return {
      username: input.username,
      email: input.email,
      createdAt: new Date(createdAt),
      lastLoginAt: null,
      credentialEpoch: createdAt,
    };
  }

  async login(username: string, password: string): Promise<Account> {
    await this.#ready();
    const { row, upgraded } = await this.#checkPassword(username, password);
    const now = Date.now();
    if (upgraded) {
      // The same password under new parameters: not a credential change, the epoch stays.
      await query(
        this.#db,
        `UPDATE users SET password_scheme = ?, password_iterations = ?, password_salt = ?,
          password_hash = ?, last_login_at = ? WHERE id = ?`,
        [upgraded.scheme, upgraded.iterations, upgraded.salt, upgraded.hash, now, Number(row.id)],
      );
    } else {
      await query(this.#db, "UPDATE users SET last_login_at = ? WHERE id = ?", [
        now,
        Number(row.id),
      ]);
    }
    return {
      username: String(row.username),
      email: String(row.email),
      createdAt: new Date(Number(row.created_at)),
      lastLoginAt: new Date(now),
      notices: await this.#takeNotices(Number(row.id)),
      credentialEpoch: Number(row.credential_epoch),
    };
  }

  /**
   * The row of `username` if `password` is its password, and a re-hash of it when the row is
   * under old parameters. An unknown user costs one full PBKDF2 like a known one.
   * @throws AUTH_FAIL unknown user or wrong password
   */
  async #checkPassword(
    username: string,
    password: string,
  ): Promise<{ row: SqlRow; stored: PasswordHash; upgraded?: PasswordHash }> {
    // An invalid name cannot exist, and a password longer in UTF-16 units than the byte limit
    // is surely over it; neither reaches the database, but both still pay for a dummy hash.
    const row = isValidUserName(username) && password.length <= PASSWORD_MAX_BYTES
      ? (await query(
        this.#db,
        `SELECT id, username, email, password_scheme, password_iterations, password_salt,
          password_hash, created_at, last_login_at, credential_epoch FROM users
          WHERE username = ?`,
        [username],
      ))[0]
      : undefined;
    const stored = row ? storedHashOf(row) : DUMMY_HASH;
    // A row under old parameters gets its new hash computed whether or not the password turns
    // out right: a wrong guess then costs a full PBKDF2 too, like an unknown user's.
    const [matches, upgraded] = await Promise.all([
      verifyPassword(password, stored),
      needsRehash(stored) ? hashPassword(password) : undefined,
    ]);
    if (!row || !matches) {
      throw new SecureChatError("AUTH_FAIL", "wrong user name or password");
    }
    return { row, stored, upgraded };
  }

  async changePassword(
    username: string,
    oldPassword: string,
    newPassword: string,
  ): Promise<void> {
    await this.#ready();
    checkPasswordChange(oldPassword, newPassword);
    const { row, stored } = await this.#checkPassword(username, oldPassword);
    const next = await hashPassword(newPassword);
    const now = Date.now();
    // Compare-and-set on the hash just checked: a change (or reset) that landed in between
    // makes this one change nothing, and the old password it proved is no longer current.
    const changed = await change(
      this.#db,
      `UPDATE users SET password_scheme = ?, password_iterations = ?, password_salt = ?,
        password_hash = ?, credential_epoch = ${NEXT_EPOCH}
        WHERE id = ? AND password_salt = ? AND password_hash = ?`,
      [
        next.scheme,
        next.iterations,
        next.salt,
        next.hash,
        now,
        now,
        Number(row.id),
        stored.salt,
        stored.hash,
      ],
    );
    if (changed !== 1) {
      throw new SecureChatError(
        "AUTH_FAIL",
        "the password was changed by someone else meanwhile",
      );
    }
  }

  async credentialEpoch(username: string): Promise<number | null> {
    await this.#ready();
    if (!isValidUserName(username)) return null;
    const [row] = await query(
      this.#db,
      "SELECT credential_epoch FROM users WHERE username = ?",
      [username],
    );
    return row === undefined ? null : Number(row.credential_epoch);
  }

  /** Leaves a notice for every other account that gave `email`: the address's owner is told. */
  async #tellOtherOwnersOf(email: string, username: string, at: number): Promise<void> {
    const owners = await query(
      this.#db,
      "SELECT id FROM users WHERE email = ? AND username <> ?",
      [email, username],
    );
    const text = `the e-mail address of your account was given again on ${
      new Date(at).toISOString().slice(0, 16).replace("T", " ")
    } UTC, when the account "${username}" was registered; if you do not know why, tell the operator`;
    for (const owner of owners) {
      await query(
        this.#db,
        "INSERT INTO account_notices (user_id, text, created_at) VALUES (?, ?, ?)",
        [Number(owner.id), text, at],
      );
    }
  }

  /** The account's pending notices, oldest first, removed as they are handed out. */
  async #takeNotices(userId: number): Promise<string[]> {
    const rows = await query(
      this.#db,
      "SELECT id, text FROM account_notices WHERE user_id = ? ORDER BY id",
      [userId],
    );
    if (rows.length === 0) return [];
    const last = Number(rows[rows.length - 1].id);
    await query(this.#db, "DELETE FROM account_notices WHERE user_id = ? AND id <= ?", [
      userId,
      last,
    ]);
    return rows.map((row) => String(row.text));
  }

  close(): Promise<void> {
    return this.#db.close();
  }

  async list(): Promise<Omit<Account, "credentialEpoch">[]> {
    await this.#ready();
    const rows = await query(
      this.#db,
      "SELECT username, email, created_at, last_login_at FROM users ORDER BY username",
      [],
    );
    return rows.map((row) => ({
      username: String(row.username),
      email: String(row.email),
      createdAt: new Date(Number(row.created_at)),
      lastLoginAt: row.last_login_at === null ? null : new Date(Number(row.last_login_at)),
    }));
  }

  async setPassword(username: string, password: string): Promise<void> {
    await this.#ready();
    checkNewPassword(password);
    const id = await this.#idOf(username);
    if (id === undefined) {
      throw new SecureChatError("INVALID_INPUT", `no account named ${username}`);
    }
    const stored = await hashPassword(password);
    const now = Date.now();
    await query(
      this.#db,
      `UPDATE users SET password_scheme = ?, password_iterations = ?, password_salt = ?,
        password_hash = ?, credential_epoch = ${NEXT_EPOCH} WHERE id = ?`,
      [stored.scheme, stored.iterations, stored.salt, stored.hash, now, now, id],
    );
  }

  async remove(username: string): Promise<boolean> {
    await this.#ready();
    const id = await this.#idOf(username);
    if (id === undefined) return false;
    await query(this.#db, "DELETE FROM users WHERE id = ?", [id]);
    return true;
  }

  async unlock(username: string): Promise<number> {
    return await this.failures.unlock(canonicalName(username));
  }

  /** The row id of an account (names compare case-insensitively, as everywhere). */
  async #idOf(username: string): Promise<number | undefined> {
    if (!isValidUserName(username)) return undefined;
    const [row] = await query(this.#db, "SELECT id FROM users WHERE username = ?", [username]);
    return row === undefined ? undefined : Number(row.id);
  }
}

/** @throws INTERNAL a row whose hash columns are not ours (a corrupt or foreign table) */
function storedHashOf(row: SqlRow): PasswordHash {
  const { password_scheme: scheme, password_salt: salt, password_hash: hash } = row;
  if (
    typeof scheme !== "string" || !SCHEMES.includes(scheme) ||
    !(salt instanceof Uint8Array) || !(hash instanceof Uint8Array)
  ) {
    throw new SecureChatError("INTERNAL", "a stored password hash is malformed");
  }
  return {
    scheme: scheme as PasswordHash["scheme"],
    iterations: Number(row.password_iterations),
    // Copies: mysql2 hands out Node Buffers, and callers expect plain Uint8Arrays.
    salt: new Uint8Array(salt),
    hash: new Uint8Array(hash),
  };
}
