/**
 * `securechat ca init`: create the root CA. Also home of the CA-password helpers that
 * `cert issue/revoke` share: a password comes from --password-file or, on a terminal,
 * from a prompt with echo off; never from argv, where `ps` would show it.
 */
import { Command } from "commander";
import { SecureChatError } from "../lib/errors.ts";
import { fromHex, utf8 } from "../lib/bytes.ts";
import { KEY_TYPES, type KeyType, readPasswordFile } from "../lib/pki/keys.ts";
import { colonHex } from "../lib/pki/describe.ts";
import { info, positiveInt, subcommand } from "./_cli.ts";

export function parseKeyType(value: string): KeyType {
  if (!(KEY_TYPES as readonly string[]).includes(value)) {
    throw new SecureChatError("USAGE", `--key-type must be one of ${KEY_TYPES.join(", ")}`);
  }
  return value as KeyType;
}

/** Reads a line from the terminal without echo (raw mode), for passwords. */
async function promptHidden(question: string): Promise<string> {
  if (!Deno.stdin.isTerminal()) {
    throw new SecureChatError("USAGE", "a password is needed but stdin is not a terminal", {
      hint: "pass --password-file FILE",
    });
  }
  Deno.stderr.writeSync(utf8(question));
  Deno.stdin.setRaw(true);
  const bytes: number[] = [];
  try {
    const buf = new Uint8Array(1);
    while (await Deno.stdin.read(buf) === 1) {
      const b = buf[0];
      if (b === 0x0d || b === 0x0a) break;
      if (b === 0x03) throw new SecureChatError("USAGE", "cancelled");
      if (b === 0x7f || b === 0x08) bytes.pop();
      else bytes.push(b);
    }
  } finally {
    Deno.stdin.setRaw(false);
    Deno.stderr.writeSync(utf8("\n"));
  }
  const password = new TextDecoder().decode(Uint8Array.from(bytes));
  bytes.fill(0);
  if (!password) throw new SecureChatError("USAGE", "empty password");
  return password;
}

/** The password for a new CA key: from a file, or prompted twice; undefined = unencrypted. */
async function newCaPassword(
  opts: { passwordFile?: string; encrypt?: boolean },
): Promise<string | undefined> {
  if (opts.passwordFile !== undefined) return await readPasswordFile(opts.passwordFile);
  if (!opts.encrypt) return undefined;
  const first = await promptHidden("securechat: new CA key password: ");
  if (first !== await promptHidden("securechat: repeat password: ")) {
    throw new SecureChatError("USAGE", "passwords do not match");
  }
  return first;
}

/** The password to unlock the CA key in `dir`, if it is encrypted. */
export async function caPasswordFor(
  dir: string,
  passwordFile?: string,
): Promise<string | undefined> {
  // lib/pki/ca.ts loads @peculiar/x509: only commands that sign with the CA import it.
  const { isCaKeyEncrypted } = await import("../lib/pki/ca.ts");
  if (!(await isCaKeyEncrypted(dir))) return undefined;
  if (passwordFile !== undefined) return await readPasswordFile(passwordFile);
  return await promptHidden("securechat: CA key password: ");
}

export function printFingerprint(hex: string): void {
  console.log(`SHA-256 fingerprint: ${colonHex(fromHex(hex))}`);
}

export function registerCa(program: Command): void {
  const ca = subcommand(program, "ca", "Manage the root certificate authority.");
  subcommand(ca, "init", "Create the root CA: <dir>/ca.pem and <dir>/ca.key (0600).")
    .option("--dir <dir>", "PKI directory", "certs")
    .option("--name <name>", "CA common name", "SecureChat Root CA")
    .option("--days <n>", "validity in days", positiveInt("--days", 36500), 3650)
    .option("--key-type <type>", `key type: ${KEY_TYPES.join("|")}`, parseKeyType, "rsa2048")
    .option("--password-file <file>", "encrypt ca.key with the first line of FILE")
    .option("--encrypt", "encrypt ca.key, prompting for the password")
    .option("--force", "replace an existing CA")
    .action(async (opts) => {
      const { initCa } = await import("../lib/pki/ca.ts");
      const password = await newCaPassword(opts);
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
