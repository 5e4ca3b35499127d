/**
 * Certificate revocation lists (RFC 5280 §5): parsing and checking one against its
 * issuing CA. A CRL is verified once when loaded; lookups are then a set membership
 * test on the hot path. Signing ours is crl_sign.ts, kept apart so that every command
 * that only checks certificates starts without loading the x509 generator.
 */
import { SecureChatError } from "../errors.ts";
import { timingSafeEqual, toHex } from "../bytes.ts";
import {
  children,
  ctx,
  parseDerAs,
  parseTlv,
  readBoolean,
  readIntegerBytes,
  readOid,
  readTime,
  SeqReader,
  TAG,
} from "../der.ts";
import {
  type AlgorithmId,
  KU,
  OID,
  parseAlgorithmId,
  type ParsedCertificate,
  parseName,
  parseSigned,
} from "./certificate.ts";
import { verifySignedData } from "./signature.ts";

export interface ParsedCrl {
  /** The whole CRL as parsed: what a cluster node shares (docs/DEPLOY.md §4.6). */
  der: Uint8Array;
  tbs: Uint8Array;
  signatureAlgorithm: AlgorithmId;
  signature: Uint8Array;
  issuerRaw: Uint8Array;
  thisUpdate: Date;
  nextUpdate?: Date;
  crlNumber?: bigint;
  /** Revoked serial numbers, hex of the INTEGER content octets. */
  revoked: Set<string>;
  /**
   * For each revoked serial, the time from which its signatures are not trusted:
   * the entry's invalidityDate (RFC 5280 §5.3.2) if present, else its revocationDate.
   */
  revokedFrom: Map<string, Date>;
}

/** id-ce-invalidityDate (RFC 5280 §5.3.2). */
const OID_INVALIDITY_DATE = "2.5.29.24";

function badCrl(reason: string): never {
  throw new SecureChatError("BAD_CERT", `CRL ${reason}`);
}

/** Hex of a serial as compared with CRL entries: the DER INTEGER content octets. */
export function serialHex(serial: Uint8Array): string {
  return toHex(serial);
}

/**
 * Parses a DER CRL.
 * @throws BAD_CERT when malformed or carrying an unknown critical extension
 */
export function parseCrl(der: Uint8Array): ParsedCrl {
  return parseDerAs("BAD_CERT", () => parseCrlDer(der));
}

