/**
 * securechat's certificate policy (PROTOCOL §5, docs/PKI.md "Validation"): a thin
 * layer over the general path validator. Peers present one leaf, which must be
 * issued directly by our root (pathLen 0), carry the EKU of its role, match the
 * expected name and not be on the CA's CRL.
 */
import { SecureChatError } from "../errors.ts";
import { timingSafeEqual } from "../bytes.ts";
import { commonNameOf, OID, parseCertificate, type ParsedCertificate } from "./certificate.ts";
import { checkCertificateProfile, isSelfIssued, verifyPath } from "./path.ts";
import { checkCrlCurrent, parseCrl, type ParsedCrl, serialHex, verifyCrl } from "./crl.ts";
import { pemDecode } from "./pem.ts";
import { fingerprintOf } from "./describe.ts";

import { importVerifyingKeySpki, type VerifyingKey } from "../crypto/signature.ts";

export type PeerRole = "server" | "client";

export interface ValidatedPeer {
  der: Uint8Array;
  /** Hex SHA-256 of the DER. */
  fingerprint: string;
  commonName: string;
  /** SubjectPublicKeyInfo DER. */
  spki: Uint8Array;
  notAfter: Date;
  /** Hex of the serial number's INTEGER octets. */
  serial: string;
  /** The key that verifies the peer's signatures, imported once here. */
  key: VerifyingKey;
}

/** Certificates above this are refused before parsing: ours are under 2 KiB. */
export const MAX_CERTIFICATE_BYTES = 16 * 1024;
/**
 * CRLs above this are refused before parsing: ~15,000 entries, and under NATS's default
 * 1 MiB payload once a cluster node shares it (docs/DEPLOY.md §4.6).
 */
export const MAX_CRL_BYTES = 512 * 1024;

const POLICY = { requireEku: true, requireKeyUsage: true, maxIntermediates: 0 } as const;

function badCert(reason: string): never {
  throw new SecureChatError("BAD_CERT", reason);
}

/**
 * Certificates whose path a store remembers (validatePeerCertificate): a server sees the same
 * users' certificates again and again. Each entry is the ValidatedPeer a live session holds
 * anyway, so the bound only caps what outlives the sessions (~3 KB each with RSA-2048).
 */
export const VALIDATED_CACHE_ENTRIES = 1024;

/** A path validated once, and the instants (whole seconds) between which it holds. */
interface ValidatedPath {
  peer: Readonly<ValidatedPeer>;
  validFrom: number;
  validUntil: number;
}

/** The root CA and its CRL, parsed and checked once, then shared by every handshake. */
export class TrustStore {
  readonly caDer: Uint8Array;
  readonly caFingerprint: string;
  readonly ca: ParsedCertificate;
  /** The CA's current CRL; a running server replaces it only through `adoptCrl()`. */
  crl?: ParsedCrl;
  /**
   * Paths already validated under this CA, by role, expected server name and fingerprint;
   * least recently used first. Revocation is never cached: it is checked at every use.
   */
  readonly #validated = new Map<string, ValidatedPath>();

  /** The remembered validation of `der` at `time` (whole seconds), if any. */
  recall(key: string, der: Uint8Array, time: number): Readonly<ValidatedPeer> | undefined {
    const entry = this.#validated.get(key);
    if (!entry || !timingSafeEqual(entry.peer.der, der)) return undefined;
    if (time < entry.validFrom || time > entry.validUntil) return undefined;
    this.#validated.delete(key);
    this.#validated.set(key, entry);
    return entry.peer;
  }

  remember(key: string, entry: ValidatedPath): void {
    this.#validated.delete(key);
    this.#validated.set(key, entry);
    if (this.#validated.size > VALIDATED_CACHE_ENTRIES) {
      this.#validated.delete(this.#validated.keys().next().value!);
    }
  }

  private constructor(ca: ParsedCertificate, fingerprint: string) {
    this.caDer = ca.der;
    this.caFingerprint = fingerprint;
    this.ca = ca;
  }

