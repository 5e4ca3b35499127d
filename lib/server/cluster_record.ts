/**
 * The lobby's prepared record as it crosses between nodes (docs/DEPLOY.md "Records"): the body
 * to send and, for a relay, the author record the recipient's transcript keeps. The cluster
 * link carries it as an opaque payload; only the lobby encodes and decodes it.
 */
import { z } from "zod";
import { toBase64 } from "../bytes.ts";
import { SecureChatError } from "../errors.ts";
import type { AuthorRecord } from "../session/relay.ts";
import { AuthorSchema } from "../transcript/format.ts";
import { type MsgBodyJson, MsgBodySchema } from "../wire/messages.ts";

export interface ClusterRecord {
  body: MsgBodyJson;
  author?: AuthorRecord;
}

const ClusterRecordSchema = z.object({
  body: z.unknown(),
  author: AuthorSchema.optional(),
}).strict();

export function encodeClusterRecord({ body, author }: ClusterRecord): unknown {
  if (!author) return { body };
  const { cert, seqno, ts, ct, sig } = author;
  return {
    body,
    author: { cert: toBase64(cert), seqno, ts, ct: toBase64(ct), sig: toBase64(sig) },
  };
}

/**
 * The body is checked against the wire schema but kept as written, since it is sent on as is.
 * @throws PROTOCOL_ERROR not a record this build writes
 */
export function decodeClusterRecord(value: unknown): ClusterRecord {
  const parsed = ClusterRecordSchema.safeParse(value);
  if (!parsed.success || !MsgBodySchema.safeParse(parsed.data.body).success) {
    throw new SecureChatError("PROTOCOL_ERROR", "malformed record from the cluster");
  }
  return { body: parsed.data.body as MsgBodyJson, author: parsed.data.author };
}
