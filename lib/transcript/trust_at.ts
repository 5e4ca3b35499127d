/**
 * Certificates as they stood when a session started (docs/TRANSCRIPT.md §5 step 2): a
 * transcript stays verifiable after its certificates expire.
 */
import { SecureChatError } from "../errors.ts";
import { parseCertificate } from "../pki/certificate.ts";
import { formatIp } from "../pki/hostname.ts";
import {
  type PeerRole,
  TrustStore,
  type ValidatedPeer,
  validatePeerCertificate,
} from "../pki/validate.ts";

export class TrustAtSessionTime {
  readonly #chainOnly: TrustStore;

  constructor(readonly trust: TrustStore) {
    this.#chainOnly = withoutCrl(trust);
  }

  /**
   * Validates as of `now` (the session's time). Revocation is the exception: the CRL as
   * known today applies whatever the session time, since a CRL carries no compromise
   * time we could compare with.
   * @throws BAD_CERT
   */
  async validate(
    der: Uint8Array,
    opts: { role: PeerRole; now: Date; expectedName?: string },
  ): Promise<ValidatedPeer> {
    const peer = await validatePeerCertificate(this.#chainOnly, der, opts);
    if (this.trust.crl?.revoked.has(peer.serial)) {
      throw new SecureChatError("BAD_CERT", "certificate is revoked (on the CA's CRL)");
    }
    return peer;
  }
}

/** The trust store minus its CRL: a CRL issued later is "not yet valid" at the session time. */
function withoutCrl(trust: TrustStore): TrustStore {
  if (!trust.crl) return trust;
  return Object.assign(Object.create(TrustStore.prototype), trust, { crl: undefined });
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
