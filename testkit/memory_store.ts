/**
 * A UserStore without a database or a password hash, for tests and benchmarks that
 * make many logins: every user name logs in with the one password given. The real
 * store (lib/store) pays ~80 ms of PBKDF2 per login, which would drown what these
 * measure; its own behaviour is pinned by tests/store_*.ts.
 */
import { SecureChatError } from "../lib/errors.ts";
import type { Account, UserStore } from "../lib/store/user_store.ts";

export function sharedPasswordStore(password: string): UserStore {
  const account = (username: string): Account => ({
    username,
    email: `${username}@example.com`,
    createdAt: new Date(0),
    lastLoginAt: new Date(),
    credentialEpoch: 0,
  });
  return {
    description: "memory:shared-password",
    register: (input) =>
      input.password === password
        ? Promise.resolve(account(input.username))
        : Promise.reject(new SecureChatError("INVALID_INPUT", "not the shared test password")),
    login: (username, given) =>
      given === password
        ? Promise.resolve(account(username))
        : Promise.reject(new SecureChatError("AUTH_FAIL", "wrong user name or password")),
    // One password for everyone cannot be one user's to change.
    changePassword: () =>
      Promise.reject(new SecureChatError("INVALID_INPUT", "the shared test password is fixed")),
    credentialEpoch: () => Promise.resolve(0),
    close: () => Promise.resolve(),
  };
}
