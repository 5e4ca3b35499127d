/**
 * The one error type of securechat. The `code` is the contract: it is what the
 * server logs, what goes to the peer in an `error` frame, and what tests assert.
 * The message is for humans and must never carry a secret.
 */
export const ERROR_CODES = [
  "BAD_CERT", // peer certificate failed validation (PROTOCOL §5)
  "SIG_FAIL", // a signature did not verify
  "REPLAY", // seqno not strictly greater than the last accepted one
  "STALE", // timestamp outside the allowed clock skew
  "DECRYPT_FAIL", // AEAD authentication failed
  "AUTH_FAIL", // wrong user name or password (never says which)
  "PROTOCOL_ERROR", // malformed, out-of-order or unknown frame
  "FRAME_TOO_LARGE", // length prefix above the maximum frame size
  "TIMEOUT", // peer too slow for the handshake or idle limit
  "RATE_LIMITED", // too many connections / handshakes / attempts / messages
  "UNSUPPORTED", // no common protocol version, group or algorithm
  "BAD_KEY_SHARE", // invalid or low-order key-agreement public key, all-zero secret
  "HANDSHAKE_FAIL", // Finished MAC mismatch
  "USER_EXISTS", // registration of a taken user name or email
  "INVALID_INPUT", // a field that failed validation (name rules, lengths)
  "DB_UNAVAILABLE", // the user store cannot be reached right now
  "UNKNOWN_USER", // a private message to a name no account has (PROTOCOL §6.6)
  "QUEUE_FULL", // the offline recipient has as many messages waiting as allowed
  "NO_E2E_KEYS", // a private recipient has no device to encrypt for: nothing sent (PROTOCOL §12.6)
  "CLUSTER_UNAVAILABLE", // a cluster node cannot reach NATS right now (docs/DEPLOY.md)
  "SLOW_CONSUMER", // a recipient stopped reading and its queue overflowed
  "REVOKED", // the peer's certificate was revoked while its session was live
  "SESSION_TAKEN_OVER", // the user logged in again: the server closes the older session (PROTOCOL §7.1)
  "SERVER_CERT_EXPIRED", // the server's own certificate (or the CA's) lapses: it closes (PROTOCOL §5.2)
  "SERVER_CERT_REVOKED", // the server's own certificate was revoked: it closes (PROTOCOL §5.2)
  "TOO_MANY_CONNECTIONS", // connection cap reached
  "TRANSCRIPT_IO", // transcript could not be written
  "TAMPERED", // a transcript or receipt failed verification
  "UNSUPPORTED_FORMAT", // verify: a transcript or opening of a format this securechat cannot read
  "USAGE", // command-line usage error
  "IO_ERROR", // file could not be read or written
  "INTERNAL", // a bug: anything else
] as const;

export type ErrorCode = typeof ERROR_CODES[number];

export class SecureChatError extends Error {
  readonly code: ErrorCode;
  /** How a user could fix it, for the command line; optional. */
  readonly hint?: string;
  constructor(code: ErrorCode, message: string, options?: { cause?: unknown; hint?: string }) {
    super(message, options);
    this.name = "SecureChatError";
    this.code = code;
    this.hint = options?.hint;
  }
}

export function isErrorCode(value: unknown): value is ErrorCode {
  return typeof value === "string" && (ERROR_CODES as readonly string[]).includes(value);
}

/** The code of any thrown value: its own if it is ours, `INTERNAL` otherwise. */
export function codeOf(error: unknown): ErrorCode {
  return error instanceof SecureChatError ? error.code : "INTERNAL";
}
