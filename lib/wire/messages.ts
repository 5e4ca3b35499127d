/**
 * Every message of the protocol as a zod schema (PROTOCOL §3), but for the chat
 * messages on the hot path, which are hand-written shapes (lib/message/record.ts,
 * lib/wire/shape.ts) of the same strictness. Parsing goes through `parseMessage`
 * alone, so malformed input of any kind yields PROTOCOL_ERROR and nothing else. Objects are strict: an unknown field is as malformed as a missing one.
 */
import { z } from "zod";
import { fromUtf8 } from "../bytes.ts";
import { SecureChatError } from "../errors.ts";
import { base64Bytes } from "./schema.ts";
import type { Shape } from "./shape.ts";
import { parseStrictJson } from "./strict_json.ts";

/**
 * The wire's version (PROTOCOL §3.1 `hello` and `server_hello`; a hello cookie and a transcript's
 * header record it): 3 since session 24, a relay traveling binary since session 23 (whose builds
 * still said 2), which a build up to session 22 cannot read: a peer that says 2 is refused at the
 * hello (`UNSUPPORTED`) rather than at the first relay (PROTOCOL §11).
 * The statements a record's author signs keep their own number (lib/message/record.ts
 * STATEMENT_VERSION): they did not change.
 */
export const PROTOCOL_VERSION = 3;

const uint = (max = Number.MAX_SAFE_INTEGER) => z.number().int().min(0).max(max);

export const NONCE_BYTES = 32;
export const MAX_COOKIE_BYTES = 64;
const MAX_CERT_BYTES = 16 * 1024;
const MAX_SIG_BYTES = 1024; // RSA-8192 at most; our keys are far smaller
const MAX_SHARE_BYTES = 1216; // x25519mlkem768: ML-KEM-768 ek (1184) + X25519 (32)

export const KeyShareSchema = z.object({
  group: z.string().min(1).max(16),
  pub: base64Bytes(1, MAX_SHARE_BYTES),
}).strict();

// ---- plaintext frames (PROTOCOL §3.1) ----

export const HelloSchema = z.object({
  type: z.literal("hello"),
  version: uint(0xffff),
  nonce: base64Bytes(NONCE_BYTES, NONCE_BYTES),
  groups: z.array(z.string().min(1).max(16)).min(1).max(8),
  key_share: KeyShareSchema,
  /** Echoed from the server's `retry` (PROTOCOL §5.1); only when the server asked for it. */
  cookie: base64Bytes(8, MAX_COOKIE_BYTES).optional(),
}).strict();

/** The server's answer to a hello without a cookie when it is under load (PROTOCOL §5.1). */
export const RetrySchema = z.object({
  type: z.literal("retry"),
  cookie: base64Bytes(8, MAX_COOKIE_BYTES),
}).strict();

export const ServerHelloSchema = z.object({
  type: z.literal("server_hello"),
  version: uint(0xffff),
  nonce: base64Bytes(NONCE_BYTES, NONCE_BYTES),
  time: uint(),
  key_share: KeyShareSchema,
}).strict();

export const ErrorSchema = z.object({
  type: z.literal("error"),
  code: z.string().min(1).max(32),
  message: z.string().max(256).optional(),
}).strict();

// ---- messages inside sealed records (PROTOCOL §3.3) ----

export const CertificateSchema = z.object({
  type: z.literal("certificate"),
  cert: base64Bytes(1, MAX_CERT_BYTES),
}).strict();

export const CertificateVerifySchema = z.object({
  type: z.literal("certificate_verify"),
  sig: base64Bytes(1, MAX_SIG_BYTES),
}).strict();

export const FinishedSchema = z.object({
  type: z.literal("finished"),
  mac: base64Bytes(32, 32),
}).strict();

/** Limits on credentials travel in the schema; the store applies its own rules after. */
const username = z.string().min(1).max(64);
/** Resumption tickets are ~150 bytes (lib/resumption/ticket.ts). */
export const MAX_TICKET_BYTES = 512;
const password = z.string().min(1).max(1024);
/** On login, register or resume: the client asks for a resumption ticket (DEPLOY.md §8). */
const tickets = z.literal(true).optional();

export const RegisterSchema = z.object({
  type: z.literal("register"),
  email: z.string().min(1).max(254),
  username,
  password,
  tickets,
}).strict();

export const LoginSchema = z.object({
  type: z.literal("login"),
  username,
  password,
  tickets,
}).strict();

/** Instead of `login`: a session resumption ticket from an earlier `auth_ok` (DEPLOY.md §8). */
export const ResumeSchema = z.object({
  type: z.literal("resume"),
  username,
  ticket: base64Bytes(1, MAX_TICKET_BYTES),
  tickets,
}).strict();

export const AuthOkSchema = z.object({
  type: z.literal("auth_ok"),
  username,
  registered: z.boolean(),
  /** A ticket for the next login, when the client asked and the server issues them. */
  ticket: base64Bytes(1, MAX_TICKET_BYTES).optional(),
}).strict();

export const DhClientSchema = z.object({ type: z.literal("dh_client"), key_share: KeyShareSchema })
  .strict();
export const DhServerSchema = z.object({ type: z.literal("dh_server"), key_share: KeyShareSchema })
  .strict();

