/**
 * The leaf certificate profiles (docs/PKI.md "Profiles") and issuing them under the CA.
 */
import "reflect-metadata";
import * as x509 from "@peculiar/x509";
import { SecureChatError } from "../errors.ts";
import { randomSerialHex, validityWindow } from "./serial.ts";
import { generateKeyPair, type KeyType, privateKeyToPem, signingAlgorithmOf } from "../pki/keys.ts";
import { pemEncode } from "../pki/pem.ts";
import { fingerprintOf } from "../pki/describe.ts";
import { OID } from "../pki/certificate.ts";
import { isValidDnsName, parseIp } from "../pki/hostname.ts";
import { canonicalName, isReservedUserName, isValidUserName, nameSkeleton } from "../pki/names.ts";
import { caPaths, type CaSigner } from "./ca.ts";
import { ensurePrivateDir } from "../private_dir.ts";
import { pathExists, writeFileAtomic } from "../files.ts";
import { type Inventory, type InventoryEntry, readInventory, recordIssued } from "./inventory.ts";

export type Profile = "server" | "client";

export interface IssueOptions {
  name: string;
  profile: Profile;
  dns: string[];
  ip: string[];
  days: number;
  keyType: KeyType;
  /**
   * A deliberate further certificate for a user who has one (a new key, say): the earlier
   * ones stay valid until revoked. Without it a name that is taken is refused.
   */
  reissue?: boolean;
}

/** Server SANs default to the loopback names a local test dials. */
export const DEFAULT_SERVER_DNS = ["localhost"];
export const DEFAULT_SERVER_IP = ["127.0.0.1"];

/**
 * Checks issue options before any key is generated.
 * @throws USAGE for a bad name, SAN or a SAN given to the client profile
 */
export function checkIssueOptions(opts: IssueOptions): void {
  if (!isValidUserName(opts.name)) {
    throw new SecureChatError("USAGE", `invalid name "${opts.name}"`, {
      hint: "use 3-32 characters of A-Z a-z 0-9 _ . - starting with a letter or digit",
    });
  }
  if (opts.profile === "client" && isReservedUserName(opts.name)) {
    throw new SecureChatError("USAGE", `the name "${opts.name}" is reserved for the server`, {
      hint: "server certificates use --server; users pick another name",
    });
  }
  if (opts.profile === "client" && (opts.dns.length || opts.ip.length)) {
    throw new SecureChatError("USAGE", "--dns and --ip apply to --server certificates only");
  }
  for (const dns of opts.dns) {
    if (!isValidDnsName(dns.toLowerCase(), true)) {
      throw new SecureChatError("USAGE", `invalid DNS name "${dns}"`);
    }
  }
  for (const ip of opts.ip) {
    if (!parseIp(ip)) throw new SecureChatError("USAGE", `invalid IP address "${ip}"`);
  }
}

/** The extensions of a leaf of `opts.profile` (docs/PKI.md "Profiles") for `publicKey`. */
export async function leafExtensions(
  opts: IssueOptions,
  publicKey: CryptoKey,
  ca: CaSigner,
): Promise<x509.Extension[]> {
  const caSki = ca.cert.getExtension(x509.SubjectKeyIdentifierExtension);
  if (!caSki) throw new SecureChatError("BAD_CERT", "CA certificate lacks a subjectKeyIdentifier");
  const extensions: x509.Extension[] = [
    new x509.BasicConstraintsExtension(false, undefined, true),
    new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature, true),
    new x509.ExtendedKeyUsageExtension([
      opts.profile === "server" ? OID.serverAuth : OID.clientAuth,
    ]),
    await x509.SubjectKeyIdentifierExtension.create(publicKey),
    new x509.AuthorityKeyIdentifierExtension(caSki.keyId),
  ];
  if (opts.profile === "server") {
    const dns = opts.dns.length || opts.ip.length ? opts.dns : DEFAULT_SERVER_DNS;
    const ip = opts.dns.length || opts.ip.length ? opts.ip : DEFAULT_SERVER_IP;
    extensions.push(
      new x509.SubjectAlternativeNameExtension([
        ...dns.map((value) => ({ type: "dns" as const, value: value.toLowerCase() })),
        ...ip.map((value) => ({ type: "ip" as const, value })),
      ]),
    );
  }
  return extensions;
}