  /**
   * Checks a new CRL and, only if it passes, makes it the current one (issue 11 item 2).
   * @returns the serials it revokes that the previous CRL did not, or null when it is the
   *   CRL already in force
   * @throws BAD_CERT, STALE as checkCrl() and adoptCrl(); the CRL in force is kept
   */
  async updateCrl(pem: string, now = new Date()): Promise<Set<string> | null> {
    return this.adoptCrl(await this.checkCrl(pemDecode(pem, "X509 CRL", "BAD_CERT")), now);
  }

  /**
   * Parses a CRL and checks that our CA signed it: whatever its source (a file, another
   * cluster node), nothing else makes a CRL genuine.
   * @throws BAD_CERT malformed, too large, not issued or not signed by our CA
   */
  async checkCrl(der: Uint8Array): Promise<ParsedCrl> {
    if (der.length > MAX_CRL_BYTES) badCert(`CRL is larger than ${MAX_CRL_BYTES} bytes`);
    const crl = parseCrl(der);
    await verifyCrl(crl, this.ca);
    return crl;
  }

  /**
   * Makes a genuine CRL (checkCrl) the one in force if it is current at `now` and newer than
   * the one in force: a higher cRLNumber. Synchronous, so two adoptions cannot interleave
   * between the comparison and the swap.
   * @returns the serials it revokes that the previous CRL did not, or null when it is the
   *   CRL already in force
   * @throws STALE a lower cRLNumber than the CRL in force; BAD_CERT the same number with other
   *   contents, or not current (before its thisUpdate, after its nextUpdate)
   */
  adoptCrl(next: ParsedCrl, now = new Date()): Set<string> | null {
    const current = this.crl;
    if (current) {
      if (next.crlNumber! < current.crlNumber!) {
        throw new SecureChatError(
          "STALE",
          `CRL number ${next.crlNumber} is older than the one in force (${current.crlNumber})`,
        );
      }
      if (next.crlNumber === current.crlNumber) {
        if (timingSafeEqual(next.tbs, current.tbs)) return null;
        throw new SecureChatError(
          "BAD_CERT",
          `CRL number ${next.crlNumber} is already in force with other contents`,
        );
      }
    }
    checkCrlCurrent(next, now);
    const newlyRevoked = new Set([...next.revoked].filter((s) => !current?.revoked.has(s)));
    this.crl = next;
    return newlyRevoked;
  }

  /**
   * The same CA without a CRL (transcript verification judges revocation by date itself); its
   * remembered paths are its own.
   */
  withoutCrl(): TrustStore {
    return this.crl ? new TrustStore(this.ca, this.caFingerprint) : this;
  }

  /** Whether the CRL in force lists `serial` (hex of the INTEGER octets). */
  isRevoked(serial: string): boolean {
    return this.crl?.revoked.has(serial) ?? false;
  }

  /**
   * Why a recipient would now refuse the certificate `der` that a stored record carries
   * (revoked by the CRL in force, or past its validity or the CA's), if it would.
   * @throws BAD_CERT when `der` is no certificate
   */
  lapsed(der: Uint8Array, now = Date.now()): "revoked" | "expired" | undefined {
    const cert = parseCertificate(der);
    if (this.crl !== undefined && this.isRevoked(serialHex(cert.serial))) return "revoked";
    if (now > Math.min(cert.notAfter.getTime(), this.ca.notAfter.getTime())) return "expired";
    return undefined;
  }

  /**
   * @throws BAD_CERT when the CA is not a self-issued pathLen-0 root fit to be one,
   *   or the CRL does not verify under it
   */
  static async fromPem(caPem: string, crlPem?: string): Promise<TrustStore> {
    const ca = parseCertificate(pemDecode(caPem, "CERTIFICATE", "BAD_CERT"));
    checkCertificateProfile(ca, "anchor", POLICY);
    if (!isSelfIssued(ca)) badCert("trusted CA certificate is not a root (not self-issued)");
    if (ca.basicConstraints?.pathLen !== 0) badCert("trusted CA certificate must have pathLen 0");
    const store = new TrustStore(ca, fingerprintOf(ca.der));
    if (crlPem !== undefined) {
      store.crl = await store.checkCrl(pemDecode(crlPem, "X509 CRL", "BAD_CERT"));
    }
    return store;
  }
}

