/**
 * A general X.509 path validator (RFC 5280 §6 with the stricter Web PKI profile where
 * the two differ): builds a path from the leaf through untrusted intermediates to a
 * trust anchor, then checks every certificate on it. securechat's own policy
 * (validate.ts) and the x509-limbo runner both call `verifyPath`, so the conformance
 * numbers describe the code that guards the handshake.
 */
import { SecureChatError } from "../errors.ts";
import { dnsNameMatches, formatIp, parseIp } from "./hostname.ts";
import { KU, OID, type ParsedCertificate } from "./certificate.ts";
import { checkNameConstraints, checkNameConstraintsSyntax } from "./constraints.ts";
import { verifySignedData } from "./signature.ts";
import { timingSafeEqual } from "../bytes.ts";

export interface PathPolicy {
  /** The instant of validation. */
  time: Date;
  /** The extendedKeyUsage the leaf must carry (and any issuer that restricts EKU must allow). */
  eku?: string;
  /** Reject a leaf with no extendedKeyUsage extension at all (Web PKI); RFC 5280 reads absence as "any". */
  requireEku: boolean;
  /** Reject a leaf with no keyUsage extension; a keyUsage without digitalSignature is always rejected. */
  requireKeyUsage: boolean;
  /** The server name the client dialled: a DNS name or an IP literal, matched against SANs only. */
  serverName?: string;
  /** Untrusted intermediates allowed between leaf and anchor (self-issued ones are free). */
  maxIntermediates: number;
}

/** A validated path: the leaf, the intermediates upwards, the anchor last. */
export type CertPath = ParsedCertificate[];

/** Signature checks one path search may spend, bounding hostile intermediate bundles. */
const SIGNATURE_BUDGET = 64;

const UNDERSTOOD_EXTENSIONS = new Set<string>([
  OID.basicConstraints,
  OID.keyUsage,
  OID.extKeyUsage,
  OID.subjectAltName,
  OID.subjectKeyId,
  OID.authorityKeyId,
  OID.nameConstraints,
]);

/** Where a certificate sits: anchors are trusted as given, so a few rules skip them. */
export type Position = "leaf" | "intermediate" | "anchor";

function describe(cert: ParsedCertificate, position: Position): string {
  if (position === "leaf") return "certificate";
  const cn = cert.subject.attributes.find((a) => a.oid === OID.commonName)?.value;
  return cn ? `CA certificate "${cn}"` : "CA certificate";
}

function fail(cert: ParsedCertificate, position: Position, reason: string): never {
  throw new SecureChatError("BAD_CERT", `${describe(cert, position)} ${reason}`);
}

export function isSelfIssued(cert: ParsedCertificate): boolean {
  return timingSafeEqual(cert.subject.raw, cert.issuer.raw);
}

function checkPublicKey(cert: ParsedCertificate, position: Position): void {
  const key = cert.publicKey;
  if (key.kind === "unsupported") fail(cert, position, `has an unsupported ${key.description}`);
  if (key.kind === "rsa" && (key.bits < 2048 || key.bits % 8 !== 0)) {
    fail(cert, position, `has a weak or odd-sized RSA key (${key.bits} bits)`);
  }
}

/**
 * The checks on one certificate that depend neither on time nor on its place in a
 * particular path: encoding rules, extension criticality, key strength, CA-ness.
 */
