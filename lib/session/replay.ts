/**
 * The sequence check of PROTOCOL §6.3, a small named unit (after wireguard-go's
 * replay.go). A sender numbers its messages 1, 2, 3, ... and TCP delivers in
 * order, so the receiver demands exactly the next number: anything lower is a
 * replay, anything higher means frames were removed in transit.
 *
 * `check` never changes state; `accept` is called only after the message passed
 * every other check, so a forged frame cannot move the window.
 */
import { SecureChatError } from "../errors.ts";

export class SequenceWindow {
  #last = 0;

  get last(): number {
    return this.#last;
  }

  /** @throws REPLAY for seqno ≤ last accepted, PROTOCOL_ERROR for a gap */
  check(seqno: number): void {
    if (seqno <= this.#last) {
      throw new SecureChatError("REPLAY", `seqno ${seqno} is not above ${this.#last}`);
    }
    if (seqno !== this.#last + 1) {
      throw new SecureChatError(
        "PROTOCOL_ERROR",
        `seqno ${seqno} skips ${seqno - this.#last - 1} message(s) after ${this.#last}`,
      );
    }
  }

  accept(seqno: number): void {
    this.check(seqno);
    this.#last = seqno;
  }
}
