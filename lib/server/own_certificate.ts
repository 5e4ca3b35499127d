/**
 * The server's own certificate over time (PROTOCOL §5.2). Receipts are signed with its key, so
 * a session must end while the certificate and the CA's are still valid: `serve` refuses to
 * start too close to the lapse, tells the operator ahead of it, and at the lapse time less the
 * close margin ends every session with receipts and takes no new one.
 */
import { SecureChatError } from "../errors.ts";
import type { Logger } from "../log.ts";
import { parseCertificate } from "../pki/certificate.ts";
import { serialHex } from "../pki/crl.ts";
import type { TrustStore } from "../pki/validate.ts";
import { atDeadline } from "../deadlines.ts";

const HOUR_MS = 60 * 60 * 1000;
const DAY_MS = 24 * HOUR_MS;

/** How long before the lapse the operator is told: at start within the first, then at each. */
export const CERT_WARNINGS_MS: readonly number[] = [14 * DAY_MS, 7 * DAY_MS, DAY_MS, HOUR_MS];

/** Room beyond the close exchange's own bound (twice the close timeout): a slow peer, signing. */
const CLOSE_SLACK_MS = 20_000;

/** How long before the lapse the server closes its sessions: their receipts must be signed first. */
export function closeMarginMs(closeTimeoutMs: number): number {
  return 2 * closeTimeoutMs + CLOSE_SLACK_MS;
}

/** The window in which the server may sign: its certificate's and the CA's, whichever is shorter. */
export interface OwnCertificate {
  serial: string;
  validFrom: number;
  lapsesAt: number;
  /** The certificate whose notAfter is the lapse time (the CA's when it ends first). */
  lapsing: "server certificate" | "CA certificate";
}

/** @throws BAD_CERT when `certDer` is no certificate */
export function ownCertificate(certDer: Uint8Array, trust: TrustStore): OwnCertificate {
  const cert = parseCertificate(certDer);
  const caFirst = trust.ca.notAfter.getTime() < cert.notAfter.getTime();
  return {
    serial: serialHex(cert.serial),
    validFrom: Math.max(cert.notBefore.getTime(), trust.ca.notBefore.getTime()),
    lapsesAt: caFirst ? trust.ca.notAfter.getTime() : cert.notAfter.getTime(),
    lapsing: caFirst ? "CA certificate" : "server certificate",
  };
}

/**
 * Whether the server may start with `own`: valid now, not lapsing within the close margin, not
 * revoked by the CRL in force.
 * @throws BAD_CERT saying which certificate, what is wrong and when
 */
export function checkOwnCertificate(
  own: OwnCertificate,
  trust: TrustStore,
  marginMs: number,
  now = Date.now(),
): void {
  const hint = "issue a new server certificate (`securechat cert issue NAME --server --force`; " +
    "a new CA needs `securechat ca init` and new certificates for everyone) and start again";
  if (now < own.validFrom) {
    throw new SecureChatError(
      "BAD_CERT",
      `the server certificate (or the CA's) is not valid until ${iso(own.validFrom)}`,
      { hint: "check this machine's clock, or wait until then" },
    );
  }
  if (now >= own.lapsesAt) {
    throw new SecureChatError("BAD_CERT", `the ${own.lapsing} expired at ${iso(own.lapsesAt)}`, {
      hint,
    });
  }
  if (now >= own.lapsesAt - marginMs) {
    throw new SecureChatError(
      "BAD_CERT",
      `the ${own.lapsing} expires at ${iso(own.lapsesAt)}, in ${span(own.lapsesAt - now)}: ` +
        `sessions must close ${span(marginMs)} before it (PROTOCOL §5.2)`,
      { hint },
    );
  }
  if (trust.isRevoked(own.serial)) {
    throw new SecureChatError(
      "BAD_CERT",
      `the CRL in force revokes the server certificate (serial ${own.serial})`,
      { hint },
    );
  }
}

/**
 * Logs CERT_EXPIRING now if the lapse is within the first warning, then as each later one
 * passes, and calls `onLapse` at the lapse time less `marginMs`.
 */
export function watchOwnCertificate(
  own: OwnCertificate,
  marginMs: number,
  log: Logger,
  onLapse: () => void,
): { stop(): void } {
  const warn = () =>
    log("CERT_EXPIRING", {
      detail: `the ${own.lapsing} expires at ${iso(own.lapsesAt)}, in ` +
        `${span(own.lapsesAt - Date.now())}; every session is closed ${span(marginMs)} before ` +
        "and no new one is taken: issue a new certificate and restart serve before then",
    });
  const now = Date.now();
  const timers = CERT_WARNINGS_MS
    .filter((before) => own.lapsesAt - before > now)
    .map((before) => atDeadline(own.lapsesAt - before, warn));
  if (own.lapsesAt - CERT_WARNINGS_MS[0] <= now) warn();
  timers.push(atDeadline(own.lapsesAt - marginMs, onLapse));
  return { stop: () => timers.forEach((timer) => timer.cancel()) };
}

function iso(ms: number): string {
  return new Date(ms).toISOString();
}

/** A duration as people say it: "45 s", "12 min", "5.5 h", "6.9 days". */
function span(ms: number): string {
  if (ms < 2 * 60_000) return `${Math.round(ms / 1000)} s`;
  if (ms < 2 * HOUR_MS) return `${Math.round(ms / 60_000)} min`;
  if (ms < 2 * DAY_MS) return `${(ms / HOUR_MS).toFixed(1)} h`;
  return `${(ms / DAY_MS).toFixed(1)} days`;
}