function parseCrlDer(der: Uint8Array): ParsedCrl {
  const signed = parseSigned(der, "CertificateList", "tbsCertList");
  const { tbs: tbsTlv, signatureAlgorithm } = signed;
  const signature = signed.signature.bytes;

  const tbs = new SeqReader(tbsTlv, "tbsCertList");
  tbs.optional(TAG.INTEGER);
  const inner = parseAlgorithmId(tbs.next(TAG.SEQUENCE, "signature"));
  if (!timingSafeEqual(inner.raw, signatureAlgorithm.raw)) {
    badCrl("has mismatched signature algorithms");
  }
  const issuerRaw = parseName(tbs.next(TAG.SEQUENCE, "issuer")).raw;
  const thisUpdate = readTime(tbs.any("thisUpdate"));
  const nextTlv = tbs.optional(TAG.UTC_TIME) ?? tbs.optional(TAG.GENERALIZED_TIME);
  const revoked = new Set<string>();
  const revokedFrom = new Map<string, Date>();
  const list = tbs.optional(TAG.SEQUENCE);
  for (const entry of list ? children(list) : []) {
    const e = new SeqReader(entry, "revokedCertificate");
    const serial = serialHex(readIntegerBytes(e.next(TAG.INTEGER, "userCertificate")));
    let from = readTime(e.any("revocationDate"));
    const entryExts = e.optional(TAG.SEQUENCE);
    for (const ext of entryExts ? children(entryExts) : []) {
      const parts = children(ext);
      const [oidTlv, maybeCritical] = parts;
      if (maybeCritical?.tag === TAG.BOOLEAN && readBoolean(maybeCritical)) {
        badCrl("entry has a critical extension");
      }
      if (readOid(oidTlv) === OID_INVALIDITY_DATE) {
        const value = parts[parts.length - 1];
        const invalid = readTime(parseTlv(value.value, TAG.GENERALIZED_TIME));
        if (invalid < from) from = invalid;
      }
    }
    e.end("revokedCertificate");
    revoked.add(serial);
    revokedFrom.set(serial, from);
  }
  let crlNumber: bigint | undefined;
  const exts = tbs.optional(ctx(0, true));
  tbs.end("tbsCertList");
  for (const ext of exts ? children(parseTlv(exts.value, TAG.SEQUENCE)) : []) {
    const seq = new SeqReader(ext, "Extension");
    const oid = readOid(seq.next(TAG.OID, "extnID"));
    const criticalTlv = seq.optional(TAG.BOOLEAN);
    const value = seq.next(TAG.OCTET_STRING, "extnValue").value;
    const critical = criticalTlv ? readBoolean(criticalTlv) : false;
    if (oid === OID.crlNumber) {
      if (critical) badCrl("has a critical cRLNumber");
      crlNumber = BigInt(`0x${toHex(readIntegerBytes(parseTlv(value, TAG.INTEGER)))}`);
    } else if (critical && oid !== OID.authorityKeyId) {
      badCrl(`has an unknown critical extension ${oid}`);
    }
  }
  return {
    der,
    tbs: tbsTlv.raw,
    signatureAlgorithm,
    signature,
    issuerRaw,
    thisUpdate,
    nextUpdate: nextTlv && readTime(nextTlv),
    crlNumber,
    revoked,
    revokedFrom,
  };
}

/**
 * Checks that `crl` was signed by `issuer`, which may sign CRLs, and carries what RFC
 * 5280 §5 requires of a conforming CRL (a cRLNumber and a nextUpdate).
 * @throws BAD_CERT
 */
export async function verifyCrl(crl: ParsedCrl, issuer: ParsedCertificate): Promise<void> {
  if (!timingSafeEqual(crl.issuerRaw, issuer.subject.raw)) badCrl("is not issued by the CA");
  if (issuer.keyUsage !== undefined && !(issuer.keyUsage & KU.cRLSign)) {
    badCrl("issuer lacks keyUsage cRLSign");
  }
  if (crl.crlNumber === undefined) badCrl("lacks a cRLNumber");
  if (!crl.nextUpdate) badCrl("lacks a nextUpdate");
  if (!await verifySignedData(issuer, crl.signatureAlgorithm, crl.tbs, crl.signature)) {
    badCrl("signature is invalid");
  }
}

/**
 * How far ahead of this machine's clock a CRL's thisUpdate may be: the CA signed it on another
 * machine a moment ago (a cluster node hears of it within milliseconds, docs/DEPLOY.md §4.6),
 * and NTP keeps machines well within this. Taking a CRL early only revokes early; its
 * nextUpdate is checked without this allowance.
 */
export const CRL_CLOCK_SKEW_MS = 60 * 1000;

/** A CRL is current from thisUpdate (less the clock skew) until nextUpdate. @throws BAD_CERT */
export function checkCrlCurrent(crl: ParsedCrl, time: Date): void {
  if (time.getTime() < crl.thisUpdate.getTime() - CRL_CLOCK_SKEW_MS) badCrl("is not yet valid");
  if (!crl.nextUpdate || time > crl.nextUpdate) badCrl("is out of date (past its nextUpdate)");
}

/** Days before its nextUpdate from which a CRL is "lapsing": `serve` and `cert list` warn. */
export const CRL_WARN_DAYS = 7;

/** Days from `now` to the CRL's nextUpdate (negative once it has lapsed). */
export function crlDaysLeft(crl: ParsedCrl, now: Date): number {
  return ((crl.nextUpdate ?? crl.thisUpdate).getTime() - now.getTime()) / (24 * 60 * 60 * 1000);
}
