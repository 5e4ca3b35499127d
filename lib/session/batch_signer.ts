/**
 * Group commit of a client's record signatures (PROTOCOL §6.1 "Which records a sender
 * batches"): records are handed over as they are made and signed when the first of them is
 * due to leave (`due`), together with every record made by then — at most MAX_BATCH, in the
 * order they came, which is seqno order (a session numbers its records as it makes them).
 * Like TCP's Nagle rule, without its delay for a line alone: a record made while nothing else
 * of ours was on its way (a line typed alone, a sender that awaits each send) is signed as
 * soon as it is due; a record made while earlier ones were still on their way (a pipelined
 * sender: it did not wait for them) is `gathered`: when it is due, it is signed at the end of
 * the event loop's turn with every record made by then, so a sender that keeps several sends
 * in flight shares one signature among them instead of making batches of one (Ed25519 signs
 * synchronously, so nothing would otherwise wait). While a signature is being computed (RSA
 * signs asynchronously), records made meanwhile wait for it and are then signed together.
 */
import type { SigningKey } from "../crypto/signature.ts";
import { atTurnEnd } from "../turn.ts";
import { MAX_BATCH, type MessageRecord, signBatch } from "../message/record.ts";

interface Waiting {
  record: MessageRecord;
  gathered: boolean;
  signed: PromiseWithResolvers<void>;
}

export class BatchSigner {
  #waiting: Waiting[] = [];
  /** A signature is being computed, or the turn's end is awaited for one. */
  #busy = false;
  readonly #signWaiting = () => this.#sign();
  /** {@link due} was called while busy: the next record's turn came before its signature. */
  #dueMeanwhile = false;

  constructor(private readonly key: SigningKey) {}

  /**
   * Takes `record` for the next batch. The promise resolves once it carries its `sig` and
   * `batch`, which happens after {@link due} is called for it (or for a record before it).
   * @param gathered made while earlier records of ours were on their way: when due, it waits
   *   for the end of the turn, for the records the sender makes meanwhile
   * @throws what signing throws (the whole batch fails alike)
   */
  add(record: MessageRecord, gathered: boolean): Promise<void> {
    const signed = Promise.withResolvers<void>();
    this.#waiting.push({ record, gathered, signed });
    return signed.promise;
  }

  /**
   * A record taken is due to leave: sign what waits now (at the turn's end if the first
   * waiting was gathered), unless a signature is in progress.
   */
  due(record: MessageRecord): void {
    // Signed already, in the batch of a record before it; else it is the oldest waiting.
    if (this.#waiting[0]?.record !== record) return;
    if (this.#busy) {
      this.#dueMeanwhile = true;
      return;
    }
    this.#busy = true;
    if (this.#waiting[0].gathered) atTurnEnd(this.#signWaiting);
    else this.#sign();
  }

  #sign(): void {
    const batch = this.#waiting.splice(0, MAX_BATCH);
    signBatch(this.key, batch.map((w) => w.record)).then(
      () => batch.forEach((w) => w.signed.resolve()),
      (error) => batch.forEach((w) => w.signed.reject(error)),
    ).finally(() => {
      this.#busy = false;
      // A record whose turn came meanwhile is signed now (its turn came while this batch was
      // signed); the others wait for their turn, for what the sender makes until then.
      if (this.#dueMeanwhile) {
        this.#dueMeanwhile = false;
        if (this.#waiting.length > 0) this.due(this.#waiting[0].record);
      }
    });
  }
}
