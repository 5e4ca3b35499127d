/**
 * Parses an X.509 v3 certificate (RFC 5280 §4.1) into the facts the path validator and
 * `cert show` need. Structure only: malformed input is BAD_CERT here, while policy
 * (which keys, which extensions, criticality) is judged in path.ts.
 */
import {
  children,
  ctx,
  malformed,
  parseDerAs,
  parseTlv,
  readBitString,
  readBoolean,
  readIntegerBytes,
  readOid,
  readSmallInt,
  readTime,
  SeqReader,
  TAG,
  type Tlv,
} from "../der.ts";
import { isValidDnsName, isValidEmail } from "./hostname.ts";

export const OID = {
  commonName: "2.5.4.3",
  basicConstraints: "2.5.29.19",
  keyUsage: "2.5.29.15",
  extKeyUsage: "2.5.29.37",
  subjectAltName: "2.5.29.17",
  subjectKeyId: "2.5.29.14",
  authorityKeyId: "2.5.29.35",
  nameConstraints: "2.5.29.30",
  authorityInfoAccess: "1.3.6.1.5.5.7.1.1",
  crlNumber: "2.5.29.20",
  policyConstraints: "2.5.29.36",
  serverAuth: "1.3.6.1.5.5.7.3.1",
  clientAuth: "1.3.6.1.5.5.7.3.2",
  anyExtendedKeyUsage: "2.5.29.37.0",
} as const;

/** keyUsage bits (RFC 5280 §4.2.1.3) as a mask: bit n of the BIT STRING is `1 << n`. */
export const KU = {
  digitalSignature: 1 << 0,
  nonRepudiation: 1 << 1,
  keyEncipherment: 1 << 2,
  dataEncipherment: 1 << 3,
  keyAgreement: 1 << 4,
  keyCertSign: 1 << 5,
  cRLSign: 1 << 6,
  encipherOnly: 1 << 7,
  decipherOnly: 1 << 8,
} as const;

export type GeneralName =
  | { type: "dns"; value: string }
  | { type: "ip"; value: Uint8Array }
  | { type: "email"; value: string }
  | { type: "dn"; value: Uint8Array }
  | { type: "uri"; value: string }
  | { type: "other"; tag: number };

export interface Name {
  /** The DER of the Name; issuer/subject chaining compares these bytes. */
  raw: Uint8Array;
  attributes: { oid: string; value: string }[];
}

export type PublicKeyInfo =
  | { kind: "rsa"; bits: number }
  | { kind: "ec"; curve: "P-256" | "P-384" }
  | { kind: "ed25519" }
  | { kind: "unsupported"; description: string };

export interface AlgorithmId {
  raw: Uint8Array;
  oid: string;
  params?: Tlv;
}

export interface NameConstraints {
  permitted?: GeneralName[];
  excluded?: GeneralName[];
}

export interface ParsedCertificate {
  der: Uint8Array;
  tbs: Uint8Array;
  version: number;
  serial: Uint8Array;
  tbsSignatureAlgorithm: AlgorithmId;
  signatureAlgorithm: AlgorithmId;
  signature: Uint8Array;
  issuer: Name;
  subject: Name;
  notBefore: Date;
  notAfter: Date;
  spki: Uint8Array;
  publicKey: PublicKeyInfo;
  /** Every extension by OID, with its criticality, parsed or not. */
  extensions: Map<string, { critical: boolean; value: Uint8Array }>;
  basicConstraints?: { ca: boolean; pathLen?: number };
  keyUsage?: number;
  extKeyUsage?: string[];
  subjectAltName?: GeneralName[];
  subjectKeyId?: Uint8Array;
  authorityKeyId?: { keyId?: Uint8Array; hasIssuerAndSerial: boolean };
  nameConstraints?: NameConstraints;
}

const CURVES: Record<string, "P-256" | "P-384"> = {
  "1.2.840.10045.3.1.7": "P-256",
  "1.3.132.0.34": "P-384",
};

export function parseAlgorithmId(tlv: Tlv): AlgorithmId {
  const seq = new SeqReader(tlv, "AlgorithmIdentifier");
  const oid = readOid(seq.next(TAG.OID, "algorithm OID"));
  const [params, extra] = children(tlv).slice(1);
  if (extra) malformed("AlgorithmIdentifier has extra fields");
  return { raw: tlv.raw, oid, params };
}

