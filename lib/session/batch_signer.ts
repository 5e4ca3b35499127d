/**
 * Group commit of a client's record signatures (PROTOCOL §6.1 "Which records a sender
 * batches"): records are handed over as they are made and signed when the first of them is
 * due to leave (`due`), together with every record made by then — at most MAX_BATCH, in the
 * order they came, which is seqno order (a session numbers its records as it makes them).
 * While a signature is being computed (RSA signs asynchronously), records made meanwhile wait
 * for it and are then signed together. A record alone is signed at once, so typing latency does
 * not change; records share a signature exactly when the sender makes them faster than it signs
 * and sends them (a burst, a backlog behind the peer's pace).
 */
import type { SigningKey } from "../crypto/signature.ts";
import { MAX_BATCH, type MessageRecord, signBatch } from "../message/record.ts";

interface Waiting {
  record: MessageRecord;
  signed: PromiseWithResolvers<void>;
}

export class BatchSigner {
  #waiting: Waiting[] = [];
  #signing = false;

  constructor(private readonly key: SigningKey) {}

  /**
   * Takes `record` for the next batch. The promise resolves once it carries its `sig` and
   * `batch`, which happens after {@link due} is called for it (or for a record before it).
   * @throws what signing throws (the whole batch fails alike)
   */
  add(record: MessageRecord): Promise<void> {
    const signed = Promise.withResolvers<void>();
    this.#waiting.push({ record, signed });
    return signed.promise;
  }

  /** A record taken is due to leave: sign what waits now, unless a signature is in progress. */
  due(): void {
    if (this.#signing || this.#waiting.length === 0) return;
    const batch = this.#waiting.splice(0, MAX_BATCH);
    this.#signing = true;
    signBatch(this.key, batch.map((w) => w.record)).then(
      () => batch.forEach((w) => w.signed.resolve()),
      (error) => batch.forEach((w) => w.signed.reject(error)),
    ).finally(() => {
      this.#signing = false;
      this.due(); // what came meanwhile was due too: its turn in the chain came or is coming
    });
  }
}
