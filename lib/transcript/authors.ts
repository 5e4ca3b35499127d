/** Relay authorship in a transcript (PROTOCOL §6.4, docs/TRANSCRIPT.md §2.2). */
import { verify, type VerifyingKey } from "../crypto/signature.ts";
import { fingerprintOf, messageDigest, type MessageLine } from "./format.ts";
import type { TrustAtSessionTime } from "./trust_at.ts";

/**
 * Checks the author records of relayed lines: the author's certificate (a client
 * certificate of our CA, validated at the session start like the parties') and the
 * author's own signature over their message. Certificates are validated once each.
 */
export class AuthorChecks {
  readonly #keys = new Map<string, Promise<{ key: VerifyingKey; commonName: string }>>();
  readonly #counts = new Map<string, { commonName: string; messages: number }>();

  constructor(readonly trustAt: TrustAtSessionTime) {}

  async check(
    author: NonNullable<MessageLine["author"]>,
    at: Date,
  ): Promise<{ code: "BAD_CERT" | "SIG_FAIL"; reason: string } | null> {
    const fingerprint = fingerprintOf(author.cert);
    let entry = this.#keys.get(fingerprint);
    if (!entry) {
      entry = this.#validate(author.cert, at);
      this.#keys.set(fingerprint, entry);
    }
    let authorKey: { key: VerifyingKey; commonName: string };
    try {
      authorKey = await entry;
    } catch (error) {
      const message = error instanceof Error ? error.message : String(error);
      return { code: "BAD_CERT", reason: `relayed author's certificate: ${message}` };
    }
    const digest = messageDigest(author.seqno, author.ts, author.ct);
    if (!await verify(authorKey.key, digest, author.sig)) {
      return {
        code: "SIG_FAIL",
        reason: `relayed message does not carry ${authorKey.commonName}'s signature ` +
          "(the relayed ciphertext or the author record was altered, or forged)",
      };
    }
    const count = this.#counts.get(fingerprint) ??
      { commonName: authorKey.commonName, messages: 0 };
    count.messages++;
    this.#counts.set(fingerprint, count);
    return null;
  }

  summary(): { commonName: string; fingerprint: string; messages: number }[] {
    return [...this.#counts].map(([fingerprint, c]) => ({ fingerprint, ...c }))
      .sort((a, b) => a.commonName.localeCompare(b.commonName));
  }

  async #validate(der: Uint8Array, at: Date) {
    const peer = await this.trustAt.validate(der, { role: "client", now: at });
    return { key: peer.key, commonName: peer.commonName };
  }
}
