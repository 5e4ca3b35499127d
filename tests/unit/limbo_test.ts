/**
 * Runs the C2SP x509-limbo cases from ../shared/peer-suites/ through verifyPath(), the
 * same path validator TrustStore uses, and pins the agreement rate. Cases that need a
 * feature we do not implement are skipped and counted, loudly.
 */
import assert from "node:assert/strict";
import { SecureChatError } from "../../lib/errors.ts";
import { OID, parseCertificate, type ParsedCertificate } from "../../lib/pki/certificate.ts";
import { pemDecode } from "../../lib/pki/pem.ts";
import { type CertPath, verifyPath } from "../../lib/pki/path.ts";
import {
  checkCrlCurrent,
  parseCrl,
  type ParsedCrl,
  serialHex,
  verifyCrl,
} from "../../lib/pki/crl.ts";
import { timingSafeEqual } from "../../lib/bytes.ts";
import { PEER_SUITES, peerSuiteMissing, skipUnless } from "../helpers/optional_suites.ts";

interface LimboCase {
  id: string;
  features: string[];
  validation_kind: "SERVER" | "CLIENT";
  trusted_certs: string[];
  untrusted_intermediates: string[];
  peer_certificate: string;
  validation_time: string | null;
  extended_key_usage: string[];
  expected_result: "SUCCESS" | "FAILURE";
  expected_peer_name: { kind: string; value: string } | null;
  max_chain_depth: number | null;
  crls: string[];
}

/** Features whose cases we cannot judge, with the reason printed in the summary. */
const UNSUPPORTED_FEATURES: Record<string, string> = {
  "name-constraint-dn": "directoryName name constraints are not implemented",
  "pedantic-public-suffix-wildcard": "no public suffix list (wildcards over a PSL entry)",
};

/**
 * Each conflict pair (manifest `conflict_pairs`) has opposite expectations; we follow
 * the Web PKI side, so the RFC 5280 side is skipped rather than counted as a miss.
 */
const CONFLICT_SKIPS: Record<string, string> = {
  "rfc5280::ca-as-leaf": "conflicts with webpki::ca-as-leaf; a CA is never a leaf for us",
  "rfc5280::eku::ee-without-eku":
    "conflicts with webpki::eku::ee-without-eku; we require an EKU on leaves",
  "rfc5280::nc::permitted-dns-match-noncritical":
    "conflicts with webpki::nc::permitted-dns-match-noncritical; we accept non-critical NC",
};

const EKU_OIDS: Record<string, string> = {
  serverAuth: OID.serverAuth,
  clientAuth: OID.clientAuth,
  anyExtendedKeyUsage: OID.anyExtendedKeyUsage,
};

function parseAll(pems: string[]): ParsedCertificate[] {
  return pems.flatMap((pem) => {
    try {
      return [parseCertificate(pemDecode(pem, "CERTIFICATE", "BAD_CERT"))];
    } catch {
      return []; // an unparseable issuer is simply unusable for path building
    }
  });
}

/** The same revocation rule TrustStore applies, for every certificate below the anchor. */
async function checkRevocation(path: CertPath, crls: ParsedCrl[], time: Date): Promise<void> {
  for (let i = 0; i + 1 < path.length; i++) {
    for (const crl of crls.filter((c) => timingSafeEqual(c.issuerRaw, path[i].issuer.raw))) {
      await verifyCrl(crl, path[i + 1]);
      checkCrlCurrent(crl, time);
      if (crl.revoked.has(serialHex(path[i].serial))) {
        throw new SecureChatError("BAD_CERT", "certificate is revoked");
      }
    }
  }
}

async function outcome(c: LimboCase): Promise<"SUCCESS" | "FAILURE"> {
  try {
    const leaf = parseCertificate(pemDecode(c.peer_certificate, "CERTIFICATE", "BAD_CERT"));
    const time = c.validation_time ? new Date(c.validation_time) : new Date();
    const server = c.validation_kind === "SERVER";
    const path = await verifyPath(
      leaf,
      parseAll(c.untrusted_intermediates),
      parseAll(c.trusted_certs),
      {
        time,
        eku: c.extended_key_usage.length
          ? EKU_OIDS[c.extended_key_usage[0]]
          : server
          ? OID.serverAuth
          : OID.clientAuth,
        requireEku: true,
        requireKeyUsage: false,
        serverName: server ? c.expected_peer_name?.value : undefined,
        maxIntermediates: c.max_chain_depth ?? 16,
      },
    );
    await checkRevocation(
      path,
      c.crls.map((pem) => parseCrl(pemDecode(pem, "X509 CRL", "BAD_CERT"))),
      time,
    );
    return "SUCCESS";
  } catch (error) {
    if (error instanceof SecureChatError && error.code === "BAD_CERT") return "FAILURE";
    throw new Error(`limbo case ${c.id} crashed the validator`, { cause: error });
  }
}

interface Tally {
  agree: number;
  disagree: string[];
  skipped: Map<string, string>;
  total: number;
}

async function runSuite(file: string): Promise<Tally> {
  const text = await Deno.readTextFile(new URL(file, PEER_SUITES));
  const cases = (JSON.parse(text) as { testcases: LimboCase[] }).testcases;
  const tally: Tally = { agree: 0, disagree: [], skipped: new Map(), total: cases.length };
  for (const c of cases) {
    const feature = c.features.find((f) => f in UNSUPPORTED_FEATURES);
    const skip = feature ? UNSUPPORTED_FEATURES[feature] : CONFLICT_SKIPS[c.id];
    if (skip) {
      tally.skipped.set(c.id, skip);
      continue;
    }
    const got = await outcome(c);
    if (got === c.expected_result) tally.agree++;
    else tally.disagree.push(`${c.id}: expected ${c.expected_result}, got ${got}`);
  }
  const judged = tally.agree + tally.disagree.length;
  console.warn(
    `\nx509-limbo ${file}: ${tally.agree}/${judged} agree (${
      (100 * tally.agree / judged).toFixed(1)
    }%), ` +
      `${tally.skipped.size} of ${tally.total} SKIPPED:`,
  );
  for (const [id, why] of tally.skipped) console.warn(`  SKIPPED ${id}: ${why}`);
  for (const line of tally.disagree) console.warn(`  DISAGREE ${line}`);
  return tally;
}

/** Pinned floors: raise them when the validator improves; a drop fails CI. */
const SUBSET_MIN_AGREEMENT = 0.97;
const FULL_MIN_AGREEMENT = 0.97;

const SUBSET = "x509-limbo-subset.json";
const FULL = "x509-limbo-regenerated-full.json";

Deno.test({
  name: "verifyPath() agrees with the x509-limbo subset (170 cases)",
  ignore: skipUnless("limbo", peerSuiteMissing(SUBSET), "the x509-limbo subset"),
  fn: async () => {
    const tally = await runSuite(SUBSET);
    assert.equal(tally.total, 170);
    const rate = tally.agree / (tally.agree + tally.disagree.length);
    assert.ok(rate >= SUBSET_MIN_AGREEMENT, `agreement ${rate} fell below ${SUBSET_MIN_AGREEMENT}`);
  },
});

Deno.test({
  name: "verifyPath() agrees with the full regenerated x509-limbo file (208 cases)",
  ignore: skipUnless("limbo", peerSuiteMissing(FULL), "the full x509-limbo file"),
  fn: async () => {
    const tally = await runSuite(FULL);
    const rate = tally.agree / (tally.agree + tally.disagree.length);
    assert.ok(rate >= FULL_MIN_AGREEMENT, `agreement ${rate} fell below ${FULL_MIN_AGREEMENT}`);
  },
});