const latin1 = new TextDecoder("latin1");
const utf8Fatal = new TextDecoder("utf-8", { fatal: true });
const utf16be = new TextDecoder("utf-16be", { fatal: true });

function readDirectoryString(tlv: Tlv): string {
  try {
    switch (tlv.tag) {
      case TAG.UTF8_STRING:
        return utf8Fatal.decode(tlv.value);
      case TAG.BMP_STRING:
        return utf16be.decode(tlv.value);
      case TAG.PRINTABLE_STRING:
      case TAG.IA5_STRING:
      case TAG.T61_STRING:
        return latin1.decode(tlv.value);
      default:
        return `#${Array.from(tlv.raw, (b) => b.toString(16).padStart(2, "0")).join("")}`;
    }
  } catch {
    return malformed("undecodable string in name");
  }
}

export function parseName(tlv: Tlv): Name {
  if (tlv.tag !== TAG.SEQUENCE) malformed("Name is not a SEQUENCE");
  const attributes = children(tlv).flatMap((rdn) => {
    if (rdn.tag !== TAG.SET) malformed("RDN is not a SET");
    const atvs = children(rdn);
    if (atvs.length === 0) malformed("empty RDN");
    return atvs.map((atv) => {
      const seq = new SeqReader(atv, "AttributeTypeAndValue");
      const oid = readOid(seq.next(TAG.OID, "attribute type"));
      const [, value, extra] = children(atv);
      if (!value || extra) malformed("bad AttributeTypeAndValue");
      return { oid, value: readDirectoryString(value) };
    });
  });
  return { raw: tlv.raw, attributes };
}

function ascii(bytes: Uint8Array, what: string): string {
  if (bytes.some((b) => b < 0x21 || b > 0x7e)) malformed(`non-printable ${what}`);
  return latin1.decode(bytes);
}

/**
 * One GeneralName. In a SAN the dNSName/iPAddress/rfc822Name must be well formed;
 * in a name constraint an iPAddress is address+mask and a DNS or email base has its
 * own syntax, checked by the caller.
 */
export function parseGeneralName(tlv: Tlv, inConstraint = false): GeneralName {
  switch (tlv.tag) {
    case ctx(1): {
      const value = ascii(tlv.value, "rfc822Name");
      if (!inConstraint && !isValidEmail(value)) malformed("invalid rfc822Name");
      return { type: "email", value };
    }
    case ctx(2): {
      const value = tlv.value.length ? ascii(tlv.value, "dNSName") : "";
      if (!inConstraint && !isValidDnsName(value, true)) malformed("invalid dNSName");
      return { type: "dns", value };
    }
    case ctx(7):
      if (
        tlv.value.length !== (inConstraint ? 8 : 4) && tlv.value.length !== (inConstraint ? 32 : 16)
      ) {
        malformed("invalid iPAddress length");
      }
      return { type: "ip", value: tlv.value };
    case ctx(4, true):
      return { type: "dn", value: parseName(parseTlv(tlv.value)).raw };
    case ctx(6):
      return { type: "uri", value: ascii(tlv.value, "URI") };
    case ctx(0, true):
    case ctx(3, true):
    case ctx(5, true):
    case ctx(8):
      return { type: "other", tag: tlv.tag };
    default:
      return malformed("unknown GeneralName");
  }
}

function parseGeneralNames(tlv: Tlv, what: string): GeneralName[] {
  if (tlv.tag !== TAG.SEQUENCE) malformed(`${what} is not a SEQUENCE`);
  const names = children(tlv).map((n) => parseGeneralName(n));
  if (names.length === 0) malformed(`empty ${what}`);
  return names;
}

function parseSubtrees(tlv: Tlv): GeneralName[] {
  const subtrees = children(tlv).map((subtree) => {
    const seq = new SeqReader(subtree, "GeneralSubtree");
    const [base, ...rest] = children(subtree);
    if (!base) malformed("empty GeneralSubtree");
    seq.next(base.tag, "base");
    // RFC 5280 §4.2.1.10: minimum MUST be zero and maximum absent.
    if (rest.length) malformed("GeneralSubtree with minimum/maximum");
    return parseGeneralName(base, true);
  });
  if (subtrees.length === 0) malformed("empty GeneralSubtrees");
  return subtrees;
}