export interface IssuedCertificate {
  certPath: string;
  keyPath: string;
  entry: InventoryEntry;
  /** The user's earlier certificates (a re-issue), which stay valid until revoked. */
  earlier: InventoryEntry[];
}

/**
 * Checks a client name against every user the CA has issued to (issue 11 item 3): the
 * same user in another spelling, and a name confusable with another user's, are refused;
 * the same user again only as a deliberate re-issue.
 * @returns the user's earlier certificates
 * @throws USAGE naming the existing user
 */
export function checkNameAgainst(inventory: Inventory, opts: IssueOptions): InventoryEntry[] {
  if (opts.profile !== "client") return [];
  const users = inventory.certificates.filter((e) => e.profile === "client");
  const name = canonicalName(opts.name);
  const skeleton = nameSkeleton(opts.name);
  const same = users.filter((e) => canonicalName(e.name) === name);
  const differentSpelling = same.find((e) => e.name !== opts.name);
  if (differentSpelling) {
    throw new SecureChatError(
      "USAGE",
      `"${opts.name}" is the existing user "${differentSpelling.name}" (names are compared without case)`,
      {
        hint:
          `to give that user another certificate: cert issue ${differentSpelling.name} --reissue`,
      },
    );
  }
  if (same.length > 0 && !opts.reissue) {
    throw new SecureChatError(
      "USAGE",
      `"${opts.name}" already has a certificate (serial ${same[same.length - 1].serial})`,
      { hint: "pass --reissue to issue another for the same user (see `cert list`)" },
    );
  }
  const lookalike = users.find((e) =>
    canonicalName(e.name) !== name && nameSkeleton(e.name) === skeleton
  );
  if (lookalike) {
    throw new SecureChatError(
      "USAGE",
      `"${opts.name}" could be mistaken for the existing user "${lookalike.name}"`,
      { hint: "pick a name that differs by more than case, 0/o, 1/l/i, rn/m, vv/w or _ . -" },
    );
  }
  return same;
}

/**
 * Issues `<name>.pem` and `<name>.key` (0600) in `dir`, signed by the CA, and records
 * it in the inventory.
 * @throws USAGE for bad options or existing files without `force`; IO_ERROR
 */
export async function issueCertificate(
  dir: string,
  ca: CaSigner,
  opts: IssueOptions,
  force: boolean,
): Promise<IssuedCertificate> {
  checkIssueOptions(opts);
  // --force replaces the files of that name: it is a deliberate re-issue as well.
  const earlier = checkNameAgainst(await readInventory(dir), {
    ...opts,
    reissue: opts.reissue || force,
  });
  const certPath = `${dir}/${opts.name}.pem`;
  const keyPath = `${dir}/${opts.name}.key`;
  const { caCert } = caPaths(dir);
  if (certPath === caCert) {
    throw new SecureChatError("USAGE", `the name "${opts.name}" is reserved`);
  }
  // A deliberate re-issue replaces the user's files too: the new key is the point of it.
  if (!force && !opts.reissue && ((await pathExists(certPath)) || (await pathExists(keyPath)))) {
    throw new SecureChatError("USAGE", `${certPath} or ${keyPath} already exists`, {
      hint: "pass --force to replace it",
    });
  }
  const keys = await generateKeyPair(opts.keyType);
  const serial = randomSerialHex();
  const cert = await x509.X509CertificateGenerator.create({
    serialNumber: serial,
    subject: [{ CN: [opts.name] }],
    issuer: ca.cert.subjectName,
    ...validityWindow(opts.days),
    signingAlgorithm: signingAlgorithmOf(ca.key),
    publicKey: keys.publicKey,
    signingKey: ca.key,
    extensions: await leafExtensions(opts, keys.publicKey, ca),
  });
  const der = new Uint8Array(cert.rawData);
  await ensurePrivateDir(dir);
  await writeFileAtomic(keyPath, await privateKeyToPem(keys.privateKey));
  await writeFileAtomic(certPath, pemEncode("CERTIFICATE", der), 0o644);
  const entry: InventoryEntry = {
    name: opts.name,
    serial,
    profile: opts.profile,
    notAfter: cert.notAfter.toISOString(),
    fingerprint: fingerprintOf(der),
  };
  await recordIssued(dir, entry);
  return { certPath, keyPath, entry, earlier };
}
