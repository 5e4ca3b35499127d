/**
 * The CRL the nodes of a cluster share (docs/DEPLOY.md §4.6): one key in a JetStream
 * key-value bucket. A node that adopts a newer CRL from its file puts it there; every node
 * follows the key, reads the latest value first when it starts, and is handed each change in
 * order. What to believe is not decided here: the CRL's CA signature and its number are
 * (lib/server/revocation.ts). This module only moves bytes and keeps writes compare-and-set,
 * so a node never overwrites a value it has not seen.
 */
import type { JetStreamClient, KV, KvEntry, QueuedIterator } from "nats";
import { fromBase64, toBase64 } from "../bytes.ts";
import { codeOf, SecureChatError } from "../errors.ts";
import type { Logger } from "../log.ts";
import { isRevisionConflict } from "./kv.ts";
import {
  CLUSTER_VERSION,
  CRL_BUCKET,
  CRL_KEY,
  encodeClusterMessage,
  parseClusterMessage,
  SharedCrlSchema,
} from "./messages.ts";

/** A CRL as another node (or whoever can write the bucket) put it: not yet believed. */
export interface SharedCrl {
  der: Uint8Array;
  /** The node that says it put it there, for the log. */
  node: string;
}

/**
 * Called with the shared CRL, or undefined when there is none to use (no value yet, deleted,
 * or not a message of this build: the caller then shares its own). One call at a time.
 */
export type CrlOffer = (shared: SharedCrl | undefined) => Promise<void>;

export class CrlShare {
  readonly #kv: KV;
  readonly #node: string;
  readonly #log: Logger;
  /** The latest revision handed to the offer: what a put must replace. 0: none seen. */
  #revision = 0;
  #watch?: QueuedIterator<KvEntry>;
  #following?: Promise<void>;

  private constructor(kv: KV, node: string, log: Logger) {
    this.#kv = kv;
    this.#node = node;
    this.#log = log;
  }

  /** @throws CLUSTER_UNAVAILABLE the bucket cannot be opened or created */
  static async open(js: JetStreamClient, node: string, log: Logger): Promise<CrlShare> {
    try {
      return new CrlShare(await js.views.kv(CRL_BUCKET, { history: 1 }), node, log);
    } catch (cause) {
      throw new SecureChatError("CLUSTER_UNAVAILABLE", "cannot open the CRL bucket", { cause });
    }
  }

  /**
   * Offers the shared CRL as it stands now, then each change as it comes. Resolves once the
   * current one has been offered, so a node can settle its CRL before it takes logins.
   * @throws CLUSTER_UNAVAILABLE the key cannot be read
   */
  async follow(offer: CrlOffer): Promise<void> {
    let current: KvEntry | null;
    try {
      current = await this.#kv.get(CRL_KEY);
    } catch (cause) {
      throw new SecureChatError("CLUSTER_UNAVAILABLE", "cannot read the shared CRL", { cause });
    }
    await this.#offer(current, offer);
    // The watch starts with the latest value again (skipped when it is the one just offered),
    // so a change between the read and the watch is not missed.
    this.#watch = await this.#kv.watch({ key: CRL_KEY });
    this.#following = (async () => {
      for await (const entry of this.#watch!) {
        await this.#offer(entry, offer).catch((error) => {
          this.#log(codeOf(error), { detail: `shared CRL: ${error}` });
        });
      }
    })().catch((error) => {
      this.#log(codeOf(error), { detail: `following the shared CRL: ${error}` });
    });
  }

  /**
   * Puts `der` in place of the latest value this node has seen.
   * @returns false when another value was put since (the follower will offer it)
   * @throws CLUSTER_UNAVAILABLE
   */
  async put(der: Uint8Array): Promise<boolean> {
    const data = encodeClusterMessage({
      v: CLUSTER_VERSION,
      node: this.#node,
      crl: toBase64(der),
    });
    try {
      if (this.#revision === 0) await this.#kv.create(CRL_KEY, data);
      else await this.#kv.update(CRL_KEY, data, this.#revision);
      return true;
    } catch (cause) {
      if (isRevisionConflict(cause)) return false;
      throw new SecureChatError("CLUSTER_UNAVAILABLE", "cannot share the CRL", { cause });
    }
  }

  async stop(): Promise<void> {
    this.#watch?.stop();
    await this.#following;
  }

  async #offer(entry: KvEntry | null, offer: CrlOffer): Promise<void> {
    if (entry && entry.revision <= this.#revision) return;
    if (entry) this.#revision = entry.revision;
    await offer(entry?.operation === "PUT" ? this.#decode(entry) : undefined);
  }

  #decode(entry: KvEntry): SharedCrl | undefined {
    try {
      const message = parseClusterMessage(entry.value, SharedCrlSchema);
      return { der: fromBase64(message.crl), node: message.node };
    } catch (error) {
      this.#log(codeOf(error), {
        detail: `shared CRL (revision ${entry.revision}): ${(error as Error).message}`,
      });
      return undefined;
    }
  }
}