function parsePublicKey(spki: Tlv): PublicKeyInfo {
  const seq = new SeqReader(spki, "SubjectPublicKeyInfo");
  const alg = parseAlgorithmId(seq.next(TAG.SEQUENCE, "SPKI algorithm"));
  const key = readBitString(seq.next(TAG.BIT_STRING, "SPKI key"));
  seq.end("SubjectPublicKeyInfo");
  if (key.unused) malformed("SPKI key has padding bits");
  switch (alg.oid) {
    case "1.2.840.113549.1.1.1": {
      if (alg.params?.tag !== TAG.NULL || alg.params.value.length) malformed("RSA key params");
      const rsa = new SeqReader(parseTlv(key.bytes), "RSAPublicKey");
      const modulus = readIntegerBytes(rsa.next(TAG.INTEGER, "RSA modulus"));
      readIntegerBytes(rsa.next(TAG.INTEGER, "RSA exponent"));
      rsa.end("RSAPublicKey");
      if (modulus[0] & 0x80) malformed("negative RSA modulus");
      const m = modulus[0] === 0 ? modulus.subarray(1) : modulus;
      return { kind: "rsa", bits: m.length * 8 - Math.clz32(m[0]) + 24 };
    }
    case "1.2.840.10045.2.1": {
      if (alg.params?.tag !== TAG.OID) {
        return { kind: "unsupported", description: "EC key with explicit curve parameters" };
      }
      const curveOid = readOid(alg.params);
      const curve = CURVES[curveOid];
      if (!curve) return { kind: "unsupported", description: `EC curve ${curveOid}` };
      return { kind: "ec", curve };
    }
    case "1.3.101.112":
      if (alg.params || key.bytes.length !== 32) malformed("Ed25519 key");
      return { kind: "ed25519" };
    default:
      return { kind: "unsupported", description: `key algorithm ${alg.oid}` };
  }
}

/** Fills the parsed forms of the extensions we understand; the rest stay opaque. */
function parseExtension(cert: ParsedCertificate, oid: string, value: Uint8Array): void {
  const tlv = parseTlv(value);
  switch (oid) {
    case OID.basicConstraints: {
      const seq = new SeqReader(tlv, "basicConstraints");
      const caTlv = seq.optional(TAG.BOOLEAN);
      const pathTlv = seq.optional(TAG.INTEGER);
      seq.end("basicConstraints");
      const ca = caTlv ? readBoolean(caTlv) : false;
      cert.basicConstraints = { ca, pathLen: pathTlv ? readSmallInt(pathTlv) : undefined };
      break;
    }
    case OID.keyUsage: {
      const { bytes } = readBitString(tlv);
      let mask = 0;
      for (let bit = 0; bit < Math.min(bytes.length * 8, 9); bit++) {
        if (bytes[bit >> 3] & (0x80 >> (bit & 7))) mask |= 1 << bit;
      }
      cert.keyUsage = mask;
      break;
    }
    case OID.extKeyUsage: {
      if (tlv.tag !== TAG.SEQUENCE) malformed("extKeyUsage");
      cert.extKeyUsage = children(tlv).map(readOid);
      if (cert.extKeyUsage.length === 0) malformed("empty extKeyUsage");
      break;
    }
    case OID.subjectAltName:
      cert.subjectAltName = parseGeneralNames(tlv, "subjectAltName");
      break;
    case OID.subjectKeyId:
      if (tlv.tag !== TAG.OCTET_STRING) malformed("subjectKeyIdentifier");
      cert.subjectKeyId = tlv.value;
      break;
    case OID.authorityKeyId: {
      const seq = new SeqReader(tlv, "authorityKeyIdentifier");
      const keyId = seq.optional(ctx(0))?.value;
      const issuer = seq.optional(ctx(1, true));
      const serial = seq.optional(ctx(2));
      seq.end("authorityKeyIdentifier");
      cert.authorityKeyId = { keyId, hasIssuerAndSerial: Boolean(issuer || serial) };
      break;
    }
    case OID.nameConstraints: {
      const seq = new SeqReader(tlv, "nameConstraints");
      const permitted = seq.optional(ctx(0, true));
      const excluded = seq.optional(ctx(1, true));
      seq.end("nameConstraints");
      if (!permitted && !excluded) malformed("nameConstraints with no subtrees");
      cert.nameConstraints = {
        permitted: permitted && parseSubtrees(permitted),
        excluded: excluded && parseSubtrees(excluded),
      };
      break;
    }
    case OID.authorityInfoAccess:
      // Not used for validation (we never fetch), but a malformed one is a malformed cert.
      if (tlv.tag !== TAG.SEQUENCE || children(tlv).length === 0) malformed("authorityInfoAccess");
      for (const ad of children(tlv)) {
        const seq = new SeqReader(ad, "AccessDescription");
        readOid(seq.next(TAG.OID, "accessMethod"));
        const [, location] = children(ad);
        if (!location) malformed("AccessDescription");
        parseGeneralName(location);
      }
      break;
  }
}