export function checkCertificateProfile(
  cert: ParsedCertificate,
  position: Position,
  policy: Pick<PathPolicy, "requireKeyUsage">,
): void {
  if (cert.version !== 2) fail(cert, position, "is not X.509 v3");
  const serial = cert.serial;
  // Anchors are trusted as configured; some long-lived roots predate these rules.
  if (position !== "anchor" && (serial[0] & 0x80 || serial.every((b) => b === 0))) {
    fail(cert, position, "has a non-positive serial number");
  }
  if (position !== "anchor" && serial.length > 20) {
    fail(cert, position, "has a serial number over 20 octets");
  }
  if (!timingSafeEqual(cert.signatureAlgorithm.raw, cert.tbsSignatureAlgorithm.raw)) {
    fail(cert, position, "has mismatched signature algorithm fields");
  }
  if (cert.issuer.attributes.length === 0) fail(cert, position, "has an empty issuer");
  for (const [oid, { critical }] of cert.extensions) {
    if (critical && !UNDERSTOOD_EXTENSIONS.has(oid)) {
      fail(cert, position, `has an unknown critical extension ${oid}`);
    }
  }
  const crit = (oid: string) => cert.extensions.get(oid)?.critical;
  for (const oid of [OID.authorityKeyId, OID.subjectKeyId, OID.extKeyUsage]) {
    if (crit(oid)) fail(cert, position, `marks extension ${oid} critical`);
  }
  if (crit(OID.policyConstraints) === false) {
    fail(cert, position, "has non-critical policyConstraints");
  }
  const aki = cert.authorityKeyId;
  if (aki && (!aki.keyId || aki.hasIssuerAndSerial)) {
    fail(cert, position, "has an authorityKeyIdentifier without a plain key identifier");
  }
  if (isSelfIssued(cert)) {
    const selfSigned = position === "anchor";
    if (
      selfSigned && aki && (!cert.subjectKeyId || !timingSafeEqual(aki.keyId!, cert.subjectKeyId))
    ) {
      fail(
        cert,
        position,
        "has an authorityKeyIdentifier that differs from its own key identifier",
      );
    }
  } else if (!aki) fail(cert, position, "lacks an authorityKeyIdentifier");
  if (cert.subject.attributes.length === 0) {
    if (!cert.subjectAltName || !crit(OID.subjectAltName)) {
      fail(cert, position, "has an empty subject without a critical subjectAltName");
    }
  } else if (crit(OID.subjectAltName)) {
    fail(cert, position, "has a critical subjectAltName beside a non-empty subject");
  }
  const bc = cert.basicConstraints;
  const ku = cert.keyUsage;
  if (ku !== undefined && ku & KU.keyCertSign && !bc?.ca) {
    fail(cert, position, "asserts keyCertSign without being a CA");
  }
  if (cert.nameConstraints) {
    if (!bc?.ca) fail(cert, position, "has nameConstraints without being a CA");
    checkNameConstraintsSyntax(cert.nameConstraints);
  }
  checkPublicKey(cert, position);
  if (position === "leaf") {
    if (bc?.ca) fail(cert, position, "is a CA certificate, not an end-entity certificate");
    if (cert.extKeyUsage?.includes(OID.anyExtendedKeyUsage)) {
      fail(cert, position, "carries anyExtendedKeyUsage");
    }
    if (ku === undefined ? policy.requireKeyUsage : !(ku & KU.digitalSignature)) {
      fail(cert, position, "lacks keyUsage digitalSignature");
    }
    return;
  }
  if (!bc) fail(cert, position, "lacks basicConstraints");
  if (!bc.ca) fail(cert, position, "is not a CA (basicConstraints CA:FALSE)");
  if (!crit(OID.basicConstraints)) fail(cert, position, "has non-critical basicConstraints");
  if (ku !== undefined && !(ku & KU.keyCertSign)) {
    fail(cert, position, "lacks keyUsage keyCertSign");
  }
  if (cert.subject.attributes.length === 0) fail(cert, position, "has an empty subject");
  if (!cert.subjectKeyId) fail(cert, position, "lacks a subjectKeyIdentifier");
  if (position === "anchor" && cert.extKeyUsage) {
    fail(cert, position, "is a root with extendedKeyUsage");
  }
}

function checkTime(cert: ParsedCertificate, position: Position, time: Date): void {
  // Certificates carry whole seconds, so compare at that resolution (RFC 5280 §4.1.2.5).
  const t = Math.floor(time.getTime() / 1000) * 1000;
  if (t < cert.notBefore.getTime()) fail(cert, position, "is not yet valid");
  if (t > cert.notAfter.getTime()) fail(cert, position, "has expired");
}

function checkEku(cert: ParsedCertificate, position: Position, policy: PathPolicy): void {
  if (!policy.eku) return;
  const eku = cert.extKeyUsage;
  const name = policy.eku === OID.serverAuth
    ? "serverAuth"
    : policy.eku === OID.clientAuth
    ? "clientAuth"
    : policy.eku;
  if (eku ? !eku.includes(policy.eku) : position === "leaf" && policy.requireEku) {
    fail(cert, position, `is not valid for ${name} (extendedKeyUsage)`);
  }
}

/** Server identity: a SAN of the dialled name's kind; the CN is never consulted (RFC 9525 §6.2). */
export function checkServerName(leaf: ParsedCertificate, name: string): void {
  const sans = leaf.subjectAltName ?? [];
  const ip = parseIp(name);
  const ok = ip
    ? sans.some((s) =>
      s.type === "ip" && s.value.length === ip.length && timingSafeEqual(s.value, ip)
    )
    : sans.some((s) => s.type === "dns" && dnsNameMatches(s.value, name));
  if (!ok) fail(leaf, "leaf", `does not match the server name "${name}"`);
}

/** An IPv4 literal in the loose forms resolvers accept (hex integer, leading zeros), or strict IPv6. */
function parseIpLoosely(text: string): Uint8Array | null {
  if (/^0x[0-9a-f]{1,8}$/i.test(text)) {
    const n = parseInt(text, 16);
    return Uint8Array.of(n >>> 24, (n >>> 16) & 0xff, (n >>> 8) & 0xff, n & 0xff);
  }
  const dotted = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/.exec(text);
  if (dotted) return Uint8Array.from(dotted.slice(1).map(Number));
  return parseIp(text);
}

