/**
 * When a client logs in again by itself (docs/DEPLOY.md §6): one policy for the CLI's
 * `connect --reconnect` and the browser page, so that the two cannot drift. A session cut off,
 * or closed cleanly by a server that is stopping, is worth a new login; a refusal that would
 * only fail again, a takeover by this user's own newer login, and a server that closed because
 * its own certificate lapsed or was revoked (a `close` with a code, PROTOCOL §5.2) are not.
 */
import { codeOf, type ErrorCode } from "../errors.ts";
import type { ReceivedMessage, SessionEnd } from "./session.ts";

/**
 * The notice the server sends before closing a session its user replaced by logging in again
 * (lib/server/lobby.ts); the closed client must not take the session back.
 */
export const TAKEOVER_NOTICE = "you logged in elsewhere; closing";

/**
 * Refusals that would only fail again: a wrong password or certificate, a certificate revoked,
 * a name taken, a protocol the server does not speak, an attack on the connection, our own
 * disk, a server that can sign nothing more until its operator gives it a new certificate.
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
  "SERVER_CERT_EXPIRED",
  "SERVER_CERT_REVOKED",
]);

/** Whether a failed login (or a session's failure) would only fail again. */
export function isPermanent(error: unknown): boolean {
  return PERMANENT.has(codeOf(error));
}

/** Whether `message` is the server's word that this user's newer login replaced the session. */
export function isTakeover(message: ReceivedMessage): boolean {
  return message.type === "msg" && message.body.kind === "notice" &&
    message.body.text === TAKEOVER_NOTICE;
}

/**
 * A session worth replacing: cut off or failed for a passing reason, or closed by the server
 * (a node stopping) — but not when this user logged in elsewhere, which would only take the
 * other session back, nor when the server closed it with a code (PROTOCOL §5.2): it takes no
 * session until its operator acts.
 */
export function worthReconnecting(end: SessionEnd, takenOver: boolean): boolean {
  if (takenOver) return false;
  if (end.outcome === "peer_gone") return true;
  if (end.outcome === "closed" && end.code === undefined) return true;
  return !PERMANENT.has((end.code ?? "INTERNAL") as ErrorCode);
}
