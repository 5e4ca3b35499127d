/** `securechat cert issue|revoke|crl|list|show|export`: leaf certificates under the CA. */
import { crlFileStatus, readCrlDer } from "../lib/ca/crl_file.ts";
import { Command } from "commander";
import { wipe } from "../lib/bytes.ts";
import { checkNewPassword } from "../lib/crypto/password.ts";
import { encodeExportBundle } from "../lib/pki/export_bundle.ts";
import { writeFileAtomic } from "../lib/files.ts";
import { askNewPassword, heldToRules, readPasswordFile } from "./_password.ts";
import { SecureChatError } from "../lib/errors.ts";
import { readCertificateDer, readPrivateKeyPkcs8 } from "../lib/pki/key_files.ts";
import { KEY_TYPES } from "../lib/pki/keys.ts";
import { readInventory } from "../lib/ca/inventory.ts";
import {
  certificateText,
  describeCertificate,
  fingerprintOf,
  formatFingerprint,
  formatSerial,
} from "../lib/pki/describe.ts";
import { isValidUserName } from "../lib/pki/names.ts";
import { join } from "node:path";
import { DEFAULT_CRL_CHECK_MS } from "../lib/server/revocation.ts";
import { caPasswordFor, parseKeyType, printFingerprint } from "./ca.ts";
import { pkiDir } from "./_home.ts";
import { info, positiveInt, privateDir, subcommand } from "./_cli.ts";
import { safeJson, safeText } from "../lib/safe_text.ts";

const collect = (value: string, previous: string[]) => [...previous, value];
const DEFAULT_CRL_DAYS = 30;

// The signing modules (lib/ca/ca.ts, issue.ts, revoke.ts) load @peculiar/x509, which
// costs more than the rest of startup; they are imported only by the actions that sign.

/** The CA, unlocked to sign something new into `dir` (which is made private first). */
async function unlockCa(dir: string, passwordFile?: string) {
  await privateDir(dir);
  const { loadCaSigner } = await import("../lib/ca/ca.ts");
  return await loadCaSigner(dir, await caPasswordFor(dir, passwordFile));
}

/** A subcommand that re-signs ca.crl: the CA key's options and the CRL lifetime. */
function crlSigningCommand(parent: Command, name: string, description: string): Command {
  return subcommand(parent, name, description)
    .option("--dir <dir>", "PKI directory (default: certs/ in the home)")
    .option("--password-file <file>", "CA key password file (if ca.key is encrypted)")
    .option(
      "--crl-days <n>",
      "CRL lifetime (nextUpdate) in days",
      positiveInt("--crl-days", 3650),
      DEFAULT_CRL_DAYS,
    );
}

