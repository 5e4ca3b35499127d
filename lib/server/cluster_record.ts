/**
 * The lobby's prepared record as it crosses between nodes (docs/DEPLOY.md "Records"): a
 * server body to send (a notice, the operator), or a user's signed record to relay with its
 * author's certificate and content key (PROTOCOL §6.4). The cluster link carries it as an
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
  type RecordJson,
  RecordJsonShape,
} from "../message/record.ts";
import { base64Text } from "../wire/schema.ts";
import { zodOf } from "../wire/shape.ts";

export type ClusterRecord =
  | { body: Body }
  | { relay: { cert: string; record: RecordJson; k: string } };

const ClusterRecordSchema = z.union([
  z.object({ body: zodOf(BodyShape) }).strict(),
  z.object({
    relay: z.object({
      cert: base64Text(1, MAX_CERT_BYTES),
      record: zodOf(RecordJsonShape),
      k: base64Text(CONTENT_KEY_BYTES, CONTENT_KEY_BYTES),
    }).strict(),
  }).strict(),
]);

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

/** A relay from the stream, serialised once for every local recipient. */
export function preparedRelayOf(
  relay: { cert: string; record: RecordJson; k: string },
): PreparedRelay {
  return prepareRelay(
    relay.cert,
    fromBase64(relay.cert),
    relay.record,
    decodeRecord(relay.record),
    fromBase64(relay.k),
  );
}
