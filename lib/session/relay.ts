/**
 * Authorship across the relay (PROTOCOL §6.4). The server forwards the author's own
 * signed `msg` with its one-message key; the recipient checks the author's
 * certificate and signature, then decrypts. The server can read what it relays but
 * cannot alter it or invent a message in a user's name without that user's key.
 */
import { sha256, toHex } from "../bytes.ts";
import { verify, type VerifyingKey } from "../crypto/signature.ts";
import { SecureChatError } from "../errors.ts";
import { type TrustStore, type ValidatedPeer, validatePeerCertificate } from "../pki/validate.ts";
import type { RelayBody, TextBody } from "../wire/messages.ts";
import { msgDigest, openBody, type SealedMsg } from "./chat_channel.ts";

/** What the recipient's transcript keeps of the author's message: ciphertext, never the key. */
export interface AuthorRecord extends SealedMsg {
  cert: Uint8Array;
}

export interface RelayedText {
  author: string;
  body: TextBody;
  record: AuthorRecord;
}

/** Checks relayed messages, remembering authors so a replayed relay is caught. */
export class RelayVerifier {
  readonly #authors = new Map<string, { peer: ValidatedPeer; key: VerifyingKey }>();
  readonly #last = new Map<string, { ts: number; seqno: number }>();

  constructor(readonly trust: TrustStore) {}

  /**
   * @throws BAD_CERT (author certificate), SIG_FAIL (author signature), DECRYPT_FAIL,
   *   PROTOCOL_ERROR (not a text body), REPLAY (an author message seen before)
   */
  async open(relay: RelayBody): Promise<RelayedText> {
    const { peer, key } = await this.#author(relay.cert);
    if (!await verify(key, await msgDigest(relay.seqno, relay.ts, relay.ct), relay.sig)) {
      throw new SecureChatError(
        "SIG_FAIL",
        `relayed message does not carry ${peer.commonName}'s signature`,
      );
    }
    const body = await openBody(relay.key, relay.seqno, relay.ts, relay.ct);
    if (body.kind !== "text") {
      throw new SecureChatError("PROTOCOL_ERROR", `relayed a ${body.kind}, not a text`);
    }
    // An author's messages reach us in (ts, seqno) order; anything not after the last one is a replay.
    const last = this.#last.get(peer.fingerprint);
    if (last && (relay.ts < last.ts || (relay.ts === last.ts && relay.seqno <= last.seqno))) {
      throw new SecureChatError("REPLAY", `relayed message from ${peer.commonName} seen before`);
    }
    this.#last.set(peer.fingerprint, { ts: relay.ts, seqno: relay.seqno });
    const { cert, seqno, ts, ct, sig } = relay;
    return { author: peer.commonName, body, record: { cert, seqno, ts, ct, sig } };
  }

  async #author(cert: Uint8Array) {
    const id = toHex(await sha256(cert));
    const cached = this.#authors.get(id);
    if (cached) return cached;
    const peer = await validatePeerCertificate(this.trust, cert, { role: "client" });
    const entry = { peer, key: peer.key };
    if (this.#authors.size > 1000) this.#authors.clear();
    this.#authors.set(id, entry);
    return entry;
  }
}