// ---- account control (PROTOCOL §6.7) ----

/** What a server may answer a password change with, besides `password_changed`. */
export const PASSWORD_REFUSAL_CODES = [
  "AUTH_FAIL",
  "INVALID_INPUT",
  "RATE_LIMITED",
  "DB_UNAVAILABLE",
  "INTERNAL",
] as const;
export type PasswordRefusalCode = typeof PASSWORD_REFUSAL_CODES[number];
const changeId = uint(0xffffffff).min(1);

/** A user changes their own password; the old one proves it is them (c2s only). */
export const PasswordChangeSchema = z.object({
  type: z.literal("password_change"),
  id: changeId,
  old: password,
  new: password,
}).strict();

export const PasswordChangedSchema = z.object({
  type: z.literal("password_changed"),
  id: changeId,
}).strict();

export const PasswordRefusedSchema = z.object({
  type: z.literal("password_refused"),
  id: changeId,
  code: z.enum(PASSWORD_REFUSAL_CODES),
}).strict();

/**
 * Why the server closes, when the reason is not a server stopping: `close`'s `code` — the user
 * logged in again (PROTOCOL §7.1) or the server's own certificate lapses (§5.2).
 */
export const CLOSE_CODES = [
  "SESSION_TAKEN_OVER",
  "SERVER_CERT_EXPIRED",
  "SERVER_CERT_REVOKED",
] as const;
export type CloseCode = typeof CLOSE_CODES[number];

export const CloseSchema = z.object({
  type: z.literal("close"),
  code: z.enum(CLOSE_CODES).optional(),
}).strict();
export const KeyUpdateSchema = z.object({ type: z.literal("key_update") }).strict();

/** The receipt's own fields are checked by lib/transcript; here only its envelope. */
export const ReceiptEnvelopeSchema = z.object({ type: z.literal("receipt") }).passthrough();

/**
 * Parses one message and checks it is one of the expected types.
 * @throws PROTOCOL_ERROR for bad UTF-8, bad JSON, a non-object, an unexpected type or a schema failure.
 */
export function parseMessage<T>(
  payload: Uint8Array,
  schema: Shape<T>,
  discriminator: "type" | "kind" = "type",
): T {
  const { value, type } = parseObject(payload, discriminator);
  return checkShape(value, type, schema);
}

/**
 * {@link parseMessage}, with the text it read: for a message whose parts are forwarded as they
 * came when the text is their canonical form (lib/wire/canonical_text.ts).
 * @throws PROTOCOL_ERROR as parseMessage
 */
export function parseMessageAndText<T>(
  payload: Uint8Array,
  schema: Shape<T>,
): { message: T; text: string } {
  const { value, type, text } = parseObject(payload, "type");
  return { message: checkShape(value, type, schema), text };
}

/**
 * A handshake message of `schema`, or the `error` the peer sent instead (PROTOCOL §3.3): the
 * JSON is parsed once for both. A malformed `error` is a malformed message, as in parseMessage.
 * @throws PROTOCOL_ERROR as parseMessage
 */
export function parseMessageOrPeerError<T>(
  payload: Uint8Array,
  schema: Shape<T>,
): { message: T; peerError?: never } | { peerError: PeerError; message?: never } {
  const { value, type } = parseObject(payload, "type");
  if (type === "error") {
    const peerError = ErrorSchema.safeParse(value);
    if (peerError.success) return { peerError: peerError.data };
  }
  return { message: checkShape(value, type, schema) };
}

type PeerError = { code: string; message?: string };

function parseObject(
  payload: Uint8Array,
  discriminator: "type" | "kind",
): { value: unknown; type: string; text: string } {
  let value: unknown;
  let text = "";
  try {
    text = fromUtf8(payload);
    value = parseStrictJson(text);
  } catch (cause) {
    throw new SecureChatError("PROTOCOL_ERROR", "message is not strict UTF-8 JSON", { cause });
  }
  const type = typeof value === "object" && value !== null && !Array.isArray(value)
    ? (value as Record<string, unknown>)[discriminator]
    : undefined;
  if (typeof type !== "string") {
    throw new SecureChatError("PROTOCOL_ERROR", `not a JSON object with a ${discriminator}`);
  }
  return { value, type, text };
}

/**
 * `value` as `schema` checks it, for a message of `type`: the one refusal every parsed message
 * gets (a binary relay too, once read into its JSON form).
 * @throws PROTOCOL_ERROR naming the first issue
 */
export function checkShape<T>(value: unknown, type: string, schema: Shape<T>): T {
  const parsed = schema.safeParse(value);
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    const where = issue?.path.length ? ` (${issue.path.join(".")})` : "";
    throw new SecureChatError(
      "PROTOCOL_ERROR",
      `unexpected or malformed '${type.slice(0, 32)}' message${where}: ${issue?.message ?? ""}`,
    );
  }
  return parsed.data;
}

/** An `error` frame from the peer is reported with its own code, not as a parse failure. */
export function peerErrorOf(payload: Uint8Array): PeerError | null {
  try {
    const parsed = ErrorSchema.safeParse(parseStrictJson(fromUtf8(payload)));
    return parsed.success ? parsed.data : null;
  } catch {
    return null;
  }
}
