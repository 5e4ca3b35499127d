import type { MessageQueue } from "./message_queue.ts";

/** The user store contract: what the server codes against, whatever database is behind it. */

export interface Account {
  username: string;
  email: string;
  createdAt: Date;
  /** The time of the latest successful login (after `login()`, that login), or null if none. */
  lastLoginAt: Date | null;
  /**
   * What the owner must be told, left since their last login (e.g. that their e-mail address
   * was given in another registration). `login()` returns them once and clears them.
   */
  notices?: string[];
}

export interface RegisterInput {
  email: string;
  username: string;
  password: string;
}

export interface UserStore {
  /**
   * Creates an account in one INSERT, so a failure leaves nothing half written. A taken user
   * name is answered before any password hashing (the registrant's certificate already names
   * it, so the answer tells them nothing they do not own). The e-mail address is not unique
   * and its use is never refused: the answer is the same whether or not another account has
   * it, and each such account gets a notice at its next login (issue 11 item 9).
   * @throws INVALID_INPUT a field breaks its rule (name, email shape, password length)
   * @throws USER_EXISTS the user name is taken, compared case-insensitively
   * @throws DB_UNAVAILABLE the database cannot be reached right now; retry later
   */
  register(input: RegisterInput): Promise<Account>;
  /**
   * Checks a password and records the login; a row under old hash parameters is re-hashed.
   * @throws AUTH_FAIL unknown user or wrong password: the same error and about the same time
   * @throws DB_UNAVAILABLE the database cannot be reached right now; retry later
   */
  login(username: string, password: string): Promise<Account>;
  /**
   * Records waiting for users who are not online (PROTOCOL §6.6), in the same database; a
   * store without one (a test double) makes the server refuse such messages NOT_ONLINE.
   */
  readonly queue?: MessageQueue;
  close(): Promise<void>;
  /** Where the accounts live, e.g. "sqlite:data/securechat.db"; never carries a password. */
  readonly description: string;
}

/** Account administration for the operator (`securechat user`); the server does not need it. */
export interface AccountAdmin {
  /** Every account, by user name. */
  list(): Promise<Account[]>;
  /**
   * Replaces an account's password (a fresh salt and the current hash parameters).
   * @throws INVALID_INPUT no such account, or the password breaks the length rule
   * @throws DB_UNAVAILABLE the database cannot be reached right now
   */
  setPassword(username: string, password: string): Promise<void>;
  /**
   * Deletes an account; its name and e-mail address can then be registered again.
   * @returns false when there was no such account
   * @throws DB_UNAVAILABLE the database cannot be reached right now
   */
  remove(username: string): Promise<boolean>;
}
