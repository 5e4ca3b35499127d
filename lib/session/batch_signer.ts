/**
 * Group commit of a client's record signatures (PROTOCOL §6.1 "Which records a sender
 * batches"): records are handed over as they are made, and signed together when the turn of
 * the event loop ends — or, while a signature is being computed (RSA signs asynchronously),
 * they wait for it and are then signed together — at most MAX_BATCH per batch, in the order
 * they came (which is seqno order: a session numbers its records as it makes them). A record
 * alone in its turn is a batch of one: typing latency does not change.
 */
import type { SigningKey } from "../crypto/signature.ts";
import { MAX_BATCH, type MessageRecord, signBatch } from "../message/record.ts";
import { atTurnEnd } from "../turn.ts";

interface Waiting {
  record: MessageRecord;
  signed: PromiseWithResolvers<void>;
}

export class BatchSigner {
  #waiting: Waiting[] = [];
  #signing = false;
  #scheduled = false;

  constructor(private readonly key: SigningKey) {}

  /**
   * Resolves once `record` carries its `sig` and `batch`.
   * @throws what signing throws (the whole batch fails alike)
   */
  sign(record: MessageRecord): Promise<void> {
    const signed = Promise.withResolvers<void>();
    this.#waiting.push({ record, signed });
    if (!this.#signing && !this.#scheduled) {
      this.#scheduled = true;
      atTurnEnd(this.#signWaiting);
    }
    return signed.promise;
  }

  /** Signs what waits (up to MAX_BATCH), then what came meanwhile. Never throws (atTurnEnd). */
  readonly #signWaiting = (): void => {
    this.#scheduled = false;
    if (this.#signing || this.#waiting.length === 0) return;
    const batch = this.#waiting.splice(0, MAX_BATCH);
    this.#signing = true;
    signBatch(this.key, batch.map((w) => w.record)).then(
      () => batch.forEach((w) => w.signed.resolve()),
      (error) => batch.forEach((w) => w.signed.reject(error)),
    ).finally(() => {
      this.#signing = false;
      this.#signWaiting();
    });
  };
}