/** Where the CRL is looked for when none is named: `ca.crl` beside the CA certificate. */
export function defaultCrlPath(caPemPath: string): string {
  return caPemPath.replace(/[^/]*$/, "ca.crl");
}

/**
 * Validates a peer's certificate for its role.
 * @param opts.expectedName server role: the name the client dialled (DNS name or IP
 *   literal, matched against SANs only); client role: the user name, matched against
 *   the CN (optional, as login checks it later)
 * @throws BAD_CERT with the reason; INTERNAL when a server role lacks expectedName
 */
export async function validatePeerCertificate(
  store: TrustStore,
  certDer: Uint8Array,
  opts: { role: PeerRole; expectedName?: string; now?: Date },
): Promise<ValidatedPeer> {
  if (opts.role === "server" && opts.expectedName === undefined) {
    throw new SecureChatError("INTERNAL", "server validation needs the expected name");
  }
  if (certDer.length > MAX_CERTIFICATE_BYTES) badCert("certificate is larger than 16 KiB");
  const time = opts.now ?? new Date();
  // Certificates carry whole seconds: validity is judged at that resolution (path.ts).
  const seconds = Math.floor(time.getTime() / 1000) * 1000;
  const fingerprint = fingerprintOf(certDer);
  // The server name is part of what a server certificate's path proved; a user's CN is not.
  const key = `${opts.role} ${opts.role === "server" ? opts.expectedName : ""} ${fingerprint}`;
  const peer = store.recall(key, certDer, seconds) ??
    await validatePath(store, certDer, fingerprint, opts.role, opts.expectedName, time, key);
  if (
    opts.role === "client" && opts.expectedName !== undefined &&
    peer.commonName !== opts.expectedName
  ) {
    badCert(`certificate is for user "${peer.commonName}", not "${opts.expectedName}"`);
  }
  if (store.crl) {
    checkCrlCurrent(store.crl, time);
    if (store.crl.revoked.has(peer.serial)) badCert("certificate is revoked");
  }
  return peer;
}

/** The full validation, remembered in `store` under `key` once it passed. */
async function validatePath(
  store: TrustStore,
  certDer: Uint8Array,
  fingerprint: string,
  role: PeerRole,
  expectedName: string | undefined,
  time: Date,
  key: string,
): Promise<Readonly<ValidatedPeer>> {
  // Our own copy, parsed: the fields kept below are views into it, so a session's peer holds
  // one buffer, not the received message's bytes behind its SubjectPublicKeyInfo.
  const der = certDer.slice();
  const leaf = parseCertificate(der);
  await verifyPath(leaf, [], [store.ca], {
    ...POLICY,
    time,
    eku: role === "server" ? OID.serverAuth : OID.clientAuth,
    serverName: role === "server" ? expectedName : undefined,
  });
  const peer = Object.freeze({
    der,
    fingerprint,
    commonName: commonNameOf(leaf.subject),
    spki: leaf.spki,
    notAfter: leaf.notAfter,
    serial: serialHex(leaf.serial),
    key: await protocolKeyOf(leaf.spki),
  });
  store.remember(key, {
    peer,
    validFrom: Math.max(leaf.notBefore.getTime(), store.ca.notBefore.getTime()),
    validUntil: Math.min(leaf.notAfter.getTime(), store.ca.notAfter.getTime()),
  });
  return peer;
}

/**
 * The path validator accepts more key types than the protocol signs with (P-384 for
 * x509-limbo, say); a peer whose key the protocol cannot use has a bad certificate.
 */
async function protocolKeyOf(spki: Uint8Array): Promise<VerifyingKey> {
  try {
    return await importVerifyingKeySpki(spki);
  } catch (cause) {
    const detail = cause instanceof Error ? cause.message : String(cause);
    return badCert(`certificate key cannot sign securechat messages: ${detail}`);
  }
}
