/**
 * What to do next, for each error code (issue 17 item 3): lib returns codes, and this is
 * the one table that turns them into a sentence for the person at the keyboard. A code
 * the server sent ("the server refused ...") is advised differently from the same code
 * raised by our own checks ("the server's certificate ..."), so there are two columns.
 */
import type { ErrorCode } from "../lib/errors.ts";
import { codeOf, SecureChatError } from "../lib/errors.ts";
import { isFromPeer } from "../lib/handshake/common.ts";

const TAMPERING =
  "if it keeps happening, something between you and the server may be altering the connection";

/** The peer (for `connect`, the server) ended the session with this code. */
const FROM_PEER: Partial<Record<ErrorCode, string>> = {
  AUTH_FAIL: "the server refused the user name or password (it never says which): check --user " +
    "and the password; a new account needs --register --email ADDR first; a forgotten password " +
    "is reset by the operator with `securechat user passwd NAME`",
  BAD_CERT:
    "the server refused your certificate (expired, revoked, or issued by another CA): ask " +
    "the operator for a new one (`securechat cert issue NAME --force`)",
  USER_EXISTS: "that user name or e-mail address is already registered: log in without " +
    "--register, or register another name",
  INVALID_INPUT: "the server refused a field of the request (the message says which): fix it " +
    "and try again",
  RATE_LIMITED: "too many attempts: wait (failed logins are refused for up to 15 minutes) and " +
    "try again",
  TOO_MANY_CONNECTIONS: "the server is full: try again in a while",
  DB_UNAVAILABLE: "the server's user database is down: try again in a minute (the operator " +
    "sees DB_UNAVAILABLE in the server's log)",
  SIG_FAIL:
    `the server could not verify this client's signature: check that --key belongs to --cert; ${TAMPERING}`,
  HANDSHAKE_FAIL: `the handshake did not match on both sides; ${TAMPERING}`,
  DECRYPT_FAIL: `the server could not decrypt what this client sent; ${TAMPERING}`,
  BAD_KEY_SHARE: `the server refused this client's key share; ${TAMPERING}`,
  UNSUPPORTED: "no protocol version, group or key type in common: run the same securechat " +
    "version on both sides, or use a certificate with a supported --key-type",
  PROTOCOL_ERROR: "the server did not accept what this client sent: run the same securechat " +
    "version on both sides",
  REPLAY: `the server saw a repeated message; ${TAMPERING}`,
  STALE: "the server found this computer's clock too far off: set the clock (NTP) and reconnect",
  TIMEOUT: "the server gave up waiting (idle too long, or a slow network): reconnect",
  SLOW_CONSUMER: "this client did not read fast enough and the server dropped it: reconnect",
  TRANSCRIPT_IO: "the server could not write its record of the session, so there was no " +
    "session: tell the operator",
  INTERNAL: "the server hit a bug: tell the operator (the details are in the server's log)",
  SERVER_CERT_EXPIRED: "the server's certificate (or its CA's) expires, so it ends its sessions " +
    "and takes no new ones until its operator installs a new certificate and restarts it: tell " +
    "the operator, and connect again after that",
  SERVER_CERT_REVOKED: "the server's certificate has been revoked, so it ends its sessions and " +
    "takes no new ones until its operator installs a new certificate: tell the operator",
};

/** Our own checks failed (for `connect`, on what the server sent). */
const LOCAL: Partial<Record<ErrorCode, string>> = {
  BAD_CERT: "the server's certificate did not pass: check --ca (the CA that issued it) and " +
    "--server-name (a name in its certificate); if it expired or was revoked, tell the operator",
  SIG_FAIL: `a signature from the other side did not verify; ${TAMPERING}`,
  HANDSHAKE_FAIL: `the handshake did not match on both sides; ${TAMPERING}`,
  DECRYPT_FAIL: `a message from the other side did not decrypt; ${TAMPERING}`,
  BAD_KEY_SHARE: `the other side sent an invalid key share; ${TAMPERING}`,
  PROTOCOL_ERROR: "the other side does not speak this protocol as expected: check --host and " +
    "--port, and that both sides run the same securechat version",
  TIMEOUT: "the other side did not answer in time: check --host and --port, or raise " +
    "--handshake-timeout on a slow network",
  UNSUPPORTED: "no protocol version, group or key type in common: run the same securechat " +
    "version on both sides",
  REPLAY: `a message arrived twice or out of order; ${TAMPERING}`,
  STALE: "a message's time was too far from this computer's clock: check both clocks (NTP)",
  TRANSCRIPT_IO: "the transcript could not be written: check that the --transcripts directory " +
    "is writable and the disk is not full",
  DB_UNAVAILABLE: "the user database cannot be reached: check --db (or the DB_* settings) and " +
    "that the database is running",
};

/**
 * `error` with the next step as its hint: its own hint if it has one, else the table's
 * sentence for the code (as the server's, or as ours). For `connect`, where the server
 * is "the other side".
 */
export function withAdvice(error: unknown): unknown {
  if (!(error instanceof SecureChatError) || error.hint) return error;
  const advice = (isFromPeer(error) ? FROM_PEER : LOCAL)[codeOf(error)];
  if (!advice) return error;
  return new SecureChatError(error.code, error.message, { cause: error, hint: advice });
}
