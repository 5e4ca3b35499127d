/**
 * `securechat ca init`: create the root CA. Also home of the CA-password helpers that
 * `cert issue/revoke` share: a password comes from --password-file or, on a terminal,
 * from a prompt with echo off; never from argv, where `ps` would show it.
 */
import { Command } from "commander";
import { SecureChatError } from "../lib/errors.ts";
import { askNewPassword, askPassword, readPasswordFile } from "./_password.ts";
import { KEY_TYPES, type KeyType } from "../lib/pki/keys.ts";
import { formatFingerprint } from "../lib/pki/describe.ts";
import { pkiDir } from "./_home.ts";
import { info, positiveInt, privateDir, subcommand } from "./_cli.ts";

export function parseKeyType(value: string): KeyType {
  if (!(KEY_TYPES as readonly string[]).includes(value)) {
    throw new SecureChatError("USAGE", `--key-type must be one of ${KEY_TYPES.join(", ")}`);
  }
  return value as KeyType;
}

/** The password for a new CA key: from a file, or prompted twice; undefined = unencrypted. */
async function newCaPassword(
  opts: { passwordFile?: string; encrypt?: boolean },
): Promise<string | undefined> {
  if (opts.passwordFile !== undefined) return await readPasswordFile(opts.passwordFile);
  if (!opts.encrypt) return undefined;
  return await askNewPassword("securechat: new CA key password: ");
}

/** The password to unlock the CA key in `dir`, if it is encrypted. */
export async function caPasswordFor(
  dir: string,
  passwordFile?: string,
): Promise<string | undefined> {
  // lib/ca/ca.ts loads @peculiar/x509: only commands that sign with the CA import it.
  const { isCaKeyEncrypted } = await import("../lib/ca/ca.ts");
  if (!(await isCaKeyEncrypted(dir))) return undefined;
  if (passwordFile !== undefined) return await readPasswordFile(passwordFile);
  return await askPassword("securechat: CA key password: ");
}

export function printFingerprint(hex: string): void {
  console.log(`Fingerprint: ${formatFingerprint(hex)}`);
}

export function registerCa(program: Command): void {
  const ca = subcommand(program, "ca", "Manage the root certificate authority.");
  subcommand(ca, "init", "Create the root CA: <dir>/ca.pem and <dir>/ca.key (0600).")
    .option("--dir <dir>", "PKI directory (default: certs/ in the home)")
    .option("--name <name>", "CA common name", "SecureChat Root CA")
    .option("--days <n>", "validity in days", positiveInt("--days", 36500), 3650)
    .option("--key-type <type>", `key type: ${KEY_TYPES.join("|")}`, parseKeyType, "rsa2048")
    .option("--password-file <file>", "encrypt ca.key with the first line of FILE")
    .option("--encrypt", "encrypt ca.key, prompting for the password")
    .option("--force", "replace an existing CA")
    .action(async (opts) => {
      opts.dir = await pkiDir(opts.dir);
      const { initCa } = await import("../lib/ca/ca.ts");
      const password = await newCaPassword(opts);
      await privateDir(opts.dir);
      const fingerprint = await initCa(
        opts.dir,
        { name: opts.name, days: opts.days, keyType: opts.keyType, password },
        Boolean(opts.force),
      );
      info(`wrote ${opts.dir}/ca.pem and ${opts.dir}/ca.key`);
      if (password === undefined) {
        info(
          "warning: ca.key is NOT encrypted; use --password-file FILE or --encrypt to protect it",
        );
      }
      printFingerprint(fingerprint);
    });
}
