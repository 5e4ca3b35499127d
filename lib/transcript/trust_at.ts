/**
 * Certificates as they stood at a given time (docs/TRANSCRIPT.md §5 steps 2–3): a
 * transcript stays verifiable after its certificates expire, and revocation is judged
 * by date against the times the signers signed.
 */
import { parseCertificate } from "../pki/certificate.ts";
import { formatIp } from "../pki/hostname.ts";
import {
  type PeerRole,
  type TrustStore,
  type ValidatedPeer,
  validatePeerCertificate,
} from "../pki/validate.ts";

export class TrustAtSessionTime {
  readonly #chainOnly: TrustStore;

  constructor(readonly trust: TrustStore) {
    // A CRL issued later is "not yet valid" at the session time: revocation is judged by date.
    this.#chainOnly = trust.withoutCrl();
  }

  /**
   * Validates the chain, profile and validity period as of `now`; revocation is left
   * to the caller, who compares {@link revokedFrom} with the times that matter.
   * @throws BAD_CERT
   */
  async validate(
    der: Uint8Array,
    opts: { role: PeerRole; now: Date; expectedName?: string },
  ): Promise<ValidatedPeer> {
    return await validatePeerCertificate(this.#chainOnly, der, opts);
  }

  /**
   * From when the CRL says the certificate's signatures are not trusted (its entry's
   * invalidityDate, else its revocationDate), or null if it is not on the CRL.
   */
  revokedFrom(peer: ValidatedPeer): Date | null {
    return this.trust.crl?.revokedFrom.get(peer.serial) ?? null;
  }

  /** The CRL's own dates, for the report: evidence reaches only to thisUpdate. */
  crlDates(): { thisUpdate: Date; nextUpdate: Date | null } | null {
    const crl = this.trust.crl;
    return crl ? { thisUpdate: crl.thisUpdate, nextUpdate: crl.nextUpdate ?? null } : null;
  }
}

/**
 * The name the server certificate is checked against when the header records none:
 * its own first DNS or IP subjectAltName (so only chain, EKU, key usage and time are
 * really checked; the header's server_name, when present, is matched for real).
 */
export function ownServerName(der: Uint8Array): string {
  try {
    const san = parseCertificate(der).subjectAltName ?? [];
    for (const name of san) {
      if (name.type === "dns") return name.value;
      if (name.type === "ip") return formatIp(name.value);
    }
  } catch { /* validatePeerCertificate reports the parse error */ }
  return "";
}