/**
 * A CN that names the same host as a SAN must be its exact canonical copy (CABF BR
 * 7.1.4.3): a second spelling of a name is how confusion attacks on matchers start.
 */
function checkCnSpelling(leaf: ParsedCertificate): void {
  for (const { oid, value } of leaf.subject.attributes) {
    if (oid !== OID.commonName) continue;
    const ip = parseIpLoosely(value);
    for (const san of leaf.subjectAltName ?? []) {
      const sameIp = ip && san.type === "ip" && san.value.length === ip.length &&
        timingSafeEqual(san.value, ip) && value !== formatIp(san.value);
      const sameDns = san.type === "dns" && san.value.toLowerCase() === value.toLowerCase() &&
        san.value !== value;
      if (sameIp || sameDns) {
        fail(leaf, "leaf", `has a commonName "${value}" that misspells its SAN`);
      }
    }
  }
}

/** Checks that depend on the whole path: path lengths and name constraints. */
function checkPath(path: CertPath): void {
  for (let i = 1; i < path.length; i++) {
    const issuer = path[i];
    const below = path.slice(1, i).filter((c) => !isSelfIssued(c)).length;
    const pathLen = issuer.basicConstraints?.pathLen;
    if (pathLen !== undefined && below > pathLen) {
      fail(issuer, "intermediate", "path length exceeded");
    }
    const nc = issuer.nameConstraints;
    if (!nc) continue;
    // Self-issued intermediates are exempt from their superiors' constraints; the leaf never is.
    path.slice(0, i).filter((c, j) => j === 0 || !isSelfIssued(c))
      .forEach((c) => checkNameConstraints(nc, c));
  }
}

function couldIssue(issuer: ParsedCertificate, child: ParsedCertificate): boolean {
  if (!timingSafeEqual(issuer.subject.raw, child.issuer.raw)) return false;
  const keyId = child.authorityKeyId?.keyId;
  return !keyId || !issuer.subjectKeyId || timingSafeEqual(keyId, issuer.subjectKeyId);
}

/**
 * Finds and checks a path from `leaf` to one of `anchors`.
 * @throws BAD_CERT with the reason from the most promising path tried
 */
export async function verifyPath(
  leaf: ParsedCertificate,
  intermediates: ParsedCertificate[],
  anchors: ParsedCertificate[],
  policy: PathPolicy,
): Promise<CertPath> {
  checkCertificateProfile(leaf, "leaf", policy);
  checkTime(leaf, "leaf", policy.time);
  checkEku(leaf, "leaf", policy);
  if (policy.serverName !== undefined) checkServerName(leaf, policy.serverName);
  checkCnSpelling(leaf);

  let budget = SIGNATURE_BUDGET;
  let firstError: unknown;
  const extend = async (path: CertPath): Promise<CertPath | undefined> => {
    const child = path[path.length - 1];
    const candidates = [
      ...anchors.map((c) => ({ cert: c, anchor: true })),
      ...intermediates.map((c) => ({ cert: c, anchor: false })),
    ].filter(({ cert }) => !path.includes(cert) && couldIssue(cert, child));
    const depth = path.slice(1).filter((c) => !isSelfIssued(c)).length;
    for (const { cert, anchor } of candidates) {
      const position = anchor ? "anchor" : "intermediate";
      try {
        if (!anchor && !isSelfIssued(cert) && depth >= policy.maxIntermediates) {
          fail(cert, position, "would exceed the maximum chain depth");
        }
        checkCertificateProfile(cert, position, policy);
        checkTime(cert, position, policy.time);
        checkEku(cert, position, policy);
        if (--budget < 0) throw new SecureChatError("BAD_CERT", "path building gave up");
        const signed = await verifySignedData(
          cert,
          child.signatureAlgorithm,
          child.tbs,
          child.signature,
        );
        if (!signed) {
          fail(child, path.length === 1 ? "leaf" : "intermediate", "has an invalid signature");
        }
        const candidatePath = [...path, cert];
        if (anchor) {
          checkPath(candidatePath);
          return candidatePath;
        }
        const found = await extend(candidatePath);
        if (found) return found;
      } catch (error) {
        if (!(error instanceof SecureChatError) || error.code !== "BAD_CERT") throw error;
        firstError ??= error;
      }
    }
    return undefined;
  };
  const path = await extend([leaf]);
  if (path) return path;
  throw firstError ?? new SecureChatError("BAD_CERT", "certificate is not issued by a trusted CA");
}
