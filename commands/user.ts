/**
 * `securechat user list|passwd|delete|unlock` (issue 17 item 5): account administration
 * against the server's store (SQLite or MariaDB), so that a forgotten password is reset
 * instead of meaning USER_EXISTS forever. Every server on the store sees a change at once:
 * the next login checks the new password, outstanding resumption tickets are refused, and
 * an unlocked user can log in again.
 */
import { Command } from "commander";
import { codeOf, SecureChatError } from "../lib/errors.ts";
import { openUserStore } from "../lib/store/open.ts";
import type { AccountAdmin, UserStore } from "../lib/store/user_store.ts";
import { safeJson, safeText } from "../lib/safe_text.ts";
import { databaseOf, loadSettings } from "./_home.ts";
import { info, subcommand } from "./_cli.ts";
import { askNewPassword, readPasswordFile } from "./_password.ts";
import { checkNewPassword } from "../lib/crypto/password.ts";

const DB_HELP = "sqlite:PATH or mysql://user:pass@host:port/db (default: as `serve` would)";

async function openStore(db: string | undefined): Promise<UserStore & AccountAdmin> {
  const settings = await loadSettings();
  return await openUserStore(databaseOf(db, settings)).catch((error) => {
    if (codeOf(error) !== "INVALID_INPUT") throw error;
    throw new SecureChatError("USAGE", (error as Error).message, { cause: error });
  });
}

async function withStore<T>(db: string | undefined, use: (s: AccountAdmin) => Promise<T>) {
  const store = await openStore(db);
  try {
    return await use(store);
  } finally {
    await store.close();
  }
}

/** The new password: from --password-file, or typed twice at the terminal. */
async function newPassword(name: string, passwordFile?: string): Promise<string> {
  if (passwordFile !== undefined) return await readPasswordFile(passwordFile);
  return await askNewPassword(`new password for ${name}: `, { rules: checkNewPassword });
}

const day = (
  date: Date | null,
) => (date ? date.toISOString().slice(0, 16).replace("T", " ") : "never");

export function registerUser(program: Command): void {
  const user = subcommand(
    program,
    "user",
    "List accounts, reset a password, delete an account, end a lockout.",
  );

  subcommand(user, "list", "List the accounts in the server's store.")
    .option("--db <url>", DB_HELP)
    .option("--json", "print a JSON array instead of a table")
    .action(async (opts) => {
      const accounts = await withStore(opts.db, (s) => s.list());
      if (opts.json) return console.log(safeJson(accounts, 2));
      if (accounts.length === 0) return info("no accounts yet");
      const rows = accounts.map((a) => [a.username, a.email, day(a.createdAt), day(a.lastLoginAt)]);
      const header = ["NAME", "EMAIL", "CREATED", "LAST LOGIN"];
      const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i].length)));
      for (const row of [header, ...rows]) {
        console.log(row.map((cell, i) => safeText(cell).padEnd(widths[i])).join("  ").trimEnd());
      }
    });

  subcommand(user, "passwd", "Set a new password for an account (e.g. a forgotten one).")
    .argument("<name>", "user name")
    .option("--db <url>", DB_HELP)
    .option("--password-file <file>", "read the new password from a file (else prompt twice)")
    .action(async (name: string, opts) => {
      const password = await newPassword(name, opts.passwordFile);
      await withStore(opts.db, (s) => s.setPassword(name, password));
      info(
        `password of ${name} changed; it applies from the next login, and resumption tickets ` +
          "issued before it are refused",
      );
    });

  subcommand(user, "delete", "Delete an account (its name and e-mail can be registered again).")
    .argument("<name>", "user name")
    .option("--db <url>", DB_HELP)
    .option("--yes", "do not ask for confirmation")
    .action(async (name: string, opts) => {
      if (!opts.yes) {
        if (!Deno.stdin.isTerminal()) {
          throw new SecureChatError("USAGE", `not deleting ${name} without confirmation`, {
            hint: "pass --yes",
          });
        }
        const answer = prompt(`delete the account ${name}? [y/N]`);
        if (!/^y(es)?$/i.test(answer ?? "")) return info("not deleted");
      }
      if (!await withStore(opts.db, (s) => s.remove(name))) {
        throw new SecureChatError("INVALID_INPUT", `no account named ${name}`, {
          hint: "see `securechat user list`",
        });
      }
      info(
        `deleted the account ${name}; its certificate still exists (\`securechat cert revoke ${name}\`)`,
      );
    });

  subcommand(
    user,
    "unlock",
    "End a lockout after too many failed logins (the account and its certificates).",
  )
    .argument("<name>", "user name")
    .option("--db <url>", DB_HELP)
    .action(async (name: string, opts) => {
      const cleared = await withStore(opts.db, (s) => s.unlock(name));
      info(
        cleared === 0
          ? `${name} had no failed logins to forgive`
          : `failed logins of ${name} forgiven: the lockout is over on every server of this store`,
      );
    });
}
