/** `cert show`: a certificate in human terms, like `step certificate inspect --short`. */
import { sha256, toHex } from "../bytes.ts";
import { type GeneralName, KU, type Name, OID, parseCertificate } from "./certificate.ts";
import { formatIp } from "./hostname.ts";
import { signatureAlgorithmName } from "./signature.ts";

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

/** Colon-separated upper-case hex, the way openssl and step print fingerprints. */
export function colonHex(bytes: Uint8Array): string {
  return toHex(bytes).toUpperCase().match(/../g)?.join(":") ?? "";
}

/**
 * Describes a certificate as "label: value" lines.
 * @throws BAD_CERT when the DER is malformed
 */
export async function describeCertificate(der: Uint8Array, now = new Date()): Promise<string> {
  const cert = parseCertificate(der);
  const key = cert.publicKey;
  const keyText = key.kind === "rsa"
    ? `RSA ${key.bits} bits`
    : key.kind === "ec"
    ? `ECDSA ${key.curve}`
    : key.kind === "ed25519"
    ? "Ed25519"
    : key.description;
  const status = now < cert.notBefore ? "not yet valid" : now > cert.notAfter ? "expired" : "valid";
  const bc = cert.basicConstraints;
  const ku = cert.keyUsage;
  const lines: [string, string][] = [
    ["Subject", formatName(cert.subject)],
    ["Issuer", formatName(cert.issuer)],
    ["Serial", colonHex(cert.serial)],
    ["Valid from", cert.notBefore.toISOString()],
    ["Valid until", `${cert.notAfter.toISOString()} (${status})`],
    ["Key", keyText],
    ["Signature", signatureAlgorithmName(cert.signatureAlgorithm.oid)],
    ["SANs", cert.subjectAltName?.map(formatGeneralName).join(", ") ?? "(none)"],
    ["EKU", cert.extKeyUsage?.map((o) => EKU_NAMES[o] ?? o).join(", ") ?? "(none)"],
    [
      "Key usage",
      ku === undefined
        ? "(none)"
        : Object.entries(KU).filter(([, bit]) => ku & bit).map(([n]) => n).join(", "),
    ],
    [
      "Basic constraints",
      bc
        ? `CA:${bc.ca ? "TRUE" : "FALSE"}${
          bc.pathLen !== undefined ? `, pathLen:${bc.pathLen}` : ""
        }`
        : "(none)",
    ],
    ["SHA-256 fingerprint", colonHex(await sha256(der))],
  ];
  const width = Math.max(...lines.map(([label]) => label.length)) + 1;
  return lines.map(([label, value]) => `${`${label}:`.padEnd(width)} ${value}`).join("\n");
}