/** The SIGNED{} envelope a certificate and a CRL share (RFC 5280 §4.1.1, §5.1.1). */
export function parseSigned(der: Uint8Array, what: string, tbsWhat: string) {
  const outer = new SeqReader(parseTlv(der), what);
  const tbs = outer.next(TAG.SEQUENCE, tbsWhat);
  const signatureAlgorithm = parseAlgorithmId(outer.next(TAG.SEQUENCE, "signatureAlgorithm"));
  const signature = readBitString(outer.next(TAG.BIT_STRING, "signatureValue"));
  outer.end(what);
  return { tbs, signatureAlgorithm, signature };
}

/**
 * Parses a DER certificate.
 * @throws BAD_CERT when the DER is not a well-formed X.509 certificate
 */
export function parseCertificate(der: Uint8Array): ParsedCertificate {
  return parseDerAs("BAD_CERT", () => parseCertificateDer(der));
}

function parseCertificateDer(der: Uint8Array): ParsedCertificate {
  const { tbs: tbsTlv, signatureAlgorithm, signature: sigBits } = parseSigned(
    der,
    "Certificate",
    "tbsCertificate",
  );

  const tbs = new SeqReader(tbsTlv, "tbsCertificate");
  const versionTlv = tbs.optional(ctx(0, true));
  const version = versionTlv ? readSmallInt(parseTlv(versionTlv.value, TAG.INTEGER)) : 0;
  if (version > 2) malformed("unknown certificate version");
  const serial = readIntegerBytes(tbs.next(TAG.INTEGER, "serialNumber"));
  const tbsSignatureAlgorithm = parseAlgorithmId(tbs.next(TAG.SEQUENCE, "signature"));
  const issuer = parseName(tbs.next(TAG.SEQUENCE, "issuer"));
  const validity = new SeqReader(tbs.next(TAG.SEQUENCE, "validity"), "validity");
  const notBefore = readTime(validity.any("notBefore"));
  const notAfter = readTime(validity.any("notAfter"));
  validity.end("validity");
  const subject = parseName(tbs.next(TAG.SEQUENCE, "subject"));
  const spkiTlv = tbs.next(TAG.SEQUENCE, "subjectPublicKeyInfo");
  tbs.optional(ctx(1));
  tbs.optional(ctx(2));
  const extsTlv = tbs.optional(ctx(3, true));
  tbs.end("tbsCertificate");
  if (sigBits.unused) malformed("signature has padding bits");

  const cert: ParsedCertificate = {
    der,
    tbs: tbsTlv.raw,
    version,
    serial,
    tbsSignatureAlgorithm,
    signatureAlgorithm,
    signature: sigBits.bytes,
    issuer,
    subject,
    notBefore,
    notAfter,
    spki: spkiTlv.raw,
    publicKey: parsePublicKey(spkiTlv),
    extensions: new Map(),
  };
  if (extsTlv) {
    if (version !== 2) malformed("extensions in a pre-v3 certificate");
    const list = parseTlv(extsTlv.value, TAG.SEQUENCE);
    for (const ext of children(list)) {
      const seq = new SeqReader(ext, "Extension");
      const oid = readOid(seq.next(TAG.OID, "extnID"));
      const criticalTlv = seq.optional(TAG.BOOLEAN);
      const value = seq.next(TAG.OCTET_STRING, "extnValue").value;
      seq.end("Extension");
      if (cert.extensions.has(oid)) malformed(`duplicate extension ${oid}`);
      const critical = criticalTlv ? readBoolean(criticalTlv) : false;
      cert.extensions.set(oid, { critical, value });
      parseExtension(cert, oid, value);
    }
    if (cert.extensions.size === 0) malformed("empty extensions");
  }
  return cert;
}

/** The subject's commonName, or "" when it has none. */
export function commonNameOf(name: Name): string {
  return name.attributes.find((a) => a.oid === OID.commonName)?.value ?? "";
}