export function registerCert(program: Command): void {
  const cert = subcommand(program, "cert", "Issue, revoke, list and inspect certificates.");

  subcommand(cert, "issue", "Issue <name>.pem and <name>.key (0600), signed by the CA.")
    .argument("<name>", "user name (client) or server name: 3-32 of [A-Za-z0-9_.-]")
    .option("--server", "server profile: EKU serverAuth, SANs from --dns/--ip")
    .option("--client", "client profile (default): EKU clientAuth, CN = user name")
    .option("--dns <name>", "DNS SAN for --server (repeatable; default localhost)", collect, [])
    .option("--ip <addr>", "IP SAN for --server (repeatable; default 127.0.0.1)", collect, [])
    .option("--days <n>", "validity in days", positiveInt("--days", 3650), 365)
    .option("--key-type <type>", `key type: ${KEY_TYPES.join("|")}`, parseKeyType, "rsa2048")
    .option("--dir <dir>", "PKI directory (default: certs/ in the home)")
    .option("--password-file <file>", "CA key password file (if ca.key is encrypted)")
    .option("--reissue", "another certificate for a user who has one (the old stays valid)")
    .option("--force", "replace existing files of that name (a re-issue too)")
    .action(async (name: string, opts) => {
      opts.dir = await pkiDir(opts.dir);
      if (opts.server && opts.client) {
        throw new SecureChatError("USAGE", "--server and --client are exclusive");
      }
      const profile = opts.server ? "server" : "client";
      const { issueCertificate } = await import("../lib/ca/issue.ts");
      const ca = await unlockCa(opts.dir, opts.passwordFile);
      const issued = await issueCertificate(opts.dir, ca, {
        name,
        profile,
        dns: opts.dns,
        ip: opts.ip,
        days: opts.days,
        keyType: opts.keyType,
        reissue: Boolean(opts.reissue),
      }, Boolean(opts.force));
      info(
        `wrote ${issued.certPath} and ${issued.keyPath} (${profile}, serial ${issued.entry.serial})`,
      );
      printFingerprint(issued.entry.fingerprint);
      for (const e of issued.earlier.filter((e) => !e.revokedAt)) {
        info(`${e.name} also still has serial ${e.serial} (valid until revoked)`);
      }
      if (issued.earlier.some((e) => !e.revokedAt)) {
        info(
          `to end the old ones: securechat cert revoke SERIAL (\`cert revoke ${name}\` revokes all)`,
        );
      }
    });

  crlSigningCommand(cert, "revoke", "Revoke certificates by name or serial and re-sign ca.crl.")
    .argument("<name|serial>", "a name from `cert list`, or a serial in hex")
    .action(async (target: string, opts) => {
      opts.dir = await pkiDir(opts.dir);
      const { revokeCertificates } = await import("../lib/ca/revoke.ts");
      const ca = await unlockCa(opts.dir, opts.passwordFile);
      const revoked = await revokeCertificates(opts.dir, ca, target, opts.crlDays);
      if (revoked.length === 0) {
        info(`"${target}" was already revoked; ${opts.dir}/ca.crl re-signed`);
      }
      for (const e of revoked) info(`revoked ${e.name} (serial ${e.serial})`);
      info(`wrote ${opts.dir}/ca.crl`);
      info(
        `a running \`securechat serve\` reading this ca.crl picks it up within ${
          DEFAULT_CRL_CHECK_MS / 1000
        } seconds (at once on SIGHUP) and ends the revoked certificates' live sessions; ` +
          "copy ca.crl to servers that read it from elsewhere",
      );
    });

  crlSigningCommand(cert, "crl", "Re-sign ca.crl with a fresh nextUpdate (run before it lapses).")
    .action(async (opts) => {
      opts.dir = await pkiDir(opts.dir);
      const { writeCrl } = await import("../lib/ca/revoke.ts");
      const ca = await unlockCa(opts.dir, opts.passwordFile);
      await writeCrl(opts.dir, ca, await readInventory(opts.dir), opts.crlDays);
      info(`wrote ${opts.dir}/ca.crl`);
    });

  subcommand(cert, "list", "List issued certificates.")
    .option("--dir <dir>", "PKI directory (default: certs/ in the home)")
    .option("--json", "print a JSON array instead of a table")
    .action(async (opts) => {
      opts.dir = await pkiDir(opts.dir);
      const { certificates } = await readInventory(opts.dir);
      const now = new Date();
      const listed = certificates.map((e) => ({
        name: e.name,
        serial: formatSerial(e.serial),
        profile: e.profile,
        notAfter: e.notAfter,
        status: e.revokedAt ? "revoked" : new Date(e.notAfter) < now ? "expired" : "valid",
        ...(e.revokedAt ? { revokedAt: e.revokedAt } : {}),
        fingerprint: formatFingerprint(e.fingerprint),
      }));
      if (opts.json) return console.log(safeJson(listed, 2));
      if (certificates.length === 0) info(`no certificates issued in ${opts.dir}`);
      const rows = listed.map((e) => [
        e.name,
        e.serial,
        e.profile,
        e.notAfter.slice(0, 10),
        e.revokedAt ? `revoked ${e.revokedAt.slice(0, 10)}` : e.status,
      ]);
      const header = ["NAME", "SERIAL", "PROFILE", "EXPIRES", "STATUS"];
      const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i].length)));
      for (const row of certificates.length ? [header, ...rows] : []) {
        console.log(row.map((cell, i) => safeText(cell).padEnd(widths[i])).join("  ").trimEnd());
      }
      await reportCrl(`${opts.dir}/ca.crl`);
    });

  subcommand(cert, "show", "Print a certificate in human terms (revoked ones say so).")
    .argument("<name|file.pem>", "a name from `cert list`, or a certificate file (PEM)")
    .option("--dir <dir>", "PKI directory for a name (default: certs/ in the home)")
    .option("--json", "print the facts as JSON")
    .action(async (target: string, opts) => {
      opts.dir = await pkiDir(opts.dir);
      const file = await certificateFile(target, opts.dir);
      const facts = describeCertificate(await readCertificateDer(file));
      // The CA's record says whether it was revoked (a certificate cannot say so itself).
      const { certificates } = await readInventory(opts.dir);
      const revoked = certificates.find((e) => formatSerial(e.serial) === facts.serial)?.revokedAt;
      if (revoked) Object.assign(facts, { status: "revoked", revokedAt: revoked });
      console.log(opts.json ? safeJson(facts, 2) : certificateText(facts));
    });

  subcommand(
    cert,
    "export",
    "Write a password-protected bundle (key, certificate, CA) for the browser page.",
  )
    .argument("<name>", "the user whose <name>.pem and <name>.key are exported")
    .option("--dir <dir>", "PKI directory (default: certs/ in the home)")
    .option("--out <file>", "where to write the bundle (default <dir>/<name>.bundle.pem)")
    .option("--password-file <file>", "bundle password (first line; prompted on a terminal)")
    .option("--key-password-file <file>", "password of <name>.key, if it is encrypted")
    .option("--force", "replace an existing bundle")
    .action(async (name: string, opts) => {
      opts.dir = await pkiDir(opts.dir);
      if (!isValidUserName(name)) {
        throw new SecureChatError("USAGE", `${safeText(name)} is not a user name`);
      }
      const out: string = opts.out ?? join(opts.dir, `${name}.bundle.pem`);
      if (!opts.force && await Deno.lstat(out).then(() => true, () => false)) {
        throw new SecureChatError("USAGE", `${out} exists`, { hint: "pass --force to replace it" });
      }
      const certDer = await readCertificateDer(join(opts.dir, `${name}.pem`));
      const caDer = await readCertificateDer(join(opts.dir, "ca.pem"));
      const crlDer = await readCrlDer(join(opts.dir, "ca.crl"));
      const keyPassword = opts.keyPasswordFile
        ? await readPasswordFile(opts.keyPasswordFile)
        : undefined;
      const pkcs8 = await readPrivateKeyPkcs8(join(opts.dir, `${name}.key`), keyPassword);
      try {
        const password = await bundlePassword(opts.passwordFile);
        const text = await encodeExportBundle({ pkcs8, certDer, caDer, crlDer }, password);
        await writeFileAtomic(out, text, 0o600);
      } finally {
        wipe(pkcs8);
      }
      info(`wrote ${out} (0600): ${name}'s key, encrypted under the bundle password, `);
      info(
        `their certificate, the CA${crlDer ? " and its CRL" : ""}; import it in the page ` +
          "served by `serve --web`",
      );
      info(
        `CA fingerprint ${formatFingerprint(fingerprintOf(caDer))}: the page shows it at import; ` +
          "check that they match",
      );
    });
}

