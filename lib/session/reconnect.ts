/**
 * When a client logs in again by itself (docs/DEPLOY.md §6): one policy for the CLI's
 * `connect --reconnect` and the browser page, so that the two cannot drift. A session cut off,
 * or closed cleanly by a server that is stopping, is worth a new login; a refusal that would
 * only fail again and a `close` with a code are not: a takeover by this user's own newer login
 * (PROTOCOL §7.1) or the server's own certificate lapsed or revoked (§5.2). A takeover is known
 * by that code alone, never by a notice's text (§6.2).
 */
import { codeOf, type ErrorCode } from "../errors.ts";
import type { SessionEnd } from "./session.ts";

/**
 * Refusals that would only fail again: a wrong password or certificate, a certificate revoked,
 * a name taken, a protocol the server does not speak, an attack on the connection, our own
 * disk, a newer login of this user (taking the session back would only end that one), a server
 * that can sign nothing more until its operator gives it a new certificate.
 */
const PERMANENT: ReadonlySet<ErrorCode> = new Set<ErrorCode>([
  "AUTH_FAIL",
  "BAD_CERT",
  "REVOKED",
  "USER_EXISTS",
  "INVALID_INPUT",
  "USAGE",
  "UNSUPPORTED",
  "SIG_FAIL",
  "HANDSHAKE_FAIL",
  "BAD_KEY_SHARE",
  "TAMPERED",
  "TRANSCRIPT_IO",
  "SESSION_TAKEN_OVER",
  "SERVER_CERT_EXPIRED",
  "SERVER_CERT_REVOKED",
]);

/** Whether a failed login (or a session's failure) would only fail again. */
export function isPermanent(error: unknown): boolean {
  return PERMANENT.has(codeOf(error));
}

/** Whether the server closed the session because this user logged in again (PROTOCOL §7.1). */
export function isTakeover(end: SessionEnd): boolean {
  return end.closeCode === "SESSION_TAKEN_OVER";
}

/**
 * A session worth replacing: cut off or failed for a passing reason, or closed by the server
 * without a code (a node stopping) — not when the server closed it with a code: this user
 * logged in elsewhere (PROTOCOL §7.1), which a new login would only take back, or the server
 * takes no session until its operator acts (§5.2).
 */
export function worthReconnecting(end: SessionEnd): boolean {
  if (end.closeCode !== undefined) return false; // even if the receipt exchange then failed
  if (end.outcome === "peer_gone") return true;
  if (end.outcome === "closed" && end.code === undefined) return true;
  return !PERMANENT.has((end.code ?? "INTERNAL") as ErrorCode);
}
