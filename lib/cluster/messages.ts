/**
 * What cluster nodes say to each other over NATS (docs/DEPLOY.md "Subjects"): the subject
 * names, one schema per message, and the one parser every received message goes through.
 * Nodes trust each other (NATS is inside the deployment's trust boundary), but a malformed
 * message is still refused with a code rather than acted on.
 */
import { z } from "zod";
import { fromUtf8, toHex, utf8 } from "../bytes.ts";
import { SecureChatError } from "../errors.ts";
import { isValidUserName } from "../pki/names.ts";
import { MAX_CRL_BYTES } from "../pki/validate.ts";
import { base64Text } from "../wire/schema.ts";

/** Version of every message below; a node refuses other versions. */
export const CLUSTER_VERSION = 1;

/** The JetStream stream holding every record that must reach its recipients. */
export const RECORD_STREAM = "SECURECHAT_RECORDS";
export const SUBJECTS = {
  /**
   * Stream subjects: one for the lobby, one per private recipient (the lower-cased name in
   * hex, since a name may hold `.`, NATS's token separator), so the offline queue can later
   * be a consumer filtered on one user's subject.
   */
  lobby: "securechat.record.lobby",
  user: (name: string) => `securechat.record.user.${toHex(utf8(name.toLowerCase()))}`,
  recordWildcard: "securechat.record.>",
  /** Core NATS: each node's membership snapshot, every heartbeat and on change. */
  presence: "securechat.presence",
  /** Core NATS: a user logged in on some node; older sessions elsewhere end. */
  login: "securechat.session.login",
} as const;

/**
 * The JetStream key-value bucket and key holding the CA-signed CRL the nodes share
 * (docs/DEPLOY.md §4.6): a key rather than a subject, so a node that starts later reads the
 * latest one first, and writes are compare-and-set on its revision.
 */
export const CRL_BUCKET = "securechat_crl";
export const CRL_KEY = "ca_crl";

/** `--node` names: also NATS connection names and log fields. */
export const NODE_NAME_RE = /^[A-Za-z0-9_-]{1,32}$/;

const node = z.string().regex(NODE_NAME_RE);
const userName = z.string().refine(isValidUserName, "not a valid user name");
const sessionId = z.string().min(1).max(128);
const seq = z.number().int().nonnegative().max(Number.MAX_SAFE_INTEGER);
const version = z.literal(CLUSTER_VERSION);

/**
 * One record to deliver, published to the stream. `record` is the lobby's prepared message,
 * opaque here; `from` (the author, skipped on delivery) and `to` (a private recipient) route it.
 */
export const RecordEnvelopeSchema = z.object({
  v: version,
  node,
  from: userName.optional(),
  to: userName.optional(),
  record: z.unknown(),
}).strict();

export const PresenceSchema = z.object({
  v: version,
  node,
  /** The node's clock when it sent this; receivers use their own clock for liveness. */
  at: seq,
  /** Every record up to this stream sequence was handed to this node's sessions. */
  cursor: seq,
  users: z.array(z.object({ name: userName, session: sessionId, since: seq }).strict())
    .max(100_000),
}).strict();

export const LoginEventSchema = z.object({
  v: version,
  node,
  user: userName,
  session: sessionId,
  at: seq,
}).strict();

/**
 * The value under CRL_KEY: a CRL's DER and who put it there. `node` is for the log only: a
 * CRL is believed for its CA signature, which every receiving node checks.
 */
export const SharedCrlSchema = z.object({
  v: version,
  node,
  crl: base64Text(1, MAX_CRL_BYTES),
}).strict();

export type RecordEnvelope = z.infer<typeof RecordEnvelopeSchema>;
export type Presence = z.infer<typeof PresenceSchema>;
export type LoginEvent = z.infer<typeof LoginEventSchema>;
export type SharedCrlMessage = z.infer<typeof SharedCrlSchema>;

/**
 * The one chokepoint for what arrives from NATS.
 * @throws PROTOCOL_ERROR not JSON, or not the schema's shape
 */
export function parseClusterMessage<S extends z.ZodTypeAny>(
  data: Uint8Array,
  schema: S,
): z.output<S> {
  let json: unknown;
  try {
    json = JSON.parse(fromUtf8(data));
  } catch (cause) {
    throw new SecureChatError("PROTOCOL_ERROR", "cluster message is not UTF-8 JSON", { cause });
  }
  const parsed = schema.safeParse(json);
  if (!parsed.success) {
    throw new SecureChatError(
      "PROTOCOL_ERROR",
      `malformed cluster message: ${parsed.error.issues[0]?.message}`,
    );
  }
  return parsed.data;
}

export function encodeClusterMessage(message: unknown): Uint8Array {
  return utf8(JSON.stringify(message));
}
