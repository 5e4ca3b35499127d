/**
 * Stand-ins for what a session hands on once it has checked a record, for the unit tests of
 * what takes them: the lobby and its offline queue, the relay verifier.
 */
import { ByteBuilder, type Encodable, toBase64, toHex } from "../../lib/bytes.ts";
import type { E2eEnvelope } from "../../lib/e2e/envelope.ts";
import {
  type Body,
  encodeRecord,
  prepareRelay,
  RecordForms,
  sealContent,
} from "../../lib/message/record.ts";
import type { ReceivedMessage } from "../../lib/session/session.ts";
import type { Member } from "../../lib/server/lobby.ts";

/**
 * End-to-end envelopes of the schema's shape (PROTOCOL §12.6), a private record's and a lobby
 * record's: the server never opens one, and a test's unwrap stub decides what they yield.
 */
export const RATCHET_ENVELOPE: E2eEnvelope = {
  kind: "ratchet",
  from: "0123456789abcdef",
  wraps: [{
    device: "fedcba9876543210",
    dh: toBase64(new Uint8Array(32)),
    pn: 0,
    n: 0,
    w: toBase64(new Uint8Array(48)),
  }],
};
export const SENDER_ENVELOPE: E2eEnvelope = {
  kind: "sender",
  from: "0123456789abcdef",
  id: 1,
  n: 0,
  w: toBase64(new Uint8Array(48)),
};

/**
 * A `keys_publish` that passes the schema (PROTOCOL §12.2, §12.6) and that the server must refuse
 * (§6.3 step 6): a bundle of `owner` (another user's, unless `owner` is the sender) under a
 * `device` that is not the id of its identity key.
 */
export function unownedPublish(owner: string): Body {
  const filled = (n: number, fill: number) => toBase64(new Uint8Array(n).fill(fill));
  return {
    kind: "keys_publish",
    device: "0123456789abcdef",
    bundle: {
      user: owner,
      created: Date.now(),
      ik: filled(32, 1),
      spk_id: 1,
      spk: filled(32, 2),
      pq_id: 2,
      pq: filled(1184, 3),
      ik_sig: filled(64, 4),
      sig: filled(64, 5),
    },
    opks: [],
  };
}

/**
 * A member's c2s record carrying `body` to `to`, as the server's session hands it to the lobby
 * once checked (its signature a stand-in: the lobby never checks it again).
 */
export function checkedMessage(
  body: Body,
  to: string,
  seqno: number,
): Extract<ReceivedMessage, { type: "msg" }> {
  const { k, ct, c } = sealContent(body);
  const record = {
    sid: toHex(new Uint8Array(16)),
    dir: "c2s" as const,
    to,
    seqno,
    ts: Date.now(),
    ct,
    c,
    sig: new Uint8Array(64).fill(7),
    batch: { i: 0, n: 1, path: [] },
  };
  return {
    type: "msg",
    seqno,
    ts: record.ts,
    body,
    record,
    forms: new RecordForms(record, encodeRecord(record)),
    k,
  };
}

/**
 * `m` as `from`'s session hands it to the lobby: a record the lobby relays or stores (a `text`,
 * an end-to-end record) prepared for it, PROTOCOL §6.3 step 7 passed.
 */
export function fromMember(from: Member, m: ReceivedMessage): ReceivedMessage {
  if (m.type === "sealed") {
    return { ...m, prepared: prepareRelay(from.authorCert, m.forms, undefined, m.e2e) };
  }
  if (m.type === "msg" && m.body.kind === "text") {
    return { ...m, prepared: prepareRelay(from.authorCert, m.forms, m.k) };
  }
  return m;
}

/** A message's wire content as a recipient session writes it into its record. */
export function wireBytes(message: Encodable): Uint8Array {
  const out = new ByteBuilder();
  message.writeTo(out);
  return out.done();
}

/**
 * A JSON message's wire (a `stored`, a user's msg) as text. A relay is binary (PROTOCOL §6.4 "A
 * relay on the wire"): read it with readRelay(wireBytes(relay)).
 */
export function wireText(message: Encodable): string {
  return new TextDecoder().decode(wireBytes(message));
}
