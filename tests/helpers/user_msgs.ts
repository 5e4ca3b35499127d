/**
 * A user's msg as ours sends it, for the unit tests of what reads and relays one (received_items,
 * relay_records_once, user_msg_scan, user_msg_decoded): one Ed25519 signer for their batches, an
 * author's certificate stand-in for relays, and a signed batch's msg as bytes.
 */
import { ByteBuilder, toBase64 } from "../../lib/bytes.ts";
import { importSigningKeyPkcs8 } from "../../lib/crypto/signature.ts";
import type { E2eEnvelope } from "../../lib/e2e/envelope.ts";
import { authorCertOf } from "../../lib/message/author_certs.ts";
import { type MessageRecord, userMsgItem, userMsgsOf } from "../../lib/message/record.ts";

const pair = await crypto.subtle.generateKey("Ed25519", true, ["sign", "verify"]) as CryptoKeyPair;
/** Signs the tests' batches (signBatch). */
export const testSigner = await importSigningKeyPkcs8(
  new Uint8Array(await crypto.subtle.exportKey("pkcs8", pair.privateKey)),
);
/** An author as a relay names it: a stand-in certificate's fingerprint and bytes. */
export const testAuthor = authorCertOf(new TextEncoder().encode("an author's certificate"));

/** `n` bytes of `fill`, in base64: an envelope's or a key's member of the right size. */
export const b64 = (n: number, fill = 7) => toBase64(new Uint8Array(n).fill(fill));

/** A record with its content key and, sent end to end, its envelope. */
export type Carried = { record: MessageRecord; k: Uint8Array; e2e?: E2eEnvelope };

/** The one msg ours sends for a signed batch's records, as bytes. */
export function sentMsg(made: readonly Carried[]): Uint8Array {
  const msgs = userMsgsOf(made.map(({ record, k, e2e }) => userMsgItem(record, k, e2e)));
  if (msgs.length !== 1) throw new Error(`${made.length} records make ${msgs.length} msgs`);
  const out = new ByteBuilder(msgs[0].length);
  msgs[0].writeTo(out);
  return out.done().slice();
}
