/** The user store contract: what the server codes against, whatever database is behind it. */
import type { LoginFailureStore } from "./login_failures.ts";
import type { MessageQueue } from "./message_queue.ts";

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
  /**
   * Changes with every credential change (PROTOCOL §6.7): what a resumption ticket carries
   * and must still match when it is redeemed. Never repeats for a user name, even across a
   * deletion and a new registration.
   */
  credentialEpoch: number;
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
  /**
   * The user's own password change (PROTOCOL §6.7): the old password is checked like a login,
   * then the new hash and a new credential epoch replace the old ones in one statement that
   * applies only if the row still holds the hash that was checked, so two changes at once
   * cannot both win.
   * @throws AUTH_FAIL unknown user, wrong old password, or the password changed meanwhile
   * @throws INVALID_INPUT the new password breaks the length rule or equals the old one
   * @throws DB_UNAVAILABLE the database cannot be reached right now
   */
  changePassword(username: string, oldPassword: string, newPassword: string): Promise<void>;
  /**
   * The account's current credential epoch, or null when there is no such account (it was
   * deleted): a resumption ticket is good only while it carries this value.
   * @throws DB_UNAVAILABLE
   */
  credentialEpoch(username: string): Promise<number | null>;
  /** The failed-login counts of the throttle, where the store keeps them (lib/store/login_failures.ts). */
  readonly failures?: LoginFailureStore;
  close(): Promise<void>;
  /** Where the accounts live, e.g. "sqlite:data/securechat.db"; never carries a password. */
  readonly description: string;
}

/** Account administration for the operator (`securechat user`); the server does not need it. */
export interface AccountAdmin {
  /** Every account, by user name. */
  list(): Promise<Omit<Account, "credentialEpoch">[]>;
  /**
   * Replaces an account's password (a fresh salt and the current hash parameters) and its
   * credential epoch, which retires its resumption tickets.
   * @throws INVALID_INPUT no such account, or the password breaks the length rule
   * @throws DB_UNAVAILABLE the database cannot be reached right now
   */
  setPassword(username: string, password: string): Promise<void>;
  /**
   * Deletes an account (its resumption tickets die with it); its name and e-mail address can
   * then be registered again.
   * @returns false when there was no such account
   * @throws DB_UNAVAILABLE the database cannot be reached right now
   */
  remove(username: string): Promise<boolean>;
  /**
   * Ends a lockout: forgets the failed logins of the account and of every certificate that
   * claimed it, for every server on this store.
   * @returns how many counts were forgotten (0: the user was not locked out)
   * @throws DB_UNAVAILABLE
   */
  unlock(username: string): Promise<number>;
}