/** The bundle password: a file's first line, or typed twice on a terminal (commands/_password.ts). */
async function bundlePassword(file?: string): Promise<string> {
  if (!file) return await askNewPassword("bundle password: ", { rules: checkNewPassword });
  return heldToRules(
    await readPasswordFile(file),
    checkNewPassword,
    "the bundle is only as strong as its password: a passphrase of a few words is best",
  );
}

/** `cert show alice` means `<dir>/alice.pem`; anything that exists as a file is that file. */
async function certificateFile(target: string, dir: string): Promise<string> {
  if (await Deno.stat(target).then((s) => s.isFile, () => false)) return target;
  if (isValidUserName(target)) return join(dir, `${target}.pem`);
  throw new SecureChatError("IO_ERROR", `no certificate file ${target}`, {
    hint: "give a name from `securechat cert list` or the path of a .pem file",
  });
}

/** Says whether revocation is on and warns before the CRL lapses (issue 11 item 2). */
async function reportCrl(path: string): Promise<void> {
  const crl = await crlFileStatus(path);
  if (crl.state === "missing") {
    info(
      `no ${path}: servers refuse no certificate as revoked until \`cert revoke\` or \`cert crl\``,
    );
    return;
  }
  const when = `${crl.nextUpdate?.toISOString().slice(0, 10)} (${
    crl.days < 0 ? `${Math.ceil(-crl.days)} days ago` : `in ${Math.floor(crl.days)} days`
  })`;
  if (crl.state === "current") return info(`${path}: number ${crl.number}, next update ${when}`);
  info(
    `warning: ${path} ${crl.state === "lapsed" ? "lapsed" : "lapses"} ${when}: ` +
      `servers then refuse every login; run \`securechat cert crl\` now`,
  );
}
