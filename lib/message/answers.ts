/**
 * What the server may say back about each record a client sent in a session (PROTOCOL §6.5
 * "One answer per record"): at most one `queued` or `refused` per c2s seqno, `queued` only for
 * a record to `user:`, and neither for a record the server relayed back to its own author (a
 * private one, live: never `stored`, never a lobby line).
 * Two answers about one record contradict each other; a transcript holding both would prove
 * nothing. The live client (lib/session) and `verify` (lib/transcript) apply this one rule.
 */
import { recipientUser } from "./record.ts";

/**
 * How the server answered a c2s record: in words, or by sending it back to its author, as a
 * relay or (never honestly: its author is online) as a stored record.
 */
export type C2sAnswer = "queued" | "refused" | "relayed" | "stored";

const SENT = 1;
const PRIVATE = 2;
const ANSWERED = 4;

export class C2sAnswers {
  /** One byte of flags per c2s seqno (index = seqno): a session's records cost a byte each. */
  #flags = new Uint8Array(64);
  #last = 0;

  /** Notes c2s record `seqno`, addressed to `to` (seqnos come in order, from 1). */
  sent(seqno: number, to: string): void {
    if (seqno >= this.#flags.length) {
      const grown = new Uint8Array(Math.max(seqno + 1, this.#flags.length * 2));
      grown.set(this.#flags);
      this.#flags = grown;
    }
    this.#flags[seqno] = SENT | (recipientUser(to) !== null ? PRIVATE : 0);
    this.#last = Math.max(this.#last, seqno);
  }

  /**
   * Takes the server's answer about c2s record `of`.
   * @returns why the answer cannot be, or undefined when it may (and is now noted)
   */
  answer(of: number, how: C2sAnswer): string | undefined {
    const flags = of <= this.#last ? this.#flags[of] : 0;
    if (!(flags & SENT)) return `${how} names c2s ${of}, which was never sent`;
    if (how === "queued" && !(flags & PRIVATE)) {
      return `queued names c2s ${of}, which is not a record to a user (only those are stored)`;
    }
    if (how === "stored") {
      return `c2s ${of} came back stored, but its author is online: only a live relay brings it back`;
    }
    if (how === "relayed" && !(flags & PRIVATE)) {
      return `c2s ${of} came back, but the server relays a lobby line to every other user only`;
    }
    if (flags & ANSWERED) {
      return `${how} names c2s ${of}, which the server already answered or relayed back`;
    }
    this.#flags[of] = flags | ANSWERED;
    return undefined;
  }
}
