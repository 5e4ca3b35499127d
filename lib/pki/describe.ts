/**
 * `cert show`: a certificate in human terms, like `step certificate inspect --short`; and the
 * one home of a certificate's fingerprint, computed and printed.
 */
import { toHex } from "../bytes.ts";
import { sha256 } from "#sync-crypto";
import { type GeneralName, KU, type Name, OID, parseCertificate } from "./certificate.ts";
import { formatIp } from "./hostname.ts";
import { signatureAlgorithmName } from "./signature.ts";
import { safeText } from "../safe_text.ts";

const ATTRIBUTE_NAMES: Record<string, string> = {
  "2.5.4.3": "CN",
  "2.5.4.6": "C",
  "2.5.4.7": "L",
  "2.5.4.8": "ST",
  "2.5.4.10": "O",
  "2.5.4.11": "OU",
  "2.5.4.5": "serialNumber",
  "0.9.2342.19200300.100.1.25": "DC",
  "1.2.840.113549.1.9.1": "emailAddress",
};

const EKU_NAMES: Record<string, string> = {
  [OID.serverAuth]: "serverAuth",
  [OID.clientAuth]: "clientAuth",
  [OID.anyExtendedKeyUsage]: "anyExtendedKeyUsage",
  "1.3.6.1.5.5.7.3.3": "codeSigning",
  "1.3.6.1.5.5.7.3.4": "emailProtection",
  "1.3.6.1.5.5.7.3.8": "timeStamping",
  "1.3.6.1.5.5.7.3.9": "OCSPSigning",
};

function formatName(name: Name): string {
  return name.attributes.map((a) => `${ATTRIBUTE_NAMES[a.oid] ?? a.oid}=${a.value}`).join(", ") ||
    "(empty)";
}

function formatGeneralName(n: GeneralName): string {
  switch (n.type) {
    case "dns":
      return `DNS:${n.value}`;
    case "ip":
      return `IP:${formatIp(n.value)}`;
    case "email":
      return `email:${n.value}`;
    case "uri":
      return `URI:${n.value}`;
    case "dn":
      return "DirName";
    default:
      return "other";
  }
}

/**
 * The one printed form of a serial everywhere (`ca init`, `cert issue/list/show`,
 * `verify`): lower-case hex of the DER INTEGER's octets, as `cert revoke` takes it.
 */
export function formatSerial(hex: string): string {
  return hex.toLowerCase();
}

/**
 * A certificate's fingerprint: SHA-256 of its DER, lower-case hex — what transcripts, the CA's
 * inventory, trust stores and `/verify` keep and compare.
 */
export function fingerprintOf(certDer: Uint8Array): string {
  return toHex(sha256(certDer));
}

/** The one printed form of a certificate fingerprint: `sha256:` and lower-case hex. */
export function formatFingerprint(hex: string): string {
  return `sha256:${hex.toLowerCase()}`;
}

/** What `cert show` prints (as text, or as JSON with `--json`). */
export interface CertificateFacts {
  subject: string;
  issuer: string;
  serial: string;
  notBefore: string;
  notAfter: string;
  /** Against the clock (and, where the caller knows it, the CA's record of revocations). */
  status: "valid" | "expired" | "not yet valid" | "revoked";
  revokedAt?: string;
  key: string;
  signature: string;
  subjectAltNames: string[];
  extendedKeyUsage: string[];
  keyUsage: string[];
  basicConstraints: string | null;
  fingerprint: string;
}

/**
 * The facts of a certificate in human terms.
 * @throws BAD_CERT when the DER is malformed
 */
export function describeCertificate(der: Uint8Array, now = new Date()): CertificateFacts {
  const cert = parseCertificate(der);
  const key = cert.publicKey;
  const keyText = key.kind === "rsa"
    ? `RSA ${key.bits} bits`
    : key.kind === "ec"
    ? `ECDSA ${key.curve}`
    : key.kind === "ed25519"
    ? "Ed25519"
    : key.description;
  const bc = cert.basicConstraints;
  const ku = cert.keyUsage;
  return {
    subject: formatName(cert.subject),
    issuer: formatName(cert.issuer),
    serial: formatSerial(toHex(cert.serial)),
    notBefore: cert.notBefore.toISOString(),
    notAfter: cert.notAfter.toISOString(),
    status: now < cert.notBefore ? "not yet valid" : now > cert.notAfter ? "expired" : "valid",
    key: keyText,
    signature: signatureAlgorithmName(cert.signatureAlgorithm.oid),
    subjectAltNames: cert.subjectAltName?.map(formatGeneralName) ?? [],
    extendedKeyUsage: cert.extKeyUsage?.map((o) => EKU_NAMES[o] ?? o) ?? [],
    keyUsage: ku === undefined
      ? []
      : Object.entries(KU).filter(([, bit]) => ku & bit).map(([n]) => n),
    basicConstraints: bc
      ? `CA:${bc.ca ? "TRUE" : "FALSE"}${bc.pathLen !== undefined ? `, pathLen:${bc.pathLen}` : ""}`
      : null,
    fingerprint: formatFingerprint(fingerprintOf(der)),
  };
}

/** `cert show`'s text: "label: value" lines, every value made safe for a terminal. */
export function certificateText(facts: CertificateFacts): string {
  const list = (items: string[]) => items.join(", ") || "(none)";
  const status = facts.status === "revoked" && facts.revokedAt
    ? `revoked ${facts.revokedAt}`
    : facts.status;
  const lines: [string, string][] = [
    ["Subject", facts.subject],
    ["Issuer", facts.issuer],
    ["Serial", facts.serial],
    ["Valid from", facts.notBefore],
    ["Valid until", facts.notAfter],
    ["Status", status],
    ["Key", facts.key],
    ["Signature", facts.signature],
    ["SANs", list(facts.subjectAltNames)],
    ["EKU", list(facts.extendedKeyUsage)],
    ["Key usage", list(facts.keyUsage)],
    ["Basic constraints", facts.basicConstraints ?? "(none)"],
    ["Fingerprint", facts.fingerprint],
  ];
  const width = Math.max(...lines.map(([label]) => label.length)) + 1;
  // Names and SANs are the issuer's bytes: each value is made safe for a terminal.
  return lines.map(([label, value]) => `${`${label}:`.padEnd(width)} ${safeText(value)}`).join(
    "\n",
  );
}
