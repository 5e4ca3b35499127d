/**
 * The lobby's prepared record as it crosses between nodes (docs/DEPLOY.md "Records"): a
 * server body to send (a notice, the operator), or a user's signed record to relay with its
 * author's certificate and content key (PROTOCOL §6.4), or word that the recipient has new
 * records in the offline queue (`stored`, §6.6; the queue itself is in the shared database).
 * The relay form is also what the offline queue stores. The cluster link carries it as an
 * opaque payload; only the lobby encodes and decodes it.
 */
import { z } from "zod";
import { fromBase64 } from "../bytes.ts";
import { SecureChatError } from "../errors.ts";
import {
  type Body,
  BodyShape,
  CONTENT_KEY_BYTES,
  decodeRecord,
  MAX_CERT_BYTES,
  type PreparedRelay,
  prepareRelay,
  RecordForms,
  type RecordJson,
  RecordJsonShape,
} from "../message/record.ts";
import { base64Text } from "../wire/schema.ts";
import { type E2eEnvelope, E2eEnvelopeSchema } from "../e2e/envelope.ts";
import { zodOf } from "../wire/shape.ts";
import { authorCertOf } from "../message/author_certs.ts";

/** A relay between nodes: the content key readable (`k`) or end to end (`e2e`, PROTOCOL §12.6). */
export type ClusterRelay =
  | { cert: string; record: RecordJson; k: string }
  | { cert: string; record: RecordJson; e2e: E2eEnvelope };

export type ClusterRecord =
  /**
   * `at`, on a presence notice: when its last join or leave happened; members who came
   * later were not there for it and are not told (their welcome says who is online).
   */
  | { body: Body; at?: number }
  | { relay: ClusterRelay }
  | { stored: true };

const relayFields = { cert: base64Text(1, MAX_CERT_BYTES), record: zodOf(RecordJsonShape) };
const ClusterRecordSchema = z.union([
  z.object({ body: zodOf(BodyShape), at: z.number().int().nonnegative().optional() }).strict(),
  z.object({
    relay: z.union([
      z.object({ ...relayFields, k: base64Text(CONTENT_KEY_BYTES, CONTENT_KEY_BYTES) }).strict(),
      z.object({ ...relayFields, e2e: E2eEnvelopeSchema }).strict(),
    ]),
  }).strict(),
  z.object({ stored: z.literal(true) }).strict(),
]);

/**
 * What the stream and the offline queue carry of a record: a value for JSON.stringify, whose text
 * is the wire form (decodeClusterRecord reads that text parsed, never this value itself: a
 * received record's `batch` writes its derived `path` through toJSON, not as an own member).
 */
export function encodeClusterRecord(record: ClusterRecord): unknown {
  return record;
}

/** @throws PROTOCOL_ERROR not a record this build writes */
export function decodeClusterRecord(value: unknown): ClusterRecord {
  const parsed = ClusterRecordSchema.safeParse(value);
  if (!parsed.success) {
    throw new SecureChatError("PROTOCOL_ERROR", "malformed record from the cluster");
  }
  return parsed.data;
}

/**
 * A relay from the stream or the queue, serialised once for every local recipient; each
 * recipient session's list decides whether its copy introduces the certificate (§6.4.1).
 */
export function preparedRelayOf(relay: ClusterRelay): PreparedRelay {
  return prepareRelay(
    authorCertOf(fromBase64(relay.cert), relay.cert),
    new RecordForms(decodeRecord(relay.record), relay.record),
    "e2e" in relay ? undefined : fromBase64(relay.k),
    "e2e" in relay ? relay.e2e : undefined,
  );
}

/**
 * A relay as the offline queue stores it (PROTOCOL §6.6), read back.
 * @throws PROTOCOL_ERROR for a row this build did not write
 */
export function decodeStoredRelay(text: string): ClusterRelay {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (cause) {
    throw new SecureChatError("PROTOCOL_ERROR", "malformed record in the offline queue", { cause });
  }
  const record = decodeClusterRecord(value);
  if (!("relay" in record)) {
    throw new SecureChatError(
      "PROTOCOL_ERROR",
      "the offline queue holds a record that is no relay",
    );
  }
  return record.relay;
}

/**
 * What holding a decoded stream record back keeps (Member.held), in bytes: its strings, as its
 * JSON counts them — a relay's ct and certificate are nearly all of it.
 */
export function heldRecordBytes(record: ClusterRecord): number {
  return JSON.stringify(record).length;
}
